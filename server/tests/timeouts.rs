//! Header, keep-alive, response and write timeouts.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Client, Server};

#[test]
fn a_slow_request_head_gets_408() {
    let s = Server::start(&["--bench-worker", "hello", "--header-timeout", "0.3"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let t = Instant::now();
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 408);
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(c.closed());
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = Server::start(&["--bench-worker", "hello", "--keep-alive", "0.3"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 200);
    let t = Instant::now();
    assert!(c.closed());
    assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_app_that_does_not_answer_in_time_gets_504() {
    let s = Server::start(&["--bench-worker", "echo", "--timeout", "0.3"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 504);
}

#[test]
fn a_client_that_stops_reading_is_dropped() {
    let s = Server::start(&["--bench-worker", "echo", "--write-timeout", "0.5"]);
    let mut stalled = s.connect();
    // Ask for far more than the socket buffers hold, and never read.
    stalled
        .write_all(b"GET /big?n=200000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The server gave up on it: draining now ends well before 200 MB.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < 100_000_000,
        "read {total} bytes: the stalled client was not dropped"
    );
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 200);
}
