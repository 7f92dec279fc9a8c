//! The server's own messages (errors, lifecycle lines) and the error log.
//!
//! Everything goes through [`line`] (the [`elog!`](crate::elog) macro), which
//! writes to file descriptor 2 and ignores failures: `eprintln!` panics when
//! stderr is closed or its reader went away, and a server must not die
//! because nobody reads its log. With `--error-log FILE` the file is
//! `dup2`ed onto descriptor 2, so workers started afterwards inherit it and
//! `SIGUSR1` can reopen it after a rotation.

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Writes one line to stderr; a closed or broken stderr is ignored.
pub fn line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(format_args!("{args}\n"));
}

/// Writes one line to stdout (the "listening at" line); errors are ignored.
pub fn out(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(format_args!("{args}\n"));
    let _ = out.flush();
}

/// `eprintln!` that never panics: see [`line`].
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
