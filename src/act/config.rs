//! The `actuators:` section of the service configuration: the Kubernetes API to
//! talk to, the named Redis targets, HTTP config endpoints and notify channels that
//! actions refer to by name, their timeouts and the retry policy.
//!
//! Targets and secrets live here and only here: a rule names `target: cache`, never
//! a URL or a password. Secrets are read from files or environment variables when
//! the [`super::ActuatorSet`] is built; the file holds no secret itself (a URL with
//! a password in it is rejected).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{load_secret, CredentialsConfig, Secret};
use crate::duration::PromDuration;

use super::retry::RetryPolicy;

type KeyedError = (String, String);

/// Every actuator's settings. All optional: an action whose actuator is not
/// configured fails with "no actuator configured".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActuatorsConfig {
    /// Retries of failed outbound calls (only idempotent calls, or errors where the
    /// request was certainly not carried out).
    pub retry: RetryConfig,
    /// The Kubernetes API (pods, workloads, scale, ConfigMaps, nodes, Argo
    /// Rollouts). Absent: no Kubernetes actions.
    pub kubernetes: Option<KubernetesConfig>,
    /// Redis servers by name (`clear_cache` actions name one as `target`).
    pub redis: BTreeMap<String, RedisTargetConfig>,
    /// Dynamic-configuration endpoints by name (`http_config` actions name one as
    /// `endpoint`).
    pub http_config: BTreeMap<String, HttpEndpointConfig>,
    /// Notification channels by name (`notify` actions name one as `channel`).
    pub notify: BTreeMap<String, NotifyChannelConfig>,
}

/// Retry policy shared by every actuator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries per call, the first included (1 = no retry); at most 10.
    pub attempts: u32,
    /// Pause after the first failure, doubled after each further one.
    pub initial_backoff: PromDuration,
    /// Longest pause between two tries.
    pub max_backoff: PromDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        RetryConfig {
            attempts: p.attempts,
            initial_backoff: PromDuration(p.initial_backoff.as_millis() as i64),
            max_backoff: PromDuration(p.max_backoff.as_millis() as i64),
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts,
            initial_backoff: self.initial_backoff.as_duration(),
            max_backoff: self.max_backoff.as_duration(),
        }
    }
}

/// How to reach the Kubernetes API: a kubeconfig file, or the pod's service
/// account (`in_cluster`), exactly one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file (relative paths are relative to this configuration file).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; absent: its `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account closedloop runs as (in a pod).
    #[serde(default)]
    pub in_cluster: bool,
    /// Longest one API request may take (each retry gets its own).
    #[serde(default = "default_timeout")]
    pub request_timeout: PromDuration,
}

/// One Redis server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTargetConfig {
    /// `redis://host:port[/db]`, without credentials.
    pub url: String,
    /// ACL user name (Redis 6+); absent: the default user.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Database index used when an action names none (default: the URL's, else 0).
    #[serde(default)]
    pub db: Option<u32>,
    /// Keys per `SCAN … COUNT` and per `UNLINK`; 1 to 10000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Ceiling on any action's `max_keys` for this server.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// Longest one command (connect, SCAN, UNLINK) may take.
    #[serde(default = "default_redis_timeout")]
    pub timeout: PromDuration,
    /// Longest a whole clear may take before it stops, reporting what it removed.
    #[serde(default = "default_clear_deadline")]
    pub deadline: PromDuration,
}

/// HTTP method of a dynamic-configuration endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    /// Idempotent: retried after timeouts and 5xx.
    #[serde(rename = "PUT")]
    Put,
    /// Not idempotent: retried only when the connection could not be made.
    #[serde(rename = "POST")]
    Post,
}

/// One dynamic-configuration endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpointConfig {
    /// Where the JSON body goes (`http://` or `https://`, no credentials).
    pub url: String,
    /// `PUT` (default) or `POST`.
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// Where a GET returns the current value as JSON: recorded before each change,
    /// so the change can be undone. Absent: no undo.
    #[serde(default)]
    pub get_url: Option<String>,
    /// Extra headers: a plain value, or `{file: path}` / `{env: NAME}` for secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValueConfig>,
    /// `Authorization` (bearer token or basic auth, secrets from file/env).
    #[serde(default)]
    pub auth: Option<CredentialsConfig>,
    /// Longest one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
    /// Largest response body read (the previous value from `get_url`).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

/// A header value: plain text, or a secret read from a file or the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderValueConfig {
    Plain(String),
    Secret(SecretSourceConfig),
}

/// Where a secret comes from: exactly one of `file` and `env`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSourceConfig {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

/// The kind of a notify channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A generic JSON webhook (closedloop's own payload).
    Webhook,
    /// A Slack (or Slack-compatible) incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Alertmanager API v2 (`POST <url>/api/v2/alerts`).
    Alertmanager,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Pagerduty => "pagerduty",
            NotifyKind::Alertmanager => "alertmanager",
        }
    }
}

/// One notification channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyChannelConfig {
    pub kind: NotifyKind,
    /// Where to send. For `pagerduty` the default is PagerDuty's Events API v2
    /// endpoint; for `alertmanager` the Alertmanager's base URL.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (Slack webhook URLs are secrets).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// An environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// PagerDuty: file holding the integration's routing key.
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// PagerDuty: environment variable holding the routing key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// Longest one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

fn default_timeout() -> PromDuration {
    PromDuration::from_secs(10)
}
fn default_redis_timeout() -> PromDuration {
    PromDuration::from_secs(5)
}
fn default_clear_deadline() -> PromDuration {
    PromDuration::from_secs(60)
}
fn default_batch_size() -> u32 {
    500
}
fn default_max_keys() -> u64 {
    100_000
}
fn default_method() -> HttpMethod {
    HttpMethod::Put
}
fn default_max_response_bytes() -> usize {
    1 << 20
}

/// Names of targets: what rules and the audit log use.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn positive(key: String, d: &PromDuration) -> Result<(), KeyedError> {
    if d.as_millis() <= 0 {
        return Err((key, "must be positive".into()));
    }
    Ok(())
}

fn one_of(key: String, names: [&str; 2], set: [bool; 2]) -> Result<(), KeyedError> {
    if set[0] == set[1] {
        return Err((
            key,
            format!("set exactly one of {}, {}", names[0], names[1]),
        ));
    }
    Ok(())
}

/// An `http(s)://` URL without credentials in it.
fn http_url(key: String, url: &str) -> Result<(), KeyedError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| (key.clone(), format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((key, format!("{url:?}: the scheme must be http or https")));
    }
    if parsed.password().is_some() || !parsed.username().is_empty() {
        return Err((
            key,
            "credentials do not belong in the URL: use auth or headers with file/env".into(),
        ));
    }
    Ok(())
}

impl ActuatorsConfig {
    /// Checks values the schema alone cannot; errors name the key path.
    pub fn validate(&self) -> Result<(), KeyedError> {
        let r = &self.retry;
        if r.attempts == 0 || r.attempts > 10 {
            return Err(("actuators.retry.attempts".into(), "must be 1 to 10".into()));
        }
        positive("actuators.retry.initial_backoff".into(), &r.initial_backoff)?;
        if r.max_backoff.as_millis() < r.initial_backoff.as_millis() {
            return Err((
                "actuators.retry.max_backoff".into(),
                "must be at least initial_backoff".into(),
            ));
        }
        if let Some(k) = &self.kubernetes {
            one_of(
                "actuators.kubernetes".into(),
                ["kubeconfig", "in_cluster: true"],
                [k.kubeconfig.is_some(), k.in_cluster],
            )?;
            if k.in_cluster && k.context.is_some() {
                return Err((
                    "actuators.kubernetes.context".into(),
                    "only applies with kubeconfig".into(),
                ));
            }
            positive(
                "actuators.kubernetes.request_timeout".into(),
                &k.request_timeout,
            )?;
        }
        for (name, t) in &self.redis {
            let key = |field: &str| format!("actuators.redis.{name}{field}");
            if !valid_name(name) {
                return Err((key(""), "names are 1-64 of [A-Za-z0-9_-]".into()));
            }
            let info = redis::IntoConnectionInfo::into_connection_info(t.url.as_str())
                .map_err(|e| (key(".url"), format!("{:?}: {e}", t.url)))?;
            if !t.url.starts_with("redis://") {
                return Err((
                    key(".url"),
                    "only redis:// URLs are supported (no TLS, no unix sockets yet)".into(),
                ));
            }
            if info.redis_settings().password().is_some() {
                return Err((
                    key(".url"),
                    "the password does not belong in the URL: use password_file or password_env"
                        .into(),
                ));
            }
            if t.password_file.is_some() && t.password_env.is_some() {
                return Err((
                    key(""),
                    "set at most one of password_file, password_env".into(),
                ));
            }
            if t.username.is_some() && t.password_file.is_none() && t.password_env.is_none() {
                return Err((
                    key(".username"),
                    "needs password_file or password_env".into(),
                ));
            }
            if t.batch_size == 0 || t.batch_size > 10_000 {
                return Err((key(".batch_size"), "must be 1 to 10000".into()));
            }
            if t.max_keys == 0 {
                return Err((key(".max_keys"), "must be at least 1".into()));
            }
            positive(key(".timeout"), &t.timeout)?;
            positive(key(".deadline"), &t.deadline)?;
        }
        for (name, e) in &self.http_config {
            let key = |field: &str| format!("actuators.http_config.{name}{field}");
            if !valid_name(name) {
                return Err((key(""), "names are 1-64 of [A-Za-z0-9_-]".into()));
            }
            http_url(key(".url"), &e.url)?;
            if let Some(g) = &e.get_url {
                http_url(key(".get_url"), g)?;
            }
            for (h, v) in &e.headers {
                let hkey = key(&format!(".headers.{h}"));
                reqwest::header::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| (hkey.clone(), "not a valid header name".into()))?;
                match v {
                    HeaderValueConfig::Plain(p) => {
                        reqwest::header::HeaderValue::from_str(p)
                            .map_err(|_| (hkey, "not a valid header value".into()))?;
                    }
                    HeaderValueConfig::Secret(s) => {
                        one_of(hkey, ["file", "env"], [s.file.is_some(), s.env.is_some()])?
                    }
                }
            }
            if let Some(a) = &e.auth {
                a.validate().map_err(|reason| (key(".auth"), reason))?;
            }
            positive(key(".timeout"), &e.timeout)?;
            if e.max_response_bytes == 0 {
                return Err((key(".max_response_bytes"), "must be at least 1".into()));
            }
        }
        for (name, c) in &self.notify {
            let key = |field: &str| format!("actuators.notify.{name}{field}");
            if !valid_name(name) {
                return Err((key(""), "names are 1-64 of [A-Za-z0-9_-]".into()));
            }
            let sources = [c.url.is_some(), c.url_file.is_some(), c.url_env.is_some()];
            let n = sources.iter().filter(|s| **s).count();
            if n > 1 || (n == 0 && c.kind != NotifyKind::Pagerduty) {
                return Err((key(""), "set exactly one of url, url_file, url_env".into()));
            }
            if let Some(u) = &c.url {
                http_url(key(".url"), u)?;
            }
            let routing = [c.routing_key_file.is_some(), c.routing_key_env.is_some()];
            if c.kind == NotifyKind::Pagerduty {
                one_of(key(""), ["routing_key_file", "routing_key_env"], routing)?;
            } else if routing.contains(&true) {
                return Err((
                    key(""),
                    "routing_key_* only applies to kind: pagerduty".into(),
                ));
            }
            positive(key(".timeout"), &c.timeout)?;
        }
        Ok(())
    }

    /// Makes relative file paths relative to the configuration file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.kubernetes.as_mut().and_then(|k| k.kubeconfig.as_mut()) {
            join(p);
        }
        for t in self.redis.values_mut() {
            t.password_file.iter_mut().for_each(join);
        }
        for e in self.http_config.values_mut() {
            for v in e.headers.values_mut() {
                if let HeaderValueConfig::Secret(s) = v {
                    s.file.iter_mut().for_each(join);
                }
            }
            if let Some(a) = &mut e.auth {
                a.bearer_token_file.iter_mut().for_each(join);
                if let Some(b) = &mut a.basic_auth {
                    b.password_file.iter_mut().for_each(join);
                }
            }
        }
        for c in self.notify.values_mut() {
            c.url_file.iter_mut().for_each(join);
            c.routing_key_file.iter_mut().for_each(join);
        }
    }
}

impl RedisTargetConfig {
    /// The password, when one is configured.
    pub fn password(&self, key: &str) -> Result<Option<Secret>, String> {
        if self.password_file.is_none() && self.password_env.is_none() {
            return Ok(None);
        }
        load_secret(
            &format!("{key}.password"),
            &self.password_file,
            &self.password_env,
        )
        .map(Some)
    }
}

impl NotifyChannelConfig {
    /// The URL, from the file, the environment or the config, or PagerDuty's default.
    pub fn resolve_url(&self, key: &str) -> Result<String, String> {
        if let Some(u) = &self.url {
            return Ok(u.clone());
        }
        if self.url_file.is_none() && self.url_env.is_none() {
            return Ok(PAGERDUTY_EVENTS_URL.to_owned());
        }
        let url = load_secret(&format!("{key}.url"), &self.url_file, &self.url_env)?;
        http_url(key.to_owned(), url.expose()).map_err(|(_, reason)| {
            // The URL is a secret: name the source, not the value.
            format!(
                "{key}: the URL read from url_file/url_env is not valid ({})",
                reason.split(':').next_back().unwrap_or("").trim()
            )
        })?;
        Ok(url.expose().to_owned())
    }

    /// PagerDuty's routing key.
    pub fn routing_key(&self, key: &str) -> Result<Option<Secret>, String> {
        if self.routing_key_file.is_none() && self.routing_key_env.is_none() {
            return Ok(None);
        }
        load_secret(
            &format!("{key}.routing_key"),
            &self.routing_key_file,
            &self.routing_key_env,
        )
        .map(Some)
    }
}

impl HeaderValueConfig {
    /// The header's value (a secret's is read from its file or variable) and
    /// whether it is a secret (then it is marked sensitive and never logged).
    pub fn resolve(&self, key: &str) -> Result<(String, bool), String> {
        match self {
            HeaderValueConfig::Plain(p) => Ok((p.clone(), false)),
            HeaderValueConfig::Secret(s) => {
                load_secret(key, &s.file, &s.env).map(|v| (v.expose().to_owned(), true))
            }
        }
    }
}

/// A timeout as a `Duration`, at least a millisecond.
pub fn timeout(d: &PromDuration) -> Duration {
    Duration::from_millis(d.as_millis().max(1) as u64)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_section_parses() {
        let c = parse(
            r#"
actuators:
  retry: {attempts: 4, initial_backoff: 100ms, max_backoff: 2s}
  kubernetes: {kubeconfig: kube.yml, context: prod, request_timeout: 5s}
  redis:
    cache: {url: "redis://127.0.0.1:6379", password_env: REDIS_PW, db: 2, batch_size: 100}
  http_config:
    ratelimit:
      url: http://127.0.0.1:8080/config/ratelimit
      get_url: http://127.0.0.1:8080/config/ratelimit
      headers: {X-Team: sre, X-Api-Key: {env: API_KEY}}
      auth: {bearer_token_file: /etc/token}
  notify:
    slack: {kind: slack, url_env: SLACK_URL}
    pd: {kind: pagerduty, routing_key_file: /etc/pd-key}
    am: {kind: alertmanager, url: "http://127.0.0.1:9093"}
"#,
        )
        .unwrap();
        let a = &c.actuators;
        assert_eq!(a.retry.policy().attempts, 4);
        assert_eq!(
            a.kubernetes.as_ref().unwrap().context.as_deref(),
            Some("prod")
        );
        assert_eq!(a.redis["cache"].batch_size, 100);
        assert_eq!(a.redis["cache"].max_keys, 100_000);
        assert_eq!(a.http_config["ratelimit"].method, super::HttpMethod::Put);
        assert_eq!(a.notify["pd"].kind, super::NotifyKind::Pagerduty);
        assert_eq!(
            a.notify["pd"].resolve_url("k").unwrap(),
            super::PAGERDUTY_EVENTS_URL
        );
    }

    #[test]
    fn defaults_configure_nothing() {
        let c = parse("").unwrap();
        assert!(c.actuators.kubernetes.is_none());
        assert!(c.actuators.redis.is_empty() && c.actuators.notify.is_empty());
        assert_eq!(c.actuators.retry.attempts, 3);
    }

    #[test]
    fn errors_name_the_key_path() {
        for (text, key) in [
            ("actuators: {kubernetes: {}}", "actuators.kubernetes"),
            (
                "actuators: {kubernetes: {kubeconfig: a, in_cluster: true}}",
                "actuators.kubernetes",
            ),
            (
                "actuators: {redis: {c: {url: 'redis://:pw@127.0.0.1'}}}",
                "actuators.redis.c.url",
            ),
            (
                "actuators: {redis: {c: {url: 'http://x'}}}",
                "actuators.redis.c.url",
            ),
            (
                "actuators: {redis: {c: {url: 'redis://x', batch_size: 0}}}",
                "actuators.redis.c.batch_size",
            ),
            (
                "actuators: {redis: {'bad name': {url: 'redis://x'}}}",
                "actuators.redis.bad name",
            ),
            (
                "actuators: {http_config: {e: {url: 'ftp://x'}}}",
                "actuators.http_config.e.url",
            ),
            (
                "actuators: {http_config: {e: {url: 'http://u:p@x'}}}",
                "actuators.http_config.e.url",
            ),
            (
                "actuators: {http_config: {e: {url: 'http://x', method: PATCH}}}",
                "actuators.http_config.e.method",
            ),
            (
                "actuators: {http_config: {e: {url: 'http://x', headers: {X-K: {file: a, env: B}}}}}",
                "actuators.http_config.e.headers.X-K",
            ),
            ("actuators: {notify: {s: {kind: slack}}}", "actuators.notify.s"),
            (
                "actuators: {notify: {s: {kind: pagerduty}}}",
                "actuators.notify.s",
            ),
            (
                "actuators: {notify: {s: {kind: teams, url: 'http://x'}}}",
                "actuators.notify.s.kind",
            ),
            ("actuators: {retry: {attempts: 0}}", "actuators.retry.attempts"),
            ("actuators: {redis: {c: {url: 'redis://x', pasword_env: A}}}", "actuators.redis.c"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    /// The commented example in deploy/closedloop.yml documents every key: it
    /// must parse and validate as it stands.
    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../deploy/closedloop.yml");
        let start = text.find("# actuators-example-begin").unwrap();
        let end = text.find("# actuators-example-end").unwrap();
        let example: String = text[start..end]
            .lines()
            .skip(1)
            .map(|l| l.trim_start().strip_prefix("# ").unwrap_or("").to_owned())
            .map(|l| format!("  {l}\n"))
            .collect();
        let c = parse(&format!("actuators:\n{example}")).unwrap();
        let a = &c.actuators;
        assert!(a.kubernetes.is_some());
        assert_eq!(a.redis["cache"].batch_size, 500);
        assert_eq!(a.http_config["ratelimit"].headers.len(), 2);
        assert_eq!(a.notify.len(), 4);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(
            &path,
            "actuators:\n  kubernetes: {kubeconfig: kube.yml}\n  notify: {s: {kind: slack, url_file: slack-url}}\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c.actuators.kubernetes.unwrap().kubeconfig.unwrap(),
            dir.path().join("kube.yml")
        );
        assert_eq!(
            c.actuators.notify["s"].url_file.as_deref().unwrap(),
            dir.path().join("slack-url")
        );
    }
}
