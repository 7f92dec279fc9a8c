//! Wake-ups: futex words for threads that block, doorbell FIFOs for event
//! loops that watch a file descriptor.
//!
//! A producer wakes nobody unless a consumer has said it sleeps: a futex wake
//! or a FIFO write costs microseconds, one per message would cap throughput.
//!
//! # The sleep/wake handshake (Dekker style)
//!
//! Consumer, before sleeping on channel `c`:
//! 1. `e = c.epoch` (`Acquire`)
//! 2. `c.sleepers += 1` (`SeqCst`), then `fence(SeqCst)`
//! 3. re-check every lane of `c`; if anything arrived, undo 2 and pop instead
//! 4. `futex_wait(c.epoch, e)`, which returns at once if `epoch != e`
//!
//! Producer, after publishing a record (a `Release` store of a lane's tail):
//! 1. `fence(SeqCst)`
//! 2. if `c.sleepers != 0`: `c.epoch += 1`, `futex_wake(c.epoch)`
//!
//! The two fences order each side's store before its load, so at least one
//! side sees the other: either the consumer's re-check sees the record, or the
//! producer sees the sleeper and bumps `epoch` (after the consumer read it in
//! step 1), so the consumer's wait either returns at once or is woken.
//!
//! Doorbells follow the same handshake with `fd_waiters` (one bit per
//! endpoint) in place of `sleepers`; the producer clears the bits it saw and
//! writes a byte to each of those endpoints' FIFOs. A FIFO (not an eventfd) so
//! that any process can reach it by path without passing descriptors around.
//!
//! # Waiting for room
//!
//! The same handshake runs the other way for a producer that found a channel
//! full (`Endpoint::arm_space`): it sets its bit in `space_waiters`, issues a
//! `SeqCst` fence and re-checks the room (the channel's count and its own
//! lane's space); the consumer, after its `head` stores at the end of a
//! receive batch, issues a `SeqCst` fence and loads `space_waiters`, and
//! rings the doorbells of the bits it takes. Either the producer's re-check
//! sees the space or the consumer sees the bit. The consumer pays one fence
//! and one look at the waiter words per batch, nothing per message.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::layout::ChannelSlot;
use crate::mask::Mask;
use crate::{handshake, sys};

/// Path of an endpoint's doorbell FIFO.
pub(crate) fn bell_path(segment: &Path, idx: u32, gen: u32) -> PathBuf {
    let mut p = segment.as_os_str().to_owned();
    p.push(format!(".bell.{idx}.{gen}"));
    PathBuf::from(p)
}

/// Path of the reaper's doorbell.
pub(crate) fn reaper_bell_path(segment: &Path) -> PathBuf {
    let mut p = segment.as_os_str().to_owned();
    p.push(".reaper");
    PathBuf::from(p)
}

/// Removes every doorbell of a segment (its owner calls this on exit).
pub(crate) fn remove_bells(segment: &Path) {
    let (Some(dir), Some(name)) = (segment.parent(), segment.file_name()) else {
        return;
    };
    let mut prefix = name.to_owned();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                sys::unlink(&e.path());
            }
        }
    }
}

/// Write ends of other endpoints' doorbells, opened on first use.
#[derive(Default)]
pub(crate) struct Bells {
    open: HashMap<u32, (u32, OwnedFd)>,
}

impl Bells {
    /// Rings endpoint `idx` (generation `gen`). A missing FIFO (the endpoint is
    /// gone, or never made one) is not an error: there is no one to wake.
    pub(crate) fn ring(&mut self, segment: &Path, idx: u32, gen: u32) {
        if let Some((g, fd)) = self.open.get(&idx) {
            if *g == gen && sys::ring_bell(fd.as_raw_fd()).is_ok() {
                return;
            }
        }
        self.open.remove(&idx);
        if let Ok(fd) = sys::open_fifo(&bell_path(segment, idx, gen), false) {
            let _ = sys::ring_bell(fd.as_raw_fd());
            self.open.insert(idx, (gen, fd));
        }
    }

    /// Rings every endpoint in `mask`; `gen_of(idx)` is its generation now.
    pub(crate) fn ring_mask(&mut self, segment: &Path, mask: Mask, gen_of: impl Fn(u32) -> u32) {
        for j in mask.iter() {
            self.ring(segment, j, gen_of(j));
        }
    }
}

/// The producer's half of the handshake, after publishing to `ch`. Returns the
/// endpoints whose doorbells must be rung.
#[inline]
pub(crate) fn notify(ch: &ChannelSlot) -> Mask {
    // Includes the SeqCst fence that also orders the `fd_waiters` loads
    // below after our publishing store; pairs with the fence in
    // `handshake::arm` (called by `Endpoint::arm`).
    handshake::wake_sleepers(&ch.wake.epoch, &ch.wake.sleepers, || {
        sys::futex_wake_all(&ch.wake.epoch)
    });
    // Take the bits we saw, so each arming costs at most one doorbell write.
    Mask(handshake::take_armed_fenced(&ch.wake.fd_waiters))
}

/// The consumer's half of the room handshake, after handing space back to
/// the producers of `ch` (its `head` stores): one `SeqCst` fence and a look
/// at the space-waiter words, once per receive batch. Returns the producers
/// whose doorbells must be rung.
#[inline]
pub(crate) fn notify_space(ch: &ChannelSlot) -> Mask {
    // Pairs with the fence in `handshake::arm` (called by
    // `Endpoint::arm_space`).
    Mask(handshake::take_armed(&ch.wake.space_waiters))
}
