//! A lane's positions and data written by a hostile producer.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::lane_records(data));
