//! Incidents for root-cause analysis: anomaly events and firing alerts on components
//! near each other in the topology, close in time, are one incident — so a database
//! fault and the latency it causes in three callers are one incident to analyse, not
//! four. (The anomaly stage's own incidents group by a label value only; these group
//! across services.)
//!
//! Invariants: a signal joins the most recently updated open incident whose last
//! update is at most `window` old and which already holds its unit or a unit within
//! `join_hops` of it (any direction); with an empty topology, time alone groups.
//! Otherwise it opens an incident. An incident older than `max_duration` takes no
//! new signals. Incidents idle for `resolve_after` are dropped; at
//! most `max_incidents` are kept (oldest dropped first) and `max_components` units
//! per incident. Each change bumps the incident's `version`, so analyses are redone
//! only when something changed. Incidents never merge.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::analysis::Touch;
use super::config::IncidentsConfig;
use super::topology::{ComponentId, Topology};

/// What was seen on a component.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A detector's threshold crossing.
    Anomaly { detector: String, severity: String },
    /// A firing alert.
    Alert { name: String, severity: String },
}

/// One component taking part in an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub component: ComponentId,
    #[serde(rename = "firstSeen", serialize_with = "secs")]
    pub first_ms: i64,
    #[serde(rename = "lastSeen", serialize_with = "secs")]
    pub last_ms: i64,
    /// Anomaly events seen on it.
    pub anomalies: u64,
    /// Detectors that fired on it.
    pub detectors: BTreeSet<String>,
    /// Alerts that fired on it.
    pub alerts: BTreeSet<String>,
}

fn secs<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*v as f64 / 1000.0)
}

/// An incident: touched components over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: u64,
    #[serde(rename = "startsAt", serialize_with = "secs")]
    pub start_ms: i64,
    #[serde(rename = "lastUpdate", serialize_with = "secs")]
    pub last_ms: i64,
    /// Bumped on every change.
    pub version: u64,
    /// The highest severity seen (critical > warning > info > other).
    pub severity: String,
    /// Touched components, in the order they joined.
    pub members: Vec<Member>,
}

impl Incident {
    /// The touched components with their first signal, for an analysis.
    pub fn touches(&self) -> Vec<Touch> {
        self.members
            .iter()
            .map(|m| Touch {
                component: m.component.clone(),
                first_ms: m.first_ms,
            })
            .collect()
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "page" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

/// The open incidents.
#[derive(Debug, Clone)]
pub struct Correlator {
    cfg: IncidentsConfig,
    open: Vec<Incident>,
    next_id: u64,
}

impl Correlator {
    pub fn new(cfg: IncidentsConfig) -> Self {
        Correlator {
            cfg,
            open: Vec::new(),
            next_id: 1,
        }
    }

    /// Applies new settings (from a reload); open incidents stay.
    pub fn set_config(&mut self, cfg: IncidentsConfig) {
        self.cfg = cfg;
    }

    /// Records a signal on `component` (any component; it is mapped to its unit) at
    /// `t_ms`. Returns the incident's id.
    pub fn record(
        &mut self,
        topo: &Topology,
        component: &ComponentId,
        t_ms: i64,
        signal: &Signal,
    ) -> u64 {
        let unit = topo.unit_id(component);
        let window = self.cfg.window.as_millis();
        let max_duration = self.cfg.max_duration.as_millis();
        let recent = |inc: &Incident| {
            t_ms.saturating_sub(inc.last_ms) <= window
                && t_ms.saturating_sub(inc.start_ms) <= max_duration
        };
        // Same unit in a recent incident: the common case, no graph walk.
        let mut target = self
            .open
            .iter()
            .rposition(|inc| recent(inc) && inc.members.iter().any(|m| m.component == unit));
        if target.is_none() {
            target = if topo.is_empty() {
                self.open.iter().rposition(recent)
            } else if let Some(i) = topo.index_of(&unit) {
                let near: HashSet<ComponentId> = topo
                    .units_within(topo.unit_of(i), self.cfg.join_hops, 10_000)
                    .into_iter()
                    .map(|(u, _)| topo.component(u).id.clone())
                    .collect();
                self.open.iter().rposition(|inc| {
                    recent(inc) && inc.members.iter().any(|m| near.contains(&m.component))
                })
            } else {
                None
            };
        }
        let (detector, alert, severity) = match signal {
            Signal::Anomaly { detector, severity } => (Some(detector), None, severity),
            Signal::Alert { name, severity } => (None, Some(name), severity),
        };
        let idx = match target {
            Some(i) => i,
            None => {
                if self.open.len() >= self.cfg.max_incidents.max(1) {
                    self.open.remove(0);
                }
                let id = self.next_id;
                self.next_id += 1;
                self.open.push(Incident {
                    id,
                    start_ms: t_ms,
                    last_ms: t_ms,
                    version: 0,
                    severity: severity.clone(),
                    members: Vec::new(),
                });
                self.open.len() - 1
            }
        };
        let max_members = self.cfg.max_components;
        let inc = &mut self.open[idx];
        inc.version += 1;
        inc.last_ms = inc.last_ms.max(t_ms);
        inc.start_ms = inc.start_ms.min(t_ms);
        if severity_rank(severity) > severity_rank(&inc.severity) {
            inc.severity = severity.clone();
        }
        let member = match inc.members.iter().position(|m| m.component == unit) {
            Some(i) => Some(&mut inc.members[i]),
            None if inc.members.len() < max_members => {
                inc.members.push(Member {
                    component: unit,
                    first_ms: t_ms,
                    last_ms: t_ms,
                    anomalies: 0,
                    detectors: BTreeSet::new(),
                    alerts: BTreeSet::new(),
                });
                inc.members.last_mut()
            }
            None => None,
        };
        if let Some(m) = member {
            m.first_ms = m.first_ms.min(t_ms);
            m.last_ms = m.last_ms.max(t_ms);
            if let Some(d) = detector {
                m.anomalies += 1;
                m.detectors.insert(d.clone());
            }
            if let Some(a) = alert {
                m.alerts.insert(a.clone());
            }
        }
        inc.id
    }

    /// Drops incidents idle for longer than `resolve_after` at `now_ms`; returns
    /// the ids dropped.
    pub fn expire(&mut self, now_ms: i64) -> Vec<u64> {
        let after = self.cfg.resolve_after.as_millis();
        let mut gone = Vec::new();
        self.open.retain(|i| {
            let keep = now_ms.saturating_sub(i.last_ms) <= after;
            if !keep {
                gone.push(i.id);
            }
            keep
        });
        gone
    }

    /// The open incidents, newest first.
    pub fn list(&self) -> Vec<&Incident> {
        self.open.iter().rev().collect()
    }

    pub fn get(&self, id: u64) -> Option<&Incident> {
        self.open.iter().find(|i| i.id == id)
    }

    /// The most recently updated open incident holding `component`'s unit.
    pub fn find(&self, topo: &Topology, component: &ComponentId) -> Option<&Incident> {
        let unit = topo.unit_id(component);
        self.open
            .iter()
            .filter(|i| i.members.iter().any(|m| m.component == unit))
            .max_by_key(|i| (i.last_ms, i.id))
    }

    /// Versions of the open incidents, by id.
    pub fn versions(&self) -> BTreeMap<u64, u64> {
        self.open.iter().map(|i| (i.id, i.version)).collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::PromDuration;
    use crate::rca::topology::{EdgeKind, Source, TopologyBuilder};

    fn chain() -> Topology {
        // a → b → c → d → e, and x alone.
        let mut b = TopologyBuilder::new();
        for (f, t) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")] {
            b.edge(
                ComponentId::service(f),
                ComponentId::service(t),
                EdgeKind::Calls,
                Source::Config,
            );
        }
        b.component(ComponentId::service("x"), Source::Config);
        b.edge(
            ComponentId::workload("ns", "c"),
            ComponentId::pod("ns", "c-1"),
            EdgeKind::Runs,
            Source::Kubernetes,
        );
        b.link_services_by_name();
        b.build(100, 100, 0)
    }

    fn anomaly() -> Signal {
        Signal::Anomaly {
            detector: "lat".into(),
            severity: "warning".into(),
        }
    }

    fn cfg(join_hops: u32) -> IncidentsConfig {
        IncidentsConfig {
            join_hops,
            ..IncidentsConfig::default()
        }
    }

    #[test]
    fn neighbours_join_strangers_do_not() {
        let t = chain();
        let mut c = Correlator::new(cfg(2));
        let a = c.record(&t, &ComponentId::service("c"), 1_000, &anomaly());
        // A pod of c is c's unit.
        assert_eq!(
            c.record(&t, &ComponentId::pod("ns", "c-1"), 2_000, &anomaly()),
            a
        );
        assert_eq!(
            c.record(&t, &ComponentId::service("a"), 3_000, &anomaly()),
            a
        );
        assert_eq!(
            c.record(&t, &ComponentId::service("e"), 4_000, &anomaly()),
            a
        );
        let x = c.record(&t, &ComponentId::service("x"), 5_000, &anomaly());
        assert_ne!(x, a);
        let inc = c.get(a).unwrap();
        let members: Vec<String> = inc
            .members
            .iter()
            .map(|m| m.component.to_string())
            .collect();
        assert_eq!(members, vec!["service:c", "service:a", "service:e"]);
        assert_eq!(inc.members[0].anomalies, 2);
        assert_eq!(inc.version, 4);
    }

    #[test]
    fn time_windows_split_incidents_and_idle_ones_expire() {
        let t = chain();
        let mut c = Correlator::new(cfg(3));
        let first = c.record(&t, &ComponentId::service("b"), 0, &anomaly());
        let later = c.record(&t, &ComponentId::service("b"), 10 * 60_000, &anomaly());
        assert_ne!(first, later);
        assert_eq!(c.expire(16 * 60_000), vec![first]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn an_old_incident_takes_no_new_signals() {
        let t = chain();
        let mut c = Correlator::new(IncidentsConfig {
            max_duration: PromDuration::from_secs(600),
            ..cfg(3)
        });
        let first = c.record(&t, &ComponentId::service("b"), 0, &anomaly());
        // A signal every 4 minutes keeps it fresh, but not past 10 minutes of age.
        for i in 1..=2 {
            assert_eq!(
                c.record(&t, &ComponentId::service("b"), i * 240_000, &anomaly()),
                first
            );
        }
        assert_ne!(
            c.record(&t, &ComponentId::service("b"), 720_000, &anomaly()),
            first
        );
    }

    #[test]
    fn alerts_raise_severity_and_without_topology_time_groups() {
        let empty = Topology::default();
        let mut c = Correlator::new(cfg(3));
        let a = c.record(&empty, &ComponentId::service("web"), 0, &anomaly());
        let b = c.record(
            &empty,
            &ComponentId::service("db"),
            1_000,
            &Signal::Alert {
                name: "DbDown".into(),
                severity: "critical".into(),
            },
        );
        assert_eq!(a, b);
        let inc = c.get(a).unwrap();
        assert_eq!(inc.severity, "critical");
        assert!(inc.members[1].alerts.contains("DbDown"));
        assert_eq!(
            c.find(&empty, &ComponentId::service("db")).map(|i| i.id),
            Some(a)
        );
    }

    #[test]
    fn limits_bound_memory() {
        let t = Topology::default();
        let mut c = Correlator::new(IncidentsConfig {
            max_incidents: 2,
            max_components: 2,
            window: PromDuration::from_secs(1),
            ..IncidentsConfig::default()
        });
        for i in 0..5 {
            c.record(&t, &ComponentId::service("s"), i * 10_000, &anomaly());
        }
        assert_eq!(c.len(), 2);
        let id = c.record(&t, &ComponentId::service("a"), 100_000, &anomaly());
        c.record(&t, &ComponentId::service("b"), 100_001, &anomaly());
        c.record(&t, &ComponentId::service("c"), 100_002, &anomaly());
        assert_eq!(c.get(id).unwrap().members.len(), 2);
    }
}
