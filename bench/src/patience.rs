//! Giving up on a peer that makes no progress, instead of hanging.
//!
//! Waiting loops call [`Stall::idle`] on every empty poll and
//! [`Stall::check`] after every blocking wait that came back empty; both cost
//! nothing on the fast path (the clock is read only after many idle polls, or
//! after a wait that already took a while).

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a peer may make no progress before a rig gives up. Every rig
/// moves a message in microseconds, so ten seconds of silence means the peer
/// died or wedged.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Idle polls between clock reads in [`Stall::idle`].
const POLLS_PER_CLOCK_READ: u32 = 1 << 12;

/// Tracks how long one wait has lasted.
pub struct Stall {
    /// What is being waited for, for the error message.
    what: &'static str,
    /// `None`: wait forever (a peer process, which dies with its parent anyway).
    limit: Option<Duration>,
    idle: u32,
    since: Option<Instant>,
}

impl Stall {
    /// A wait for `what` that fails after [`STALL_LIMIT`].
    pub fn new(what: &'static str) -> Self {
        Stall {
            what,
            limit: Some(STALL_LIMIT),
            idle: 0,
            since: None,
        }
    }

    /// A wait that never gives up.
    pub fn forever(what: &'static str) -> Self {
        Stall {
            what,
            limit: None,
            idle: 0,
            since: None,
        }
    }

    /// One more empty poll; reads the clock once every few thousand.
    #[inline]
    pub fn idle(&mut self) -> Result<()> {
        self.idle = self.idle.wrapping_add(1);
        if self.idle % POLLS_PER_CLOCK_READ == 0 {
            self.check()?;
        }
        Ok(())
    }

    /// Fails if the wait has lasted longer than the limit.
    pub fn check(&mut self) -> Result<()> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if now - since > limit {
            return Err(Error::msg(format!(
                "no progress for {limit:?} waiting for {}: the peer probably died (see its stderr above)",
                self.what
            )));
        }
        Ok(())
    }
}

/// Exponential backoff for a producer facing a full ring: spin a little, then
/// give the core away (on a 2-core machine the consumer may need it).
#[derive(Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    /// Spins below this many steps, yields at and above.
    const YIELD_AT: u32 = 6;

    /// Waits a little longer than last time.
    #[inline]
    pub fn snooze(&mut self) {
        if self.step < Self::YIELD_AT {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}
