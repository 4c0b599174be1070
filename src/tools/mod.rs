//! Offline commands and clients over the library: `replay` (what rules and the
//! policy would have done over past data), `simulate` (the loop closing on a
//! simulated world) and the `approvals` / `actions` client of a running service.
//! The running service never imports from here.

pub mod client;
pub mod replay;
pub mod simulate;
