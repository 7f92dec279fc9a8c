//! Fuzz target: see `ringway_fuzz::lane_records`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::lane_records(data));
