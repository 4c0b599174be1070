//! Fuzzes the remote-write 1.0 wire reader (a decoded request body).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::remote_write(closedloop::ingest::Protocol::V1, data);
});
