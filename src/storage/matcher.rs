//! Label matchers with Prometheus semantics: `=`, `!=`, `=~`, `!~`; regexes are fully
//! anchored and `.` matches a newline (Prometheus 3); a matcher is applied to the empty
//! string when a series lacks the label, so `{a=""}` selects series without `a`.

use std::collections::HashSet;

use regex::Regex;

/// Matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A compiled label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    pattern: Pattern,
}

/// How a regex matcher is tested; literal alternations (`a|b|c`, as Grafana's
/// multi-value variables produce) skip the regex engine.
#[derive(Debug, Clone)]
enum Pattern {
    None,
    Literals(HashSet<String>),
    Regex(Regex),
}

/// A matcher that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression {pattern:?} for label {name:?}: {reason}")]
pub struct MatcherError {
    pub name: String,
    pub pattern: String,
    pub reason: String,
}

impl Matcher {
    /// Builds a matcher, compiling a regex anchored at both ends.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let (name, value) = (name.into(), value.into());
        let pattern = match op {
            MatchOp::Equal | MatchOp::NotEqual => Pattern::None,
            MatchOp::Regex | MatchOp::NotRegex => match literal_alternatives(&value) {
                Some(set) => Pattern::Literals(set),
                None => Pattern::Regex(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    MatcherError {
                        name: name.clone(),
                        pattern: value.clone(),
                        reason: e.to_string(),
                    }
                })?),
            },
        };
        Ok(Matcher {
            name,
            op,
            value,
            pattern,
        })
    }

    /// Shorthand for an equality matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            pattern: Pattern::None,
        }
    }

    /// Whether `value` (the empty string for a missing label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.pattern_matches(value),
            MatchOp::NotRegex => !self.pattern_matches(value),
        }
    }

    fn pattern_matches(&self, value: &str) -> bool {
        match &self.pattern {
            Pattern::Literals(set) => set.contains(value),
            Pattern::Regex(re) => re.is_match(value),
            Pattern::None => false,
        }
    }

    /// The exact values this matcher accepts, when it accepts a small known set and
    /// not the empty string (`a="x"`, `a=~"x|y"`). Lets the index look postings up
    /// directly instead of scanning every value of the label.
    pub fn exact_values(&self) -> Option<Vec<&str>> {
        match (&self.op, &self.pattern) {
            (MatchOp::Equal, _) if !self.value.is_empty() => Some(vec![self.value.as_str()]),
            (MatchOp::Regex, Pattern::Literals(set)) if !set.contains("") => {
                Some(set.iter().map(String::as_str).collect())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// `a|b|c` where every alternative is plain text (no regex syntax) becomes a set.
fn literal_alternatives(pattern: &str) -> Option<HashSet<String>> {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$',
    ];
    if pattern.contains(META) {
        return None;
    }
    Some(pattern.split('|').map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "l", v).unwrap()
    }

    #[test]
    fn regexes_are_fully_anchored() {
        assert!(m(MatchOp::Regex, "a.c").matches("abc"));
        assert!(!m(MatchOp::Regex, "b").matches("abc"));
        assert!(!m(MatchOp::Regex, "a|b").matches("ab"));
        assert!(m(MatchOp::Regex, "a|b").matches("b"));
        assert!(m(MatchOp::NotRegex, "a.*").matches("ba"));
        assert!(!m(MatchOp::NotRegex, "a.*").matches("a"));
    }

    #[test]
    fn dot_matches_newline_as_in_prometheus_3() {
        assert!(m(MatchOp::Regex, "a.b").matches("a\nb"));
    }

    #[test]
    fn empty_string_semantics() {
        assert!(m(MatchOp::Equal, "").matches(""));
        assert!(m(MatchOp::Regex, "|x").matches(""));
        assert!(m(MatchOp::Regex, ".*").matches(""));
        assert!(!m(MatchOp::Regex, ".+").matches(""));
        assert!(m(MatchOp::NotEqual, "x").matches(""));
    }

    #[test]
    fn literal_alternations_skip_the_regex_engine() {
        let x = m(MatchOp::Regex, "api|web|db");
        assert!(matches!(x.pattern, Pattern::Literals(_)));
        let mut vals = x.exact_values().unwrap();
        vals.sort();
        assert_eq!(vals, vec!["api", "db", "web"]);
        assert!(m(MatchOp::Regex, "a|").exact_values().is_none());
    }

    #[test]
    fn bad_regex_is_an_error_naming_the_label() {
        let e = Matcher::new(MatchOp::Regex, "job", "(").unwrap_err();
        assert!(e.to_string().contains("\"job\""), "{e}");
    }
}
