//! Aggregation operators (`sum`, `avg`, `count`, `group`, `min`, `max`, `stddev`,
//! `stdvar`, `quantile`, `topk`, `bottomk`, `count_values`, `limitk`, `limit_ratio`)
//! with `by`/`without` grouping.
//!
//! Groups depend on labels only and are built once; each step then folds the values
//! present at that step, in input order, as Prometheus's aggregation does.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::eval::{Evaluator, Steps, VSeries, Val};
use super::kernels::{kahan_sum, mean, quantile, variance};
use super::value::format_value;
use super::{QueryError, Result};
use crate::storage::labels::is_valid_label_name;
use crate::storage::{Label, LabelSet, METRIC_NAME};

/// The group labels of a series under `by`/`without`.
fn group_labels(labels: &LabelSet, modifier: Option<&LabelModifier>) -> LabelSet {
    match modifier {
        Some(LabelModifier::Include(by)) => LabelSet::from_sorted(
            labels
                .iter()
                .filter(|l| by.labels.iter().any(|n| n == &*l.name))
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Exclude(without)) => LabelSet::from_sorted(
            labels
                .iter()
                .filter(|l| {
                    &*l.name != METRIC_NAME && !without.labels.iter().any(|n| n == &*l.name)
                })
                .cloned()
                .collect(),
        ),
        None => LabelSet::default(),
    }
}

fn scalar_param(ev: &mut Evaluator<'_>, p: &Expr, steps: Steps) -> Result<Vec<f64>> {
    match ev.eval(p, steps)? {
        Val::Scalar(v) => Ok(v),
        _ => Err(QueryError::BadData(
            "expected scalar parameter for aggregation".into(),
        )),
    }
}

pub(crate) fn eval_aggregate(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    steps: Steps,
) -> Result<Val> {
    let op = a.op.id();
    let name = a.op.to_string();
    // Parameters are evaluated first, as in Prometheus.
    let mut param = None;
    let mut str_param = None;
    if let Some(p) = &a.param {
        if op == token::T_COUNT_VALUES {
            match ev.eval(p, steps)? {
                Val::Str(s) => str_param = Some(s),
                _ => {
                    return Err(QueryError::BadData(
                        "expected string parameter for count_values".into(),
                    ))
                }
            }
        } else {
            param = Some(scalar_param(ev, p, steps)?);
        }
    }
    let input = match ev.eval(&a.expr, steps)? {
        Val::Vector(v) => v,
        _ => {
            return Err(QueryError::BadData(format!(
                "expected instant vector in aggregation {name}"
            )))
        }
    };
    let modifier = a.modifier.as_ref();
    match op {
        token::T_TOPK | token::T_BOTTOMK | token::T_LIMITK | token::T_LIMIT_RATIO => {
            let param = param.unwrap_or_default();
            return select_k(ev, op, input, &param, modifier, steps);
        }
        token::T_COUNT_VALUES => {
            let label = str_param.unwrap_or_default();
            if !is_valid_label_name(&label) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {}",
                    super::eval::go_quote(&label)
                )));
            }
            return count_values(input, &label, modifier, steps);
        }
        _ => {}
    }
    if op == token::T_QUANTILE {
        if let Some(p) = &param {
            if let Some(q) = p.iter().find(|q| q.is_nan() || **q < 0.0 || **q > 1.0) {
                ev.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        go_float(*q)
                    ),
                    "quantile",
                );
            }
        }
    }
    // Groups in order of first appearance. With delayed name removal the grouping
    // sees the name even when it is to be dropped (`sum by (__name__)` partitions by
    // it), and the group drops it at the end if any member does.
    let mut groups: Vec<(LabelSet, Vec<usize>)> = Vec::new();
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let g = group_labels(&s.labels, modifier);
        match index.get(&g) {
            Some(&gi) => groups[gi].1.push(i),
            None => {
                index.insert(g.clone(), groups.len());
                groups.push((g, vec![i]));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut buf = Vec::new();
    for (labels, members) in groups {
        ev.check_deadline()?;
        let mut vals = vec![None; steps.n];
        for (i, slot) in vals.iter_mut().enumerate() {
            buf.clear();
            buf.extend(members.iter().filter_map(|&m| input[m].vals[i]));
            if buf.is_empty() {
                continue;
            }
            *slot = Some(match op {
                token::T_SUM => kahan_sum(&buf),
                token::T_AVG => mean(&buf),
                token::T_COUNT => buf.len() as f64,
                token::T_GROUP => 1.0,
                token::T_MIN => fold_min_max(&buf, |acc, v| acc > v),
                token::T_MAX => fold_min_max(&buf, |acc, v| acc < v),
                token::T_STDVAR => variance(&buf),
                token::T_STDDEV => variance(&buf).sqrt(),
                token::T_QUANTILE => {
                    let q = param.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                    quantile(q, &mut buf)
                }
                _ => {
                    return Err(QueryError::Unsupported(format!(
                        "aggregation {name} is not supported"
                    )))
                }
            });
        }
        let drop_name = members.iter().any(|&m| input[m].drop_name);
        out.push(VSeries {
            labels,
            drop_name,
            vals,
        });
    }
    Ok(Val::Vector(out))
}

/// min/max as Prometheus folds them: a NaN accumulator is replaced by any value, so
/// the result is NaN only when every input is NaN.
fn fold_min_max(values: &[f64], replace: impl Fn(f64, f64) -> bool) -> f64 {
    let mut acc = values[0];
    for &v in &values[1..] {
        if replace(acc, v) || acc.is_nan() {
            acc = v;
        }
    }
    acc
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`), enough for messages.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let exp = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    if (-4..21).contains(&exp) {
        format!("{v}")
    } else {
        let s = format!("{v:e}");
        // Rust writes `1e21`, Go writes `1e+21`.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    }
}

fn select_k(
    ev: &mut Evaluator<'_>,
    op: u16,
    input: Vec<VSeries>,
    param: &[f64],
    modifier: Option<&LabelModifier>,
    steps: Steps,
) -> Result<Val> {
    for &p in param {
        if p.is_nan() {
            return Err(QueryError::Execution(if op == token::T_LIMIT_RATIO {
                "Ratio value is NaN".into()
            } else {
                "Parameter value is NaN".into()
            }));
        }
    }
    if op == token::T_LIMIT_RATIO && param.iter().any(|r| !(-1.0..=1.0).contains(r)) {
        ev.warn(
            "ratio value should be between -1 and 1".to_string(),
            "limit_ratio",
        );
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let g = group_labels(&s.effective_labels(), modifier);
        match index.get(&g) {
            Some(&gi) => groups[gi].push(i),
            None => {
                index.insert(g, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = vec![vec![false; steps.n]; input.len()];
    // For an instant query, the output order: per group, the selected series sorted.
    let mut order: Vec<usize> = Vec::new();
    for members in &groups {
        for (i, &p) in param.iter().enumerate().take(steps.n) {
            let present: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&m| input[m].vals[i].is_some())
                .collect();
            let chosen: Vec<usize> = match op {
                token::T_TOPK | token::T_BOTTOMK => {
                    let k = if p >= 9.2e18 { i64::MAX } else { p as i64 };
                    if k < 1 {
                        continue;
                    }
                    let k = usize::try_from(k).unwrap_or(usize::MAX);
                    let mut c = present;
                    let top = op == token::T_TOPK;
                    // By value (NaN always last), ties in input order: a total order, so
                    // selecting the k best and sorting only those gives exactly what a
                    // stable sort of all would.
                    let rank = |&a: &usize, &b: &usize| {
                        let (x, y) = (
                            input[a].vals[i].unwrap_or(f64::NAN),
                            input[b].vals[i].unwrap_or(f64::NAN),
                        );
                        let by_value = match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if top => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                            _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                        };
                        by_value.then(a.cmp(&b))
                    };
                    if k < c.len() {
                        c.select_nth_unstable_by(k - 1, rank);
                        c.truncate(k);
                    }
                    c.sort_unstable_by(rank);
                    c
                }
                token::T_LIMITK => {
                    let k = if p >= 9.2e18 {
                        usize::MAX
                    } else {
                        p as i64 as usize
                    };
                    if (p as i64) < 1 {
                        continue;
                    }
                    present.into_iter().take(k).collect()
                }
                _ => {
                    // limit_ratio: a stable pseudo-random sample by series hash.
                    present
                        .into_iter()
                        .filter(|&m| {
                            let h = input[m].labels.series_hash() as f64 / u64::MAX as f64;
                            if p >= 0.0 {
                                h < p
                            } else {
                                h >= 1.0 + p
                            }
                        })
                        .collect()
                }
            };
            for &c in &chosen {
                keep[c][i] = true;
            }
            if i == 0 {
                order.extend(chosen);
            }
        }
    }
    let mut input: Vec<Option<VSeries>> = input.into_iter().map(Some).collect();
    let mut out = Vec::new();
    let mut take = |m: usize, out: &mut Vec<VSeries>| {
        if let Some(mut s) = input[m].take() {
            for (slot, k) in s.vals.iter_mut().zip(&keep[m]) {
                if !k {
                    *slot = None;
                }
            }
            if s.vals.iter().any(Option::is_some) {
                out.push(s);
            }
        }
    };
    for &m in &order {
        take(m, &mut out);
    }
    for m in 0..keep.len() {
        take(m, &mut out);
    }
    Ok(Val::Vector(out))
}

fn count_values(
    input: Vec<VSeries>,
    label: &str,
    modifier: Option<&LabelModifier>,
    steps: Steps,
) -> Result<Val> {
    let mut out: Vec<VSeries> = Vec::new();
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    let groups: Vec<LabelSet> = input
        .iter()
        .map(|s| group_labels(&s.effective_labels(), modifier))
        .collect();
    for (s, g) in input.iter().zip(&groups) {
        for (i, v) in s.vals.iter().enumerate() {
            let Some(v) = v else { continue };
            let mut labels: Vec<Label> = g.iter().filter(|l| &*l.name != label).cloned().collect();
            labels.push(Label {
                name: label.into(),
                value: format_value(*v).into(),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let ls = LabelSet::from_sorted(labels);
            let idx = match index.get(&ls) {
                Some(&x) => x,
                None => {
                    out.push(VSeries {
                        labels: ls.clone(),
                        drop_name: false,
                        vals: vec![None; steps.n],
                    });
                    index.insert(ls, out.len() - 1);
                    out.len() - 1
                }
            };
            let slot = &mut out[idx].vals[i];
            *slot = Some(slot.unwrap_or(0.0) + 1.0);
        }
    }
    Ok(Val::Vector(out))
}
