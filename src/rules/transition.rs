//! The typed hand-off from the rules engine to whatever acts on alerts: every
//! pending→firing and firing→resolved change of an alert becomes an
//! [`AlertTransition`], handed to an [`AlertSink`] the service wires up (the Decide
//! stage). The rules engine knows nothing of what the sink does.
//!
//! Invariants: a sink never blocks rule evaluation (it queues or drops, and counts
//! what it drops); a transition carries everything needed to decide — labels,
//! annotations, value, severity, the rule's typed actions, cooldown and approval —
//! so nothing downstream reads rule files or raw YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::file::RuleSpec;

/// An alert's severity, from its `severity` label. Prometheus leaves the label
/// free-form; the usual names map to a level, anything else is `Unknown` (which no
/// severity-based policy ever treats as high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Unknown,
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Reads a `severity` label value (`critical`, `page`, `error`/`high` → critical;
    /// `warning`/`warn`/`medium` → warning; `info`/`low`/`none` → info).
    pub fn parse(s: &str) -> Severity {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" | "page" | "error" | "high" | "fatal" | "emergency" => Severity::Critical,
            "warning" | "warn" | "medium" | "major" | "minor" => Severity::Warning,
            "info" | "informational" | "low" | "none" | "notice" => Severity::Info,
            _ => Severity::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which way an alert changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// Pending → firing (its `for` elapsed).
    Firing,
    /// Firing → resolved.
    Resolved,
}

/// Identifies a rule across reloads: file, group, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleId {
    pub file: PathBuf,
    pub group: String,
    pub name: String,
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.group, self.name)
    }
}

/// One change of one alert.
#[derive(Debug, Clone)]
pub struct AlertTransition {
    pub kind: TransitionKind,
    pub rule: RuleId,
    /// The rule as loaded: typed actions, cooldown, approval, dry-run.
    pub spec: Arc<RuleSpec>,
    /// The alert's labels (with `alertname`).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub severity: Severity,
    /// When the condition first held (ms since the epoch).
    pub active_at_ms: i64,
    /// The evaluation timestamp of the change (ms since the epoch).
    pub at_ms: i64,
    /// The group's evaluation interval (ms): verification windows are counted in it.
    pub interval_ms: i64,
    /// When the change was seen (monotonic): decision latency runs from here.
    pub seen: Instant,
}

impl AlertTransition {
    /// A stable identity of the alert: the rule and its labels.
    pub fn fingerprint(&self) -> u64 {
        crate::storage::labels::hash_pairs(
            std::iter::once(("\u{0}rule", self.rule.to_string().as_str()))
                .chain(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
    }
}

/// Receives alert transitions; must return at once (queue or drop, never block).
pub trait AlertSink: Send + Sync {
    fn send(&self, transition: AlertTransition);
}

/// A sink that discards everything (no Decide stage wired, `test rules`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSink;

impl AlertSink for NoSink {
    fn send(&self, _: AlertTransition) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert_eq!(Severity::parse("page"), Severity::Critical);
        assert_eq!(Severity::parse("Warning"), Severity::Warning);
        assert_eq!(Severity::parse("sev42"), Severity::Unknown);
        assert!(Severity::Critical > Severity::Warning);
        assert!(Severity::Unknown < Severity::Info);
    }
}
