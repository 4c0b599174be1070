//! Answers of Prometheus-compatible query APIs, parsed and compared: what the
//! differential tests (`promql_diff`, `real_material`) share. Prometheus is "prom",
//! closedloop "ours".

#![allow(unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::common::*;

/// A small deterministic generator (SplitMix64), so every run writes the same shape.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A result series: labels and `(t, v)` points.
pub type ResultSeries = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// A series to write: labels (name, value) and samples (t ms, value).
pub type OwnedSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// Remote-write bodies, oldest first: every series' samples in each `slice_ms` of
/// time (Prometheus's head accepts a series' samples only in order, and nothing
/// older than an hour before its newest).
pub fn remote_write_bodies(series: &[OwnedSeries], slice_ms: i64) -> Vec<Vec<u8>> {
    let (Some(start), Some(end)) = (
        series.iter().filter_map(|s| s.1.first()).map(|p| p.0).min(),
        series.iter().filter_map(|s| s.1.last()).map(|p| p.0).max(),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let to = from + slice_ms;
        type Part<'a> = (Vec<(&'a str, &'a str)>, Vec<(i64, f64)>);
        let parts: Vec<Part<'_>> = series
            .iter()
            .map(|(labels, samples)| {
                let labels = labels
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let samples = samples
                    .iter()
                    .copied()
                    .filter(|&(t, _)| t >= from && t < to)
                    .collect();
                (labels, samples)
            })
            .filter(|(_, samples): &(_, Vec<_>)| !samples.is_empty())
            .collect();
        let refs: Vec<TestSeries<'_>> = parts
            .iter()
            .map(|(l, s)| (l.as_slice(), s.as_slice()))
            .collect();
        out.push(v1_body(&refs));
        from = to;
    }
    out
}

pub fn write_to(url: &str, body: Vec<u8>) {
    let resp = http()
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    assert!(status.is_success(), "POST {url}: {status} {text}");
}

/// One parsed query answer.
#[derive(Debug)]
pub enum Answer {
    Error(String, String),
    Scalar(f64, f64),
    String(f64, String),
    /// Series in the order the server returned them; points `(t, v)`.
    Series(&'static str, Vec<ResultSeries>),
}

pub fn parse_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {s:?}")),
    }
}

pub fn point(p: &serde_json::Value) -> (f64, f64) {
    (
        p[0].as_f64().expect("timestamp"),
        parse_float(p[1].as_str().expect("value string")),
    )
}

pub fn metric(m: &serde_json::Value) -> BTreeMap<String, String> {
    m.as_object()
        .expect("metric object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

pub fn query(base: &str, path: &str, params: &[(&str, String)]) -> Answer {
    let url = format!("{base}{path}");
    let resp = http()
        .post(&url)
        .form(params)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let body: serde_json::Value = resp
        .json()
        .unwrap_or_else(|e| panic!("{url}: not JSON: {e}"));
    if body["status"] != "success" {
        return Answer::Error(
            body["errorType"].as_str().unwrap_or_default().to_owned(),
            body["error"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str().unwrap_or_default() {
        "scalar" => {
            let (t, v) = point(result);
            Answer::Scalar(t, v)
        }
        "string" => Answer::String(
            result[0].as_f64().unwrap_or_default(),
            result[1].as_str().unwrap_or_default().to_owned(),
        ),
        kind @ ("vector" | "matrix") => {
            let series = result
                .as_array()
                .expect("result array")
                .iter()
                .map(|s| {
                    let points = if kind == "vector" {
                        vec![point(&s["value"])]
                    } else {
                        s["values"].as_array().unwrap().iter().map(point).collect()
                    };
                    (metric(&s["metric"]), points)
                })
                .collect();
            Answer::Series(if kind == "vector" { "vector" } else { "matrix" }, series)
        }
        other => panic!("{url}: unknown resultType {other:?}"),
    }
}

/// Values agree when both are NaN, or equal, or within 1e-9 relative. Values that
/// should be 0 but come out of a long float computation get an absolute slack of
/// 1e-12, since a relative bound means nothing at 0.
pub fn same_value(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() <= 1e-12
}

pub fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Compares two answers; `None` when they agree, else what differs (Prometheus is
/// "prom", closedloop "ours").
pub fn compare(prom: &Answer, ours: &Answer, ordered: bool) -> Option<String> {
    match (prom, ours) {
        (Answer::Error(kp, ep), Answer::Error(ko, eo)) => {
            (kp != ko).then(|| format!("error types differ: prom {kp} ({ep}), ours {ko} ({eo})"))
        }
        (Answer::Scalar(tp, vp), Answer::Scalar(to, vo)) => (tp != to || !same_value(*vp, *vo))
            .then(|| format!("scalar: prom [{tp}, {vp}], ours [{to}, {vo}]")),
        (Answer::String(tp, sp), Answer::String(to, so)) => (tp != to || sp != so)
            .then(|| format!("string: prom [{tp}, {sp:?}], ours [{to}, {so:?}]")),
        (Answer::Series(kp, sp), Answer::Series(ko, so)) => {
            if kp != ko {
                return Some(format!("resultType: prom {kp}, ours {ko}"));
            }
            let index = |s: &[ResultSeries]| {
                let mut m = BTreeMap::new();
                for (l, p) in s {
                    m.insert(l.clone(), p.clone());
                }
                m
            };
            let (mp, mo) = (index(sp), index(so));
            let mut out = String::new();
            if mp.len() != sp.len() || mo.len() != so.len() {
                let _ = writeln!(out, "duplicate label sets in a result");
            }
            let kp: BTreeSet<_> = mp.keys().collect();
            let ko: BTreeSet<_> = mo.keys().collect();
            for l in kp.difference(&ko).take(3) {
                let _ = writeln!(out, "  only in prom: {}", fmt_labels(l));
            }
            for l in ko.difference(&kp).take(3) {
                let _ = writeln!(out, "  only in ours: {}", fmt_labels(l));
            }
            let mut shown = 0;
            for (l, pp) in &mp {
                let Some(po) = mo.get(l) else { continue };
                let ts_p: Vec<f64> = pp.iter().map(|p| p.0).collect();
                let ts_o: Vec<f64> = po.iter().map(|p| p.0).collect();
                let bad = if ts_p != ts_o {
                    Some(format!(
                        "timestamps differ ({} vs {} points; first prom {:?}, ours {:?})",
                        ts_p.len(),
                        ts_o.len(),
                        ts_p.iter().zip(&ts_o).find(|(a, b)| a != b).map(|x| x.0),
                        ts_p.iter().zip(&ts_o).find(|(a, b)| a != b).map(|x| x.1),
                    ))
                } else {
                    pp.iter()
                        .zip(po)
                        .find(|(a, b)| !same_value(a.1, b.1))
                        .map(|(a, b)| format!("at {}: prom {}, ours {}", a.0, a.1, b.1))
                };
                if let Some(bad) = bad {
                    if shown < 3 {
                        let _ = writeln!(out, "  {}: {bad}", fmt_labels(l));
                    }
                    shown += 1;
                }
            }
            if shown > 3 {
                let _ = writeln!(out, "  ... {} series differ in all", shown);
            }
            if ordered && out.is_empty() {
                // Sorted by value: the value sequences agree (ties may order either way).
                let vp: Vec<f64> = sp.iter().map(|s| s.1[0].1).collect();
                let vo: Vec<f64> = so.iter().map(|s| s.1[0].1).collect();
                if vp.iter().zip(&vo).any(|(a, b)| !same_value(*a, *b)) {
                    let _ = writeln!(out, "  order differs: prom {vp:?}\n  ours {vo:?}");
                }
            }
            (!out.is_empty()).then_some(out)
        }
        (p, o) => Some(format!("prom answered {p:?}\nours answered {o:?}")),
    }
}
