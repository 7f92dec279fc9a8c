//! Endpoints: one thread's attachment to a segment, and the channel-layer API.
//!
//! An [`Endpoint`] is a producer identity (its lanes are single-producer, so
//! an endpoint is `Send` but not `Sync`: one thread uses it at a time) and a
//! consumer identity (it owns the process-specific channels it creates with
//! [`Endpoint::new_channel`]). The semantics are those of the Channels
//! channel-layer spec; messages are opaque bytes at this level.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, SendError};
use crate::layout::{
    channel_state, lane_state, load_name, name_eq, name_hash, store_name, ChannelSlot,
    LANES_PER_CHANNEL,
};
use crate::liveness;
use crate::mask::{self, Mask, BITS};
use crate::names::{self, parse_channel};
use crate::repair::{self, ReapReport, Slot};
use crate::ring::{self, Consumer, Producer, PushError};
use crate::segment::{LockMode, Locked, Segment, Shared};
use crate::wake::{self, Bells};
use crate::{handshake, sys};

/// A channel resolved to its slot: valid while the slot's generation matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId {
    slot: u32,
    gen: u32,
}

/// The lane this endpoint produces into for one channel.
struct SendLane {
    /// Generation of the channel the lane was listed in.
    chan_gen: u32,
    /// Lane index.
    lane: u32,
    /// Bit of the lane in the channel's `lane_mask`.
    bit: u32,
    /// Saved producer positions (see `Producer::resume`).
    tail: u64,
    head: u64,
}

/// A receiver's saved view of one lane (see `Consumer::resume`).
#[derive(Clone, Copy, Default)]
struct LaneView {
    /// Lane index + 1 (0: no view).
    lane: u32,
    /// The lane's incarnation when the view was taken.
    incarnation: u32,
    /// Where we stopped reading (the lane's `head` as we stored it).
    head: u64,
    /// We found a corrupt record in this lane and reported it; it is not
    /// read again, only retired once the segment lock is free.
    condemned: bool,
}

impl LaneView {
    /// Whether this view is of lane `lane` in its incarnation `inc`.
    fn is_of(&self, lane: usize, inc: u32) -> bool {
        self.lane == lane as u32 + 1 && self.incarnation == inc
    }
}

/// A receiver's saved views of a channel's lanes, by lane bit.
struct RecvView {
    /// The channel generation the views belong to.
    gen: u32,
    lanes: [LaneView; LANES_PER_CHANNEL],
}

impl RecvView {
    /// Whether we condemned the lane listed at `bit` (see `LaneView`).
    fn condemned(&self, shared: &Shared, bit: u32, lane: usize) -> bool {
        let v = &self.lanes[bit as usize];
        v.condemned
            && v.is_of(
                lane,
                shared
                    .lane_slot(lane)
                    .meta
                    .incarnation
                    .load(Ordering::Relaxed),
            )
    }
}

/// How far a channel's consumer has got, for a supervisor's heartbeat
/// ([`Endpoint::progress`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Records the channel's consumers have taken out of it since it was
    /// created (delivered or dropped as expired). A consumer that stops
    /// taking while `queued` is not 0 is stuck.
    pub taken: u64,
    /// Records waiting in the channel now, over all its lanes.
    pub queued: u64,
}

/// A message held back for a process-specific channel name other than the one
/// being received.
struct Stashed {
    expires_ms: u64,
    payload: Vec<u8>,
}

/// What [`Endpoint::group_send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupSend {
    /// Members the message was queued for.
    pub sent: usize,
    /// Members skipped because their channel was full (the spec drops these).
    pub full: usize,
    /// Members skipped because their channel's receiver is gone.
    pub gone: usize,
}

/// How `resolve` treats a channel that does not exist yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Create normal channels; a missing process-specific one has no receiver.
    Use,
    /// Create a process-specific channel owned by this endpoint.
    Own,
}

/// One thread's attachment to a segment.
pub struct Endpoint {
    seg: Segment,
    idx: u32,
    gen: u32,
    /// Ring name -> resolved channel.
    names: HashMap<String, ChannelId>,
    /// Channel slot -> our lane in it.
    lanes: Vec<Option<SendLane>>,
    /// Channel slot -> what we know of its lanes as a receiver.
    views: Vec<Option<Box<RecvView>>>,
    /// Full process-specific channel name -> messages received for it early.
    stash: HashMap<String, VecDeque<Stashed>>,
    /// Read end of our doorbell FIFO, once asked for.
    bell: Option<OwnedFd>,
    /// Write ends of other endpoints' doorbells.
    bells: Bells,
    /// Reused receive buffer.
    buf: Vec<u8>,
    /// Counter for `new_channel` names.
    counter: u64,
    /// Lane bit to start the next pop at (round robin over producers).
    rr: u32,
    /// Whether sends hold their wake-ups until `flush_wakeups` (see
    /// `hold_wakeups`).
    held: bool,
    /// Channel slots with held wake-ups, and a flag per slot.
    pending: Vec<u32>,
    pending_flag: Vec<bool>,
    /// Busy-wait iterations `receive` spends before sleeping (0: sleep at once).
    /// Spinning trades a core for latency; see `bench/README.md`.
    pub spin: u32,
    /// Whether operations that need the segment lock wait for it (see
    /// `set_lock_wait`).
    lock_wait: bool,
}

impl Segment {
    /// Attaches a new endpoint (for this thread) to the segment.
    /// Attaching takes no lock: it claims a free endpoint slot with a CAS.
    /// Fails with `TableFull("endpoint")` when all
    /// [`MAX_ENDPOINTS`](crate::MAX_ENDPOINTS) are attached.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let (idx, gen) = self.shared.attach()?;
        Ok(Endpoint {
            seg: self.clone(),
            idx,
            gen,
            names: HashMap::new(),
            lanes: Vec::new(),
            views: Vec::new(),
            stash: HashMap::new(),
            bell: None,
            bells: Bells::default(),
            buf: Vec::new(),
            counter: 0,
            rr: 0,
            held: false,
            pending: Vec::new(),
            pending_flag: Vec::new(),
            spin: 0,
            lock_wait: true,
        })
    }
}

impl Endpoint {
    /// This endpoint's index in the segment's endpoint table.
    pub fn index(&self) -> u32 {
        self.idx
    }

    /// The segment this endpoint is attached to.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    fn shared(&self) -> &Shared {
        &self.seg.shared
    }

    /// Our lock id (see `liveness.rs`).
    fn lock_id(&self) -> u32 {
        liveness::lock_id(self.idx, self.gen)
    }

    /// Takes the segment lock as this endpoint, waiting or not as
    /// `set_lock_wait` says.
    fn lock(&self) -> Result<Locked<'_>> {
        lock_as(&self.seg, self.lock_id(), self.lock_wait)
    }

    /// Whether operations that need the segment lock wait for it (`true`,
    /// the default: up to 2 s, then [`Error::LockTimeout`]) or try it once
    /// and fail at once with [`Error::LockBusy`] if another live endpoint
    /// holds it (`false`).
    ///
    /// The lock guards table changes only: resolving a channel this endpoint
    /// has not used yet (`channel`, `send` to a new name, `new_channel`,
    /// `own_channel`), the first send into a channel (taking a lane),
    /// `group_add`, `group_discard`, `group_members`, `group_send` and
    /// `flush`. Sends and receives on channels already in use never take
    /// it, and the housekeeping receives do (freeing a drained lane of a
    /// dead producer, retiring a lane with a corrupt record) only ever tries
    /// it, in either mode. A reactor thread sets `false` so that a worker
    /// holding the lock (or stopped while holding it) cannot stall it.
    /// Detaching (dropping the endpoint) always waits.
    pub fn set_lock_wait(&mut self, wait: bool) {
        self.lock_wait = wait;
    }

    // ----- channels -------------------------------------------------------

    fn is_live(&self, id: ChannelId) -> bool {
        let c = self.shared().channel(id.slot as usize);
        // Acquire: pairs with the Release store of ACTIVE in `create_channel`.
        c.state.load(Ordering::Acquire) == channel_state::ACTIVE
            && c.generation.load(Ordering::Acquire) == id.gen
    }

    /// Resolves a ring name to its channel, creating it if `mode` allows.
    fn resolve(&mut self, ring: &str, mode: Mode) -> Result<ChannelId> {
        if let Some(&id) = self.names.get(ring) {
            if self.is_live(id) {
                return Ok(id);
            }
            self.names.remove(ring);
        }
        let id = {
            let g = self.lock()?;
            match find_channel(&g, ring.as_bytes()) {
                Some(id) => id,
                None if ring.ends_with('!') && mode != Mode::Own => {
                    return Err(Error::NoReceiver(ring.to_owned()))
                }
                None => {
                    let owner = (mode == Mode::Own).then_some((self.idx, self.gen));
                    create_channel(&g, ring.as_bytes(), owner)?
                }
            }
        };
        self.names.insert(ring.to_owned(), id);
        Ok(id)
    }

    /// Resolves (creating if need be) the channel that carries `ring`, for the
    /// `*_id` calls. Process-specific rings must already exist.
    pub fn channel(&mut self, ring: &str) -> Result<ChannelId> {
        let name = parse_channel(ring)?;
        if !name.tag.is_empty() {
            return Err(Error::InvalidName(format!(
                "{ring:?} is a full process-specific name; pass its part up to '!'"
            )));
        }
        self.resolve(name.ring, Mode::Use)
    }

    /// Returns a new, unique process-specific channel name `prefix…!tag`,
    /// received only by this endpoint.
    pub fn new_channel(&mut self, prefix: &str) -> Result<String> {
        if prefix.contains('!') || prefix.len() > 60 {
            return Err(Error::InvalidName(format!(
                "new_channel prefix {prefix:?} must be at most 60 characters without '!'"
            )));
        }
        let ring = format!("{prefix}{}.{}!", self.idx, self.gen);
        parse_channel(&ring)?;
        self.resolve(&ring, Mode::Own)?;
        self.counter += 1;
        Ok(format!("{ring}{:x}", self.counter))
    }

    /// Creates the process-specific channel `ring` (a name ending in `!`, such
    /// as a worker's well-known inbox `worker.3!`), owned and received by this
    /// endpoint. If an endpoint that has died still owns it, it is reclaimed
    /// first; if a live one does, this fails with [`Error::ChannelOwned`].
    pub fn own_channel(&mut self, ring: &str) -> Result<ChannelId> {
        let name = parse_channel(ring)?;
        if !name.is_process_specific() || !name.tag.is_empty() {
            return Err(Error::InvalidName(format!(
                "{ring:?} must end with '!' to name a process-specific channel"
            )));
        }
        let me = (self.idx + 1, self.gen);
        let id = {
            let g = self.lock()?;
            let mut found = find_channel(&g, ring.as_bytes());
            if found.is_some() {
                // An owner that is gone (released, or found dead by the
                // reaper) leaves its channel to the repair.
                repair::repair(&g, &mut ReapReport::default());
                found = find_channel(&g, ring.as_bytes());
            }
            match found {
                Some(id) => {
                    let c = g.seg.channel(id.slot as usize);
                    let owner = (
                        c.owner.load(Ordering::Relaxed),
                        c.owner_gen.load(Ordering::Relaxed),
                    );
                    if owner != me {
                        return Err(Error::ChannelOwned(ring.to_owned()));
                    }
                    id
                }
                None => create_channel(&g, ring.as_bytes(), Some((self.idx, self.gen)))?,
            }
        };
        self.names.insert(ring.to_owned(), id);
        Ok(id)
    }

    // ----- sending --------------------------------------------------------

    /// Sends `message` to `channel`. Never blocks: a channel at capacity
    /// returns [`SendError::Full`] and queues nothing (wait for room with
    /// [`Endpoint::arm_space`] or [`Endpoint::wait_space`]).
    pub fn send(&mut self, channel: &str, message: &[u8]) -> std::result::Result<(), SendError> {
        let name = parse_channel(channel)?;
        let id = self.resolve(name.ring, Mode::Use)?;
        self.send_id(id, name.tag.as_bytes(), message)
    }

    /// Sends to a resolved channel with a routing tag (the local part of a
    /// process-specific name, or empty).
    pub fn send_id(
        &mut self,
        id: ChannelId,
        tag: &[u8],
        message: &[u8],
    ) -> std::result::Result<(), SendError> {
        match self.send_many(id, tag, &[message])? {
            0 => Err(SendError::Full),
            _ => Ok(()),
        }
    }

    /// Sends several messages with the same tag, in order, waking the
    /// receiver once for all of them. Returns how many were queued: fewer
    /// than given when the channel filled up (the rest were not queued).
    /// Other producers' lanes are counted once per batch, so racing batches
    /// may overshoot the capacity by what they queue meanwhile.
    pub fn send_many(
        &mut self,
        id: ChannelId,
        tag: &[u8],
        messages: &[&[u8]],
    ) -> std::result::Result<usize, SendError> {
        let max = self.shared().geo.max_message as usize;
        if let Some(big) = messages.iter().find(|m| m.len() > max) {
            return Err(Error::TooLarge {
                size: big.len(),
                max,
            }
            .into());
        }
        if tag.len() > crate::ring::MAX_TAG {
            return Err(Error::InvalidName(format!("tag of {} bytes", tag.len())).into());
        }
        if !self.is_live(id) {
            return Err(Error::NoReceiver(format!("channel slot {}", id.slot)).into());
        }
        self.ensure_lane(id)?;
        let shared = &*self.seg.shared;
        let c = shared.channel(id.slot as usize);
        let sl = self.lanes[id.slot as usize]
            .as_mut()
            .expect("ensure_lane inserted it");
        let mut p = Producer::resume(shared.lane(sl.lane as usize), sl.tail, sl.head);
        // Capacity counts every lane of the channel. Our own count is an upper
        // bound from a cached head, re-read only when it says full; other
        // producers' lanes are read once per batch.
        let cap = u64::from(c.capacity.load(Ordering::Relaxed));
        let others = queued_in(shared, c, Some(sl.bit));
        let expires = match shared.message_expiry_ms {
            0 => 0,
            e => sys::monotonic_coarse_ms().saturating_add(e),
        };
        let mut sent = 0;
        for m in messages {
            if p.len_upper_bound() + others >= cap {
                p.has_room(0, 0);
                if p.len_upper_bound() + others >= cap {
                    break;
                }
            }
            match p.write(tag, m, expires) {
                Ok(()) => sent += 1,
                Err(PushError::Full) => break,
                Err(PushError::TooLarge) => {
                    p.publish();
                    (sl.tail, sl.head) = p.positions();
                    return Err(Error::TooLarge { size: m.len(), max }.into());
                }
            }
        }
        // One publication for the whole batch.
        p.publish();
        (sl.tail, sl.head) = p.positions();
        drop(p);
        if sent > 0 {
            if self.held {
                let slot = id.slot as usize;
                if self.pending_flag.len() <= slot {
                    self.pending_flag.resize(slot + 1, false);
                }
                if !self.pending_flag[slot] {
                    self.pending_flag[slot] = true;
                    self.pending.push(id.slot);
                }
            } else {
                let ring = wake::notify(c);
                if !ring.is_empty() {
                    self.ring_bells(ring);
                }
            }
        }
        Ok(sent)
    }

    /// Makes sends hold their wake-ups (`true`) until [`Endpoint::flush_wakeups`],
    /// or deliver them at once (`false`, the default; held ones are flushed).
    ///
    /// A producer that sends many messages in one turn of its loop (a reactor
    /// answering a batch of completions, a worker draining its inbox) wakes
    /// each sleeping receiver once per turn instead of once per message: a
    /// futex wake or doorbell write costs microseconds.
    pub fn hold_wakeups(&mut self, hold: bool) {
        self.held = hold;
        if !hold {
            self.flush_wakeups();
        }
    }

    /// Delivers the wake-ups held since the last flush.
    pub fn flush_wakeups(&mut self) {
        while let Some(slot) = self.pending.pop() {
            self.pending_flag[slot as usize] = false;
            let c = self.seg.shared.channel(slot as usize);
            let ring = wake::notify(c);
            if !ring.is_empty() {
                self.ring_bells(ring);
            }
        }
    }

    fn ring_bells(&mut self, mask: Mask) {
        let shared = &*self.seg.shared;
        self.bells.ring_mask(shared.path(), mask, |j| {
            shared
                .endpoint(j as usize)
                .generation
                .load(Ordering::Relaxed)
        });
    }

    /// Makes sure we have a lane listed in channel `id`: a new one if we
    /// have none, if the one we had belongs to an earlier use of the channel
    /// slot, or if the channel's receiver retired it (DETACHED: it found a
    /// record it could not trust).
    fn ensure_lane(&mut self, id: ChannelId) -> Result<()> {
        let slot = id.slot as usize;
        if let Some(Some(l)) = self.lanes.get(slot) {
            // Relaxed: the state is a hint here; a lane detached a moment ago
            // is noticed on the next send (what was sent meanwhile is lost
            // with the corrupt record, as the receiver reported).
            let state = self
                .seg
                .shared
                .lane_slot(l.lane as usize)
                .meta
                .state
                .load(Ordering::Relaxed);
            if l.chan_gen == id.gen && state == lane_state::ACTIVE {
                return Ok(());
            }
        }
        if self.lanes.len() <= slot {
            self.lanes.resize_with(slot + 1, || None);
        }
        let stale = self.lanes[slot].take();
        let seg = self.seg.clone();
        let shared = &*seg.shared;
        let g = match lock_as(&seg, self.lock_id(), self.lock_wait) {
            Ok(g) => g,
            Err(e) => {
                self.lanes[slot] = stale;
                return Err(e);
            }
        };
        if let Some(old) = stale {
            repair::free_own_lane(&g, old.lane, self.idx);
        }
        if !self.is_live(id) {
            return Err(Error::NoReceiver(format!("channel slot {}", id.slot)));
        }
        let c = shared.channel(id.slot as usize);
        let bit = Mask::load(&c.lane_mask, Ordering::Relaxed)
            .first_clear()
            .ok_or(Error::TableFull("producers-per-channel"))?;
        let lane = match find_free_lane(shared) {
            Some(l) => l,
            None => {
                // Our own lanes of channels that are gone are reusable.
                for s in 0..self.lanes.len() {
                    let gone = self.lanes[s].as_ref().is_some_and(|l| {
                        !self.is_live(ChannelId {
                            slot: s as u32,
                            gen: l.chan_gen,
                        })
                    });
                    if gone {
                        let l = self.lanes[s].take().expect("checked");
                        repair::free_own_lane(&g, l.lane, self.idx);
                    }
                }
                find_free_lane(shared).ok_or(Error::TableFull("lane"))?
            }
        };
        let ls = shared.lane_slot(lane as usize);
        shared.lane(lane as usize).reset();
        ls.meta.producer.store(self.idx + 1, Ordering::Relaxed);
        ls.meta.producer_gen.store(self.gen, Ordering::Relaxed);
        ls.meta.channel.store(id.slot + 1, Ordering::Relaxed);
        ls.meta.channel_gen.store(id.gen, Ordering::Relaxed);
        ls.meta.incarnation.fetch_add(1, Ordering::Relaxed);
        ls.meta.state.store(lane_state::ACTIVE, Ordering::Relaxed);
        c.lanes[bit as usize].store(lane + 1, Ordering::Relaxed);
        // Release: the lane index and the reset positions are visible to a
        // consumer that sees the bit (Acquire load of `lane_mask`).
        let (w, b) = mask::word_bit(bit);
        c.lane_mask[w].fetch_or(b, Ordering::Release);
        drop(g);
        self.lanes[slot] = Some(SendLane {
            chan_gen: id.gen,
            lane,
            bit,
            tail: 0,
            head: 0,
        });
        Ok(())
    }

    // ----- receiving ------------------------------------------------------

    /// Pops the next message of a resolved channel into `out` (tag first);
    /// returns its tag length, or `None` when the channel is empty (or another
    /// receiver is popping from it this instant).
    pub fn try_receive_id(&mut self, id: ChannelId, out: &mut Vec<u8>) -> Result<Option<usize>> {
        let mut tag_len = None;
        self.pop(id, 1, out, |_, t| tag_len = Some(t))?;
        Ok(tag_len)
    }

    /// Pops up to `max` messages of a resolved channel, calling `f(tag,
    /// payload)` for each; returns how many. One claim, one clock read and
    /// one look at each lane's tail per batch: the way to drain a busy inbox.
    pub fn try_receive_many(
        &mut self,
        id: ChannelId,
        max: usize,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut buf = std::mem::take(&mut self.buf);
        let n = self.pop(id, max, &mut buf, |b, t| f(&b[..t], &b[t..]));
        self.buf = buf;
        n
    }

    /// Claims the channel (normal channels) or checks ownership
    /// (process-specific ones), then pops up to `max` records through `buf`.
    /// Once per batch that took anything: advances the channel's progress
    /// counter and rings the producers waiting for room.
    fn pop(
        &mut self,
        id: ChannelId,
        max: usize,
        buf: &mut Vec<u8>,
        f: impl FnMut(&[u8], usize),
    ) -> Result<usize> {
        let shared = &*self.seg.shared;
        if !self.is_live(id) {
            return Err(Error::NoReceiver(format!("channel slot {}", id.slot)));
        }
        let c = shared.channel(id.slot as usize);
        let owner = c.owner.load(Ordering::Relaxed);
        let claimed = if owner == 0 {
            // Acquire: pairs with the Release store that ended the previous
            // claim, so the lane heads it stored are visible to us. A busy
            // claim means another receiver is popping this instant: report
            // nothing; `wait` sees the messages and does not sleep, so the
            // caller simply tries again.
            if c.consumer
                .claim
                .compare_exchange(0, self.idx + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return Ok(0);
            }
            true
        } else if owner != self.idx + 1 || c.owner_gen.load(Ordering::Relaxed) != self.gen {
            return Err(Error::InvalidName(format!(
                "channel slot {} is process-specific and belongs to another endpoint",
                id.slot
            )));
        } else {
            false
        };
        let slot = id.slot as usize;
        if self.views.len() <= slot {
            self.views.resize_with(slot + 1, || None);
        }
        let view = match &mut self.views[slot] {
            Some(v) if v.gen == id.gen => v,
            v => v.insert(Box::new(RecvView {
                gen: id.gen,
                lanes: [LaneView::default(); LANES_PER_CHANNEL],
            })),
        };
        let me = liveness::lock_id(self.idx, self.gen);
        let (popped, result) = pop_lanes(shared, me, c, view, &mut self.rr, max, buf, f);
        if popped.removed > 0 {
            // Relaxed, and a store rather than an increment: one consumer at
            // a time (the owner, or the claim holder, whose claim hand-over
            // orders this), and the heartbeat reading it needs no ordering.
            let taken = c.consumer.taken.load(Ordering::Relaxed);
            c.consumer
                .taken
                .store(taken.wrapping_add(popped.removed), Ordering::Relaxed);
        }
        if claimed {
            // Release: our head stores happen-before the next claimant's
            // Acquire CAS.
            c.consumer.claim.store(0, Ordering::Release);
        }
        if popped.removed > 0 {
            // After our head stores: one fence and a look at the waiters.
            let waiting = wake::notify_space(c);
            if !waiting.is_empty() {
                self.ring_bells(waiting);
            }
        }
        result.map(|()| popped.delivered)
    }
}

/// What one receive batch did.
#[derive(Default)]
struct Popped {
    /// Records handed to the caller.
    delivered: usize,
    /// Records taken out of the lanes: delivered, or dropped as expired.
    removed: u64,
}

/// Pops up to `max` unexpired records of `c`'s lanes through `buf`, calling
/// `f(buf, tag_len)` for each, starting at lane bit `*rr` (round robin, so one
/// busy producer cannot starve the others). `me` is the consumer's lock id,
/// for the housekeeping that needs the lock (only ever tried, never waited
/// for: left for a later call if the lock is busy).
#[allow(clippy::too_many_arguments)]
fn pop_lanes(
    shared: &Shared,
    me: u32,
    c: &ChannelSlot,
    view: &mut RecvView,
    rr: &mut u32,
    max: usize,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&[u8], usize),
) -> (Popped, Result<()>) {
    let mut popped = Popped::default();
    // Acquire: pairs with the Release `fetch_or` in `ensure_lane`.
    let mask = Mask::load(&c.lane_mask, Ordering::Acquire);
    if mask.is_empty() || max == 0 {
        return (popped, Ok(()));
    }
    let now = sys::monotonic_coarse_ms();
    for bit in mask.iter_from(*rr) {
        let Some(lane) = lane_at(shared, c, bit) else {
            continue;
        };
        let ls = shared.lane_slot(lane);
        let v = &mut view.lanes[bit as usize];
        let inc = ls.meta.incarnation.load(Ordering::Relaxed);
        if v.condemned && v.is_of(lane, inc) {
            // Reported once already; nothing more is read from it.
            if repair::retire_corrupt_lane(shared, me, c, bit, lane) {
                *v = LaneView::default();
            }
            continue;
        }
        // Relaxed: `head` is ours (or handed over through the claim's
        // Acquire); if it moved, another receiver popped, and our saved view
        // is stale.
        let head = ls.ctrl.head.load(Ordering::Relaxed);
        let mut cons = if v.is_of(lane, inc) && v.head == head {
            Consumer::resume(shared.lane(lane), v.head)
        } else {
            Consumer::new(shared.lane(lane))
        };
        let mut corrupt = None;
        while popped.delivered < max {
            match cons.take(buf) {
                Ok(Some(meta)) if meta.expires_ms != 0 && meta.expires_ms <= now => {
                    popped.removed += 1;
                }
                Ok(Some(meta)) => {
                    f(buf, meta.tag_len);
                    popped.delivered += 1;
                    popped.removed += 1;
                }
                Ok(None) => {
                    if ls.meta.state.load(Ordering::Acquire) == lane_state::ORPHANED {
                        // Hand the space back first: freeing checks the lane is
                        // empty. If the lock is busy, a later call frees it.
                        cons.release();
                        repair::free_drained_orphan(shared, me, c, bit, lane);
                    }
                    break;
                }
                Err(bad) => {
                    corrupt = Some(bad);
                    break;
                }
            }
        }
        // One hand-back of the space for everything taken from this lane.
        cons.release();
        *v = LaneView {
            lane: lane as u32 + 1,
            incarnation: inc,
            head: cons.position(),
            condemned: false,
        };
        if let Some(bad) = corrupt {
            // Where its next record starts is unknowable: no one reads this
            // lane again; its producer moves to a new one. Reported once: if
            // the lock is busy, the lane stays condemned until a later call
            // retires it.
            v.condemned = !repair::retire_corrupt_lane(shared, me, c, bit, lane);
            let err = Error::CorruptRecord(format!(
                "lane {lane}, producer endpoint {}: {} (lane retired)",
                ls.meta.producer.load(Ordering::Relaxed) as i64 - 1,
                bad.reason
            ));
            return (popped, Err(err));
        }
        if popped.delivered > 0 {
            // The next call starts after the last lane that gave us something.
            *rr = (bit + 1) % BITS;
        }
        if popped.delivered == max {
            break;
        }
    }
    (popped, Ok(()))
}

impl Endpoint {
    /// Receives from `channel` without blocking.
    pub fn try_receive(&mut self, channel: &str) -> Result<Option<Vec<u8>>> {
        let name = parse_channel(channel)?;
        let id = self.resolve(name.ring, Mode::Use)?;
        self.try_receive_named(id, channel, name.tag)
    }

    fn try_receive_named(
        &mut self,
        id: ChannelId,
        full: &str,
        tag: &str,
    ) -> Result<Option<Vec<u8>>> {
        let now = sys::monotonic_coarse_ms();
        if let Some(q) = self.stash.get_mut(full) {
            while let Some(m) = q.pop_front() {
                if m.expires_ms == 0 || m.expires_ms > now {
                    return Ok(Some(m.payload));
                }
            }
            self.stash.remove(full);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            match self.try_receive_id(id, &mut buf) {
                Ok(Some(tag_len)) if buf[..tag_len] == *tag.as_bytes() => {
                    break Ok(Some(buf[tag_len..].to_vec()))
                }
                Ok(Some(tag_len)) => {
                    // A message for another local name of the same ring.
                    let ring = &full[..full.len() - tag.len()];
                    let other = format!("{ring}{}", String::from_utf8_lossy(&buf[..tag_len]));
                    let expires_ms = match self.shared().message_expiry_ms {
                        0 => 0,
                        e => now.saturating_add(e),
                    };
                    self.stash.entry(other).or_default().push_back(Stashed {
                        expires_ms,
                        payload: buf[tag_len..].to_vec(),
                    });
                }
                Ok(None) => break Ok(None),
                Err(e) => break Err(e),
            }
        };
        self.buf = buf;
        result
    }

    /// Receives from `channel`, waiting up to `timeout` (`None`: forever).
    /// Returns `Ok(None)` on timeout.
    pub fn receive(&mut self, channel: &str, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        let name = parse_channel(channel)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let id = self.resolve(name.ring, Mode::Use)?;
            if let Some(m) = self.try_receive_named(id, channel, name.tag)? {
                return Ok(Some(m));
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(None),
                },
                None => None,
            };
            self.wait(id, remaining);
        }
    }

    /// Waits until channel `id` may have messages (spinning first if `spin`
    /// is set), or the timeout passes.
    pub fn wait(&mut self, id: ChannelId, timeout: Option<Duration>) {
        let shared = &*self.seg.shared;
        let c = shared.channel(id.slot as usize);
        let view = self.view(id);
        for _ in 0..self.spin {
            if has_messages(shared, c, view) {
                return;
            }
            std::hint::spin_loop();
        }
        handshake::sleep_unless(
            &c.wake.epoch,
            &c.wake.sleepers,
            || has_messages(shared, c, view) || !self.is_live(id),
            |e| sys::futex_wait(&c.wake.epoch, e, timeout),
        );
    }

    /// Our receiver's view of channel `id`, if we have one.
    fn view(&self, id: ChannelId) -> Option<&RecvView> {
        self.views
            .get(id.slot as usize)
            .and_then(|v| v.as_deref())
            .filter(|v| v.gen == id.gen)
    }

    // ----- file-descriptor wake-ups ---------------------------------------

    /// The read end of this endpoint's doorbell: becomes readable after
    /// [`Endpoint::arm`] when a message arrives. For event loops (asyncio's
    /// `add_reader`, an io_uring read).
    pub fn wait_fd(&mut self) -> Result<RawFd> {
        if self.bell.is_none() {
            let path = wake::bell_path(self.shared().path(), self.idx, self.gen);
            sys::unlink(&path);
            sys::mkfifo(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            let fd = sys::open_fifo(&path, true)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            self.shared()
                .endpoint(self.idx as usize)
                .has_bell
                .store(1, Ordering::Relaxed);
            self.bell = Some(fd);
        }
        Ok(self.bell.as_ref().expect("just set").as_raw_fd())
    }

    /// Asks to be woken through [`Endpoint::wait_fd`] when `channel` gets a
    /// message. Returns `true` if it already has one (then nothing is armed:
    /// receive instead of waiting).
    pub fn arm(&mut self, channel: &str) -> Result<bool> {
        self.wait_fd()?;
        let name = parse_channel(channel)?;
        if self.stash.get(channel).is_some_and(|q| !q.is_empty()) {
            return Ok(true);
        }
        let id = self.resolve(name.ring, Mode::Use)?;
        let shared = &*self.seg.shared;
        let c = shared.channel(id.slot as usize);
        let view = self.view(id);
        let (w, bit) = mask::word_bit(self.idx);
        // The fence in `arm` pairs with the producer's in `wake::notify`.
        Ok(handshake::arm(&c.wake.fd_waiters[w], bit, || {
            has_messages(shared, c, view)
        }))
    }

    /// Asks to be woken through [`Endpoint::wait_fd`] when the consumer of
    /// channel `id` hands back space (after [`SendError::Full`]). Returns
    /// `true` if the channel has room now (then nothing is armed: send
    /// again instead of waiting). Room means the channel is under its
    /// capacity and this endpoint's lane in it has space for a record of
    /// the segment's largest message.
    ///
    /// The consumer rings the doorbell once per receive batch that frees
    /// something, so a wake-up means room may be there, not that it is: send
    /// again, and arm again if it is still full. The doorbell is the one
    /// [`Endpoint::arm`] uses; after draining it, re-arm whatever else was
    /// armed (`arm` reports messages that arrived meanwhile).
    pub fn arm_space(&mut self, id: ChannelId) -> Result<bool> {
        self.wait_fd()?;
        if !self.is_live(id) {
            return Err(Error::NoReceiver(format!("channel slot {}", id.slot)));
        }
        let shared = &*self.seg.shared;
        let c = shared.channel(id.slot as usize);
        let lane = self
            .lanes
            .get_mut(id.slot as usize)
            .and_then(Option::as_mut);
        let (w, bit) = mask::word_bit(self.idx);
        // The fence in `arm` pairs with the consumer's in `wake::notify_space`.
        Ok(handshake::arm(&c.wake.space_waiters[w], bit, || {
            has_room(shared, c, id, lane)
        }))
    }

    /// Blocks until the consumer of channel `id` hands back space, or the
    /// timeout passes (`None`: no limit): [`Endpoint::arm_space`], then a
    /// `poll` on the doorbell. Returns `true` if the channel had room or
    /// the doorbell rang (send again), `false` at the timeout. For threads;
    /// an event loop arms and watches [`Endpoint::wait_fd`] itself.
    pub fn wait_space(&mut self, id: ChannelId, timeout: Option<Duration>) -> Result<bool> {
        if self.arm_space(id)? {
            return Ok(true);
        }
        let fd = self.wait_fd()?;
        let ms = timeout.map_or(-1, |t| {
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        let rung =
            sys::poll_readable(&[fd], ms).map_err(|e| Error::io("waiting on the doorbell", e))?[0];
        if rung {
            self.drain_bell();
        } else {
            // Nobody rang: withdraw, so a later batch rings no one for us.
            let (w, bit) = mask::word_bit(self.idx);
            self.shared().channel(id.slot as usize).wake.space_waiters[w]
                .fetch_and(!bit, Ordering::Relaxed);
        }
        Ok(rung)
    }

    /// How far channel `id`'s consumer has got: the records it has taken
    /// and those waiting. Lock-free, any endpoint may ask; `None` if the
    /// channel is gone. A supervisor that sees `taken` stand still while
    /// `queued` is not 0 knows the consumer has stopped taking messages.
    pub fn progress(&self, id: ChannelId) -> Option<Progress> {
        if !self.is_live(id) {
            return None;
        }
        let shared = self.shared();
        let c = shared.channel(id.slot as usize);
        Some(Progress {
            // Relaxed: a counter, read for its value only.
            taken: c.consumer.taken.load(Ordering::Relaxed),
            queued: queued_in(shared, c, None),
        })
    }

    /// Empties the doorbell after it became readable.
    pub fn drain_bell(&mut self) {
        if let Some(fd) = &self.bell {
            sys::drain(fd.as_raw_fd());
        }
    }

    // ----- groups ---------------------------------------------------------

    /// Adds `channel` to `group` (or refreshes its membership's expiry).
    pub fn group_add(&mut self, group: &str, channel: &str) -> Result<()> {
        names::check_group(group)?;
        parse_channel(channel)?;
        let shared = &*self.seg.shared;
        let g = self.lock()?;
        let now = sys::monotonic_ms();
        let expires = now.saturating_add(shared.group_expiry_ms);
        let hash = name_hash(group.as_bytes());
        let mut free = None;
        for i in 0..shared.geo.members as usize {
            let m = shared.member(i);
            if m.state.load(Ordering::Relaxed) == 0 {
                free.get_or_insert(i);
                continue;
            }
            if m.expires_ms.load(Ordering::Relaxed) <= now {
                m.state.store(0, Ordering::Relaxed);
                free.get_or_insert(i);
                continue;
            }
            if member_is(m, hash, group, channel) {
                m.expires_ms.store(expires, Ordering::Relaxed);
                return Ok(());
            }
        }
        let i = free.ok_or(Error::TableFull("group membership"))?;
        let m = shared.member(i);
        m.group_hash.store(hash, Ordering::Relaxed);
        m.group_len.store(group.len() as u32, Ordering::Relaxed);
        store_name(&m.group, group.as_bytes());
        m.channel_len.store(channel.len() as u32, Ordering::Relaxed);
        store_name(&m.channel, channel.as_bytes());
        m.expires_ms.store(expires, Ordering::Relaxed);
        // Last: a membership half-written by a process that dies here is
        // still free.
        m.state.store(1, Ordering::Release);
        drop(g);
        Ok(())
    }

    /// Removes `channel` from `group`; does nothing if it is not a member.
    pub fn group_discard(&mut self, group: &str, channel: &str) -> Result<()> {
        names::check_group(group)?;
        parse_channel(channel)?;
        let shared = &*self.seg.shared;
        let _g = self.lock()?;
        let hash = name_hash(group.as_bytes());
        for i in 0..shared.geo.members as usize {
            let m = shared.member(i);
            if m.state.load(Ordering::Relaxed) == 1 && member_is(m, hash, group, channel) {
                m.state.store(0, Ordering::Release);
            }
        }
        Ok(())
    }

    /// The current (unexpired) members of `group`.
    pub fn group_members(&mut self, group: &str) -> Result<Vec<String>> {
        names::check_group(group)?;
        let shared = &*self.seg.shared;
        let _g = self.lock()?;
        let now = sys::monotonic_ms();
        let hash = name_hash(group.as_bytes());
        let mut out = Vec::new();
        for i in 0..shared.geo.members as usize {
            let m = shared.member(i);
            if m.state.load(Ordering::Relaxed) == 1
                && m.expires_ms.load(Ordering::Relaxed) > now
                && m.group_hash.load(Ordering::Relaxed) == hash
                && name_eq(
                    &m.group,
                    m.group_len.load(Ordering::Relaxed),
                    group.as_bytes(),
                )
            {
                let name = load_name(&m.channel, m.channel_len.load(Ordering::Relaxed));
                out.push(String::from_utf8_lossy(&name).into_owned());
            }
        }
        Ok(out)
    }

    /// Sends `message` to every member of `group`. Members whose channel is
    /// full are skipped, as the spec says; the result counts them.
    pub fn group_send(&mut self, group: &str, message: &[u8]) -> Result<GroupSend> {
        let members = self.group_members(group)?;
        let mut report = GroupSend::default();
        // Wake each member's receiver once, after all the sends.
        let was_held = std::mem::replace(&mut self.held, true);
        for ch in &members {
            match self.send(ch, message) {
                Ok(()) => report.sent += 1,
                Err(SendError::Full) => report.full += 1,
                Err(SendError::Other(Error::NoReceiver(_))) => report.gone += 1,
                Err(SendError::Other(e)) => {
                    self.hold_wakeups(was_held);
                    return Err(e);
                }
            }
        }
        self.hold_wakeups(was_held);
        Ok(report)
    }

    /// Deletes every channel, message and group membership in the segment
    /// (the spec's `flush`, used between tests). Call it only while no other
    /// endpoint is sending or receiving.
    pub fn flush(&mut self) -> Result<()> {
        let seg = self.seg.clone();
        let shared = &*seg.shared;
        let g = lock_as(&seg, self.lock_id(), self.lock_wait)?;
        for i in 0..shared.geo.channels as usize {
            if shared.channel(i).state.load(Ordering::Relaxed) == channel_state::ACTIVE {
                repair::free_channel(&g, i as u32);
            }
        }
        for l in self.lanes.drain(..).flatten() {
            repair::free_own_lane(&g, l.lane, self.idx);
        }
        self.views.clear();
        for i in 0..shared.geo.members as usize {
            shared.member(i).state.store(0, Ordering::Relaxed);
        }
        self.names.clear();
        self.stash.clear();
        Ok(())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.flush_wakeups();
        let shared = &*self.seg.shared;
        // Always waits, whatever `set_lock_wait` says. If the lock cannot be
        // had, the endpoint stays attached until its process exits (then
        // the reaper releases it).
        let Ok(g) = repair::lock(shared, self.lock_id(), LockMode::Wait) else {
            return;
        };
        repair::release_endpoint(
            &g,
            self.idx,
            self.gen,
            &mut ReapReport::default(),
            Slot::Keep,
        );
        // Unlock before freeing the slot: a locker that found the lock held
        // by a freed slot would take it over.
        drop(g);
        shared.detach(self.idx, self.gen);
    }
}

/// The lane index listed at `bit` of a channel, if it is in range.
fn lane_at(shared: &Shared, c: &ChannelSlot, bit: u32) -> Option<usize> {
    debug_assert!((bit as usize) < LANES_PER_CHANNEL);
    let l = c.lanes[bit as usize].load(Ordering::Relaxed) as usize;
    (1..=shared.geo.lanes as usize).contains(&l).then(|| l - 1)
}

/// Takes the segment lock as lock id `me`, waiting for it or not.
fn lock_as(seg: &Segment, me: u32, wait: bool) -> Result<Locked<'_>> {
    let mode = if wait { LockMode::Wait } else { LockMode::Try };
    repair::lock(&seg.shared, me, mode)
}

/// Whether any lane of the channel holds a record, leaving out lanes the
/// receiver whose view this is has condemned (their corrupt record would
/// look like a message forever).
fn has_messages(shared: &Shared, c: &ChannelSlot, view: Option<&RecvView>) -> bool {
    // Acquire: pairs with the Release `fetch_or` in `ensure_lane`.
    Mask::load(&c.lane_mask, Ordering::Acquire)
        .iter()
        .filter_map(|bit| Some((bit, lane_at(shared, c, bit)?)))
        .filter(|&(bit, l)| !view.is_some_and(|v| v.condemned(shared, bit, l)))
        .any(|(_, l)| shared.lane(l).has_record())
}

/// Records queued in the channel's lanes, leaving out the lane at `skip`.
fn queued_in(shared: &Shared, c: &ChannelSlot, skip: Option<u32>) -> u64 {
    // Acquire: pairs with the Release `fetch_or` in `ensure_lane`.
    Mask::load(&c.lane_mask, Ordering::Acquire)
        .iter()
        .filter(|&bit| Some(bit) != skip)
        .filter_map(|bit| lane_at(shared, c, bit))
        .map(|l| shared.lane(l).queued() as u64)
        .sum()
}

/// Whether a producer with lane `lane` (its saved positions, if it has one)
/// could send a message of the largest size to channel `id` now: the channel
/// is under its capacity and the lane has room. A lane of an earlier use of
/// the slot, or one the receiver retired, does not count: the next send
/// takes a fresh one. Re-reads the lane's `head`.
fn has_room(shared: &Shared, c: &ChannelSlot, id: ChannelId, lane: Option<&mut SendLane>) -> bool {
    let cap = u64::from(c.capacity.load(Ordering::Relaxed));
    let lane = lane.filter(|sl| {
        sl.chan_gen == id.gen
            && shared
                .lane_slot(sl.lane as usize)
                .meta
                .state
                .load(Ordering::Relaxed)
                == lane_state::ACTIVE
    });
    let Some(sl) = lane else {
        return queued_in(shared, c, None) < cap;
    };
    let others = queued_in(shared, c, Some(sl.bit));
    let mut p = Producer::resume(shared.lane(sl.lane as usize), sl.tail, sl.head);
    // Acquire load of `head` inside: pairs with the consumer's Release store.
    let fits = p.has_room(ring::MAX_TAG, shared.geo.max_message as usize);
    let ours = p.len_upper_bound();
    (sl.tail, sl.head) = p.positions();
    fits && ours + others < cap
}

fn member_is(m: &crate::layout::MemberSlot, hash: u64, group: &str, channel: &str) -> bool {
    m.group_hash.load(Ordering::Relaxed) == hash
        && name_eq(
            &m.group,
            m.group_len.load(Ordering::Relaxed),
            group.as_bytes(),
        )
        && name_eq(
            &m.channel,
            m.channel_len.load(Ordering::Relaxed),
            channel.as_bytes(),
        )
}

fn find_free_lane(shared: &Shared) -> Option<u32> {
    (0..shared.geo.lanes).find(|&l| {
        shared
            .lane_slot(l as usize)
            .meta
            .state
            .load(Ordering::Relaxed)
            == lane_state::FREE
    })
}

/// Finds an active channel by ring name (under the lock).
fn find_channel(g: &Locked<'_>, ring: &[u8]) -> Option<ChannelId> {
    let shared = g.seg;
    let hash = name_hash(ring);
    (0..shared.geo.channels).find_map(|i| {
        let c = shared.channel(i as usize);
        (c.state.load(Ordering::Relaxed) == channel_state::ACTIVE
            && c.hash.load(Ordering::Relaxed) == hash
            && name_eq(&c.name, c.name_len.load(Ordering::Relaxed), ring))
        .then(|| ChannelId {
            slot: i,
            gen: c.generation.load(Ordering::Relaxed),
        })
    })
}

/// Creates a channel (under the lock).
fn create_channel(g: &Locked<'_>, ring: &[u8], owner: Option<(u32, u32)>) -> Result<ChannelId> {
    let shared = g.seg;
    let slot = (0..shared.geo.channels)
        .find(|&i| shared.channel(i as usize).state.load(Ordering::Relaxed) == channel_state::FREE)
        .ok_or(Error::TableFull("channel"))?;
    let c = shared.channel(slot as usize);
    c.name_len.store(ring.len() as u32, Ordering::Relaxed);
    store_name(&c.name, ring);
    c.hash.store(name_hash(ring), Ordering::Relaxed);
    c.capacity
        .store(shared.capacity_for(ring), Ordering::Relaxed);
    let (o, og) = owner.map_or((0, 0), |(i, g)| (i + 1, g));
    c.owner.store(o, Ordering::Relaxed);
    c.owner_gen.store(og, Ordering::Relaxed);
    for l in &c.lanes {
        l.store(0, Ordering::Relaxed);
    }
    for w in c
        .lane_mask
        .iter()
        .chain(&c.wake.fd_waiters)
        .chain(&c.wake.space_waiters)
    {
        w.store(0, Ordering::Relaxed);
    }
    // A consumer that died asleep left its count behind: every producer
    // would pay a futex wake per send for ever. No live consumer can still
    // be counted here: a channel is freed when its owner, its only
    // receiver, detaches (not asleep then) or is found dead, or by `flush`
    // (called while no one receives).
    c.wake.sleepers.store(0, Ordering::Relaxed);
    c.consumer.claim.store(0, Ordering::Relaxed);
    c.consumer.taken.store(0, Ordering::Relaxed);
    // Release, last: lock-free readers that see ACTIVE see the fields above
    // (pairs with the Acquire load in `Endpoint::is_live`).
    c.state.store(channel_state::ACTIVE, Ordering::Release);
    Ok(ChannelId {
        slot,
        gen: c.generation.load(Ordering::Relaxed),
    })
}
