//! Annotation and label templates: the subset of Go's `text/template` that
//! Prometheus rule files use in practice, with Prometheus's template functions.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming, comments
//! `{{/* */}}`, pipelines (`a | f b`), variables (`$labels`, `$externalLabels`,
//! `$externalURL`, `$value`, `$` and any declared with `:=`), field access on maps
//! and on the dot (`.Labels.x`, `.Value`), parentheses, string / raw-string /
//! number / bool literals, `if`/`else if`/`else`, `range` (over a label map, sorted
//! by key, with `$k, $v :=` or over the dot) and `with`.
//! Functions: `humanize`, `humanize1024`, `humanizeDuration`, `humanizePercentage`,
//! `humanizeTimestamp`, `printf`, `print`, `toUpper`, `toLower`, `title`,
//! `reReplaceAll`, `match`, `stripPort`, `safeHtml`, `externalURL`, `pathPrefix`,
//! `parseDuration`, Prometheus's query helpers `query`, `first`, `label`, `value`,
//! `sortByLabel` (a query runs as an instant query at the evaluation time), and Go's
//! `eq ne lt le gt ge and or not len index`.
//!
//! Invariants: parsing rejects unknown functions and undefined variables (as Go
//! does), so a template that loads never fails on that at run time; expansion never
//! panics — a run-time problem (wrong argument type) becomes an error string, which
//! the caller puts into the output as Prometheus does (`<error expanding template:
//! ...>`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

type Result<T, E = TemplateError> = std::result::Result<T, E>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(TemplateError(msg.into()))
}

/// The functions a template may call.
const FUNCTIONS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "printf",
    "print",
    "toUpper",
    "toLower",
    "title",
    "reReplaceAll",
    "match",
    "stripPort",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "index",
    "safeHtml",
    "externalURL",
    "pathPrefix",
    "parseDuration",
    "query",
    "first",
    "label",
    "value",
    "sortByLabel",
];

/// One sample a template's `query` returned: labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs a template's `query` (an instant query at the evaluation time).
pub type QueryFn<'q> = &'q dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

/// The data a template sees: `$labels`, `$externalLabels`, `$externalURL`, `$value`,
/// and how its `query` function runs (none: `query` is an error at expansion).
#[derive(Clone, Default)]
pub struct TemplateData<'q> {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
    pub query: Option<QueryFn<'q>>,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// Plain text without actions: expansion is a copy.
    plain: Option<String>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        key: Option<String>,
        val: Option<String>,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// `$x :=` / `$x =` (assignment) before the commands.
    decl: Option<String>,
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
struct Cmd {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Func(String),
    Var(String, Vec<String>),
    Dot(Vec<String>),
    Str(String),
    Num(f64),
    Int(i64),
    Bool(bool),
    Nil,
    Sub(Pipeline, Vec<String>),
}

/// A template value.
#[derive(Debug, Clone)]
enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    Map(Arc<BTreeMap<String, String>>),
    Samples(Arc<Vec<QuerySample>>),
    Sample(Arc<QuerySample>),
    Root,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template> {
        if !text.contains("{{") {
            return Ok(Template {
                nodes: Vec::new(),
                plain: Some(text.to_string()),
            });
        }
        let items = lex(text)?;
        let mut p = Parser {
            items,
            pos: 0,
            scopes: vec![vec![
                "$".into(),
                "$labels".into(),
                "$externalLabels".into(),
                "$externalURL".into(),
                "$value".into(),
            ]],
        };
        let (nodes, end) = p.list()?;
        if let Some(e) = end {
            return err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes, plain: None })
    }

    /// Expands the template; a run-time error is returned as text.
    pub fn expand(&self, data: &TemplateData<'_>) -> Result<String, String> {
        if let Some(p) = &self.plain {
            return Ok(p.clone());
        }
        let mut ex = Exec {
            data,
            labels: Arc::new(data.labels.clone()),
            ext: Arc::new(data.external_labels.clone()),
            vars: Vec::new(),
            out: String::new(),
        };
        ex.run(&self.nodes, &Val::Root)?;
        Ok(ex.out)
    }
}

/// Expands `text` as Prometheus does for annotations and labels: an expansion error
/// becomes `<error expanding template: ...>` in the output.
pub fn expand_or_error(t: &Template, data: &TemplateData<'_>) -> String {
    match t.expand(data) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone)]
enum Item {
    Text(String),
    Action(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Var(String),
    Field(String),
    Dot,
    Str(String),
    Num(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn lex(text: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (mut before, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        if trim_next {
            before = before.trim_start();
        }
        let Some(after) = after else {
            if !before.is_empty() {
                items.push(Item::Text(before.to_string()));
            }
            break;
        };
        let (trim_left, inner_start) = match after.strip_prefix("- ") {
            Some(a) => (true, a),
            None => match after
                .strip_prefix("-\t")
                .or_else(|| after.strip_prefix("-\n"))
            {
                Some(a) => (true, a),
                None => (false, after),
            },
        };
        let before = if trim_left { before.trim_end() } else { before };
        if !before.is_empty() {
            items.push(Item::Text(before.to_string()));
        }
        let inner = inner_start.trim_start();
        if let Some(c) = inner.strip_prefix("/*") {
            let Some(end) = c.find("*/") else {
                return err("unclosed comment");
            };
            let tail = c[end + 2..].trim_start();
            let (tail, trim) = if let Some(t) = tail.strip_prefix("-}}") {
                (t, true)
            } else if let Some(t) = tail.strip_prefix("}}") {
                (t, false)
            } else {
                return err("comment ends before closing delimiter");
            };
            rest = tail;
            trim_next = trim;
            continue;
        }
        let (toks, consumed, trim) = lex_action(inner)?;
        items.push(Item::Action(toks));
        rest = &inner[consumed..];
        trim_next = trim;
    }
    Ok(items)
}

/// Lexes one action up to its closing `}}`; returns tokens, bytes consumed and
/// whether it closed with `-}}`.
fn lex_action(s: &str) -> Result<(Vec<Tok>, usize, bool)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
            if s[i..].trim_start().starts_with("-}}") {
                let j = i + (s[i..].len() - s[i..].trim_start().len());
                return Ok((toks, j + 3, true));
            }
            i += 1;
            continue;
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, i + 2, false));
        }
        match c {
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            b'"' => {
                let mut out = String::new();
                let mut j = i + 1;
                let mut closed = false;
                let chars: Vec<(usize, char)> = s[j..].char_indices().collect();
                let mut k = 0;
                while k < chars.len() {
                    let (off, ch) = chars[k];
                    if ch == '"' {
                        j = j + off + 1;
                        closed = true;
                        break;
                    }
                    if ch == '\n' {
                        return err("unterminated quoted string");
                    }
                    if ch == '\\' {
                        k += 1;
                        let Some(&(_, e)) = chars.get(k) else {
                            return err("unterminated quoted string");
                        };
                        match e {
                            'n' => out.push('\n'),
                            't' => out.push('\t'),
                            'r' => out.push('\r'),
                            '\\' => out.push('\\'),
                            '"' => out.push('"'),
                            '\'' => out.push('\''),
                            other => {
                                return err(format!("invalid escape \\{other} in string"));
                            }
                        }
                    } else {
                        out.push(ch);
                    }
                    k += 1;
                }
                if !closed {
                    return err("unterminated quoted string");
                }
                toks.push(Tok::Str(out));
                i = j;
            }
            b'`' => {
                let Some(end) = s[i + 1..].find('`') else {
                    return err("unterminated raw quoted string");
                };
                toks.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
                i = i + 2 + end;
            }
            b'$' => {
                let j = ident_end(b, i + 1);
                toks.push(Tok::Var(s[i..j].to_string()));
                i = j;
            }
            b'.' => {
                let j = ident_end(b, i + 1);
                if j == i + 1 {
                    toks.push(Tok::Dot);
                } else {
                    toks.push(Tok::Field(s[i + 1..j].to_string()));
                }
                i = j;
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || ((b[j] == b'-' || b[j] == b'+') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                toks.push(Tok::Num(s[i..j].to_string()));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let j = ident_end(b, i);
                toks.push(Tok::Ident(s[i..j].to_string()));
                i = j;
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return err(format!("unexpected {ch:?} in action"));
            }
        }
    }
    err("unclosed action")
}

fn ident_end(b: &[u8], mut j: usize) -> usize {
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    j
}

// ---------------------------------------------------------------- parsing

struct Parser {
    items: Vec<Item>,
    pos: usize,
    scopes: Vec<Vec<String>>,
}

/// The keyword that ended a list: `end`, `else`, or `else if ...` (tokens after).
enum ListEnd {
    End,
    Else(Vec<Tok>),
}

impl std::fmt::Display for ListEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListEnd::End => f.write_str("end"),
            ListEnd::Else(_) => f.write_str("else"),
        }
    }
}

impl Parser {
    fn defined(&self, v: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|x| x == v))
    }

    fn declare(&mut self, v: &str) {
        if let Some(s) = self.scopes.last_mut() {
            s.push(v.to_string());
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, Option<ListEnd>)> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let item = self.items[self.pos].clone();
            self.pos += 1;
            match item {
                Item::Text(t) => nodes.push(Node::Text(t)),
                Item::Action(toks) => {
                    let kw = match toks.first() {
                        Some(Tok::Ident(k)) => k.as_str(),
                        _ => "",
                    };
                    match kw {
                        "end" => {
                            if toks.len() != 1 {
                                return err("unexpected tokens after end");
                            }
                            return Ok((nodes, Some(ListEnd::End)));
                        }
                        "else" => return Ok((nodes, Some(ListEnd::Else(toks[1..].to_vec())))),
                        "if" => nodes.push(self.parse_if(toks[1..].to_vec())?),
                        "range" => nodes.push(self.parse_range(&toks[1..])?),
                        "with" => nodes.push(self.parse_with(&toks[1..])?),
                        "define" | "template" | "block" | "break" | "continue" => {
                            return err(format!("{{{{{kw}}}}} is not supported"));
                        }
                        _ => {
                            let p = self.pipeline(&toks, true)?;
                            nodes.push(Node::Action(p));
                        }
                    }
                }
            }
        }
        Ok((nodes, None))
    }

    fn scoped_list(&mut self) -> Result<(Vec<Node>, ListEnd)> {
        self.scopes.push(Vec::new());
        let r = self.list();
        self.scopes.pop();
        match r? {
            (n, Some(e)) => Ok((n, e)),
            (_, None) => err("unexpected EOF: missing {{end}}"),
        }
    }

    fn parse_if(&mut self, cond: Vec<Tok>) -> Result<Node> {
        let mut branches = Vec::new();
        let mut cond = cond;
        loop {
            self.scopes.push(Vec::new());
            let p = self.pipeline(&cond, true);
            let body = p.and_then(|p| {
                let r = self.list();
                r.map(|(n, e)| (p, n, e))
            });
            self.scopes.pop();
            let (p, body, end) = body?;
            branches.push((p, body));
            match end {
                None => return err("unexpected EOF: missing {{end}} for if"),
                Some(ListEnd::End) => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                Some(ListEnd::Else(rest)) => {
                    if let Some(Tok::Ident(k)) = rest.first() {
                        if k == "if" {
                            cond = rest[1..].to_vec();
                            continue;
                        }
                    }
                    if !rest.is_empty() {
                        return err("unexpected tokens after else");
                    }
                    let (otherwise, end) = self.scoped_list()?;
                    if !matches!(end, ListEnd::End) {
                        return err("expected {{end}} after {{else}}");
                    }
                    return Ok(Node::If {
                        branches,
                        otherwise,
                    });
                }
            }
        }
    }

    fn parse_range(&mut self, toks: &[Tok]) -> Result<Node> {
        // `$k, $v := pipe`, `$v := pipe` or `pipe`.
        let (key, val, rest) = match toks {
            [Tok::Var(k), Tok::Comma, Tok::Var(v), Tok::Declare, rest @ ..] => {
                (Some(k.clone()), Some(v.clone()), rest)
            }
            [Tok::Var(v), Tok::Declare, rest @ ..] => (None, Some(v.clone()), rest),
            _ => (None, None, toks),
        };
        let pipe = self.pipeline(rest, false)?;
        self.scopes.push(Vec::new());
        for v in key.iter().chain(val.iter()) {
            self.declare(v);
        }
        let r = self.list();
        self.scopes.pop();
        let (body, end) = r?;
        let otherwise = match end {
            None => return err("unexpected EOF: missing {{end}} for range"),
            Some(ListEnd::End) => Vec::new(),
            Some(ListEnd::Else(rest)) => {
                if !rest.is_empty() {
                    return err("unexpected tokens after else");
                }
                let (o, end) = self.scoped_list()?;
                if !matches!(end, ListEnd::End) {
                    return err("expected {{end}} after {{else}}");
                }
                o
            }
        };
        Ok(Node::Range {
            key,
            val,
            pipe,
            body,
            otherwise,
        })
    }

    fn parse_with(&mut self, toks: &[Tok]) -> Result<Node> {
        self.scopes.push(Vec::new());
        let pipe = self.pipeline(toks, true);
        let r = pipe.and_then(|p| self.list().map(|x| (p, x)));
        self.scopes.pop();
        let (pipe, (body, end)) = r?;
        let otherwise = match end {
            None => return err("unexpected EOF: missing {{end}} for with"),
            Some(ListEnd::End) => Vec::new(),
            Some(ListEnd::Else(_)) => {
                let (o, end) = self.scoped_list()?;
                if !matches!(end, ListEnd::End) {
                    return err("expected {{end}} after {{else}}");
                }
                o
            }
        };
        Ok(Node::With {
            pipe,
            body,
            otherwise,
        })
    }

    fn pipeline(&mut self, toks: &[Tok], allow_decl: bool) -> Result<Pipeline> {
        let (decl, rest) = match toks {
            [Tok::Var(v), Tok::Declare, rest @ ..] if allow_decl => (Some(v.clone()), rest),
            [Tok::Var(v), Tok::Assign, rest @ ..] if allow_decl => {
                if !self.defined(v) {
                    return err(format!("undefined variable \"{v}\""));
                }
                (Some(v.clone()), rest)
            }
            _ => (None, toks),
        };
        if rest.is_empty() {
            return err("missing value for command");
        }
        let mut cmds = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            let (cmd, next) = self.command(rest, i)?;
            cmds.push(cmd);
            i = next;
            if i < rest.len() {
                if rest[i] != Tok::Pipe {
                    return err(format!("unexpected {:?} in command", rest[i]));
                }
                i += 1;
                if i == rest.len() {
                    return err("missing command after |");
                }
            }
        }
        if let Some(v) = &decl {
            self.declare(v);
        }
        Ok(Pipeline { decl, cmds })
    }

    /// One command: operands until `|` or the end (or `)` at depth 0).
    fn command(&mut self, toks: &[Tok], mut i: usize) -> Result<(Cmd, usize)> {
        let mut args = Vec::new();
        while i < toks.len() && toks[i] != Tok::Pipe {
            let (a, next) = self.operand(toks, i)?;
            if matches!(a, Arg::Func(_)) && !args.is_empty() {
                // A function name in argument position is a call with no arguments
                // only for niladic functions; Go rejects it otherwise.
                return err("function used as an argument; use parentheses");
            }
            args.push(a);
            i = next;
        }
        if args.is_empty() {
            return err("empty command");
        }
        Ok((Cmd { args }, i))
    }

    fn fields(toks: &[Tok], mut i: usize) -> (Vec<String>, usize) {
        let mut f = Vec::new();
        while let Some(Tok::Field(x)) = toks.get(i) {
            f.push(x.clone());
            i += 1;
        }
        (f, i)
    }

    fn operand(&mut self, toks: &[Tok], i: usize) -> Result<(Arg, usize)> {
        match &toks[i] {
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok((Arg::Bool(true), i + 1)),
                "false" => Ok((Arg::Bool(false), i + 1)),
                "nil" => Ok((Arg::Nil, i + 1)),
                n if FUNCTIONS.contains(&n) => Ok((Arg::Func(n.to_string()), i + 1)),
                n => err(format!("function \"{n}\" not defined")),
            },
            Tok::Var(v) => {
                if !self.defined(v) {
                    return err(format!("undefined variable \"{v}\""));
                }
                let (f, j) = Self::fields(toks, i + 1);
                Ok((Arg::Var(v.clone(), f), j))
            }
            Tok::Dot => Ok((Arg::Dot(Vec::new()), i + 1)),
            Tok::Field(_) => {
                let (f, j) = Self::fields(toks, i);
                Ok((Arg::Dot(f), j))
            }
            Tok::Str(s) => Ok((Arg::Str(s.clone()), i + 1)),
            Tok::Num(n) => {
                if let Ok(v) = n.parse::<i64>() {
                    Ok((Arg::Int(v), i + 1))
                } else if let Ok(v) = n.parse::<f64>() {
                    Ok((Arg::Num(v), i + 1))
                } else {
                    err(format!("bad number syntax: {n:?}"))
                }
            }
            Tok::LParen => {
                // Find the matching parenthesis.
                let mut depth = 0;
                let mut j = i;
                loop {
                    match toks.get(j) {
                        None => return err("unclosed left paren"),
                        Some(Tok::LParen) => depth += 1,
                        Some(Tok::RParen) => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let p = self.pipeline(&toks[i + 1..j], false)?;
                let (f, k) = Self::fields(toks, j + 1);
                Ok((Arg::Sub(p, f), k))
            }
            Tok::RParen => err("unexpected right paren"),
            t => err(format!("unexpected {t:?} in operand")),
        }
    }
}

// ---------------------------------------------------------------- execution

struct Exec<'a> {
    data: &'a TemplateData<'a>,
    labels: Arc<BTreeMap<String, String>>,
    ext: Arc<BTreeMap<String, String>>,
    vars: Vec<(String, Val)>,
    out: String,
}

type RunResult<T> = std::result::Result<T, String>;

impl Exec<'_> {
    fn run(&mut self, nodes: &[Node], dot: &Val) -> RunResult<()> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.decl.is_none() {
                        let s = print_val(&v, self);
                        self.out.push_str(&s);
                    }
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let c = self.pipe(cond, dot)?;
                        if truth(&c) {
                            self.run(body, dot)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.run(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::With {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    if truth(&v) {
                        self.run(body, &v)?;
                    } else {
                        self.run(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range {
                    key,
                    val,
                    pipe,
                    body,
                    otherwise,
                } => {
                    let v = self.pipe(pipe, dot)?;
                    let entries: Vec<(Val, Val)> = match &v {
                        Val::Map(m) => m
                            .iter()
                            .map(|(k, v)| (Val::Str(k.clone()), Val::Str(v.clone())))
                            .collect(),
                        Val::Int(n) => (0..*n).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                        Val::Samples(v) => v
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (Val::Int(i as i64), Val::Sample(Arc::new(s.clone()))))
                            .collect(),
                        Val::Nil => Vec::new(),
                        other => {
                            return Err(format!("range can't iterate over {}", type_name(other)))
                        }
                    };
                    if entries.is_empty() {
                        self.run(otherwise, dot)?;
                        continue;
                    }
                    for (k, v) in entries {
                        let mark = self.vars.len();
                        match (key, val) {
                            (Some(kn), Some(vn)) => {
                                self.vars.push((kn.clone(), k));
                                self.vars.push((vn.clone(), v.clone()));
                            }
                            (None, Some(vn)) => self.vars.push((vn.clone(), v.clone())),
                            _ => {}
                        }
                        self.run(body, &v)?;
                        self.vars.truncate(mark);
                    }
                }
            }
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Val {
        if let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) {
            return v.clone();
        }
        match name {
            "$labels" => Val::Map(self.labels.clone()),
            "$externalLabels" => Val::Map(self.ext.clone()),
            "$externalURL" => Val::Str(self.data.external_url.clone()),
            "$value" => Val::Num(self.data.value),
            "$" => Val::Root,
            _ => Val::Nil,
        }
    }

    fn field(&self, v: Val, f: &str) -> RunResult<Val> {
        match v {
            Val::Root => Ok(match f {
                "Labels" => Val::Map(self.labels.clone()),
                "ExternalLabels" => Val::Map(self.ext.clone()),
                "ExternalURL" => Val::Str(self.data.external_url.clone()),
                "Value" => Val::Num(self.data.value),
                _ => return Err(format!("can't evaluate field {f}")),
            }),
            Val::Map(m) => Ok(Val::Str(m.get(f).cloned().unwrap_or_default())),
            Val::Sample(s) => Ok(match f {
                "Labels" => Val::Map(Arc::new(s.labels.clone())),
                "Value" => Val::Num(s.value),
                _ => return Err(format!("can't evaluate field {f} in type sample")),
            }),
            Val::Nil => Ok(Val::Nil),
            other => Err(format!(
                "can't evaluate field {f} in type {}",
                type_name(&other)
            )),
        }
    }

    fn pipe(&mut self, p: &Pipeline, dot: &Val) -> RunResult<Val> {
        let mut prev: Option<Val> = None;
        for c in &p.cmds {
            prev = Some(self.cmd(c, dot, prev)?);
        }
        let v = prev.unwrap_or(Val::Nil);
        if let Some(d) = &p.decl {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == d) {
                slot.1 = v.clone();
            } else {
                self.vars.push((d.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> RunResult<Val> {
        Ok(match a {
            Arg::Func(f) => return self.call(f, Vec::new()),
            Arg::Var(v, fields) => {
                let mut x = self.var(v);
                for f in fields {
                    x = self.field(x, f)?;
                }
                x
            }
            Arg::Dot(fields) => {
                let mut x = dot.clone();
                for f in fields {
                    x = self.field(x, f)?;
                }
                x
            }
            Arg::Str(s) => Val::Str(s.clone()),
            Arg::Num(n) => Val::Num(*n),
            Arg::Int(n) => Val::Int(*n),
            Arg::Bool(b) => Val::Bool(*b),
            Arg::Nil => Val::Nil,
            Arg::Sub(p, fields) => {
                let mut x = self.pipe(p, dot)?;
                for f in fields {
                    x = self.field(x, f)?;
                }
                x
            }
        })
    }

    fn cmd(&mut self, c: &Cmd, dot: &Val, prev: Option<Val>) -> RunResult<Val> {
        match &c.args[0] {
            Arg::Func(f) => {
                let mut args = Vec::with_capacity(c.args.len());
                for a in &c.args[1..] {
                    args.push(self.arg(a, dot)?);
                }
                if let Some(p) = prev {
                    args.push(p);
                }
                self.call(f, args)
            }
            a => {
                if c.args.len() > 1 || prev.is_some() {
                    return Err("can't give argument to non-function".into());
                }
                self.arg(a, dot)
            }
        }
    }

    fn call(&mut self, f: &str, args: Vec<Val>) -> RunResult<Val> {
        let n = args.len();
        let want = |k: usize| -> RunResult<()> {
            if n == k {
                Ok(())
            } else {
                Err(format!("wrong number of args for {f}: want {k} got {n}"))
            }
        };
        Ok(match f {
            "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage"
            | "humanizeTimestamp" => {
                want(1)?;
                let v = to_float(&args[0])?;
                Val::Str(match f {
                    "humanize" => humanize(v),
                    "humanize1024" => humanize1024(v),
                    "humanizeDuration" => humanize_duration(v),
                    "humanizePercentage" => format!("{}%", go_fmt_g(v * 100.0, Some(4))),
                    _ => humanize_timestamp(v)
                        .map_err(|e| format!("error calling humanizeTimestamp: {e}"))?,
                })
            }
            "printf" => {
                if n == 0 {
                    return Err("wrong number of args for printf: want at least 1 got 0".into());
                }
                let Val::Str(fmt) = &args[0] else {
                    return Err("printf: format must be a string".into());
                };
                Val::Str(sprintf(fmt, &args[1..], self))
            }
            "print" => {
                let mut s = String::new();
                for (i, a) in args.iter().enumerate() {
                    let is_str = matches!(a, Val::Str(_));
                    let prev_str = i > 0 && matches!(args[i - 1], Val::Str(_));
                    if i > 0 && !is_str && !prev_str {
                        s.push(' ');
                    }
                    s.push_str(&print_val(a, self));
                }
                Val::Str(s)
            }
            "toUpper" | "toLower" | "title" | "stripPort" => {
                want(1)?;
                let s = to_str(&args[0], f)?;
                Val::Str(match f {
                    "toUpper" => s.to_uppercase(),
                    "toLower" => s.to_lowercase(),
                    "title" => title(&s),
                    _ => strip_port(&s),
                })
            }
            "reReplaceAll" => {
                want(3)?;
                let pat = to_str(&args[0], f)?;
                let repl = to_str(&args[1], f)?;
                let text = to_str(&args[2], f)?;
                // Go's ReplaceAllString: unanchored, `$1` / `${1}` expand groups.
                let re = regex::Regex::new(&pat).map_err(|e| format!("reReplaceAll: {e}"))?;
                Val::Str(re.replace_all(&text, repl.as_str()).into_owned())
            }
            "match" => {
                want(2)?;
                let pat = to_str(&args[0], f)?;
                let text = to_str(&args[1], f)?;
                let re = regex::Regex::new(&pat).map_err(|e| format!("match: {e}"))?;
                Val::Bool(re.is_match(&text))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if n < 2 {
                    return Err(format!("missing argument for comparison {f}"));
                }
                let ord = |a: &Val, b: &Val| -> RunResult<std::cmp::Ordering> {
                    match (a, b) {
                        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
                        (Val::Bool(x), Val::Bool(y)) if f == "eq" || f == "ne" => Ok(x.cmp(y)),
                        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
                        (Val::Num(_) | Val::Int(_), Val::Num(_) | Val::Int(_)) => {
                            let (x, y) = (to_float(a)?, to_float(b)?);
                            x.partial_cmp(&y)
                                .ok_or_else(|| "incomparable values".to_string())
                        }
                        _ => Err(format!("incompatible types for comparison {f}")),
                    }
                };
                if f == "eq" {
                    let mut any = false;
                    for b in &args[1..] {
                        if ord(&args[0], b)? == std::cmp::Ordering::Equal {
                            any = true;
                        }
                    }
                    Val::Bool(any)
                } else {
                    want(2)?;
                    let o = ord(&args[0], &args[1])?;
                    use std::cmp::Ordering::*;
                    Val::Bool(match f {
                        "ne" => o != Equal,
                        "lt" => o == Less,
                        "le" => o != Greater,
                        "gt" => o == Greater,
                        _ => o != Less,
                    })
                }
            }
            "and" | "or" => {
                if n == 0 {
                    return Err(format!("wrong number of args for {f}"));
                }
                let mut last = Val::Nil;
                for a in args {
                    let t = truth(&a);
                    last = a;
                    if (f == "and" && !t) || (f == "or" && t) {
                        break;
                    }
                }
                last
            }
            "not" => {
                want(1)?;
                Val::Bool(!truth(&args[0]))
            }
            "len" => {
                want(1)?;
                match &args[0] {
                    Val::Str(s) => Val::Int(s.len() as i64),
                    Val::Map(m) => Val::Int(m.len() as i64),
                    Val::Samples(v) => Val::Int(v.len() as i64),
                    other => return Err(format!("len of type {}", type_name(other))),
                }
            }
            "index" => {
                want(2)?;
                match (&args[0], &args[1]) {
                    (Val::Map(m), Val::Str(k)) => Val::Str(m.get(k).cloned().unwrap_or_default()),
                    (Val::Root, Val::Str(k)) => self.field(Val::Root, k)?,
                    _ => return Err("index of untyped value".into()),
                }
            }
            "safeHtml" => {
                want(1)?;
                Val::Str(to_str(&args[0], f)?)
            }
            "externalURL" => {
                want(0)?;
                Val::Str(self.data.external_url.clone())
            }
            "pathPrefix" => {
                want(0)?;
                let u = &self.data.external_url;
                let path = u
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                    .unwrap_or_default();
                Val::Str(path.trim_end_matches('/').to_string())
            }
            "parseDuration" => {
                want(1)?;
                let s = to_str(&args[0], f)?;
                let d = crate::duration::parse_duration(&s).map_err(|e| e.to_string())?;
                Val::Num(d.as_secs_f64())
            }
            "query" => {
                want(1)?;
                let q = to_str(&args[0], f)?;
                let run = self
                    .data
                    .query
                    .ok_or_else(|| "query is not available here".to_string())?;
                Val::Samples(Arc::new(run(&q)?))
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::Samples(v) => match v.first() {
                        Some(s) => Val::Sample(Arc::new(s.clone())),
                        None => return Err("first() called on vector with no elements".into()),
                    },
                    other => return Err(format!("first of {}", type_name(other))),
                }
            }
            "label" => {
                want(2)?;
                let name = to_str(&args[0], f)?;
                match &args[1] {
                    Val::Sample(s) => Val::Str(s.labels.get(&name).cloned().unwrap_or_default()),
                    other => return Err(format!("label of {}", type_name(other))),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(s) => Val::Num(s.value),
                    other => return Err(format!("value of {}", type_name(other))),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let name = to_str(&args[0], f)?;
                match &args[1] {
                    Val::Samples(v) => {
                        let mut v = (**v).clone();
                        v.sort_by(|a, b| a.labels.get(&name).cmp(&b.labels.get(&name)));
                        Val::Samples(Arc::new(v))
                    }
                    other => return Err(format!("sortByLabel of {}", type_name(other))),
                }
            }
            other => return Err(format!("function {other:?} not defined")),
        })
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Num(_) => "float64",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::Samples(_) => "queryResult",
        Val::Sample(_) => "sample",
        Val::Root => "struct",
    }
}

fn truth(v: &Val) -> bool {
    match v {
        Val::Nil => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Num(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Map(m) => !m.is_empty(),
        Val::Samples(v) => !v.is_empty(),
        Val::Sample(_) => true,
        Val::Root => true,
    }
}

fn to_float(v: &Val) -> RunResult<f64> {
    match v {
        Val::Num(f) => Ok(*f),
        Val::Int(i) => Ok(*i as f64),
        Val::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        other => Err(format!("can't convert {} to float", type_name(other))),
    }
}

fn to_str(v: &Val, f: &str) -> RunResult<String> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value; expected string; got {} in {f}",
            type_name(other)
        )),
    }
}

fn print_val(v: &Val, ex: &Exec<'_>) -> String {
    match v {
        Val::Nil => "<no value>".into(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Num(f) => go_fmt_g(*f, None),
        Val::Str(s) => s.clone(),
        Val::Map(m) => {
            let mut s = String::from("map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                let _ = write!(s, "{k}:{v}");
            }
            s.push(']');
            s
        }
        Val::Samples(v) => format!("[{} samples]", v.len()),
        Val::Sample(s) => format!("{{{:?} {}}}", s.labels, go_fmt_g(s.value, None)),
        Val::Root => format!(
            "{{map{:?} map{:?} {} {}}}",
            ex.labels,
            ex.ext,
            ex.data.external_url,
            go_fmt_g(ex.data.value, None)
        ),
    }
}

/// Go's `%g` (shortest when `prec` is `None`, else `%.{prec}g`), as `strconv`
/// writes it: exponent form when the exponent is < -4 or >= the precision (6 for
/// the shortest form), at least two exponent digits, no trailing zeros.
pub(crate) fn go_fmt_g(v: f64, prec: Option<usize>) -> String {
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
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Decimal digits and exponent of v, shortest or rounded to `prec` digits.
    let e_repr = match prec {
        None => format!("{v:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
    };
    let (mant, exp) = e_repr.split_once('e').unwrap_or((&e_repr, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    // %g without '#' drops trailing zeros.
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let eprec = match prec {
        // strconv: the shortest form uses precision 6 for the %e decision.
        None => 6,
        Some(p) => p.max(1) as i32,
    };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_fmt_g(v, Some(4)))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_fmt_g(v, Some(4)))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_fmt_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_fmt_g(v, Some(4)));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_fmt_g(v, Some(4)))
}

/// Prometheus's `humanizeTimestamp` (`floatToTime`): seconds as a UTC time in Go's
/// `time.Time` notation, at millisecond precision (the float becomes nanoseconds,
/// truncated to a `model.Time` in milliseconds); NaN and ±Inf print as `%.4g`; a
/// value whose nanoseconds overflow an int64 is an error.
fn humanize_timestamp(v: f64) -> Result<String, String> {
    if v.is_nan() || v.is_infinite() {
        return Ok(go_fmt_g(v, Some(4)));
    }
    let ns = v * 1e9;
    // As Go: `timestamp > math.MaxInt64 || timestamp < math.MinInt64`, in floats.
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            go_fmt_g(v, None)
        ));
    }
    // Go's conversions truncate toward zero: float to int64 nanoseconds, then
    // nanoseconds to milliseconds.
    let ms = (ns as i64) / 1_000_000;
    let (secs, sub_ms) = (ms / 1000, ms % 1000);
    let Some(t) = chrono::DateTime::from_timestamp(secs, 0)
        .and_then(|t| t.checked_add_signed(chrono::TimeDelta::milliseconds(sub_ms)))
    else {
        return Err(format!(
            "{} is outside the representable time range",
            go_fmt_g(v, None)
        ));
    };
    let base = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let millis = t.timestamp_subsec_millis();
    let frac = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}").trim_end_matches('0').to_string()
    };
    Ok(format!("{base}{frac} +0000 UTC"))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    }
    match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_string(),
        _ => s.to_string(),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %x %%`
/// with flags `-+0 `, width and precision.
fn sprintf(fmt: &str, args: &[Val], ex: &Exec<'_>) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut argi = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut minus = false;
        let mut plus = false;
        let mut zero = false;
        let mut space = false;
        while let Some(&f) = it.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() {
                width.push(d);
                it.next();
            } else {
                break;
            }
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek() {
                if d.is_ascii_digit() {
                    p.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let num = to_float(arg).ok().filter(|_| !matches!(arg, Val::Str(_)));
        let mut s = match verb {
            'd' => match arg {
                Val::Int(i) => i.to_string(),
                Val::Num(f) => format!("%!d(float64={})", go_fmt_g(*f, None)),
                other => format!("%!d({}={})", type_name(other), print_val(other, ex)),
            },
            'f' | 'F' | 'e' | 'g' => match num {
                Some(f) if f.is_nan() => "NaN".into(),
                Some(f) if f.is_infinite() => if f > 0.0 { "+Inf" } else { "-Inf" }.into(),
                Some(f) => match verb {
                    'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), f),
                    'e' => {
                        let r = format!("{:.*e}", prec.unwrap_or(6), f);
                        match r.split_once('e') {
                            Some((m, e)) => {
                                let e: i32 = e.parse().unwrap_or(0);
                                format!(
                                    "{m}e{}{:02}",
                                    if e < 0 { '-' } else { '+' },
                                    e.unsigned_abs()
                                )
                            }
                            None => r,
                        }
                    }
                    _ => go_fmt_g(f, prec),
                },
                None => format!("%!{verb}({}={})", type_name(arg), print_val(arg, ex)),
            },
            'q' => format!("{:?}", print_val(arg, ex)),
            'x' => match arg {
                Val::Int(i) => format!("{i:x}"),
                Val::Str(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                other => print_val(other, ex),
            },
            's' | 'v' => {
                let s = print_val(arg, ex);
                match (verb, prec) {
                    ('s', Some(p)) => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            other => format!("%!{other}({}={})", type_name(arg), print_val(arg, ex)),
        };
        if let Some(f) = num {
            if (plus || space) && f >= 0.0 && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g' | 'v') {
                s.insert(0, if plus { '+' } else { ' ' });
            }
        }
        let w: usize = width.parse().unwrap_or(0);
        let len = s.chars().count();
        if len < w {
            let pad = w - len;
            if minus {
                s.push_str(&" ".repeat(pad));
            } else if zero && num.is_some() {
                let (sign, rest) = if s.starts_with(['-', '+']) {
                    s.split_at(1)
                } else {
                    ("", s.as_str())
                };
                s = format!("{sign}{}{rest}", "0".repeat(pad));
            } else {
                s.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&s);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[argi..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", type_name(a), print_val(a, ex));
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TemplateData<'static> {
        TemplateData {
            labels: [("instance", "db-1:9100"), ("job", "node")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external_labels: [("cluster".to_string(), "eu1".to_string())].into(),
            external_url: "http://cl:9096".into(),
            value: 0.12345,
            query: None,
        }
    }

    fn run(t: &str) -> String {
        Template::parse(t).unwrap().expand(&data()).unwrap()
    }

    #[test]
    fn labels_value_and_external_labels() {
        assert_eq!(
            run("{{ $labels.instance }} of {{$labels.job}} is {{ $value }}"),
            "db-1:9100 of node is 0.12345"
        );
        assert_eq!(run("{{ $externalLabels.cluster }}"), "eu1");
        assert_eq!(run("{{ .Labels.job }} {{ .Value }}"), "node 0.12345");
        assert_eq!(run("{{ $labels.missing }}"), "");
        assert_eq!(run("{{$externalURL}}/x"), "http://cl:9096/x");
    }

    #[test]
    fn humanize_family() {
        assert_eq!(run("{{ 1234567.0 | humanize }}"), "1.235M");
        assert_eq!(run("{{ humanize 0.00012 }}"), "120u");
        assert_eq!(run("{{ 0 | humanize }}"), "0");
        assert_eq!(run("{{ 1048576.0 | humanize1024 }}"), "1Mi");
        assert_eq!(run("{{ 93784.0 | humanizeDuration }}"), "1d 2h 3m 4s");
        assert_eq!(run("{{ 1.5 | humanizeDuration }}"), "1.5s");
        assert_eq!(run("{{ 0.0012 | humanizeDuration }}"), "1.2ms");
        assert_eq!(run("{{ $value | humanizePercentage }}"), "12.35%");
        assert_eq!(
            run("{{ 1435065584.128 | humanizeTimestamp }}"),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
    }

    /// Prometheus's `humanizeTimestamp` keeps milliseconds (`model.Time`), prints
    /// NaN/Inf with `%.4g` and refuses values whose nanoseconds overflow int64
    /// (template_test.go cases).
    #[test]
    fn humanize_timestamp_as_prometheus() {
        assert_eq!(
            humanize_timestamp(1435065584.128999).unwrap(),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(
            humanize_timestamp(0.0).unwrap(),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(
            humanize_timestamp(-1.5).unwrap(),
            "1969-12-31 23:59:58.5 +0000 UTC"
        );
        assert_eq!(humanize_timestamp(f64::NAN).unwrap(), "NaN");
        assert_eq!(humanize_timestamp(f64::INFINITY).unwrap(), "+Inf");
        assert_eq!(
            humanize_timestamp(1e20).unwrap_err(),
            "1e+20 cannot be represented as a nanoseconds timestamp since it overflows int64"
        );
        let t = Template::parse("{{ 1e20 | humanizeTimestamp }}").unwrap();
        assert!(expand_or_error(&t, &data()).starts_with(
            "<error expanding template: error calling humanizeTimestamp: 1e+20 cannot be represented"
        ));
    }

    #[test]
    fn printf_and_strings() {
        assert_eq!(run(r#"{{ printf "%.2f" $value }}"#), "0.12");
        assert_eq!(run(r#"{{ printf "%s=%d" "a" 3 }}"#), "a=3");
        assert_eq!(run(r#"{{ printf "%5.1f|%-4s|" 2.25 "x" }}"#), "  2.2|x   |");
        assert_eq!(
            run(r#"{{ "abc" | toUpper }}{{ "DEF" | toLower }}"#),
            "ABCdef"
        );
        assert_eq!(run(r#"{{ title "hello world" }}"#), "Hello World");
        assert_eq!(
            run(r#"{{ reReplaceAll "(.*):(.*)" "$1" $labels.instance }}"#),
            "db-1"
        );
        assert_eq!(run(r#"{{ $labels.instance | stripPort }}"#), "db-1");
    }

    #[test]
    fn control_flow() {
        assert_eq!(
            run("{{ if gt $value 0.1 }}high{{ else }}low{{ end }}"),
            "high"
        );
        assert_eq!(
            run(r#"{{ if eq $labels.job "x" }}x{{ else if eq $labels.job "node" }}n{{ end }}"#),
            "n"
        );
        assert_eq!(
            run("{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}"),
            "instance=db-1:9100;job=node;"
        );
        assert_eq!(
            run("{{ range $labels }}[{{ . }}]{{ end }}"),
            "[db-1:9100][node]"
        );
        assert_eq!(run("a  {{- 1 -}}  b"), "a1b");
        assert_eq!(run("{{/* note */}}x"), "x");
        assert_eq!(run("{{ $x := 5 }}{{ $x }}"), "5");
        assert_eq!(run("{{ with $labels.job }}{{ . }}{{ end }}"), "node");
    }

    #[test]
    fn query_helpers() {
        let q = |text: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(text, "up");
            Ok(vec![
                QuerySample {
                    labels: [("instance".to_string(), "b".to_string())].into(),
                    value: 0.0,
                },
                QuerySample {
                    labels: [("instance".to_string(), "a".to_string())].into(),
                    value: 1234.0,
                },
            ])
        };
        let mut d = data();
        d.query = Some(&q);
        let run = |t: &str| Template::parse(t).unwrap().expand(&d).unwrap();
        assert_eq!(
            run(r#"{{ with query "up" }}{{ . | first | value | humanize }}{{ end }}"#),
            "0"
        );
        assert_eq!(
            run(
                r#"{{ range query "up" | sortByLabel "instance" }}{{ .Labels.instance }}={{ .Value }};{{ end }}"#
            ),
            "a=1234;b=0;"
        );
        assert_eq!(run(r#"{{ query "up" | first | label "instance" }}"#), "b");
        assert_eq!(run("{{ pathPrefix }}|{{ externalURL }}"), "|http://cl:9096");
        assert_eq!(run(r#"{{ parseDuration "1m30s" }}"#), "90");
    }

    #[test]
    fn load_time_errors() {
        for (t, want) in [
            ("{{ $label.foo }}", "undefined variable \"$label\""),
            (
                "{{ queryRange \"up\" }}",
                "function \"queryRange\" not defined",
            ),
            ("{{ if 1 }}x", "missing {{end}}"),
            ("{{ $value ", "unclosed action"),
            ("{{ end }}", "unexpected {{end}}"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_fmt_g(1e6, None), "1e+06");
        assert_eq!(go_fmt_g(123456.0, None), "123456");
        assert_eq!(go_fmt_g(1234567.0, None), "1.234567e+06");
        assert_eq!(go_fmt_g(0.0001, None), "0.0001");
        assert_eq!(go_fmt_g(0.00001, None), "1e-05");
        assert_eq!(go_fmt_g(1234.5678, Some(4)), "1235");
        assert_eq!(go_fmt_g(12345.0, Some(4)), "1.234e+04");
    }
}
