//! The embedded knowledge store: one SQLite file (WAL journal, `synchronous=FULL`,
//! so a commit is on disk when it returns), one connection behind a mutex.
//!
//! Schema (version 1; `PRAGMA user_version` holds it):
//!
//! ```sql
//! CREATE TABLE actions (
//!   id INTEGER PRIMARY KEY,            -- the action's id (AuditId)
//!   created_ms INTEGER NOT NULL,       -- ms since the epoch
//!   updated_ms INTEGER NOT NULL,
//!   trigger TEXT NOT NULL,             -- alert | incident | rollback | escalation
//!   rule TEXT NOT NULL,                -- group/name, or ''
//!   labels TEXT NOT NULL,              -- JSON object: the alert's labels
//!   instance TEXT NOT NULL,            -- the alert instance / incident (dedup key)
//!   step INTEGER NOT NULL,             -- index in the rule's actions list
//!   kind TEXT NOT NULL,                -- restart_pod | scale | clear_cache | notify | …
//!   target TEXT NOT NULL,              -- prod/deployment/web, redis:cache/session:*, …
//!   action TEXT NOT NULL,              -- JSON: the concrete action
//!   dry_run INTEGER NOT NULL,          -- 0 | 1
//!   outcome TEXT NOT NULL,             -- refused | dry_run | pending_approval | rejected |
//!                                      -- expired | cancelled | executing | succeeded |
//!                                      -- failed | unknown
//!   verification TEXT,                 -- NULL | pending | cleared | not_cleared
//!   reason TEXT,                       -- refusal or error
//!   effect TEXT,                       -- JSON: what the actuator did, with its undo
//!   approval_expires_ms INTEGER,
//!   decided_by TEXT,                   -- who approved or rejected
//!   rollback_of INTEGER REFERENCES actions(id),
//!   rolled_back_by INTEGER REFERENCES actions(id),
//!   marks TEXT,                        -- JSON: the policy marks the decision set
//!                                      -- [{scope, key, at_ms, until_ms}]: cooldown,
//!                                      -- rate and blast windows, dedup key
//!   marks_until_ms INTEGER             -- the latest until_ms of them (indexed)
//! );
//! CREATE TABLE audit (
//!   id INTEGER PRIMARY KEY,
//!   action_id INTEGER NOT NULL REFERENCES actions(id),
//!   at_ms INTEGER NOT NULL,
//!   event TEXT NOT NULL,               -- refused | dry_run | approval_requested | approved |
//!                                      -- rejected | approval_expired | cancelled |
//!                                      -- execution_started | succeeded | failed |
//!                                      -- outcome_unknown | observed | verified |
//!                                      -- not_cleared | rollback_requested | escalated
//!   actor TEXT NOT NULL,               -- rule:group/name | user:NAME | policy | system
//!   detail TEXT NOT NULL               -- JSON
//! );
//! CREATE TABLE alert_state (group_key TEXT, rule TEXT, labels TEXT, state TEXT,
//!                           active_at_ms INTEGER, fired_at_ms INTEGER);
//! ```
//!
//! Invariants: every write is one transaction; an intent (a change to `executing`)
//! is accepted only for an action that never ran, enforced in the `UPDATE`'s
//! `WHERE`, so no bug above can execute an action twice.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    ActionQuery, ActionRecord, ActionUpdate, AlertStateRow, Applied, AuditEvent, AuditId, Cause,
    Change, EventKind, IntentReceipt, KnowledgeError, KnowledgeStore, NewEvent, Outcome,
    PolicyMark, Result, Verification,
};
use crate::act::{Action, ActionKind};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS actions (
  id INTEGER PRIMARY KEY,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  trigger TEXT NOT NULL,
  rule TEXT NOT NULL,
  labels TEXT NOT NULL,
  instance TEXT NOT NULL,
  step INTEGER NOT NULL,
  kind TEXT NOT NULL,
  target TEXT NOT NULL,
  action TEXT NOT NULL,
  dry_run INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  verification TEXT,
  reason TEXT,
  effect TEXT,
  approval_expires_ms INTEGER,
  decided_by TEXT,
  rollback_of INTEGER REFERENCES actions(id),
  rolled_back_by INTEGER REFERENCES actions(id),
  marks TEXT,
  marks_until_ms INTEGER
);
CREATE INDEX IF NOT EXISTS actions_marks_until ON actions(marks_until_ms);
CREATE INDEX IF NOT EXISTS actions_outcome ON actions(outcome);
CREATE INDEX IF NOT EXISTS actions_rule ON actions(rule, id);
CREATE INDEX IF NOT EXISTS actions_target ON actions(target, id);
CREATE INDEX IF NOT EXISTS actions_created ON actions(created_ms);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY,
  action_id INTEGER NOT NULL REFERENCES actions(id),
  at_ms INTEGER NOT NULL,
  event TEXT NOT NULL,
  actor TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action_id, id);
CREATE TABLE IF NOT EXISTS alert_state (
  group_key TEXT NOT NULL,
  rule TEXT NOT NULL,
  labels TEXT NOT NULL,
  state TEXT NOT NULL,
  active_at_ms INTEGER NOT NULL,
  fired_at_ms INTEGER
);
";

/// The knowledge store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, its directory too.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| KnowledgeError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Self::init(Connection::open(path)?)
    }

    /// A store in memory (tests, `replay`): nothing survives the process.
    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore> {
        // WAL: readers never block the writer; FULL: each commit is fsync'd.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(KnowledgeError::Corrupt {
                id: 0,
                reason: format!(
                    "schema version {version} is newer than this closedloop's ({SCHEMA_VERSION})"
                ),
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serialising our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn insert_event(tx: &rusqlite::Transaction<'_>, id: i64, e: &NewEvent) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (action_id, at_ms, event, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, e.at_ms, e.kind.as_str(), e.actor, json(&e.detail)],
    )?;
    Ok(())
}

/// The marks column and the latest `until_ms` of a decision's marks.
fn marks_columns(marks: &[PolicyMark]) -> (Option<String>, Option<i64>) {
    if marks.is_empty() {
        return (None, None);
    }
    (Some(json(&marks)), marks.iter().map(|m| m.until_ms).max())
}

fn apply_update(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    u: &ActionUpdate,
    marks: &[PolicyMark],
    at_ms: i64,
) -> Result<()> {
    let intent = u.outcome == Some(Outcome::Executing);
    let mut sets = vec!["updated_ms = ?1".to_string()];
    let mut vals: Vec<rusqlite::types::Value> = vec![at_ms.into()];
    let mut push = |col: &str, v: rusqlite::types::Value| {
        vals.push(v);
        sets.push(format!("{col} = ?{}", vals.len()));
    };
    if let Some(o) = u.outcome {
        push("outcome", o.as_str().to_string().into());
    }
    if let Some(v) = u.verification {
        push("verification", v.as_str().to_string().into());
    }
    if let Some(r) = &u.reason {
        push("reason", r.clone().into());
    }
    if let Some(e) = &u.effect {
        push("effect", json(e).into());
    }
    if let Some(b) = &u.decided_by {
        push("decided_by", b.clone().into());
    }
    if let Some(a) = &u.action {
        push("action", json(a).into());
        push("target", a.target().into());
    }
    if let (Some(m), Some(until)) = marks_columns(marks) {
        push("marks", m.into());
        push("marks_until_ms", until.into());
    }
    vals.push(id.into());
    let mut sql = format!(
        "UPDATE actions SET {} WHERE id = ?{}",
        sets.join(", "),
        vals.len()
    );
    if intent {
        // The one guard against executing twice: only an action that never ran may
        // get an intent.
        sql.push_str(" AND outcome = 'pending_approval'");
    }
    let n = tx.execute(&sql, rusqlite::params_from_iter(vals))?;
    if n == 0 {
        let exists: Option<String> = tx
            .query_row("SELECT outcome FROM actions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        return Err(match exists {
            None => KnowledgeError::NotFound(id),
            Some(o) => KnowledgeError::Conflict {
                id,
                reason: format!("cannot execute: its outcome is already {o}"),
            },
        });
    }
    Ok(())
}

const COLUMNS: &str = "id, created_ms, updated_ms, trigger, rule, labels, instance, step, kind, target, action, dry_run, outcome, verification, reason, effect, approval_expires_ms, decided_by, rollback_of, rolled_back_by";

fn corrupt(id: i64, what: &str, e: impl std::fmt::Display) -> KnowledgeError {
    KnowledgeError::Corrupt {
        id,
        reason: format!("{what}: {e}"),
    }
}

/// The raw columns of one `actions` row, decoded after the statement ends.
struct RawAction {
    id: i64,
    created_ms: i64,
    updated_ms: i64,
    trigger: String,
    rule: String,
    labels: String,
    instance: String,
    step: i64,
    kind: String,
    target: String,
    action: String,
    dry_run: bool,
    outcome: String,
    verification: Option<String>,
    reason: Option<String>,
    effect: Option<String>,
    approval_expires_ms: Option<i64>,
    decided_by: Option<String>,
    rollback_of: Option<i64>,
    rolled_back_by: Option<i64>,
}

fn raw_action(r: &Row<'_>) -> rusqlite::Result<RawAction> {
    Ok(RawAction {
        id: r.get(0)?,
        created_ms: r.get(1)?,
        updated_ms: r.get(2)?,
        trigger: r.get(3)?,
        rule: r.get(4)?,
        labels: r.get(5)?,
        instance: r.get(6)?,
        step: r.get(7)?,
        kind: r.get(8)?,
        target: r.get(9)?,
        action: r.get(10)?,
        dry_run: r.get(11)?,
        outcome: r.get(12)?,
        verification: r.get(13)?,
        reason: r.get(14)?,
        effect: r.get(15)?,
        approval_expires_ms: r.get(16)?,
        decided_by: r.get(17)?,
        rollback_of: r.get(18)?,
        rolled_back_by: r.get(19)?,
    })
}

impl RawAction {
    fn decode(self) -> Result<ActionRecord> {
        let id = self.id;
        let action: Action =
            serde_json::from_str(&self.action).map_err(|e| corrupt(id, "action", e))?;
        let kind = ActionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == self.kind)
            .ok_or_else(|| corrupt(id, "kind", &self.kind))?;
        Ok(ActionRecord {
            id: AuditId(id),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            cause: Cause {
                trigger: self.trigger,
                rule: self.rule,
                labels: serde_json::from_str(&self.labels).map_err(|e| corrupt(id, "labels", e))?,
                instance: self.instance,
                step: self.step.max(0) as u32,
            },
            kind,
            target: self.target,
            action,
            dry_run: self.dry_run,
            outcome: Outcome::parse(&self.outcome)
                .ok_or_else(|| corrupt(id, "outcome", &self.outcome))?,
            verification: match self.verification {
                None => None,
                Some(v) => {
                    Some(Verification::parse(&v).ok_or_else(|| corrupt(id, "verification", &v))?)
                }
            },
            reason: self.reason,
            effect: match self.effect {
                None => None,
                Some(e) => Some(serde_json::from_str(&e).map_err(|e| corrupt(id, "effect", e))?),
            },
            approval_expires_ms: self.approval_expires_ms,
            decided_by: self.decided_by,
            rollback_of: self.rollback_of.map(AuditId),
            rolled_back_by: self.rolled_back_by.map(AuditId),
        })
    }
}

fn collect(
    st: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<ActionRecord>> {
    let raws: Vec<RawAction> = st
        .query_map(params, raw_action)?
        .collect::<rusqlite::Result<_>>()?;
    raws.into_iter().map(RawAction::decode).collect()
}

impl KnowledgeStore for SqliteStore {
    fn apply(&self, changes: Vec<Change>) -> Result<Vec<Applied>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(changes.len());
        let mut intents = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            match c {
                Change::Insert {
                    action: a,
                    event,
                    marks,
                } => {
                    let (marks_json, marks_until) = marks_columns(marks);
                    tx.prepare_cached(
                        "INSERT INTO actions (created_ms, updated_ms, trigger, rule, labels, instance, step, kind, target, action, dry_run, outcome, reason, approval_expires_ms, rollback_of, marks, marks_until_ms)
                         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                    )?
                    .execute(params![
                        a.at_ms,
                        a.cause.trigger,
                        a.cause.rule,
                        json(&a.cause.labels),
                        a.cause.instance,
                        a.cause.step,
                        a.action.kind().as_str(),
                        a.action.target(),
                        json(&a.action),
                        a.dry_run,
                        a.outcome.as_str(),
                        a.reason,
                        a.approval_expires_ms,
                        a.rollback_of.map(|r| r.0),
                        marks_json,
                        marks_until,
                    ])?;
                    let id = tx.last_insert_rowid();
                    if let (Some(of), Outcome::Executing) = (a.rollback_of, a.outcome) {
                        let n = tx.execute(
                            "UPDATE actions SET rolled_back_by = ?1 WHERE id = ?2 AND rolled_back_by IS NULL",
                            params![id, of.0],
                        )?;
                        if n == 0 {
                            return Err(KnowledgeError::Conflict {
                                id: of.0,
                                reason: "it was already rolled back (or does not exist)".into(),
                            });
                        }
                    }
                    insert_event(&tx, id, event)?;
                    if a.outcome == Outcome::Executing {
                        intents.push(i);
                    }
                    out.push(id);
                }
                Change::Update {
                    id,
                    update,
                    event,
                    marks,
                } => {
                    apply_update(&tx, id.0, update, marks, event.at_ms)?;
                    insert_event(&tx, id.0, event)?;
                    if update.outcome == Some(Outcome::Executing) {
                        intents.push(i);
                    }
                    out.push(id.0);
                }
            }
        }
        tx.commit()?;
        // Durable from here on: the receipts may be handed out.
        let mut applied: Vec<Applied> = out
            .into_iter()
            .map(|id| Applied {
                id: AuditId(id),
                receipt: None,
            })
            .collect();
        for i in intents {
            applied[i].receipt = Some(IntentReceipt::durable(applied[i].id));
        }
        Ok(applied)
    }

    fn action(&self, id: AuditId) -> Result<Option<ActionRecord>> {
        let conn = self.conn.lock();
        let raw = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM actions WHERE id = ?1"),
                [id.0],
                raw_action,
            )
            .optional()?;
        drop(conn);
        raw.map(RawAction::decode).transpose()
    }

    fn events(&self, id: AuditId) -> Result<Vec<AuditEvent>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, action_id, at_ms, event, actor, detail FROM audit WHERE action_id = ?1 ORDER BY id",
        )?;
        let rows: Vec<(i64, i64, i64, String, String, String)> = st
            .query_map([id.0], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(eid, aid, at, ev, actor, detail)| {
                Ok(AuditEvent {
                    id: eid,
                    action_id: AuditId(aid),
                    at_ms: at,
                    kind: EventKind::parse(&ev).ok_or_else(|| corrupt(aid, "event", &ev))?,
                    actor,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| corrupt(aid, "event detail", e))?,
                })
            })
            .collect()
    }

    fn actions(&self, q: &ActionQuery) -> Result<Vec<ActionRecord>> {
        let mut wh = Vec::new();
        let mut vals: Vec<rusqlite::types::Value> = Vec::new();
        let mut cond = |sql: &str, v: rusqlite::types::Value| {
            vals.push(v);
            wh.push(format!("{sql} ?{}", vals.len()));
        };
        if let Some(r) = &q.rule {
            cond("rule =", r.clone().into());
        }
        if let Some(t) = &q.target {
            cond("target =", t.clone().into());
        }
        if let Some(o) = q.outcome {
            cond("outcome =", o.as_str().to_string().into());
        }
        if let Some(k) = q.kind {
            cond("kind =", k.as_str().to_string().into());
        }
        if let Some(f) = q.from_ms {
            cond("created_ms >=", f.into());
        }
        if let Some(t) = q.to_ms {
            cond("created_ms <=", t.into());
        }
        if let Some(b) = q.before {
            cond("id <", b.0.into());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM actions {} ORDER BY id DESC LIMIT {}",
            if wh.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", wh.join(" AND "))
            },
            q.limit.max(1)
        );
        let conn = self.conn.lock();
        let mut st = conn.prepare(&sql)?;
        collect(&mut st, rusqlite::params_from_iter(vals))
    }

    fn actions_in(&self, outcomes: &[Outcome]) -> Result<Vec<ActionRecord>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = outcomes
            .iter()
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        let conn = self.conn.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM actions WHERE outcome IN ({}) ORDER BY id",
            list.join(", ")
        ))?;
        collect(&mut st, [])
    }

    fn marks(&self, now_ms: i64) -> Result<Vec<PolicyMark>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, marks FROM actions WHERE marks_until_ms > ?1 ORDER BY id",
        )?;
        let rows: Vec<(i64, String)> = st
            .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for (id, text) in rows {
            let marks: Vec<PolicyMark> =
                serde_json::from_str(&text).map_err(|e| corrupt(id, "marks", e))?;
            out.extend(marks.into_iter().filter(|m| m.until_ms > now_ms));
        }
        out.sort_by_key(|m| m.at_ms);
        Ok(out)
    }

    fn alert_states(&self) -> Result<Vec<AlertStateRow>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT group_key, rule, labels, state, active_at_ms, fired_at_ms FROM alert_state",
        )?;
        let rows: Vec<(String, String, String, String, i64, Option<i64>)> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(group, rule, labels, state, active_at_ms, fired_at_ms)| {
                Ok(AlertStateRow {
                    labels: serde_json::from_str(&labels)
                        .map_err(|e| corrupt(0, "alert_state labels", e))?,
                    group,
                    rule,
                    state,
                    active_at_ms,
                    fired_at_ms,
                })
            })
            .collect()
    }

    fn replace_alert_states(&self, rows: &[AlertStateRow]) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alert_state", [])?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO alert_state (group_key, rule, labels, state, active_at_ms, fired_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in rows {
                st.execute(params![
                    r.group,
                    r.rule,
                    json(&r.labels),
                    r.state,
                    r.active_at_ms,
                    r.fired_at_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{ObjectKind, ObjectRef, ReplicaBounds, ReplicaChange};
    use crate::knowledge::NewAction;
    use std::collections::BTreeMap;

    fn scale() -> Action {
        Action::Scale {
            workload: ObjectRef {
                kind: ObjectKind::Deployment,
                namespace: "prod".into(),
                name: "web".into(),
            },
            change: ReplicaChange::By(2),
            bounds: ReplicaBounds { min: 1, max: 10 },
        }
    }

    fn new_action(outcome: Outcome) -> NewAction {
        NewAction {
            at_ms: 1_000,
            cause: Cause {
                trigger: "alert".into(),
                rule: "g/HighLatency".into(),
                labels: BTreeMap::from([("job".to_string(), "web".to_string())]),
                instance: "k".into(),
                step: 0,
            },
            action: scale(),
            dry_run: false,
            outcome,
            reason: None,
            approval_expires_ms: None,
            rollback_of: None,
        }
    }

    fn event(kind: EventKind) -> NewEvent {
        NewEvent {
            at_ms: 1_000,
            kind,
            actor: "policy".into(),
            detail: serde_json::json!({}),
        }
    }

    #[test]
    fn an_intent_gets_a_receipt_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let store = SqliteStore::open(&path).unwrap();
        let applied = store
            .apply(vec![
                Change::Insert {
                    action: new_action(Outcome::Refused),
                    event: event(EventKind::Refused),
                    marks: vec![],
                },
                Change::Insert {
                    action: new_action(Outcome::Executing),
                    event: event(EventKind::ExecutionStarted),
                    marks: vec![PolicyMark {
                        scope: "cooldown".into(),
                        key: "k".into(),
                        at_ms: 1_000,
                        until_ms: 61_000,
                    }],
                },
            ])
            .unwrap();
        assert!(applied[0].receipt.is_none());
        let receipt = applied[1].receipt.as_ref().unwrap();
        assert_eq!(receipt.id(), applied[1].id);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let rec = store.action(applied[1].id).unwrap().unwrap();
        assert_eq!(rec.outcome, Outcome::Executing);
        assert_eq!(rec.target, "prod/deployment/web");
        assert_eq!(rec.action, scale());
        assert_eq!(store.marks(2_000).unwrap().len(), 1);
        assert!(store.marks(61_000).unwrap().is_empty());
        // A second intent for an action that already ran is refused by the store.
        let again = store.apply(vec![Change::Update {
            id: applied[1].id,
            update: ActionUpdate {
                outcome: Some(Outcome::Executing),
                ..Default::default()
            },
            event: event(EventKind::ExecutionStarted),
            marks: vec![],
        }]);
        assert!(
            matches!(again, Err(KnowledgeError::Conflict { .. })),
            "{again:?}"
        );
        // ... and the failed batch wrote nothing.
        assert_eq!(store.events(applied[1].id).unwrap().len(), 1);
    }

    #[test]
    fn pending_approval_becomes_executable_once() {
        let store = SqliteStore::in_memory().unwrap();
        let a = store
            .apply(vec![Change::Insert {
                action: new_action(Outcome::PendingApproval),
                event: event(EventKind::ApprovalRequested),
                marks: vec![],
            }])
            .unwrap();
        let id = a[0].id;
        assert_eq!(
            store.actions_in(&[Outcome::PendingApproval]).unwrap().len(),
            1
        );
        let go = || Change::Update {
            id,
            update: ActionUpdate {
                outcome: Some(Outcome::Executing),
                decided_by: Some("alice".into()),
                ..Default::default()
            },
            event: event(EventKind::Approved),
            marks: vec![],
        };
        assert!(store.apply(vec![go()]).unwrap()[0].receipt.is_some());
        assert!(store.apply(vec![go()]).is_err());
        let rec = store.action(id).unwrap().unwrap();
        assert_eq!(rec.decided_by.as_deref(), Some("alice"));
    }

    #[test]
    fn actions_page_with_filters() {
        let store = SqliteStore::in_memory().unwrap();
        for i in 0..25 {
            let mut a = new_action(if i % 2 == 0 {
                Outcome::DryRun
            } else {
                Outcome::Refused
            });
            a.at_ms = i * 1000;
            store
                .apply(vec![Change::Insert {
                    action: a,
                    event: event(EventKind::DryRun),
                    marks: vec![],
                }])
                .unwrap();
        }
        let q = ActionQuery {
            outcome: Some(Outcome::DryRun),
            limit: 5,
            ..Default::default()
        };
        let p1 = store.actions(&q).unwrap();
        assert_eq!(p1.len(), 5);
        assert!(p1.windows(2).all(|w| w[0].id > w[1].id));
        let p2 = store
            .actions(&ActionQuery {
                before: Some(p1[4].id),
                ..q.clone()
            })
            .unwrap();
        assert!(p2[0].id < p1[4].id);
        let ranged = store
            .actions(&ActionQuery {
                from_ms: Some(10_000),
                to_ms: Some(14_000),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ranged.len(), 5);
        let none = store
            .actions(&ActionQuery {
                rule: Some("other".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn alert_state_is_replaced_whole() {
        let store = SqliteStore::in_memory().unwrap();
        let row = |rule: &str| AlertStateRow {
            group: "f;g".into(),
            rule: rule.into(),
            labels: BTreeMap::from([("a".to_string(), "1".to_string())]),
            state: "firing".into(),
            active_at_ms: 5,
            fired_at_ms: Some(6),
        };
        store.replace_alert_states(&[row("A"), row("B")]).unwrap();
        store.replace_alert_states(&[row("C")]).unwrap();
        assert_eq!(store.alert_states().unwrap(), vec![row("C")]);
    }
}
