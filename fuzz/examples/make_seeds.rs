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
    // The lock word holds an owner id, not a pointer: garbage there names
    // no live owner (taken over), or the very endpoint the harness attaches
    // (slot 0, generation 0), which must not wait for itself.
    let lock = std::mem::offset_of!(ringway_layer_shm::layout::Header, lock);
    for (name, word) in [
        ("lock-garbage", 0x1234_5677u32),
        ("lock-names-first-endpoint", 1),
    ] {
        let mut held = header.clone();
        held[lock..lock + 4].copy_from_slice(&word.to_le_bytes());
        write(&headers, name, &held);
    }
    drop(seg);
    let _ = std::fs::remove_dir_all(&dir);

    let heads = root.join("request_head");
    for (name, req) in [
        ("get", &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        (
            "post-length",
            b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "post-chunked",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "pipelined",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("http10", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        (
            "smuggle-cl-te",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
        ("bare-lf", b"GET / HTTP/1.1\nHost: a\n\n"),
        (
            "absolute-form",
            b"GET http://a/x%20y?z HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ),
        ("partial", b"GET /partial HTTP/1.1\r\nHost: a\r\nX-Long: aaaa"),
        (
            "absolute-form-http10",
            b"GET http://a:8080/x HTTP/1.0\r\nX-A: 1\r\n\r\n",
        ),
        (
            "empty-lines-first",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ] {
        write(&heads, name, req);
    }
    // A head of 90 fields of 400 bytes: each within its limit, the head
    // past the 32 KiB total (431).
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..90 {
        big.extend_from_slice(format!("x-{i:02}: ").as_bytes());
        big.extend(std::iter::repeat_n(b'v', 392));
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"\r\n");
    write(&heads, "head-over-32k", &big);

    // First byte: where the body is split in two.
    let chunked = root.join("chunked_body");
    for (name, body) in [
        (
            "two-chunks",
            &b"\x07a\r\nhello, wor\r\n3\r\nld!\r\n0\r\n\r\n"[..],
        ),
        (
            "extensions",
            b"\x04\x35;name=value;x\r\nhello\r\n0;end\r\n\r\n",
        ),
        (
            "trailers",
            b"\x0a2\r\nhi\r\n0\r\nChecksum: abc\r\nX: y\r\n\r\n",
        ),
        ("unfinished", b"\x03ff\r\nnot all of it"),
        ("bad-size", b"\x01zz\r\nhello\r\n"),
    ] {
        write(&chunked, name, body);
    }

    use ringway_server::asgi::wire;
    let wires = root.join("wire_messages");
    let mut m = Vec::new();
    let route = wire::Route {
        reactor: 1,
        conn: 7,
        req: 3,
    };
    let headers = vec![(b"content-type".to_vec(), b"text/plain".to_vec())];
    wire::encode_start(&mut m, 3, 200, &headers, false, Some((b"Hello", false)));
    write(&wires, "response-start", &m);
    wire::encode_response_body(&mut m, 3, b"more", true);
    write(&wires, "response-body", &m);
    wire::encode_trailers(&mut m, 3, &headers, false);
    write(&wires, "trailers", &m);
    wire::encode_pathsend(&mut m, 3, b"/etc/hostname");
    write(&wires, "pathsend", &m);
    wire::encode_app_error(&mut m, 3, "RuntimeError: boom");
    write(&wires, "app-error", &m);
    wire::encode_body(&mut m, route, b"chunk", true);
    write(&wires, "request-body", &m);
    wire::encode_disconnect(&mut m, route);
    write(&wires, "disconnect", &m);
    wire::encode_worker_died(&mut m, 2);
    write(&wires, "worker-died", &m);
}
