//! Crash recovery: finding endpoints whose process died and reclaiming what
//! they held, so no one else is wedged.
//!
//! What a dead endpoint can hold, and what becomes of it:
//!
//! | held                                   | recovery                                   |
//! |----------------------------------------|--------------------------------------------|
//! | a half-written record in its lane      | invisible: its commit word was never stored |
//! | published records in its lanes         | lanes become ORPHANED; their consumer drains them, then frees them |
//! | its process-specific channels          | freed; other producers' lanes in them DETACHED |
//! | group memberships of those channels    | removed                                      |
//! | a consumer claim on a normal channel   | cleared, sleepers woken                      |
//! | the segment lock                       | the kernel hands it on (robust mutex); the next holder runs [`sweep`] |
//!
//! The owner (the server) runs a [`Reaper`] thread that sleeps in `poll(2)` on
//! a pidfd per attached process and on its own doorbell (rung when an endpoint
//! attaches), and sweeps when any of them fires: no timers, no polling.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::layout::{
    channel_state, endpoint_state, lane_state, load_name, ChannelSlot, MAX_ENDPOINTS,
};
use crate::segment::{Locked, Segment, Shared};
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

impl Segment {
    /// Finds endpoints whose process has died and reclaims what they held.
    pub fn reap(&self) -> Result<ReapReport> {
        let g = self.shared.lock()?;
        let mut report = ReapReport::default();
        sweep(&g, &mut report);
        Ok(report)
    }
}

fn endpoint_live(shared: &Shared, idx1: u32, gen: u32) -> bool {
    if idx1 == 0 || idx1 as usize > MAX_ENDPOINTS {
        return false;
    }
    let ep = shared.endpoint(idx1 as usize - 1);
    ep.state.load(Ordering::Relaxed) == endpoint_state::ACTIVE
        && ep.generation.load(Ordering::Relaxed) == gen
}

/// Releases dead endpoints and repairs anything a dead process left half-done
/// (also run when the lock's previous holder died holding it).
pub(crate) fn sweep(g: &Locked<'_>, report: &mut ReapReport) {
    let shared = g.seg;
    for i in 0..MAX_ENDPOINTS {
        let ep = shared.endpoint(i);
        if ep.state.load(Ordering::Relaxed) == endpoint_state::ACTIVE
            && !sys::process_alive(
                ep.pid.load(Ordering::Relaxed),
                ep.start_time.load(Ordering::Relaxed),
            )
        {
            release_endpoint(g, i as u32, ep.generation.load(Ordering::Relaxed), report);
            report.endpoints += 1;
        }
    }
    // Channels owned by endpoints that are gone.
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
        let claim = c.claim.load(Ordering::Relaxed);
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
            meta.state.store(lane_state::ORPHANED, Ordering::Release);
            report.orphaned_lanes += 1;
        }
    }
    // Expired group memberships.
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
    let mask = c.lane_mask.load(Ordering::Relaxed);
    (0..64u32)
        .find(|&b| mask & (1 << b) != 0 && c.lanes[b as usize].load(Ordering::Relaxed) == lane + 1)
        .map(|b| (ch1 - 1, b))
}

fn free_lane(shared: &Shared, lane: u32) {
    let ls = shared.lane_slot(lane as usize);
    shared.lane(lane as usize).reset();
    ls.meta.producer.store(0, Ordering::Relaxed);
    ls.meta.channel.store(0, Ordering::Relaxed);
    ls.meta.state.store(lane_state::FREE, Ordering::Release);
}

fn release_claim(c: &ChannelSlot) {
    // Release: the dead claimant's head stores (all complete: it is dead)
    // happen-before the next claimant's Acquire CAS.
    c.claim.store(0, Ordering::Release);
    c.wake.epoch.fetch_add(1, Ordering::Release);
    sys::futex_wake_all(&c.wake.epoch);
}

/// Releases endpoint `idx` (generation `gen`): on a clean detach and when its
/// process died.
pub(crate) fn release_endpoint(g: &Locked<'_>, idx: u32, gen: u32, report: &mut ReapReport) {
    let shared = g.seg;
    let ep = shared.endpoint(idx as usize);
    if ep.state.load(Ordering::Relaxed) != endpoint_state::ACTIVE
        || ep.generation.load(Ordering::Relaxed) != gen
    {
        return;
    }
    let me = idx + 1;
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
        if c.claim.load(Ordering::Relaxed) == me {
            release_claim(c);
            report.claims += 1;
        }
        c.wake
            .fd_waiters
            .fetch_and(!(1u64 << idx), Ordering::Relaxed);
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
    ep.has_bell.store(0, Ordering::Relaxed);
    ep.generation.fetch_add(1, Ordering::Relaxed);
    ep.state.store(endpoint_state::FREE, Ordering::Release);
}

/// Frees channel `slot` (under the lock): its lanes are detached (their live
/// producers free them on their next send) or freed (dead producers), its
/// sleepers woken, and memberships of its process-specific names removed.
pub(crate) fn free_channel(g: &Locked<'_>, slot: u32) {
    let shared = g.seg;
    let c = shared.channel(slot as usize);
    let mask = c.lane_mask.load(Ordering::Relaxed);
    for b in 0..64u32 {
        if mask & (1 << b) == 0 {
            continue;
        }
        let l = c.lanes[b as usize].load(Ordering::Relaxed);
        if l == 0 || l > shared.geo.lanes {
            continue;
        }
        let meta = &shared.lane_slot(l as usize - 1).meta;
        let live = endpoint_live(
            shared,
            meta.producer.load(Ordering::Relaxed),
            meta.producer_gen.load(Ordering::Relaxed),
        );
        if live && meta.state.load(Ordering::Relaxed) == lane_state::ACTIVE {
            meta.state.store(lane_state::DETACHED, Ordering::Release);
        } else {
            free_lane(shared, l - 1);
        }
        c.lanes[b as usize].store(0, Ordering::Relaxed);
    }
    c.lane_mask.store(0, Ordering::Relaxed);
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
    c.generation.fetch_add(1, Ordering::Release);
    c.state.store(channel_state::FREE, Ordering::Release);
    c.wake.epoch.fetch_add(1, Ordering::Release);
    sys::futex_wake_all(&c.wake.epoch);
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

/// Frees an ORPHANED lane its consumer found empty. Called by the consumer
/// (the claim holder or owner), so no one else is reading the lane.
pub(crate) fn free_drained_orphan(shared: &Shared, c: &ChannelSlot, bit: u32, lane: usize) {
    let Ok(_g) = shared.lock() else { return };
    let ls = shared.lane_slot(lane);
    if ls.meta.state.load(Ordering::Relaxed) != lane_state::ORPHANED
        || c.lanes[bit as usize].load(Ordering::Relaxed) as usize != lane + 1
        || shared.lane(lane).has_record()
    {
        return;
    }
    c.lane_mask.fetch_and(!(1u64 << bit), Ordering::Relaxed);
    c.lanes[bit as usize].store(0, Ordering::Relaxed);
    free_lane(shared, lane as u32);
}

/// Takes a lane its consumer found a corrupt record in out of its channel
/// (called by the consumer: the claim holder or owner). A live producer
/// notices the DETACHED state on its next send, frees the lane and takes a
/// new one; a dead producer's lane is freed now.
pub(crate) fn retire_corrupt_lane(shared: &Shared, c: &ChannelSlot, bit: u32, lane: usize) {
    let Ok(_g) = shared.lock() else { return };
    if c.lanes[bit as usize].load(Ordering::Relaxed) as usize != lane + 1 {
        return;
    }
    c.lane_mask.fetch_and(!(1u64 << bit), Ordering::Relaxed);
    c.lanes[bit as usize].store(0, Ordering::Relaxed);
    let meta = &shared.lane_slot(lane).meta;
    let live = endpoint_live(
        shared,
        meta.producer.load(Ordering::Relaxed),
        meta.producer_gen.load(Ordering::Relaxed),
    );
    if live && meta.state.load(Ordering::Relaxed) == lane_state::ACTIVE {
        meta.state.store(lane_state::DETACHED, Ordering::Release);
    } else {
        free_lane(shared, lane as u32);
    }
}

/// A thread that reaps dead endpoints as soon as their process exits.
pub struct Reaper {
    stop: Arc<AtomicBool>,
    bell: std::path::PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts reaping `segment`. Reports of each sweep that reclaimed
    /// something go to `on_reap` (for the server's log).
    pub fn spawn(
        segment: Segment,
        mut on_reap: impl FnMut(Result<ReapReport>) + Send + 'static,
    ) -> Result<Reaper> {
        let bell = wake::reaper_bell_path(segment.path());
        sys::unlink(&bell);
        sys::mkfifo(&bell).map_err(|e| Error::io(format!("creating {}", bell.display()), e))?;
        let bell_fd = sys::open_fifo(&bell, true)
            .map_err(|e| Error::io(format!("opening {}", bell.display()), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringway-reaper".into())
            .spawn(move || {
                let mut watched: HashMap<(u32, u32), OwnedFd> = HashMap::new();
                while !stop2.load(Ordering::Acquire) {
                    match segment.reap() {
                        Ok(r) if r == ReapReport::default() => {}
                        other => on_reap(other),
                    }
                    // Watch every attached process (one pidfd each).
                    let shared = &segment.shared;
                    watched.retain(|&(i, g), _| endpoint_live(shared, i + 1, g));
                    for i in 0..MAX_ENDPOINTS as u32 {
                        let ep = shared.endpoint(i as usize);
                        let gen = ep.generation.load(Ordering::Relaxed);
                        if ep.state.load(Ordering::Acquire) == endpoint_state::ACTIVE
                            && !watched.contains_key(&(i, gen))
                        {
                            if let Ok(fd) = sys::pidfd_open(ep.pid.load(Ordering::Relaxed)) {
                                watched.insert((i, gen), fd);
                            }
                        }
                    }
                    let mut fds = vec![bell_fd.as_raw_fd()];
                    fds.extend(watched.values().map(|f| f.as_raw_fd()));
                    let _ = sys::poll_readable(&fds, -1);
                    sys::drain(bell_fd.as_raw_fd());
                }
            })
            .map_err(|e| Error::io("starting the reaper thread", e))?;
        Ok(Reaper {
            stop,
            bell,
            thread: Some(thread),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Ok(fd) = sys::open_fifo(&self.bell, false) {
            let _ = sys::ring_bell(fd.as_raw_fd());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sys::unlink(&self.bell);
    }
}
