//! The JSON views of the running rules: `/api/v1/rules` and `/api/v1/alerts` in
//! Prometheus's shapes (Grafana's alert list reads them).

use std::collections::BTreeMap;

use serde_json::json;

use super::group::AlertState;
use super::manager::RuleManager;
use super::notifier::rfc3339;
use super::RuleKind;

/// Filters of `/api/v1/rules` (all empty: everything).
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    /// `alert` or `record`.
    pub kind: Option<String>,
    pub rule_names: Vec<String>,
    pub groups: Vec<String>,
    pub files: Vec<String>,
    /// Leave out each alerting rule's `alerts`.
    pub exclude_alerts: bool,
}

impl RuleManager {
    /// `/api/v1/rules` data, filtered as Prometheus filters it.
    pub fn rules_json(&self, f: &RuleFilter) -> serde_json::Value {
        let kind = f.kind.as_deref();
        let running = self.running.lock();
        let mut groups = Vec::new();
        for r in running.values() {
            let g = r.group.lock();
            if (!f.groups.is_empty() && !f.groups.contains(&g.spec.name))
                || (!f.files.is_empty() && !f.files.contains(&g.spec.file.display().to_string()))
            {
                continue;
            }
            let mut rules = Vec::new();
            for rule in &g.rules {
                if !f.rule_names.is_empty() && !f.rule_names.iter().any(|n| n == rule.spec.name()) {
                    continue;
                }
                let health = match (&rule.last_error, rule.evaluations) {
                    (Some(_), _) => "err",
                    (None, 0) => "unknown",
                    _ => "ok",
                };
                let last = if rule.evaluations == 0 {
                    "0001-01-01T00:00:00Z".to_string()
                } else {
                    rfc3339(rule.last_eval_ms)
                };
                let labels: BTreeMap<&str, &str> = rule
                    .spec
                    .labels
                    .iter()
                    .map(|(k, v, _)| (k.as_str(), v.as_str()))
                    .collect();
                let mut o = match &rule.spec.kind {
                    RuleKind::Alert(name) => {
                        if kind == Some("record") {
                            continue;
                        }
                        let alerts: Vec<serde_json::Value> = if f.exclude_alerts {
                            Vec::new()
                        } else {
                            rule.active.values().map(alert_json).collect()
                        };
                        let state = rule
                            .active
                            .values()
                            .map(|a| a.state)
                            .max_by_key(|s| match s {
                                AlertState::Inactive => 0,
                                AlertState::Pending => 1,
                                AlertState::Firing => 2,
                            })
                            .unwrap_or(AlertState::Inactive);
                        let annotations: BTreeMap<&str, &str> = rule
                            .spec
                            .annotations
                            .iter()
                            .map(|(k, v, _)| (k.as_str(), v.as_str()))
                            .collect();
                        json!({
                            "state": state.as_str(),
                            "name": name,
                            "query": rule.spec.expr_text,
                            "duration": rule.spec.for_ms as f64 / 1000.0,
                            "keepFiringFor": rule.spec.keep_firing_for_ms as f64 / 1000.0,
                            "labels": labels,
                            "annotations": annotations,
                            "alerts": alerts,
                            "type": "alerting",
                        })
                    }
                    RuleKind::Record(name) => {
                        if kind == Some("alert") {
                            continue;
                        }
                        json!({
                            "name": name,
                            "query": rule.spec.expr_text,
                            "labels": labels,
                            "type": "recording",
                        })
                    }
                };
                if let Some(m) = o.as_object_mut() {
                    m.insert("health".into(), json!(health));
                    if let Some(e) = &rule.last_error {
                        m.insert("lastError".into(), json!(e));
                    }
                    m.insert("evaluationTime".into(), json!(rule.last_duration_s));
                    m.insert("lastEvaluation".into(), json!(last));
                }
                rules.push(o);
            }
            if rules.is_empty() && (kind.is_some() || !f.rule_names.is_empty()) {
                // Prometheus leaves out groups the filters emptied.
                continue;
            }
            groups.push(json!({
                "name": g.spec.name,
                "file": g.spec.file.display().to_string(),
                "rules": rules,
                "interval": g.interval_ms as f64 / 1000.0,
                "limit": g.spec.limit,
                "evaluationTime": g.last_duration_s,
                "lastEvaluation": if g.iterations == 0 { "0001-01-01T00:00:00Z".to_string() } else { rfc3339(g.last_eval_ms) },
            }));
        }
        json!({ "groups": groups })
    }

    /// `/api/v1/alerts` data: every pending and firing alert.
    pub fn alerts_json(&self) -> serde_json::Value {
        let running = self.running.lock();
        let mut alerts = Vec::new();
        for r in running.values() {
            let g = r.group.lock();
            for rule in &g.rules {
                for a in rule.active.values() {
                    if a.state != AlertState::Inactive {
                        alerts.push(alert_json(a));
                    }
                }
            }
        }
        json!({ "alerts": alerts })
    }
}

fn alert_json(a: &super::group::Alert) -> serde_json::Value {
    let labels: BTreeMap<&str, &str> = a.labels.iter().map(|l| (&*l.name, &*l.value)).collect();
    let annotations: BTreeMap<&str, &str> = a
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut o = json!({
        "labels": labels,
        "annotations": annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at_ms),
        "value": crate::rules::template::go_fmt_g(a.value, None),
    });
    if let (Some(since), AlertState::Firing, Some(m)) =
        (a.clear_since_ms, a.state, o.as_object_mut())
    {
        m.insert("keepFiringSince".into(), json!(rfc3339(since)));
    }
    o
}
