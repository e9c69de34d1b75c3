//! The `crmsync` binary: parse the command line, set up logging, run the subcommand, and turn
//! its outcome into an exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use crmsync::config::EnvVars;
use crmsync::diagnostics::render_with_source;

use cli::{Cli, Command, OrgArg, PlanFormat, Switch, TierArg};
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
    init_tracing();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. `CRMSYNC_LOG_LEVEL` (e.g. `debug`, `crmsync=trace`) sets the filter and
/// `CRMSYNC_LOG_FORMAT=json` switches to one JSON object per line, for every command.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRMSYNC_LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("CRMSYNC_LOG_FORMAT").is_ok_and(|format| format == "json");
    // A failed initialisation means a subscriber is already set; keep that one.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
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
            let runtime = runtime()?;
            let report = runtime.block_on(async {
                // Bars on a terminal, plain lines in logs and pipes.
                let progress: std::sync::Arc<dyn crmsync::engine::progress::Progress> =
                    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        std::sync::Arc::new(crmsync::engine::progress::Bars::default())
                    } else {
                        std::sync::Arc::new(crmsync::engine::progress::Lines::default())
                    };
                let engine = crmsync::engine::open(config).await?.with_progress(progress);
                anyhow::Ok(engine.sync(crmsync::engine::SyncOptions { full }).await?)
            })?;
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
                ..EmulatorConfig::default()
            };
            let runtime = runtime()?;
            runtime.block_on(emulate(config, listen))?;
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

/// Serves the emulator until SIGINT or SIGTERM, after printing its connection details as one
/// JSON line on stdout.
async fn emulate(config: EmulatorConfig, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let emulator = RunningEmulator::start(config, listen).await?;
    println!("{}", serde_json::to_string(emulator.info())?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    drop(emulator);
    Ok(())
}
