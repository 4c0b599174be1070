//! deploy/kubernetes/: every manifest parses as its Kubernetes type (k8s-openapi; a
//! round trip through the type must give the same document back, so a misspelt
//! field is caught rather than ignored), and the files agree with each other:
//! ConfigMaps, Secrets and ServiceAccounts referenced exist, mounts name declared
//! volumes, Services and PodDisruptionBudgets select pod templates, probes and
//! target ports name container ports, the embedded closedloop configuration and rule
//! files load with closedloop's own loaders, and Prometheus remote-writes to the port
//! closedloop listens on. prometheus-operator resources (CRDs, not in k8s-openapi)
//! are checked field by field: their containers and volumes as k8s-openapi types,
//! their rule groups with closedloop's rule loader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of every manifest, as (file, JSON value).
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests missing in {}", dir().display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            if v.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(v).unwrap();
            out.push((name.clone(), json));
        }
    }
    out
}

/// Checks that everything in `orig` is in `back` unchanged (the typed round trip may
/// add what the type always writes, such as a claim template's `apiVersion`, and
/// drops empty objects such as `emptyDir: {}`).
fn kept(what: &str, path: &str, orig: &Value, back: &Value) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                match b.get(k) {
                    Some(bv) => kept(what, &format!("{path}.{k}"), v, bv),
                    None if matches!(v, Value::Object(m) if m.is_empty()) || v.is_null() => {}
                    None => panic!("{what}: {path}.{k} is not a field of its type (misspelt?)"),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            assert_eq!(o.len(), b.len(), "{what}: {path}");
            for (i, (o, b)) in o.iter().zip(b).enumerate() {
                kept(what, &format!("{path}[{i}]"), o, b);
            }
        }
        (o, b) => assert_eq!(o, b, "{what}: {path} changed in the typed round trip"),
    }
}

/// Parses `v` as `T` and checks nothing was dropped on the way.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    kept(what, "", v, &back);
    t
}

fn name_of(v: &Value) -> String {
    format!(
        "{}/{}/{}",
        v["kind"].as_str().unwrap_or("?"),
        v["metadata"]["namespace"].as_str().unwrap_or(""),
        v["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// One pod spec with where it came from, for the cross-file checks.
struct Pod {
    what: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
    service_account: Option<String>,
}

#[test]
fn manifests_parse_as_their_types_and_agree() {
    let docs = documents();
    let mut seen = BTreeSet::new();
    let mut config_maps: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    let mut accounts = BTreeSet::new();
    let mut pods: Vec<Pod> = Vec::new();
    let mut services: Vec<(String, Service)> = Vec::new();
    let mut budgets: Vec<(String, PodDisruptionBudget)> = Vec::new();
    let mut rule_texts: Vec<(String, String)> = Vec::new();
    let mut remote_write_ports: Vec<(String, u16)> = Vec::new();
    let mut bound = Vec::new();
    for (file, v) in &docs {
        let what = format!("{file}: {}", name_of(v));
        assert!(seen.insert(name_of(v)), "{what} is declared twice");
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let pod = |what: &str, t: &PodTemplateSpec| {
            let spec: &PodSpec = t.spec.as_ref().unwrap();
            Pod {
                what: what.to_string(),
                namespace: ns.clone(),
                labels: t
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                containers: spec.containers.clone(),
                volumes: spec.volumes.clone().unwrap_or_default(),
                service_account: spec.service_account_name.clone(),
            }
        };
        match (
            v["apiVersion"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
        ) {
            ("v1", "ConfigMap") => {
                let cm: ConfigMap = typed(&what, v);
                let data: BTreeMap<String, String> =
                    cm.data.unwrap_or_default().into_iter().collect();
                config_maps.insert((ns.clone(), cm.metadata.name.unwrap()), data);
            }
            ("v1", "ServiceAccount") => {
                let sa: ServiceAccount = typed(&what, v);
                accounts.insert((ns.clone(), sa.metadata.name.unwrap()));
            }
            ("v1", "Service") => services.push((what.clone(), typed(&what, v))),
            ("apps/v1", "Deployment") => {
                let d: Deployment = typed(&what, v);
                let spec = d.spec.unwrap();
                let p = pod(&what, &spec.template);
                let sel: BTreeMap<String, String> = spec
                    .selector
                    .match_labels
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                assert!(
                    sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)),
                    "{what}: selector does not match its template"
                );
                pods.push(p);
            }
            ("apps/v1", "StatefulSet") => {
                let s: StatefulSet = typed(&what, v);
                let spec = s.spec.unwrap();
                let mut p = pod(&what, &spec.template);
                // Claim templates become volumes of the pod.
                for c in spec.volume_claim_templates.unwrap_or_default() {
                    p.volumes.push(Volume {
                        name: c.metadata.name.unwrap(),
                        ..Default::default()
                    });
                }
                pods.push(p);
            }
            ("policy/v1", "PodDisruptionBudget") => budgets.push((what.clone(), typed(&what, v))),
            ("rbac.authorization.k8s.io/v1", "Role") => {
                let _: Role = typed(&what, v);
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                let b: RoleBinding = typed(&what, v);
                bound.extend(
                    b.subjects
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| (what.clone(), s)),
                );
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                let _: ClusterRole = typed(&what, v);
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                let b: ClusterRoleBinding = typed(&what, v);
                bound.extend(
                    b.subjects
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| (what.clone(), s)),
                );
            }
            ("monitoring.coreos.com/v1", "Prometheus") => {
                let spec = &v["spec"];
                let containers: Vec<Container> = spec["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| typed(&format!("{what}: container"), c))
                    .collect();
                let mut volumes: Vec<Volume> = spec["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| typed(&format!("{what}: volume"), c))
                    .collect();
                // The operator adds the rule-file volume of this Prometheus.
                let name = v["metadata"]["name"].as_str().unwrap();
                volumes.push(Volume {
                    name: format!("prometheus-{name}-rulefiles-0"),
                    ..Default::default()
                });
                for rw in spec["remoteWrite"].as_array().unwrap() {
                    let url = rw["url"].as_str().unwrap();
                    remote_write_ports.push((what.clone(), port_of(url)));
                }
                pods.push(Pod {
                    what: what.clone(),
                    namespace: ns.clone(),
                    labels: BTreeMap::new(),
                    containers,
                    volumes,
                    service_account: spec["serviceAccountName"].as_str().map(str::to_string),
                });
            }
            ("monitoring.coreos.com/v1", "PrometheusRule") => {
                let groups =
                    serde_yaml::to_string(&serde_json::json!({"groups": v["spec"]["groups"]}))
                        .unwrap();
                rule_texts.push((what.clone(), groups));
            }
            (api, kind) => panic!("{what}: unexpected {api} {kind}"),
        }
    }

    // RBAC binds ServiceAccounts that exist.
    for (what, s) in &bound {
        if s.kind == "ServiceAccount" {
            let ns = s.namespace.clone().unwrap_or_default();
            assert!(
                accounts.contains(&(ns.clone(), s.name.clone())),
                "{what}: binds missing ServiceAccount {ns}/{}",
                s.name
            );
        }
    }

    // closedloop's configuration files load, and their rule files too.
    let mut closedloop_ports = BTreeSet::new();
    let mut rule_globs = Vec::new();
    for ((ns, name), data) in &config_maps {
        if let Some(cfg) = data.get("closedloop.yml") {
            let c = closedloop::config::Config::parse(cfg, Path::new(&format!("{ns}/{name}")))
                .unwrap_or_else(|e| panic!("configmap {ns}/{name}: {e}"));
            closedloop_ports.insert(port_of(&format!("http://{}", c.listen_address)));
            rule_globs.extend(c.rule_files.clone());
        }
        if let Some(p) = data.get("prometheus.yml") {
            let v: serde_yaml::Value = serde_yaml::from_str(p).unwrap();
            for rw in v["remote_write"].as_sequence().into_iter().flatten() {
                remote_write_ports.push((
                    format!("configmap {ns}/{name}"),
                    port_of(rw["url"].as_str().unwrap()),
                ));
            }
        }
        for (key, text) in data {
            if key.ends_with(".yml") && name.contains("rules") {
                rule_texts.push((format!("configmap {ns}/{name} {key}"), text.clone()));
            }
        }
    }
    assert_eq!(
        closedloop_ports.len(),
        1,
        "closedloop listens on one port everywhere: {closedloop_ports:?}"
    );
    let cl_port = *closedloop_ports.iter().next().unwrap();
    assert!(!remote_write_ports.is_empty());
    for (what, port) in &remote_write_ports {
        assert_eq!(
            *port, cl_port,
            "{what}: remote_write does not reach closedloop's port"
        );
    }
    assert!(rule_texts.len() >= 2);
    for (what, text) in &rule_texts {
        closedloop::rules::file::parse_file(text, Path::new(what), Default::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    // Pods: mounts, referenced objects, ports, probes.
    let mut closedloop_containers = 0;
    for p in &pods {
        let volumes: BTreeSet<&str> = p.volumes.iter().map(|v| v.name.as_str()).collect();
        if let Some(sa) = &p.service_account {
            if p.containers.iter().any(|c| c.name == "closedloop") {
                assert_eq!(
                    sa, "closedloop",
                    "{}: closedloop runs as the closedloop ServiceAccount",
                    p.what
                );
            }
            assert!(
                accounts.contains(&(p.namespace.clone(), sa.clone())),
                "{}: no ServiceAccount {sa}",
                p.what
            );
        }
        for v in &p.volumes {
            if let Some(cm) = &v.config_map {
                assert!(
                    config_maps.contains_key(&(p.namespace.clone(), cm.name.clone())),
                    "{}: volume {} names ConfigMap {} which no manifest declares",
                    p.what,
                    v.name,
                    cm.name
                );
            }
        }
        for c in &p.containers {
            let ports: BTreeMap<String, i32> = c
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
                .collect();
            for m in c.volume_mounts.iter().flatten() {
                assert!(
                    volumes.contains(m.name.as_str()),
                    "{}: {} mounts undeclared volume {}",
                    p.what,
                    c.name,
                    m.name
                );
            }
            if c.name != "closedloop" {
                continue;
            }
            closedloop_containers += 1;
            assert_eq!(
                ports.values().copied().collect::<Vec<_>>(),
                vec![cl_port as i32],
                "{}: container port",
                p.what
            );
            for (probe, path) in [
                (&c.readiness_probe, "/-/ready"),
                (&c.liveness_probe, "/-/healthy"),
            ] {
                let get = probe
                    .as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .unwrap_or_else(|| panic!("{}: probe missing", p.what));
                assert_eq!(get.path.as_deref(), Some(path), "{}", p.what);
                let port = match &get.port {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
                        ports[n]
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => *i,
                };
                assert_eq!(port, cl_port as i32, "{}: probe port", p.what);
            }
            let res = c
                .resources
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no resources", p.what));
            for key in ["cpu", "memory"] {
                assert!(
                    res.requests.as_ref().is_some_and(|r| r.contains_key(key)),
                    "{}: no {key} request",
                    p.what
                );
            }
            assert!(
                res.limits
                    .as_ref()
                    .is_some_and(|l| l.contains_key("memory")),
                "{}: no memory limit",
                p.what
            );
            // The config file argument is in a mounted ConfigMap with closedloop.yml.
            let args = c.args.clone().unwrap_or_default();
            let cfg = args
                .windows(2)
                .find(|w| w[0] == "--config")
                .map(|w| w[1].clone())
                .expect("--config");
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| cfg.starts_with(&format!("{}/", m.mount_path)))
                .unwrap_or_else(|| panic!("{}: {cfg} is not on a mount", p.what));
            let vol = p.volumes.iter().find(|v| v.name == mount.name).unwrap();
            let cm = vol
                .config_map
                .as_ref()
                .expect("the config comes from a ConfigMap");
            let data = &config_maps[&(p.namespace.clone(), cm.name.clone())];
            assert!(
                data.contains_key(cfg.rsplit('/').next().unwrap()),
                "{}: {cfg} not in {}",
                p.what,
                cm.name
            );
            // Every rule_files glob lies under a mount.
            let c_cfg =
                closedloop::config::Config::parse(&data["closedloop.yml"], Path::new("cfg"))
                    .unwrap();
            for g in &c_cfg.rule_files {
                assert!(
                    c.volume_mounts
                        .iter()
                        .flatten()
                        .any(|m| g.starts_with(&format!("{}/", m.mount_path))),
                    "{}: rule_files {g} is not under a mount",
                    p.what
                );
            }
        }
    }
    assert!(
        closedloop_containers >= 3,
        "standalone, sidecar and operator forms"
    );
    assert!(!rule_globs.is_empty());

    // Services and budgets select pods, and target ports exist.
    for (what, s) in &services {
        let spec = s.spec.as_ref().unwrap();
        let sel: BTreeMap<String, String> = spec
            .selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let pod = pods
            .iter()
            .find(|p| {
                p.namespace == ns
                    && !sel.is_empty()
                    && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("{what}: selects no pod template"));
        for port in spec.ports.iter().flatten() {
            if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n)) =
                &port.target_port
            {
                assert!(
                    pod.containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .any(|p| p.name.as_deref() == Some(n)),
                    "{what}: target port {n} is no container port of {}",
                    pod.what
                );
            }
        }
    }
    assert!(budgets.len() >= 2);
    for (what, b) in &budgets {
        let spec = b.spec.as_ref().unwrap();
        let sel: BTreeMap<String, String> = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        assert!(
            pods.iter().any(|p| p.namespace == ns
                && !sel.is_empty()
                && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v))),
            "{what}: selects no pod template"
        );
    }
}

/// The port of an `http://host:port/...` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap();
    host_port
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no port in {url}"))
}
