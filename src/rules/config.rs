//! Configuration sections the rules engine reads: `global:` (evaluation interval,
//! external labels and URL), `alerting:` (Alertmanagers) and `rules:` (state file,
//! reload polling). Every key is optional; unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::PromDuration;

/// `global:` — settings shared by every rule group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    /// Interval of groups that set none (Prometheus's `evaluation_interval`).
    pub evaluation_interval: PromDuration,
    /// Labels added to every alert sent to Alertmanager and visible to templates
    /// as `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// This service's URL as users reach it; alerts' `generatorURL` points here and
    /// templates see it as `$externalURL`.
    pub external_url: Option<String>,
    /// How far in the past rule groups that set no `query_offset` evaluate
    /// (Prometheus's `global.rule_query_offset`). Samples reach a remote-write
    /// receiver after the scrape — up to the sender's `batch_send_deadline` (5s by
    /// default) plus transit — so evaluating at "now" would often read the previous
    /// scrape where Prometheus reads the new one. The default, 10s, covers that
    /// delay; set 0s to evaluate at the scheduled time as Prometheus does.
    pub rule_query_offset: PromDuration,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            rule_query_offset: PromDuration::from_secs(10),
            evaluation_interval: PromDuration::from_secs(60),
            external_labels: BTreeMap::new(),
            external_url: None,
        }
    }
}

/// `alerting:` — where firing and resolved alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Alertmanagers; every alert is sent to each of them.
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// How often a still-firing alert is re-sent (Prometheus's
    /// `--rules.alert.resend-delay`).
    pub resend_delay: PromDuration,
    /// Alerts waiting to be sent; beyond this the oldest are dropped (counted).
    pub queue_capacity: usize,
    /// Most alerts in one request to an Alertmanager.
    pub max_batch: usize,
    /// Where an alert's `generatorURL` points, as a URL template: `{{expr}}` is
    /// replaced by the URL-encoded rule expression, `{{expr_json}}` by the
    /// URL-encoded JSON string of it (for Grafana Explore's `panes` parameter).
    /// Unset: Prometheus's `<external_url>/graph?g0.expr=...&g0.tab=1`, a page
    /// closedloop serves.
    pub generator_url: Option<String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            alertmanagers: Vec::new(),
            resend_delay: PromDuration::from_secs(60),
            queue_capacity: 10_000,
            max_batch: 256,
            generator_url: None,
        }
    }
}

/// One Alertmanager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// Request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: PromDuration,
}

fn default_timeout() -> PromDuration {
    PromDuration::from_secs(10)
}

/// `rules:` — the rules engine's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Where pending/firing alert state is kept across restarts (relative to the
    /// configuration file). Empty disables it.
    pub state_file: PathBuf,
    /// How often rule files are checked for changes on disk; 0 disables it.
    pub watch_interval: PromDuration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            state_file: PathBuf::from("data/rules-state.json"),
            watch_interval: PromDuration::from_secs(5),
        }
    }
}

impl GlobalConfig {
    /// Checks values; errors name the key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.evaluation_interval.as_millis() <= 0 {
            return Err((
                "global.evaluation_interval".into(),
                "must be positive".into(),
            ));
        }
        for k in self.external_labels.keys() {
            if !crate::storage::is_valid_label_name(k) {
                return Err((
                    format!("global.external_labels.{k}"),
                    "invalid label name".into(),
                ));
            }
        }
        if let Some(u) = &self.external_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err((
                    "global.external_url".into(),
                    format!("{u:?} must be an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }
}

impl AlertingConfig {
    /// Checks values; errors name the key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, am) in self.alertmanagers.iter().enumerate() {
            if !(am.url.starts_with("http://") || am.url.starts_with("https://")) {
                return Err((
                    format!("alerting.alertmanagers[{i}].url"),
                    format!("{:?} must be an http:// or https:// URL", am.url),
                ));
            }
            if am.timeout.as_millis() <= 0 {
                return Err((
                    format!("alerting.alertmanagers[{i}].timeout"),
                    "must be positive".into(),
                ));
            }
        }
        if self.resend_delay.as_millis() <= 0 {
            return Err(("alerting.resend_delay".into(), "must be positive".into()));
        }
        if self.queue_capacity == 0 {
            return Err((
                "alerting.queue_capacity".into(),
                "must be at least 1".into(),
            ));
        }
        if self.max_batch == 0 {
            return Err(("alerting.max_batch".into(), "must be at least 1".into()));
        }
        if let Some(t) = &self.generator_url {
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err((
                    "alerting.generator_url".into(),
                    format!("{t:?} must be an http:// or https:// URL"),
                ));
            }
            if !(t.contains("{{expr}}") || t.contains("{{expr_json}}")) {
                return Err((
                    "alerting.generator_url".into(),
                    "must contain {{expr}} or {{expr_json}}, or every alert would link to the same page".into(),
                ));
            }
        }
        Ok(())
    }
}

impl RulesConfig {
    /// Makes a relative state file relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        if !self.state_file.as_os_str().is_empty() && self.state_file.is_relative() {
            self.state_file = base.join(&self.state_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn err(yaml: &str) -> String {
        Config::parse(yaml, Path::new("c.yml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sections_parse_and_errors_name_the_key() {
        let c = Config::parse(
            "global: {evaluation_interval: 15s, external_labels: {cluster: eu}}\nalerting: {alertmanagers: [{url: 'http://am:9093'}], resend_delay: 30s}\nrules: {state_file: s.json, watch_interval: 0s}\n",
            Path::new("c.yml"),
        )
        .unwrap();
        assert_eq!(c.global.evaluation_interval.as_millis(), 15_000);
        assert_eq!(c.alerting.alertmanagers[0].timeout.as_millis(), 10_000);
        assert!(err("alerting: {alertmanagers: [{url: 'am:9093'}]}")
            .contains("alerting.alertmanagers[0].url"));
        assert!(err("global: {external_labels: {'': x}}").contains("global.external_labels."));
        assert!(err("global: {evaluation_interval: 0s}").contains("global.evaluation_interval"));
        assert!(err("alerting: {colour: red}").contains("unknown field `colour`"));
        assert!(err("alerting: {generator_url: 'https://g/explore'}")
            .contains("alerting.generator_url: must contain {{expr}}"));
        assert!(err("alerting: {generator_url: 'g/explore?q={{expr}}'}")
            .contains("alerting.generator_url"));
    }
}
