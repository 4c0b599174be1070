//! Discovery from series shaped as the exporters emit them (label sets taken from
//! each project's documentation and example output: Tempo's service-graph docs,
//! Istio's standard metrics, Linkerd's proxy-metrics reference, kube-state-metrics'
//! pod and replicaset metrics).

use super::*;
use crate::rca::topology::{ComponentKind, Topology};
use crate::storage::{LabelSet, StoreConfig};

const NOW: i64 = 1_700_000_000_000;

fn store_with(series: &[&[(&str, &str)]]) -> Store {
    let store = Store::new(StoreConfig::default());
    for (k, labels) in series.iter().enumerate() {
        let ls = LabelSet::from_pairs(labels.iter().copied());
        for i in 0..3 {
            store
                .append(&ls, NOW - 60_000 + i * 15_000, (k + 1) as f64 * i as f64)
                .unwrap();
        }
    }
    store
}

fn edges(t: &Topology) -> Vec<String> {
    let mut out: Vec<String> = t
        .edges()
        .iter()
        .map(|e| {
            format!(
                "{} -{}-> {}",
                t.component(e.from).id,
                e.kind.as_str(),
                t.component(e.to).id
            )
        })
        .collect();
    out.sort();
    out
}

fn run(store: &Store, f: fn(&Store, i64, i64, &mut TopologyBuilder) -> usize) -> Topology {
    let mut b = TopologyBuilder::new();
    f(store, NOW - 3_600_000, NOW, &mut b);
    b.build(1000, 1000, NOW)
}

#[test]
fn servicegraph_edges_from_tempo_and_the_otel_connector() {
    let store = store_with(&[
        // Tempo metrics-generator, remote-written: client, server, connection_type.
        &[
            ("__name__", "traces_service_graph_request_total"),
            ("client", "frontend"),
            ("server", "checkout"),
            ("connection_type", ""),
        ],
        &[
            ("__name__", "traces_service_graph_request_total"),
            ("client", "checkout"),
            ("server", "postgres"),
            ("connection_type", "database"),
        ],
        // A root span's uninstrumented caller.
        &[
            ("__name__", "traces_service_graph_request_total"),
            ("client", "user"),
            ("server", "frontend"),
            ("connection_type", "virtual_node"),
        ],
        // An external API seen only from the client side.
        &[
            ("__name__", "traces_service_graph_request_total"),
            ("client", "checkout"),
            ("server", "api.stripe.com"),
            ("connection_type", "virtual_node"),
        ],
        // The OpenTelemetry Collector's connector through its Prometheus exporter.
        &[
            ("__name__", "traces_service_graph_request_total"),
            ("client", "checkout"),
            ("server", "cart"),
            ("job", "otel-collector"),
            ("instance", "otel-collector:8889"),
        ],
        // The failed-requests counter alone adds nothing new.
        &[
            ("__name__", "traces_service_graph_request_failed_total"),
            ("client", "x"),
            ("server", "y"),
        ],
    ]);
    let t = run(&store, servicegraph);
    assert_eq!(
        edges(&t),
        vec![
            "service:checkout -calls-> service:api.stripe.com",
            "service:checkout -calls-> service:cart",
            "service:checkout -calls-> service:postgres",
            "service:frontend -calls-> service:checkout",
        ]
    );
    assert!(!t.contains(&ComponentId::service("user")));
    assert!(t.contains(&ComponentId::service("frontend")));
}

#[test]
fn istio_edges_between_workloads_and_services_they_serve() {
    let bookinfo = |reporter: &str, src: &str, dst: &str, svc: &str, code: &str| {
        vec![
            ("__name__", "istio_requests_total".to_string()),
            ("connection_security_policy", "mutual_tls".into()),
            ("destination_app", svc.into()),
            ("destination_canonical_service", svc.into()),
            (
                "destination_principal",
                format!("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{svc}"),
            ),
            (
                "destination_service",
                format!("{svc}.bookinfo.svc.cluster.local"),
            ),
            ("destination_service_name", svc.into()),
            ("destination_service_namespace", "bookinfo".into()),
            ("destination_version", "v1".into()),
            ("destination_workload", dst.into()),
            ("destination_workload_namespace", "bookinfo".into()),
            ("reporter", reporter.into()),
            ("request_protocol", "http".into()),
            ("response_code", code.into()),
            ("response_flags", "-".into()),
            ("source_app", "productpage".into()),
            ("source_workload", src.into()),
            (
                "source_workload_namespace",
                if src == "unknown" {
                    "unknown".into()
                } else {
                    "bookinfo".into()
                },
            ),
            ("namespace", "bookinfo".into()),
            ("pod", format!("{src}-5f9d8c7b6-abcde")),
        ]
    };
    let rows = [
        bookinfo("source", "productpage-v1", "reviews-v2", "reviews", "200"),
        bookinfo(
            "destination",
            "productpage-v1",
            "reviews-v2",
            "reviews",
            "200",
        ),
        bookinfo("destination", "reviews-v2", "ratings-v1", "ratings", "503"),
        // Traffic from outside the mesh: the source is `unknown`.
        bookinfo(
            "destination",
            "unknown",
            "productpage-v1",
            "productpage",
            "200",
        ),
    ];
    let owned: Vec<Vec<(&str, &str)>> = rows
        .iter()
        .map(|r| r.iter().map(|(k, v)| (*k, v.as_str())).collect())
        .collect();
    let refs: Vec<&[(&str, &str)]> = owned.iter().map(Vec::as_slice).collect();
    let mut refs = refs;
    let tcp: &[(&str, &str)] = &[
        ("__name__", "istio_tcp_connections_opened_total"),
        ("reporter", "source"),
        ("source_workload", "ratings-v1"),
        ("source_workload_namespace", "bookinfo"),
        ("destination_workload", "mongodb-v1"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_service_name", "mongodb"),
    ];
    refs.push(tcp);
    let store = store_with(&refs);
    let t = run(&store, istio);
    assert_eq!(
        edges(&t),
        vec![
            "service:mongodb -served_by-> workload:bookinfo/mongodb-v1",
            "service:productpage -served_by-> workload:bookinfo/productpage-v1",
            "service:ratings -served_by-> workload:bookinfo/ratings-v1",
            "service:reviews -served_by-> workload:bookinfo/reviews-v2",
            "workload:bookinfo/productpage-v1 -calls-> workload:bookinfo/reviews-v2",
            "workload:bookinfo/ratings-v1 -calls-> workload:bookinfo/mongodb-v1",
            "workload:bookinfo/reviews-v2 -calls-> workload:bookinfo/ratings-v1",
        ]
    );
    // A service and its workload are one unit: `reviews` calls `ratings`.
    let reviews = t.index_of(&ComponentId::service("reviews")).unwrap();
    let deps: Vec<String> = t
        .unit_dependencies(reviews)
        .into_iter()
        .map(|u| t.component(u).id.to_string())
        .collect();
    assert_eq!(deps, vec!["service:ratings"]);
}

#[test]
fn linkerd_outbound_edges_from_proxy_metrics() {
    let store = store_with(&[
        // As in Linkerd's proxy-metrics reference: outbound labels plus the
        // collector's pod, namespace and `linkerd.io/proxy-*` labels.
        &[
            ("__name__", "request_total"),
            ("authority", "emoji-svc.emojivoto.svc.cluster.local:8080"),
            ("direction", "outbound"),
            ("dst_control_plane_ns", "linkerd"),
            ("dst_deployment", "emoji"),
            ("dst_namespace", "emojivoto"),
            ("dst_pod", "emoji-69d8f9d4b-7xk2p"),
            ("dst_pod_template_hash", "69d8f9d4b"),
            ("dst_service", "emoji-svc"),
            ("dst_serviceaccount", "emoji"),
            ("tls", "true"),
            ("pod", "web-6c8d8f6d9c-qm5rt"),
            ("namespace", "emojivoto"),
            ("deployment", "web"),
            ("pod_template_hash", "6c8d8f6d9c"),
            ("instance", "10.1.3.93:4191"),
            ("job", "linkerd-proxy"),
        ],
        &[
            ("__name__", "response_total"),
            ("direction", "outbound"),
            ("dst_statefulset", "voting-db"),
            ("dst_namespace", "emojivoto"),
            ("classification", "success"),
            ("namespace", "emojivoto"),
            ("deployment", "voting"),
            ("pod", "voting-5f5b5c8b7-abcde"),
            ("job", "linkerd-proxy"),
        ],
        // Inbound traffic says nothing about dependencies.
        &[
            ("__name__", "request_total"),
            ("direction", "inbound"),
            ("namespace", "emojivoto"),
            ("deployment", "emoji"),
            ("tls", "true"),
        ],
        // Another exporter's `request_total` without Linkerd's labels is ignored.
        &[("__name__", "request_total"), ("job", "nginx")],
    ]);
    let t = run(&store, linkerd);
    assert_eq!(
        edges(&t),
        vec![
            "service:emoji-svc -served_by-> workload:emojivoto/emoji",
            "workload:emojivoto/voting -calls-> workload:emojivoto/voting-db",
            "workload:emojivoto/web -calls-> workload:emojivoto/emoji",
        ]
    );
}

#[test]
fn kubernetes_ownership_and_placement_from_kube_state_metrics() {
    let ksm = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("job", "kube-state-metrics"),
            ("instance", "10.0.0.3:8080"),
            ("container", "kube-state-metrics"),
        ];
        v.extend_from_slice(extra);
        v
    };
    let rows = [
        ksm(&[
            ("__name__", "kube_pod_owner"),
            ("namespace", "shop"),
            ("pod", "checkout-7d9f8b6c5-x2b4q"),
            ("uid", "0c6e9a1e-1111-4a55-9d0f-2b9c8d7e6f50"),
            ("owner_kind", "ReplicaSet"),
            ("owner_name", "checkout-7d9f8b6c5"),
            ("owner_is_controller", "true"),
        ]),
        ksm(&[
            ("__name__", "kube_replicaset_owner"),
            ("namespace", "shop"),
            ("replicaset", "checkout-7d9f8b6c5"),
            ("owner_kind", "Deployment"),
            ("owner_name", "checkout"),
            ("owner_is_controller", "true"),
        ]),
        ksm(&[
            ("__name__", "kube_pod_info"),
            ("namespace", "shop"),
            ("pod", "checkout-7d9f8b6c5-x2b4q"),
            ("uid", "0c6e9a1e-1111-4a55-9d0f-2b9c8d7e6f50"),
            ("host_ip", "10.0.1.17"),
            ("pod_ip", "10.244.2.31"),
            ("node", "worker-2"),
            ("created_by_kind", "ReplicaSet"),
            ("created_by_name", "checkout-7d9f8b6c5"),
            ("priority_class", ""),
            ("host_network", "false"),
        ]),
        ksm(&[
            ("__name__", "kube_pod_owner"),
            ("namespace", "shop"),
            ("pod", "postgres-0"),
            ("uid", "5d1f"),
            ("owner_kind", "StatefulSet"),
            ("owner_name", "postgres"),
            ("owner_is_controller", "true"),
        ]),
        ksm(&[
            ("__name__", "kube_pod_info"),
            ("namespace", "shop"),
            ("pod", "postgres-0"),
            ("node", "worker-1"),
            ("host_ip", "10.0.1.16"),
        ]),
        ksm(&[
            ("__name__", "kube_pod_owner"),
            ("namespace", "default"),
            ("pod", "debug-shell"),
            ("uid", "77"),
            ("owner_kind", "<none>"),
            ("owner_name", "<none>"),
            ("owner_is_controller", "<none>"),
        ]),
        ksm(&[
            ("__name__", "kube_node_info"),
            ("node", "worker-3"),
            ("kernel_version", "6.1.0-18-amd64"),
            ("os_image", "Debian GNU/Linux 12 (bookworm)"),
            ("container_runtime_version", "containerd://1.7.13"),
            ("kubelet_version", "v1.29.2"),
            ("internal_ip", "10.0.1.18"),
        ]),
    ];
    let refs: Vec<&[(&str, &str)]> = rows.iter().map(Vec::as_slice).collect();
    let store = store_with(&refs);
    let t = run(&store, kubernetes);
    assert_eq!(
        edges(&t),
        vec![
            "pod:shop/checkout-7d9f8b6c5-x2b4q -scheduled_on-> node:worker-2",
            "pod:shop/postgres-0 -scheduled_on-> node:worker-1",
            "workload:shop/checkout -runs-> pod:shop/checkout-7d9f8b6c5-x2b4q",
            "workload:shop/postgres -runs-> pod:shop/postgres-0",
        ]
    );
    let wl = t
        .index_of(&ComponentId::workload("shop", "checkout"))
        .unwrap();
    assert_eq!(t.component(wl).workload_kind.as_deref(), Some("Deployment"));
    assert!(t.contains(&ComponentId::pod("default", "debug-shell")));
    assert!(t.contains(&ComponentId::node("worker-3")));
    // The pod is part of its workload's unit; the node is a unit of its own.
    let pod = t
        .index_of(&ComponentId::pod("shop", "checkout-7d9f8b6c5-x2b4q"))
        .unwrap();
    assert_eq!(t.component(t.unit_of(pod)).id.kind, ComponentKind::Workload);
}

#[test]
fn discovery_skips_series_older_than_the_lookback_and_disabled_sources() {
    let store = store_with(&[&[
        ("__name__", "traces_service_graph_request_total"),
        ("client", "a"),
        ("server", "b"),
    ]]);
    let mut cfg = DiscoveryConfig::default();
    let (b, stats) = discover(&store, &cfg, NOW);
    assert_eq!(stats.servicegraph, 1);
    assert_eq!(b.build(10, 10, NOW).edges().len(), 1);
    // An hour later with a 30-minute lookback the edge is gone.
    cfg.lookback = crate::duration::PromDuration::from_secs(1800);
    let (b, _) = discover(&store, &cfg, NOW + 3_600_000);
    assert!(b.is_empty());
    cfg.lookback = crate::duration::PromDuration::from_secs(3600);
    cfg.servicegraph = false;
    let (b, stats) = discover(&store, &cfg, NOW);
    assert!(b.is_empty());
    assert_eq!(stats, DiscoveryStats::default());
}

#[test]
fn configured_topology_merges_with_discovered_edges() {
    let cfg: TopologyConfig = serde_yaml::from_str(
        "services:\n  - name: checkout\n    match: {job: checkout-api}\n    depends_on: [payments]\n    owners: [team-shop]\n    workloads: [shop/checkout-v2]\n",
    )
    .unwrap();
    let mut b = configured(&cfg);
    let store = store_with(&[&[
        ("__name__", "traces_service_graph_request_total"),
        ("client", "frontend"),
        ("server", "checkout"),
    ]]);
    let (found, _) = discover(&store, &DiscoveryConfig::default(), NOW);
    b.merge(&found);
    b.link_services_by_name();
    let t = b.build(100, 100, NOW);
    assert_eq!(
        edges(&t),
        vec![
            "service:checkout -calls-> service:payments",
            "service:checkout -served_by-> workload:shop/checkout-v2",
            "service:frontend -calls-> service:checkout",
        ]
    );
    let c = t.component(t.index_of(&ComponentId::service("checkout")).unwrap());
    assert_eq!(c.owners, vec!["team-shop"]);
    assert!(c.sources.contains(Source::Config) && c.sources.contains(Source::ServiceGraph));
    assert_eq!(c.selector["job"], "checkout-api");
}
