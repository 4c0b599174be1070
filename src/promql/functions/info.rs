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
use promql_parser::parser::{Expr, VectorSelector};

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
            if m.name == METRIC_NAME {
                name_ms.push(m.clone());
            } else {
                data_ms.push(m.clone());
            }
        }
    }
    if name_ms.is_empty() {
        name_ms.push(PMatcher::new(
            promql_parser::label::MatchOp::Equal,
            METRIC_NAME,
            "target_info",
        ));
    }
    let info_sel = VectorSelector {
        name: None,
        matchers: Matchers {
            matchers: name_ms.clone(),
            or_matchers: vec![],
        },
        offset: None,
        at: None,
    };
    let infos = match ev.eval_vector_selector(&info_sel, steps, false)? {
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
        let is_info = s
            .labels
            .get(METRIC_NAME)
            .is_some_and(|n| name_ms.iter().all(|m| m.is_match(n)));
        if is_info {
            out.push(s);
            continue;
        }
        let candidates = by_id.get(&id_key(&s.labels));
        for i in 0..steps.n {
            let Some(v) = s.vals[i] else { continue };
            let present: Vec<usize> = candidates
                .map(|c| {
                    c.iter()
                        .copied()
                        .filter(|&k| infos[k].vals[i].is_some())
                        .collect()
                })
                .unwrap_or_default();
            if present.is_empty() && !accepts_empty {
                continue;
            }
            let mut labels: Vec<Label> = s.labels.to_vec();
            for &k in &present {
                for l in infos[k].labels.iter() {
                    let n = &*l.name;
                    if n == METRIC_NAME || IDENTIFYING.contains(&n) {
                        continue;
                    }
                    if !data_ms.is_empty() && !data_ms.iter().any(|m| m.name == n) {
                        continue;
                    }
                    if labels.iter().any(|x| &*x.name == n) {
                        continue;
                    }
                    labels.push(l.clone());
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

fn id_key(labels: &LabelSet) -> Vec<String> {
    IDENTIFYING
        .iter()
        .map(|n| labels.get(n).unwrap_or("").to_string())
        .collect()
}
