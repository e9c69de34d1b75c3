//! The embedded SQLite warehouse (bundled SQLite, no system library): opening a file,
//! applying pending migrations in transactions, and adding stage columns for the vocabulary.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::StoreError;
use super::migrations::{Dialect, MIGRATIONS, latest_version, stage_column_names, timestamp_type};
use crate::vocabulary::Vocabulary;

/// How often the checkpointer copies what the write-ahead log holds into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Log frames (pages) past which the checkpointer makes the log start over: its file stays
/// near this size (64 MB with 4 KB pages) however long a sync writes.
const RESTART_AT_FRAMES: i64 = 16_384;

type SharedLimit = std::sync::Arc<std::sync::atomic::AtomicI64>;

/// An open SQLite warehouse at the current schema version.
pub struct SqliteStore {
    /// Declared first so it stops before the connection closes (the last connection to close
    /// checkpoints the log and removes it).
    _checkpointer: Option<Checkpointer>,
    pub(super) connection: Connection,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the warehouse file, migrates it to the latest version and
    /// makes sure every vocabulary stage has its `first_entered_<stage>` column.
    pub fn open(path: &Path, vocabulary: &Vocabulary) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        // Commits only append to the write-ahead log; copying it into the database file is
        // the checkpointer's work, on its own connection and thread, so a long sync's writes
        // do not stop for it.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
                 PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(open_error)?;
        let checkpointer = Checkpointer::start(path).map_err(open_error)?;
        let mut store = Self {
            _checkpointer: Some(checkpointer),
            connection,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        store.ensure_stage_columns(vocabulary)?;
        Ok(store)
    }

    /// A private copy of the warehouse at `source`, written to `target` (which must not exist
    /// yet), migrated and ready: for work that must leave the warehouse itself untouched
    /// (`crmsync plan`). The copy is taken in one read transaction (`VACUUM INTO`), so a sync
    /// running meanwhile cannot tear it. A `source` that does not exist gives a new warehouse.
    pub fn open_copy(
        source: &Path,
        target: &Path,
        vocabulary: &Vocabulary,
    ) -> Result<Self, StoreError> {
        if source.exists() {
            let query_error = |error| StoreError::Query {
                path: source.to_path_buf(),
                source: error,
            };
            let connection = Connection::open_with_flags(
                source,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|error| StoreError::Open {
                path: source.to_path_buf(),
                source: error,
            })?;
            connection
                .busy_timeout(std::time::Duration::from_secs(5))
                .map_err(query_error)?;
            connection
                .execute("VACUUM INTO ?1", [target.to_string_lossy()])
                .map_err(query_error)?;
        }
        Self::open(target, vocabulary)
    }

    /// Copies the whole write-ahead log into the database file now (what the checkpointer
    /// does in the background), waiting for readers if it must.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.connection
            .execute_batch("PRAGMA wal_checkpoint(FULL)")
            .map_err(|source| self.query_error(source))
    }

    /// Sets the write-ahead log's size, in frames (pages), past which the checkpointer makes
    /// it start over (default 16,384: 64 MB with 4 KB pages).
    pub fn set_log_restart_frames(&self, frames: i64) {
        if let Some(checkpointer) = &self._checkpointer {
            checkpointer
                .restart_at
                .store(frames, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn query_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Query {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version recorded in the file (0 for a new file).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.connection
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.query_error(source))
    }

    /// Applies pending migrations in one IMMEDIATE transaction: the version is read under the
    /// write lock, so two processes opening a new file cannot both migrate it.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let query_error = |source| StoreError::Query {
            path: path.clone(),
            source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(query_error)?;
        transaction
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT NOT NULL,
                    applied_at TEXT NOT NULL
                )",
            )
            .map_err(query_error)?;
        let current: u32 = transaction
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(query_error)?;
        if current > latest_version() {
            return Err(StoreError::TooNew {
                path: path.clone(),
                found: current,
                known: latest_version(),
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            let failed = |source| StoreError::Migration {
                path: path.clone(),
                version: migration.version,
                name: migration.name,
                source,
            };
            transaction
                .execute_batch(&migration.render(Dialect::Sqlite))
                .map_err(failed)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![
                        migration.version,
                        migration.name,
                        jiff::Timestamp::now().to_string()
                    ],
                )
                .map_err(failed)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied warehouse migration"
            );
        }
        transaction.commit().map_err(query_error)
    }

    fn ensure_stage_columns(&self, vocabulary: &Vocabulary) -> Result<(), StoreError> {
        let existing = self.columns("unified_leads")?;
        for column in stage_column_names(vocabulary) {
            if !existing.contains(&column) {
                let sql = format!(
                    "ALTER TABLE unified_leads ADD COLUMN {column} {}",
                    timestamp_type(Dialect::Sqlite)
                );
                self.connection
                    .execute_batch(&sql)
                    .map_err(|source| self.query_error(source))?;
            }
        }
        Ok(())
    }

    /// The column names of a table, in order.
    pub fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(|source| self.query_error(source))?;
        let names = statement
            .query_map([table], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect)
            .map_err(|source| self.query_error(source))?;
        Ok(names)
    }

    /// The user tables in the file, sorted.
    pub fn tables(&self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|source| self.query_error(source))?;
        let names = statement
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect)
            .map_err(|source| self.query_error(source))?;
        Ok(names)
    }

    /// The underlying connection, for the engine's queries.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A thread with its own connection that checkpoints the write-ahead log every
/// [`CHECKPOINT_EVERY`] without blocking the writer (`PASSIVE`): it copies what no reader
/// still needs, and the writer starts the log over once all of it is copied.
struct Checkpointer {
    restart_at: SharedLimit,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, rusqlite::Error> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shown = path.display().to_string();
        let restart_at = SharedLimit::new(RESTART_AT_FRAMES.into());
        let limit = SharedLimit::clone(&restart_at);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let restart_at = limit.load(std::sync::atomic::Ordering::Relaxed);
                    if let Err(error) = checkpoint_once(&connection, restart_at) {
                        // The log keeps everything until a later checkpoint succeeds.
                        tracing::warn!(warehouse = %shown, %error, "checkpoint of the write-ahead log failed");
                    }
                }
            })
            .map_err(|error| {
                rusqlite::Error::ToSqlConversionFailure(Box::new(error))
            })?;
        Ok(Self {
            restart_at,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// One round of the checkpointer: copies what it can without waiting; once the log has grown
/// past `restart_at` frames (a writer that never pauses leaves no moment for the log to start
/// over by itself), copies the rest waiting for the writer's current commit, so the next
/// commit writes the log from its start again.
fn checkpoint_once(connection: &Connection, restart_at: i64) -> Result<(), rusqlite::Error> {
    let frames: i64 =
        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames >= restart_at {
        connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
