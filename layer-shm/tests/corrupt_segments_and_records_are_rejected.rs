//! A segment or record that is not what it claims is rejected with an error
//! that says what is wrong; nothing reads out of bounds, panics or hangs.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::config;
use ringway_layer_shm::{Error, Segment};

fn copy_of(seg: &Segment) -> std::path::PathBuf {
    let copy = std::env::temp_dir().join(format!(
        "ringway-test-copy-{}-{}",
        std::process::id(),
        seg.path().file_name().unwrap().to_str().unwrap()
    ));
    std::fs::copy(seg.path(), &copy).unwrap();
    copy
}

fn patch(path: &std::path::Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

#[test]
fn a_file_with_the_wrong_magic_is_not_a_segment() {
    let seg = Segment::create(&config()).unwrap();
    let copy = copy_of(&seg);
    patch(&copy, 0, b"NOTRINGW");
    let err = Segment::open(&copy).err().unwrap();
    std::fs::remove_file(&copy).unwrap();
    assert!(matches!(err, Error::NotASegment(_)), "{err}");
    assert!(err.to_string().contains("not a ringway segment"));
}

#[test]
fn a_segment_of_another_layout_version_is_refused() {
    let seg = Segment::create(&config()).unwrap();
    let copy = copy_of(&seg);
    patch(&copy, 8, &99u32.to_le_bytes());
    let err = Segment::open(&copy).err().unwrap();
    std::fs::remove_file(&copy).unwrap();
    assert!(
        matches!(
            err,
            Error::Version {
                found: 99,
                expected: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("same ringway build"));
}

#[test]
fn a_truncated_segment_is_refused() {
    let seg = Segment::create(&config()).unwrap();
    let copy = copy_of(&seg);
    let f = OpenOptions::new().write(true).open(&copy).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 4096).unwrap();
    let err = Segment::open(&copy).err().unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    f.set_len(100).unwrap();
    let err = Segment::open(&copy).err().unwrap();
    std::fs::remove_file(&copy).unwrap();
    assert!(err.to_string().contains("shorter than its"), "{err}");
}

#[test]
fn a_segment_with_inconsistent_geometry_is_refused() {
    let seg = Segment::create(&config()).unwrap();
    let copy = copy_of(&seg);
    // `lane_bytes` (see layout::Header) set to a non-power of two.
    let off = std::mem::offset_of!(ringway_layer_shm::layout::Header, lane_bytes) as u64;
    patch(&copy, off, &12345u32.to_le_bytes());
    let err = Segment::open(&copy).err().unwrap();
    std::fs::remove_file(&copy).unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("lane_bytes"), "{err}");
}

#[test]
fn an_absurd_expiry_in_the_header_is_refused() {
    // Found by the segment_header fuzzer: a message expiry near u64::MAX
    // made `now + expiry` overflow (in release builds: wrap, and every
    // message would be born expired).
    let seg = Segment::create(&config()).unwrap();
    let copy = copy_of(&seg);
    let off = std::mem::offset_of!(ringway_layer_shm::layout::Header, message_expiry_ms) as u64;
    patch(&copy, off, &(u64::MAX - 5).to_le_bytes());
    let err = Segment::open(&copy).err().unwrap();
    std::fs::remove_file(&copy).unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("message expiry"), "{err}");
}

#[test]
fn a_config_with_an_absurd_expiry_is_refused() {
    let err = Segment::create(&ringway_layer_shm::Config {
        group_expiry: std::time::Duration::from_secs(u64::MAX / 2),
        ..config()
    })
    .err()
    .unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("group_expiry"), "{err}");
}

#[test]
fn a_corrupt_record_is_rejected_and_the_channel_carries_on() {
    let seg = Segment::create(&config()).unwrap();
    let mut rx = seg.endpoint().unwrap();
    let mut tx = seg.endpoint().unwrap();
    tx.send("inbox", b"first").unwrap();
    // A hostile peer overwrites the record header in the only lane (lane 0)
    // with a length far past what was published, through the file itself.
    let data = seg.geometry().layout().lane_data;
    patch(seg.path(), data, &u32::MAX.to_le_bytes());
    let err = rx.try_receive("inbox").err().unwrap();
    assert!(matches!(err, Error::CorruptRecord(_)), "{err}");
    assert!(err.to_string().contains("record of"), "{err}");
    assert_eq!(rx.try_receive("inbox").unwrap(), None);
    tx.send("inbox", b"second").unwrap();
    assert_eq!(
        rx.try_receive("inbox").unwrap().as_deref(),
        Some(&b"second"[..])
    );
}
