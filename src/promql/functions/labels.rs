//! Label-rewriting and ordering functions: `label_replace`, `label_join`, `sort`,
//! `sort_desc`, `sort_by_label(_desc)`, and `absent` (with the label set it builds
//! from the selector's equality matchers).

use std::cmp::Ordering;
use std::collections::HashMap;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use regex::Regex;

use super::math::{first, nth};
use super::{string_arg, vector_arg};
use crate::promql::eval::{dup_labelset, go_quote, set_label, Evaluator, Steps, VSeries, Val};
use crate::promql::{QueryError, Result};
use crate::storage::labels::is_valid_label_name;
use crate::storage::{LabelSet, METRIC_NAME};

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    let v = match name {
        "label_replace" => label_replace(ev, args, steps)?,
        "label_join" => label_join(ev, args, steps)?,
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut v = vector_arg(ev, first(args)?, steps)?;
            let mut by = Vec::new();
            for a in args.iter().skip(1) {
                by.push(string_arg(ev, a, steps)?);
            }
            if steps.n > 1 {
                ev.warn(
                    "sort is ineffective for range queries since results are always ordered by labels".into(),
                    name,
                );
                return Ok(Some(Val::Vector(v)));
            }
            match name {
                "sort" | "sort_desc" => {
                    let desc = name == "sort_desc";
                    v.sort_by(|a, b| {
                        let (x, y) = (
                            a.vals.first().copied().flatten().unwrap_or(f64::NAN),
                            b.vals.first().copied().flatten().unwrap_or(f64::NAN),
                        );
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => Ordering::Equal,
                            (true, false) => Ordering::Greater,
                            (false, true) => Ordering::Less,
                            _ if desc => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                            _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                        }
                    });
                }
                _ => {
                    let desc = name == "sort_by_label_desc";
                    v.sort_by(|a, b| {
                        let (la, lb) = (a.effective_labels(), b.effective_labels());
                        let mut o = Ordering::Equal;
                        for l in &by {
                            o = natural_cmp(la.get(l).unwrap_or(""), lb.get(l).unwrap_or(""));
                            if o != Ordering::Equal {
                                break;
                            }
                        }
                        if o == Ordering::Equal {
                            o = la.cmp(&lb);
                        }
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                }
            }
            Val::Vector(v)
        }
        "absent" => {
            let a = first(args)?;
            let v = vector_arg(ev, a, steps)?;
            let mut vals = vec![Some(1.0); steps.n];
            for s in &v {
                for (slot, x) in vals.iter_mut().zip(&s.vals) {
                    if x.is_some() {
                        *slot = None;
                    }
                }
            }
            if vals.iter().all(Option::is_none) {
                return Ok(Some(Val::Vector(vec![])));
            }
            let mut inner = a;
            while let Expr::Paren(p) = inner {
                inner = &p.expr;
            }
            let labels = match inner {
                Expr::VectorSelector(vs) => absent_labels(vs),
                _ => LabelSet::default(),
            };
            Val::Vector(vec![VSeries {
                labels,
                drop_name: false,
                vals,
            }])
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Labels for `absent`: the selector's equality matchers, except the name and any
/// label matched more than once (Prometheus `createLabelsForAbsentFunction`).
pub(crate) fn absent_labels(vs: &VectorSelector) -> LabelSet {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut has: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME || m.name == crate::promql::durations::MODE_LABEL {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !has.contains(&m.name.as_str()) {
            pairs.push((m.name.clone(), m.value.clone()));
            has.push(&m.name);
        } else {
            pairs.retain(|(n, _)| *n != m.name);
        }
    }
    LabelSet::from_pairs(pairs)
}

/// Natural order: digit runs compare by number, everything else by character.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Checks that relabelled series do not collide at any step.
fn check_collisions(series: &[VSeries]) -> Result<()> {
    let mut seen: HashMap<LabelSet, usize> = HashMap::new();
    for (i, s) in series.iter().enumerate() {
        let l = s.effective_labels();
        if let Some(&j) = seen.get(&l) {
            if s.vals
                .iter()
                .zip(&series[j].vals)
                .any(|(a, b)| a.is_some() && b.is_some())
            {
                return Err(dup_labelset());
            }
        } else {
            seen.insert(l, i);
        }
    }
    Ok(())
}

fn label_replace(ev: &mut Evaluator<'_>, args: &[&Expr], steps: Steps) -> Result<Val> {
    let v = vector_arg(ev, first(args)?, steps)?;
    let dst = string_arg(ev, nth(args, 1)?, steps)?;
    let repl = string_arg(ev, nth(args, 2)?, steps)?;
    let src = string_arg(ev, nth(args, 3)?, steps)?;
    let re_src = string_arg(ev, nth(args, 4)?, steps)?;
    let re = Regex::new(&format!("^(?s:{re_src})$")).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {re_src}"
        ))
    })?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let val = s.labels.get(&src).unwrap_or("").to_string();
        if let Some(caps) = re.captures(&val) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            s.labels = set_label(&s.labels, &dst, Some(&res));
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        out.push(s);
    }
    check_collisions(&out)?;
    Ok(Val::Vector(out))
}

fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr], steps: Steps) -> Result<Val> {
    let v = vector_arg(ev, first(args)?, steps)?;
    let dst = string_arg(ev, nth(args, 1)?, steps)?;
    let sep = string_arg(ev, nth(args, 2)?, steps)?;
    let mut srcs = Vec::new();
    for a in args.iter().skip(3) {
        let s = string_arg(ev, a, steps)?;
        if !is_valid_label_name(&s) {
            return Err(QueryError::Execution(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
        srcs.push(s);
    }
    if !is_valid_label_name(&dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {}",
            go_quote(&dst)
        )));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
        let res = joined.join(&sep);
        s.labels = set_label(&s.labels, &dst, Some(&res));
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
        out.push(s);
    }
    check_collisions(&out)?;
    Ok(Val::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("4m5", "4m600"), Ordering::Less);
        assert_eq!(natural_cmp("4m1000", "4m600"), Ordering::Greater);
        assert_eq!(natural_cmp("2", "10"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
    }
}
