//! Limits on query text, checked before the parser sees it, and the stack the parser
//! and the evaluator run on.
//!
//! `promql-parser` builds a tree with one node per operator, call and bracket and then
//! walks it recursively (type checks, `Drop`); its checks are also quadratic in the
//! length of an operator chain. The evaluator recurses once per node. So a query's
//! nesting decides both the stack it needs and (with its length) the time parsing
//! takes. [`check_text`] bounds both with one linear scan of the text, before any
//! parsing: the length against `query.max_length`, and an upper bound of the tree's
//! depth against `query.max_depth`. Parsing and other whole-tree walks run on a stack
//! sized for that bound ([`with_tree_stack`]), and evaluation grows its stack on
//! demand ([`with_eval_stack`]), so no accepted query can overflow a thread's stack,
//! whichever thread runs it. Dropping a tree at the depth ceiling needs well under a
//! default thread's 2 MiB (about 250 bytes a level in a debug build).
//!
//! Invariant: the bound is never below the depth of the tree `promql-parser` builds
//! for the text (it may be above it: a few brackets count twice), so a query this
//! module accepts has a tree at most `max_depth` deep.

use super::QueryError;

/// Bounds on a query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest query text in bytes (`query.max_length`).
    pub max_length: usize,
    /// Deepest nesting of operators, calls and brackets (`query.max_depth`).
    pub max_depth: usize,
}

/// Default `query.max_length`: 256 KiB. Prometheus has no such limit, but its GET
/// queries are capped by Go's 1 MB header limit and real queries stay far below both.
pub const DEFAULT_MAX_LENGTH: usize = 256 * 1024;
/// Default `query.max_depth`. Hand-written queries nest a few dozen levels; a chain
/// `a + b + …` counts one level per operator.
pub const DEFAULT_MAX_DEPTH: usize = 1000;
/// Largest `query.max_depth` a configuration may set: beyond it, walks over the tree
/// that this crate does not control (dropping it) would need more than a default
/// thread stack.
pub const MAX_DEPTH_CEILING: usize = 4096;
/// Most type-checking work ([`Group::work`], summed over the query) the parser may
/// be given: at most about a quarter of a second of parsing on one core (see
/// BENCHMARKS.md). A chain of 1,000 terms needs 2 million, a sum of 500 selectors
/// about 1.5 million; over the budget are chains of long chains, such as 260 groups
/// of 250 terms (66 million, 1.6 s to parse within the length and depth limits).
pub(crate) const MAX_PARSE_WORK: usize = 10_000_000;

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_length: DEFAULT_MAX_LENGTH,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// One bracket group being scanned: the operators and the deepest child group of its
/// current comma-separated segment, and the deepest segment so far; for the work
/// estimate, all its operators and all its tokens (nested ones included).
#[derive(Clone, Copy, Default)]
struct Group {
    /// The group's opening character (`(`, `[` or `{`); `\0` for the whole query.
    open: u8,
    ops: usize,
    deepest_child: usize,
    deepest_segment: usize,
    all_ops: usize,
    tokens: usize,
}

impl Group {
    /// An upper bound of the parser's type-checking work for this group's
    /// operators: each checks the types of its operands a few times, and a type
    /// check may walk the whole operand, which lies within the group.
    fn work(&self) -> usize {
        self.all_ops.saturating_mul(self.tokens)
    }

    fn end_segment(&mut self) {
        let segment = self.ops + self.deepest_child.max(1);
        self.deepest_segment = self.deepest_segment.max(segment);
        self.ops = 0;
        self.deepest_child = 0;
    }
}

/// Checks a query's length and nesting against `limits` and returns an upper bound
/// of its tree's depth. Linear in the text; never fails on text the parser would
/// reject for other reasons (it leaves those to the parser).
pub(crate) fn check_text(query: &str, limits: &QueryLimits) -> Result<usize, QueryError> {
    if query.len() > limits.max_length {
        return Err(QueryError::Limit(format!(
            "query is {} bytes long, over the limit of {} bytes (query.max_length)",
            query.len(),
            limits.max_length
        )));
    }
    let too_deep = |depth: usize| {
        QueryError::Limit(format!(
            "query is nested too deeply: {depth} levels of operators, calls and brackets, \
             over the limit of {} (query.max_depth)",
            limits.max_depth
        ))
    };
    let bytes = query.as_bytes();
    let mut stack = vec![Group::default()];
    let mut work = 0usize;
    // A closed group adds its work and passes its tokens (and itself) up.
    let close = |stack: &mut Vec<Group>, work: &mut usize| {
        let mut g = stack.pop().unwrap_or_default();
        g.end_segment();
        *work = work.saturating_add(g.work());
        let parent = stack.len() - 1;
        let p = &mut stack[parent];
        p.deepest_child = p.deepest_child.max(1 + g.deepest_segment);
        p.tokens += g.tokens + 1;
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        // The innermost group; the stack always holds the whole query's group.
        let top = stack.len() - 1;
        // Inside `{…}` (matchers) and `[…]` (ranges, steps) nothing nests in the tree.
        let in_operands = matches!(stack[top].open, 0 | b'(');
        match c {
            b'"' | b'\'' | b'`' => {
                stack[top].tokens += 1;
                i = skip_string(bytes, i);
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                // A subquery or range wraps the expression before it: one more level.
                if c == b'[' {
                    stack[top].ops += 1;
                }
                stack.push(Group {
                    open: c,
                    ..Group::default()
                });
                if stack.len() > limits.max_depth {
                    return Err(too_deep(stack.len()));
                }
                i += 1;
            }
            b')' | b']' | b'}' => {
                if stack.len() > 1 {
                    close(&mut stack, &mut work);
                }
                i += 1;
            }
            b',' => {
                stack[top].end_segment();
                i += 1;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' if in_operands => {
                // `==`, `!=`, `<=`, `>=` are one operator.
                stack[top].ops += 1;
                stack[top].all_ops += 1;
                stack[top].tokens += 1;
                i += 1;
                if i < bytes.len() && bytes[i] == b'=' && matches!(c, b'=' | b'!' | b'<' | b'>') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => {
                // A name, keyword, number or duration: one token.
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b':' | b'.'))
                {
                    i += 1;
                }
                stack[top].tokens += 1;
                if in_operands && c.is_ascii_alphabetic() && is_binary_keyword(&query[start..i]) {
                    stack[top].ops += 1;
                    stack[top].all_ops += 1;
                }
            }
            _ => i += 1,
        }
        let g = &stack[stack.len() - 1];
        let here = stack.len() + g.ops;
        if here > limits.max_depth {
            return Err(too_deep(here));
        }
    }
    // Unclosed groups (a syntax error the parser reports) still count.
    while stack.len() > 1 {
        close(&mut stack, &mut work);
    }
    let mut whole = stack[0];
    whole.end_segment();
    let depth = whole.deepest_segment;
    if depth > limits.max_depth {
        return Err(too_deep(depth));
    }
    let work = work.saturating_add(whole.work());
    if work > MAX_PARSE_WORK {
        return Err(QueryError::Limit(format!(
            "query is too complex to parse: its operator chains would need about {work} \
             type-check steps, over the limit of {MAX_PARSE_WORK}; split long chains of \
             operators into separate queries or recording rules"
        )));
    }
    Ok(depth)
}

fn is_binary_keyword(word: &str) -> bool {
    ["and", "or", "unless", "atan2"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// The index just past the string literal starting at `i` (or the end of the text
/// when it is unterminated). `"` and `'` strings take backslash escapes; backquoted
/// strings are raw.
fn skip_string(bytes: &[u8], i: usize) -> usize {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if quote != b'`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

/// Stack a walk over the tree (parsing, cloning, printing it) needs per level, with
/// a margin: a debug build uses about 2 KiB a level to clone or print a tree, a
/// release build a fraction of that.
const TREE_STACK_PER_LEVEL: usize = 4 * 1024;
/// Stack kept free for the work between two levels and at the leaves.
const STACK_MARGIN: usize = 256 * 1024;
/// Size of each stack segment the evaluator adds when it runs short.
const EVAL_STACK_SEGMENT: usize = 8 * 1024 * 1024;

/// Runs `f`, a walk over a tree at most `depth` deep (parsing its text, cloning or
/// printing it), with enough stack for it: on the current thread when it has room,
/// else on a new stack segment.
pub(crate) fn with_tree_stack<R>(depth: usize, f: impl FnOnce() -> R) -> R {
    let need = STACK_MARGIN + depth.saturating_mul(TREE_STACK_PER_LEVEL);
    stacker::maybe_grow(need, need, f)
}

/// Runs one level of evaluation: on the current stack while at least
/// [`STACK_MARGIN`] of it is left, else on a new segment.
pub(crate) fn with_eval_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(STACK_MARGIN, EVAL_STACK_SEGMENT, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(q: &str) -> usize {
        check_text(
            q,
            &QueryLimits {
                max_length: usize::MAX,
                max_depth: usize::MAX,
            },
        )
        .unwrap()
    }

    /// The depth of the tree promql-parser builds, counted the way the bound counts.
    fn tree_depth(e: &promql_parser::parser::Expr) -> usize {
        use promql_parser::parser::Expr;
        1 + match e {
            Expr::Aggregate(a) => {
                let p = a.param.as_deref().map_or(0, tree_depth);
                p.max(tree_depth(&a.expr))
            }
            Expr::Unary(u) => tree_depth(&u.expr),
            Expr::Binary(b) => tree_depth(&b.lhs).max(tree_depth(&b.rhs)),
            Expr::Paren(p) => tree_depth(&p.expr),
            Expr::Subquery(s) => tree_depth(&s.expr),
            Expr::Call(c) => c.args.args.iter().map(|a| tree_depth(a)).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn bound_is_never_below_the_parsed_depth() {
        for q in [
            "up",
            "1 + 2 * 3 ^ 4",
            "-(-(-1))",
            "- - - 1",
            "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / on(job) group_left sum(x)",
            "(a + b)[5m:1m]",
            "max_over_time((a or b)[10m:])",
            "abs(abs(abs(vector(1))))",
            "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\") and on() vector(1) unless up",
            "topk(3, x) atan2 y",
            "x > bool 1 == bool 0",
            "a * b + c * d - e / f % g",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            "label_replace(up, \"a\", \"(((\", \"b\", '[[[') # ((((((\n + 2",
            "count_values(\"v\", up offset 5m)",
            "x @ start() - x @ end()",
        ] {
            let expr = crate::promql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(depth(q) >= tree_depth(&expr), "{q}: bound {} < depth {}", depth(q), tree_depth(&expr));
            // And it stays close: no more than twice the tree's depth plus a little.
            assert!(depth(q) <= 2 * tree_depth(&expr) + 4, "{q}: bound {}", depth(q));
        }
    }

    #[test]
    fn strings_and_comments_do_not_nest() {
        assert_eq!(depth("\"((((((((\""), 1);
        assert_eq!(depth("`\\`"), 1);
        assert_eq!(depth("'\\'((('"), 1);
        assert_eq!(depth("up # + + + (((("), 1);
        assert_eq!(depth("orders_total or android"), 2);
    }

    #[test]
    fn the_issues_reproducers_are_refused_naming_the_limit() {
        let limits = QueryLimits::default();
        for q in [
            format!("1{}", " + 1".repeat(1200)),
            format!("{}vector(1){}", "abs(".repeat(1000), ")".repeat(1000)),
            format!("{}1{}", "(".repeat(35_000), ")".repeat(35_000)),
            format!("vector(1){}", " + vector(1)".repeat(1999)),
        ] {
            let e = check_text(&q, &limits).unwrap_err().to_string();
            assert!(e.contains("query.max_depth") && e.contains("1000"), "{e}");
        }
        let long = format!("up{}", " or up".repeat(60_000));
        let e = check_text(&long, &limits).unwrap_err().to_string();
        assert!(e.contains("query.max_length"), "{e}");
    }

    #[test]
    fn a_chain_up_to_the_limit_is_accepted() {
        let limits = QueryLimits::default();
        let q = format!("1{}", " + 1".repeat(limits.max_depth - 1));
        assert_eq!(check_text(&q, &limits).unwrap(), limits.max_depth);
        let q = format!("1{}", " + 1".repeat(limits.max_depth));
        assert!(check_text(&q, &limits).is_err());
    }

    #[test]
    fn chains_of_long_chains_are_refused_before_the_parser_spends_seconds() {
        let limits = QueryLimits::default();
        let nest = |groups: usize, terms: usize| {
            let group = format!("(1{})", " + 1".repeat(terms - 1));
            vec![group; groups].join(" + ")
        };
        // Within the length and depth limits, but 66 million steps of type checks.
        let e = check_text(&nest(260, 250), &limits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too complex to parse"), "{e}");
        // What people write stays far below the budget.
        for q in [
            nest(120, 120),
            format!("1{}", " + 1".repeat(limits.max_depth - 1)),
            (0..500)
                .map(|i| format!("sum(rate(http_requests_total{{job=\"j{i}\"}}[5m]))"))
                .collect::<Vec<_>>()
                .join(" + "),
        ] {
            assert!(check_text(&q, &limits).is_ok(), "{}", &q[..60]);
        }
    }

    #[test]
    fn unbalanced_text_is_left_to_the_parser() {
        assert!(check_text("((((up", &QueryLimits::default()).is_ok());
        assert!(check_text(")))up", &QueryLimits::default()).is_ok());
        assert!(check_text("\"unterminated", &QueryLimits::default()).is_ok());
    }
}
