//! Series selectors (`match[]`) parsed with promql-parser and turned into store
//! matchers.

use promql_parser::label::MatchOp as ParserOp;
use promql_parser::parser::{self, Expr};

use crate::storage::{MatchOp, Matcher, METRIC_NAME};

/// Parses `up{job="api"}` (or `{a="1" or b="2"}`) into alternative matcher sets.
pub(crate) fn parse_selector(input: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let expr = parser::parse(input).map_err(|e| format!("invalid selector {input:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("invalid selector {input:?}: not a series selector"));
    };
    let convert = |m: &promql_parser::label::Matcher| -> Result<Matcher, String> {
        let op = match &m.op {
            ParserOp::Equal => MatchOp::Equal,
            ParserOp::NotEqual => MatchOp::NotEqual,
            ParserOp::Re(_) => MatchOp::Regex,
            ParserOp::NotRe(_) => MatchOp::NotRegex,
        };
        Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| e.to_string())
    };
    let name = vs
        .name
        .as_ref()
        .map(|n| Matcher::equal(METRIC_NAME, n.clone()));
    let mut alternatives = Vec::new();
    let groups: Vec<Vec<&promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.iter().collect()]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|g| g.iter().collect())
            .collect()
    };
    for group in groups {
        let mut set: Vec<Matcher> = name.iter().cloned().collect();
        for m in group {
            set.push(convert(m)?);
        }
        if set.iter().all(|m| m.matches("")) {
            return Err(format!("invalid selector {input:?}: needs at least one matcher that does not match the empty string"));
        }
        alternatives.push(set);
    }
    Ok(alternatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_matchers() {
        let sets = parse_selector(r#"up{job=~"a.*",x!="y"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        let text: Vec<String> = sets[0].iter().map(|m| m.to_string()).collect();
        assert_eq!(text, vec![r#"__name__="up""#, r#"job=~"a.*""#, r#"x!="y""#]);
    }

    #[test]
    fn rejects_non_selectors_and_empty_matchers() {
        assert!(parse_selector("sum(up)").is_err());
        assert!(parse_selector("up{").is_err());
        assert!(parse_selector(r#"{job=""}"#).is_err());
    }
}
