//! Thin wrappers over the Linux system calls the layer uses. Every `unsafe`
//! call into libc lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn cstr(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `n` bytes from the kernel's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in milliseconds. The clock is system-wide, so deadlines
/// computed in one process mean the same in another.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `CLOCK_MONOTONIC_COARSE` in milliseconds: the same clock at tick
/// resolution (a few ms), several times cheaper to read. Good enough for
/// message expiry, which is counted in seconds.
pub fn monotonic_coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whether the process `pid` that started at `start_time` is still running
/// (a zombie counts as dead: it will never touch the segment again).
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split(' ');
    let state = fields.next().unwrap_or("X");
    let started = fields.nth(18).and_then(|f| f.parse::<u64>().ok());
    !matches!(state, "Z" | "X" | "x") && started == Some(start_time)
}

/// Opens (optionally creating exclusively, mode 0600) a file for read and write.
pub fn open_rw(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if create {
        flags |= libc::O_CREAT | libc::O_EXCL;
    }
    // SAFETY: `c` is a NUL-terminated path; the mode argument is read only with O_CREAT.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags, 0o600 as libc::c_uint) })?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the size of an open file.
pub fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

/// Reserves the blocks of the first `len` bytes of an open file
/// (`fallocate` mode 0), so that writing them later cannot fail for want of
/// space. On a tmpfs this allocates (and zeroes) the pages now.
pub fn fallocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes an unprivileged user may still allocate on the filesystem holding
/// `dir` (`statvfs`: available blocks times the fragment size).
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    let c = cstr(dir)?;
    // SAFETY: `statvfs` is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable buffer.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Takes an exclusive `flock` on an open file: waiting for it (`wait`) or
/// not (then `Ok(false)` if someone else holds it). The lock belongs to the
/// open file description and goes away when its last descriptor closes,
/// which the kernel does for a process however it dies.
pub fn flock_exclusive(fd: &OwnedFd, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Opens a file read-only without following a final symlink.
pub fn open_read(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a NUL-terminated path.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many.
pub fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: reads into a valid, writable buffer of the given length.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The size of an open file.
pub fn file_size(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: `libc::stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// A shared, read-write memory mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; every access to it goes through atomics
// or through the ring protocol's ownership rules, which hold across threads as
// they do across processes.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared.
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping (page-aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; no reference into
        // the mapping outlives it (they borrow the owning segment).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Removes a file, ignoring "not found".
pub fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Sleeps until `word` no longer holds `expected`, a wake-up, or the timeout.
/// The futex is shared (no `FUTEX_PRIVATE_FLAG`): the word lives in shared
/// memory and the waker may be another process.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the
    // kernel only reads it. EINTR, EAGAIN and ETIMEDOUT are all fine: callers
    // re-check their condition in a loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes every waiter on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not write memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether a pidfd's process has exited (its pidfd is readable).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    poll_readable(&[fd.as_raw_fd()], 0).is_ok_and(|r| r[0])
}

/// Waits up to `timeout_ms` (-1: forever) for any of `fds` to become readable;
/// returns which are.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(pfds.iter().map(|p| p.revents != 0).collect());
    }
}

/// The start time of a process (field 22 of `/proc/PID/stat`, in clock ticks
/// since boot): with the pid, it names a process unambiguously even after the
/// pid is reused.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Creates a FIFO (mode 0600).
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a NUL-terminated path.
    check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }).map(drop)
}

/// Opens a FIFO without blocking: for reading, `O_RDWR` (Linux keeps such a
/// FIFO open with no writer and never reports EOF); for writing, `O_WRONLY`,
/// which fails with ENXIO when no one has it open for reading.
pub fn open_fifo(path: &Path, read: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let mode = if read { libc::O_RDWR } else { libc::O_WRONLY };
    // SAFETY: `c` is a NUL-terminated path.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            mode | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    })?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes one byte to a non-blocking descriptor; a full pipe (EAGAIN) already
/// holds a pending wake-up and counts as success.
pub fn ring_bell(fd: RawFd) -> io::Result<()> {
    let b = 1u8;
    // SAFETY: writes one byte from a valid buffer.
    let n = unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads and discards everything pending on a non-blocking descriptor.
pub fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads into a valid buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
    }
}
