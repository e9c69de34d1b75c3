//! The command line: every subcommand and its flags (clap definitions only; `main.rs` runs
//! them).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// crmsync keeps HubSpot and Salesforce speaking one language about where every lead stands.
#[derive(Debug, Parser)]
#[command(name = "crmsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as one JSON object each (default: text on a terminal, JSON
    /// otherwise; else `[log] format` / CRMSYNC_LOG_FORMAT).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the run id, system and object as fields.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and mapping files offline; print every problem as file:line:col.
    ///
    /// Exit status 0 when everything is valid, 1 when any problem was found.
    Check {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },

    /// Run the whole product on this machine: the emulator, two syncs into an SQLite
    /// warehouse, and a summary. Needs no credentials.
    Demo {
        /// People in the emulated org.
        #[arg(long, default_value_t = 2_000)]
        records: usize,
        /// Where the config, mappings and warehouse go.
        #[arg(long, default_value = "crmsync-demo", value_name = "DIR")]
        dir: PathBuf,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },

    /// One sync run: read both CRMs, reconcile, write back, load the warehouse.
    ///
    /// Exit status 0 when complete, 2 when partial (dead letters, stopped at an API budget
    /// reserve, or stopped by SIGTERM/SIGINT after storing its checkpoint; the next run
    /// resumes), 1 when it failed.
    Sync {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Read everything again, ignoring checkpoints.
        #[arg(long)]
        full: bool,
        /// Print the run's report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },

    /// The live picklists and pipelines of both CRMs against the mappings: per object and
    /// stage property, every value with its record count and the stage it maps to, unmapped
    /// values first.
    ///
    /// Exit status 1 when a value that records hold is unmapped, 0 otherwise.
    Discover {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// What a sync would write now, per system, object and field (with stage moves), without
    /// writing anything anywhere — neither CRM, nor the warehouse.
    ///
    /// `--out FILE` also saves every record's every field change and the rule that decided
    /// it, for review and `crmsync apply FILE`. Exit status 0 when the plan covers
    /// everything a sync would write (records a sync would dead-letter are counted, not
    /// planned), 2 when it is incomplete (a read stopped), 1 when it could not be made.
    Plan {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Plan as if everything were read again, ignoring checkpoints.
        #[arg(long)]
        full: bool,
        /// How to print the plan's summary.
        #[arg(long, value_enum, default_value = "table")]
        format: PlanFormat,
        /// Save the exact per-record, per-field changes here (JSON).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },

    /// Carry out exactly a plan saved by `crmsync plan --out`: records that changed in their
    /// CRM since the plan are refused (and named), the rest written.
    ///
    /// Exit status 0 when every planned record was written, 2 when some were refused or
    /// dead-lettered, 1 when the apply failed.
    Apply {
        /// The plan file.
        plan: PathBuf,
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },

    /// Everything behind one person's stage: the records in each CRM, the rule that mapped
    /// each, the policy decision, the stage history and the writes made or queued.
    ///
    /// Reads only the warehouse. Exit status 1 when no person matches.
    Explain {
        /// An email address or a unified id (`p-…`; merged ids are followed).
        who: String,
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Run syncs on the configured schedule (`[schedule] every` or `cron`), never two at
    /// once, serving /healthz and /metrics (Prometheus) on `[schedule] listen`.
    ///
    /// SIGTERM or SIGINT: the run in hand finishes its batch and stores its checkpoint, then
    /// the daemon exits 0 (within `[schedule] stop_grace`, else 1).
    Serve {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },

    /// Serve emulated HubSpot and Salesforce APIs over a seeded org.
    ///
    /// Prints one JSON line with the base URLs and credentials, then serves until interrupted.
    Emulate {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Seed of the generated data: the same seed serves the same org.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// People in the org, spread over both systems.
        #[arg(long, default_value_t = 1_000)]
        records: usize,
        /// Which picklists the org has.
        #[arg(long, value_enum, default_value = "classic")]
        org: OrgArg,
        /// Enforce the real rate limits (`off` for fast benchmarks).
        #[arg(long, value_enum, default_value = "on")]
        rate_limits: Switch,
        /// Faults to inject: none, or a comma-separated list of flaky, storm, slow, expiry, partial.
        #[arg(long, default_value = "none", value_name = "PROFILE")]
        faults: crmsync::emulator::faults::Faults,
        /// The HubSpot subscription whose API limits apply.
        #[arg(long, value_enum, default_value = "free")]
        hubspot_tier: TierArg,
        /// The newest Salesforce API version served (older ones down to 31.0 are served too).
        #[arg(long, default_value = crmsync::emulator::salesforce::DEFAULT_API_VERSION, value_name = "VERSION")]
        salesforce_api_version: String,
        /// Salesforce API requests allowed per 24 hours (DailyApiRequests).
        #[arg(long, default_value_t = 100_000, value_name = "COUNT")]
        salesforce_daily_requests: u64,
        /// The base URL clients reach the emulator at, if not the listen address (e.g.
        /// `http://emulator:8080` behind a container name).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Also write a working crmsync.toml (with mappings and the emulator's credentials as
        /// files) into DIR, for a crmsync elsewhere to use.
        #[arg(long, value_name = "DIR")]
        config_dir: Option<PathBuf>,
    },
}

/// `crmsync plan --format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Per system, object and field: records that change, and stage moves from → to.
    Table,
    /// The same counts as one JSON object.
    Json,
}

/// `--org` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrgArg {
    /// A new org's standard picklists.
    Classic,
    /// Customised picklists: other lead statuses, a custom lifecycle stage.
    Custom,
}

/// `--hubspot-tier` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TierArg {
    /// Free and Starter: 100 requests per 10 s, 250,000 a day.
    Free,
    /// Professional: 190 per 10 s, 625,000 a day.
    Professional,
    /// Enterprise: 190 per 10 s, 1,000,000 a day.
    Enterprise,
    /// With the API limit increase: 250 per 10 s, 1,000,000 a day.
    LimitIncrease,
}

/// `on` / `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}
