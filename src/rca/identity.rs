//! Which component a series (or an alert) belongs to, from its labels, and the
//! reverse: the selectors that find a unit's series in the store.
//!
//! Rules, first match wins:
//! 1. a configured service whose `match` labels all match;
//! 2. `namespace` + `pod` naming a pod the topology knows (kube-state-metrics and
//!    cAdvisor series, app series scraped through pod discovery);
//! 3. `namespace` + `deployment` / `statefulset` / `daemonset` naming a known
//!    workload (Linkerd's and kube-state-metrics' workload labels);
//! 4. each of `identity.service_labels` (default `service`, `service_name`, `app`,
//!    `job`) naming a known service, or a known workload (in the series' namespace
//!    first);
//! 5. `node`, or an `instance` (port stripped) equal to a known node's name;
//! 6. otherwise the first service label present names a service the topology does
//!    not know yet (so analysis still works without any topology).
//!
//! Must never: allocate for a series that matches nothing, or scan the topology per
//! series (every rule is a hash lookup).

use std::collections::BTreeMap;

use super::topology::{ComponentId, ComponentKind, Topology};
use crate::storage::{LabelSet, MatchOp, Matcher};

/// Workload labels (rule 3), as Linkerd and kube-state-metrics name them.
const WORKLOAD_LABELS: [&str; 3] = ["deployment", "statefulset", "daemonset"];

/// Attributes label sets to components of one topology.
pub struct Identity<'a> {
    topo: &'a Topology,
    service_labels: &'a [String],
    /// Configured services with a `match` selector.
    selectors: Vec<(&'a BTreeMap<String, String>, &'a ComponentId)>,
}

impl<'a> Identity<'a> {
    pub fn new(topo: &'a Topology, service_labels: &'a [String]) -> Self {
        let selectors = topo
            .components()
            .iter()
            .filter(|c| !c.selector.is_empty())
            .map(|c| (&c.selector, &c.id))
            .collect();
        Identity {
            topo,
            service_labels,
            selectors,
        }
    }

    /// The component of a series.
    pub fn of_series(&self, labels: &LabelSet) -> Option<ComponentId> {
        self.identify(|n| labels.get(n))
    }

    /// The component of an alert (or any label map).
    pub fn of_labels(&self, labels: &BTreeMap<String, String>) -> Option<ComponentId> {
        self.identify(|n| labels.get(n).map(String::as_str))
    }

    /// The component named by labels read through `get`.
    pub fn identify<'l>(&self, get: impl Fn(&str) -> Option<&'l str>) -> Option<ComponentId> {
        for (sel, id) in &self.selectors {
            if sel.iter().all(|(k, v)| get(k) == Some(v.as_str())) {
                return Some((*id).clone());
            }
        }
        let ns = get("namespace").filter(|s| !s.is_empty());
        if let (Some(ns), Some(pod)) = (ns, get("pod").filter(|s| !s.is_empty())) {
            let id = ComponentId::pod(ns, pod);
            if self.topo.contains(&id) {
                return Some(id);
            }
        }
        if let Some(ns) = ns {
            for l in WORKLOAD_LABELS {
                if let Some(w) = get(l).filter(|s| !s.is_empty()) {
                    let id = ComponentId::workload(ns, w);
                    if self.topo.contains(&id) {
                        return Some(id);
                    }
                }
            }
        }
        for l in self.service_labels {
            if let Some(v) = get(l).filter(|s| !s.is_empty()) {
                let id = ComponentId::service(v);
                if self.topo.contains(&id) {
                    return Some(id);
                }
                if let Some(ns) = ns {
                    let id = ComponentId::workload(ns, v);
                    if self.topo.contains(&id) {
                        return Some(id);
                    }
                }
            }
        }
        if let Some(n) = get("node").filter(|s| !s.is_empty()) {
            return Some(ComponentId::node(n));
        }
        if let Some(inst) = get("instance").filter(|s| !s.is_empty()) {
            let host = inst.rsplit_once(':').map_or(inst, |(h, _)| h);
            for candidate in [inst, host] {
                let id = ComponentId::node(candidate);
                if self.topo.contains(&id) {
                    return Some(id);
                }
            }
        }
        // Rule 6: a service the topology does not know (yet).
        self.service_labels
            .iter()
            .find_map(|l| get(l).filter(|s| !s.is_empty()))
            .map(ComponentId::service)
    }

    /// Selector sets (each a conjunction) that together find every series of the
    /// given units (representative ids): one literal alternation per label
    /// (`service=~"a|b|c"`, `pod=~"…"`), so reading the series of many units costs a
    /// handful of index lookups. Callers attribute each series found with
    /// [`Identity::of_series`], since a selector also finds other units' series.
    pub fn selectors_for_units(&self, units: &[ComponentId]) -> Vec<Vec<Matcher>> {
        let mut by_label: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut out: Vec<Vec<Matcher>> = Vec::new();
        for unit in units {
            let members: Vec<&ComponentId> = match self.topo.index_of(unit) {
                Some(i) => self
                    .topo
                    .unit_members(self.topo.unit_of(i))
                    .iter()
                    .map(|&m| &self.topo.component(m).id)
                    .collect(),
                None => vec![unit],
            };
            for id in members {
                match id.kind {
                    ComponentKind::Service => {
                        if let Some(i) = self.topo.index_of(id) {
                            let sel = &self.topo.component(i).selector;
                            if !sel.is_empty() {
                                out.push(sel.iter().map(|(k, v)| Matcher::equal(k, v)).collect());
                            }
                        }
                        for l in self.service_labels {
                            by_label.entry(l.as_str()).or_default().push(&id.name);
                        }
                    }
                    ComponentKind::Workload => {
                        let name = id.short_name();
                        for l in WORKLOAD_LABELS {
                            by_label.entry(l).or_default().push(name);
                        }
                    }
                    ComponentKind::Pod => {
                        by_label.entry("pod").or_default().push(id.short_name());
                    }
                    ComponentKind::Node => {
                        by_label.entry("node").or_default().push(&id.name);
                        by_label.entry("instance").or_default().push(&id.name);
                    }
                }
            }
        }
        // Plain names stay a literal alternation the postings index answers directly.
        let plain = |n: &str| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        for (label, mut values) in by_label {
            values.sort_unstable();
            values.dedup();
            let escaped = values.iter().any(|v| !plain(v));
            let alternation: Vec<String> = values
                .iter()
                .map(|v| {
                    if escaped {
                        regex::escape(v)
                    } else {
                        v.to_string()
                    }
                })
                .collect();
            if let Ok(m) = Matcher::new(MatchOp::Regex, label, alternation.join("|")) {
                out.push(vec![m]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rca::topology::{EdgeKind, Source, TopologyBuilder};

    fn topo() -> Topology {
        let mut b = TopologyBuilder::new();
        let k = Source::Kubernetes;
        let pay = b.component(ComponentId::service("payments"), Source::Config);
        b.component_mut(pay)
            .selector
            .insert("job".into(), "payments-api".into());
        b.edge(
            ComponentId::service("checkout"),
            ComponentId::workload("shop", "checkout"),
            EdgeKind::ServedBy,
            Source::Name,
        );
        b.edge(
            ComponentId::workload("shop", "checkout"),
            ComponentId::pod("shop", "checkout-abc"),
            EdgeKind::Runs,
            k,
        );
        b.edge(
            ComponentId::pod("shop", "checkout-abc"),
            ComponentId::node("worker-1"),
            EdgeKind::ScheduledOn,
            k,
        );
        b.component(ComponentId::workload("shop", "cart"), k);
        b.build(100, 100, 0)
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn rules_apply_in_order() {
        let t = topo();
        let sl = crate::rca::config::IdentityConfig::default().service_labels;
        let id = Identity::new(&t, &sl);
        let of = |p: &[(&str, &str)]| id.of_series(&labels(p)).map(|c| c.to_string());
        assert_eq!(
            of(&[("job", "payments-api"), ("service", "x")]).as_deref(),
            Some("service:payments")
        );
        assert_eq!(
            of(&[
                ("namespace", "shop"),
                ("pod", "checkout-abc"),
                ("service", "checkout")
            ])
            .as_deref(),
            Some("pod:shop/checkout-abc")
        );
        assert_eq!(
            of(&[("namespace", "shop"), ("deployment", "cart")]).as_deref(),
            Some("workload:shop/cart")
        );
        assert_eq!(
            of(&[("namespace", "shop"), ("job", "cart")]).as_deref(),
            Some("workload:shop/cart")
        );
        assert_eq!(
            of(&[("instance", "worker-1:9100"), ("job", "node-exporter")]).as_deref(),
            Some("node:worker-1")
        );
        assert_eq!(
            of(&[("service", "unknown-svc")]).as_deref(),
            Some("service:unknown-svc")
        );
        assert_eq!(of(&[("__name__", "x")]), None);
    }

    #[test]
    fn unit_selectors_cover_members() {
        let t = topo();
        let sl = vec!["service".to_string()];
        let id = Identity::new(&t, &sl);
        let sels = id.selectors_for_units(&[ComponentId::service("checkout")]);
        let text: Vec<String> = sels
            .iter()
            .map(|s| {
                s.iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert!(
            text.contains(&"service=~\"checkout\"".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("pod=~\"checkout-abc\"")),
            "{text:?}"
        );
    }
}
