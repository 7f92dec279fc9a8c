//! Who is alive: endpoint slots claimed and freed without the segment lock,
//! the lock ids that name an endpoint as the lock's owner, and the pidfd
//! watches the reaper decides deaths by.
//!
//! # Attaching without the lock
//!
//! A process claims a free slot with a CAS of its `claimer` word from 0 to
//! its pid, then writes `pid` and `start_time`, then stores `state = ACTIVE`
//! (`Release`). Freeing runs the other way: `generation += 1`, `state =
//! FREE`, then `claimer = 0` (`Release`), so the next claimer (`Acquire`
//! CAS) sees the new generation. A claimer that dies before publishing
//! leaves a FREE slot with a non-zero `claimer`; the reaper clears it once
//! that process is gone.
//!
//! # Lock ids
//!
//! The segment lock's word holds its owner's endpoint index + 1 in the low
//! [`IDX_BITS`] bits and the low [`GEN_BITS`] bits of the endpoint's
//! generation above them. A locker that finds the lock held checks that the
//! owner's slot is still ACTIVE with that generation and that its process
//! is alive; a slot freed (or freed and reused by another process) since the
//! owner locked has another generation, so a stale owner is recognised
//! unless its slot was reused 2^23 times meanwhile.
//!
//! # What the reaper trusts
//!
//! A slot's `pid` and `start_time` are in shared memory, where any worker can
//! scribble. The reaper reads them once, when it first sees an endpoint: it
//! opens a pidfd for the pid and *then* checks the process's start time
//! against the slot. In that order, a process that exits between the two is
//! caught either way (a pidfd of an exited process is readable at once) and
//! a pid reused by another process fails the start-time check. From then on
//! the endpoint is dead exactly when its pidfd is readable; the slot's
//! fields are not read again. Endpoints of the reaper's own process are
//! never released by it (their owners release them; scribbling their pid
//! field changes nothing).

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::layout::{endpoint_state, EndpointSlot, MAX_ENDPOINTS};
use crate::sys;

/// Bits of a lock id holding the endpoint index + 1 (1 ..= 256).
pub const IDX_BITS: u32 = 9;
/// Bits of a lock id holding the low bits of the endpoint's generation.
pub const GEN_BITS: u32 = 32 - IDX_BITS;
const IDX_MASK: u32 = (1 << IDX_BITS) - 1;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const _: () = assert!(MAX_ENDPOINTS < 1 << IDX_BITS);

/// The lock id of endpoint `idx` at generation `gen` (never 0).
pub fn lock_id(idx: u32, gen: u32) -> u32 {
    debug_assert!((idx as usize) < MAX_ENDPOINTS);
    (idx + 1) | (gen & GEN_MASK) << IDX_BITS
}

/// The endpoint index and generation bits a lock id names; `None` for a
/// value no endpoint has (0, or garbage a peer wrote).
pub fn decode_lock_id(id: u32) -> Option<(u32, u32)> {
    let idx1 = id & IDX_MASK;
    (1..=MAX_ENDPOINTS as u32)
        .contains(&idx1)
        .then(|| (idx1 - 1, id >> IDX_BITS))
}

/// Whether a generation matches the generation bits of a lock id.
pub fn gen_matches(gen: u32, bits: u32) -> bool {
    gen & GEN_MASK == bits
}

/// Whether endpoint slot `slot` is attached at generation `gen`.
pub fn slot_live(slot: &EndpointSlot, gen: u32) -> bool {
    // Acquire: pairs with the Release store of ACTIVE in `claim`, so the
    // generation and fields read after it are the attached endpoint's.
    slot.state.load(Ordering::Acquire) == endpoint_state::ACTIVE
        && slot.generation.load(Ordering::Relaxed) == gen
}

/// Claims a free slot of the table for this process and publishes it
/// ACTIVE; returns its index and generation, or `None` if every slot is
/// taken.
pub fn claim<'a>(
    table: impl Fn(usize) -> &'a EndpointSlot,
    pid: u32,
    start_time: u64,
) -> Option<(u32, u32)> {
    for i in 0..MAX_ENDPOINTS {
        let slot = table(i);
        if slot.claimer.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // Acquire: pairs with the Release store of 0 in `free`, so the
        // generation it bumped is the one we read.
        if slot
            .claimer
            .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let gen = slot.generation.load(Ordering::Relaxed);
        slot.pid.store(pid, Ordering::Relaxed);
        slot.start_time.store(start_time, Ordering::Relaxed);
        slot.has_bell.store(0, Ordering::Relaxed);
        // Release: the fields above are visible to whoever sees ACTIVE
        // (Acquire loads in `slot_live` and the reaper's `Watches::refresh`).
        slot.state.store(endpoint_state::ACTIVE, Ordering::Release);
        return Some((i as u32, gen));
    }
    None
}

/// Frees a slot whose endpoint has been released (its channels, lanes and
/// claims given up). Only the endpoint itself, or whoever established that
/// its process is dead, calls this.
pub fn free(slot: &EndpointSlot) {
    slot.has_bell.store(0, Ordering::Relaxed);
    slot.generation.fetch_add(1, Ordering::Relaxed);
    // Release: pairs with the Acquire load in `slot_live`: a reader that
    // sees FREE and then reads the generation sees it bumped.
    slot.state.store(endpoint_state::FREE, Ordering::Release);
    // Release, last: pairs with the Acquire CAS in `claim`.
    slot.claimer.store(0, Ordering::Release);
}

/// What the reaper knows of one endpoint.
enum Seen {
    /// Its process, verified at first sight; dead once the pidfd is readable.
    Process(Arc<OwnedFd>),
    /// Its process was gone (or was another one) at first sight.
    Dead,
    /// An endpoint of this process: never released by the reaper.
    Own,
}

/// The reaper's watches: a pidfd per attached endpoint of other processes
/// and per unpublished claim. Process-local (one per mapping).
#[derive(Default)]
pub struct Watches {
    endpoints: HashMap<(u32, u32), Seen>,
    /// Unpublished claims: (slot, claimer pid) -> the claimer's pidfd.
    claims: HashMap<(u32, u32), Arc<OwnedFd>>,
}

impl Watches {
    /// Looks at every slot: starts watching endpoints and claims seen for
    /// the first time, forgets those that are gone, clears claims whose
    /// claimer died before publishing. Returns the endpoints (index,
    /// generation) whose process is dead, for the caller to release under
    /// the lock.
    pub fn refresh<'a>(
        &mut self,
        table: impl Fn(usize) -> &'a EndpointSlot,
        own: &HashSet<(u32, u32)>,
    ) -> Vec<(u32, u32)> {
        let mut live = HashSet::new();
        let mut claims = HashSet::new();
        for i in 0..MAX_ENDPOINTS as u32 {
            let slot = table(i as usize);
            // Acquire: pairs with the Release store of ACTIVE in `claim`.
            let state = slot.state.load(Ordering::Acquire);
            let gen = slot.generation.load(Ordering::Relaxed);
            // Acquire: pairs with the Release store of 0 in `free`.
            let claimer = slot.claimer.load(Ordering::Acquire);
            if state == endpoint_state::ACTIVE {
                live.insert((i, gen));
                if self.endpoints.contains_key(&(i, gen)) {
                    continue;
                }
                let (pid, start) = (
                    slot.pid.load(Ordering::Relaxed),
                    slot.start_time.load(Ordering::Relaxed),
                );
                if slot.generation.load(Ordering::Relaxed) != gen {
                    // Released (and perhaps reused) while we read it: look
                    // again next time. (A release we miss here is harmless
                    // too: entries are keyed by generation, and releasing
                    // re-checks it under the lock.)
                    live.remove(&(i, gen));
                    continue;
                }
                let seen = if own.contains(&(i, gen)) {
                    Seen::Own
                } else {
                    // The pidfd first, then the start time: see the module
                    // documentation.
                    match sys::pidfd_open(pid) {
                        Ok(fd) if sys::process_start_time(pid) == Some(start) => {
                            Seen::Process(Arc::new(fd))
                        }
                        Ok(_) => Seen::Dead,
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Seen::Dead,
                        // Out of descriptors, say: try again next sweep.
                        Err(_) => {
                            live.remove(&(i, gen));
                            continue;
                        }
                    }
                };
                self.endpoints.insert((i, gen), seen);
            } else if state == endpoint_state::FREE && claimer != 0 {
                claims.insert((i, claimer));
                let exited = match self.claims.get(&(i, claimer)) {
                    Some(fd) => sys::pidfd_exited(fd),
                    None => match sys::pidfd_open(claimer) {
                        Ok(fd) => {
                            let exited = sys::pidfd_exited(&fd);
                            self.claims.insert((i, claimer), Arc::new(fd));
                            exited
                        }
                        Err(e) => e.raw_os_error() == Some(libc::ESRCH),
                    },
                };
                // Acquire (the state): as above.
                if exited
                    && slot.state.load(Ordering::Acquire) == endpoint_state::FREE
                    // Release: as in `free`; the claimer is dead, so only a
                    // new claimer can race us, and it needs 0 first.
                    && slot
                        .claimer
                        .compare_exchange(claimer, 0, Ordering::Release, Ordering::Relaxed)
                        .is_ok()
                {
                    claims.remove(&(i, claimer));
                }
            }
        }
        self.endpoints.retain(|k, _| live.contains(k));
        self.claims.retain(|k, _| claims.contains(k));
        self.endpoints
            .iter()
            .filter(|(_, seen)| match seen {
                Seen::Process(fd) => sys::pidfd_exited(fd),
                Seen::Dead => true,
                Seen::Own => false,
            })
            .map(|(&k, _)| k)
            .collect()
    }

    /// Forgets endpoints that were released.
    pub fn forget(&mut self, released: &[(u32, u32)]) {
        for k in released {
            self.endpoints.remove(k);
        }
    }

    /// The pidfds to sleep on: readable when a watched process exits.
    pub fn fds(&self) -> Vec<Arc<OwnedFd>> {
        self.endpoints
            .values()
            .filter_map(|s| match s {
                Seen::Process(fd) => Some(fd.clone()),
                _ => None,
            })
            .chain(self.claims.values().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_name_index_and_generation_and_are_never_zero() {
        for (idx, gen) in [(0, 0), (255, 0), (7, GEN_MASK), (3, GEN_MASK + 5)] {
            let id = lock_id(idx, gen);
            assert_ne!(id, 0);
            let (i, bits) = decode_lock_id(id).unwrap();
            assert_eq!(i, idx);
            assert!(gen_matches(gen, bits));
            assert!(!gen_matches(gen.wrapping_add(1), bits));
        }
        assert_eq!(decode_lock_id(0), None);
        assert_eq!(decode_lock_id(257), None);
        assert_eq!(decode_lock_id(511), None);
    }
}
