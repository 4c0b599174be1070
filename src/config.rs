//! Service configuration: a YAML file, every field optional with a sane default, so
//! `closedloop serve` runs with no file at all. Unknown keys and bad values are
//! rejected with the key path (`storage.retention`) and the reason.
//!
//! Secrets (tokens, passwords) are never written in the file itself: the file names
//! another file or an environment variable holding them, and they are never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::PromDuration;

/// Problems loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML does not fit the schema; `key` is the path of the offending key.
    #[error("{path}: {key}: {reason}")]
    Parse {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on (`host:port`).
    pub listen_address: String,
    /// The HTTP server's connection limits.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The in-memory store.
    pub storage: StorageConfig,
    /// The remote-write receiver.
    pub remote_write: RemoteWriteConfig,
    /// PromQL engine limits.
    pub query: QueryConfig,
    /// Prometheus rule files to load; glob patterns allowed. Relative paths are
    /// relative to the configuration file.
    pub rule_files: Vec<String>,
    /// Serve HTTPS with this certificate and key (PEM files) instead of HTTP.
    pub tls: Option<TlsConfig>,
    /// Who may write samples and who may change the service's state.
    pub auth: AuthConfig,
    /// Settings shared by rule groups: evaluation interval, external labels and URL.
    pub global: crate::rules::config::GlobalConfig,
    /// Where alerts are sent (Alertmanager API v2).
    pub alerting: crate::rules::config::AlertingConfig,
    /// The rules engine: state file, watching rule files.
    pub rules: crate::rules::config::RulesConfig,
    /// Root-cause analysis: topology, incidents, ranking.
    pub rca: crate::rca::RcaConfig,
    /// The safety policy actions pass: dry-run, allow-lists, limits, approvals.
    pub decide: crate::decide::DecideConfig,
    /// The embedded knowledge store (audit log, approvals, policy and alert state).
    pub knowledge: crate::knowledge::KnowledgeConfig,
    /// Anomaly scoring: the queue between ingest and the scoring worker.
    pub anomaly: AnomalyConfig,
    /// Where actions go: Kubernetes, Redis targets, HTTP config endpoints, notify
    /// channels (targets and secrets live here, never in rule files).
    pub actuators: crate::act::config::ActuatorsConfig,
    /// The HTTP API as browsers see it.
    pub web: WebConfig,
}

/// `web:` — what Prometheus sets with `--web.*` flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Origins allowed to read the API from a browser, a regex anchored at both
    /// ends (Prometheus's `--web.cors.origin`; `.*` answers `*`). Fixed at start.
    pub cors_origin: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            cors_origin: ".*".to_owned(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_address: "127.0.0.1:9096".to_owned(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            remote_write: RemoteWriteConfig::default(),
            query: QueryConfig::default(),
            rule_files: Vec::new(),
            tls: None,
            auth: AuthConfig::default(),
            global: Default::default(),
            alerting: Default::default(),
            rules: Default::default(),
            rca: Default::default(),
            decide: Default::default(),
            knowledge: Default::default(),
            anomaly: AnomalyConfig::default(),
            actuators: Default::default(),
            web: WebConfig::default(),
        }
    }
}

/// Anomaly scoring runs on a worker thread, off the remote-write request path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Most stored samples waiting to be scored (about 50 bytes each while queued).
    /// When scoring falls behind, the oldest queued samples are dropped unscored
    /// (counted in `closed_loop_anomaly_samples_dropped_total`); ingest never waits.
    pub queue_samples: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            queue_samples: 1_000_000,
        }
    }
}

/// Limits on the HTTP server's connections (fixed at start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Most connections open at once; further ones are closed as soon as they are
    /// accepted (Prometheus's `--web.max-connections`). Probes share the limit.
    pub max_connections: usize,
    /// Once an HTTP/1 request's first byte arrives, its head must be complete
    /// within this, or the connection is closed.
    pub read_header_timeout: PromDuration,
    /// A connection with no request in flight and no bytes moving for this long is
    /// closed (never used, half-open and idle keep-alive connections alike).
    pub idle_timeout: PromDuration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 512,
            read_header_timeout: PromDuration::from_secs(10),
            idle_timeout: PromDuration::from_secs(120),
        }
    }
}

impl HttpConfig {
    /// The server's connection limits.
    pub fn limits(&self) -> crate::http::ConnectionLimits {
        crate::http::ConnectionLimits {
            max_connections: self.max_connections,
            read_header_timeout: self.read_header_timeout.as_duration(),
            idle_timeout: self.idle_timeout.as_duration(),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` (human-readable lines) or `json` (one object per line).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `closedloop=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// Store sizing: together these bound memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How much history each series keeps; series idle this long are dropped.
    pub retention: PromDuration,
    /// Most series held at once; samples of further new series are rejected.
    pub max_series: usize,
    /// Exemplars kept from remote write, in one circular buffer (Prometheus's
    /// `storage.exemplars.max_exemplars`); 0 keeps none. Fixed at start.
    pub max_exemplars: usize,
    /// Metric names whose metadata (type, help, unit) is kept from remote write;
    /// metadata of further names is dropped (counted). Fixed at start.
    pub max_metadata: usize,
    /// When set, new series are refused (remote write answers 400 with reason
    /// `memory_limit`) once the store's estimated heap bytes (`closedloop_store_bytes`)
    /// reach this many bytes; series already held keep appending, each bounded by
    /// the retention. Unset: no byte limit (the series limit still applies).
    pub max_bytes: Option<usize>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            retention: PromDuration::from_secs(6 * 3600),
            max_series: 1_000_000,
            max_exemplars: 100_000,
            max_metadata: 50_000,
            max_bytes: None,
        }
    }
}

/// Remote-write receiver limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// Largest accepted request body, compressed, in bytes. Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest accepted body after snappy decompression, in bytes (413 beyond); also
    /// the most decoded bytes all requests in flight may hold together (a request
    /// that would go over it gets 503 with `Retry-After`, which senders retry).
    pub max_decoded_bytes: usize,
    /// Samples further than this in the future (by the service's clock) are rejected.
    pub max_future: PromDuration,
    /// Most labels per series, the metric name included; series with more are
    /// refused (400 naming the limit; the rest of the request is stored). 0: no limit.
    pub label_limit: usize,
    /// Longest label name in bytes; 0: no limit.
    pub label_name_length_limit: usize,
    /// Longest label value in bytes; 0: no limit.
    pub label_value_length_limit: usize,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        let labels = crate::ingest::LabelLimits::default();
        RemoteWriteConfig {
            max_body_bytes: 32 << 20,
            max_decoded_bytes: 256 << 20,
            max_future: PromDuration::from_secs(600),
            label_limit: labels.max_labels,
            label_name_length_limit: labels.max_name_bytes,
            label_value_length_limit: labels.max_value_bytes,
        }
    }
}

impl RemoteWriteConfig {
    /// The ingest label limits.
    pub fn label_limits(&self) -> crate::ingest::LabelLimits {
        crate::ingest::LabelLimits {
            max_labels: self.label_limit,
            max_name_bytes: self.label_name_length_limit,
            max_value_bytes: self.label_value_length_limit,
        }
    }
}

/// PromQL engine limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// How far back an instant vector selector looks for a sample.
    pub lookback_delta: PromDuration,
    /// Most samples one query may hold in memory at once.
    pub max_samples: usize,
    /// Longest a query may run, parsing included.
    pub timeout: PromDuration,
    /// Longest query text in bytes (API queries, rule expressions, template
    /// queries); longer ones are refused before parsing.
    pub max_length: usize,
    /// Deepest nesting of operators, function calls and brackets in a query (a chain
    /// `a + b + …` counts one level per operator); deeper ones are refused before
    /// parsing, rule files at load time.
    pub max_depth: usize,
    /// Reads (queries, series, labels) running at once; more wait for a free slot
    /// until their timeout (Prometheus's `--query.max-concurrency`). Rule
    /// evaluation does not count.
    pub max_concurrency: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            lookback_delta: PromDuration::from_secs(300),
            max_samples: 50_000_000,
            timeout: PromDuration::from_secs(120),
            max_length: crate::promql::DEFAULT_MAX_LENGTH,
            max_depth: crate::promql::DEFAULT_MAX_DEPTH,
            max_concurrency: 20,
        }
    }
}

/// TLS certificate and key, PEM encoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Access control. Each part is optional; absent means open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required on `POST /api/v1/write`, as Prometheus's `remote_write`
    /// `authorization` or `basic_auth` settings send it.
    pub write: Option<CredentialsConfig>,
    /// Required on every endpoint that changes the service's state (`/-/reload`,
    /// approvals).
    pub admin: Option<CredentialsConfig>,
    /// Required on every read endpoint (queries, series, labels, metadata, rules,
    /// alerts, anomalies, and the loop's views), as Prometheus's web config
    /// protects its API. `/-/healthy` and `/-/ready` stay open for probes.
    pub read: Option<CredentialsConfig>,
    /// With `read` set, whether `/metrics` needs it too (`false` leaves it open
    /// for a scraper without credentials).
    pub protect_metrics: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            write: None,
            admin: None,
            read: None,
            protect_metrics: true,
        }
    }
}

/// One accepted credential: a bearer token or a basic-auth user, exactly one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// File holding the bearer token (surrounding whitespace is trimmed).
    pub bearer_token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    pub bearer_token_env: Option<String>,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
}

/// A basic-auth user; the password comes from a file or an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

/// A secret value; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// A credential with its secret loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning the file's text as it was read (what
    /// `/api/v1/status/config` shows; the file holds no secrets).
    pub fn load_with_text(path: &Path) -> Result<(Config, String)> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok((config, text))
    }

    /// Parses and validates YAML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Parse {
                    path: path.into(),
                    key: if key == "." {
                        "(top level)".to_owned()
                    } else {
                        key
                    },
                    reason: e.into_inner().to_string(),
                }
            })?
        };
        config.validate(path)?;
        Ok(config)
    }

    /// Checks values the schema alone cannot.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.into(),
            key: key.into(),
            reason,
        };
        self.listen_address.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "listen_address",
                format!("{:?} is not host:port ({e})", self.listen_address),
            )
        })?;
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1".into()));
        }
        for (key, d) in [
            ("http.read_header_timeout", &self.http.read_header_timeout),
            ("http.idle_timeout", &self.http.idle_timeout),
        ] {
            if d.as_millis() <= 0 {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        if self.storage.retention.as_millis() < 60_000 {
            return Err(invalid("storage.retention", "must be at least 1m".into()));
        }
        if self.storage.max_series == 0 {
            return Err(invalid("storage.max_series", "must be at least 1".into()));
        }
        if self.anomaly.queue_samples < 1_000 {
            return Err(invalid(
                "anomaly.queue_samples",
                "must be at least 1000".into(),
            ));
        }
        if self.storage.max_bytes.is_some_and(|b| b < 1 << 20) {
            return Err(invalid(
                "storage.max_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            ));
        }
        if self.remote_write.max_body_bytes < 1024 {
            return Err(invalid(
                "remote_write.max_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.remote_write.max_decoded_bytes < self.remote_write.max_body_bytes {
            return Err(invalid(
                "remote_write.max_decoded_bytes",
                "must be at least remote_write.max_body_bytes".into(),
            ));
        }
        if self.remote_write.max_decoded_bytes > u32::MAX as usize {
            return Err(invalid(
                "remote_write.max_decoded_bytes",
                "must be under 4 GiB".into(),
            ));
        }
        if self.query.timeout.as_millis() == 0 {
            return Err(invalid("query.timeout", "must be positive".into()));
        }
        if self.query.lookback_delta.as_millis() == 0 {
            return Err(invalid("query.lookback_delta", "must be positive".into()));
        }
        if self.query.max_concurrency == 0 {
            return Err(invalid(
                "query.max_concurrency",
                "must be at least 1".into(),
            ));
        }
        if self.query.max_length < 1024 {
            return Err(invalid("query.max_length", "must be at least 1024".into()));
        }
        if !(16..=crate::promql::MAX_DEPTH_CEILING).contains(&self.query.max_depth) {
            return Err(invalid(
                "query.max_depth",
                format!(
                    "must be between 16 and {}",
                    crate::promql::MAX_DEPTH_CEILING
                ),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", self.log.level)))?;
        crate::http::check_cors_origin(&self.web.cors_origin).map_err(|e| {
            invalid(
                "web.cors_origin",
                format!("{:?}: {e}", self.web.cors_origin),
            )
        })?;
        for (i, pattern) in self.rule_files.iter().enumerate() {
            if pattern.trim().is_empty() {
                return Err(invalid(&format!("rule_files[{i}]"), "empty pattern".into()));
            }
        }
        if let Err((key, reason)) = self
            .global
            .validate()
            .and_then(|_| self.alerting.validate())
            .and_then(|_| self.rca.validate())
            .and_then(|_| self.decide.validate())
            .and_then(|_| self.actuators.validate())
        {
            return Err(invalid(&key, reason));
        }
        for (key, creds) in [
            ("auth.write", &self.auth.write),
            ("auth.admin", &self.auth.admin),
            ("auth.read", &self.auth.read),
        ] {
            if let Some(c) = creds {
                c.validate().map_err(|reason| invalid(key, reason))?;
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
        for c in [
            &mut self.auth.write,
            &mut self.auth.admin,
            &mut self.auth.read,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(p) = &mut c.bearer_token_file {
                join(p);
            }
            if let Some(p) = c.basic_auth.as_mut().and_then(|b| b.password_file.as_mut()) {
                join(p);
            }
        }
        self.rules.resolve_paths(base);
        if self.knowledge.path.is_relative() {
            self.knowledge.path = base.join(&self.knowledge.path);
        }
        self.actuators.resolve_paths(base);
        for pattern in &mut self.rule_files {
            let joined = if Path::new(pattern.as_str()).is_relative() {
                base.join(&*pattern)
            } else {
                PathBuf::from(&*pattern)
            };
            // Cleaned as Go's `filepath.Join` cleans them, so `/api/v1/rules` shows
            // the `file` Prometheus would (`./rules.yml` is `rules.yml`).
            *pattern = clean_path(&joined).to_string_lossy().into_owned();
        }
    }

    /// The PromQL engine's settings.
    pub fn engine_options(&self) -> crate::promql::EngineOptions {
        crate::promql::EngineOptions {
            lookback_delta_ms: self.query.lookback_delta.as_millis(),
            max_samples: self.query.max_samples,
            timeout: self.query.timeout.as_duration(),
            limits: crate::promql::QueryLimits {
                max_length: self.query.max_length,
                max_depth: self.query.max_depth,
            },
            ..Default::default()
        }
    }

    /// The rules engine's settings.
    pub fn rule_settings(&self) -> crate::rules::RuleSettings {
        crate::rules::RuleSettings {
            patterns: self.rule_files.clone(),
            global: self.global.clone(),
            alerting: self.alerting.clone(),
            external_url: self
                .global
                .external_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.listen_address)),
            watch_interval_ms: self.rules.watch_interval.as_millis(),
            legacy_state_file: (!self.rules.state_file.as_os_str().is_empty())
                .then(|| self.rules.state_file.clone()),
            query_limits: self.engine_options().limits,
        }
    }

    /// The store's sizing.
    pub fn store_config(&self) -> crate::storage::StoreConfig {
        crate::storage::StoreConfig {
            retention_ms: self.storage.retention.as_millis(),
            max_series: self.storage.max_series,
            max_bytes: self.storage.max_bytes,
            ..Default::default()
        }
    }
}

/// A path without `.` components and with `dir/..` pairs removed, lexically (Go's
/// `filepath.Clean`).
fn clean_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::ParentDir if matches!(out.last(), Some(Component::RootDir)) => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

impl CredentialsConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let set = [
            self.bearer_token_file.is_some(),
            self.bearer_token_env.is_some(),
            self.basic_auth.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            return Err(
                "set exactly one of bearer_token_file, bearer_token_env, basic_auth".into(),
            );
        }
        if let Some(b) = &self.basic_auth {
            if b.username.is_empty() {
                return Err("basic_auth.username is empty".into());
            }
            if b.password_file.is_some() == b.password_env.is_some() {
                return Err("basic_auth: set exactly one of password_file, password_env".into());
            }
        }
        Ok(())
    }

    /// Loads the secret from its file or environment variable. `key` names the
    /// setting in errors; the secret itself never appears in them.
    pub fn resolve(&self, key: &str) -> std::result::Result<Credentials, String> {
        let read = load_secret;
        match &self.basic_auth {
            Some(b) => Ok(Credentials::Basic {
                username: b.username.clone(),
                password: read(
                    &format!("{key}.basic_auth"),
                    &b.password_file,
                    &b.password_env,
                )?,
            }),
            None => Ok(Credentials::Bearer(read(
                key,
                &self.bearer_token_file,
                &self.bearer_token_env,
            )?)),
        }
    }
}

/// Loads a secret from a file (preferred when both are set) or an environment
/// variable, trimmed. `key` names the setting in errors; the secret never appears.
pub fn load_secret(
    key: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> std::result::Result<Secret, String> {
    let value = match (file, env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| format!("{key}: reading {}: {e}", f.display()))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("{key}: environment variable {var} is not set"))?,
        (None, None) => return Err(format!("{key}: no secret source")),
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(format!("{key}: the secret is empty"));
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.yml"))
    }

    #[test]
    fn rule_file_paths_are_cleaned_like_go() {
        for (base, pattern, want) in [
            ("", "./rules.yml", "rules.yml"),
            ("/etc/cl", "rules/../alerts/*.yml", "/etc/cl/alerts/*.yml"),
            ("/etc/cl/.", "/abs/./r.yml", "/abs/r.yml"),
            ("", "../rules/r.yml", "../rules/r.yml"),
        ] {
            let mut c = Config {
                rule_files: vec![pattern.into()],
                ..Config::default()
            };
            c.resolve_paths(Path::new(base));
            assert_eq!(c.rule_files, vec![want.to_string()], "{base} {pattern}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen_address, "127.0.0.1:9096");
        assert_eq!(c.storage.retention.as_millis(), 6 * 3600 * 1000);
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            "listen_address: 0.0.0.0:9000\nlog: {format: json, level: debug}\nstorage: {retention: 2h, max_series: 10}\n\
             rule_files: ['rules/*.yml']\nauth:\n  write:\n    basic_auth: {username: prom, password_env: PW}\n",
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.storage.max_series, 10);
        assert_eq!(c.rule_files, vec!["rules/*.yml"]);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = parse("storage:\n  retention: 1h\n  retension: 2h\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage") && e.contains("retension"), "{e}");
    }

    #[test]
    fn bad_duration_names_its_path() {
        let e = parse("storage:\n  retention: 6hours\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.yml: storage.retention:"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse("listen_address: nowhere\n")
            .unwrap_err()
            .to_string()
            .contains("listen_address"));
        assert!(parse("storage: {max_series: 0}\n")
            .unwrap_err()
            .to_string()
            .contains("storage.max_series"));
        let e = parse("auth:\n  write: {bearer_token_env: A, bearer_token_file: /x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.write"), "{e}");
        assert!(parse("log: {format: xml}\n")
            .unwrap_err()
            .to_string()
            .contains("log.format"));
    }

    #[test]
    fn secrets_come_from_env_and_never_print() {
        std::env::set_var("CLOSEDLOOP_TEST_TOKEN", " s3cret\n");
        let c = CredentialsConfig {
            bearer_token_env: Some("CLOSEDLOOP_TEST_TOKEN".into()),
            ..Default::default()
        };
        let creds = c.resolve("auth.write").unwrap();
        assert_eq!(creds, Credentials::Bearer(Secret("s3cret".into())));
        assert!(!format!("{creds:?}").contains("s3cret"));
        let missing = CredentialsConfig {
            bearer_token_env: Some("CLOSEDLOOP_NOPE".into()),
            ..Default::default()
        };
        assert!(missing
            .resolve("auth.write")
            .unwrap_err()
            .contains("CLOSEDLOOP_NOPE"));
    }
}
