//! Fuzz target: see `ringway_fuzz::segment_header`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::segment_header(data));
