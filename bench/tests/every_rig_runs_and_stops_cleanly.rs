//! Every rig of the layer benches does a little work and stops cleanly, and
//! a failing peer process is reported, not waited for: so a change to the
//! layer that breaks a bench shows up in `cargo test`, not in the middle of
//! `scripts/bench layer`.
//!
//! `harness = false`: the rigs fork, and a process may fork only while it
//! runs one thread (see `ringway_bench::peer`), which libtest's runner does not.

use std::time::{Duration, Instant};

use ringway_bench::inproc::{
    CacheLinePingPong, CrossbeamPingPong, CrossbeamStream, FutexPingPong, MessageLinePingPong,
};
use ringway_bench::layer::{Channels, GroupFanout, LayerPingPong, LayerStream, Waiting};
use ringway_bench::peer::Child;
use ringway_bench::uds::{UdsPingPong, UdsStream};
use ringway_bench::{Error, MakePingPong, MakeStream};

fn ping_pongs() {
    let rigs: [(&str, MakePingPong); 8] = [
        ("layer spin named", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Spin,
                Channels::Named,
            )?))
        }),
        ("layer spin specific", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Spin,
                Channels::ProcessSpecific,
            )?))
        }),
        ("layer sleep named", || {
            Ok(Box::new(LayerPingPong::start(
                Waiting::Sleep,
                Channels::Named,
            )?))
        }),
        ("uds", || Ok(Box::new(UdsPingPong::start()?))),
        ("crossbeam", || Ok(Box::new(CrossbeamPingPong::start()?))),
        ("cache line", || Ok(Box::new(CacheLinePingPong::start()?))),
        ("64 B message", || {
            Ok(Box::new(MessageLinePingPong::start()?))
        }),
        ("futex", || Ok(Box::new(FutexPingPong::start()?))),
    ];
    for (name, make) in rigs {
        let mut rig = make().unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..500 {
            rig.round_trip().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        rig.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("ok: ping-pong {name}");
    }
}

fn streams() {
    let rigs: [(&str, MakeStream); 6] = [
        ("layer spsc 64", || {
            Ok(Box::new(LayerStream::start(1, 64, Waiting::Spin)?))
        }),
        ("layer mpsc 4096", || {
            Ok(Box::new(LayerStream::start(2, 4096, Waiting::Sleep)?))
        }),
        ("uds 64", || Ok(Box::new(UdsStream::start(64)?))),
        ("uds 4096", || Ok(Box::new(UdsStream::start(4096)?))),
        ("crossbeam 64", || {
            Ok(Box::new(CrossbeamStream::<64>::start()?))
        }),
        ("crossbeam 4096", || {
            Ok(Box::new(CrossbeamStream::<4096>::start()?))
        }),
    ];
    for (name, make) in rigs {
        let mut rig = make().unwrap_or_else(|e| panic!("{name}: {e}"));
        // Enough to fill a lane several times over, in uneven batches.
        for n in [0, 1, 7, 20_000, 3] {
            rig.transfer(n).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        rig.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("ok: stream {name}");
    }
}

fn group_fanout() {
    let mut rig = GroupFanout::start(1000).expect("group of 1000");
    rig.group_send().expect("group_send");
    rig.send_each().expect("send_id to each member");
    println!("ok: group fan-out");
}

fn failing_peers_are_reported() {
    let err = |r: Result<(), Error>| r.expect_err("should fail").to_string();

    let e = err(
        Child::fork("erring peer", 0, || Err(Error::msg("on purpose")))
            .unwrap()
            .wait(Duration::from_secs(5)),
    );
    assert!(e.contains("exited with status 1"), "{e}");

    let e = err(Child::fork("panicking peer", 0, || {
        // Quiet: the child's panic message would only clutter the output.
        std::panic::set_hook(Box::new(|_| {}));
        panic!("on purpose")
    })
    .unwrap()
    .wait(Duration::from_secs(5)));
    assert!(e.contains("exited with status 101"), "{e}");

    let start = Instant::now();
    let e = err(Child::fork("stuck peer", 0, || loop {
        std::thread::sleep(Duration::from_secs(1));
    })
    .unwrap()
    .wait(Duration::from_millis(200)));
    assert!(
        e.contains("did not exit") && start.elapsed() < Duration::from_secs(5),
        "{e}"
    );
    println!("ok: failing peers are reported");
}

fn main() {
    failing_peers_are_reported();
    ping_pongs();
    streams();
    group_fanout();
}
