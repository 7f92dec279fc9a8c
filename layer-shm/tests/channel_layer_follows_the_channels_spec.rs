//! The channel API behaves as the Channels channel-layer spec says, between
//! endpoints of one process (the cross-process tests cover processes).

mod common;

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use common::config;
use ringway_layer_shm::{Config, Error, Segment, SendError};

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
fn a_sent_message_is_received_once() {
    let seg = Segment::create(&config()).unwrap();
    let (mut a, mut b) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    a.send("tasks", b"one").unwrap();
    a.send("tasks", b"two").unwrap();
    assert_eq!(
        b.try_receive("tasks").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        b.receive("tasks", Some(Duration::ZERO)).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(b.try_receive("tasks").unwrap(), None);
}

#[test]
fn a_channel_at_capacity_refuses_with_full_and_queues_nothing() {
    let seg = Segment::create(&Config {
        capacity: 3,
        ..config()
    })
    .unwrap();
    let (mut a, mut b, mut rx) = (
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
    );
    a.send("q", b"1").unwrap();
    a.send("q", b"2").unwrap();
    b.send("q", b"3").unwrap();
    // Capacity counts every sender's messages.
    assert!(matches!(a.send("q", b"4"), Err(SendError::Full)));
    assert!(matches!(b.send("q", b"4"), Err(SendError::Full)));
    let mut got = Vec::new();
    while let Some(m) = rx.try_receive("q").unwrap() {
        got.push(m);
    }
    got.sort();
    assert_eq!(got, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    a.send("q", b"5").unwrap();
}

#[test]
fn capacity_can_be_set_per_name_pattern() {
    let seg = Segment::create(&Config {
        capacity: 2,
        channel_capacity: vec![("big.*".into(), 5), ("big.small".into(), 1)],
        ..config()
    })
    .unwrap();
    let mut ep = seg.endpoint().unwrap();
    let fill = |ep: &mut ringway_layer_shm::Endpoint, name: &str| {
        let mut n = 0;
        while ep.send(name, b"x").is_ok() {
            n += 1;
        }
        n
    };
    assert_eq!(fill(&mut ep, "big.one"), 5);
    // First matching rule wins, as in channels_redis.
    assert_eq!(fill(&mut ep, "big.small"), 5);
    assert_eq!(fill(&mut ep, "other"), 2);
}

#[test]
fn messages_expire_unread_after_the_expiry() {
    let seg = Segment::create(&Config {
        expiry: Duration::from_millis(50),
        ..config()
    })
    .unwrap();
    let (mut a, mut b) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    a.send("q", b"old").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    a.send("q", b"new").unwrap();
    assert_eq!(b.try_receive("q").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(b.try_receive("q").unwrap(), None);
}

#[test]
fn new_channel_names_are_unique_and_only_their_creator_receives_them() {
    let seg = Segment::create(&config()).unwrap();
    let (mut owner, mut other) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    let x = owner.new_channel("specific.").unwrap();
    let y = owner.new_channel("specific.").unwrap();
    let z = other.new_channel("specific.").unwrap();
    assert!(x.starts_with("specific.") && x.contains('!'), "{x}");
    assert!(x != y && y != z && x != z);
    other.send(&y, b"for y").unwrap();
    other.send(&x, b"for x").unwrap();
    // Receiving x first stashes y's message for later: routing is by name.
    assert_eq!(
        owner.try_receive(&x).unwrap().as_deref(),
        Some(&b"for x"[..])
    );
    assert_eq!(
        owner.try_receive(&y).unwrap().as_deref(),
        Some(&b"for y"[..])
    );
    assert_eq!(owner.try_receive(&x).unwrap(), None);
    owner.send(&x, b"again").unwrap();
    let err = other.try_receive(&x).unwrap_err();
    assert!(
        err.to_string().contains("belongs to another endpoint"),
        "{err}"
    );
    // A process-specific name nobody created has no receiver.
    assert!(matches!(
        other.send("nobody.1.1!x", b"?"),
        Err(SendError::Other(Error::NoReceiver(_)))
    ));
}

#[test]
fn receive_blocks_until_another_thread_sends() {
    let seg = Segment::create(&config()).unwrap();
    let mut rx = seg.endpoint().unwrap();
    let name = rx.new_channel("inbox.").unwrap();
    let seg2 = seg.clone();
    let name2 = name.clone();
    let t = std::thread::spawn(move || {
        let mut tx = seg2.endpoint().unwrap();
        tx.send(&name2, b"wake up").unwrap();
    });
    let got = rx.receive(&name, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(got.as_deref(), Some(&b"wake up"[..]));
    t.join().unwrap();
}

#[test]
fn receive_returns_none_at_its_timeout() {
    let seg = Segment::create(&config()).unwrap();
    let mut rx = seg.endpoint().unwrap();
    let start = Instant::now();
    assert_eq!(
        rx.receive("quiet", Some(Duration::from_millis(50)))
            .unwrap(),
        None
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn an_armed_doorbell_becomes_readable_when_a_message_arrives() {
    let seg = Segment::create(&config()).unwrap();
    let (mut rx, mut tx) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    let name = rx.new_channel("loop.").unwrap();
    let fd = rx.wait_fd().unwrap();
    assert!(!rx.arm(&name).unwrap(), "nothing queued yet");
    assert!(!readable(fd, 0));
    tx.send(&name, b"ding").unwrap();
    assert!(readable(fd, 5000));
    rx.drain_bell();
    assert!(!readable(fd, 0));
    assert_eq!(
        rx.try_receive(&name).unwrap().as_deref(),
        Some(&b"ding"[..])
    );
    // Arming with a message already queued says so instead of waiting.
    tx.send(&name, b"queued").unwrap();
    assert!(rx.arm(&name).unwrap());
    // An unarmed channel rings nobody.
    assert!(!readable(fd, 0));
}

#[test]
fn group_send_reaches_members_skips_full_ones_and_discard_is_idempotent() {
    let seg = Segment::create(&Config {
        channel_capacity: vec![("tiny*".into(), 1)],
        ..config()
    })
    .unwrap();
    let (mut a, mut b, mut tx) = (
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
    );
    let ca = a.new_channel("room.").unwrap();
    let cb = b.new_channel("tiny.").unwrap();
    tx.group_add("chat", &ca).unwrap();
    tx.group_add("chat", &cb).unwrap();
    tx.group_add("chat", &cb).unwrap(); // adding twice is one membership
    assert_eq!(tx.group_members("chat").unwrap().len(), 2);
    let r = tx.group_send("chat", b"m1").unwrap();
    assert_eq!((r.sent, r.full), (2, 0));
    let r = tx.group_send("chat", b"m2").unwrap();
    assert_eq!(
        (r.sent, r.full),
        (1, 1),
        "the full member is skipped, not an error"
    );
    assert_eq!(a.try_receive(&ca).unwrap().as_deref(), Some(&b"m1"[..]));
    assert_eq!(a.try_receive(&ca).unwrap().as_deref(), Some(&b"m2"[..]));
    assert_eq!(b.try_receive(&cb).unwrap().as_deref(), Some(&b"m1"[..]));
    assert_eq!(b.try_receive(&cb).unwrap(), None);
    tx.group_discard("chat", &cb).unwrap();
    tx.group_discard("chat", &cb).unwrap();
    tx.group_discard("nosuchgroup", &cb).unwrap();
    assert_eq!(tx.group_members("chat").unwrap(), vec![ca.clone()]);
}

#[test]
fn group_memberships_expire() {
    let seg = Segment::create(&Config {
        group_expiry: Duration::from_millis(50),
        ..config()
    })
    .unwrap();
    let mut ep = seg.endpoint().unwrap();
    let c = ep.new_channel("g.").unwrap();
    ep.group_add("short", &c).unwrap();
    assert_eq!(ep.group_members("short").unwrap().len(), 1);
    std::thread::sleep(Duration::from_millis(150));
    assert!(ep.group_members("short").unwrap().is_empty());
    assert_eq!(ep.group_send("short", b"x").unwrap().sent, 0);
}

#[test]
fn two_receivers_of_one_channel_share_its_messages_without_duplicates() {
    let seg = Segment::create(&Config {
        capacity: 10_000,
        ..config()
    })
    .unwrap();
    let mut tx = seg.endpoint().unwrap();
    for i in 0..2000u32 {
        tx.send("work", &i.to_le_bytes()).unwrap();
    }
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let seg = seg.clone();
            std::thread::spawn(move || {
                let mut rx = seg.endpoint().unwrap();
                let mut got = Vec::new();
                while let Some(m) = rx
                    .receive("work", Some(Duration::from_millis(200)))
                    .unwrap()
                {
                    got.push(u32::from_le_bytes(m.try_into().unwrap()));
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
}

#[test]
fn flush_deletes_messages_channels_and_groups() {
    let seg = Segment::create(&config()).unwrap();
    let mut ep = seg.endpoint().unwrap();
    let c = ep.new_channel("f.").unwrap();
    ep.send("q", b"x").unwrap();
    ep.group_add("g", &c).unwrap();
    ep.flush().unwrap();
    assert_eq!(ep.try_receive("q").unwrap(), None);
    assert!(ep.group_members("g").unwrap().is_empty());
    let st = seg.stats();
    assert_eq!(
        (st.lanes_active, st.lanes_detached, st.memberships),
        (0, 0, 0),
        "{st:?}"
    );
    ep.send("q", b"y").unwrap();
    assert_eq!(ep.try_receive("q").unwrap().as_deref(), Some(&b"y"[..]));
}

#[test]
fn oversized_messages_and_bad_names_are_refused_with_the_reason() {
    let seg = Segment::create(&config()).unwrap();
    let mut ep = seg.endpoint().unwrap();
    let max = seg.geometry().max_message as usize;
    ep.send("q", &vec![0; max]).unwrap();
    match ep.send("q", &vec![0; max + 1]) {
        Err(SendError::Other(e @ Error::TooLarge { .. })) => {
            assert!(e.to_string().contains("split it"))
        }
        other => panic!("{other:?}"),
    }
    for bad in ["has space", "two!bang!s", ""] {
        assert!(
            matches!(
                ep.send(bad, b"x"),
                Err(SendError::Other(Error::InvalidName(_)))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ep.group_add("bad group", "q"),
        Err(Error::InvalidName(_))
    ));
}

#[test]
fn two_hundred_and_fifty_six_endpoints_send_to_one_consumer_and_the_next_is_refused() {
    use ringway_layer_shm::{LANES_PER_CHANNEL, MAX_ENDPOINTS};
    const EACH: u32 = 20;
    assert_eq!((MAX_ENDPOINTS, LANES_PER_CHANNEL), (256, 256));
    let seg = Segment::create(&Config {
        lanes: 256,
        lane_bytes: 4096,
        max_message: 64,
        channel_capacity: vec![("fan.in".into(), 256 * EACH)],
        ..config()
    })
    .unwrap();
    let mut eps: Vec<_> = (0..MAX_ENDPOINTS)
        .map(|_| seg.endpoint().unwrap())
        .collect();
    assert!(matches!(seg.endpoint(), Err(Error::TableFull("endpoint"))));
    let mut rx = eps.remove(0);
    let id = rx.channel("fan.in").unwrap();
    // Every endpoint sends, the consumer too: 256 lanes in one channel.
    for i in 0..EACH {
        rx.send_id(id, b"", &[0, 0, i as u8]).unwrap();
    }
    let senders: Vec<_> = eps
        .into_iter()
        .enumerate()
        .map(|(k, mut ep)| {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let id = ep.channel("fan.in").unwrap();
                    let k = k as u16 + 1;
                    for i in 0..EACH {
                        let [a, b] = k.to_le_bytes();
                        ep.send_id(id, b"", &[a, b, i as u8]).unwrap();
                    }
                    ep
                })
                .unwrap()
        })
        .collect();
    let mut next = vec![0u32; MAX_ENDPOINTS];
    let mut got = 0;
    while got < MAX_ENDPOINTS as u32 * EACH {
        let n = rx
            .try_receive_many(id, 1000, |_, m| {
                let k = u16::from_le_bytes([m[0], m[1]]) as usize;
                assert_eq!(u32::from(m[2]), next[k], "endpoint {k} out of order");
                next[k] += 1;
            })
            .unwrap();
        if n == 0 {
            rx.wait(id, Some(Duration::from_millis(100)));
        }
        got += n as u32;
    }
    assert!(next.iter().all(|&n| n == EACH), "{next:?}");
    assert_eq!(seg.stats().lanes_active, 256);
    let eps: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(matches!(seg.endpoint(), Err(Error::TableFull("endpoint"))));
    drop(eps);
    assert!(
        seg.endpoint().is_ok(),
        "detached endpoints free their slots"
    );
}

#[test]
fn the_segment_file_is_private_and_removed_with_its_creator() {
    use std::os::unix::fs::PermissionsExt;
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_owned();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("ringway-") && name.len() > 30, "{name}");
    let opened = Segment::open(&path).unwrap();
    drop(opened);
    assert!(path.exists(), "an opener does not remove it");
    drop(seg);
    assert!(!path.exists(), "the creator removes it");
}

#[test]
fn a_well_known_inbox_has_one_owner_at_a_time() {
    let seg = Segment::create(&config()).unwrap();
    let (mut w1, mut w2, mut tx) = (
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
    );
    w1.own_channel("worker.0!").unwrap();
    assert!(matches!(
        w2.own_channel("worker.0!"),
        Err(Error::ChannelOwned(_))
    ));
    assert!(matches!(
        w2.own_channel("worker.0"),
        Err(Error::InvalidName(_))
    ));
    tx.send("worker.0!req", b"r1").unwrap();
    assert_eq!(
        w1.try_receive("worker.0!req").unwrap().as_deref(),
        Some(&b"r1"[..])
    );
    drop(w1);
    // Its owner gone, the inbox (and what was queued in it) went with it.
    assert!(matches!(
        tx.send("worker.0!req", b"lost"),
        Err(SendError::Other(Error::NoReceiver(_)))
    ));
    let id = w2.own_channel("worker.0!").unwrap();
    tx.send("worker.0!req", b"r2").unwrap();
    let mut out = Vec::new();
    assert_eq!(w2.try_receive_id(id, &mut out).unwrap(), Some(3));
    assert_eq!(out, b"reqr2");
}

#[test]
fn batches_queue_up_to_capacity_and_drain_in_order() {
    let seg = Segment::create(&Config {
        capacity: 5,
        ..config()
    })
    .unwrap();
    let (mut tx, mut rx) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    let id = tx.channel("batch").unwrap();
    let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 3]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    // Only what fits is queued; the caller learns how many.
    assert_eq!(tx.send_many(id, b"t", &refs).unwrap(), 5);
    assert!(matches!(tx.send_id(id, b"", b"x"), Err(SendError::Full)));
    let rid = rx.channel("batch").unwrap();
    let mut got = Vec::new();
    let n = rx
        .try_receive_many(rid, 3, |tag, payload| {
            assert_eq!(tag, b"t");
            got.push(payload.to_vec());
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        rx.try_receive_many(rid, 100, |_, p| got.push(p.to_vec()))
            .unwrap(),
        2
    );
    assert_eq!(got, msgs[..5].to_vec());
    assert_eq!(
        rx.try_receive_many(rid, 100, |_, _| panic!("empty"))
            .unwrap(),
        0
    );
}

#[test]
fn held_wake_ups_are_delivered_once_at_the_flush() {
    let seg = Segment::create(&config()).unwrap();
    let (mut rx, mut tx) = (seg.endpoint().unwrap(), seg.endpoint().unwrap());
    let name = rx.new_channel("held.").unwrap();
    let fd = rx.wait_fd().unwrap();
    assert!(!rx.arm(&name).unwrap());
    tx.hold_wakeups(true);
    for i in 0..10u8 {
        tx.send(&name, &[i]).unwrap();
    }
    // Queued, but the sleeping receiver has not been woken yet.
    assert!(!readable(fd, 0));
    tx.flush_wakeups();
    assert!(readable(fd, 5000));
    rx.drain_bell();
    for i in 0..10u8 {
        assert_eq!(rx.try_receive(&name).unwrap(), Some(vec![i]));
    }
}

#[test]
fn progress_counts_what_the_consumer_took_and_what_waits() {
    use ringway_layer_shm::Progress;
    let seg = Segment::create(&Config {
        expiry: Duration::from_millis(100),
        ..config()
    })
    .unwrap();
    let (mut tx, mut rx, mut supervisor) = (
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
        seg.endpoint().unwrap(),
    );
    rx.own_channel("worker.0!").unwrap();
    let id = supervisor.channel("worker.0!").unwrap();
    let progress = |s: &ringway_layer_shm::Endpoint| s.progress(id).unwrap();
    assert_eq!(
        progress(&supervisor),
        Progress {
            taken: 0,
            queued: 0
        }
    );
    for i in 0..5u8 {
        tx.send("worker.0!r", &[i]).unwrap();
    }
    assert_eq!(
        progress(&supervisor),
        Progress {
            taken: 0,
            queued: 5
        }
    );
    let mut got = 0;
    while got < 2 {
        got += usize::from(rx.try_receive("worker.0!r").unwrap().is_some());
    }
    assert_eq!(
        progress(&supervisor),
        Progress {
            taken: 2,
            queued: 3
        }
    );
    while rx.try_receive("worker.0!r").unwrap().is_some() {}
    assert_eq!(
        progress(&supervisor),
        Progress {
            taken: 5,
            queued: 0
        }
    );
    // Records dropped as expired are taken too: the consumer is moving.
    tx.send("worker.0!r", b"late").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(rx.try_receive("worker.0!r").unwrap(), None);
    assert_eq!(
        progress(&supervisor),
        Progress {
            taken: 6,
            queued: 0
        }
    );
    drop(rx);
    assert_eq!(supervisor.progress(id), None, "the channel is gone");
}
