//! Fuzz target: see `ringway_fuzz::request_head`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::request_head(data));
