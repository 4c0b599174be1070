//! `closedloop replay --rules FILE --from T --to T [--datasource URL]`: evaluates rule
//! files and their detectors over past data from a Prometheus-compatible query API
//! (Prometheus, Thanos, Mimir, VictoriaMetrics, or a running closedloop's own store)
//! and prints when each alert would have fired and resolved, and what the policy
//! would have done with its actions — cooldowns, rate limits, blast radius and
//! approvals applied, nothing executed. The safe way to try a rule before it acts.
//!
//! How: each rule expression is fetched once per group as a range query at the
//! group's interval; the real alert state machine (`for`, `keep_firing_for`,
//! templates…) runs over those results step by step; its transitions go to the real
//! decider, in dry-run, on a clock set to each step, over an in-memory knowledge
//! store. Detectors run over their selectors' samples fetched at `--step`.
//!
//! Known limits (said in the output when they apply): a template's `query` function
//! and a recording rule's output are not visible to later rules (as in a group with a
//! remote `datasource:`); a mutating step ends its ladder in a dry run, so fallbacks
//! after a verification are not shown.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use promql_parser::parser::Expr;

use crate::anomaly::{Analyzer, IncidentConfig, SeriesBatch};
use crate::decide::conditions::StaticConditions;
use crate::decide::{DecideConfig, IncidentOpened, Input, ManualClock};
use crate::knowledge::{ActionQuery, AuditId, KnowledgeStore};
use crate::promql::{QueryError, Sample};
use crate::rules::group::{Appender, EvalContext, Group, Source};
use crate::rules::{load_files, LoadOptions, Severity, TransitionKind};
use crate::storage::{LabelSet, SeriesId, Store, StoreConfig};

/// Most points one range query asks for (Prometheus refuses more than 11,000).
const MAX_POINTS: i64 = 10_000;
/// Longest replay window.
const MAX_RANGE_MS: i64 = 31 * 86_400_000;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    pub rules: Vec<PathBuf>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Base URL of a Prometheus-compatible query API.
    pub datasource: String,
    /// The policy (`decide:` of a service config); dry-run is forced on.
    pub decide: DecideConfig,
    /// Interval of groups that set none.
    pub default_interval_ms: i64,
    /// Sample spacing fed to detectors.
    pub detector_step_ms: i64,
    pub external_labels: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
    #[error("{0}")]
    Range(String),
    #[error("datasource {url}: {reason}")]
    Datasource { url: String, reason: String },
    #[error(transparent)]
    Knowledge(#[from] crate::knowledge::KnowledgeError),
}

/// Range results of every expression, by text, by timestamp.
#[derive(Default)]
struct Recorded {
    results: HashMap<String, BTreeMap<i64, Vec<Sample>>>,
}

impl Source for Recorded {
    fn query(&self, _expr: &Expr, text: &str, t_ms: i64) -> Result<Vec<Sample>, QueryError> {
        match self.results.get(text) {
            Some(by_t) => Ok(by_t.get(&t_ms).cloned().unwrap_or_default()),
            None => Err(QueryError::Execution(
                "replay cannot run a template's query function".into(),
            )),
        }
    }
}

/// Recording results are not kept.
struct Discard;

impl Appender for Discard {
    fn append(&self, _: &LabelSet, _: i64, _: f64) {}
}

/// A `/api/v1/query_range` client.
struct Datasource {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl Datasource {
    /// `expr` over [from, to] every `step_ms`, split into requests of at most
    /// `MAX_POINTS` steps: samples by timestamp.
    async fn range(
        &self,
        expr: &str,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> Result<BTreeMap<i64, Vec<Sample>>, ReplayError> {
        let url = format!("{}/api/v1/query_range", self.base.trim_end_matches('/'));
        let err = |reason: String| ReplayError::Datasource {
            url: url.clone(),
            reason,
        };
        let mut out: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
        let mut start = from;
        while start <= to {
            let end = (start + step_ms * (MAX_POINTS - 1)).min(to);
            let form = [
                ("query", expr.to_string()),
                ("start", format!("{:.3}", start as f64 / 1000.0)),
                ("end", format!("{:.3}", end as f64 / 1000.0)),
                ("step", format!("{:.3}", step_ms as f64 / 1000.0)),
            ];
            let body: serde_json::Value = self
                .client
                .post(&url)
                .timeout(self.timeout)
                .form(&form)
                .send()
                .await
                .map_err(|e| err(e.to_string()))?
                .json()
                .await
                .map_err(|e| err(e.to_string()))?;
            if body["status"] != "success" {
                return Err(err(format!(
                    "{}: {}",
                    expr,
                    body["error"].as_str().unwrap_or("query failed")
                )));
            }
            let data = &body["data"];
            let value = |p: &serde_json::Value| -> Option<(i64, f64)> {
                let t = (p[0].as_f64()? * 1000.0).round() as i64;
                let v = match p[1].as_str()? {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    s => s.parse().ok()?,
                };
                Some((t, v))
            };
            match data["resultType"].as_str() {
                Some("matrix") => {
                    for series in data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        let labels = LabelSet::from_pairs(
                            series["metric"]
                                .as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))),
                        );
                        for p in series["values"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or(&[])
                        {
                            if let Some((t, v)) = value(p) {
                                out.entry(t).or_default().push(Sample {
                                    labels: labels.clone(),
                                    t,
                                    v,
                                });
                            }
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "{expr}: expected a matrix, got {}",
                        other.unwrap_or("nothing")
                    )))
                }
            }
            start = end + step_ms;
        }
        Ok(out)
    }
}

fn rfc3339(ms: i64) -> String {
    crate::rules::notifier::rfc3339(ms)
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// Runs the replay and writes its report to `out`.
pub async fn replay(args: &ReplayArgs, out: &mut String) -> Result<(), ReplayError> {
    if args.to_ms <= args.from_ms {
        return Err(ReplayError::Range("--to must be after --from".into()));
    }
    if args.to_ms - args.from_ms > MAX_RANGE_MS {
        return Err(ReplayError::Range(
            "at most 31 days can be replayed at once".into(),
        ));
    }
    let specs = load_files(&args.rules, LoadOptions::default())?;
    let ds = Datasource {
        base: args.datasource.clone(),
        client: reqwest::Client::new(),
        timeout: args.timeout,
    };
    let _ = writeln!(
        out,
        "replay {} .. {} from {} ({} group(s)); dry run: nothing is executed",
        rfc3339(args.from_ms),
        rfc3339(args.to_ms),
        args.datasource,
        specs.len()
    );

    // Detectors first: their incidents join the timeline below.
    let incidents = run_detectors(&specs, args, &ds, out).await?;

    // Each group's expressions, fetched once as range queries on its grid.
    let mut groups = Vec::new();
    for spec in specs {
        let spec = Arc::new(spec);
        let group = Group::new(spec.clone(), args.default_interval_ms);
        let interval = group.interval_ms.max(1);
        let first = args.from_ms.div_euclid(interval) * interval
            + if args.from_ms % interval == 0 {
                0
            } else {
                interval
            };
        let mut rec = Recorded::default();
        for r in &spec.rules {
            // Past data is complete: no ingestion delay to wait for, so a group
            // without its own `query_offset` evaluates at its slots (as promtool).
            // Results stay keyed by query time, which is what a group asks for.
            let offset = spec.query_offset_ms.unwrap_or(0);
            for text in std::iter::once(&r.expr_text).chain(r.resolve_expr.as_ref().map(|(t, _)| t))
            {
                let by_t = ds
                    .range(text, first - offset, args.to_ms - offset, interval)
                    .await?;
                rec.results.insert(text.clone(), by_t);
            }
        }
        groups.push((group, rec, first, interval));
    }

    let clock = Arc::new(ManualClock::new(args.from_ms));
    let conditions = Arc::new(StaticConditions::default());
    let mut cfg = args.decide.clone();
    cfg.dry_run = true;
    let (mut decider, store) =
        crate::decide::replay_decider(cfg, conditions.clone(), clock.clone())?;

    // One timeline over every group's evaluation times (and incidents).
    let mut times: Vec<(i64, usize)> = Vec::new();
    for (i, (_, _, first, interval)) in groups.iter().enumerate() {
        let mut t = *first;
        while t <= args.to_ms {
            times.push((t, i));
            t += interval;
        }
    }
    times.sort();
    let mut incidents = incidents.into_iter().peekable();
    let mut last_seen = AuditId(0);
    let (mut fired, mut resolved) = (0u64, 0u64);
    let external_url = String::new();
    for (t, gi) in times {
        clock.set(t);
        while let Some(inc) = incidents.next_if(|i| i.opened_ms <= t) {
            clock.set(inc.opened_ms.max(args.from_ms));
            conditions.set_incident(inc.id, true);
            let _ = writeln!(
                out,
                "{}  INCIDENT  #{} {} severity={}",
                rfc3339(inc.opened_ms),
                inc.id,
                labels_text(&inc.group),
                inc.severity.as_str()
            );
            decider.step(Input::Incident(inc));
            print_decisions(store.as_ref(), &mut last_seen, out)?;
            clock.set(t);
        }
        let (group, rec, _, _) = &mut groups[gi];
        let ctx = EvalContext {
            source: rec,
            appender: &Discard,
            external_labels: &args.external_labels,
            external_url: &external_url,
        };
        for (rule, e) in group.eval(t, &ctx) {
            let _ = writeln!(
                out,
                "{}  ERROR     {}/{rule}: {e}",
                rfc3339(t),
                group.spec.name
            );
        }
        let spec = group.spec.clone();
        let interval = group.interval_ms;
        let mut transitions = Vec::new();
        {
            for r in group.rules.iter_mut() {
                if !r.is_alert() {
                    continue;
                }
                conditions.set_alerts(&spec.name, r.spec.name(), r.holding_labels());
                transitions.extend(r.take_transitions(&spec, interval));
            }
        }
        for tr in transitions {
            let what = match tr.kind {
                TransitionKind::Firing => {
                    fired += 1;
                    "FIRING  "
                }
                TransitionKind::Resolved => {
                    resolved += 1;
                    "RESOLVED"
                }
            };
            let _ = writeln!(
                out,
                "{}  {what}  {}/{}{} value={}",
                rfc3339(tr.at_ms),
                tr.rule.group,
                tr.rule.name,
                labels_text(&tr.labels),
                crate::promql::format_value(tr.value),
            );
            decider.step(Input::Alert(tr));
            print_decisions(store.as_ref(), &mut last_seen, out)?;
        }
        decider.step_timers();
        print_decisions(store.as_ref(), &mut last_seen, out)?;
    }
    // Approvals still open at the end would expire later; say so.
    let open = store.actions_in(&[crate::knowledge::Outcome::PendingApproval])?;
    let all = store.actions(&ActionQuery {
        limit: usize::MAX >> 1,
        ..Default::default()
    })?;
    let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &all {
        *by_outcome.entry(a.outcome.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = by_outcome.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "summary: {fired} firing, {resolved} resolved; actions: {}{}",
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(" ")
        },
        if open.is_empty() {
            String::new()
        } else {
            format!("; {} approval(s) still open at the end", open.len())
        }
    );
    Ok(())
}

/// Prints the actions the decider recorded since `last`.
fn print_decisions(
    store: &dyn KnowledgeStore,
    last: &mut AuditId,
    out: &mut String,
) -> Result<(), ReplayError> {
    let mut new = store.actions(&ActionQuery {
        limit: 10_000,
        ..Default::default()
    })?;
    new.retain(|a| a.id > *last);
    new.sort_by_key(|a| a.id);
    for a in new {
        *last = a.id;
        let what = match a.outcome {
            crate::knowledge::Outcome::DryRun => "would run".to_string(),
            crate::knowledge::Outcome::PendingApproval => format!(
                "would wait for approval (until {})",
                rfc3339(a.approval_expires_ms.unwrap_or(0))
            ),
            crate::knowledge::Outcome::Refused => {
                format!("refused: {}", a.reason.as_deref().unwrap_or(""))
            }
            crate::knowledge::Outcome::Cancelled => {
                format!("cancelled: {}", a.reason.as_deref().unwrap_or(""))
            }
            crate::knowledge::Outcome::Expired => "approval would expire".to_string(),
            o => o.as_str().to_string(),
        };
        let _ = writeln!(
            out,
            "{}    -> {} {}: {what}",
            rfc3339(a.updated_ms),
            a.kind,
            a.target
        );
    }
    Ok(())
}

/// Runs the groups' detectors over their selectors' samples; returns the incidents
/// they opened, in time order.
async fn run_detectors(
    specs: &[crate::rules::GroupSpec],
    args: &ReplayArgs,
    ds: &Datasource,
    out: &mut String,
) -> Result<Vec<IncidentOpened>, ReplayError> {
    let detectors: Vec<crate::anomaly::DetectorSpec> =
        specs.iter().flat_map(|g| g.detectors.clone()).collect();
    if detectors.is_empty() {
        return Ok(Vec::new());
    }
    let registry = prometheus::Registry::new();
    let _ = &registry;
    let detections = prometheus::IntCounterVec::new(
        prometheus::Opts::new("replay_detections", "detections"),
        &["detector", "severity"],
    )
    .map_err(|e| ReplayError::Range(e.to_string()))?;
    let dropped = prometheus::IntCounter::new("replay_dropped", "dropped")
        .map_err(|e| ReplayError::Range(e.to_string()))?;
    let analyzer = Analyzer::new(detections, dropped, IncidentConfig::default());
    if let Err(e) = analyzer.reload(&detectors) {
        let _ = writeln!(out, "detectors: {e}");
        return Ok(Vec::new());
    }
    let opened: Arc<Mutex<Vec<IncidentOpened>>> = Arc::default();
    let sink = opened.clone();
    analyzer.set_incident_sink(Box::new(move |inc| {
        sink.lock().push(IncidentOpened {
            id: inc.id,
            group: inc.group.clone(),
            severity: Severity::parse(&inc.severity),
            start_ms: inc.start_ms,
            opened_ms: inc.last_update_ms,
            seen: Instant::now(),
            context: None,
        })
    }));
    let store = Store::new(StoreConfig {
        retention_ms: (args.to_ms - args.from_ms).max(60_000) * 2,
        ..Default::default()
    });
    // Every selector's samples, merged into one timeline.
    let mut timeline: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
    for d in &detectors {
        let by_t = ds
            .range(&d.selector, args.from_ms, args.to_ms, args.detector_step_ms)
            .await?;
        for (t, s) in by_t {
            timeline.entry(t).or_default().extend(s);
        }
    }
    let mut detections = 0;
    for (t, samples) in timeline {
        let mut batch_samples = Vec::with_capacity(samples.len());
        for s in &samples {
            if store.append(&s.labels, t, s.v).is_ok() {
                batch_samples.push((s, [(t, s.v)]));
            }
        }
        let batch: Vec<SeriesBatch<'_>> = batch_samples
            .iter()
            .map(|(s, pts)| SeriesBatch {
                id: SeriesId(s.labels.series_hash()),
                labels: &s.labels,
                samples: pts,
            })
            .collect();
        detections += analyzer.observe(&store, &batch);
    }
    let opened = std::mem::take(&mut *opened.lock());
    let _ = writeln!(
        out,
        "detectors: {} over their selectors every {}s: {detections} detection(s), {} incident(s)",
        detectors.len(),
        args.detector_step_ms / 1000,
        opened.len()
    );
    Ok(opened)
}
