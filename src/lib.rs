//! closedloop: a service beside Prometheus that closes the operations loop.
//! See ARCHITECTURE.md for the map of modules and how data flows between them.

pub mod anomaly;
pub mod storage;
