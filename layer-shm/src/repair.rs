//! Table changes that release what an endpoint held, and the repair sweep
//! that puts the tables right after a process died in the middle of a
//! change.
//!
//! What a released (or dead) endpoint can hold, and what becomes of it:
//!
//! | held                                   | recovery                                   |
//! |----------------------------------------|--------------------------------------------|
//! | a half-written record in its lane      | invisible: its commit word was never stored |
//! | published records in its lanes         | lanes become ORPHANED; their consumer drains them, then frees them |
//! | its process-specific channels          | freed; other producers' lanes in them DETACHED |
//! | group memberships of those channels    | removed                                      |
//! | a consumer claim on a normal channel   | cleared, sleepers woken                      |
//! | the segment lock                       | taken over by the next locker, which runs [`repair`] |
//!
//! Everything here runs under the segment lock ([`Locked`]). Which
//! endpoints are dead is decided elsewhere: by the reaper from its pidfds
//! (`reaper.rs`), or by a locker that found the lock's owner dead (then
//! [`lock`] releases that one endpoint). [`repair`] itself judges liveness
//! only by the endpoint table (a slot FREE or of another generation), never
//! by a slot's pid.

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::layout::{
    channel_state, endpoint_state, lane_state, load_name, ChannelSlot, MAX_ENDPOINTS,
};
use crate::liveness;
use crate::mask::{self, Mask};
use crate::segment::{LockMode, Locked, Shared};
use crate::{names, sys, wake};

/// What a sweep reclaimed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapReport {
    /// Endpoints of dead processes released.
    pub endpoints: u32,
    /// Channels freed (process-specific channels of dead endpoints).
    pub channels: u32,
    /// Lanes of dead producers handed to their consumers to drain.
    pub orphaned_lanes: u32,
    /// Lanes returned to the pool.
    pub freed_lanes: u32,
    /// Consumer claims released.
    pub claims: u32,
    /// Group memberships removed.
    pub memberships: u32,
}

/// Takes the segment lock as `me` (a lock id). If its owner died holding
/// it, releases the dead owner's endpoint and repairs the tables first.
pub(crate) fn lock(shared: &Shared, me: u32, mode: LockMode) -> Result<Locked<'_>> {
    let (g, taken) = shared.lock_raw(me, mode)?;
    if taken.happened {
        let mut report = ReapReport::default();
        if let Some((idx, gen)) = taken.endpoint {
            if release_endpoint(&g, idx, gen, &mut report, Slot::Free) {
                report.endpoints += 1;
            }
        }
        repair(&g, &mut report);
    }
    Ok(g)
}

/// Whether endpoint `idx1 - 1` is attached at generation `gen`.
pub(crate) fn endpoint_live(shared: &Shared, idx1: u32, gen: u32) -> bool {
    if idx1 == 0 || idx1 as usize > MAX_ENDPOINTS {
        return false;
    }
    liveness::slot_live(shared.endpoint(idx1 as usize - 1), gen)
}

/// Repairs what a process that died during a table change may have left
/// half done, and what endpoints released since the last sweep left behind:
/// channels of owners that are gone, claims of claimants that are gone,
/// lanes whose producer is gone or that were never listed, expired
/// memberships. Idempotent.
pub(crate) fn repair(g: &Locked<'_>, report: &mut ReapReport) {
    let shared = g.seg;
    for s in 0..shared.geo.channels {
        let c = shared.channel(s as usize);
        if c.state.load(Ordering::Relaxed) != channel_state::ACTIVE {
            continue;
        }
        let owner = c.owner.load(Ordering::Relaxed);
        if owner != 0 && !endpoint_live(shared, owner, c.owner_gen.load(Ordering::Relaxed)) {
            free_channel(g, s);
            report.channels += 1;
            continue;
        }
        let claim = c.consumer.claim.load(Ordering::Relaxed);
        let claimant_gone = claim != 0
            && (claim as usize > MAX_ENDPOINTS
                || shared
                    .endpoint(claim as usize - 1)
                    .state
                    .load(Ordering::Relaxed)
                    != endpoint_state::ACTIVE);
        if claimant_gone {
            release_claim(c);
            report.claims += 1;
        }
    }
    // Lanes whose producer is gone, or that a dead lock holder half-allocated.
    for l in 0..shared.geo.lanes {
        let meta = &shared.lane_slot(l as usize).meta;
        let st = meta.state.load(Ordering::Relaxed);
        if st == lane_state::FREE || st == lane_state::ORPHANED {
            continue;
        }
        let producer_live = endpoint_live(
            shared,
            meta.producer.load(Ordering::Relaxed),
            meta.producer_gen.load(Ordering::Relaxed),
        );
        let listed = listed_at(shared, l).is_some();
        if !listed && (st == lane_state::ACTIVE || !producer_live) {
            free_lane(shared, l);
            report.freed_lanes += 1;
        } else if listed && !producer_live {
            // Release: pairs with the consumer's Acquire load of the state.
            meta.state.store(lane_state::ORPHANED, Ordering::Release);
            report.orphaned_lanes += 1;
        }
    }
    let now = sys::monotonic_ms();
    for i in 0..shared.geo.members as usize {
        let m = shared.member(i);
        if m.state.load(Ordering::Relaxed) == 1 && m.expires_ms.load(Ordering::Relaxed) <= now {
            m.state.store(0, Ordering::Relaxed);
            report.memberships += 1;
        }
    }
}

/// The channel bit a lane is listed at, if its channel is active and lists it.
fn listed_at(shared: &Shared, lane: u32) -> Option<(u32, u32)> {
    let meta = &shared.lane_slot(lane as usize).meta;
    let ch1 = meta.channel.load(Ordering::Relaxed);
    if ch1 == 0 || ch1 > shared.geo.channels {
        return None;
    }
    let c = shared.channel(ch1 as usize - 1);
    if c.state.load(Ordering::Relaxed) != channel_state::ACTIVE
        || c.generation.load(Ordering::Relaxed) != meta.channel_gen.load(Ordering::Relaxed)
    {
        return None;
    }
    Mask::load(&c.lane_mask, Ordering::Relaxed)
        .iter()
        .find(|&b| c.lanes[b as usize].load(Ordering::Relaxed) == lane + 1)
        .map(|b| (ch1 - 1, b))
}

fn free_lane(shared: &Shared, lane: u32) {
    let ls = shared.lane_slot(lane as usize);
    shared.lane(lane as usize).reset();
    ls.meta.producer.store(0, Ordering::Relaxed);
    ls.meta.channel.store(0, Ordering::Relaxed);
    // Relaxed: lanes are allocated under the lock, whose release and
    // acquisition order this store and the reset before the next use.
    ls.meta.state.store(lane_state::FREE, Ordering::Relaxed);
}

/// Takes lane bit `bit` out of a channel's list (under the lock).
fn unlist(c: &ChannelSlot, bit: u32) {
    let (w, b) = mask::word_bit(bit);
    c.lane_mask[w].fetch_and(!b, Ordering::Relaxed);
    c.lanes[bit as usize].store(0, Ordering::Relaxed);
}

fn release_claim(c: &ChannelSlot) {
    // Release: the dead claimant's head stores (all complete: it is dead)
    // happen-before the next claimant's Acquire CAS.
    c.consumer.claim.store(0, Ordering::Release);
    // Release: pairs with the sleeper's Acquire load of `epoch`.
    c.wake.epoch.fetch_add(1, Ordering::Release);
    sys::futex_wake_all(&c.wake.epoch);
}

/// What [`release_endpoint`] does with the endpoint's slot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Free it now: its process is dead.
    Free,
    /// Leave it: the endpoint itself frees it after unlocking
    /// (`Shared::detach`), since it may own the lock.
    Keep,
}

/// Releases endpoint `idx` (generation `gen`): on a clean detach and when its
/// process died. Returns false if it was not attached (any more).
pub(crate) fn release_endpoint(
    g: &Locked<'_>,
    idx: u32,
    gen: u32,
    report: &mut ReapReport,
    slot: Slot,
) -> bool {
    let shared = g.seg;
    let ep = shared.endpoint(idx as usize);
    if !liveness::slot_live(ep, gen) {
        return false;
    }
    let me = idx + 1;
    let (w, bit) = mask::word_bit(idx);
    // Channels it owns go away (their only consumer is gone).
    for s in 0..shared.geo.channels {
        let c = shared.channel(s as usize);
        if c.state.load(Ordering::Relaxed) == channel_state::ACTIVE
            && c.owner.load(Ordering::Relaxed) == me
            && c.owner_gen.load(Ordering::Relaxed) == gen
        {
            free_channel(g, s);
            report.channels += 1;
        }
        if c.consumer.claim.load(Ordering::Relaxed) == me {
            release_claim(c);
            report.claims += 1;
        }
        c.wake.fd_waiters[w].fetch_and(!bit, Ordering::Relaxed);
        c.wake.space_waiters[w].fetch_and(!bit, Ordering::Relaxed);
    }
    // Its lanes: still-listed ones are drained by their consumer first.
    for l in 0..shared.geo.lanes {
        let meta = &shared.lane_slot(l as usize).meta;
        if meta.producer.load(Ordering::Relaxed) != me
            || meta.producer_gen.load(Ordering::Relaxed) != gen
        {
            continue;
        }
        match meta.state.load(Ordering::Relaxed) {
            lane_state::FREE | lane_state::ORPHANED => {}
            _ if listed_at(shared, l).is_some() => {
                // Release: pairs with the consumer's Acquire load of the state.
                meta.state.store(lane_state::ORPHANED, Ordering::Release);
                report.orphaned_lanes += 1;
            }
            _ => {
                free_lane(shared, l);
                report.freed_lanes += 1;
            }
        }
    }
    sys::unlink(&wake::bell_path(shared.path(), idx, gen));
    if slot == Slot::Free {
        liveness::free(ep);
    }
    true
}

/// Frees channel `slot` (under the lock): its lanes are detached (their live
/// producers free them on their next send) or freed (dead producers), its
/// sleepers and the producers waiting for room in it woken, and
/// memberships of its process-specific names removed.
pub(crate) fn free_channel(g: &Locked<'_>, slot: u32) {
    let shared = g.seg;
    let c = shared.channel(slot as usize);
    for b in Mask::load(&c.lane_mask, Ordering::Relaxed).iter() {
        let l = c.lanes[b as usize].load(Ordering::Relaxed);
        if l != 0 && l <= shared.geo.lanes {
            let meta = &shared.lane_slot(l as usize - 1).meta;
            let live = endpoint_live(
                shared,
                meta.producer.load(Ordering::Relaxed),
                meta.producer_gen.load(Ordering::Relaxed),
            );
            if live && meta.state.load(Ordering::Relaxed) == lane_state::ACTIVE {
                // Relaxed: the producer reads the state as a hint and frees
                // the lane under the lock.
                meta.state.store(lane_state::DETACHED, Ordering::Relaxed);
            } else {
                free_lane(shared, l - 1);
            }
        }
        c.lanes[b as usize].store(0, Ordering::Relaxed);
    }
    for w in &c.lane_mask {
        w.store(0, Ordering::Relaxed);
    }
    let ring = load_name(&c.name, c.name_len.load(Ordering::Relaxed));
    if c.owner.load(Ordering::Relaxed) != 0 {
        for i in 0..shared.geo.members as usize {
            let m = shared.member(i);
            if m.state.load(Ordering::Relaxed) != 1 {
                continue;
            }
            let ch = load_name(&m.channel, m.channel_len.load(Ordering::Relaxed));
            let ch = String::from_utf8_lossy(&ch);
            if names::parse_channel(&ch).is_ok_and(|n| n.ring.as_bytes() == ring) {
                m.state.store(0, Ordering::Relaxed);
            }
        }
    }
    c.owner.store(0, Ordering::Relaxed);
    // Release (both): pair with the Acquire loads in `Endpoint::is_live`.
    c.generation.fetch_add(1, Ordering::Release);
    c.state.store(channel_state::FREE, Ordering::Release);
    // Release: pairs with the sleeper's Acquire load of `epoch`.
    c.wake.epoch.fetch_add(1, Ordering::Release);
    sys::futex_wake_all(&c.wake.epoch);
    // Producers waiting for room would wait for ever: wake them to find the
    // channel gone.
    let waiting = Mask(crate::handshake::take_armed(&c.wake.space_waiters));
    if !waiting.is_empty() {
        wake::Bells::default().ring_mask(shared.path(), waiting, |j| {
            shared
                .endpoint(j as usize)
                .generation
                .load(Ordering::Relaxed)
        });
    }
}

/// Frees one of our own lanes whose channel is gone.
pub(crate) fn free_own_lane(g: &Locked<'_>, lane: u32, idx: u32) {
    let meta = &g.seg.lane_slot(lane as usize).meta;
    if meta.producer.load(Ordering::Relaxed) == idx + 1
        && meta.state.load(Ordering::Relaxed) == lane_state::DETACHED
    {
        free_lane(g.seg, lane);
    }
}

/// Frees an ORPHANED lane its consumer found empty, if the lock is free
/// this instant (`me`: the consumer's lock id). Called by the consumer (the
/// claim holder or owner), so no one else is reading the lane. Returns
/// whether the lane is out of the channel (freed, or no longer there).
pub(crate) fn free_drained_orphan(
    shared: &Shared,
    me: u32,
    c: &ChannelSlot,
    bit: u32,
    lane: usize,
) -> bool {
    let Ok(_g) = lock(shared, me, LockMode::Quick) else {
        return false;
    };
    let ls = shared.lane_slot(lane);
    if c.lanes[bit as usize].load(Ordering::Relaxed) as usize != lane + 1 {
        return true;
    }
    if ls.meta.state.load(Ordering::Relaxed) != lane_state::ORPHANED
        || shared.lane(lane).has_record()
    {
        return false;
    }
    unlist(c, bit);
    free_lane(shared, lane as u32);
    true
}

/// Takes a lane its consumer found a corrupt record in out of its channel,
/// if the lock is free this instant (called by the consumer: the claim
/// holder or owner). A live producer notices the DETACHED state on its next
/// send, frees the lane and takes a new one; a dead producer's lane is freed
/// now. Returns whether the lane is out of the channel.
pub(crate) fn retire_corrupt_lane(
    shared: &Shared,
    me: u32,
    c: &ChannelSlot,
    bit: u32,
    lane: usize,
) -> bool {
    let Ok(_g) = lock(shared, me, LockMode::Quick) else {
        return false;
    };
    if c.lanes[bit as usize].load(Ordering::Relaxed) as usize != lane + 1 {
        return true;
    }
    unlist(c, bit);
    let meta = &shared.lane_slot(lane).meta;
    let live = endpoint_live(
        shared,
        meta.producer.load(Ordering::Relaxed),
        meta.producer_gen.load(Ordering::Relaxed),
    );
    if live && meta.state.load(Ordering::Relaxed) == lane_state::ACTIVE {
        // Relaxed: the producer reads the state as a hint and frees the lane
        // under the lock.
        meta.state.store(lane_state::DETACHED, Ordering::Relaxed);
    } else {
        free_lane(shared, lane as u32);
    }
    true
}
