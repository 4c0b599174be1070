//! The scenario file (`closedloop simulate --scenario FILE`): the simulated world's
//! services and their topology, the traffic, the metrics' noise, the faults and the
//! harmless events on a schedule, which action fixes which fault, the human on call,
//! the seed and the targets. Documented in `docs/simulate.md`; the built-in scenario
//! is `default.yml` beside this file, embedded in the binary.
//!
//! Invariants: a [`Scenario`] that [`Scenario::parse`] returned is valid — every name
//! it refers to exists, the call graph has no cycle, every number is finite and in
//! range, and every size the file can choose (duration, services, replicas, faults)
//! has a limit — so the world never checks again. Every error names the file, the
//! key path (`faults[2].factor`) and the reason. Nothing here panics on input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::act::ActionKind;
use crate::decide::config::{AllowConfig, DecideConfig};
use crate::duration::PromDuration;

/// The built-in scenario.
pub const DEFAULT_SCENARIO: &str = include_str!("default.yml");
/// The rule file the built-in scenario runs (`rules/simulate/shop.yml`).
pub const DEFAULT_RULES: &str = include_str!("../../../rules/simulate/shop.yml");
/// How the built-in rule file is named in messages and alert sources.
pub const DEFAULT_RULES_NAME: &str = "rules/simulate/shop.yml";

/// Longest simulated run.
pub const MAX_DURATION_MS: i64 = 30 * 86_400_000;
/// Most simulated steps in one run (duration / step).
pub const MAX_STEPS: i64 = 1_000_000;
/// Most services.
pub const MAX_SERVICES: usize = 64;
/// Most replicas of one service, at the start or after scaling.
pub const MAX_REPLICAS: u32 = 200;
/// Most faults plus harmless events.
pub const MAX_EVENTS: usize = 1000;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (unknown key, wrong type, bad duration).
    #[error("{}:{line}: {key}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random draw (traffic noise, measurement noise, harmless
    /// blips); the same seed gives the same run. `--seed` overrides it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time to run (default 24h, at most 30d).
    #[serde(default = "default_duration")]
    pub duration: PromDuration,
    /// Sample interval: every metric is sampled and remote-written this often, and
    /// the rules are evaluated at the same timestamps (default 15s).
    #[serde(default = "default_step")]
    pub step: PromDuration,
    /// The simulated clock's start, RFC 3339 (default 2025-01-06T00:00:00Z, a Monday).
    #[serde(default = "default_start")]
    pub start: String,
    /// The Kubernetes namespace the services run in; action targets name it.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Rule files to evaluate, relative to the scenario file (default: the built-in
    /// `rules/simulate/shop.yml`).
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Requests entering the system.
    #[serde(default)]
    pub traffic: Traffic,
    /// The services, callers before or after callees (order is free).
    pub services: Vec<ServiceSpec>,
    /// Measurement noise per exported metric.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Faults injected on a schedule.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Harmless events (expected traffic peaks, noisy samples) that must not be
    /// mistaken for faults.
    #[serde(default)]
    pub benign: Vec<BenignSpec>,
    /// What "healthy" means in the world's own (noise-free) state.
    #[serde(default)]
    pub slo: SloSpec,
    /// The simulated on-call engineer.
    #[serde(default)]
    pub human: HumanSpec,
    /// The safety policy every action passes: the `decide:` section of the service
    /// config, with the same keys and defaults except `dry_run`, which is `false`
    /// here (the world is simulated). Absent: [`Scenario::default_policy`].
    #[serde(default)]
    pub decide: Option<serde_yaml::Value>,
    /// How the figures are measured.
    #[serde(default)]
    pub measure: MeasureSpec,
    /// The loop's targets the report compares against.
    #[serde(default)]
    pub targets: Targets,
}

fn default_name() -> String {
    "unnamed".into()
}
fn default_seed() -> u64 {
    1
}
fn default_duration() -> PromDuration {
    PromDuration(86_400_000)
}
fn default_step() -> PromDuration {
    PromDuration(15_000)
}
fn default_start() -> String {
    "2025-01-06T00:00:00Z".into()
}
fn default_namespace() -> String {
    "shop".into()
}

/// Requests entering the system at the entry service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// The service users call (default: the first `web` service).
    #[serde(default)]
    pub entry: Option<String>,
    /// Mean requests per second over a day.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Daily swing around the mean, as a share of it (0 ≤ x < 1): the rate follows
    /// `rate × (1 + daily_amplitude × cos(2π (hour − peak_hour) / 24))`.
    #[serde(default = "default_amplitude")]
    pub daily_amplitude: f64,
    /// Hour of the simulated day (UTC) with the most traffic.
    #[serde(default = "default_peak_hour")]
    pub peak_hour: f64,
    /// Relative random variation of the true rate, per step (0 ≤ x ≤ 0.5).
    #[serde(default = "default_traffic_noise")]
    pub noise: f64,
}

fn default_rate() -> f64 {
    100.0
}
fn default_amplitude() -> f64 {
    0.3
}
fn default_peak_hour() -> f64 {
    14.0
}
fn default_traffic_noise() -> f64 {
    0.03
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            entry: None,
            rate: default_rate(),
            daily_amplitude: default_amplitude(),
            peak_hour: default_peak_hour(),
            noise: default_traffic_noise(),
        }
    }
}

/// What a service is; decides which metrics it exports and how it behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Serves requests from callers (or users, at the entry).
    Web,
    /// A cache in front of a store: hits are answered, misses go to `misses_to`.
    Cache,
    /// A database: serves its callers' queries.
    Database,
    /// A batch job: issues `load` requests per second per replica to its calls.
    Batch,
    /// Outside the cluster (an upstream provider): no pods, no metrics of its own;
    /// its callers count their calls to it.
    External,
}

/// One service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Lower-case letters, digits and `-`; the Deployment (or StatefulSet for a
    /// database) and the `service` label have this name.
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: ServiceKind,
    /// Pods at the start (not for `external`; default 2).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Requests per second one ready replica serves at full utilisation.
    #[serde(default = "default_capacity")]
    pub capacity: f64,
    /// p99 latency of the service's own work at low load (its calls add theirs).
    #[serde(default = "default_latency")]
    pub latency: PromDuration,
    /// Share of requests failing in normal operation.
    #[serde(default = "default_error_ratio")]
    pub error_ratio: f64,
    /// Resident memory of a pod at rest, MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: f64,
    /// A pod's memory limit, MiB: reaching it is an OOM kill.
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mib: f64,
    /// Dependencies: service name → calls per request (0 < x ≤ 10).
    #[serde(default)]
    pub calls: BTreeMap<String, f64>,
    /// cache: share of lookups answered from the cache.
    #[serde(default)]
    pub hit_ratio: Option<f64>,
    /// cache: where misses go.
    #[serde(default)]
    pub misses_to: Option<String>,
    /// batch: requests per second each replica issues.
    #[serde(default)]
    pub load: Option<f64>,
    /// The p99 latency above which the service is unhealthy (default:
    /// `slo.latency_factor` × its p99 at mean traffic with no fault).
    #[serde(default)]
    pub slo_latency: Option<PromDuration>,
    /// The service's ConfigMap (`<name>-config`) data at the start.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_kind() -> ServiceKind {
    ServiceKind::Web
}
fn default_capacity() -> f64 {
    100.0
}
fn default_latency() -> PromDuration {
    PromDuration(20)
}
fn default_error_ratio() -> f64 {
    0.001
}
fn default_memory() -> f64 {
    256.0
}
fn default_memory_limit() -> f64 {
    512.0
}

/// Measurement noise: exported metric name → relative standard deviation of the
/// sampled value (e.g. `http_request_duration_seconds: 0.05`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    #[serde(default)]
    pub noise: BTreeMap<String, f64>,
}

/// The kinds of fault the world knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The service receives `factor` × its normal requests (a traffic spike, a
    /// runaway batch job). More replicas absorb it.
    LoadSurge,
    /// Each request costs `factor` × its normal work (a slow node, a hot lock):
    /// latency rises and capacity falls. More replicas absorb it.
    Slowdown,
    /// `share` of the pods crash on start and back off (CrashLoopBackOff): fewer
    /// ready pods, restarts climbing.
    CrashLoop,
    /// Every pod's memory grows by `leak_mib_per_hour`; near the limit the pods
    /// slow down, at the limit they are OOM-killed.
    MemoryLeak,
    /// The cache's hit ratio falls to `hit_ratio`; misses load what is behind it.
    CachePollution,
    /// The service fails `error_ratio` of its requests and slows by `factor`
    /// (an upstream provider's outage shows only at its callers).
    Outage,
    /// A new version is rolled out that fails `error_ratio` of requests and slows
    /// by `factor`.
    BadDeploy,
    /// A generic change: `signal` of the service is multiplied by `factor` and/or
    /// shifted by `offset`.
    Shift,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LoadSurge => "load_surge",
            FaultKind::Slowdown => "slowdown",
            FaultKind::CrashLoop => "crash_loop",
            FaultKind::MemoryLeak => "memory_leak",
            FaultKind::CachePollution => "cache_pollution",
            FaultKind::Outage => "outage",
            FaultKind::BadDeploy => "bad_deploy",
            FaultKind::Shift => "shift",
        }
    }

    /// Whether a fixing action ends the cause. Load and slowness go on until their
    /// scheduled end; the fix (more replicas) works through capacity instead.
    pub fn fix_ends_cause(self) -> bool {
        !matches!(self, FaultKind::LoadSurge | FaultKind::Slowdown)
    }

    /// The parameters the kind takes, and which of them it needs.
    fn params(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            FaultKind::LoadSurge | FaultKind::Slowdown => (&["factor", "ramp"], &["factor"]),
            FaultKind::CrashLoop => (&["share"], &[]),
            FaultKind::MemoryLeak => (&["leak_mib_per_hour"], &["leak_mib_per_hour"]),
            FaultKind::CachePollution => (&["hit_ratio", "ramp"], &["hit_ratio"]),
            FaultKind::Outage | FaultKind::BadDeploy => {
                (&["error_ratio", "factor", "ramp"], &["error_ratio"])
            }
            FaultKind::Shift => (&["signal", "factor", "offset", "ramp"], &["signal"]),
        }
    }
}

/// A world quantity a `shift` fault or a `noise` event acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Requests arriving (req/s).
    Requests,
    /// p99 latency.
    Latency,
    /// Share of failed requests.
    Errors,
    /// Pod memory.
    Memory,
    /// Cache hit ratio.
    HitRatio,
    /// Work queue length.
    Queue,
}

/// One fault.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Unique among faults and harmless events; names the fault in the report.
    pub name: String,
    pub kind: FaultKind,
    /// Where the cause sits.
    pub service: String,
    /// When it starts, from the start of the run.
    pub start: PromDuration,
    /// How long the cause lasts if nobody fixes it (default: to the end of the run).
    #[serde(default)]
    pub duration: Option<PromDuration>,
    /// load_surge, slowdown: multiplier (> 1); outage, bad_deploy: latency
    /// multiplier (default 1); shift: multiplier of `signal` (default 1).
    #[serde(default)]
    pub factor: Option<f64>,
    /// outage, bad_deploy: share of requests failing (0..1].
    #[serde(default)]
    pub error_ratio: Option<f64>,
    /// cache_pollution: the hit ratio it falls to (0..1).
    #[serde(default)]
    pub hit_ratio: Option<f64>,
    /// memory_leak: growth per pod, MiB per hour.
    #[serde(default)]
    pub leak_mib_per_hour: Option<f64>,
    /// crash_loop: share of the pods crashing (0..1], default 1.
    #[serde(default)]
    pub share: Option<f64>,
    /// shift: which signal.
    #[serde(default)]
    pub signal: Option<Signal>,
    /// shift: added to the signal (after `factor`).
    #[serde(default)]
    pub offset: Option<f64>,
    /// The effect grows linearly to its full size over this long (default: at once).
    #[serde(default)]
    pub ramp: Option<PromDuration>,
    /// Services whose alerts count as detecting this fault, besides the service
    /// itself and every service the world sees unhealthy while it lasts.
    #[serde(default)]
    pub shows_on: Vec<String>,
    /// The actions that fix it; any one is enough.
    #[serde(default)]
    pub fixed_by: Vec<ActionMatch>,
}

/// Which action fixes a fault: its type and, optionally, its target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionMatch {
    /// An action type (`rollout_restart`, `scale`, `clear_cache`, …); `scale_up` /
    /// `scale_down` are a `scale` that adds / removes replicas.
    #[serde(rename = "type")]
    pub kind: String,
    /// The target as the action names it without the namespace: `deployment/backend`,
    /// `configmap/backend-config`, a Redis or endpoint or channel name (default: any).
    #[serde(default)]
    pub target: Option<String>,
}

/// What a matcher's `type` means, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Kind(ActionKind),
    ScaleUp,
    ScaleDown,
}

impl ActionMatch {
    /// The parsed type; validated at load, so never `None` on a loaded scenario.
    pub fn match_kind(&self) -> Option<MatchKind> {
        match self.kind.as_str() {
            "scale_up" => Some(MatchKind::ScaleUp),
            "scale_down" => Some(MatchKind::ScaleDown),
            k => ActionKind::ALL
                .iter()
                .find(|a| a.as_str() == k)
                .map(|a| MatchKind::Kind(*a)),
        }
    }
}

/// The kinds of harmless event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenignKind {
    /// Expected extra traffic at the entry (`factor` × normal), ramped in and out
    /// over a quarter of its duration each: a seasonal peak, not a fault.
    Peak,
    /// Single samples of one metric of `service` read `magnitude` × their value
    /// with `probability` per step: a flaky exporter, a GC pause. The world itself
    /// is unchanged.
    Noise,
}

/// One harmless event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BenignSpec {
    pub name: String,
    pub kind: BenignKind,
    pub start: PromDuration,
    pub duration: PromDuration,
    /// peak: traffic multiplier at its height (> 1).
    #[serde(default)]
    pub factor: Option<f64>,
    /// noise: the service whose samples are noisy.
    #[serde(default)]
    pub service: Option<String>,
    /// noise: the signal (latency, errors, memory, requests, queue, hit_ratio).
    #[serde(default)]
    pub signal: Option<Signal>,
    /// noise: a noisy sample reads this × its value (> 0).
    #[serde(default)]
    pub magnitude: Option<f64>,
    /// noise: chance per step of a noisy sample (0..1].
    #[serde(default)]
    pub probability: Option<f64>,
}

/// What healthy means, judged on the world's noise-free state (never on what the
/// detectors see).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// A service failing more than this share of requests is unhealthy.
    #[serde(default = "default_slo_errors")]
    pub error_ratio: f64,
    /// A pod above this share of its memory limit makes its service unhealthy.
    #[serde(default = "default_slo_memory")]
    pub memory_ratio: f64,
    /// A cache answering fewer than this share of lookups is unhealthy.
    #[serde(default = "default_slo_hit_ratio")]
    pub hit_ratio: f64,
    /// A service's default latency objective: this × its p99 at mean traffic.
    #[serde(default = "default_slo_latency_factor")]
    pub latency_factor: f64,
}

fn default_slo_errors() -> f64 {
    0.02
}
fn default_slo_memory() -> f64 {
    0.9
}
fn default_slo_hit_ratio() -> f64 {
    0.7
}
fn default_slo_latency_factor() -> f64 {
    2.5
}

impl Default for SloSpec {
    fn default() -> Self {
        SloSpec {
            error_ratio: default_slo_errors(),
            memory_ratio: default_slo_memory(),
            hit_ratio: default_slo_hit_ratio(),
            latency_factor: default_slo_latency_factor(),
        }
    }
}

/// The simulated on-call engineer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HumanSpec {
    /// An action waiting for approval is approved this long after it was asked.
    #[serde(default = "default_approval_delay")]
    pub approval_delay: PromDuration,
    /// After a notification, a fault automation has not fixed is fixed by hand
    /// (with its first `fixed_by` action) this long later.
    #[serde(default = "default_response_time")]
    pub response_time: PromDuration,
}

fn default_approval_delay() -> PromDuration {
    PromDuration(120_000)
}
fn default_response_time() -> PromDuration {
    PromDuration(20 * 60_000)
}

impl Default for HumanSpec {
    fn default() -> Self {
        HumanSpec {
            approval_delay: default_approval_delay(),
            response_time: default_response_time(),
        }
    }
}

/// How the report attributes alerts and judges actions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureSpec {
    /// An alert firing up to this long after a fault recovered still belongs to it.
    #[serde(default = "default_grace")]
    pub grace: PromDuration,
    /// An action succeeded if the fault it fixes recovered within this long.
    #[serde(default = "default_verify")]
    pub verify: PromDuration,
    /// The alert label naming the service an alert is about.
    #[serde(default = "default_service_label")]
    pub service_label: String,
}

fn default_grace() -> PromDuration {
    PromDuration(5 * 60_000)
}
fn default_verify() -> PromDuration {
    PromDuration(5 * 60_000)
}
fn default_service_label() -> String {
    "service".into()
}

impl Default for MeasureSpec {
    fn default() -> Self {
        MeasureSpec {
            grace: default_grace(),
            verify: default_verify(),
            service_label: default_service_label(),
        }
    }
}

/// The loop's targets (the project's seed figures by default).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Mean time to detect below this.
    #[serde(default = "default_mttd")]
    pub mttd: PromDuration,
    /// Mean time to recover below this.
    #[serde(default = "default_mttr")]
    pub mttr: PromDuration,
    /// False-positive rate below this.
    #[serde(default = "default_fp")]
    pub false_positive_rate: f64,
    /// Remediation success rate above this.
    #[serde(default = "default_success")]
    pub remediation_success_rate: f64,
    /// Human intervention rate below this.
    #[serde(default = "default_human")]
    pub human_intervention_rate: f64,
}

fn default_mttd() -> PromDuration {
    PromDuration(60_000)
}
fn default_mttr() -> PromDuration {
    PromDuration(5 * 60_000)
}
fn default_fp() -> f64 {
    0.10
}
fn default_success() -> f64 {
    0.90
}
fn default_human() -> f64 {
    0.20
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            mttd: default_mttd(),
            mttr: default_mttr(),
            false_positive_rate: default_fp(),
            remediation_success_rate: default_success(),
            human_intervention_rate: default_human(),
        }
    }
}

/// The exported metric names whose noise a scenario may set.
pub const NOISY_METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "cache_hits_total",
    "queue_depth",
    "upstream_requests_total",
];

/// A loaded scenario and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    /// The file (`None`: built in).
    pub path: Option<PathBuf>,
    /// The start as milliseconds since the epoch.
    pub start_ms: i64,
}

impl Loaded {
    /// The built-in scenario.
    pub fn builtin() -> Result<Loaded, ScenarioError> {
        parse(DEFAULT_SCENARIO, Path::new("(built-in scenario)"), None)
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text, path, Some(path.to_path_buf()))
    }

    /// The rule files to load, resolved against the scenario's directory; empty
    /// when the built-in rules apply.
    pub fn rule_files(&self) -> Vec<PathBuf> {
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        self.scenario
            .rule_files
            .iter()
            .map(|f| base.join(f))
            .collect()
    }
}

/// Parses and validates scenario text; `path` names it in errors.
pub fn parse(text: &str, path: &Path, file: Option<PathBuf>) -> Result<Loaded, ScenarioError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line()).unwrap_or(0);
        let msg = inner.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        // serde_yaml may prefix the enclosing path, which `key` already holds.
        let msg = match msg.split_once(": ") {
            Some((p, rest)) if key.starts_with(p) => rest.to_string(),
            _ => msg,
        };
        ScenarioError::Parse {
            path: path.to_path_buf(),
            line,
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            reason: msg,
        }
    })?;
    let start_ms = scenario
        .validate()
        .map_err(|(key, reason)| ScenarioError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        })?;
    Ok(Loaded {
        scenario,
        path: file,
        start_ms,
    })
}

type Invalid = (String, String);

impl Scenario {
    /// The policy of a scenario without `decide:`: every action kind but
    /// `cordon_node` allowed in the scenario's namespace, on any cache pattern and
    /// any service's config endpoint; the service's defaults for cooldown, rate
    /// limits, blast radius and approvals (rules ask for approval with
    /// `approval:`); exhausted ladders escalate to the `oncall` channel.
    pub fn default_policy(&self) -> DecideConfig {
        DecideConfig {
            dry_run: false,
            allow: AllowConfig {
                actions: ActionKind::ALL
                    .iter()
                    .copied()
                    .filter(|k| *k != ActionKind::CordonNode)
                    .collect(),
                namespaces: vec![self.namespace.clone()],
                nodes: Vec::new(),
                redis_patterns: vec!["*".into()],
                http_endpoints: self.services.iter().map(|s| s.name.clone()).collect(),
            },
            escalate_to: "oncall".into(),
            ..DecideConfig::default()
        }
    }

    /// The policy the loop runs with (`decide:`, or [`Scenario::default_policy`]).
    pub fn policy(&self) -> Result<DecideConfig, Invalid> {
        let Some(v) = &self.decide else {
            return Ok(self.default_policy());
        };
        let mut v = v.clone();
        let serde_yaml::Value::Mapping(m) = &mut v else {
            return Err(bad(
                "decide",
                "must be a mapping (the service's decide: keys)",
            ));
        };
        let key = serde_yaml::Value::String("dry_run".into());
        if !m.contains_key(&key) {
            m.insert(key, serde_yaml::Value::Bool(false));
        }
        let cfg: DecideConfig =
            serde_yaml::from_value(v).map_err(|e| bad("decide", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
    (key.into(), reason.into())
}

fn check_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), Invalid> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(bad(key, format!("{v} is outside [{lo}, {hi}]")));
    }
    Ok(())
}

fn check_name(key: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        return Err(bad(
            key,
            format!(
                "{name:?} must be 1-50 lower-case letters, digits or '-', starting with a letter"
            ),
        ));
    }
    Ok(())
}

impl Scenario {
    /// Checks everything the schema cannot; returns the start in epoch ms, or the
    /// key path and reason of the first problem.
    fn validate(&self) -> Result<i64, Invalid> {
        let start = chrono::DateTime::parse_from_rfc3339(&self.start)
            .map_err(|e| {
                bad(
                    "start",
                    format!("{:?} is not an RFC 3339 time: {e}", self.start),
                )
            })?
            .timestamp_millis();
        let (dur, step) = (self.duration.as_millis(), self.step.as_millis());
        if !(1000..=300_000).contains(&step) {
            return Err(bad("step", "must be between 1s and 5m"));
        }
        if dur < step || dur > MAX_DURATION_MS {
            return Err(bad("duration", "must be at least one step and at most 30d"));
        }
        if dur / step > MAX_STEPS {
            return Err(bad(
                "duration",
                format!("{} steps; at most {MAX_STEPS} (raise step)", dur / step),
            ));
        }
        check_name("namespace", &self.namespace)?;
        for (i, f) in self.rule_files.iter().enumerate() {
            if f.trim().is_empty() {
                return Err(bad(format!("rule_files[{i}]"), "empty path"));
            }
        }
        if self.services.is_empty() {
            return Err(bad("services", "at least one service is needed"));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(bad("services", format!("at most {MAX_SERVICES} services")));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = format!("services[{i}]");
            check_name(&format!("{key}.name"), &s.name)?;
            if !names.insert(s.name.as_str()) {
                return Err(bad(
                    format!("{key}.name"),
                    format!("{:?} is declared twice", s.name),
                ));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            self.validate_service(i, s, &names)?;
        }
        self.check_acyclic()?;
        let t = &self.traffic;
        let entry = self.entry().ok_or_else(|| {
            bad(
                "traffic.entry",
                "no entry service: name one, or declare a web service",
            )
        })?;
        let entry_kind = self.service(entry).map(|s| s.kind);
        match entry_kind {
            None => return Err(bad("traffic.entry", format!("unknown service {entry:?}"))),
            Some(ServiceKind::External | ServiceKind::Batch) => {
                return Err(bad(
                    "traffic.entry",
                    "the entry must be a web, cache or database service",
                ))
            }
            _ => {}
        }
        check_range("traffic.rate", t.rate, 0.0, 1e7)?;
        check_range("traffic.daily_amplitude", t.daily_amplitude, 0.0, 0.95)?;
        check_range("traffic.peak_hour", t.peak_hour, 0.0, 24.0)?;
        check_range("traffic.noise", t.noise, 0.0, 0.5)?;
        for (m, v) in &self.metrics.noise {
            if !NOISY_METRICS.contains(&m.as_str()) {
                return Err(bad(
                    format!("metrics.noise.{m}"),
                    format!("unknown metric (known: {})", NOISY_METRICS.join(", ")),
                ));
            }
            check_range(&format!("metrics.noise.{m}"), *v, 0.0, 1.0)?;
        }
        if self.faults.len() + self.benign.len() > MAX_EVENTS {
            return Err(bad(
                "faults",
                format!("at most {MAX_EVENTS} faults and harmless events"),
            ));
        }
        let mut event_names = BTreeSet::new();
        for (i, f) in self.faults.iter().enumerate() {
            let key = format!("faults[{i}]");
            if f.name.trim().is_empty() || !event_names.insert(f.name.as_str()) {
                return Err(bad(
                    format!("{key}.name"),
                    format!("{:?} is empty or used twice", f.name),
                ));
            }
            self.validate_fault(&key, f, &names)?;
        }
        for (i, b) in self.benign.iter().enumerate() {
            let key = format!("benign[{i}]");
            if b.name.trim().is_empty() || !event_names.insert(b.name.as_str()) {
                return Err(bad(
                    format!("{key}.name"),
                    format!("{:?} is empty or used twice", b.name),
                ));
            }
            self.validate_benign(&key, b, &names)?;
        }
        check_range("slo.error_ratio", self.slo.error_ratio, 0.0, 1.0)?;
        check_range("slo.memory_ratio", self.slo.memory_ratio, 0.0, 1.0)?;
        check_range("slo.hit_ratio", self.slo.hit_ratio, 0.0, 1.0)?;
        check_range("slo.latency_factor", self.slo.latency_factor, 1.0, 100.0)?;
        for (key, d) in [
            ("human.approval_delay", self.human.approval_delay),
            ("human.response_time", self.human.response_time),
            ("measure.grace", self.measure.grace),
            ("measure.verify", self.measure.verify),
            ("targets.mttd", self.targets.mttd),
            ("targets.mttr", self.targets.mttr),
        ] {
            if d.as_millis() < 0 || d.as_millis() > MAX_DURATION_MS {
                return Err(bad(key, "must be between 0s and 30d"));
            }
        }
        self.policy()?;
        if !crate::storage::is_valid_label_name(&self.measure.service_label) {
            return Err(bad("measure.service_label", "not a valid label name"));
        }
        check_range(
            "targets.false_positive_rate",
            self.targets.false_positive_rate,
            0.0,
            1.0,
        )?;
        check_range(
            "targets.remediation_success_rate",
            self.targets.remediation_success_rate,
            0.0,
            1.0,
        )?;
        check_range(
            "targets.human_intervention_rate",
            self.targets.human_intervention_rate,
            0.0,
            1.0,
        )?;
        Ok(start)
    }

    fn validate_service(
        &self,
        i: usize,
        s: &ServiceSpec,
        names: &BTreeSet<&str>,
    ) -> Result<(), Invalid> {
        let key = format!("services[{i}]");
        let only = |field: &str, set: bool, kind: &str| -> Result<(), Invalid> {
            if set {
                return Err(bad(
                    format!("{key}.{field}"),
                    format!("only applies to {kind} services"),
                ));
            }
            Ok(())
        };
        only(
            "hit_ratio",
            s.hit_ratio.is_some() && s.kind != ServiceKind::Cache,
            "cache",
        )?;
        only(
            "misses_to",
            s.misses_to.is_some() && s.kind != ServiceKind::Cache,
            "cache",
        )?;
        only(
            "load",
            s.load.is_some() && s.kind != ServiceKind::Batch,
            "batch",
        )?;
        if s.kind == ServiceKind::External && s.replicas.is_some() {
            return Err(bad(
                format!("{key}.replicas"),
                "an external service has no pods",
            ));
        }
        if let Some(r) = s.replicas {
            if r == 0 || r > MAX_REPLICAS {
                return Err(bad(
                    format!("{key}.replicas"),
                    format!("must be 1..={MAX_REPLICAS}"),
                ));
            }
        }
        check_range(&format!("{key}.capacity"), s.capacity, 1e-3, 1e7)?;
        let lat = s.latency.as_millis();
        if !(1..=60_000).contains(&lat) {
            return Err(bad(format!("{key}.latency"), "must be between 1ms and 1m"));
        }
        check_range(&format!("{key}.error_ratio"), s.error_ratio, 0.0, 0.5)?;
        check_range(&format!("{key}.memory_mib"), s.memory_mib, 1.0, 1e6)?;
        check_range(
            &format!("{key}.memory_limit_mib"),
            s.memory_limit_mib,
            1.0,
            1e6,
        )?;
        if s.memory_limit_mib <= s.memory_mib {
            return Err(bad(
                format!("{key}.memory_limit_mib"),
                "must be above memory_mib",
            ));
        }
        for (dep, w) in &s.calls {
            if !names.contains(dep.as_str()) {
                return Err(bad(format!("{key}.calls.{dep}"), "unknown service"));
            }
            if dep == &s.name {
                return Err(bad(
                    format!("{key}.calls.{dep}"),
                    "a service cannot call itself",
                ));
            }
            check_range(&format!("{key}.calls.{dep}"), *w, 1e-6, 10.0)?;
        }
        if s.kind == ServiceKind::External && !s.calls.is_empty() {
            return Err(bad(
                format!("{key}.calls"),
                "an external service calls nothing here",
            ));
        }
        if s.kind == ServiceKind::Cache {
            let h = s
                .hit_ratio
                .ok_or_else(|| bad(format!("{key}.hit_ratio"), "a cache needs hit_ratio"))?;
            check_range(&format!("{key}.hit_ratio"), h, 0.0, 1.0)?;
            match &s.misses_to {
                None => return Err(bad(format!("{key}.misses_to"), "a cache needs misses_to")),
                Some(m) if !names.contains(m.as_str()) || m == &s.name => {
                    return Err(bad(
                        format!("{key}.misses_to"),
                        format!("unknown service {m:?}"),
                    ))
                }
                _ => {}
            }
        }
        if s.kind == ServiceKind::Batch {
            let l = s
                .load
                .ok_or_else(|| bad(format!("{key}.load"), "a batch service needs load"))?;
            check_range(&format!("{key}.load"), l, 0.0, 1e6)?;
        }
        if let Some(l) = s.slo_latency {
            if l.as_millis() <= 0 {
                return Err(bad(format!("{key}.slo_latency"), "must be positive"));
            }
        }
        for (k, v) in &s.config {
            if k.is_empty() || k.len() > 253 || v.len() > 4096 {
                return Err(bad(
                    format!("{key}.config.{k}"),
                    "keys 1-253 bytes, values at most 4096",
                ));
            }
        }
        Ok(())
    }

    fn validate_fault(
        &self,
        key: &str,
        f: &FaultSpec,
        names: &BTreeSet<&str>,
    ) -> Result<(), Invalid> {
        if !names.contains(f.service.as_str()) {
            return Err(bad(
                format!("{key}.service"),
                format!("unknown service {:?}", f.service),
            ));
        }
        let svc = self.service(&f.service).map(|s| s.kind);
        self.check_window(key, f.start, f.duration)?;
        let (allowed, required) = f.kind.params();
        let given: [(&str, bool); 8] = [
            ("factor", f.factor.is_some()),
            ("error_ratio", f.error_ratio.is_some()),
            ("hit_ratio", f.hit_ratio.is_some()),
            ("leak_mib_per_hour", f.leak_mib_per_hour.is_some()),
            ("share", f.share.is_some()),
            ("signal", f.signal.is_some()),
            ("offset", f.offset.is_some()),
            ("ramp", f.ramp.is_some()),
        ];
        for (p, set) in given {
            if set && !allowed.contains(&p) {
                return Err(bad(
                    format!("{key}.{p}"),
                    format!(
                        "does not apply to {} (it takes: {})",
                        f.kind.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
            if !set && required.contains(&p) {
                return Err(bad(
                    format!("{key}.{p}"),
                    format!("{} needs {p}", f.kind.as_str()),
                ));
            }
        }
        let pods = |kind: &str| -> Result<(), Invalid> {
            if svc == Some(ServiceKind::External) {
                return Err(bad(
                    format!("{key}.kind"),
                    format!("{kind} needs pods; {:?} is external", f.service),
                ));
            }
            Ok(())
        };
        match f.kind {
            FaultKind::LoadSurge | FaultKind::Slowdown => check_range(
                &format!("{key}.factor"),
                f.factor.unwrap_or(0.0),
                1.0,
                1000.0,
            )?,
            FaultKind::CrashLoop => {
                pods("crash_loop")?;
                check_range(&format!("{key}.share"), f.share.unwrap_or(1.0), 1e-6, 1.0)?
            }
            FaultKind::MemoryLeak => {
                pods("memory_leak")?;
                check_range(
                    &format!("{key}.leak_mib_per_hour"),
                    f.leak_mib_per_hour.unwrap_or(0.0),
                    1e-6,
                    1e7,
                )?
            }
            FaultKind::CachePollution => {
                if svc != Some(ServiceKind::Cache) {
                    return Err(bad(
                        format!("{key}.service"),
                        "cache_pollution needs a cache service",
                    ));
                }
                check_range(
                    &format!("{key}.hit_ratio"),
                    f.hit_ratio.unwrap_or(-1.0),
                    0.0,
                    1.0,
                )?
            }
            FaultKind::Outage | FaultKind::BadDeploy => {
                if f.kind == FaultKind::BadDeploy {
                    pods("bad_deploy")?;
                }
                check_range(
                    &format!("{key}.error_ratio"),
                    f.error_ratio.unwrap_or(-1.0),
                    0.0,
                    1.0,
                )?;
                check_range(
                    &format!("{key}.factor"),
                    f.factor.unwrap_or(1.0),
                    1.0,
                    1000.0,
                )?
            }
            FaultKind::Shift => {
                check_range(
                    &format!("{key}.factor"),
                    f.factor.unwrap_or(1.0),
                    0.0,
                    1000.0,
                )?;
                check_range(&format!("{key}.offset"), f.offset.unwrap_or(0.0), -1e9, 1e9)?;
            }
        }
        if let Some(r) = f.ramp {
            if r.as_millis() < 0 || r.as_millis() > MAX_DURATION_MS {
                return Err(bad(format!("{key}.ramp"), "must be between 0s and 30d"));
            }
        }
        for (j, s) in f.shows_on.iter().enumerate() {
            if !names.contains(s.as_str()) {
                return Err(bad(
                    format!("{key}.shows_on[{j}]"),
                    format!("unknown service {s:?}"),
                ));
            }
        }
        for (j, m) in f.fixed_by.iter().enumerate() {
            if m.match_kind().is_none() {
                let known: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(bad(
                    format!("{key}.fixed_by[{j}].type"),
                    format!(
                        "unknown action type {:?} (known: {}, scale_up, scale_down)",
                        m.kind,
                        known.join(", ")
                    ),
                ));
            }
            if m.target.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(bad(format!("{key}.fixed_by[{j}].target"), "empty target"));
            }
        }
        Ok(())
    }

    fn validate_benign(
        &self,
        key: &str,
        b: &BenignSpec,
        names: &BTreeSet<&str>,
    ) -> Result<(), Invalid> {
        self.check_window(key, b.start, Some(b.duration))?;
        if b.duration.as_millis() <= 0 {
            return Err(bad(format!("{key}.duration"), "must be positive"));
        }
        match b.kind {
            BenignKind::Peak => {
                for (p, set) in [
                    ("service", b.service.is_some()),
                    ("signal", b.signal.is_some()),
                    ("magnitude", b.magnitude.is_some()),
                    ("probability", b.probability.is_some()),
                ] {
                    if set {
                        return Err(bad(
                            format!("{key}.{p}"),
                            "does not apply to peak (it takes: factor)",
                        ));
                    }
                }
                let f = b
                    .factor
                    .ok_or_else(|| bad(format!("{key}.factor"), "peak needs factor"))?;
                check_range(&format!("{key}.factor"), f, 1.0, 100.0)?;
            }
            BenignKind::Noise => {
                if b.factor.is_some() {
                    return Err(bad(
                        format!("{key}.factor"),
                        "does not apply to noise (it takes: service, signal, magnitude, probability)",
                    ));
                }
                let s = b
                    .service
                    .as_deref()
                    .ok_or_else(|| bad(format!("{key}.service"), "noise needs service"))?;
                if !names.contains(s) {
                    return Err(bad(
                        format!("{key}.service"),
                        format!("unknown service {s:?}"),
                    ));
                }
                if b.signal.is_none() {
                    return Err(bad(format!("{key}.signal"), "noise needs signal"));
                }
                let m = b
                    .magnitude
                    .ok_or_else(|| bad(format!("{key}.magnitude"), "noise needs magnitude"))?;
                check_range(&format!("{key}.magnitude"), m, 1e-6, 1000.0)?;
                let p = b.probability.unwrap_or(0.05);
                check_range(&format!("{key}.probability"), p, 1e-9, 1.0)?;
            }
        }
        Ok(())
    }

    fn check_window(
        &self,
        key: &str,
        start: PromDuration,
        duration: Option<PromDuration>,
    ) -> Result<(), Invalid> {
        if start.as_millis() < 0 || start.as_millis() >= self.duration.as_millis() {
            return Err(bad(
                format!("{key}.start"),
                format!("must be within the run (0s to {})", self.duration),
            ));
        }
        if let Some(d) = duration {
            if d.as_millis() <= 0 || d.as_millis() > MAX_DURATION_MS {
                return Err(bad(
                    format!("{key}.duration"),
                    "must be between 1ms and 30d",
                ));
            }
        }
        Ok(())
    }

    /// Callers before callees (a topological order), or the cycle's key path.
    fn check_acyclic(&self) -> Result<(), Invalid> {
        self.call_order().map(|_| ()).map_err(|name| {
            let i = self
                .services
                .iter()
                .position(|s| s.name == name)
                .unwrap_or(0);
            bad(
                format!("services[{i}].calls"),
                format!("{name:?} is part of a call cycle"),
            )
        })
    }

    /// Service indexes with every caller before its callees; `Err(name)` names a
    /// service on a cycle.
    pub fn call_order(&self) -> Result<Vec<usize>, String> {
        let n = self.services.len();
        let index: BTreeMap<&str, usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut indegree = vec![0usize; n];
        let edges: Vec<Vec<usize>> = self
            .services
            .iter()
            .map(|s| {
                s.calls
                    .keys()
                    .chain(s.misses_to.iter())
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        for e in &edges {
            for &d in e {
                indegree[d] += 1;
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop() {
            order.push(i);
            for &d in edges[i].iter().rev() {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push(d);
                }
            }
        }
        if order.len() < n {
            let on_cycle = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
            return Err(self.services[on_cycle].name.clone());
        }
        Ok(order)
    }

    /// The entry service's name.
    pub fn entry(&self) -> Option<&str> {
        match &self.traffic.entry {
            Some(e) => Some(e.as_str()),
            None => self
                .services
                .iter()
                .find(|s| s.kind == ServiceKind::Web)
                .map(|s| s.name.as_str()),
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests;
