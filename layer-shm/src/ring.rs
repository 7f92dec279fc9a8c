//! Lanes: single-producer single-consumer rings of variable-length records.
//!
//! A lane is the only ring protocol in the layer. A channel with several
//! producers (a reactor's inbox, written by every worker) is a set of lanes, one
//! per producer, that its consumer reads in turn; `DESIGN.md` argues why this beats
//! one ring with a CAS on its tail (a producer killed between reserving and
//! publishing a record can never wedge a ring that others write into).
//!
//! # Protocol
//!
//! A lane is a control block ([`LaneCtrl`]) and a data area of `bytes` bytes (a
//! power of two, as 64-bit words). Both positions are *position words*: the low
//! [`POS_BITS`] bits count bytes written (read), the high bits count records, both
//! wrapping. The producer owns the bytes from `tail` to `head + bytes`; the
//! consumer owns the bytes from `head` to the last record it has seen committed.
//!
//! Every record starts with a *commit word* (its length fields and the
//! [`COMMIT`] mark, never 0). A record is published by the `Release` store of
//! its commit word, and the consumer polls the commit word at `head` with
//! `Acquire`: the record's first cache line is its own publication, so a
//! waiting consumer fetches one line fewer per message than it would by
//! polling `tail` first (`bench/README.md` has the measurements).
//!
//! Space the producer has not written yet never shows a stale commit word:
//! before writing a record at position `p` of `n` bytes, the producer zeroes
//! the word at `p + n`, where the next record will start (the *terminator*).
//! The consumer reads `p + n` only after it has acquired the commit word at
//! `p`, which was stored after the terminator, so it finds either the
//! terminator (0: nothing yet) or the next record's commit word. This costs 8
//! bytes of slack: a record is accepted only if it fits with 8 bytes to spare.
//!
//! - write: check that the record fits (bytes and record count) against a cached
//!   `head`, re-reading `head` (`Acquire`) only when it seems full; zero the
//!   terminator; copy the record in; store its commit word, unless it is the
//!   first record since the last publication, whose commit waits for `publish`.
//! - publish: store the held commit word (`Release`), then `tail` (`Release`).
//!   A batch of records thus appears at once: the consumer cannot get past the
//!   held record, and its `Release` orders every byte written before it.
//! - pop: load the commit word at `head` (`Acquire`); 0 means empty; validate
//!   and copy the record out; store the new `head` with `Release` (once per
//!   batch, see [`Consumer::release`]).
//!
//! `tail` is kept for the others: producers count a channel's messages from
//! each lane's `head` and `tail`, and the sleep/wake handshake re-checks it. The
//! consumer may run ahead of `tail` for a moment (it can take a record between
//! its commit and the `tail` store), so counts treat a `head` ahead of `tail`
//! as an empty lane.
//!
//! A producer that dies at any instruction leaves at most records whose first
//! commit word was never stored, which no one ever reads. A consumer that dies
//! leaves `head` at a record boundary (it is stored only at boundaries).
//!
//! # Records
//!
//! ```text
//! 0      4         5       6        8             16           16+pad8(tag)
//! | len  | tag_len | flags | COMMIT | expires_ms  | tag, padded | payload, padded to 8 |
//! ```
//!
//! All little-endian; bytes 0..8 are the commit word. `len` is the payload
//! length, `tag` a short routing tag (the local part of a process-specific
//! channel name), `flags` must be 0, `COMMIT` is [`COMMIT`], `expires_ms` is a
//! `CLOCK_MONOTONIC` deadline in milliseconds (0: never). Records may wrap
//! around the end of the data area. Every field is validated by the consumer
//! before it is used: the producer may be buggy or hostile. A consumer that
//! finds a record it cannot trust cannot know where the next one starts, so it
//! stops reading the lane ([`Corrupt`]); the endpoint then retires the lane.

use crate::sync::{read_bytes, write_bytes, AtomicU64, CachePadded, Ordering};

/// Bits of a position word that count bytes; the rest count records.
pub const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const SEQ_MASK: u64 = (1 << (64 - POS_BITS)) - 1;
/// The most records a lane may hold (half the record counter's range, so that
/// differences of record counts are unambiguous, also when the consumer is
/// momentarily ahead of `tail`).
pub const MAX_LANE_MSGS: u32 = 1 << (64 - POS_BITS - 1);
/// The largest data area a lane may have.
pub const MAX_LANE_BYTES: usize = 1 << 32;
/// Size of a record header.
pub const RECORD_HEADER: usize = 16;
/// Longest tag a record may carry.
pub const MAX_TAG: usize = 255;
/// The mark in the top 16 bits of every commit word ("RW"), so that a
/// committed record, even an empty one, never has a commit word of 0.
pub const COMMIT: u64 = 0x5257;
/// Bytes a lane keeps free beyond the records in it: the terminator.
pub const SLACK: usize = 8;

/// Rounds up to a multiple of 8.
pub const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a record with this tag and payload occupies in a lane.
pub const fn record_len(tag_len: usize, payload_len: usize) -> usize {
    RECORD_HEADER + pad8(tag_len) + pad8(payload_len)
}

/// The commit word of a record.
const fn commit_word(tag_len: usize, payload_len: usize) -> u64 {
    payload_len as u64 | (tag_len as u64) << 32 | COMMIT << 48
}

/// Bytes between two position words (`a` is ahead of `b`).
fn pos_diff(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b) & POS_MASK
}

/// Records between two position words (`a` is ahead of `b`).
fn seq_diff(a: u64, b: u64) -> u64 {
    (a >> POS_BITS).wrapping_sub(b >> POS_BITS) & SEQ_MASK
}

/// Records from `head` to `tail`, or 0 if `head` is ahead (the consumer took
/// records whose `tail` store it has not seen yet).
fn records_between(tail: u64, head: u64) -> u64 {
    let d = seq_diff(tail, head);
    if d >= u64::from(MAX_LANE_MSGS) {
        0
    } else {
        d
    }
}

/// The position word `len` bytes and one record after `w`.
fn advance(w: u64, len: usize) -> u64 {
    let pos = (w & POS_MASK).wrapping_add(len as u64) & POS_MASK;
    let seq = ((w >> POS_BITS) + 1) & SEQ_MASK;
    (seq << POS_BITS) | pos
}

/// A lane's control block: the two position words, each on its own cache line.
#[repr(C)]
#[derive(Default)]
pub struct LaneCtrl {
    /// Position after the last published record. Written only by the
    /// producer, with `Release` after the records' commit words (pairs with
    /// the `Acquire` loads in [`Lane::queued`] and [`Lane::has_record`]).
    pub tail: CachePadded<AtomicU64>,
    /// Position of the oldest unread record, always at a record boundary.
    /// Written only by the consumer, with `Release` after the records have
    /// been copied out (pairs with the `Acquire` load in [`Producer::write`]).
    pub head: CachePadded<AtomicU64>,
}

/// The limits of one lane, taken from the trusted segment geometry (never from
/// the lane itself, which any peer can scribble on).
#[derive(Clone, Copy, Debug)]
pub struct LaneLimits {
    /// The most records the lane holds at once (`1 ..= MAX_LANE_MSGS`).
    pub max_msgs: u32,
    /// The largest record, header included (`RECORD_HEADER ..= bytes - SLACK`).
    pub max_record: usize,
}

/// A lane: its control block, its data area and its limits.
#[derive(Clone, Copy)]
pub struct Lane<'a> {
    ctrl: &'a LaneCtrl,
    /// The data area; its length in bytes is a power of two.
    data: &'a [AtomicU64],
    limits: LaneLimits,
}

impl<'a> Lane<'a> {
    /// Wraps a control block and a data area.
    ///
    /// # Panics
    /// If the data area is not a power of two of at least 64 bytes and at most
    /// [`MAX_LANE_BYTES`], or the limits do not fit in it. The segment geometry is
    /// validated before any lane is built, so this is a programming error.
    pub fn new(ctrl: &'a LaneCtrl, data: &'a [AtomicU64], limits: LaneLimits) -> Self {
        let bytes = data.len() * 8;
        assert!(bytes.is_power_of_two() && (64..=MAX_LANE_BYTES).contains(&bytes));
        assert!((1..=MAX_LANE_MSGS).contains(&limits.max_msgs));
        assert!((RECORD_HEADER..=bytes - SLACK).contains(&limits.max_record));
        Lane { ctrl, data, limits }
    }

    fn bytes(&self) -> usize {
        self.data.len() * 8
    }

    /// Index of the word at a position.
    fn word(&self, pos_word: u64) -> usize {
        ((pos_word & POS_MASK) as usize / 8) & (self.data.len() - 1)
    }

    /// Resets the lane to empty: both positions 0 and no commit word at 0.
    /// Only for a lane no one else is using (under the segment lock, before
    /// the lane is listed in a channel, which publishes it).
    pub fn reset(&self) {
        self.ctrl.tail.store(0, Ordering::Relaxed);
        self.ctrl.head.store(0, Ordering::Relaxed);
        self.data[0].store(0, Ordering::Relaxed);
    }

    /// Records queued in the lane as `head` and `tail` say now (exact only
    /// when both sides are idle): what capacity is counted from. It may lag
    /// [`Lane::has_record`] for a moment, which also sees a record committed
    /// before its `tail` store.
    pub fn queued(&self) -> usize {
        let head = self.ctrl.head.load(Ordering::Acquire);
        let tail = self.ctrl.tail.load(Ordering::Acquire);
        (records_between(tail, head) as usize).min(self.limits.max_msgs as usize)
    }

    /// Whether the lane holds a record, as seen now: a record is committed at
    /// `head`. `tail` is not consulted: it is stored after the commit words
    /// it covers, so it never knows more, and it may know less (a producer
    /// that died between the two stores). The sleep/wake handshake's
    /// argument holds on the commit word: the producer's `SeqCst` fence
    /// follows it, as it follows the `tail` store.
    pub fn has_record(&self) -> bool {
        // Relaxed: `head` is the consumer's own (or handed over with the
        // claim); a stale value only makes this hint stale.
        let head = self.ctrl.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of the commit word.
        self.data[self.word(head)].load(Ordering::Acquire) != 0
    }
}

/// Why a push failed. The caller still holds the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The lane has no room (in bytes or in records) until the consumer catches up.
    Full,
    /// The record is larger than the lane's maximum record size.
    TooLarge,
}

/// A record's header fields, returned by [`Consumer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The tag occupies the first `tag_len` bytes of the output buffer.
    pub tag_len: usize,
    /// `CLOCK_MONOTONIC` deadline in milliseconds; 0 means never.
    pub expires_ms: u64,
}

/// A record that failed validation. Where the next record starts cannot be
/// known, so the consumer reads nothing more from this lane: the caller must
/// retire it (the endpoint detaches it from its channel, and its producer
/// moves to a fresh lane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// What was wrong, for the log.
    pub reason: String,
}

/// The producing side of a lane. There must be at most one at a time.
pub struct Producer<'a> {
    lane: Lane<'a>,
    /// Position after the last record written (published or not). We are the
    /// only writer of `ctrl.tail`.
    tail: u64,
    /// `ctrl.tail` as we last stored it.
    published: u64,
    /// Last `ctrl.head` we saw; the consumer only moves it forward.
    head: u64,
    /// The first record written since the last publication: its word index
    /// and the commit word it gets at `publish`.
    held: Option<(usize, u64)>,
}

impl<'a> Producer<'a> {
    /// Takes the producing side of `lane`.
    pub fn new(lane: Lane<'a>) -> Self {
        // Relaxed: we are the only writer of `tail` (a previous producer of this
        // lane handed it over through the segment lock or is dead).
        let tail = lane.ctrl.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of `head`.
        let head = lane.ctrl.head.load(Ordering::Acquire);
        Producer {
            lane,
            tail,
            published: tail,
            head,
            held: None,
        }
    }

    /// Resumes producing with positions saved by [`Producer::positions`], so a
    /// long-lived sender need not re-read the consumer's cache line.
    ///
    /// `tail` must be the lane's tail as this producer last stored it, and
    /// `head` a value of the lane's head it has seen.
    pub fn resume(lane: Lane<'a>, tail: u64, head: u64) -> Self {
        debug_assert_eq!(tail, lane.ctrl.tail.load(Ordering::Relaxed));
        Producer {
            lane,
            tail,
            published: tail,
            head,
            held: None,
        }
    }

    /// The positions to hand to [`Producer::resume`] later (after
    /// [`Producer::publish`]: unpublished records are not carried over).
    pub fn positions(&self) -> (u64, u64) {
        debug_assert!(self.held.is_none(), "positions saved before publish");
        (self.tail, self.head)
    }

    /// Records in the lane as far as this producer knows: never fewer than
    /// there are (the consumer only removes).
    pub fn len_upper_bound(&self) -> u64 {
        seq_diff(self.tail, self.head)
    }

    fn fits(&self, len: usize) -> bool {
        let used = pos_diff(self.tail, self.head) as usize;
        let bytes = self.lane.bytes();
        used <= bytes
            && len + SLACK <= bytes - used
            && seq_diff(self.tail, self.head) < u64::from(self.lane.limits.max_msgs)
    }

    /// Appends a record and publishes it; `Err(Full)` when there is no room,
    /// without blocking.
    pub fn push(&mut self, tag: &[u8], payload: &[u8], expires_ms: u64) -> Result<(), PushError> {
        self.write(tag, payload, expires_ms)?;
        self.publish();
        Ok(())
    }

    /// Appends a record without publishing it: the consumer sees it (and
    /// every record written before it) at the next [`Producer::publish`].
    pub fn write(&mut self, tag: &[u8], payload: &[u8], expires_ms: u64) -> Result<(), PushError> {
        let len = record_len(tag.len(), payload.len());
        if tag.len() > MAX_TAG
            || payload.len() > u32::MAX as usize
            || len > self.lane.limits.max_record
        {
            return Err(PushError::TooLarge);
        }
        if !self.fits(len) {
            // Acquire: pairs with the consumer's Release store of `head`, so its
            // reads of the bytes we are about to overwrite are done.
            self.head = self.lane.ctrl.head.load(Ordering::Acquire);
            if !self.fits(len) {
                return Err(PushError::Full);
            }
        }
        let data = self.lane.data;
        let mask = data.len() - 1;
        let at = self.lane.word(self.tail);
        // The terminator first: the consumer must find 0 where the next
        // record will start, never a commit word left from the last lap.
        // Relaxed: published by the Release store of this record's commit.
        data[(at + len / 8) & mask].store(0, Ordering::Relaxed);
        data[(at + 1) & mask].store(expires_ms, Ordering::Relaxed);
        let mut off = ((at + 2) & mask) * 8;
        if !tag.is_empty() {
            write_bytes(data, off, tag);
            off = (off + pad8(tag.len())) & (self.lane.bytes() - 1);
        }
        if !payload.is_empty() {
            write_bytes(data, off, payload);
        }
        let commit = commit_word(tag.len(), payload.len());
        if self.held.is_none() {
            self.held = Some((at, commit));
        } else {
            // Relaxed: the consumer cannot read past the held first record
            // of this batch, whose Release store at `publish` orders this.
            data[at].store(commit, Ordering::Relaxed);
        }
        self.tail = advance(self.tail, len);
        Ok(())
    }

    /// Publishes every record written so far.
    pub fn publish(&mut self) {
        if let Some((at, commit)) = self.held.take() {
            // Release: publishes the bytes of every record written since the
            // last publication (all written before this store); pairs with the
            // Acquire load of the commit word in `Consumer::take`.
            self.lane.data[at].store(commit, Ordering::Release);
        }
        if self.published != self.tail {
            // Release: pairs with the Acquire loads of `tail` in `Lane::queued`
            // and `Lane::has_record` (other producers' capacity counts, the
            // sleep/wake handshake's re-check).
            self.lane.ctrl.tail.store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
    }

    /// Writes a record's bytes but dies before publishing it: what a producer
    /// killed inside `push` leaves behind. For the loom models only.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn write_then_die(mut self, tag: &[u8], payload: &[u8]) {
        self.write(tag, payload, 0).expect("room for the record");
        // ...and never publishes it.
        std::mem::forget(self);
    }

    /// Whether a record of this size would fit now (re-reads `head`).
    pub fn has_room(&mut self, tag_len: usize, payload_len: usize) -> bool {
        self.head = self.lane.ctrl.head.load(Ordering::Acquire);
        self.fits(record_len(tag_len, payload_len))
    }
}

impl Drop for Producer<'_> {
    fn drop(&mut self) {
        debug_assert!(
            self.held.is_none() || std::thread::panicking(),
            "a producer was dropped with written but unpublished records"
        );
    }
}

/// The consuming side of a lane. There must be at most one at a time.
pub struct Consumer<'a> {
    lane: Lane<'a>,
    /// Position of the next record to read (we are the only writer of
    /// `ctrl.head`).
    head: u64,
    /// `ctrl.head` as we last stored it.
    released: u64,
    /// A record failed validation: nothing more is read from this lane.
    poisoned: bool,
}

impl<'a> Consumer<'a> {
    /// Takes the consuming side of `lane`.
    pub fn new(lane: Lane<'a>) -> Self {
        // Acquire: the consumer role may have moved here from another process;
        // the hand-over (a claim word) orders it, this keeps the load honest.
        let head = lane.ctrl.head.load(Ordering::Acquire);
        Consumer {
            lane,
            head,
            released: head,
            poisoned: false,
        }
    }

    /// Resumes consuming at `head`, saved by [`Consumer::position`] (after
    /// [`Consumer::release`]), so a long-lived receiver need not re-read its
    /// own `head`. `head` must be the lane's current head.
    pub fn resume(lane: Lane<'a>, head: u64) -> Self {
        debug_assert_eq!(head, lane.ctrl.head.load(Ordering::Relaxed));
        Consumer {
            lane,
            head,
            released: head,
            poisoned: false,
        }
    }

    /// The position to hand to [`Consumer::resume`] later.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Removes the oldest record, copying its tag and payload into `out` (tag
    /// first), and hands its space back to the producer. `Ok(None)` when the
    /// lane is empty.
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Result<Option<RecordMeta>, Corrupt> {
        let r = self.take(out);
        self.release();
        r
    }

    /// Removes the oldest record like [`Consumer::pop`], but keeps its space
    /// until [`Consumer::release`]: a consumer draining a batch hands the
    /// space back once, saving the producer a cache miss per record.
    pub fn take(&mut self, out: &mut Vec<u8>) -> Result<Option<RecordMeta>, Corrupt> {
        if self.poisoned {
            return Ok(None);
        }
        let at = self.lane.word(self.head);
        // Acquire: pairs with the producer's Release store of this commit
        // word (or of its batch's first one), so the record's bytes are
        // visible.
        let commit = self.lane.data[at].load(Ordering::Acquire);
        if commit == 0 {
            return Ok(None);
        }
        match self.read_record(commit, at, out) {
            Ok((meta, len)) => {
                self.head = advance(self.head, len);
                Ok(Some(meta))
            }
            Err(reason) => {
                self.poisoned = true;
                out.clear();
                Err(Corrupt { reason })
            }
        }
    }

    /// Hands the space of every record taken so far back to the producer.
    pub fn release(&mut self) {
        if self.released != self.head {
            // Release: our copies of the records are done before the producer
            // may reuse their bytes; pairs with the Acquire load in `write`.
            self.lane.ctrl.head.store(self.head, Ordering::Release);
            self.released = self.head;
        }
    }

    fn read_record(
        &self,
        commit: u64,
        at: usize,
        out: &mut Vec<u8>,
    ) -> Result<(RecordMeta, usize), String> {
        let payload_len = (commit & 0xffff_ffff) as usize;
        let tag_len = ((commit >> 32) & 0xff) as usize;
        let flags = (commit >> 40) & 0xff;
        let mark = commit >> 48;
        if mark != COMMIT {
            return Err(format!(
                "record commit word {commit:#018x} lacks the commit mark"
            ));
        }
        if flags != 0 {
            return Err(format!("record flags {flags:#x} are not 0"));
        }
        if self.head % 8 != 0 {
            return Err("lane head not 8-byte aligned".into());
        }
        let len = record_len(tag_len, payload_len);
        if len > self.lane.limits.max_record {
            return Err(format!(
                "record of {len} bytes (maximum {})",
                self.lane.limits.max_record
            ));
        }
        let data = self.lane.data;
        let mask = data.len() - 1;
        let expires_ms = data[(at + 1) & mask].load(Ordering::Relaxed);
        // Reuse the buffer's bytes: only growth is zero-filled, the copy below
        // overwrites everything.
        out.truncate(tag_len + payload_len);
        out.resize(tag_len + payload_len, 0);
        let (tag, payload) = out.split_at_mut(tag_len);
        let mut off = ((at + 2) & mask) * 8;
        if tag_len > 0 {
            read_bytes(data, off, tag);
            off = (off + pad8(tag_len)) & (self.lane.bytes() - 1);
        }
        if payload_len > 0 {
            read_bytes(data, off, payload);
        }
        Ok((
            RecordMeta {
                tag_len,
                expires_ms,
            },
            len,
        ))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Owned {
        ctrl: LaneCtrl,
        data: Vec<AtomicU64>,
    }

    fn owned(bytes: usize) -> Owned {
        Owned {
            ctrl: LaneCtrl::default(),
            data: (0..bytes / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn lane(o: &Owned, max_msgs: u32) -> Lane<'_> {
        let bytes = o.data.len() * 8;
        Lane::new(
            &o.ctrl,
            &o.data,
            LaneLimits {
                max_msgs,
                max_record: bytes - SLACK,
            },
        )
    }

    #[test]
    fn pushed_records_pop_in_order_with_tag_and_expiry() {
        let o = owned(256);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"conn7", b"hello", 42).unwrap();
        p.push(b"", b"", 0).unwrap();
        let mut out = Vec::new();
        let m = c.pop(&mut out).unwrap().unwrap();
        assert_eq!(
            m,
            RecordMeta {
                tag_len: 5,
                expires_ms: 42
            }
        );
        assert_eq!(&out, b"conn7hello");
        let m = c.pop(&mut out).unwrap().unwrap();
        assert_eq!(m.tag_len, 0);
        assert!(out.is_empty());
        assert_eq!(c.pop(&mut out).unwrap(), None);
    }

    #[test]
    fn full_lane_refuses_then_accepts_after_pop() {
        let o = owned(64);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        // 16 header + 8 payload = 24 bytes: two fit in 64 with the 8-byte
        // terminator slack, a third does not.
        p.push(b"", &[1; 8], 0).unwrap();
        p.push(b"", &[2; 8], 0).unwrap();
        assert_eq!(p.push(b"", &[3; 8], 0), Err(PushError::Full));
        let mut out = Vec::new();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [1; 8]);
        p.push(b"", &[3; 8], 0).unwrap();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [2; 8]);
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [3; 8]);
    }

    #[test]
    fn record_count_limit_is_capacity() {
        let o = owned(1024);
        let l = lane(&o, 3);
        let mut p = Producer::new(l);
        for _ in 0..3 {
            p.push(b"", b"x", 0).unwrap();
        }
        assert_eq!(p.push(b"", b"x", 0), Err(PushError::Full));
        assert_eq!(l.queued(), 3);
    }

    #[test]
    fn oversized_record_is_refused() {
        let o = owned(128);
        let l = Lane::new(
            &o.ctrl,
            &o.data,
            LaneLimits {
                max_msgs: 10,
                max_record: 64,
            },
        );
        let mut p = Producer::new(l);
        assert_eq!(p.push(b"", &[0; 49], 0), Err(PushError::TooLarge));
        p.push(b"", &[0; 48], 0).unwrap();
    }

    #[test]
    fn records_wrap_around_the_end_intact() {
        let o = owned(64);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        let mut out = Vec::new();
        for i in 0..50u8 {
            let payload: Vec<u8> = (0..(i % 23)).map(|j| i ^ j).collect();
            p.push(&[i; 3], &payload, u64::from(i)).unwrap();
            let m = c.pop(&mut out).unwrap().unwrap();
            assert_eq!(m.tag_len, 3);
            assert_eq!(&out[..3], &[i; 3]);
            assert_eq!(&out[3..], &payload[..]);
            assert_eq!(
                c.pop(&mut out).unwrap(),
                None,
                "only one record per lap step"
            );
        }
    }

    #[test]
    fn a_batch_is_invisible_until_published_then_seen_whole() {
        let o = owned(256);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        let mut out = Vec::new();
        p.write(b"", b"one", 0).unwrap();
        p.write(b"", b"two", 0).unwrap();
        assert_eq!(c.take(&mut out).unwrap(), None);
        assert!(!l.has_record());
        p.publish();
        assert!(l.has_record());
        assert_eq!(l.queued(), 2);
        c.take(&mut out).unwrap().unwrap();
        assert_eq!(out, b"one");
        c.take(&mut out).unwrap().unwrap();
        assert_eq!(out, b"two");
        c.release();
        assert_eq!(l.queued(), 0);
    }

    #[test]
    fn a_consumer_ahead_of_tail_counts_as_empty() {
        // The consumer may take a committed record before its producer's
        // `tail` store lands: simulate by winding `tail` back.
        let o = owned(256);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"", b"early", 0).unwrap();
        o.ctrl.tail.store(0, Ordering::Relaxed);
        assert!(l.has_record(), "a record committed at head is seen");
        assert_eq!(l.queued(), 0, "tail has not moved yet");
        let mut out = Vec::new();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, b"early");
        assert_eq!(
            l.queued(),
            0,
            "head ahead of tail is empty, not 2^24 - 1 records"
        );
        assert!(!l.has_record());
    }

    #[test]
    fn stale_commit_words_from_an_earlier_use_are_not_read_after_reset() {
        let o = owned(128);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        for _ in 0..3 {
            p.push(b"", b"stale", 0).unwrap();
        }
        // The lane is handed to a new producer and consumer.
        l.reset();
        let mut c = Consumer::new(l);
        let mut out = Vec::new();
        assert_eq!(c.pop(&mut out).unwrap(), None);
        let mut p = Producer::new(l);
        p.push(b"", b"fresh", 0).unwrap();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, b"fresh");
        assert_eq!(c.pop(&mut out).unwrap(), None);
    }

    #[test]
    fn a_corrupt_record_is_rejected_and_nothing_more_is_read() {
        let o = owned(256);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"", b"good", 0).unwrap();
        p.push(b"", b"next", 0).unwrap();
        // A hostile producer rewrites the payload length of its first record
        // far beyond the lane, keeping the commit mark.
        o.data[0].store(commit_word(0, 4000), Ordering::Relaxed);
        let mut out = Vec::new();
        let err = c.pop(&mut out).unwrap_err();
        assert!(err.reason.contains("record of"), "{}", err.reason);
        assert!(out.is_empty());
        // Where the next record starts is unknowable: the lane reads empty.
        assert_eq!(c.pop(&mut out).unwrap(), None);
    }

    #[test]
    fn a_commit_word_without_the_mark_is_rejected() {
        let o = owned(128);
        let l = lane(&o, 100);
        let mut c = Consumer::new(l);
        o.data[0].store(4000, Ordering::Relaxed);
        let err = c.pop(&mut Vec::new()).unwrap_err();
        assert!(err.reason.contains("commit mark"), "{}", err.reason);
    }

    #[test]
    fn nonzero_flags_are_rejected() {
        let o = owned(128);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"", b"x", 0).unwrap();
        let w = o.data[0].load(Ordering::Relaxed);
        o.data[0].store(w | (1 << 40), Ordering::Relaxed);
        let err = c.pop(&mut Vec::new()).unwrap_err();
        assert!(err.reason.contains("flags"), "{}", err.reason);
    }

    #[test]
    fn a_hostile_tail_never_inflates_counts_beyond_the_limit() {
        let o = owned(64);
        let l = lane(&o, 4);
        o.ctrl.tail.store(advance(0, 4096), Ordering::Release);
        assert!(l.queued() <= 4);
        o.ctrl.tail.store(u64::MAX, Ordering::Release);
        assert!(l.queued() <= 4);
    }

    #[test]
    fn positions_wrap_their_counters() {
        // Start both sides just below the wrap of both counters.
        let o = owned(64);
        let start = (SEQ_MASK << POS_BITS) | (POS_MASK - 15);
        let start = start & !7;
        o.ctrl.tail.store(start, Ordering::Relaxed);
        o.ctrl.head.store(start, Ordering::Relaxed);
        let l = lane(&o, 4);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        let mut out = Vec::new();
        for i in 0..20u8 {
            p.push(b"", &[i; 9], 0).unwrap();
            assert_eq!(l.queued(), 1);
            c.pop(&mut out).unwrap().unwrap();
            assert_eq!(out, [i; 9]);
        }
        assert!(!l.has_record());
        assert_eq!(l.queued(), 0);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any interleaving of writes, publications and pops on a small
            /// lane delivers exactly the published records, in order, byte for
            /// byte, and nothing written but unpublished.
            #[test]
            fn lane_delivers_published_records_in_order(
                ops in proptest::collection::vec(
                    (0u8..3, proptest::collection::vec(any::<u8>(), 0..4), proptest::collection::vec(any::<u8>(), 0..70)),
                    1..200),
                bytes_pow in 6u32..9,
            ) {
                let o = owned(1 << bytes_pow);
                let l = lane(&o, 5);
                let mut p = Producer::new(l);
                let mut c = Consumer::new(l);
                let mut published = std::collections::VecDeque::new();
                let mut written = Vec::new();
                let mut out = Vec::new();
                for (op, tag, payload) in ops {
                    match op {
                        0 => match p.write(&tag, &payload, 7) {
                            Ok(()) => written.push((tag, payload)),
                            Err(PushError::Full) => prop_assert!(!published.is_empty() || !written.is_empty()),
                            Err(PushError::TooLarge) => prop_assert!(record_len(tag.len(), payload.len()) > (1 << bytes_pow) - SLACK),
                        },
                        1 => {
                            p.publish();
                            published.extend(written.drain(..));
                        }
                        _ => {
                            let got = c.pop(&mut out).unwrap();
                            match published.pop_front() {
                                Some((tag, payload)) => {
                                    let m = got.expect("a record was published");
                                    prop_assert_eq!(m.tag_len, tag.len());
                                    prop_assert_eq!(&out[..m.tag_len], &tag[..]);
                                    prop_assert_eq!(&out[m.tag_len..], &payload[..]);
                                }
                                None => prop_assert_eq!(got, None),
                            }
                        }
                    }
                }
                p.publish();
            }

            /// Whatever bytes a hostile peer writes over a lane and its
            /// positions, popping never panics or reads out of bounds, every
            /// record it returns fits the lane, and after the first rejected
            /// record nothing more is read.
            #[test]
            fn garbage_lane_contents_never_panic(
                garbage in proptest::collection::vec(any::<u64>(), 16),
                marks in proptest::collection::vec(any::<bool>(), 16),
                tail in any::<u64>(),
                head in any::<u64>(),
            ) {
                let o = owned(128);
                for ((w, g), mark) in o.data.iter().zip(&garbage).zip(&marks) {
                    // Half the words carry the commit mark, so records that
                    // pass the first check are common.
                    let v = if *mark { (g & 0x0000_00ff_0000_00ff) | COMMIT << 48 } else { *g };
                    w.store(v, Ordering::Relaxed);
                }
                o.ctrl.tail.store(tail, Ordering::Relaxed);
                o.ctrl.head.store(head, Ordering::Relaxed);
                let l = lane(&o, 8);
                prop_assert!(l.queued() <= 8);
                let _ = l.has_record();
                let mut c = Consumer::new(l);
                let mut out = Vec::new();
                let mut rejected = false;
                for _ in 0..64 {
                    match c.pop(&mut out) {
                        Ok(Some(m)) => {
                            prop_assert!(!rejected, "read after a rejected record");
                            prop_assert!(m.tag_len <= out.len() && out.len() <= 128);
                        }
                        Ok(None) => {}
                        Err(_) => {
                            prop_assert!(!rejected, "rejected twice");
                            rejected = true;
                        }
                    }
                }
            }
        }
    }
}
