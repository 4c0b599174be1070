//! Offline commands and clients over the library. The running service never imports
//! from here; they may use everything.
//!
//! - `simulate`: the loop closing on a simulated world.
//! - `replay`: what rules and the policy would have done over past data.
//! - `client`: the `approvals` / `actions` client of a running service.
//! - `world`: a seeded microservice world (topology, metric behaviour, faults,
//!   distractors) scraped step by step as exporters would be, for the RCA benchmark.
//! - `rca_bench`: `closedloop rca-bench`, AC@k / Avg@5 of the RCA engine against two
//!   baselines on injected faults.

pub mod client;
pub mod rca_bench;
pub mod replay;
pub mod simulate;
pub mod world;
