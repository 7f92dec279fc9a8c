//! A client that reads a large response slowly costs the server a bounded
//! window, not the response: the worker waits for credit (issue: a
//! `GET /big?n=4000000000` read at 40 KB/s grew the server by 2.8 GiB).

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, Client, Server};

/// Reads from `c` at about `rate` bytes/s for `secs`; returns bytes read.
fn read_slowly(c: &mut std::net::TcpStream, rate: usize, secs: u64) -> usize {
    let step = Duration::from_millis(100);
    let per_step = rate / 10;
    let mut buf = vec![0u8; per_step];
    let mut total = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let t = Instant::now();
        let mut got = 0;
        while got < per_step {
            match c.read(&mut buf[got..]) {
                Ok(0) => return total + got,
                Ok(n) => got += n,
                Err(e) => panic!("slow client: {e} after {total} bytes"),
            }
        }
        total += got;
        std::thread::sleep(step.saturating_sub(t.elapsed()));
    }
    total
}

#[test]
fn a_slow_reader_of_a_huge_response_grows_memory_by_less_than_16_mib() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    // Warm up: lanes, buffers and the allocator reach their working size.
    for _ in 0..3 {
        let r = get(&s, "/big?n=4000000");
        assert_eq!(r.body.len(), 4_000_000);
    }
    let base = s.rss();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    // Other clients keep being served, promptly, meanwhile.
    let others = {
        let (stop, served, addr) = (stop.clone(), served.clone(), s.addr.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut c = Client::new(std::net::TcpStream::connect(&addr).unwrap());
                c.send(b"GET /hi HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                let r = c.response(false).expect("a response");
                assert_eq!(r.status, 200);
                worst = worst.max(t.elapsed());
                served.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        })
    };
    let mut slow = s.connect();
    std::io::Write::write_all(
        &mut slow,
        b"GET /big?n=4000000000 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let sampler = {
        let stop = stop.clone();
        let pids: Vec<i32> = std::iter::once(s.pid()).chain(s.worker_pids()).collect();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(pids.iter().filter_map(|&p| common::rss_of(p)).sum::<u64>());
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        })
    };
    let read = read_slowly(&mut slow, 40_000, 20);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let worst = others.join().unwrap();
    let growth = peak.saturating_sub(base);
    eprintln!(
        "server and worker: {} MiB before, peak {} MiB while the slow client read {read} bytes",
        base >> 20,
        peak >> 20
    );
    assert!(read > 600_000, "the slow client read only {read} bytes");
    assert!(
        growth < 16 << 20,
        "server and worker grew by {} MiB (from {} MiB) while a client read {read} bytes slowly",
        growth >> 20,
        base >> 20
    );
    assert!(
        served.load(Ordering::Relaxed) > 50,
        "other clients were served only {} times in 20 s",
        served.load(Ordering::Relaxed)
    );
    assert!(
        worst < Duration::from_secs(2),
        "another client waited {worst:?}"
    );
}

#[test]
fn a_slow_reader_is_not_dropped_while_it_makes_progress() {
    // --write-timeout is "no progress for this long": a client reading
    // 20 KB/s is slow but progressing, and a 1 s timeout must not drop it,
    // though no write of 64 KiB completes within 1 s at that rate.
    let s = Server::start(&["--bench-worker", "echo", "--write-timeout", "1"]);
    let mut c = s.connect();
    std::io::Write::write_all(&mut c, b"GET /big?n=100000000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let read = read_slowly(&mut c, 20_000, 4);
    assert!(read >= 70_000, "dropped after {read} bytes");
}
