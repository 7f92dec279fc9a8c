//! The server's own messages (errors, lifecycle lines) and the error log.
//!
//! Everything goes through [`line`] (the [`elog!`](crate::elog) macro). In
//! the server process, once [`start`] ran, a line is queued for a writer
//! thread of its own: a stderr that blocks (a pipe nobody reads) or fails
//! (closed, EPIPE) never holds up a reactor or the supervisor, and never
//! panics as `eprintln!` would. The queue is bounded in bytes; lines beyond
//! it are dropped and counted, and the count is written once the writer
//! catches up. Before `start` (and in worker processes) a line is written
//! directly, and errors are ignored.
//!
//! With `--error-log FILE` the file is `dup2`ed onto descriptor 2, so
//! workers started afterwards inherit it and `SIGUSR1` can reopen it after a
//! rotation.

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;

/// Bytes of lines waiting for the writer at most.
const QUEUE_BYTES: usize = 1 << 20;

/// The writer thread's queue, once started.
static QUEUE: OnceLock<mpsc::Sender<String>> = OnceLock::new();
/// Bytes queued and not yet written.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
/// Lines dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts the writer thread: from now on no log line blocks its caller.
pub fn start() -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("ringway-log".into())
        .spawn(move || {
            let mut reported = 0;
            for l in rx {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(l.as_bytes());
                QUEUED.fetch_sub(l.len(), Ordering::Relaxed);
                let dropped = DROPPED.load(Ordering::Relaxed);
                if dropped != reported {
                    let _ = writeln!(
                        err,
                        "ringway: {} log lines dropped (stderr could not keep up)",
                        dropped - reported
                    );
                    reported = dropped;
                }
            }
        })?;
    let _ = QUEUE.set(tx);
    Ok(())
}

/// Writes one line to stderr without ever blocking (see the module doc).
pub fn line(args: fmt::Arguments<'_>) {
    let text = format!("{args}\n");
    let Some(q) = QUEUE.get() else {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        return;
    };
    // Relaxed: a byte budget, not a synchronisation; a few lines of
    // overshoot between racing threads do not matter.
    if QUEUED.fetch_add(text.len(), Ordering::Relaxed) + text.len() > QUEUE_BYTES {
        QUEUED.fetch_sub(text.len(), Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let len = text.len();
    if q.send(text).is_err() {
        QUEUED.fetch_sub(len, Ordering::Relaxed);
    }
}

/// Gives the writer up to `max` to write what is queued: for a process
/// about to exit (its last lines say why). Never longer than `max`, however
/// stderr behaves.
pub fn drain(max: std::time::Duration) {
    let deadline = std::time::Instant::now() + max;
    while QUEUED.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Writes one line to stdout (the "listening at" line); errors are ignored.
pub fn out(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(format_args!("{args}\n"));
    let _ = out.flush();
}

/// `eprintln!` that never blocks or panics: see [`line`].
#[macro_export]
macro_rules! elog {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

/// Opens `path` for appending and puts it on descriptor 2 (the error log).
/// Called at start-up and again on `SIGUSR1`, after a rotation moved the old
/// file away.
pub fn open_error_log(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // SAFETY: both descriptors are valid; dup2 atomically replaces fd 2, and
    // `f` is closed when it drops (fd 2 keeps the file open).
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
