//! The `closedloop` command line: `serve` runs the service; the other subcommands
//! are offline tools over the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use closedloop::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "closedloop",
    version,
    about = "Closes the operations loop beside Prometheus"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: remote-write receiver, store, query API, /metrics.
    Serve {
        /// YAML configuration file; without one, defaults apply (listen 127.0.0.1:9096).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the configured listen address (host:port; port 0 picks a free one).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate files without running anything.
    Check {
        #[command(subcommand)]
        what: CheckCommand,
    },
    /// Score an anomaly detector on the Numenta Anomaly Benchmark: streams each NAB
    /// file through the service's detector code, scores the detections with NAB's
    /// profiles and ends with `nab: standard=S reward_low_fp=F reward_low_fn=N files=K`.
    Nab {
        /// A NAB `data` directory, or any subset of its category directories.
        #[arg(long)]
        data: PathBuf,
        /// NAB's `combined_windows.json`.
        #[arg(long)]
        labels: PathBuf,
        /// NAB's `profiles.json` (default: beside the labels file).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// Detector algorithm as in a rule file: zscore, iqr, holt_winters, threshold,
        /// trend, ensemble; or a NAB detector name with --results.
        #[arg(long)]
        detector: String,
        /// Detector fields as key=value (`window=2d`, `threshold=15`, `spec=FILE.yml`).
        #[arg(long = "param", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
        /// Write per-file detections (NAB results CSVs) under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Score existing NAB results files of --detector from this directory instead.
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Run the loop on a simulated world, with no service needed: a shop's services
    /// emit metrics every 15 s and suffer faults on a schedule; the samples go through
    /// the remote-write path, detectors and rule files; the figures (MTTD, MTTR,
    /// false positives, remediation success, human intervention) are measured against
    /// the fault schedule and printed against their targets.
    Simulate {
        /// A scenario file (docs/simulate.md); default: the built-in scenario.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where report.json, timeline.svg and report.html are written.
        #[arg(long, default_value = "simulate-out")]
        out: PathBuf,
        /// Print the built-in scenario (a starting point for your own) and exit.
        #[arg(long)]
        print_scenario: bool,
        /// Validate the scenario and its rule files, run nothing.
        #[arg(long)]
        check: bool,
        /// Exit with status 1 when a target is missed.
        #[arg(long)]
        fail_on_missed: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run test scripts against the engines.
    Test {
        #[command(subcommand)]
        what: TestCommand,
    },
    /// Evaluate rule files and their detectors over past data and print when each
    /// alert would have fired and what the policy would have done (nothing runs).
    Replay {
        /// Rule files.
        #[arg(long = "rules", required = true, num_args = 1..)]
        rules: Vec<PathBuf>,
        /// Start: RFC 3339, Unix seconds, `now` or `-6h` (relative to now).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End, as --from (default now).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// A Prometheus-compatible query API (Prometheus, VictoriaMetrics, Thanos,
        /// or a running closedloop's own store).
        #[arg(long, default_value = "http://127.0.0.1:9096")]
        datasource: String,
        /// A service config whose `decide:` policy and `global:` settings apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sample spacing fed to detectors.
        #[arg(long, default_value = "15s")]
        detector_step: String,
    },
    /// List, approve or reject actions waiting for a human (on a running service).
    Approvals {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(subcommand)]
        what: ApprovalsCommand,
    },
    /// The audit log of a running service: list, show, roll back.
    Actions {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(subcommand)]
        what: ActionsCommand,
    },
}

/// How to reach a running service.
#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's URL.
    #[arg(
        long,
        env = "CLOSEDLOOP_URL",
        default_value = "http://127.0.0.1:9096",
        global = true
    )]
    url: String,
    /// File holding the admin bearer token (or set CLOSEDLOOP_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Basic-auth user; the password comes from CLOSEDLOOP_PASSWORD.
    #[arg(long, global = true)]
    user: Option<String>,
    /// File holding the read bearer token (`auth.read`; or set
    /// CLOSEDLOOP_READ_TOKEN); without one, reads use the admin credential.
    #[arg(long, global = true)]
    read_token_file: Option<PathBuf>,
    /// Basic-auth user for reads; the password comes from CLOSEDLOOP_READ_PASSWORD.
    #[arg(long, global = true)]
    read_user: Option<String>,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Actions waiting for approval.
    List,
    /// Approve an action; it runs once it passes the policy and the re-check again.
    Approve {
        id: i64,
        /// Who approves (default: the basic-auth user, else `admin`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject an action.
    Reject {
        id: i64,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ActionsCommand {
    /// Actions, newest first; filters as key=value (rule, target, outcome, kind,
    /// start, end, limit, before).
    List {
        #[arg(long = "filter", value_parser = parse_key_value)]
        filters: Vec<(String, String)>,
    },
    /// One action with its audit events.
    Show { id: i64 },
    /// Run the inverse of a succeeded action (through the policy and the audit log).
    Rollback {
        id: i64,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum TestCommand {
    /// Run rule unit tests in `promtool test rules` format; exits 1 when one fails.
    Rules {
        /// Only run test groups whose name matches this regex (repeatable; OR-ed).
        #[arg(long)]
        run: Vec<String>,
        /// Ignore unknown keys in rule files.
        #[arg(long)]
        ignore_unknown_fields: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run Prometheus PromQL test scripts (`.test` files, promqltest format)
    /// against closedloop's engine; exits non-zero when a case fails.
    Promql {
        /// Print each failing case under its file's line.
        #[arg(long, short)]
        verbose: bool,
        /// Also print each skipped (native-histogram) case.
        #[arg(long)]
        show_skipped: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CheckCommand {
    /// Validate a service configuration file.
    Config { file: PathBuf },
    /// Validate rule files like `promtool check rules`: exit 0 when all are valid,
    /// 1 when one is not (one line per problem), 3 on a fatal lint.
    Rules {
        /// Report duplicate rules (`duplicate-rules`, the default) or not (`none`).
        #[arg(long, default_value = "duplicate-rules")]
        lint: String,
        /// Make lint findings fatal (exit 3).
        #[arg(long)]
        lint_fatal: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("closedloop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One credential of the client: a user (password from `password_env`) or a token
/// (from `token_file`, else `token_env`); the user wins.
fn credential(
    user: &Option<String>,
    password_env: &str,
    token_file: &Option<PathBuf>,
    token_env: &str,
) -> anyhow::Result<Option<String>> {
    let basic = match user {
        Some(u) => Some((
            u.clone(),
            std::env::var(password_env).with_context(|| {
                format!("a basic-auth user needs the password in {password_env}")
            })?,
        )),
        None => None,
    };
    let token = match (token_file, &basic) {
        (_, Some(_)) => None,
        (Some(f), None) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => std::env::var(token_env).ok(),
    };
    Ok(closedloop::tools::client::authorization(token, basic)?)
}

fn client(args: &ServiceArgs) -> anyhow::Result<closedloop::tools::client::Client> {
    let admin = credential(
        &args.user,
        "CLOSEDLOOP_PASSWORD",
        &args.token_file,
        "CLOSEDLOOP_TOKEN",
    )?;
    let read = credential(
        &args.read_user,
        "CLOSEDLOOP_READ_PASSWORD",
        &args.read_token_file,
        "CLOSEDLOOP_READ_TOKEN",
    )?;
    Ok(closedloop::tools::client::Client::new(
        &args.url, admin, read,
    )?)
}

/// A time for `replay`: RFC 3339, Unix seconds, `now`, or `-DURATION` before now.
fn replay_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(d) = s.strip_prefix('-') {
        if let Ok(ms) = closedloop::duration::parse_duration_ms(d) {
            return Ok(now_ms - ms);
        }
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| anyhow::anyhow!("{s:?} is not RFC 3339, Unix seconds, now or -DURATION"))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting runtime")?
        .block_on(f))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay {
            rules,
            from,
            to,
            datasource,
            config,
            detector_step,
        } => {
            let cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let now = chrono::Utc::now().timestamp_millis();
            let args = closedloop::tools::replay::ReplayArgs {
                rules,
                from_ms: replay_time(&from, now).context("--from")?,
                to_ms: replay_time(&to, now).context("--to")?,
                datasource,
                decide: cfg.decide.clone(),
                default_interval_ms: cfg.global.evaluation_interval.as_millis(),
                detector_step_ms: closedloop::duration::parse_duration_ms(&detector_step)
                    .context("--detector-step")?
                    .max(1000),
                external_labels: cfg.global.external_labels.clone(),
                timeout: cfg.query.timeout.as_duration(),
            };
            let mut out = String::new();
            let r = block_on(closedloop::tools::replay::replay(&args, &mut out))?;
            print!("{out}");
            r?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { service, what } => {
            let c = client(&service)?;
            let text = block_on(async {
                match what {
                    ApprovalsCommand::List => c.approvals().await,
                    ApprovalsCommand::Approve { id, by } => {
                        c.decide(id, true, by.as_deref(), None).await
                    }
                    ApprovalsCommand::Reject { id, by, reason } => {
                        c.decide(id, false, by.as_deref(), reason.as_deref()).await
                    }
                }
            })??;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Actions { service, what } => {
            let c = client(&service)?;
            let text = block_on(async {
                match what {
                    ActionsCommand::List { filters } => c.actions(&filters).await,
                    ActionsCommand::Show { id } => c.show(id).await,
                    ActionsCommand::Rollback { id, by } => c.rollback(id, by.as_deref()).await,
                }
            })??;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, listen } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            if let Some(listen) = listen {
                cfg.listen_address = listen;
                cfg.validate(
                    config
                        .as_deref()
                        .unwrap_or(std::path::Path::new("--listen")),
                )?;
            }
            init_tracing(cfg.log.format, &cfg.log.level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting runtime")?;
            runtime.block_on(closedloop::service::run(cfg, config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            what: CheckCommand::Config { file },
        } => {
            Config::load(&file)?;
            println!("{}: valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            what:
                CheckCommand::Rules {
                    lint,
                    lint_fatal,
                    files,
                },
        } => {
            if lint != "none" && lint != "duplicate-rules" && lint != "all" {
                anyhow::bail!("--lint: unknown value {lint:?} (use none, duplicate-rules or all)");
            }
            let mut failed = false;
            let mut lint_found = false;
            for (file, r) in closedloop::rules::manager::check_files(&files) {
                println!("Checking {}", file.display());
                match r {
                    Ok((n, dups)) => {
                        if lint != "none" && !dups.is_empty() {
                            lint_found = true;
                            println!("{} duplicate rule(s) found.", dups.len());
                            for d in dups {
                                println!("{d}");
                            }
                            println!("Might cause inconsistency while recording expressions");
                        }
                        println!("  SUCCESS: {n} rules found\n");
                    }
                    Err(problems) => {
                        failed = true;
                        println!("  FAILED:");
                        for p in problems {
                            println!("{p}");
                        }
                        println!();
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else if lint_found && lint_fatal {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Test {
            what:
                TestCommand::Rules {
                    run,
                    ignore_unknown_fields,
                    files,
                },
        } => {
            let opts = closedloop::rules::unittest::TestOptions {
                run,
                ignore_unknown_fields,
            };
            let ok = closedloop::rules::unittest::run_files(
                &files,
                &opts,
                &mut std::io::stdout().lock(),
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Nab {
            data,
            labels,
            profiles,
            detector,
            params,
            out,
            results,
        } => {
            use closedloop::anomaly::nab::{run_nab, NabArgs};
            let args = NabArgs {
                data_dir: data,
                labels_file: labels,
                profiles_file: profiles,
                detector,
                params,
                output_dir: out,
                results_dir: results,
            };
            run_nab(&args, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            scenario,
            seed,
            out,
            print_scenario,
            check,
            fail_on_missed,
            quiet,
        } => {
            use closedloop::tools::simulate::{self, Options, Progress};
            if print_scenario {
                print!("{}", simulate::scenario::DEFAULT_SCENARIO);
                return Ok(ExitCode::SUCCESS);
            }
            let progress = if quiet {
                Progress::Quiet
            } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                Progress::Bar
            } else {
                Progress::Lines
            };
            let opts = Options {
                scenario,
                seed,
                out: Some(out.clone()),
                progress,
            };
            if check {
                let loaded = simulate::load_scenario(&opts)?;
                let groups = simulate::load_rules(&loaded)?;
                println!(
                    "scenario {:?}: valid ({} services, {} faults, {} harmless events, {} rule groups)",
                    loaded.scenario.name,
                    loaded.scenario.services.len(),
                    loaded.scenario.faults.len(),
                    loaded.scenario.benign.len(),
                    groups.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let (report, _) = simulate::run(&opts)?;
            let mut stdout = std::io::stdout().lock();
            simulate::print_summary(&report, &mut stdout)?;
            println!(
                "\n  wrote {0}/report.json, {0}/timeline.svg and {0}/report.html",
                out.display()
            );
            Ok(if fail_on_missed && !report.targets_met() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Test {
            what:
                TestCommand::Promql {
                    verbose,
                    show_skipped,
                    files,
                },
        } => {
            use closedloop::promql::testscript::{run_files_with, RunOptions};
            let opts = RunOptions {
                verbose,
                show_skipped,
            };
            let summary = run_files_with(&files, &mut std::io::stdout().lock(), &opts)?;
            Ok(if summary.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
