//! Root-cause analysis, the second half of the Analyze stage: which component is
//! the cause of an incident, how sure we are, how the fault travelled, and the
//! evidence for it.
//!
//! - `topology`: components (services, workloads, pods, nodes), dependency edges,
//!   units; `discover`: building it from the configuration and from metrics in the
//!   store (service graphs, Istio, Linkerd, kube-state-metrics); `render`: JSON, DOT
//!   and Mermaid views.
//! - `identity`: which component a series or an alert belongs to.
//! - `incident`: grouping anomaly events and alerts on nearby components into
//!   incidents.
//! - `signals`: a component's series as signals, and each signal's robust change
//!   (onset and size); `rank`: the single-fault Bayesian ranking and the two
//!   baselines; `analysis`: one incident's analysis and its report.
//! - `engine`: the running stage (timers, the analyzer's feed, caches, metrics).
//!
//! Invariants: analysis never runs on the ingest request path and never holds a
//! store lock while computing; every size (components, edges, incidents,
//! candidates, series per candidate, grid points) is bounded by configuration; the
//! ranking is deterministic for the same store contents.
//!
//! Must never: act — RCA only informs Decide (a typed [`RcaReport`]) and the alerts'
//! annotations.

pub mod analysis;
pub mod config;
pub mod discover;
pub mod engine;
pub mod identity;
pub mod incident;
pub mod rank;
pub mod render;
pub mod signals;
pub mod topology;

pub use analysis::{RankedCause, RcaReport};
pub use config::RcaConfig;
pub use engine::{IncidentView, RcaEngine};
pub use topology::{ComponentId, ComponentKind, Topology};

/// Errors of the RCA stage.
#[derive(Debug, thiserror::Error)]
pub enum RcaError {
    /// The metrics could not be registered.
    #[error("registering RCA metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// No open incident has this id (it never existed or has resolved).
    #[error("incident {0} not found (it may have resolved)")]
    NotFound(u64),
    /// RCA is switched off in the configuration.
    #[error("root-cause analysis is disabled (rca.enabled: false)")]
    Disabled,
}

/// Result of this module's fallible operations.
pub type Result<T, E = RcaError> = std::result::Result<T, E>;
