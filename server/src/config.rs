//! Command-line options, named as gunicorn and uvicorn name them.

use std::path::PathBuf;
use std::time::Duration;

use crate::asgi::scope::ForwardedAllow;
use crate::h1::Limits;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    /// `HOST:PORT` (IPv6 as `[::1]:8000`).
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `fd://N`: an inherited, already listening socket.
    Fd(i32),
}

impl Bind {
    /// Parses a `--bind` value.
    pub fn parse(s: &str) -> Result<Bind, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Bind::Unix(PathBuf::from(p)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return n
                .parse()
                .map(Bind::Fd)
                .map_err(|_| format!("{s:?}: fd://N needs a number"));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Bind::Tcp(s.to_owned()))
            }
            _ => Err(format!("{s:?}: expected HOST:PORT, unix:PATH or fd://N")),
        }
    }
}

/// The built-in Rust worker's behaviours (`--bench-worker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchWorker {
    /// `200 OK`, `text/plain`, `Hello, world!` for every request.
    Hello,
    /// Echoes request bodies; special paths for tests (see `bench_worker.rs`).
    Echo,
}

/// Everything the server is told.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--bind`, repeatable.
    pub binds: Vec<Bind>,
    /// `--threads`: reactor threads (default: one per core).
    pub threads: usize,
    /// `--workers`: worker processes.
    pub workers: usize,
    /// `--bench-worker`.
    pub bench_worker: Option<BenchWorker>,
    /// `--backlog`.
    pub backlog: i32,
    /// `--forwarded-allow-ips`.
    pub forwarded_allow: ForwardedAllow,
    /// `--root-path`.
    pub root_path: String,
    /// `--limit-request-*`.
    pub limits: Limits,
    /// `--keep-alive`: idle keep-alive connections are closed after this.
    pub keep_alive: Duration,
    /// `--timeout`: the app must start its response within this (else 504).
    pub timeout: Duration,
    /// `--graceful-timeout`: in-flight requests get this long after SIGTERM.
    pub graceful_timeout: Duration,
    /// `--header-timeout`: a request head must arrive within this (else 408).
    pub header_timeout: Duration,
    /// `--write-timeout`: a client that stops reading is dropped after this.
    pub write_timeout: Duration,
    /// `--access-log FILE|-`.
    pub access_log: Option<String>,
    /// `--access-logformat`.
    pub access_log_format: String,
}

/// gunicorn's default access log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

impl Default for Config {
    fn default() -> Self {
        Config {
            binds: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            workers: 1,
            bench_worker: None,
            backlog: 2048,
            forwarded_allow: ForwardedAllow::List(vec![
                "127.0.0.1".parse().unwrap(),
                "::1".parse().unwrap(),
            ]),
            root_path: String::new(),
            limits: Limits::default(),
            keep_alive: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            access_log: None,
            access_log_format: DEFAULT_ACCESS_LOG_FORMAT.to_owned(),
        }
    }
}

/// `ringway-server --help`.
pub const USAGE: &str = "\
usage: ringway-server [OPTIONS]

  --bind ADDR                  HOST:PORT, unix:PATH or fd://N; repeatable (default 127.0.0.1:8000)
  --threads N                  reactor threads, one io_uring runtime each (default: one per core)
  --workers N                  worker processes (default 1)
  --bench-worker hello|echo    serve with a built-in Rust worker (no Python)
  --backlog N                  listen backlog (default 2048)
  --forwarded-allow-ips LIST   peers trusted for X-Forwarded-* (comma list or *; default 127.0.0.1,::1)
  --root-path PATH             ASGI root_path
  --limit-request-line N       longest request line (default 4094; 414 beyond)
  --limit-request-fields N     most header fields (default 100; 431 beyond)
  --limit-request-field-size N longest header field (default 8190; 431 beyond)
  --limit-request-body N       largest request body in bytes (default unlimited; 413 beyond)
  --keep-alive SECS            idle keep-alive timeout (default 5)
  --timeout SECS               the app must start responding within this (default 30; 504)
  --graceful-timeout SECS      time in-flight requests get after SIGTERM (default 30)
  --header-timeout SECS        a request head must arrive within this (default 10; 408)
  --write-timeout SECS         drop a client that stops reading after this (default 30)
  --access-log FILE|-          write an access log (- for stdout)
  --access-logformat FMT       gunicorn-style format (default: the common/combined log format)

signals: TERM (or a first INT) stops gracefully; a second INT, or QUIT, stops at once.
";

fn secs(v: &str, name: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{name}: {v:?} is not a number of seconds"))
}

fn num<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name}: {v:?} is not a valid number"))
}

impl Config {
    /// Parses command-line arguments (without the program name).
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut c = Config::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name {
                "--bind" | "-b" => c.binds.push(Bind::parse(&value()?)?),
                "--threads" => c.threads = num(&value()?, name)?,
                "--workers" | "-w" => c.workers = num(&value()?, name)?,
                "--bench-worker" => match value()?.as_str() {
                    "hello" => c.bench_worker = Some(BenchWorker::Hello),
                    "echo" => c.bench_worker = Some(BenchWorker::Echo),
                    other => {
                        return Err(format!(
                            "--bench-worker: unknown worker {other:?} (known: hello, echo)"
                        ))
                    }
                },
                "--backlog" => c.backlog = num(&value()?, name)?,
                "--forwarded-allow-ips" => c.forwarded_allow = ForwardedAllow::parse(&value()?)?,
                "--root-path" => c.root_path = value()?,
                "--limit-request-line" => c.limits.request_line = num(&value()?, name)?,
                "--limit-request-fields" => c.limits.request_fields = num(&value()?, name)?,
                "--limit-request-field-size" => c.limits.request_field_size = num(&value()?, name)?,
                "--limit-request-body" => c.limits.max_body = num(&value()?, name)?,
                "--keep-alive" => c.keep_alive = secs(&value()?, name)?,
                "--timeout" | "-t" => c.timeout = secs(&value()?, name)?,
                "--graceful-timeout" => c.graceful_timeout = secs(&value()?, name)?,
                "--header-timeout" => c.header_timeout = secs(&value()?, name)?,
                "--write-timeout" => c.write_timeout = secs(&value()?, name)?,
                "--access-log" | "--access-logfile" => c.access_log = Some(value()?),
                "--access-logformat" => c.access_log_format = value()?,
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        if c.binds.is_empty() {
            c.binds.push(Bind::Tcp("127.0.0.1:8000".into()));
        }
        if c.threads == 0 || c.threads > 256 {
            return Err("--threads must be from 1 to 256".into());
        }
        if c.workers == 0 || c.workers > 48 {
            return Err("--workers must be from 1 to 48".into());
        }
        if c.bench_worker.is_none() {
            return Err(
                "the Python worker does not exist yet: pass --bench-worker hello (or echo)".into(),
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_like_gunicorn() {
        let c = Config::from_args(&args(
            "--bench-worker hello --bind 0.0.0.0:80 --bind unix:/tmp/s --bind fd://3 --workers 4 --timeout=2.5 --keep-alive 1 --limit-request-line 100",
        ))
        .unwrap();
        assert_eq!(
            c.binds,
            vec![
                Bind::Tcp("0.0.0.0:80".into()),
                Bind::Unix("/tmp/s".into()),
                Bind::Fd(3)
            ]
        );
        assert_eq!(c.workers, 4);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.keep_alive, Duration::from_secs(1));
        assert_eq!(c.limits.request_line, 100);
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        assert!(Config::from_args(&args("--bench-worker hello --bind nope"))
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(Config::from_args(&args("--bench-worker hello --workers x"))
            .unwrap_err()
            .contains("--workers"));
        assert!(
            Config::from_args(&args("--bench-worker hello --frobnicate"))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(Config::from_args(&args("--bench-worker bye"))
            .unwrap_err()
            .contains("unknown worker"));
        assert!(Config::from_args(&args("--bench-worker hello --bind"))
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn default_bind_is_localhost_8000() {
        let c = Config::from_args(&args("--bench-worker hello")).unwrap();
        assert_eq!(c.binds, vec![Bind::Tcp("127.0.0.1:8000".into())]);
    }
}
