//! The running rule set and its reloads. The manager gets everything it touches
//! injected ([`RuleDeps`]: query source, appender, alert sink, notifier, knowledge
//! store, metrics) and its own settings ([`RuleSettings`]), never the service's
//! whole configuration. Its other jobs have their own homes: scheduling in
//! `schedule.rs`, the for-state in `state.rs`, the API views in `views.rs`, remote
//! datasources in `remote.rs`.
//!
//! Reloads (SIGHUP, `POST /-/reload`, a changed file on disk) validate the whole new
//! rule set first and keep the running one on error; groups that survive a reload
//! keep their alert state.
//!
//! Invariant: a reload never leaves a half-applied rule set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::knowledge::KnowledgeStore;
use crate::metrics::Metrics;

use super::config::{AlertingConfig, GlobalConfig};
use super::file::{expand_patterns, load_files, GroupSpec, LoadOptions};
use super::group::{Appender, EvalContext, Group, Source};
use super::notifier::Notifier;
use super::remote::RemoteSource;
use super::schedule::{run_group, RuleMetrics};
use super::state::SavedState;
use super::transition::AlertSink;
use super::RuleError;

pub use super::file::{check_files, CheckResult};
pub use super::views::RuleFilter;

/// What the rules engine reads from the service configuration.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// `rule_files` patterns (globs), already resolved against the config's folder.
    pub patterns: Vec<String>,
    pub global: GlobalConfig,
    pub alerting: AlertingConfig,
    /// `global.external_url`, or `http://<listen_address>`.
    pub external_url: String,
    /// How often rule files are checked for changes (ms); 0 disables it.
    pub watch_interval_ms: i64,
    /// The pre-knowledge-store state file to import once (`rules.state_file`).
    pub legacy_state_file: Option<PathBuf>,
    /// Length and nesting limits of rule expressions (`query.max_length`,
    /// `query.max_depth`): what evaluation cannot run is refused at load time.
    pub query_limits: crate::promql::QueryLimits,
}

/// What the rules engine uses, injected by the service.
pub struct RuleDeps {
    /// Where expressions of groups without `datasource:` are evaluated.
    pub source: Arc<dyn Source>,
    /// Where recording results and `ALERTS` go.
    pub appender: Arc<dyn Appender>,
    /// Receives every alert that turns firing or resolved.
    pub alerts: Arc<dyn AlertSink>,
    /// Sends alerts to Alertmanager (running already).
    pub notifier: Arc<Notifier>,
    /// Keeps pending/firing alerts across restarts (`None`: not kept).
    pub state: Option<Arc<dyn KnowledgeStore>>,
    /// Registry and reload gauges.
    pub metrics: Arc<Metrics>,
    /// Timeout of remote datasource queries.
    pub remote_timeout: Duration,
}

/// A running group: its state and its task.
pub(super) struct Running {
    pub(super) group: Arc<Mutex<Group>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a group task needs besides its group.
pub(super) struct Shared {
    pub(super) source: Arc<dyn Source>,
    pub(super) appender: Arc<dyn Appender>,
    pub(super) alerts: Arc<dyn AlertSink>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) metrics: RuleMetrics,
    pub(super) settings: Mutex<RuleSettings>,
    /// Alert state changed since the last save.
    pub(super) dirty: AtomicBool,
    http: reqwest::Client,
    remote_timeout: Duration,
}

impl Shared {
    /// The remote source of a group with `datasource:`.
    pub(super) fn remote_source(
        &self,
        datasource: Option<String>,
        runtime: tokio::runtime::Handle,
    ) -> Option<RemoteSource> {
        datasource.map(|base| RemoteSource {
            base,
            client: self.http.clone(),
            runtime,
            timeout: self.remote_timeout,
        })
    }
}

/// The rules engine of a running service.
pub struct RuleManager {
    pub(super) shared: Arc<Shared>,
    pub(super) running: Mutex<BTreeMap<(String, String), Running>>,
    /// Files and modification times of the last successful load.
    loaded: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
    pub(super) state: Option<Arc<dyn KnowledgeStore>>,
    app_metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    /// Told the groups' `detectors:` after every successful load.
    detector_sink: std::sync::OnceLock<DetectorSink>,
}

/// Receives the `detectors:` of the loaded rule files (the anomaly stage).
pub type DetectorSink = Box<dyn Fn(&[crate::anomaly::DetectorSpec]) + Send + Sync>;

pub(super) fn group_key(spec: &GroupSpec) -> String {
    format!("{};{}", spec.file.display(), spec.name)
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RuleManager {
    /// Loads the rule files and starts every group, restoring saved alert state.
    /// Must run inside a tokio runtime. A bad rule file is an error (the service
    /// does not start).
    pub fn start(settings: RuleSettings, deps: RuleDeps) -> Result<Arc<Self>, RuleError> {
        let metrics = RuleMetrics::new(deps.metrics.registry()).map_err(|e| RuleError::Setup {
            reason: e.to_string(),
        })?;
        let runtime = tokio::runtime::Handle::current();
        let watch = settings.watch_interval_ms;
        let legacy = settings.legacy_state_file.clone();
        let mgr = Arc::new(RuleManager {
            shared: Arc::new(Shared {
                source: deps.source,
                appender: deps.appender,
                alerts: deps.alerts,
                notifier: deps.notifier,
                metrics,
                settings: Mutex::new(settings.clone()),
                dirty: AtomicBool::new(false),
                http: reqwest::Client::new(),
                remote_timeout: deps.remote_timeout,
            }),
            running: Mutex::new(BTreeMap::new()),
            loaded: Mutex::new(Vec::new()),
            state: deps.state,
            app_metrics: deps.metrics,
            runtime,
            detector_sink: std::sync::OnceLock::new(),
        });
        let saved = mgr.read_state(legacy.as_deref());
        mgr.apply(settings, Some(&saved))?;
        if watch > 0 {
            mgr.runtime
                .spawn(watch_files(Arc::downgrade(&mgr), watch as u64));
        }
        if mgr.state.is_some() {
            mgr.runtime
                .spawn(super::state::save_state_loop(Arc::downgrade(&mgr)));
        }
        Ok(mgr)
    }

    /// Reloads the rule files with new settings. On error the running rules stay.
    pub fn reload(&self, settings: RuleSettings) -> Result<(), RuleError> {
        self.apply(settings, None)
    }

    /// Re-reads the rule files with the current settings (file watcher).
    fn reload_files(&self) -> Result<(), RuleError> {
        let s = self.shared.settings.lock().clone();
        self.apply(s, None)
    }

    fn apply(&self, settings: RuleSettings, saved: Option<&SavedState>) -> Result<(), RuleError> {
        let files = expand_patterns(&settings.patterns)?;
        let opts = LoadOptions {
            query_limits: settings.query_limits,
            ..LoadOptions::default()
        };
        let specs = load_files(&files, opts)?;
        let mut mtimes = Vec::with_capacity(files.len());
        for f in &files {
            mtimes.push((f.clone(), mtime(f)));
        }
        let default_interval = settings.global.evaluation_interval.as_millis().max(1);
        self.shared
            .notifier
            .set_config(settings.alerting.clone(), settings.global.clone());
        *self.shared.settings.lock() = settings;
        let mut running = self.running.lock();
        let mut old = std::mem::take(&mut *running);
        for spec in specs {
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
                r.mark_stale(self.shared.appender.as_ref(), now);
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

    /// The label sets for which the alerting rule `rule` of group `group` holds
    /// now (its expression evaluated now): the re-check right before an action
    /// runs. Blocking (a query); call it off the async workers. `Ok(None)`: no such
    /// rule is loaded. Groups of the same name in several files all count.
    #[allow(clippy::type_complexity)]
    pub fn alerts_now(
        &self,
        group: &str,
        rule: &str,
    ) -> Result<Option<Vec<BTreeMap<String, String>>>, String> {
        let groups: Vec<Arc<Mutex<Group>>> = self
            .running
            .lock()
            .iter()
            .filter(|((_, name), _)| name == group)
            .map(|(_, r)| r.group.clone())
            .collect();
        let settings = self.shared.settings.lock().clone();
        let mut found = None;
        for g in groups {
            let g = g.lock();
            let Some(r) = g
                .rules
                .iter()
                .find(|r| r.is_alert() && r.spec.name() == rule)
            else {
                continue;
            };
            let remote = self
                .shared
                .remote_source(g.spec.datasource.clone(), self.runtime.clone());
            let source: &dyn Source = match &remote {
                Some(r) => r,
                None => self.shared.source.as_ref(),
            };
            let ctx = EvalContext {
                source,
                appender: self.shared.appender.as_ref(),
                external_labels: &settings.global.external_labels,
                external_url: &settings.external_url,
            };
            let labels = r.condition_labels(&g.spec, now_ms(), &ctx)?;
            found.get_or_insert_with(Vec::new).extend(labels);
        }
        Ok(found)
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
