//! Offline tools over the library: the root-cause-analysis benchmark and its
//! simulated world. The runtime never uses this module; it may use everything.
//!
//! - `world`: a seeded microservice world (topology, metric behaviour, faults,
//!   distractors) scraped step by step as exporters would be.
//! - `rca_bench`: `closedloop rca-bench`, AC@k / Avg@5 of the RCA engine against two
//!   baselines on injected faults.

pub mod rca_bench;
pub mod world;
