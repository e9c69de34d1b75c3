//! The warehouse and the run state: where normalized records, unified leads, stage
//! transitions, run logs, checkpoints and dead letters live.
//!
//! One schema serves every backend. [`migrations`] holds the versioned migration list, written
//! once with a few dialect tokens; [`sqlite`] is the embedded default (a single file, no server).
//! The table and column names are part of crmsync's public interface: analysts query them.

pub mod migrations;
pub mod model;
pub mod postgres;
pub mod postgres_tls;
pub mod sqlite;
mod sqlite_ops;
pub mod warehouse;

use std::path::PathBuf;

pub use migrations::{Dialect, MIGRATIONS, Migration};
pub use sqlite::SqliteStore;
pub use warehouse::Warehouse;

/// Where a person's id is referenced, as (table, column): when two persons turn out to be
/// one, every backend re-points these from the absorbed id to the survivor's.
pub const PERSON_REFERENCES: [(&str, &str); 4] = [
    ("source_records", "unified_id"),
    ("stage_transitions", "unified_id"),
    ("pending_writes", "unified_id"),
    ("person_merges", "survivor"),
];

/// A time as the warehouse stores it in text columns: UTC, microseconds, fixed width, so
/// text order is time order.
pub fn sql_time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A time read back from a text column.
pub fn parse_sql_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// Problems with the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the SQLite warehouse {path}: {source} — check that the directory exists and is writable"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "migration {version} ({name}) failed on {path}: {source} — the database was left at the previous version; fix the cause and run again"
    )]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "the warehouse {path} is at schema version {found}, newer than this crmsync knows ({known}) — upgrade crmsync or point it at another warehouse"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("warehouse query failed on {path}: {source}")]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the warehouse worker stopped unexpectedly: {0}")]
    Worker(String),
    #[error("cannot connect to the PostgreSQL warehouse {url}: {cause} — {hint}")]
    PostgresConnect {
        url: String,
        /// The driver's error with its causes (a TLS handshake's names the certificate problem).
        cause: String,
        hint: &'static str,
    },
    #[error("the PostgreSQL warehouse {url}: {source}")]
    PostgresTls {
        url: String,
        source: postgres_tls::PostgresTlsError,
    },
    #[error(
        "migration {version} ({name}) failed on {url}: {source} — the database was left at the previous version; fix the cause and run again"
    )]
    PostgresMigration {
        url: String,
        version: u32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("warehouse query failed on {url}: {source}")]
    Postgres {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "the warehouse {at} holds a value crmsync cannot read ({what}) — was it edited by hand?"
    )]
    Corrupt { at: String, what: String },
    #[error(
        "on {url}, the name {table} does not lead to the plan's private copy of that table (is pg_temp listed late in search_path, or does a pooler share sessions?) — crmsync plan stops rather than touch the real table; connect it directly to the server with the default search_path"
    )]
    ScratchNotPrivate { url: String, table: String },
    #[error(
        "cannot take the run lock {path}: {source} — check that the warehouse's directory is writable"
    )]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}
