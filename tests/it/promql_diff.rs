//! Differential test: the same generated data remote-written into a real Prometheus
//! (Debian's 2.42) and into closedloop, then the same queries through both
//! `/api/v1/query` and `/api/v1/query_range`, results compared series by series.
//!
//! The data: two hours at a 15 s interval ending a few minutes ago (Prometheus's head
//! only accepts recent, in-order samples), sent oldest first in ten-minute slices.
//! Counters with resets, gauges (some negative), staleness markers and plain gaps,
//! three jobs × four instances, classic histograms with `le` buckets, an info metric
//! for joins.
//!
//! Prometheus 2.42 predates the 3.x semantics closedloop follows. The differences
//! that matter here are shaped out of the data rather than listed:
//! - range selectors and the lookback window are left-open in 3.x, left-closed in 2.x:
//!   every query time, range, offset, `@` time and subquery step is a whole second,
//!   and every sample sits a few milliseconds off the whole second, so no sample is
//!   ever on a window's boundary;
//! - regex `.` matches a newline in 3.x: no label value holds a newline;
//! - `holt_winters` is `double_exponential_smoothing` in 3.x: the queries use the
//!   2.x name, which closedloop still accepts.
//!
//! What still differs is listed, one query per entry with the reason, in
//! `testdata/promql-known-differences.txt`; anything else fails the test, and so does
//! an entry that no longer differs (the list must stay honest).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::answers::*;
use crate::common::*;

/// Sample interval of all generated series.
const INTERVAL_MS: i64 = 15_000;
/// Samples per series: two hours.
const SAMPLES: i64 = 480;
const JOBS: [&str; 3] = ["api", "web", "db"];
const INSTANCES: usize = 4;
const BUCKETS: [&str; 7] = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
/// Prometheus's staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

struct GenSeries {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
}

/// The generated data set, on a grid starting at a whole minute.
struct DataSet {
    series: Vec<GenSeries>,
}

impl DataSet {
    fn generate(origin_ms: i64) -> DataSet {
        let mut rng = Rng(42);
        let mut series = Vec::new();
        let mut n = 0usize;
        // Each series scrapes at its own phase: whole seconds plus 1..999 ms, never a
        // whole second, so no sample lands on a window boundary.
        let mut phase = || {
            n += 1;
            let p = (n as i64 * 7_919) % INTERVAL_MS;
            let ms = p % 1000;
            if ms == 0 {
                p + 137
            } else {
                p
            }
        };
        let t = |k: i64, phase: i64| origin_ms + k * INTERVAL_MS + phase;
        for (j, job) in JOBS.iter().enumerate() {
            for i in 0..INSTANCES {
                let instance = format!("host-{i}.{job}.example:9100");
                let base = |name: &str| {
                    vec![
                        ("__name__".to_owned(), name.to_owned()),
                        ("instance".to_owned(), instance.clone()),
                        ("job".to_owned(), job.to_string()),
                    ]
                };
                // Counters, with resets in some series.
                for (m, method) in ["get", "post"].iter().enumerate() {
                    for code in ["200", "500"] {
                        let ph = phase();
                        let mut labels = base("http_requests_total");
                        labels.push(("method".into(), method.to_string()));
                        labels.push(("code".into(), code.into()));
                        let scale = if code == "200" { 20.0 } else { 1.5 };
                        let mut v = rng.unit() * 100.0;
                        let mut samples = Vec::new();
                        for k in 0..SAMPLES {
                            if (i + m) % 3 == 0 && (k == 260 || k == 390) {
                                v = rng.unit() * 3.0; // a restart
                            } else {
                                // Continuous increments: no two series tie, so topk/bottomk
                                // pick the same series on both sides.
                                v += rng.unit() * scale * 4.0;
                            }
                            samples.push((t(k, ph), v));
                        }
                        series.push(GenSeries { labels, samples });
                    }
                }
                // A gauge that goes negative.
                {
                    let ph = phase();
                    let offset = 20.0 + 7.0 * j as f64 + i as f64;
                    let samples = (0..SAMPLES)
                        .map(|k| {
                            let x = k as f64 / 40.0 + i as f64;
                            (
                                t(k, ph),
                                offset * x.sin() + rng.unit() * 3.0 - 2.0 + 0.5 * k as f64 / 10.0,
                            )
                        })
                        .collect();
                    series.push(GenSeries {
                        labels: base("cpu_temp_celsius"),
                        samples,
                    });
                }
                // A gauge with staleness: markers that end it (for longer and shorter
                // than the lookback), a plain gap, and a final marker.
                {
                    let ph = phase();
                    let mut samples = Vec::new();
                    let mut k = 0;
                    while k < SAMPLES {
                        let v = (rng.unit() * 50.0).round();
                        let skip_to = match (i, k) {
                            (0, 300) => Some(340),
                            (1, 400) => Some(405),
                            (2, 350) => {
                                // No marker: the samples just stop for 20 intervals.
                                k = 370;
                                continue;
                            }
                            (3, 470) => Some(SAMPLES),
                            _ => None,
                        };
                        if let Some(to) = skip_to {
                            samples.push((t(k, ph), f64::from_bits(STALE_NAN)));
                            k = to;
                            continue;
                        }
                        samples.push((t(k, ph), v));
                        k += 1;
                    }
                    series.push(GenSeries {
                        labels: base("queue_depth"),
                        samples,
                    });
                }
                // A classic histogram: cumulative buckets, sum and count, reset once.
                {
                    let ph = phase();
                    let bounds: Vec<f64> = BUCKETS.iter().map(|b| b.parse().unwrap()).collect();
                    let mut counts = vec![0.0; BUCKETS.len()];
                    let (mut sum, mut count) = (0.0, 0.0);
                    let mut bucket_samples = vec![Vec::new(); BUCKETS.len()];
                    let (mut sum_samples, mut count_samples) = (Vec::new(), Vec::new());
                    for k in 0..SAMPLES {
                        if i == 1 && k == 320 {
                            counts.iter_mut().for_each(|c| *c = 0.0);
                            sum = 0.0;
                            count = 0.0;
                        }
                        let observations = (rng.unit() * 20.0) as usize;
                        for _ in 0..observations {
                            // Skewed latencies, slower for the db job.
                            let u = rng.unit();
                            let lat = u * u * (0.6 + j as f64 * 0.8);
                            for (b, bound) in bounds.iter().enumerate() {
                                if lat <= *bound {
                                    counts[b] += 1.0;
                                }
                            }
                            sum += lat;
                            count += 1.0;
                        }
                        for (b, c) in counts.iter().enumerate() {
                            bucket_samples[b].push((t(k, ph), *c));
                        }
                        sum_samples.push((t(k, ph), sum));
                        count_samples.push((t(k, ph), count));
                    }
                    for (b, samples) in bucket_samples.into_iter().enumerate() {
                        let mut labels = base("request_duration_seconds_bucket");
                        labels.push(("le".into(), BUCKETS[b].into()));
                        series.push(GenSeries { labels, samples });
                    }
                    series.push(GenSeries {
                        labels: base("request_duration_seconds_sum"),
                        samples: sum_samples,
                    });
                    series.push(GenSeries {
                        labels: base("request_duration_seconds_count"),
                        samples: count_samples,
                    });
                }
                // up: one instance is down for a while.
                {
                    let ph = phase();
                    let samples = (0..SAMPLES)
                        .map(|k| {
                            let down = i == 2 && j == 1 && (380..420).contains(&k);
                            (t(k, ph), if down { 0.0 } else { 1.0 })
                        })
                        .collect();
                    series.push(GenSeries {
                        labels: base("up"),
                        samples,
                    });
                }
                // An info metric for joins.
                {
                    let ph = phase();
                    let mut labels = base("node_info");
                    labels.push(("version".into(), format!("1.{}.{}", j, i % 2)));
                    labels.push(("team".into(), ["core", "edge"][i % 2].into()));
                    let samples = (0..SAMPLES).map(|k| (t(k, ph), 1.0)).collect();
                    series.push(GenSeries { labels, samples });
                }
            }
        }
        for s in &mut series {
            s.labels.sort();
        }
        DataSet { series }
    }

    fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Remote-write bodies, oldest first, in ten-minute slices.
    fn bodies(&self) -> Vec<Vec<u8>> {
        let series: Vec<OwnedSeries> = self
            .series
            .iter()
            .map(|s| (s.labels.clone(), s.samples.clone()))
            .collect();
        remote_write_bodies(&series, 40 * INTERVAL_MS)
    }
}

/// The queries. `{A}` stands for an absolute time in the data (whole seconds), for
/// `@`. Each runs as an instant query and, unless its value is a range vector or a
/// string, as a range query.
const QUERIES: &[&str] = &[
    // Selectors, offset, @, lookback and staleness.
    "http_requests_total",
    "http_requests_total{job=\"api\"}",
    "http_requests_total{job=~\"api|web\", method!=\"post\"}",
    "http_requests_total{instance!~\"host-[01].*\"}",
    "{__name__=~\"queue_depth|cpu_temp_celsius\", job=\"db\"}",
    "{__name__=~\"request_duration_seconds_(sum|count)\"}",
    "queue_depth",
    "queue_depth offset 10m",
    "queue_depth offset -3m",
    "cpu_temp_celsius @ {A}",
    "cpu_temp_celsius @ {A} offset 2m",
    "rate(http_requests_total[5m] @ {A})",
    "cpu_temp_celsius @ start()",
    "sum by (job) (rate(http_requests_total[5m] @ end()))",
    "http_requests_total[5m]",
    "queue_depth[10m]",
    "cpu_temp_celsius[3m] offset 7m",
    "up == 0",
    // Rates and counters.
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "rate(http_requests_total[30m] offset 5m)",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    // The range's first windows reach back before the data starts.
    "increase(http_requests_total[1h])",
    "resets(http_requests_total[30m])",
    "delta(cpu_temp_celsius[10m])",
    "idelta(cpu_temp_celsius[5m])",
    "deriv(cpu_temp_celsius[10m])",
    "predict_linear(cpu_temp_celsius[15m], 600)",
    "changes(queue_depth[15m])",
    "holt_winters(cpu_temp_celsius[10m], 0.5, 0.3)",
    "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
    // *_over_time.
    "avg_over_time(cpu_temp_celsius[10m])",
    "sum_over_time(queue_depth[10m])",
    "min_over_time(cpu_temp_celsius[20m])",
    "max_over_time(queue_depth[20m])",
    "count_over_time(queue_depth[10m])",
    "stddev_over_time(cpu_temp_celsius[15m])",
    "stdvar_over_time(queue_depth[15m])",
    "last_over_time(queue_depth[10m])",
    "present_over_time(queue_depth[2m])",
    "quantile_over_time(0.9, cpu_temp_celsius[15m])",
    "quantile_over_time(0.25, queue_depth[30m])",
    "absent_over_time(queue_depth{instance=\"host-0.api.example:9100\"}[5m])",
    "absent_over_time(nonexistent_metric[5m])",
    // Aggregations.
    "sum(http_requests_total)",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance, method) (rate(http_requests_total[5m]))",
    "avg by (job) (cpu_temp_celsius)",
    "min by (job) (cpu_temp_celsius)",
    "max without (instance) (cpu_temp_celsius)",
    "count by (job) (queue_depth)",
    "group by (job, code) (http_requests_total)",
    "stddev by (job) (cpu_temp_celsius)",
    "stdvar(rate(http_requests_total[5m]))",
    "topk(3, rate(http_requests_total[5m]))",
    "bottomk(2, cpu_temp_celsius) by (job)",
    "topk by (job) (1, cpu_temp_celsius)",
    "quantile(0.75, cpu_temp_celsius)",
    "quantile by (job) (0.5, rate(http_requests_total[5m]))",
    "count_values(\"value\", up)",
    "count_values by (job) (\"depth\", queue_depth)",
    "sum(rate(http_requests_total[5m])) by (job, method)",
    "avg(avg_over_time(cpu_temp_celsius[5m])) without (instance)",
    // Binary operators: arithmetic, comparison, logical, matching.
    "http_requests_total + 1",
    "2 * cpu_temp_celsius - 10",
    "cpu_temp_celsius / 7",
    "cpu_temp_celsius % 5",
    "cpu_temp_celsius ^ 2",
    "-cpu_temp_celsius",
    "2 + 3 * 4 ^ 2 ^ 0.5 - 1 % 3",
    "1 - -1",
    "(1 + 2) * 3 / 4",
    "time() - timestamp(cpu_temp_celsius)",
    "cpu_temp_celsius > 10",
    "cpu_temp_celsius > bool 10",
    "queue_depth <= 20",
    "queue_depth != bool 0",
    "10 < cpu_temp_celsius",
    "cpu_temp_celsius == cpu_temp_celsius",
    "rate(http_requests_total{code=\"500\"}[5m]) / ignoring(code) rate(http_requests_total{code=\"200\"}[5m])",
    "sum by (job, instance) (rate(http_requests_total[5m])) / on(job, instance) group_left(version) node_info",
    "rate(http_requests_total[5m]) * on(job, instance) group_left(version, team) node_info",
    "node_info * on(job, instance) group_right(version) rate(http_requests_total[5m])",
    "sum by (job) (http_requests_total) > on(job) sum by (job) (http_requests_total offset 30m)",
    "cpu_temp_celsius and queue_depth > 25",
    "cpu_temp_celsius and on(instance) queue_depth > 25",
    "queue_depth or cpu_temp_celsius",
    "queue_depth > 30 or on(instance) up",
    "cpu_temp_celsius unless on(job, instance) queue_depth > 20",
    "http_requests_total unless ignoring(method, code) up == 0",
    "cpu_temp_celsius atan2 10",
    "up * 2 > bool on(instance, job) up",
    "http_requests_total + on(job) node_info",
    // A vector match with an empty side answers nothing at that step, before the
    // ambiguity check on the other side (empty at the instant, an error in the range).
    "(up == 0) * on(instance) group_left() http_requests_total",
    "http_requests_total * on(instance) group_right() (up == 0)",
    // Math and other functions.
    "abs(cpu_temp_celsius)",
    "ceil(cpu_temp_celsius)",
    "floor(cpu_temp_celsius)",
    "round(cpu_temp_celsius)",
    "round(cpu_temp_celsius, 0.5)",
    "exp(cpu_temp_celsius / 10)",
    "ln(queue_depth)",
    "log2(abs(cpu_temp_celsius))",
    "log10(http_requests_total)",
    "sqrt(cpu_temp_celsius)",
    "sgn(cpu_temp_celsius)",
    "clamp(cpu_temp_celsius, -5, 5)",
    "clamp_min(cpu_temp_celsius, 0)",
    "clamp_max(queue_depth, 10)",
    "sin(cpu_temp_celsius) + cos(cpu_temp_celsius) * tan(cpu_temp_celsius / 100)",
    "asin(clamp(cpu_temp_celsius / 50, -1, 1)) + acos(clamp(cpu_temp_celsius / 50, -1, 1))",
    "atan(cpu_temp_celsius) + sinh(cpu_temp_celsius / 30) + cosh(cpu_temp_celsius / 30)",
    "tanh(cpu_temp_celsius) + asinh(cpu_temp_celsius) + acosh(abs(cpu_temp_celsius) + 1)",
    "atanh(clamp(cpu_temp_celsius / 60, -0.9, 0.9))",
    "deg(cpu_temp_celsius) - rad(cpu_temp_celsius) * pi()",
    "timestamp(queue_depth)",
    "time()",
    "vector(1)",
    "vector(time()) - 100",
    "scalar(sum(up))",
    "scalar(up)",
    "up * scalar(count(node_info))",
    "minute() + hour() * 60",
    "day_of_week() + day_of_month() + day_of_year()",
    "days_in_month() + month() + year()",
    "hour(timestamp(cpu_temp_celsius))",
    "minute(vector(1700000123))",
    "absent(nonexistent_metric)",
    "absent(up{job=\"nope\", instance=\"x\"})",
    "absent(up)",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"(host-[0-9]+)\\\\..*\")",
    "label_replace(up, \"job\", \"renamed-$1\", \"job\", \"(a.*)\")",
    "label_replace(cpu_temp_celsius, \"port\", \"$2\", \"instance\", \"([^:]+):(.*)\")",
    "label_join(up, \"combined\", \"/\", \"job\", \"instance\")",
    "label_join(node_info, \"id\", \"-\", \"team\", \"version\", \"job\")",
    "sort(cpu_temp_celsius)",
    "sort_desc(rate(http_requests_total[5m]))",
    "sort_desc(sum by (job) (queue_depth))",
    // Histograms.
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le, job) (rate(request_duration_seconds_bucket[10m])))",
    "histogram_quantile(0.99, sum by (le) (increase(request_duration_seconds_bucket[15m])))",
    "histogram_quantile(0, sum by (le, job) (request_duration_seconds_bucket))",
    "histogram_quantile(1.5, sum by (le, job) (request_duration_seconds_bucket))",
    "sum by (job) (rate(request_duration_seconds_bucket{le=\"0.25\"}[5m])) / sum by (job) (rate(request_duration_seconds_count[5m]))",
    // Subqueries.
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(cpu_temp_celsius[20m:2m] offset 5m)",
    "min_over_time(sum by (job) (rate(http_requests_total[2m]))[15m:30s])",
    "rate(http_requests_total[5m])[10m:]",
    "deriv(sum by (job) (queue_depth)[20m:1m])",
    "max_over_time(deriv(cpu_temp_celsius[5m])[10m:1m] @ {A})",
    "sum_over_time(up[10m:1m])",
    "quantile_over_time(0.5, (queue_depth > 10)[20m:1m])",
    // Strings and literals.
    "\"a string\"",
    "42",
    "-1.5e3",
    "Inf",
    "NaN",
];

/// Known differences: `query:` lines, each followed by a `reason:` line.
fn known_differences() -> BTreeMap<String, String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/promql-known-differences.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeMap::new();
    let mut pending: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(q) = line.strip_prefix("query:") {
            assert!(
                pending.is_none(),
                "{path}:{}: query without a reason",
                n + 1
            );
            pending = Some(q.trim().to_owned());
        } else if let Some(r) = line.strip_prefix("reason:") {
            let q = pending
                .take()
                .unwrap_or_else(|| panic!("{path}:{}: reason without a query", n + 1));
            assert!(!r.trim().is_empty(), "{path}:{}: empty reason", n + 1);
            out.insert(q, r.trim().to_owned());
        } else {
            panic!("{path}:{}: expected `query:` or `reason:`", n + 1);
        }
    }
    assert!(pending.is_none(), "{path}: last query has no reason");
    out
}

#[test]
fn queries_agree_with_real_prometheus() {
    let started = Instant::now();
    let cl = Closedloop::start("");
    let prom = Prometheus::start(
        |_| "global: {scrape_interval: 1m}\n".to_owned(),
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=promql-per-step-stats",
        ],
    );
    // Two hours ending about three minutes ago, on a whole-minute grid.
    let origin = (now_ms() - SAMPLES * INTERVAL_MS - 4 * 60_000) / 60_000 * 60_000;
    let data = DataSet::generate(origin);
    for body in data.bodies() {
        write_to(&prom.url("/api/v1/write"), body.clone());
        write_to(&cl.url("/api/v1/write"), body);
    }
    let stored = cl.metric("closedloop_remote_write_samples_written_total", "");
    assert_eq!(stored as usize, data.sample_count(), "{}", cl.log());

    // Query times are whole seconds, 37 s past a minute: the last evaluation about a
    // minute before the data ends, range queries over the hour before it. Ranges,
    // offsets and subquery steps are whole minutes or 30 s, so a subquery's first
    // step never sits exactly on its window's (open or closed) start.
    let end_s = origin / 1000 + SAMPLES * INTERVAL_MS / 1000 - 83;
    let start_s = end_s - 3600;
    let at_s = origin / 1000 + 5400 + 17;
    let known = known_differences();
    let mut used_known = BTreeSet::new();
    let (mut compared, mut agreed, mut empty) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut listed = Vec::new();
    for template in QUERIES {
        let q = template.replace("{A}", &at_s.to_string());
        let ordered = q.starts_with("sort");
        let mut runs = vec![(
            "instant",
            "/api/v1/query",
            vec![("query", q.clone()), ("time", end_s.to_string())],
        )];
        let expr = closedloop::promql::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        use promql_parser::parser::value::ValueType;
        if matches!(expr.value_type(), ValueType::Vector | ValueType::Scalar) {
            runs.push((
                "range",
                "/api/v1/query_range",
                vec![
                    ("query", q.clone()),
                    ("start", start_s.to_string()),
                    ("end", end_s.to_string()),
                    ("step", "60".to_owned()),
                ],
            ));
        }
        let mut diffs = Vec::new();
        for (kind, path, params) in runs {
            let theirs = query(&prom.url(""), path, &params);
            let ours = query(&cl.url(""), path, &params);
            compared += 1;
            if matches!(&theirs, Answer::Series(_, s) if s.is_empty()) {
                empty += 1;
            }
            match compare(&theirs, &ours, ordered && kind == "instant") {
                None => agreed += 1,
                Some(d) => diffs.push(format!("{kind}: {d}")),
            }
        }
        match (diffs.is_empty(), known.get(*template)) {
            (true, None) => {}
            (true, Some(_)) => failures.push(format!(
                "{template}\n  listed as a known difference but now agrees: remove it from testdata/promql-known-differences.txt"
            )),
            (false, Some(reason)) => {
                used_known.insert(template.to_string());
                listed.push(format!("{template} ({reason})"));
            }
            (false, None) => failures.push(format!("{template}\n{}", diffs.join("\n"))),
        }
    }
    for q in known.keys() {
        if !used_known.contains(q) && !QUERIES.contains(&q.as_str()) {
            failures.push(format!(
                "{q}\n  listed in testdata/promql-known-differences.txt but not a query of this test"
            ));
        }
    }
    failures.extend(compare_stats(&prom, &cl, start_s, end_s));
    eprintln!(
        "promql_diff: {} queries, {compared} comparisons ({agreed} agreed, {empty} with an empty result), {} known differences, {} failures, {:.1}s",
        QUERIES.len(),
        listed.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for l in &listed {
        eprintln!("  known: {l}");
    }
    assert!(QUERIES.len() >= 100);
    // Agreeing on nothing proves nothing: nearly every query must return data.
    assert!(
        empty <= 12,
        "{empty} of {compared} comparisons returned no series from Prometheus; did the writes land?"
    );
    assert!(
        failures.is_empty(),
        "{} of {} queries differ from Prometheus 2.42:\n\n{}",
        failures.len(),
        QUERIES.len(),
        failures.join("\n\n")
    );
}

/// Queries whose `stats=all` sample counts are compared: selectors, range
/// functions, aggregation over them and a subquery.
const STATS_QUERIES: &[&str] = &[
    "http_requests_total",
    "rate(http_requests_total[5m])",
    "sum by (job) (sum_over_time(queue_depth[10m]))",
    "cpu_temp_celsius offset 10m + on(instance, job) up",
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "rate(http_requests_total[5m])[10m:1m]",
];

/// `data.stats.samples` of a query with `stats=all`.
fn samples_stats(base: &str, path: &str, params: &[(&str, String)]) -> serde_json::Value {
    let mut params = params.to_vec();
    params.push(("stats", "all".to_owned()));
    let url = format!("{base}{path}");
    let body: serde_json::Value = http()
        .post(&url)
        .form(&params)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert_eq!(body["status"], "success", "{url} {params:?}: {body}");
    let stats = &body["data"]["stats"];
    assert!(
        stats["timings"]["execTotalTime"].is_number(),
        "{url}: no timings: {body}"
    );
    stats["samples"].clone()
}

/// Prometheus's `stats=all` counts: the samples each query touched, in total and
/// per step, must be the same on both sides (`util/stats`: an instant selector
/// counts a sample per series and step, a range selector the samples in each
/// window, a subquery the points of its result in each window).
fn compare_stats(prom: &Prometheus, cl: &Closedloop, start_s: i64, end_s: i64) -> Vec<String> {
    let mut failures = Vec::new();
    for q in STATS_QUERIES {
        let expr = closedloop::promql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let range_ok = !matches!(
            expr.value_type(),
            promql_parser::parser::value::ValueType::Matrix
        );
        for (path, params) in [
            (
                "/api/v1/query",
                vec![("query", q.to_string()), ("time", end_s.to_string())],
            ),
            (
                "/api/v1/query_range",
                vec![
                    ("query", q.to_string()),
                    ("start", start_s.to_string()),
                    ("end", end_s.to_string()),
                    ("step", "60".to_owned()),
                ],
            ),
        ] {
            if path.ends_with("query_range") && !range_ok {
                continue;
            }
            let theirs = samples_stats(&prom.url(""), path, &params);
            let ours = samples_stats(&cl.url(""), path, &params);
            for key in ["totalQueryableSamples", "totalQueryableSamplesPerStep"] {
                if theirs[key] != ours[key] {
                    failures.push(format!(
                        "stats=all {path} {q}: {key} differs\n  prom {}\n  ours {}",
                        theirs[key], ours[key]
                    ));
                }
            }
        }
    }
    failures
}
