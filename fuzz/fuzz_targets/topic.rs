//! An MQTT topic (and, split at a newline, a filter and a topic for the wildcard matcher).
//! The invariants are in `arng_fuzz::topic` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    arng_fuzz::topic(data);
});
