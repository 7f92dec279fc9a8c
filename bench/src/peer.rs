//! Peer processes: `fork` a child that runs a closure and `_exit`s, reap it
//! with a timeout, kill it if it is stuck.
//!
//! The child shares nothing with the parent but what it inherits at the fork
//! (the segment path, a socket): it attaches its own endpoint, as the layer
//! requires. It dies with its parent (`PR_SET_PDEATHSIG`), so a benchmark that
//! crashes leaves no process spinning on a core.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::cpu::{self, Party};
use crate::{Error, Result};

/// A forked peer process. Dropping it without [`Child::wait`] kills it.
pub struct Child {
    /// For messages.
    name: &'static str,
    /// `None` once reaped.
    pid: Option<libc::pid_t>,
}

impl Child {
    /// Forks a child that runs `body` on the CPU of peer `index` (see
    /// [`cpu::pin`]) and exits: status 0 if `body` returns `Ok`, 1 if it
    /// returns an error (printed to stderr), 101 if it panics.
    ///
    /// Fails if this process has other threads: the child of a multi-threaded
    /// process may find the allocator's lock held by a thread that does not
    /// exist in it.
    pub fn fork(
        name: &'static str,
        index: usize,
        body: impl FnOnce() -> Result<()>,
    ) -> Result<Child> {
        ensure_single_threaded(name)?;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: this process has one thread (checked above), so every lock
        // the child inherits (the allocator's, stdio's) is unlocked and the
        // child may run ordinary Rust code. The child never returns into the
        // caller: `run_child` leaves through `_exit`.
        match unsafe { libc::fork() } {
            -1 => Err(Error::msg(format!(
                "fork for {name}: {}",
                io::Error::last_os_error()
            ))),
            0 => run_child(name, parent, move || {
                let _pinned = cpu::pin(Party::Peer(index))?;
                body()
            }),
            pid => Ok(Child {
                name,
                pid: Some(pid),
            }),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid.expect("not reaped yet")
    }

    /// Waits up to `timeout` for the child to exit; kills it if it does not.
    /// `Ok` only if it exited with status 0.
    pub fn wait(mut self, timeout: Duration) -> Result<()> {
        let pid = self.pid.take().expect("a Child is reaped only once");
        let exited = wait_readable(pid, timeout)?;
        if !exited {
            kill(pid);
        }
        let status = reap(pid)?;
        if !exited {
            return Err(Error::msg(format!(
                "{} (pid {pid}) did not exit within {timeout:?}; killed it",
                self.name
            )));
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            return Ok(());
        }
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!(
                "exited with status {} (its stderr says why)",
                libc::WEXITSTATUS(status)
            )
        };
        Err(Error::msg(format!("{} (pid {pid}) {how}", self.name)))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill(pid);
            let _ = reap(pid);
        }
    }
}

/// The child's side of [`Child::fork`].
fn run_child(name: &str, parent: libc::pid_t, body: impl FnOnce() -> Result<()>) -> ! {
    // SAFETY: PR_SET_PDEATHSIG only sets this process's parent-death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    let orphaned = unsafe { libc::getppid() } != parent;
    let code = if orphaned {
        // The parent died before the prctl took effect.
        3
    } else {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("{name} (pid {}): {e}", std::process::id());
                1
            }
            // The panic hook has printed the message.
            Err(_) => 101,
        }
    };
    // SAFETY: `_exit` ends the process at once. That is the point: the
    // destructors and atexit handlers on the stack we inherited belong to the
    // parent (its segment, its endpoint, criterion's state) and must not run here.
    unsafe { libc::_exit(code) }
}

/// Errors unless this process runs a single thread. A thread that was just
/// joined may be listed for a few more microseconds, so look a few times.
fn ensure_single_threaded(name: &str) -> Result<()> {
    let mut threads = 0;
    for _ in 0..100 {
        threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads == 1 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(Error::msg(format!(
        "cannot fork {name}: this process runs {threads} threads"
    )))
}

/// Waits until `pid` has exited (without reaping it) or `timeout` passes;
/// returns whether it exited.
fn wait_readable(pid: libc::pid_t, timeout: Duration) -> Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::msg(format!(
            "pidfd_open({pid}): {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let n = unsafe {
            libc::poll(
                &mut p,
                1,
                left.as_millis().min(i32::MAX as u128) as libc::c_int,
            )
        };
        match n {
            1.. => return Ok(true),
            0 => return Ok(false),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
}

/// Sends SIGKILL to `pid`.
fn kill(pid: libc::pid_t) {
    // SAFETY: plain syscall; `pid` is our unreaped child, so it cannot have
    // been reused by another process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Reaps `pid`, blocking until it has exited; returns its wait status.
fn reap(pid: libc::pid_t) -> Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::msg(format!("waitpid({pid}): {e}")));
        }
    }
}
