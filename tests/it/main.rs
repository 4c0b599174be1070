//! Integration tests: the real closedloop binary against real peers on loopback.
//! One test binary (ripgrep-style) so the test build stays fast.

mod anomaly;
mod answers;
mod bad_input;
mod closed_loop;
mod common;
mod compat_api;
mod crash;
mod dashboard;
mod decide;
mod e2e;
mod hardening;
mod kube_double;
mod kubernetes;
mod prometheus;
mod promql_diff;
mod rca;
mod real_material;
mod rules;
mod service;
mod simulate;
