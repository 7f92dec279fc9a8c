//! Worker processes, tracked by pidfd.
//!
//! A worker is signalled and reaped only through its pidfd, never by pid: the
//! pidfd names one process for good, while a pid may name another process
//! once the first has been reaped. The pidfd is opened right after the fork;
//! the pid cannot be reused before that, because nobody reaps our children
//! but us and we reap only through pidfds (never `waitpid(-1)`), so until
//! then the child is at worst a zombie still holding its pid.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::status::{self, Status};

/// What to run as a worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables added to the server's own.
    pub env: Vec<(OsString, OsString)>,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

/// A signal's conventional name, for log lines.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGPWR => "SIGPWR",
        _ => "signal",
    }
}

/// A running child process and its status pipe.
pub struct Process {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<StatusReader>,
    /// Set once reaped: the process is gone and its pidfd must not be used
    /// to signal anything.
    exit: Option<Exit>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pidfd for `pid` (which must be our unreaped child, see the module doc).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Process {
    /// Starts `cmd` with `env` added, the status pipe on [`status::FD`],
    /// every signal unblocked (the server blocks them all), and SIGKILL as
    /// its parent-death signal. Its stdout and stderr are the server's.
    pub fn spawn(cmd: &WorkerCommand, env: &[(String, String)]) -> io::Result<Process> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both are new descriptors we own.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The worker's end must block: a worker writes a line and goes on.
        // SAFETY: plain fcntl on our descriptor.
        cvt(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, 0) })?;
        let parent = std::process::id() as libc::pid_t;
        let wfd = wr.as_raw_fd();
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(status::ENV_FD, status::FD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe calls (sigprocmask, prctl, getppid, dup2, fcntl,
        // _exit) and allocates nothing.
        unsafe {
            c.pre_exec(move || {
                // SAFETY (each call): plain syscalls on valid arguments.
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                // A worker never outlives its server...
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // ...even one that died before the line above ran.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                if wfd == status::FD {
                    libc::fcntl(wfd, libc::F_SETFD, 0);
                } else if libc::dup2(wfd, status::FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn()?;
        drop(wr);
        let pid = child.id() as i32;
        // Dropping a std Child neither kills nor waits: the pidfd takes over.
        drop(child);
        let pidfd = pidfd_open(pid)?;
        Ok(Process {
            pid,
            pidfd,
            status: Some(StatusReader {
                fd: rd,
                buf: Vec::new(),
            }),
            exit: None,
        })
    }

    /// The process id (for log lines; never for signals).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd: readable once the process has exited.
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// The status pipe's read end, while it is open.
    pub fn status_fd(&self) -> Option<RawFd> {
        self.status.as_ref().map(|s| s.fd.as_raw_fd())
    }

    /// Reads what the status pipe holds: the complete lines, parsed. The pipe
    /// is closed (and no longer reported by [`Process::status_fd`]) at its end.
    pub fn read_status(&mut self) -> Vec<Status> {
        let Some(s) = self.status.as_mut() else {
            return Vec::new();
        };
        let (lines, open) = s.read();
        if !open {
            self.status = None;
        }
        lines
    }

    /// Sends `sig` through the pidfd. After the process was reaped this does
    /// nothing (and certainly does not reach a process that reused its pid).
    pub fn signal(&self, sig: i32) {
        if self.exit.is_some() {
            return;
        }
        // SAFETY: plain syscall on our pidfd; no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
    }

    /// Reaps the process if it has exited; returns how it ended.
    pub fn try_reap(&mut self) -> Option<Exit> {
        if self.exit.is_some() {
            return self.exit;
        }
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD with our pidfd; `info` is writable.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // SAFETY: after a successful waitid, si_pid and si_status are set
        // (si_pid is 0 when the child has not exited yet).
        let (pid, st) = unsafe { (info.si_pid(), info.si_status()) };
        if r < 0 || pid == 0 {
            return None;
        }
        let exit = if info.si_code == libc::CLD_EXITED {
            Exit::Code(st)
        } else {
            Exit::Signal(st)
        };
        self.exit = Some(exit);
        Some(exit)
    }
}

/// The supervisor's end of a status pipe.
struct StatusReader {
    fd: OwnedFd,
    /// An incomplete line, at most [`status::MAX_LINE`] bytes.
    buf: Vec<u8>,
}

impl StatusReader {
    /// Reads without blocking; returns the complete lines and whether the
    /// pipe is still open.
    fn read(&mut self) -> (Vec<Status>, bool) {
        let mut lines = Vec::new();
        let mut chunk = [0u8; 1024];
        // At most 16 KiB per call: a worker that writes without pause gets
        // its turn in the supervisor's loop, not the whole loop (the rest
        // waits in the pipe, and the descriptor stays readable).
        for _ in 0..16 {
            // SAFETY: reads into a valid buffer of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), 1024) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                // 0: the worker closed its end (or exited); < 0: nothing more now.
                return (lines, n < 0);
            }
            for &b in &chunk[..n as usize] {
                if b == b'\n' {
                    if let Some(s) = Status::parse(&String::from_utf8_lossy(&self.buf)) {
                        lines.push(s);
                    }
                    self.buf.clear();
                } else if self.buf.len() < status::MAX_LINE {
                    // Bytes past the cap are dropped: a line that is too long
                    // is cut (and then is no status), the next starts clean.
                    self.buf.push(b);
                }
            }
        }
        (lines, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> WorkerCommand {
        WorkerCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
        }
    }

    /// Waits for the child to exit, reading its status lines meanwhile (a
    /// child writing more than a pipe holds would otherwise never exit).
    fn wait_exit(p: &mut Process, got: &mut Vec<Status>) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            got.extend(p.read_status());
            if let Some(e) = p.try_reap() {
                while p.status_fd().is_some() {
                    got.extend(p.read_status());
                }
                return e;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            let mut pfd = libc::pollfd {
                fd: p.pidfd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
        }
    }

    #[test]
    fn status_lines_arrive_through_descriptor_3() {
        let mut p =
            Process::spawn(&sh("echo ready >&3; echo 'error boom' >&3; exit 4"), &[]).unwrap();
        let mut got = Vec::new();
        assert_eq!(wait_exit(&mut p, &mut got), Exit::Code(4));
        assert_eq!(got, vec![Status::Ready, Status::Error("boom".into())]);
    }

    #[test]
    fn a_reaped_child_is_never_signalled_again() {
        let mut p = Process::spawn(&sh("exec sleep 60"), &[]).unwrap();
        p.signal(libc::SIGKILL);
        assert_eq!(
            wait_exit(&mut p, &mut Vec::new()),
            Exit::Signal(libc::SIGKILL)
        );
        // The pid may now belong to anyone: signalling is a no-op, and the
        // pidfd (which still names the dead child) could not reach them.
        p.signal(libc::SIGKILL);
        assert_eq!(p.try_reap(), Some(Exit::Signal(libc::SIGKILL)));
    }

    #[test]
    fn an_endless_status_line_is_cut_not_buffered() {
        let mut p = Process::spawn(
            &sh("head -c 100000 /dev/zero | tr '\\0' x >&3; echo >&3; echo ready >&3"),
            &[],
        )
        .unwrap();
        let mut got = Vec::new();
        wait_exit(&mut p, &mut got);
        // The long line is not a status; the next one is read normally.
        assert_eq!(got, vec![Status::Ready]);
    }
}
