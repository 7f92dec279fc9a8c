//! A real `ringway-server` process with its built-in workers, and a small
//! blocking HTTP/1.1 client for talking to it over real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub stderr_path: std::path::PathBuf,
}

impl Server {
    /// Starts `ringway-server --bind 127.0.0.1:0 ARGS` and waits for its
    /// "listening at" line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// [`Server::start`] with environment variables added.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let (mut child, stderr_path) = spawn(args, env);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Skip what workers print before the server is up.
        while out.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening at") {
            line.clear();
        }
        assert!(
            line.contains("listening at"),
            "server did not start: {line:?}\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .map(|a| a.trim_end_matches(',').to_owned())
            .unwrap_or_default();
        // Keep reading stdout (access logs) so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        Server {
            child,
            addr,
            stderr_path,
        }
    }

    /// A new client connection with a 20 s read timeout.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// [`Server::wait`], and what the server wrote to stderr.
    pub fn wait_with_stderr(self) -> (i32, String) {
        let path = self.stderr_path.clone();
        let keep = temp_path("kept.stderr");
        let code = {
            let mut s = self;
            let c = s.wait_in_place();
            let _ = std::fs::copy(&path, &keep);
            c
        };
        let text = std::fs::read_to_string(&keep).unwrap_or_default();
        let _ = std::fs::remove_file(&keep);
        (code, text)
    }

    /// Waits up to 30 s for the server to exit; returns its exit code.
    /// A server that does not exit fails the test (and is killed on drop).
    pub fn wait(mut self) -> i32 {
        self.wait_in_place()
    }

    fn wait_in_place(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit within 30 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A unique path in the temporary directory.
pub fn temp_path(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ringway-test-{}-{}-{what}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

/// Starts `ringway-server` without waiting for anything; stderr goes to the
/// returned file, stdout to a pipe.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, std::path::PathBuf) {
    let stderr_path = temp_path("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway-server"));
    if !args.iter().any(|a| a.starts_with("--bind")) {
        cmd.args(["--bind", "127.0.0.1:0"]);
    }
    let child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("starting ringway-server");
    (child, stderr_path)
}

impl Server {
    /// The pid of the server process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `secs` for `needle` to appear in stderr `n` times.
    pub fn wait_for_log(&self, needle: &str, n: usize, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while self.stderr().matches(needle).count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} did not appear {n} times within {secs} s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's worker processes (its children), by pid.
    pub fn worker_pids(&self) -> Vec<i32> {
        children(self.pid())
    }

    /// Resident memory (VmRSS) of the server and its workers together, in bytes.
    pub fn rss(&self) -> u64 {
        let mut pids = vec![self.pid()];
        pids.extend(self.worker_pids());
        pids.iter().filter_map(|&p| rss_of(p)).sum()
    }
}

/// The children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            kids.split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// VmRSS of a process, in bytes.
pub fn rss_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Whether process `pid` is still there (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
            !matches!(state, Some(Some('Z' | 'X')) | None)
        })
        .unwrap_or(false)
}

impl Drop for Server {
    fn drop(&mut self) {
        // Quick shutdown (it removes the segment file), then make sure.
        self.signal(libc::SIGQUIT);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server stderr ---\n{}", self.stderr());
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads responses from a connection, keeping bytes of the next one.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(l);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response; `None` if the connection closed first.
    pub fn response(&mut self, head_request: bool) -> Option<Response> {
        let status_line = self.line()?;
        let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let l = self.line().expect("closed inside a head");
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header line");
            headers.push((k.to_owned(), v.trim().to_owned()));
        }
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return Some(r);
        }
        if let Some(n) = r.header("content-length") {
            r.body = self.exact(n.parse().unwrap());
        } else if r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size =
                    usize::from_str_radix(self.line().expect("chunk size").trim(), 16).unwrap();
                if size == 0 {
                    loop {
                        let l = self.line().expect("trailer");
                        if l.is_empty() {
                            break;
                        }
                        let (k, v) = l.split_once(':').unwrap();
                        r.trailers.push((k.to_owned(), v.trim().to_owned()));
                    }
                    break;
                }
                let data = self.exact(size);
                r.body.extend_from_slice(&data);
                assert_eq!(self.exact(2), b"\r\n");
            }
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }

    /// Whether the server closed the connection (reads EOF, or a reset).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

/// One request on a fresh connection.
pub fn get(server: &Server, path: &str) -> Response {
    let mut c = Client::new(server.connect());
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.response(false).expect("a response")
}

/// Keep-alive clients sending echo requests in a loop, counting successes
/// and recording every failure (a wrong status or body, or a connection
/// closed under a request).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    /// `clients` threads, each on its own keep-alive connection to `addr`.
    pub fn start(addr: &str, clients: usize) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (stop, ok, addr) = (stop.clone(), ok.clone(), addr.to_owned());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let connect = || {
                        let s = TcpStream::connect(&addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        Client::new(s)
                    };
                    let mut c = connect();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!("client {i} request {n}");
                        c.send(
                            format!(
                                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        match c.response(false) {
                            Some(r) => {
                                if r.status == 200 && r.body == body.as_bytes() {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.push(format!(
                                        "{} {:?}",
                                        r.status,
                                        String::from_utf8_lossy(&r.body)
                                    ));
                                }
                                if r.header("connection") == Some("close") {
                                    c = connect();
                                }
                            }
                            None => {
                                failures.push("connection closed under a request".into());
                                c = connect();
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Requests answered well so far.
    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests have been answered well (up to 30 s).
    pub fn wait_progress(&self, n: usize) {
        let target = self.ok() + n;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.ok() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "load stalled at {}",
                self.ok()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; returns the successes and the failures.
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = self.ok.clone();
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (ok.load(std::sync::atomic::Ordering::Relaxed), failures)
    }
}

/// The pid of the worker that answers `/pid` on a fresh connection.
pub fn pid_of_worker(server: &Server) -> i32 {
    let r = get(server, "/pid");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap().parse().unwrap()
}

/// Waits up to `secs` for `cond` to hold; fails the test with `what()` if it
/// does not.
pub fn wait_until(secs: u64, what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "after {secs} s: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Load {
    /// Stops the clients and fails the test if any request failed; returns
    /// how many succeeded.
    pub fn finish(self) -> usize {
        let (ok, failures) = self.stop();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {:?}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)]
        );
        ok
    }
}
