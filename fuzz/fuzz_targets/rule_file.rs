//! Fuzzes the rule-file loader (strict and check modes) and its templates.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::rule_file(data);
});
