//! Durations in Prometheus notation (`90s`, `1h30m`, `1d`, `500ms`), as rule files,
//! the config and the query API write them.

use std::fmt;
use std::time::Duration;

/// A duration string that is not in Prometheus notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `[0-9]+(ms|s|m|h|d|w|y)` units in descending order, e.g. `1h30m`.
/// A bare `0` is accepted, as Prometheus does.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    parse_duration_ms(input).map(|ms| Duration::from_millis(ms as u64))
}

/// [`parse_duration`] in milliseconds: the one duration parser of the project.
pub fn parse_duration_ms(input: &str) -> Result<i64, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    if input == "0" {
        return Ok(0);
    }
    if input.is_empty() {
        return Err(err("empty duration"));
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = input;
    let mut total_ms: i64 = 0;
    let mut last_unit = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number before each unit"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        // `ms` must be tried before `m`.
        let unit = [6, 0, 1, 2, 3, 4, 5]
            .into_iter()
            .find(|&i| rest.starts_with(UNITS[i].0))
            .ok_or_else(|| err("unknown or missing unit (use ms, s, m, h, d, w, y)"))?;
        if last_unit != usize::MAX && unit <= last_unit {
            return Err(err("units must go from largest to smallest, each once"));
        }
        last_unit = unit;
        rest = &rest[UNITS[unit].0.len()..];
        total_ms = n
            .checked_mul(UNITS[unit].1)
            .and_then(|x| total_ms.checked_add(x))
            .ok_or_else(|| err("duration too large"))?;
    }
    Ok(total_ms)
}

/// Formats a duration the way Prometheus prints one (`1h30m`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("y", 365 * 86_400_000u64),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A duration written in Prometheus notation in config and rule files, held in
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub i64);

impl PromDuration {
    pub const fn from_secs(secs: i64) -> Self {
        PromDuration(secs * 1000)
    }

    pub fn as_millis(&self) -> i64 {
        self.0
    }

    /// As a `std` duration (negative values, which the parser never makes, as zero).
    pub fn as_duration(&self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}

impl std::str::FromStr for PromDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration_ms(s).map(PromDuration)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.as_duration()))
    }
}

impl<'de> serde::Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PromDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_notation() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "5",
            "h",
            "1x",
            "30m1h",
            "1m1m",
            "-1s",
            "1.5h",
            "99999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "5m", "1d2h", "0s", "1s500ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
