//! The figures, measured from the fault schedule and the world's noise-free state —
//! never from what the detectors or the rules believe.
//!
//! Each step the [`Recorder`] is shown the world (which faults are active, which
//! services are healthy) and the pipeline's alert changes and actions; at the end
//! [`Recorder::finish`] attributes every alert to a fault or calls it a false
//! positive, and computes MTTD, MTTR, the false-positive rate, remediation success
//! and human intervention with the definitions written into the report.
//!
//! Invariants: a fault's onset and recovery come only from the world's truth; an
//! alert is a true positive only if it names (by its service label) a service the
//! fault touched while it was active; nothing is averaged over an empty set (the
//! figure is then absent, and the report says so).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::pipeline::AlertChange;
use super::scenario::{FaultKind, Scenario};
use super::world::{FaultPhase, World};

/// Steps a fault's services must stay healthy for it to count as recovered.
const STABLE_STEPS: usize = 4;

/// Who carried an action out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The loop, on its own.
    Loop,
    /// The loop, after a human approved.
    LoopApproved,
    /// The simulated on-call engineer, by hand.
    Human,
}

/// One action as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// Seconds since the run's start.
    pub at_s: f64,
    pub rule: String,
    pub action: String,
    pub target: String,
    pub actor: Actor,
    /// `executed`, `dry_run` or `failed`.
    pub outcome: String,
    pub summary: String,
    /// Faults it fixed (from the scenario's `fixed_by`), judged by the world.
    pub fixes: Vec<String>,
    /// Whether a fault it fixed recovered within `measure.verify` (filled at the end).
    pub success: Option<bool>,
}

/// An action the policy refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub at_s: f64,
    pub rule: String,
    pub action: String,
    pub target: String,
    pub reason: String,
}

/// One firing of one alert, from firing to resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub rule: String,
    pub service: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub fired_s: f64,
    pub resolved_s: Option<f64>,
    /// The fault it is attributed to; `None`: a false positive.
    pub fault: Option<String>,
    /// The harmless event it fell in, if it is a false positive during one.
    pub during_benign: Option<String>,
}

/// What happened to one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub name: String,
    pub kind: &'static str,
    pub service: String,
    pub start_s: f64,
    /// First step at which a service was unhealthy while the fault's cause was active.
    pub onset_s: Option<f64>,
    /// First firing alert attributed to it.
    pub detected_s: Option<f64>,
    /// detected − onset (0 when detected before any impact).
    pub detection_seconds: Option<f64>,
    /// First step of a healthy minute after its cause ended (or, for load and
    /// slowness, after capacity absorbed it).
    pub recovered_s: Option<f64>,
    /// recovered − onset.
    pub recovery_seconds: Option<f64>,
    /// `auto`, `human`, `self` (ended on schedule or absorbed without action),
    /// `unrecovered` or `no_impact`.
    pub resolution: &'static str,
    /// Services that were unhealthy while it lasted.
    pub affected: Vec<String>,
    pub fixed_by: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub simulated_seconds: f64,
    pub steps: u64,
    pub wall_seconds: f64,
    pub mttd_seconds: Option<f64>,
    pub mttr_seconds: Option<f64>,
    pub false_positive_rate: Option<f64>,
    pub remediation_success_rate: Option<f64>,
    pub human_intervention_rate: Option<f64>,
    pub faults_detected: usize,
    pub faults_with_impact: usize,
    pub targets: Vec<TargetCheck>,
    pub incidents: Vec<Incident>,
    pub actions: Vec<ActionRecord>,
    pub refused: Vec<Refusal>,
    pub faults: Vec<FaultReport>,
    pub definitions: BTreeMap<&'static str, &'static str>,
    /// What went through the real pipeline.
    pub pipeline: serde_json::Value,
    /// Parts of the loop that did not run, and why.
    pub notes: Vec<String>,
}

/// One target against its figure.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub name: &'static str,
    /// `<` or `>`.
    pub op: &'static str,
    pub target: f64,
    pub value: Option<f64>,
    pub met: bool,
}

impl Report {
    /// Whether every target is met.
    pub fn targets_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }
}

#[derive(Debug, Default, Clone)]
struct FaultTrack {
    onset: Option<i64>,
    affected: BTreeSet<usize>,
    healthy_run: usize,
    healthy_since: Option<i64>,
    recovered: Option<i64>,
}

/// Collects what the report needs while the run goes.
pub struct Recorder {
    sc: Scenario,
    service_names: Vec<String>,
    tracks: Vec<FaultTrack>,
    open: BTreeMap<(String, BTreeMap<String, String>), usize>,
    pub incidents: Vec<Incident>,
    incident_ms: Vec<(i64, Option<i64>)>,
    pub actions: Vec<(i64, ActionRecord)>,
    pub refused: Vec<Refusal>,
    pub notes: Vec<String>,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Recorder {
    pub fn new(world: &World) -> Recorder {
        Recorder {
            sc: world.scenario().clone(),
            service_names: world.service_names().map(str::to_string).collect(),
            tracks: vec![FaultTrack::default(); world.faults().len()],
            open: BTreeMap::new(),
            incidents: Vec::new(),
            incident_ms: Vec::new(),
            actions: Vec::new(),
            refused: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The world after a step at `t` (ms since the run's start).
    pub fn observe_world(&mut self, world: &World, t: i64) {
        let truth = world.truth();
        let unhealthy: Vec<usize> = (0..truth.len()).filter(|&s| !truth[s].healthy).collect();
        for (i, f) in world.faults().iter().enumerate() {
            let tr = &mut self.tracks[i];
            if tr.recovered.is_some() || f.phase == FaultPhase::Scheduled {
                continue;
            }
            let cause_active = f.phase == FaultPhase::Active;
            if tr.onset.is_none() {
                if cause_active && !unhealthy.is_empty() {
                    tr.onset = Some(t);
                } else {
                    continue;
                }
            }
            tr.affected.extend(unhealthy.iter().copied());
            let absorbed = matches!(f.spec.kind, FaultKind::LoadSurge | FaultKind::Slowdown);
            let all_healthy = tr.affected.iter().all(|&s| truth[s].healthy);
            if all_healthy && (!cause_active || absorbed) {
                tr.healthy_since.get_or_insert(t);
                tr.healthy_run += 1;
                if tr.healthy_run >= STABLE_STEPS {
                    tr.recovered = tr.healthy_since;
                }
            } else {
                tr.healthy_run = 0;
                tr.healthy_since = None;
            }
        }
    }

    /// Alert changes of one evaluation (times in epoch ms; `start_ms` is the run's).
    pub fn observe_alerts(&mut self, changes: &[AlertChange], start_ms: i64) {
        for c in changes {
            let key = (c.rule.clone(), c.labels.clone());
            if c.firing {
                let service = c.labels.get(&self.sc.measure.service_label).cloned();
                self.open.insert(key, self.incidents.len());
                self.incidents.push(Incident {
                    rule: c.rule.clone(),
                    service,
                    labels: c.labels.clone(),
                    fired_s: secs(c.at_ms - start_ms),
                    resolved_s: None,
                    fault: None,
                    during_benign: None,
                });
                self.incident_ms.push((c.at_ms - start_ms, None));
            } else if let Some(i) = self.open.remove(&key) {
                self.incidents[i].resolved_s = Some(secs(c.at_ms - start_ms));
                self.incident_ms[i].1 = Some(c.at_ms - start_ms);
            }
        }
    }

    /// Computes the figures.
    pub fn finish(mut self, world: &World, end: i64) -> Report {
        let sc = &self.sc;
        let grace = sc.measure.grace.as_millis();
        let verify = sc.measure.verify.as_millis();
        let faults = world.faults();
        // Services each fault counts alerts on.
        let touched: Vec<BTreeSet<String>> = faults
            .iter()
            .zip(&self.tracks)
            .map(|(f, tr)| {
                let mut s: BTreeSet<String> = tr
                    .affected
                    .iter()
                    .map(|&i| self.service_names[i].clone())
                    .collect();
                s.insert(f.spec.service.clone());
                s.extend(f.spec.shows_on.iter().cloned());
                s
            })
            .collect();
        // Attribute every incident: to each fault it can belong to (for detection),
        // and, for the listing, to the one among them that started last.
        let mut detected: Vec<Option<i64>> = vec![None; faults.len()];
        for (k, inc) in self.incidents.iter_mut().enumerate() {
            let fired = self.incident_ms[k].0;
            let mut owner: Option<usize> = None;
            for (i, f) in faults.iter().enumerate() {
                let until = self.tracks[i]
                    .recovered
                    .or(f
                        .ended
                        .as_ref()
                        .map(|e| e.0)
                        .filter(|_| self.tracks[i].onset.is_none()))
                    .unwrap_or(end);
                let belongs = f.start <= fired
                    && fired <= until + grace
                    && inc.service.as_ref().is_some_and(|s| touched[i].contains(s));
                if !belongs {
                    continue;
                }
                if detected[i].is_none_or(|d| fired < d) {
                    detected[i] = Some(fired);
                }
                if owner.is_none_or(|o| faults[o].start <= f.start) {
                    owner = Some(i);
                }
            }
            match owner {
                Some(i) => inc.fault = Some(faults[i].spec.name.clone()),
                None => {
                    inc.during_benign = sc
                        .benign
                        .iter()
                        .find(|b| {
                            let s = b.start.as_millis();
                            s <= fired && fired <= s + b.duration.as_millis() + grace
                        })
                        .map(|b| b.name.clone());
                }
            }
        }
        // Actions: success when a fault they fix recovered within `verify`.
        let recovered_by_name: BTreeMap<&str, Option<i64>> = faults
            .iter()
            .zip(&self.tracks)
            .map(|(f, tr)| (f.spec.name.as_str(), tr.recovered))
            .collect();
        // A fault whose cause an action ended before it made anything unhealthy
        // was prevented: that action succeeded too.
        let prevented: BTreeMap<&str, bool> = faults
            .iter()
            .zip(&self.tracks)
            .map(|(f, tr)| {
                let by_action = f.ended.as_ref().is_some_and(|(_, by)| by.is_some());
                (f.spec.name.as_str(), tr.onset.is_none() && by_action)
            })
            .collect();
        for (at, a) in self.actions.iter_mut() {
            if a.outcome != "executed" || a.action == "notify" {
                continue;
            }
            a.success = Some(a.fixes.iter().any(|f| {
                prevented.get(f.as_str()).copied().unwrap_or(false)
                    || recovered_by_name
                        .get(f.as_str())
                        .copied()
                        .flatten()
                        .is_some_and(|r| r <= *at + verify)
            }));
        }
        // Per-fault results.
        let mut reports = Vec::with_capacity(faults.len());
        let (mut ttd, mut ttr) = (Vec::new(), Vec::new());
        let (mut impact, mut human) = (0usize, 0usize);
        for (i, f) in faults.iter().enumerate() {
            let tr = &self.tracks[i];
            let fixers: Vec<&(i64, ActionRecord)> = self
                .actions
                .iter()
                .filter(|(_, a)| a.outcome == "executed" && a.fixes.contains(&f.spec.name))
                .collect();
            let resolution = match (tr.onset, tr.recovered) {
                (None, _) => "no_impact",
                (Some(_), None) => "unrecovered",
                (Some(_), Some(r)) => match fixers.iter().rev().find(|(t, _)| *t <= r) {
                    Some((_, a)) if a.actor == Actor::Loop => "auto",
                    Some(_) => "human",
                    None => "self",
                },
            };
            let approved = fixers.iter().any(|(_, a)| a.actor != Actor::Loop);
            if tr.onset.is_some() {
                impact += 1;
                if approved || matches!(resolution, "human" | "unrecovered") {
                    human += 1;
                }
            }
            let detection = match (tr.onset, detected[i]) {
                (Some(o), Some(d)) => Some(secs((d - o).max(0))),
                _ => None,
            };
            let recovery = match (tr.onset, tr.recovered) {
                (Some(o), Some(r)) => Some(secs(r - o)),
                (Some(o), None) => {
                    ttr.push(secs(end - o));
                    None
                }
                _ => None,
            };
            if let Some(d) = detection {
                ttd.push(d);
            }
            if let Some(r) = recovery {
                ttr.push(r);
            }
            reports.push(FaultReport {
                name: f.spec.name.clone(),
                kind: f.spec.kind.as_str(),
                service: f.spec.service.clone(),
                start_s: secs(f.start),
                onset_s: tr.onset.map(secs),
                detected_s: detected[i].map(secs),
                detection_seconds: detection,
                recovered_s: tr.recovered.map(secs),
                recovery_seconds: recovery,
                resolution,
                affected: tr
                    .affected
                    .iter()
                    .map(|&s| self.service_names[s].clone())
                    .collect(),
                fixed_by: f
                    .spec
                    .fixed_by
                    .iter()
                    .map(|m| match &m.target {
                        Some(t) => format!("{} {t}", m.kind),
                        None => m.kind.clone(),
                    })
                    .collect(),
            });
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let fp = self.incidents.iter().filter(|i| i.fault.is_none()).count();
        let fp_rate = (!self.incidents.is_empty()).then(|| fp as f64 / self.incidents.len() as f64);
        let judged: Vec<bool> = self.actions.iter().filter_map(|(_, a)| a.success).collect();
        let success = (!judged.is_empty())
            .then(|| judged.iter().filter(|s| **s).count() as f64 / judged.len() as f64);
        let human_rate = (impact > 0).then(|| human as f64 / impact as f64);
        let faults_detected = reports
            .iter()
            .filter(|r| r.onset_s.is_some() && r.detected_s.is_some())
            .count();
        // A missed fault counts as never detected: MTTD is then not met.
        let missed = impact - faults_detected;
        let mttd = mean(&ttd);
        let mttr = mean(&ttr);
        let t = &sc.targets;
        let below = |name, target: f64, v: Option<f64>, extra: bool| TargetCheck {
            name,
            op: "<",
            target,
            value: v,
            met: v.is_some_and(|v| v < target) && extra,
        };
        let above = |name, target: f64, v: Option<f64>| TargetCheck {
            name,
            op: ">",
            target,
            value: v,
            met: v.is_some_and(|v| v > target),
        };
        let targets = vec![
            below("mttd_seconds", secs(t.mttd.as_millis()), mttd, missed == 0),
            below("mttr_seconds", secs(t.mttr.as_millis()), mttr, true),
            below(
                "false_positive_rate",
                t.false_positive_rate,
                fp_rate.or(Some(0.0)),
                true,
            ),
            above(
                "remediation_success_rate",
                t.remediation_success_rate,
                success,
            ),
            below(
                "human_intervention_rate",
                t.human_intervention_rate,
                human_rate,
                true,
            ),
        ];
        Report {
            scenario: sc.name.clone(),
            seed: sc.seed,
            simulated_seconds: secs(end),
            steps: 0,
            wall_seconds: 0.0,
            mttd_seconds: mttd,
            mttr_seconds: mttr,
            false_positive_rate: fp_rate,
            remediation_success_rate: success,
            human_intervention_rate: human_rate,
            faults_detected,
            faults_with_impact: impact,
            targets,
            incidents: self.incidents,
            actions: self.actions.into_iter().map(|(_, a)| a).collect(),
            refused: self.refused,
            faults: reports,
            definitions: definitions(),
            pipeline: serde_json::Value::Null,
            notes: self.notes,
        }
    }
}

/// The definitions written into every report.
pub fn definitions() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("healthy", "judged on the world's noise-free state, never on samples: a service is healthy while its p99 latency is within its slo_latency, its error ratio within slo.error_ratio, every pod's memory within slo.memory_ratio of its limit and (a cache) its hit ratio at least slo.hit_ratio"),
        ("onset", "the first step at which any service is unhealthy while the fault's cause is active; a fault that never makes a service unhealthy has no impact and is left out of MTTD, MTTR and human intervention"),
        ("detected", "the first alert that turns firing at or after the fault's start, up to `measure.grace` after its recovery, whose service label names the fault's service, a service in its `shows_on`, or a service that was unhealthy while it lasted; detection time = detected − onset, 0 when the alert came before any impact"),
        ("recovered", "the first step of STABLE_STEPS (4) consecutive steps at which every service the fault made unhealthy is healthy again, once its cause has ended (fixed or on schedule) — for load_surge and slowdown, whose cause goes on, once the added capacity absorbs it; recovery time = recovered − onset; a fault never recovered counts with the time to the end of the run"),
        ("mttd", "mean detection time over faults with impact that were detected; the target is met only if every fault with impact was detected"),
        ("mttr", "mean recovery time over faults with impact"),
        ("false_positive", "a firing alert that no fault accounts for (see detected); false-positive rate = false positives / all firing alerts"),
        ("remediation_success", "an executed, mutating action (not notify, not dry-run; by the loop or by hand) succeeds when it is in the `fixed_by` list of a fault active at that moment and that fault recovers within `measure.verify`, or ends that fault's cause before it made any service unhealthy (prevented); rate = successes / such actions"),
        ("human_intervention", "a fault with impact needed a human when an action that fixed it ran only after a human approved it or was done by hand, or when it never recovered; rate = such faults / faults with impact"),
    ])
}
