//! One analysis of one incident: choose the candidates, read their series from the
//! store, measure each one's change, read deploys, rank, and write the report.
//!
//! Candidates are the units the incident touched (anomaly events, alerts), the
//! units they depend on up to `analysis.hops` away, and the direct dependents of
//! all of those (as evidence: the healthy neighbours of a node, the other callers of
//! a service), at most `max_candidates` (touched first, then by distance). The time grid runs from `baseline + lead`
//! before the incident's first signal to `horizon` after it (or now); onsets are
//! searched from `lead` before the first signal.
//!
//! Must never: run on the ingest path (callers run it on the blocking pool), hold
//! a store lock while computing (series are copied out in [`Store::visit`]), read
//! more than `max_series_per_component` series per candidate.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use serde::Serialize;

use super::config::RcaConfig;
use super::identity::Identity;
use super::rank::{self, Candidate, ChangeEvent, Evidence, RankParams, Ranked};
use super::signals::{self, Change, ChangeParams, Grid, SeriesData};
use super::topology::{ComponentId, ComponentKind, Topology};
use crate::storage::{MatchOp, Matcher, SeriesId, Store, METRIC_NAME};

/// A component the incident touched, and when it first did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub component: ComponentId,
    pub first_ms: i64,
}

/// What to analyse.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub incident: u64,
    pub touched: &'a [Touch],
    /// The incident's first signal (ms).
    pub start_ms: i64,
    /// Now (ms): the grid ends here at the latest.
    pub now_ms: i64,
}

/// The gathered evidence and the grid it was measured on.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub evidence: Evidence,
    pub grid: Grid,
    /// Candidate indices of the touched units, earliest first.
    pub touched: Vec<usize>,
    /// Owners of each candidate (from the configured topology).
    pub owners: Vec<Vec<String>>,
}

/// Reads the candidates' evidence from the store.
pub fn gather(store: &Store, topo: &Topology, cfg: &RcaConfig, req: &Request<'_>) -> Gathered {
    let a = &cfg.analysis;
    let split_ms = req.start_ms - a.lead.as_millis();
    let start_ms = split_ms - a.baseline.as_millis();
    let end_ms = req
        .now_ms
        .min(req.start_ms + a.horizon.as_millis())
        .max(split_ms);
    let grid = Grid::new(start_ms, split_ms, end_ms, a.step.as_millis());

    // Candidates: touched units first (earliest first), then their dependencies.
    let mut first: BTreeMap<ComponentId, i64> = BTreeMap::new();
    for t in req.touched {
        let u = topo.unit_id(&t.component);
        let e = first.entry(u).or_insert(t.first_ms);
        *e = (*e).min(t.first_ms);
    }
    let mut touched: Vec<(ComponentId, i64)> = first.into_iter().collect();
    touched.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
    let max = a.max_candidates.max(1);
    let mut ids: Vec<ComponentId> = Vec::new();
    let mut index: HashMap<ComponentId, usize> = HashMap::new();
    let mut queue: VecDeque<(ComponentId, u32)> = VecDeque::new();
    for (id, _) in &touched {
        if ids.len() >= max {
            break;
        }
        if !index.contains_key(id) {
            index.insert(id.clone(), ids.len());
            ids.push(id.clone());
            queue.push_back((id.clone(), 0));
        }
    }
    while let Some((id, d)) = queue.pop_front() {
        if d >= a.hops {
            continue;
        }
        let Some(i) = topo.index_of(&id) else {
            continue;
        };
        for dep in topo.unit_dependencies(topo.unit_of(i)) {
            if ids.len() >= max {
                break;
            }
            let dep_id = topo.component(dep).id.clone();
            if !index.contains_key(&dep_id) {
                index.insert(dep_id.clone(), ids.len());
                ids.push(dep_id.clone());
                queue.push_back((dep_id, d + 1));
            }
        }
    }
    // Every candidate's direct dependents join as evidence: a node whose other pods
    // are healthy, or a service whose other callers are fine, is a weaker cause.
    let potential = ids.len();
    for k in 0..potential {
        let Some(i) = topo.index_of(&ids[k]) else {
            continue;
        };
        for dep in topo.unit_dependents(topo.unit_of(i)) {
            if ids.len() >= max {
                break;
            }
            let id = topo.component(dep).id.clone();
            if !index.contains_key(&id) {
                index.insert(id.clone(), ids.len());
                ids.push(id);
            }
        }
    }
    let deps: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| match topo.index_of(id) {
            Some(i) => topo
                .unit_dependencies(topo.unit_of(i))
                .into_iter()
                .filter_map(|d| index.get(&topo.component(d).id).copied())
                .collect(),
            None => Vec::new(),
        })
        .collect();

    let identity = Identity::new(topo, &cfg.identity.service_labels);
    let params = ChangeParams::default();
    let touched_at: HashMap<&ComponentId, i64> = touched.iter().map(|(c, t)| (c, *t)).collect();
    let series = read_series(
        store,
        topo,
        &identity,
        &ids,
        &index,
        &grid,
        a.max_series_per_component,
    );
    let mut events = change_events(store, topo, &ids, &grid);
    let mut candidates = Vec::with_capacity(ids.len());
    let mut owners = Vec::with_capacity(ids.len());
    for ((id, series), changes) in ids.iter().zip(series).zip(events.drain(..)) {
        let change = if series.is_empty() {
            None
        } else {
            let sigs = signals::extract(&series, &grid, a.max_series_per_component);
            let changes: Vec<Change> = sigs
                .iter()
                .filter_map(|s| signals::change(s, &grid, &params))
                .collect();
            Some(signals::summarize(changes, sigs.len(), params.theta, 5))
        };
        owners.push(
            topo.index_of(id)
                .map(|i| topo.component(i).owners.clone())
                .unwrap_or_default(),
        );
        candidates.push(Candidate {
            id: id.clone(),
            change,
            touched: touched_at.contains_key(id),
            first_signal_ms: touched_at.get(id).copied(),
            changes,
        });
    }
    let touched_idx = touched
        .iter()
        .filter_map(|(c, _)| index.get(c).copied())
        .collect();
    Gathered {
        evidence: Evidence {
            candidates,
            deps,
            start_ms: req.start_ms,
        },
        grid,
        touched: touched_idx,
        owners,
    }
}

/// The series of every candidate unit with samples on the grid, at most `max` per
/// candidate, in candidate order.
fn read_series(
    store: &Store,
    topo: &Topology,
    identity: &Identity<'_>,
    ids: &[ComponentId],
    index: &HashMap<ComponentId, usize>,
    grid: &Grid,
    max: usize,
) -> Vec<Vec<SeriesData>> {
    let (mint, maxt) = (grid.start_ms - 2 * grid.step_ms, grid.end_ms());
    let mut seen: HashSet<SeriesId> = HashSet::new();
    let mut out: Vec<Vec<SeriesData>> = vec![Vec::new(); ids.len()];
    for sel in identity.selectors_for_units(ids) {
        store.visit(&sel, mint, maxt, |id, labels, ring| {
            if seen.contains(&id) {
                return;
            }
            let name = labels.metric_name().unwrap_or("");
            if signals::is_excluded(name) {
                return;
            }
            let Some(c) = identity.of_series(labels) else {
                return;
            };
            let unit = match topo.index_of(&c) {
                Some(i) => &topo.component(topo.unit_of(i)).id,
                None => &c,
            };
            let Some(&k) = index.get(unit) else { return };
            if out[k].len() >= max {
                return;
            }
            seen.insert(id);
            let mut s = SeriesData {
                labels: labels.clone(),
                ts: Vec::new(),
                vs: Vec::new(),
            };
            ring.copy_range(mint, maxt, &mut s.ts, &mut s.vs);
            out[k].push(s);
        });
    }
    out
}

/// Deploys and config changes of the candidates' workloads inside the grid
/// (kube-state-metrics: a `metadata_generation` increase, a ReplicaSet born in the
/// window), in candidate order. Two store scans for all candidates together.
fn change_events(
    store: &Store,
    topo: &Topology,
    ids: &[ComponentId],
    grid: &Grid,
) -> Vec<Vec<ChangeEvent>> {
    let mut out: Vec<Vec<ChangeEvent>> = vec![Vec::new(); ids.len()];
    // (namespace, workload name) -> candidate.
    let mut workloads: HashMap<(&str, &str), usize> = HashMap::new();
    for (k, id) in ids.iter().enumerate() {
        let Some(i) = topo.index_of(id) else { continue };
        for &m in topo.unit_members(topo.unit_of(i)) {
            let c = topo.component(m);
            if c.id.kind == ComponentKind::Workload {
                if let Some((ns, name)) = c.id.name.split_once('/') {
                    workloads.insert((ns, name), k);
                }
            }
        }
    }
    if workloads.is_empty() {
        return out;
    }
    let (mint, maxt) = (grid.start_ms, grid.end_ms());
    let generations = "kube_deployment_metadata_generation|kube_statefulset_metadata_generation|kube_daemonset_metadata_generation";
    if let Ok(m) = Matcher::new(MatchOp::Regex, METRIC_NAME, generations) {
        store.visit(&[m], mint, maxt, |_, labels, ring| {
            let ns = labels.get("namespace").unwrap_or("");
            let Some((label, name, k)) = ["deployment", "statefulset", "daemonset"]
                .iter()
                .find_map(|l| {
                    let name = labels.get(l)?;
                    workloads.get(&(ns, name)).map(|&k| (*l, name, k))
                })
            else {
                return;
            };
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            ring.copy_range(mint, maxt, &mut ts, &mut vs);
            for j in 1..vs.len() {
                if vs[j].is_finite() && vs[j - 1].is_finite() && vs[j] > vs[j - 1] {
                    out[k].push(ChangeEvent {
                        at_ms: ts[j],
                        what: format!("{label} {ns}/{name} generation {} -> {}", vs[j - 1], vs[j]),
                    });
                }
            }
        });
    }
    // A ReplicaSet first seen well after the data starts was created then.
    let mut owners: Vec<&str> = workloads.keys().map(|(_, n)| *n).collect();
    owners.sort_unstable();
    owners.dedup();
    let plain = owners.iter().all(|n| {
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    let alternation: Vec<String> = owners
        .iter()
        .map(|n| {
            if plain {
                n.to_string()
            } else {
                regex::escape(n)
            }
        })
        .collect();
    if let Ok(m) = Matcher::new(MatchOp::Regex, "owner_name", alternation.join("|")) {
        let sel = [Matcher::equal(METRIC_NAME, "kube_replicaset_owner"), m];
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        store.visit(&sel, mint, maxt, |_, labels, window| {
            let ns = labels.get("namespace").unwrap_or("");
            let Some(&k) = labels
                .get("owner_name")
                .and_then(|o| workloads.get(&(ns, o)))
            else {
                return;
            };
            ts.clear();
            vs.clear();
            window.copy_range(mint, maxt, &mut ts, &mut vs);
            if let Some(&born) = ts.first() {
                if born > mint + 5 * grid.step_ms && born <= maxt {
                    out[k].push(ChangeEvent {
                        at_ms: born,
                        what: format!(
                            "new ReplicaSet {ns}/{}",
                            labels.get("replicaset").unwrap_or("?")
                        ),
                    });
                }
            }
        });
    }
    for events in &mut out {
        events.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.what.cmp(&b.what)));
        events.dedup();
    }
    out
}

/// Which ranking to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The single-fault Bayesian model (the runtime's).
    Bayes,
    /// Baseline: earliest onset.
    EarliestOnset,
    /// Baseline: largest robust z-score of change.
    LargestChange,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Bayes => "bayes_single_fault",
            Method::EarliestOnset => "earliest_onset",
            Method::LargestChange => "largest_change",
        }
    }

    /// Ranks gathered evidence.
    pub fn rank(self, ev: &Evidence) -> Vec<Ranked> {
        match self {
            Method::Bayes => rank::bayes(ev, &RankParams::default()),
            Method::EarliestOnset => rank::earliest_onset(ev),
            Method::LargestChange => rank::largest_change(ev),
        }
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn opt_secs<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(ms) => s.serialize_f64(secs(*ms)),
        None => s.serialize_none(),
    }
}

fn ms_secs<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(secs(*v))
}

/// A component the cause explains (it depends on the cause and is abnormal).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    pub component: ComponentId,
    /// Hops from the cause.
    pub hops: u32,
    /// Probability it is abnormal.
    pub anomaly: f64,
    #[serde(serialize_with = "opt_secs")]
    pub onset: Option<i64>,
    /// How the fault reaches it: cause first.
    pub path: Vec<ComponentId>,
}

/// One ranked cause with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedCause {
    /// 1 for the most likely cause.
    pub rank: usize,
    /// The unit (its representative component).
    pub component: ComponentId,
    /// Posterior probability that the fault is here.
    pub confidence: f64,
    /// Probability the component itself is abnormal (`null` without data).
    pub anomaly: Option<f64>,
    /// When its change started.
    #[serde(serialize_with = "opt_secs")]
    pub onset: Option<i64>,
    /// Its largest robust z-score of change.
    pub score: f64,
    /// The propagation path from the cause to the incident's focus (the first
    /// touched component); just the cause when the focus does not depend on it.
    pub path: Vec<ComponentId>,
    /// Abnormal components depending on it, nearest first (at most 20).
    pub explains: Vec<Explained>,
    /// Its strongest signal changes: series, onset, score, baseline and level.
    pub evidence: Vec<Change>,
    /// Deploys and config changes of its workloads in the window.
    pub changes: Vec<ChangeEvent>,
    /// Owners from the configured topology.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// One line for people.
    pub summary: String,
}

/// The analysis window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowView {
    #[serde(serialize_with = "ms_secs")]
    pub start: i64,
    /// Onsets are searched from here.
    #[serde(rename = "onsetsFrom", serialize_with = "ms_secs")]
    pub onsets_from: i64,
    #[serde(serialize_with = "ms_secs")]
    pub end: i64,
    #[serde(rename = "stepSeconds")]
    pub step_seconds: f64,
}

/// The result of one analysis: what the API shows, alerts carry, Decide reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RcaReport {
    pub incident: u64,
    #[serde(rename = "analyzedAt", serialize_with = "ms_secs")]
    pub analyzed_at_ms: i64,
    /// Wall time of the analysis.
    #[serde(rename = "durationSeconds")]
    pub duration_seconds: f64,
    pub method: &'static str,
    pub window: WindowView,
    /// Number of candidates ranked.
    pub candidates: usize,
    /// The incident's touched components (units), earliest first.
    pub symptoms: Vec<ComponentId>,
    /// Causes, most likely first (at most `analysis.max_causes`).
    pub causes: Vec<RankedCause>,
}

impl RcaReport {
    /// The most likely cause.
    pub fn top(&self) -> Option<&RankedCause> {
        self.causes.first()
    }

    /// The path from the top cause to `component` (a symptom), or the top cause's
    /// path to the incident's focus when `component` is not among those it explains.
    pub fn path_to(&self, component: &ComponentId) -> Vec<ComponentId> {
        let Some(top) = self.top() else {
            return Vec::new();
        };
        top.explains
            .iter()
            .find(|e| &e.component == component)
            .map(|e| e.path.clone())
            .unwrap_or_else(|| top.path.clone())
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Builds the report from gathered evidence and a ranking.
pub fn report(
    req: &Request<'_>,
    g: &Gathered,
    ranked: &[Ranked],
    method: Method,
    max_causes: usize,
    started: Instant,
) -> RcaReport {
    let ev = &g.evidence;
    let p = RankParams::default();
    let focus = g.touched.first().copied();
    let abnormal_total = (0..ev.candidates.len())
        .filter(|&i| ev.anomaly(i, &p).is_some_and(|a| a >= 0.5))
        .count();
    let causes = ranked
        .iter()
        .take(max_causes)
        .enumerate()
        .map(|(k, r)| {
            let c = &ev.candidates[r.index];
            let ids = |path: Vec<usize>| -> Vec<ComponentId> {
                path.into_iter()
                    .map(|i| ev.candidates[i].id.clone())
                    .collect()
            };
            let path = focus
                .and_then(|f| ev.path(r.index, f))
                .map(ids)
                .unwrap_or_else(|| vec![c.id.clone()]);
            let mut explains: Vec<Explained> = ev
                .affected(r.index)
                .into_iter()
                .filter_map(|(v, hops)| {
                    let a = ev.anomaly(v, &p)?;
                    (a >= 0.5).then(|| Explained {
                        component: ev.candidates[v].id.clone(),
                        hops,
                        anomaly: a,
                        onset: ev.onset(v),
                        path: ev.path(r.index, v).map(ids).unwrap_or_default(),
                    })
                })
                .collect();
            explains.sort_by(|a, b| {
                a.hops
                    .cmp(&b.hops)
                    .then_with(|| a.onset.cmp(&b.onset))
                    .then_with(|| a.component.cmp(&b.component))
            });
            let n_explained = explains.len();
            explains.truncate(20);
            let evidence = c
                .change
                .as_ref()
                .map(|ch| ch.changes.clone())
                .unwrap_or_default();
            let score = c.change.as_ref().map_or(0.0, |ch| ch.score);
            let mut summary = match evidence.first() {
                Some(e) if e.onset_ms.is_some() => format!(
                    "{}: {} of {} ({:.1} robust z) from {}",
                    c.id,
                    match e.direction {
                        signals::Direction::Up => "rise",
                        signals::Direction::Down => "drop",
                        signals::Direction::Vanished => "loss",
                        signals::Direction::Appeared => "appearance",
                    },
                    e.signal,
                    e.score,
                    rfc3339(e.onset_ms.unwrap_or(0))
                ),
                _ if c.change.is_none() => format!("{}: no series found", c.id),
                _ => format!("{}: no sustained change", c.id),
            };
            summary.push_str(&format!(
                "; {n_explained} of {} abnormal candidates depend on it",
                abnormal_total.saturating_sub(usize::from(
                    ev.anomaly(r.index, &p).is_some_and(|a| a >= 0.5)
                ))
            ));
            if let Some(ch) = c.changes.last() {
                summary.push_str(&format!("; {} at {}", ch.what, rfc3339(ch.at_ms)));
            }
            RankedCause {
                rank: k + 1,
                component: c.id.clone(),
                confidence: r.confidence,
                anomaly: ev.anomaly(r.index, &p),
                onset: ev.onset(r.index),
                score,
                path,
                explains,
                evidence,
                changes: c.changes.clone(),
                owners: g.owners[r.index].clone(),
                summary,
            }
        })
        .collect();
    RcaReport {
        incident: req.incident,
        analyzed_at_ms: req.now_ms,
        duration_seconds: started.elapsed().as_secs_f64(),
        method: method.as_str(),
        window: WindowView {
            start: g.grid.start_ms,
            onsets_from: g.grid.t(g.grid.split.min(g.grid.len.saturating_sub(1))),
            end: g.grid.end_ms(),
            step_seconds: g.grid.step_ms as f64 / 1000.0,
        },
        candidates: ev.candidates.len(),
        symptoms: g
            .touched
            .iter()
            .map(|&i| ev.candidates[i].id.clone())
            .collect(),
        causes,
    }
}

/// Gathers, ranks with the runtime's method and reports: the whole analysis.
pub fn analyze(store: &Store, topo: &Topology, cfg: &RcaConfig, req: &Request<'_>) -> RcaReport {
    let started = Instant::now();
    let g = gather(store, topo, cfg, req);
    let ranked = Method::Bayes.rank(&g.evidence);
    report(
        req,
        &g,
        &ranked,
        Method::Bayes,
        cfg.analysis.max_causes,
        started,
    )
}

#[cfg(test)]
mod tests;
