//! More workers than a 64-bit endpoint mask allowed: a reactor's inbox
//! receives from every worker, so 70 workers write through 70 lanes into it.

mod common;

use common::{Client, Server};

#[test]
fn seventy_workers_each_answer_through_one_reactor() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--reactors",
        "1",
        "--workers",
        "70",
    ]);
    assert_eq!(s.worker_pids().len(), 70);
    // 70 requests at once: least-loaded dispatch gives each worker one, and
    // each answers into the reactor's inbox through a lane of its own.
    let mut clients: Vec<Client> = (0..70)
        .map(|i| {
            let mut c = Client::new(s.connect());
            c.send(format!("GET /sleep?ms=300&tag=r{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            c
        })
        .collect();
    for c in &mut clients {
        let r = c.response(false).expect("a response");
        assert_eq!((r.status, &r.body[..]), (200, &b"slept"[..]));
    }
    s.wait_for_log(" ready", 70, 10);
}
