//! Fuzzes PromQL parse and evaluation over a small store (raw text or generated expressions).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::promql(data);
});
