//! What happens around the server must not stop it: a closed stderr, an
//! access log nobody reads, a worker writing control messages it has no
//! business writing.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, temp_path, Server};

/// A server started by hand, killed however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_closed_stderr_never_stops_the_server() {
    // stderr is a pipe whose reader is gone: every log line fails (EPIPE).
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(rd);
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_ringway-server"))
            .args(["--bench-worker", "echo", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(wr))
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(|a| a.trim_end_matches(',').to_owned())
        .expect("listening line");
    let request = |path: &str| {
        let mut c = common::Client::new(std::net::TcpStream::connect(&addr).unwrap());
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        c.response(false).map(|r| r.status)
    };
    // Each of these logs a line to the dead stderr.
    assert_eq!(request("/error"), Some(500));
    assert_eq!(request("/bad-start"), Some(500));
    assert_eq!(request("/crash"), Some(502));
    let deadline = Instant::now() + Duration::from_secs(20);
    while request("/") != Some(200) {
        assert!(Instant::now() < deadline, "no worker came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.0.try_wait().unwrap().is_none(), "the server died");
}

#[test]
fn an_access_log_nobody_reads_does_not_hold_up_requests() {
    let fifo = temp_path("access.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that opens the FIFO and never reads: once its 64 KiB buffer
    // fills, every write to it blocks.
    // SAFETY: a NUL-terminated path.
    let reader = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(reader >= 0);
    // SAFETY: ours.
    let reader = unsafe { OwnedFd::from_raw_fd(reader) };
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--access-log",
        fifo.to_str().unwrap(),
    ]);
    let mut c = common::Client::new(s.connect());
    // Far more log lines than the FIFO and the queue hold (10 MB).
    let request = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "p".repeat(1000));
    for i in 0..10_000 {
        c.send(request.as_bytes());
        let r = c
            .response(false)
            .unwrap_or_else(|| panic!("request {i} got no answer"));
        assert_eq!(r.status, 200);
    }
    drop(reader);
    s.wait_for_log("lines dropped", 1, 10);
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn a_worker_cannot_stop_the_server_with_a_control_message() {
    let s = Server::start(&["--bench-worker", "echo", "--graceful-timeout", "1"]);
    assert_eq!(get(&s, "/fake-control").status, 200);
    // The reactor saw it and dropped it...
    s.wait_for_log("dropped a 1-byte message", 1, 10);
    // ...and began no shutdown: then every response would say `connection: close`.
    let mut c = common::Client::new(s.connect());
    for _ in 0..20 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response(false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None, "the server began a shutdown");
    }
}

#[test]
fn a_reactor_that_lost_its_inbox_stops_the_server_loudly() {
    // A worker that deletes every channel (the layer's `flush`, meant for
    // tests) takes the reactors' inboxes with it: a reactor can then never
    // hear from a worker again. It must not go on accepting requests it can
    // only answer with 504s.
    let s = Server::start(&["--bench-worker", "echo", "--reactors", "1"]);
    let mut c = common::Client::new(s.connect());
    c.send(b"GET /flush-layer HTTP/1.1\r\nHost: t\r\n\r\n");
    // The reactor's pump looks at its inbox at least every sweeper tick.
    let (code, err) = s.wait_with_stderr();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("reactor 0 cannot go on: its inbox is gone"),
        "{err}"
    );
}

#[test]
fn a_stderr_nobody_reads_never_holds_up_requests_or_signals() {
    // stderr is a pipe that stays open and is never read: once its 64 KiB
    // buffer is full, every write to it blocks.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut guard = Killed(
        Command::new(env!("CARGO_BIN_EXE_ringway-server"))
            .args(["--bench-worker", "echo", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(wr))
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(|a| a.trim_end_matches(',').to_owned())
        .expect("listening line");
    // Each /error logs a line: 3,000 of them are far more than the pipe holds.
    let mut c = common::Client::new(std::net::TcpStream::connect(&addr).unwrap());
    for i in 0..3000 {
        c.send(b"GET /error HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = c
            .response(false)
            .unwrap_or_else(|| panic!("request {i} got no answer"));
        assert_eq!(r.status, 500);
        c = common::Client::new(std::net::TcpStream::connect(&addr).unwrap());
    }
    // SIGTERM still stops it.
    // SAFETY: plain syscall.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM did not stop a server whose stderr is full");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(rd);
}
