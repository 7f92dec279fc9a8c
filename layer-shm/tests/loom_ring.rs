//! Loom models of the lane protocol, the sleep/wake handshake, the wait for
//! room in a full lane, and the segment lock's wake handshake: every
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

use ringway_layer_shm::handshake::{arm, sleep_unless, take_armed, wake_sleepers};
use ringway_layer_shm::lock::LockWord;
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

#[test]
fn a_producer_waiting_for_room_is_never_left_waiting_with_room_there() {
    // The doorbell is modelled as a counter of rings: the producer reads it
    // before arming, then blocks until it changes (a FIFO byte written after
    // that stays readable). If the handshake lost a wake-up, the producer
    // would block for ever and loom would fail the model.
    loom::model(|| {
        let m = mem(64);
        let waiters = Arc::new([AtomicU64::new(0)]);
        let rings = Arc::new(AtomicU32::new(0));
        let (m2, waiters2, rings2) = (m.clone(), waiters.clone(), rings.clone());
        let consumer = thread::spawn(move || {
            let mut c = Consumer::new(lane(&m2, 8));
            let mut out = Vec::new();
            for i in 0..3u8 {
                while c.take(&mut out).unwrap().is_none() {
                    thread::yield_now();
                }
                assert_eq!(out, [i; 8]);
                // The end of a receive batch: hand the space back, then the
                // consumer's half of the handshake.
                c.release();
                if take_armed(&waiters2)[0] & 1 != 0 {
                    rings2.fetch_add(1, Ordering::Release);
                }
            }
        });
        // Two 24-byte records fill the 64-byte lane (with the terminator).
        let mut p = Producer::new(lane(&m, 8));
        p.push(b"", &[0; 8], 0).unwrap();
        p.push(b"", &[1; 8], 0).unwrap();
        loop {
            match p.push(b"", &[2; 8], 0) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    // Acquire: pairs with the consumer's Release increment.
                    let seen = rings.load(Ordering::Acquire);
                    if arm(&waiters[0], 1, || p.has_room(0, 8)) {
                        continue;
                    }
                    while rings.load(Ordering::Acquire) == seen {
                        thread::yield_now();
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        consumer.join().unwrap();
    });
}

/// The segment lock with a model of the futex: `wakes` counts
/// `futex_wake` calls; a waiter reads it, then (as the kernel does under its
/// bucket lock) checks the word, and sleeps until the count changes.
struct Futex {
    lock: LockWord,
    wakes: AtomicU32,
}

impl Futex {
    fn new() -> Arc<Futex> {
        Arc::new(Futex {
            lock: LockWord::default(),
            wakes: AtomicU32::new(0),
        })
    }

    /// Locks as `me`; `dead(h)` says whether owner `h` is dead (then the
    /// lock is taken over). Returns whether it was taken over.
    fn lock(&self, me: u32, dead: impl Fn(u32) -> bool) -> bool {
        loop {
            let h = match self.lock.try_lock(me) {
                Ok(()) => return false,
                Err(h) => h,
            };
            if dead(h) {
                if self.lock.take_over(h, me) {
                    return true;
                }
                continue;
            }
            self.lock.wait(h, |h| {
                // Acquire: pairs with the Release increment in `unlock`.
                let seen = self.wakes.load(Ordering::Acquire);
                if self.lock.word.load(Ordering::Relaxed) != h {
                    return;
                }
                while self.wakes.load(Ordering::Acquire) == seen && !dead(h) {
                    thread::yield_now();
                }
            });
        }
    }

    fn unlock(&self, me: u32) {
        assert!(self.lock.unlock(me, || {
            self.wakes.fetch_add(1, Ordering::Release);
        }));
    }
}

#[test]
fn the_segment_lock_excludes_and_never_leaves_a_waiter_asleep() {
    // A lost wake-up leaves the waiter blocked for ever (loom fails the
    // model); broken exclusion makes loom report the racing cell accesses.
    loom::model(|| {
        let f = Futex::new();
        let data = Arc::new(loom::cell::UnsafeCell::new(0u32));
        let (f2, data2) = (f.clone(), data.clone());
        let t = thread::spawn(move || {
            f2.lock(2, |_| false);
            // SAFETY: the segment lock is held.
            data2.with_mut(|d| unsafe { *d += 1 });
            f2.unlock(2);
        });
        f.lock(1, |_| false);
        // SAFETY: the segment lock is held.
        data.with_mut(|d| unsafe { *d += 1 });
        f.unlock(1);
        t.join().unwrap();
        // SAFETY: both threads are done.
        assert_eq!(data.with(|d| unsafe { *d }), 2);
    });
}

#[test]
fn a_dead_owners_lock_is_taken_over_and_the_successor_sees_its_writes() {
    loom::model(|| {
        let f = Futex::new();
        let done = Arc::new(AtomicU32::new(0));
        let dead = Arc::new(AtomicU32::new(0));
        let (f2, done2, dead2) = (f.clone(), done.clone(), dead.clone());
        let t = thread::spawn(move || {
            f2.lock(2, |_| false);
            done2.store(1, Ordering::Relaxed);
            // Dies holding the lock: the process's death is what a locker
            // learns from /proc (modelled by this flag).
            dead2.store(2, Ordering::Release);
        });
        // Acquire: pairs with the Release store of the flag (learning of a
        // death through the kernel orders the dead process's writes).
        let took_over = f.lock(1, |h| dead.load(Ordering::Acquire) == h);
        if took_over {
            // What the dead owner finished writing is visible to its
            // successor, which repairs from there.
            assert_eq!(done.load(Ordering::Relaxed), 1);
        }
        f.unlock(1);
        t.join().unwrap();
        if !took_over {
            // We locked first; the other thread then locked and died.
            assert_eq!(f.lock.word.load(Ordering::Relaxed), 2);
        }
    });
}
