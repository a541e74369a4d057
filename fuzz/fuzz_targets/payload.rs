//! A reading or heartbeat payload, as received on entrepot/nord/s1/v1 and entrepot/heartbeat/nord.
//! The invariants are in `arng_fuzz::payload` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    arng_fuzz::payload(data);
});
