//! The Analyze stage: streaming anomaly detectors scored as samples arrive.
//!
//! A rule group declares detectors ([`DetectorSpec`]); a [`DetectorSet`] holds the
//! built [`Detector`]s, decides once per series which detectors watch it, and is
//! called by ingest with each appended batch. Every detector keeps the state of all
//! its series in struct-of-arrays form (one contiguous `Vec` per state variable,
//! indexed by slot), and its update kernel is a plain loop over the batch's slices.
//! Outputs go back to the store as ordinary series (`anomaly_score`,
//! `anomaly_upper`, `anomaly_lower`, `anomaly_forecast` with a `detector` label plus
//! the source labels); threshold crossings become [`AnomalyEvent`]s, grouped into
//! [`Incidents`]. The `nab` submodule scores the same detectors on the Numenta
//! Anomaly Benchmark.
//!
//! Invariants: no input (NaN, ±Inf, staleness markers, gaps, constant series, out of
//! order samples) panics, allocates per sample, or makes a state or an output
//! non-finite; NaN in an output column only ever means "no output for this sample".
//! Nothing here locks, blocks or does I/O except writing outputs to the store; the
//! caller serialises access (one `Mutex` around a `DetectorSet`).

mod analyzer;
mod detector;
mod holt_winters;
mod incident;
mod iqr;
mod kernel;
pub mod nab;
mod set;
mod spec;
mod threshold;
mod trend;
mod zscore;

pub use analyzer::{Analyzer, IncidentSink, ScoringMetrics};
pub use detector::Detector;
pub use incident::{Incident, IncidentConfig, IncidentMember, Incidents};
pub use kernel::{unit_score, Direction, Outputs};
pub use set::{output_labels, AnomalyEvent, DetectorSet, SeriesBatch, OUTPUT_NAMES};
pub use spec::{selector_matchers, Algorithm, DetectorSpec, OutputKind, PromDuration};

/// A detector declaration that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("detector {detector:?}: {field}: {reason}")]
pub struct SpecError {
    /// The detector's name (may be empty if the name itself is missing).
    pub detector: String,
    /// The field path, e.g. `window` or `members[1].alpha`.
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Errors of the anomaly module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A detector declaration is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Two detectors share a name.
    #[error("detector {0:?} is declared twice")]
    DuplicateName(String),
}

/// Result of this module's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
