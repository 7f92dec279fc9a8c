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

/// A request head from a client. Parsing must not panic; a parsed head must
/// be a prefix of the input that parses the same on its own (nothing after a
/// head changes it); a refused head must map to a client-error status (or
/// 501/505), never to 500 or to no answer. A [`HeadParser`] fed the input a
/// byte at a time, or in two reads split where the first byte says, must
/// give the same result as parsing it whole, and examine at most five times
/// as many bytes as it was fed (linear work, however the head arrives).
///
/// [`HeadParser`]: ringway_server::h1::HeadParser
pub fn request_head(input: &[u8]) {
    use ringway_server::h1::{parse_head, status_for, HeadParser, Limits, RequestHead};
    let limits = Limits::default();
    let whole = parse_head(input, &limits);
    match &whole {
        Ok(Some((head, n))) => {
            let n = *n;
            assert!(n > 0 && n <= input.len(), "consumed {n} of {}", input.len());
            let (alone, m) = parse_head(&input[..n], &limits)
                .expect("a parsed head parses on its own")
                .expect("a parsed head is complete on its own");
            assert_eq!(m, n);
            assert_eq!(format!("{alone:?}"), format!("{head:?}"));
        }
        Ok(None) => {}
        Err(e) => match status_for(e) {
            Some(s) if (400..500).contains(&s) || s == 501 || s == 505 => {}
            other => panic!("{e:?} maps to {other:?}"),
        },
    }
    let whole = format!("{whole:?}");
    // Feeds `input` in reads ending at `ends` (the last at the input's end).
    let feed = |ends: &mut dyn Iterator<Item = usize>| {
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        let mut fed = 0;
        let mut result = Ok(None);
        for end in ends {
            fed = end;
            result = parser.parse(&input[..end], &limits, &mut head);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        assert!(
            parser.work() <= 5 * fed as u64,
            "{} bytes examined for {fed} fed",
            parser.work()
        );
        format!("{:?}", result.map(|r| r.map(|n| (head, n))))
    };
    let dribbled = feed(&mut (0..=input.len()));
    assert_eq!(whole, dribbled, "fed whole and fed byte by byte");
    let split = usize::from(input.first().copied().unwrap_or(0)).min(input.len());
    let halves = feed(&mut [split, input.len()].into_iter());
    assert_eq!(
        whole, halves,
        "fed whole and fed in two reads split at {split}"
    );
}

/// A chunked request body, fed to the decoder in two pieces split where the
/// first input byte says, the way bytes arrive from a socket. The result
/// (body bytes, whether it ended, whether it was refused) must not depend on
/// where the split fell.
pub fn chunked_body(input: &[u8]) {
    use ringway_server::h1::{BodyDecoder, BodyFraming, Limits};
    let Some((&split, body)) = input.split_first() else {
        return;
    };
    let feed = |pieces: &[&[u8]]| {
        let mut dec = BodyDecoder::with_limits(BodyFraming::Chunked, &Limits::default());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            let n = match dec.decode(&buf, &mut out) {
                Ok(n) => n,
                Err(e) => return (out, Err(format!("{e:?}"))),
            };
            assert!(n <= buf.len());
            buf.drain(..n);
        }
        (out, Ok(dec.is_done()))
    };
    let split = usize::from(split).min(body.len());
    let (whole, whole_end) = feed(&[body]);
    let (parts, parts_end) = feed(&[&body[..split], &body[split..]]);
    assert_eq!(
        whole_end.is_err(),
        parts_end.is_err(),
        "{whole_end:?} vs {parts_end:?}"
    );
    if whole_end.is_ok() {
        assert_eq!(whole_end, parts_end);
        assert_eq!(
            whole, parts,
            "the body depends on where the bytes were split"
        );
    }
}

/// A message from a worker (to a reactor) or to a worker: decoding arbitrary
/// bytes must return an error or a message, never panic.
pub fn wire_messages(input: &[u8]) {
    use ringway_server::asgi::wire;
    let _ = wire::decode_to_server(input);
    let _ = wire::decode_to_worker(input);
    let _ = wire::peek_to_worker(input);
}
