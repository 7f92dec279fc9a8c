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
//! consumer owns the bytes from `head` to `tail`.
//!
//! - push: check that the record fits (bytes and record count) against a cached
//!   `head`, re-reading `head` (`Acquire`) only when it seems full; copy the record
//!   in; store the new `tail` with `Release`.
//! - pop: if the cached `tail` equals `head`, re-read `tail` (`Acquire`); validate
//!   and copy the record out; store the new `head` with `Release`.
//!
//! A producer that dies at any instruction leaves at most an unpublished record
//! beyond `tail`, which no one ever reads. A consumer that dies leaves `head`
//! at a record boundary (it is stored once per record, after the copy).
//!
//! # Records
//!
//! ```text
//! 0      4        6       8             16           16+pad8(tag)
//! | len  | tag_len | flags | expires_ms  | tag, padded | payload, padded to 8 |
//! ```
//!
//! All little-endian. `len` is the payload length, `tag` a short routing tag (the
//! local part of a process-specific channel name), `flags` must be 0, `expires_ms`
//! is a `CLOCK_MONOTONIC` deadline in milliseconds (0: never). Records may wrap
//! around the end of the data area. Every field is validated by the consumer
//! before it is used: the producer may be buggy or hostile.

use crate::sync::{read_bytes, write_bytes, AtomicU64, CachePadded, Ordering};

/// Bits of a position word that count bytes; the rest count records.
pub const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const SEQ_MASK: u64 = (1 << (64 - POS_BITS)) - 1;
/// The most records a lane may hold (half the record counter's range, so that
/// differences of record counts are unambiguous).
pub const MAX_LANE_MSGS: u32 = 1 << (64 - POS_BITS - 1);
/// The largest data area a lane may have.
pub const MAX_LANE_BYTES: usize = 1 << 32;
/// Size of a record header.
pub const RECORD_HEADER: usize = 16;
/// Longest tag a record may carry.
pub const MAX_TAG: usize = 255;

/// Rounds up to a multiple of 8.
pub const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a record with this tag and payload occupies in a lane.
pub const fn record_len(tag_len: usize, payload_len: usize) -> usize {
    RECORD_HEADER + pad8(tag_len) + pad8(payload_len)
}

/// Bytes between two position words (`a` is ahead of `b`).
fn pos_diff(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b) & POS_MASK
}

/// Records between two position words (`a` is ahead of `b`).
fn seq_diff(a: u64, b: u64) -> u64 {
    (a >> POS_BITS).wrapping_sub(b >> POS_BITS) & SEQ_MASK
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
    /// Position of the next record to be written. Written only by the
    /// producer, with `Release` after the record's bytes (pairs with the
    /// `Acquire` load in [`Consumer::pop`]).
    pub tail: CachePadded<AtomicU64>,
    /// Position of the oldest unread record. Written only by the consumer, with
    /// `Release` after the record has been copied out (pairs with the `Acquire`
    /// load in [`Producer::push`]).
    pub head: CachePadded<AtomicU64>,
}

impl LaneCtrl {
    /// Resets both positions; only for a lane no one else is using.
    pub(crate) fn reset(&self) {
        self.tail.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }
}

/// The limits of one lane, taken from the trusted segment geometry (never from
/// the lane itself, which any peer can scribble on).
#[derive(Clone, Copy, Debug)]
pub struct LaneLimits {
    /// The most records the lane holds at once (`1 ..= MAX_LANE_MSGS`).
    pub max_msgs: u32,
    /// The largest record, header included (`RECORD_HEADER ..= bytes`).
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
        assert!((RECORD_HEADER..=bytes).contains(&limits.max_record));
        Lane { ctrl, data, limits }
    }

    fn bytes(&self) -> usize {
        self.data.len() * 8
    }

    fn offset(&self, pos_word: u64) -> usize {
        (pos_word & POS_MASK) as usize & (self.bytes() - 1)
    }

    /// Records in the lane, as seen now (exact only when both sides are idle).
    pub fn len(&self) -> usize {
        let head = self.ctrl.head.load(Ordering::Acquire);
        let tail = self.ctrl.tail.load(Ordering::Acquire);
        (seq_diff(tail, head) as usize).min(self.limits.max_msgs as usize)
    }

    /// Whether the lane holds no record, as seen now.
    pub fn is_empty(&self) -> bool {
        self.ctrl.head.load(Ordering::Acquire) == self.ctrl.tail.load(Ordering::Acquire)
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

/// A record that failed validation. The consumer has discarded everything up to
/// the producer's current `tail`, so the lane is usable again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// What was wrong, for the log.
    pub reason: String,
}

/// The producing side of a lane. There must be at most one at a time.
pub struct Producer<'a> {
    lane: Lane<'a>,
    /// Our copy of `ctrl.tail` (we are its only writer).
    tail: u64,
    /// Last `ctrl.head` we saw; the consumer only moves it forward.
    head: u64,
}

impl<'a> Producer<'a> {
    /// Takes the producing side of `lane`.
    pub fn new(lane: Lane<'a>) -> Self {
        // Relaxed: we are the only writer of `tail` (a previous producer of this
        // lane handed it over through the segment lock or is dead).
        let tail = lane.ctrl.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of `head`.
        let head = lane.ctrl.head.load(Ordering::Acquire);
        Producer { lane, tail, head }
    }

    /// Resumes producing with positions saved by [`Producer::positions`], so a
    /// long-lived sender need not re-read the consumer's cache line.
    ///
    /// `tail` must be the lane's tail as this producer last stored it, and
    /// `head` a value of the lane's head it has seen.
    pub fn resume(lane: Lane<'a>, tail: u64, head: u64) -> Self {
        debug_assert_eq!(tail, lane.ctrl.tail.load(Ordering::Relaxed));
        Producer { lane, tail, head }
    }

    /// The positions to hand to [`Producer::resume`] later.
    pub fn positions(&self) -> (u64, u64) {
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
            && len <= bytes - used
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
    /// Batching the publication saves the consumer a cache miss per record.
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
        let mut header = [0u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..6].copy_from_slice(&(tag.len() as u16).to_le_bytes());
        header[8..16].copy_from_slice(&expires_ms.to_le_bytes());
        let mask = self.lane.bytes() - 1;
        let mut off = self.lane.offset(self.tail);
        write_bytes(self.lane.data, off, &header);
        off = (off + RECORD_HEADER) & mask;
        if !tag.is_empty() {
            write_bytes(self.lane.data, off, tag);
            off = (off + pad8(tag.len())) & mask;
        }
        if !payload.is_empty() {
            write_bytes(self.lane.data, off, payload);
        }
        self.tail = advance(self.tail, len);
        Ok(())
    }

    /// Publishes every record written so far.
    pub fn publish(&mut self) {
        // Release: publishes the records' bytes; pairs with the Acquire load
        // of `tail` in `Consumer::take`.
        self.lane.ctrl.tail.store(self.tail, Ordering::Release);
    }

    /// Writes a record's bytes but dies before publishing it: what a producer
    /// killed inside `push` leaves behind. For the loom models only.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn write_then_die(mut self, tag: &[u8], payload: &[u8]) {
        let mut header = [0u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..6].copy_from_slice(&(tag.len() as u16).to_le_bytes());
        self.head = self.lane.ctrl.head.load(Ordering::Acquire);
        assert!(self.fits(record_len(tag.len(), payload.len())));
        let mask = self.lane.bytes() - 1;
        let off = self.lane.offset(self.tail);
        write_bytes(self.lane.data, off, &header);
        write_bytes(self.lane.data, (off + RECORD_HEADER) & mask, payload);
        // ...and never stores `tail`.
    }

    /// Whether a record of this size would fit now (re-reads `head`).
    pub fn has_room(&mut self, tag_len: usize, payload_len: usize) -> bool {
        self.head = self.lane.ctrl.head.load(Ordering::Acquire);
        self.fits(record_len(tag_len, payload_len))
    }
}

/// The consuming side of a lane. There must be at most one at a time.
pub struct Consumer<'a> {
    lane: Lane<'a>,
    /// Our copy of `ctrl.head` (we are its only writer).
    head: u64,
    /// Last `ctrl.tail` we saw.
    tail: u64,
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
            tail: head,
        }
    }

    /// Resumes consuming with positions saved by [`Consumer::positions`], so a
    /// long-lived receiver reads the producer's `tail` once per batch rather
    /// than once per record.
    ///
    /// `head` must be the lane's current head, and `tail` a value of the lane's
    /// tail this thread loaded (with `Acquire`) after the records up to it were
    /// published, or equal to `head`.
    pub fn resume(lane: Lane<'a>, head: u64, tail: u64) -> Self {
        debug_assert_eq!(head, lane.ctrl.head.load(Ordering::Relaxed));
        Consumer { lane, head, tail }
    }

    /// The positions to hand to [`Consumer::resume`] later.
    pub fn positions(&self) -> (u64, u64) {
        (self.head, self.tail)
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
        if self.head == self.tail {
            // Acquire: pairs with the producer's Release store of `tail`, so the
            // record bytes below it are visible.
            self.tail = self.lane.ctrl.tail.load(Ordering::Acquire);
            if self.head == self.tail {
                return Ok(None);
            }
        }
        match self.read_record(out) {
            Ok((meta, len)) => {
                self.head = advance(self.head, len);
                Ok(Some(meta))
            }
            Err(reason) => {
                // Nothing in the lane can be trusted up to the tail we saw:
                // drop it all so the lane is usable again.
                self.head = self.tail;
                out.clear();
                Err(Corrupt { reason })
            }
        }
    }

    /// Hands the space of every record taken so far back to the producer.
    pub fn release(&mut self) {
        if self.lane.ctrl.head.load(Ordering::Relaxed) != self.head {
            // Release: our copies of the records are done before the producer
            // may reuse their bytes; pairs with the Acquire loads in `write`.
            self.lane.ctrl.head.store(self.head, Ordering::Release);
        }
    }

    fn read_record(&self, out: &mut Vec<u8>) -> Result<(RecordMeta, usize), String> {
        let bytes = self.lane.bytes();
        let used = pos_diff(self.tail, self.head) as usize;
        let records = seq_diff(self.tail, self.head);
        if used > bytes || records == 0 || records > u64::from(self.lane.limits.max_msgs) {
            return Err(format!(
                "lane positions out of range: {used} bytes in {records} records"
            ));
        }
        if self.head % 8 != 0 || self.tail % 8 != 0 {
            return Err("lane position not 8-byte aligned".into());
        }
        let off = self.lane.offset(self.head);
        let mut header = [0u8; RECORD_HEADER];
        read_bytes(self.lane.data, off, &mut header);
        let payload_len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        let tag_len = usize::from(u16::from_le_bytes(header[4..6].try_into().unwrap()));
        let flags = u16::from_le_bytes(header[6..8].try_into().unwrap());
        let expires_ms = u64::from_le_bytes(header[8..16].try_into().unwrap());
        if flags != 0 {
            return Err(format!("record flags {flags:#x} are not 0"));
        }
        if tag_len > MAX_TAG {
            return Err(format!("record tag of {tag_len} bytes (at most {MAX_TAG})"));
        }
        let len = record_len(tag_len, payload_len);
        if len > self.lane.limits.max_record || len > used {
            return Err(format!(
                "record of {len} bytes (lane holds {used}, maximum {})",
                self.lane.limits.max_record
            ));
        }
        let mask = bytes - 1;
        // Reuse the buffer's bytes: only growth is zero-filled, the copy below
        // overwrites everything.
        out.truncate(tag_len + payload_len);
        out.resize(tag_len + payload_len, 0);
        let (tag, payload) = out.split_at_mut(tag_len);
        let mut at = (off + RECORD_HEADER) & mask;
        if tag_len > 0 {
            read_bytes(self.lane.data, at, tag);
            at = (at + pad8(tag_len)) & mask;
        }
        if payload_len > 0 {
            read_bytes(self.lane.data, at, payload);
        }
        Ok((
            RecordMeta {
                tag_len,
                expires_ms,
            },
            len,
        ))
    }

    /// Whether the lane is empty, re-reading the producer's `tail`.
    pub fn is_empty(&mut self) -> bool {
        if self.head == self.tail {
            self.tail = self.lane.ctrl.tail.load(Ordering::Acquire);
        }
        self.head == self.tail
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
                max_record: bytes,
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
        // 16 header + 16 payload = 32 bytes: two fit in 64.
        p.push(b"", &[1; 16], 0).unwrap();
        p.push(b"", &[2; 16], 0).unwrap();
        assert_eq!(p.push(b"", &[3; 16], 0), Err(PushError::Full));
        let mut out = Vec::new();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [1; 16]);
        p.push(b"", &[3; 16], 0).unwrap();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [2; 16]);
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, [3; 16]);
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
        assert_eq!(l.len(), 3);
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
        }
    }

    #[test]
    fn corrupt_length_is_rejected_and_lane_recovers() {
        let o = owned(256);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"", b"good", 0).unwrap();
        // A hostile producer rewrites the payload length to point far beyond
        // the data it published.
        o.data[0].store(4000, Ordering::Relaxed);
        let mut out = Vec::new();
        let err = c.pop(&mut out).unwrap_err();
        assert!(err.reason.contains("record of"), "{}", err.reason);
        assert_eq!(c.pop(&mut out).unwrap(), None);
        p.push(b"", b"after", 0).unwrap();
        c.pop(&mut out).unwrap().unwrap();
        assert_eq!(out, b"after");
    }

    #[test]
    fn hostile_tail_beyond_capacity_is_rejected() {
        let o = owned(64);
        let l = lane(&o, 100);
        let mut c = Consumer::new(l);
        o.ctrl.tail.store(advance(0, 4096), Ordering::Release);
        let mut out = Vec::new();
        let err = c.pop(&mut out).unwrap_err();
        assert!(err.reason.contains("out of range"), "{}", err.reason);
        assert_eq!(c.pop(&mut out).unwrap(), None);
    }

    #[test]
    fn nonzero_flags_are_rejected() {
        let o = owned(128);
        let l = lane(&o, 100);
        let mut p = Producer::new(l);
        let mut c = Consumer::new(l);
        p.push(b"", b"x", 0).unwrap();
        let w = o.data[0].load(Ordering::Relaxed);
        o.data[0].store(w | (1 << 48), Ordering::Relaxed);
        let err = c.pop(&mut Vec::new()).unwrap_err();
        assert!(err.reason.contains("flags"), "{}", err.reason);
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
            c.pop(&mut out).unwrap().unwrap();
            assert_eq!(out, [i; 9]);
        }
        assert!(c.is_empty());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any interleaving of pushes and pops on a small lane delivers
            /// exactly the accepted records, in order, byte for byte.
            #[test]
            fn lane_delivers_accepted_records_in_order(
                ops in proptest::collection::vec(
                    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4), proptest::collection::vec(any::<u8>(), 0..70)),
                    1..200),
                bytes_pow in 6u32..9,
            ) {
                let o = owned(1 << bytes_pow);
                let l = lane(&o, 5);
                let mut p = Producer::new(l);
                let mut c = Consumer::new(l);
                let mut model = std::collections::VecDeque::new();
                let mut out = Vec::new();
                for (is_push, tag, payload) in ops {
                    if is_push {
                        match p.push(&tag, &payload, 7) {
                            Ok(()) => model.push_back((tag, payload)),
                            Err(PushError::Full) => prop_assert!(!model.is_empty()),
                            Err(PushError::TooLarge) => prop_assert!(record_len(tag.len(), payload.len()) > 1 << bytes_pow),
                        }
                    } else {
                        let got = c.pop(&mut out).unwrap();
                        match model.pop_front() {
                            Some((tag, payload)) => {
                                let m = got.expect("a record was pushed");
                                prop_assert_eq!(m.tag_len, tag.len());
                                prop_assert_eq!(&out[..m.tag_len], &tag[..]);
                                prop_assert_eq!(&out[m.tag_len..], &payload[..]);
                            }
                            None => prop_assert_eq!(got, None),
                        }
                    }
                }
            }

            /// Whatever bytes a hostile peer writes over a lane, popping never
            /// panics, never reads out of bounds, and ends with an empty lane.
            #[test]
            fn garbage_lane_contents_never_panic(
                garbage in proptest::collection::vec(any::<u64>(), 16),
                tail in any::<u64>(),
                head in any::<u64>(),
            ) {
                let o = owned(128);
                for (w, g) in o.data.iter().zip(&garbage) {
                    w.store(*g, Ordering::Relaxed);
                }
                o.ctrl.tail.store(tail, Ordering::Relaxed);
                o.ctrl.head.store(head, Ordering::Relaxed);
                let l = lane(&o, 8);
                let mut c = Consumer::new(l);
                let mut out = Vec::new();
                let mut steps = 0;
                loop {
                    match c.pop(&mut out) {
                        Ok(Some(m)) => prop_assert!(m.tag_len <= out.len() && out.len() <= 128),
                        Ok(None) => break,
                        Err(_) => {}
                    }
                    steps += 1;
                    prop_assert!(steps <= 9, "a lane of 8 records must drain");
                }
            }
        }
    }
}
