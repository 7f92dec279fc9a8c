//! Harnesses for the fuzz targets in `fuzz_targets/`, kept here so that the
//! committed corpora are replayed by `cargo test` on stable as well
//! (`tests/corpus.rs`). Each harness takes arbitrary bytes and panics only
//! if ringway misbehaves on them.

use std::sync::atomic::{AtomicU64, Ordering};

use ringway_layer_shm::ring::{
    Consumer, Lane, LaneCtrl, LaneLimits, MAX_TAG, RECORD_HEADER, SLACK,
};

/// Bytes of the lane the `lane_records` harness builds.
const LANE_BYTES: usize = 256;

/// A lane whose positions and data area a hostile producer wrote: the
/// first 8 bytes are `head`, the next 8 `tail`, the rest the data area
/// (zero-filled to 256 bytes). Popping must never panic or read out of
/// bounds, every record must fit the lane, nothing may be read after a
/// rejected record, and the lane must read as drained within a bounded
/// number of pops per call.
pub fn lane_records(input: &[u8]) {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        let src = input.get(i * 8..).unwrap_or(&[]);
        let n = src.len().min(8);
        w[..n].copy_from_slice(&src[..n]);
        u64::from_le_bytes(w)
    };
    let ctrl = LaneCtrl::default();
    ctrl.head.store(word(0), Ordering::Relaxed);
    ctrl.tail.store(word(1), Ordering::Relaxed);
    let data: Vec<AtomicU64> = (0..LANE_BYTES / 8)
        .map(|i| AtomicU64::new(word(2 + i)))
        .collect();
    let limits = LaneLimits {
        max_msgs: 8,
        max_record: LANE_BYTES - SLACK,
    };
    let lane = Lane::new(&ctrl, &data, limits);
    assert!(lane.queued() <= 8, "counts are clamped to the record limit");
    let _ = lane.has_record();
    let mut c = Consumer::new(lane);
    let mut out = Vec::new();
    let mut rejected = false;
    for _ in 0..64 {
        match c.take(&mut out) {
            Ok(Some(meta)) => {
                assert!(!rejected, "a record was read after a rejected one");
                assert!(meta.tag_len <= MAX_TAG && meta.tag_len <= out.len());
                assert!(
                    RECORD_HEADER + out.len() <= LANE_BYTES,
                    "record larger than the lane"
                );
            }
            Ok(None) => {}
            Err(_) => {
                assert!(!rejected, "rejected twice");
                rejected = true;
            }
        }
    }
    c.release();
}

/// A segment file whose header a hostile process wrote: the first 4096
/// bytes of a real segment are replaced by the input. Opening it must fail
/// with an error or succeed on a consistent geometry, never panic; if it
/// opens, attaching an endpoint and a send and receive must not panic.
pub fn segment_header(input: &[u8]) {
    use ringway_layer_shm::{Config, Segment};
    let dir = std::env::temp_dir().join(format!("ringway-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let cfg = Config {
        dir: dir.clone(),
        channels: 4,
        lanes: 4,
        members: 4,
        lane_bytes: 4096,
        max_message: 1024,
        ..Config::default()
    };
    let seg = Segment::create(&cfg).expect("creating the pristine segment");
    let copy = dir.join("copy");
    std::fs::copy(seg.path(), &copy).expect("copying the segment");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        let n = input.len().min(4096);
        f.write_all_at(&input[..n], 0).unwrap();
    }
    if let Ok(opened) = Segment::open(&copy) {
        let g = opened.geometry();
        assert!(
            g.validate().is_ok(),
            "opened a segment with an invalid geometry"
        );
        if let Ok(mut ep) = opened.endpoint() {
            let _ = ep.send("fuzz", b"x");
            let _ = ep.try_receive("fuzz");
        }
    }
    let _ = std::fs::remove_file(&copy);
}
