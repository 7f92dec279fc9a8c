//! `layer-report`: a compact table of the channel layer's latency
//! percentiles and throughput, beside its baselines and the targets of the
//! issue that introduced the layer. `scripts/bench layer` runs it after the
//! criterion benches.
//!
//! ```text
//! layer-report [--round-trips N] [--seconds S] [--only TEXT]
//! ```
//!
//! Latency: N round trips (default 200,000) per rig, each timed on its own
//! (with the time-stamp counter where it ticks at a constant rate), halved. Throughput: batches sized to take at least 50 ms, repeated for S
//! seconds (default 1) per rig; the median batch rate is reported. `--only`
//! runs just the rigs whose name contains TEXT. A missed target prints MISS;
//! it does not fail the run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringway_bench::inproc::{
    CacheLinePingPong, CrossbeamPingPong, CrossbeamStream, FutexPingPong, MessageLinePingPong,
};
use ringway_bench::layer::{Channels, GroupFanout, LayerPingPong, LayerStream, Waiting};
use ringway_bench::stats::{fmt_ns, Percentiles, Stopwatch};
use ringway_bench::uds::{UdsPingPong, UdsStream};
use ringway_bench::{Error, MakePingPong, MakeStream, PingPong, Result, Stream};

struct Opts {
    round_trips: usize,
    seconds: f64,
    only: Option<String>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut o = Opts {
            round_trips: 200_000,
            seconds: 1.0,
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| Error::msg(format!("{a} needs a value")))
            };
            match a.as_str() {
                "--round-trips" => o.round_trips = value()?.parse()?,
                "--seconds" => o.seconds = value()?.parse()?,
                "--only" => o.only = Some(value()?),
                "-h" | "--help" => {
                    println!("usage: layer-report [--round-trips N] [--seconds S] [--only TEXT]");
                    std::process::exit(0);
                }
                _ => return Err(Error::msg(format!("unknown argument {a:?}; try --help"))),
            }
        }
        if o.round_trips == 0 || o.seconds <= 0.0 {
            return Err(Error::msg("--round-trips and --seconds must be positive"));
        }
        Ok(o)
    }

    fn wants(&self, rig: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| rig.contains(only.as_str()))
    }
}

/// One-way latency percentiles of one rig, in nanoseconds.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Messages per `send_many` / `try_receive_many` call in the batched rows.
const BATCH: usize = 64;

/// Runs `round_trips` round trips after a warm-up of a tenth as many, timing
/// each with one stopwatch read (the interval between consecutive reads).
fn measure_latency(mut rig: Box<dyn PingPong>, round_trips: usize) -> Result<Latency> {
    for _ in 0..(round_trips / 10).max(1000) {
        rig.round_trip()?;
    }
    let mut samples = Vec::with_capacity(round_trips);
    let watch = Stopwatch::start();
    let mut prev = watch.ticks();
    for _ in 0..round_trips {
        rig.round_trip()?;
        let now = watch.ticks();
        samples.push(now.wrapping_sub(prev));
        prev = now;
    }
    let ns_per_tick = watch.ns_per_tick();
    rig.finish()?;
    let p = Percentiles::new(samples);
    let one_way = |q| p.at(q) as f64 * ns_per_tick / 2.0;
    Ok(Latency {
        p50: one_way(0.50),
        p99: one_way(0.99),
        p999: one_way(0.999),
    })
}

/// Batch rates of one rig, in messages per second.
struct Rate {
    median: f64,
    min: f64,
    max: f64,
    batches: usize,
}

/// Grows the batch until one takes 50 ms, then transfers batches for
/// `seconds` (at least three).
fn measure_rate(mut rig: Box<dyn Stream>, seconds: f64) -> Result<Rate> {
    let mut batch = 10_000u64;
    while rig.transfer(batch)? < Duration::from_millis(50) {
        batch *= 2;
    }
    let mut rates = Vec::new();
    let start = Instant::now();
    while rates.len() < 3 || start.elapsed().as_secs_f64() < seconds {
        let t = rig.transfer(batch)?;
        rates.push(batch as f64 / t.as_secs_f64());
    }
    rig.finish()?;
    rates.sort_by(f64::total_cmp);
    Ok(Rate {
        median: rates[rates.len() / 2],
        min: rates[0],
        max: rates[rates.len() - 1],
        batches: rates.len(),
    })
}

/// Median of `runs` timings of `f`.
fn median_time(runs: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<f64> {
    let mut t = (0..runs)
        .map(|_| f().map(|d| d.as_nanos() as u64))
        .collect::<Result<Vec<_>>>()?;
    t.sort_unstable();
    Ok(t[t.len() / 2] as f64)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// Cost of one stopwatch read, which every latency sample includes once.
fn clock_read_ns() -> f64 {
    let n = 1_000_000;
    let watch = Stopwatch::start();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(watch.ticks());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() -> Result<()> {
    let o = Opts::parse()?;
    println!(
        "ringway layer report: {}, {} CPUs ({}); {} round trips per latency rig, {} s per throughput rig",
        utc_now(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        o.round_trips,
        o.seconds
    );

    // Latency. The targets are the issue's: one-way p50 <= 150 ns spinning,
    // <= 10 us sleeping.
    let latency_rigs: [(&str, MakePingPong, Option<f64>); 8] = [
        (
            "layer-spin",
            || {
                Ok(Box::new(LayerPingPong::start(
                    Waiting::Spin,
                    Channels::Named,
                )?))
            },
            Some(150.0),
        ),
        (
            "layer-spin, specific",
            || {
                Ok(Box::new(LayerPingPong::start(
                    Waiting::Spin,
                    Channels::ProcessSpecific,
                )?))
            },
            Some(150.0),
        ),
        (
            "layer-sleep",
            || {
                Ok(Box::new(LayerPingPong::start(
                    Waiting::Sleep,
                    Channels::Named,
                )?))
            },
            Some(10_000.0),
        ),
        ("uds", || Ok(Box::new(UdsPingPong::start()?)), None),
        (
            "crossbeam (threads)",
            || Ok(Box::new(CrossbeamPingPong::start()?)),
            None,
        ),
        (
            "cache line (floor)",
            || Ok(Box::new(CacheLinePingPong::start()?)),
            None,
        ),
        (
            "64 B message (floor)",
            || Ok(Box::new(MessageLinePingPong::start()?)),
            None,
        ),
        (
            "futex wake (floor)",
            || Ok(Box::new(FutexPingPong::start()?)),
            None,
        ),
    ];
    let mut lat = Vec::new();
    for (name, make, target) in latency_rigs.into_iter().filter(|r| o.wants(r.0)) {
        let l = measure_latency(make()?, o.round_trips)
            .map_err(|e| Error::msg(format!("{name}: {e}")))?;
        lat.push((name, l, target));
    }
    if !lat.is_empty() {
        println!("\none-way latency, 64 B messages (round trip / 2)");
        println!(
            "  {:<20} {:>9} {:>9} {:>9}   target",
            "rig", "p50", "p99", "p99.9"
        );
        for (name, l, target) in &lat {
            let t = target.map_or(String::new(), |t| {
                format!("p50 <= {:<8} {}", fmt_ns(t), verdict(l.p50 <= t))
            });
            println!(
                "  {name:<20} {:>9} {:>9} {:>9}   {t}",
                fmt_ns(l.p50),
                fmt_ns(l.p99),
                fmt_ns(l.p999)
            );
        }
        println!(
            "  (each round trip also paid one clock read, {})",
            fmt_ns(clock_read_ns())
        );
    }

    // Throughput. Target: >= 30 M msgs/s SPSC at 64 B. The main rows use the
    // batch calls (`send_many`, `try_receive_many`), as a streaming producer
    // and a draining consumer do; "1-by-1" rows use one call per message.
    let stream_rigs: [(&str, MakeStream, Option<f64>); 9] = [
        (
            "layer SPSC 64 B",
            || {
                Ok(Box::new(LayerStream::start_batched(
                    1,
                    64,
                    Waiting::Spin,
                    BATCH,
                )?))
            },
            Some(30e6),
        ),
        (
            "layer SPSC 64 B 1-by-1",
            || Ok(Box::new(LayerStream::start(1, 64, Waiting::Spin)?)),
            None,
        ),
        (
            "layer MPSC(2) 64 B 1-by-1",
            || Ok(Box::new(LayerStream::start(2, 64, Waiting::Spin)?)),
            None,
        ),
        (
            "layer SPSC 4 KiB",
            || {
                Ok(Box::new(LayerStream::start_batched(
                    1,
                    4096,
                    Waiting::Spin,
                    BATCH,
                )?))
            },
            None,
        ),
        (
            "layer MPSC(2) 64 B",
            || {
                Ok(Box::new(LayerStream::start_batched(
                    2,
                    64,
                    Waiting::Spin,
                    BATCH,
                )?))
            },
            None,
        ),
        ("uds 64 B", || Ok(Box::new(UdsStream::start(64)?)), None),
        ("uds 4 KiB", || Ok(Box::new(UdsStream::start(4096)?)), None),
        (
            "crossbeam 64 B",
            || Ok(Box::new(CrossbeamStream::<64>::start()?)),
            None,
        ),
        (
            "crossbeam 4 KiB",
            || Ok(Box::new(CrossbeamStream::<4096>::start()?)),
            None,
        ),
    ];
    let mut tput = Vec::new();
    for (name, make, target) in stream_rigs.into_iter().filter(|r| o.wants(r.0)) {
        let r = measure_rate(make()?, o.seconds).map_err(|e| Error::msg(format!("{name}: {e}")))?;
        tput.push((name, r, target));
    }
    if !tput.is_empty() {
        println!("\nthroughput, producer process(es) -> consumer process, every message checked");
        println!(
            "  {:<20} {:>9} {:>17} {:>8}   target",
            "rig", "M msgs/s", "range", "batches"
        );
        for (name, r, target) in &tput {
            let t = target.map_or(String::new(), |t| {
                format!(">= {:.0} M/s  {}", t / 1e6, verdict(r.median >= t))
            });
            let range = format!("{:.2} - {:.2}", r.min / 1e6, r.max / 1e6);
            println!(
                "  {name:<20} {:>9.2} {range:>17} {:>8}   {t}",
                r.median / 1e6,
                r.batches
            );
        }
    }

    // Group fan-out (no target; for the record).
    if o.wants("group_send") {
        let mut fan = GroupFanout::start(1000)?;
        let group = median_time(200, || fan.group_send())?;
        let each = median_time(200, || fan.send_each())?;
        println!("\ngroup_send of 64 B to 1,000 members (median of 200)");
        println!("  {:<20} {:>9}", "group_send", fmt_ns(group));
        println!(
            "  {:<20} {:>9}   {:.1}x faster",
            "1,000 x send_id",
            fmt_ns(each),
            group / each
        );
    }

    // Ratios, each "how many times better", when both sides ran. Target:
    // layer SPSC 64 B >= 30x the socket pair's throughput.
    let rate = |n: &str| tput.iter().find(|r| r.0 == n).map(|r| r.1.median);
    let p50 = |n: &str| lat.iter().find(|r| r.0 == n).map(|r| r.1.p50);
    let ratios = [
        (
            "throughput SPSC 64 B, layer / uds",
            rate("layer SPSC 64 B").zip(rate("uds 64 B")),
            Some(30.0),
        ),
        (
            "throughput SPSC 4 KiB, layer / uds",
            rate("layer SPSC 4 KiB").zip(rate("uds 4 KiB")),
            None,
        ),
        (
            "throughput MPSC(2) 64 B, layer / uds SPSC",
            rate("layer MPSC(2) 64 B").zip(rate("uds 64 B")),
            None,
        ),
        (
            "throughput 64 B, layer SPSC / crossbeam",
            rate("layer SPSC 64 B").zip(rate("crossbeam 64 B")),
            None,
        ),
        (
            "latency p50, uds / layer-spin",
            p50("uds").zip(p50("layer-spin")),
            None,
        ),
        (
            "latency p50, uds / layer-sleep",
            p50("uds").zip(p50("layer-sleep")),
            None,
        ),
        (
            "latency p50, cache line / layer-spin",
            p50("cache line (floor)").zip(p50("layer-spin")),
            None,
        ),
        (
            "latency p50, 64 B message / layer-spin",
            p50("64 B message (floor)").zip(p50("layer-spin")),
            None,
        ),
        (
            "latency p50, futex wake / layer-sleep",
            p50("futex wake (floor)").zip(p50("layer-sleep")),
            None,
        ),
    ];
    let mut header = false;
    for (what, pair, target) in ratios {
        let Some((a, b)) = pair else { continue };
        if !std::mem::replace(&mut header, true) {
            println!("\nratios (same run; above 1 means the layer is better)");
        }
        let t = target.map_or(String::new(), |t| {
            format!(">= {t:.0}x  {}", verdict(a / b >= t))
        });
        println!("  {what:<42} {:>8.2}x   {t}", a / b);
    }
    Ok(())
}

/// The first CPU's model name, from `/proc/cpuinfo`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
