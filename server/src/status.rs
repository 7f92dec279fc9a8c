//! The status pipe: how a worker process talks to its supervisor outside the
//! channel layer, one line per event.
//!
//! ```text
//! ready              the worker took its inbox and serves requests
//! error TEXT         why the worker is about to exit (an import error, ...)
//! recycle TEXT       the worker asks to be replaced (--max-requests reached)
//! ```
//!
//! The supervisor creates a pipe per worker and hands its write end to the
//! worker as descriptor [`FD`] (named in [`ENV_FD`]); it reads the other end
//! without blocking, from its event loop. The worker's stdout and stderr are
//! the server's own, so nothing the app prints can fill a pipe nobody reads.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

/// The environment variable naming the status descriptor in a worker.
pub const ENV_FD: &str = "RINGWAY_STATUS_FD";
/// The descriptor number the supervisor puts the pipe on.
pub const FD: i32 = 3;
/// Longest line the supervisor keeps; longer ones are cut.
pub const MAX_LINE: usize = 4096;

/// One status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Serving.
    Ready,
    /// About to exit because of this.
    Error(String),
    /// Wants to be replaced, for this reason.
    Recycle(String),
}

impl Status {
    /// Parses a line (without its newline); unknown lines are `None`.
    pub fn parse(line: &str) -> Option<Status> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ready" => Some(Status::Ready),
            "error" => Some(Status::Error(rest.to_owned())),
            "recycle" => Some(Status::Recycle(rest.to_owned())),
            _ => None,
        }
    }

    /// The line for this status, with its newline (text made one line).
    pub fn line(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Status::Ready => "ready\n".to_owned(),
            Status::Error(e) => format!("error {}\n", one(e)),
            Status::Recycle(r) => format!("recycle {}\n", one(r)),
        }
    }
}

/// A worker's end of the status pipe.
pub struct StatusWriter(File);

impl StatusWriter {
    /// The pipe the supervisor gave this process, if any.
    pub fn from_env() -> Option<StatusWriter> {
        let fd: i32 = std::env::var(ENV_FD).ok()?.parse().ok()?;
        // SAFETY: the supervisor put the pipe's write end on this descriptor
        // and named it in the environment; nothing else in the process owns it.
        let f = unsafe { File::from_raw_fd(fd) };
        // Children of the worker must not keep the pipe open.
        // SAFETY: plain fcntl on the descriptor we now own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        Some(StatusWriter(f))
    }

    /// Sends one status line. The supervisor reads the pipe as lines come,
    /// so a line (well under the pipe's buffer) never blocks.
    pub fn send(&mut self, s: &Status) {
        let _ = self.0.write_all(s.line().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip_and_stay_one_line() {
        for s in [
            Status::Ready,
            Status::Error("ModuleNotFoundError: no module named 'x'".into()),
            Status::Recycle("max-requests 1000".into()),
        ] {
            let line = s.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Status::parse(line.trim_end_matches('\n')), Some(s));
        }
        assert_eq!(
            Status::Error("a\nb".into()).line(),
            "error a b\n",
            "a multi-line error is one line"
        );
        assert_eq!(Status::parse("hello"), None);
    }
}
