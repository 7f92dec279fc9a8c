//! Endpoints: one thread's attachment to a segment, and the channel-layer API.
//!
//! An [`Endpoint`] is a producer identity (its lanes are single-producer, so
//! an endpoint is `Send` but not `Sync`: one thread uses it at a time) and a
//! consumer identity (it owns the process-specific channels it creates with
//! [`Endpoint::new_channel`]). The semantics are those of the Channels
//! channel-layer spec; messages are opaque bytes at this level.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, SendError};
use crate::layout::{
    channel_state, endpoint_state, lane_state, load_name, name_eq, name_hash, store_name,
    ChannelSlot, LANES_PER_CHANNEL, MAX_ENDPOINTS,
};
use crate::names::{self, parse_channel};
use crate::ring::{Consumer, Producer, PushError};
use crate::segment::{Locked, Segment, Shared};
use crate::wake::{self, Bells};
use crate::{handshake, reaper, sys};

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
}

/// A receiver's saved views of a channel's lanes, by lane bit.
struct RecvView {
    /// The channel generation the views belong to.
    gen: u32,
    lanes: [LaneView; LANES_PER_CHANNEL],
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
}

impl Segment {
    /// Attaches a new endpoint (for this thread) to the segment.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let shared = &self.shared;
        let pid = std::process::id();
        let start = sys::process_start_time(pid)
            .ok_or_else(|| Error::io("reading /proc/self/stat", std::io::Error::last_os_error()))?;
        let (idx, gen) = {
            let _g = shared.lock()?;
            let free = (0..MAX_ENDPOINTS)
                .find(|&i| shared.endpoint(i).state.load(Ordering::Relaxed) == endpoint_state::FREE)
                .ok_or(Error::TableFull("endpoint"))?;
            let slot = shared.endpoint(free);
            slot.pid.store(pid, Ordering::Relaxed);
            slot.start_time.store(start, Ordering::Relaxed);
            slot.has_bell.store(0, Ordering::Relaxed);
            // Release: the fields above are visible to lock-free readers that
            // see ACTIVE (the reaper reads them under the lock anyway).
            slot.state.store(endpoint_state::ACTIVE, Ordering::Release);
            (free as u32, slot.generation.load(Ordering::Relaxed))
        };
        shared.header().attach_epoch.fetch_add(1, Ordering::Relaxed);
        // Tell a running reaper to watch the new process.
        if let Ok(fd) = sys::open_fifo(&wake::reaper_bell_path(shared.path()), false) {
            let _ = sys::ring_bell(fd.as_raw_fd());
        }
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
            let g = self.shared().lock()?;
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
            let g = self.shared().lock()?;
            let mut found = find_channel(&g, ring.as_bytes());
            if found.is_some() {
                reaper::sweep(&g, &mut reaper::ReapReport::default());
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
    /// returns [`SendError::Full`] and queues nothing.
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
        let others_mask = c.lane_mask.load(Ordering::Acquire) & !(1u64 << sl.bit);
        let others: u64 = lanes_in(others_mask)
            .filter_map(|bit| lane_at(shared, c, bit))
            .map(|l| shared.lane(l).queued() as u64)
            .sum();
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
                if ring != 0 {
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
            if ring != 0 {
                self.ring_bells(ring);
            }
        }
    }

    fn ring_bells(&mut self, mut mask: u64) {
        let shared = &*self.seg.shared;
        while mask != 0 {
            let j = mask.trailing_zeros();
            mask &= mask - 1;
            let gen = shared
                .endpoint(j as usize)
                .generation
                .load(Ordering::Relaxed);
            self.bells.ring(shared.path(), j, gen);
        }
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
        let shared = &*self.seg.shared;
        let g = shared.lock()?;
        if let Some(old) = stale {
            reaper::free_own_lane(&g, old.lane, self.idx);
        }
        if !self.is_live(id) {
            return Err(Error::NoReceiver(format!("channel slot {}", id.slot)));
        }
        let c = shared.channel(id.slot as usize);
        let used = c.lane_mask.load(Ordering::Relaxed);
        if used == u64::MAX {
            return Err(Error::TableFull("producers-per-channel"));
        }
        let bit = (!used).trailing_zeros();
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
                        reaper::free_own_lane(&g, l.lane, self.idx);
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
        c.lane_mask.fetch_or(1 << bit, Ordering::Release);
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
            if c.claim
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
        let popped = pop_lanes(shared, c, view, &mut self.rr, max, buf, f);
        if claimed {
            // Release: our head stores happen-before the next claimant's
            // Acquire CAS.
            c.claim.store(0, Ordering::Release);
        }
        popped
    }
}

/// Pops up to `max` unexpired records of `c`'s lanes through `buf`, calling
/// `f(buf, tag_len)` for each, starting at lane bit `*rr` (round robin, so one
/// busy producer cannot starve the others).
fn pop_lanes(
    shared: &Shared,
    c: &ChannelSlot,
    view: &mut RecvView,
    rr: &mut u32,
    max: usize,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&[u8], usize),
) -> Result<usize> {
    // Acquire: pairs with the Release `fetch_or` in `ensure_lane`.
    let mask = c.lane_mask.load(Ordering::Acquire);
    if mask == 0 || max == 0 {
        return Ok(0);
    }
    let now = sys::monotonic_coarse_ms();
    let mut got = 0;
    let start = *rr;
    for k in lanes_in(mask.rotate_right(start)) {
        let bit = (k + start) % 64;
        let Some(lane) = lane_at(shared, c, bit) else {
            continue;
        };
        let ls = shared.lane_slot(lane);
        let v = &mut view.lanes[bit as usize];
        let inc = ls.meta.incarnation.load(Ordering::Relaxed);
        // Relaxed: `head` is ours (or handed over through the claim's
        // Acquire); if it moved, another receiver popped, and our saved view
        // is stale.
        let head = ls.ctrl.head.load(Ordering::Relaxed);
        let mut cons = if v.lane == lane as u32 + 1 && v.incarnation == inc && v.head == head {
            Consumer::resume(shared.lane(lane), v.head)
        } else {
            Consumer::new(shared.lane(lane))
        };
        let mut result = Ok(());
        while got < max {
            match cons.take(buf) {
                Ok(Some(meta)) if meta.expires_ms != 0 && meta.expires_ms <= now => {}
                Ok(Some(meta)) => {
                    f(buf, meta.tag_len);
                    got += 1;
                }
                Ok(None) => {
                    if ls.meta.state.load(Ordering::Acquire) == lane_state::ORPHANED {
                        // Hand the space back first: freeing checks the lane is empty.
                        cons.release();
                        reaper::free_drained_orphan(shared, c, bit, lane);
                    }
                    break;
                }
                Err(bad) => {
                    result = Err(Error::CorruptRecord(format!(
                        "lane {lane}, producer endpoint {}: {} (lane retired)",
                        ls.meta.producer.load(Ordering::Relaxed) as i64 - 1,
                        bad.reason
                    )));
                    // Where its next record starts is unknowable: no one
                    // reads this lane again; its producer moves to a new one.
                    reaper::retire_corrupt_lane(shared, c, bit, lane);
                    break;
                }
            }
        }
        // One hand-back of the space for everything taken from this lane.
        cons.release();
        v.head = cons.position();
        (v.lane, v.incarnation) = (lane as u32 + 1, inc);
        result?;
        if got > 0 {
            // The next call starts after the last lane that gave us something.
            *rr = (bit + 1) % 64;
        }
        if got == max {
            break;
        }
    }
    Ok(got)
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
        for _ in 0..self.spin {
            if has_messages(shared, c) {
                return;
            }
            std::hint::spin_loop();
        }
        handshake::sleep_unless(
            &c.wake.epoch,
            &c.wake.sleepers,
            || has_messages(shared, c) || !self.is_live(id),
            |e| sys::futex_wait(&c.wake.epoch, e, timeout),
        );
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
        let bit = 1u64 << self.idx;
        c.wake.fd_waiters.fetch_or(bit, Ordering::SeqCst);
        // SeqCst fence: pairs with the producer's fence in `wake::notify`.
        fence(Ordering::SeqCst);
        if has_messages(shared, c) {
            c.wake.fd_waiters.fetch_and(!bit, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
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
        let g = shared.lock()?;
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
        let _g = shared.lock()?;
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
        let _g = shared.lock()?;
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
        let shared = &*self.seg.shared;
        let g = shared.lock()?;
        for i in 0..shared.geo.channels as usize {
            if shared.channel(i).state.load(Ordering::Relaxed) == channel_state::ACTIVE {
                reaper::free_channel(&g, i as u32);
            }
        }
        for l in self.lanes.drain(..).flatten() {
            reaper::free_own_lane(&g, l.lane, self.idx);
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
        if let Ok(g) = shared.lock() {
            reaper::release_endpoint(&g, self.idx, self.gen, &mut reaper::ReapReport::default());
        }
    }
}

/// Bits set in `mask`, lowest first.
fn lanes_in(mut mask: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let b = mask.trailing_zeros();
        mask &= mask - 1;
        Some(b)
    })
}

/// The lane index listed at `bit` of a channel, if it is in range.
fn lane_at(shared: &Shared, c: &ChannelSlot, bit: u32) -> Option<usize> {
    debug_assert!((bit as usize) < LANES_PER_CHANNEL);
    let l = c.lanes[bit as usize].load(Ordering::Relaxed) as usize;
    (1..=shared.geo.lanes as usize).contains(&l).then(|| l - 1)
}

/// Whether any lane of the channel holds a record.
fn has_messages(shared: &Shared, c: &ChannelSlot) -> bool {
    lanes_in(c.lane_mask.load(Ordering::Acquire))
        .filter_map(|bit| lane_at(shared, c, bit))
        .any(|l| shared.lane(l).has_record())
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
    c.lane_mask.store(0, Ordering::Relaxed);
    c.claim.store(0, Ordering::Relaxed);
    c.wake.fd_waiters.store(0, Ordering::Relaxed);
    // Release, last: lock-free readers that see ACTIVE see the fields above
    // (pairs with the Acquire load in `Endpoint::is_live`).
    c.state.store(channel_state::ACTIVE, Ordering::Release);
    Ok(ChannelId {
        slot,
        gen: c.generation.load(Ordering::Relaxed),
    })
}
