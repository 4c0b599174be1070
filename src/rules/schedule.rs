//! Scheduling: one tokio task per group, evaluating at aligned, stable timestamps
//! (`floor((now - offset) / interval) * interval + offset`, the offset a hash of the
//! group, as Prometheus spreads groups); the evaluation itself runs on the blocking
//! pool. After each evaluation the group's alerts due for Alertmanager go to the
//! notifier and its alert transitions to the alert sink.
//!
//! Invariant: a missed iteration is counted in
//! `closedloop_rule_group_iterations_missed_total`, never silently skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{GaugeVec, IntCounterVec, Opts};

use super::group::{EvalContext, Group, Source};
use super::manager::{group_key, now_ms, Shared};
use super::notifier::{generator_url, rfc3339, AmAlert};

/// Per-group and per-rule metrics.
#[derive(Clone)]
pub(super) struct RuleMetrics {
    pub(super) last_duration: GaugeVec,
    last_eval: GaugeVec,
    pub(super) interval: GaugeVec,
    iterations: IntCounterVec,
    /// Sum of evaluation durations (with `iterations`, the mean per cycle).
    seconds: prometheus::CounterVec,
    missed: IntCounterVec,
    failures: IntCounterVec,
    evaluations: IntCounterVec,
}

impl RuleMetrics {
    pub(super) fn new(r: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let g = |n: &str, h: &str| GaugeVec::new(Opts::new(n, h), &["rule_group"]);
        let c = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        let m = RuleMetrics {
            last_duration: g(
                "closedloop_rule_group_last_duration_seconds",
                "Duration of the group's last evaluation.",
            )?,
            last_eval: g(
                "closedloop_rule_group_last_evaluation_timestamp_seconds",
                "Timestamp of the group's last evaluation.",
            )?,
            interval: g(
                "closedloop_rule_group_interval_seconds",
                "The group's evaluation interval.",
            )?,
            iterations: c(
                "closedloop_rule_group_iterations_total",
                "Evaluations of the group.",
                &["rule_group"],
            )?,
            seconds: prometheus::CounterVec::new(
                Opts::new(
                    "closedloop_rule_group_evaluation_seconds_total",
                    "Time spent evaluating the group.",
                ),
                &["rule_group"],
            )?,
            missed: c(
                "closedloop_rule_group_iterations_missed_total",
                "Evaluations missed because the previous one ran too long.",
                &["rule_group"],
            )?,
            failures: c(
                "closedloop_rule_evaluation_failures_total",
                "Failed evaluations per rule.",
                &["rule_group", "rule"],
            )?,
            evaluations: c(
                "closedloop_rule_evaluations_total",
                "Evaluations per rule.",
                &["rule_group", "rule"],
            )?,
        };
        r.register(Box::new(m.last_duration.clone()))?;
        r.register(Box::new(m.last_eval.clone()))?;
        r.register(Box::new(m.interval.clone()))?;
        r.register(Box::new(m.iterations.clone()))?;
        r.register(Box::new(m.missed.clone()))?;
        r.register(Box::new(m.seconds.clone()))?;
        r.register(Box::new(m.failures.clone()))?;
        r.register(Box::new(m.evaluations.clone()))?;
        Ok(m)
    }
}

/// A group's offset within its interval, exactly as Prometheus computes it
/// (`Group.EvalTimestamp`: the xxhash64 of the label set `{file, name}`, modulo
/// the interval in nanoseconds), so a group evaluates at the same timestamps in
/// closedloop as in a Prometheus loading the same file path. Returned in whole
/// milliseconds, as Prometheus's evaluation timestamps become sample times.
pub fn eval_offset_ms(file: &str, name: &str, interval_ms: i64) -> i64 {
    let mut key = Vec::with_capacity(file.len() + name.len() + 12);
    for (n, v) in [("file", file), ("name", name)] {
        key.extend_from_slice(n.as_bytes());
        key.push(0xff);
        key.extend_from_slice(v.as_bytes());
        key.push(0xff);
    }
    let interval_ns = interval_ms.max(1) as u64 * 1_000_000;
    ((xxhash_rust::xxh64::xxh64(&key, 0) % interval_ns) / 1_000_000) as i64
}

/// The slot to evaluate when it is `now` and `next` was due: `next` itself while
/// within one interval, else the latest slot not after `now`, with the number of
/// slots skipped. Timestamps stay on the grid `next + k * interval`.
fn catch_up(next: i64, now: i64, interval: i64) -> (i64, i64) {
    if now >= next + interval {
        let missed = (now - next) / interval;
        (next + missed * interval, missed)
    } else {
        (next, 0)
    }
}

pub(super) async fn run_group(
    shared: Arc<Shared>,
    group: Arc<Mutex<Group>>,
    stop: Arc<AtomicBool>,
) {
    let (interval, key, datasource, off) = {
        let g = group.lock();
        let interval = g.interval_ms.max(1);
        (
            interval,
            group_key(&g.spec),
            g.spec.datasource.clone(),
            eval_offset_ms(&g.spec.file.display().to_string(), &g.spec.name, interval),
        )
    };
    let slot = |t: i64| (t - off).div_euclid(interval) * interval + off;
    // The first evaluation is at the next aligned slot.
    let mut next = slot(now_ms()) + interval;
    let runtime = tokio::runtime::Handle::current();
    loop {
        let wait = next - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (ts, missed) = catch_up(next, now_ms(), interval);
        if missed > 0 {
            shared
                .metrics
                .missed
                .with_label_values(&[&key])
                .inc_by(missed as u64);
            tracing::warn!(group = %key, missed, "rule group missed iterations: evaluation takes longer than its interval");
        }
        next = ts;
        let sh = shared.clone();
        let g = group.clone();
        let ds = datasource.clone();
        let rt = runtime.clone();
        let k = key.clone();
        let r = tokio::task::spawn_blocking(move || {
            let settings = sh.settings.lock().clone();
            let mut g = g.lock();
            let remote = sh.remote_source(ds, rt);
            let source: &dyn Source = match &remote {
                Some(r) => r,
                None => sh.source.as_ref(),
            };
            let ctx = EvalContext {
                source,
                appender: sh.appender.as_ref(),
                external_labels: &settings.global.external_labels,
                external_url: &settings.external_url,
            };
            let errors = g.eval(ts, &ctx);
            for (rule, e) in &errors {
                sh.metrics.failures.with_label_values(&[&k, rule]).inc();
                tracing::warn!(group = %k, rule = %rule, error = %e, "rule evaluation failed");
            }
            let resend = settings.alerting.resend_delay.as_millis();
            let interval = g.interval_ms;
            let mut out = Vec::new();
            let mut changed = false;
            for rule in g.rules.iter_mut() {
                sh.metrics
                    .evaluations
                    .with_label_values(&[&k, rule.spec.name()])
                    .inc();
                if !rule.is_alert() {
                    continue;
                }
                changed |= !rule.active.is_empty();
                // Prometheus links the normalised expression (`expr.String()`).
                let link = generator_url(
                    settings.alerting.generator_url.as_deref(),
                    &settings.external_url,
                    &rule.spec.expr.to_string(),
                );
                for a in rule.alerts_to_send(ts, resend, interval) {
                    out.push(AmAlert {
                        labels: a
                            .labels
                            .iter()
                            .map(|l| (l.name.to_string(), l.value.to_string()))
                            .collect(),
                        annotations: a.annotations.iter().cloned().collect(),
                        starts_at: rfc3339(a.fired_at_ms.unwrap_or(a.active_at_ms)),
                        ends_at: rfc3339(a.resolved_at_ms.unwrap_or(a.valid_until_ms)),
                        generator_url: link.clone(),
                    });
                }
            }
            sh.metrics
                .last_duration
                .with_label_values(&[&k])
                .set(g.last_duration_s);
            sh.metrics
                .last_eval
                .with_label_values(&[&k])
                .set(ts as f64 / 1000.0);
            sh.metrics.iterations.with_label_values(&[&k]).inc();
            sh.metrics
                .seconds
                .with_label_values(&[&k])
                .inc_by(g.last_duration_s);
            if changed {
                sh.dirty.store(true, Ordering::SeqCst);
            }
            let spec = g.spec.clone();
            let mut transitions = Vec::new();
            for rule in g.rules.iter_mut() {
                transitions.extend(rule.take_transitions(&spec, interval));
            }
            (out, transitions)
        })
        .await;
        if let Ok((alerts, transitions)) = r {
            shared.notifier.enqueue(alerts);
            for t in transitions {
                shared.alerts.send(t);
            }
        }
        next += interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_iterations_are_counted_and_the_grid_kept() {
        // On time, or late by less than an interval: evaluate the due slot.
        assert_eq!(catch_up(10_000, 10_000, 1_000), (10_000, 0));
        assert_eq!(catch_up(10_000, 10_999, 1_000), (10_000, 0));
        // 3.5 intervals late: 3 slots missed, evaluate at the latest slot.
        assert_eq!(catch_up(10_000, 13_500, 1_000), (13_000, 3));
    }

    #[test]
    fn offsets_are_prometheus_offsets() {
        // Read off a real Prometheus 2.42 (`rule_files: [rules.yml]`, 10s interval):
        // the samples its recording rules wrote sat at xx:xx:x1.632 for group "g"
        // and at x5.484 for "another group".
        assert_eq!(eval_offset_ms("rules.yml", "g", 10_000), 1_632);
        assert_eq!(eval_offset_ms("rules.yml", "another group", 10_000), 5_484);
        let a = eval_offset_ms("f", "g", 15_000);
        assert!((0..15_000).contains(&a));
    }
}
