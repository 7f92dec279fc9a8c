//! Loom models of the lane protocol and the sleep/wake handshake: every
//! interleaving (up to `LOOM_MAX_PREEMPTIONS` preemptions) and the weak-memory
//! outcomes loom models. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p ringway-layer-shm --test loom_ring
//! ```
//!
//! The data area is loom atomics accessed with `Relaxed` ordering (see
//! `sync.rs`), so if a `Release`/`Acquire` pair in `ring.rs` were weakened, a
//! consumer here could read stale bytes and the content assertions would fail.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use ringway_layer_shm::handshake::{sleep_unless, wake_sleepers};
use ringway_layer_shm::ring::{Consumer, Lane, LaneCtrl, LaneLimits, Producer, PushError};

struct Mem {
    ctrl: LaneCtrl,
    data: Vec<AtomicU64>,
}

fn mem(bytes: usize) -> Arc<Mem> {
    Arc::new(Mem {
        ctrl: LaneCtrl::default(),
        data: (0..bytes / 8).map(|_| AtomicU64::new(0)).collect(),
    })
}

fn lane(m: &Mem, max_msgs: u32) -> Lane<'_> {
    Lane::new(
        &m.ctrl,
        &m.data,
        LaneLimits {
            max_msgs,
            max_record: m.data.len() * 8 - ringway_layer_shm::ring::SLACK,
        },
    )
}

/// Pops one record, yielding to the other thread while the lane is empty.
fn pop_blocking(c: &mut Consumer<'_>, out: &mut Vec<u8>) -> usize {
    loop {
        match c.pop(out).expect("no corruption in a correct protocol") {
            Some(meta) => return meta.tag_len,
            None => thread::yield_now(),
        }
    }
}

fn push_blocking(p: &mut Producer<'_>, tag: &[u8], payload: &[u8]) {
    loop {
        match p.push(tag, payload, 0) {
            Ok(()) => return,
            Err(PushError::Full) => thread::yield_now(),
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn push_pop_delivers_complete_records_in_order() {
    loom::model(|| {
        let m = mem(128);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            p.push(b"a", &[1; 9], 0).unwrap();
            p.push(b"", &[2; 3], 0).unwrap();
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        assert_eq!(pop_blocking(&mut c, &mut out), 1);
        assert_eq!(out, [&b"a"[..], &[1; 9]].concat());
        assert_eq!(pop_blocking(&mut c, &mut out), 0);
        assert_eq!(out, [2; 3]);
        t.join().unwrap();
        assert_eq!(c.pop(&mut out).unwrap(), None);
    });
}

#[test]
fn records_wrap_around_a_full_lane_intact() {
    // 64 bytes hold two 24-byte records (and the 8-byte terminator); the
    // third waits for room (Full) and then wraps around the end of the data
    // area.
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            for i in 0..3u8 {
                push_blocking(&mut p, b"", &[i; 8]);
            }
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        for i in 0..3u8 {
            pop_blocking(&mut c, &mut out);
            assert_eq!(out, [i; 8]);
        }
        t.join().unwrap();
    });
}

#[test]
fn record_count_capacity_is_never_exceeded() {
    loom::model(|| {
        let m = mem(256);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 1));
            let mut accepted = 0;
            for i in 0..2u8 {
                if p.push(b"", &[i], 0).is_ok() {
                    accepted += 1;
                }
            }
            accepted
        });
        let mut c = Consumer::new(lane(&m, 1));
        let mut out = Vec::new();
        let first = c.pop(&mut out).unwrap().map(|_| out[0]);
        let accepted = t.join().unwrap();
        let mut got: Vec<u8> = first.into_iter().collect();
        while c.pop(&mut out).unwrap().is_some() {
            got.push(out[0]);
        }
        // With capacity 1 the second push succeeds only if the first record
        // was already consumed; either way nothing is lost or duplicated.
        assert_eq!(got.len(), accepted);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert!(accepted >= 1);
    });
}

#[test]
fn empty_lane_pops_nothing_until_a_record_is_published() {
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            Producer::new(lane(&m2, 8)).push(b"", &[7; 5], 0).unwrap();
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        // Either nothing yet, or the whole record: never a partial one.
        if let Some(meta) = c.pop(&mut out).unwrap() {
            assert_eq!((meta.tag_len, &out[..]), (0, &[7u8; 5][..]));
        } else {
            t.join().unwrap();
            assert!(c.pop(&mut out).unwrap().is_some());
            assert_eq!(out, [7; 5]);
            return;
        }
        t.join().unwrap();
    });
}

#[test]
fn producer_gone_mid_write_leaves_nothing_visible_and_lane_is_reusable() {
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            p.push(b"", &[1; 8], 0).unwrap();
            // Killed half way through the second record.
            p.write_then_die(b"", &[0xEE; 8]);
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        pop_blocking(&mut c, &mut out);
        assert_eq!(out, [1; 8]);
        t.join().unwrap();
        // The half-written record is invisible...
        assert_eq!(c.pop(&mut out).unwrap(), None);
        // ...and a new producer on the reclaimed lane overwrites it cleanly.
        let m3 = m.clone();
        let t = thread::spawn(move || {
            Producer::new(lane(&m3, 8)).push(b"z", &[3; 4], 0).unwrap();
        });
        assert_eq!(pop_blocking(&mut c, &mut out), 1);
        assert_eq!(out, [&b"z"[..], &[3; 4]].concat());
        t.join().unwrap();
    });
}

#[test]
fn consumer_gone_mid_stream_leaves_head_at_a_record_boundary() {
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            for i in 0..3u8 {
                push_blocking(&mut p, b"", &[i; 8]);
            }
        });
        let mut out = Vec::new();
        {
            // The first consumer takes one record and dies.
            let mut c = Consumer::new(lane(&m, 8));
            pop_blocking(&mut c, &mut out);
            assert_eq!(out, [0; 8]);
        }
        // Its successor (handed the lane by the reaper) goes on from there.
        let mut c = Consumer::new(lane(&m, 8));
        for i in 1..3u8 {
            pop_blocking(&mut c, &mut out);
            assert_eq!(out, [i; 8]);
        }
        t.join().unwrap();
    });
}

#[test]
fn sleeping_consumer_is_never_left_asleep_with_a_record_waiting() {
    // The futex is modelled as "spin until epoch changes": if the handshake
    // lost a wake-up, the consumer would spin forever and loom would fail the
    // model.
    loom::model(|| {
        let m = mem(64);
        let wake = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let (m2, wake2) = (m.clone(), wake.clone());
        let t = thread::spawn(move || {
            Producer::new(lane(&m2, 8)).push(b"", &[9; 8], 0).unwrap();
            wake_sleepers(&wake2.0, &wake2.1, || {});
        });
        let l = lane(&m, 8);
        let mut c = Consumer::new(l);
        let mut out = Vec::new();
        loop {
            if c.pop(&mut out).unwrap().is_some() {
                break;
            }
            sleep_unless(
                &wake.0,
                &wake.1,
                || l.has_record(),
                |e| {
                    while wake.0.load(Ordering::Acquire) == e {
                        thread::yield_now();
                    }
                },
            );
        }
        assert_eq!(out, [9; 8]);
        t.join().unwrap();
    });
}

#[test]
fn a_batch_published_once_is_seen_whole_and_released_once() {
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            for round in 0..2u8 {
                // Two records (32 + 24 bytes), one publication; with the
                // terminator that is the whole lane, so round two waits for
                // the consumer's single release of round one.
                while !p.has_room(0, 40) {
                    thread::yield_now();
                }
                p.write(b"", &[round; 16], 0).unwrap();
                p.write(b"", &[round + 10; 8], 0).unwrap();
                p.publish();
            }
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        for round in 0..2u8 {
            while c.take(&mut out).unwrap().is_none() {
                thread::yield_now();
            }
            assert_eq!(out, [round; 16]);
            // Published together: the second record is already there.
            assert!(c.take(&mut out).unwrap().is_some());
            assert_eq!(out, [round + 10; 8]);
            c.release();
        }
        t.join().unwrap();
    });
}

#[test]
fn a_stale_commit_word_from_the_last_lap_is_never_read() {
    // Records of 24, 24 and 16 bytes fill 64; the fourth starts again at
    // offset 0, where the first record's commit word still lies. Only the
    // terminator that the third record's write put there keeps the consumer
    // from taking that stale word for the fourth record.
    loom::model(|| {
        let m = mem(64);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let mut p = Producer::new(lane(&m2, 8));
            push_blocking(&mut p, b"", &[1; 8]);
            push_blocking(&mut p, b"", &[2; 8]);
            push_blocking(&mut p, b"", &[]);
            push_blocking(&mut p, b"", &[4; 8]);
        });
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        for want in [&[1u8; 8][..], &[2; 8], &[], &[4; 8]] {
            pop_blocking(&mut c, &mut out);
            assert_eq!(out, want);
        }
        t.join().unwrap();
    });
}

#[test]
fn a_consumer_ahead_of_tail_never_makes_a_lane_look_full() {
    // Another producer counts this lane's records for the channel's
    // capacity while the consumer may take a record before its `tail`
    // store: the count must stay 0 or 1, never wrap to a huge number.
    loom::model(|| {
        let m = mem(64);
        let (m2, m3) = (m.clone(), m.clone());
        let t = thread::spawn(move || {
            Producer::new(lane(&m2, 8)).push(b"", &[5; 8], 0).unwrap();
        });
        let counter = thread::spawn(move || lane(&m3, 8).queued());
        let mut c = Consumer::new(lane(&m, 8));
        let mut out = Vec::new();
        pop_blocking(&mut c, &mut out);
        assert_eq!(out, [5; 8]);
        assert!(counter.join().unwrap() <= 1);
        t.join().unwrap();
        assert_eq!(lane(&m, 8).queued(), 0);
    });
}
