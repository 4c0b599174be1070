//! Prometheus 3 syntax that `promql-parser` 0.11 does not read, handled by rewriting
//! the query text before parsing again:
//!
//! - duration expressions (`promql-duration-expr`): arithmetic in range brackets,
//!   subquery steps and after `offset`, as in `x[26m+4m]`, `x[5m:step()*2]` or
//!   `x offset (2 * 1m)`, with `step()`, `range()`, `min_of()` and `max_of()` —
//!   computed into plain durations (`x[30m]` → `x[1800000ms]`);
//! - the extended range selector modifiers `anchored` and `smoothed` — taken out of
//!   the text, their modes kept per range selector (in text order), or for an
//!   instant selector carried by a synthetic matcher the evaluator removes;
//! - `info()` label selectors whose matchers all accept the empty string.
//!
//! Invariant: only a query the parser rejects goes through here, so plain PromQL is
//! never rewritten. Also home of the duration literal parser (`1h30m`).

/// How a range selector reads its window (Prometheus 3's experimental extended range
/// selectors): as is, `anchored` to the last sample at or before the window start,
/// or `smoothed` by interpolating values at both window edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeMode {
    Plain,
    Anchored,
    Smoothed,
}

/// Removes `anchored`/`smoothed` after range selectors, which `promql-parser` does
/// not know, and returns the mode of every range selector (subqueries excluded) in
/// the order they appear in the text. `None` when there is no such modifier.
pub(crate) fn strip_range_modifiers(query: &str) -> Option<(String, Vec<RangeMode>)> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut modes = Vec::new();
    let mut any = false;
    let mut brace_depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                let end = skip_string(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
            }
            '{' | '}' => {
                if c == '{' {
                    brace_depth += 1;
                } else {
                    brace_depth = brace_depth.saturating_sub(1);
                }
                out.push(c);
                i += 1;
            }
            '[' if brace_depth == 0 => {
                let close = find_close(&chars, i, '[', ']')?;
                let inner: String = chars[i..=close].iter().collect();
                out.push_str(&inner);
                i = close + 1;
                if split_top_level_colon(&inner[1..inner.len() - 1]).is_some() {
                    continue;
                }
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let st = j;
                while j < chars.len() && is_ident_char(chars[j]) {
                    j += 1;
                }
                let word: String = chars[st..j].iter().collect::<String>().to_ascii_lowercase();
                let mode = match word.as_str() {
                    "anchored" => RangeMode::Anchored,
                    "smoothed" => RangeMode::Smoothed,
                    _ => RangeMode::Plain,
                };
                if mode != RangeMode::Plain {
                    any = true;
                    i = j;
                }
                modes.push(mode);
            }
            c if brace_depth == 0 && is_ident_start(c) => {
                let st = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[st..i].iter().collect();
                let mode = match word.to_ascii_lowercase().as_str() {
                    "smoothed" => Some("smoothed"),
                    "anchored" => Some("anchored"),
                    _ => None,
                };
                match mode {
                    // After an instant selector (and its `@`/`offset`): mark the
                    // selector with a synthetic matcher the evaluator takes out again.
                    Some(m) if inject_mode_matcher(&mut out, m) => any = true,
                    _ => out.push_str(&word),
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    any.then_some((out, modes))
}

/// The synthetic matcher that lets `info()`'s label selector consist of matchers that
/// all accept the empty string (`info(m, {data=~".*"})`), which Prometheus allows
/// there but `promql-parser` refuses. `info()` ignores it.
pub(crate) const INFO_SELECTOR_LABEL: &str = "__closedloop_info_selector__";

/// Adds [`INFO_SELECTOR_LABEL`] to the label selector given as `info()`'s second
/// argument. `None` when there is none.
pub(crate) fn mark_info_selectors(query: &str) -> Option<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len() + 40);
    let mut changed = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let end = skip_string(&chars, i);
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if is_ident_start(c) {
            let st = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[st..i].iter().collect();
            out.push_str(&word);
            if word == "info" && i < chars.len() && chars[i] == '(' {
                let close = find_close(&chars, i, '(', ')')?;
                // The second top-level argument, when it is a `{...}` selector.
                let mut depth = 0i32;
                let mut brace = 0i32;
                let mut k = i + 1;
                let mut comma = None;
                while k < close {
                    match chars[k] {
                        '(' | '[' => depth += 1,
                        ')' | ']' => depth -= 1,
                        '{' => brace += 1,
                        '}' => brace -= 1,
                        '"' | '\'' | '`' => {
                            k = skip_string(&chars, k);
                            continue;
                        }
                        ',' if depth == 0 && brace == 0 => {
                            comma = Some(k);
                            break;
                        }
                        _ => {}
                    }
                    k += 1;
                }
                if let Some(cm) = comma {
                    let mut j = cm + 1;
                    while j < close && chars[j].is_whitespace() {
                        j += 1;
                    }
                    if j < close && chars[j] == '{' {
                        out.extend(&chars[i..=j]);
                        out.push_str(&format!("{INFO_SELECTOR_LABEL}=\"1\","));
                        changed = true;
                        i = j + 1;
                    }
                }
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    changed.then_some(out)
}

/// The synthetic matcher label marking an instant selector's `smoothed`/`anchored`
/// modifier between the rewrite and the evaluator.
pub(crate) const MODE_LABEL: &str = "__closedloop_range_mode__";

/// Adds `MODE_LABEL="<mode>"` to the instant selector that ends `out` (skipping its
/// `@`/`offset` clauses). False when `out` does not end with a selector.
fn inject_mode_matcher(out: &mut String, mode: &str) -> bool {
    let chars: Vec<char> = out.chars().collect();
    let mut end = trim_end(&chars, chars.len());
    // Strip trailing `offset <operand>` and `@ <operand>` clauses.
    while let Some(op_start) = operand_start(&chars, end) {
        let mut k = trim_end(&chars, op_start);
        if k > 0 && (chars[k - 1] == '-' || chars[k - 1] == '+') {
            k = trim_end(&chars, k - 1);
        }
        if k > 0 && chars[k - 1] == '@' {
            end = trim_end(&chars, k - 1);
            continue;
        }
        let word_start = {
            let mut w = k;
            while w > 0 && is_ident_char(chars[w - 1]) {
                w -= 1;
            }
            w
        };
        let word: String = chars[word_start..k].iter().collect();
        if word.eq_ignore_ascii_case("offset") {
            end = trim_end(&chars, word_start);
            continue;
        }
        break;
    }
    if end == 0 {
        return false;
    }
    let matcher = format!("{MODE_LABEL}=\"{mode}\"");
    let head: String = chars[..end].iter().collect();
    // The `@`/`offset` clauses stay; the whitespace before the keyword goes.
    let tail: String = chars[end..trim_end(&chars, chars.len())].iter().collect();
    let new = if chars[end - 1] == '}' {
        let Some(open) = (0..end - 1).rev().find(|&j| chars[j] == '{') else {
            return false;
        };
        let inner: String = chars[open + 1..end - 1].iter().collect();
        let sep = if inner.trim().is_empty() { "" } else { ", " };
        format!("{}{sep}{matcher}}}{tail}", &head[..head.len() - 1])
    } else if is_ident_char(chars[end - 1]) {
        format!("{head}{{{matcher}}}{tail}")
    } else {
        return false;
    };
    *out = new;
    true
}

fn trim_end(chars: &[char], mut end: usize) -> usize {
    while end > 0 && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    end
}

/// Start of the operand ending at `end`: a parenthesized group (with a function name
/// before it), or a run of word characters such as `100`, `5m` or `1.5`.
fn operand_start(chars: &[char], end: usize) -> Option<usize> {
    if end == 0 {
        return None;
    }
    if chars[end - 1] == ')' {
        let mut depth = 0i32;
        let mut j = end;
        while j > 0 {
            j -= 1;
            match chars[j] {
                ')' => depth += 1,
                '(' => {
                    depth -= 1;
                    if depth == 0 {
                        let mut w = j;
                        while w > 0 && is_ident_char(chars[w - 1]) {
                            w -= 1;
                        }
                        return Some(w);
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    let mut j = end;
    while j > 0 && (chars[j - 1].is_ascii_alphanumeric() || chars[j - 1] == '.') {
        j -= 1;
    }
    // A metric name is not an operand: operands start with a digit or are calls.
    (j < end && chars[j].is_ascii_digit()).then_some(j)
}

/// Rewrites every duration expression in `query` to a plain duration. `step_ms` and
/// `range_ms` are what `step()` and `range()` mean for this query. `None` when
/// nothing was rewritten or an expression is invalid.
pub(crate) fn rewrite(query: &str, step_ms: i64, range_ms: i64) -> Option<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    let mut changed = false;
    let mut brace_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                let end = skip_string(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
            }
            '{' => {
                brace_depth += 1;
                out.push(c);
                i += 1;
            }
            '}' => {
                brace_depth = brace_depth.saturating_sub(1);
                out.push(c);
                i += 1;
            }
            '[' if brace_depth == 0 => {
                let close = find_close(&chars, i, '[', ']')?;
                let inner: String = chars[i + 1..close].iter().collect();
                let (range, step) = match split_top_level_colon(&inner) {
                    Some((r, s)) => (r, Some(s)),
                    None => (inner.clone(), None),
                };
                let r = duration_text(&range, step_ms, range_ms)?;
                out.push('[');
                out.push_str(&r.0);
                changed |= r.1;
                if let Some(s) = step {
                    out.push(':');
                    if !s.trim().is_empty() {
                        let st = duration_text(&s, step_ms, range_ms)?;
                        out.push_str(&st.0);
                        changed |= st.1;
                    }
                }
                out.push(']');
                i = close + 1;
            }
            c if brace_depth == 0 && is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push_str(&word);
                if word.eq_ignore_ascii_case("offset") {
                    let (text, end, rewritten) = offset_operand(&chars, i, step_ms, range_ms)?;
                    out.push(' ');
                    out.push_str(&text);
                    changed |= rewritten;
                    i = end;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal starting at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let q = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        if chars[j] == '\\' && q != '`' {
            j += 2;
            continue;
        }
        if chars[j] == q {
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

fn find_close(chars: &[char], open_at: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = open_at;
    while j < chars.len() {
        let c = chars[j];
        if c == '"' || c == '\'' || c == '`' {
            j = skip_string(chars, j);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

fn split_top_level_colon(s: &str) -> Option<(String, String)> {
    let mut depth = 0i32;
    for (k, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ':' if depth == 0 => return Some((s[..k].to_string(), s[k + 1..].to_string())),
            _ => {}
        }
    }
    None
}

/// The text for a duration: kept as written when it is a plain duration, else the
/// computed value in ms. The flag says whether it was rewritten.
fn duration_text(s: &str, step_ms: i64, range_ms: i64) -> Option<(String, bool)> {
    let t = s.trim();
    if is_plain_duration(t) {
        return Some((t.to_string(), false));
    }
    let ms = eval_ms(t, step_ms, range_ms)?;
    Some((format!("{ms}ms"), true))
}

fn is_plain_duration(t: &str) -> bool {
    !t.is_empty()
        && t.chars().all(|c| c.is_ascii_alphanumeric())
        && t.starts_with(|c: char| c.is_ascii_digit())
}

/// Reads the operand after `offset` starting at `i`: an optional sign, then a
/// duration, a number, a parenthesized expression or a function call. Returns the
/// replacement text, the index after the operand, and whether it was rewritten.
fn offset_operand(
    chars: &[char],
    mut i: usize,
    step_ms: i64,
    range_ms: i64,
) -> Option<(String, usize, bool)> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    if i < chars.len() && (chars[i] == '-' || chars[i] == '+') {
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
    }
    if i >= chars.len() {
        return None;
    }
    if chars[i] == '(' {
        i = find_close(chars, i, '(', ')')? + 1;
    } else if is_ident_start(chars[i]) {
        while i < chars.len() && is_ident_char(chars[i]) {
            i += 1;
        }
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if j < chars.len() && chars[j] == '(' {
            i = find_close(chars, j, '(', ')')? + 1;
        }
    } else {
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
            i += 1;
        }
    }
    let text: String = chars[start..i].iter().collect();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let plain = compact.strip_prefix('-').unwrap_or(&compact);
    if is_plain_duration(plain) && plain.chars().any(|c| c.is_ascii_alphabetic()) {
        return Some((compact, i, false));
    }
    let ms = eval_ms(&text, step_ms, range_ms)?;
    // The parser refuses a zero duration but takes a bare 0 as "no offset".
    let text = if ms == 0 {
        "0".to_string()
    } else {
        format!("{ms}ms")
    };
    Some((text, i, true))
}

/// Evaluates a duration expression to ms. Plain numbers are seconds.
fn eval_ms(s: &str, step_ms: i64, range_ms: i64) -> Option<i64> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
        step: step_ms as f64 / 1000.0,
        range: range_ms as f64 / 1000.0,
    };
    let v = p.expr()?;
    if p.pos != p.toks.len() || !v.is_finite() {
        return None;
    }
    let ms = (v * 1000.0).round();
    (ms.abs() < 9e15).then_some(ms as i64)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Op(char),
    Ident(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit() || ch == '.' {
            let st = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
            let t: String = c[st..i].iter().collect();
            out.push(Tok::Num(literal_seconds(&t)?));
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let st = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(
                c[st..i].iter().collect::<String>().to_ascii_lowercase(),
            ));
        } else {
            out.push(match ch {
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                ',' => Tok::Comma,
                '+' | '-' | '*' | '/' | '%' | '^' => Tok::Op(ch),
                _ => return None,
            });
            i += 1;
        }
    }
    Some(out)
}

/// A number (seconds) or a duration literal like `1h30m` or `500ms`.
fn literal_seconds(t: &str) -> Option<f64> {
    if let Ok(v) = t.parse::<f64>() {
        return Some(v);
    }
    parse_duration(t).ok().map(|ms| ms as f64 / 1000.0)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    step: f64,
    range: f64,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    // expr := term (('+'|'-') term)*
    fn expr(&mut self) -> Option<f64> {
        let mut v = self.term()?;
        loop {
            if self.eat(&Tok::Op('+')) {
                v += self.term()?;
            } else if self.eat(&Tok::Op('-')) {
                v -= self.term()?;
            } else {
                return Some(v);
            }
        }
    }

    // term := unary (('*'|'/'|'%') unary)*
    fn term(&mut self) -> Option<f64> {
        let mut v = self.unary()?;
        loop {
            if self.eat(&Tok::Op('*')) {
                v *= self.unary()?;
            } else if self.eat(&Tok::Op('/')) {
                v /= self.unary()?;
            } else if self.eat(&Tok::Op('%')) {
                v %= self.unary()?;
            } else {
                return Some(v);
            }
        }
    }

    // unary := ('-'|'+') unary | power ; as in PromQL, -2 ^ 2 is -(2 ^ 2).
    fn unary(&mut self) -> Option<f64> {
        if self.eat(&Tok::Op('-')) {
            return Some(-self.unary()?);
        }
        if self.eat(&Tok::Op('+')) {
            return self.unary();
        }
        self.power()
    }

    // power := atom ('^' unary)?   (right-associative)
    fn power(&mut self) -> Option<f64> {
        let base = self.atom()?;
        if self.eat(&Tok::Op('^')) {
            let exp = self.unary()?;
            return Some(base.powf(exp));
        }
        Some(base)
    }

    fn atom(&mut self) -> Option<f64> {
        match self.peek()?.clone() {
            Tok::Num(v) => {
                self.pos += 1;
                Some(v)
            }
            Tok::LParen => {
                self.pos += 1;
                let v = self.expr()?;
                self.eat(&Tok::RParen).then_some(v)
            }
            Tok::Ident(name) => {
                self.pos += 1;
                if !self.eat(&Tok::LParen) {
                    return None;
                }
                let mut args = Vec::new();
                if !self.eat(&Tok::RParen) {
                    loop {
                        args.push(self.expr()?);
                        if self.eat(&Tok::RParen) {
                            break;
                        }
                        if !self.eat(&Tok::Comma) {
                            return None;
                        }
                    }
                }
                match (name.as_str(), args.as_slice()) {
                    ("step", []) => Some(self.step),
                    ("range", []) => Some(self.range),
                    ("min_of", [a, rest @ ..]) => Some(rest.iter().fold(*a, |x, &y| x.min(y))),
                    ("max_of", [a, rest @ ..]) => Some(rest.iter().fold(*a, |x, &y| x.max(y))),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Parses a Prometheus duration (`1h30m`, `10s53ms`, `0`); a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return Ok((v * 1000.0).round() as i64);
    }
    crate::duration::parse_duration_ms(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn computes_range_step_and_offset_expressions() {
        assert_eq!(
            rewrite("changes(x[26m+4m])", 0, 0).as_deref(),
            Some("changes(x[1800000ms])")
        );
        assert_eq!(
            rewrite("sum_over_time(x[29s+1s:5s+5s])", 0, 0).as_deref(),
            Some("sum_over_time(x[30000ms:10000ms])")
        );
        assert_eq!(
            rewrite("x offset (100 + 2)", 0, 0).as_deref(),
            Some("x offset 102000ms")
        );
        assert_eq!(
            rewrite("x offset -min_of(step(), 1s)+8000", 5000, 0).as_deref(),
            Some("x offset -1000ms+8000")
        );
        assert_eq!(
            rewrite("count_over_time(x[range()])", 0, 10_000).as_deref(),
            Some("count_over_time(x[10000ms])")
        );
        assert_eq!(rewrite("rate(x[5m]) offset 1m", 0, 0), None);
        assert_eq!(rewrite("x{a=\"[1+1]\"}", 0, 0), None);
    }

    #[test]
    fn marks_instant_selectors_with_modifiers() {
        use super::strip_range_modifiers;
        let (q, modes) = strip_range_modifiers("rate(x[5m] smoothed) + y @ 100 smoothed").unwrap();
        assert_eq!(
            q,
            "rate(x[5m]) + y{__closedloop_range_mode__=\"smoothed\"} @ 100"
        );
        assert_eq!(modes, vec![super::RangeMode::Smoothed]);
        let (q, _) = strip_range_modifiers("z{a=\"b\"} offset -100 smoothed + 0").unwrap();
        assert_eq!(
            q,
            "z{a=\"b\", __closedloop_range_mode__=\"smoothed\"} offset -100 + 0"
        );
    }
}
