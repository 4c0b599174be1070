//! The running rule set: one tokio task per group, each evaluating at aligned,
//! stable timestamps (`floor((now - offset) / interval) * interval + offset`, the
//! offset a hash of the group, as Prometheus spreads groups); evaluation itself runs
//! on the blocking pool. Reloads (SIGHUP, `POST /-/reload`, a changed file on disk)
//! validate the whole new rule set first and keep the running one on error; groups
//! that survive a reload keep their alert state. Pending/firing alerts are saved to
//! a small state file and restored at start, so `for` survives a restart.
//!
//! Remote datasource (`datasource:` on a group): the whole expression is sent to
//! `<datasource>/api/v1/query` at the evaluation time and its result used as is —
//! the remote engine sees its full history, which is the point. Consequence: in
//! such a group a recording rule's output (written to the local store) is not
//! visible to later rules of the same group.
//!
//! Invariants: a missed iteration is counted in
//! `closedloop_rule_group_iterations_missed_total`, never silently skipped; a
//! reload never leaves a half-applied rule set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use prometheus::{GaugeVec, IntCounterVec, Opts};
use promql_parser::parser::Expr;
use serde_json::json;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::promql::{Engine, QueryError, Sample};
use crate::storage::{LabelSet, Store};

use super::config::{AlertingConfig, GlobalConfig};
use super::file::{expand_patterns, load_files, GroupSpec, LoadOptions, RuleKind};
use super::group::{AlertState, EvalContext, Group, LocalSource, SavedAlert, Source};
use super::notifier::{generator_url, rfc3339, AmAlert, Notifier, NotifierMetrics};
use super::RuleError;

/// Per-group and per-rule metrics.
#[derive(Clone)]
struct RuleMetrics {
    last_duration: GaugeVec,
    last_eval: GaugeVec,
    interval: GaugeVec,
    iterations: IntCounterVec,
    /// Sum of evaluation durations (with `iterations`, the mean per cycle).
    seconds: prometheus::CounterVec,
    missed: IntCounterVec,
    failures: IntCounterVec,
    evaluations: IntCounterVec,
}

impl RuleMetrics {
    fn new(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let g = |n: &str, h: &str| GaugeVec::new(Opts::new(n, h), &["rule_group"]);
        let c = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        let m = RuleMetrics {
            last_duration: g(
                "closedloop_rule_group_last_duration_seconds",
                "Duration of the group's last evaluation.",
            )?,
            last_eval: g(
                "closedloop_rule_group_last_evaluation_timestamp_seconds",
                "Timestamp of the group's last evaluation.",
            )?,
            interval: g(
                "closedloop_rule_group_interval_seconds",
                "The group's evaluation interval.",
            )?,
            iterations: c(
                "closedloop_rule_group_iterations_total",
                "Evaluations of the group.",
                &["rule_group"],
            )?,
            seconds: prometheus::CounterVec::new(
                Opts::new(
                    "closedloop_rule_group_evaluation_seconds_total",
                    "Time spent evaluating the group.",
                ),
                &["rule_group"],
            )?,
            missed: c(
                "closedloop_rule_group_iterations_missed_total",
                "Evaluations missed because the previous one ran too long.",
                &["rule_group"],
            )?,
            failures: c(
                "closedloop_rule_evaluation_failures_total",
                "Failed evaluations per rule.",
                &["rule_group", "rule"],
            )?,
            evaluations: c(
                "closedloop_rule_evaluations_total",
                "Evaluations per rule.",
                &["rule_group", "rule"],
            )?,
        };
        r.register(Box::new(m.last_duration.clone()))?;
        r.register(Box::new(m.last_eval.clone()))?;
        r.register(Box::new(m.interval.clone()))?;
        r.register(Box::new(m.iterations.clone()))?;
        r.register(Box::new(m.missed.clone()))?;
        r.register(Box::new(m.seconds.clone()))?;
        r.register(Box::new(m.failures.clone()))?;
        r.register(Box::new(m.evaluations.clone()))?;
        Ok(m)
    }
}

/// A running group: its state and its task.
struct Running {
    group: Arc<Mutex<Group>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a group task needs besides its group.
struct Shared {
    store: Arc<Store>,
    engine: Engine,
    notifier: Arc<Notifier>,
    metrics: RuleMetrics,
    settings: Mutex<ManagerSettings>,
    dirty: AtomicBool,
    http: reqwest::Client,
}

#[derive(Clone)]
struct ManagerSettings {
    patterns: Vec<String>,
    global: GlobalConfig,
    alerting: AlertingConfig,
    external_url: String,
}

impl ManagerSettings {
    fn from_config(c: &Config) -> Self {
        let external_url = c
            .global
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", c.listen_address));
        ManagerSettings {
            patterns: c.rule_files.clone(),
            global: c.global.clone(),
            alerting: c.alerting.clone(),
            external_url,
        }
    }
}

/// The rules engine of a running service.
pub struct RuleManager {
    shared: Arc<Shared>,
    running: Mutex<BTreeMap<(String, String), Running>>,
    /// Files and modification times of the last successful load.
    loaded: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
    state_file: Option<PathBuf>,
    app_metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    /// Told the groups' `detectors:` after every successful load.
    detector_sink: std::sync::OnceLock<DetectorSink>,
}

/// Receives the `detectors:` of the loaded rule files (the anomaly stage).
pub type DetectorSink = Box<dyn Fn(&[crate::anomaly::DetectorSpec]) + Send + Sync>;

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

/// The state file: group key (`file;name`) → rule name → alerts.
type SavedState = BTreeMap<String, BTreeMap<String, Vec<SavedAlert>>>;

fn group_key(spec: &GroupSpec) -> String {
    format!("{};{}", spec.file.display(), spec.name)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RuleManager {
    /// Loads the configured rule files and starts every group. Must run inside a
    /// tokio runtime. A bad rule file is an error (the service does not start).
    pub fn start(
        config: &Config,
        store: Arc<Store>,
        engine: Engine,
        app_metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let registry = app_metrics.registry();
        let metrics = RuleMetrics::new(registry).map_err(|e| e.to_string())?;
        let nm = NotifierMetrics::new(registry).map_err(|e| e.to_string())?;
        let notifier = Notifier::new(config.alerting.clone(), config.global.clone(), nm);
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(notifier.clone().run());
        let state_file = if config.rules.state_file.as_os_str().is_empty() {
            None
        } else {
            Some(config.rules.state_file.clone())
        };
        let mgr = Arc::new(RuleManager {
            shared: Arc::new(Shared {
                store,
                engine,
                notifier,
                metrics,
                settings: Mutex::new(ManagerSettings::from_config(config)),
                dirty: AtomicBool::new(false),
                http: reqwest::Client::new(),
            }),
            running: Mutex::new(BTreeMap::new()),
            loaded: Mutex::new(Vec::new()),
            state_file,
            app_metrics,
            runtime,
            detector_sink: std::sync::OnceLock::new(),
        });
        let saved = mgr.read_state();
        mgr.apply(config, Some(&saved)).map_err(|e| e.to_string())?;
        let watch = config.rules.watch_interval.as_millis();
        if watch > 0 {
            mgr.runtime
                .spawn(watch_files(Arc::downgrade(&mgr), watch as u64));
        }
        if mgr.state_file.is_some() {
            mgr.runtime.spawn(save_state_loop(Arc::downgrade(&mgr)));
        }
        Ok(mgr)
    }

    /// Reloads the rule files named by `config` (and the alerting settings). On
    /// error the running rules stay.
    pub fn reload(&self, config: &Config) -> Result<(), RuleError> {
        self.apply(config, None)
    }

    /// Re-reads the rule files with the current settings (file watcher).
    fn reload_files(&self) -> Result<(), RuleError> {
        let s = self.shared.settings.lock().clone();
        let mut c = Config {
            rule_files: s.patterns,
            global: s.global,
            alerting: s.alerting,
            ..Config::default()
        };
        c.global.external_url = Some(s.external_url);
        self.apply(&c, None)
    }

    fn apply(&self, config: &Config, saved: Option<&SavedState>) -> Result<(), RuleError> {
        let files = expand_patterns(&config.rule_files)?;
        let opts = LoadOptions {
            query_limits: self.shared.engine.options().limits,
            ..LoadOptions::default()
        };
        let specs = load_files(&files, opts)?;
        let mut mtimes = Vec::with_capacity(files.len());
        for f in &files {
            mtimes.push((f.clone(), mtime(f)));
        }
        let settings = ManagerSettings::from_config(config);
        let default_interval = settings.global.evaluation_interval.as_millis().max(1);
        *self.shared.settings.lock() = settings;
        self.shared
            .notifier
            .set_config(config.alerting.clone(), config.global.clone());
        let mut running = self.running.lock();
        let mut old = std::mem::take(&mut *running);
        let default_offset = config.global.rule_query_offset.as_millis();
        for mut spec in specs {
            spec.query_offset_ms.get_or_insert(default_offset);
            let spec = Arc::new(spec);
            let mut group = Group::new(spec.clone(), default_interval);
            let key = group.key();
            if let Some(prev) = old.remove(&key) {
                prev.stop.store(true, Ordering::SeqCst);
                prev.task.abort();
                let prev_group = std::mem::replace(
                    &mut *prev.group.lock(),
                    Group::new(spec.clone(), default_interval),
                );
                group.inherit(prev_group);
            } else if let Some(saved) = saved.and_then(|s| s.get(&group_key(&spec))) {
                for r in group.rules.iter_mut() {
                    if let Some(alerts) = saved.get(r.spec.name()) {
                        r.restore(alerts);
                    }
                }
            }
            let label = group_key(&spec);
            self.shared
                .metrics
                .interval
                .with_label_values(&[&label])
                .set(group.interval_ms as f64 / 1000.0);
            let group = Arc::new(Mutex::new(group));
            let stop = Arc::new(AtomicBool::new(false));
            let task =
                self.runtime
                    .spawn(run_group(self.shared.clone(), group.clone(), stop.clone()));
            running.insert(key, Running { group, stop, task });
        }
        // Groups that are gone: their series end now, as in Prometheus.
        let now = now_ms();
        for (_, prev) in old {
            prev.stop.store(true, Ordering::SeqCst);
            prev.task.abort();
            let mut g = prev.group.lock();
            for r in g.rules.iter_mut() {
                r.mark_stale(&self.shared.store, now);
            }
        }
        *self.loaded.lock() = mtimes;
        drop(running);
        self.shared.dirty.store(true, Ordering::SeqCst);
        if let Some(sink) = self.detector_sink.get() {
            sink(&self.detectors());
        }
        Ok(())
    }

    fn read_state(&self) -> SavedState {
        let Some(p) = &self.state_file else {
            return SavedState::new();
        };
        match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %p.display(), error = %e, "ignoring unreadable rule state file");
                SavedState::new()
            }),
            Err(_) => SavedState::new(),
        }
    }

    /// Writes the pending/firing alerts of every group to the state file.
    pub fn save_state(&self) -> std::io::Result<()> {
        let Some(p) = &self.state_file else {
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
        if state.is_empty() && !p.exists() {
            return Ok(());
        }
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state).unwrap_or_default())?;
        std::fs::rename(&tmp, p)
    }

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

    /// Annotates alerts just before they go to Alertmanager (root-cause analysis).
    pub fn set_alert_enricher(&self, enricher: super::notifier::AlertEnricher) {
        self.shared.notifier.set_enricher(enricher);
    }

    /// Hands the rule files' `detectors:` to `sink` now and after every successful
    /// reload (set once, at start).
    pub fn set_detector_sink(&self, sink: DetectorSink) {
        sink(&self.detectors());
        let _ = self.detector_sink.set(sink);
    }

    /// The `detectors:` of every loaded group, for the anomaly stage to run.
    pub fn detectors(&self) -> Vec<crate::anomaly::DetectorSpec> {
        self.running
            .lock()
            .values()
            .flat_map(|r| r.group.lock().spec.detectors.clone())
            .collect()
    }

    /// The configured Alertmanagers and the outcome of the last send to each.
    pub fn alertmanagers(&self) -> Vec<super::notifier::AlertmanagerStatus> {
        self.shared.notifier.alertmanagers()
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

    /// Records a reload outcome in `closedloop_config_last_reload_successful`.
    fn record_reload(&self, r: &Result<(), RuleError>) {
        match r {
            Ok(()) => {
                self.app_metrics.config_last_reload_successful.set(1);
                self.app_metrics
                    .config_last_reload_success_timestamp
                    .set(chrono::Utc::now().timestamp());
                tracing::info!("rule files reloaded");
            }
            Err(e) => {
                self.app_metrics.config_last_reload_successful.set(0);
                tracing::error!(error = %e, "rule reload failed; keeping the running rules");
            }
        }
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

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Polls the rule files' modification times (and the patterns' matches) and
/// reloads when they change. Globbing, `stat` and reloading run on the blocking
/// pool, never on an async worker.
async fn watch_files(mgr: std::sync::Weak<RuleManager>, every_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failed: Option<Vec<(PathBuf, Option<SystemTime>)>> = None;
    loop {
        tick.tick().await;
        let Some(m) = mgr.upgrade() else { return };
        let failed = last_failed.take();
        let poll = tokio::task::spawn_blocking(move || {
            let patterns = m.shared.settings.lock().patterns.clone();
            let Ok(files) = expand_patterns(&patterns) else {
                return failed;
            };
            let now: Vec<(PathBuf, Option<SystemTime>)> =
                files.iter().map(|f| (f.clone(), mtime(f))).collect();
            let changed = *m.loaded.lock() != now && failed.as_ref() != Some(&now);
            if !changed {
                return failed;
            }
            let r = m.reload_files();
            m.record_reload(&r);
            r.is_err().then_some(now)
        });
        match poll.await {
            Ok(failed) => last_failed = failed,
            Err(e) => tracing::error!(error = %e, "rule file watcher task failed"),
        }
    }
}

/// Saves the alert state every few seconds when something changed.
async fn save_state_loop(mgr: std::sync::Weak<RuleManager>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(m) = mgr.upgrade() else { return };
        if m.shared.dirty.swap(false, Ordering::SeqCst) {
            let m2 = m.clone();
            let r = tokio::task::spawn_blocking(move || m2.save_state()).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "writing the rule state file failed");
            }
        }
    }
}

/// Evaluates against a remote Prometheus-compatible query API.
struct RemoteSource {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl Source for RemoteSource {
    fn query(&self, _expr: &Expr, text: &str, t_ms: i64) -> Result<Vec<Sample>, QueryError> {
        let url = format!("{}/api/v1/query", self.base.trim_end_matches('/'));
        let time = format!("{:.3}", t_ms as f64 / 1000.0);
        let fut = self
            .client
            .post(&url)
            .timeout(self.timeout)
            .form(&[("query", text), ("time", time.as_str())])
            .send();
        let body: serde_json::Value = self
            .runtime
            .block_on(async {
                let r = fut.await?;
                r.json::<serde_json::Value>().await
            })
            .map_err(|e| QueryError::Storage(format!("datasource {}: {e}", self.base)))?;
        parse_query_response(&body, t_ms)
            .map_err(|e| QueryError::Storage(format!("datasource {}: {e}", self.base)))
    }
}

/// Turns a Prometheus `/api/v1/query` response into samples.
fn parse_query_response(body: &serde_json::Value, t_ms: i64) -> Result<Vec<Sample>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "{}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("query failed")
        ));
    }
    let val = |p: &serde_json::Value| -> Result<f64, String> {
        let s = p[1].as_str().ok_or("value is not a string")?;
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
        }
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("vector") => {
            let mut out = Vec::new();
            for r in data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let labels: Vec<(String, String)> = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Sample {
                    labels: LabelSet::from_pairs(labels),
                    t: t_ms,
                    v: val(&r["value"])?,
                });
            }
            Ok(out)
        }
        Some("scalar") => Ok(vec![Sample {
            labels: LabelSet::default(),
            t: t_ms,
            v: val(&data["result"])?,
        }]),
        other => Err(format!(
            "result type {} is not a vector or scalar",
            other.unwrap_or("missing")
        )),
    }
}

/// A group's offset within its interval, exactly as Prometheus computes it
/// (`Group.EvalTimestamp`: the xxhash64 of the label set `{file, name}`, modulo
/// the interval in nanoseconds), so a group evaluates at the same timestamps in
/// closedloop as in a Prometheus loading the same file path. Returned in whole
/// milliseconds, as Prometheus's evaluation timestamps become sample times.
pub fn eval_offset_ms(file: &str, name: &str, interval_ms: i64) -> i64 {
    let mut key = Vec::with_capacity(file.len() + name.len() + 12);
    for (n, v) in [("file", file), ("name", name)] {
        key.extend_from_slice(n.as_bytes());
        key.push(0xff);
        key.extend_from_slice(v.as_bytes());
        key.push(0xff);
    }
    let interval_ns = interval_ms.max(1) as u64 * 1_000_000;
    ((xxhash_rust::xxh64::xxh64(&key, 0) % interval_ns) / 1_000_000) as i64
}

/// The slot to evaluate when it is `now` and `next` was due: `next` itself while
/// within one interval, else the latest slot not after `now`, with the number of
/// slots skipped. Timestamps stay on the grid `next + k * interval`.
fn catch_up(next: i64, now: i64, interval: i64) -> (i64, i64) {
    if now >= next + interval {
        let missed = (now - next) / interval;
        (next + missed * interval, missed)
    } else {
        (next, 0)
    }
}

async fn run_group(shared: Arc<Shared>, group: Arc<Mutex<Group>>, stop: Arc<AtomicBool>) {
    let (interval, key, datasource, off) = {
        let g = group.lock();
        let interval = g.interval_ms.max(1);
        (
            interval,
            group_key(&g.spec),
            g.spec.datasource.clone(),
            eval_offset_ms(&g.spec.file.display().to_string(), &g.spec.name, interval),
        )
    };
    let slot = |t: i64| (t - off).div_euclid(interval) * interval + off;
    // The first evaluation is at the next aligned slot.
    let mut next = slot(now_ms()) + interval;
    let runtime = tokio::runtime::Handle::current();
    loop {
        let wait = next - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (ts, missed) = catch_up(next, now_ms(), interval);
        if missed > 0 {
            shared
                .metrics
                .missed
                .with_label_values(&[&key])
                .inc_by(missed as u64);
            tracing::warn!(group = %key, missed, "rule group missed iterations: evaluation takes longer than its interval");
        }
        next = ts;
        let sh = shared.clone();
        let g = group.clone();
        let ds = datasource.clone();
        let rt = runtime.clone();
        let k = key.clone();
        let r = tokio::task::spawn_blocking(move || {
            let settings = sh.settings.lock().clone();
            let mut g = g.lock();
            let local = LocalSource {
                engine: &sh.engine,
                store: &sh.store,
            };
            let remote = ds.map(|base| RemoteSource {
                base,
                client: sh.http.clone(),
                runtime: rt,
                timeout: sh.engine.options().timeout,
            });
            let source: &dyn Source = match &remote {
                Some(r) => r,
                None => &local,
            };
            let ctx = EvalContext {
                source,
                store: &sh.store,
                external_labels: &settings.global.external_labels,
                external_url: &settings.external_url,
            };
            let errors = g.eval(ts, &ctx);
            for (rule, e) in &errors {
                sh.metrics.failures.with_label_values(&[&k, rule]).inc();
                tracing::warn!(group = %k, rule = %rule, error = %e, "rule evaluation failed");
            }
            let resend = settings.alerting.resend_delay.as_millis();
            let interval = g.interval_ms;
            let mut out = Vec::new();
            let mut changed = false;
            for rule in g.rules.iter_mut() {
                sh.metrics
                    .evaluations
                    .with_label_values(&[&k, rule.spec.name()])
                    .inc();
                if !rule.is_alert() {
                    continue;
                }
                changed |= !rule.active.is_empty();
                // Prometheus links the normalised expression (`expr.String()`).
                let link = generator_url(
                    settings.alerting.generator_url.as_deref(),
                    &settings.external_url,
                    &rule.spec.expr.to_string(),
                );
                for a in rule.alerts_to_send(ts, resend, interval) {
                    out.push(AmAlert {
                        labels: a
                            .labels
                            .iter()
                            .map(|l| (l.name.to_string(), l.value.to_string()))
                            .collect(),
                        annotations: a.annotations.iter().cloned().collect(),
                        starts_at: rfc3339(a.fired_at_ms.unwrap_or(a.active_at_ms)),
                        ends_at: rfc3339(a.resolved_at_ms.unwrap_or(a.valid_until_ms)),
                        generator_url: link.clone(),
                    });
                }
            }
            sh.metrics
                .last_duration
                .with_label_values(&[&k])
                .set(g.last_duration_s);
            sh.metrics
                .last_eval
                .with_label_values(&[&k])
                .set(ts as f64 / 1000.0);
            sh.metrics.iterations.with_label_values(&[&k]).inc();
            sh.metrics
                .seconds
                .with_label_values(&[&k])
                .inc_by(g.last_duration_s);
            if changed {
                sh.dirty.store(true, Ordering::SeqCst);
            }
            out
        })
        .await;
        if let Ok(alerts) = r {
            shared.notifier.enqueue(alerts);
        }
        next += interval;
    }
}

/// The outcome of checking one rule file: the number of rules and the duplicate
/// rules found, or every problem (one line each, file:line first).
pub type CheckResult = Result<(usize, Vec<String>), Vec<String>>;

/// Loads rule files for `closedloop check rules`: per file, its rule count and the
/// `duplicate-rules` lint findings, or its problems.
pub fn check_files(files: &[PathBuf]) -> Vec<(PathBuf, CheckResult)> {
    let mut out = Vec::new();
    for f in files {
        let r = match std::fs::read_to_string(f) {
            Err(e) => Err(vec![format!("{}: {e}", f.display())]),
            Ok(text) => match super::file::parse_file_all(&text, f) {
                Ok(groups) => {
                    let n = groups.iter().map(|g| g.rules.len()).sum();
                    let dups = super::file::duplicate_rules(&groups)
                        .into_iter()
                        .map(|(name, labels)| {
                            // promtool's wording: `Metric: x\nLabel(s):\n\tname: value\n`.
                            let mut s = format!("Metric: {name}\nLabel(s):\n");
                            for (k, v) in labels {
                                s.push_str(&format!("\t{k}: {v}\n"));
                            }
                            s
                        })
                        .collect();
                    Ok((n, dups))
                }
                Err(errs) => Err(errs.iter().map(|e| e.to_string()).collect()),
            },
        };
        out.push((f.clone(), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remote_query_results() {
        let body = json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"a"},"value":[10,"1"]},
            {"metric":{"job":"b"},"value":[10,"+Inf"]}]}});
        let s = parse_query_response(&body, 10_000).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels.get("job"), Some("a"));
        assert!(s[1].v.is_infinite());
        let scalar = json!({"status":"success","data":{"resultType":"scalar","result":[10,"2.5"]}});
        assert_eq!(parse_query_response(&scalar, 0).unwrap()[0].v, 2.5);
        let err = json!({"status":"error","errorType":"bad_data","error":"parse error"});
        assert!(parse_query_response(&err, 0)
            .unwrap_err()
            .contains("parse error"));
    }

    #[test]
    fn missed_iterations_are_counted_and_the_grid_kept() {
        // On time, or late by less than an interval: evaluate the due slot.
        assert_eq!(catch_up(10_000, 10_000, 1_000), (10_000, 0));
        assert_eq!(catch_up(10_000, 10_999, 1_000), (10_000, 0));
        // 3.5 intervals late: 3 slots missed, evaluate at the latest slot.
        assert_eq!(catch_up(10_000, 13_500, 1_000), (13_000, 3));
    }

    #[test]
    fn alert_values_are_formatted_as_prometheus() {
        assert_eq!(go_fmt_e(1.0), "1e+00");
        assert_eq!(go_fmt_e(0.25), "2.5e-01");
        assert_eq!(go_fmt_e(-1234.5), "-1.2345e+03");
        assert_eq!(go_fmt_e(1e-300), "1e-300");
        assert_eq!(go_fmt_e(f64::INFINITY), "+Inf");
    }

    #[test]
    fn offsets_are_prometheus_offsets() {
        // Read off a real Prometheus 2.42 (`rule_files: [rules.yml]`, 10s interval):
        // the samples its recording rules wrote sat at xx:xx:x1.632 for group "g"
        // and at x5.484 for "another group".
        assert_eq!(eval_offset_ms("rules.yml", "g", 10_000), 1_632);
        assert_eq!(eval_offset_ms("rules.yml", "another group", 10_000), 5_484);
        let a = eval_offset_ms("f", "g", 15_000);
        assert!((0..15_000).contains(&a));
    }
}
