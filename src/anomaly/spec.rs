//! The `detectors:` section of a rule group: one [`DetectorSpec`] per detector, as
//! written in a rule file, plus Prometheus duration parsing and selector conversion.
//!
//! Invariants: a spec that passed [`DetectorSpec::validate`] always builds a
//! [`Detector`](super::Detector); every error names the detector, the field and the
//! reason. Parameters that do not apply to the chosen algorithm are rejected rather
//! than ignored, so a typo in `algorithm` cannot silently change meaning.

use serde::{Deserialize, Serialize};

use super::{Direction, SpecError};
use crate::storage::{MatchOp, Matcher};

pub use crate::duration::PromDuration;

/// Detector algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Rolling mean/std, score |x − mean|/std.
    Zscore,
    /// Rolling quartiles with Tukey fences.
    Iqr,
    /// Additive Holt-Winters with a prediction band.
    HoltWinters,
    /// Static bounds held for a minimum duration.
    Threshold,
    /// Two-sided CUSUM change detection.
    Trend,
    /// Maximum of the members' normalised scores.
    Ensemble,
}

impl Algorithm {
    /// The name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Zscore => "zscore",
            Algorithm::Iqr => "iqr",
            Algorithm::HoltWinters => "holt_winters",
            Algorithm::Threshold => "threshold",
            Algorithm::Trend => "trend",
            Algorithm::Ensemble => "ensemble",
        }
    }

    /// The threshold used when the spec gives none.
    pub fn default_threshold(self) -> f64 {
        match self {
            Algorithm::Zscore | Algorithm::HoltWinters => 3.0,
            Algorithm::Iqr | Algorithm::Threshold => 0.0,
            Algorithm::Trend => 5.0,
            Algorithm::Ensemble => 0.5,
        }
    }
}

fn default_severity() -> String {
    "warning".to_string()
}

/// One detector of a rule group's `detectors:` section. Members of an `ensemble` use
/// the same fields without `name`, `selector` and `severity`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Unique name within the rule files; becomes the `detector` label of outputs.
    #[serde(default)]
    pub name: String,
    /// A PromQL vector selector choosing the series to watch, e.g. `up{job="api"}`.
    #[serde(default)]
    pub selector: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The window of the baseline (zscore, iqr: rolling window; trend: time constant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<PromDuration>,
    /// A score above this is an anomaly (defaults per algorithm: zscore 3,
    /// holt_winters 3, iqr 0 i.e. outside the fences, trend 5, threshold 0, ensemble 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Severity given to events and incidents (`severity` label of detections).
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Samples a series must have before it is scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u32>,
    /// Which deviations count: `up`, `down` or `both` (default).
    #[serde(default)]
    pub direction: Direction,
    /// zscore: time buckets per window (2..=64, default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// iqr: Tukey fence multiplier (default 1.5); trend: CUSUM slack in std units
    /// (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    /// iqr: most samples kept per series (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// holt_winters: season length as a duration (needs `interval`). zscore: a
    /// seasonal baseline, made of the window's buckets at the same phase of earlier
    /// seasons (needs `window` ≥ 2 seasons, and `window / buckets` dividing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<PromDuration>,
    /// holt_winters: the series' sample interval, to turn `season` into samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<PromDuration>,
    /// holt_winters: season length in samples (instead of `season` + `interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season_samples: Option<u32>,
    /// holt_winters: level smoothing (0, 1]; fitted on warm-up data when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// holt_winters: trend smoothing [0, 1]; fitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// holt_winters: seasonal smoothing [0, 1]; fitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// holt_winters: a gap longer than this resets the series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap: Option<PromDuration>,
    /// threshold: upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// threshold: lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// threshold: how long a bound must be crossed.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<PromDuration>,
    /// ensemble: the member detectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<DetectorSpec>>,
    /// After an anomaly, the score of that series is held at 0 for this long (one
    /// report per incident instead of one per sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdoff: Option<PromDuration>,
    /// Which output series to write back (default: all four). Each written output
    /// costs one stored sample per input sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputKind>>,
}

/// An output series of a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum OutputKind {
    /// `anomaly_score`.
    #[serde(rename = "anomaly_score")]
    Score,
    /// `anomaly_upper`.
    #[serde(rename = "anomaly_upper")]
    Upper,
    /// `anomaly_lower`.
    #[serde(rename = "anomaly_lower")]
    Lower,
    /// `anomaly_forecast`.
    #[serde(rename = "anomaly_forecast")]
    Forecast,
}

impl OutputKind {
    /// The four outputs, in column order.
    pub const ALL: [OutputKind; 4] = [
        OutputKind::Score,
        OutputKind::Upper,
        OutputKind::Lower,
        OutputKind::Forecast,
    ];
}

impl DetectorSpec {
    /// A spec with only name, selector and algorithm set.
    pub fn new(name: &str, selector: &str, algorithm: Algorithm) -> Self {
        DetectorSpec {
            name: name.to_string(),
            selector: selector.to_string(),
            algorithm,
            window: None,
            threshold: None,
            severity: default_severity(),
            warmup: None,
            direction: Direction::Both,
            buckets: None,
            k: None,
            capacity: None,
            season: None,
            interval: None,
            season_samples: None,
            alpha: None,
            beta: None,
            gamma: None,
            max_gap: None,
            upper: None,
            lower: None,
            for_: None,
            members: None,
            holdoff: None,
            outputs: None,
        }
    }

    /// Whether output column `kind` is written back.
    pub fn writes(&self, kind: OutputKind) -> bool {
        self.outputs.as_ref().is_none_or(|o| o.contains(&kind))
    }

    /// The effective threshold.
    pub fn threshold_or_default(&self) -> f64 {
        self.threshold
            .unwrap_or_else(|| self.algorithm.default_threshold())
    }

    /// Season length in samples (holt_winters), 0 when none.
    pub(crate) fn season_len(&self) -> u32 {
        if let Some(n) = self.season_samples {
            return n;
        }
        match (self.season, self.interval) {
            (Some(s), Some(i)) if i.0 > 0 => (s.0 / i.0).clamp(0, u32::MAX as i64) as u32,
            _ => 0,
        }
    }

    /// The selector as store matchers.
    pub fn matchers(&self) -> Result<Vec<Matcher>, SpecError> {
        selector_matchers(&self.selector).map_err(|reason| self.err("selector", reason))
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> SpecError {
        SpecError {
            detector: self.name.clone(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Checks every field; the error names the detector, the field and the reason.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty() {
            return Err(self.err("name", "must not be empty"));
        }
        if !crate::storage::labels::is_valid_label_name(&self.name)
            && !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        {
            return Err(self.err("name", "use letters, digits and _ - . : only"));
        }
        if self.selector.is_empty() {
            return Err(self.err("selector", "must not be empty"));
        }
        self.matchers()?;
        if self.severity.is_empty() {
            return Err(self.err("severity", "must not be empty"));
        }
        self.validate_params("")
    }

    fn validate_params(&self, prefix: &str) -> Result<(), SpecError> {
        let f = |name: &str| format!("{prefix}{name}");
        let alg = self.algorithm;
        if let Some(t) = self.threshold {
            if !t.is_finite() || t < 0.0 {
                return Err(self.err(&f("threshold"), format!("{t} must be a finite number ≥ 0")));
            }
            if alg == Algorithm::Ensemble && t >= 1.0 {
                return Err(self.err(
                    &f("threshold"),
                    "an ensemble's score is in [0, 1): use a threshold below 1",
                ));
            }
        }
        if let Some(w) = self.window {
            if w.0 <= 0 {
                return Err(self.err(&f("window"), "must be positive"));
            }
        }
        if let Some(h) = self.holdoff {
            if h.0 < 0 {
                return Err(self.err(&f("holdoff"), "must not be negative"));
            }
        }
        // parameters that belong to one algorithm only
        let only = |present: bool, name: &str, algs: &[Algorithm]| -> Result<(), SpecError> {
            if present && !algs.contains(&alg) {
                let names: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
                return Err(self.err(
                    &f(name),
                    format!(
                        "applies to {} only, not to {}",
                        names.join(" and "),
                        alg.as_str()
                    ),
                ));
            }
            Ok(())
        };
        use Algorithm::*;
        only(self.buckets.is_some(), "buckets", &[Zscore])?;
        only(self.k.is_some(), "k", &[Iqr, Trend])?;
        only(self.capacity.is_some(), "capacity", &[Iqr])?;
        only(self.season.is_some(), "season", &[HoltWinters, Zscore])?;
        only(self.interval.is_some(), "interval", &[HoltWinters])?;
        only(
            self.season_samples.is_some(),
            "season_samples",
            &[HoltWinters],
        )?;
        only(self.alpha.is_some(), "alpha", &[HoltWinters])?;
        only(self.beta.is_some(), "beta", &[HoltWinters])?;
        only(self.gamma.is_some(), "gamma", &[HoltWinters])?;
        only(self.max_gap.is_some(), "max_gap", &[HoltWinters])?;
        only(self.upper.is_some(), "upper", &[Threshold])?;
        only(self.lower.is_some(), "lower", &[Threshold])?;
        only(self.for_.is_some(), "for", &[Threshold])?;
        only(self.members.is_some(), "members", &[Ensemble])?;
        only(self.window.is_some(), "window", &[Zscore, Iqr, Trend])?;
        if let Some(b) = self.buckets {
            if !(2..=64).contains(&b) {
                return Err(self.err(&f("buckets"), format!("{b} is not in 2..=64")));
            }
        }
        if let Some(k) = self.k {
            if !k.is_finite() || k < 0.0 {
                return Err(self.err(&f("k"), format!("{k} must be a finite number ≥ 0")));
            }
        }
        if let Some(c) = self.capacity {
            if !(4..=65_536).contains(&c) {
                return Err(self.err(&f("capacity"), format!("{c} is not in 4..=65536")));
            }
        }
        for (name, v, lo) in [
            ("alpha", self.alpha, f64::MIN_POSITIVE),
            ("beta", self.beta, 0.0),
            ("gamma", self.gamma, 0.0),
        ] {
            if let Some(v) = v {
                if !(lo..=1.0).contains(&v) {
                    return Err(self.err(&f(name), format!("{v} is not in (0, 1] / [0, 1]")));
                }
            }
        }
        if alg == HoltWinters {
            if self.season.is_some() != self.interval.is_some() {
                return Err(self.err(
                    &f("season"),
                    "season and interval go together (season length = season / interval)",
                ));
            }
            if self.season_samples.is_some() && self.season.is_some() {
                return Err(self.err(
                    &f("season_samples"),
                    "give season_samples or season + interval, not both",
                ));
            }
            if let Some(i) = self.interval {
                if i.0 <= 0 {
                    return Err(self.err(&f("interval"), "must be positive"));
                }
            }
            if self.season_len() > 100_000 {
                return Err(self.err(
                    &f("season"),
                    format!(
                        "{} samples per season is more than 100000",
                        self.season_len()
                    ),
                ));
            }
        }
        if let (Zscore, Some(season)) = (alg, self.season) {
            let Some(w) = self.window else {
                return Err(self.err(
                    &f("season"),
                    "a seasonal zscore needs a window of at least two seasons",
                ));
            };
            let b = i64::from(self.buckets.unwrap_or(8));
            if w.0 < 2 * season.0 {
                return Err(self.err(
                    &f("window"),
                    format!("{w} is shorter than two seasons ({season} each)"),
                ));
            }
            if w.0 % b != 0 || season.0 % (w.0 / b) != 0 {
                return Err(self.err(
                    &f("season"),
                    format!("{season} is not a whole number of buckets ({w} / {b} buckets)"),
                ));
            }
        }
        if alg == Threshold {
            if self.upper.is_none() && self.lower.is_none() {
                return Err(self.err(
                    &f("upper"),
                    "a threshold detector needs upper, lower or both",
                ));
            }
            if let (Some(u), Some(l)) = (self.upper, self.lower) {
                if l > u {
                    return Err(self.err(&f("lower"), format!("{l} is above upper {u}")));
                }
            }
        }
        if alg == Ensemble {
            let members = self.members.as_deref().unwrap_or_default();
            if members.is_empty() {
                return Err(self.err(&f("members"), "an ensemble needs at least one member"));
            }
            for (i, m) in members.iter().enumerate() {
                let p = format!("{prefix}members[{i}].");
                if !m.name.is_empty() || !m.selector.is_empty() {
                    return Err(self.err(&format!("{p}name"), "members take no name or selector"));
                }
                if m.algorithm == Ensemble {
                    return Err(self.err(&format!("{p}algorithm"), "ensembles do not nest"));
                }
                if m.holdoff.is_some() {
                    return Err(self.err(&format!("{p}holdoff"), "set holdoff on the ensemble"));
                }
                if m.outputs.is_some() {
                    return Err(self.err(&format!("{p}outputs"), "set outputs on the ensemble"));
                }
                m.validate_params(&p).map_err(|mut e| {
                    e.detector = self.name.clone();
                    e
                })?;
            }
        }
        Ok(())
    }
}

/// Parses a PromQL vector selector into store matchers (the metric name becomes a
/// `__name__` equality matcher).
pub fn selector_matchers(selector: &str) -> Result<Vec<Matcher>, String> {
    use promql_parser::label::MatchOp as P;
    use promql_parser::parser::Expr;
    let expr = crate::promql::parse(selector).map_err(|e| format!("bad PromQL: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err("must be a vector selector such as metric{label=\"value\"}".into());
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err("offset and @ are not allowed in a detector selector".into());
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err("`or` inside a selector is not supported; declare two detectors".into());
    }
    let mut out = Vec::new();
    if let Some(name) = vs.name {
        out.push(Matcher::equal(crate::storage::METRIC_NAME, name));
    }
    for m in vs.matchers.matchers {
        let op = match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::Regex,
            P::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(op, m.name, m.value).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_prometheus_notation() {
        assert_eq!("30m".parse::<PromDuration>().unwrap().0, 1_800_000);
        assert_eq!("1h30m".parse::<PromDuration>().unwrap().0, 5_400_000);
        assert_eq!("1d".parse::<PromDuration>().unwrap().0, 86_400_000);
        assert_eq!("250ms".parse::<PromDuration>().unwrap().0, 250);
        assert!("30".parse::<PromDuration>().is_err());
        assert!("m".parse::<PromDuration>().is_err());
        assert!("30m1h".parse::<PromDuration>().is_err());
        assert!("5x".parse::<PromDuration>().is_err());
        assert!("".parse::<PromDuration>().is_err());
        assert_eq!(PromDuration(5_400_000).to_string(), "1h30m");
    }

    #[test]
    fn design_example_parses_and_validates() {
        let y = r#"
name: latency_zscore
selector: 'http_request_duration_seconds{quantile="0.99"}'
algorithm: zscore
window: 30m
threshold: 3
"#;
        let s: DetectorSpec = serde_yaml::from_str(y).unwrap();
        s.validate().unwrap();
        let m = s.matchers().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "__name__");
        assert_eq!(s.severity, "warning");
    }

    #[test]
    fn outputs_select_written_series() {
        let y = "name: a\nselector: up\nalgorithm: zscore\noutputs: [anomaly_score]\n";
        let s: DetectorSpec = serde_yaml::from_str(y).unwrap();
        assert!(s.writes(OutputKind::Score) && !s.writes(OutputKind::Upper));
        let y = "name: a\nselector: up\nalgorithm: zscore\noutputs: [score]\n";
        assert!(serde_yaml::from_str::<DetectorSpec>(y).is_err());
        assert!(DetectorSpec::new("a", "up", Algorithm::Iqr).writes(OutputKind::Forecast));
    }

    #[test]
    fn seasonal_zscore_checks_window_and_buckets() {
        let mut s = DetectorSpec::new("d", "up", Algorithm::Zscore);
        s.season = Some("1d".parse::<PromDuration>().unwrap());
        assert_eq!(s.validate().unwrap_err().field, "season");
        s.window = Some("1d".parse::<PromDuration>().unwrap());
        assert_eq!(s.validate().unwrap_err().field, "window");
        s.window = Some("4d".parse::<PromDuration>().unwrap());
        s.buckets = Some(64); // 1.5h buckets: 16 per day
        s.validate().unwrap();
        s.buckets = Some(50); // 1h55m12s buckets do not divide a day
        assert_eq!(s.validate().unwrap_err().field, "season");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let y = "name: a\nselector: up\nalgorithm: zscore\nwindwo: 5m\n";
        let e = serde_yaml::from_str::<DetectorSpec>(y).unwrap_err();
        assert!(e.to_string().contains("windwo"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_reason() {
        let mut s = DetectorSpec::new("d", "up", Algorithm::Zscore);
        s.alpha = Some(0.5);
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "alpha");
        assert!(e.to_string().contains("holt_winters"), "{e}");
        let mut s = DetectorSpec::new("d", "rate(up[5m])", Algorithm::Zscore);
        assert_eq!(s.validate().unwrap_err().field, "selector");
        s.selector = "up{".into();
        assert_eq!(s.validate().unwrap_err().field, "selector");
        let mut s = DetectorSpec::new("d", "up", Algorithm::Threshold);
        assert_eq!(s.validate().unwrap_err().field, "upper");
        s.upper = Some(1.0);
        s.threshold = Some(f64::NAN);
        assert_eq!(s.validate().unwrap_err().field, "threshold");
        let mut s = DetectorSpec::new("d", "up", Algorithm::HoltWinters);
        s.season = Some(PromDuration(86_400_000));
        assert_eq!(s.validate().unwrap_err().field, "season");
    }

    #[test]
    fn ensemble_members_are_validated_with_their_path() {
        let y = r#"
name: combo
selector: '{job="api"}'
algorithm: ensemble
members:
  - algorithm: zscore
    window: 1h
  - algorithm: holt_winters
    alpha: 2
"#;
        let s: DetectorSpec = serde_yaml::from_str(y).unwrap();
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "members[1].alpha");
    }
}
