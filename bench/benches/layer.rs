//! Criterion benches of the shared-memory channel layer, each group with its
//! baselines measured in the same run, and the ratios printed after the group.
//!
//! - `latency_one_way_64B`: ping-pong round trip / 2 between two processes:
//!   the layer with spinning consumers (over named channels, and over
//!   process-specific ones), with sleeping consumers, a Unix socket pair; and
//!   between two threads: crossbeam channels (the in-process ceiling), a bare
//!   cache line (the floor for spinning) and a futex wake-up each way (the
//!   floor for sleeping).
//! - `throughput_64B`, `throughput_4KiB`: messages/s from producer processes
//!   to a consumer process (SPSC, and MPSC with two producers), one call per
//!   message and (`_batch64`) with `send_many` / `try_receive_many` 64 at a
//!   time, against a socket pair and a crossbeam channel. Every message is
//!   checked.
//! - `group_send_64B_1000_members`: one `group_send` to 1,000 channels against
//!   1,000 `send_id` calls to the same ring.
//!
//! Run with `scripts/bench layer` (which also prints percentiles); see
//! `bench/README.md`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use ringway_bench::inproc::{
    CacheLinePingPong, CrossbeamPingPong, CrossbeamStream, FutexPingPong, MessageLinePingPong,
};
use ringway_bench::layer::{Channels, GroupFanout, LayerPingPong, LayerStream, Waiting};
use ringway_bench::stats::{fmt_ns, Tally};
use ringway_bench::uds::{UdsPingPong, UdsStream};
use ringway_bench::{MakePingPong, MakeStream, Result};

/// Messages per `send_many` / `try_receive_many` call in the `_batch64`
/// rigs (the same as `layer-report`'s batched rows).
const BATCH: usize = 64;

/// One way of sending a message to every member of a group.
type FanOut = fn(&mut GroupFanout) -> Result<Duration>;

/// A rig is made the first time criterion runs its bench (so a filtered-out
/// bench forks nothing) and finished after it.
fn finish<T: ?Sized>(rig: Option<Box<T>>, done: impl FnOnce(Box<T>) -> Result<()>, name: &str) {
    if let Some(rig) = rig {
        done(rig).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn latency(c: &mut Criterion) {
    let rigs: [(&str, MakePingPong); 8] = [
        ("layer_spin", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Spin,
                Channels::Named,
            )?))
        }),
        ("layer_spin_specific", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Spin,
                Channels::ProcessSpecific,
            )?))
        }),
        ("layer_sleep", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Sleep,
                Channels::Named,
            )?))
        }),
        ("uds", || Ok(Box::new(UdsPingPong::start()?))),
        ("crossbeam_threads", || {
            Ok(Box::new(CrossbeamPingPong::start()?))
        }),
        ("cache_line_floor", || {
            Ok(Box::new(CacheLinePingPong::start()?))
        }),
        ("message_64B_floor", || {
            Ok(Box::new(MessageLinePingPong::start()?))
        }),
        ("futex_wake_floor", || Ok(Box::new(FutexPingPong::start()?))),
    ];
    let mut g = c.benchmark_group("latency_one_way_64B");
    let mut means = Vec::new();
    for (name, make) in rigs {
        let mut rig = None;
        let mut tally = Tally::default();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let rig =
                    rig.get_or_insert_with(|| make().unwrap_or_else(|e| panic!("{name}: {e}")));
                let start = Instant::now();
                for _ in 0..iters {
                    rig.round_trip().unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                // One way is half a round trip.
                let one_way = start.elapsed() / 2;
                tally.add(iters, one_way);
                one_way
            })
        });
        finish(rig, |r| r.finish(), name);
        means.push((name, tally));
    }
    g.finish();
    print_ratios("one-way latency, 64 B", &means, "uds", Better::Lower);
}

fn throughput(c: &mut Criterion) {
    let sizes: [(&str, &[(&str, MakeStream)]); 2] = [
        (
            "64B",
            &[
                ("layer_spsc", || {
                    Ok(Box::new(LayerStream::start(1, 64, Waiting::Spin)?))
                }),
                ("layer_spsc_batch64", || {
                    Ok(Box::new(LayerStream::start_batched(
                        1,
                        64,
                        Waiting::Spin,
                        BATCH,
                    )?))
                }),
                ("layer_mpsc_2", || {
                    Ok(Box::new(LayerStream::start(2, 64, Waiting::Spin)?))
                }),
                ("layer_mpsc_2_batch64", || {
                    Ok(Box::new(LayerStream::start_batched(
                        2,
                        64,
                        Waiting::Spin,
                        BATCH,
                    )?))
                }),
                ("uds", || Ok(Box::new(UdsStream::start(64)?))),
                ("crossbeam_threads", || {
                    Ok(Box::new(CrossbeamStream::<64>::start()?))
                }),
            ],
        ),
        (
            "4KiB",
            &[
                ("layer_spsc", || {
                    Ok(Box::new(LayerStream::start(1, 4096, Waiting::Spin)?))
                }),
                ("layer_spsc_batch64", || {
                    Ok(Box::new(LayerStream::start_batched(
                        1,
                        4096,
                        Waiting::Spin,
                        BATCH,
                    )?))
                }),
                ("layer_mpsc_2", || {
                    Ok(Box::new(LayerStream::start(2, 4096, Waiting::Spin)?))
                }),
                ("uds", || Ok(Box::new(UdsStream::start(4096)?))),
                ("crossbeam_threads", || {
                    Ok(Box::new(CrossbeamStream::<4096>::start()?))
                }),
            ],
        ),
    ];
    for (size, rigs) in sizes {
        let mut g = c.benchmark_group(format!("throughput_{size}"));
        g.throughput(Throughput::Elements(1));
        let mut means = Vec::new();
        for &(name, make) in rigs {
            let mut rig = None;
            let mut tally = Tally::default();
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let rig =
                        rig.get_or_insert_with(|| make().unwrap_or_else(|e| panic!("{name}: {e}")));
                    let t = rig
                        .transfer(iters)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    tally.add(iters, t);
                    t
                })
            });
            finish(rig, |r| r.finish(), name);
            means.push((name, tally));
        }
        g.finish();
        print_ratios(
            &format!("throughput, {size} messages"),
            &means,
            "uds",
            Better::Higher,
        );
    }
}

fn group_send(c: &mut Criterion) {
    const MEMBERS: usize = 1000;
    let mut g = c.benchmark_group("group_send_64B_1000_members");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    let mut rig = None;
    let mut means = Vec::new();
    let ways: [(&str, FanOut); 2] = [
        ("layer_group_send", GroupFanout::group_send),
        ("send_id_x1000", GroupFanout::send_each),
    ];
    for (name, send) in ways {
        let mut tally = Tally::default();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let rig = rig.get_or_insert_with(|| {
                    GroupFanout::start(MEMBERS)
                        .unwrap_or_else(|e| panic!("group of {MEMBERS}: {e}"))
                });
                let t: Duration = (0..iters)
                    .map(|_| send(rig).unwrap_or_else(|e| panic!("{name}: {e}")))
                    .sum();
                tally.add(iters, t);
                t
            })
        });
        means.push((name, tally));
    }
    g.finish();
    print_ratios(
        "one message to 1,000 channels",
        &means,
        "send_id_x1000",
        Better::Lower,
    );
}

/// Which way a bench's numbers improve.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    /// Times (latency).
    Lower,
    /// Rates (throughput).
    Higher,
}

/// Prints each rig's mean time per iteration (over every iteration criterion
/// ran, warm-up included) and how it compares with `baseline`; nothing if
/// the filter left out the baseline or every other rig.
fn print_ratios(what: &str, means: &[(&str, Tally)], baseline: &str, better: Better) {
    let ran = |t: &Tally| !t.mean_ns().is_nan();
    let Some(base) = means
        .iter()
        .find(|(n, t)| *n == baseline && ran(t))
        .map(|(_, t)| t.mean_ns())
    else {
        return;
    };
    let others: Vec<_> = means
        .iter()
        .filter(|(n, t)| *n != baseline && ran(t))
        .collect();
    if others.is_empty() {
        return;
    }
    println!("\n{what}: ratios against {baseline}, measured in this run");
    for (name, t) in others {
        let ns = t.mean_ns();
        // Either way the ratio is how many times better than the baseline.
        let (value, how) = match better {
            Better::Lower => (fmt_ns(ns), format!("{baseline} time / {name} time")),
            Better::Higher => (
                format!("{:.2} M msgs/s", 1e3 / ns),
                format!("{name} rate / {baseline} rate"),
            ),
        };
        println!("  {name:<20} {value:>15}   {:>8.2}  ({how})", base / ns);
    }
    println!();
}

criterion_group! {
    name = benches;
    // 17 benches in about two minutes on 2 cores; pass `--measurement-time`
    // etc. through `scripts/bench layer` for tighter intervals.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = latency, throughput, group_send
}
criterion_main!(benches);
