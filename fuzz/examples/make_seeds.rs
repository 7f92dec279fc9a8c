//! Writes the seed corpora in `corpus/` from real lanes and segments:
//! `cargo run --example make_seeds` (again after a layout change).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ringway_layer_shm::ring::{Consumer, Lane, LaneCtrl, LaneLimits, Producer, SLACK};
use ringway_layer_shm::{Config, Segment};

fn lane_image(fill: impl FnOnce(Producer<'_>, Lane<'_>)) -> Vec<u8> {
    let ctrl = LaneCtrl::default();
    let data: Vec<AtomicU64> = (0..32).map(|_| AtomicU64::new(0)).collect();
    let lane = Lane::new(
        &ctrl,
        &data,
        LaneLimits {
            max_msgs: 8,
            max_record: 256 - SLACK,
        },
    );
    fill(Producer::new(lane), lane);
    let mut out = Vec::new();
    out.extend_from_slice(&ctrl.head.load(Ordering::Relaxed).to_le_bytes());
    out.extend_from_slice(&ctrl.tail.load(Ordering::Relaxed).to_le_bytes());
    for w in &data {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let lanes = root.join("lane_records");
    write(&lanes, "empty", &lane_image(|_, _| {}));
    write(
        &lanes,
        "three-records",
        &lane_image(|mut p, _| {
            p.push(b"conn7", b"hello", 42).unwrap();
            p.push(b"", b"", 0).unwrap();
            p.push(&[1; 3], &[9; 40], 7).unwrap();
        }),
    );
    write(
        &lanes,
        "wrapped",
        &lane_image(|mut p, lane| {
            // Fill and drain a few laps so records straddle the end.
            let mut c = Consumer::new(lane);
            let mut out = Vec::new();
            for i in 0..20u8 {
                p.push(&[i], &[i; 37], 0).unwrap();
                c.pop(&mut out).unwrap();
            }
            p.push(b"t", &[0xAB; 60], 0).unwrap();
            p.push(b"", &[0xCD; 50], 0).unwrap();
        }),
    );
    write(
        &lanes,
        "batch-unpublished",
        &lane_image(|mut p, _| {
            p.push(b"", b"published", 0).unwrap();
            p.write(b"", b"held", 0).unwrap();
            p.write(b"", b"behind it", 0).unwrap();
            // What a producer that died before publishing the batch leaves.
            std::mem::forget(p);
        }),
    );

    let dir = std::env::temp_dir().join(format!("ringway-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg = Segment::create(&Config {
        dir: dir.clone(),
        channels: 4,
        lanes: 4,
        members: 4,
        lane_bytes: 4096,
        max_message: 1024,
        ..Config::default()
    })
    .unwrap();
    let header = std::fs::read(seg.path()).unwrap()[..4096].to_vec();
    let headers = root.join("segment_header");
    write(&headers, "pristine", &header);
    let mut old = header.clone();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    write(&headers, "version-1", &old);
    write(&headers, "truncated-header", &header[..100]);
    // The segment_header fuzzer's first find: a message expiry so large that
    // computing a deadline overflowed.
    let mut expiry = header.clone();
    let off = std::mem::offset_of!(ringway_layer_shm::layout::Header, message_expiry_ms);
    expiry[off..off + 8].copy_from_slice(&(u64::MAX - 5).to_le_bytes());
    write(&headers, "regression-expiry-overflow", &expiry);
    drop(seg);
    let _ = std::fs::remove_dir_all(&dir);
}
