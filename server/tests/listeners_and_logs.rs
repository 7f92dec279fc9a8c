//! Unix-socket binds and the access log.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::{get, Server};

#[test]
fn serves_on_a_unix_socket_too() {
    let path = std::env::temp_dir().join(format!("ringway-test-{}.sock", std::process::id()));
    let bind = format!("unix:{}", path.display());
    let _s = Server::start(&[
        "--bench-worker",
        "hello",
        "--bind",
        "127.0.0.1:0",
        "--bind",
        &bind,
    ]);
    let mut u = UnixStream::connect(&path).unwrap();
    u.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    u.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("Hello, world!"), "{out}");
}

#[test]
fn access_log_uses_gunicorn_atoms() {
    let log = std::env::temp_dir().join(format!("ringway-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--access-log",
        log.to_str().unwrap(),
        "--access-logformat",
        "%(h)s %(m)s %(U)s %(q)s %(s)s %(B)s",
    ]);
    assert_eq!(get(&s, "/path?x=1").status, 200);
    // The line is written just after the response; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut text = String::new();
    while text.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    std::fs::remove_file(&log).unwrap();
    assert_eq!(text.trim_end(), "127.0.0.1 GET /path x=1 200 13");
}

#[test]
fn serves_on_an_inherited_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-server"));
    cmd.args(["--bench-worker", "hello", "--bind", "fd://7"])
        .stdout(std::process::Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it makes the listener fd 7 (without
    // close-on-exec) in the child only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("fd://7"), "{line}");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        resp.starts_with("HTTP/1.1 200 OK") && resp.ends_with("Hello, world!"),
        "{resp}"
    );
}

#[test]
fn a_second_sigint_stops_at_once() {
    let s = Server::start(&["--bench-worker", "echo", "--graceful-timeout", "60"]);
    let mut slow = common::Client::new(s.connect());
    slow.send(b"GET /sleep?ms=60000&tag=held HTTP/1.1\r\nHost: t\r\n\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.stderr().contains("sleeping request held") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    let t = std::time::Instant::now();
    s.signal(libc::SIGINT);
    // The first SIGINT starts a graceful stop, which would wait for the
    // minute-long request; the second ends it now.
    while !s.stderr().contains("stopping gracefully") {
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        std::thread::yield_now();
    }
    s.signal(libc::SIGINT);
    assert_eq!(s.wait(), 1);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}
