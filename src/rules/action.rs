//! A rule's `actions:` parsed at load time into typed steps ([`RuleAction`]): the
//! action kind, its typed parameters, and its targets as templates. At decision time
//! a step is rendered against the firing alert's labels into the concrete
//! [`act::Action`](crate::act::Action) an actuator carries out.
//!
//! Target notation, as `kubectl` writes it: `kind/name` (`deployment/web`),
//! `namespace/kind/name`, or — for actions that act on one kind only (a pod, a
//! ConfigMap, a rollout) — `namespace/name` or `name`. The namespace comes from the
//! target, else the action's `namespace:` parameter, else `default`. Targets and the
//! namespace may be templates over the alert's labels
//! (`{{ $labels.namespace }}/{{ $labels.pod }}`).
//!
//! Invariants: an action that loads has a known kind and well-typed parameters; a
//! static target is fully checked at load time, so only templated targets can fail
//! at decision time (and that failure is a refusal, never a panic). Secrets,
//! endpoints' URLs and Redis addresses never appear here: rule files name them, the
//! service config defines them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::act::{
    Action, ActionKind, Notification, ObjectKind, ObjectRef, ReplicaBounds, ReplicaChange,
};
use crate::duration::parse_duration_ms;

use super::template::{Template, TemplateData};

/// Most keys one `clear_cache` action may remove when it sets no `max_keys`.
pub const DEFAULT_MAX_KEYS: u64 = 10_000;
/// The largest `max_keys` a rule may ask for.
pub const MAX_KEYS_LIMIT: u64 = 1_000_000;
/// Replica bounds of a scale action that sets no `min`/`max`.
pub const DEFAULT_REPLICA_BOUNDS: ReplicaBounds = ReplicaBounds { min: 1, max: 50 };

/// The `type:` names a rule may use: every [`ActionKind`] plus `scale_up` / `scale_down`
/// (a `scale` whose `replicas` defaults to `+1` / `-1`).
pub fn known_types() -> Vec<&'static str> {
    let mut v: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
    v.extend(["scale_up", "scale_down"]);
    v
}

/// One templated text: the source and its parsed form.
#[derive(Debug, Clone)]
pub struct Text {
    pub raw: String,
    template: Template,
}

impl Text {
    fn parse(raw: &str) -> Result<Text, String> {
        let template = Template::parse(raw).map_err(|e| e.to_string())?;
        Ok(Text {
            raw: raw.to_string(),
            template,
        })
    }

    fn is_static(&self) -> bool {
        !self.raw.contains("{{")
    }

    fn render(&self, data: &TemplateData<'_>) -> Result<String, String> {
        self.template.expand(data)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// A Kubernetes target as written in the rule.
#[derive(Debug, Clone, Serialize)]
pub struct TargetTemplate {
    pub target: Text,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Text>,
}

/// What a step does, with its typed parameters (targets still templates).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    RestartPod {
        pod: TargetTemplate,
    },
    RolloutRestart {
        workload: TargetTemplate,
    },
    Scale {
        workload: TargetTemplate,
        change: ReplicaChange,
        bounds: ReplicaBounds,
    },
    PatchConfigMap {
        configmap: TargetTemplate,
        data: BTreeMap<String, Option<Text>>,
    },
    CordonNode {
        node: Text,
    },
    RolloutAbort {
        rollout: TargetTemplate,
    },
    RolloutRetry {
        rollout: TargetTemplate,
    },
    RolloutUndo {
        rollout: TargetTemplate,
        revision: Option<u64>,
    },
    DeploymentRollback {
        deployment: TargetTemplate,
        revision: Option<u64>,
    },
    ClearCache {
        target: String,
        pattern: Text,
        db: Option<u32>,
        max_keys: u64,
    },
    HttpConfig {
        endpoint: String,
        body: serde_json::Value,
    },
    Notify {
        channel: String,
    },
}

/// One entry of a rule's `actions:` list, validated.
#[derive(Debug, Clone, Serialize)]
pub struct RuleAction {
    pub kind: ActionKind,
    #[serde(flatten)]
    pub step: Step,
    /// Decide and audit, never execute.
    pub dry_run: bool,
    /// How long after this action the condition is re-checked (`None`: the
    /// service's default verify window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_for_ms: Option<i64>,
}

/// What an action is rendered against: the alert (or incident) that triggered it.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub value: f64,
    /// `firing` or `resolved`.
    pub status: &'a str,
    pub title: &'a str,
    pub severity: &'a str,
    pub starts_at_ms: i64,
    pub url: &'a str,
}

impl<'a> RenderContext<'a> {
    /// A context with these labels and annotations, the rest empty.
    pub fn new(
        labels: &'a BTreeMap<String, String>,
        annotations: &'a BTreeMap<String, String>,
    ) -> Self {
        RenderContext {
            labels,
            annotations,
            value: 0.0,
            status: "",
            title: "",
            severity: "",
            starts_at_ms: 0,
            url: "",
        }
    }
}

impl RuleAction {
    /// Parses one `actions:` entry; errors name the field (`replicas: …`).
    pub fn parse(params: &BTreeMap<String, serde_yaml::Value>) -> Result<RuleAction, String> {
        let mut p = Params::new(params);
        let ty = p.required_str("type")?;
        let (kind, step) = match ty.as_str() {
            "restart_pod" => (
                ActionKind::RestartPod,
                Step::RestartPod { pod: p.target()? },
            ),
            "rollout_restart" => (
                ActionKind::RolloutRestart,
                Step::RolloutRestart {
                    workload: p.target()?,
                },
            ),
            "scale" | "scale_up" | "scale_down" => {
                let workload = p.target()?;
                let default = match ty.as_str() {
                    "scale_up" => Some(ReplicaChange::By(1)),
                    "scale_down" => Some(ReplicaChange::By(-1)),
                    _ => None,
                };
                let change = match (p.take("replicas"), default) {
                    (Some(v), _) => parse_replicas(&v)?,
                    (None, Some(d)) => d,
                    (None, None) => return Err("scale needs parameter \"replicas\"".into()),
                };
                match (ty.as_str(), change) {
                    ("scale_up", ReplicaChange::By(n)) if n <= 0 => {
                        return Err("replicas: scale_up needs a positive change like +2".into())
                    }
                    ("scale_down", ReplicaChange::By(n)) if n >= 0 => {
                        return Err("replicas: scale_down needs a negative change like -1".into())
                    }
                    ("scale_up" | "scale_down", ReplicaChange::To(_)) => {
                        return Err(format!(
                            "replicas: {ty} takes a change like +2 / -1; use type: scale for an absolute count"
                        ))
                    }
                    _ => {}
                }
                let min = p.u64("min_replicas")?.map(|v| v as u32);
                let max = p.u64("max_replicas")?.map(|v| v as u32);
                let bounds = ReplicaBounds {
                    min: min.unwrap_or(DEFAULT_REPLICA_BOUNDS.min),
                    max: max.unwrap_or(DEFAULT_REPLICA_BOUNDS.max),
                };
                if bounds.min > bounds.max {
                    return Err(format!(
                        "min_replicas {} is above max_replicas {}",
                        bounds.min, bounds.max
                    ));
                }
                (
                    ActionKind::Scale,
                    Step::Scale {
                        workload,
                        change,
                        bounds,
                    },
                )
            }
            "patch_configmap" => {
                let configmap = p.target()?;
                let raw = p
                    .take("data")
                    .ok_or("patch_configmap needs parameter \"data\"")?;
                let map = raw
                    .as_mapping()
                    .ok_or("data: must be a map of key: value (null removes the key)")?;
                if map.is_empty() {
                    return Err("data: must set or remove at least one key".into());
                }
                let mut data = BTreeMap::new();
                for (k, v) in map {
                    let k = scalar_text(k).ok_or("data: keys must be strings")?;
                    let v = match v {
                        serde_yaml::Value::Null => None,
                        v => Some(
                            Text::parse(&scalar_text(v).ok_or_else(|| {
                                format!("data.{k}: must be a string, number or bool")
                            })?)
                            .map_err(|e| format!("data.{k}: {e}"))?,
                        ),
                    };
                    data.insert(k, v);
                }
                (
                    ActionKind::PatchConfigMap,
                    Step::PatchConfigMap { configmap, data },
                )
            }
            "cordon_node" => {
                let node = p.required_text("target")?;
                if node.is_static() {
                    check_node_name(node.raw.strip_prefix("node/").unwrap_or(&node.raw))
                        .map_err(|e| format!("target: {e}"))?;
                }
                (ActionKind::CordonNode, Step::CordonNode { node })
            }
            "rollout_abort" => (
                ActionKind::RolloutAbort,
                Step::RolloutAbort {
                    rollout: p.target()?,
                },
            ),
            "rollout_retry" => (
                ActionKind::RolloutRetry,
                Step::RolloutRetry {
                    rollout: p.target()?,
                },
            ),
            "rollout_undo" => (
                ActionKind::RolloutUndo,
                Step::RolloutUndo {
                    rollout: p.target()?,
                    revision: p.u64("revision")?,
                },
            ),
            "deployment_rollback" => (
                ActionKind::DeploymentRollback,
                Step::DeploymentRollback {
                    deployment: p.target()?,
                    revision: p.u64("revision")?,
                },
            ),
            "clear_cache" => {
                let target = p.required_str("target")?;
                let pattern = p.required_text("pattern")?;
                if pattern.raw.trim().is_empty() {
                    return Err("pattern: must not be empty".into());
                }
                let db = p.u64("db")?;
                if db.is_some_and(|d| d > 15) {
                    return Err("db: must be a Redis database index (0-15)".into());
                }
                let max_keys = p.u64("max_keys")?.unwrap_or(DEFAULT_MAX_KEYS);
                if max_keys == 0 || max_keys > MAX_KEYS_LIMIT {
                    return Err(format!("max_keys: must be 1..{MAX_KEYS_LIMIT}"));
                }
                (
                    ActionKind::ClearCache,
                    Step::ClearCache {
                        target,
                        pattern,
                        db: db.map(|d| d as u32),
                        max_keys,
                    },
                )
            }
            "http_config" => {
                let endpoint = p.required_str("endpoint")?;
                let body = p
                    .take("body")
                    .ok_or("http_config needs parameter \"body\"")?;
                let body = serde_json::to_value(&body)
                    .map_err(|e| format!("body: not representable as JSON: {e}"))?;
                (ActionKind::HttpConfig, Step::HttpConfig { endpoint, body })
            }
            "notify" => (
                ActionKind::Notify,
                Step::Notify {
                    channel: p.required_str("channel")?,
                },
            ),
            other => {
                return Err(format!(
                    "unknown action type {other:?} (known: {})",
                    known_types().join(", ")
                ))
            }
        };
        let dry_run = match p.take("dry_run") {
            None => false,
            Some(serde_yaml::Value::Bool(b)) => b,
            Some(_) => return Err("dry_run must be true or false".into()),
        };
        let verify_for_ms = match p.take("verify_for") {
            None => None,
            Some(v) => {
                let s = scalar_text(&v).ok_or("verify_for: must be a duration like 2m")?;
                let ms = parse_duration_ms(&s).map_err(|e| format!("verify_for: {e}"))?;
                if ms <= 0 {
                    return Err("verify_for: must be positive".into());
                }
                Some(ms)
            }
        };
        p.finish(&ty)?;
        let action = RuleAction {
            kind,
            step,
            dry_run,
            verify_for_ms,
        };
        action.check_static()?;
        Ok(action)
    }

    /// Renders static targets once at load time so their mistakes are load errors.
    fn check_static(&self) -> Result<(), String> {
        let labels = BTreeMap::new();
        let annotations = BTreeMap::new();
        let ctx = RenderContext::new(&labels, &annotations);
        let targets: Vec<&TargetTemplate> = match &self.step {
            Step::RestartPod { pod: t }
            | Step::RolloutRestart { workload: t }
            | Step::Scale { workload: t, .. }
            | Step::PatchConfigMap { configmap: t, .. }
            | Step::RolloutAbort { rollout: t }
            | Step::RolloutRetry { rollout: t }
            | Step::RolloutUndo { rollout: t, .. }
            | Step::DeploymentRollback { deployment: t, .. } => vec![t],
            _ => vec![],
        };
        if targets
            .iter()
            .all(|t| t.target.is_static() && t.namespace.as_ref().is_none_or(Text::is_static))
        {
            self.render(&ctx).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// The concrete action for one alert: templates rendered against its labels,
    /// targets parsed and checked.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Action, String> {
        let data = TemplateData {
            labels: ctx.labels.clone(),
            value: ctx.value,
            ..Default::default()
        };
        let object = |t: &TargetTemplate, kinds: &[ObjectKind]| -> Result<ObjectRef, String> {
            let target = t.target.render(&data).map_err(|e| format!("target: {e}"))?;
            let namespace = match &t.namespace {
                Some(n) => Some(n.render(&data).map_err(|e| format!("namespace: {e}"))?),
                None => None,
            };
            parse_object(&target, namespace.as_deref(), kinds).map_err(|e| format!("target: {e}"))
        };
        Ok(match &self.step {
            Step::RestartPod { pod } => Action::RestartPod {
                pod: object(pod, &[ObjectKind::Pod])?,
                uid: None,
            },
            Step::RolloutRestart { workload } => Action::RolloutRestart {
                workload: object(
                    workload,
                    &[
                        ObjectKind::Deployment,
                        ObjectKind::StatefulSet,
                        ObjectKind::DaemonSet,
                    ],
                )?,
            },
            Step::Scale {
                workload,
                change,
                bounds,
            } => Action::Scale {
                workload: object(workload, &[ObjectKind::Deployment, ObjectKind::StatefulSet])?,
                change: *change,
                bounds: *bounds,
            },
            Step::PatchConfigMap { configmap, data: d } => {
                let mut out = BTreeMap::new();
                for (k, v) in d {
                    let v = match v {
                        Some(t) => Some(t.render(&data).map_err(|e| format!("data.{k}: {e}"))?),
                        None => None,
                    };
                    out.insert(k.clone(), v);
                }
                Action::PatchConfigMap {
                    configmap: object(configmap, &[ObjectKind::ConfigMap])?,
                    data: out,
                }
            }
            Step::CordonNode { node } => {
                let n = node.render(&data).map_err(|e| format!("target: {e}"))?;
                let n = n.strip_prefix("node/").unwrap_or(&n).to_string();
                check_node_name(&n).map_err(|e| format!("target: {e}"))?;
                Action::CordonNode {
                    node: n,
                    cordon: true,
                }
            }
            Step::RolloutAbort { rollout } => Action::RolloutAbort {
                rollout: object(rollout, &[ObjectKind::Rollout])?,
            },
            Step::RolloutRetry { rollout } => Action::RolloutRetry {
                rollout: object(rollout, &[ObjectKind::Rollout])?,
            },
            Step::RolloutUndo { rollout, revision } => Action::RolloutUndo {
                rollout: object(rollout, &[ObjectKind::Rollout])?,
                revision: *revision,
            },
            Step::DeploymentRollback {
                deployment,
                revision,
            } => Action::DeploymentRollback {
                deployment: object(deployment, &[ObjectKind::Deployment])?,
                revision: *revision,
            },
            Step::ClearCache {
                target,
                pattern,
                db,
                max_keys,
            } => {
                let pattern = pattern.render(&data).map_err(|e| format!("pattern: {e}"))?;
                if pattern.trim().is_empty() {
                    return Err("pattern: rendered empty".into());
                }
                Action::ClearCache {
                    target: target.clone(),
                    pattern,
                    db: *db,
                    max_keys: *max_keys,
                }
            }
            Step::HttpConfig { endpoint, body } => Action::HttpConfig {
                endpoint: endpoint.clone(),
                body: body.clone(),
            },
            Step::Notify { channel } => Action::Notify {
                channel: channel.clone(),
                notification: Notification {
                    status: ctx.status.to_string(),
                    title: ctx.title.to_string(),
                    summary: ctx
                        .annotations
                        .get("summary")
                        .or_else(|| ctx.annotations.get("description"))
                        .cloned()
                        .unwrap_or_else(|| ctx.title.to_string()),
                    severity: ctx.severity.to_string(),
                    labels: ctx.labels.clone(),
                    annotations: ctx.annotations.clone(),
                    starts_at_ms: ctx.starts_at_ms,
                    url: ctx.url.to_string(),
                },
            },
        })
    }
}

/// Parses a rendered target (`kind/name`, `namespace/kind/name`, `namespace/name`,
/// `name`) into an object of one of `kinds`.
pub fn parse_object(
    target: &str,
    namespace: Option<&str>,
    kinds: &[ObjectKind],
) -> Result<ObjectRef, String> {
    let kind_of = |s: &str| kinds.iter().copied().find(|k| k.as_str() == s);
    let parts: Vec<&str> = target.trim().split('/').collect();
    let single = (kinds.len() == 1).then(|| kinds[0]);
    let (ns, kind, name) = match parts.as_slice() {
        [ns, k, name] => {
            let kind = kind_of(k).ok_or_else(|| bad_kind(k, kinds))?;
            (Some(*ns), kind, *name)
        }
        [a, name] => match kind_of(a) {
            Some(kind) => (None, kind, *name),
            None => match single {
                Some(kind) if !is_kind_name(a) => (Some(*a), kind, *name),
                _ => return Err(bad_kind(a, kinds)),
            },
        },
        [name] => match single {
            Some(kind) => (None, kind, *name),
            None => {
                return Err(format!(
                    "{target:?}: name the kind, e.g. {}/{target}",
                    kinds[0].as_str()
                ))
            }
        },
        _ => {
            return Err(format!(
                "{target:?} is not kind/name or namespace/kind/name"
            ))
        }
    };
    if let (Some(a), Some(b)) = (ns, namespace) {
        if a != b {
            return Err(format!(
                "{target:?} names namespace {a:?} but namespace: is {b:?}"
            ));
        }
    }
    let ns = ns.or(namespace).unwrap_or("default");
    check_dns_label(ns).map_err(|e| format!("namespace {ns:?}: {e}"))?;
    check_dns_subdomain(name).map_err(|e| format!("name {name:?}: {e}"))?;
    Ok(ObjectRef {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

fn is_kind_name(s: &str) -> bool {
    [
        ObjectKind::Pod,
        ObjectKind::Deployment,
        ObjectKind::StatefulSet,
        ObjectKind::DaemonSet,
        ObjectKind::ConfigMap,
        ObjectKind::Node,
        ObjectKind::Rollout,
    ]
    .iter()
    .any(|k| k.as_str() == s)
}

fn bad_kind(k: &str, kinds: &[ObjectKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    format!("kind {k:?} is not one of {}", names.join(", "))
}

/// A Kubernetes namespace: an RFC 1123 label.
fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1-63 characters".into());
    }
    check_dns_chars(s, false)
}

/// An object name: an RFC 1123 subdomain.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    check_dns_chars(s, true)
}

fn check_node_name(s: &str) -> Result<(), String> {
    check_dns_subdomain(s).map_err(|e| format!("node {s:?}: {e}"))
}

fn check_dns_chars(s: &str, dots: bool) -> Result<(), String> {
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'));
    let edges = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok || !edges(s.as_bytes()[0]) || !edges(s.as_bytes()[s.len() - 1]) {
        return Err("must be lower-case letters, digits and '-' (RFC 1123)".into());
    }
    Ok(())
}

/// `+N` / `-N` (a change) or `N` (an absolute count).
fn parse_replicas(v: &serde_yaml::Value) -> Result<ReplicaChange, String> {
    let bad = || format!("replicas {v:?} must be a count or a change like +2 / -1");
    let s = scalar_text(v).ok_or_else(bad)?;
    let s = s.trim();
    if let Some(n) = s.strip_prefix('+') {
        let n: i32 = n.parse().map_err(|_| bad())?;
        return Ok(ReplicaChange::By(n));
    }
    if let Some(n) = s.strip_prefix('-') {
        let n: i32 = n.parse().map_err(|_| bad())?;
        return Ok(ReplicaChange::By(-n));
    }
    let n: u32 = s.parse().map_err(|_| bad())?;
    if n > 10_000 {
        return Err(format!("replicas {n}: at most 10000"));
    }
    Ok(ReplicaChange::To(n))
}

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The parameters of one action, taken one by one so leftovers are reported.
struct Params {
    left: BTreeMap<String, serde_yaml::Value>,
}

impl Params {
    fn new(m: &BTreeMap<String, serde_yaml::Value>) -> Self {
        Params { left: m.clone() }
    }

    fn take(&mut self, k: &str) -> Option<serde_yaml::Value> {
        self.left.remove(k)
    }

    fn required_str(&mut self, k: &str) -> Result<String, String> {
        let v = self
            .take(k)
            .ok_or_else(|| format!("missing parameter {k:?}"))?;
        let s = scalar_text(&v).ok_or_else(|| format!("{k}: must be a string"))?;
        if s.trim().is_empty() {
            return Err(format!("{k}: must not be empty"));
        }
        Ok(s)
    }

    fn required_text(&mut self, k: &str) -> Result<Text, String> {
        let s = self.required_str(k)?;
        Text::parse(&s).map_err(|e| format!("{k}: {e}"))
    }

    fn u64(&mut self, k: &str) -> Result<Option<u64>, String> {
        match self.take(k) {
            None => Ok(None),
            Some(serde_yaml::Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{k}: must be a non-negative integer")),
            Some(_) => Err(format!("{k}: must be a non-negative integer")),
        }
    }

    fn target(&mut self) -> Result<TargetTemplate, String> {
        let target = self.required_text("target")?;
        let namespace = match self.take("namespace") {
            None => None,
            Some(v) => {
                let s = scalar_text(&v).ok_or("namespace: must be a string")?;
                Some(Text::parse(&s).map_err(|e| format!("namespace: {e}"))?)
            }
        };
        Ok(TargetTemplate { target, namespace })
    }

    fn finish(self, ty: &str) -> Result<(), String> {
        match self.left.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("{k}: unknown parameter for {ty}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RuleAction, String> {
        let m: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str(yaml).unwrap();
        RuleAction::parse(&m)
    }

    fn render(a: &RuleAction, labels: &[(&str, &str)]) -> Result<Action, String> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let annotations = BTreeMap::new();
        a.render(&RenderContext {
            title: "A",
            ..RenderContext::new(&labels, &annotations)
        })
    }

    #[test]
    fn scale_up_with_namespace_renders_a_concrete_action() {
        let a = parse("{type: scale_up, target: deployment/eco-backend, namespace: prod, replicas: '+2', max_replicas: 8}").unwrap();
        assert_eq!(a.kind, ActionKind::Scale);
        let act = render(&a, &[]).unwrap();
        assert_eq!(
            act,
            Action::Scale {
                workload: ObjectRef {
                    kind: ObjectKind::Deployment,
                    namespace: "prod".into(),
                    name: "eco-backend".into()
                },
                change: ReplicaChange::By(2),
                bounds: ReplicaBounds { min: 1, max: 8 },
            }
        );
        assert_eq!(act.target(), "prod/deployment/eco-backend");
    }

    #[test]
    fn templated_pod_target_comes_from_the_alert_labels() {
        let a = parse("{type: restart_pod, target: '{{ $labels.namespace }}/{{ $labels.pod }}'}")
            .unwrap();
        let act = render(&a, &[("namespace", "shop"), ("pod", "web-7d9f-abcde")]).unwrap();
        assert_eq!(act.target(), "shop/pod/web-7d9f-abcde");
        // A label the alert lacks renders empty: a refusal at decision time.
        let e = render(&a, &[("namespace", "shop")]).unwrap_err();
        assert!(e.contains("target"), "{e}");
    }

    #[test]
    fn load_errors_name_the_field() {
        let cases = [
            ("{type: reboot}", "unknown action type \"reboot\""),
            (
                "{type: scale, target: deployment/x}",
                "needs parameter \"replicas\"",
            ),
            (
                "{type: scale, target: deployment/x, replicas: lots}",
                "replicas",
            ),
            (
                "{type: scale_up, target: deployment/x, replicas: '-1'}",
                "positive",
            ),
            ("{type: scale, target: pod/x, replicas: 2}", "kind \"pod\""),
            ("{type: restart_pod, target: 'pod/Bad_Name'}", "RFC 1123"),
            (
                "{type: restart_pod, target: pod/x, colour: red}",
                "colour: unknown parameter",
            ),
            (
                "{type: clear_cache, target: cache, pattern: 'a*', max_keys: 0}",
                "max_keys",
            ),
            ("{type: notify}", "missing parameter \"channel\""),
            ("{type: notify, channel: x, dry_run: maybe}", "dry_run"),
            (
                "{type: restart_pod, target: '{{ $label.pod }}'}",
                "target: template",
            ),
            (
                "{type: rollout_restart, target: prod/deployment/x, namespace: dev}",
                "namespace",
            ),
            ("{type: patch_configmap, target: cfg, data: {}}", "data"),
            ("{type: notify, channel: x, verify_for: 5x}", "verify_for"),
        ];
        for (y, want) in cases {
            let e = parse(y).unwrap_err();
            assert!(e.contains(want), "{y}: want {want:?} in {e:?}");
        }
    }

    #[test]
    fn every_kind_parses() {
        for y in [
            "{type: rollout_restart, target: statefulset/db}",
            "{type: scale, target: prod/deployment/web, replicas: 3}",
            "{type: scale_down, target: deployment/web}",
            "{type: patch_configmap, target: prod/flags, data: {provider: b, old: null}}",
            "{type: cordon_node, target: node/worker-1}",
            "{type: rollout_abort, target: rollout/web}",
            "{type: rollout_retry, target: web}",
            "{type: rollout_undo, target: web, revision: 3}",
            "{type: deployment_rollback, target: prod/web}",
            "{type: clear_cache, target: sessions, pattern: 'session:*', db: 2}",
            "{type: http_config, endpoint: ratelimit, body: {limit: 100}}",
            "{type: notify, channel: slack, dry_run: true}",
        ] {
            let a = parse(y).unwrap_or_else(|e| panic!("{y}: {e}"));
            render(&a, &[]).unwrap_or_else(|e| panic!("{y}: {e}"));
        }
        let a =
            parse("{type: patch_configmap, target: prod/flags, data: {provider: b, old: null}}")
                .unwrap();
        match render(&a, &[]).unwrap() {
            Action::PatchConfigMap { data, .. } => {
                assert_eq!(data.get("provider"), Some(&Some("b".to_string())));
                assert_eq!(data.get("old"), Some(&None));
            }
            other => panic!("{other:?}"),
        }
    }
}
