//! An annotated CSV body, as InfluxDB answers a Flux query.
//! The invariants are in `arng_fuzz::annotated_csv` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    arng_fuzz::annotated_csv(data);
});
