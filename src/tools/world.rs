//! A simulated microservice world with known faults, for the RCA benchmark (and
//! for the simulation issue to reuse or replace).
//!
//! **Topology.** 10–50 services in 3–5 tiers: one or two entry services, middle
//! tiers, datastores at the bottom; each service calls 1–3 deeper ones (mostly the
//! next tier), every non-entry service has a caller. Pods (1–3 per service) are
//! placed at random on `max(3, n/5)` nodes.
//!
//! **Behaviour.** Per 15 s scrape: entry traffic with a slow wave and noise flows
//! down the calls (`calls per request`); a service's true latency is its own plus a
//! weighted share of each callee's latency *as it was `lag` ago* (0–30 s per edge);
//! its error ratio combines its own with each callee's, each passed on with a
//! per-edge probability (retries and fallbacks hide some). What is scraped is
//! noisier than what is true: p99/p50 gauges per pod with log-normal, AR(1)-
//! correlated noise (3–12 %) smoothed like a summary's sliding window (so a small
//! change is seen late), Poisson request and error counters, cAdvisor CPU and memory,
//! `up`, kube-state-metrics ownership, placement, restarts and generations,
//! `node_load1`, and the service-graph edge counters a tracing pipeline exports.
//!
//! **Faults** (at one service, from a known step): `cpu` (a CPU hog: cores up,
//! throttled latency, node load up), `memory` (a leak: memory ramps, latency grows
//! after a GC delay, OOM restarts at the limit), `latency` (injected delay),
//! `errors` (injected 5xx), `outage` (crash-looping pods: `up` 0, app series go
//! stale, callers get connection errors and fail fast), `bad_deploy` (a rollout:
//! new ReplicaSet and pods, then more errors and/or latency once they serve).
//! Effects travel to callers with the edges' lags, weights and probabilities —
//! nothing makes the cause's onset first by construction: its own metric may be
//! the noisier or the more smoothed one. **Distractors** in every case: healthy
//! rollouts of other services, and short latency bursts (1–4 min, propagating) at
//! random services before and during the fault.
//!
//! Everything is drawn from one seeded PCG, so a case is reproducible from its seed.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;

/// Scrape interval of the world.
pub const STEP_MS: i64 = 15_000;
/// The namespace of every workload.
pub const NAMESPACE: &str = "shop";
/// Steps of history before the fault (85 min: baseline, lead and margin).
pub const PRE_STEPS: usize = 340;

/// The kinds of fault the benchmark injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Cpu,
    Memory,
    Latency,
    Errors,
    Outage,
    BadDeploy,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Cpu,
        FaultKind::Memory,
        FaultKind::Latency,
        FaultKind::Errors,
        FaultKind::Outage,
        FaultKind::BadDeploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Cpu => "cpu",
            FaultKind::Memory => "memory",
            FaultKind::Latency => "latency",
            FaultKind::Errors => "errors",
            FaultKind::Outage => "outage",
            FaultKind::BadDeploy => "bad_deploy",
        }
    }
}

/// A service's place in the call graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Entry,
    Middle,
    Datastore,
}

/// One service and its behaviour.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub role: Role,
    pub tier: usize,
    pub replicas: usize,
    /// Own latency (s).
    base_latency: f64,
    p99_factor: f64,
    /// Log-normal sigma of scrape noise.
    noise: f64,
    /// Weight of the newest point in the p99 gauge's smoothing.
    smooth: f64,
    base_err: f64,
    cpu_per_rps: f64,
    base_cpu: f64,
    base_mem: f64,
}

/// One call edge.
#[derive(Debug, Clone)]
pub struct Call {
    pub from: usize,
    pub to: usize,
    /// Calls per request of the caller.
    calls: f64,
    /// Share of the callee's latency in the caller's.
    weight: f64,
    /// Probability a callee error becomes a caller error.
    p_err: f64,
    /// Propagation lag in steps.
    lag: f64,
}

/// The generated topology.
#[derive(Debug, Clone)]
pub struct World {
    pub services: Vec<Service>,
    pub calls: Vec<Call>,
    pub nodes: Vec<String>,
    entry_rate: Vec<f64>,
}

const NAMES: [&str; 36] = [
    "checkout",
    "cart",
    "catalog",
    "search",
    "recommend",
    "payment",
    "shipping",
    "currency",
    "email",
    "ads",
    "reviews",
    "users",
    "auth",
    "inventory",
    "pricing",
    "orders",
    "notify",
    "media",
    "session",
    "profile",
    "billing",
    "ledger",
    "fraud",
    "tax",
    "geo",
    "quotes",
    "loyalty",
    "coupons",
    "wishlist",
    "returns",
    "invoices",
    "ratings",
    "feeds",
    "accounts",
    "warehouse",
    "tracking",
];
const STORES: [&str; 8] = [
    "postgres",
    "mysql",
    "redis",
    "mongo",
    "kafka",
    "elastic",
    "memcached",
    "cassandra",
];

fn u(rng: &mut Pcg64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Pcg64) -> f64 {
    let a: f64 = rng.random::<f64>().max(1e-12);
    let b: f64 = rng.random::<f64>();
    (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

/// A Poisson draw (Knuth below 30, normal approximation above).
fn poisson(rng: &mut Pcg64, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0);
    }
    let l = (-lambda).exp();
    let (mut k, mut p) = (0.0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1.0;
    }
}

fn hash_name(rng: &mut Pcg64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl World {
    /// A random world of `n` services (at least 4).
    pub fn generate(rng: &mut Pcg64, n: usize) -> World {
        let n = n.max(4);
        let tiers = if n >= 40 {
            5
        } else if n >= 22 {
            4
        } else {
            3
        };
        let entries = if n >= 20 { 2 } else { 1 };
        let stores = (n / 5).max(2);
        let middle = n - entries - stores;
        // Tier of each service: entries 0, middles spread over 1..tiers-1, stores last.
        let mut tier_of = vec![0usize; entries];
        for i in 0..middle {
            tier_of.push(1 + i * (tiers - 2) / middle.max(1));
        }
        tier_of.extend(std::iter::repeat_n(tiers - 1, stores));
        let mut used: HashMap<String, usize> = HashMap::new();
        let mut name = |base: &str| {
            let k = used.entry(base.to_string()).or_insert(0);
            *k += 1;
            if *k == 1 {
                base.to_string()
            } else {
                format!("{base}-{k}")
            }
        };
        let mut pool: Vec<&str> = NAMES.to_vec();
        let mut services = Vec::with_capacity(n);
        for (i, &tier) in tier_of.iter().enumerate() {
            let role = if i < entries {
                Role::Entry
            } else if tier == tiers - 1 {
                Role::Datastore
            } else {
                Role::Middle
            };
            let base = match role {
                Role::Entry => ["frontend", "gateway"][i % 2],
                Role::Datastore => STORES[rng.random_range(0..STORES.len())],
                Role::Middle => {
                    let k = rng.random_range(0..pool.len());
                    pool.swap_remove(k)
                }
            };
            if pool.is_empty() {
                pool = NAMES.to_vec();
            }
            let datastore = role == Role::Datastore;
            services.push(Service {
                name: name(base),
                role,
                tier,
                replicas: if datastore {
                    1
                } else {
                    rng.random_range(1..=3)
                },
                base_latency: if datastore {
                    u(rng, 0.001, 0.01)
                } else {
                    u(rng, 0.005, 0.03)
                },
                p99_factor: u(rng, 2.0, 4.0),
                noise: u(rng, 0.03, 0.12),
                smooth: u(rng, 0.35, 1.0),
                base_err: u(rng, 0.0, 0.003),
                cpu_per_rps: u(rng, 0.0005, 0.003),
                base_cpu: u(rng, 0.02, 0.1),
                base_mem: u(rng, 50e6, 800e6),
            });
        }
        // Calls: from each non-store service to 1–3 deeper ones.
        let mut calls: Vec<Call> = Vec::new();
        let deeper = |t: usize| -> Vec<usize> {
            tier_of
                .iter()
                .enumerate()
                .filter(|(_, &x)| x > t)
                .map(|(i, _)| i)
                .collect()
        };
        let next = |t: usize| -> Vec<usize> {
            tier_of
                .iter()
                .enumerate()
                .filter(|(_, &x)| x == t + 1)
                .map(|(i, _)| i)
                .collect()
        };
        let add = |rng: &mut Pcg64, calls: &mut Vec<Call>, from: usize, to: usize| {
            if from == to || calls.iter().any(|c| c.from == from && c.to == to) {
                return;
            }
            let store = services[to].role == Role::Datastore;
            calls.push(Call {
                from,
                to,
                calls: if store {
                    u(rng, 1.0, 3.0)
                } else {
                    u(rng, 0.3, 1.5)
                },
                weight: u(rng, 0.3, 1.0),
                p_err: u(rng, 0.3, 0.9),
                lag: u(rng, 0.0, 2.0),
            });
        };
        for (i, &t) in tier_of.iter().enumerate() {
            if t == tiers - 1 {
                continue;
            }
            let k = rng.random_range(1..=3usize);
            for _ in 0..k {
                let pick = if rng.random_bool(0.7) {
                    next(t)
                } else {
                    deeper(t)
                };
                let pick = if pick.is_empty() { deeper(t) } else { pick };
                if !pick.is_empty() {
                    let to = pick[rng.random_range(0..pick.len())];
                    add(rng, &mut calls, i, to);
                }
            }
        }
        // Every non-entry service has a caller from a shallower tier.
        for i in entries..n {
            if !calls.iter().any(|c| c.to == i) {
                let callers: Vec<usize> = (0..n).filter(|&j| tier_of[j] < tier_of[i]).collect();
                let from = callers[rng.random_range(0..callers.len())];
                add(rng, &mut calls, from, i);
            }
        }
        let nodes = (1..=(n / 5).max(3)).map(|i| format!("node-{i}")).collect();
        let entry_rate = (0..entries).map(|_| u(rng, 50.0, 400.0)).collect();
        World {
            services,
            calls,
            nodes,
            entry_rate,
        }
    }
}

/// The injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub service: usize,
    /// The step it starts at.
    pub step: usize,
    cpu_cores: f64,
    slow: f64,
    delay_s: f64,
    err: f64,
    leak_per_step: f64,
    gc_delay: f64,
    gc_k: f64,
    mem_limit: f64,
    ready: usize,
}

/// A rollout: new ReplicaSet and pods at `step`, serving from `step + ready`.
#[derive(Debug, Clone)]
struct Deploy {
    service: usize,
    step: usize,
    ready: usize,
}

/// A short latency burst (a distractor).
#[derive(Debug, Clone)]
struct Burst {
    service: usize,
    from: usize,
    to: usize,
    mult: f64,
}

/// One benchmark case: a world, a fault, distractors, a timeline.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub world: World,
    pub fault: Fault,
    deploys: Vec<Deploy>,
    bursts: Vec<Burst>,
    /// Time of step 0 (ms).
    pub t0_ms: i64,
    /// Steps simulated (the last is the analysis time).
    pub steps: usize,
    seed: u64,
}

impl Scenario {
    /// A case from its seed: `n` services, fault `kind`, `post` steps after the
    /// fault.
    pub fn generate(seed: u64, n: usize, kind: FaultKind, post: usize) -> Scenario {
        let mut rng = Pcg64::seed_from_u64(seed);
        let world = World::generate(&mut rng, n);
        let service = rng.random_range(0..world.services.len());
        let step = PRE_STEPS;
        let fault = Fault {
            kind,
            service,
            step,
            cpu_cores: u(&mut rng, 1.0, 3.0),
            slow: u(&mut rng, 0.3, 1.5),
            delay_s: u(&mut rng, 0.05, 0.5),
            err: u(&mut rng, 0.05, 0.4),
            leak_per_step: u(&mut rng, 0.5, 1.5) / 40.0,
            gc_delay: u(&mut rng, 4.0, 16.0),
            gc_k: u(&mut rng, 0.5, 2.0),
            mem_limit: u(&mut rng, 1.8, 2.5),
            ready: rng.random_range(1..=4),
        };
        let mut deploys = Vec::new();
        if kind == FaultKind::BadDeploy {
            deploys.push(Deploy {
                service,
                step,
                ready: fault.ready,
            });
        }
        // Healthy rollouts elsewhere, from 40 min before to 8 min after the fault.
        for _ in 0..rng.random_range(0..=2usize) {
            let s = rng.random_range(0..world.services.len());
            if s != service {
                deploys.push(Deploy {
                    service: s,
                    step: step - 160 + rng.random_range(0..192usize),
                    ready: rng.random_range(1..=4),
                });
            }
        }
        // Latency bursts from 30 min before to 5 min after the fault.
        let mut bursts = Vec::new();
        for _ in 0..rng.random_range(0..=3usize) {
            let from = step - 120 + rng.random_range(0..140usize);
            bursts.push(Burst {
                service: rng.random_range(0..world.services.len()),
                from,
                to: from + rng.random_range(4..=16usize),
                mult: u(&mut rng, 1.3, 2.5),
            });
        }
        // Vary the scrape phase against the analysis grid.
        let t0_ms = 1_700_000_000_000 + rng.random_range(0..86_400_000i64);
        Scenario {
            world,
            fault,
            deploys,
            bursts,
            t0_ms,
            steps: step + post + 1,
            seed,
        }
    }

    /// The faulty service's name.
    pub fn cause(&self) -> &str {
        &self.world.services[self.fault.service].name
    }

    pub fn t(&self, step: usize) -> i64 {
        self.t0_ms + step as i64 * STEP_MS
    }

    pub fn fault_ms(&self) -> i64 {
        self.t(self.fault.step)
    }

    /// The true per-step state of every service.
    fn truth(&self) -> Truth {
        let w = &self.world;
        let n = w.services.len();
        let steps = self.steps;
        let mut rng = Pcg64::seed_from_u64(self.seed ^ 0x5eed_7275_7468);
        let f = &self.fault;
        let mut t = Truth {
            rate: vec![vec![0.0; steps]; n],
            lat: vec![vec![0.0; steps]; n],
            err: vec![vec![0.0; steps]; n],
            down: vec![vec![false; steps]; n],
            extra_cpu: vec![vec![0.0; steps]; n],
            mem_factor: vec![vec![1.0; steps]; n],
            restarts: vec![vec![0u32; steps]; n],
        };
        let phase = u(&mut rng, 0.0, std::f64::consts::TAU);
        // Tier order: callers before callees for traffic, the reverse for latency.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| w.services[i].tier);
        let lagged = |v: &[f64], k: usize, lag: f64| -> f64 {
            let x = k as f64 - lag;
            if x <= 0.0 {
                return v[0];
            }
            let (i, frac) = (x.floor() as usize, x - x.floor());
            v[i] * (1.0 - frac) + v[(i + 1).min(k)] * frac
        };
        let mut leak = 0.0f64;
        let mut crash_next = f.step;
        for k in 0..steps {
            let active = k >= f.step;
            let at = f.service;
            // Fault state of the faulty service.
            if active {
                match f.kind {
                    FaultKind::Cpu => {
                        let ramp = ((k - f.step) as f64 / 3.0).min(1.0);
                        t.extra_cpu[at][k] = f.cpu_cores * ramp;
                    }
                    FaultKind::Memory => {
                        leak += f.leak_per_step;
                        if 1.0 + leak >= f.mem_limit {
                            leak = 0.0;
                            t.restarts[at][k] += 1;
                        }
                        t.mem_factor[at][k] = 1.0 + leak;
                    }
                    FaultKind::Outage => {
                        t.down[at][k] = true;
                        if k >= crash_next {
                            t.restarts[at][k] += 1;
                            crash_next = k + rng.random_range(3..=6usize);
                        }
                    }
                    _ => {}
                }
            }
            // Traffic.
            for &i in &order {
                let s = &w.services[i];
                t.rate[i][k] = if s.role == Role::Entry {
                    let e = i.min(w.entry_rate.len() - 1);
                    let wave =
                        1.0 + 0.15 * ((k as f64 / 1440.0) * std::f64::consts::TAU + phase).sin();
                    w.entry_rate[e] * wave * (1.0 + 0.02 * normal(&mut rng))
                } else {
                    w.calls
                        .iter()
                        .filter(|c| c.to == i)
                        .map(|c| t.rate[c.from][k] * c.calls)
                        .sum()
                };
            }
            // Latency and errors, callees first.
            for &i in order.iter().rev() {
                let s = &w.services[i];
                let mut own_mult = 1.0;
                let mut own_add = 0.0;
                let mut own_err = s.base_err;
                for b in &self.bursts {
                    if b.service == i && k >= b.from && k < b.to {
                        own_mult *= b.mult;
                    }
                }
                if active && i == at {
                    let since = (k - f.step) as f64;
                    match f.kind {
                        FaultKind::Cpu => own_mult *= 1.0 + f.slow * (since / 3.0).min(1.0),
                        FaultKind::Memory => {
                            own_mult *= 1.0 + f.gc_k * ((since - f.gc_delay).max(0.0) / 40.0)
                        }
                        FaultKind::Latency => own_add += f.delay_s,
                        FaultKind::Errors => own_err += f.err,
                        FaultKind::BadDeploy => {
                            if k >= f.step + f.ready {
                                // Draws fixed per case: which symptoms the bad build has.
                                let (errs, slow) = bad_build(self.seed);
                                if errs {
                                    own_err += f.err;
                                }
                                if slow {
                                    own_mult *= 1.0 + 1.5 * f.slow;
                                }
                            }
                        }
                        FaultKind::Outage => {}
                    }
                }
                let mut lat = s.base_latency * own_mult + own_add;
                let mut ok = 1.0 - own_err.min(1.0);
                for c in w.calls.iter().filter(|c| c.from == i) {
                    let callee_down = t.down[c.to][k.saturating_sub(c.lag.round() as usize)];
                    if callee_down {
                        // Connection refused: fast failures.
                        lat += c.weight * 0.002;
                        ok *= 1.0 - c.p_err.max(0.8);
                    } else {
                        lat += c.weight * lagged(&t.lat[c.to], k, c.lag);
                        ok *= 1.0 - c.p_err * lagged(&t.err[c.to], k, c.lag);
                    }
                }
                t.lat[i][k] = lat;
                t.err[i][k] = 1.0 - ok;
            }
        }
        t
    }

    /// Streams the scrapes: calls `sink` once per step with the samples of that
    /// step (labels sorted by name, unique, non-empty).
    pub fn scrape(&self, mut sink: impl FnMut(usize, &[(&[(&str, &str)], f64)])) {
        let truth = self.truth();
        let mut sc = Scraper::new(self);
        for k in 0..self.steps {
            sc.step(self, &truth, k);
            let refs: Vec<Vec<(&str, &str)>> = sc
                .out
                .iter()
                .map(|(id, _)| {
                    sc.labels[*id]
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect()
                })
                .collect();
            let samples: Vec<(&[(&str, &str)], f64)> = refs
                .iter()
                .zip(&sc.out)
                .map(|(l, (_, v))| (l.as_slice(), *v))
                .collect();
            sink(k, &samples);
        }
    }
}

/// Which symptoms a bad build shows: errors, slowness, or both (never neither).
fn bad_build(seed: u64) -> (bool, bool) {
    match seed % 3 {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    }
}

/// The true state per service and step.
struct Truth {
    rate: Vec<Vec<f64>>,
    lat: Vec<Vec<f64>>,
    err: Vec<Vec<f64>>,
    down: Vec<Vec<bool>>,
    extra_cpu: Vec<Vec<f64>>,
    mem_factor: Vec<Vec<f64>>,
    restarts: Vec<Vec<u32>>,
}

/// The staleness marker Prometheus writes when a series disappears.
const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// A pod and its scrape state.
struct Pod {
    service: usize,
    name: String,
    ip: String,
    node: usize,
    replicaset: usize,
    from: usize,
    /// Serving from this step (a rollout's readiness).
    serving: usize,
    to: usize,
    p99: f64,
    p50: f64,
    ar: f64,
    count: f64,
    sum: f64,
    ok: f64,
    errors: f64,
    cpu: f64,
    restarts: f64,
    /// Series ids of its app metrics (made stale when it goes down or away).
    app: Vec<usize>,
    all: Vec<usize>,
    was_down: bool,
}

struct Scraper {
    rng: Pcg64,
    labels: Vec<Vec<(String, String)>>,
    ids: HashMap<Vec<(String, String)>, usize>,
    pods: Vec<Pod>,
    /// ReplicaSets per service: names.
    replicasets: Vec<Vec<String>>,
    generation: Vec<f64>,
    edge_total: Vec<f64>,
    edge_failed: Vec<f64>,
    out: Vec<(usize, f64)>,
}

fn label_set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

impl Scraper {
    fn new(sc: &Scenario) -> Self {
        let mut rng = Pcg64::seed_from_u64(sc.seed ^ 0x5c_7a_9e);
        let w = &sc.world;
        let mut s = Scraper {
            rng: Pcg64::seed_from_u64(sc.seed ^ 0x0b5e_77e5),
            labels: Vec::new(),
            ids: HashMap::new(),
            pods: Vec::new(),
            replicasets: vec![Vec::new(); w.services.len()],
            generation: vec![1.0; w.services.len()],
            edge_total: vec![0.0; w.calls.len()],
            edge_failed: vec![0.0; w.calls.len()],
            out: Vec::new(),
        };
        // Initial pods, then the rollouts' replacement pods.
        for i in 0..w.services.len() {
            s.add_replicaset(&mut rng, sc, i, 0, 0);
        }
        let mut deploys = sc.deploys.clone();
        deploys.sort_by_key(|d| d.step);
        for d in deploys {
            // The old pods stop serving and go away once the new ones are ready.
            let end = d.step + d.ready;
            for p in s
                .pods
                .iter_mut()
                .filter(|p| p.service == d.service && p.to > d.step)
            {
                p.to = end;
            }
            s.add_replicaset(&mut rng, sc, d.service, d.step, end);
        }
        s
    }

    fn add_replicaset(
        &mut self,
        rng: &mut Pcg64,
        sc: &Scenario,
        service: usize,
        from: usize,
        serving: usize,
    ) {
        let svc = &sc.world.services[service];
        let rs = format!("{}-{}", svc.name, hash_name(rng, 9));
        let index = self.replicasets[service].len();
        self.replicasets[service].push(rs.clone());
        for r in 0..svc.replicas {
            let name = if svc.role == Role::Datastore {
                format!("{}-{}", svc.name, r + index * svc.replicas)
            } else {
                format!("{rs}-{}", hash_name(rng, 5))
            };
            self.pods.push(Pod {
                service,
                name,
                ip: format!(
                    "10.244.{}.{}",
                    rng.random_range(0..64u32),
                    rng.random_range(2..250u32)
                ),
                node: rng.random_range(0..sc.world.nodes.len()),
                replicaset: index,
                from,
                serving,
                to: usize::MAX,
                p99: f64::NAN,
                p50: f64::NAN,
                ar: 0.0,
                count: 0.0,
                sum: 0.0,
                ok: 0.0,
                errors: 0.0,
                cpu: 0.0,
                restarts: 0.0,
                app: Vec::new(),
                all: Vec::new(),
                was_down: false,
            });
        }
    }

    fn id(&mut self, pairs: &[(&str, &str)]) -> usize {
        let key = label_set(pairs);
        if let Some(&i) = self.ids.get(&key) {
            return i;
        }
        let i = self.labels.len();
        self.labels.push(key.clone());
        self.ids.insert(key, i);
        i
    }

    fn emit(&mut self, pairs: &[(&str, &str)], v: f64) -> usize {
        let i = self.id(pairs);
        self.out.push((i, v));
        i
    }

    fn step(&mut self, sc: &Scenario, t: &Truth, k: usize) {
        self.out.clear();
        let w = &sc.world;
        let mut node_load = vec![0.0; w.nodes.len()];
        for p in 0..self.pods.len() {
            let (service, from, to, serving) = {
                let pod = &self.pods[p];
                (pod.service, pod.from, pod.to, pod.serving)
            };
            if k < from {
                continue;
            }
            if k >= to {
                if k == to {
                    // The pod is gone: Prometheus marks its series stale.
                    let all = self.pods[p].all.clone();
                    for id in all {
                        self.out.push((id, STALE));
                    }
                }
                continue;
            }
            let svc = &w.services[service];
            let (name, ip, node) = {
                let pod = &self.pods[p];
                (pod.name.clone(), pod.ip.clone(), pod.node)
            };
            let svc_name = svc.name.clone();
            let job = svc_name.clone();
            let instance = format!("{ip}:8080");
            let app = |extra: &[(&'static str, String)]| -> Vec<(String, String)> {
                let mut v: Vec<(String, String)> = vec![
                    ("job".into(), job.clone()),
                    ("service".into(), svc_name.clone()),
                    ("namespace".into(), NAMESPACE.into()),
                    ("pod".into(), name.clone()),
                    ("instance".into(), instance.clone()),
                ];
                v.extend(extra.iter().map(|(a, b)| (a.to_string(), b.clone())));
                v
            };
            let serving_now = k >= serving;
            let live = svc.replicas.max(1) as f64;
            let share = if serving_now { 1.0 / live } else { 0.0 };
            let down = t.down[service][k];
            let rate = t.rate[service][k] * share;
            let lat = t.lat[service][k];
            let err = t.err[service][k];
            let mut ids = Vec::new();
            let mut app_ids = Vec::new();
            let emit_owned =
                |s: &mut Self, labels: Vec<(String, String)>, v: f64, ids: &mut Vec<usize>| {
                    let refs: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect();
                    let i = s.emit(&refs, v);
                    ids.push(i);
                    i
                };
            emit_owned(
                self,
                app(&[("__name__", "up".into())]),
                if down { 0.0 } else { 1.0 },
                &mut ids,
            );
            if down {
                if !self.pods[p].was_down {
                    let app_series = self.pods[p].app.clone();
                    for id in app_series {
                        self.out.push((id, STALE));
                    }
                }
            } else {
                // AR(1) log-normal noise, then the summary's smoothing.
                let noise = svc.noise;
                let z = normal(&mut self.rng);
                let pod = &mut self.pods[p];
                pod.ar = 0.6 * pod.ar + 0.8 * z;
                let observed99 = lat * svc.p99_factor * (noise * pod.ar).exp();
                let observed50 = lat * (0.5 * noise * pod.ar).exp();
                pod.p99 = if pod.p99.is_finite() {
                    svc.smooth * observed99 + (1.0 - svc.smooth) * pod.p99
                } else {
                    observed99
                };
                pod.p50 = if pod.p50.is_finite() {
                    svc.smooth * observed50 + (1.0 - svc.smooth) * pod.p50
                } else {
                    observed50
                };
                let reqs = poisson(&mut self.rng, rate * STEP_MS as f64 / 1000.0);
                let errs = poisson(&mut self.rng, reqs * err).min(reqs);
                let pod = &mut self.pods[p];
                pod.count += reqs;
                pod.sum += reqs * lat;
                pod.ok += reqs - errs;
                pod.errors += errs;
                let (p99, p50, count, sum, ok, errors) =
                    (pod.p99, pod.p50, pod.count, pod.sum, pod.ok, pod.errors);
                let dur = "http_request_duration_seconds".to_string();
                for (labels, v) in [
                    (
                        app(&[("__name__", dur.clone()), ("quantile", "0.99".into())]),
                        p99,
                    ),
                    (
                        app(&[("__name__", dur.clone()), ("quantile", "0.5".into())]),
                        p50,
                    ),
                    (app(&[("__name__", format!("{dur}_count"))]), count),
                    (app(&[("__name__", format!("{dur}_sum"))]), sum),
                    (
                        app(&[
                            ("__name__", "http_requests_total".into()),
                            ("code", "200".into()),
                        ]),
                        ok,
                    ),
                    (
                        app(&[
                            ("__name__", "http_requests_total".into()),
                            ("code", "500".into()),
                        ]),
                        errors,
                    ),
                ] {
                    let i = emit_owned(self, labels, v, &mut ids);
                    app_ids.push(i);
                }
            }
            // cAdvisor.
            let cores = if down {
                0.01
            } else {
                svc.base_cpu + svc.cpu_per_rps * rate + t.extra_cpu[service][k]
            } * (1.0 + 0.05 * normal(&mut self.rng));
            node_load[node] += cores.max(0.0);
            let mem =
                svc.base_mem * t.mem_factor[service][k] * (1.0 + 0.01 * normal(&mut self.rng));
            let restarts_now = t.restarts[service][k] as f64;
            {
                let pod = &mut self.pods[p];
                pod.cpu += cores.max(0.0) * STEP_MS as f64 / 1000.0;
                pod.restarts += restarts_now;
                pod.was_down = down;
            }
            let (cpu, restarts) = (self.pods[p].cpu, self.pods[p].restarts);
            let container = svc.name.clone();
            let kube = |metric: &str, extra: &[(&str, String)]| -> Vec<(String, String)> {
                let mut v = vec![
                    ("__name__".to_string(), metric.to_string()),
                    ("namespace".into(), NAMESPACE.into()),
                    ("pod".into(), name.clone()),
                ];
                v.extend(extra.iter().map(|(a, b)| (a.to_string(), b.clone())));
                v
            };
            let cadvisor = [
                ("container", container.clone()),
                ("job", "kubelet".to_string()),
                ("node", w.nodes[node].clone()),
            ];
            emit_owned(
                self,
                kube("container_cpu_usage_seconds_total", &cadvisor),
                cpu,
                &mut ids,
            );
            emit_owned(
                self,
                kube("container_memory_working_set_bytes", &cadvisor),
                mem,
                &mut ids,
            );
            let rs = self.replicasets[service][self.pods[p].replicaset].clone();
            let ksm = ("job", "kube-state-metrics".to_string());
            emit_owned(
                self,
                kube(
                    "kube_pod_info",
                    &[
                        ksm.clone(),
                        ("node", w.nodes[node].clone()),
                        ("pod_ip", ip.clone()),
                        ("host_ip", format!("10.0.1.{}", 10 + node)),
                        ("created_by_kind", "ReplicaSet".into()),
                        ("created_by_name", rs.clone()),
                    ],
                ),
                1.0,
                &mut ids,
            );
            let owner = if svc.role == Role::Datastore {
                ("StatefulSet", svc.name.clone())
            } else {
                ("ReplicaSet", rs.clone())
            };
            emit_owned(
                self,
                kube(
                    "kube_pod_owner",
                    &[
                        ksm.clone(),
                        ("owner_kind", owner.0.into()),
                        ("owner_name", owner.1),
                        ("owner_is_controller", "true".into()),
                    ],
                ),
                1.0,
                &mut ids,
            );
            emit_owned(
                self,
                kube(
                    "kube_pod_container_status_restarts_total",
                    &[ksm.clone(), ("container", container)],
                ),
                restarts,
                &mut ids,
            );
            let pod = &mut self.pods[p];
            if pod.all.is_empty() {
                pod.all = ids;
            } else {
                for id in ids {
                    if !pod.all.contains(&id) {
                        pod.all.push(id);
                    }
                }
            }
            for id in app_ids {
                if !pod.app.contains(&id) {
                    pod.app.push(id);
                }
            }
        }
        // Workload objects.
        for (i, svc) in w.services.iter().enumerate() {
            let born: Vec<usize> = sc
                .deploys
                .iter()
                .filter(|d| d.service == i && d.step <= k)
                .map(|d| d.step)
                .collect();
            let generation = 1.0 + born.len() as f64;
            self.generation[i] = generation;
            let (kind, label) = if svc.role == Role::Datastore {
                ("StatefulSet", "statefulset")
            } else {
                ("Deployment", "deployment")
            };
            let live_rs = 1 + born.len();
            for r in 0..live_rs.min(self.replicasets[i].len()) {
                if kind == "StatefulSet" {
                    break;
                }
                let rs = self.replicasets[i][r].clone();
                self.emit(
                    &[
                        ("__name__", "kube_replicaset_owner"),
                        ("job", "kube-state-metrics"),
                        ("namespace", NAMESPACE),
                        ("replicaset", &rs),
                        ("owner_kind", kind),
                        ("owner_name", &svc.name),
                        ("owner_is_controller", "true"),
                    ],
                    1.0,
                );
            }
            let metric = format!("kube_{label}_metadata_generation");
            self.emit(
                &[
                    ("__name__", &metric),
                    ("job", "kube-state-metrics"),
                    ("namespace", NAMESPACE),
                    (label, &svc.name),
                ],
                generation,
            );
        }
        for (n, node) in w.nodes.iter().enumerate() {
            let load = (0.3 + node_load[n]) * (1.0 + 0.05 * normal(&mut self.rng));
            self.emit(
                &[
                    ("__name__", "node_load1"),
                    ("job", "node-exporter"),
                    ("instance", node),
                ],
                load.max(0.0),
            );
        }
        // The tracing pipeline's service graph.
        for (e, c) in w.calls.iter().enumerate() {
            let calls = t.rate[c.from][k] * c.calls * STEP_MS as f64 / 1000.0;
            let failed = if t.down[c.to][k] { 1.0 } else { t.err[c.to][k] };
            self.edge_total[e] += calls.round();
            self.edge_failed[e] += (calls * failed).round();
            let (from, to) = (
                w.services[c.from].name.clone(),
                w.services[c.to].name.clone(),
            );
            let conn = if w.services[c.to].role == Role::Datastore {
                "database"
            } else {
                ""
            };
            let (total, failed) = (self.edge_total[e], self.edge_failed[e]);
            for (metric, v) in [
                ("traces_service_graph_request_total", total),
                ("traces_service_graph_request_failed_total", failed),
            ] {
                self.emit(
                    &[
                        ("__name__", metric),
                        ("job", "tempo"),
                        ("client", &from),
                        ("server", &to),
                        ("connection_type", conn),
                    ],
                    v,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_are_connected_dags_within_size() {
        for seed in 0..20 {
            let mut rng = Pcg64::seed_from_u64(seed);
            let n = 10 + (seed as usize * 7) % 41;
            let w = World::generate(&mut rng, n);
            assert_eq!(w.services.len(), n);
            for c in &w.calls {
                assert!(
                    w.services[c.to].tier > w.services[c.from].tier,
                    "calls go deeper"
                );
            }
            for (i, s) in w.services.iter().enumerate() {
                if s.role != Role::Entry {
                    assert!(w.calls.iter().any(|c| c.to == i), "{} has a caller", s.name);
                }
            }
            let mut names: Vec<&str> = w.services.iter().map(|s| s.name.as_str()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "unique names");
        }
    }

    #[test]
    fn scenarios_are_reproducible_and_scrapes_well_formed() {
        let a = Scenario::generate(42, 12, FaultKind::Outage, 8);
        let b = Scenario::generate(42, 12, FaultKind::Outage, 8);
        assert_eq!(a.cause(), b.cause());
        let mut first: Vec<(String, f64)> = Vec::new();
        let mut stale = 0;
        a.scrape(|k, samples| {
            for (labels, v) in samples {
                assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
                assert!(labels.iter().all(|(_, v)| !v.is_empty()));
                if v.to_bits() == STALE.to_bits() {
                    stale += 1;
                }
            }
            if k == 0 {
                first = samples
                    .iter()
                    .map(|(l, v)| (format!("{l:?}"), *v))
                    .collect();
            }
        });
        assert!(stale > 0, "the outage makes app series stale");
        let mut again: Vec<(String, f64)> = Vec::new();
        b.scrape(|k, samples| {
            if k == 0 {
                again = samples
                    .iter()
                    .map(|(l, v)| (format!("{l:?}"), *v))
                    .collect();
            }
        });
        assert_eq!(first, again);
    }

    #[test]
    fn a_fault_reaches_the_callers_with_a_lag() {
        let sc = Scenario::generate(7, 15, FaultKind::Latency, 20);
        let t = sc.truth();
        let f = sc.fault.service;
        let k = sc.fault.step;
        assert!(t.lat[f][k] > t.lat[f][k - 1] + 0.04);
        for c in sc.world.calls.iter().filter(|c| c.to == f) {
            assert!(t.lat[c.from][k + 3] > t.lat[c.from][k - 1], "caller slowed");
        }
    }
}
