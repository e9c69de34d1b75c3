//! The embedded SQLite warehouse (bundled SQLite, no system library): opening a file,
//! applying pending migrations in transactions, adding stage columns for the vocabulary, and
//! the indexes a bulk load builds after it (see [`DeferrableIndex`]).

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::StoreError;
use super::migrations::{
    BulkLoad, DEFERRABLE_INDEXES, DeferrableIndex, Dialect, MIGRATIONS, latest_version,
    stage_column_names, timestamp_type,
};
use crate::vocabulary::Vocabulary;

/// How often the checkpointer copies what the write-ahead log holds into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Log frames (pages) past which the writer itself finishes a checkpoint after a commit, so
/// the log can start over: its file stays near this size (64 MB with 4 KB pages) however long
/// a sync writes, while no other process holds a read open on the warehouse. The background
/// checkpointer has copied most of the frames by then.
const LOG_LIMIT_FRAMES: i64 = 16_384;
/// How long the checkpointer waits for a lock (the writer waits on it meanwhile).
const CHECKPOINT_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

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
        // Commits append to the write-ahead log; copying it into the database file is the
        // checkpointer's work, on its own connection and thread (see [`Checkpointer`]), but
        // for the last of it once the log is long (see [`LOG_LIMIT_FRAMES`]).
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
                 PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;
                 PRAGMA wal_autocheckpoint = {LOG_LIMIT_FRAMES};"
            ))
            .map_err(open_error)?;
        let checkpointer = Checkpointer::start(path)?;
        let mut store = Self {
            _checkpointer: Some(checkpointer),
            connection,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        store.ensure_stage_columns(vocabulary)?;
        Ok(store)
    }

    /// A second connection on the warehouse at `path`, which `open` has set up, for reads
    /// only: it reads what is committed while the main connection writes (the write-ahead
    /// log keeps each read's view whole). No migrations, no checkpointer.
    pub fn open_reader(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        connection
            .execute_batch(
                "PRAGMA query_only = ON; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -8192;
                 PRAGMA temp_store = MEMORY;",
            )
            .map_err(open_error)?;
        Ok(Self {
            _checkpointer: None,
            connection,
            path: path.to_path_buf(),
        })
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

    /// Sets the write-ahead log's length, in frames (pages), past which the writer finishes a
    /// checkpoint itself so the log starts over (default [`LOG_LIMIT_FRAMES`]).
    pub fn set_log_limit_frames(&self, frames: i64) -> Result<(), StoreError> {
        self.connection
            .pragma_update(None, "wal_autocheckpoint", frames)
            .map_err(|source| self.query_error(source))
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

    /// Drops the indexes `load` may build after it (see [`DeferrableIndex`]) if the load is
    /// worth it: for [`BulkLoad::Records`] when the warehouse holds no records yet, for
    /// [`BulkLoad::Persons`] when more records wait for reconcile than it holds persons.
    /// Returns the indexes dropped; [`Self::restore_indexes`] builds them again.
    pub fn defer_indexes(&mut self, load: BulkLoad) -> Result<Vec<&'static str>, StoreError> {
        let failed = self.failed();
        let worth_it: bool = match load {
            BulkLoad::Records => self
                .connection
                .query_row(
                    "SELECT NOT EXISTS (SELECT 1 FROM source_records)",
                    [],
                    |row| row.get(0),
                )
                .map_err(&failed)?,
            BulkLoad::Persons => self
                .connection
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM source_records WHERE pending)
                          > (SELECT COUNT(*) FROM unified_leads)",
                    [],
                    |row| row.get(0),
                )
                .map_err(&failed)?,
        };
        if !worth_it {
            return Ok(Vec::new());
        }
        let deferred: Vec<&'static DeferrableIndex> = DEFERRABLE_INDEXES
            .iter()
            .filter(|index| index.load == load)
            .collect();
        self.in_one_transaction(
            deferred
                .iter()
                .map(|index| format!("DROP INDEX IF EXISTS {}", index.name)),
        )?;
        Ok(deferred.iter().map(|index| index.name).collect())
    }

    /// Builds every index a bulk load dropped (see [`Self::defer_indexes`]); returns their
    /// names.
    pub fn restore_indexes(&mut self) -> Result<Vec<&'static str>, StoreError> {
        let present = self.indexes()?;
        let missing: Vec<&'static DeferrableIndex> = DEFERRABLE_INDEXES
            .iter()
            .filter(|index| !present.iter().any(|name| name == index.name))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        self.in_one_transaction(missing.iter().map(|index| index.create_if_missing()))?;
        Ok(missing.iter().map(|index| index.name).collect())
    }

    /// Runs schema statements in one IMMEDIATE transaction.
    fn in_one_transaction(
        &mut self,
        statements: impl Iterator<Item = String>,
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&failed)?;
        for statement in statements {
            transaction.execute_batch(&statement).map_err(&failed)?;
        }
        transaction.commit().map_err(&failed)
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
        self.schema_names("table")
    }

    /// The indexes in the file (SQLite's own left out), sorted.
    pub fn indexes(&self) -> Result<Vec<String>, StoreError> {
        self.schema_names("index")
    }

    /// The names of the schema's objects of one type (`table`, `index`), SQLite's own left
    /// out, sorted.
    fn schema_names(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .map_err(|source| self.query_error(source))?;
        let names = statement
            .query_map([kind], |row| row.get::<_, String>(0))
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
/// [`CHECKPOINT_EVERY`], copying what no reader still needs without making the writer wait
/// (`PASSIVE`), so commits need not do it. The log starts over once all of it is copied — which
/// a writer that never pauses only allows when it finishes a checkpoint itself (see
/// [`LOG_LIMIT_FRAMES`]).
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(CHECKPOINT_PATIENCE)
            .map_err(open_error)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                    {
                        // The log keeps everything until a later round succeeds.
                        tracing::warn!(warehouse = %shown, %error, "checkpoint of the write-ahead log failed");
                    }
                }
            })
            .map_err(|error| {
                StoreError::Worker(format!(
                    "cannot start the thread that checkpoints {}: {error}",
                    path.display()
                ))
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
