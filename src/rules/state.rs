//! The rules' alert for-state across restarts: pending and firing alerts are saved
//! to the knowledge store every 5 s when something changed and on shutdown, and
//! restored at start, so `for` survives a restart.
//!
//! Migration: before the knowledge store, the state lived in a JSON file
//! (`rules.state_file`). When that file exists and the store holds no alert state,
//! it is imported once and renamed to `<file>.imported`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::knowledge::AlertStateRow;

use super::group::{AlertState, SavedAlert};
use super::manager::{group_key, RuleManager};

/// Saved alerts: group key (`file;name`) → rule name → alerts.
pub(super) type SavedState = BTreeMap<String, BTreeMap<String, Vec<SavedAlert>>>;

fn from_rows(rows: Vec<AlertStateRow>) -> SavedState {
    let mut s = SavedState::new();
    for r in rows {
        let state = match r.state.as_str() {
            "firing" => AlertState::Firing,
            "pending" => AlertState::Pending,
            _ => continue,
        };
        s.entry(r.group)
            .or_default()
            .entry(r.rule)
            .or_default()
            .push(SavedAlert {
                labels: r.labels,
                state,
                active_at_ms: r.active_at_ms,
                fired_at_ms: r.fired_at_ms,
            });
    }
    s
}

fn to_rows(s: &SavedState) -> Vec<AlertStateRow> {
    let mut rows = Vec::new();
    for (group, rules) in s {
        for (rule, alerts) in rules {
            for a in alerts {
                rows.push(AlertStateRow {
                    group: group.clone(),
                    rule: rule.clone(),
                    labels: a.labels.clone(),
                    state: a.state.as_str().to_string(),
                    active_at_ms: a.active_at_ms,
                    fired_at_ms: a.fired_at_ms,
                });
            }
        }
    }
    rows
}

impl RuleManager {
    /// The saved state, importing the legacy state file once if the store is empty.
    pub(super) fn read_state(&self, legacy: Option<&Path>) -> SavedState {
        let Some(store) = &self.state else {
            return SavedState::new();
        };
        let rows = match store.alert_states() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading saved alert state failed; starting without it");
                return SavedState::new();
            }
        };
        if !rows.is_empty() {
            return from_rows(rows);
        }
        let Some(file) = legacy.filter(|f| f.exists()) else {
            return SavedState::new();
        };
        let imported: SavedState = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable legacy rule state file");
                return SavedState::new();
            }
        };
        match store.replace_alert_states(&to_rows(&imported)) {
            Ok(()) => {
                let done = file.with_extension("imported");
                if let Err(e) = std::fs::rename(file, &done) {
                    tracing::warn!(file = %file.display(), error = %e, "could not rename the imported rule state file");
                }
                tracing::info!(file = %file.display(), "imported the rule state file into the knowledge store");
            }
            Err(e) => {
                tracing::warn!(error = %e, "importing the rule state file failed");
            }
        }
        imported
    }

    /// Writes the pending/firing alerts of every group to the knowledge store.
    pub fn save_state(&self) -> crate::knowledge::Result<()> {
        let Some(store) = &self.state else {
            return Ok(());
        };
        let mut state = SavedState::new();
        for r in self.running.lock().values() {
            let g = r.group.lock();
            let mut rules = BTreeMap::new();
            for rule in &g.rules {
                let snap = rule.snapshot();
                if !snap.is_empty() {
                    rules.insert(rule.spec.name().to_string(), snap);
                }
            }
            if !rules.is_empty() {
                state.insert(group_key(&g.spec), rules);
            }
        }
        store.replace_alert_states(&to_rows(&state))
    }
}

/// Saves the alert state every few seconds when something changed.
pub(super) async fn save_state_loop(mgr: std::sync::Weak<RuleManager>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(m) = mgr.upgrade() else { return };
        if m.shared.dirty.swap(false, Ordering::SeqCst) {
            let m2 = m.clone();
            let r = tokio::task::spawn_blocking(move || m2.save_state()).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "saving the rules' alert state failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let mut s = SavedState::new();
        s.entry("f;g".into()).or_default().insert(
            "A".into(),
            vec![SavedAlert {
                labels: BTreeMap::from([("x".to_string(), "1".to_string())]),
                state: AlertState::Firing,
                active_at_ms: 1,
                fired_at_ms: Some(2),
            }],
        );
        assert_eq!(from_rows(to_rows(&s)).len(), 1);
        assert_eq!(to_rows(&from_rows(to_rows(&s))), to_rows(&s));
    }
}
