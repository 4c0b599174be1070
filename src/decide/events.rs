//! Each observable thing the loop does is a small typed event that logs and counts
//! itself here, in one place, instead of log lines and counter bumps spread through
//! the decider.

use std::time::Duration;

use crate::act::ActionKind;
use crate::knowledge::AuditId;

use super::metrics::{DecideMetrics, Intervention, RemediationResult};
use super::policy::RefusalReason;

/// Something that happened: logs itself and updates its metrics.
pub(super) trait Emit {
    fn emit(self, m: &DecideMetrics);
}

pub(super) struct ActionRefused<'a> {
    pub(super) id: Option<AuditId>,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
    pub(super) rule: &'a str,
    pub(super) reason: RefusalReason,
    pub(super) detail: &'a str,
}

impl Emit for ActionRefused<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.refused.with_label_values(&[self.reason.as_str()]).inc();
        tracing::info!(id = ?self.id.map(|i| i.0), action = %self.kind, target = self.target, rule = self.rule, reason = self.reason.as_str(), detail = self.detail, "action refused");
    }
}

pub(super) struct ActionDryRun<'a> {
    pub(super) id: AuditId,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
    pub(super) rule: &'a str,
}

impl Emit for ActionDryRun<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.remediations
            .with_label_values(&[self.kind.as_str(), RemediationResult::DryRun.as_str()])
            .inc();
        tracing::info!(id = self.id.0, action = %self.kind, target = self.target, rule = self.rule, "dry run: action decided, not executed");
    }
}

pub(super) struct ApprovalRequested<'a> {
    pub(super) id: AuditId,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
    pub(super) expires_ms: i64,
}

impl Emit for ApprovalRequested<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.approvals_pending.inc();
        tracing::warn!(id = self.id.0, action = %self.kind, target = self.target, expires = %crate::rules::notifier::rfc3339(self.expires_ms), "action waits for approval: closedloop approvals approve {}", self.id.0);
    }
}

/// An approval left the queue: approved, rejected, expired or cancelled.
pub(super) struct ApprovalClosed<'a> {
    pub(super) id: AuditId,
    pub(super) how: &'a str,
    /// The person, when one decided.
    pub(super) by: Option<&'a str>,
}

impl Emit for ApprovalClosed<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.approvals_pending.dec();
        match self.how {
            "approved" => m
                .human_interventions
                .with_label_values(&[Intervention::Approve.as_str()])
                .inc(),
            "rejected" => m
                .human_interventions
                .with_label_values(&[Intervention::Reject.as_str()])
                .inc(),
            _ => {}
        }
        tracing::info!(
            id = self.id.0,
            by = self.by.unwrap_or(""),
            "approval {}",
            self.how
        );
    }
}

pub(super) struct RollbackRequested<'a> {
    pub(super) of: AuditId,
    pub(super) by: &'a str,
}

impl Emit for RollbackRequested<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.human_interventions
            .with_label_values(&[Intervention::Rollback.as_str()])
            .inc();
        tracing::info!(of = self.of.0, by = self.by, "rollback requested");
    }
}

pub(super) struct ActionCancelled<'a> {
    pub(super) id: AuditId,
    pub(super) reason: &'a str,
}

impl Emit for ActionCancelled<'_> {
    fn emit(self, _: &DecideMetrics) {
        tracing::info!(
            id = self.id.0,
            reason = self.reason,
            "action cancelled before it ran"
        );
    }
}

pub(super) struct ActionStarted<'a> {
    pub(super) id: AuditId,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
    /// Firing (or incident opening) to this start, when no human was waited for.
    pub(super) latency: Option<Duration>,
}

impl Emit for ActionStarted<'_> {
    fn emit(self, m: &DecideMetrics) {
        if let Some(l) = self.latency {
            m.decision_latency.observe(l.as_secs_f64());
        }
        tracing::info!(id = self.id.0, action = %self.kind, target = self.target, "executing action");
    }
}

pub(super) struct ActionFinished<'a> {
    pub(super) id: AuditId,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
    /// The effect's summary, or the error.
    pub(super) result: Result<&'a str, &'a str>,
}

impl Emit for ActionFinished<'_> {
    fn emit(self, m: &DecideMetrics) {
        let r = match self.result {
            Ok(_) => RemediationResult::Succeeded,
            Err(_) => RemediationResult::Failed,
        };
        m.remediations
            .with_label_values(&[self.kind.as_str(), r.as_str()])
            .inc();
        match self.result {
            Ok(s) => {
                tracing::info!(id = self.id.0, action = %self.kind, target = self.target, effect = s, "action succeeded")
            }
            Err(e) => {
                tracing::warn!(id = self.id.0, action = %self.kind, target = self.target, error = e, "action failed")
            }
        }
    }
}

pub(super) struct OutcomeUnknown<'a> {
    pub(super) id: AuditId,
    pub(super) kind: ActionKind,
    pub(super) target: &'a str,
}

impl Emit for OutcomeUnknown<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.remediations
            .with_label_values(&[self.kind.as_str(), RemediationResult::Unknown.as_str()])
            .inc();
        tracing::warn!(id = self.id.0, action = %self.kind, target = self.target, "action was in flight when the process stopped: outcome unknown; it will not be re-run, checking the target");
    }
}

pub(super) struct Verified<'a> {
    pub(super) id: AuditId,
    pub(super) target: &'a str,
    pub(super) cleared: bool,
    pub(super) now_ms: i64,
}

impl Emit for Verified<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.verified(self.now_ms, self.cleared);
        if self.cleared {
            tracing::info!(
                id = self.id.0,
                target = self.target,
                "verified: the condition cleared"
            );
        } else {
            tracing::warn!(
                id = self.id.0,
                target = self.target,
                "verification failed: the condition still holds"
            );
        }
    }
}

pub(super) struct Escalated<'a> {
    pub(super) rule: &'a str,
    pub(super) channel: &'a str,
}

impl Emit for Escalated<'_> {
    fn emit(self, _: &DecideMetrics) {
        tracing::warn!(
            rule = self.rule,
            channel = self.channel,
            "actions exhausted without clearing the condition: escalating"
        );
    }
}

pub(super) struct AuditWriteFailed<'a> {
    pub(super) error: &'a str,
    pub(super) changes: usize,
}

impl Emit for AuditWriteFailed<'_> {
    fn emit(self, m: &DecideMetrics) {
        m.audit_write_failures.inc();
        tracing::error!(
            error = self.error,
            changes = self.changes,
            "audit write failed: the actions it carried will not run"
        );
    }
}

pub(super) struct IntakeDropped {
    pub(super) source: &'static str,
}

impl Emit for IntakeDropped {
    fn emit(self, m: &DecideMetrics) {
        m.intake_dropped.with_label_values(&[self.source]).inc();
        tracing::warn!(
            source = self.source,
            "decider queue full: dropped an input (decide.queue_capacity)"
        );
    }
}
