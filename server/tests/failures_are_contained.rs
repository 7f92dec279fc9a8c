//! A misbehaving app gets a 500, a crashed worker fails only its own
//! request (502) and is replaced, a client that leaves is forgotten.

mod common;

use std::io::Write;

use common::{get, Client, Server};

#[test]
fn an_app_error_is_a_500_with_the_cause_logged() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let r = get(&s, "/error");
    assert_eq!(r.status, 500);
    s.wait_for_log("the app failed on purpose", 1, 10);
    assert_eq!(get(&s, "/").status, 200);
}

#[test]
fn a_crashed_worker_fails_its_request_with_502_and_is_replaced() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    // A request in flight on the worker when it dies...
    let mut slow = Client::new(s.connect());
    slow.send(b"GET /sleep?ms=60000&tag=victim HTTP/1.1\r\nHost: t\r\n\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.stderr().contains("sleeping request victim") {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never reached the worker"
        );
        std::thread::yield_now();
    }
    let r = get(&s, "/crash");
    assert_eq!(r.status, 502);
    // ...fails too (it was on the same worker), with 502, not a hang.
    assert_eq!(slow.response(false).unwrap().status, 502);
    // The replacement serves the next request.
    let mut ok = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let r = get(&s, "/hi");
        if r.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(r.status, 503, "only 503 while the replacement starts");
    }
    assert!(ok, "replacement worker never answered");
    s.wait_for_log("replacing it", 1, 10);
}

#[test]
fn client_gone_mid_request_and_mid_response_leaves_the_server_healthy() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    {
        let mut c = s.connect();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\npartial")
            .unwrap();
    }
    {
        let mut c = Client::new(s.connect());
        c.send(b"GET /big?n=50000000 HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut first = [0u8; 1024];
        std::io::Read::read(&mut c.stream, &mut first).unwrap();
    }
    for _ in 0..5 {
        assert_eq!(get(&s, "/").status, 200);
    }
}
