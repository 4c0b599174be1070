//! The safety policy: given a proposed action and the time, say whether it may run.
//! Checks, in order: allow-list, cooldown per (rule, action, target), de-duplication
//! per alert instance or incident, the global and per-target rate limits, the blast
//! radius (pods of one workload restarted within a window), then dry-run and human
//! approval. The re-check of the condition happens right before execution, in the
//! decider, because it needs a query.
//!
//! Invariants: the policy is a pure function of its configuration, its marks and the
//! `now_ms` it is given — it never reads a clock, so the simulation and `replay` run
//! it on their own time. Marks of dry-run decisions are kept apart: they shape later
//! dry-run decisions (so a dry run shows the cooldowns and limits a real run would
//! meet) but never restrict real actions.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::act::{Action, ActionKind};
use crate::knowledge::PolicyMark;
use crate::rules::Severity;

use super::config::DecideConfig;

const HOUR_MS: i64 = 3_600_000;

/// Why the policy refused an action: the `reason` label of
/// `closed_loop_actions_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not in the allow-lists.
    NotAllowed,
    /// The same rule acted on the same target too recently.
    Cooldown,
    /// This alert instance or incident already had this action.
    Duplicate,
    /// Too many actions in the last hour.
    RateLimitGlobal,
    /// Too many actions on this target in the last hour.
    RateLimitTarget,
    /// Too many pods of one workload restarted within the window.
    BlastRadius,
    /// The action's templates did not render to a valid target.
    InvalidTarget,
    /// No actuator is configured for it (no Redis, endpoint or channel so named).
    NotConfigured,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::NotAllowed,
        RefusalReason::Cooldown,
        RefusalReason::Duplicate,
        RefusalReason::RateLimitGlobal,
        RefusalReason::RateLimitTarget,
        RefusalReason::BlastRadius,
        RefusalReason::InvalidTarget,
        RefusalReason::NotConfigured,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NotAllowed => "not_allowed",
            RefusalReason::Cooldown => "cooldown",
            RefusalReason::Duplicate => "duplicate",
            RefusalReason::RateLimitGlobal => "rate_limit_global",
            RefusalReason::RateLimitTarget => "rate_limit_target",
            RefusalReason::BlastRadius => "blast_radius",
            RefusalReason::InvalidTarget => "invalid_target",
            RefusalReason::NotConfigured => "not_configured",
        }
    }
}

/// A refusal with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

/// An action the loop proposes, with what the policy needs to judge it.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    pub action: &'a Action,
    /// `group/name`, or `incident` / `rollback`.
    pub rule: &'a str,
    /// The alert instance or incident (dedup key).
    pub instance: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub severity: Severity,
    /// The rule's cooldown (ms).
    pub cooldown_ms: i64,
    /// Dry-run asked by the rule or the action (the global switch is the policy's).
    pub dry_run: bool,
    /// The rule asks for approval.
    pub approval_required: bool,
    /// The rule's approval timeout (ms), if it sets one.
    pub approval_timeout_ms: Option<i64>,
    /// A human already approved it (or asked for it: a rollback).
    pub approved: bool,
    /// Cooldown and dedup apply (not to a human's rollback).
    pub automatic: bool,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Refuse(Refusal),
    /// Record and count it, do not execute. `approval`: it would have waited for a
    /// human.
    DryRun {
        marks: Vec<PolicyMark>,
        approval: bool,
    },
    /// Wait for a human until `expires_ms`.
    NeedsApproval {
        expires_ms: i64,
    },
    /// May run (after the re-check); `marks` go to the store with the intent.
    Admit {
        marks: Vec<PolicyMark>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    at_ms: i64,
    until_ms: i64,
    dry: bool,
}

/// The policy and the marks it keeps (cooldowns, dedup keys, rate and blast windows).
pub struct Policy {
    cfg: DecideConfig,
    marks: HashMap<(String, String), VecDeque<Mark>>,
}

const DRY_SUFFIX: &str = ":dry";

impl Policy {
    pub fn new(cfg: DecideConfig) -> Self {
        Policy {
            cfg,
            marks: HashMap::new(),
        }
    }

    pub fn config(&self) -> &DecideConfig {
        &self.cfg
    }

    /// Replaces the configuration (a reload); marks are kept.
    pub fn set_config(&mut self, cfg: DecideConfig) {
        self.cfg = cfg;
    }

    /// Takes marks read back from the knowledge store (at start).
    pub fn restore(&mut self, marks: &[PolicyMark]) {
        self.record(marks);
    }

    /// Adds marks of a decision (call right after the verdict, so the next
    /// decision of the same batch sees them).
    pub fn record(&mut self, marks: &[PolicyMark]) {
        for m in marks {
            let (scope, dry) = match m.scope.strip_suffix(DRY_SUFFIX) {
                Some(s) => (s, true),
                None => (m.scope.as_str(), false),
            };
            self.marks
                .entry((scope.to_string(), m.key.clone()))
                .or_default()
                .push_back(Mark {
                    at_ms: m.at_ms,
                    until_ms: m.until_ms,
                    dry,
                });
        }
    }

    /// Drops marks that ended before `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        self.marks.retain(|_, q| {
            q.retain(|m| m.until_ms > now_ms);
            !q.is_empty()
        });
    }

    /// Marks in force at `now_ms` under (scope, key): the dry ones count only for a
    /// dry decision.
    fn active(
        &self,
        scope: &str,
        key: &str,
        now_ms: i64,
        dry: bool,
    ) -> impl Iterator<Item = &Mark> {
        self.marks
            .get(&(scope.to_string(), key.to_string()))
            .into_iter()
            .flatten()
            .filter(move |m| m.until_ms > now_ms && m.at_ms <= now_ms && (dry || !m.dry))
    }

    /// Whether the global dry-run (or the proposal's own) applies.
    pub fn is_dry_run(&self, p: &Proposal<'_>) -> bool {
        self.cfg.dry_run || p.dry_run
    }

    /// Judges a proposal at `now_ms`.
    pub fn evaluate(&self, p: &Proposal<'_>, now_ms: i64) -> Verdict {
        let dry = self.is_dry_run(p);
        let kind = p.action.kind();
        let target = p.action.target();
        if let Err(detail) = self.allowed(p.action) {
            return Verdict::Refuse(Refusal {
                reason: RefusalReason::NotAllowed,
                detail,
            });
        }
        let cooldown_key = format!("{}|{}|{}", p.rule, kind.as_str(), target);
        if p.automatic {
            if let Some(m) = self.active("cooldown", &cooldown_key, now_ms, dry).last() {
                return Verdict::Refuse(Refusal {
                    reason: RefusalReason::Cooldown,
                    detail: format!(
                        "{} on {target} by {} is in cooldown until {}",
                        kind,
                        p.rule,
                        rfc3339(m.until_ms)
                    ),
                });
            }
        }
        let dedup_key = format!("{}|{}|{}", p.instance, kind.as_str(), target);
        if p.automatic
            && !p.instance.is_empty()
            && self
                .active("dedup", &dedup_key, now_ms, dry)
                .next()
                .is_some()
        {
            return Verdict::Refuse(Refusal {
                reason: RefusalReason::Duplicate,
                detail: format!("{kind} on {target} already decided for this alert"),
            });
        }
        let limited = kind.mutates();
        if limited {
            let global = self.active("rate", "*", now_ms, dry).count() as u32;
            if global >= self.cfg.rate_limit.global_per_hour {
                return Verdict::Refuse(Refusal {
                    reason: RefusalReason::RateLimitGlobal,
                    detail: format!(
                        "{global} actions in the last hour (decide.rate_limit.global_per_hour: {})",
                        self.cfg.rate_limit.global_per_hour
                    ),
                });
            }
            let on_target = self.active("rate", &target, now_ms, dry).count() as u32;
            if on_target >= self.cfg.rate_limit.per_target_per_hour {
                return Verdict::Refuse(Refusal {
                    reason: RefusalReason::RateLimitTarget,
                    detail: format!(
                        "{on_target} actions on {target} in the last hour (decide.rate_limit.per_target_per_hour: {})",
                        self.cfg.rate_limit.per_target_per_hour
                    ),
                });
            }
        }
        let workload = blast_key(p.action, p.labels);
        if let Some(w) = &workload {
            let n = self.active("blast", w, now_ms, dry).count() as u32;
            if n >= self.cfg.blast_radius.max_pods_per_workload {
                return Verdict::Refuse(Refusal {
                    reason: RefusalReason::BlastRadius,
                    detail: format!(
                        "{n} pods of {w} restarted within {} (decide.blast_radius.max_pods_per_workload: {})",
                        crate::duration::PromDuration(self.cfg.blast_radius.window.as_millis()),
                        self.cfg.blast_radius.max_pods_per_workload
                    ),
                });
            }
        }
        let approval = !p.approved && self.needs_approval(p);
        let mark = |scope: &str, key: &str, until_ms: i64| PolicyMark {
            scope: if dry {
                format!("{scope}{DRY_SUFFIX}")
            } else {
                scope.to_string()
            },
            key: key.to_string(),
            at_ms: now_ms,
            until_ms,
        };
        let mut marks = Vec::new();
        if p.automatic {
            marks.push(mark(
                "cooldown",
                &cooldown_key,
                now_ms + p.cooldown_ms.max(1),
            ));
            if !p.instance.is_empty() {
                marks.push(mark(
                    "dedup",
                    &dedup_key,
                    now_ms + self.cfg.dedup_window.as_millis(),
                ));
            }
        }
        if limited {
            marks.push(mark("rate", "*", now_ms + HOUR_MS));
            marks.push(mark("rate", &target, now_ms + HOUR_MS));
        }
        if let Some(w) = &workload {
            marks.push(mark(
                "blast",
                w,
                now_ms + self.cfg.blast_radius.window.as_millis(),
            ));
        }
        if dry {
            return Verdict::DryRun { marks, approval };
        }
        if approval {
            let timeout = p
                .approval_timeout_ms
                .unwrap_or(self.cfg.approval.default_timeout.as_millis());
            return Verdict::NeedsApproval {
                expires_ms: now_ms + timeout,
            };
        }
        Verdict::Admit { marks }
    }

    /// Whether a human must approve (notifications never wait).
    fn needs_approval(&self, p: &Proposal<'_>) -> bool {
        let kind = p.action.kind();
        if !kind.mutates() {
            return false;
        }
        p.approval_required
            || self.cfg.approval.always_for.contains(&kind)
            || self
                .cfg
                .approval
                .min_severity
                .is_some_and(|min| p.severity != Severity::Unknown && p.severity >= min)
    }

    /// The allow-list check; the error says which list to extend.
    pub fn allowed(&self, action: &Action) -> Result<(), String> {
        let kind = action.kind();
        if kind == ActionKind::Notify {
            return Ok(());
        }
        let a = &self.cfg.allow;
        if !a.actions.contains(&kind) {
            return Err(format!("action {kind} is not in decide.allow.actions"));
        }
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        if let Some(o) = action.object() {
            if !any(&a.namespaces, &o.namespace) {
                return Err(format!(
                    "namespace {:?} is not in decide.allow.namespaces",
                    o.namespace
                ));
            }
            return Ok(());
        }
        match action {
            Action::CordonNode { node, .. } if !any(&a.nodes, node) => {
                return Err(format!("node {node:?} is not in decide.allow.nodes"));
            }
            Action::ClearCache { pattern, .. }
                if !a.redis_patterns.iter().any(|p| pattern_covers(p, pattern)) =>
            {
                return Err(format!(
                    "Redis pattern {pattern:?} is not covered by decide.allow.redis_patterns"
                ));
            }
            Action::HttpConfig { endpoint, .. }
                if !a.http_endpoints.iter().any(|e| e == endpoint) =>
            {
                return Err(format!(
                    "endpoint {endpoint:?} is not in decide.allow.http_endpoints"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether the allowed pattern `allowed` covers the pattern `wanted`: equal, or
/// `allowed` ends in `*` and `wanted` starts with what precedes it.
fn pattern_covers(allowed: &str, wanted: &str) -> bool {
    allowed == wanted
        || allowed
            .strip_suffix('*')
            .is_some_and(|prefix| wanted.starts_with(prefix))
}

/// The workload a pod restart counts against: the alert's `owner_name` /
/// `deployment` / `statefulset` / `daemonset` label if it has one, else the pod's
/// name without its generated suffix (`web-7d9f8c6b5-x2x4q` → `web`,
/// `db-2` → `db`).
pub fn blast_key(action: &Action, labels: &BTreeMap<String, String>) -> Option<String> {
    let Action::RestartPod { pod, .. } = action else {
        return None;
    };
    let owner = ["owner_name", "deployment", "statefulset", "daemonset"]
        .iter()
        .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()));
    let workload = match owner {
        Some(o) => o.clone(),
        None => pod_workload(&pod.name),
    };
    Some(format!("{}/{}", pod.namespace, workload))
}

fn pod_workload(pod: &str) -> String {
    // Kubernetes generates name suffixes from this alphabet (no vowels, no 0/1/3),
    // so a word like `exporter` is never taken for one.
    let generated = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len())
            && s.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    };
    let parts: Vec<&str> = pod.split('-').collect();
    let n = parts.len();
    // Deployment: <name>-<pod-template-hash>-<5 chars>.
    if n >= 3 && generated(parts[n - 1], 5..=5) && generated(parts[n - 2], 6..=10) {
        return parts[..n - 2].join("-");
    }
    // StatefulSet: <name>-<ordinal>; DaemonSet: <name>-<5 chars>.
    if n >= 2
        && (parts[n - 1].bytes().all(|b| b.is_ascii_digit()) || generated(parts[n - 1], 5..=5))
    {
        return parts[..n - 1].join("-");
    }
    pod.to_string()
}

fn rfc3339(ms: i64) -> String {
    crate::rules::notifier::rfc3339(ms)
}

#[cfg(test)]
mod tests;
