//! Timing: a cheap stopwatch for per-iteration samples, percentiles, means,
//! human-readable durations.

use std::time::{Duration, Instant};

/// Timestamps cheap enough to take once per round trip: the time-stamp
/// counter on x86_64 CPUs whose counter ticks at a constant rate (about 10 ns
/// a read under KVM, against 25 ns for `Instant::now`), `Instant` elsewhere.
/// Ticks become nanoseconds at a rate measured against `Instant` over the
/// stopwatch's life, so no frequency needs to be known.
pub struct Stopwatch {
    started: Instant,
    first_tick: u64,
    tsc: bool,
}

impl Stopwatch {
    /// Starts counting.
    pub fn start() -> Self {
        let tsc = cfg!(target_arch = "x86_64") && invariant_tsc();
        let mut w = Stopwatch {
            started: Instant::now(),
            first_tick: 0,
            tsc,
        };
        w.first_tick = w.ticks();
        w
    }

    /// The current tick count.
    #[inline]
    pub fn ticks(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // SAFETY: RDTSC exists on every x86_64 CPU and has no
            // preconditions; it only reads the counter.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.started.elapsed().as_nanos() as u64
    }

    /// Nanoseconds per tick, measured from the start until now (call it
    /// after the samples, so the measuring interval is long).
    pub fn ns_per_tick(&self) -> f64 {
        if !self.tsc {
            return 1.0;
        }
        let ns = self.started.elapsed().as_nanos() as f64;
        let ticks = self.ticks().wrapping_sub(self.first_tick) as f64;
        ns / ticks
    }
}

/// Whether the CPU says its time-stamp counter ticks at a constant rate
/// through frequency changes and sleep states.
fn invariant_tsc() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|flags| {
                let has = |f: &str| flags.split_whitespace().any(|x| x == f);
                has("constant_tsc") && has("nonstop_tsc")
            })
    })
}

/// Samples (in nanoseconds), sorted, for percentiles.
pub struct Percentiles {
    sorted: Vec<u64>,
}

impl Percentiles {
    /// Sorts `samples`.
    ///
    /// # Panics
    /// If there are none.
    pub fn new(mut samples: Vec<u64>) -> Self {
        assert!(!samples.is_empty(), "percentiles of no samples");
        samples.sort_unstable();
        Percentiles { sorted: samples }
    }

    /// The `q`-quantile (`0.0 ..= 1.0`), nearest rank.
    pub fn at(&self, q: f64) -> u64 {
        let rank = (q.clamp(0.0, 1.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.saturating_sub(1)]
    }
}

/// Time spent over many timed runs, for a mean per iteration.
#[derive(Default, Clone, Copy, Debug)]
pub struct Tally {
    iters: u64,
    time: Duration,
}

impl Tally {
    /// Records a run of `iters` iterations that took `time`.
    pub fn add(&mut self, iters: u64, time: Duration) {
        self.iters += iters;
        self.time += time;
    }

    /// Mean nanoseconds per iteration (NaN before any run).
    pub fn mean_ns(&self) -> f64 {
        self.time.as_nanos() as f64 / self.iters as f64
    }
}

/// `ns` nanoseconds with a unit that keeps 3 significant digits: `87.3 ns`,
/// `12.4 us`, `3.10 ms`.
pub fn fmt_ns(ns: f64) -> String {
    let (v, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "us")
    } else {
        (ns / 1e6, "ms")
    };
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else if v < 100.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::new((1..=100).rev().collect());
        assert_eq!(p.at(0.5), 50);
        assert_eq!(p.at(0.99), 99);
        assert_eq!(p.at(1.0), 100);
        assert_eq!(p.at(0.0), 1);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_ns(87.34), "87.3 ns");
        assert_eq!(fmt_ns(12_400.0), "12.4 us");
        assert_eq!(fmt_ns(3_100_000.0), "3.10 ms");
        assert_eq!(fmt_ns(150.0), "150 ns");
    }
}
