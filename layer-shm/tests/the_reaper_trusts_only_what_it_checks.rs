//! The reaper decides that an endpoint's process died from a pidfd it
//! opened (and checked against the process's start time) when it first saw
//! the endpoint, never from the pid and start-time fields a worker could
//! scribble on afterwards; it never releases an endpoint of its own
//! process; it clears slots claimed by a process that died before
//! publishing them. A channel slot reused after its consumer died asleep
//! starts with no sleepers.

mod common;

use std::mem::offset_of;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{config, eventually, Peer, Raw};
use ringway_layer_shm::layout::EndpointSlot;
use ringway_layer_shm::{Reaper, Segment};

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawning true");
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new("/proc").join(pid.to_string()).exists());
    pid
}

#[test]
fn scribbling_the_servers_endpoint_pid_does_not_get_it_released() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let mut server = seg.endpoint().unwrap();
    server.own_channel("reactor.0!").unwrap();
    // A worker scribbles the server endpoint's pid before the reaper has
    // ever looked at it...
    let pid_at = raw.endpoint(server.index(), offset_of!(EndpointSlot, pid));
    raw.write_u32(pid_at, dead_pid());
    let _reaper = Reaper::spawn(seg.clone(), |_| {}).unwrap();
    let report = seg.reap().unwrap();
    assert_eq!(report.endpoints, 0, "{report:?}");
    // ...and again after it has.
    raw.write_u32(pid_at, dead_pid());
    // Wake the reaper thread with a death to sweep for: once it has
    // released the peer, it has swept past the scribbled slot too.
    let path = seg.path().to_str().unwrap().to_owned();
    let mut peer = Peer::spawn(&["join", &path, "g"]);
    peer.line();
    assert_eq!(seg.stats().endpoints, 3, "server, reaper, peer");
    peer.kill();
    assert!(eventually(Duration::from_secs(10), || {
        seg.stats().endpoints == 2
    }));
    assert_eq!(seg.reap().unwrap().endpoints, 0);
    // The server's endpoint still owns and receives its inbox.
    let mut worker = seg.endpoint().unwrap();
    worker.send("reactor.0!conn", b"reply").unwrap();
    assert_eq!(
        server.try_receive("reactor.0!conn").unwrap().as_deref(),
        Some(&b"reply"[..])
    );
}

#[test]
fn a_watched_peer_is_released_when_it_dies_not_when_its_pid_field_says_so() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let path = seg.path().to_str().unwrap().to_owned();
    let mut ep = seg.endpoint().unwrap();
    let mut peer = Peer::spawn(&["join", &path, "room"]);
    let member = peer.line();
    // First sight: the reaper opens the peer's pidfd and checks it.
    assert_eq!(seg.reap().unwrap().endpoints, 0);
    let idx = (0..256u32)
        .find(|&i| raw.read_u32(raw.endpoint(i, offset_of!(EndpointSlot, pid))) == peer.child.id())
        .expect("the peer's slot");
    raw.write_u32(raw.endpoint(idx, offset_of!(EndpointSlot, pid)), dead_pid());
    assert_eq!(
        seg.reap().unwrap().endpoints,
        0,
        "released by its pid field"
    );
    assert_eq!(ep.group_members("room").unwrap(), vec![member]);
    peer.kill();
    assert_eq!(
        seg.reap().unwrap().endpoints,
        1,
        "not released by its pidfd"
    );
    assert!(ep.group_members("room").unwrap().is_empty());
}

#[test]
fn an_endpoint_whose_process_is_not_the_one_that_attached_is_released_at_first_sight() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let path = seg.path().to_str().unwrap().to_owned();
    let mut peer = Peer::spawn(&["join", &path, "room"]);
    peer.line();
    let idx = (0..256u32)
        .find(|&i| raw.read_u32(raw.endpoint(i, offset_of!(EndpointSlot, pid))) == peer.child.id())
        .expect("the peer's slot");
    // As if the pid had been reused: the process there now started at
    // another time than the one that attached.
    raw.write_u64(raw.endpoint(idx, offset_of!(EndpointSlot, start_time)), 1);
    assert_eq!(seg.reap().unwrap().endpoints, 1);
}

#[test]
fn a_slot_claimed_by_a_process_that_died_before_publishing_it_is_freed() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let claimer_at = raw.endpoint(200, offset_of!(EndpointSlot, claimer));
    raw.write_u32(claimer_at, dead_pid());
    seg.reap().unwrap();
    assert_eq!(raw.read_u32(claimer_at), 0);
    // A claim by a live process (this one) that has not published yet is
    // left alone.
    let live = raw.endpoint(201, offset_of!(EndpointSlot, claimer));
    raw.write_u32(live, std::process::id());
    seg.reap().unwrap();
    assert_eq!(raw.read_u32(live), std::process::id());
    raw.write_u32(live, 0);
}

#[test]
fn a_channel_slot_reused_after_its_consumer_died_asleep_has_no_sleepers() {
    let seg = Segment::create(&config()).unwrap();
    let raw = Raw::new(&seg);
    let path = seg.path().to_str().unwrap().to_owned();
    let mut sleeper = Peer::spawn(&["sleep-in", &path]);
    assert_eq!(sleeper.line(), "ready");
    // Its channel is the segment's first; it is asleep on it.
    assert!(eventually(Duration::from_secs(10), || raw.sleepers(0) == 1));
    sleeper.kill();
    assert_eq!(seg.reap().unwrap().channels, 1);
    assert_eq!(
        raw.sleepers(0),
        1,
        "the dead sleeper's count is left behind"
    );
    let mut ep = seg.endpoint().unwrap();
    ep.own_channel("fresh!").unwrap();
    assert_eq!(raw.sleepers(0), 0, "the reused slot starts with none");
}
