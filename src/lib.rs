//! closedloop: a service beside Prometheus that closes the operations loop.
//! See ARCHITECTURE.md for the map of modules and how data flows between them.

pub mod act;
pub mod anomaly;
pub mod config;
pub mod decide;
pub mod duration;
pub mod http;
pub mod ingest;
pub mod knowledge;
pub mod metrics;
pub mod promql;
pub mod rca;
pub mod rules;
pub mod service;
pub mod storage;
pub mod tools;
