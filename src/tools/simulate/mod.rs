//! `closedloop simulate`: the loop closing on a simulated world, in one command,
//! with no external service.
//!
//! A [`world::World`] of services with a dependency topology emits metrics every
//! step and suffers the scenario's faults; its readings go through the real
//! remote-write decode path into the store, the detectors score them and the rule
//! files are evaluated by the engine at the simulated timestamps
//! ([`pipeline::Pipeline`]). [`measure::Recorder`] measures the loop against the fault
//! schedule and the world's noise-free truth, and the run ends with a report
//! (printed, `report.json`, `timeline.svg`, `report.html`).
//!
//! Invariants: the run is deterministic for a scenario and seed; simulated time
//! never waits on the wall clock; figures are measured from the world, never from the
//! detectors' view. Must never: touch anything outside the process except the
//! output directory.

pub mod actuator;
pub mod decide;
pub mod measure;
pub mod pipeline;
pub mod scenario;
pub mod timeline;
pub mod world;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::rules::{self, LoadOptions};

pub use measure::Report;
pub use scenario::Loaded;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The scenario file is unreadable or invalid.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// The rule files are unreadable or invalid, or cannot run simulated.
    #[error("rules: {0}")]
    Rules(String),
    /// The remote-write path refused the simulated samples (a bug).
    #[error("ingest: {0}")]
    Ingest(#[from] crate::ingest::IngestError),
    /// Something the run needs could not be set up.
    #[error("{0}")]
    Setup(String),
    /// Writing the output directory failed.
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar (on a terminal).
    Bar,
    /// A plain line every tenth of the run.
    Lines,
    /// Nothing.
    Quiet,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A scenario file (`None`: the built-in scenario).
    pub scenario: Option<PathBuf>,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Where report.json, timeline.svg and report.html go (`None`: nowhere).
    pub out: Option<PathBuf>,
    pub progress: Progress,
}

/// Loads the scenario the options name, with the seed override applied.
pub fn load_scenario(opts: &Options) -> Result<Loaded, SimulateError> {
    let mut loaded = match &opts.scenario {
        Some(p) => Loaded::load(p)?,
        None => Loaded::builtin()?,
    };
    if let Some(seed) = opts.seed {
        loaded.scenario.seed = seed;
    }
    Ok(loaded)
}

/// Loads the scenario's rule files (or the built-in ones).
pub fn load_rules(loaded: &Loaded) -> Result<Vec<rules::GroupSpec>, SimulateError> {
    let files = loaded.rule_files();
    if files.is_empty() {
        return rules::file::parse_file(
            scenario::DEFAULT_RULES,
            Path::new(scenario::DEFAULT_RULES_NAME),
            LoadOptions::default(),
        )
        .map_err(|e| SimulateError::Rules(e.to_string()));
    }
    rules::load_files(&files, LoadOptions::default())
        .map_err(|e| SimulateError::Rules(e.to_string()))
}

/// Runs a whole simulation and returns its report (and writes the output
/// directory, when one is given). Progress goes to stderr.
pub fn run(opts: &Options) -> Result<(Report, timeline::Timeline), SimulateError> {
    let loaded = load_scenario(opts)?;
    let groups = load_rules(&loaded)?;
    let sc = &loaded.scenario;
    let step = sc.step.as_millis();
    let end = sc.duration.as_millis();
    let steps = (end / step) as u64;
    let wall = Instant::now();
    let policy = sc
        .policy()
        .map_err(|(key, reason)| scenario::ScenarioError::Invalid {
            path: loaded
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("(built-in scenario)")),
            key,
            reason,
        })?;
    let world = Arc::new(parking_lot::Mutex::new(world::World::new(sc)));
    let mut pipe = pipeline::Pipeline::new(groups, step)?;
    let mut recorder = measure::Recorder::new(&world.lock());
    let mut tl = timeline::Timeline::new(&world.lock(), loaded.start_ms);
    let mut loop_ = decide::SimDecide::new(
        policy.clone(),
        world.clone(),
        pipe.metrics().registry(),
        loaded.start_ms,
    )?;
    if policy.dry_run {
        recorder
            .notes
            .push("decide.dry_run is on: every action is decided and audited, none runs".into());
    }
    let bar = match opts.progress {
        Progress::Bar => {
            let b = indicatif::ProgressBar::new(steps);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} simulating {msg:>9} [{bar:40}] {percent:>3}% ({eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Some(b)
        }
        _ => None,
    };
    let mut rule_errors: Vec<String> = Vec::new();
    let mut next_line = 0u64;
    for k in 1..=steps {
        let t = k as i64 * step;
        let t_abs = loaded.start_ms + t;
        let readings = {
            let mut w = world.lock();
            w.step(t);
            w.samples()
        };
        pipe.ingest(&readings, t_abs)?;
        let (changes, transitions, errors) =
            pipe.evaluate(t_abs, loaded.start_ms, &loop_.conditions);
        let incidents = pipe.take_incidents(t_abs, &loop_.conditions);
        loop_.step(t, t_abs, transitions, incidents)?;
        let world = world.lock();
        for e in errors {
            if rule_errors.len() < 20 && !rule_errors.contains(&e) {
                rule_errors.push(e);
            }
        }
        recorder.observe_world(&world, t);
        recorder.observe_alerts(&changes, loaded.start_ms);
        tl.observe(&world, &pipe, &changes, t);
        match (&bar, opts.progress) {
            (Some(b), _) => {
                b.set_position(k);
                if k % 240 == 0 {
                    b.set_message(format_clock(t));
                }
            }
            (None, Progress::Lines) if k * 10 >= next_line * steps => {
                eprintln!(
                    "simulate: {:>3}% ({} of {} simulated)",
                    k * 100 / steps.max(1),
                    format_clock(t),
                    format_clock(end)
                );
                next_line += 1;
            }
            _ => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (actions, refused, audit) = loop_.finish(loaded.start_ms)?;
    recorder.actions = actions;
    recorder.refused = refused;
    let world = world.lock();
    let mut report = recorder.finish(&world, steps as i64 * step);
    report.steps = steps;
    report.wall_seconds = wall.elapsed().as_secs_f64();
    report.pipeline = serde_json::json!({
        "remote_write": pipe.writes,
        "series": pipe.store().series_count(),
        "detections": pipe.detections(),
        "rule_groups": pipe.groups().len(),
        "rules": pipe.groups().iter().map(|g| g.rules.len()).sum::<usize>(),
        "rule_errors": rule_errors,
        "audit": audit,
    });
    tl.finish(&world, &report);
    if let Some(dir) = &opts.out {
        write_outputs(dir, &report, &tl)?;
    }
    Ok((report, tl))
}

/// `HhMMm` of simulated time.
fn format_clock(ms: i64) -> String {
    let m = ms / 60_000;
    format!("{}h{:02}m", m / 60, m % 60)
}

fn write_outputs(
    dir: &Path,
    report: &Report,
    tl: &timeline::Timeline,
) -> Result<(), SimulateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimulateError::Output { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| SimulateError::Setup(e.to_string()))?;
    let p = dir.join("report.json");
    std::fs::write(&p, json).map_err(io(&p))?;
    let svg = tl.svg();
    let p = dir.join("timeline.svg");
    std::fs::write(&p, &svg).map_err(io(&p))?;
    let p = dir.join("report.html");
    std::fs::write(&p, timeline::html(report, &svg)).map_err(io(&p))?;
    Ok(())
}

/// Prints the figures against the targets, and one line per fault.
pub fn print_summary(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "closedloop simulate: scenario {:?}, seed {}: {} simulated in {:.1}s ({} steps)",
        report.scenario,
        report.seed,
        format_clock((report.simulated_seconds * 1000.0) as i64),
        report.wall_seconds,
        report.steps
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<26} {:>12}  {:>10}  result",
        "figure", "value", "target"
    )?;
    for t in &report.targets {
        let fmt = |v: f64| {
            if t.name.ends_with("_seconds") {
                format!("{v:.0}s")
            } else {
                format!("{:.1}%", v * 100.0)
            }
        };
        let value = t.value.map(fmt).unwrap_or_else(|| "n/a".into());
        writeln!(
            out,
            "  {:<26} {:>12}  {:>1} {:>8}  {}",
            t.name,
            value,
            t.op,
            fmt(t.target),
            if t.met { "met" } else { "MISSED" }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "  faults: {} with impact, {} detected; alerts fired: {} ({} false positive); actions: {}, refused: {}",
        report.faults_with_impact,
        report.faults_detected,
        report.incidents.len(),
        report.incidents.iter().filter(|i| i.fault.is_none()).count(),
        report.actions.len(),
        report.refused.len()
    )?;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}s")).unwrap_or_else(|| "-".into());
    for f in &report.faults {
        writeln!(
            out,
            "  {:<22} {:<15} {:<9} start {:>8}  detected in {:>5}  recovered in {:>6}  {}",
            f.name,
            f.kind,
            f.service,
            format_clock((f.start_s * 1000.0) as i64),
            opt(f.detection_seconds),
            opt(f.recovery_seconds),
            f.resolution
        )?;
    }
    for n in &report.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}
