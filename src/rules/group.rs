//! One rule group's evaluation at one timestamp: rules in file order, recording
//! results appended to the store before the next rule runs (so later rules see them
//! at the same timestamp), and the alert state machine of each alerting rule.
//!
//! The state machine follows Prometheus (`rules/alerting.go`): a new result is
//! *pending*; it turns *firing* once it has been active for `for`; when its series
//! leaves the result a pending alert is dropped and a firing one becomes *inactive*
//! (resolved) — unless `keep_firing_for` holds it. closedloop adds two optional
//! holds that plain files never trigger: `resolve_for` (the condition must stay
//! clear this long) and `resolve_expr` (while the alert's labels are in this
//! expression's result, it keeps firing). Resolved alerts stay 15 minutes so they
//! are sent as resolved.
//!
//! Invariants: evaluation is synchronous and never blocks on I/O except through the
//! [`Source`] it is given; it never panics on query results; `ALERTS` /
//! `ALERTS_FOR_STATE` and recording series that disappear get a staleness marker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::Expr;
use serde::{Deserialize, Serialize};

use crate::promql::{Engine, QueryError, Sample, Value};
use crate::storage::{LabelSet, Store, METRIC_NAME, STALE_NAN_BITS};

use super::file::{GroupSpec, RuleKind, RuleSpec};
use super::template::{expand_or_error, QuerySample, TemplateData};
use super::transition::{AlertTransition, RuleId, Severity, TransitionKind};

/// How long a resolved alert is kept (and re-sent as resolved).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where a group's expressions are evaluated.
pub trait Source: Send + Sync {
    /// Evaluates `expr` (text `text`) as an instant query at `t_ms`.
    fn query(&self, expr: &Expr, text: &str, t_ms: i64) -> Result<Vec<Sample>, QueryError>;
}

/// The local store through the engine (`S`: `&Store` or `Arc<Store>`).
pub struct LocalSource<S> {
    pub engine: Engine,
    pub store: S,
}

impl<S: std::ops::Deref<Target = Store> + Send + Sync> Source for LocalSource<S> {
    fn query(&self, expr: &Expr, text: &str, t_ms: i64) -> Result<Vec<Sample>, QueryError> {
        let r = self
            .engine
            .instant_query_expr(&*self.store, expr, text, t_ms)?;
        value_to_samples(r.value, t_ms)
    }
}

/// Where recording results, `ALERTS` / `ALERTS_FOR_STATE` and staleness markers go.
pub trait Appender: Send + Sync {
    /// Appends one sample. A refused append (older than the series' newest sample,
    /// over the series limit) only loses this point; the next evaluation writes again.
    fn append(&self, labels: &LabelSet, t_ms: i64, v: f64);
}

impl Appender for Store {
    fn append(&self, labels: &LabelSet, t_ms: i64, v: f64) {
        let _ = Store::append(self, labels, t_ms, v);
    }
}

/// A rule result as samples: a scalar is one sample without labels.
pub fn value_to_samples(v: Value, t_ms: i64) -> Result<Vec<Sample>, QueryError> {
    match v {
        Value::Vector(s) => Ok(s),
        Value::Scalar(_, v) => Ok(vec![Sample {
            labels: LabelSet::default(),
            t: t_ms,
            v,
        }]),
        other => Err(QueryError::Execution(format!(
            "rule result is a {}, not an instant vector or scalar",
            other.result_type()
        ))),
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: Vec<(String, String)>,
    pub state: AlertState,
    pub value: f64,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub last_sent_ms: Option<i64>,
    pub valid_until_ms: i64,
    /// When the condition was first seen clear while held firing.
    pub clear_since_ms: Option<i64>,
}

/// Context shared by every rule of a group evaluation.
pub struct EvalContext<'a> {
    pub source: &'a dyn Source,
    /// Where recording results and `ALERTS` go.
    pub appender: &'a dyn Appender,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
}

/// A rule with its runtime state.
#[derive(Debug)]
pub struct Rule {
    pub spec: Arc<RuleSpec>,
    pub active: HashMap<LabelSet, Alert>,
    /// Series written at the previous evaluation (to mark the vanished stale).
    prev_series: HashSet<LabelSet>,
    pub last_error: Option<String>,
    pub last_eval_ms: i64,
    pub last_duration_s: f64,
    pub evaluations: u64,
    pub failures: u64,
    /// Alerts that turned firing or resolved since the last [`Rule::take_transitions`].
    changes: Vec<(TransitionKind, LabelSet)>,
}

impl Rule {
    pub fn new(spec: Arc<RuleSpec>) -> Self {
        Rule {
            spec,
            active: HashMap::new(),
            changes: Vec::new(),
            prev_series: HashSet::new(),
            last_error: None,
            last_eval_ms: 0,
            last_duration_s: 0.0,
            evaluations: 0,
            failures: 0,
        }
    }

    pub fn is_alert(&self) -> bool {
        matches!(self.spec.kind, RuleKind::Alert(_))
    }

    /// Evaluates the rule at `ts`; on error the rule keeps its alert state.
    pub fn eval(
        &mut self,
        group: &GroupSpec,
        ts: i64,
        ctx: &EvalContext<'_>,
    ) -> Result<(), String> {
        let start = Instant::now();
        let r = match &self.spec.kind {
            RuleKind::Record(name) => {
                let name = name.clone();
                self.eval_record(&name, group, ts, ctx)
            }
            RuleKind::Alert(name) => {
                let name = name.clone();
                self.eval_alert(&name, group, ts, ctx)
            }
        };
        self.evaluations += 1;
        self.last_eval_ms = ts;
        self.last_duration_s = start.elapsed().as_secs_f64();
        match &r {
            Ok(()) => self.last_error = None,
            Err(e) => {
                self.failures += 1;
                self.last_error = Some(e.clone());
            }
        }
        r
    }

    fn eval_record(
        &mut self,
        name: &str,
        group: &GroupSpec,
        ts: i64,
        ctx: &EvalContext<'_>,
    ) -> Result<(), String> {
        let q_ts = ts - group.query_offset_ms.unwrap_or(0);
        let samples = ctx
            .source
            .query(&self.spec.expr, &self.spec.expr_text, q_ts)
            .map_err(|e| e.to_string())?;
        if group.limit > 0 && samples.len() as u64 > group.limit {
            return Err(format!(
                "exceeded limit of {} with {} series",
                group.limit,
                samples.len()
            ));
        }
        let mut out: Vec<(LabelSet, f64)> = Vec::with_capacity(samples.len());
        let mut seen = HashSet::with_capacity(samples.len());
        for s in samples {
            let mut m: BTreeMap<&str, &str> =
                s.labels.iter().map(|l| (&*l.name, &*l.value)).collect();
            m.insert(METRIC_NAME, name);
            for (k, v) in &group.labels {
                m.insert(k, v);
            }
            for (k, v, _) in &self.spec.labels {
                m.insert(k, v);
            }
            let ls = LabelSet::from_pairs(m.into_iter().filter(|(_, v)| !v.is_empty()));
            if !seen.insert(ls.clone()) {
                return Err(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                );
            }
            out.push((ls, s.v));
        }
        // Results carry the query time, as Prometheus writes them (ts - offset).
        self.write(ctx.appender, q_ts, out);
        Ok(())
    }

    /// Writes this evaluation's series and marks the previous ones that vanished.
    fn write(&mut self, store: &dyn Appender, ts: i64, series: Vec<(LabelSet, f64)>) {
        let mut now = HashSet::with_capacity(series.len());
        for (ls, v) in series {
            store.append(&ls, ts, v);
            now.insert(ls);
        }
        let stale = f64::from_bits(STALE_NAN_BITS);
        for old in self.prev_series.iter() {
            if !now.contains(old) {
                store.append(old, ts, stale);
            }
        }
        self.prev_series = now;
    }

    /// The alert labels and annotations for one result sample.
    fn alert_labels(
        &self,
        name: &str,
        group: &GroupSpec,
        s: &Sample,
        ctx: &EvalContext<'_>,
        ts: i64,
        with_annotations: bool,
    ) -> (LabelSet, Vec<(String, String)>) {
        // Templates see the sample's labels as they are, the metric name included
        // (`smpl.Metric.Map()` in Prometheus); the alert's own labels drop it.
        let sample_labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect();
        // `query` in a template: an instant query at the evaluation time.
        let query = |text: &str| -> Result<Vec<QuerySample>, String> {
            let expr = crate::promql::parse(text).map_err(|e| e.to_string())?;
            let samples = ctx
                .source
                .query(&expr, text, ts)
                .map_err(|e| e.to_string())?;
            Ok(samples
                .into_iter()
                .map(|s| QuerySample {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| (l.name.to_string(), l.value.to_string()))
                        .collect(),
                    value: s.v,
                })
                .collect())
        };
        let mut base = sample_labels.clone();
        base.remove(METRIC_NAME);
        let data = TemplateData {
            labels: sample_labels,
            external_labels: ctx.external_labels.clone(),
            external_url: ctx.external_url.to_string(),
            value: s.v,
            query: Some(&query),
        };
        let mut m = base;
        for (k, v) in &group.labels {
            m.insert(k.clone(), v.clone());
        }
        for (k, _, t) in &self.spec.labels {
            m.insert(k.clone(), expand_or_error(t, &data));
        }
        m.insert("alertname".into(), name.to_string());
        let ls = LabelSet::from_pairs(m.iter().filter(|(_, v)| !v.is_empty()));
        let annotations = if with_annotations {
            self.spec
                .annotations
                .iter()
                .map(|(k, _, t)| (k.clone(), expand_or_error(t, &data)))
                .collect()
        } else {
            Vec::new()
        };
        (ls, annotations)
    }

    fn eval_alert(
        &mut self,
        name: &str,
        group: &GroupSpec,
        ts: i64,
        ctx: &EvalContext<'_>,
    ) -> Result<(), String> {
        let q_ts = ts - group.query_offset_ms.unwrap_or(0);
        let samples = ctx
            .source
            .query(&self.spec.expr, &self.spec.expr_text, q_ts)
            .map_err(|e| e.to_string())?;
        let mut results: HashMap<LabelSet, (Vec<(String, String)>, f64)> =
            HashMap::with_capacity(samples.len());
        for s in &samples {
            let (ls, ann) = self.alert_labels(name, group, s, ctx, ts, true);
            if results.insert(ls, (ann, s.v)).is_some() {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
        }
        for (ls, (ann, v)) in results.iter() {
            match self.active.get_mut(ls) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = *v;
                    a.annotations = ann.clone();
                }
                _ => {
                    self.active.insert(
                        ls.clone(),
                        Alert {
                            labels: ls.clone(),
                            annotations: ann.clone(),
                            state: AlertState::Pending,
                            value: *v,
                            active_at_ms: ts,
                            fired_at_ms: None,
                            resolved_at_ms: None,
                            last_sent_ms: None,
                            valid_until_ms: 0,
                            clear_since_ms: None,
                        },
                    );
                }
            }
        }
        // resolve_expr is evaluated only when a firing alert left the result.
        let needs_resolve = self.spec.resolve_expr.is_some()
            && self
                .active
                .iter()
                .any(|(ls, a)| a.state == AlertState::Firing && !results.contains_key(ls));
        let still_bad: HashSet<LabelSet> = match (&self.spec.resolve_expr, needs_resolve) {
            (Some((text, expr)), true) => {
                let rs = ctx
                    .source
                    .query(expr, text, q_ts)
                    .map_err(|e| format!("resolve_expr: {e}"))?;
                rs.iter()
                    .map(|s| self.alert_labels(name, group, s, ctx, ts, false).0)
                    .collect()
            }
            _ => HashSet::new(),
        };
        let hold = self.spec.keep_firing_for_ms.max(self.spec.resolve_for_ms);
        let mut remove = Vec::new();
        for (ls, a) in self.active.iter_mut() {
            if !results.contains_key(ls) {
                let mut keep = false;
                if a.state == AlertState::Firing {
                    if still_bad.contains(ls) {
                        keep = true;
                        a.clear_since_ms = None;
                    } else if hold > 0 {
                        let since = *a.clear_since_ms.get_or_insert(ts);
                        keep = ts - since < hold;
                    }
                }
                if a.state == AlertState::Pending
                    || a.resolved_at_ms
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    remove.push(ls.clone());
                }
                if a.state != AlertState::Inactive && !keep {
                    if a.state == AlertState::Firing {
                        self.changes.push((TransitionKind::Resolved, ls.clone()));
                    }
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = Some(ts);
                }
                if !keep {
                    continue;
                }
            } else {
                a.clear_since_ms = None;
            }
            if a.state == AlertState::Pending && ts - a.active_at_ms >= self.spec.for_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(ts);
                self.changes.push((TransitionKind::Firing, ls.clone()));
            }
        }
        for ls in remove {
            self.active.remove(&ls);
        }
        if group.limit > 0 {
            let n = self
                .active
                .values()
                .filter(|a| a.state != AlertState::Inactive)
                .count() as u64;
            if n > group.limit {
                self.active.clear();
                return Err(format!("exceeded limit of {} with {n} alerts", group.limit));
            }
        }
        // ALERTS and ALERTS_FOR_STATE for pending and firing alerts.
        let mut series = Vec::new();
        for a in self.active.values() {
            if a.state == AlertState::Inactive {
                continue;
            }
            let mut pairs: Vec<(&str, &str)> =
                a.labels.iter().map(|l| (&*l.name, &*l.value)).collect();
            pairs.push((METRIC_NAME, "ALERTS_FOR_STATE"));
            series.push((
                LabelSet::from_pairs(pairs.iter().copied()),
                (a.active_at_ms / 1000) as f64,
            ));
            pairs.pop();
            pairs.push((METRIC_NAME, "ALERTS"));
            pairs.push(("alertstate", a.state.as_str()));
            series.push((LabelSet::from_pairs(pairs), 1.0));
        }
        self.write(ctx.appender, q_ts, series);
        Ok(())
    }

    /// Alerts due to be sent to Alertmanager at `ts` (Prometheus's
    /// `needsSending`), marking them sent.
    pub fn alerts_to_send(
        &mut self,
        ts: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if a.state == AlertState::Pending {
                continue;
            }
            let due = match (a.resolved_at_ms, a.last_sent_ms) {
                (Some(r), Some(s)) if r > s => true,
                (_, None) => true,
                (_, Some(s)) => s + resend_delay_ms <= ts,
            };
            if !due {
                continue;
            }
            a.last_sent_ms = Some(ts);
            a.valid_until_ms = ts + 4 * resend_delay_ms.max(interval_ms);
            out.push(a.clone());
        }
        out
    }
}

impl Rule {
    /// The label sets of the pending and firing alerts: the instances for which the
    /// rule's condition holds (what Decide's re-check asks of an alerting rule).
    pub fn holding_labels(&self) -> Vec<BTreeMap<String, String>> {
        self.active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .map(|a| {
                a.labels
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect()
            })
            .collect()
    }

    /// The alerts that turned firing or resolved since the last call, as typed
    /// transitions for the alert sink. `group` and `interval_ms` describe the rule's
    /// group.
    pub fn take_transitions(
        &mut self,
        group: &GroupSpec,
        interval_ms: i64,
    ) -> Vec<AlertTransition> {
        if self.changes.is_empty() {
            return Vec::new();
        }
        let RuleKind::Alert(name) = &self.spec.kind else {
            self.changes.clear();
            return Vec::new();
        };
        let rule = RuleId {
            file: group.file.clone(),
            group: group.name.clone(),
            name: name.clone(),
        };
        let seen = Instant::now();
        let mut out = Vec::with_capacity(self.changes.len());
        for (kind, ls) in self.changes.drain(..) {
            let Some(a) = self.active.get(&ls) else {
                continue;
            };
            let labels: BTreeMap<String, String> = a
                .labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            let severity = labels
                .get("severity")
                .map(|s| Severity::parse(s))
                .unwrap_or(Severity::Unknown);
            out.push(AlertTransition {
                kind,
                rule: rule.clone(),
                spec: self.spec.clone(),
                annotations: a.annotations.iter().cloned().collect(),
                labels,
                value: a.value,
                severity,
                active_at_ms: a.active_at_ms,
                at_ms: match kind {
                    TransitionKind::Firing => a.fired_at_ms.unwrap_or(a.active_at_ms),
                    TransitionKind::Resolved => a.resolved_at_ms.unwrap_or(a.active_at_ms),
                },
                interval_ms,
                seen,
            });
        }
        out
    }

    /// The alerts for which the rule's condition holds at `ts`: its expression
    /// evaluated and each result turned into alert labels (without annotations) —
    /// the re-check before an action runs.
    pub fn condition_labels(
        &self,
        group: &GroupSpec,
        ts: i64,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<BTreeMap<String, String>>, String> {
        let RuleKind::Alert(name) = &self.spec.kind else {
            return Err("not an alerting rule".into());
        };
        let samples = ctx
            .source
            .query(
                &self.spec.expr,
                &self.spec.expr_text,
                ts - group.query_offset_ms.unwrap_or(0),
            )
            .map_err(|e| e.to_string())?;
        Ok(samples
            .iter()
            .map(|s| {
                self.alert_labels(name, group, s, ctx, ts, false)
                    .0
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect()
            })
            .collect())
    }

    /// Marks every series this rule wrote last time stale (the rule is gone).
    pub fn mark_stale(&mut self, store: &dyn Appender, ts: i64) {
        let stale = f64::from_bits(STALE_NAN_BITS);
        for ls in self.prev_series.drain() {
            store.append(&ls, ts, stale);
        }
    }
}

/// A saved pending or firing alert (for restoring `for` state after a restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedAlert {
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    pub active_at_ms: i64,
    #[serde(default)]
    pub fired_at_ms: Option<i64>,
}

impl Rule {
    /// The pending and firing alerts, for the state file.
    pub fn snapshot(&self) -> Vec<SavedAlert> {
        self.active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .map(|a| SavedAlert {
                labels: a
                    .labels
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect(),
                state: a.state,
                active_at_ms: a.active_at_ms,
                fired_at_ms: a.fired_at_ms,
            })
            .collect()
    }

    /// Restores saved alerts; the next evaluation decides whether they go on.
    pub fn restore(&mut self, saved: &[SavedAlert]) {
        for s in saved {
            let ls = LabelSet::from_pairs(s.labels.iter());
            self.active.insert(
                ls.clone(),
                Alert {
                    labels: ls,
                    annotations: Vec::new(),
                    state: s.state,
                    value: 0.0,
                    active_at_ms: s.active_at_ms,
                    fired_at_ms: s.fired_at_ms,
                    resolved_at_ms: None,
                    last_sent_ms: None,
                    valid_until_ms: 0,
                    clear_since_ms: None,
                },
            );
        }
    }
}

/// A group with the runtime state of its rules.
#[derive(Debug)]
pub struct Group {
    pub spec: Arc<GroupSpec>,
    pub interval_ms: i64,
    pub rules: Vec<Rule>,
    pub last_eval_ms: i64,
    pub last_duration_s: f64,
    pub iterations: u64,
    pub missed: u64,
}

impl Group {
    pub fn new(spec: Arc<GroupSpec>, default_interval_ms: i64) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule::new(Arc::new(r.clone())))
            .collect();
        Group {
            interval_ms: spec.interval_ms.unwrap_or(default_interval_ms),
            spec,
            rules,
            last_eval_ms: 0,
            last_duration_s: 0.0,
            iterations: 0,
            missed: 0,
        }
    }

    /// A key identifying the group across reloads: file and name.
    pub fn key(&self) -> (String, String) {
        (self.spec.file.display().to_string(), self.spec.name.clone())
    }

    /// Evaluates every rule in order at `ts`. Returns the errors (rule name and
    /// message); one rule's failure does not stop the others.
    pub fn eval(&mut self, ts: i64, ctx: &EvalContext<'_>) -> Vec<(String, String)> {
        let start = Instant::now();
        let mut errors = Vec::new();
        let spec = self.spec.clone();
        for r in self.rules.iter_mut() {
            if let Err(e) = r.eval(&spec, ts, ctx) {
                errors.push((r.spec.name().to_string(), e));
            }
        }
        self.last_eval_ms = ts;
        self.last_duration_s = start.elapsed().as_secs_f64();
        self.iterations += 1;
        errors
    }

    /// Takes over alert state (and series to mark stale) from the same group of
    /// the previous rule set, matching rules by kind, name and expression.
    pub fn inherit(&mut self, old: Group) {
        let mut old_rules: Vec<Option<Rule>> = old.rules.into_iter().map(Some).collect();
        for r in self.rules.iter_mut() {
            if let Some(slot) = old_rules.iter_mut().find(|o| {
                o.as_ref().is_some_and(|o| {
                    o.spec.kind == r.spec.kind && o.spec.expr_text == r.spec.expr_text
                })
            }) {
                if let Some(o) = slot.take() {
                    r.active = o.active;
                    r.prev_series = o.prev_series;
                    r.last_eval_ms = o.last_eval_ms;
                }
            }
        }
        self.last_eval_ms = old.last_eval_ms;
        self.iterations = old.iterations;
        self.missed = old.missed;
    }
}

#[cfg(test)]
mod tests;
