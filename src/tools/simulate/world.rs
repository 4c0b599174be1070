//! The simulated world: services with a dependency topology, their pods and
//! counters, the faults acting on them, and how it all reacts to actions.
//!
//! Every step the world moves its state forward (faults start and end, pods start,
//! crash, leak and get OOM-killed, queues fill and drain), computes each service's
//! flow — requests arriving, served, failed, p99 latency — callers before callees for
//! demand and callees before callers for latency and errors, and keeps the noise-free
//! result as the *truth* the report measures against. [`World::samples`] reads the
//! world the way exporters would (counters, gauges, per-pod series) with measurement
//! noise; harmless noise events only touch those readings, never the truth.
//!
//! Physics, in one place and deliberately simple: a service's capacity is its ready
//! pods × `capacity` ÷ slowness; p99 latency is its own `latency` × slowness ÷
//! (1 − utilisation) plus the wait of its queue, plus what its calls add (a call made
//! by a share `w` of requests adds `√w` of the callee's p99, `w` calls per request add
//! `w` of it); errors compose as independent failure chances; a queue holds at most
//! 10 s of capacity and overflows as errors; a pod near its memory limit slows down
//! (GC pressure) and at the limit is OOM-killed.
//!
//! Invariants: deterministic — the same scenario and seed give the same samples and
//! the same reactions, because all randomness comes from one seeded generator drawn in
//! a fixed order; every value stays finite; the world never reads a clock.
//! Must never: let what the detectors see (noise) change the truth.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use super::scenario::{
    BenignKind, BenignSpec, FaultKind, FaultSpec, MatchKind, Scenario, ServiceKind, Signal,
};
use crate::act::{ActError, Action, Effect, ObjectKind, ObjectRef, ReplicaChange};

/// Time a new pod (or a restarted container) takes to become ready.
const POD_START_MS: i64 = 20_000;
/// Longest CrashLoopBackOff delay, as the kubelet's.
const MAX_BACKOFF_MS: i64 = 300_000;
/// A queue holds at most this many seconds of capacity; the rest is dropped.
const QUEUE_SECONDS: f64 = 10.0;
/// Time constant of a cleared cache warming back up.
const CACHE_WARM_MS: f64 = 60_000.0;
/// Latency of a service with no ready pod (requests time out).
const TIMEOUT_S: f64 = 10.0;
/// Utilisation is capped here in the latency formula (the queue takes over above).
const RHO_CAP: f64 = 0.95;
/// Share of a pod's memory limit above which it slows down.
const GC_PRESSURE_FROM: f64 = 0.8;

/// One pod.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    /// Memory leaked since the container started, MiB.
    leaked_mib: f64,
    ready_at: i64,
    /// Set while the pod is being replaced: it serves until then.
    terminate_at: Option<i64>,
    restarts: u64,
    cpu_seconds: f64,
    /// CrashLoopBackOff: when the container next crashes, and the current back-off.
    crash: Option<(i64, i64)>,
}

impl Pod {
    fn ready(&self, t: i64) -> bool {
        self.ready_at <= t && self.crash.is_none()
    }
}

/// A service's running state.
#[derive(Debug, Clone)]
struct Service {
    pods: Vec<Pod>,
    queue: f64,
    /// Deployment revision (bad deploys add one, rollbacks go back).
    revision: u64,
    /// The revisions a rollback can go back to, newest last, with the fault each
    /// brought (if any).
    history: Vec<(u64, Option<usize>)>,
    /// The fault the running revision carries.
    bad_revision: Option<usize>,
    config: BTreeMap<String, String>,
    /// Cache warmth, 0 (just cleared) to 1.
    warm: f64,
    requests_ok: f64,
    requests_failed: f64,
    cache_hits: f64,
    cache_misses: f64,
    /// Calls to external dependencies: name → (ok, failed).
    upstream: BTreeMap<String, (f64, f64)>,
    /// Requests dropped by actions (in-flight on killed pods), failed at the next step.
    dropped: f64,
}

/// The noise-free state of one service at one step: what the report measures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Truth {
    /// Requests per second arriving.
    pub demand: f64,
    /// p99 latency, seconds, including calls.
    pub latency_s: f64,
    /// Share of requests failing, including calls.
    pub error_ratio: f64,
    /// Demand over capacity.
    pub utilization: f64,
    /// Cache hit ratio (caches only, else 1).
    pub hit_ratio: f64,
    /// The highest pod memory over its limit.
    pub memory_ratio: f64,
    pub queue: f64,
    pub ready_pods: u32,
    pub healthy: bool,
}

/// A fault's lifecycle in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    Scheduled,
    Active,
    Ended,
}

/// A fault and what happened to it.
#[derive(Debug, Clone)]
pub struct FaultRun {
    pub spec: FaultSpec,
    pub phase: FaultPhase,
    /// Scheduled start and end (ms since the run's start; end `None`: never).
    pub start: i64,
    pub end: Option<i64>,
    /// When the cause ended, and by which action (None: on schedule).
    pub ended: Option<(i64, Option<String>)>,
    /// Fixing actions applied while it was active (time, summary).
    pub fixes: Vec<(i64, String)>,
}

impl FaultRun {
    /// How much of the effect is in force at `t` (0..1, the ramp).
    fn level(&self, t: i64) -> f64 {
        if self.phase != FaultPhase::Active {
            return 0.0;
        }
        match self.spec.ramp.map(|r| r.as_millis()) {
            Some(r) if r > 0 => ((t - self.start) as f64 / r as f64).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }
}

/// Something the world did that the timeline shows.
#[derive(Debug, Clone, Serialize)]
pub struct WorldEvent {
    /// ms since the run's start.
    pub t: i64,
    pub service: String,
    pub what: String,
}

/// One exported sample: labels (with `__name__`) and value.
pub type Reading = (Vec<(&'static str, String)>, f64);

/// The simulated world.
pub struct World {
    sc: Scenario,
    step_ms: i64,
    rng: Pcg64Mcg,
    order: Vec<usize>,
    services: Vec<Service>,
    faults: Vec<FaultRun>,
    truth: Vec<Truth>,
    slo_latency_s: Vec<f64>,
    entry: usize,
    next_pod: u64,
    /// ms since the run's start of the last step.
    t: i64,
    events: Vec<WorldEvent>,
}

fn gauss(rng: &mut Pcg64Mcg) -> f64 {
    // Box–Muller; u1 in (0, 1] so the log is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl World {
    /// A world in its initial state (every pod ready) for a validated scenario.
    pub fn new(sc: &Scenario) -> World {
        let order = sc
            .call_order()
            .unwrap_or_else(|_| (0..sc.services.len()).collect());
        let entry = sc
            .entry()
            .and_then(|e| sc.services.iter().position(|s| s.name == e))
            .unwrap_or(0);
        let mut w = World {
            sc: sc.clone(),
            step_ms: sc.step.as_millis(),
            rng: Pcg64Mcg::seed_from_u64(sc.seed),
            order,
            services: Vec::new(),
            faults: sc
                .faults
                .iter()
                .map(|f| FaultRun {
                    spec: f.clone(),
                    phase: FaultPhase::Scheduled,
                    start: f.start.as_millis(),
                    end: f.duration.map(|d| f.start.as_millis() + d.as_millis()),
                    ended: None,
                    fixes: Vec::new(),
                })
                .collect(),
            truth: vec![Truth::default(); sc.services.len()],
            slo_latency_s: vec![f64::INFINITY; sc.services.len()],
            entry,
            next_pod: 0,
            t: 0,
            events: Vec::new(),
        };
        for s in &sc.services {
            let replicas = match s.kind {
                ServiceKind::External => 0,
                _ => s.replicas.unwrap_or(2),
            };
            let pods = (0..replicas).map(|_| w.new_pod(&s.name, -1)).collect();
            w.services.push(Service {
                pods,
                queue: 0.0,
                revision: 1,
                history: Vec::new(),
                bad_revision: None,
                config: s.config.clone(),
                warm: 1.0,
                requests_ok: 0.0,
                requests_failed: 0.0,
                cache_hits: 0.0,
                cache_misses: 0.0,
                upstream: s
                    .calls
                    .keys()
                    .filter(|d| {
                        sc.service(d)
                            .is_some_and(|d| d.kind == ServiceKind::External)
                    })
                    .map(|d| (d.clone(), (0.0, 0.0)))
                    .collect(),
                dropped: 0.0,
            });
        }
        // Latency objectives: the service's p99 at mean traffic, no fault, × factor.
        let baseline = w.flow(sc.traffic.rate, 0, false);
        for (i, s) in sc.services.iter().enumerate() {
            w.slo_latency_s[i] = match s.slo_latency {
                Some(d) => d.as_millis() as f64 / 1000.0,
                None => baseline[i].latency_s * sc.slo.latency_factor,
            };
        }
        w
    }

    fn new_pod(&mut self, service: &str, ready_at: i64) -> Pod {
        self.next_pod += 1;
        Pod {
            name: format!("{service}-{:05x}", (self.next_pod * 0x9e37) & 0xfffff),
            leaked_mib: 0.0,
            ready_at,
            terminate_at: None,
            restarts: 0,
            cpu_seconds: 0.0,
            crash: None,
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.sc
    }

    /// ms since the run's start of the last step.
    pub fn now(&self) -> i64 {
        self.t
    }

    pub fn truth(&self) -> &[Truth] {
        &self.truth
    }

    pub fn faults(&self) -> &[FaultRun] {
        &self.faults
    }

    pub fn events(&self) -> &[WorldEvent] {
        &self.events
    }

    /// Each service's latency objective (seconds), in scenario order.
    pub fn slo_latency_s(&self) -> &[f64] {
        &self.slo_latency_s
    }

    /// The services' names, in scenario order.
    pub fn service_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.sc.services.iter().map(|s| s.name.as_str())
    }

    fn log(&mut self, service: usize, what: String) {
        self.events.push(WorldEvent {
            t: self.t,
            service: self.sc.services[service].name.clone(),
            what,
        });
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.sc.services.iter().position(|s| s.name == name)
    }

    /// Moves the world to `t` (ms since the run's start; one step after the last).
    pub fn step(&mut self, t: i64) {
        let dt_ms = (t - self.t).max(0);
        self.t = t;
        self.schedule_faults(t);
        self.pod_lifecycle(t, dt_ms);
        let rate = self.entry_rate(t);
        let rate = rate * (1.0 + self.sc.traffic.noise * gauss(&mut self.rng));
        let flows = self.flow(rate.max(0.0), t, true);
        self.account(&flows, t, dt_ms as f64 / 1000.0);
        self.truth = flows;
    }

    /// Requests per second arriving at the entry at `t`: daily seasonality and
    /// expected peaks (no noise).
    pub fn entry_rate(&self, t: i64) -> f64 {
        let tr = &self.sc.traffic;
        let hour = ((t as f64 / 3_600_000.0) + self.start_hour()) % 24.0;
        let season =
            1.0 + tr.daily_amplitude * (std::f64::consts::TAU * (hour - tr.peak_hour) / 24.0).cos();
        let mut peak = 1.0;
        for b in &self.sc.benign {
            if b.kind == BenignKind::Peak {
                peak *= 1.0 + (b.factor.unwrap_or(1.0) - 1.0) * peak_shape(b, t);
            }
        }
        tr.rate * season * peak
    }

    fn start_hour(&self) -> f64 {
        chrono::DateTime::parse_from_rfc3339(&self.sc.start)
            .map(|d| {
                use chrono::Timelike;
                d.hour() as f64 + d.minute() as f64 / 60.0
            })
            .unwrap_or(0.0)
    }

    fn schedule_faults(&mut self, t: i64) {
        for i in 0..self.faults.len() {
            let f = &self.faults[i];
            let svc = self.index(&f.spec.service).unwrap_or(0);
            match f.phase {
                FaultPhase::Scheduled if f.start <= t => {
                    self.faults[i].phase = FaultPhase::Active;
                    let name = self.faults[i].spec.name.clone();
                    let kind = self.faults[i].spec.kind;
                    self.log(svc, format!("fault {name} ({}) starts", kind.as_str()));
                    if kind == FaultKind::BadDeploy {
                        let s = &mut self.services[svc];
                        s.history.push((s.revision, s.bad_revision));
                        s.revision += 1;
                        s.bad_revision = Some(i);
                        self.rolling_replace(svc, t, 0.0);
                        let rev = self.services[svc].revision;
                        self.log(svc, format!("deploy of revision {rev}"));
                    }
                }
                FaultPhase::Active if f.end.is_some_and(|e| e <= t) => {
                    self.end_fault(i, t, None);
                }
                _ => {}
            }
        }
    }

    fn end_fault(&mut self, i: usize, t: i64, by: Option<String>) {
        let f = &mut self.faults[i];
        f.phase = FaultPhase::Ended;
        f.ended = Some((t, by.clone()));
        let (name, svc) = (f.spec.name.clone(), f.spec.service.clone());
        let kind = f.spec.kind;
        let si = self.index(&svc).unwrap_or(0);
        if kind == FaultKind::BadDeploy && self.services[si].bad_revision == Some(i) {
            self.services[si].bad_revision = None;
        }
        if kind == FaultKind::CrashLoop {
            for p in &mut self.services[si].pods {
                if p.crash.take().is_some() {
                    p.ready_at = p.ready_at.max(t + POD_START_MS);
                }
            }
        }
        let how = match by {
            Some(a) => format!("fixed by {a}"),
            None => "ends".to_string(),
        };
        self.log(si, format!("fault {name} {how}"));
    }

    /// Effects of the active faults of `kind` on service `s`, as (level, fault).
    fn active(&self, s: usize, kind: FaultKind) -> impl Iterator<Item = (f64, &FaultSpec)> + '_ {
        let name = &self.sc.services[s].name;
        let t = self.t;
        self.faults
            .iter()
            .filter(move |f| {
                f.phase == FaultPhase::Active && f.spec.kind == kind && &f.spec.service == name
            })
            .map(move |f| (f.level(t), &f.spec))
    }

    fn shift(&self, s: usize, signal: Signal, v: f64) -> f64 {
        self.active(s, FaultKind::Shift)
            .filter(|(_, f)| f.signal == Some(signal))
            .fold(v, |v, (l, f)| {
                let factor = 1.0 + (f.factor.unwrap_or(1.0) - 1.0) * l;
                v * factor + f.offset.unwrap_or(0.0) * l
            })
    }

    fn pod_lifecycle(&mut self, t: i64, dt_ms: i64) {
        let dt_h = dt_ms as f64 / 3_600_000.0;
        for s in 0..self.services.len() {
            self.services[s]
                .pods
                .retain(|p| p.terminate_at.is_none_or(|e| e > t));
            let crash_share: f64 = self
                .active(s, FaultKind::CrashLoop)
                .map(|(_, f)| f.share.unwrap_or(1.0))
                .fold(0.0, f64::max);
            let leak: f64 = self
                .active(s, FaultKind::MemoryLeak)
                .map(|(l, f)| l * f.leak_mib_per_hour.unwrap_or(0.0))
                .sum();
            let spec = &self.sc.services[s];
            let (base, limit) = (spec.memory_mib, spec.memory_limit_mib);
            let crashing = if crash_share > 0.0 {
                ((crash_share * self.services[s].pods.len() as f64).round() as usize).max(1)
            } else {
                0
            };
            let mut log = Vec::new();
            for (k, p) in self.services[s].pods.iter_mut().enumerate() {
                if k < crashing && p.terminate_at.is_none() {
                    match p.crash {
                        None => p.crash = Some((t + 5_000, 10_000)),
                        Some((at, backoff)) if at <= t => {
                            p.restarts += 1;
                            p.crash = Some((t + backoff, (backoff * 2).min(MAX_BACKOFF_MS)));
                        }
                        _ => {}
                    }
                }
                if p.ready_at <= t {
                    // Pods leak at slightly different rates (their traffic differs),
                    // so they do not all reach the limit at once.
                    let jitter = 0.85 + 0.3 * ((k * 7 + 3) % 10) as f64 / 10.0;
                    p.leaked_mib += leak * jitter * dt_h;
                }
                if base + p.leaked_mib >= limit {
                    p.restarts += 1;
                    p.leaked_mib = 0.0;
                    p.ready_at = t + POD_START_MS;
                    log.push(format!("pod {} OOM-killed", p.name));
                }
            }
            for l in log {
                self.log(s, l);
            }
        }
    }

    /// The flow through every service at `t` with `entry_rate` arriving, from the
    /// current pods and faults. `live` also moves queues and cache warmth.
    fn flow(&mut self, entry_rate: f64, t: i64, live: bool) -> Vec<Truth> {
        let n = self.services.len();
        let dt = if live {
            self.step_ms as f64 / 1000.0
        } else {
            0.0
        };
        let mut demand = vec![0.0; n];
        let mut out = vec![Truth::default(); n];
        demand[self.entry] = entry_rate;
        let mut hit = vec![1.0; n];
        let mut own_latency = vec![0.0; n];
        let mut own_errors = vec![0.0; n];
        // Callers first: demand flows down.
        for &s in &self.order.clone() {
            let spec = &self.sc.services[s];
            if spec.kind == ServiceKind::Batch {
                let ready = self.services[s].pods.iter().filter(|p| p.ready(t)).count();
                demand[s] += spec.load.unwrap_or(0.0) * ready as f64;
            }
            let surge: f64 = self
                .active(s, FaultKind::LoadSurge)
                .map(|(l, f)| 1.0 + (f.factor.unwrap_or(1.0) - 1.0) * l)
                .product();
            demand[s] = self.shift(s, Signal::Requests, demand[s] * surge).max(0.0);
            let d = demand[s];
            if spec.kind == ServiceKind::Cache {
                let mut h = spec.hit_ratio.unwrap_or(1.0);
                for (l, f) in self.active(s, FaultKind::CachePollution) {
                    h = h + (f.hit_ratio.unwrap_or(h) - h) * l;
                }
                h = self
                    .shift(s, Signal::HitRatio, h * self.services[s].warm)
                    .clamp(0.0, 1.0);
                hit[s] = h;
                if let Some(m) = spec.misses_to.as_deref().and_then(|m| self.index(m)) {
                    demand[m] += d * (1.0 - h);
                }
            }
            for (dep, w) in &spec.calls {
                if let Some(di) = self.index(dep) {
                    demand[di] += d * w;
                }
            }
            // This service's own work.
            let mut slow: f64 = self
                .active(s, FaultKind::Slowdown)
                .map(|(l, f)| 1.0 + (f.factor.unwrap_or(1.0) - 1.0) * l)
                .product();
            let mut err = spec.error_ratio;
            for kind in [FaultKind::Outage, FaultKind::BadDeploy] {
                for (l, f) in self.active(s, kind) {
                    if kind == FaultKind::BadDeploy && self.services[s].bad_revision.is_none() {
                        continue;
                    }
                    slow *= 1.0 + (f.factor.unwrap_or(1.0) - 1.0) * l;
                    err = 1.0 - (1.0 - err) * (1.0 - f.error_ratio.unwrap_or(0.0) * l);
                }
            }
            let latency0 = spec.latency.as_millis() as f64 / 1000.0;
            let (latency, errors, util, ready, mem) = if spec.kind == ServiceKind::External {
                (latency0 * slow, err, 0.0, 0, 0.0)
            } else {
                let svc = &self.services[s];
                let limit = spec.memory_limit_mib;
                let mut cap = 0.0;
                let mut ready = 0;
                let mut mem: f64 = 0.0;
                for p in &svc.pods {
                    let ratio = (spec.memory_mib + p.leaked_mib) / limit;
                    mem = mem.max(ratio);
                    if p.ready(t) {
                        ready += 1;
                        let gc = 1.0
                            + 4.0
                                * ((ratio - GC_PRESSURE_FROM) / (1.0 - GC_PRESSURE_FROM)).max(0.0);
                        cap += spec.capacity / (slow * gc);
                    }
                }
                if ready > 0 {
                    // The slowness the ready pods see on average (faults and GC).
                    slow = ready as f64 * spec.capacity / cap.max(1e-9);
                }
                let util = if cap > 0.0 {
                    d / cap
                } else if d > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                };
                let mut queue = svc.queue;
                let mut overflow = 0.0;
                if live {
                    queue = (queue + (d - cap) * dt).max(0.0);
                    let max_q = (cap * QUEUE_SECONDS).max(0.0);
                    if queue > max_q {
                        overflow = (queue - max_q) / dt.max(1e-9);
                        queue = max_q;
                    }
                }
                let latency = if cap <= 0.0 && d > 0.0 {
                    TIMEOUT_S
                } else if cap <= 0.0 {
                    // Nothing asked of it (a paused job): nobody waits.
                    latency0
                } else {
                    latency0 * slow / (1.0 - util.min(RHO_CAP)) + queue / cap
                };
                let mut errors = err;
                if d > 0.0 {
                    let lost = if cap <= 0.0 {
                        d
                    } else {
                        overflow + svc.dropped / dt.max(1.0)
                    };
                    errors = 1.0 - (1.0 - errors) * (1.0 - (lost / d).min(1.0));
                }
                out[s].queue = queue;
                (latency.min(TIMEOUT_S), errors, util, ready, mem)
            };
            own_latency[s] = self.shift(s, Signal::Latency, latency);
            own_errors[s] = self.shift(s, Signal::Errors, errors).clamp(0.0, 1.0);
            out[s].utilization = if util.is_finite() { util } else { 1e3 };
            out[s].ready_pods = ready;
            out[s].memory_ratio = self.shift(s, Signal::Memory, mem);
            out[s].queue = self.shift(s, Signal::Queue, out[s].queue).max(0.0);
            if live && spec.kind != ServiceKind::External {
                self.services[s].queue = out[s].queue;
            }
        }
        // Callees first: latency and errors flow up.
        for &s in self.order.iter().rev() {
            let spec = &self.sc.services[s];
            let mut latency = own_latency[s];
            let mut ok = 1.0 - own_errors[s];
            let mut add = |dep: usize, w: f64, out: &[Truth]| {
                let weight = if w >= 1.0 { w } else { w.sqrt() };
                latency += out[dep].latency_s * weight;
                ok *= 1.0 - out[dep].error_ratio * w.min(1.0);
            };
            if spec.kind == ServiceKind::Cache {
                if let Some(m) = spec.misses_to.as_deref().and_then(|m| self.index(m)) {
                    add(m, 1.0 - hit[s], &out);
                }
            }
            for (dep, w) in &spec.calls {
                if let Some(di) = self.index(dep) {
                    add(di, *w, &out);
                }
            }
            let t = &mut out[s];
            t.demand = demand[s];
            t.latency_s = latency.min(TIMEOUT_S * 3.0);
            t.error_ratio = (1.0 - ok).clamp(0.0, 1.0);
            t.hit_ratio = hit[s];
        }
        for (s, t) in out.iter_mut().enumerate() {
            let spec = &self.sc.services[s];
            let slo = &self.sc.slo;
            t.healthy = t.latency_s <= self.slo_latency_s[s]
                && t.error_ratio <= slo.error_ratio
                && t.memory_ratio <= slo.memory_ratio
                && (spec.kind != ServiceKind::Cache || t.hit_ratio >= slo.hit_ratio);
        }
        if live {
            for s in 0..n {
                let svc = &mut self.services[s];
                svc.dropped = 0.0;
                if svc.warm < 1.0 {
                    svc.warm = 1.0 - (1.0 - svc.warm) * (-(dt * 1000.0) / CACHE_WARM_MS).exp();
                }
            }
        }
        out
    }

    /// Counters move with the flow.
    fn account(&mut self, flows: &[Truth], t: i64, dt: f64) {
        for s in 0..self.services.len() {
            let spec = &self.sc.services[s];
            let f = flows[s];
            let svc = &mut self.services[s];
            svc.requests_ok += f.demand * (1.0 - f.error_ratio) * dt;
            svc.requests_failed += f.demand * f.error_ratio * dt;
            if spec.kind == ServiceKind::Cache {
                svc.cache_hits += f.demand * f.hit_ratio * dt;
                svc.cache_misses += f.demand * (1.0 - f.hit_ratio) * dt;
            }
            let busy = f.utilization.min(1.0);
            for p in svc.pods.iter_mut().filter(|p| p.ready(t)) {
                p.cpu_seconds += busy * dt;
            }
            for (dep, (ok, failed)) in svc.upstream.iter_mut() {
                let (Some(di), Some(w)) = (
                    self.sc.services.iter().position(|x| &x.name == dep),
                    spec.calls.get(dep),
                ) else {
                    continue;
                };
                let calls = f.demand * w * dt;
                *failed += calls * flows[di].error_ratio;
                *ok += calls * (1.0 - flows[di].error_ratio);
            }
        }
    }

    /// The exporters' view at the current step: every metric of every service with
    /// measurement noise and the harmless noise events applied.
    pub fn samples(&mut self) -> Vec<Reading> {
        let ns = self.sc.namespace.clone();
        let t = self.t;
        let mut out: Vec<Reading> = Vec::new();
        let noise =
            |m: &str, default: f64| self.sc.metrics.noise.get(m).copied().unwrap_or(default);
        let lat_noise = noise("http_request_duration_seconds", 0.04);
        let mem_noise = noise("container_memory_working_set_bytes", 0.01);
        let q_noise = noise("queue_depth", 0.1);
        // Benign noise events active now: (service, signal, magnitude, probability).
        let blips: Vec<(String, Signal, f64, f64)> = self
            .sc
            .benign
            .iter()
            .filter(|b| {
                b.kind == BenignKind::Noise
                    && b.start.as_millis() <= t
                    && t < b.start.as_millis() + b.duration.as_millis()
            })
            .filter_map(|b| {
                Some((
                    b.service.clone()?,
                    b.signal?,
                    b.magnitude?,
                    b.probability.unwrap_or(0.05),
                ))
            })
            .collect();
        for s in 0..self.services.len() {
            let spec = self.sc.services[s].clone();
            if spec.kind == ServiceKind::External {
                continue;
            }
            let truth = self.truth[s];
            let blip = |rng: &mut Pcg64Mcg, signal: Signal| -> f64 {
                let mut m = 1.0;
                for (svc, sig, mag, p) in &blips {
                    if svc == &spec.name && *sig == signal && rng.random::<f64>() < *p {
                        m *= mag;
                    }
                }
                m
            };
            let base = |name: &'static str| -> Vec<(&'static str, String)> {
                vec![
                    ("__name__", name.to_string()),
                    ("namespace", ns.clone()),
                    ("service", spec.name.clone()),
                ]
            };
            let svc = &self.services[s];
            let (ok, failed) = (svc.requests_ok, svc.requests_failed);
            let mut l = base("http_requests_total");
            l.push(("code", "200".into()));
            out.push((l, ok.floor()));
            let mut l = base("http_requests_total");
            l.push(("code", "500".into()));
            out.push((l, failed.floor()));
            let lat = truth.latency_s
                * (1.0 + lat_noise * gauss(&mut self.rng)).max(0.05)
                * blip(&mut self.rng, Signal::Latency);
            let mut l = base("http_request_duration_seconds");
            l.push(("quantile", "0.99".into()));
            out.push((l, lat));
            let q = (truth.queue + q_noise * truth.queue * gauss(&mut self.rng)).max(0.0)
                * blip(&mut self.rng, Signal::Queue);
            out.push((base("queue_depth"), q.round()));
            let svc = &self.services[s];
            let ready = svc.pods.iter().filter(|p| p.ready(t)).count();
            out.push((
                base("kube_deployment_status_replicas_available"),
                ready as f64,
            ));
            out.push((
                base("kube_deployment_spec_replicas"),
                svc.pods.iter().filter(|p| p.terminate_at.is_none()).count() as f64,
            ));
            out.push((
                base("kube_deployment_status_observed_generation"),
                svc.revision as f64,
            ));
            if spec.kind == ServiceKind::Cache {
                out.push((base("cache_hits_total"), svc.cache_hits.floor()));
                out.push((base("cache_misses_total"), svc.cache_misses.floor()));
            }
            for (dep, (ok, failed)) in &svc.upstream {
                for (code, v) in [("200", ok), ("500", failed)] {
                    let mut l = base("upstream_requests_total");
                    l.push(("upstream", dep.clone()));
                    l.push(("code", code.into()));
                    out.push((l, v.floor()));
                }
            }
            let pods: Vec<(String, f64, u64, f64)> = svc
                .pods
                .iter()
                .map(|p| (p.name.clone(), p.leaked_mib, p.restarts, p.cpu_seconds))
                .collect();
            for (name, leaked, restarts, cpu) in pods {
                let pod = |n: &'static str| {
                    let mut l = base(n);
                    l.push(("pod", name.clone()));
                    l
                };
                let mem = (spec.memory_mib * (1.0 + 0.05 * truth.utilization.min(1.0)) + leaked)
                    * (1.0 + mem_noise * gauss(&mut self.rng))
                    * blip(&mut self.rng, Signal::Memory);
                out.push((
                    pod("container_memory_working_set_bytes"),
                    (mem * 1048576.0).round(),
                ));
                out.push((
                    pod("container_spec_memory_limit_bytes"),
                    spec.memory_limit_mib * 1048576.0,
                ));
                out.push((
                    pod("kube_pod_container_status_restarts_total"),
                    restarts as f64,
                ));
                out.push((pod("container_cpu_usage_seconds_total"), cpu));
            }
        }
        for (labels, _) in &mut out {
            labels.sort_by(|a, b| a.0.cmp(b.0));
        }
        out
    }

    /// Replaces every pod of `s`, one after the other (maxSurge 1): each old pod
    /// serves until its replacement is ready, then its in-flight requests are lost
    /// (a share `drop` of one step's worth).
    fn rolling_replace(&mut self, s: usize, t: i64, drop_share: f64) {
        let name = self.sc.services[s].name.clone();
        let n = self.services[s]
            .pods
            .iter()
            .filter(|p| p.terminate_at.is_none())
            .count();
        let mut new = Vec::with_capacity(n);
        for k in 0..n {
            let ready = t + POD_START_MS * (k as i64 + 1);
            new.push(self.new_pod(&name, ready));
        }
        for (k, p) in self.services[s]
            .pods
            .iter_mut()
            .filter(|p| p.terminate_at.is_none())
            .enumerate()
        {
            p.terminate_at = Some(t + POD_START_MS * (k as i64 + 1));
        }
        self.drop_in_flight(s, n as f64 * drop_share);
        self.services[s].pods.extend(new);
    }

    /// Counts the in-flight requests of `pods` killed pods as failed (Little's law).
    fn drop_in_flight(&mut self, s: usize, pods: f64) {
        let t = self.truth[s];
        let ready = t.ready_pods.max(1) as f64;
        let in_flight = t.demand / ready * t.latency_s.max(0.05) * pods;
        // A killed pod also fails what reached it while it was going away (1 s).
        self.services[s].dropped += in_flight + t.demand / ready * pods;
    }

    /// Carries out an action on the world (the simulation's actuator calls this).
    pub fn apply(&mut self, action: &Action) -> Result<Effect, ActError> {
        let t = self.t;
        // Which faults does it fix? Judged on the world before the action (a
        // `scale_down` to 0 is one only while replicas run).
        let fixing: Vec<usize> = (0..self.faults.len())
            .filter(|&i| {
                let f = &self.faults[i];
                f.phase == FaultPhase::Active
                    && f.spec.fixed_by.iter().any(|m| self.matches(m, action))
            })
            .collect();
        let (effect, service) = self.apply_physics(action, t)?;
        let mut fixed = Vec::new();
        for i in fixing {
            let f = &self.faults[i];
            let name = f.spec.name.clone();
            let ends = f.spec.kind.fix_ends_cause();
            self.faults[i].fixes.push((t, effect.summary.clone()));
            if ends {
                self.end_fault(i, t, Some(action.kind().as_str().to_string()));
            }
            fixed.push(name);
        }
        if let Some(s) = service {
            self.log(s, effect.summary.clone());
        }
        let mut effect = effect;
        if let serde_json::Value::Object(m) = &mut effect.details {
            m.insert("fixes".into(), serde_json::json!(fixed));
        }
        Ok(effect)
    }

    /// The on-call engineer fixes fault `i` by hand with the first action its
    /// `fixed_by` names (a person with `kubectl`: no policy, no audit log). `None`
    /// when the fault's cause is over or no such action can be built.
    pub fn fix_by_hand(&mut self, i: usize) -> Option<(Action, Result<Effect, ActError>)> {
        let f = self.faults.get(i)?;
        if f.phase != FaultPhase::Active {
            return None;
        }
        let action =
            self.manual_action(&f.spec.fixed_by.first()?.clone(), &f.spec.service.clone())?;
        let result = self.apply(&action);
        Some((action, result))
    }

    /// The action a person would run for a `fixed_by` entry of a fault on `service`.
    fn manual_action(&self, m: &super::scenario::ActionMatch, service: &str) -> Option<Action> {
        use crate::act::{ActionKind, ReplicaBounds};
        let ns = self.sc.namespace.clone();
        let s = self.index(service);
        let own = s.map(|s| workload_kind(self.sc.services[s].kind));
        let object = |default: Option<ObjectKind>, default_name: String| -> Option<ObjectRef> {
            let (kind, name) = match m.target.as_deref().and_then(|t| t.split_once('/')) {
                Some((k, n)) => (
                    [
                        ObjectKind::Deployment,
                        ObjectKind::StatefulSet,
                        ObjectKind::ConfigMap,
                        ObjectKind::Rollout,
                        ObjectKind::Pod,
                    ]
                    .into_iter()
                    .find(|o| o.as_str() == k)?,
                    n.to_string(),
                ),
                None => (default?, default_name),
            };
            Some(ObjectRef {
                kind,
                namespace: ns.clone(),
                name,
            })
        };
        let workload = || object(own, service.to_string());
        let replicas = s
            .map(|s| {
                self.services[s]
                    .pods
                    .iter()
                    .filter(|p| p.terminate_at.is_none())
                    .count() as u32
            })
            .unwrap_or(0);
        let bounds = ReplicaBounds {
            min: 0,
            max: super::scenario::MAX_REPLICAS,
        };
        Some(match m.match_kind()? {
            MatchKind::ScaleUp => Action::Scale {
                workload: workload()?,
                change: ReplicaChange::By(replicas.div_ceil(2).max(1) as i32),
                bounds,
            },
            MatchKind::ScaleDown => Action::Scale {
                workload: workload()?,
                change: ReplicaChange::To(0),
                bounds,
            },
            MatchKind::Kind(k) => match k {
                ActionKind::RestartPod | ActionKind::RolloutRestart => Action::RolloutRestart {
                    workload: workload()?,
                },
                ActionKind::Scale => return None,
                ActionKind::PatchConfigMap => Action::PatchConfigMap {
                    configmap: object(Some(ObjectKind::ConfigMap), format!("{service}-config"))?,
                    data: BTreeMap::new(),
                },
                ActionKind::DeploymentRollback => Action::DeploymentRollback {
                    deployment: workload()?,
                    revision: None,
                },
                ActionKind::RolloutUndo => Action::RolloutUndo {
                    rollout: workload()?,
                    revision: None,
                },
                ActionKind::RolloutAbort => Action::RolloutAbort {
                    rollout: workload()?,
                },
                ActionKind::RolloutRetry => Action::RolloutRetry {
                    rollout: workload()?,
                },
                ActionKind::ClearCache => Action::ClearCache {
                    target: m.target.clone().unwrap_or_else(|| service.to_string()),
                    pattern: "*".into(),
                    db: None,
                    max_keys: u64::MAX,
                },
                ActionKind::HttpConfig => Action::HttpConfig {
                    endpoint: m.target.clone().unwrap_or_else(|| service.to_string()),
                    body: serde_json::json!({}),
                },
                ActionKind::CordonNode | ActionKind::Notify => return None,
            },
        })
    }

    /// Whether `action` is what the matcher names.
    fn matches(&self, m: &super::scenario::ActionMatch, action: &Action) -> bool {
        let kind_ok = match m.match_kind() {
            Some(MatchKind::Kind(k)) => k == action.kind(),
            Some(MatchKind::ScaleUp) | Some(MatchKind::ScaleDown) => {
                let Action::Scale {
                    workload, change, ..
                } = action
                else {
                    return false;
                };
                let current = self
                    .index(&workload.name)
                    .map(|s| {
                        self.services[s]
                            .pods
                            .iter()
                            .filter(|p| p.terminate_at.is_none())
                            .count() as i64
                    })
                    .unwrap_or(0);
                let delta = match change {
                    ReplicaChange::By(n) => *n as i64,
                    ReplicaChange::To(n) => *n as i64 - current,
                };
                (m.match_kind() == Some(MatchKind::ScaleUp)) == (delta > 0) && delta != 0
            }
            None => false,
        };
        if !kind_ok {
            return false;
        }
        let Some(want) = m.target.as_deref() else {
            return true;
        };
        match action {
            Action::RestartPod { pod, .. } => {
                want == format!("pod/{}", pod.name)
                    || self.pod_owner(&pod.name).is_some_and(|s| {
                        let svc = &self.sc.services[s];
                        want == format!("{}/{}", workload_kind(svc.kind).as_str(), svc.name)
                    })
            }
            Action::RolloutRestart { workload: o }
            | Action::Scale { workload: o, .. }
            | Action::PatchConfigMap { configmap: o, .. }
            | Action::RolloutAbort { rollout: o }
            | Action::RolloutRetry { rollout: o }
            | Action::RolloutUndo { rollout: o, .. }
            | Action::DeploymentRollback { deployment: o, .. } => {
                want == format!("{}/{}", o.kind.as_str(), o.name)
                    || (o.kind == ObjectKind::Rollout && want == format!("deployment/{}", o.name))
            }
            Action::CordonNode { node, .. } => want == format!("node/{node}"),
            Action::ClearCache { target, .. } => want == target,
            Action::HttpConfig { endpoint, .. } => want == endpoint,
            Action::Notify { channel, .. } => want == channel,
        }
    }

    fn pod_owner(&self, pod: &str) -> Option<usize> {
        self.services.iter().position(|s| {
            s.pods
                .iter()
                .any(|p| p.name == pod && p.terminate_at.is_none())
        })
    }

    /// The service a workload reference names, checking namespace and kind.
    fn workload(&self, o: &ObjectRef, kinds: &[ObjectKind]) -> Result<usize, ActError> {
        if o.namespace != self.sc.namespace {
            return Err(ActError::NotFound(format!(
                "{o}: no such namespace in the simulated world"
            )));
        }
        if !kinds.contains(&o.kind) {
            return Err(ActError::Invalid(format!(
                "{o}: this action does not apply to a {}",
                o.kind.as_str()
            )));
        }
        let s = self
            .index(&o.name)
            .filter(|&s| self.sc.services[s].kind != ServiceKind::External)
            .ok_or_else(|| ActError::NotFound(o.to_string()))?;
        let own = workload_kind(self.sc.services[s].kind);
        if o.kind != own && !(o.kind == ObjectKind::Rollout && own == ObjectKind::Deployment) {
            return Err(ActError::NotFound(format!(
                "{o}: {} is a {}",
                o.name,
                own.as_str()
            )));
        }
        Ok(s)
    }

    fn apply_physics(
        &mut self,
        action: &Action,
        t: i64,
    ) -> Result<(Effect, Option<usize>), ActError> {
        use serde_json::json;
        let workloads = [
            ObjectKind::Deployment,
            ObjectKind::StatefulSet,
            ObjectKind::Rollout,
        ];
        Ok(match action {
            Action::RestartPod { pod, .. } => {
                if pod.namespace != self.sc.namespace {
                    return Err(ActError::NotFound(pod.to_string()));
                }
                let s = self
                    .pod_owner(&pod.name)
                    .ok_or_else(|| ActError::NotFound(pod.to_string()))?;
                let name = self.sc.services[s].name.clone();
                let fresh = self.new_pod(&name, t + POD_START_MS);
                let new_name = fresh.name.clone();
                self.services[s].pods.retain(|p| p.name != pod.name);
                self.services[s].pods.push(fresh);
                self.drop_in_flight(s, 1.0);
                (
                    Effect {
                        summary: format!("deleted pod {}; {new_name} replaces it", pod.name),
                        details: json!({"pod": pod.name, "replacement": new_name}),
                        undo: None,
                    },
                    Some(s),
                )
            }
            Action::RolloutRestart { workload } => {
                let s = self.workload(workload, &workloads)?;
                self.rolling_replace(s, t, 1.0);
                (
                    Effect {
                        summary: format!("rollout restart of {workload}"),
                        details: json!({"workload": workload.to_string()}),
                        undo: None,
                    },
                    Some(s),
                )
            }
            Action::Scale {
                workload,
                change,
                bounds,
            } => {
                let s = self.workload(
                    workload,
                    &[
                        ObjectKind::Deployment,
                        ObjectKind::StatefulSet,
                        ObjectKind::Rollout,
                    ],
                )?;
                let current = self.services[s]
                    .pods
                    .iter()
                    .filter(|p| p.terminate_at.is_none())
                    .count() as i64;
                let want = match change {
                    ReplicaChange::By(n) => current + *n as i64,
                    ReplicaChange::To(n) => *n as i64,
                };
                let want = want
                    .clamp(bounds.min as i64, bounds.max as i64)
                    .clamp(0, super::scenario::MAX_REPLICAS as i64);
                let name = self.sc.services[s].name.clone();
                if want > current {
                    for _ in current..want {
                        let p = self.new_pod(&name, t + POD_START_MS);
                        self.services[s].pods.push(p);
                    }
                } else if want < current {
                    let mut remove = (current - want) as usize;
                    // Newest first, as a ReplicaSet scales down.
                    for p in self.services[s].pods.iter_mut().rev() {
                        if remove > 0 && p.terminate_at.is_none() {
                            p.terminate_at = Some(t);
                            remove -= 1;
                        }
                    }
                    self.services[s]
                        .pods
                        .retain(|p| p.terminate_at.is_none_or(|e| e > t));
                    self.drop_in_flight(s, (current - want) as f64);
                }
                (
                    Effect {
                        summary: format!("scaled {workload} {current} -> {want}"),
                        details: json!({"from": current, "to": want}),
                        undo: Some(Action::Scale {
                            workload: workload.clone(),
                            change: ReplicaChange::To(current as u32),
                            bounds: *bounds,
                        }),
                    },
                    Some(s),
                )
            }
            Action::PatchConfigMap { configmap, data } => {
                if configmap.namespace != self.sc.namespace
                    || configmap.kind != ObjectKind::ConfigMap
                {
                    return Err(ActError::NotFound(configmap.to_string()));
                }
                let s = configmap
                    .name
                    .strip_suffix("-config")
                    .and_then(|n| self.index(n))
                    .ok_or_else(|| ActError::NotFound(configmap.to_string()))?;
                let mut previous = std::collections::BTreeMap::new();
                for (k, v) in data {
                    let old = match v {
                        Some(v) => self.services[s].config.insert(k.clone(), v.clone()),
                        None => self.services[s].config.remove(k),
                    };
                    previous.insert(k.clone(), old);
                }
                (
                    Effect {
                        summary: format!(
                            "patched {configmap}: {}",
                            data.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                        details: json!({"previous": previous}),
                        undo: Some(Action::PatchConfigMap {
                            configmap: configmap.clone(),
                            data: previous,
                        }),
                    },
                    Some(s),
                )
            }
            Action::HttpConfig { endpoint, body } => {
                let s = self.index(endpoint).ok_or_else(|| {
                    ActError::NotConfigured(format!("http endpoint {endpoint:?}"))
                })?;
                let serde_json::Value::Object(m) = body else {
                    return Err(ActError::Invalid(
                        "the simulated endpoints take a JSON object".into(),
                    ));
                };
                let previous = serde_json::Value::Object(
                    self.services[s]
                        .config
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect(),
                );
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    self.services[s].config.insert(k.clone(), v);
                }
                (
                    Effect {
                        summary: format!("set config of {endpoint}: {body}"),
                        details: json!({"previous": previous}),
                        undo: Some(Action::HttpConfig {
                            endpoint: endpoint.clone(),
                            body: previous,
                        }),
                    },
                    Some(s),
                )
            }
            Action::ClearCache { target, .. } => {
                let s = self
                    .index(target)
                    .filter(|&s| self.sc.services[s].kind == ServiceKind::Cache)
                    .ok_or_else(|| ActError::NotConfigured(format!("redis {target:?}")))?;
                self.services[s].warm = 0.0;
                (
                    Effect {
                        summary: format!("cleared cache {target}"),
                        details: json!({"target": target}),
                        undo: None,
                    },
                    Some(s),
                )
            }
            Action::DeploymentRollback { deployment: o, .. }
            | Action::RolloutUndo { rollout: o, .. }
            | Action::RolloutAbort { rollout: o } => {
                let s = self.workload(o, &workloads)?;
                let Some((rev, bad)) = self.services[s].history.pop() else {
                    return Err(ActError::Refused(format!("{o} has no previous revision")));
                };
                let from = self.services[s].revision;
                self.services[s].revision = rev;
                self.services[s].bad_revision = bad;
                self.rolling_replace(s, t, 0.5);
                (
                    Effect {
                        summary: format!("rolled back {o} from revision {from} to {rev}"),
                        details: json!({"from": from, "to": rev}),
                        undo: None,
                    },
                    Some(s),
                )
            }
            Action::RolloutRetry { rollout } => {
                let s = self.workload(rollout, &workloads)?;
                (
                    Effect {
                        summary: format!("{rollout}: nothing to retry"),
                        details: json!({}),
                        undo: None,
                    },
                    Some(s),
                )
            }
            Action::CordonNode { node, cordon } => (
                Effect {
                    summary: format!(
                        "{} node {node} (the simulated world has no node faults)",
                        if *cordon { "cordoned" } else { "uncordoned" }
                    ),
                    details: json!({"node": node}),
                    undo: Some(Action::CordonNode {
                        node: node.clone(),
                        cordon: !cordon,
                    }),
                },
                None,
            ),
            Action::Notify {
                channel,
                notification,
            } => (
                Effect {
                    summary: format!("notified {channel}: {}", notification.title),
                    details: json!({"channel": channel}),
                    undo: None,
                },
                None,
            ),
        })
    }

    /// The target's current state, as an actuator's `observe` reports it.
    pub fn observe(&self, action: &Action) -> Result<serde_json::Value, ActError> {
        use serde_json::json;
        let t = self.t;
        let svc_state = |s: usize| {
            let svc = &self.services[s];
            json!({
                "replicas": svc.pods.iter().filter(|p| p.terminate_at.is_none()).count(),
                "ready": svc.pods.iter().filter(|p| p.ready(t)).count(),
                "revision": svc.revision,
                "config": svc.config,
            })
        };
        match action {
            Action::RestartPod { pod, .. } => {
                let s = self
                    .pod_owner(&pod.name)
                    .ok_or_else(|| ActError::NotFound(pod.to_string()))?;
                let p = self.services[s].pods.iter().find(|p| p.name == pod.name);
                Ok(
                    json!({"pod": pod.name, "ready": p.is_some_and(|p| p.ready(t)), "restarts": p.map(|p| p.restarts)}),
                )
            }
            Action::ClearCache { target, .. }
            | Action::HttpConfig {
                endpoint: target, ..
            } => {
                let s = self
                    .index(target)
                    .ok_or_else(|| ActError::NotConfigured(target.clone()))?;
                Ok(svc_state(s))
            }
            Action::PatchConfigMap { configmap, .. } => {
                let s = configmap
                    .name
                    .strip_suffix("-config")
                    .and_then(|n| self.index(n))
                    .ok_or_else(|| ActError::NotFound(configmap.to_string()))?;
                Ok(json!({"data": self.services[s].config}))
            }
            Action::CordonNode { node, .. } => Ok(json!({"node": node})),
            Action::Notify { channel, .. } => Ok(json!({"channel": channel})),
            Action::RolloutRestart { workload: o }
            | Action::Scale { workload: o, .. }
            | Action::RolloutAbort { rollout: o }
            | Action::RolloutRetry { rollout: o }
            | Action::RolloutUndo { rollout: o, .. }
            | Action::DeploymentRollback { deployment: o, .. } => {
                let s = self.workload(
                    o,
                    &[
                        ObjectKind::Deployment,
                        ObjectKind::StatefulSet,
                        ObjectKind::Rollout,
                    ],
                )?;
                Ok(svc_state(s))
            }
        }
    }
}

/// How much of a peak is in force at `t`: ramps in over the first quarter of its
/// duration and out over the last.
fn peak_shape(b: &BenignSpec, t: i64) -> f64 {
    let (s, d) = (b.start.as_millis(), b.duration.as_millis());
    if t < s || t >= s + d || d <= 0 {
        return 0.0;
    }
    let x = (t - s) as f64 / d as f64;
    (x / 0.25).min((1.0 - x) / 0.25).min(1.0)
}

/// The Kubernetes kind a service runs as.
pub fn workload_kind(kind: ServiceKind) -> ObjectKind {
    match kind {
        ServiceKind::Database => ObjectKind::StatefulSet,
        _ => ObjectKind::Deployment,
    }
}

#[cfg(test)]
mod tests;
