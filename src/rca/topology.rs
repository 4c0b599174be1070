//! The dependency topology: components (services, workloads, pods, nodes) and the
//! edges saying who depends on whom, each edge remembering which sources reported it.
//!
//! Every edge points from the dependent to its dependency — `a calls b`, `service
//! served_by workload`, `workload runs pod`, `pod scheduled_on node` — so a fault
//! travels against the arrows: when `b` breaks, `a` suffers. `served_by` and `runs`
//! edges are *internal*: a service, the workloads serving it and their pods are one
//! **unit** (one thing that can be the cause; the evidence names the pod inside it).
//! Units are what the ranking ranks and what hop counts count: `calls` and
//! `scheduled_on` are one hop each, internal edges none.
//!
//! Invariants: a built [`Topology`] is immutable and shared behind an `Arc`; it holds
//! at most the configured number of components and edges (the rest is dropped and
//! `truncated` says so); every component belongs to exactly one unit, whose
//! representative is its service if it has one, else its workload, else itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::{Serialize, Serializer};

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A service as callers name it (trace `service.name`, a Kubernetes Service).
    Service,
    /// A Deployment, StatefulSet, DaemonSet, Job… (`namespace/name`).
    Workload,
    /// A pod (`namespace/name`).
    Pod,
    /// A Kubernetes node / host.
    Node,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Service => "service",
            ComponentKind::Workload => "workload",
            ComponentKind::Pod => "pod",
            ComponentKind::Node => "node",
        }
    }

    /// Order of preference for a unit's representative (lower first).
    fn representative_rank(self) -> u8 {
        match self {
            ComponentKind::Service => 0,
            ComponentKind::Workload => 1,
            ComponentKind::Pod => 2,
            ComponentKind::Node => 3,
        }
    }
}

/// A component's identity: `service:checkout`, `workload:shop/checkout`,
/// `pod:shop/checkout-7d9f-x2b`, `node:worker-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub kind: ComponentKind,
    pub name: String,
}

impl ComponentId {
    pub fn new(kind: ComponentKind, name: impl Into<String>) -> Self {
        ComponentId {
            kind,
            name: name.into(),
        }
    }

    pub fn service(name: &str) -> Self {
        Self::new(ComponentKind::Service, name)
    }

    pub fn workload(namespace: &str, name: &str) -> Self {
        Self::new(ComponentKind::Workload, format!("{namespace}/{name}"))
    }

    pub fn pod(namespace: &str, name: &str) -> Self {
        Self::new(ComponentKind::Pod, format!("{namespace}/{name}"))
    }

    pub fn node(name: &str) -> Self {
        Self::new(ComponentKind::Node, name)
    }

    /// The name without its namespace (`checkout` for `workload:shop/checkout`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// Parses `kind:name` (the form [`fmt::Display`] writes).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        let kind = match kind {
            "service" => ComponentKind::Service,
            "workload" => ComponentKind::Workload,
            "pod" => ComponentKind::Pod,
            "node" => ComponentKind::Node,
            _ => return None,
        };
        (!name.is_empty()).then(|| ComponentId::new(kind, name))
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

impl Serialize for ComponentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How one component depends on another (the edge points at the dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// A request path: the caller depends on the callee.
    Calls,
    /// A service is served by a workload's pods.
    ServedBy,
    /// A workload runs a pod.
    Runs,
    /// A pod runs on a node.
    ScheduledOn,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Calls => "calls",
            EdgeKind::ServedBy => "served_by",
            EdgeKind::Runs => "runs",
            EdgeKind::ScheduledOn => "scheduled_on",
        }
    }

    /// Internal edges join components into one unit (no hop).
    pub fn is_internal(self) -> bool {
        matches!(self, EdgeKind::ServedBy | EdgeKind::Runs)
    }
}

/// Where a component or edge came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `rca.topology` section of the configuration.
    Config,
    /// `traces_service_graph_request_total` (OpenTelemetry servicegraph connector, Tempo).
    /// Named as its `rca.discovery.servicegraph` switch.
    #[serde(rename = "servicegraph")]
    ServiceGraph,
    /// `istio_requests_total` / `istio_tcp_*`.
    Istio,
    /// Linkerd proxies' outbound `request_total` / `response_total`.
    Linkerd,
    /// kube-state-metrics ownership and placement.
    Kubernetes,
    /// A service linked to the workload of the same name.
    Name,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::Config,
        Source::ServiceGraph,
        Source::Istio,
        Source::Linkerd,
        Source::Kubernetes,
        Source::Name,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::ServiceGraph => "servicegraph",
            Source::Istio => "istio",
            Source::Linkerd => "linkerd",
            Source::Kubernetes => "kubernetes",
            Source::Name => "name",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Source`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Sources(u8);

impl Sources {
    pub fn of(s: Source) -> Self {
        Sources(s.bit())
    }

    pub fn insert(&mut self, s: Source) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: Source) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Source> {
        Source::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl Serialize for Sources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub id: ComponentId,
    /// The sources that reported it.
    pub sources: Sources,
    /// Owners from the configuration (teams, people), for notifications.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// For a workload: its Kubernetes kind (`Deployment`, `StatefulSet`…), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    /// For a configured service: the labels that identify its series (all must match).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

impl Component {
    fn new(id: ComponentId) -> Self {
        Component {
            id,
            sources: Sources::default(),
            owners: Vec::new(),
            workload_kind: None,
            selector: BTreeMap::new(),
        }
    }
}

/// One dependency edge between component indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    pub from: u32,
    pub to: u32,
    pub kind: EdgeKind,
    pub sources: Sources,
}

/// Collects components and edges from the sources, then builds a [`Topology`].
#[derive(Debug, Clone, Default)]
pub struct TopologyBuilder {
    components: Vec<Component>,
    index: HashMap<ComponentId, u32>,
    edges: HashMap<(u32, u32, EdgeKind), Sources>,
}

impl TopologyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or finds) a component, recording `source`. Returns its index.
    pub fn component(&mut self, id: ComponentId, source: Source) -> u32 {
        let i = match self.index.get(&id) {
            Some(&i) => i,
            None => {
                let i = self.components.len() as u32;
                self.index.insert(id.clone(), i);
                self.components.push(Component::new(id));
                i
            }
        };
        self.components[i as usize].sources.insert(source);
        i
    }

    /// The index of a component added before.
    pub fn index_of(&self, id: &ComponentId) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// Mutable access to a component added before.
    pub fn component_mut(&mut self, i: u32) -> &mut Component {
        &mut self.components[i as usize]
    }

    /// Adds `from --kind--> to` (both added as components), recording `source`.
    pub fn edge(&mut self, from: ComponentId, to: ComponentId, kind: EdgeKind, source: Source) {
        if from == to {
            return;
        }
        let f = self.component(from, source);
        let t = self.component(to, source);
        self.edges.entry((f, t, kind)).or_default().insert(source);
    }

    /// Number of components so far.
    pub fn len(&self) -> usize {
        self.components.len()
    }

    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// Merges another builder's components and edges into this one.
    pub fn merge(&mut self, other: &TopologyBuilder) {
        let map: Vec<u32> = other
            .components
            .iter()
            .map(|c| {
                let mut i = u32::MAX;
                for s in c.sources.iter() {
                    i = self.component(c.id.clone(), s);
                }
                let mine = &mut self.components[i as usize];
                for o in &c.owners {
                    if !mine.owners.contains(o) {
                        mine.owners.push(o.clone());
                    }
                }
                if mine.workload_kind.is_none() {
                    mine.workload_kind = c.workload_kind.clone();
                }
                if mine.selector.is_empty() {
                    mine.selector = c.selector.clone();
                }
                i
            })
            .collect();
        for (&(f, t, kind), sources) in &other.edges {
            let e = self
                .edges
                .entry((map[f as usize], map[t as usize], kind))
                .or_default();
            for s in sources.iter() {
                e.insert(s);
            }
        }
    }

    /// Links every service that no source said is served by a workload to the
    /// workloads of the same name (`service:checkout` → `workload:shop/checkout`).
    pub fn link_services_by_name(&mut self) {
        let mut served: Vec<bool> = vec![false; self.components.len()];
        for &(f, _, kind) in self.edges.keys() {
            if kind == EdgeKind::ServedBy {
                served[f as usize] = true;
            }
        }
        let mut workloads: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, c) in self.components.iter().enumerate() {
            if c.id.kind == ComponentKind::Workload {
                workloads
                    .entry(c.id.short_name())
                    .or_default()
                    .push(i as u32);
            }
        }
        let mut links = Vec::new();
        for (i, c) in self.components.iter().enumerate() {
            if c.id.kind == ComponentKind::Service && !served[i] {
                if let Some(ws) = workloads.get(c.id.name.as_str()) {
                    links.extend(ws.iter().map(|&w| (i as u32, w)));
                }
            }
        }
        for (s, w) in links {
            self.edges
                .entry((s, w, EdgeKind::ServedBy))
                .or_default()
                .insert(Source::Name);
        }
    }

    /// Builds the topology, keeping at most `max_components` components (in the
    /// order they were added: configuration first) and `max_edges` edges.
    pub fn build(&self, max_components: usize, max_edges: usize, built_at_ms: i64) -> Topology {
        let n = self.components.len().min(max_components);
        let mut truncated = n < self.components.len();
        let mut edges: Vec<Edge> = self
            .edges
            .iter()
            .filter(|(&(f, t, _), _)| (f as usize) < n && (t as usize) < n)
            .map(|(&(from, to, kind), &sources)| Edge {
                from,
                to,
                kind,
                sources,
            })
            .collect();
        edges.sort_by_key(|e| (e.from, e.to, e.kind));
        if edges.len() > max_edges {
            edges.truncate(max_edges);
            truncated = true;
        }
        let components: Vec<Component> = self.components[..n].to_vec();
        Topology::from_parts(components, edges, truncated, built_at_ms)
    }
}

/// An immutable dependency graph with its units.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    components: Vec<Component>,
    index: HashMap<ComponentId, u32>,
    edges: Vec<Edge>,
    /// Edge indices leaving each component (to its dependencies).
    out: Vec<Vec<u32>>,
    /// Edge indices entering each component (from its dependents).
    inc: Vec<Vec<u32>>,
    /// The unit representative of each component.
    unit: Vec<u32>,
    /// The members of each unit, by representative.
    members: HashMap<u32, Vec<u32>>,
    /// Whether components or edges were dropped at the size limits.
    pub truncated: bool,
    /// When it was built (ms).
    pub built_at_ms: i64,
}

impl Topology {
    fn from_parts(
        components: Vec<Component>,
        edges: Vec<Edge>,
        truncated: bool,
        built_at_ms: i64,
    ) -> Self {
        let n = components.len();
        let index = components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i as u32))
            .collect();
        let mut out = vec![Vec::new(); n];
        let mut inc = vec![Vec::new(); n];
        // Union-find over internal edges.
        let mut parent: Vec<u32> = (0..n as u32).collect();
        fn find(p: &mut [u32], mut x: u32) -> u32 {
            while p[x as usize] != x {
                p[x as usize] = p[p[x as usize] as usize];
                x = p[x as usize];
            }
            x
        }
        for (k, e) in edges.iter().enumerate() {
            out[e.from as usize].push(k as u32);
            inc[e.to as usize].push(k as u32);
            if e.kind.is_internal() {
                let (a, b) = (find(&mut parent, e.from), find(&mut parent, e.to));
                if a != b {
                    parent[a as usize] = b;
                }
            }
        }
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in 0..n as u32 {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let mut unit = vec![0u32; n];
        let mut members = HashMap::with_capacity(groups.len());
        for (_, mut group) in groups {
            group.sort_by(|&a, &b| {
                let (ca, cb) = (&components[a as usize].id, &components[b as usize].id);
                (ca.kind.representative_rank(), &ca.name)
                    .cmp(&(cb.kind.representative_rank(), &cb.name))
            });
            let rep = group[0];
            for &m in &group {
                unit[m as usize] = rep;
            }
            members.insert(rep, group);
        }
        Topology {
            components,
            index,
            edges,
            out,
            inc,
            unit,
            members,
            truncated,
            built_at_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.components.len()
    }

    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    pub fn component(&self, i: u32) -> &Component {
        &self.components[i as usize]
    }

    pub fn index_of(&self, id: &ComponentId) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn contains(&self, id: &ComponentId) -> bool {
        self.index.contains_key(id)
    }

    /// The unit representative of component `i`.
    pub fn unit_of(&self, i: u32) -> u32 {
        self.unit[i as usize]
    }

    /// The unit representative's id for `id`; an unknown component is its own unit.
    pub fn unit_id(&self, id: &ComponentId) -> ComponentId {
        match self.index_of(id) {
            Some(i) => self.components[self.unit_of(i) as usize].id.clone(),
            None => id.clone(),
        }
    }

    /// The members of the unit represented by `rep` (itself included).
    pub fn unit_members(&self, rep: u32) -> &[u32] {
        self.members.get(&rep).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Units `rep` depends on directly (one hop through a `calls` or `scheduled_on`
    /// edge of any member), deduplicated.
    pub fn unit_dependencies(&self, rep: u32) -> Vec<u32> {
        self.unit_neighbours(rep, true)
    }

    /// Units depending directly on `rep`.
    pub fn unit_dependents(&self, rep: u32) -> Vec<u32> {
        self.unit_neighbours(rep, false)
    }

    fn unit_neighbours(&self, rep: u32, forward: bool) -> Vec<u32> {
        let mut out = Vec::new();
        for &m in self.unit_members(rep) {
            let list = if forward {
                &self.out[m as usize]
            } else {
                &self.inc[m as usize]
            };
            for &k in list {
                let e = &self.edges[k as usize];
                if e.kind.is_internal() {
                    continue;
                }
                let other = self.unit[if forward { e.to } else { e.from } as usize];
                if other != rep && !out.contains(&other) {
                    out.push(other);
                }
            }
        }
        out
    }

    /// Units within `hops` of `rep` ignoring edge direction, with their distance
    /// (`rep` itself at 0). Visits at most `limit` units.
    pub fn units_within(&self, rep: u32, hops: u32, limit: usize) -> Vec<(u32, u32)> {
        let mut seen: HashMap<u32, u32> = HashMap::from([(rep, 0)]);
        let mut order = vec![(rep, 0)];
        let mut queue = VecDeque::from([(rep, 0u32)]);
        while let Some((u, d)) = queue.pop_front() {
            if d >= hops || order.len() >= limit {
                continue;
            }
            for v in self
                .unit_dependencies(u)
                .into_iter()
                .chain(self.unit_dependents(u))
            {
                if order.len() >= limit {
                    break;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(v) {
                    e.insert(d + 1);
                    order.push((v, d + 1));
                    queue.push_back((v, d + 1));
                }
            }
        }
        order
    }

    /// Number of units.
    pub fn unit_count(&self) -> usize {
        self.members.len()
    }

    /// Counts of components by kind and edges by source, for the metrics.
    pub fn counts(&self) -> (BTreeMap<ComponentKind, usize>, BTreeMap<Source, usize>) {
        let mut kinds = BTreeMap::new();
        for c in &self.components {
            *kinds.entry(c.id.kind).or_insert(0) += 1;
        }
        let mut sources = BTreeMap::new();
        for e in &self.edges {
            for s in e.sources.iter() {
                *sources.entry(s).or_insert(0) += 1;
            }
        }
        (kinds, sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn shop() -> Topology {
        let mut b = TopologyBuilder::new();
        let s = Source::Config;
        b.edge(
            ComponentId::service("frontend"),
            ComponentId::service("api"),
            EdgeKind::Calls,
            s,
        );
        b.edge(
            ComponentId::service("api"),
            ComponentId::service("db"),
            EdgeKind::Calls,
            s,
        );
        b.edge(
            ComponentId::service("api"),
            ComponentId::workload("shop", "api"),
            EdgeKind::ServedBy,
            s,
        );
        b.edge(
            ComponentId::workload("shop", "api"),
            ComponentId::pod("shop", "api-1"),
            EdgeKind::Runs,
            s,
        );
        b.edge(
            ComponentId::pod("shop", "api-1"),
            ComponentId::node("n1"),
            EdgeKind::ScheduledOn,
            s,
        );
        b.build(100, 100, 0)
    }

    #[test]
    fn units_join_a_service_with_its_workloads_and_pods() {
        let t = shop();
        let api = t.index_of(&ComponentId::service("api")).unwrap();
        let pod = t.index_of(&ComponentId::pod("shop", "api-1")).unwrap();
        assert_eq!(t.unit_of(pod), api);
        assert_eq!(t.unit_members(api).len(), 3);
        assert_eq!(
            t.unit_id(&ComponentId::workload("shop", "api")),
            ComponentId::service("api")
        );
        let deps: Vec<String> = t
            .unit_dependencies(api)
            .into_iter()
            .map(|u| t.component(u).id.to_string())
            .collect();
        assert_eq!(deps, vec!["service:db", "node:n1"]);
        let fe = t.index_of(&ComponentId::service("frontend")).unwrap();
        assert_eq!(t.unit_dependents(api), vec![fe]);
        // frontend is two hops from db and from the node.
        let within = t.units_within(fe, 2, 100);
        assert_eq!(within.len(), 4, "{within:?}");
        assert_eq!(t.unit_count(), 4);
    }

    #[test]
    fn limits_truncate_and_say_so() {
        let mut b = TopologyBuilder::new();
        for i in 0..10 {
            b.edge(
                ComponentId::service(&format!("s{i}")),
                ComponentId::service(&format!("s{}", i + 1)),
                EdgeKind::Calls,
                Source::ServiceGraph,
            );
        }
        let t = b.build(5, 100, 0);
        assert_eq!(t.len(), 5);
        assert!(t.truncated);
        assert!(t.edges().iter().all(|e| e.to < 5));
    }

    #[test]
    fn services_link_to_workloads_of_the_same_name() {
        let mut b = TopologyBuilder::new();
        b.edge(
            ComponentId::service("web"),
            ComponentId::service("cart"),
            EdgeKind::Calls,
            Source::ServiceGraph,
        );
        b.edge(
            ComponentId::workload("shop", "cart"),
            ComponentId::pod("shop", "cart-1"),
            EdgeKind::Runs,
            Source::Kubernetes,
        );
        b.link_services_by_name();
        let t = b.build(100, 100, 0);
        assert_eq!(
            t.unit_id(&ComponentId::pod("shop", "cart-1")),
            ComponentId::service("cart")
        );
        assert!(t
            .edges()
            .iter()
            .any(|e| e.kind == EdgeKind::ServedBy && e.sources.contains(Source::Name)));
    }

    #[test]
    fn component_ids_round_trip() {
        for s in ["service:a", "workload:ns/w", "pod:ns/p-1", "node:n1"] {
            assert_eq!(ComponentId::parse(s).unwrap().to_string(), s);
        }
        assert!(ComponentId::parse("host:x").is_none());
        assert!(ComponentId::parse("service:").is_none());
    }
}
