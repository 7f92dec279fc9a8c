//! A process killed at any point wedges no one: its records, lanes, channels,
//! group memberships and even the segment lock are reclaimed.

mod common;

use std::mem::offset_of;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{config, eventually, parse, Peer, Raw};
use ringway_layer_shm::layout::EndpointSlot;
use ringway_layer_shm::{Config, Error, Reaper, Segment};

#[test]
fn producer_killed_mid_stream_is_reclaimed_and_the_consumer_carries_on() {
    let seg = Segment::create(&Config {
        channel_capacity: vec![("inbox".into(), 4096)],
        ..config()
    })
    .unwrap();
    let (tx, reaps) = mpsc::channel();
    let _reaper = Reaper::spawn(seg.clone(), move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    let inbox = ep.channel("inbox").unwrap();
    let mut victim = Peer::spawn(&["produce", &path, "inbox", "0", "100000000"]);
    let mut survivor = Peer::spawn(&["produce", &path, "inbox", "1", "200000"]);
    assert_eq!(victim.line(), "ready");
    assert_eq!(survivor.line(), "ready");

    let mut next = [0u64; 2];
    let mut buf = Vec::new();
    let mut victim = Some(victim);
    while next[1] < 200_000 || victim.is_some() {
        match ep.try_receive_id(inbox, &mut buf).unwrap() {
            Some(_) => {
                let (id, seq) = parse(&buf);
                assert_eq!(seq, next[id], "producer {id} out of order");
                next[id] += 1;
                // Kill the victim while it is sending flat out: most likely
                // in the middle of writing a record.
                if id == 0 && seq == 50_000 {
                    victim.take().unwrap().kill();
                }
            }
            None => ep.wait(inbox, Some(Duration::from_millis(100))),
        }
    }
    assert!(victim.is_none(), "the victim was killed");
    // The reaper noticed the death through the pidfd and released the
    // endpoint, orphaning its lane for us to drain.
    let report = reaps
        .recv_timeout(Duration::from_secs(10))
        .expect("reaper report")
        .unwrap();
    assert_eq!(report.endpoints, 1, "{report:?}");
    survivor.finish();
    // Drain: whatever the victim published before dying arrives, in order,
    // and nothing more (a half-written record is never seen).
    while ep.try_receive_id(inbox, &mut buf).unwrap().is_some() {
        let (id, seq) = parse(&buf);
        assert_eq!(seq, next[id]);
        next[id] += 1;
    }
    assert!(
        next[0] > 50_000,
        "victim's published messages were delivered"
    );
    assert_eq!(next[1], 200_000);
    // A drained lane is freed by a receive that finds the segment lock free
    // (the reaper may hold it this instant): receiving again gets there.
    assert!(eventually(Duration::from_secs(10), || {
        assert_eq!(ep.try_receive_id(inbox, &mut buf).unwrap(), None);
        seg.stats().lanes_orphaned == 0
    }));
    let st = seg.stats();
    // Ours and the reaper's own (it takes the segment lock as an endpoint).
    assert_eq!(
        (st.endpoints, st.lanes_active, st.lanes_orphaned),
        (2, 0, 0),
        "{st:?}"
    );
    // The channel still works for a new producer.
    let fresh = Peer::spawn(&["produce", &path, "inbox", "2", "10"]);
    let mut got = 0;
    while got < 10 {
        match ep.receive("inbox", Some(Duration::from_secs(10))).unwrap() {
            Some(m) => {
                assert_eq!(parse(&m), (2, got));
                got += 1;
            }
            None => panic!("fresh producer's messages did not arrive"),
        }
    }
    fresh.finish();
}

#[test]
fn member_killed_while_in_a_group_is_removed_from_it() {
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    let mut a = Peer::spawn(&["join", &path, "room"]);
    let mut b = Peer::spawn(&["join", &path, "room"]);
    let (name_a, name_b) = (a.line(), b.line());
    let mut members = ep.group_members("room").unwrap();
    members.sort();
    let mut want = vec![name_a.clone(), name_b.clone()];
    want.sort();
    assert_eq!(members, want);
    a.kill();
    let report = seg.reap().unwrap();
    assert_eq!((report.endpoints, report.channels), (1, 1), "{report:?}");
    assert_eq!(ep.group_members("room").unwrap(), vec![name_b.clone()]);
    let sent = ep.group_send("room", b"hello").unwrap();
    assert_eq!((sent.sent, sent.full, sent.gone), (1, 0, 0));
    // Sending to the dead member's channel says there is no receiver.
    assert!(matches!(
        ep.send(&name_a, b"x"),
        Err(ringway_layer_shm::SendError::Other(Error::NoReceiver(_)))
    ));
    b.finish();
}

#[test]
fn process_killed_holding_the_segment_lock_does_not_wedge_anyone() {
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    ep.send("inbox", b"before").unwrap();
    let mut holder = Peer::spawn(&["hold-lock", &path]);
    assert_eq!(holder.line(), "locked");
    // While it holds the lock, table changes time out instead of hanging...
    assert!(matches!(ep.group_add("g", "c"), Err(Error::LockTimeout)));
    assert!(matches!(ep.channel("other"), Err(Error::LockTimeout)));
    // ...and messages on channels already in use never need it.
    ep.send("inbox", b"during").unwrap();
    assert_eq!(
        ep.try_receive("inbox").unwrap().as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(
        ep.try_receive("inbox").unwrap().as_deref(),
        Some(&b"during"[..])
    );
    holder.kill();
    // The kernel hands the robust lock on; the next holder repairs and goes on.
    ep.group_add("g", "c").unwrap();
    assert_eq!(ep.group_members("g").unwrap(), vec!["c".to_owned()]);
    assert!(eventually(Duration::from_secs(5), || seg.stats().endpoints == 1));
}

#[test]
fn a_lock_whose_owner_slot_was_reused_by_another_process_is_taken_over() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    let mut holder = Peer::spawn(&["hold-lock", &path]);
    assert_eq!(holder.line(), "locked");
    let owner = raw.read_u32(raw.lock_word());
    let idx = (owner & 0x1ff) - 1;
    holder.kill();
    // Its slot is freed (as if released) and a new, live process attaches
    // there: same index, next generation.
    let field = |f| raw.endpoint(idx, f);
    let gen = raw.read_u32(field(offset_of!(EndpointSlot, generation)));
    raw.write_u32(field(offset_of!(EndpointSlot, generation)), gen + 1);
    raw.write_u32(field(offset_of!(EndpointSlot, state)), 0);
    raw.write_u32(field(offset_of!(EndpointSlot, claimer)), 0);
    let mut newcomer = Peer::spawn(&["attach", &path]);
    assert_eq!(newcomer.line(), "ready");
    assert_eq!(
        raw.read_u32(field(offset_of!(EndpointSlot, pid))),
        newcomer.child.id(),
        "the newcomer took the dead owner's slot"
    );
    assert_eq!(
        raw.read_u32(raw.lock_word()),
        owner,
        "the lock is still the dead owner's"
    );
    // The slot is live, but not at the generation the lock names.
    let start = Instant::now();
    ep.group_add("g", "c").unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(seg.stats().endpoints, 2, "the newcomer is kept");
    newcomer.finish();
}

#[test]
fn a_lock_word_naming_the_locker_itself_is_taken_over() {
    // Garbage in the lock word that happens to be the id the next endpoint
    // gets (slot 0, generation 0): no one will ever unlock it.
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    raw.write_u32(raw.lock_word(), 1);
    let mut ep = seg.endpoint().unwrap();
    assert_eq!(ep.index(), 0);
    let start = Instant::now();
    ep.send("q", b"x").unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Taking it over did not release the endpoint itself.
    let st = seg.stats();
    assert_eq!((st.endpoints, st.lanes_active), (1, 1), "{st:?}");
    assert_eq!(ep.try_receive("q").unwrap().as_deref(), Some(&b"x"[..]));
}

#[test]
fn the_segment_lock_is_a_word_of_our_own_not_a_pthread_mutex() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut checked = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                !text.contains("pthread_mutex"),
                "{} uses a pthread mutex",
                p.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10);
    // Two 32-bit words: the owner and the waiter count.
    assert_eq!(std::mem::size_of::<ringway_layer_shm::lock::LockWord>(), 8);
}
