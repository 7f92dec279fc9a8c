//! What a misbehaving client or worker can make the server hold is bounded:
//! a body sent faster than any worker takes it, a worker that ignores its
//! response window, a worker that sends trailers without end.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// Samples the resident memory of the server and its workers while `f`
/// runs; returns the peak growth over the value before.
fn peak_growth(s: &Server, f: impl FnOnce()) -> u64 {
    let base = s.rss();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let pids: Vec<i32> = std::iter::once(s.pid()).chain(s.worker_pids()).collect();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now: u64 = pids.iter().filter_map(|&p| common::rss_of(p)).sum();
                peak.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.load(Ordering::Relaxed).saturating_sub(base)
}

#[test]
fn a_body_sent_while_every_inbox_is_full_stays_in_the_socket() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--workers",
        "1",
        "--reactors",
        "1",
    ]);
    let worker = s.worker_pids()[0];
    // SAFETY: plain syscall on the server's worker.
    unsafe { libc::kill(worker, libc::SIGSTOP) };
    let body = vec![b'a'; 60_000];
    let _filling: Vec<Client> = (0..40)
        .map(|_| {
            let mut c = Client::new(s.connect());
            c.send(
                format!(
                    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            c.send(&body);
            c
        })
        .collect();
    // Now a client sends a 2 GB body as fast as it can for 3 seconds: the
    // request waits for room, and the server must not read the body into
    // memory meanwhile.
    let growth = peak_growth(&s, || {
        let mut c = s.connect();
        c.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000000\r\n\r\n")
            .unwrap();
        let chunk = vec![b'b'; 1 << 16];
        let end = Instant::now() + Duration::from_secs(3);
        let mut sent = 0usize;
        while Instant::now() < end {
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        eprintln!("the client got {sent} bytes into the socket");
    });
    // SAFETY: as above.
    unsafe { libc::kill(worker, libc::SIGCONT) };
    assert!(growth < 16 << 20, "the server grew by {} MiB", growth >> 20);
}

#[test]
fn a_worker_that_ignores_its_response_window_fails_its_request_not_the_server() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    let growth = peak_growth(&s, || {
        // A client that does not read: the worker sends 50 MB anyway.
        let mut c = s.connect();
        c.write_all(b"GET /ignore-window?n=50000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        s.wait_for_log("sent more than --response-window", 1, 20);
        drop(c);
    });
    assert!(growth < 16 << 20, "the server grew by {} MiB", growth >> 20);
    assert_eq!(common::get(&s, "/").status, 200);
}

#[test]
fn endless_trailers_fail_the_request_instead_of_growing_memory() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    let growth = peak_growth(&s, || {
        let mut c = Client::new(s.connect());
        c.send(b"GET /many-trailers?n=20000 HTTP/1.1\r\nHost: t\r\n\r\n");
        s.wait_for_log("more trailer fields than", 1, 20);
        assert!(c.response(false).is_none() || c.closed());
    });
    assert!(growth < 16 << 20, "the server grew by {} MiB", growth >> 20);
}

#[test]
fn a_refused_request_whose_body_is_still_coming_gets_its_status_not_a_reset() {
    // The client sends all of a body over the limit before it reads: the
    // server answers 413 at the limit, and must linger (read and drop the
    // rest for a while) so the client's send succeeds and it reads the 413,
    // instead of failing on a reset.
    let s = Server::start(&["--bench-worker", "echo", "--limit-request-body", "100"]);
    let body = vec![b'x'; 2 << 20];
    for _ in 0..10 {
        let mut c = Client::new(s.connect());
        let mut request = format!(
            "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        // A client (Python's http.client, curl) that fails to send the body
        // reports that, not the response: the send must succeed.
        c.stream
            .write_all(&request)
            .expect("sending the body (the server closed on it)");
        let r = c.response(false).expect("a response, not a reset");
        assert_eq!(r.status, 413);
    }
}
