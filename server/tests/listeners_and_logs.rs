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
