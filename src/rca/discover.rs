//! Topology discovery from metrics already in the store, one function per source,
//! plus the configured topology. Each source reads only the series it knows by name
//! and label, with a sample in the lookback window, and adds what they say to a
//! [`TopologyBuilder`]:
//!
//! - **servicegraph** (OpenTelemetry Collector `servicegraph` connector, Grafana
//!   Tempo metrics-generator): `traces_service_graph_request_total{client, server,
//!   connection_type}` — `client` calls `server`. Tempo's uninstrumented root
//!   (`client="user"` with `connection_type="virtual_node"`) is not a component;
//!   other virtual nodes (an external API, a database named by `db.name`) are.
//! - **istio**: `istio_requests_total` / `istio_tcp_connections_opened_total` with
//!   `source_workload{,_namespace}` → `destination_workload{,_namespace}`, and
//!   `destination_service_name` served by the destination workload; `unknown`
//!   values are skipped.
//! - **linkerd**: the proxies' `request_total` / `response_total` with
//!   `direction="outbound"`: the pod's `deployment|statefulset|daemonset` and
//!   `namespace` → `dst_deployment|dst_statefulset|dst_daemonset` and
//!   `dst_namespace`, and `dst_service` served by the destination workload.
//! - **kubernetes** (kube-state-metrics): `kube_pod_owner` and
//!   `kube_replicaset_owner` (pod → ReplicaSet → Deployment) give `workload runs
//!   pod`; `kube_pod_info{node}` gives `pod scheduled_on node`; `kube_node_info`
//!   adds nodes without pods.
//!
//! Must never: hold a store lock while building (each source copies the few labels
//! it needs inside [`Store::visit`] and works on them afterwards).

use std::collections::HashMap;

use super::config::{DiscoveryConfig, TopologyConfig};
use super::topology::{ComponentId, EdgeKind, Source, TopologyBuilder};
use crate::storage::{LabelSet, Matcher, Store};

/// The label values of every series of `metric` (matching `extra`) with a sample in
/// `[mint, maxt]`.
fn series_of(
    store: &Store,
    metric: &str,
    extra: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Vec<LabelSet> {
    let mut matchers = vec![Matcher::equal(crate::storage::METRIC_NAME, metric)];
    matchers.extend(extra.iter().cloned());
    store.series(&matchers, mint, maxt)
}

fn value<'a>(l: &'a LabelSet, name: &str) -> Option<&'a str> {
    l.get(name).filter(|v| !v.is_empty() && *v != "unknown")
}

/// Service-graph edges: `client` calls `server`. Returns the number of series read.
pub fn servicegraph(store: &Store, mint: i64, maxt: i64, b: &mut TopologyBuilder) -> usize {
    let series = series_of(store, "traces_service_graph_request_total", &[], mint, maxt);
    for l in &series {
        let (Some(client), Some(server)) = (value(l, "client"), value(l, "server")) else {
            continue;
        };
        if client == "user" && l.get("connection_type") == Some("virtual_node") {
            // Tempo's name for an uninstrumented caller of a root span.
            b.component(ComponentId::service(server), Source::ServiceGraph);
            continue;
        }
        b.edge(
            ComponentId::service(client),
            ComponentId::service(server),
            EdgeKind::Calls,
            Source::ServiceGraph,
        );
    }
    series.len()
}

/// Istio edges between workloads, and services served by workloads.
pub fn istio(store: &Store, mint: i64, maxt: i64, b: &mut TopologyBuilder) -> usize {
    let mut n = 0;
    for metric in ["istio_requests_total", "istio_tcp_connections_opened_total"] {
        let series = series_of(store, metric, &[], mint, maxt);
        n += series.len();
        for l in &series {
            let dst = match (
                value(l, "destination_workload_namespace"),
                value(l, "destination_workload"),
            ) {
                (Some(ns), Some(w)) => Some(ComponentId::workload(ns, w)),
                _ => None,
            };
            if let (Some(dst), Some(svc)) = (&dst, value(l, "destination_service_name")) {
                b.edge(
                    ComponentId::service(svc),
                    dst.clone(),
                    EdgeKind::ServedBy,
                    Source::Istio,
                );
            }
            let src = match (
                value(l, "source_workload_namespace"),
                value(l, "source_workload"),
            ) {
                (Some(ns), Some(w)) => Some(ComponentId::workload(ns, w)),
                _ => None,
            };
            if let (Some(src), Some(dst)) = (src, dst) {
                b.edge(src, dst, EdgeKind::Calls, Source::Istio);
            }
        }
    }
    n
}

const WORKLOAD_LABELS: [&str; 3] = ["deployment", "statefulset", "daemonset"];

/// Linkerd outbound edges between workloads.
pub fn linkerd(store: &Store, mint: i64, maxt: i64, b: &mut TopologyBuilder) -> usize {
    let outbound = [Matcher::equal("direction", "outbound")];
    let mut n = 0;
    for metric in ["request_total", "response_total"] {
        let series = series_of(store, metric, &outbound, mint, maxt);
        n += series.len();
        for l in &series {
            let src = value(l, "namespace").and_then(|ns| {
                WORKLOAD_LABELS
                    .iter()
                    .find_map(|k| value(l, k))
                    .map(|w| ComponentId::workload(ns, w))
            });
            let dst = value(l, "dst_namespace").and_then(|ns| {
                WORKLOAD_LABELS
                    .iter()
                    .find_map(|k| value(l, &format!("dst_{k}")))
                    .map(|w| ComponentId::workload(ns, w))
            });
            let Some(dst) = dst else { continue };
            if let Some(svc) = value(l, "dst_service") {
                b.edge(
                    ComponentId::service(svc),
                    dst.clone(),
                    EdgeKind::ServedBy,
                    Source::Linkerd,
                );
            }
            if let Some(src) = src {
                b.edge(src, dst, EdgeKind::Calls, Source::Linkerd);
            }
        }
    }
    n
}

/// Kubernetes ownership and placement from kube-state-metrics.
pub fn kubernetes(store: &Store, mint: i64, maxt: i64, b: &mut TopologyBuilder) -> usize {
    // ReplicaSet → its owning Deployment (or whatever owns it).
    let rs = series_of(store, "kube_replicaset_owner", &[], mint, maxt);
    let mut rs_owner: HashMap<(String, String), (String, String)> = HashMap::new();
    for l in &rs {
        if let (Some(ns), Some(name), Some(kind), Some(owner)) = (
            value(l, "namespace"),
            value(l, "replicaset"),
            value(l, "owner_kind"),
            value(l, "owner_name"),
        ) {
            if kind != "<none>" {
                rs_owner.insert((ns.into(), name.into()), (kind.into(), owner.into()));
            }
        }
    }
    let owners = series_of(store, "kube_pod_owner", &[], mint, maxt);
    for l in &owners {
        let (Some(ns), Some(pod)) = (value(l, "namespace"), value(l, "pod")) else {
            continue;
        };
        let pod_id = ComponentId::pod(ns, pod);
        let (Some(kind), Some(owner)) = (value(l, "owner_kind"), value(l, "owner_name")) else {
            b.component(pod_id, Source::Kubernetes);
            continue;
        };
        if kind == "<none>" {
            b.component(pod_id, Source::Kubernetes);
            continue;
        }
        let (kind, owner) = if kind == "ReplicaSet" {
            match rs_owner.get(&(ns.to_string(), owner.to_string())) {
                Some((k, o)) => (k.as_str(), o.as_str()),
                None => (kind, owner),
            }
        } else {
            (kind, owner)
        };
        let w = ComponentId::workload(ns, owner);
        b.edge(w.clone(), pod_id, EdgeKind::Runs, Source::Kubernetes);
        if let Some(i) = b.index_of(&w) {
            let c = b.component_mut(i);
            if c.workload_kind.is_none() {
                c.workload_kind = Some(kind.to_string());
            }
        }
    }
    let info = series_of(store, "kube_pod_info", &[], mint, maxt);
    for l in &info {
        let (Some(ns), Some(pod)) = (value(l, "namespace"), value(l, "pod")) else {
            continue;
        };
        match value(l, "node") {
            Some(node) => b.edge(
                ComponentId::pod(ns, pod),
                ComponentId::node(node),
                EdgeKind::ScheduledOn,
                Source::Kubernetes,
            ),
            None => {
                b.component(ComponentId::pod(ns, pod), Source::Kubernetes);
            }
        }
    }
    let nodes = series_of(store, "kube_node_info", &[], mint, maxt);
    for l in &nodes {
        if let Some(node) = value(l, "node") {
            b.component(ComponentId::node(node), Source::Kubernetes);
        }
    }
    rs.len() + owners.len() + info.len() + nodes.len()
}

/// Series read per source in one discovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    pub servicegraph: usize,
    pub istio: usize,
    pub linkerd: usize,
    pub kubernetes: usize,
}

/// Runs every enabled source over `[now − lookback, now]`.
pub fn discover(
    store: &Store,
    cfg: &DiscoveryConfig,
    now_ms: i64,
) -> (TopologyBuilder, DiscoveryStats) {
    let (mint, maxt) = (now_ms - cfg.lookback.as_millis(), now_ms);
    let mut b = TopologyBuilder::new();
    let mut stats = DiscoveryStats::default();
    if cfg.servicegraph {
        stats.servicegraph = servicegraph(store, mint, maxt, &mut b);
    }
    if cfg.istio {
        stats.istio = istio(store, mint, maxt, &mut b);
    }
    if cfg.linkerd {
        stats.linkerd = linkerd(store, mint, maxt, &mut b);
    }
    if cfg.kubernetes {
        stats.kubernetes = kubernetes(store, mint, maxt, &mut b);
    }
    (b, stats)
}

/// The configured topology as a builder (services, `depends_on`, workloads, owners,
/// selectors). It goes first when merged, so the size limits never drop it.
pub fn configured(cfg: &TopologyConfig) -> TopologyBuilder {
    let mut b = TopologyBuilder::new();
    for s in &cfg.services {
        let i = b.component(ComponentId::service(&s.name), Source::Config);
        let c = b.component_mut(i);
        c.owners = s.owners.clone();
        c.selector = s.selector.clone();
    }
    for s in &cfg.services {
        for d in &s.depends_on {
            b.edge(
                ComponentId::service(&s.name),
                ComponentId::service(d),
                EdgeKind::Calls,
                Source::Config,
            );
        }
        for w in &s.workloads {
            if let Some((ns, name)) = w.split_once('/') {
                b.edge(
                    ComponentId::service(&s.name),
                    ComponentId::workload(ns, name),
                    EdgeKind::ServedBy,
                    Source::Config,
                );
            }
        }
    }
    b
}

#[cfg(test)]
mod tests;
