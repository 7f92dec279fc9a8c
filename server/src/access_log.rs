//! The access log, with gunicorn's format atoms.
//!
//! Supported atoms: `h` remote address, `l` `-`, `u` user (`-`), `t` date
//! `[10/Oct/2000:13:55:36 +0000]`, `r` request line, `m` method, `U` path,
//! `q` query string, `H` protocol, `s` status, `b` response length or `-`,
//! `B` response length, `f` referer, `a` user agent, `T` seconds, `M`
//! milliseconds, `D` microseconds, `L` decimal seconds, `p` pid,
//! `{name}i` request header, `{name}o` response header.
//!
//! Lines are formatted on the reactor thread and written by a thread of
//! their own, through a bounded queue: a log file on a slow disk, or a pipe
//! nobody reads, never holds up a reactor. When the queue is full, lines
//! are dropped and counted, and the count is reported on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bytes of lines queued for the writer thread at most.
const QUEUE_BYTES: usize = 4 << 20;

/// One finished request, as the log sees it.
pub struct Entry<'a> {
    /// Client address.
    pub remote: &'a str,
    /// Method.
    pub method: &'a str,
    /// Request target as sent.
    pub target: &'a [u8],
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: &'a str,
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Request headers (lower-case names).
    pub request_headers: &'a [(Vec<u8>, Vec<u8>)],
    /// Response headers as the app gave them.
    pub response_headers: &'a [(Vec<u8>, Vec<u8>)],
    /// Time taken.
    pub elapsed: Duration,
}

/// Where log lines go, and how they look.
pub struct AccessLog {
    format: String,
    tx: Sender<String>,
    /// Bytes queued and not yet written (at most [`QUEUE_BYTES`]).
    queued: Arc<AtomicUsize>,
    /// Lines dropped because the writer could not keep up.
    dropped: Arc<AtomicU64>,
    /// Set by [`AccessLog::reopen`]; the writer reopens before its next line.
    reopen: Arc<AtomicBool>,
}

fn header<'a>(headers: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> &'a [u8] {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map_or(b"-", |(_, v)| v)
}

/// `[10/Oct/2000:13:55:36 +0000]`, in UTC.
fn clf_date(t: SystemTime) -> String {
    // Reuse the HTTP date ("Tue, 10 Oct 2000 13:55:36 GMT") and rearrange it.
    let d = crate::h1::encode::http_date(t);
    let parts: Vec<&str> = d.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [_, day, mon, year, time, _] => format!("[{day}/{mon}/{year}:{time} +0000]"),
        _ => format!("[{d}]"),
    }
}

/// Opens the destination: `-` is stdout, anything else a file appended to.
fn open_dest(dest: &str) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(if dest == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dest)?,
        )
    })
}

impl AccessLog {
    /// Opens `dest` (`-` for stdout) for appending and starts the writer.
    pub fn open(dest: &str, format: &str) -> std::io::Result<AccessLog> {
        let mut out = std::io::BufWriter::new(open_dest(dest)?);
        let (tx, rx) = mpsc::channel::<String>();
        let dropped = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let (d, again, q, dest) = (
            dropped.clone(),
            reopen.clone(),
            queued.clone(),
            dest.to_owned(),
        );
        std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || {
                let mut reported = 0;
                while let Ok(first) = rx.recv() {
                    if again.swap(false, Ordering::Relaxed) && dest != "-" {
                        let _ = out.flush();
                        match open_dest(&dest) {
                            Ok(f) => out = std::io::BufWriter::new(f),
                            Err(e) => crate::elog!("ringway: reopening access log {dest}: {e}"),
                        }
                    }
                    let mut written = first.len();
                    let _ = out.write_all(first.as_bytes());
                    // Whatever queued meanwhile goes out in the same write.
                    for line in rx.try_iter() {
                        written += line.len();
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                    q.fetch_sub(written, Ordering::Relaxed);
                    let now = d.load(Ordering::Relaxed);
                    if now != reported {
                        crate::elog!(
                            "ringway: access log: {} lines dropped (the log could not keep up)",
                            now - reported
                        );
                        reported = now;
                    }
                }
            })?;
        Ok(AccessLog {
            format: format.to_owned(),
            tx,
            queued,
            dropped,
            reopen,
        })
    }

    /// Reopens the file before the next line (SIGUSR1, after a rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Formats one line (without the newline).
    pub fn format(&self, e: &Entry<'_>) -> String {
        let mut line = String::with_capacity(128);
        let f = self.format.as_bytes();
        let mut i = 0;
        while i < f.len() {
            if f[i] == b'%' && f.get(i + 1) == Some(&b'(') {
                if let Some(close) = self.format[i + 2..].find(")s") {
                    let atom = &self.format[i + 2..i + 2 + close];
                    self.atom(atom, e, &mut line);
                    i += 2 + close + 2;
                    continue;
                }
            }
            let ch = self.format[i..].chars().next().expect("in bounds");
            line.push(ch);
            i += ch.len_utf8();
        }
        line
    }

    fn atom(&self, atom: &str, e: &Entry<'_>, out: &mut String) {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (path, query) = match e.target.iter().position(|&b| b == b'?') {
            Some(q) => (&e.target[..q], &e.target[q + 1..]),
            None => (e.target, &b""[..]),
        };
        let s = match atom {
            "h" => e.remote.to_owned(),
            "l" | "u" => "-".to_owned(),
            "t" => clf_date(SystemTime::now()),
            "r" => format!("{} {} {}", e.method, lossy(e.target), e.protocol),
            "m" => e.method.to_owned(),
            "U" => lossy(path),
            "q" => lossy(query),
            "H" => e.protocol.to_owned(),
            "s" => e.status.to_string(),
            "b" => {
                if e.bytes == 0 {
                    "-".to_owned()
                } else {
                    e.bytes.to_string()
                }
            }
            "B" => e.bytes.to_string(),
            "f" => lossy(header(e.request_headers, "referer")),
            "a" => lossy(header(e.request_headers, "user-agent")),
            "T" => e.elapsed.as_secs().to_string(),
            "M" => e.elapsed.as_millis().to_string(),
            "D" => e.elapsed.as_micros().to_string(),
            "L" => format!("{:.6}", e.elapsed.as_secs_f64()),
            "p" => format!("<{}>", std::process::id()),
            a if a.starts_with('{') && a.ends_with("}i") => {
                lossy(header(e.request_headers, &a[1..a.len() - 2]))
            }
            a if a.starts_with('{') && a.ends_with("}o") => {
                lossy(header(e.response_headers, &a[1..a.len() - 2]))
            }
            other => format!("%({other})s"),
        };
        out.push_str(&s);
    }

    /// Queues one line for the writer; never blocks (a full queue drops it).
    pub fn log(&self, e: &Entry<'_>) {
        let mut line = self.format(e);
        line.push('\n');
        let len = line.len();
        // Relaxed: a byte budget, not a synchronisation.
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(line).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorn_atoms_are_expanded() {
        let log = AccessLog::open("/dev/null", crate::config::DEFAULT_ACCESS_LOG_FORMAT).unwrap();
        let req = vec![(b"user-agent".to_vec(), b"curl/8".to_vec())];
        let e = Entry {
            remote: "127.0.0.1",
            method: "GET",
            target: b"/x?y=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 13,
            request_headers: &req,
            response_headers: &[],
            elapsed: Duration::from_micros(1500),
        };
        let line = log.format(&e);
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.ends_with(r#"] "GET /x?y=1 HTTP/1.1" 200 13 "-" "curl/8""#),
            "{line}"
        );
        let log = AccessLog::open(
            "/dev/null",
            "%(m)s %(U)s %(q)s %(D)s %({user-agent}i)s %(zz)s",
        )
        .unwrap();
        assert_eq!(log.format(&e), "GET /x y=1 1500 curl/8 %(zz)s");
    }
}
