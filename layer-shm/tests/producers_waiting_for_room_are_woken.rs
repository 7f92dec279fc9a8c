//! A producer that finds a channel full can wait for room through its
//! doorbell instead of spinning: the consumer rings it after the receive
//! batch that hands space back.

mod common;

use std::os::fd::RawFd;
use std::time::Duration;

use common::{config, eventually, Peer};
use ringway_layer_shm::{Config, Segment, SendError};

fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
}

#[test]
fn an_armed_producer_is_rung_when_the_consumer_takes_from_a_full_channel() {
    let seg = Segment::create(&Config {
        capacity: 3,
        ..config()
    })
    .unwrap();
    let (mut tx, mut rx) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    let id = tx.channel("q").unwrap();
    let rid = rx.channel("q").unwrap();
    assert!(tx.arm_space(id).unwrap(), "an empty channel has room");
    for i in 0..3u8 {
        tx.send_id(id, b"", &[i]).unwrap();
    }
    assert!(matches!(tx.send_id(id, b"", b"x"), Err(SendError::Full)));
    let fd = tx.wait_fd().unwrap();
    assert!(!tx.arm_space(id).unwrap(), "full: armed");
    assert!(!readable(fd, 0));
    // A batch that takes two messages rings once.
    assert_eq!(rx.try_receive_many(rid, 2, |_, _| {}).unwrap(), 2);
    assert!(readable(fd, 5000));
    tx.drain_bell();
    tx.send_id(id, b"", b"3").unwrap();
    // Taking nothing rings no one; an unarmed producer is not rung.
    assert_eq!(rx.try_receive_many(rid, 0, |_, _| {}).unwrap(), 0);
    assert_eq!(rx.try_receive_many(rid, 1, |_, _| {}).unwrap(), 1);
    assert!(!readable(fd, 0));
    // wait_space with room there returns at once; at a full channel it
    // times out if nobody takes anything.
    assert!(tx.wait_space(id, Some(Duration::ZERO)).unwrap());
    tx.send_id(id, b"", b"4").unwrap();
    tx.send_id(id, b"", b"5").unwrap();
    assert!(!tx.wait_space(id, Some(Duration::from_millis(20))).unwrap());
}

#[test]
fn a_producer_blocked_in_wait_space_in_another_process_is_woken_by_the_consumer() {
    let seg = Segment::create(&Config {
        channel_capacity: vec![("room".into(), 8)],
        ..config()
    })
    .unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut rx = seg.endpoint().unwrap();
    let id = rx.channel("room").unwrap();
    let mut producer = Peer::spawn(&["wait-space", &path, "room"]);
    assert_eq!(producer.line(), "waiting");
    // Take nothing until the producer is asleep in its poll on the doorbell,
    // so that only the consumer's ring can wake it.
    let wchan = format!("/proc/{}/wchan", producer.child.id());
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&wchan)
            .is_ok_and(|w| w.contains("poll"))),
        "the producer never blocked"
    );
    let mut buf = Vec::new();
    assert!(rx.try_receive_id(id, &mut buf).unwrap().is_some());
    let woken = producer.line();
    let ms: u64 = match woken.split(' ').collect::<Vec<_>>()[..] {
        ["woken", "true", ms] => ms.parse().unwrap(),
        _ => panic!("{woken}"),
    };
    // Promptly: the wait's timeout is 10 s.
    assert!(ms < 5000, "woken after {ms} ms");
    assert_eq!(producer.line(), "sent");
    producer.finish();
    let mut n = 0;
    while rx.try_receive_id(id, &mut buf).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 8, "7 of the fill and the one sent after waking");
}
