//! Restart: pick up where a previous process stopped.

use serde_json::json;

use super::*;

impl Decider {
    /// Picks up where a previous process stopped: actions found `executing` become
    /// `unknown` (never re-run) and their targets are read; pending approvals,
    /// verifications and policy marks are loaded.
    pub fn recover(&mut self) {
        let now = self.clock.now_ms();
        match self.store.marks(now) {
            Ok(m) => self.policy.restore(&m),
            Err(e) => tracing::error!(error = %e, "reading policy marks failed"),
        }
        let open = match self.store.actions_in(&[
            Outcome::Executing,
            Outcome::PendingApproval,
            Outcome::Succeeded,
        ]) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reading unfinished actions failed");
                return;
            }
        };
        for rec in open {
            match rec.outcome {
                Outcome::Executing => {
                    let action = rec.action.clone();
                    let (id, kind, target) = (rec.id, rec.kind, rec.target.clone());
                    self.update(
                        rec.id,
                        ActionUpdate {
                            outcome: Some(Outcome::Unknown),
                            reason: Some(
                                "the process stopped while the action ran; it was not re-run"
                                    .into(),
                            ),
                            ..Default::default()
                        },
                        ev(now, EventKind::OutcomeUnknown, "system", json!({})),
                        None,
                        move |d, _| {
                            OutcomeUnknown {
                                id,
                                kind,
                                target: &target,
                            }
                            .emit(&d.metrics);
                            if !d.assume_handled {
                                d.executor.observe(id, action);
                            }
                        },
                    );
                }
                Outcome::PendingApproval => {
                    self.metrics.approvals_pending.inc();
                    self.approvals.insert(
                        rec.id,
                        Pending {
                            case: None,
                            action: rec.action.clone(),
                            rule: rec.cause.rule.clone(),
                            instance: rec.cause.instance.clone(),
                            labels: rec.cause.labels.clone(),
                            severity: rec
                                .cause
                                .labels
                                .get("severity")
                                .map(|s| Severity::parse(s))
                                .unwrap_or(Severity::Unknown),
                            cooldown_ms: self.policy.config().default_cooldown.as_millis(),
                            expires_ms: rec.approval_expires_ms.unwrap_or(now),
                            approvers: Vec::new(),
                            verify_ms: rec
                                .kind
                                .mutates()
                                .then_some(self.policy.config().incidents.verify_for.as_millis()),
                        },
                    );
                }
                Outcome::Succeeded if rec.verification == Some(Verification::Pending) => {
                    self.verifying.insert(
                        (now, rec.id),
                        Verify {
                            id: rec.id,
                            case: None,
                            target: rec.target.clone(),
                            check: check_from_rule(&rec.cause.rule, &rec.cause.labels),
                            retries: 0,
                        },
                    );
                }
                _ => {}
            }
        }
        self.commit();
    }
}

/// The check of an action whose case is gone (after a restart): by its rule's name.
pub(super) fn check_from_rule(rule: &str, labels: &BTreeMap<String, String>) -> Check {
    match rule.rsplit_once('/') {
        Some((group, name)) => Check::Alert {
            group: group.to_string(),
            rule: name.to_string(),
            labels: labels.clone(),
        },
        // Incident ids do not survive a restart: the incident is over for this process.
        None => Check::Incident(u64::MAX),
    }
}
