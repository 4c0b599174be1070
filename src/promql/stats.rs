//! Query statistics as Prometheus returns them for the `stats` parameter of
//! `/api/v1/query` and `/api/v1/query_range`: timings in seconds and the samples a
//! query touched, in total and (with `stats=all`) per output step.
//!
//! Counting follows Prometheus's engine (`util/stats`, `promql/engine.go`): an
//! instant selector counts one sample per series and step it found a value for, a
//! range selector the samples inside each step's window, and a subquery the points
//! of its result inside each step's window, as if it were a range selector (its
//! inner evaluation is not counted, unless the subquery is the whole query).
//! `peakSamples` is the most samples one selector or subquery held at once
//! (Prometheus tracks the whole evaluator's current samples; closedloop holds a
//! node's input while it computes, so this is the figure its sample limit checks).
//!
//! Counting is off unless a request asks for it: the rules engine never pays for it.

use serde::Serialize;

/// How much a query should count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsLevel {
    /// Totals and timings (`stats=<anything>`).
    Summary,
    /// Also the samples per step (`stats=all`).
    PerStep,
}

impl StatsLevel {
    /// The level a `stats` request parameter asks for, as Prometheus reads it:
    /// absent or empty means none, `all` per step, anything else the summary.
    pub fn from_param(v: Option<&str>) -> Option<StatsLevel> {
        match v {
            None | Some("") => None,
            Some("all") => Some(StatsLevel::PerStep),
            Some(_) => Some(StatsLevel::Summary),
        }
    }
}

/// The `stats` object of a query response.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueryStats {
    pub timings: Timings,
    pub samples: SampleStats,
}

/// Where the time went, in seconds (Prometheus's `queryTimings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Preparation, evaluation and sorting together.
    #[serde(serialize_with = "go_float")]
    pub eval_total_time: f64,
    /// Shaping and sorting the result.
    #[serde(serialize_with = "go_float")]
    pub result_sort_time: f64,
    /// Parsing the query.
    #[serde(serialize_with = "go_float")]
    pub query_preparation_time: f64,
    /// Evaluating the expression (selection from the store included).
    #[serde(serialize_with = "go_float")]
    pub inner_eval_time: f64,
    /// Waiting for a query slot.
    #[serde(serialize_with = "go_float")]
    pub exec_queue_time: f64,
    /// The whole query.
    #[serde(serialize_with = "go_float")]
    pub exec_total_time: f64,
}

/// A float as Go's JSON encoder writes a whole number: `0`, not `0.0`.
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// Samples touched (Prometheus's `querySamples`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleStats {
    /// `[t_seconds, samples]` per output step; only with `stats=all`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub total_queryable_samples_per_step: Vec<StepCount>,
    pub total_queryable_samples: i64,
    pub peak_samples: usize,
}

/// One step's sample count, written `[1435781451.781, 42]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCount {
    pub t_ms: i64,
    pub samples: i64,
}

impl Serialize for StepCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (super::value::Ts(self.t_ms), self.samples).serialize(s)
    }
}

/// The evaluator's running count for the steps it is evaluating.
#[derive(Debug, Clone)]
pub(crate) struct SampleCounter {
    pub(crate) total: i64,
    pub(crate) peak: usize,
    /// One count per step when counting per step, else empty.
    pub(crate) per_step: Vec<i64>,
}

impl SampleCounter {
    pub(crate) fn new(level: StatsLevel, steps: usize) -> Self {
        SampleCounter {
            total: 0,
            peak: 0,
            per_step: match level {
                StatsLevel::PerStep => vec![0; steps],
                StatsLevel::Summary => Vec::new(),
            },
        }
    }

    /// A fresh counter of the same level for a subquery's inner steps.
    pub(crate) fn nested(&self, steps: usize) -> Self {
        let level = if self.per_step.is_empty() {
            StatsLevel::Summary
        } else {
            StatsLevel::PerStep
        };
        SampleCounter::new(level, steps)
    }

    pub(crate) fn add_at(&mut self, step: usize, n: i64) {
        self.total += n;
        if let Some(c) = self.per_step.get_mut(step) {
            *c += n;
        }
    }

    pub(crate) fn held(&mut self, n: usize) {
        self.peak = self.peak.max(n);
    }

    pub(crate) fn finish(self, start_ms: i64, step_ms: i64) -> SampleStats {
        SampleStats {
            total_queryable_samples_per_step: self
                .per_step
                .iter()
                .enumerate()
                .map(|(i, &samples)| StepCount {
                    t_ms: start_ms + i as i64 * step_ms,
                    samples,
                })
                .collect(),
            total_queryable_samples: self.total,
            peak_samples: self.peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_prometheus_keys() {
        let s = QueryStats {
            timings: Timings::default(),
            samples: SampleCounter {
                total: 3,
                peak: 2,
                per_step: vec![1, 2],
            }
            .finish(1_000, 500),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"timings":{"evalTotalTime":0,"resultSortTime":0,"queryPreparationTime":0,"innerEvalTime":0,"execQueueTime":0,"execTotalTime":0},"samples":{"totalQueryableSamplesPerStep":[[1,1],[1.5,2]],"totalQueryableSamples":3,"peakSamples":2}}"#
        );
    }

    #[test]
    fn the_parameter_reads_as_prometheus_reads_it() {
        assert_eq!(StatsLevel::from_param(None), None);
        assert_eq!(StatsLevel::from_param(Some("")), None);
        assert_eq!(
            StatsLevel::from_param(Some("all")),
            Some(StatsLevel::PerStep)
        );
        assert_eq!(StatsLevel::from_param(Some("1")), Some(StatsLevel::Summary));
    }
}
