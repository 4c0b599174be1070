//! The `decide:` config section: the safety policy every action passes (dry-run,
//! allow-lists, cooldown, rate limits, blast radius, approvals), verification and
//! escalation. Every key is optional; the defaults are the safe ones (dry-run on,
//! empty allow-lists refuse every mutating action).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::act::ActionKind;
use crate::duration::PromDuration;
use crate::rules::Severity;

/// `decide:` — how the loop decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Global dry-run: every action is decided, audited and counted, none executed.
    /// A rule's or an action's own `dry_run: true` adds to it; nothing overrides it.
    pub dry_run: bool,
    /// What actions may touch; anything not listed is refused.
    pub allow: AllowConfig,
    /// Cooldown of rules that set none, per (rule, action, target).
    pub default_cooldown: PromDuration,
    /// The same action for the same alert instance or incident runs once within this.
    pub dedup_window: PromDuration,
    /// Actions per hour.
    pub rate_limit: RateLimitConfig,
    /// How many pods of one workload may be restarted within a window.
    pub blast_radius: BlastRadiusConfig,
    /// When a human must approve.
    pub approval: ApprovalConfig,
    /// After an action, the condition is re-checked after this many evaluation
    /// intervals of its rule (unless the action sets `verify_for`).
    pub verify_intervals: u32,
    /// A notify channel told when a rule's actions are exhausted without clearing
    /// the condition (empty: no escalation beyond the rule's own actions).
    pub escalate_to: String,
    /// The window of `closed_loop_success_rate`.
    pub success_rate_window: PromDuration,
    /// Alert transitions and incidents waiting for the decider; beyond this they are
    /// dropped and counted (rule evaluation and ingest never wait).
    pub queue_capacity: usize,
    /// What anomaly incidents trigger.
    pub incidents: IncidentActionsConfig,
}

impl Default for DecideConfig {
    fn default() -> Self {
        DecideConfig {
            dry_run: true,
            allow: AllowConfig::default(),
            default_cooldown: PromDuration::from_secs(300),
            dedup_window: PromDuration::from_secs(24 * 3600),
            rate_limit: RateLimitConfig::default(),
            blast_radius: BlastRadiusConfig::default(),
            approval: ApprovalConfig::default(),
            verify_intervals: 3,
            escalate_to: String::new(),
            success_rate_window: PromDuration::from_secs(3600),
            queue_capacity: 10_000,
            incidents: IncidentActionsConfig::default(),
        }
    }
}

/// `decide.allow` — allow-lists. Empty lists allow nothing of that sort.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowConfig {
    /// Action kinds that may run (`restart_pod`, `scale`, …); `notify` is always
    /// allowed.
    pub actions: Vec<ActionKind>,
    /// Kubernetes namespaces actions may touch (`*` for any).
    pub namespaces: Vec<String>,
    /// Nodes `cordon_node` may touch (`*` for any).
    pub nodes: Vec<String>,
    /// Redis key patterns `clear_cache` may use: an entry allows the same pattern,
    /// and an entry ending in `*` allows every pattern starting with what precedes it
    /// (`session:*` allows `session:user1:*`).
    pub redis_patterns: Vec<String>,
    /// Named HTTP config endpoints `http_config` may call.
    pub http_endpoints: Vec<String>,
}

/// `decide.rate_limit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Actions per hour in total (notifications excluded).
    pub global_per_hour: u32,
    /// Actions per hour on one target (notifications excluded).
    pub per_target_per_hour: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            global_per_hour: 30,
            per_target_per_hour: 5,
        }
    }
}

/// `decide.blast_radius`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlastRadiusConfig {
    /// Most pods of one workload restarted within `window`.
    pub max_pods_per_workload: u32,
    pub window: PromDuration,
}

impl Default for BlastRadiusConfig {
    fn default() -> Self {
        BlastRadiusConfig {
            max_pods_per_workload: 2,
            window: PromDuration::from_secs(3600),
        }
    }
}

/// `decide.approval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Actions of alerts at or above this severity wait for a human (`info`,
    /// `warning`, `critical`; empty: only rules with `approval:` and the kinds below).
    pub min_severity: Option<Severity>,
    /// Kinds that always wait for a human.
    pub always_for: Vec<ActionKind>,
    /// How long a request stays open when the rule sets no `approval.timeout`.
    pub default_timeout: PromDuration,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            min_severity: None,
            always_for: vec![ActionKind::CordonNode],
            default_timeout: PromDuration::from_secs(30 * 60),
        }
    }
}

/// `decide.incidents` — actions on anomaly incidents (the same syntax as a rule's
/// `actions:`, rendered against the incident's group labels).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentActionsConfig {
    /// Incidents below this severity trigger nothing.
    pub min_severity: Severity,
    /// The actions (none by default: incidents are recorded, not acted on).
    pub actions: Vec<BTreeMap<String, serde_yaml::Value>>,
    /// Cooldown per (incident group, action, target).
    pub cooldown: PromDuration,
    /// Re-check window of an incident action.
    pub verify_for: PromDuration,
}

impl Default for IncidentActionsConfig {
    fn default() -> Self {
        IncidentActionsConfig {
            min_severity: Severity::Warning,
            actions: Vec::new(),
            cooldown: PromDuration::from_secs(900),
            verify_for: PromDuration::from_secs(300),
        }
    }
}

impl DecideConfig {
    /// Checks values; errors name the key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = |key: &str, d: PromDuration| {
            if d.as_millis() <= 0 {
                Err((format!("decide.{key}"), "must be positive".to_string()))
            } else {
                Ok(())
            }
        };
        positive("default_cooldown", self.default_cooldown)?;
        positive("dedup_window", self.dedup_window)?;
        positive("blast_radius.window", self.blast_radius.window)?;
        positive("approval.default_timeout", self.approval.default_timeout)?;
        positive("success_rate_window", self.success_rate_window)?;
        positive("incidents.cooldown", self.incidents.cooldown)?;
        positive("incidents.verify_for", self.incidents.verify_for)?;
        if self.verify_intervals == 0 {
            return Err((
                "decide.verify_intervals".into(),
                "must be at least 1".into(),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(("decide.queue_capacity".into(), "must be at least 1".into()));
        }
        for (i, ns) in self.allow.namespaces.iter().enumerate() {
            if ns.is_empty() {
                return Err((
                    format!("decide.allow.namespaces[{i}]"),
                    "must not be empty".into(),
                ));
            }
        }
        for (i, p) in self.allow.redis_patterns.iter().enumerate() {
            if p.is_empty() {
                return Err((
                    format!("decide.allow.redis_patterns[{i}]"),
                    "must not be empty".into(),
                ));
            }
        }
        for (i, a) in self.incidents.actions.iter().enumerate() {
            crate::rules::RuleAction::parse(a)
                .map_err(|e| (format!("decide.incidents.actions[{i}]"), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn defaults_are_safe_and_errors_name_the_key() {
        let c = Config::parse("", Path::new("c.yml")).unwrap();
        assert!(c.decide.dry_run);
        assert!(c.decide.allow.actions.is_empty());
        let err = |y: &str| {
            Config::parse(y, Path::new("c.yml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("decide: {verify_intervals: 0}").contains("decide.verify_intervals"));
        assert!(err("decide: {allow: {actions: [reboot]}}").contains("decide.allow.actions"));
        assert!(err("decide: {incidents: {actions: [{type: notify}]}}")
            .contains("decide.incidents.actions[0]"));
        let c = Config::parse(
            "decide: {dry_run: false, allow: {actions: [scale, restart_pod], namespaces: [prod]}, approval: {min_severity: critical}}",
            Path::new("c.yml"),
        )
        .unwrap();
        assert!(!c.decide.dry_run);
        assert_eq!(c.decide.allow.actions.len(), 2);
    }
}
