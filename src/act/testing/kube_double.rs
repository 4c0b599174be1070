//! A faithful-enough double of the Kubernetes API server for the kinds the
//! actuators touch: pods, configmaps, nodes (core/v1); deployments (with `scale`),
//! statefulsets (with `scale`), daemonsets, replicasets (apps/v1); rollouts (with
//! `status`, argoproj.io/v1alpha1).
//!
//! What it does as the API server does: bearer-token authentication (401);
//! authorization of (group, resource[/subresource], verb) against a rule table —
//! by default the actuators' own [`PERMISSIONS`] — answering 403 with the API
//! server's message; `metav1.Status` error bodies; the three patch content types
//! (`application/merge-patch+json`, `application/strategic-merge-patch+json`,
//! `application/json-patch+json`, anything else 415); `resourceVersion` optimistic
//! concurrency on patches and updates (409); UID preconditions on delete (409);
//! label-selector lists; `metadata.generation` bumped on spec changes; status
//! changes ignored on the main resource and spec changes on `/status` when a kind
//! has a status subresource.
//!
//! What it does not: strategic merge of lists (a strategic patch containing a list
//! or a `$` directive is answered 422, so a test notices), watches, field
//! selectors, admission, defaulting.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::LocalServer;
use crate::act::config::KubernetesConfig;
use crate::act::kube::{Permission, PERMISSIONS};
use crate::duration::PromDuration;

/// The bearer token the double's kubeconfig carries and the double demands.
const TOKEN: &str = "closedloop-test-token";

/// A kind the double serves.
#[derive(Debug, Clone, Copy)]
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    scale: bool,
    status: bool,
}

const KINDS: [Kind; 8] = [
    Kind {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        scale: false,
        status: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        scale: false,
        status: false,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        scale: false,
        status: true,
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        scale: true,
        status: true,
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        scale: true,
        status: true,
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        scale: false,
        status: true,
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        scale: true,
        status: true,
    },
    Kind {
        group: "argoproj.io",
        version: "v1alpha1",
        plural: "rollouts",
        kind: "Rollout",
        namespaced: true,
        scale: false,
        status: true,
    },
];

fn api_version(k: &Kind) -> String {
    if k.group.is_empty() {
        k.version.to_owned()
    } else {
        format!("{}/{}", k.group, k.version)
    }
}

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The RBAC verb the request needs (`get`, `list`, `patch`, `update`, `delete`).
    pub verb: String,
    /// The RBAC resource (`deployments/scale` for a subresource).
    pub resource: String,
    /// The answer's status code.
    pub status: u16,
}

/// An answer to force on the next request(s) whose method and path match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Method,
    /// Matched against the end of the request path.
    pub path_suffix: String,
    pub status: u16,
    /// How many matching requests get it.
    pub times: u32,
}

#[derive(Default)]
struct State {
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    resource_version: u64,
    uid_seq: u64,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    rules: BTreeSet<(String, String, String)>,
    used: BTreeSet<(String, String, String)>,
    /// Rollouts' status subresource served (Argo's CRD has it; old ones did not).
    rollout_status_subresource: bool,
}

/// The running double; stopped on drop.
pub struct KubeDouble {
    state: Arc<Mutex<State>>,
    server: LocalServer,
    dir: tempfile::TempDir,
}

struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn status_body(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// `/api/v1/namespaces/ns/pods/name`, `/apis/apps/v1/namespaces/ns/deployments/x/scale`,
/// `/api/v1/nodes/n`, …
fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let kind = *KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    if kind.namespaced == namespace.is_empty() && name.is_some() {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
        sub,
    })
}

fn verb(method: &Method, t: &Target, query: &str) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false)
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        ("GET", false) => "list",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        ("POST", _) => "create",
        _ => "unknown",
    }
}

/// Equality- and set-based label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
/// `a notin (x,y)`, `a`, `!a`.
fn selector_matches(selector: &str, labels: &serde_json::Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let set = |rest: &str| -> Vec<String> {
                rest.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect()
            };
            if let Some((k, rest)) = t.split_once(" notin ") {
                return !get(k.trim()).is_some_and(|v| set(rest).iter().any(|s| s == v));
            }
            if let Some((k, rest)) = t.split_once(" in ") {
                return get(k.trim()).is_some_and(|v| set(rest).iter().any(|s| s == v));
            }
            if let Some((k, v)) = t.split_once("!=") {
                return get(k.trim()) != Some(v.trim());
            }
            if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                return get(k.trim()) == Some(v.trim());
            }
            if let Some(k) = t.strip_prefix('!') {
                return get(k).is_none();
            }
            get(t).is_some()
        })
}

/// A strategic merge patch the double can apply as a JSON merge: no lists, no
/// `$patch`/`$setElementOrder` directives.
fn plain_strategic(v: &Value) -> Result<(), String> {
    match v {
        Value::Array(_) => {
            Err("lists in strategic merge patches are not implemented by the double".into())
        }
        Value::Object(m) => {
            for (k, v) in m {
                if k.starts_with('$') {
                    return Err(format!("directive {k} is not implemented by the double"));
                }
                plain_strategic(v)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl State {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn key(t: &Target) -> (String, String, String) {
        (
            t.kind.plural.to_owned(),
            t.namespace.clone(),
            t.name.clone().unwrap_or_default(),
        )
    }

    fn handle(
        &mut self,
        method: &Method,
        t: &Target,
        query: &str,
        ct: Option<&str>,
        body: &[u8],
    ) -> Response {
        let name = t.name.clone().unwrap_or_default();
        let not_found = || {
            status_body(
                404,
                "NotFound",
                format!(
                    "{}{} \"{name}\" not found",
                    t.kind.plural,
                    if t.kind.group.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", t.kind.group)
                    }
                ),
            )
        };
        match t.sub.as_deref() {
            None => {}
            Some("scale") if t.kind.scale => {}
            Some("status")
                if t.kind.status
                    && (t.kind.plural != "rollouts" || self.rollout_status_subresource) => {}
            Some(_) => {
                return status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                )
            }
        }
        match verb(method, t, query) {
            "list" => {
                let selector = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "labelSelector")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|((p, ns, _), _)| {
                        p == t.kind.plural && (t.namespace.is_empty() || *ns == t.namespace)
                    })
                    .map(|(_, o)| o)
                    .filter(|o| {
                        let empty = serde_json::Map::new();
                        let labels = o
                            .pointer("/metadata/labels")
                            .and_then(Value::as_object)
                            .unwrap_or(&empty);
                        selector_matches(&selector, labels)
                    })
                    .cloned()
                    .collect();
                json_response(&json!({
                    "kind": format!("{}List", t.kind.kind),
                    "apiVersion": api_version(&t.kind),
                    "metadata": {"resourceVersion": self.resource_version.to_string()},
                    "items": items,
                }))
            }
            "get" => match self.objects.get(&Self::key(t)) {
                None => not_found(),
                Some(o) if t.sub.as_deref() == Some("scale") => json_response(&scale_of(o)),
                Some(o) => json_response(o),
            },
            "delete" => {
                let Some(o) = self.objects.get(&Self::key(t)) else {
                    return not_found();
                };
                let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let uid = o
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some(want) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
                    if want != uid {
                        return status_body(
                            409,
                            "Conflict",
                            format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}", t.kind.plural),
                        );
                    }
                }
                let o = self.objects.remove(&Self::key(t)).unwrap_or_default();
                json_response(&o)
            }
            "patch" => {
                let Some(current) = self.objects.get(&Self::key(t)).cloned() else {
                    return not_found();
                };
                let patch: Value = match serde_json::from_slice(body) {
                    Ok(p) => p,
                    Err(e) => {
                        return status_body(
                            400,
                            "BadRequest",
                            format!("the body of the request was in an unknown format: {e}"),
                        )
                    }
                };
                let mut obj = current.clone();
                let ct = ct.unwrap_or("");
                let applied = match ct {
                    "application/merge-patch+json" => {
                        json_patch::merge(&mut obj, &patch);
                        Ok(())
                    }
                    "application/strategic-merge-patch+json" => plain_strategic(&patch).map(|_| json_patch::merge(&mut obj, &patch)),
                    "application/json-patch+json" => serde_json::from_value::<json_patch::Patch>(patch.clone())
                        .map_err(|e| e.to_string())
                        .and_then(|p| json_patch::patch(&mut obj, &p).map_err(|e| e.to_string())),
                    other => {
                        return status_body(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"))
                    }
                };
                if let Err(e) = applied {
                    return status_body(
                        422,
                        "Invalid",
                        format!("{} \"{name}\" is invalid: {e}", t.kind.kind),
                    );
                }
                if ct != "application/json-patch+json" && stale(&patch, &current) {
                    return self.conflict(t);
                }
                self.store(t, current, obj)
            }
            "update" if t.sub.as_deref() == Some("scale") => {
                let Some(current) = self.objects.get(&Self::key(t)).cloned() else {
                    return not_found();
                };
                if ct != Some("application/json") {
                    return status_body(
                        415,
                        "UnsupportedMediaType",
                        format!("expected application/json, got {ct:?}"),
                    );
                }
                let scale: Value = match serde_json::from_slice(body) {
                    Ok(s) => s,
                    Err(e) => return status_body(400, "BadRequest", e.to_string()),
                };
                if scale["kind"] != "Scale" || scale["apiVersion"] != "autoscaling/v1" {
                    return status_body(
                        400,
                        "BadRequest",
                        "expected an autoscaling/v1 Scale".into(),
                    );
                }
                if stale(&scale, &current) {
                    return self.conflict(t);
                }
                let Some(replicas) = scale
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .filter(|r| *r >= 0)
                else {
                    return status_body(
                        422,
                        "Invalid",
                        "spec.replicas: must be a non-negative integer".into(),
                    );
                };
                let mut obj = current.clone();
                obj["spec"]["replicas"] = json!(replicas);
                let stored = self.store(t, current, obj);
                drop(stored);
                let o = self.objects.get(&Self::key(t)).cloned().unwrap_or_default();
                json_response(&scale_of(&o))
            }
            v => status_body(
                405,
                "MethodNotAllowed",
                format!("the double does not serve {v} on {}", t.kind.plural),
            ),
        }
    }

    fn conflict(&self, t: &Target) -> Response {
        status_body(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                t.kind.plural,
                t.name.as_deref().unwrap_or("")
            ),
        )
    }

    /// Stores a changed object as the API server would: identity fields kept,
    /// status or spec changes dropped by subresource, resourceVersion and
    /// generation bumped.
    fn store(&mut self, t: &Target, current: Value, mut obj: Value) -> Response {
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            obj["metadata"][field] = current["metadata"][field].clone();
        }
        obj["apiVersion"] = current["apiVersion"].clone();
        obj["kind"] = current["kind"].clone();
        let status_sub =
            t.kind.status && (t.kind.plural != "rollouts" || self.rollout_status_subresource);
        if t.sub.as_deref() == Some("status") {
            let status = obj["status"].clone();
            obj = current.clone();
            obj["status"] = status;
        } else if status_sub && t.sub.is_none() {
            obj["status"] = current["status"].clone();
        }
        if obj.get("status") == Some(&Value::Null) {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        if obj["spec"] != current["spec"] {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(Self::key(t), obj.clone());
        json_response(&obj)
    }
}

/// Whether a write carries a `metadata.resourceVersion` other than the stored
/// object's (optimistic concurrency: the API server answers 409).
fn stale(sent: &Value, current: &Value) -> bool {
    let rv = |v: &Value| {
        v.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    rv(sent).is_some_and(|sent| Some(sent) != rv(current))
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(o: &Value) -> Value {
    let selector = o
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"],
            "resourceVersion": o["metadata"]["resourceVersion"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn serve(
    state: Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(TOKEN) {
        return status_body(401, "Unauthorized", "Unauthorized".into());
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let mut st = state.lock();
    let Some(t) = parse_path(&path) else {
        return status_body(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    };
    let verb = verb(&method, &t, &query).to_owned();
    let resource = match &t.sub {
        Some(s) => format!("{}/{s}", t.kind.plural),
        None => t.kind.plural.to_owned(),
    };
    let mut record = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: ct.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verb: verb.clone(),
        resource: resource.clone(),
        status: 0,
    };
    let rule = (t.kind.group.to_owned(), resource.clone(), verb.clone());
    let response = if !st.rules.contains(&rule) {
        let scope = if t.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", t.namespace)
        };
        let (plural, sub) = resource
            .split_once('/')
            .map_or((resource.as_str(), None), |(p, s)| (p, Some(s)));
        status_body(
            403,
            "Forbidden",
            format!(
                "{plural}{} \"{}\" is forbidden: User \"system:serviceaccount:monitoring:closedloop\" cannot {verb} resource \"{plural}\"{} in API group \"{}\" {scope}",
                if t.kind.group.is_empty() { String::new() } else { format!(".{}", t.kind.group) },
                t.name.as_deref().unwrap_or(""),
                sub.map(|s| format!(" subresource \"{s}\"")).unwrap_or_default(),
                t.kind.group,
            ),
        )
    } else {
        st.used.insert(rule);
        let fault = st
            .faults
            .iter()
            .position(|f| f.method == method && path.ends_with(&f.path_suffix) && f.times > 0);
        match fault {
            Some(i) => {
                let f = &mut st.faults[i];
                f.times -= 1;
                let code = f.status;
                if f.times == 0 {
                    st.faults.remove(i);
                }
                status_body(code, "InternalError", format!("injected fault {code}"))
            }
            None => st.handle(&method, &t, &query, ct.as_deref(), &body),
        }
    };
    record.status = response.status().as_u16();
    st.requests.push(record);
    response
}

impl KubeDouble {
    /// Starts the double on a loopback port, on its own thread and runtime, with
    /// the actuators' RBAC table as its authorization rules.
    pub fn start() -> KubeDouble {
        let state = Arc::new(Mutex::new(State {
            rollout_status_subresource: true,
            rules: PERMISSIONS
                .iter()
                .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
                .collect(),
            ..Default::default()
        }));
        let shared = state.clone();
        let server = LocalServer::start(axum::Router::new().fallback(
            move |m: Method, u: Uri, h: HeaderMap, b: Bytes| serve(shared.clone(), m, u, h, b),
        ));
        let addr = server.addr;
        let dir = tempfile::tempdir().expect("a temp dir for the kubeconfig");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: closedloop\n  user:\n    token: {TOKEN}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: closedloop\n    namespace: default\n\
             current-context: double\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("writing the kubeconfig");
        KubeDouble { state, server, dir }
    }

    /// The kubeconfig file pointing at the double (server, bearer token, context).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The `actuators.kubernetes` config a service would use to reach the double.
    pub fn config(&self) -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: Some(self.kubeconfig()),
            context: None,
            in_cluster: false,
            request_timeout: PromDuration::from_secs(10),
        }
    }

    /// Stores an object (it needs `apiVersion`, `kind`, `metadata.name` and, for
    /// namespaced kinds, `metadata.namespace`); uid, resourceVersion, generation and
    /// creationTimestamp are filled in unless given. Returns what was stored.
    pub fn insert(&self, mut obj: Value) -> Value {
        let mut st = self.state.lock();
        let kind = *KINDS
            .iter()
            .find(|k| obj["kind"] == k.kind && obj["apiVersion"] == api_version(k))
            .unwrap_or_else(|| panic!("the double does not serve {}", obj["kind"]));
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("metadata.name")
            .to_owned();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            kind.namespaced,
            !ns.is_empty(),
            "metadata.namespace of {name}"
        );
        st.uid_seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", st.uid_seq);
        let rv = st.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.entry("uid").or_insert(json!(uid));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.entry("generation").or_insert(json!(1));
        meta.entry("creationTimestamp")
            .or_insert(json!("2024-01-01T00:00:00Z"));
        st.objects
            .insert((kind.plural.to_owned(), ns, name), obj.clone());
        obj
    }

    /// The stored object, if any (`plural` as in the API path: `deployments`).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .objects
            .get(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.lock().requests.clear();
    }

    /// Forces answers on matching requests (e.g. two 503s before the real one).
    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push_back(fault);
    }

    /// Serve rollouts without the `status` subresource (a CRD from before it).
    pub fn without_rollout_status_subresource(&self) {
        self.state.lock().rollout_status_subresource = false;
    }

    /// Replaces the authorization rules (group, resource, verb).
    pub fn set_rules(&self, rules: &[Permission]) {
        self.state.lock().rules = rules
            .iter()
            .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
            .collect();
    }

    /// The (group, resource, verb) rules requests have used so far.
    pub fn used_rules(&self) -> BTreeSet<(String, String, String)> {
        self.state.lock().used.clone()
    }
}

/// Objects shaped as the API server returns them, for seeding the double.
pub mod fixtures {
    use serde_json::{json, Value};

    fn template(app: &str, image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": app, "image": image}]},
        })
    }

    pub fn pod(ns: &str, name: &str, uid: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "web:1"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "web", "restartCount": 2, "ready": true, "image": "web:1", "imageID": "", "started": true}]},
        })
    }

    /// A Deployment at `revision` running `image`.
    pub fn deployment(ns: &str, name: &str, replicas: i32, image: &str, revision: u64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"deployment.kubernetes.io/revision": revision.to_string()}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": template(name, image)},
            "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1},
        })
    }

    pub fn statefulset(ns: &str, name: &str, replicas: i32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": template(name, "db:1")},
            "status": {"replicas": replicas},
        })
    }

    pub fn daemonset(ns: &str, name: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": template(name, "agent:1")},
        })
    }

    /// A ReplicaSet controlled by `owner` (a stored Deployment or Rollout) at
    /// `revision`, with the controller's hash label on its template.
    pub fn replicaset(owner: &Value, revision: u64, image: &str, hash: &str) -> Value {
        let app = owner["metadata"]["name"].as_str().unwrap_or("app");
        let (rev_key, hash_key) = if owner["kind"] == "Rollout" {
            ("rollout.argoproj.io/revision", "rollouts-pod-template-hash")
        } else {
            ("deployment.kubernetes.io/revision", "pod-template-hash")
        };
        let mut t = template(app, image);
        t["metadata"]["labels"][hash_key] = json!(hash);
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{app}-{hash}"),
                "namespace": owner["metadata"]["namespace"],
                "labels": {"app": app, hash_key: hash},
                "annotations": {rev_key: revision.to_string(), "team": format!("rev{revision}")},
                "ownerReferences": [{
                    "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                    "name": app, "uid": owner["metadata"]["uid"],
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": app, hash_key: hash}}, "template": t},
        })
    }

    pub fn configmap(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
    }

    pub fn node(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}, "status": {}})
    }

    /// An Argo Rollout at `revision` running `image`.
    pub fn rollout(ns: &str, name: &str, image: &str, revision: u64) -> Value {
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"rollout.argoproj.io/revision": revision.to_string()}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                     "template": template(name, image),
                     "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
            "status": {"phase": "Progressing", "currentPodHash": "new"},
        })
    }
}
