//! Timers: verifications due and approvals expired, on the injected clock.

use serde_json::json;

use super::*;

impl Decider {
    pub(super) fn tick(&mut self) {
        let now = self.clock.now_ms();
        // Verifications due.
        while let Some((&(due, id), _)) = self.verifying.iter().next() {
            if due > now {
                break;
            }
            let Some(v) = self.verifying.remove(&(due, id)) else {
                break;
            };
            self.verify(v, now);
        }
        // Approvals expired.
        let expired: Vec<AuditId> = self
            .approvals
            .iter()
            .filter(|(_, p)| p.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(p) = self.approvals.remove(&id) else {
                continue;
            };
            let case = p.case.clone();
            self.update(
                id,
                ActionUpdate {
                    outcome: Some(Outcome::Expired),
                    reason: Some("nobody approved it in time".into()),
                    ..Default::default()
                },
                ev(
                    now,
                    EventKind::ApprovalExpired,
                    "system",
                    json!({ "expires_ms": p.expires_ms }),
                ),
                case.clone(),
                move |d, a| {
                    ApprovalClosed {
                        id: a.id,
                        how: "expired",
                        by: None,
                    }
                    .emit(&d.metrics);
                    if let Some(k) = case {
                        if let Some(c) = d.cases.get_mut(&k) {
                            c.busy = Busy::Idle;
                        }
                        d.advance(&k);
                    }
                },
            );
        }
        if now - self.last_prune_ms > 60_000 {
            self.last_prune_ms = now;
            self.policy.prune(now);
            self.metrics.refresh_success_rate(now);
        }
    }

    fn verify(&mut self, mut v: Verify, now: i64) {
        let resolved = v
            .case
            .as_ref()
            .and_then(|k| self.cases.get(k))
            .is_some_and(|c| c.resolved);
        let cleared = if resolved {
            Ok(true)
        } else {
            self.holds(&v.check).map(|h| !h)
        };
        let cleared = match cleared {
            Ok(c) => c,
            Err(e) if v.retries < VERIFY_RETRIES => {
                tracing::warn!(id = v.id.0, error = %e, "verification re-check failed; retrying");
                v.retries += 1;
                self.verifying
                    .insert((now + TICK.as_millis() as i64 * 25, v.id), v);
                return;
            }
            Err(_) => false,
        };
        let (verification, kind) = if cleared {
            (Verification::Cleared, EventKind::Verified)
        } else {
            (Verification::NotCleared, EventKind::NotCleared)
        };
        let case = v.case.clone();
        let target = v.target.clone();
        self.update(
            v.id,
            ActionUpdate {
                verification: Some(verification),
                ..Default::default()
            },
            ev(now, kind, "system", json!({ "cleared": cleared })),
            case.clone(),
            move |d, a| {
                Verified {
                    id: a.id,
                    target: &target,
                    cleared,
                    now_ms: now,
                }
                .emit(&d.metrics);
                if let Some(k) = case {
                    if let Some(c) = d.cases.get_mut(&k) {
                        c.busy = Busy::Idle;
                        if cleared {
                            c.unresolved_failure = false;
                            c.done = true;
                        } else {
                            c.unresolved_failure = true;
                        }
                        if c.done && c.resolved {
                            d.cases.remove(&k);
                            return;
                        }
                    }
                    d.advance(&k);
                }
            },
        );
    }
}
