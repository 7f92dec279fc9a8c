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
    /// `--reactors`: reactor threads (default: one per core).
    pub reactors: usize,
    /// `--workers`: worker processes.
    pub workers: usize,
    /// `--worker-start-timeout`: a new worker must say it is ready within this.
    pub worker_start_timeout: Duration,
    /// `--max-requests`: recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// `--max-requests-jitter`: add up to this many, at random, per worker.
    pub max_requests_jitter: u64,
    /// `--max-worker-memory`: recycle a worker whose private resident memory
    /// passes this many bytes (0: never).
    pub max_worker_memory: u64,
    /// `--pid`: write the server's pid here.
    pub pid_file: Option<PathBuf>,
    /// `--error-log`: the server's (and workers') stderr goes to this file.
    pub error_log: Option<PathBuf>,
    /// `--response-window`: response body bytes a worker may have sent for
    /// one request that the client has not read yet.
    pub response_window: usize,
    /// `--shm-dir`: where the channel layer's segment lives.
    pub shm_dir: PathBuf,
    /// `--lane-size`: bytes of each lane of the segment.
    pub lane_size: usize,
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
    /// `--write-timeout`: a client whose socket takes no response bytes for
    /// this long is dropped.
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
            // One per core, leaving most endpoints for workers on a big host.
            reactors: std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
            workers: 1,
            worker_start_timeout: Duration::from_secs(60),
            max_requests: 0,
            max_requests_jitter: 0,
            max_worker_memory: 0,
            pid_file: None,
            error_log: None,
            response_window: 256 * 1024,
            shm_dir: PathBuf::from("/dev/shm"),
            lane_size: 256 * 1024,
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

listening
  --bind ADDR                  HOST:PORT, unix:PATH or fd://N; repeatable (default 127.0.0.1:8000)
  --backlog N                  listen backlog (default 2048)
  --reactors N                 reactor threads, one io_uring runtime each (default: one per core)

workers
  --bench-worker hello|echo    serve with a built-in Rust worker (no Python)
  --workers N                  worker processes (default 1)
  --worker-start-timeout SECS  a new worker must be ready within this, else it is killed and
                               retried; three failures in a row stop the server (default 60)
  --timeout SECS               the app must start responding within this (504), and a worker
                               that takes no message for this long while it has some waiting
                               is killed and replaced (default 30)
  --graceful-timeout SECS      time in-flight requests get after SIGTERM, and a retiring
                               worker gets to finish its requests (default 30)
  --max-requests N             replace a worker after N requests (default 0: never)
  --max-requests-jitter N      add up to N to --max-requests, at random per worker (default 0)
  --max-worker-memory MIB      replace a worker whose private resident memory passes MIB (default 0: never)

requests and responses
  --forwarded-allow-ips LIST   peers trusted for X-Forwarded-* (comma list or *; default 127.0.0.1,::1)
  --root-path PATH             ASGI root_path
  --limit-request-line N       longest request line (default 4094; 414 beyond)
  --limit-request-fields N     most header fields (default 100; 431 beyond)
  --limit-request-field-size N longest header field (default 8190; 431 beyond)
  --limit-request-head N       longest request head, all lines together (default 32768; 431 beyond)
  --limit-request-body N       largest request body in bytes (default unlimited; 413 beyond)
  --keep-alive SECS            idle keep-alive timeout (default 5)
  --header-timeout SECS        a request head must arrive within this (default 10; 408)
  --write-timeout SECS         drop a client whose socket takes no response bytes for this long (default 30)
  --response-window BYTES      response bytes a worker may send ahead of a slow client, per request
                               (default 256K; at least twice the largest layer message, 128K+128)

logs and files
  --access-log FILE|-          write an access log (- for stdout)
  --access-logformat FMT       gunicorn-style format (default: the common/combined log format)
  --error-log FILE             the server's and workers' stderr (default: stderr)
  --pid FILE                   write the server's pid to FILE (removed at exit)
  --shm-dir DIR                directory of the channel layer's shared memory (default /dev/shm)
  --lane-size BYTES            bytes of each shared-memory lane (default 256K); the segment is
                               reserved at start-up, and a smaller lane makes it smaller

BYTES take a K, M or G suffix (powers of 1024).

signals
  TERM, INT    stop gracefully (in-flight requests finish); a second INT stops at once
  QUIT         stop at once
  HUP          reload: start new workers; each old one stops taking requests once a new one is
               ready, finishes what it holds and exits (a new worker that fails leaves the old ones)
  TTIN, TTOU   one worker more, one fewer
  USR1         reopen the access and error logs
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

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn bytes(v: &str, name: &str) -> Result<usize, String> {
    let (digits, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_uppercase()),
        _ => (v, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{name}: {v:?}: the suffix must be K, M or G")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{name}: {v:?} is not a number of bytes"))
}

/// Endpoints of the server process itself besides its reactors: the
/// supervisor's and the reaper's.
pub const SERVER_ENDPOINTS: usize = 2;

/// The smallest layer message: what body chunks and responses are cut to.
const MIN_MESSAGE: usize = 64 * 1024;
/// Room left beside the largest scope for the first body chunk.
const FIRST_CHUNK: usize = 4096;
/// The largest layer message these options may need.
const MAX_MESSAGE: usize = 1 << 20;

impl Config {
    /// The layer's largest message: 64 KiB, or more if the request head
    /// limits allow a scope that would not fit beside a first body chunk.
    /// No request within the limits can then make a message too large.
    pub fn max_message(&self) -> usize {
        let scope = crate::asgi::scope::max_request_scope_len(&self.limits, self.root_path.len());
        scope
            .saturating_add(FIRST_CHUNK)
            .next_multiple_of(4096)
            .max(MIN_MESSAGE)
    }

    /// How many worker processes may be alive at once: every endpoint the
    /// layer has that the server does not use. A reload or a recycle starts
    /// a replacement before the old worker retires, so this must leave room
    /// for at least one more than `--workers`.
    pub fn worker_capacity(&self) -> usize {
        ringway_layer_shm::layout::MAX_ENDPOINTS
            .saturating_sub(self.reactors + SERVER_ENDPOINTS)
            .min(2 * self.workers + 2)
    }

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
                "--reactors" => c.reactors = num(&value()?, name)?,
                "--threads" => {
                    return Err("--threads: reactor threads are set with --reactors \
                         (--threads means a WSGI worker's threads, as in gunicorn)"
                        .into())
                }
                "--workers" | "-w" => c.workers = num(&value()?, name)?,
                "--worker-start-timeout" => c.worker_start_timeout = secs(&value()?, name)?,
                "--max-requests" => c.max_requests = num(&value()?, name)?,
                "--max-requests-jitter" => c.max_requests_jitter = num(&value()?, name)?,
                "--max-worker-memory" => {
                    let mib: u64 = num(&value()?, name)?;
                    c.max_worker_memory = mib.saturating_mul(1 << 20);
                }
                "--pid" => c.pid_file = Some(PathBuf::from(value()?)),
                "--error-log" | "--error-logfile" => c.error_log = Some(PathBuf::from(value()?)),
                "--response-window" => c.response_window = bytes(&value()?, name)?,
                "--shm-dir" => c.shm_dir = PathBuf::from(value()?),
                "--lane-size" => c.lane_size = bytes(&value()?, name)?,
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
                "--limit-request-head" => c.limits.request_head = num(&value()?, name)?,
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
        c.validate()?;
        Ok(c)
    }

    /// Checks the options against each other and the layer's limits.
    pub fn validate(&self) -> Result<(), String> {
        let endpoints = ringway_layer_shm::layout::MAX_ENDPOINTS;
        if self.reactors == 0 || self.reactors + SERVER_ENDPOINTS + 2 > endpoints {
            return Err(format!(
                "--reactors must be from 1 to {}: the channel layer has {endpoints} endpoints, \
                 one per reactor, {SERVER_ENDPOINTS} for the supervisor and reaper, and at least two for workers",
                endpoints - SERVER_ENDPOINTS - 2
            ));
        }
        // Room for every worker plus one replacement starting beside them.
        let most = endpoints - self.reactors - SERVER_ENDPOINTS - 1;
        if self.workers == 0 || self.workers > most {
            return Err(format!(
                "--workers must be from 1 to {most} with --reactors {}: the channel layer has \
                 {endpoints} endpoints, one per reactor, {SERVER_ENDPOINTS} for the supervisor and reaper, one per \
                 worker, and one for a replacement worker starting beside them",
                self.reactors
            ));
        }
        let max_message = self.max_message();
        if max_message > MAX_MESSAGE {
            return Err(format!(
                "the request limits (--limit-request-head {}, --limit-request-line {}, \
                 --limit-request-fields {}, --limit-request-field-size {}) allow a request \
                 whose scope takes {max_message} bytes; lower them (a layer message holds at most {MAX_MESSAGE})",
                self.limits.request_head,
                self.limits.request_line,
                self.limits.request_fields,
                self.limits.request_field_size
            ));
        }
        // A lane holds two of the largest records, and is a power of two.
        let lane_min = (2 * (max_message + 512)).next_power_of_two();
        if self.lane_size < lane_min || !self.lane_size.is_power_of_two() {
            return Err(format!(
                "--lane-size {} must be a power of two of at least {lane_min} bytes \
                 (two of the largest layer messages, {max_message} bytes with these request limits)",
                self.lane_size
            ));
        }
        let window_min = 2 * (max_message + 64);
        if self.response_window < window_min {
            return Err(format!(
                "--response-window {} is too small: at least {window_min} bytes (two layer messages)",
                self.response_window
            ));
        }
        Ok(())
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
    fn sizes_take_k_m_and_g_suffixes() {
        assert_eq!(bytes("512", "x"), Ok(512));
        assert_eq!(bytes("256K", "x"), Ok(256 << 10));
        assert_eq!(bytes("1m", "x"), Ok(1 << 20));
        assert_eq!(bytes("2G", "x"), Ok(2 << 30));
        assert!(bytes("12Q", "x").unwrap_err().contains("suffix"));
        assert!(bytes("K", "x").is_err());
    }

    #[test]
    fn threads_is_not_the_reactor_count() {
        let e = Config::from_args(&args("--bench-worker hello --threads 4")).unwrap_err();
        assert!(e.contains("--reactors"), "{e}");
        let c = Config::from_args(&args("--bench-worker hello --reactors 3")).unwrap();
        assert_eq!(c.reactors, 3);
    }

    #[test]
    fn workers_and_reactors_must_fit_the_layer_together() {
        let most = ringway_layer_shm::layout::MAX_ENDPOINTS - 2 - SERVER_ENDPOINTS - 1;
        let ok = format!("--bench-worker hello --reactors 2 --workers {most}");
        assert!(Config::from_args(&args(&ok)).is_ok());
        let over = format!("--bench-worker hello --reactors 2 --workers {}", most + 1);
        let e = Config::from_args(&args(&over)).unwrap_err();
        assert!(
            e.contains(&format!("from 1 to {most}")) && e.contains("endpoints"),
            "{e}"
        );
    }

    #[test]
    fn a_layer_message_always_holds_the_largest_scope() {
        let c = Config::from_args(&args("--bench-worker hello")).unwrap();
        let scope = crate::asgi::scope::max_request_scope_len(&c.limits, 0);
        assert!(c.max_message() >= scope + FIRST_CHUNK);
        assert_eq!(c.max_message(), MIN_MESSAGE, "the defaults fit 64 KiB");
        // Larger heads make larger messages, which need larger lanes.
        let e = Config::from_args(&args("--bench-worker hello --limit-request-head 150000"))
            .unwrap_err();
        assert!(e.contains("--lane-size"), "{e}");
        let c = Config::from_args(&args(
            "--bench-worker hello --limit-request-head 150000 --lane-size 1M --response-window 1M",
        ))
        .unwrap();
        assert!(c.max_message() > MIN_MESSAGE);
        let e = Config::from_args(&args(
            "--bench-worker hello --limit-request-head 100000000 --limit-request-fields 100000",
        ))
        .unwrap_err();
        assert!(e.contains("lower them"), "{e}");
    }

    #[test]
    fn default_bind_is_localhost_8000() {
        let c = Config::from_args(&args("--bench-worker hello")).unwrap();
        assert_eq!(c.binds, vec![Bind::Tcp("127.0.0.1:8000".into())]);
    }
}
