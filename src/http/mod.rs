//! The HTTP surface: remote write, the Prometheus-compatible read API, health,
//! `/metrics`, and the admin endpoints. Handlers are thin: they parse the request,
//! call a synchronous module function, and render its result; errors become status
//! codes in `error.rs` only.

mod actions;
mod admission;
mod api;
mod auth;
mod conn;
mod error;
mod params;
mod query;
mod rules;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use parking_lot::RwLock;

use crate::anomaly::Analyzer;
use crate::config::{Config, Credentials};
use crate::metrics::Metrics;
use crate::promql::Engine;
use crate::storage::Store;

pub use conn::{ConnectionLimits, LimitAcceptor};

/// Settings a reload may change without a restart.
#[derive(Debug, Clone)]
pub struct Settings {
    pub write_auth: Option<Credentials>,
    pub admin_auth: Option<Credentials>,
    pub read_auth: Option<Credentials>,
    /// `/metrics` sits behind the read guard (when one is configured).
    pub protect_metrics: bool,
    pub retention_ms: i64,
    pub max_future_ms: i64,
    pub max_decoded_bytes: usize,
    /// Reads running at once (`query.max_concurrency`); fixed at start.
    pub max_query_concurrency: usize,
    /// Limits on the labels of written series.
    pub label_limits: crate::ingest::LabelLimits,
}

impl Settings {
    /// Derives the runtime settings from a validated config, loading secrets.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        Ok(Settings {
            write_auth: config
                .auth
                .write
                .as_ref()
                .map(|c| c.resolve("auth.write"))
                .transpose()?,
            admin_auth: config
                .auth
                .admin
                .as_ref()
                .map(|c| c.resolve("auth.admin"))
                .transpose()?,
            read_auth: config
                .auth
                .read
                .as_ref()
                .map(|c| c.resolve("auth.read"))
                .transpose()?,
            protect_metrics: config.auth.protect_metrics,
            retention_ms: config.storage.retention.as_millis(),
            max_future_ms: config.remote_write.max_future.as_millis(),
            max_decoded_bytes: config.remote_write.max_decoded_bytes,
            max_query_concurrency: config.query.max_concurrency,
            label_limits: config.remote_write.label_limits(),
        })
    }
}

/// State shared by every handler.
pub struct App {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub engine: Engine,
    pub analyzer: Arc<Analyzer>,
    settings: RwLock<Arc<Settings>>,
    /// The file `/-/reload` re-reads; `None` when running on defaults.
    config_path: Option<PathBuf>,
    /// The rules engine, once the service has started it.
    rules: std::sync::OnceLock<Arc<crate::rules::RuleManager>>,
    /// The Decide stage and the actuators' metrics (a reload rebuilds the
    /// actuators with them), once the service has started it.
    decide: std::sync::OnceLock<(Arc<crate::decide::Decide>, crate::act::set::ActuatorMetrics)>,
    /// Slots for concurrent reads.
    queries: admission::QueryGate,
    /// Decoded remote-write bytes in flight across requests.
    decode_budget: admission::DecodeBudget,
    /// Held while a reload runs.
    reloading: parking_lot::Mutex<()>,
}

impl App {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        engine: Engine,
        analyzer: Arc<Analyzer>,
        settings: Settings,
        config_path: Option<PathBuf>,
    ) -> Self {
        App {
            store,
            metrics,
            engine,
            analyzer,
            queries: admission::QueryGate::new(settings.max_query_concurrency),
            decode_budget: admission::DecodeBudget::new(settings.max_decoded_bytes),
            reloading: parking_lot::Mutex::new(()),
            settings: RwLock::new(Arc::new(settings)),
            config_path,
            rules: std::sync::OnceLock::new(),
            decide: std::sync::OnceLock::new(),
        }
    }

    /// Attaches the Decide stage (once, at start); reloads then reconfigure it and
    /// rebuild its actuators.
    pub fn set_decide(
        &self,
        decide: Arc<crate::decide::Decide>,
        actuator_metrics: crate::act::set::ActuatorMetrics,
    ) {
        let _ = self.decide.set((decide, actuator_metrics));
    }

    /// The Decide stage, if running.
    pub fn decide(&self) -> Option<&Arc<crate::decide::Decide>> {
        self.decide.get().map(|(d, _)| d)
    }

    /// Attaches the rules engine (once, at start); reloads then include rule files.
    pub fn set_rules(&self, rules: Arc<crate::rules::RuleManager>) {
        let _ = self.rules.set(rules);
    }

    /// The rules engine, if running.
    pub fn rules(&self) -> Option<&Arc<crate::rules::RuleManager>> {
        self.rules.get()
    }

    /// The current settings (a cheap `Arc` clone).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// [`App::reload`] on the blocking pool, so that reading and validating files
    /// never holds up an async worker (health checks keep answering).
    pub async fn reload_blocking(self: &Arc<Self>) -> Result<(), String> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.reload())
            .await
            .unwrap_or_else(|e| Err(format!("reload task failed: {e}")))
    }

    /// Re-reads the configuration file and applies what can change at runtime
    /// (credentials, limits). On failure the running settings stay as they were.
    /// Reloads run one at a time.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock();
        let result = match &self.config_path {
            None => Ok(()),
            Some(path) => Config::load(path)
                .map_err(|e| e.to_string())
                .and_then(|c| Ok((Settings::from_config(&c)?, c)))
                .and_then(|(settings, c)| {
                    // Rule files are validated whole before anything changes.
                    if let Some(rules) = self.rules.get() {
                        rules.reload(c.rule_settings()).map_err(|e| e.to_string())?;
                    }
                    if let Some((d, m)) = self.decide.get() {
                        d.reconfigure(c.decide.clone());
                        rebuild_actuators(d.clone(), c.actuators.clone(), m.clone());
                    }
                    *self.settings.write() = Arc::new(settings);
                    Ok(())
                }),
        };
        match &result {
            Ok(()) => {
                self.metrics.config_last_reload_successful.set(1);
                self.metrics
                    .config_last_reload_success_timestamp
                    .set(chrono::Utc::now().timestamp());
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
            }
        }
        result
    }
}

/// Builds the actuators of a reloaded config and hands them to Decide; on error the
/// running ones stay (and the error is logged).
fn rebuild_actuators(
    decide: Arc<crate::decide::Decide>,
    config: crate::act::config::ActuatorsConfig,
    metrics: crate::act::set::ActuatorMetrics,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        match crate::act::set::ActuatorSet::build(&config, metrics).await {
            Ok(set) => decide.set_actuators(vec![Arc::new(set)]),
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the actuators failed; keeping the running ones")
            }
        }
    });
}

/// Routes that only read: all of them sit behind the read guard (`auth.read`). A new
/// read endpoint is added here and is protected with the rest.
fn read_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/anomalies", get(api::anomalies))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route("/api/v1/metadata", get(api::metadata))
        .route("/api/v1/rules", get(rules::rules))
        .route("/api/v1/alerts", get(rules::alerts))
        .route("/api/v1/actions", get(actions::list))
        .route("/api/v1/actions/{id}", get(actions::one))
        .route("/api/v1/approvals", get(actions::approvals))
}

/// Routes that change the service's state: all of them sit behind the admin guard
/// (`auth.admin`).
fn admin_routes() -> Router<Arc<App>> {
    Router::new().route("/-/reload", post(api::reload).put(api::reload))
}

/// Routes through which a human overrides the loop (approve, reject, roll back):
/// behind the admin guard, which here is never open — without `auth.admin`
/// configured they answer 403.
fn operator_routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v1/approvals/{id}/{verb}",
            post(actions::decide_approval),
        )
        .route("/api/v1/actions/{id}/rollback", post(actions::rollback))
}

/// Builds the router. `max_body_bytes` bounds every request body (413 beyond).
/// Each route group gets its guard before any body is read; `/-/healthy` and
/// `/-/ready` are open to probes; `/metrics` follows `auth.protect_metrics`.
pub fn router(app: Arc<App>, max_body_bytes: usize) -> Router {
    let guard = |g| middleware::from_fn_with_state((app.clone(), g), auth::require);
    let write = Router::new()
        .route("/api/v1/write", post(write::remote_write))
        .route_layer(guard(auth::Guard::Write));
    let admin = admin_routes().route_layer(guard(auth::Guard::Admin));
    let operator = operator_routes().route_layer(guard(auth::Guard::Operator));
    let read = read_routes().route_layer(guard(auth::Guard::Read));
    let metrics = Router::new()
        .route("/metrics", get(api::metrics))
        .route_layer(guard(auth::Guard::Metrics));
    let probes = Router::new()
        .route("/-/healthy", get(api::healthy))
        .route("/-/ready", get(api::ready));
    Router::new()
        .merge(write)
        .merge(admin)
        .merge(operator)
        .merge(read)
        .merge(metrics)
        .merge(probes)
        // Count and time every request by route.
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        // Bodies over the limit get 413 while being read, never buffered whole.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(app)
}

async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    app.metrics
        .http_request_duration
        .with_label_values(&[&handler])
        .observe(start.elapsed().as_secs_f64());
    app.metrics
        .http_requests
        .with_label_values(&[&handler, resp.status().as_str()])
        .inc();
    resp
}
