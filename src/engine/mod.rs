//! The sync engine: the only place that sequences a run and commits checkpoints.
//!
//! One run: extract every stream of both CRMs concurrently into the warehouse (each page
//! with its checkpoint, in one transaction) → resolve identity and reconcile every person
//! whose records changed (in chunks, each chunk one transaction that also queues the
//! write-backs it calls for) → write back what is queued (the write ledger remembers what
//! crmsync wrote) → close the run's `sync_runs` row. Each step leaves the warehouse
//! consistent, so a process killed anywhere resumes with the next run: pages not stored are
//! read again, records not reconciled are still pending, writes not confirmed are still
//! queued. Memory holds a few pages and one chunk of persons, however large the CRMs.

pub mod apply;
pub mod cursor;
pub mod explain;
pub mod extract;
pub mod identity;
mod lease;
pub mod plan;
pub mod progress;
pub mod reconcile;
mod run;
pub mod saved_plan;
pub mod stop;
mod writeback;

use std::collections::BTreeMap;

use serde::Serialize;

pub use run::{Engine, SyncOptions};
pub use stop::StopRequest;

use crate::record::System;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cursor(#[from] cursor::CursorError),
    #[error(transparent)]
    HubspotConnect(#[from] crate::hubspot::connect::ConnectError),
    #[error(transparent)]
    SalesforceConnect(#[from] crate::salesforce::connect::ConnectError),
    #[error(
        "another crmsync run is using the warehouse {warehouse} — wait for it to finish (runs must not overlap: they would send the same writes twice)"
    )]
    Busy { warehouse: String },
    #[error(
        "{system} object {object:?} is configured but has no mapping — add [objects.{object}] to mappings/{system}.toml or remove it from [{system}] objects"
    )]
    Unmapped { system: System, object: String },
    #[error(
        "this plan was made against {system} at {planned}, but the configuration reaches {system} at {configured} — apply a plan only where it was made, or make a new one with crmsync plan --out FILE"
    )]
    PlanElsewhere {
        system: System,
        planned: String,
        configured: String,
    },
    #[error("the worker normalizing {stream} stopped: {reason}")]
    Worker { stream: String, reason: String },
    /// A run that started and then failed (see [`RunFailure`]); it reads as the error that
    /// ended it.
    #[error(transparent)]
    RunFailed(Box<RunFailure>),
}

/// A run that started and then failed: `error` ended it, and `report` says what it did before
/// (as its `sync_runs` row does), so `/metrics` and `sync --json` still count it. It shows as
/// `error`, with `error`'s causes.
#[derive(Debug)]
pub struct RunFailure {
    pub report: SyncReport,
    pub error: EngineError,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RunFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// How one stream's read went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamOutcome {
    pub read: u64,
    pub changed: u64,
    pub deleted: u64,
    pub dead_letters: u64,
    /// Records whose stage value the mapping rejects (`on_unknown = "error"`).
    pub rejected_values: u64,
    pub seconds: f64,
}

/// How one stream was read in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub system: System,
    pub object: String,
    /// `full` (no checkpoint), `incremental` or `resumed` (a read that stopped part-way).
    pub mode: &'static str,
    pub read: u64,
    pub changed: u64,
    pub deleted: u64,
    pub seconds: f64,
    pub stopped: Option<String>,
}

/// Why a stream or a write-back stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStop {
    pub system: System,
    pub message: String,
    /// Stopped by the CRM's API budget (a reserve or a daily allowance) or by a request to
    /// stop (SIGTERM): the run is partial and the next one resumes, not failed.
    pub resumable: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Everything read, reconciled and written.
    Complete,
    /// Dead letters, or a stop at an API budget: resumable, never a success.
    Partial,
    /// A stream or write-back failed for another reason.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Complete => "complete",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

/// One system's API use by an engine's client (see [`Engine::api_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    pub system: System,
    /// Requests sent, retries included.
    pub calls: u64,
    /// Answers with status 429.
    pub rate_limited: u64,
    /// Requests left in the day's allowance, as the CRM last reported it.
    pub daily_remaining: Option<u64>,
}

/// Per system counts.
pub type PerSystem = BTreeMap<System, u64>;

/// What the warehouse holds after a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WarehouseSummary {
    pub persons: u64,
    /// Persons by stage id, in vocabulary order; `(none)` for persons without a stage.
    pub stages: Vec<(String, u64)>,
    /// Persons whose systems disagree on the stage.
    pub drift: u64,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    pub run_id: i64,
    pub status: RunStatus,
    pub full: bool,
    pub read: PerSystem,
    /// Records new or changed since the last run.
    pub changed: u64,
    pub deleted: u64,
    /// Persons reconciled in this run.
    pub reconciled: u64,
    /// Persons found to be one and merged.
    pub merged_persons: u64,
    pub stage_changes: u64,
    pub written: PerSystem,
    pub dead_letters: u64,
    pub regressions_refused: u64,
    pub api_calls: PerSystem,
    pub streams: Vec<StreamReport>,
    /// Every stop and failure, in words.
    pub problems: Vec<String>,
    /// Work this run left to other workers, which held it (PostgreSQL warehouses), in words.
    pub skipped: Vec<String>,
    pub warehouse: WarehouseSummary,
    pub seconds: f64,
    /// The process's peak resident memory so far, where the system tells (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Seconds spent in each step: extract, reconcile, write_back.
    pub phase_seconds: BTreeMap<&'static str, f64>,
    /// Chunks of pending records reconcile decided, and how many of them it read again
    /// because they met the chunk committing while they were read.
    pub reconcile_chunks: u64,
    pub reconcile_chunks_read_again: u64,
}

/// The process's peak resident set size (`VmHWM`), on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Why the engine could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the PostgreSQL warehouse password: {0}")]
    Password(crate::secret::SecretError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "cannot make a temporary directory for the plan's copy of the warehouse: {0} — check that TMPDIR is writable"
    )]
    Scratch(std::io::Error),
}

/// The engine for `config`: mappings loaded, warehouse opened and migrated, CRMs connected.
pub async fn open(config: crate::config::Config) -> Result<Engine, SetupError> {
    let (mapper, warehouse) = open_warehouse(&config).await?;
    Ok(Engine::connect(
        config,
        std::sync::Arc::new(mapper),
        warehouse,
    )?)
}

/// A private copy of the configured warehouse (see `crmsync plan`): a run on it changes
/// nothing in the warehouse itself. The copy lives as long as this does.
#[derive(Debug)]
pub struct Scratch {
    /// The SQLite copy's directory, removed on drop (a PostgreSQL copy is temporary tables
    /// that vanish with their connection).
    _directory: Option<tempfile::TempDir>,
}

/// A planner for `config`: its engine works on a private copy of the warehouse (see
/// [`Scratch`]), so making a plan writes nothing anywhere.
pub async fn open_planner(
    config: crate::config::Config,
) -> Result<saved_plan::Planner, SetupError> {
    let mapper = crate::mapping::load_dir(&config.mappings_dir.value)?;
    let stage_ids = stage_ids(&mapper);
    let (warehouse, scratch) = match &config.warehouse.url.value {
        crate::config::WarehouseUrl::Sqlite(path) => {
            let directory = tempfile::Builder::new()
                .prefix("crmsync-plan-")
                .tempdir()
                .map_err(SetupError::Scratch)?;
            let copy = directory.path().join("warehouse.db");
            let store = crate::store::SqliteStore::open_copy(path, &copy, mapper.vocabulary())?;
            (
                crate::store::Warehouse::sqlite(store, stage_ids),
                Scratch {
                    _directory: Some(directory),
                },
            )
        }
        crate::config::WarehouseUrl::Postgres(url) => {
            let password = warehouse_password(&config)?;
            let store = crate::store::postgres::PostgresStore::connect_scratch(
                url,
                password.as_ref(),
                mapper.vocabulary(),
            )
            .await?;
            (
                crate::store::Warehouse::postgres(store, stage_ids),
                Scratch { _directory: None },
            )
        }
    };
    let engine = Engine::connect(config, std::sync::Arc::new(mapper), warehouse)?;
    Ok(saved_plan::Planner::new(engine, scratch))
}

fn stage_ids(mapper: &crate::mapping::Mapper) -> Vec<String> {
    mapper
        .vocabulary()
        .stages()
        .map(|(_, stage)| stage.id.clone())
        .collect()
}

fn warehouse_password(
    config: &crate::config::Config,
) -> Result<Option<secrecy::SecretString>, SetupError> {
    config
        .warehouse
        .password
        .as_ref()
        .map(crate::secret::SecretRef::resolve)
        .transpose()
        .map_err(SetupError::Password)
}

/// The mappings and the warehouse of `config`, without touching a CRM (for commands that only
/// read the warehouse).
pub async fn open_warehouse(
    config: &crate::config::Config,
) -> Result<(crate::mapping::Mapper, crate::store::Warehouse), SetupError> {
    let mapper = crate::mapping::load_dir(&config.mappings_dir.value)?;
    let stage_ids = stage_ids(&mapper);
    let warehouse = match &config.warehouse.url.value {
        crate::config::WarehouseUrl::Sqlite(path) => {
            let store = crate::store::SqliteStore::open(path, mapper.vocabulary())?;
            crate::store::Warehouse::sqlite(store, stage_ids)
        }
        crate::config::WarehouseUrl::Postgres(url) => {
            let password = warehouse_password(config)?;
            let store = crate::store::postgres::PostgresStore::connect(
                url,
                password.as_ref(),
                mapper.vocabulary(),
            )
            .await?;
            crate::store::Warehouse::postgres(store, stage_ids)
        }
    };
    Ok((mapper, warehouse))
}

impl SyncReport {
    /// `full`, `incremental`, or the mix of the streams' read modes.
    pub fn modes(&self) -> String {
        let modes: std::collections::BTreeSet<&str> =
            self.streams.iter().map(|stream| stream.mode).collect();
        match modes.len() {
            0 => "no".to_string(),
            1 => modes.into_iter().next().unwrap_or("no").to_string(),
            _ => modes.into_iter().collect::<Vec<_>>().join(" and "),
        }
    }

    /// The run in one paragraph, for people.
    pub fn paragraph(&self) -> String {
        let per = |counts: &PerSystem| {
            System::ALL
                .iter()
                .map(|system| format!("{} {}", counts.get(system).copied().unwrap_or(0), system))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!(
            "Run {} {} in {:.1} s ({} read): read {} records ({}), {} new or changed, {} deleted; reconciled {} persons ({} stage changes, {} merged); wrote {} records ({}); {} dead letters; {} regressions refused; API calls {}. The warehouse holds {} persons, {} of them with systems that disagree.",
            self.run_id,
            self.status.as_str(),
            self.seconds,
            self.modes(),
            self.read.values().sum::<u64>(),
            per(&self.read),
            self.changed,
            self.deleted,
            self.reconciled,
            self.stage_changes,
            self.merged_persons,
            self.written.values().sum::<u64>(),
            per(&self.written),
            self.dead_letters,
            self.regressions_refused,
            per(&self.api_calls),
            self.warehouse.persons,
            self.warehouse.drift,
        );
        for problem in &self.problems {
            text.push_str("\n  problem: ");
            text.push_str(problem);
        }
        for skipped in &self.skipped {
            text.push_str("\n  left to another worker: ");
            text.push_str(skipped);
        }
        text
    }
}
