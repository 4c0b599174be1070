//! Renderings of a [`Topology`] for `GET /api/v1/topology`: JSON for programs, and
//! Graphviz DOT or Mermaid for people. The `units` view draws one box per unit
//! (service, or a workload / pod / node standing alone) and only the edges between
//! units, which is what a person wants to look at in a cluster of thousands of pods.
//!
//! Must never: emit an identifier unescaped (names come from metric labels).

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::{json, Value};

use super::topology::Topology;

/// Which part of the graph to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every component and edge.
    All,
    /// Units and the edges between them.
    Units,
}

/// The graph as `(nodes, edges)` of the chosen view: node ids and
/// `(from, to, kind)` edges, sorted.
fn graph(topo: &Topology, view: View) -> (Vec<String>, Vec<(String, String, String)>) {
    match view {
        View::All => {
            let nodes = topo.components().iter().map(|c| c.id.to_string()).collect();
            let mut edges: Vec<_> = topo
                .edges()
                .iter()
                .map(|e| {
                    (
                        topo.component(e.from).id.to_string(),
                        topo.component(e.to).id.to_string(),
                        e.kind.as_str().to_string(),
                    )
                })
                .collect();
            edges.sort();
            (nodes, edges)
        }
        View::Units => {
            let mut nodes = BTreeSet::new();
            let mut edges = BTreeSet::new();
            for (i, _) in topo.components().iter().enumerate() {
                let u = topo.unit_of(i as u32);
                nodes.insert(topo.component(u).id.to_string());
            }
            for e in topo.edges() {
                if e.kind.is_internal() {
                    continue;
                }
                let (a, b) = (topo.unit_of(e.from), topo.unit_of(e.to));
                if a != b {
                    edges.insert((
                        topo.component(a).id.to_string(),
                        topo.component(b).id.to_string(),
                        e.kind.as_str().to_string(),
                    ));
                }
            }
            (nodes.into_iter().collect(), edges.into_iter().collect())
        }
    }
}

/// The topology as JSON: components (with unit and sources), edges (with sources).
pub fn to_json(topo: &Topology, view: View) -> Value {
    match view {
        View::All => {
            let components: Vec<Value> = topo
                .components()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert(
                            "unit".into(),
                            Value::String(topo.component(topo.unit_of(i as u32)).id.to_string()),
                        );
                    }
                    v
                })
                .collect();
            let edges: Vec<Value> = topo
                .edges()
                .iter()
                .map(|e| {
                    json!({
                        "from": topo.component(e.from).id,
                        "to": topo.component(e.to).id,
                        "kind": e.kind,
                        "sources": e.sources,
                    })
                })
                .collect();
            json!({
                "components": components,
                "edges": edges,
                "units": topo.unit_count(),
                "truncated": topo.truncated,
                "builtAt": topo.built_at_ms as f64 / 1000.0,
            })
        }
        View::Units => {
            let (nodes, edges) = graph(topo, view);
            let edges: Vec<Value> = edges
                .into_iter()
                .map(|(f, t, k)| json!({"from": f, "to": t, "kind": k}))
                .collect();
            json!({
                "components": nodes,
                "edges": edges,
                "units": topo.unit_count(),
                "truncated": topo.truncated,
                "builtAt": topo.built_at_ms as f64 / 1000.0,
            })
        }
    }
}

fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Graphviz DOT: `dot -Tsvg` draws it. Services are boxes, nodes are 3-D boxes,
/// pods ellipses, workloads rounded boxes.
pub fn to_dot(topo: &Topology, view: View) -> String {
    let (nodes, edges) = graph(topo, view);
    let mut out = String::from("digraph topology {\n  rankdir=LR;\n  node [fontsize=10];\n");
    for n in &nodes {
        let shape = match n.split(':').next() {
            Some("service") => "box",
            Some("node") => "box3d",
            Some("pod") => "ellipse",
            _ => "box, style=rounded",
        };
        let _ = writeln!(out, "  {} [shape={shape}];", dot_quote(n));
    }
    for (f, t, k) in &edges {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            dot_quote(f),
            dot_quote(t),
            dot_quote(k)
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_label(s: &str) -> String {
    // Mermaid labels are quoted; quotes and markup characters become entities.
    s.chars()
        .map(|c| match c {
            '"' => "#quot;".to_string(),
            '<' => "#lt;".to_string(),
            '>' => "#gt;".to_string(),
            '\n' | '\r' => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Mermaid `graph LR` (GitHub and Grafana's text panels render it). Node ids are
/// `n0`, `n1`… with the component id as the label.
pub fn to_mermaid(topo: &Topology, view: View) -> String {
    let (mut nodes, edges) = graph(topo, view);
    nodes.sort();
    let mut out = String::from("graph LR\n");
    for (i, n) in nodes.iter().enumerate() {
        let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid_label(n));
    }
    let id = |name: &str| nodes.binary_search_by(|n| n.as_str().cmp(name)).ok();
    for (f, t, k) in &edges {
        if let (Some(a), Some(b)) = (id(f), id(t)) {
            let _ = writeln!(out, "  n{a} -->|{}| n{b}", mermaid_label(k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rca::topology::{ComponentId, EdgeKind, Source, TopologyBuilder};

    fn topo() -> Topology {
        let mut b = TopologyBuilder::new();
        b.edge(
            ComponentId::service("web"),
            ComponentId::service("db\"x"),
            EdgeKind::Calls,
            Source::ServiceGraph,
        );
        b.edge(
            ComponentId::service("web"),
            ComponentId::workload("shop", "web"),
            EdgeKind::ServedBy,
            Source::Name,
        );
        b.edge(
            ComponentId::workload("shop", "web"),
            ComponentId::pod("shop", "web-1"),
            EdgeKind::Runs,
            Source::Kubernetes,
        );
        b.edge(
            ComponentId::pod("shop", "web-1"),
            ComponentId::node("n1"),
            EdgeKind::ScheduledOn,
            Source::Kubernetes,
        );
        b.build(100, 100, 1_000)
    }

    #[test]
    fn json_lists_components_with_units_and_edges_with_sources() {
        let v = to_json(&topo(), View::All);
        assert_eq!(v["components"].as_array().unwrap().len(), 5);
        let pod = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "pod:shop/web-1")
            .unwrap();
        assert_eq!(pod["unit"], "service:web");
        assert_eq!(pod["sources"], json!(["kubernetes"]));
        let e = &v["edges"].as_array().unwrap()[0];
        assert!(e["from"].is_string() && e["kind"].is_string(), "{e}");
        let units = to_json(&topo(), View::Units);
        assert_eq!(units["components"].as_array().unwrap().len(), 3);
        assert_eq!(units["edges"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn dot_and_mermaid_escape_names() {
        let dot = to_dot(&topo(), View::Units);
        assert!(dot.starts_with("digraph topology {"), "{dot}");
        assert!(
            dot.contains("\"service:web\" -> \"service:db\\\"x\" [label=\"calls\"];"),
            "{dot}"
        );
        assert!(dot.contains("\"node:n1\" [shape=box3d];"), "{dot}");
        let m = to_mermaid(&topo(), View::Units);
        assert!(m.starts_with("graph LR\n"), "{m}");
        assert!(m.contains("[\"service:db#quot;x\"]"), "{m}");
        assert!(m.contains("-->|calls|"), "{m}");
        assert!(m.contains("-->|scheduled_on|"), "{m}");
    }
}
