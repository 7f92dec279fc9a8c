//! The segment lock: one 32-bit word naming its owner, and a waiter count.
//!
//! The word is 0 when the lock is free and the owner's *lock id* while it is
//! held (an endpoint's index and generation, see `liveness.rs`; never 0).
//! Nothing else is kept in shared memory: no pointers, no list a locker
//! writes through, so a peer that scribbles on the lock can at worst break
//! mutual exclusion, never make another process write where it points.
//!
//! - lock: CAS `0 -> me` (`Acquire`).
//! - unlock: CAS `me -> 0` (`Release`; a CAS, not a store, so that an owner
//!   whose lock was taken over never clears its successor's), then the
//!   waker's half of the wake handshake below.
//! - take over: a locker that finds the lock held by an owner that is dead
//!   (the caller decides, from the owner's endpoint slot and process) swaps
//!   the dead owner's id for its own with a CAS (`Acquire`), and then
//!   repairs what the dead owner may have left half done.
//!
//! # The wake handshake (Dekker style, as in `handshake.rs`)
//!
//! A waiter that found the lock held by `h`:
//! 1. `waiters += 1` (`SeqCst`), then `fence(SeqCst)`
//! 2. re-reads the word; if it is still `h`, `futex_wait(word, h)`, which
//!    returns at once if the word is no longer `h`
//! 3. `waiters -= 1`, and tries again
//!
//! The owner, unlocking: the CAS to 0, `fence(SeqCst)`, and if `waiters` is
//! not 0, `futex_wake(word)`. The fences order each side's store before its
//! load, so either the waiter's re-read sees the lock released (and does not
//! sleep) or the owner sees the waiter (and wakes it after the word changed,
//! so its wait returns at once or is woken). An uncontended lock and unlock
//! make no system call. `tests/loom_ring.rs` checks this code.

use crate::sync::{fence, AtomicU32, Ordering};

/// The lock's two words, in the segment header.
#[repr(C)]
#[derive(Default)]
pub struct LockWord {
    /// 0, or the owner's lock id.
    pub word: AtomicU32,
    /// Lockers waiting (or about to wait) on `word`.
    pub waiters: AtomicU32,
}

impl LockWord {
    /// Takes the lock for `me` (not 0) if it is free; otherwise returns the
    /// owner found.
    #[inline]
    pub fn try_lock(&self, me: u32) -> Result<(), u32> {
        debug_assert_ne!(me, 0);
        // Acquire: pairs with the Release CAS in `unlock` (or the Acquire
        // CAS of a take-over, whose repairs happen before its unlock), so
        // the previous owner's table changes are visible to us.
        self.word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .map(drop)
    }

    /// Replaces a dead owner `dead` by `me`. False if the word no longer
    /// holds `dead` (someone else took it over, or it was released).
    #[inline]
    pub fn take_over(&self, dead: u32, me: u32) -> bool {
        debug_assert!(dead != 0 && me != 0);
        // Acquire: as in `try_lock` (the value may be the id a previous
        // take-over stored). The dead owner's own writes are ordered before
        // us by its death, which the caller learned of through the kernel
        // (reading /proc), not by this CAS; what it left half done is for
        // the caller to repair.
        self.word
            .compare_exchange(dead, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the lock held by `me`, then wakes waiters through `wake()`
    /// if there are any. Returns false (and changes nothing) if the lock was
    /// not `me`'s any more: someone took it over believing `me` dead.
    #[inline]
    pub fn unlock(&self, me: u32, wake: impl FnOnce()) -> bool {
        // Release: our table changes happen-before the next owner's Acquire
        // CAS in `try_lock`.
        if self
            .word
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SeqCst fence: orders the CAS above before the load of `waiters`;
        // pairs with the fence in `wait`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            wake();
        }
        true
    }

    /// Waits through `sleep(holder)` while the lock is still held by
    /// `holder`, after announcing this waiter. `sleep` must return when the
    /// word no longer holds its argument, after a wake-up, or at any time
    /// (a futex wait with a timeout does all three); the caller tries to
    /// lock again afterwards.
    pub fn wait(&self, holder: u32, sleep: impl FnOnce(u32)) {
        // SeqCst: the waiter's announcement, ordered before the re-read by
        // the fence below; the owner's load in `unlock` is its partner.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // SeqCst fence: pairs with the fence in `unlock`.
        fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) == holder {
            sleep(holder);
        }
        // SeqCst, as the increment (a late decrement only costs the owner
        // a spurious wake).
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
