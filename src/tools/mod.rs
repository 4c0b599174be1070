//! Offline commands built on the runtime's modules. The runtime never imports from
//! here; they may use everything.
//!
//! - `simulate`: the loop closing on a simulated world.
//! - `world`: a seeded microservice world (topology, metric behaviour, faults,
//!   distractors) scraped step by step as exporters would be, for the RCA benchmark.
//! - `rca_bench`: `closedloop rca-bench`, AC@k / Avg@5 of the RCA engine against two
//!   baselines on injected faults.

pub mod rca_bench;
pub mod simulate;
pub mod world;
