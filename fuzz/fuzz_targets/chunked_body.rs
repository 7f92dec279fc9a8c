//! Fuzz target: see `ringway_fuzz::chunked_body`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::chunked_body(data));
