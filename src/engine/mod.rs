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

pub mod cursor;
pub mod explain;
pub mod extract;
pub mod identity;
pub mod plan;
pub mod progress;
pub mod reconcile;
mod run;
mod writeback;

use std::collections::BTreeMap;

use serde::Serialize;

pub use run::{Engine, SyncOptions};

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
    /// The CRM's API budget (a reserve or a daily allowance): the run is partial, not failed.
    pub budget: bool,
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
    pub warehouse: WarehouseSummary,
    pub seconds: f64,
    /// The process's peak resident memory so far, where the system tells (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Seconds spent in each step: extract, reconcile, write_back.
    pub phase_seconds: BTreeMap<&'static str, f64>,
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

/// The mappings and the warehouse of `config`, without touching a CRM (for commands that only
/// read the warehouse).
pub async fn open_warehouse(
    config: &crate::config::Config,
) -> Result<(crate::mapping::Mapper, crate::store::Warehouse), SetupError> {
    let mapper = crate::mapping::load_dir(&config.mappings_dir.value)?;
    let stage_ids: Vec<String> = mapper
        .vocabulary()
        .stages()
        .map(|(_, stage)| stage.id.clone())
        .collect();
    let warehouse = match &config.warehouse.url.value {
        crate::config::WarehouseUrl::Sqlite(path) => {
            let store = crate::store::SqliteStore::open(path, mapper.vocabulary())?;
            crate::store::Warehouse::sqlite(store, stage_ids)
        }
        crate::config::WarehouseUrl::Postgres(url) => {
            let password = config
                .warehouse
                .password
                .as_ref()
                .map(crate::secret::SecretRef::resolve)
                .transpose()
                .map_err(SetupError::Password)?;
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
        text
    }
}
