//! A worker inbox that is full is backpressure: requests wait for room
//! (woken through the layer's wake-up handshake, not by spinning) instead of
//! failing with 503.

mod common;

use std::time::Duration;

use common::{Client, Server};

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn requests_wait_for_room_in_a_full_inbox_without_spinning() {
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
    // Each request's first message carries what the first read brought of
    // its body (16 KiB or more): 40 of them fill the worker's 256 KiB lane
    // from this reactor.
    let body: Vec<u8> = (0..60_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut clients: Vec<Client> = (0..40)
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
    std::thread::sleep(Duration::from_millis(300));
    // While they wait, the reactor sleeps: it does not spin on the full inbox.
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks(s.pid()) - before;
    // SAFETY: as above.
    unsafe { libc::kill(worker, libc::SIGCONT) };
    for c in &mut clients {
        let r = c.response(false).expect("a response");
        assert_eq!(r.status, 200);
        assert!(r.body == body, "body of {} bytes", r.body.len());
    }
    // Clock ticks are 10 ms: 1.5 s of spinning would be ~150.
    assert!(
        spent < 30,
        "the server used {spent} ticks of CPU while requests waited"
    );
}
