//! A segment header written by a hostile process.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::segment_header(data));
