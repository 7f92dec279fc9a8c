//! The sleep/wake handshake, written once over the `sync` shim so that the
//! loom models check the same code the layer runs.
//!
//! A consumer that found a channel empty announces itself in `sleepers`, then
//! re-checks; a producer that published a record checks `sleepers` and, if
//! anyone is there, bumps `epoch` and wakes them. The `SeqCst` fences on both
//! sides order each side's store before its load, so at least one side sees
//! the other: either the consumer's re-check finds the record, or the producer
//! finds the sleeper (and bumps `epoch` after the consumer read it, so the
//! consumer's wait returns at once or is woken). `wake.rs` has the long form.
//!
//! Doorbells use the same shape with a bitmask of waiting endpoints in place
//! of `sleepers` ([`arm`], [`take_armed`]), in both directions: a consumer
//! arms a channel for messages (`fd_waiters`, taken by producers after they
//! publish), a producer arms it for room (`space_waiters`, taken by the
//! consumer after it hands space back).

use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// The consumer's half: sleeps through `wait(expected_epoch)` unless `ready()`
/// holds after announcing itself. `wait` must return when `epoch` differs from
/// its argument or after a wake-up (a futex wait does both).
pub fn sleep_unless(
    epoch: &AtomicU32,
    sleepers: &AtomicU32,
    ready: impl FnOnce() -> bool,
    wait: impl FnOnce(u32),
) {
    // Acquire: pairs with the producer's Release increment in `wake_sleepers`.
    let e = epoch.load(Ordering::Acquire);
    sleepers.fetch_add(1, Ordering::SeqCst);
    // SeqCst fence: pairs with the fence in `wake_sleepers`.
    fence(Ordering::SeqCst);
    if !ready() {
        wait(e);
    }
    sleepers.fetch_sub(1, Ordering::SeqCst);
}

/// The producer's half, after publishing (a `Release` store the consumer's
/// `ready()` reads): wakes sleepers through `wake()` if there are any. Returns
/// whether it woke anyone.
pub fn wake_sleepers(epoch: &AtomicU32, sleepers: &AtomicU32, wake: impl FnOnce()) -> bool {
    // SeqCst fence: orders the caller's publishing store before the load of
    // `sleepers`; pairs with the fence in `sleep_unless`.
    fence(Ordering::SeqCst);
    if sleepers.load(Ordering::Relaxed) == 0 {
        return false;
    }
    // Release: pairs with the consumer's Acquire load of `epoch`.
    epoch.fetch_add(1, Ordering::Release);
    wake();
    true
}

/// The waiter's half of a doorbell handshake: sets `bit` in `waiters`, then
/// re-checks `ready()`. If it holds, the bit is withdrawn and this returns
/// `true` (go ahead instead of waiting); otherwise the notifier is certain
/// to see the bit after its next publishing store (see [`take_armed`]).
pub fn arm(waiters: &AtomicU64, bit: u64, ready: impl FnOnce() -> bool) -> bool {
    // SeqCst, like `sleepers` in `sleep_unless`: part of the handshake the
    // fence below completes.
    waiters.fetch_or(bit, Ordering::SeqCst);
    // SeqCst fence: orders the bit's store before `ready()`'s loads; pairs
    // with the fence in `take_armed` (or, for message doorbells, with the
    // producer's fence in `wake_sleepers`).
    fence(Ordering::SeqCst);
    if ready() {
        waiters.fetch_and(!bit, Ordering::Relaxed);
        return true;
    }
    false
}

/// The notifier's half of a doorbell handshake, after its publishing store
/// (a record's commit word, or a consumer's `head`): a `SeqCst` fence, then
/// the waiting bits, which it clears (so one arming costs at most one
/// doorbell). Returns the bits it took; the caller rings those doorbells.
#[inline]
pub fn take_armed<const N: usize>(waiters: &[AtomicU64; N]) -> [u64; N] {
    // SeqCst fence: orders the caller's publishing store before the loads
    // of `waiters`; pairs with the fence in `arm`.
    fence(Ordering::SeqCst);
    take_armed_fenced(waiters)
}

/// [`take_armed`] for a caller that has just issued the `SeqCst` fence
/// itself (a producer's [`wake_sleepers`] does).
#[inline]
pub fn take_armed_fenced<const N: usize>(waiters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|w| {
        let seen = waiters[w].load(Ordering::Relaxed);
        if seen == 0 {
            0
        } else {
            // Take only the bits we saw; a bit set since then belongs to the
            // next notification. Relaxed: the bits publish nothing, the
            // fences order the handshake.
            waiters[w].fetch_and(!seen, Ordering::Relaxed) & seen
        }
    })
}
