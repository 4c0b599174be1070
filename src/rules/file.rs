//! Rule files: the Prometheus rule-file schema plus closedloop's extensions, parsed
//! strictly and validated into [`GroupSpec`]s that hold parsed expressions and
//! templates, so evaluation never re-parses.
//!
//! Invariants: a file either loads whole or not at all; every error names the file
//! and the line, and the group and rule when there is one; nothing here panics on
//! input.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use promql_parser::parser::Expr;
use serde::Deserialize;

use crate::anomaly::DetectorSpec;
use crate::duration::PromDuration;
use crate::storage::{is_valid_label_name, is_valid_metric_name};

use super::action::RuleAction;
use super::template::Template;
use super::RuleError;

// ------------------------------------------------------------ the YAML schema

/// A scalar YAML may write as a string, number or bool (`expr: 1`).
#[derive(Debug, Clone, Default)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Text(s)),
            serde_yaml::Value::Number(n) => Ok(Text(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Text(b.to_string())),
            serde_yaml::Value::Null => Ok(Text(String::new())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    groups: Vec<GroupYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupYaml {
    name: String,
    #[serde(default)]
    interval: Option<PromDuration>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    query_offset: Option<PromDuration>,
    #[serde(default)]
    labels: BTreeMap<String, Text>,
    #[serde(default)]
    rules: Vec<RuleYaml>,
    /// closedloop: streaming detectors run by the anomaly stage.
    #[serde(default)]
    detectors: Vec<DetectorSpec>,
    /// closedloop: evaluate against this Prometheus-compatible query API.
    #[serde(default)]
    datasource: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    #[serde(default)]
    record: Option<Text>,
    #[serde(default)]
    alert: Option<Text>,
    #[serde(default)]
    expr: Text,
    #[serde(default, rename = "for")]
    for_: Option<PromDuration>,
    #[serde(default)]
    keep_firing_for: Option<PromDuration>,
    #[serde(default)]
    labels: BTreeMap<String, Text>,
    #[serde(default)]
    annotations: BTreeMap<String, Text>,
    #[serde(default)]
    actions: Vec<BTreeMap<String, serde_yaml::Value>>,
    #[serde(default)]
    cooldown: Option<PromDuration>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    approval: Option<Approval>,
    #[serde(default)]
    resolve_for: Option<PromDuration>,
    #[serde(default)]
    resolve_expr: Option<Text>,
}

/// Human approval before the rule's actions run (`approval: true` or a map), as
/// written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
enum Approval {
    Required(bool),
    Detailed(ApprovalSpec),
}

/// The long form of `approval:`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ApprovalSpec {
    /// Whether a human must approve.
    #[serde(default = "yes")]
    required: bool,
    /// Who may approve (free-form names).
    #[serde(default)]
    approvers: Vec<String>,
    /// How long an approval request stays open.
    #[serde(default)]
    timeout: Option<PromDuration>,
}

/// A rule's approval requirement, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApprovalPolicy {
    /// A human must approve each action that changes something.
    pub required: bool,
    /// Who may approve (empty: anyone who passes the admin guard).
    pub approvers: Vec<String>,
    /// How long a request stays open (`None`: the service's default).
    pub timeout_ms: Option<i64>,
}

fn yes() -> bool {
    true
}

// ------------------------------------------------------------ validated form

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub file: PathBuf,
    pub line: usize,
    pub name: String,
    /// Evaluation interval; `None` means the global default.
    pub interval_ms: Option<i64>,
    /// Most series a rule may produce; 0 means no limit.
    pub limit: u64,
    /// Evaluate this far in the past (`query_offset`).
    pub query_offset_ms: i64,
    pub labels: Vec<(String, String)>,
    pub rules: Vec<RuleSpec>,
    pub detectors: Vec<DetectorSpec>,
    pub datasource: Option<String>,
}

/// Recording or alerting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Record(String),
    Alert(String),
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub line: usize,
    pub kind: RuleKind,
    pub expr_text: String,
    pub expr: Expr,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// Label name, raw value, parsed template.
    pub labels: Vec<(String, String, Template)>,
    pub annotations: Vec<(String, String, Template)>,
    /// `actions:`, typed; run in order as an escalation ladder (see `decide/`).
    pub actions: Vec<RuleAction>,
    pub cooldown_ms: Option<i64>,
    pub approval: ApprovalPolicy,
    /// `dry_run: true` on the rule: its actions are decided and audited, never run.
    pub dry_run: bool,
    pub resolve_for_ms: i64,
    pub resolve_expr: Option<(String, Expr)>,
}

impl RuleSpec {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Record(n) | RuleKind::Alert(n) => n,
        }
    }
}

/// How strictly to read rule files.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Ignore unknown keys in groups and rules (promtool's
    /// `--ignore-unknown-fields`).
    pub ignore_unknown_fields: bool,
    /// Length and nesting limits of rule expressions (`query.max_length`,
    /// `query.max_depth`): what evaluation cannot run is refused at load time.
    pub query_limits: crate::promql::QueryLimits,
}

/// Expands the patterns (globs allowed) into files, sorted, without duplicates.
/// A pattern that matches nothing is not an error (as Prometheus).
pub fn expand_patterns(patterns: &[String]) -> Result<Vec<PathBuf>, RuleError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in patterns {
        let paths = glob::glob(p).map_err(|e| RuleError::Pattern {
            pattern: p.clone(),
            reason: e.to_string(),
        })?;
        let mut found: Vec<PathBuf> = paths.filter_map(|r| r.ok()).collect();
        found.sort();
        for f in found {
            if seen.insert(f.clone()) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// Loads and validates every file; the first error wins. Group names must be
/// unique per file, detector names across all files.
pub fn load_files(paths: &[PathBuf], opts: LoadOptions) -> Result<Vec<GroupSpec>, RuleError> {
    let mut groups = Vec::new();
    let mut detectors = HashSet::new();
    for p in paths {
        let gs = load_file(p, opts)?;
        for g in &gs {
            for d in &g.detectors {
                if !detectors.insert(d.name.clone()) {
                    return Err(RuleError::Group {
                        file: g.file.clone(),
                        line: g.line,
                        group: g.name.clone(),
                        reason: format!("detector name {:?} is used twice", d.name),
                    });
                }
            }
        }
        groups.extend(gs);
    }
    Ok(groups)
}

/// Reads and validates one rule file.
pub fn load_file(path: &Path, opts: LoadOptions) -> Result<Vec<GroupSpec>, RuleError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse_file(&text, path, opts)
}

/// Parses and validates rule-file text; `path` names it in errors.
pub fn parse_file(text: &str, path: &Path, opts: LoadOptions) -> Result<Vec<GroupSpec>, RuleError> {
    let yaml_err = |line: usize, reason: String| RuleError::Yaml {
        file: path.to_path_buf(),
        line,
        reason,
    };
    let parsed: FileYaml = if text.trim().is_empty() {
        FileYaml { groups: Vec::new() }
    } else if opts.ignore_unknown_fields {
        let mut v: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| yaml_err(e.location().map(|l| l.line()).unwrap_or(0), e.to_string()))?;
        strip_unknown(&mut v);
        serde_yaml::from_value(v).map_err(|e| yaml_err(0, e.to_string()))?
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut line = inner.location().map(|l| l.line()).unwrap_or(0);
            // serde_yaml places errors in a field's value at the enclosing mapping;
            // point at the field's own line when it is there.
            if let Some(field) = key.rsplit('.').next().filter(|f| !f.contains('[')) {
                let mut cursor = line.saturating_sub(1);
                let found = Locator::new(text).find(&mut cursor, &[&format!("{field}:")], None);
                if found > 0 {
                    line = found;
                }
            }
            let msg = inner.to_string();
            // serde_yaml appends "at line L column C"; the line is already in front.
            let msg = match msg.find(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            // serde_yaml may prefix the enclosing path, which `key` already holds.
            let msg = match msg.split_once(": ") {
                Some((p, rest)) if key.starts_with(p) => rest.to_string(),
                _ => msg,
            };
            let reason = if key == "." {
                msg
            } else {
                format!("{key}: {msg}")
            };
            match names_at(text, &key) {
                Some((group, Some(rule))) => RuleError::Rule {
                    file: path.to_path_buf(),
                    line,
                    group,
                    rule,
                    reason,
                },
                Some((group, None)) => RuleError::Group {
                    file: path.to_path_buf(),
                    line,
                    group,
                    reason,
                },
                None => yaml_err(line, reason),
            }
        })?
    };
    validate_groups(parsed, text, path, &opts.query_limits).map_err(|mut errs| errs.remove(0))
}

/// The group name and rule (`"name"` or `#n`) a schema-error path such as
/// `groups[0].rules[2].for` points into, read leniently from the text.
fn names_at(text: &str, key: &str) -> Option<(String, Option<String>)> {
    let rest = key.strip_prefix("groups[")?;
    let (gi, rest) = rest.split_once(']')?;
    let gi: usize = gi.parse().ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let g = v.get("groups")?.get(gi)?;
    let gname = g
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("#{}", gi + 1));
    let rule = rest
        .strip_prefix(".rules[")
        .and_then(|r| r.split_once(']'))
        .and_then(|(ri, _)| ri.parse::<usize>().ok())
        .map(|ri| {
            let r = g.get("rules").and_then(|rs| rs.get(ri));
            r.and_then(|r| r.get("record").or_else(|| r.get("alert")))
                .and_then(|n| n.as_str())
                .map(|n| format!("{n:?}"))
                .unwrap_or_else(|| format!("#{}", ri + 1))
        });
    Some((gname, rule))
}

fn parse_schema_only(text: &str) -> Result<FileYaml, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

/// Like [`parse_file`], but reports every problem of the file (a YAML error stops
/// at the first; validation goes on past bad groups and rules).
pub fn parse_file_all(text: &str, path: &Path) -> Result<Vec<GroupSpec>, Vec<RuleError>> {
    let probe = parse_file(text, path, LoadOptions::default());
    match probe {
        Ok(g) => Ok(g),
        Err(e)
            if !matches!(e, RuleError::Group { .. } | RuleError::Rule { .. })
                || parse_schema_only(text).is_err() =>
        {
            Err(vec![e])
        }
        Err(_) => {
            // Schema is fine; collect every validation problem.
            let parsed: FileYaml = serde_yaml::from_str(text).map_err(|e| {
                vec![RuleError::Yaml {
                    file: path.to_path_buf(),
                    line: 0,
                    reason: e.to_string(),
                }]
            })?;
            validate_groups(parsed, text, path, &LoadOptions::default().query_limits)
        }
    }
}

fn validate_groups(
    parsed: FileYaml,
    text: &str,
    path: &Path,
    limits: &crate::promql::QueryLimits,
) -> Result<Vec<GroupSpec>, Vec<RuleError>> {
    let lines = Locator::new(text);
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(parsed.groups.len());
    let mut errors = Vec::new();
    let mut cursor = 0;
    for g in parsed.groups {
        let gline = lines.find(&mut cursor, &["name:"], Some(&g.name));
        let gerr = |reason: String| RuleError::Group {
            file: path.to_path_buf(),
            line: gline,
            group: g.name.clone(),
            reason,
        };
        let mut group_errors = Vec::new();
        if g.name.is_empty() {
            group_errors.push(gerr("group name must not be empty".into()));
        }
        if !names.insert(g.name.clone()) {
            group_errors.push(gerr(format!(
                "groupname: \"{}\" is repeated in the same file",
                g.name
            )));
        }
        if let Some(i) = g.interval {
            if i.as_millis() <= 0 {
                group_errors.push(gerr("interval must be positive".into()));
            }
        }
        let mut labels = Vec::new();
        for (k, v) in &g.labels {
            if !is_valid_label_name(k) || k == "__name__" {
                group_errors.push(gerr(format!("invalid label name: {k}")));
            }
            labels.push((k.clone(), v.0.clone()));
        }
        if let Some(ds) = &g.datasource {
            if !(ds.starts_with("http://") || ds.starts_with("https://")) {
                group_errors.push(gerr(format!(
                    "datasource {ds:?} must be an http:// or https:// URL"
                )));
            }
        }
        for d in &g.detectors {
            if let Err(e) = d.validate() {
                group_errors.push(gerr(format!("detectors: {e}")));
            }
        }
        let mut rules = Vec::with_capacity(g.rules.len());
        for (i, r) in g.rules.into_iter().enumerate() {
            let rline = lines.find(&mut cursor, &["record:", "alert:"], None);
            match validate_rule(r, i, rline, path, &g.name, limits) {
                Ok(rule) => rules.push(rule),
                Err(e) => group_errors.push(e),
            }
        }
        if !group_errors.is_empty() {
            errors.append(&mut group_errors);
            continue;
        }
        out.push(GroupSpec {
            file: path.to_path_buf(),
            line: gline,
            name: g.name,
            interval_ms: g.interval.map(|d| d.as_millis()),
            limit: g.limit.unwrap_or(0),
            query_offset_ms: g.query_offset.map(|d| d.as_millis()).unwrap_or(0),
            labels,
            rules,
            detectors: g.detectors,
            datasource: g.datasource,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn validate_rule(
    r: RuleYaml,
    index: usize,
    line: usize,
    path: &Path,
    group: &str,
    limits: &crate::promql::QueryLimits,
) -> Result<RuleSpec, RuleError> {
    let label = match (&r.record, &r.alert) {
        (Some(n), _) => format!("{:?}", n.0),
        (None, Some(n)) => format!("{:?}", n.0),
        _ => format!("#{}", index + 1),
    };
    let rerr = |reason: String| RuleError::Rule {
        file: path.to_path_buf(),
        line,
        group: group.to_string(),
        rule: label.clone(),
        reason,
    };
    let kind = match (r.record, r.alert) {
        (Some(_), Some(_)) => {
            return Err(rerr("only one of 'record' and 'alert' must be set".into()))
        }
        (None, None) => return Err(rerr("one of 'record' or 'alert' must be set".into())),
        (Some(n), None) => {
            if n.0.is_empty() {
                return Err(rerr("one of 'record' or 'alert' must be set".into()));
            }
            if !is_valid_metric_name(&n.0) {
                return Err(rerr(format!("invalid recording rule name: {}", n.0)));
            }
            RuleKind::Record(n.0)
        }
        (None, Some(n)) => {
            if n.0.is_empty() {
                return Err(rerr("one of 'record' or 'alert' must be set".into()));
            }
            RuleKind::Alert(n.0)
        }
    };
    let is_alert = matches!(kind, RuleKind::Alert(_));
    if r.expr.0.trim().is_empty() {
        return Err(rerr("field 'expr' must be set in rule".into()));
    }
    let expr = crate::promql::parse_limited(&r.expr.0, limits)
        .map_err(|e| rerr(format!("could not parse expression: {e}")))?;
    if !is_alert {
        if !r.annotations.is_empty() {
            return Err(rerr("invalid field 'annotations' in recording rule".into()));
        }
        if r.for_.is_some() {
            return Err(rerr("invalid field 'for' in recording rule".into()));
        }
        if r.keep_firing_for.is_some() {
            return Err(rerr(
                "invalid field 'keep_firing_for' in recording rule".into(),
            ));
        }
        for (field, set) in [
            ("actions", !r.actions.is_empty()),
            ("cooldown", r.cooldown.is_some()),
            ("approval", r.approval.is_some()),
            ("dry_run", r.dry_run.is_some()),
            ("resolve_for", r.resolve_for.is_some()),
            ("resolve_expr", r.resolve_expr.is_some()),
        ] {
            if set {
                return Err(rerr(format!(
                    "invalid field '{field}' in recording rule (alerting rules only)"
                )));
            }
        }
    }
    let mut labels = Vec::new();
    for (k, v) in r.labels {
        if !is_valid_label_name(&k) || (k == "__name__" && is_alert) {
            return Err(rerr(format!("invalid label name: {k}")));
        }
        let t = if is_alert {
            Template::parse(&v.0).map_err(|e| rerr(format!("label {k:?}: {e}")))?
        } else {
            Template::parse("").map_err(|e| rerr(e.to_string()))?
        };
        labels.push((k, v.0, t));
    }
    let mut annotations = Vec::new();
    for (k, v) in r.annotations {
        if !is_valid_label_name(&k) {
            return Err(rerr(format!("invalid annotation name: {k}")));
        }
        let t = Template::parse(&v.0).map_err(|e| rerr(format!("annotation {k:?}: {e}")))?;
        annotations.push((k, v.0, t));
    }
    let mut actions = Vec::with_capacity(r.actions.len());
    for (i, a) in r.actions.iter().enumerate() {
        actions.push(RuleAction::parse(a).map_err(|e| rerr(format!("actions[{i}]: {e}")))?);
    }
    let resolve_expr = match r.resolve_expr {
        Some(t) if !t.0.trim().is_empty() => {
            let e = crate::promql::parse_limited(&t.0, limits)
                .map_err(|e| rerr(format!("could not parse resolve_expr: {e}")))?;
            Some((t.0, e))
        }
        Some(_) => return Err(rerr("resolve_expr must not be empty".into())),
        None => None,
    };
    let approval = match r.approval {
        None | Some(Approval::Required(false)) => ApprovalPolicy::default(),
        Some(Approval::Required(true)) => ApprovalPolicy {
            required: true,
            ..Default::default()
        },
        Some(Approval::Detailed(a)) => {
            if a.timeout.is_some_and(|t| t.as_millis() <= 0) {
                return Err(rerr("approval.timeout must be positive".into()));
            }
            ApprovalPolicy {
                required: a.required,
                approvers: a.approvers,
                timeout_ms: a.timeout.map(|t| t.as_millis()),
            }
        }
    };
    Ok(RuleSpec {
        line,
        kind,
        expr_text: r.expr.0,
        expr,
        for_ms: r.for_.map(|d| d.as_millis()).unwrap_or(0),
        keep_firing_for_ms: r.keep_firing_for.map(|d| d.as_millis()).unwrap_or(0),
        labels,
        annotations,
        actions,
        cooldown_ms: r.cooldown.map(|d| d.as_millis()),
        approval,
        dry_run: r.dry_run.unwrap_or(false),
        resolve_for_ms: r.resolve_for.map(|d| d.as_millis()).unwrap_or(0),
        resolve_expr,
    })
}

/// Removes keys a strict parse would reject from groups and rules.
fn strip_unknown(v: &mut serde_yaml::Value) {
    const GROUP: &[&str] = &[
        "name",
        "interval",
        "limit",
        "query_offset",
        "labels",
        "rules",
        "detectors",
        "datasource",
    ];
    const RULE: &[&str] = &[
        "record",
        "alert",
        "expr",
        "for",
        "keep_firing_for",
        "labels",
        "annotations",
        "actions",
        "cooldown",
        "approval",
        "dry_run",
        "resolve_for",
        "resolve_expr",
    ];
    let Some(top) = v.as_mapping_mut() else {
        return;
    };
    top.retain(|k, _| k.as_str() == Some("groups"));
    let Some(groups) = top.get_mut("groups").and_then(|g| g.as_sequence_mut()) else {
        return;
    };
    for g in groups {
        let Some(gm) = g.as_mapping_mut() else {
            continue;
        };
        gm.retain(|k, _| k.as_str().is_some_and(|k| GROUP.contains(&k)));
        if let Some(rules) = gm.get_mut("rules").and_then(|r| r.as_sequence_mut()) {
            for r in rules {
                if let Some(rm) = r.as_mapping_mut() {
                    rm.retain(|k, _| k.as_str().is_some_and(|k| RULE.contains(&k)));
                }
            }
        }
    }
}

/// Finds the lines of groups and rules by scanning forward in file order.
struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            lines: text.lines().collect(),
        }
    }

    /// The 1-based line at or after `*cursor` whose key (after an optional `- `)
    /// is one of `keys` (and whose value contains `value`, if given); moves the
    /// cursor past it. 0 when not found.
    fn find(&self, cursor: &mut usize, keys: &[&str], value: Option<&str>) -> usize {
        for (i, l) in self.lines.iter().enumerate().skip(*cursor) {
            let t = l.trim_start();
            let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
            if keys.iter().any(|k| t.starts_with(k)) && value.is_none_or(|v| t.contains(v)) {
                *cursor = i + 1;
                return i + 1;
            }
        }
        0
    }
}

/// Rules that appear more than once in a file (same name and labels); promtool's
/// `duplicate-rules` lint. Each duplicated rule is reported once.
pub fn duplicate_rules(groups: &[GroupSpec]) -> Vec<(String, Vec<(String, String)>)> {
    let mut seen: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
    for g in groups {
        for r in &g.rules {
            let labels: Vec<(String, String)> = r
                .labels
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            let key = (format!("{}\u{0}{}", r.name(), r.expr_text.trim()), labels);
            *seen.entry(key).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((k, l), _)| (k.split('\u{0}').next().unwrap_or("").to_string(), l))
        .collect()
}

/// The outcome of checking one rule file: the number of rules and the duplicate
/// rules found, or every problem (one line each, file:line first).
pub type CheckResult = Result<(usize, Vec<String>), Vec<String>>;

/// Loads rule files for `closedloop check rules`: per file, its rule count and the
/// `duplicate-rules` lint findings, or its problems.
pub fn check_files(files: &[PathBuf]) -> Vec<(PathBuf, CheckResult)> {
    let mut out = Vec::new();
    for f in files {
        let r = match std::fs::read_to_string(f) {
            Err(e) => Err(vec![format!("{}: {e}", f.display())]),
            Ok(text) => match parse_file_all(&text, f) {
                Ok(groups) => {
                    let n = groups.iter().map(|g| g.rules.len()).sum();
                    let dups = duplicate_rules(&groups)
                        .into_iter()
                        .map(|(name, labels)| {
                            let l: Vec<String> =
                                labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                            format!("Metric: {name}\nLabel(s):\n\t{}", l.join("\n\t"))
                        })
                        .collect();
                    Ok((n, dups))
                }
                Err(errs) => Err(errs.iter().map(|e| e.to_string()).collect()),
            },
        };
        out.push((f.clone(), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<GroupSpec>, String> {
        parse_file(text, Path::new("r.yml"), LoadOptions::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn loads_prometheus_file_and_extensions() {
        let g = parse(
            "groups:\n- name: g\n  interval: 15s\n  detectors:\n  - name: lat\n    selector: up\n    algorithm: zscore\n  rules:\n  - record: a:b\n    expr: sum(up)\n  - alert: A\n    expr: up == 0\n    for: 1m\n    keep_firing_for: 2m\n    resolve_for: 30s\n    resolve_expr: up < 1\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.job }}'}\n    actions:\n    - type: scale_up\n      target: deployment/x\n      replicas: '+2'\n      dry_run: true\n    cooldown: 10m\n    approval: true\n",
        )
        .unwrap();
        assert_eq!(g[0].interval_ms, Some(15_000));
        assert_eq!(g[0].rules.len(), 2);
        let a = &g[0].rules[1];
        assert_eq!(a.line, 11);
        assert_eq!(a.for_ms, 60_000);
        assert_eq!(a.resolve_for_ms, 30_000);
        assert!(a.resolve_expr.is_some());
        assert_eq!(a.actions[0].kind, crate::act::ActionKind::Scale);
        assert!(a.actions[0].dry_run);
        assert!(a.approval.required);
    }

    #[test]
    fn expressions_evaluation_cannot_run_are_refused_with_file_line_and_limit() {
        // The reproducer: 2,000 `vector(1)` joined by `+` once crashed the
        // server at its first evaluation; now both loading and checking refuse it.
        let deep = format!("vector(1){}", " + vector(1)".repeat(1999));
        let text = format!(
            "groups:\n- name: g\n  rules:\n  - record: ok\n    expr: up\n  - record: deep\n    expr: '{deep}'\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("r.yml:6: group \"g\", rule \"deep\": could not parse expression: query is nested too deeply")
                && e.contains("over the limit of 1000 (query.max_depth)"),
            "{e}"
        );
        let errs = parse_file_all(&text, Path::new("r.yml")).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("query.max_depth"));
        // resolve_expr is held to the same limits, and a raised limit loads both.
        let text = format!(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    resolve_expr: '{deep}'\n"
        );
        assert!(parse(&text).unwrap_err().contains("query.max_depth"));
        let raised = LoadOptions {
            query_limits: crate::promql::QueryLimits {
                max_depth: 2048,
                ..Default::default()
            },
            ..LoadOptions::default()
        };
        // (1,100 terms: over the default depth, under the type-check work limit.)
        let deeper = format!("vector(1){}", " + vector(1)".repeat(1099));
        let text = format!(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    resolve_expr: '{deeper}'\n"
        );
        assert!(parse(&text).unwrap_err().contains("query.max_depth"));
        let r = parse_file(&text, Path::new("r.yml"), raised);
        assert!(r.is_ok(), "{:?}", r.err());
    }

    #[test]
    fn errors_name_file_group_rule_and_line() {
        let cases = [
            (
                "groups:\n- name: g\n  rules:\n  - record: x\n    expr: 'sum('\n",
                "r.yml:4: group \"g\", rule \"x\": could not parse expression",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 5x\n",
                "r.yml:6: group \"g\", rule \"A\": groups[0].rules[0].for: invalid duration",
            ),
            (
                "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n",
                "r.yml:4: group \"g\": groupname: \"g\" is repeated",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    colour: red\n",
                "r.yml:6: group \"g\", rule \"A\": groups[0].rules[0].colour: unknown field `colour`",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels: {'bad-name': x}\n",
                "rule \"A\": invalid label name: bad-name",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations: {s: '{{ $label.x }}'}\n",
                "undefined variable \"$label\"",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    actions: [{type: reboot_world}]\n",
                "actions[0]: unknown action type \"reboot_world\"",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    actions: [{type: scale}]\n",
                "actions[0]: missing parameter \"target\"",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    for: 1m\n",
                "invalid field 'for' in recording rule",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    cooldown: 1m\n",
                "invalid field 'cooldown' in recording rule",
            ),
            (
                "groups:\n- name: g\n  detectors: [{name: d, selector: up, algorithm: zscore, threshold: -1}]\n  rules: []\n",
                "group \"g\": detectors:",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn check_reports_every_problem() {
        let text = "groups:\n- name: g\n  rules:\n  - record: 'bad name'\n    expr: up\n  - alert: A\n    expr: 'sum('\n- name: g\n  rules: []\n";
        let errs = parse_file_all(text, Path::new("r.yml")).unwrap_err();
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("r.yml:4: group \"g\", rule \"bad name\""));
        assert!(lines[1].starts_with("r.yml:6: group \"g\", rule \"A\": could not parse"));
        assert!(lines[2].starts_with("r.yml:8: group \"g\": groupname"));
    }

    #[test]
    fn ignore_unknown_fields_option() {
        let text =
            "groups:\n- name: g\n  namespace: x\n  rules: [{record: r, expr: '1', owner: y}]\n";
        assert!(parse(text).is_err());
        let g = parse_file(
            text,
            Path::new("r.yml"),
            LoadOptions {
                ignore_unknown_fields: true,
                ..LoadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(g[0].rules.len(), 1);
    }
}
