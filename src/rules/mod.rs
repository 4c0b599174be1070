//! The rules engine (the loop's Decide stage starts here): Prometheus rule files
//! loaded unchanged plus closedloop's extensions, group scheduling, recording rules,
//! the alert state machine, templates, notification to Alertmanager, and the
//! promtool-compatible `check rules` / `test rules` tools.
//!
//! - `file`: schema, strict parsing, validation with file:line, group and rule.
//! - `template`: the Go text/template subset annotation templates use.
//! - `action`: `actions:` typed at load time, rendered into concrete actions.
//! - `group`: one group's evaluation at one timestamp and the alert state machine.
//! - `transition`: the typed alert transitions handed to the Decide stage.
//! - `manager`: the running rule set and its reloads, with injected dependencies.
//! - `schedule`: one tokio task per group at aligned timestamps; metrics.
//! - `state`: the alert for-state in the knowledge store.
//! - `views`: the `/api/v1/rules` / `/api/v1/alerts` JSON.
//! - `remote`: a group's remote `datasource:`.
//! - `notifier`: Alertmanager API v2 sender (batching, several Alertmanagers).
//! - `unittest`: `closedloop test rules` (promtool's test-file format).
//! - `config`: the `global:`, `alerting:` and `rules:` config sections.
//!
//! Invariants: a rule set is validated whole before it replaces the running one (a
//! bad reload keeps the last good rules); evaluation timestamps are aligned to the
//! group interval and never drift; a missed iteration is counted, never silently
//! skipped; nothing here panics on a user's file or on query results.

pub mod action;
pub mod config;
pub mod file;
pub mod group;
pub mod manager;
pub mod notifier;
mod remote;
mod schedule;
mod state;
pub mod template;
pub mod transition;
pub mod unittest;
mod views;

use std::path::PathBuf;

pub use action::{RenderContext, RuleAction};
pub use file::{load_files, ApprovalPolicy, GroupSpec, LoadOptions, RuleKind, RuleSpec};
pub use group::{Alert, AlertState, Appender, Group, LocalSource, Source};
pub use manager::{RuleDeps, RuleManager, RuleSettings};
pub use transition::{AlertSink, AlertTransition, NoSink, RuleId, Severity, TransitionKind};

/// Why a rule file or rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid YAML for the schema (unknown field, bad duration...).
    #[error("{}:{line}: {reason}", file.display())]
    Yaml {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// A group is invalid.
    #[error("{}:{line}: group {group:?}: {reason}", file.display())]
    Group {
        file: PathBuf,
        line: usize,
        group: String,
        reason: String,
    },
    /// A rule is invalid.
    #[error("{}:{line}: group {group:?}, rule {rule}: {reason}", file.display())]
    Rule {
        file: PathBuf,
        line: usize,
        group: String,
        rule: String,
        reason: String,
    },
    /// The rules engine could not be set up (metrics registration).
    #[error("rules engine: {reason}")]
    Setup { reason: String },
    /// A `rule_files` pattern is not a valid glob.
    #[error("rule_files pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

pub type Result<T, E = RuleError> = std::result::Result<T, E>;
