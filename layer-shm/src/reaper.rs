//! The reaper: finding endpoints whose process died and releasing what they
//! held, so no one else is wedged.
//!
//! The owner (the server) runs a [`Reaper`] thread that sleeps in `poll(2)` on
//! a pidfd per attached process and on its own doorbell (rung when an endpoint
//! attaches), and sweeps when any of them fires: no timers, no polling.
//! [`Segment::reap`] runs one sweep now (the server's supervisor calls it
//! when a worker exits, before telling the reactors). Both decide deaths
//! from pidfds opened when an endpoint was first seen, never from the pid
//! fields a worker could scribble on (`liveness.rs`), and never release an
//! endpoint of their own process.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::repair::{self, ReapReport, Slot};
use crate::segment::{LockMode, Segment};
use crate::{sys, wake};

impl Segment {
    /// Finds endpoints whose process has died and reclaims what they held,
    /// then repairs the tables (see `repair.rs`). Takes the segment lock as
    /// this mapping's own endpoint slot, attached on first use.
    pub fn reap(&self) -> Result<ReapReport> {
        let shared = &*self.shared;
        // Held for the whole sweep: the housekeeper's lock id is used by one
        // thread at a time.
        let mut watches = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
        let me = shared.housekeeper()?;
        let own = shared.local().clone();
        let dead = watches.refresh(|i| shared.endpoint(i), &own);
        let g = repair::lock(shared, me, LockMode::Wait)?;
        let mut report = ReapReport::default();
        for &(idx, gen) in &dead {
            if repair::release_endpoint(&g, idx, gen, &mut report, Slot::Free) {
                report.endpoints += 1;
            }
        }
        repair::repair(&g, &mut report);
        drop(g);
        watches.forget(&dead);
        Ok(report)
    }

    /// Takes the segment lock and never lets go: for tests that kill a
    /// process while it holds the lock. Prints `locked` when it has it.
    /// Blocks forever.
    #[doc(hidden)]
    pub fn hold_lock_forever_for_tests(&self) -> Result<std::convert::Infallible> {
        // The housekeeper's lock is taken only under `watches`.
        let watches = self.shared.watches.lock();
        let me = self.shared.housekeeper()?;
        let g = repair::lock(&self.shared, me, LockMode::Wait)?;
        std::mem::forget(g);
        std::mem::forget(watches);
        println!("locked");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        loop {
            std::thread::park();
        }
    }
}

/// A thread that reaps dead endpoints as soon as their process exits.
pub struct Reaper {
    stop: Arc<AtomicBool>,
    bell: std::path::PathBuf,
    /// A write end of the thread's doorbell, to stop it with even if the
    /// FIFO's name has been removed.
    ring: OwnedFd,
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
        let ring = sys::open_fifo(&bell, false)
            .map_err(|e| Error::io(format!("opening {}", bell.display()), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringway-reaper".into())
            .spawn(move || {
                // Acquire: pairs with the Release store in `Drop`.
                while !stop2.load(Ordering::Acquire) {
                    match segment.reap() {
                        Ok(r) if r == ReapReport::default() => {}
                        other => on_reap(other),
                    }
                    // Held (not just their numbers) while we poll: a
                    // concurrent `reap` may drop them from the table.
                    let pidfds = segment
                        .shared
                        .watches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .fds();
                    let mut fds = vec![bell_fd.as_raw_fd()];
                    fds.extend(pidfds.iter().map(|f| f.as_raw_fd()));
                    let _ = sys::poll_readable(&fds, -1);
                    sys::drain(bell_fd.as_raw_fd());
                }
            })
            .map_err(|e| Error::io("starting the reaper thread", e))?;
        Ok(Reaper {
            stop,
            bell,
            ring,
            thread: Some(thread),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Release: pairs with the thread's Acquire load.
        self.stop.store(true, Ordering::Release);
        let _ = sys::ring_bell(self.ring.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sys::unlink(&self.bell);
    }
}
