//! SIGTERM under load: requests in flight complete, with `connection: close`;
//! the server then exits cleanly.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Server};

#[test]
fn sigterm_under_load_completes_every_in_flight_request() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--workers",
        "2",
        "--graceful-timeout",
        "20",
    ]);
    // Slow requests that are certainly in flight when the signal arrives.
    let slow: Vec<_> = (0..4)
        .map(|i| {
            let mut c = Client::new(s.connect());
            c.send(
                format!("GET /sleep?ms=1500&tag=slow{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            );
            c
        })
        .collect();
    // Fast keep-alive clients hammering the server meanwhile.
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..6)
        .map(|_| {
            let mut c = Client::new(s.connect());
            let done = done.clone();
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    c.send(b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nload");
                    match c.response(false) {
                        Some(r) if r.status == 200 && r.body == b"load" => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") == Some("close") {
                                return if c.closed() {
                                    Ok(())
                                } else {
                                    Err("open after close".into())
                                };
                            }
                        }
                        // Closed while idle, just as this request was sent: the
                        // server never read it (RFC 9112 §9.3.1: retry).
                        None => return Ok(()),
                        Some(r) => return Err(format!("bad response {r:?}")),
                    }
                }
            })
        })
        .collect();
    // Wait until the worker has all slow requests and the load is flowing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..4).any(|i| !s.stderr().contains(&format!("sleeping request slow{i}\n")))
        || done.load(Ordering::Relaxed) < 100
    {
        assert!(
            Instant::now() < deadline,
            "load never started: {}",
            s.stderr()
        );
        std::thread::yield_now();
    }
    s.signal(libc::SIGTERM);
    for mut c in slow {
        let r = c.response(false).expect("in-flight request answered");
        assert_eq!((r.status, &r.body[..]), (200, &b"slept"[..]));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed());
    }
    for l in load {
        l.join().unwrap().unwrap();
    }
    assert_eq!(s.wait(), 0);
}
