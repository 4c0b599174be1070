//! Fuzzes the remote-write 2.0 streaming decoder (a decoded request body).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::remote_write(closedloop::ingest::Protocol::V2, data);
});
