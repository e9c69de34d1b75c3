//! The `crmsync` binary: parse the command line, set up logging, run the subcommand, and turn
//! its outcome into an exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use crmsync::config::EnvVars;
use crmsync::diagnostics::render_with_source;
use crmsync::engine::StopRequest;

use cli::{Cli, Command, LogFormatArg, OrgArg, PlanFormat, Switch, TierArg};
use crmsync::config::LogFormat;
use crmsync::emulator::data::OrgProfile;
use crmsync::emulator::hubspot::{HubspotLimits, HubspotTier};
use crmsync::emulator::{EmulatorConfig, RunningEmulator};

/// mimalloc rather than the system allocator: a sync allocates and frees many small values
/// (JSON properties, rows), and glibc's allocator spent a fifth of an extract's CPU on them.
/// Built without transparent huge pages (`no_thp`): with them, a full sync of 100,000 people
/// peaked at 230 MB instead of 175 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, cli.log_format) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, as text on a terminal and one JSON object per line otherwise, unless
/// `--log-format`, `CRMSYNC_LOG_FORMAT` or (for `sync` and `serve`) `[log] format` says
/// which. `CRMSYNC_LOG_LEVEL` (or `[log] level`) sets the filter, e.g. `debug` or
/// `crmsync=trace`.
fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    // A failed initialisation means a subscriber is already set; keep that one.
    let _ = if json {
        // The run id, system and object come from the spans a line is logged in.
        builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The log format `--log-format` asks for, else `configured`.
fn log_format(flag: Option<LogFormatArg>, configured: LogFormat) -> LogFormat {
    match flag {
        Some(LogFormatArg::Auto) => LogFormat::Auto,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => configured,
    }
}

/// Logging for commands that do not read `[log]`: the environment's settings, else `warn`.
fn init_tracing_from_env(flag: Option<LogFormatArg>) {
    let configured = std::env::var("CRMSYNC_LOG_FORMAT")
        .ok()
        .and_then(|name| LogFormat::from_name(&name))
        .unwrap_or(LogFormat::Auto);
    let level = std::env::var("CRMSYNC_LOG_LEVEL").unwrap_or_else(|_| "warn".to_string());
    init_tracing(log_format(flag, configured), &level);
}

/// On SIGTERM or SIGINT, asks the run to stop at its next safe point (the batch in hand
/// stored with its checkpoint); exits with status 1 if it has not stopped after `grace`, or at
/// a second signal. Call inside the runtime.
fn stop_on_signals(stop: StopRequest, grace: std::time::Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            grace_seconds = grace.as_secs_f64(),
            "stopping: the run finishes the batch in hand and stores its checkpoint"
        );
        stop.request(format!("{name} received"));
        let why = tokio::select! {
            () = tokio::time::sleep(grace) => format!("did not stop within the {:.0} s grace period", grace.as_secs_f64()),
            _ = terminate.recv() => "a second SIGTERM came".to_string(),
            _ = interrupt.recv() => "a second SIGINT came".to_string(),
        };
        eprintln!(
            "error: stopping at once ({why}); the next run redoes the batch that was in hand"
        );
        std::process::exit(1);
    });
    Ok(())
}

fn run(command: Command, log_flag: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    if !matches!(command, Command::Sync { .. } | Command::Serve { .. }) {
        init_tracing_from_env(log_flag);
    }
    match command {
        Command::Check { config } => {
            let env = EnvVars::from_process();
            let report = crmsync::check::run(config.as_deref(), &env);
            if report.is_ok() {
                println!("{}", report.summary());
                println!("ok: no problems found");
                return Ok(ExitCode::SUCCESS);
            }
            for diagnostic in report.diagnostics.iter() {
                eprintln!("{}\n", render_with_source(diagnostic, &report.sources));
            }
            eprintln!("{} problem(s) found", report.diagnostics.len());
            Ok(ExitCode::FAILURE)
        }
        Command::Demo { records, dir, json } => {
            let runtime = runtime()?;
            let report = runtime.block_on(crmsync::demo::run(records, &dir))?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { who, config, json } => {
            let config = load_config(config.as_deref())?;
            let runtime = runtime()?;
            let found = runtime.block_on(async {
                let (_, warehouse) = crmsync::engine::open_warehouse(&config).await?;
                anyhow::Ok(crmsync::engine::explain::explain(&warehouse, &who).await?)
            })?;
            if found.is_empty() {
                eprintln!(
                    "no person {who:?} in the warehouse — check the spelling (emails match case-insensitively; ids look like p-…), or run crmsync sync first"
                );
                return Ok(ExitCode::FAILURE);
            }
            if json {
                let all: Vec<_> = found
                    .iter()
                    .map(|explanation| explanation.to_json())
                    .collect();
                println!("{}", serde_json::Value::Array(all));
            } else {
                for explanation in &found {
                    println!("{}", explanation.render());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { config, full, json } => {
            let config = load_config(config.as_deref())?;
            init_tracing(log_format(log_flag, config.log.format), &config.log.level);
            let grace = grace(&config);
            let runtime = runtime()?;
            let report = runtime.block_on(async {
                let stop = StopRequest::default();
                stop_on_signals(stop.clone(), grace)?;
                // Bars on a terminal, plain lines in logs and pipes.
                let progress: std::sync::Arc<dyn crmsync::engine::progress::Progress> =
                    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        std::sync::Arc::new(crmsync::engine::progress::Bars::default())
                    } else {
                        std::sync::Arc::new(crmsync::engine::progress::Lines::default())
                    };
                let engine = crmsync::engine::open(config)
                    .await?
                    .with_progress(progress)
                    .with_stop(stop);
                anyhow::Ok(engine.sync(crmsync::engine::SyncOptions { full }).await)
            })?;
            let report = match report {
                Ok(report) => report,
                // A run that failed midway: its report still goes out with --json.
                Err(crmsync::engine::EngineError::RunFailed(failure)) => {
                    if json {
                        println!("{}", serde_json::to_string(&failure.report)?);
                    }
                    eprintln!("{}", failure.report.paragraph());
                    return Err(failure.error.into());
                }
                Err(error) => return Err(error.into()),
            };
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
            eprintln!("{}", report.paragraph());
            Ok(match report.status {
                crmsync::engine::RunStatus::Complete => ExitCode::SUCCESS,
                crmsync::engine::RunStatus::Partial => ExitCode::from(2),
                crmsync::engine::RunStatus::Failed => ExitCode::FAILURE,
            })
        }
        Command::Serve { config } => {
            let config = load_config(config.as_deref())?;
            init_tracing(log_format(log_flag, config.log.format), &config.log.level);
            let grace = grace(&config);
            let runtime = runtime()?;
            runtime.block_on(async {
                let stop = StopRequest::default();
                stop_on_signals(stop.clone(), grace)?;
                anyhow::Ok(crmsync::serve::serve(config, stop).await?)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Discover { config, json } => {
            let config = load_config(config.as_deref())?;
            let runtime = runtime()?;
            let discovery = runtime.block_on(crmsync::discover::discover(&config))?;
            if json {
                println!("{}", serde_json::to_string(&discovery)?);
            } else {
                print!("{}", discovery.render());
            }
            Ok(if discovery.unmapped_in_data().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Plan {
            config,
            full,
            format,
            out,
        } => {
            let config = load_config(config.as_deref())?;
            let runtime = runtime()?;
            let (plan, _) = runtime.block_on(async {
                let planner = crmsync::engine::open_planner(config).await?;
                anyhow::Ok(planner.plan(crmsync::engine::SyncOptions { full }).await?)
            })?;
            let summary = plan.summary();
            match format {
                PlanFormat::Table => print!("{}", summary.render()),
                PlanFormat::Json => println!("{}", serde_json::to_string(&summary)?),
            }
            if let Some(out) = &out {
                plan.save(out)?;
                eprintln!(
                    "saved {} record change(s) to {}; review them, then: crmsync apply {}",
                    plan.changes.len(),
                    out.display(),
                    out.display()
                );
            }
            Ok(if plan.incomplete.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Apply { plan, config, json } => {
            let plan = crmsync::engine::saved_plan::Plan::load(&plan)?;
            let config = load_config(config.as_deref())?;
            let runtime = runtime()?;
            let report = runtime.block_on(async {
                let engine = crmsync::engine::open(config).await?;
                anyhow::Ok(engine.apply(&plan).await?)
            })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
            eprint!("{}", report.render());
            Ok(match report.status {
                crmsync::engine::RunStatus::Complete => ExitCode::SUCCESS,
                crmsync::engine::RunStatus::Partial => ExitCode::from(2),
                crmsync::engine::RunStatus::Failed => ExitCode::FAILURE,
            })
        }
        Command::Emulate {
            listen,
            seed,
            records,
            org,
            rate_limits,
            faults,
            hubspot_tier,
            salesforce_api_version,
            salesforce_daily_requests,
            public_url,
            config_dir,
        } => {
            let Some(major) = salesforce_api_version
                .strip_suffix(".0")
                .and_then(|major| major.parse::<u32>().ok())
                .filter(|major| *major >= crmsync::emulator::salesforce::OLDEST_API_VERSION)
            else {
                anyhow::bail!(
                    "--salesforce-api-version {salesforce_api_version:?} is not a Salesforce API version — use one such as 62.0 (31.0 or newer)"
                );
            };
            let config = EmulatorConfig {
                seed,
                records,
                profile: match org {
                    OrgArg::Classic => OrgProfile::Classic,
                    OrgArg::Custom => OrgProfile::Custom,
                },
                rate_limits: rate_limits == Switch::On,
                faults,
                hubspot_limits: HubspotLimits::for_tier(match hubspot_tier {
                    TierArg::Free => HubspotTier::Free,
                    TierArg::Professional => HubspotTier::Professional,
                    TierArg::Enterprise => HubspotTier::Enterprise,
                    TierArg::LimitIncrease => HubspotTier::LimitIncrease,
                }),
                salesforce_api_version: format!("{major}.0"),
                salesforce_daily_api_requests: salesforce_daily_requests,
                public_url,
                ..EmulatorConfig::default()
            };
            let runtime = runtime()?;
            runtime.block_on(emulate(config, listen, config_dir))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The async runtime of a command. Warehouse work runs on the blocking pool one operation at
/// a time, so a few blocking threads are plenty; each thread more costs memory.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
}

/// The configuration from `--config`, `CRMSYNC_CONFIG` or `./crmsync.toml`; every problem is
/// printed and stops the command.
/// How long a stopping run may take (`[schedule] stop_grace`).
fn grace(config: &crmsync::config::Config) -> std::time::Duration {
    std::time::Duration::try_from(config.schedule.stop_grace).unwrap_or_default()
}

fn load_config(flag: Option<&std::path::Path>) -> anyhow::Result<crmsync::config::Config> {
    let env = EnvVars::from_process();
    let path = crmsync::config::config_path(flag, &env);
    let (config, diagnostics, source) = crmsync::config::load(path.as_deref(), &env)?;
    if !diagnostics.is_empty() {
        let sources: Vec<_> = source.into_iter().collect();
        for diagnostic in diagnostics.iter() {
            eprintln!("{}\n", render_with_source(diagnostic, &sources));
        }
        anyhow::bail!(
            "the configuration has {} problem(s); fix them (crmsync check shows them too) and run again",
            diagnostics.len()
        );
    }
    Ok(config)
}

/// Serves the emulator until SIGINT or SIGTERM, after writing a config for it into `config_dir`
/// (if given) and printing its connection details as one
/// JSON line on stdout.
async fn emulate(
    config: EmulatorConfig,
    listen: std::net::SocketAddr,
    config_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let emulator = RunningEmulator::start(config, listen).await?;
    if let Some(dir) = &config_dir {
        let written = crmsync::demo::prepare_dir(dir, emulator.info())?;
        eprintln!("wrote {}", written.display());
    }
    println!("{}", serde_json::to_string(emulator.info())?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    drop(emulator);
    Ok(())
}
