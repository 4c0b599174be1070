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
                            // Prometheus lists active alerts only (`ActiveAlerts`):
                            // resolved ones kept for resending are left out.
                            rule.active
                                .values()
                                .filter(|a| a.state != AlertState::Inactive)
                                .map(alert_json)
                                .collect()
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
                            "query": rule.spec.expr.to_string(),
                            "duration": seconds(rule.spec.for_ms),
                            "keepFiringFor": seconds(rule.spec.keep_firing_for_ms),
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
                            "query": rule.spec.expr.to_string(),
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
                "interval": seconds(g.interval_ms),
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
        "value": go_fmt_e(a.value),
    });
    if let (Some(since), AlertState::Firing, Some(m)) =
        (a.clear_since_ms, a.state, o.as_object_mut())
    {
        m.insert("keepFiringSince".into(), json!(rfc3339(since)));
    }
    o
}

/// A duration in seconds as Go's JSON encoder writes the float: `15`, `0.5`.
fn seconds(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// An alert's value as Prometheus's API writes it: `strconv.FormatFloat(v, 'e', -1,
/// 64)`, the shortest digits in exponent form (`1e+00`, `2.5e-01`).
fn go_fmt_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Rust's `{:e}` is also the shortest round-tripping form: `1.5e-7`, `1e0`.
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_values_are_formatted_as_prometheus() {
        assert_eq!(go_fmt_e(1.0), "1e+00");
        assert_eq!(go_fmt_e(0.25), "2.5e-01");
        assert_eq!(go_fmt_e(-1234.5), "-1.2345e+03");
        assert_eq!(go_fmt_e(1e-300), "1e-300");
        assert_eq!(go_fmt_e(f64::INFINITY), "+Inf");
    }
}
