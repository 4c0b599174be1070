//! Offline commands and clients over the library: `replay` (what rules and the
//! policy would have done over past data) and the `approvals` / `actions` client of
//! a running service. The running service never uses this module.

pub mod client;
pub mod replay;
