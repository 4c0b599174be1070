//! `info(v, [selector])` (experimental in Prometheus): enriches each series with the
//! data labels of info series (`target_info` unless the selector names others) that
//! share its identifying labels, `instance` and `job`.
//!
//! Rules followed: a series that is itself an info metric of the selection is left
//! as is; data labels already on the series win; with data-label matchers only those
//! labels are added, and a series with no matching info series is kept unchanged only
//! when every data matcher accepts the empty string, otherwise dropped.

use std::collections::HashMap;

use promql_parser::label::{Matcher as PMatcher, Matchers};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::math::first;
use super::vector_arg;
use crate::promql::eval::{Evaluator, Steps, VSeries, Val};
use crate::promql::{QueryError, Result};
use crate::storage::{Label, LabelSet, METRIC_NAME};

const IDENTIFYING: [&str; 2] = ["instance", "job"];

pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Option<Val>> {
    if name != "info" {
        return Ok(None);
    }
    let base = vector_arg(ev, first(args)?, steps)?;
    let selector = match args.get(1) {
        None => None,
        Some(Expr::VectorSelector(vs)) => Some(vs.clone()),
        Some(_) => {
            return Err(QueryError::BadData(
                "expected a label selector as the second argument of info()".into(),
            ))
        }
    };
    let mut name_ms: Vec<PMatcher> = Vec::new();
    let mut data_ms: Vec<PMatcher> = Vec::new();
    if let Some(vs) = &selector {
        if let Some(n) = &vs.name {
            name_ms.push(PMatcher::new(
                promql_parser::label::MatchOp::Equal,
                METRIC_NAME,
                n,
            ));
        }
        for m in &vs.matchers.matchers {
            if m.name == crate::promql::durations::INFO_SELECTOR_LABEL {
                continue;
            }
            if m.name == METRIC_NAME {
                name_ms.push(m.clone());
            } else {
                data_ms.push(m.clone());
            }
        }
    }
    let positive = |m: &PMatcher| {
        matches!(
            m.op,
            promql_parser::label::MatchOp::Equal | promql_parser::label::MatchOp::Re(_)
        )
    };
    if name_ms.is_empty() {
        name_ms.push(PMatcher::new(
            promql_parser::label::MatchOp::Equal,
            METRIC_NAME,
            "target_info",
        ));
    }
    let has_positive = name_ms.iter().any(positive);
    let mut select_ms = name_ms.clone();
    if !has_positive {
        // Only negative name matchers: the candidates are still info metrics.
        let re =
            regex::Regex::new("^(?:.+_info)$").map_err(|e| QueryError::Execution(e.to_string()))?;
        select_ms.push(PMatcher::new(
            promql_parser::label::MatchOp::Re(re),
            METRIC_NAME,
            ".+_info",
        ));
    }
    // The info series are read as of the base samples' time: the `@`/offset of the
    // base expression's selector or subquery applies to them too.
    let (at, offset) = reference_shift(first(args)?);
    let info_sel = VectorSelector {
        name: None,
        matchers: Matchers {
            matchers: select_ms,
            or_matchers: vec![],
        },
        offset: match offset {
            0 => None,
            o if o > 0 => Some(Offset::Pos(std::time::Duration::from_millis(o as u64))),
            o => Some(Offset::Neg(std::time::Duration::from_millis(
                o.unsigned_abs(),
            ))),
        },
        at,
    };
    // Sample timestamps, not values: of several series of one info metric with the
    // same identifying labels, the newest sample wins.
    let infos = match ev.eval_vector_selector(&info_sel, steps, true)? {
        Val::Vector(v) => v,
        _ => vec![],
    };
    // Info series by identifying labels.
    let mut by_id: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
    for (k, s) in infos.iter().enumerate() {
        if !data_ms
            .iter()
            .all(|m| m.is_match(s.labels.get(&m.name).unwrap_or("")))
        {
            continue;
        }
        by_id.entry(id_key(&s.labels)).or_default().push(k);
    }
    let accepts_empty = data_ms.iter().all(|m| m.is_match(""));
    let mut out: Vec<VSeries> = Vec::new();
    let mut index: HashMap<(LabelSet, bool), usize> = HashMap::new();
    for s in base {
        // A base series that is itself one of the selected info metrics is left as is.
        let is_info = has_positive
            && s.labels
                .get(METRIC_NAME)
                .is_some_and(|n| name_ms.iter().all(|m| m.is_match(n)));
        if is_info {
            out.push(s);
            continue;
        }
        let candidates = by_id.get(&id_key(&s.labels));
        for i in 0..steps.n {
            let Some(v) = s.vals[i] else { continue };
            let mut present: Vec<usize> = Vec::new();
            for &k in candidates.map(Vec::as_slice).unwrap_or(&[]) {
                let Some(t) = infos[k].vals[i] else { continue };
                let name = infos[k].labels.get(METRIC_NAME);
                match present
                    .iter()
                    .position(|&p| infos[p].labels.get(METRIC_NAME) == name)
                {
                    Some(p) if infos[present[p]].vals[i].is_some_and(|pt| pt < t) => present[p] = k,
                    Some(_) => {}
                    None => present.push(k),
                }
            }
            if present.is_empty() && !accepts_empty {
                continue;
            }
            let mut labels: Vec<Label> = s.labels.to_vec();
            let own = labels.len();
            for &k in &present {
                for l in infos[k].labels.iter() {
                    let n = &*l.name;
                    if n == METRIC_NAME || IDENTIFYING.contains(&n) {
                        continue;
                    }
                    if !data_ms.is_empty() && !data_ms.iter().any(|m| m.name == n) {
                        continue;
                    }
                    match labels.iter().position(|x| &*x.name == n) {
                        // The series' own labels win over info labels.
                        Some(p) if p < own => {}
                        Some(p) if labels[p].value != l.value => {
                            return Err(QueryError::Execution(format!(
                                "conflicting label: {n} has values {:?} and {:?} in different info metrics",
                                &*labels[p].value, &*l.value
                            )));
                        }
                        Some(_) => {}
                        None => labels.push(l.clone()),
                    }
                }
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let key = (LabelSet::from_sorted(labels), s.drop_name);
            let idx = match index.get(&key) {
                Some(&idx) => idx,
                None => {
                    out.push(VSeries {
                        labels: key.0.clone(),
                        drop_name: s.drop_name,
                        vals: vec![None; steps.n],
                    });
                    index.insert(key, out.len() - 1);
                    out.len() - 1
                }
            };
            out[idx].vals[i] = Some(v);
        }
    }
    Ok(Some(Val::Vector(out)))
}

/// The `@` and total offset that shift the base expression's samples in time: from
/// its first selector or subquery, an inner `@` replacing the outer one and offsets
/// adding up.
fn reference_shift(e: &Expr) -> (Option<AtModifier>, i64) {
    use crate::promql::eval::offset_ms;
    match e {
        Expr::VectorSelector(vs) => (vs.at.clone(), offset_ms(&vs.offset)),
        Expr::MatrixSelector(ms) => (ms.vs.at.clone(), offset_ms(&ms.vs.offset)),
        Expr::Subquery(sq) => {
            let (inner_at, inner_off) = reference_shift(&sq.expr);
            match inner_at {
                Some(at) => (Some(at), inner_off),
                None => (sq.at.clone(), offset_ms(&sq.offset) + inner_off),
            }
        }
        Expr::Paren(p) => reference_shift(&p.expr),
        Expr::Unary(u) => reference_shift(&u.expr),
        Expr::Aggregate(a) => reference_shift(&a.expr),
        Expr::Binary(b) => reference_shift(&b.lhs),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| reference_shift(a))
            .find(|r| r.0.is_some() || r.1 != 0)
            .unwrap_or((None, 0)),
        _ => (None, 0),
    }
}

fn id_key(labels: &LabelSet) -> Vec<String> {
    IDENTIFYING
        .iter()
        .map(|n| labels.get(n).unwrap_or("").to_string())
        .collect()
}
