//! ringway's benchmark rigs, shared by the criterion benches (`benches/`) and
//! the load tools (`src/bin/`).
//!
//! A *rig* is one way of moving messages between two parties, set up once and
//! driven many times:
//!
//! - [`PingPong`] rigs bounce a 64-byte message to a peer and back, for latency.
//! - [`Stream`] rigs have the peer(s) produce a batch of sequence-numbered
//!   messages that this process consumes and verifies, for throughput.
//!
//! Each transport has its own module with the same shape: [`layer`] (the
//! shared-memory channel layer, peer processes made with `fork`), [`uds`] (a
//! Unix-domain socket pair between the same two processes, the baseline) and
//! [`inproc`] (crossbeam channels between two threads, the in-process ceiling).
//! [`peer`] forks and reaps peer processes; [`cpu`] pins each party to its
//! own CPU; [`payload`] stamps and checks
//! sequence numbers; [`patience`] turns a dead peer into an error instead of a
//! hang; [`stats`] summarises timings.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

use std::fmt;
use std::time::Duration;

pub mod cpu;
pub mod inproc;
pub mod layer;
pub mod patience;
pub mod payload;
pub mod peer;
pub mod stats;
pub mod uds;

/// Size of the messages the latency rigs bounce.
pub const PING_BYTES: usize = 64;

/// A request/response pair between two parties, for latency.
pub trait PingPong {
    /// Sends one [`PING_BYTES`]-byte message to the peer and waits until the
    /// peer's echo of it is back (checking it is the same message).
    fn round_trip(&mut self) -> Result<()>;

    /// Stops the peer and reports whether it ended cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// One or more producers streaming to this process, for throughput.
pub trait Stream {
    /// Has the producers send `n` messages in all and receives them, checking
    /// every sequence number. Returns the time from ordering the batch to
    /// receiving its last message.
    fn transfer(&mut self, n: u64) -> Result<Duration>;

    /// Stops the producers, checks nothing unexpected is left queued, and
    /// reports whether they ended cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Makes a [`PingPong`] rig (forking its peer, if any).
pub type MakePingPong = fn() -> Result<Box<dyn PingPong>>;

/// Makes a [`Stream`] rig (forking its producers, if any).
pub type MakeStream = fn() -> Result<Box<dyn Stream>>;

/// What went wrong in a rig: a message for a human. Lost or reordered
/// messages are not errors but panics (see [`payload::SeqCheck`]): they are
/// bugs in the transport, never conditions to handle.
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Self {
        Error(m.into())
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Debug prints the message as is, so `expect` and `main` returning an error
// show it readably.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
