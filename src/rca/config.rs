//! The `rca:` configuration section: the configured topology, which metric sources
//! discovery reads, how series are told apart by component, how signals group into
//! incidents and the limits of one analysis. Every key is optional; unknown keys are
//! errors; [`RcaConfig::validate`] names the key path of any bad value.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::duration::PromDuration;

/// `rca:` — root-cause analysis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RcaConfig {
    /// Run root-cause analysis: build the topology, group signals into incidents,
    /// rank causes, annotate alerts. Off turns `/api/v1/topology` and
    /// `/api/v1/incidents` into 503s.
    pub enabled: bool,
    /// Services and dependencies written by hand; merged with what discovery finds.
    pub topology: TopologyConfig,
    /// Topology discovery from metrics already in the store.
    pub discovery: DiscoveryConfig,
    /// How a series' labels name its service.
    pub identity: IdentityConfig,
    /// How anomaly events and alerts group into incidents.
    pub incidents: IncidentsConfig,
    /// One analysis: candidates, windows, limits.
    pub analysis: AnalysisConfig,
}

impl Default for RcaConfig {
    fn default() -> Self {
        RcaConfig {
            enabled: true,
            topology: TopologyConfig::default(),
            discovery: DiscoveryConfig::default(),
            identity: IdentityConfig::default(),
            incidents: IncidentsConfig::default(),
            analysis: AnalysisConfig::default(),
        }
    }
}

/// `rca.topology:` — the hand-written part of the topology.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Services, each with its dependencies.
    pub services: Vec<ServiceConfig>,
}

/// One configured service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name (as callers and traces name it).
    pub name: String,
    /// Labels identifying the service's series, all of which must match (e.g.
    /// `{job: payments-api}`). Without it, series whose `identity.service_labels`
    /// name the service belong to it.
    #[serde(default, rename = "match")]
    pub selector: BTreeMap<String, String>,
    /// Services this one calls (it depends on them).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Who owns it (teams, people); shown with the ranked cause.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Workloads serving it, as `namespace/name`, when their names differ from the
    /// service's.
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// `rca.discovery:` — which metric sources build the topology, and how often.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// How often the topology is rebuilt from the store.
    pub refresh_interval: PromDuration,
    /// Series with a sample this recent count; older edges drop out.
    pub lookback: PromDuration,
    /// `traces_service_graph_request_total{client, server}` (OpenTelemetry
    /// Collector servicegraph connector, Grafana Tempo metrics-generator).
    pub servicegraph: bool,
    /// `istio_requests_total` and `istio_tcp_connections_opened_total`.
    pub istio: bool,
    /// Linkerd proxies' `request_total{direction="outbound"}`.
    pub linkerd: bool,
    /// kube-state-metrics: `kube_pod_owner`, `kube_replicaset_owner`,
    /// `kube_pod_info{node}`, `kube_node_info`.
    pub kubernetes: bool,
    /// Most components kept (configured ones first).
    pub max_components: usize,
    /// Most edges kept.
    pub max_edges: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            refresh_interval: PromDuration::from_secs(60),
            lookback: PromDuration::from_secs(3600),
            servicegraph: true,
            istio: true,
            linkerd: true,
            kubernetes: true,
            max_components: 100_000,
            max_edges: 500_000,
        }
    }
}

/// `rca.identity:` — how a series or alert is attributed to a component.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Labels naming a service, tried in order (after configured `match`
    /// selectors and the `namespace`+`pod` / workload labels).
    pub service_labels: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            service_labels: vec![
                "service".into(),
                "service_name".into(),
                "app".into(),
                "job".into(),
            ],
        }
    }
}

/// `rca.incidents:` — grouping anomaly events and alerts into incidents.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// A signal joins an open incident updated no longer ago than this…
    pub window: PromDuration,
    /// …if its component is within this many hops of one already in it (any
    /// direction). With an empty topology, time alone groups.
    pub join_hops: u32,
    /// Incidents without a new signal for this long are over.
    pub resolve_after: PromDuration,
    /// An incident this old takes no new signals (they open a new incident), so a
    /// steady trickle of noise cannot keep one incident open for ever and hide a
    /// new fault behind an old start time.
    pub max_duration: PromDuration,
    /// Most incidents kept (the oldest is dropped first).
    pub max_incidents: usize,
    /// Most components recorded per incident.
    pub max_components: usize,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            window: PromDuration::from_secs(300),
            join_hops: 3,
            resolve_after: PromDuration::from_secs(900),
            max_duration: PromDuration::from_secs(3600),
            max_incidents: 1000,
            max_components: 200,
        }
    }
}

/// `rca.analysis:` — one analysis of one incident.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Candidates are the incident's components plus their dependencies up to this
    /// many hops away.
    pub hops: u32,
    /// History before the incident that defines "normal" for each signal.
    pub baseline: PromDuration,
    /// How long before the incident's first signal a cause may have started
    /// (the start of the window searched for onsets).
    pub lead: PromDuration,
    /// How far after the incident's first signal the analysis looks (at most up to
    /// now); keep it at least `incidents.max_duration`.
    pub horizon: PromDuration,
    /// Grid step signals are aligned to (about the scrape interval).
    pub step: PromDuration,
    /// How often incidents that changed are analysed again in the background.
    pub interval: PromDuration,
    /// Most candidate components per analysis.
    pub max_candidates: usize,
    /// Most series read per component.
    pub max_series_per_component: usize,
    /// Ranked causes kept in a report.
    pub max_causes: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            hops: 3,
            baseline: PromDuration::from_secs(3600),
            lead: PromDuration::from_secs(600),
            horizon: PromDuration::from_secs(3600),
            step: PromDuration::from_secs(15),
            interval: PromDuration::from_secs(5),
            max_candidates: 200,
            max_series_per_component: 200,
            max_causes: 5,
        }
    }
}

fn positive(key: &str, d: PromDuration) -> Result<(), (String, String)> {
    if d.as_millis() <= 0 {
        return Err((key.into(), "must be positive".into()));
    }
    Ok(())
}

fn at_least(key: &str, v: usize, min: usize) -> Result<(), (String, String)> {
    if v < min {
        return Err((key.into(), format!("must be at least {min}")));
    }
    Ok(())
}

impl RcaConfig {
    /// Checks values the schema alone cannot; errors name the key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.topology.services.iter().enumerate() {
            let key = format!("rca.topology.services[{i}]");
            if s.name.trim().is_empty() {
                return Err((format!("{key}.name"), "must not be empty".into()));
            }
            if !names.insert(s.name.as_str()) {
                return Err((
                    format!("{key}.name"),
                    format!("service {:?} is listed twice", s.name),
                ));
            }
            for k in s.selector.keys() {
                if !crate::storage::is_valid_label_name(k) {
                    return Err((format!("{key}.match.{k}"), "invalid label name".into()));
                }
            }
            for (j, d) in s.depends_on.iter().enumerate() {
                if d.trim().is_empty() || d == &s.name {
                    return Err((
                        format!("{key}.depends_on[{j}]"),
                        "must name another service".into(),
                    ));
                }
            }
            for (j, w) in s.workloads.iter().enumerate() {
                match w.split_once('/') {
                    Some((ns, name))
                        if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {}
                    _ => {
                        return Err((
                            format!("{key}.workloads[{j}]"),
                            format!("{w:?} must be namespace/name"),
                        ))
                    }
                }
            }
        }
        let d = &self.discovery;
        positive("rca.discovery.refresh_interval", d.refresh_interval)?;
        positive("rca.discovery.lookback", d.lookback)?;
        at_least("rca.discovery.max_components", d.max_components, 1)?;
        at_least("rca.discovery.max_edges", d.max_edges, 1)?;
        for (i, l) in self.identity.service_labels.iter().enumerate() {
            if !crate::storage::is_valid_label_name(l) {
                return Err((
                    format!("rca.identity.service_labels[{i}]"),
                    format!("{l:?} is not a valid label name"),
                ));
            }
        }
        let inc = &self.incidents;
        positive("rca.incidents.window", inc.window)?;
        positive("rca.incidents.resolve_after", inc.resolve_after)?;
        positive("rca.incidents.max_duration", inc.max_duration)?;
        at_least("rca.incidents.max_incidents", inc.max_incidents, 1)?;
        at_least("rca.incidents.max_components", inc.max_components, 1)?;
        if inc.join_hops > 10 {
            return Err((
                "rca.incidents.join_hops".into(),
                "must be at most 10".into(),
            ));
        }
        let a = &self.analysis;
        if a.hops > 10 {
            return Err(("rca.analysis.hops".into(), "must be at most 10".into()));
        }
        positive("rca.analysis.baseline", a.baseline)?;
        positive("rca.analysis.lead", a.lead)?;
        positive("rca.analysis.horizon", a.horizon)?;
        positive("rca.analysis.step", a.step)?;
        positive("rca.analysis.interval", a.interval)?;
        if a.step.as_millis() < 1000 {
            return Err(("rca.analysis.step".into(), "must be at least 1s".into()));
        }
        // Bound the grid: baseline + lead + horizon in steps.
        let points = (a.baseline.as_millis() + a.lead.as_millis() + a.horizon.as_millis())
            / a.step.as_millis();
        if points > 20_000 {
            return Err((
                "rca.analysis.step".into(),
                format!(
                    "baseline + lead + horizon is {points} steps; at most 20000 (use a larger step)"
                ),
            ));
        }
        if a.baseline.as_millis() < 8 * a.step.as_millis() {
            return Err((
                "rca.analysis.baseline".into(),
                "must cover at least 8 steps".into(),
            ));
        }
        at_least("rca.analysis.max_candidates", a.max_candidates, 1)?;
        if a.max_candidates > 5000 {
            return Err((
                "rca.analysis.max_candidates".into(),
                "must be at most 5000".into(),
            ));
        }
        at_least(
            "rca.analysis.max_series_per_component",
            a.max_series_per_component,
            1,
        )?;
        at_least("rca.analysis.max_causes", a.max_causes, 1)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RcaConfig, String> {
        let c: RcaConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(c)
    }

    #[test]
    fn a_topology_parses_with_match_owners_and_dependencies() {
        let c = parse(
            "topology:\n  services:\n    - name: checkout\n      match: {job: checkout-api}\n      depends_on: [payments, cart]\n      owners: [team-shop]\n      workloads: [shop/checkout-v2]\n    - name: payments\n",
        )
        .unwrap();
        assert_eq!(c.topology.services[0].selector["job"], "checkout-api");
        assert_eq!(c.topology.services[0].depends_on, vec!["payments", "cart"]);
        assert!(c.enabled);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("topology:\n  services:\n    - {name: a, depends_on: [a]}\n").unwrap_err();
        assert!(
            e.starts_with("rca.topology.services[0].depends_on[0]"),
            "{e}"
        );
        let e = parse("topology:\n  services:\n    - {name: a}\n    - {name: a}\n").unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse("topology:\n  services:\n    - {name: a, workloads: [x]}\n").unwrap_err();
        assert!(e.contains("namespace/name"), "{e}");
        let e = parse("analysis: {step: 0s}\n").unwrap_err();
        assert!(e.starts_with("rca.analysis.step"), "{e}");
        let e = parse("analysis: {step: 1s, baseline: 1d}\n").unwrap_err();
        assert!(e.contains("at most 20000"), "{e}");
        let e = parse("identity: {service_labels: ['']}\n").unwrap_err();
        assert!(e.starts_with("rca.identity.service_labels[0]"), "{e}");
        assert!(parse("discovery: {istio: maybe}\n").is_err());
        assert!(parse("analysys: {}\n").is_err());
    }
}
