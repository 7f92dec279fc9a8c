//! An endpoint that does not wait for the segment lock (a reactor's) gets
//! `LockBusy` at once when another process holds it, and receiving never
//! waits for it in any mode: the housekeeping a receive does under the lock
//! (freeing a drained lane of a dead producer, retiring a lane with a
//! corrupt record) is left for a later receive when the lock is busy, and a
//! corrupt record is reported once.

mod common;

use std::time::{Duration, Instant};

use common::{config, Peer};
use ringway_layer_shm::{Error, Segment, SendError};

/// Runs `f` `n` times; returns the slowest and the median duration.
fn timed(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut d: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    d.sort();
    (d[n - 1], d[n / 2])
}

#[test]
fn a_non_waiting_endpoint_gets_lock_busy_at_once_while_another_process_holds_the_lock() {
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    ep.send("inbox", b"before").unwrap();
    ep.set_lock_wait(false);
    let mut holder = Peer::spawn(&["hold-lock", &path]);
    assert_eq!(holder.line(), "locked");
    let (slowest, median) = timed(20, || {
        assert!(matches!(ep.channel("new.one"), Err(Error::LockBusy)));
        assert!(matches!(
            ep.send("new.two", b"x"),
            Err(SendError::Other(Error::LockBusy))
        ));
        assert!(matches!(ep.group_add("g", "inbox"), Err(Error::LockBusy)));
    });
    // Three refusals per round (about 15 us each here: a CAS and a read of
    // the owner's /proc/PID/stat); waiting would take seconds each.
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    assert!(median < Duration::from_millis(1), "{median:?}");
    assert!(Error::LockBusy.to_string().contains("retry later"));
    // The message path does not need the lock.
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
    // A dead owner is taken over even without waiting.
    ep.group_add("g", "inbox").unwrap();
}

#[test]
fn receiving_leaves_a_drained_orphan_lane_for_later_while_the_lock_is_held() {
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut rx = seg.endpoint().unwrap();
    let id = rx.channel("q").unwrap();
    let mut tx = seg.endpoint().unwrap();
    for i in 0..3u8 {
        tx.send("q", &[i]).unwrap();
    }
    // The producer goes away with its lane listed: the lane is orphaned, for
    // the consumer to drain and then free.
    drop(tx);
    assert_eq!(seg.stats().lanes_orphaned, 1);
    let mut holder = Peer::spawn(&["hold-lock", &path]);
    assert_eq!(holder.line(), "locked");
    // rx waits for the lock in its other operations: receiving still must not.
    let mut got = Vec::new();
    let (slowest, _) = timed(10, || {
        if let Some(m) = rx.try_receive("q").unwrap() {
            got.push(m[0]);
        }
    });
    assert_eq!(got, [0, 1, 2]);
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    let start = Instant::now();
    assert_eq!(
        rx.receive("q", Some(Duration::from_millis(50))).unwrap(),
        None
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(seg.stats().lanes_orphaned, 1, "left for later");
    holder.kill();
    // Someone who needs the lock takes it over from the dead holder...
    seg.reap().unwrap();
    // ...and the next receive frees the drained lane.
    assert_eq!(rx.try_receive_id(id, &mut Vec::new()).unwrap(), None);
    let st = seg.stats();
    assert_eq!((st.lanes_orphaned, st.lanes_active), (0, 0), "{st:?}");
}

#[test]
fn a_corrupt_lane_is_reported_once_and_retired_when_the_lock_is_free() {
    let seg = Segment::create(&config()).unwrap();
    let path = seg.path().to_str().unwrap().to_owned();
    let mut rx = seg.endpoint().unwrap();
    let mut tx = seg.endpoint().unwrap();
    tx.send("inbox", b"first").unwrap();
    // Resolved before the lock is taken away (resolving a new name needs it).
    rx.channel("inbox").unwrap();
    let mut holder = Peer::spawn(&["hold-lock", &path]);
    assert_eq!(holder.line(), "locked");
    // A buggy peer overwrites the record header in the only lane (lane 0).
    {
        use std::os::unix::fs::FileExt;
        let data = seg.geometry().layout().lane_data;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg.path())
            .unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), data).unwrap();
    }
    let err = rx.try_receive("inbox").err().unwrap();
    assert!(matches!(err, Error::CorruptRecord(_)), "{err}");
    // The lock is busy, so the lane is not retired yet; it is not read (or
    // reported) again meanwhile, and waiting on the channel does not spin
    // on it: the wait sleeps to its timeout.
    let (slowest, _) = timed(10, || {
        assert_eq!(rx.try_receive("inbox").unwrap(), None);
    });
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    let start = Instant::now();
    assert_eq!(
        rx.receive("inbox", Some(Duration::from_millis(100)))
            .unwrap(),
        None
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2));
    assert_eq!(
        seg.stats().lanes_active,
        1,
        "not retired while the lock is held"
    );
    holder.kill();
    seg.reap().unwrap();
    assert_eq!(rx.try_receive("inbox").unwrap(), None);
    assert_eq!(
        seg.stats().lanes_detached,
        1,
        "retired once the lock was free"
    );
    tx.send("inbox", b"second").unwrap();
    assert_eq!(
        rx.try_receive("inbox").unwrap().as_deref(),
        Some(&b"second"[..])
    );
}
