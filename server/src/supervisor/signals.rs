//! Signals, read from a signalfd by the supervisor's event loop.
//!
//! Every signal whose default action would stop or end the server is
//! blocked in every thread (the mask is set before any thread starts, and
//! threads inherit it) and read from one signalfd, so no signal an operator
//! sends (or a terminal generates) can kill or stop the server behind the
//! supervisor's back: the ones it knows are handled, the rest are logged and
//! ignored. Not blocked: the faults a thread raises itself (SIGSEGV, SIGBUS,
//! SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT), which must crash it, and
//! SIGPIPE, which stays ignored (writes to a closed socket or pipe fail with
//! EPIPE instead). SIGKILL and SIGSTOP cannot be blocked by anyone.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Signals left alone: synchronous faults and SIGPIPE.
const NOT_BLOCKED: [i32; 10] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
    libc::SIGPIPE,
    libc::SIGKILL,
    libc::SIGSTOP,
];

/// The signals the supervisor reads (every other one up to SIGRTMAX).
fn blocked() -> impl Iterator<Item = i32> {
    (1..=libc::SIGRTMAX()).filter(|s| !NOT_BLOCKED.contains(s))
}

/// The supervisor's signal descriptor.
pub struct Signals(OwnedFd);

impl Signals {
    /// Blocks the signals in this thread (call before starting any thread:
    /// they inherit the mask), resets their dispositions to the default (a
    /// shell starts background jobs with SIGINT and SIGQUIT ignored, and an
    /// ignored signal never reaches a signalfd), and opens the signalfd.
    pub fn install() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset; the
        // calls take valid pointers to it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in blocked() {
                libc::sigaddset(&mut set, s);
                // Real-time signals reserved by libc reject this: harmless.
                libc::signal(s, libc::SIG_DFL);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// The signals pending now (empty when none).
    pub fn read(&self) -> Vec<i32> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data; read fills whole records.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads one record into `info`, which is that large.
            let n = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n as usize != size {
                return out;
            }
            out.push(info.ssi_signo as i32);
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
