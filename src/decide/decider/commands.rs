//! People's commands: approve, reject, roll back. Each answers once its audit
//! entries are durable; an approval passes the policy and the re-check again.

use serde_json::json;

use super::recovery::check_from_rule;
use super::*;

impl Decider {
    pub(super) fn on_command(&mut self, c: Command, reply: Reply) {
        let r = match c {
            Command::Approve { id, by } => self.approve(id, by, reply),
            Command::Reject { id, by, reason } => self.reject(id, by, reason, reply),
            Command::Rollback { id, by } => self.rollback(id, by, reply),
        };
        if let Err((e, reply)) = r {
            let _ = reply.send(Err(e));
        }
    }

    /// Takes the pending approval `id` for `by` to answer, or says why it cannot:
    /// there is none (not found, or the action is past waiting), or `by` is not
    /// among the rule's `approvers:`.
    fn take_pending(&mut self, id: AuditId, by: &str) -> Result<Pending, DecideError> {
        let Some(p) = self.approvals.get(&id) else {
            return match self.store.action(id) {
                Ok(None) => Err(DecideError::NotFound(id)),
                Ok(Some(r)) => Err(DecideError::Conflict(format!(
                    "action {id} is not waiting for approval: it is {}",
                    r.outcome.as_str()
                ))),
                Err(e) => Err(DecideError::Store(e)),
            };
        };
        if !p.approvers.is_empty() && !p.approvers.iter().any(|a| a == by) {
            return Err(DecideError::Forbidden(format!(
                "{by:?} is not among the rule's approvers ({})",
                p.approvers.join(", ")
            )));
        }
        self.approvals.remove(&id).ok_or(DecideError::NotFound(id))
    }

    fn approve(
        &mut self,
        id: AuditId,
        by: String,
        reply: Reply,
    ) -> Result<(), (DecideError, Reply)> {
        let p = match self.take_pending(id, &by) {
            Ok(p) => p,
            Err(e) => return Err((e, reply)),
        };
        let now = self.clock.now_ms();
        let actor = format!("user:{by}");
        let verdict = self.policy.evaluate(
            &Proposal {
                action: &p.action,
                rule: &p.rule,
                instance: &p.instance,
                labels: &p.labels,
                severity: p.severity,
                cooldown_ms: p.cooldown_ms,
                dry_run: false,
                approval_required: true,
                approval_timeout_ms: None,
                approved: true,
                automatic: true,
            },
            now,
        );
        let approved_event = ev(now, EventKind::Approved, &actor, json!({ "by": by }));
        let case = p.case.clone();
        let by_name = by.clone();
        let closed = move |d: &mut Decider, a: &Applied| {
            ApprovalClosed {
                id: a.id,
                how: "approved",
                by: Some(&by_name),
            }
            .emit(&d.metrics);
        };
        match verdict {
            Verdict::Admit { marks } => {
                let check = match &p.case {
                    Some(k) if self.cases.contains_key(k) => Self::check_of(&self.cases[k].trigger),
                    _ => check_from_rule(&p.rule, &p.labels),
                };
                let holds = self.holds(&check);
                if !matches!(holds, Ok(true)) {
                    let reason = match holds {
                        Err(e) => format!("approved, but the re-check failed: {e}"),
                        _ => "approved, but the condition no longer holds".into(),
                    };
                    if let Some(c) = case.as_ref().and_then(|k| self.cases.get_mut(k)) {
                        c.done = true;
                    }
                    self.update(
                        id,
                        ActionUpdate {
                            outcome: Some(Outcome::Cancelled),
                            decided_by: Some(by.clone()),
                            reason: Some(reason.clone()),
                            ..Default::default()
                        },
                        approved_event,
                        case,
                        move |d, a| {
                            closed(d, &a);
                            ActionCancelled {
                                id,
                                reason: &reason,
                            }
                            .emit(&d.metrics);
                            let _ = reply.send(d.record(a.id));
                        },
                    );
                    return Ok(());
                }
                self.policy.record(&marks);
                let kind = p.action.kind();
                let target = p.action.target();
                let action = p.action.clone();
                let expect_uid = p.labels.get("uid").cloned();
                let verify_ms = p.verify_ms;
                self.update_marked(
                    id,
                    ActionUpdate {
                        outcome: Some(Outcome::Executing),
                        decided_by: Some(by.clone()),
                        ..Default::default()
                    },
                    approved_event,
                    marks,
                    case.clone(),
                    move |d, a| {
                        closed(d, &a);
                        let rec = d.record(a.id);
                        d.start(
                            a,
                            action,
                            expect_uid,
                            Running {
                                case,
                                kind,
                                target,
                                verify_ms,
                                check: Some(check),
                            },
                            None,
                        );
                        let _ = reply.send(rec);
                    },
                );
            }
            Verdict::Refuse(r) => {
                let kind = p.action.kind();
                let target = p.action.target();
                let rule = p.rule.clone();
                self.update(
                    id,
                    ActionUpdate {
                        outcome: Some(Outcome::Refused),
                        decided_by: Some(by.clone()),
                        reason: Some(format!("{}: {}", r.reason.as_str(), r.detail)),
                        ..Default::default()
                    },
                    approved_event,
                    case.clone(),
                    move |d, a| {
                        closed(d, &a);
                        ActionRefused {
                            id: Some(a.id),
                            kind,
                            target: &target,
                            rule: &rule,
                            reason: r.reason,
                            detail: &r.detail,
                        }
                        .emit(&d.metrics);
                        let _ = reply.send(d.record(a.id));
                        if let Some(k) = case {
                            if let Some(c) = d.cases.get_mut(&k) {
                                c.busy = Busy::Idle;
                            }
                            d.advance(&k);
                        }
                    },
                );
            }
            Verdict::DryRun { marks, .. } => {
                self.policy.record(&marks);
                let kind = p.action.kind();
                let target = p.action.target();
                let rule = p.rule.clone();
                self.update_marked(
                    id,
                    ActionUpdate {
                        outcome: Some(Outcome::DryRun),
                        decided_by: Some(by.clone()),
                        ..Default::default()
                    },
                    approved_event,
                    marks,
                    case.clone(),
                    move |d, a| {
                        closed(d, &a);
                        ActionDryRun {
                            id: a.id,
                            kind,
                            target: &target,
                            rule: &rule,
                        }
                        .emit(&d.metrics);
                        if let Some(c) = case.and_then(|k| d.cases.get_mut(&k)) {
                            c.busy = Busy::Idle;
                            c.done = true;
                        }
                        let _ = reply.send(d.record(a.id));
                    },
                );
            }
            Verdict::NeedsApproval { .. } => {
                // `approved: true` never asks again; keep it pending if it did.
                self.approvals.insert(id, p);
                return Err((
                    DecideError::Conflict("the policy still asks for approval".into()),
                    reply,
                ));
            }
        }
        Ok(())
    }

    fn reject(
        &mut self,
        id: AuditId,
        by: String,
        reason: String,
        reply: Reply,
    ) -> Result<(), (DecideError, Reply)> {
        let p = match self.take_pending(id, &by) {
            Ok(p) => p,
            Err(e) => return Err((e, reply)),
        };
        let now = self.clock.now_ms();
        let case = p.case.clone();
        if let Some(c) = case.as_ref().and_then(|k| self.cases.get_mut(k)) {
            // A person said no: the rest of the ladder does not run either.
            c.done = true;
        }
        let by2 = by.clone();
        self.update(
            id,
            ActionUpdate {
                outcome: Some(Outcome::Rejected),
                decided_by: Some(by.clone()),
                reason: (!reason.is_empty()).then(|| reason.clone()),
                ..Default::default()
            },
            ev(
                now,
                EventKind::Rejected,
                &format!("user:{by}"),
                json!({ "by": by, "reason": reason }),
            ),
            case.clone(),
            move |d, a| {
                ApprovalClosed {
                    id: a.id,
                    how: "rejected",
                    by: Some(&by2),
                }
                .emit(&d.metrics);
                if let Some(c) = case.and_then(|k| d.cases.get_mut(&k)) {
                    c.busy = Busy::Idle;
                }
                let _ = reply.send(d.record(a.id));
            },
        );
        Ok(())
    }

    fn rollback(
        &mut self,
        id: AuditId,
        by: String,
        reply: Reply,
    ) -> Result<(), (DecideError, Reply)> {
        let rec = match self.store.action(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Err((DecideError::NotFound(id), reply)),
            Err(e) => return Err((DecideError::Store(e), reply)),
        };
        if rec.outcome != Outcome::Succeeded {
            return Err((
                DecideError::Conflict(format!(
                    "only a succeeded action can be rolled back; action {id} is {}",
                    rec.outcome.as_str()
                )),
                reply,
            ));
        }
        if let Some(by_id) = rec.rolled_back_by {
            return Err((
                DecideError::Conflict(format!("action {id} was already rolled back by {by_id}")),
                reply,
            ));
        }
        let Some(undo) = rec.effect.as_ref().and_then(|e| e.undo.clone()) else {
            return Err((
                DecideError::Conflict(format!(
                    "action {id} ({}) has no inverse to run",
                    rec.kind.as_str()
                )),
                reply,
            ));
        };
        let now = self.clock.now_ms();
        RollbackRequested { of: id, by: &by }.emit(&self.metrics);
        let actor = format!("user:{by}");
        let cause = Cause {
            trigger: "rollback".into(),
            rule: rec.cause.rule.clone(),
            labels: rec.cause.labels.clone(),
            instance: String::new(),
            step: rec.cause.step,
        };
        let kind = undo.kind();
        let target = undo.target();
        if !self.assume_handled && !self.executor.handles(&undo) {
            let e = DecideError::Conflict(format!("no actuator is configured for {target}"));
            return Err((e, reply));
        }
        let verdict = self.policy.evaluate(
            &Proposal {
                action: &undo,
                rule: "rollback",
                instance: "",
                labels: &rec.cause.labels,
                severity: Severity::Unknown,
                cooldown_ms: 1,
                dry_run: false,
                approval_required: false,
                approval_timeout_ms: None,
                approved: true,
                automatic: false,
            },
            now,
        );
        let base = NewAction {
            at_ms: now,
            cause,
            action: undo.clone(),
            dry_run: false,
            outcome: Outcome::Refused,
            reason: None,
            approval_expires_ms: None,
            rollback_of: Some(id),
        };
        let detail = json!({ "rollback_of": id.0, "by": by });
        match verdict {
            Verdict::Refuse(r) => {
                let rule = base.cause.rule.clone();
                self.insert(
                    NewAction {
                        reason: Some(format!("{}: {}", r.reason.as_str(), r.detail)),
                        ..base
                    },
                    ev(now, EventKind::Refused, &actor, json!({ "reason": r.reason.as_str(), "detail": r.detail, "rollback_of": id.0 })),
                    Vec::new(),
                    None,
                    move |d, a| {
                        ActionRefused {
                            id: Some(a.id),
                            kind,
                            target: &target,
                            rule: &rule,
                            reason: r.reason,
                            detail: &r.detail,
                        }
                        .emit(&d.metrics);
                        let _ = reply.send(d.record(a.id));
                    },
                );
            }
            Verdict::DryRun { marks, .. } => {
                self.policy.record(&marks);
                let rule = base.cause.rule.clone();
                self.insert(
                    NewAction {
                        dry_run: true,
                        outcome: Outcome::DryRun,
                        ..base
                    },
                    ev(now, EventKind::RollbackRequested, &actor, detail),
                    marks,
                    None,
                    move |d, a| {
                        ActionDryRun {
                            id: a.id,
                            kind,
                            target: &target,
                            rule: &rule,
                        }
                        .emit(&d.metrics);
                        let _ = reply.send(d.record(a.id));
                    },
                );
            }
            Verdict::NeedsApproval { .. } | Verdict::Admit { .. } => {
                let marks = match verdict {
                    Verdict::Admit { marks } => marks,
                    _ => Vec::new(),
                };
                self.policy.record(&marks);
                self.insert(
                    NewAction {
                        outcome: Outcome::Executing,
                        ..base
                    },
                    ev(now, EventKind::RollbackRequested, &actor, detail),
                    marks,
                    None,
                    move |d, a| {
                        let rec = d.record(a.id);
                        d.start(
                            a,
                            undo,
                            None,
                            Running {
                                case: None,
                                kind,
                                target,
                                verify_ms: None,
                                check: None,
                            },
                            None,
                        );
                        let _ = reply.send(rec);
                    },
                );
            }
        }
        Ok(())
    }

    fn record(&self, id: AuditId) -> Result<ActionRecord, DecideError> {
        self.store
            .action(id)
            .map_err(DecideError::Store)?
            .ok_or(DecideError::NotFound(id))
    }
}
