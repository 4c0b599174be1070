//! Value-mapping functions: math and trigonometry, `clamp*`, `round`, `sgn`, the date
//! functions (UTC, as Prometheus), and the scalar/vector conversions `time`, `vector`,
//! `scalar`, `pi` and `timestamp`.

use chrono::{Datelike, TimeZone, Timelike, Utc};
use promql_parser::parser::Expr;

use super::{map_values, scalar_arg, vector_arg};
use crate::promql::eval::{Evaluator, Steps, VSeries, Val};
use crate::promql::{QueryError, Result};
use crate::storage::LabelSet;

fn unary(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                // 0 stays 0 (and -0 stays -0), NaN stays NaN.
                v
            }
        },
        _ => return None,
    })
}

/// Date parts of a Unix time in seconds, in UTC.
fn date_part(name: &str) -> Option<fn(f64) -> f64> {
    fn dt(v: f64) -> Option<chrono::DateTime<Utc>> {
        if !v.is_finite() {
            return None;
        }
        Utc.timestamp_opt(v.floor() as i64, 0).single()
    }
    Some(match name {
        "minute" => |v| dt(v).map_or(f64::NAN, |d| d.minute() as f64),
        "hour" => |v| dt(v).map_or(f64::NAN, |d| d.hour() as f64),
        "day_of_week" => |v| dt(v).map_or(f64::NAN, |d| d.weekday().num_days_from_sunday() as f64),
        "day_of_month" => |v| dt(v).map_or(f64::NAN, |d| d.day() as f64),
        "day_of_year" => |v| dt(v).map_or(f64::NAN, |d| d.ordinal() as f64),
        "month" => |v| dt(v).map_or(f64::NAN, |d| d.month() as f64),
        "year" => |v| dt(v).map_or(f64::NAN, |d| d.year() as f64),
        "days_in_month" => |v| {
            dt(v).map_or(f64::NAN, |d| {
                let (y, m) = (d.year(), d.month());
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                match (
                    chrono::NaiveDate::from_ymd_opt(y, m, 1),
                    chrono::NaiveDate::from_ymd_opt(ny, nm, 1),
                ) {
                    (Some(a), Some(b)) => (b - a).num_days() as f64,
                    _ => f64::NAN,
                }
            })
        },
        _ => return None,
    })
}

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    if let Some(f) = unary(name) {
        let Some(a) = args.first() else {
            return Ok(None);
        };
        return Ok(Some(Val::Vector(map_values(vector_arg(ev, a, steps)?, f))));
    }
    if let Some(f) = date_part(name) {
        return Ok(Some(match args.first() {
            Some(a) => Val::Vector(map_values(vector_arg(ev, a, steps)?, f)),
            None => Val::Vector(vec![VSeries {
                labels: LabelSet::default(),
                drop_name: false,
                vals: (0..steps.n)
                    .map(|i| Some(f(steps.t(i) as f64 / 1000.0)))
                    .collect(),
            }]),
        }));
    }
    let v = match name {
        "time" => Val::Scalar((0..steps.n).map(|i| steps.t(i) as f64 / 1000.0).collect()),
        "pi" => Val::Scalar(vec![std::f64::consts::PI; steps.n]),
        // Query-shape functions (experimental in Prometheus): seconds.
        "step" => Val::Scalar(vec![ev.q_step as f64 / 1000.0; steps.n]),
        "range" => Val::Scalar(vec![(ev.q_end - ev.q_start) as f64 / 1000.0; steps.n]),
        "start" => Val::Scalar(vec![ev.q_start as f64 / 1000.0; steps.n]),
        "end" => Val::Scalar(vec![ev.q_end as f64 / 1000.0; steps.n]),
        "min_of" | "max_of" => {
            let mut acc: Option<Vec<f64>> = None;
            for a in args {
                let v = scalar_arg(ev, a, steps)?;
                acc = Some(match acc {
                    None => v,
                    Some(prev) => prev
                        .into_iter()
                        .zip(v)
                        .map(|(x, y)| {
                            if name == "min_of" {
                                go_min(x, y)
                            } else {
                                go_max(x, y)
                            }
                        })
                        .collect(),
                });
            }
            Val::Scalar(acc.unwrap_or_else(|| vec![f64::NAN; steps.n]))
        }
        "vector" => {
            let s = scalar_arg(ev, first(args)?, steps)?;
            Val::Vector(vec![VSeries {
                labels: LabelSet::default(),
                drop_name: false,
                vals: s.into_iter().map(Some).collect(),
            }])
        }
        "scalar" => {
            let v = vector_arg(ev, first(args)?, steps)?;
            let out = (0..steps.n)
                .map(|i| {
                    let mut it = v.iter().filter_map(|s| s.vals[i]);
                    match (it.next(), it.next()) {
                        (Some(x), None) => x,
                        _ => f64::NAN,
                    }
                })
                .collect();
            Val::Scalar(out)
        }
        "timestamp" => {
            let a = first(args)?;
            // On a selector, the timestamp of the sample found; otherwise the step time.
            let mut inner = a;
            while let Expr::Paren(p) = inner {
                inner = &p.expr;
            }
            let series = match inner {
                Expr::VectorSelector(vs) => match ev.eval_vector_selector(vs, steps, true)? {
                    Val::Vector(v) => v,
                    _ => vec![],
                },
                _ => {
                    let mut v = vector_arg(ev, a, steps)?;
                    for s in &mut v {
                        for (i, slot) in s.vals.iter_mut().enumerate() {
                            if slot.is_some() {
                                *slot = Some(steps.t(i) as f64 / 1000.0);
                            }
                        }
                    }
                    v
                }
            };
            Val::Vector(
                series
                    .into_iter()
                    .map(|mut s| {
                        s.drop_name = true;
                        s
                    })
                    .collect(),
            )
        }
        "clamp" => {
            let v = vector_arg(ev, first(args)?, steps)?;
            let lo = scalar_arg(ev, nth(args, 1)?, steps)?;
            let hi = scalar_arg(ev, nth(args, 2)?, steps)?;
            Val::Vector(per_step(v, |i, x| {
                let (lo, hi) = (lo[i], hi[i]);
                if hi < lo {
                    return None;
                }
                if lo.is_nan() || hi.is_nan() {
                    return Some(f64::NAN);
                }
                Some(go_max(lo, go_min(hi, x)))
            }))
        }
        "clamp_min" => {
            let v = vector_arg(ev, first(args)?, steps)?;
            let lo = scalar_arg(ev, nth(args, 1)?, steps)?;
            Val::Vector(per_step(v, |i, x| Some(go_max(lo[i], x))))
        }
        "clamp_max" => {
            let v = vector_arg(ev, first(args)?, steps)?;
            let hi = scalar_arg(ev, nth(args, 1)?, steps)?;
            Val::Vector(per_step(v, |i, x| Some(go_min(hi[i], x))))
        }
        "round" => {
            let v = vector_arg(ev, first(args)?, steps)?;
            let to = match args.get(1) {
                Some(a) => scalar_arg(ev, a, steps)?,
                None => vec![1.0; steps.n],
            };
            Val::Vector(per_step(v, |i, x| {
                // Prometheus: floor(v * 1/to + 0.5) / (1/to), rounding half up.
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            }))
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Maps values with access to the step index; drops the name; series left with no
/// value are removed.
fn per_step(series: Vec<VSeries>, f: impl Fn(usize, f64) -> Option<f64>) -> Vec<VSeries> {
    series
        .into_iter()
        .filter_map(|mut s| {
            for (i, slot) in s.vals.iter_mut().enumerate() {
                if let Some(x) = *slot {
                    *slot = f(i, x);
                }
            }
            s.drop_name = true;
            s.vals.iter().any(Option::is_some).then_some(s)
        })
        .collect()
}

pub(super) fn first<'a>(args: &[&'a Expr]) -> Result<&'a Expr> {
    nth(args, 0)
}

pub(super) fn nth<'a>(args: &[&'a Expr], i: usize) -> Result<&'a Expr> {
    args.get(i)
        .copied()
        .ok_or_else(|| QueryError::BadData("missing function argument".into()))
}
