//! The loop's domain metrics (`closed_loop_*`), registered in the service's registry.
//! Every family is exported with its `# HELP` / `# TYPE` from start: labelled
//! counters are created for every value of their (typed, fixed) label sets before the
//! first event.

use std::collections::VecDeque;

use parking_lot::Mutex;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::act::ActionKind;

use super::policy::RefusalReason;

/// How an executed (or dry-run) action ended: the `result` label of
/// `closed_loop_remediations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemediationResult {
    Succeeded,
    Failed,
    DryRun,
    /// The process died while it ran.
    Unknown,
}

impl RemediationResult {
    pub const ALL: [RemediationResult; 4] = [
        RemediationResult::Succeeded,
        RemediationResult::Failed,
        RemediationResult::DryRun,
        RemediationResult::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemediationResult::Succeeded => "succeeded",
            RemediationResult::Failed => "failed",
            RemediationResult::DryRun => "dry_run",
            RemediationResult::Unknown => "unknown",
        }
    }
}

/// What a human did: the `kind` label of `closed_loop_human_interventions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervention {
    Approve,
    Reject,
    Rollback,
}

impl Intervention {
    pub const ALL: [Intervention; 3] = [
        Intervention::Approve,
        Intervention::Reject,
        Intervention::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intervention::Approve => "approve",
            Intervention::Reject => "reject",
            Intervention::Rollback => "rollback",
        }
    }
}

/// The `closed_loop_*` metrics of Decide and Act.
pub struct DecideMetrics {
    pub remediations: IntCounterVec,
    pub decision_latency: Histogram,
    pub success_rate: Gauge,
    pub mttd: Histogram,
    pub mttr: Histogram,
    pub human_interventions: IntCounterVec,
    pub refused: IntCounterVec,
    pub approvals_pending: IntGauge,
    pub intake_dropped: IntCounterVec,
    pub audit_write_failures: IntCounter,
    /// Verification results within the success-rate window: (time ms, cleared).
    results: Mutex<VecDeque<(i64, bool)>>,
    window_ms: i64,
}

impl DecideMetrics {
    pub fn new(r: &Registry, success_rate_window_ms: i64) -> Result<Self, prometheus::Error> {
        let time_buckets = vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            14400.0,
        ];
        let m = DecideMetrics {
            remediations: IntCounterVec::new(
                Opts::new(
                    "closed_loop_remediations_total",
                    "Actions carried out (or dry-run), by action kind and result.",
                ),
                &["action", "result"],
            )?,
            decision_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "closed_loop_decision_latency_seconds",
                    "Time from an alert turning firing (or an incident opening) to its action's start, without waiting for a human.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0,
                ]),
            )?,
            success_rate: Gauge::new(
                "closed_loop_success_rate",
                "Share of verified actions whose condition cleared within the configured window (decide.success_rate_window); NaN before the first.",
            )?,
            mttd: Histogram::with_opts(
                HistogramOpts::new(
                    "closed_loop_mttd_seconds",
                    "Time to detect: from a condition's first sample (alert activeAt, incident start) to the loop declaring it (firing, incident opened).",
                )
                .buckets(time_buckets.clone()),
            )?,
            mttr: Histogram::with_opts(
                HistogramOpts::new(
                    "closed_loop_mttr_seconds",
                    "Time to recover: from an alert with actions turning firing to its resolution.",
                )
                .buckets(time_buckets),
            )?,
            human_interventions: IntCounterVec::new(
                Opts::new(
                    "closed_loop_human_interventions_total",
                    "Approvals, rejections and rollbacks done by people.",
                ),
                &["kind"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "closed_loop_actions_refused_total",
                    "Actions the policy refused, by reason.",
                ),
                &["reason"],
            )?,
            approvals_pending: IntGauge::new(
                "closed_loop_approvals_pending",
                "Actions waiting for a human's approval.",
            )?,
            intake_dropped: IntCounterVec::new(
                Opts::new(
                    "closed_loop_intake_dropped_total",
                    "Alert transitions and incidents dropped because the decider's queue was full.",
                ),
                &["source"],
            )?,
            audit_write_failures: IntCounter::new(
                "closed_loop_audit_write_failures_total",
                "Knowledge-store writes that failed (the actions of such a write do not run).",
            )?,
            results: Mutex::new(VecDeque::new()),
            window_ms: success_rate_window_ms,
        };
        for k in ActionKind::ALL {
            for res in RemediationResult::ALL {
                m.remediations
                    .with_label_values(&[k.as_str(), res.as_str()]);
            }
        }
        for i in Intervention::ALL {
            m.human_interventions.with_label_values(&[i.as_str()]);
        }
        for reason in RefusalReason::ALL {
            m.refused.with_label_values(&[reason.as_str()]);
        }
        for s in ["alert", "incident"] {
            m.intake_dropped.with_label_values(&[s]);
        }
        m.success_rate.set(f64::NAN);
        r.register(Box::new(m.remediations.clone()))?;
        r.register(Box::new(m.decision_latency.clone()))?;
        r.register(Box::new(m.success_rate.clone()))?;
        r.register(Box::new(m.mttd.clone()))?;
        r.register(Box::new(m.mttr.clone()))?;
        r.register(Box::new(m.human_interventions.clone()))?;
        r.register(Box::new(m.refused.clone()))?;
        r.register(Box::new(m.approvals_pending.clone()))?;
        r.register(Box::new(m.intake_dropped.clone()))?;
        r.register(Box::new(m.audit_write_failures.clone()))?;
        Ok(m)
    }

    /// A verification result at `now_ms`; refreshes the success rate.
    pub fn verified(&self, now_ms: i64, cleared: bool) {
        self.results.lock().push_back((now_ms, cleared));
        self.refresh_success_rate(now_ms);
    }

    /// Recomputes the success rate over the window ending at `now_ms`.
    pub fn refresh_success_rate(&self, now_ms: i64) {
        let mut q = self.results.lock();
        while q.front().is_some_and(|(t, _)| *t < now_ms - self.window_ms) {
            q.pop_front();
        }
        if q.is_empty() {
            self.success_rate.set(f64::NAN);
        } else {
            let ok = q.iter().filter(|(_, c)| *c).count();
            self.success_rate.set(ok as f64 / q.len() as f64);
        }
    }
}
