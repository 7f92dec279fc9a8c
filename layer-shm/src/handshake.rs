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

use crate::sync::{fence, AtomicU32, Ordering};

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
