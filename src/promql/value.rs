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
    /// Timings and samples touched, when the query asked for them.
    pub stats: Option<super::stats::QueryStats>,
}

/// Formats a value as Prometheus formats label values (`count_values`):
/// `strconv.FormatFloat(v, 'f', -1, 64)`, with `NaN`, `+Inf` and `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_go_float(v, false, &mut |b| out.push_str(b));
    out
}

/// Writes `v` as Go formats floats: the shortest digits that read back as `v` (ties
/// broken to even, as Go and ryu do), positional (`'f'`), or — with `sci_outside`,
/// as Prometheus's JSON does — in Go's `'e'` form (`1e+21`, `1.5e-07`) when
/// `|v| < 1e-6` or `|v| >= 1e21`. Non-finite values are `NaN`, `+Inf`, `-Inf`.
fn write_go_float(v: f64, sci_outside: bool, out: &mut dyn FnMut(&str)) {
    if v.is_nan() {
        return out("NaN");
    }
    if v.is_infinite() {
        return out(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    if v == 0.0 {
        return out(if v.is_sign_negative() { "-0" } else { "0" });
    }
    // ryu's text is `d.ddd`, `ddd.d`, `0.000ddd` or `d.ddde±x`: read the digits and
    // the decimal point's position back out of it (v = 0.DIGITS × 10^point).
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    if !text.contains('e') {
        // ryu writes positional text in [1e-5, 1e16), Go's 'f' form but for the
        // `.0` it gives whole numbers: the common case, taken as is.
        return out(text.strip_suffix(".0").unwrap_or(text));
    }
    let text = text.trim_start_matches('-');
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    let mut point = int_part.len() as i32 + exp;
    for &d in int_part.as_bytes().iter().chain(frac_part.as_bytes()) {
        if n == 0 && d == b'0' {
            point -= 1; // a leading zero
            continue;
        }
        if n < digits.len() {
            digits[n] = d;
            n += 1;
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or("0");
    if v < 0.0 {
        out("-");
    }
    let abs = v.abs();
    if sci_outside && !(1e-6..1e21).contains(&abs) {
        // Go 'e': d[.ddd]e±dd (at least two exponent digits).
        out(&digits[..1]);
        if n > 1 {
            out(".");
            out(&digits[1..]);
        }
        let e = point - 1;
        out(if e < 0 { "e-" } else { "e+" });
        let mut num = [0u8; 8];
        let text = format_exponent(e.unsigned_abs(), &mut num);
        return out(text);
    }
    const ZEROS: &str = "0000000000000000000000000000000000000000";
    let zeros = |mut k: usize, out: &mut dyn FnMut(&str)| {
        while k > 0 {
            let m = k.min(ZEROS.len());
            out(&ZEROS[..m]);
            k -= m;
        }
    };
    if point <= 0 {
        out("0.");
        zeros((-point) as usize, out);
        out(digits);
    } else if point as usize >= n {
        out(digits);
        zeros(point as usize - n, out);
    } else {
        out(&digits[..point as usize]);
        out(".");
        out(&digits[point as usize..]);
    }
}

/// An exponent with at least two digits, as Go writes it.
fn format_exponent(e: u32, buf: &mut [u8; 8]) -> &str {
    let mut i = buf.len();
    let mut e = e;
    loop {
        i -= 1;
        buf[i] = b'0' + (e % 10) as u8;
        e /= 10;
        if e == 0 {
            break;
        }
    }
    if buf.len() - i < 2 {
        i -= 1;
        buf[i] = b'0';
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("00")
}

/// A timestamp in seconds, serialized as an integer when whole (`1`), else as the
/// shortest float (`1435781451.781`), matching Prometheus's output.
pub(crate) struct Ts(pub(crate) i64);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

/// A sample value as Prometheus's JSON writes it (`jsonutil.MarshalFloat`): Go's
/// shortest `'f'` form, or `'e'` below 1e-6 and from 1e21 up. Built on the stack and
/// written straight into the output: a range query's answer can hold millions of
/// points, so no `String` per point.
pub(crate) struct ValueStr(pub(crate) f64);

impl Serialize for ValueStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 48];
        let mut len = 0;
        write_go_float(self.0, true, &mut |part| {
            let end = (len + part.len()).min(buf.len());
            buf[len..end].copy_from_slice(&part.as_bytes()[..end - len]);
            len = end;
        });
        s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or("NaN"))
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

impl Value {
    fn serialize_entries<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("resultType", self.result_type())?;
        match self {
            Value::Scalar(t, v) => m.serialize_entry("result", &Point(*t, *v)),
            Value::String(t, v) => m.serialize_entry("result", &(Ts(*t), v)),
            Value::Vector(samples) => m.serialize_entry("result", &Seq(samples, SampleJson)),
            Value::Matrix(series) => m.serialize_entry("result", &Seq(series, SeriesJson)),
        }
    }
}

impl Serialize for Value {
    /// The `data` object of Prometheus's query API response.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        self.serialize_entries(&mut m)?;
        m.end()
    }
}

impl Serialize for QueryResult {
    /// The `data` object: the value, and `stats` when the query asked for them.
    /// Warnings and infos go beside `data` in the response envelope, which the HTTP
    /// layer writes.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2 + usize::from(self.stats.is_some())))?;
        self.value.serialize_entries(&mut m)?;
        if let Some(stats) = &self.stats {
            m.serialize_entry("stats", stats)?;
        }
        m.end()
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
        assert_eq!(json(1e21), "\"1e+21\"");
    }

    /// The JSON text of a value.
    fn json(v: f64) -> String {
        serde_json::to_string(&ValueStr(v)).unwrap()
    }

    #[test]
    fn values_format_as_prometheus_2_42_writes_them() {
        // Each pair was read from a real Prometheus 2.42 (`vector(<v>)` queries).
        for (v, want) in [
            (1_658_206_780_088_562.2, "1658206780088562.2"), // .25, a tie
            (1_658_206_780_088_562.8, "1658206780088562.8"), // .75, a tie
            (0.3, "0.3"),
            (9007199254740993.0, "9007199254740992"),
            (123456789012345.67, "123456789012345.67"),
            (5e-324, "5e-324"),
            (1e16, "10000000000000000"),
            (1.5e17, "150000000000000000"),
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (1e-7, "1e-07"),
            (1.5e-7, "1.5e-07"),
            (1e-6, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (1e100, "1e+100"),
            (1.2345e-300, "1.2345e-300"),
            (-0.000001234, "-0.000001234"),
            (-0.0, "-0"),
            (0.0, "0"),
            (4e9, "4000000000"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(json(v), format!("\"{want}\""), "{v:e}");
        }
        // count_values labels always use 'f' (read from Prometheus 2.42 as well).
        assert_eq!(format_value(1e22), "10000000000000000000000");
        assert_eq!(format_value(1_658_206_780_088_562.2), "1658206780088562.2");
    }

    #[test]
    fn formatted_values_read_back_exactly() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            let text = json(v);
            let text = text.trim_matches('"');
            let back: f64 = match text {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                t => t.parse().unwrap(),
            };
            assert!(
                back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()),
                "{v:e} -> {text}"
            );
            let f: f64 = format_value(v).replace("Inf", "inf").parse().unwrap();
            assert!(f.to_bits() == v.to_bits() || v.is_nan(), "{v:e}");
            // Positional text never has an exponent; JSON uses one only outside
            // [1e-6, 1e21).
            assert!(!format_value(v).contains('e'));
            let abs = v.abs();
            if v.is_finite() && v != 0.0 {
                assert_eq!(
                    text.contains('e'),
                    !(1e-6..1e21).contains(&abs),
                    "{v:e} -> {text}"
                );
            }
        }
    }
}
