//! A parsed query as the JSON tree Prometheus's `/api/v1/parse_query` returns
//! (`web/api/v1/translate_ast.go`), for tools that show a query's structure.
//!
//! Differences that follow from the parser: promql-parser has no duration
//! expressions, so `rangeExpr`, `offsetExpr` and `stepExpr` are always null, and
//! `anchored`/`smoothed` always false; a selector's `or` alternatives (an extension
//! Prometheus lacks) are not shown.

use std::time::{Duration, SystemTime};

use promql_parser::label::Matcher;
use promql_parser::parser::{
    AtModifier, BinaryExpr, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};
use serde_json::{json, Value};

use super::value::format_value;

/// The JSON tree of `expr`.
pub(super) fn ast_json(expr: &Expr) -> Value {
    match expr {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
                Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
                None => (Vec::new(), false),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": ast_json(&a.expr),
                "param": a.param.as_deref().map_or(Value::Null, ast_json),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => json!({
            "type": "binaryExpr",
            "op": b.op.to_string(),
            "lhs": ast_json(&b.lhs),
            "rhs": ast_json(&b.rhs),
            "matching": matching(b),
            "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
        }),
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": c.func.return_type.to_string(),
            },
            "args": c.args.args.iter().map(|a| ast_json(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let mut v = selector(&m.vs, "matrixSelector");
            v["range"] = json!(millis(m.range));
            v["rangeExpr"] = Value::Null;
            v
        }
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at(&s.at);
            json!({
                "type": "subquery",
                "expr": ast_json(&s.expr),
                "range": millis(s.range),
                "rangeExpr": null,
                "offset": offset(&s.offset),
                "offsetExpr": null,
                "step": s.step.map_or(0, millis),
                "stepExpr": null,
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": format_value(n.val)}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": ast_json(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": ast_json(&u.expr)}),
        Expr::VectorSelector(vs) => selector(vs, "vectorSelector"),
        Expr::Extension(_) => Value::Null,
    }
}

/// Prometheus sets vector matching only when both sides are instant vectors; set
/// operators match many-to-many.
fn matching(b: &BinaryExpr) -> Value {
    use promql_parser::parser::value::ValueType;
    let vectors =
        b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
    if !vectors {
        return Value::Null;
    }
    let default = promql_parser::parser::BinModifier::default();
    let m = b.modifier.as_ref().unwrap_or(&default);
    let set = matches!(
        b.op.id(),
        promql_parser::parser::token::T_LAND
            | promql_parser::parser::token::T_LOR
            | promql_parser::parser::token::T_LUNLESS
    );
    let (card, include) = match &m.card {
        _ if set => ("many-to-many", Vec::new()),
        VectorMatchCardinality::OneToOne => ("one-to-one", Vec::new()),
        VectorMatchCardinality::ManyToOne(l) => ("many-to-one", l.labels.clone()),
        VectorMatchCardinality::OneToMany(l) => ("one-to-many", l.labels.clone()),
        VectorMatchCardinality::ManyToMany => ("many-to-many", Vec::new()),
    };
    let (labels, on) = match &m.matching {
        Some(LabelModifier::Include(l)) => (l.labels.clone(), true),
        Some(LabelModifier::Exclude(l)) => (l.labels.clone(), false),
        None => (Vec::new(), false),
    };
    json!({
        "card": card,
        "labels": labels,
        "on": on,
        "include": include,
        "fillValues": {"lhs": m.fill_values.lhs, "rhs": m.fill_values.rhs},
    })
}

fn selector(vs: &VectorSelector, kind: &str) -> Value {
    let (timestamp, start_or_end) = at(&vs.at);
    // Prometheus's matchers include the metric name written outside the braces,
    // first.
    let mut matchers: Vec<Value> = Vec::new();
    if let Some(name) = &vs.name {
        matchers.push(json!({"name": "__name__", "value": name, "type": "="}));
    }
    matchers.extend(vs.matchers.matchers.iter().map(matcher));
    json!({
        "type": kind,
        "name": vs.name.clone().unwrap_or_default(),
        "offset": offset(&vs.offset),
        "offsetExpr": null,
        "matchers": matchers,
        "timestamp": timestamp,
        "startOrEnd": start_or_end,
        "anchored": false,
        "smoothed": false,
    })
}

fn matcher(m: &Matcher) -> Value {
    json!({"name": m.name, "value": m.value, "type": m.op.to_string()})
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn offset(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

/// `timestamp` (milliseconds) and `startOrEnd` of an `@` modifier.
fn at(a: &Option<AtModifier>) -> (Value, Value) {
    match a {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => millis(d),
                Err(e) => -millis(e.duration()),
            };
            (json!(ms), Value::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> Value {
        ast_json(&crate::promql::parse(q).unwrap())
    }

    /// The shapes Prometheus's `translateAST` gives (web/api/v1/translate_ast.go).
    #[test]
    fn selectors_carry_the_name_matcher_first() {
        assert_eq!(
            tree("up{job=\"a\"} offset 5m"),
            json!({
                "type": "vectorSelector", "name": "up", "offset": 300000, "offsetExpr": null,
                "matchers": [
                    {"name": "__name__", "value": "up", "type": "="},
                    {"name": "job", "value": "a", "type": "="}
                ],
                "timestamp": null, "startOrEnd": null, "anchored": false, "smoothed": false
            })
        );
        let m = tree("rate(x[5m] @ 100)");
        assert_eq!(m["func"]["name"], "rate");
        assert_eq!(m["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(m["args"][0]["type"], "matrixSelector");
        assert_eq!(m["args"][0]["range"], 300000);
        assert_eq!(m["args"][0]["timestamp"], 100000);
    }

    #[test]
    fn binary_matching_only_between_vectors() {
        let b = tree("a * on(x) group_left(y) b");
        assert_eq!(
            b["matching"],
            json!({"card": "many-to-one", "labels": ["x"], "on": true, "include": ["y"],
                   "fillValues": {"lhs": null, "rhs": null}})
        );
        assert_eq!(tree("a and b")["matching"]["card"], "many-to-many");
        assert_eq!(tree("a > bool 1")["matching"], Value::Null);
        assert_eq!(tree("a > bool 1")["bool"], true);
        let agg = tree("topk by (job) (3, x)");
        assert_eq!(agg["op"], "topk");
        assert_eq!(agg["param"], json!({"type": "numberLiteral", "val": "3"}));
        assert_eq!(agg["grouping"], json!(["job"]));
        let sq = tree("x[10m:1m] offset -1m");
        assert_eq!(
            (
                sq["range"].clone(),
                sq["step"].clone(),
                sq["offset"].clone()
            ),
            (json!(600000), json!(60000), json!(-60000))
        );
    }
}
