//! Rollbacks: Argo Rollouts' `Rollout` (argoproj.io/v1alpha1) abort, retry and
//! undo, and `kubectl rollout undo` of a plain Deployment — through the Kubernetes
//! API with the shared client, sending the requests the `kubectl argo rollouts`
//! plugin and `kubectl` send:
//!
//! - abort / retry: a merge patch `{"status":{"abort":true|false}}` on the
//!   Rollout's `status` subresource, falling back to the Rollout itself when the
//!   subresource is not served (older CRDs), as the plugin does;
//! - undo: list the ReplicaSets the Rollout (Deployment) controls — its label
//!   selector, then the controller owner reference — pick the revision asked for
//!   (`rollout.argoproj.io/revision` / `deployment.kubernetes.io/revision`; none:
//!   the one before the newest), skip when the current template already matches,
//!   else a JSON patch replacing `/spec/template` with the ReplicaSet's template
//!   minus its pod-template-hash label (and, for a Deployment, `/metadata/annotations`
//!   as kubectl computes them).
//!
//! The undo of an abort is a retry (and back); the undo of a rollback is a rollback
//! to the revision that was current before it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::kube::{expect_kind, perm, workload_state, KubeApi};
use super::{ActError, Action, ActionKind, Approved, Effect, ObjectKind, ObjectRef};

/// The revision annotation Argo Rollouts puts on a Rollout and its ReplicaSets.
pub const ROLLOUT_REVISION: &str = "rollout.argoproj.io/revision";
/// The revision annotation the Deployment controller puts on Deployments and
/// their ReplicaSets.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// Pod-template hash labels the controllers add to a ReplicaSet's template.
const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";
const DEPLOYMENT_HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations `kubectl rollout undo` keeps from the Deployment rather
/// than copying them from the ReplicaSet.
const ANNOTATIONS_KEPT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    DEPLOYMENT_REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The Argo Rollouts `Rollout` resource.
pub fn rollout_resource() -> ApiResource {
    ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
    }
}

/// Argo Rollouts and Deployment rollbacks.
pub struct RolloutsActuator {
    api: KubeApi,
}

/// A label selector in the API's query syntax (`a=b,c in (d,e),!f`).
pub(crate) fn selector_string(s: &LabelSelector) -> Result<String, ActError> {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => return Err(ActError::Invalid(format!("selector operator {op:?}"))),
        });
    }
    if parts.is_empty() {
        return Err(ActError::Invalid(
            "an empty selector would match every ReplicaSet".into(),
        ));
    }
    Ok(parts.join(","))
}

fn revision_of(rs: &ReplicaSet, annotation: &str) -> Option<u64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(annotation)?
        .parse()
        .ok()
}

/// The ReplicaSet to roll back to: revision `to`, or the one before the newest.
pub(crate) fn pick_revision<'a>(
    owned: &'a [ReplicaSet],
    annotation: &str,
    to: Option<u64>,
    owner: &ObjectRef,
) -> Result<(&'a ReplicaSet, u64), ActError> {
    let mut by_rev: Vec<(u64, &ReplicaSet)> = owned
        .iter()
        .filter_map(|rs| revision_of(rs, annotation).map(|r| (r, rs)))
        .collect();
    by_rev.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    match to {
        Some(want) => by_rev
            .iter()
            .find(|(r, _)| *r == want)
            .map(|(r, rs)| (*rs, *r))
            .ok_or_else(|| {
                ActError::NotFound(format!("{owner}: revision {want} not in its history"))
            }),
        None => by_rev.get(1).map(|(r, rs)| (*rs, *r)).ok_or_else(|| {
            ActError::NotFound(format!("{owner}: no previous revision to roll back to"))
        }),
    }
}

/// A ReplicaSet's pod template without the controller's hash label.
fn template_without_hash(rs: &ReplicaSet, hash_label: &str) -> Result<Value, ActError> {
    let mut t = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.as_ref()))
        .map_err(|e| ActError::Invalid(e.to_string()))?;
    if t.is_null() {
        return Err(ActError::Invalid(format!(
            "ReplicaSet {} has no pod template",
            rs.metadata.name.as_deref().unwrap_or("?")
        )));
    }
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(hash_label);
    }
    Ok(t)
}

/// The same template, ignoring the hash label.
fn same_template(current: Option<&Value>, target: &Value, hash_label: &str) -> bool {
    let mut c = current.cloned().unwrap_or(Value::Null);
    if let Some(labels) = c
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(hash_label);
    }
    &c == target
}

impl RolloutsActuator {
    pub fn new(api: KubeApi) -> Self {
        RolloutsActuator { api }
    }

    fn rollouts(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.api.client(), ns, &rollout_resource())
    }

    async fn get_rollout(&self, o: &ObjectRef) -> Result<DynamicObject, ActError> {
        let api = self.rollouts(&o.namespace);
        let what = format!("reading {o}");
        self.api
            .call(&perm::ROLLOUTS_GET, &what, true, || api.get(&o.name))
            .await
    }

    /// `kubectl argo rollouts abort|retry`.
    async fn set_abort(&self, o: &ObjectRef, abort: bool) -> Result<Effect, ActError> {
        expect_kind(o, &[ObjectKind::Rollout])?;
        let before = self.get_rollout(o).await?;
        let was = before
            .data
            .pointer("/status/abort")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let api = self.rollouts(&o.namespace);
        let patch = json!({"status": {"abort": abort}});
        let verb = if abort { "aborting" } else { "retrying" };
        let what = format!("{verb} {o}");
        let pp = PatchParams::default();
        let merge = Patch::Merge(&patch);
        let r = self
            .api
            .call(&perm::ROLLOUTS_STATUS_PATCH, &what, true, || {
                api.patch_status(&o.name, &pp, &merge)
            })
            .await;
        match r {
            Err(ActError::NotFound(_)) => {
                self.api
                    .call(&perm::ROLLOUTS_PATCH, &what, true, || {
                        api.patch(&o.name, &pp, &merge)
                    })
                    .await?;
            }
            other => {
                other?;
            }
        }
        let undo = (was != abort).then(|| {
            if abort {
                Action::RolloutRetry { rollout: o.clone() }
            } else {
                Action::RolloutAbort { rollout: o.clone() }
            }
        });
        Ok(Effect {
            summary: format!("{} {o}", if abort { "aborted" } else { "retried" }),
            details: json!({"previous_abort": was, "abort": abort}),
            undo,
        })
    }

    /// The ReplicaSets `owner` (uid) controls among those its selector matches.
    async fn owned_replicasets(
        &self,
        o: &ObjectRef,
        selector: &LabelSelector,
        owner_uid: &str,
    ) -> Result<Vec<ReplicaSet>, ActError> {
        let api: Api<ReplicaSet> = Api::namespaced(self.api.client(), &o.namespace);
        let lp = ListParams::default().labels(&selector_string(selector)?);
        let what = format!("listing the ReplicaSets of {o}");
        let list = self
            .api
            .call(&perm::REPLICASETS_LIST, &what, true, || api.list(&lp))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true) && r.uid == owner_uid)
            })
            .collect())
    }

    /// `kubectl argo rollouts undo [--to-revision N]`.
    async fn undo_rollout(&self, o: &ObjectRef, to: Option<u64>) -> Result<Effect, ActError> {
        expect_kind(o, &[ObjectKind::Rollout])?;
        let ro = self.get_rollout(o).await?;
        let selector: LabelSelector = ro
            .data
            .pointer("/spec/selector")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ActError::Invalid(format!("{o}: spec.selector: {e}")))?
            .ok_or_else(|| ActError::Invalid(format!("{o} has no spec.selector")))?;
        let uid = ro.metadata.uid.clone().unwrap_or_default();
        let owned = self.owned_replicasets(o, &selector, &uid).await?;
        let (rs, revision) = pick_revision(&owned, ROLLOUT_REVISION, to, o)?;
        let template = template_without_hash(rs, ROLLOUT_HASH_LABEL)?;
        let current_revision = annotation_revision(&ro.metadata.annotations, ROLLOUT_REVISION);
        if same_template(
            ro.data.pointer("/spec/template"),
            &template,
            ROLLOUT_HASH_LABEL,
        ) {
            return Ok(already_at(o, revision));
        }
        let pp = PatchParams::default();
        let patch = json_patch(json!([
            {"op": "replace", "path": "/spec/template", "value": template},
        ]))?;
        let api = self.rollouts(&o.namespace);
        let what = format!("rolling {o} back to revision {revision}");
        self.api
            .call(&perm::ROLLOUTS_PATCH, &what, true, || {
                api.patch(&o.name, &pp, &patch)
            })
            .await?;
        Ok(rolled_back(o, revision, current_revision, |r| {
            Action::RolloutUndo {
                rollout: o.clone(),
                revision: Some(r),
            }
        }))
    }

    /// `kubectl rollout undo deployment/NAME [--to-revision N]`.
    async fn rollback_deployment(
        &self,
        o: &ObjectRef,
        to: Option<u64>,
    ) -> Result<Effect, ActError> {
        expect_kind(o, &[ObjectKind::Deployment])?;
        let api: Api<Deployment> = Api::namespaced(self.api.client(), &o.namespace);
        let what = format!("reading {o}");
        let d = self
            .api
            .call(&perm::DEPLOYMENTS_GET, &what, true, || api.get(&o.name))
            .await?;
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| ActError::Invalid(format!("{o} has no spec")))?;
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let owned = self.owned_replicasets(o, &spec.selector, &uid).await?;
        let (rs, revision) = pick_revision(&owned, DEPLOYMENT_REVISION, to, o)?;
        if spec.paused == Some(true) {
            return Err(ActError::Refused(format!(
                "{o} is paused: a paused deployment cannot be rolled back (resume it first)"
            )));
        }
        let template = template_without_hash(rs, DEPLOYMENT_HASH_LABEL)?;
        let current = serde_json::to_value(&spec.template).ok();
        let current_revision = annotation_revision(&d.metadata.annotations, DEPLOYMENT_REVISION);
        if same_template(current.as_ref(), &template, DEPLOYMENT_HASH_LABEL) {
            return Ok(already_at(o, revision));
        }
        // kubectl keeps the Deployment's own bookkeeping annotations and takes the
        // rest from the ReplicaSet.
        let mut annotations: BTreeMap<String, String> = BTreeMap::new();
        let own = d.metadata.annotations.clone().unwrap_or_default();
        for k in ANNOTATIONS_KEPT {
            if let Some(v) = own.get(k) {
                annotations.insert(k.to_owned(), v.clone());
            }
        }
        for (k, v) in rs.metadata.annotations.iter().flatten() {
            if !ANNOTATIONS_KEPT.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        let pp = PatchParams::default();
        let patch = json_patch(json!([
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]))?;
        let what = format!("rolling {o} back to revision {revision}");
        self.api
            .call(&perm::DEPLOYMENTS_PATCH, &what, true, || {
                api.patch(&o.name, &pp, &patch)
            })
            .await?;
        Ok(rolled_back(o, revision, current_revision, |r| {
            Action::DeploymentRollback {
                deployment: o.clone(),
                revision: Some(r),
            }
        }))
    }
}

/// A JSON patch (RFC 6902) as kube sends it (`application/json-patch+json`).
fn json_patch(ops: Value) -> Result<Patch<()>, ActError> {
    serde_json::from_value::<json_patch::Patch>(ops)
        .map(Patch::Json)
        .map_err(|e| ActError::Invalid(e.to_string()))
}

/// Nothing to do: the template is already the revision's.
fn already_at(o: &ObjectRef, revision: u64) -> Effect {
    Effect {
        summary: format!("{o}: current template already matches revision {revision}"),
        details: json!({"revision": revision, "skipped": true}),
        undo: None,
    }
}

/// Rolled back; the undo goes back to the revision that was current.
fn rolled_back(
    o: &ObjectRef,
    revision: u64,
    current_revision: Option<u64>,
    undo: impl FnOnce(u64) -> Action,
) -> Effect {
    Effect {
        summary: format!("rolled {o} back to revision {revision}"),
        details: json!({"revision": revision, "previous_revision": current_revision}),
        undo: current_revision.map(undo),
    }
}

fn annotation_revision(a: &Option<BTreeMap<String, String>>, key: &str) -> Option<u64> {
    a.as_ref()?.get(key)?.parse().ok()
}

#[async_trait::async_trait]
impl super::Actuator for RolloutsActuator {
    fn name(&self) -> &'static str {
        "rollouts"
    }

    fn handles(&self, action: &Action) -> bool {
        matches!(
            action.kind(),
            ActionKind::RolloutAbort
                | ActionKind::RolloutRetry
                | ActionKind::RolloutUndo
                | ActionKind::DeploymentRollback
        )
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        match approved.action() {
            Action::RolloutAbort { rollout } => self.set_abort(rollout, true).await,
            Action::RolloutRetry { rollout } => self.set_abort(rollout, false).await,
            Action::RolloutUndo { rollout, revision } => {
                self.undo_rollout(rollout, *revision).await
            }
            Action::DeploymentRollback {
                deployment,
                revision,
            } => self.rollback_deployment(deployment, *revision).await,
            other => Err(ActError::NotConfigured(other.kind().to_string())),
        }
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        let (o, rollout) = match action {
            Action::RolloutAbort { rollout: o }
            | Action::RolloutRetry { rollout: o }
            | Action::RolloutUndo { rollout: o, .. } => (o, true),
            Action::DeploymentRollback { deployment: o, .. } => (o, false),
            other => return Err(ActError::NotConfigured(other.kind().to_string())),
        };
        let what = format!("reading {o}");
        let r = if rollout {
            self.get_rollout(o).await
        } else {
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.api.client(),
                &o.namespace,
                &ApiResource::erase::<Deployment>(&()),
            );
            self.api
                .call(&perm::DEPLOYMENTS_GET, &what, true, || api.get(&o.name))
                .await
        };
        match r {
            Ok(obj) => Ok(workload_state(&obj)),
            Err(ActError::NotFound(_)) => Ok(json!({"exists": false})),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    fn rs(rev: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{rev}")),
                annotations: Some([(DEPLOYMENT_REVISION.to_string(), rev.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn previous_revision_is_the_second_newest() {
        let o = ObjectRef {
            kind: ObjectKind::Deployment,
            namespace: "prod".into(),
            name: "web".into(),
        };
        let sets = [rs("3"), rs("10"), rs("7"), rs("x")];
        let (picked, r) = pick_revision(&sets, DEPLOYMENT_REVISION, None, &o).unwrap();
        assert_eq!((picked.metadata.name.as_deref(), r), (Some("web-7"), 7));
        assert_eq!(
            pick_revision(&sets, DEPLOYMENT_REVISION, Some(3), &o)
                .unwrap()
                .1,
            3
        );
        assert!(matches!(
            pick_revision(&sets, DEPLOYMENT_REVISION, Some(4), &o),
            Err(ActError::NotFound(_))
        ));
        assert!(matches!(
            pick_revision(&sets[1..2], DEPLOYMENT_REVISION, None, &o),
            Err(ActError::NotFound(_))
        ));
    }

    #[test]
    fn selectors_use_the_api_query_syntax() {
        let s = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&s).unwrap(),
            "app=web,tier in (a,b),!canary"
        );
        assert!(selector_string(&LabelSelector::default()).is_err());
    }
}
