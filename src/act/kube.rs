//! Kubernetes actuator: restart a pod (delete, with a UID precondition when the
//! action carries one), `kubectl rollout restart` of a Deployment/StatefulSet/
//! DaemonSet, scale through the `scale` subresource within bounds, patch ConfigMap
//! keys, cordon/uncordon a node — with the `kube` client, sending the requests
//! `kubectl` sends.
//!
//! Every API request goes through [`KubeApi::call`], which names the RBAC
//! [`Permission`] the request needs; [`PERMISSIONS`] is the one table of them. The
//! manifest in `deploy/kubernetes/rbac.yaml` is checked against it, and the API
//! double the tests use authorizes requests with it, so the code, the manifest and
//! the tests cannot drift apart.
//!
//! Writes that depend on what was read (scale, ConfigMap keys) carry the
//! `resourceVersion` they read, so a concurrent change is a conflict, never a lost
//! update; after a conflict the object is read again and the write is repeated only
//! if the values it touches are still as first read (or already as intended).
//!
//! Must never: delete a pod without its UID precondition when the action knows the
//! UID; retry a call that is not idempotent after an ambiguous failure.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
use kube::Client;
use prometheus::IntCounter;
use serde_json::{json, Value};

use super::config::{timeout, KubernetesConfig};
use super::retry::{with_retries, Attempt, RetryPolicy};
use super::{ActError, Action, ActionKind, Approved, Effect, ObjectKind, ObjectRef};

/// One RBAC permission: an API group, a resource (`deployments/scale` for a
/// subresource) and a verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    /// Cluster-scoped resources (nodes) need a ClusterRoleBinding.
    pub cluster_scoped: bool,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

const fn perm(group: &'static str, resource: &'static str, verb: &'static str) -> Permission {
    Permission {
        group,
        resource,
        verb,
        cluster_scoped: false,
    }
}

/// The permissions the Kubernetes and Argo Rollouts actuators use, by request.
pub mod perm {
    use super::{perm, Permission};

    pub const PODS_GET: Permission = perm("", "pods", "get");
    pub const PODS_DELETE: Permission = perm("", "pods", "delete");
    pub const CONFIGMAPS_GET: Permission = perm("", "configmaps", "get");
    pub const CONFIGMAPS_PATCH: Permission = perm("", "configmaps", "patch");
    pub const NODES_GET: Permission = Permission {
        cluster_scoped: true,
        ..perm("", "nodes", "get")
    };
    pub const NODES_PATCH: Permission = Permission {
        cluster_scoped: true,
        ..perm("", "nodes", "patch")
    };
    pub const DEPLOYMENTS_GET: Permission = perm("apps", "deployments", "get");
    pub const DEPLOYMENTS_PATCH: Permission = perm("apps", "deployments", "patch");
    pub const STATEFULSETS_GET: Permission = perm("apps", "statefulsets", "get");
    pub const STATEFULSETS_PATCH: Permission = perm("apps", "statefulsets", "patch");
    pub const DAEMONSETS_GET: Permission = perm("apps", "daemonsets", "get");
    pub const DAEMONSETS_PATCH: Permission = perm("apps", "daemonsets", "patch");
    pub const DEPLOYMENTS_SCALE_GET: Permission = perm("apps", "deployments/scale", "get");
    pub const DEPLOYMENTS_SCALE_UPDATE: Permission = perm("apps", "deployments/scale", "update");
    pub const STATEFULSETS_SCALE_GET: Permission = perm("apps", "statefulsets/scale", "get");
    pub const STATEFULSETS_SCALE_UPDATE: Permission = perm("apps", "statefulsets/scale", "update");
    pub const REPLICASETS_LIST: Permission = perm("apps", "replicasets", "list");
    pub const ROLLOUTS_GET: Permission = perm("argoproj.io", "rollouts", "get");
    pub const ROLLOUTS_PATCH: Permission = perm("argoproj.io", "rollouts", "patch");
    pub const ROLLOUTS_STATUS_PATCH: Permission = perm("argoproj.io", "rollouts/status", "patch");
}

/// Every permission the actuators use: what `deploy/kubernetes/rbac.yaml` must grant,
/// and all it may grant.
pub const PERMISSIONS: &[Permission] = &[
    perm::PODS_GET,
    perm::PODS_DELETE,
    perm::CONFIGMAPS_GET,
    perm::CONFIGMAPS_PATCH,
    perm::NODES_GET,
    perm::NODES_PATCH,
    perm::DEPLOYMENTS_GET,
    perm::DEPLOYMENTS_PATCH,
    perm::STATEFULSETS_GET,
    perm::STATEFULSETS_PATCH,
    perm::DAEMONSETS_GET,
    perm::DAEMONSETS_PATCH,
    perm::DEPLOYMENTS_SCALE_GET,
    perm::DEPLOYMENTS_SCALE_UPDATE,
    perm::STATEFULSETS_SCALE_GET,
    perm::STATEFULSETS_SCALE_UPDATE,
    perm::REPLICASETS_LIST,
    perm::ROLLOUTS_GET,
    perm::ROLLOUTS_PATCH,
    perm::ROLLOUTS_STATUS_PATCH,
];

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How many times a read-modify-write is repeated after conflicts.
const CONFLICT_ROUNDS: u32 = 5;

/// A 409 from the API server: the object changed since it was read, or a
/// precondition (UID) failed.
#[derive(Debug)]
pub(crate) struct Conflict(pub(crate) String);

/// The client every Kubernetes-facing actuator shares, with its timeout and
/// retry policy.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    timeout: Duration,
    retry: RetryPolicy,
    retries: IntCounter,
}

impl KubeApi {
    /// Builds the client from a kubeconfig file (and context) or the in-cluster
    /// service account, as configured.
    pub async fn connect(
        config: &KubernetesConfig,
        retry: RetryPolicy,
        retries: IntCounter,
    ) -> Result<KubeApi, String> {
        let mut kc = if config.in_cluster {
            kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?
        } else {
            let path = config
                .kubeconfig
                .as_ref()
                .ok_or("kubeconfig or in_cluster is required")?;
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: config.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        };
        let t = timeout(&config.request_timeout);
        kc.connect_timeout = Some(t);
        kc.read_timeout = Some(t);
        kc.write_timeout = Some(t);
        let client = Client::try_from(kc).map_err(|e| format!("building the client: {e}"))?;
        Ok(KubeApi {
            client,
            timeout: t,
            retry,
            retries,
        })
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// One API request needing `perm`, with the timeout and bounded retries.
    /// `idempotent`: a timeout or 5xx may be retried. A 409 is an error here.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        perm: &'static Permission,
        what: &str,
        idempotent: bool,
        f: F,
    ) -> Result<T, ActError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        match self.try_call(perm, what, idempotent, f).await? {
            Ok(v) => Ok(v),
            Err(Conflict(msg)) => Err(ActError::Refused(format!("{what}: conflict: {msg}"))),
        }
    }

    /// Like [`KubeApi::call`], but a 409 is handed back for the caller to resolve.
    pub(crate) async fn try_call<T, F, Fut>(
        &self,
        perm: &'static Permission,
        what: &str,
        idempotent: bool,
        mut f: F,
    ) -> Result<Result<T, Conflict>, ActError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let limit = self.timeout;
        with_retries(
            &self.retry,
            || self.retries.inc(),
            |attempt| {
                let request = f();
                async move {
                    let outcome = tokio::time::timeout(limit, request).await;
                    let err = match outcome {
                        Ok(Ok(v)) => return Ok(Ok(v)),
                        Ok(Err(e)) => e,
                        Err(_) => {
                            let reason = format!("{what}: no answer within {limit:?}");
                            return Err(transport(idempotent, attempt, reason));
                        }
                    };
                    match err {
                        kube::Error::Api(r) => {
                            let msg = if r.message.is_empty() {
                                r.reason.clone()
                            } else {
                                r.message.clone()
                            };
                            match r.code {
                                409 => Ok(Err(Conflict(msg))),
                                404 => Err(ActError::NotFound(format!("{what}: {msg}")).into()),
                                401 | 403 => Err(ActError::Refused(format!(
                                    "{what}: {msg} (closedloop's service account needs `{perm}`: see deploy/kubernetes/rbac.yaml)"
                                ))
                                .into()),
                                429 | 500..=599 => Err(transport(
                                    idempotent,
                                    attempt,
                                    format!("{what}: {} {msg}", r.code),
                                )),
                                code => Err(ActError::Refused(format!("{what}: {code} {msg}")).into()),
                            }
                        }
                        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                            Err(transport(idempotent, attempt, format!("{what}: {e}")))
                        }
                        e => Err(ActError::Refused(format!("{what}: unexpected answer: {e}")).into()),
                    }
                }
            },
        )
        .await
    }
}

/// A failure whose outcome is unknown (timeout, connection, 5xx): retried when the
/// call is idempotent, else final.
fn transport(idempotent: bool, attempt: u32, reason: String) -> Attempt {
    if idempotent {
        Attempt::Transient(reason)
    } else {
        Attempt::Final(ActError::Unavailable {
            attempts: attempt,
            reason: format!("{reason} (not retried: the request may have been carried out)"),
        })
    }
}

/// The request was made with `kind` but the action needs one of `allowed`.
pub(crate) fn expect_kind(o: &ObjectRef, allowed: &[ObjectKind]) -> Result<(), ActError> {
    if !allowed.contains(&o.kind) {
        let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        return Err(ActError::Invalid(format!(
            "{o}: expected a {}",
            names.join(" or ")
        )));
    }
    let cluster_scoped = o.kind == ObjectKind::Node;
    if o.name.is_empty() || (o.namespace.is_empty() != cluster_scoped) {
        return Err(ActError::Invalid(format!(
            "{o}: a {} needs a name{}",
            o.kind.as_str(),
            if cluster_scoped {
                ""
            } else {
                " and a namespace"
            }
        )));
    }
    Ok(())
}

/// Kubernetes actions: pods, workloads, scale, ConfigMaps, nodes.
pub struct KubeActuator {
    api: KubeApi,
}

/// What the API needs to reach a workload kind generically.
struct Workload {
    resource: ApiResource,
    get: &'static Permission,
    patch: &'static Permission,
    scale_get: Option<&'static Permission>,
    scale_update: Option<&'static Permission>,
}

fn workload(kind: ObjectKind) -> Option<Workload> {
    Some(match kind {
        ObjectKind::Deployment => Workload {
            resource: ApiResource::erase::<Deployment>(&()),
            get: &perm::DEPLOYMENTS_GET,
            patch: &perm::DEPLOYMENTS_PATCH,
            scale_get: Some(&perm::DEPLOYMENTS_SCALE_GET),
            scale_update: Some(&perm::DEPLOYMENTS_SCALE_UPDATE),
        },
        ObjectKind::StatefulSet => Workload {
            resource: ApiResource::erase::<StatefulSet>(&()),
            get: &perm::STATEFULSETS_GET,
            patch: &perm::STATEFULSETS_PATCH,
            scale_get: Some(&perm::STATEFULSETS_SCALE_GET),
            scale_update: Some(&perm::STATEFULSETS_SCALE_UPDATE),
        },
        ObjectKind::DaemonSet => Workload {
            resource: ApiResource::erase::<DaemonSet>(&()),
            get: &perm::DAEMONSETS_GET,
            patch: &perm::DAEMONSETS_PATCH,
            scale_get: None,
            scale_update: None,
        },
        _ => return None,
    })
}

/// The replica count a scale action asks for, clamped to its bounds.
pub(crate) fn scale_target(
    current: i32,
    change: super::ReplicaChange,
    bounds: super::ReplicaBounds,
) -> Result<i32, ActError> {
    if bounds.min > bounds.max {
        return Err(ActError::Invalid(format!(
            "replica bounds min {} > max {}",
            bounds.min, bounds.max
        )));
    }
    let wanted = match change {
        super::ReplicaChange::By(n) => i64::from(current) + i64::from(n),
        super::ReplicaChange::To(n) => i64::from(n),
    };
    let clamped = wanted.clamp(i64::from(bounds.min), i64::from(bounds.max));
    i32::try_from(clamped).map_err(|_| ActError::Invalid(format!("{clamped} replicas")))
}

impl KubeActuator {
    pub fn new(api: KubeApi) -> Self {
        KubeActuator { api }
    }

    fn dynamic(&self, o: &ObjectRef, w: &Workload) -> Api<DynamicObject> {
        Api::namespaced_with(self.api.client(), &o.namespace, &w.resource)
    }

    async fn restart_pod(&self, pod: &ObjectRef, uid: Option<&str>) -> Result<Effect, ActError> {
        expect_kind(pod, &[ObjectKind::Pod])?;
        let api: Api<Pod> = Api::namespaced(self.api.client(), &pod.namespace);
        let params = DeleteParams {
            preconditions: uid.map(|u| Preconditions {
                uid: Some(u.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let what = format!("deleting {pod}");
        let tries = AtomicU32::new(0);
        // With the UID precondition a repeated delete cannot hit a replacement pod
        // of the same name, so it is safe to retry; without it, it is not.
        let r = self
            .api
            .try_call(&perm::PODS_DELETE, &what, uid.is_some(), || {
                tries.fetch_add(1, Ordering::Relaxed);
                api.delete(&pod.name, &params)
            })
            .await;
        let details = json!({"uid": uid});
        match r {
            Ok(Ok(_)) => Ok(Effect {
                summary: format!("deleted pod {pod}; its controller recreates it"),
                details,
                undo: None,
            }),
            // An earlier try's answer was lost; the pod is gone now.
            Err(ActError::NotFound(_)) if tries.load(Ordering::Relaxed) > 1 => Ok(Effect {
                summary: format!("pod {pod} is gone (an earlier try's answer was lost)"),
                details,
                undo: None,
            }),
            Ok(Err(Conflict(msg))) => Err(ActError::NotFound(format!(
                "{pod}: not the pod the action named (UID precondition failed: {msg})"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn rollout_restart(&self, o: &ObjectRef) -> Result<Effect, ActError> {
        expect_kind(
            o,
            &[
                ObjectKind::Deployment,
                ObjectKind::StatefulSet,
                ObjectKind::DaemonSet,
            ],
        )?;
        let w = workload(o.kind).ok_or_else(|| ActError::Invalid(o.to_string()))?;
        let api = self.dynamic(o, &w);
        // Computed once: every retry sends the same body, so the patch is idempotent.
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch =
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
        let what = format!("restarting {o}");
        let pp = PatchParams::default();
        let strategic = Patch::Strategic(&patch);
        let obj = self
            .api
            .call(w.patch, &what, true, || api.patch(&o.name, &pp, &strategic))
            .await?;
        Ok(Effect {
            summary: format!("rolling restart of {o} (restartedAt {at})"),
            details: json!({"restarted_at": at, "generation": obj.metadata.generation}),
            undo: None,
        })
    }

    async fn scale(
        &self,
        o: &ObjectRef,
        change: super::ReplicaChange,
        bounds: super::ReplicaBounds,
    ) -> Result<Effect, ActError> {
        expect_kind(o, &[ObjectKind::Deployment, ObjectKind::StatefulSet])?;
        let w = workload(o.kind).ok_or_else(|| ActError::Invalid(o.to_string()))?;
        let (Some(get), Some(update)) = (w.scale_get, w.scale_update) else {
            return Err(ActError::Invalid(format!("{o} has no scale subresource")));
        };
        let api = self.dynamic(o, &w);
        let read = |api: &Api<DynamicObject>| {
            let what = format!("reading the scale of {o}");
            let api = api.clone();
            async move {
                self.api
                    .call(get, &what, true, || api.get_scale(&o.name))
                    .await
            }
        };
        let mut scale = read(&api).await?;
        let replicas = |s: &Scale| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let current = replicas(&scale);
        let target = scale_target(current, change, bounds)?;
        let undo_bounds = super::ReplicaBounds {
            min: bounds.min.min(current.max(0) as u32),
            max: bounds.max.max(current.max(0) as u32),
        };
        let effect = |summary: String, undo: bool| Effect {
            summary,
            details: json!({"previous": current, "replicas": target, "bounds": bounds}),
            undo: undo.then(|| Action::Scale {
                workload: o.clone(),
                change: super::ReplicaChange::To(current.max(0) as u32),
                bounds: undo_bounds,
            }),
        };
        if target == current {
            return Ok(effect(
                format!(
                    "{o} already has {current} replicas (bounds {}..{})",
                    bounds.min, bounds.max
                ),
                false,
            ));
        }
        let what = format!("scaling {o} to {target}");
        let post = PostParams::default();
        for _ in 0..CONFLICT_ROUNDS {
            scale.spec.get_or_insert_with(Default::default).replicas = Some(target);
            let body = serde_json::to_vec(&scale)
                .map_err(|e| ActError::Invalid(format!("{what}: {e}")))?;
            // A PUT carrying the resourceVersion read: a repeat after a lost answer
            // is a conflict, resolved below, never a second change.
            let r = self
                .api
                .try_call(update, &what, true, || {
                    api.replace_scale(&o.name, &post, body.clone())
                })
                .await?;
            match r {
                Ok(_) => {
                    return Ok(effect(format!("scaled {o} {current} -> {target}"), true));
                }
                Err(Conflict(_)) => {
                    scale = read(&api).await?;
                    let now = replicas(&scale);
                    if now == target {
                        return Ok(effect(format!("scaled {o} {current} -> {target}"), true));
                    }
                    if now != current {
                        return Err(ActError::Refused(format!(
                            "{what}: replicas changed concurrently from {current} to {now}"
                        )));
                    }
                }
            }
        }
        Err(ActError::Refused(format!(
            "{what}: still conflicting after {CONFLICT_ROUNDS} tries"
        )))
    }

    async fn patch_configmap(
        &self,
        o: &ObjectRef,
        data: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<Effect, ActError> {
        expect_kind(o, &[ObjectKind::ConfigMap])?;
        if data.is_empty() {
            return Err(ActError::Invalid(format!("{o}: no keys to patch")));
        }
        let api: Api<ConfigMap> = Api::namespaced(self.api.client(), &o.namespace);
        let read_what = format!("reading {o}");
        let read = || async {
            self.api
                .call(&perm::CONFIGMAPS_GET, &read_what, true, || api.get(&o.name))
                .await
        };
        let values = |cm: &ConfigMap| -> std::collections::BTreeMap<String, Option<String>> {
            data.keys()
                .map(|k| (k.clone(), cm.data.as_ref().and_then(|d| d.get(k)).cloned()))
                .collect()
        };
        let mut cm = read().await?;
        let previous = values(&cm);
        let effect = |summary: String, undo: bool| Effect {
            summary,
            details: json!({"previous": previous, "new": data}),
            undo: undo.then(|| Action::PatchConfigMap {
                configmap: o.clone(),
                data: previous.clone(),
            }),
        };
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        if &previous == data {
            return Ok(effect(
                format!("{o}: {} already as asked", keys.join(", ")),
                false,
            ));
        }
        let what = format!("patching {o}");
        let pp = PatchParams::default();
        for _ in 0..CONFLICT_ROUNDS {
            let patch = Patch::Merge(json!({
                "metadata": {"resourceVersion": cm.metadata.resource_version},
                "data": data,
            }));
            let r = self
                .api
                .try_call(&perm::CONFIGMAPS_PATCH, &what, true, || {
                    api.patch(&o.name, &pp, &patch)
                })
                .await?;
            match r {
                Ok(_) => return Ok(effect(format!("{o}: set {}", keys.join(", ")), true)),
                Err(Conflict(_)) => {
                    cm = read().await?;
                    let now = values(&cm);
                    if &now == data {
                        return Ok(effect(format!("{o}: set {}", keys.join(", ")), true));
                    }
                    if now != previous {
                        return Err(ActError::Refused(format!(
                            "{what}: {} changed concurrently",
                            keys.join(", ")
                        )));
                    }
                }
            }
        }
        Err(ActError::Refused(format!(
            "{what}: still conflicting after {CONFLICT_ROUNDS} tries"
        )))
    }

    async fn cordon(&self, node: &str, cordon: bool) -> Result<Effect, ActError> {
        let o = ObjectRef {
            kind: ObjectKind::Node,
            namespace: String::new(),
            name: node.to_owned(),
        };
        expect_kind(&o, &[ObjectKind::Node])?;
        let api: Api<Node> = Api::all(self.api.client());
        let what = format!("reading {o}");
        let current = self
            .api
            .call(&perm::NODES_GET, &what, true, || api.get(node))
            .await?;
        let was = current
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let verb = if cordon { "cordoned" } else { "uncordoned" };
        if was == cordon {
            return Ok(Effect {
                summary: format!("{o} already {verb}"),
                details: json!({"unschedulable": was}),
                undo: None,
            });
        }
        // As `kubectl cordon` / `uncordon`: a strategic merge patch of
        // spec.unschedulable (uncordon removes the field).
        let value = if cordon { json!(true) } else { Value::Null };
        let patch = json!({"spec": {"unschedulable": value}});
        let what = format!("{} {o}", if cordon { "cordoning" } else { "uncordoning" });
        let pp = PatchParams::default();
        let strategic = Patch::Strategic(&patch);
        self.api
            .call(&perm::NODES_PATCH, &what, true, || {
                api.patch(node, &pp, &strategic)
            })
            .await?;
        Ok(Effect {
            summary: format!("{verb} {o}"),
            details: json!({"previous": was, "unschedulable": cordon}),
            undo: Some(Action::CordonNode {
                node: node.to_owned(),
                cordon: was,
            }),
        })
    }

    async fn observe_object(&self, o: &ObjectRef) -> Result<Value, ActError> {
        let what = format!("reading {o}");
        let found = |v: Value| Ok(v);
        let r = match o.kind {
            ObjectKind::Pod => {
                let api: Api<Pod> = Api::namespaced(self.api.client(), &o.namespace);
                self.api
                    .call(&perm::PODS_GET, &what, true, || api.get(&o.name))
                    .await
                    .map(|p| {
                        let status = p.status.unwrap_or_default();
                        json!({
                            "exists": true,
                            "uid": p.metadata.uid,
                            "phase": status.phase,
                            "node": p.spec.and_then(|s| s.node_name),
                            "deleting": p.metadata.deletion_timestamp.is_some(),
                            "restarts": status.container_statuses.unwrap_or_default().iter().map(|c| c.restart_count).sum::<i32>(),
                        })
                    })
            }
            ObjectKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.api.client(), &o.namespace);
                self.api
                    .call(&perm::CONFIGMAPS_GET, &what, true, || api.get(&o.name))
                    .await
                    .map(|cm| json!({"exists": true, "data": cm.data, "resource_version": cm.metadata.resource_version}))
            }
            ObjectKind::Node => {
                let api: Api<Node> = Api::all(self.api.client());
                self.api
                    .call(&perm::NODES_GET, &what, true, || api.get(&o.name))
                    .await
                    .map(|n| json!({"exists": true, "unschedulable": n.spec.and_then(|s| s.unschedulable).unwrap_or(false)}))
            }
            kind => {
                let w = workload(kind)
                    .ok_or_else(|| ActError::Invalid(format!("{o}: not a workload")))?;
                let api = self.dynamic(o, &w);
                self.api
                    .call(w.get, &what, true, || api.get(&o.name))
                    .await
                    .map(|d| workload_state(&d))
            }
        };
        match r {
            Err(ActError::NotFound(_)) => found(json!({"exists": false})),
            other => other,
        }
    }
}

/// What matters of a workload (or Rollout) for the audit log and verification.
pub(crate) fn workload_state(d: &DynamicObject) -> Value {
    let spec = d.data.get("spec");
    let status = d.data.get("status");
    json!({
        "exists": true,
        "generation": d.metadata.generation,
        "revision": d.metadata.annotations.as_ref().and_then(|a| {
            a.get("deployment.kubernetes.io/revision").or_else(|| a.get("rollout.argoproj.io/revision"))
        }),
        "replicas": spec.and_then(|s| s.get("replicas")),
        "ready_replicas": status.and_then(|s| s.get("readyReplicas")),
        "observed_generation": status.and_then(|s| s.get("observedGeneration")),
        "restarted_at": spec
            .and_then(|s| s.pointer("/template/metadata/annotations"))
            .and_then(|a| a.get(RESTARTED_AT)),
        "paused": spec.and_then(|s| s.get("paused")),
        "abort": status.and_then(|s| s.get("abort")),
        "phase": status.and_then(|s| s.get("phase")),
    })
}

#[async_trait::async_trait]
impl super::Actuator for KubeActuator {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn handles(&self, action: &Action) -> bool {
        matches!(
            action.kind(),
            ActionKind::RestartPod
                | ActionKind::RolloutRestart
                | ActionKind::Scale
                | ActionKind::PatchConfigMap
                | ActionKind::CordonNode
        )
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        match approved.action() {
            Action::RestartPod { pod, uid } => self.restart_pod(pod, uid.as_deref()).await,
            Action::RolloutRestart { workload } => self.rollout_restart(workload).await,
            Action::Scale {
                workload,
                change,
                bounds,
            } => self.scale(workload, *change, *bounds).await,
            Action::PatchConfigMap { configmap, data } => {
                self.patch_configmap(configmap, data).await
            }
            Action::CordonNode { node, cordon } => self.cordon(node, *cordon).await,
            other => Err(ActError::NotConfigured(other.kind().to_string())),
        }
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        match action {
            Action::RestartPod { pod: o, .. }
            | Action::RolloutRestart { workload: o }
            | Action::PatchConfigMap { configmap: o, .. } => self.observe_object(o).await,
            Action::Scale { workload: o, .. } => {
                let mut state = self.observe_object(o).await?;
                if let (Some(w), true) = (workload(o.kind), state["exists"] == true) {
                    if let Some(get) = w.scale_get {
                        let api = self.dynamic(o, &w);
                        let what = format!("reading the scale of {o}");
                        let s = self
                            .api
                            .call(get, &what, true, || api.get_scale(&o.name))
                            .await?;
                        state["scale"] = json!(s.spec.and_then(|s| s.replicas));
                    }
                }
                Ok(state)
            }
            Action::CordonNode { node, .. } => {
                self.observe_object(&ObjectRef {
                    kind: ObjectKind::Node,
                    namespace: String::new(),
                    name: node.clone(),
                })
                .await
            }
            other => Err(ActError::NotConfigured(other.kind().to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
