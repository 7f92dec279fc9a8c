//! The concurrency primitives the ring protocol is written against.
//!
//! Under `cfg(loom)` the atomics are loom's, so `tests/loom_ring.rs` can explore
//! every interleaving (and every weak-memory outcome loom models) of the lane
//! protocol in [`crate::ring`]. In normal builds they are the standard library's,
//! and they live in the shared-memory segment.
//!
//! The byte copies in and out of a lane's data area go through [`write_bytes`] and
//! [`read_bytes`]: in normal builds these are plain `memcpy`s (the protocol gives
//! each side exclusive access to the bytes it copies), under loom they are relaxed
//! word-by-word atomic accesses, so a missing `Release`/`Acquire` shows up in the
//! models as a reader seeing stale bytes.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Pads and aligns a value to 128 bytes.
///
/// 128 rather than 64: on x86_64 the adjacent-line prefetcher pulls cache lines
/// in pairs, and several aarch64 cores (Apple M-series, some Neoverse parts) have
/// 128-byte lines. crossbeam's `CachePadded` makes the same choice for both.
#[repr(C, align(128))]
#[derive(Default)]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Copies `src` into `words`, starting at byte offset `off` and wrapping around
/// the end of the array.
///
/// `off` must be a multiple of 8 and less than `words.len() * 8`; `src` must not
/// be longer than the array. The bytes of the last word past `src` are zeroed.
/// The caller must own the bytes it writes (for a lane: the free space between
/// `tail` and `head + capacity`, see [`crate::ring`]).
#[inline]
pub(crate) fn write_bytes(words: &[AtomicU64], off: usize, src: &[u8]) {
    let total = words.len() * 8;
    debug_assert!(off % 8 == 0 && off < total && src.len() <= total);
    let first = src.len().min(total - off);
    copy_in(words, off, &src[..first]);
    if first < src.len() {
        copy_in(words, 0, &src[first..]);
    }
}

/// Copies `dst.len()` bytes out of `words`, starting at byte offset `off` and
/// wrapping around the end of the array. Same preconditions as [`write_bytes`];
/// the caller must own the bytes it reads (for a lane: between `head` and `tail`).
#[inline]
pub(crate) fn read_bytes(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
    let total = words.len() * 8;
    debug_assert!(off % 8 == 0 && off < total && dst.len() <= total);
    let first = dst.len().min(total - off);
    let (a, b) = dst.split_at_mut(first);
    copy_out(words, off, a);
    if !b.is_empty() {
        copy_out(words, 0, b);
    }
}

/// Below this many bytes, copies are done word by word inline: a call to
/// `memcpy` costs more than the copy itself for a typical small message.
#[cfg(not(loom))]
const SMALL_COPY: usize = 256;

#[cfg(not(loom))]
#[inline]
fn copy_in(words: &[AtomicU64], off: usize, src: &[u8]) {
    assert!(off % 8 == 0 && off + src.len() <= words.len() * 8);
    let whole = src.len() & !7;
    if src.len() <= SMALL_COPY {
        let first = off / 8;
        for (i, chunk) in src[..whole].chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            // Relaxed: publication is the caller's Release store of the position.
            words[first + i].store(w, Ordering::Relaxed);
        }
    } else {
        let base = words.as_ptr() as *mut u8;
        // SAFETY: `off + whole` is within the array (asserted above).
        // `AtomicU64` has the size and layout of `u64` and is an `UnsafeCell`,
        // so writing its bytes through a pointer derived from a shared
        // reference is allowed. The ring protocol gives this side exclusive
        // ownership of these bytes until it publishes them with a `Release`
        // store.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off), whole) };
    }
    let rest = &src[whole..];
    if !rest.is_empty() {
        // The last, partial word, zero-padded: those pad bytes belong to the
        // same record.
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        words[(off + whole) / 8].store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
#[inline]
fn copy_out(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
    assert!(off % 8 == 0 && off + dst.len() <= words.len() * 8);
    let whole = dst.len() & !7;
    if dst.len() <= SMALL_COPY {
        let first = off / 8;
        for (i, chunk) in dst[..whole].chunks_exact_mut(8).enumerate() {
            // Relaxed: the caller's Acquire load of the position made these
            // bytes visible.
            chunk.copy_from_slice(&words[first + i].load(Ordering::Relaxed).to_le_bytes());
        }
    } else {
        let base = words.as_ptr() as *const u8;
        // SAFETY: in bounds as in `copy_in`. The bytes were published to this
        // side by an `Acquire` load of the position that covers them, and the
        // writer does not touch them again until this side releases them. A
        // hostile process could still scribble on them concurrently; the result
        // is garbage bytes in `dst` (which every caller validates after the
        // copy), never an out-of-bounds access.
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr(), whole) };
    }
    let rest = &mut dst[whole..];
    if !rest.is_empty() {
        let w = words[(off + whole) / 8]
            .load(Ordering::Relaxed)
            .to_le_bytes();
        rest.copy_from_slice(&w[..rest.len()]);
    }
}

#[cfg(loom)]
fn copy_in(words: &[AtomicU64], off: usize, src: &[u8]) {
    for (i, chunk) in src.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        words[off / 8 + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

#[cfg(loom)]
fn copy_out(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
    for (i, chunk) in dst.chunks_mut(8).enumerate() {
        let w = words[off / 8 + i].load(Ordering::Relaxed).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}
