//! Replays every committed corpus file through its harness, on stable:
//! inputs the fuzzers found interesting (and any crash they reproduced,
//! once fixed) stay regression tests.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        harness(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn lane_records_corpus_replays_cleanly() {
    replay("lane_records", ringway_fuzz::lane_records);
}

#[test]
fn segment_header_corpus_replays_cleanly() {
    replay("segment_header", ringway_fuzz::segment_header);
}

#[test]
fn request_head_corpus_replays_cleanly() {
    replay("request_head", ringway_fuzz::request_head);
}

#[test]
fn chunked_body_corpus_replays_cleanly() {
    replay("chunked_body", ringway_fuzz::chunked_body);
}

#[test]
fn wire_messages_corpus_replays_cleanly() {
    replay("wire_messages", ringway_fuzz::wire_messages);
}
