//! Query results and their JSON form, exactly as Prometheus's HTTP API writes the
//! `data` object: `{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}`.
//! Timestamps are seconds as a JSON number (`1435781451.781`), values are strings in
//! Go's shortest `'f'` formatting with `NaN`, `+Inf` and `-Inf`.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::storage::LabelSet;
use promql_parser::parser::value::ValueType;

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: LabelSet,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector (matrix), points oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    pub points: Vec<(i64, f64)>,
}

/// A query's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(i64, f64),
    String(i64, String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus's `resultType`.
    pub fn result_type(&self) -> &'static str {
        match self {
            Value::Scalar(..) => "scalar",
            Value::String(..) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A query's value with the annotations Prometheus would return beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// `PromQL warning: ...` annotations.
    pub warnings: Vec<String>,
    /// `PromQL info: ...` annotations.
    pub infos: Vec<String>,
}

/// Formats a sample value as Prometheus does (`strconv.FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    ValueStr(v).to_string()
}

/// A timestamp in seconds, serialized as an integer when whole (`1`), else as the
/// shortest float (`1435781451.781`), matching Prometheus's output.
struct Ts(i64);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

/// A sample value as Prometheus writes it, formatted straight into the output (no
/// `String` per point: a range query's answer can hold millions of points).
pub(crate) struct ValueStr(pub(crate) f64);

impl std::fmt::Display for ValueStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v == f64::INFINITY {
            f.write_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            // Rust's `Display` for f64 is the shortest round-trip form without an
            // exponent, like Go's 'f' with precision -1.
            write!(f, "{v}")
        }
    }
}

impl Serialize for ValueStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[t, "v"]`.
struct Point(i64, f64);

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&Ts(self.0))?;
        seq.serialize_element(&ValueStr(self.1))?;
        seq.end()
    }
}

/// A series' points, serialized as they are read.
struct Points<'a>(&'a [(i64, f64)]);

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &(t, v) in self.0 {
            seq.serialize_element(&Point(t, v))?;
        }
        seq.end()
    }
}

struct Metric<'a>(&'a LabelSet);

impl Serialize for Metric<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for l in self.0.iter() {
            m.serialize_entry(&*l.name, &*l.value)?;
        }
        m.end()
    }
}

struct SampleJson<'a>(&'a Sample);

impl Serialize for SampleJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &Metric(&self.0.labels))?;
        m.serialize_entry("value", &Point(self.0.t, self.0.v))?;
        m.end()
    }
}

struct SeriesJson<'a>(&'a Series);

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", &Metric(&self.0.labels))?;
        m.serialize_entry("values", &Points(&self.0.points))?;
        m.end()
    }
}

/// Serializes the items of a slice through a wrapper, without collecting them.
struct Seq<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Seq<'a, T, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&(self.1)(item))?;
        }
        seq.end()
    }
}

impl Serialize for Value {
    /// The `data` object of Prometheus's query API response.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("resultType", self.result_type())?;
        match self {
            Value::Scalar(t, v) => m.serialize_entry("result", &Point(*t, *v))?,
            Value::String(t, v) => m.serialize_entry("result", &(Ts(*t), v))?,
            Value::Vector(samples) => m.serialize_entry("result", &Seq(samples, SampleJson))?,
            Value::Matrix(series) => m.serialize_entry("result", &Seq(series, SeriesJson))?,
        }
        m.end()
    }
}

impl Serialize for QueryResult {
    /// Same as the value: the `data` object. Warnings and infos go beside `data` in the
    /// response envelope, which the HTTP layer writes.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// The name Prometheus uses for a value type in messages.
pub(crate) fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "vector",
        ValueType::Matrix => "range vector",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_prometheus_shapes() {
        let v = Value::Vector(vec![Sample {
            labels: LabelSet::from_pairs([("__name__", "up"), ("job", "a")]),
            t: 1_435_781_451_781,
            v: 1.0,
        }]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1435781451.781,"1"]}]}"#
        );
        let s = Value::Scalar(2000, f64::INFINITY);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"resultType":"scalar","result":[2,"+Inf"]}"#
        );
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
