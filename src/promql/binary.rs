//! Binary operators: arithmetic, comparison (with and without `bool`), `atan2`, and the
//! set operators, with Prometheus's vector matching (`on`/`ignoring`,
//! `group_left`/`group_right`) and its errors for ambiguous matches.
//!
//! Matching signatures depend on labels only, so they are computed once per series;
//! the per-step work is a hash lookup.

use std::collections::HashMap;

use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{drop_name, labels_string, Evaluator, Steps, VSeries, Val};
use super::{QueryError, Result};
use crate::storage::{Label, LabelSet, METRIC_NAME};

/// Applies a float operator. Returns the value and whether a comparison kept it.
pub(crate) fn apply_op(op: TokenType, l: f64, r: f64) -> Result<(f64, bool)> {
    let id = op.id();
    Ok(match id {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        // Go's math.Mod: the result takes the sign of the dividend, like Rust's %.
        token::T_MOD => (l % r, true),
        token::T_POW => (l.powf(r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => {
            return Err(QueryError::BadData(format!(
                "operator \"{op}\" not allowed between these operand types"
            )))
        }
    })
}

fn is_comparison(op: TokenType) -> bool {
    op.is_comparison_operator()
}

fn is_set(op: TokenType) -> bool {
    matches!(op.id(), token::T_LAND | token::T_LOR | token::T_LUNLESS)
}

pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &BinaryExpr, steps: Steps) -> Result<Val> {
    let lhs = ev.eval(&b.lhs, steps)?;
    let rhs = ev.eval(&b.rhs, steps)?;
    let default_mod = BinModifier::default();
    let modifier = b.modifier.as_ref().unwrap_or(&default_mod);
    let has_fill = modifier.fill_values.lhs.is_some() || modifier.fill_values.rhs.is_some();
    let return_bool = modifier.return_bool;
    let op = b.op;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let mut out = Vec::with_capacity(l.len());
            for (x, y) in l.into_iter().zip(r) {
                let (v, keep) = apply_op(op, x, y)?;
                out.push(if is_comparison(op) {
                    if keep {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    v
                });
            }
            Ok(Val::Scalar(out))
        }
        (Val::Vector(l), Val::Scalar(r)) => {
            vector_scalar(op, l, &r, false, return_bool).map(Val::Vector)
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            vector_scalar(op, r, &l, true, return_bool).map(Val::Vector)
        }
        (Val::Vector(l), Val::Vector(r)) => {
            if is_set(op) {
                if has_fill {
                    return Err(QueryError::BadData(
                        "fill modifiers are not allowed with set operators".into(),
                    ));
                }
                Ok(Val::Vector(set_op(op, l, r, modifier, steps)))
            } else {
                vector_vector(ev, op, l, r, modifier, steps).map(Val::Vector)
            }
        }
        _ => Err(QueryError::BadData(
            "binary expression must contain only scalar and instant vector types".into(),
        )),
    }
}

fn vector_scalar(
    op: TokenType,
    vec: Vec<VSeries>,
    scalar: &[f64],
    scalar_left: bool,
    return_bool: bool,
) -> Result<Vec<VSeries>> {
    let mut out = Vec::with_capacity(vec.len());
    let comparison = is_comparison(op);
    for mut s in vec {
        let mut any = false;
        for (slot, &sv) in s.vals.iter_mut().zip(scalar) {
            if let Some(x) = *slot {
                let (l, r) = if scalar_left { (sv, x) } else { (x, sv) };
                let (mut v, keep) = apply_op(op, l, r)?;
                // A filtering comparison keeps the vector's own value.
                if comparison && scalar_left {
                    v = r;
                }
                *slot = if return_bool {
                    Some(if keep { 1.0 } else { 0.0 })
                } else if keep {
                    Some(v)
                } else {
                    None
                };
                any |= slot.is_some();
            }
        }
        if !comparison || return_bool {
            s.drop_name = true;
        }
        if any {
            out.push(s);
        }
    }
    Ok(out)
}

/// The matching signature of a series: the `on` labels, or all labels but the
/// `ignoring` ones and the name.
fn signature(labels: &LabelSet, matching: Option<&LabelModifier>) -> LabelSet {
    match matching {
        Some(LabelModifier::Include(on)) => LabelSet::from_sorted(
            labels
                .iter()
                .filter(|l| on.labels.iter().any(|n| n == &*l.name))
                .cloned()
                .collect(),
        ),
        Some(LabelModifier::Exclude(ign)) => LabelSet::from_sorted(
            labels
                .iter()
                .filter(|l| &*l.name != METRIC_NAME && !ign.labels.iter().any(|n| n == &*l.name))
                .cloned()
                .collect(),
        ),
        None => drop_name(labels),
    }
}

fn set_op(
    op: TokenType,
    lhs: Vec<VSeries>,
    rhs: Vec<VSeries>,
    modifier: &BinModifier,
    steps: Steps,
) -> Vec<VSeries> {
    let matching = modifier.matching.as_ref();
    let lsig: Vec<LabelSet> = lhs
        .iter()
        .map(|s| signature(&s.effective_labels(), matching))
        .collect();
    let rsig: Vec<LabelSet> = rhs
        .iter()
        .map(|s| signature(&s.effective_labels(), matching))
        .collect();
    match op.id() {
        token::T_LAND | token::T_LUNLESS => {
            let and = op.id() == token::T_LAND;
            // Per signature, the steps at which some rhs series has a value.
            let mut present: HashMap<&LabelSet, Vec<bool>> = HashMap::new();
            for (s, sig) in rhs.iter().zip(&rsig) {
                let p = present.entry(sig).or_insert_with(|| vec![false; steps.n]);
                for (x, v) in p.iter_mut().zip(&s.vals) {
                    *x |= v.is_some();
                }
            }
            let mut out = Vec::new();
            for (mut s, sig) in lhs.into_iter().zip(&lsig) {
                let p = present.get(sig);
                for (i, slot) in s.vals.iter_mut().enumerate() {
                    let m = p.is_some_and(|p| p[i]);
                    if m != and {
                        *slot = None;
                    }
                }
                if s.vals.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
            out
        }
        _ => {
            // or: all of lhs, plus rhs series at steps where no lhs series of the same
            // signature has a value.
            let mut present: HashMap<&LabelSet, Vec<bool>> = HashMap::new();
            for (s, sig) in lhs.iter().zip(&lsig) {
                let p = present.entry(sig).or_insert_with(|| vec![false; steps.n]);
                for (x, v) in p.iter_mut().zip(&s.vals) {
                    *x |= v.is_some();
                }
            }
            let mut extra = Vec::new();
            for (mut s, sig) in rhs.into_iter().zip(&rsig) {
                if let Some(p) = present.get(sig) {
                    for (i, slot) in s.vals.iter_mut().enumerate() {
                        if p[i] {
                            *slot = None;
                        }
                    }
                }
                if s.vals.iter().any(Option::is_some) {
                    extra.push(s);
                }
            }
            let mut out = lhs;
            out.extend(extra);
            out
        }
    }
}

/// The labels of a result series (Prometheus `resultMetric`).
fn result_labels(
    lhs: &LabelSet,
    rhs: &LabelSet,
    card: &VectorMatchCardinality,
    matching: Option<&LabelModifier>,
) -> LabelSet {
    let mut labels: Vec<Label> = lhs.to_vec();
    if matches!(card, VectorMatchCardinality::OneToOne) {
        match matching {
            Some(LabelModifier::Include(on)) => {
                labels.retain(|l| on.labels.iter().any(|n| n == &*l.name));
            }
            Some(LabelModifier::Exclude(ign)) => {
                labels.retain(|l| !ign.labels.iter().any(|n| n == &*l.name));
            }
            None => {}
        }
    }
    if let Some(include) = card.labels() {
        for name in &include.labels {
            labels.retain(|l| &*l.name != name.as_str());
            if let Some(v) = rhs.get(name) {
                labels.push(Label {
                    name: name.as_str().into(),
                    value: v.into(),
                });
            }
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    LabelSet::from_sorted(labels)
}

fn match_group_string(labels: &LabelSet, matching: Option<&LabelModifier>) -> String {
    labels_string(&signature(labels, matching))
}

fn vector_vector(
    ev: &mut Evaluator<'_>,
    op: TokenType,
    lhs: Vec<VSeries>,
    rhs: Vec<VSeries>,
    modifier: &BinModifier,
    steps: Steps,
) -> Result<Vec<VSeries>> {
    let matching = modifier.matching.as_ref();
    let card = &modifier.card;
    let return_bool = modifier.return_bool;
    let comparison = is_comparison(op);
    let drops_name = !comparison || return_bool;
    // Arithmetic drops the name before matching (delayed removal still keeps it out of
    // signatures and result labels).
    let prep = |s: VSeries| -> VSeries {
        if s.drop_name {
            VSeries {
                labels: drop_name(&s.labels),
                drop_name: false,
                vals: s.vals,
            }
        } else {
            s
        }
    };
    let mut lhs: Vec<VSeries> = lhs.into_iter().map(prep).collect();
    let mut rhs: Vec<VSeries> = rhs.into_iter().map(prep).collect();
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    if swapped {
        std::mem::swap(&mut lhs, &mut rhs);
    }
    // Signatures depend on labels only: intern them once, so each step works on
    // plain indices instead of hashing label sets.
    let mut sig_ids: HashMap<LabelSet, usize> = HashMap::new();
    let mut sig_labels: Vec<LabelSet> = Vec::new();
    let mut intern = |l: LabelSet| -> usize {
        if let Some(&id) = sig_ids.get(&l) {
            return id;
        }
        sig_labels.push(l.clone());
        sig_ids.insert(l, sig_labels.len() - 1);
        sig_labels.len() - 1
    };
    let lsig: Vec<usize> = lhs
        .iter()
        .map(|s| intern(signature(&s.labels, matching)))
        .collect();
    let rsig: Vec<usize> = rhs
        .iter()
        .map(|s| intern(signature(&s.labels, matching)))
        .collect();
    let nsig = sig_labels.len();
    let (fill_lhs, fill_rhs) = (modifier.fill_values.lhs, modifier.fill_values.rhs);
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut out: Vec<VSeries> = Vec::new();
    let mut out_index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut out_by_labels: HashMap<LabelSet, usize> = HashMap::new();
    // Per signature: the rhs ("one" side) series present at this step, and the
    // output series the lhs matches produced (to detect ambiguous matches).
    let mut one: Vec<usize> = vec![NO_SERIES; nsig];
    let mut one_touched: Vec<usize> = Vec::new();
    let mut matched: Vec<Vec<usize>> = vec![Vec::new(); nsig];
    let mut matched_touched: Vec<usize> = Vec::new();
    let mut last_pair: Vec<(usize, usize)> = vec![(NO_SERIES - 1, 0); lhs.len()];
    // Prometheus answers nothing at once for a step where either side is empty (or,
    // with `fill`, both), before it looks for duplicate match groups on the other
    // side: `(up == 0) * on(instance) group_left() node_load1` is empty, not an
    // error, while no target is down (engine.go `VectorBinop`'s short-circuit).
    let has_fill = fill_lhs.is_some() || fill_rhs.is_some();
    let lhs_present = present_per_step(&lhs, steps);
    let rhs_present = present_per_step(&rhs, steps);
    for i in 0..steps.n {
        ev.check_deadline()?;
        // Both sides present, or (with `fill`) at least one.
        let (l_any, r_any) = (lhs_present[i], rhs_present[i]);
        let matchable = if has_fill {
            l_any || r_any
        } else {
            l_any && r_any
        };
        if !matchable {
            continue;
        }
        for sg in one_touched.drain(..) {
            one[sg] = NO_SERIES;
        }
        for sg in matched_touched.drain(..) {
            matched[sg].clear();
        }
        for (ri, s) in rhs.iter().enumerate() {
            if s.vals[i].is_none() {
                continue;
            }
            let sg = rsig[ri];
            if one[sg] != NO_SERIES {
                let prev = one[sg];
                let side = if swapped { "left" } else { "right" };
                let (a, b) = (&rhs[prev].labels, &s.labels);
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    match_group_string(&s.labels, matching),
                    labels_string(a),
                    labels_string(b),
                )));
            }
            one[sg] = ri;
            one_touched.push(sg);
        }
        for (li, s) in lhs.iter().enumerate() {
            let Some(lv) = s.vals[i] else { continue };
            let sg = lsig[li];
            let (ri, rv) = match one[sg] {
                NO_SERIES => match fill_rhs {
                    // fill_right: an unmatched (internal) lhs series meets the fill value.
                    Some(f) => (NO_SERIES, f),
                    None => continue,
                },
                ri => (ri, rhs[ri].vals[i].unwrap_or(f64::NAN)),
            };
            let (fl, fr) = if swapped { (rv, lv) } else { (lv, rv) };
            let (v, keep) = apply_op(op, fl, fr)?;
            // Most series meet the same partner at every step: remember the last pair.
            let idx = match last_pair[li] {
                (r, idx) if r == ri => idx,
                _ => out_slot(
                    &mut out,
                    &mut out_index,
                    &mut out_by_labels,
                    (li, ri),
                    steps,
                    || {
                        let empty = LabelSet::default();
                        let rl = if ri == NO_SERIES {
                            &empty
                        } else {
                            &rhs[ri].labels
                        };
                        let labels = result_labels(&s.labels, rl, card, matching);
                        if drops_name {
                            drop_name(&labels)
                        } else {
                            labels
                        }
                    },
                ),
            };
            last_pair[li] = (ri, idx);
            if ri != NO_SERIES {
                // Ambiguity is checked before filtering, so a comparison cannot hide it.
                let entry = &mut matched[sg];
                if entry.is_empty() {
                    matched_touched.push(sg);
                } else if one_to_one {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                } else if entry.contains(&idx) {
                    // Equal output labels share one output series.
                    return Err(QueryError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
                entry.push(idx);
            }
            set_value(
                &mut out[idx],
                i,
                return_bool,
                keep,
                if comparison { fl } else { v },
            )?;
        }
        // fill_left: every (internal) rhs signature no lhs series matched meets the
        // fill value, labelled by its match group.
        if let Some(f) = fill_lhs {
            for &sg in &one_touched {
                if !matched[sg].is_empty() {
                    continue;
                }
                let ri = one[sg];
                let Some(rv) = rhs[ri].vals[i] else { continue };
                let (fl, fr) = if swapped { (rv, f) } else { (f, rv) };
                let (v, keep) = apply_op(op, fl, fr)?;
                let idx = out_slot(
                    &mut out,
                    &mut out_index,
                    &mut out_by_labels,
                    (NO_SERIES, ri),
                    steps,
                    || sig_labels[sg].clone(),
                );
                set_value(
                    &mut out[idx],
                    i,
                    return_bool,
                    keep,
                    if comparison { fl } else { v },
                )?;
            }
        }
    }
    out.retain(|s| s.vals.iter().any(Option::is_some));
    Ok(out)
}

/// Per step, whether any series of `side` has a value.
fn present_per_step(side: &[VSeries], steps: Steps) -> Vec<bool> {
    let mut present = vec![false; steps.n];
    for s in side {
        for (p, v) in present.iter_mut().zip(&s.vals) {
            *p |= v.is_some();
        }
    }
    present
}

/// Marks the missing side of a `fill` result in an output key.
const NO_SERIES: usize = usize::MAX;

/// The output series for a (lhs, rhs) pair, created on first use; pairs that produce
/// the same labels share one series.
fn out_slot(
    out: &mut Vec<VSeries>,
    out_index: &mut HashMap<(usize, usize), usize>,
    out_by_labels: &mut HashMap<LabelSet, usize>,
    key: (usize, usize),
    steps: Steps,
    labels: impl FnOnce() -> LabelSet,
) -> usize {
    if let Some(&idx) = out_index.get(&key) {
        return idx;
    }
    let labels = labels();
    let idx = match out_by_labels.get(&labels) {
        Some(&idx) => idx,
        None => {
            out.push(VSeries {
                labels: labels.clone(),
                drop_name: false,
                vals: vec![None; steps.n],
            });
            out_by_labels.insert(labels, out.len() - 1);
            out.len() - 1
        }
    };
    out_index.insert(key, idx);
    idx
}

/// Stores one step's result: 0/1 with `bool`, the value when kept, nothing when a
/// comparison filtered it. Two results for one series at one step are an error.
fn set_value(s: &mut VSeries, i: usize, return_bool: bool, keep: bool, v: f64) -> Result<()> {
    let value = if return_bool {
        Some(if keep { 1.0 } else { 0.0 })
    } else if keep {
        Some(v)
    } else {
        None
    };
    if let Some(v) = value {
        if s.vals[i].is_some() {
            return Err(super::eval::dup_labelset());
        }
        s.vals[i] = Some(v);
    }
    Ok(())
}
