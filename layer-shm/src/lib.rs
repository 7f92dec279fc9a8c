//! ringway's channel layer: named channels, groups, capacity and expiry over
//! lock-free rings in one shared-memory segment.
//!
//! - [`Segment`] creates (the server) or opens (workers) the segment file.
//! - [`Endpoint`] is one thread's attachment: `send`, `receive`,
//!   `new_channel`, `group_add`, `group_discard`, `group_send`, `flush`, with
//!   the semantics of the Channels channel-layer spec.
//! - [`Reaper`] reclaims what dead processes held.
//! - [`ring`] is the lane protocol everything rests on; [`handshake`] and
//!   [`lock`] are the wake-up and locking protocols, written once over the
//!   `sync` shim so that the loom models check the code the layer runs.
//!
//! Modules: `segment` (the file, its mapping, attaching, taking the lock),
//! `layout` (what is in shared memory), `liveness` (endpoint slots, lock
//! owner ids, the reaper's pidfds), `repair` (releasing what an endpoint
//! held, the repair sweep), `reaper` (the reaper thread), `endpoint` (the
//! channel-layer API), `wake` (futexes and doorbells), `mask` (256-bit
//! endpoint and lane masks), `names`, `sys` (system calls), `error`.
//!
//! `DESIGN.md` at the repository root explains the layout, the memory-ordering
//! argument and crash recovery.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod handshake;
pub mod lock;
pub mod ring;
mod sync;

#[cfg(not(loom))]
mod endpoint;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod mask;
#[cfg(not(loom))]
pub mod names;
#[cfg(not(loom))]
mod reaper;
#[cfg(not(loom))]
mod repair;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod wake;

pub use sync::CachePadded;

#[cfg(not(loom))]
pub use endpoint::{ChannelId, Endpoint, GroupSend, Progress};
#[cfg(not(loom))]
pub use error::{Error, Result, SendError};
#[cfg(not(loom))]
pub use layout::{LANES_PER_CHANNEL, MAX_ENDPOINTS};
#[cfg(not(loom))]
pub use reaper::Reaper;
#[cfg(not(loom))]
pub use repair::ReapReport;
#[cfg(not(loom))]
pub use segment::{remove_stale, Config, Segment, Stats};

/// `CLOCK_MONOTONIC` in milliseconds, the clock message deadlines use.
#[cfg(not(loom))]
pub fn monotonic_ms() -> u64 {
    sys::monotonic_ms()
}
