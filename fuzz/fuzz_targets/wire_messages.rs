//! Fuzz target: see `ringway_fuzz::wire_messages`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::wire_messages(data));
