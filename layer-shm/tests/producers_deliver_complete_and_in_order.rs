//! Four producer processes send a million messages each into one channel; the
//! consumer (this process) gets every one exactly once, in order per producer.

mod common;

use std::time::{Duration, Instant};

use common::{config, parse, Peer};
use ringway_layer_shm::{Config, Segment};

#[test]
fn four_producers_of_a_million_messages_arrive_complete_unduplicated_in_order() {
    const PRODUCERS: usize = 4;
    const COUNT: u64 = 1_000_000;
    let seg = Segment::create(&Config {
        channel_capacity: vec![("inbox".into(), 8192)],
        ..config()
    })
    .unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    let inbox = ep.channel("inbox").unwrap();
    let mut peers: Vec<Peer> = (0..PRODUCERS)
        .map(|i| {
            Peer::spawn(&[
                "produce",
                &path,
                "inbox",
                &i.to_string(),
                &COUNT.to_string(),
            ])
        })
        .collect();
    for p in &mut peers {
        assert_eq!(p.line(), "ready");
    }
    let mut next = [0u64; PRODUCERS];
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut received = 0u64;
    while received < PRODUCERS as u64 * COUNT {
        assert!(
            Instant::now() < deadline,
            "timed out after {received} messages: {next:?}"
        );
        match ep.try_receive_id(inbox, &mut buf).unwrap() {
            Some(tag_len) => {
                assert_eq!(tag_len, 0);
                let (id, seq) = parse(&buf);
                assert_eq!(
                    seq, next[id],
                    "producer {id}: expected {} got {seq}",
                    next[id]
                );
                next[id] += 1;
                received += 1;
            }
            None => ep.wait(inbox, Some(Duration::from_millis(100))),
        }
    }
    assert_eq!(next, [COUNT; PRODUCERS]);
    for p in peers {
        p.finish();
    }
    assert_eq!(
        ep.try_receive_id(inbox, &mut buf).unwrap(),
        None,
        "no extra message"
    );
    // The producers detached; their drained lanes went back to the pool.
    let st = seg.stats();
    assert_eq!(
        (st.endpoints, st.lanes_active, st.lanes_orphaned),
        (1, 0, 0),
        "{st:?}"
    );
}
