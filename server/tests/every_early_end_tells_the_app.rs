//! Every way a request can end before its response completes sends
//! `http.disconnect` to the worker holding it, so the app never waits in
//! `receive()` forever. The echo worker counts the requests it holds
//! unfinished (`/outstanding`); each test starts a request, sees the worker
//! hold it, ends it badly, and sees the worker let go.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{get, Client, Server};

/// What `/outstanding` says: requests the worker holds besides that one.
fn outstanding(s: &Server) -> usize {
    let r = get(s, "/outstanding");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap().parse().unwrap()
}

/// Waits up to 10 s for the worker to hold `n` requests.
fn wait_outstanding(s: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = outstanding(s);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker holds {now} requests, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--bench-worker", "echo", "--workers", "1"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn a_malformed_chunk_mid_body_tells_the_app() {
    let s = server(&[]);
    let mut c = Client::new(s.connect());
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    wait_outstanding(&s, 1);
    c.send(b"zz\r\n");
    assert_eq!(c.response(false).unwrap().status, 400);
    wait_outstanding(&s, 0);
}

#[test]
fn a_body_over_the_limit_mid_body_gets_413_and_tells_the_app() {
    let s = server(&["--limit-request-body", "100"]);
    let mut c = Client::new(s.connect());
    c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n");
    c.send(&[b'a'; 50]);
    c.send(b"\r\n");
    wait_outstanding(&s, 1);
    c.send(b"64\r\n");
    c.send(&[b'b'; 100]);
    c.send(b"\r\n0\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 413);
    wait_outstanding(&s, 0);
}

#[test]
fn an_app_that_breaks_the_protocol_is_told_its_request_is_over() {
    let s = server(&[]);
    let mut c = Client::new(s.connect());
    // The second http.response.start is refused before the first reached
    // the client: a 500, and the connection closes.
    c.send(b"GET /bad-start HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 500);
    assert!(c.closed());
    s.wait_for_log("sent twice", 1, 10);
    wait_outstanding(&s, 0);
}

#[test]
fn a_client_gone_mid_body_tells_the_app() {
    let s = server(&[]);
    {
        let mut c = s.connect();
        c.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nsome")
            .unwrap();
        wait_outstanding(&s, 1);
    }
    wait_outstanding(&s, 0);
}

#[test]
fn a_response_timeout_tells_the_app() {
    let s = server(&["--timeout", "0.5"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_outstanding(&s, 1);
    assert_eq!(c.response(false).unwrap().status, 504);
    wait_outstanding(&s, 0);
}

#[test]
fn a_client_that_stops_reading_a_response_tells_the_app() {
    let s = server(&["--write-timeout", "0.5"]);
    let mut stalled = s.connect();
    stalled
        .write_all(b"GET /big?n=200000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_outstanding(&s, 1);
    // Never read: the server gives up on the client and tells the app.
    wait_outstanding(&s, 0);
    drop(stalled);
}

#[test]
fn a_client_that_resets_its_connection_tells_the_app_at_once() {
    let s = server(&[]);
    let c = s.connect();
    std::io::Write::write_all(&mut &c, b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    wait_outstanding(&s, 1);
    // SO_LINGER with a zero timeout: close() sends a reset.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and option of the right size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&c),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(c);
    // Long before --timeout (30 s).
    let t = Instant::now();
    wait_outstanding(&s, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
