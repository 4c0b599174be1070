//! `closedloop serve`: wires the store, metrics and HTTP server together from a
//! configuration, runs the housekeeping timers, and handles signals (SIGTERM/SIGINT
//! shut down gracefully, SIGHUP reloads).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::act::set::{ActuatorMetrics, ActuatorSet};
use crate::act::Actuator;
use crate::anomaly::{Analyzer, IncidentConfig};
use crate::config::Config;
use crate::decide::conditions::ServiceConditions;
use crate::decide::{Decide, DecideDeps, DecideMetrics, IncidentOpened, SystemClock};
use crate::http::{self, App, LimitAcceptor, Settings};
use crate::knowledge::{KnowledgeStore, SqliteStore};
use crate::metrics::{Metrics, MetricsError};
use crate::promql::Engine;
use crate::rules::notifier::{Notifier, NotifierMetrics};
use crate::rules::Severity;
use crate::rules::{LocalSource, RuleDeps, RuleManager};
use crate::storage::Store;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// TLS certificate or key could not be loaded.
    #[error("loading TLS certificate {cert} and key {key}: {source}")]
    Tls {
        cert: String,
        key: String,
        source: std::io::Error,
    },
    /// A secret named by the configuration could not be read.
    #[error("{0}")]
    Secret(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The actuators could not be built (a secret missing, a bad kubeconfig).
    #[error("actuators: {0}")]
    Actuators(String),
    /// The knowledge store could not be opened, or the decider started.
    #[error("knowledge store: {0}")]
    Knowledge(String),
    /// Registering the connection metrics failed (a programming error).
    #[error("registering connection metrics: {0}")]
    ConnMetrics(#[from] prometheus::Error),
    /// The rule files could not be loaded.
    #[error("rules: {0}")]
    Rules(String),
    /// The HTTP server failed while running.
    #[error("http server: {0}")]
    Serve(std::io::Error),
    /// The anomaly scoring thread could not be started.
    #[error("starting the anomaly scoring worker: {0}")]
    Worker(std::io::Error),
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    let settings = Settings::from_config(&config).map_err(ServiceError::Secret)?;
    let store = Arc::new(Store::new(config.store_config()));
    let metrics = Arc::new(Metrics::new()?);
    metrics.config_last_reload_successful.set(1);
    metrics
        .config_last_reload_success_timestamp
        .set(chrono::Utc::now().timestamp());
    let engine = Engine::new(config.engine_options());
    // Detectors score on their own thread, fed by a bounded queue: a remote-write
    // request returns once its samples are stored.
    let analyzer = Arc::new(
        Analyzer::with_worker(
            metrics.detections.clone(),
            metrics.anomaly_outputs_dropped.clone(),
            IncidentConfig::default(),
            store.clone(),
            config.anomaly.queue_samples,
            metrics.scoring.clone(),
        )
        .map_err(ServiceError::Worker)?,
    );
    let app = Arc::new(App::new(
        store.clone(),
        metrics.clone(),
        engine.clone(),
        analyzer.clone(),
        settings,
        config_path,
    ));
    // The loop's memory first: the rules' alert state and the decider read it at start.
    let knowledge: Arc<dyn KnowledgeStore> = Arc::new(
        SqliteStore::open(&config.knowledge.path)
            .map_err(|e| ServiceError::Knowledge(e.to_string()))?,
    );
    let decide_metrics = Arc::new(
        DecideMetrics::new(
            metrics.registry(),
            config.decide.success_rate_window.as_millis(),
        )
        .map_err(MetricsError::from)?,
    );
    let conditions = Arc::new(ServiceConditions::new(analyzer.clone()));
    // The actuators the config names (`actuators:`); the decide stage's executor is
    // their only caller.
    let actuator_metrics = ActuatorMetrics::new(metrics.registry()).map_err(MetricsError::from)?;
    let actuators: Arc<dyn Actuator> = Arc::new(
        ActuatorSet::build(&config.actuators, actuator_metrics.clone())
            .await
            .map_err(|e| ServiceError::Actuators(e.to_string()))?,
    );
    let decide = Arc::new(
        Decide::start(
            config.decide.clone(),
            DecideDeps {
                store: knowledge.clone(),
                actuators: vec![actuators],
                conditions: conditions.clone(),
                clock: Arc::new(SystemClock),
                metrics: decide_metrics,
                runtime: tokio::runtime::Handle::current(),
            },
        )
        .map_err(|e| ServiceError::Knowledge(format!("starting the decider: {e}")))?,
    );
    app.set_decide(decide.clone(), actuator_metrics);
    let intake = decide.intake();
    analyzer.set_incident_sink(Box::new(move |inc| {
        intake.incident(IncidentOpened {
            id: inc.id,
            group: inc.group.clone(),
            severity: Severity::parse(&inc.severity),
            start_ms: inc.start_ms,
            opened_ms: inc.last_update_ms,
            seen: std::time::Instant::now(),
            context: None,
        })
    }));
    let notifier = Notifier::new(
        config.alerting.clone(),
        config.global.clone(),
        NotifierMetrics::new(metrics.registry()).map_err(MetricsError::from)?,
    );
    tokio::spawn(notifier.clone().run());
    let rules = RuleManager::start(
        config.rule_settings(),
        RuleDeps {
            source: Arc::new(LocalSource {
                engine: engine.clone(),
                store: store.clone(),
            }),
            appender: store.clone(),
            alerts: decide.intake(),
            notifier,
            state: Some(knowledge.clone()),
            metrics: metrics.clone(),
            remote_timeout: config.query.timeout.as_duration(),
        },
    )
    .map_err(|e| ServiceError::Rules(e.to_string()))?;
    conditions.set_rules(&rules);
    app.set_rules(rules.clone());
    // The rule files' `detectors:` run in the analyzer (on every rule reload too).
    let detectors = analyzer.clone();
    rules.set_detector_sink(Box::new(move |specs| {
        if let Err(e) = detectors.reload(specs) {
            tracing::error!(error = %e, "loading the rule files' detectors failed; keeping the running ones");
        }
    }));

    let listener = std::net::TcpListener::bind(&config.listen_address).map_err(|source| {
        ServiceError::Bind {
            addr: config.listen_address.clone(),
            source,
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(ServiceError::Serve)?;
    let addr: SocketAddr = listener.local_addr().map_err(ServiceError::Serve)?;

    let handle = axum_server::Handle::new();
    tokio::spawn(watch_signals(handle.clone(), app.clone()));
    tokio::spawn(collect_garbage(
        store,
        analyzer,
        metrics.clone(),
        config.storage.retention.as_millis(),
    ));

    let router = http::router(app, config.remote_write.max_body_bytes).into_make_service();
    let limits = config.http.limits();
    match &config.tls {
        Some(tls) => {
            // One process-wide crypto provider; a second install attempt is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls_config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file)
                    .await
                    .map_err(|source| ServiceError::Tls {
                        cert: tls.cert_file.display().to_string(),
                        key: tls.key_file.display().to_string(),
                        source,
                    })?;
            tracing::info!(address = %addr, tls = true, "listening");
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(rustls_config);
            let acceptor = LimitAcceptor::new(tls, limits, metrics.registry())?;
            axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle)
                .serve(router)
                .await
        }
        None => {
            tracing::info!(address = %addr, tls = false, "listening");
            let plain = axum_server::accept::DefaultAcceptor::new();
            let acceptor = LimitAcceptor::new(plain, limits, metrics.registry())?;
            axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle)
                .serve(router)
                .await
        }
    }
    .map_err(ServiceError::Serve)?;
    // Keep `for` state for the next start; let the decider write what it holds.
    match tokio::task::spawn_blocking(move || {
        decide.stop();
        rules.save_state()
    })
    .await
    {
        Ok(Err(e)) => tracing::warn!(error = %e, "saving rule state failed"),
        Err(e) => tracing::warn!(error = %e, "saving rule state failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!("shut down");
    Ok(())
}

async fn watch_signals(handle: axum_server::Handle, app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = app.reload_blocking().await;
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}

/// Drops expired samples and idle series, at a tenth of the retention (at most a
/// minute apart).
async fn collect_garbage(
    store: Arc<Store>,
    analyzer: Arc<Analyzer>,
    metrics: Arc<Metrics>,
    retention_ms: i64,
) {
    let period = Duration::from_millis((retention_ms / 10).clamp(1_000, 60_000) as u64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (store, analyzer) = (store.clone(), analyzer.clone());
        let now = chrono::Utc::now().timestamp_millis();
        let removed = tokio::task::spawn_blocking(move || {
            let removed = store.gc(now);
            analyzer.forget(&removed);
            removed.len()
        });
        if let Ok(removed) = removed.await {
            metrics.store_series_removed.inc_by(removed as u64);
        }
    }
}
