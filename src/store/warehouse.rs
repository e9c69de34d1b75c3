//! The warehouse as the engine sees it: one handle, whatever the backend, with async
//! operations so a sync's network work never waits behind a disk write. SQLite work runs on
//! tokio's blocking pool, one operation at a time on each of two connections: writes and most
//! reads on the main one, reconcile's lookups on a second that reads what is committed (so
//! the next chunk is read while one commits: see [`Warehouse::commit_reconcile`]). PostgreSQL
//! work is async on one connection.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use super::StoreError;
use super::migrations::BulkLoad;
use super::model::{
    HandOff, LedgerRow, MemberRow, PageStored, PageWrite, PendingPosition, PendingWrite,
    PersonCounts, PersonHistory, ReadOutcome, ReconcileCommit, RecordKey, RunRow, UnifiedRow,
    WritesDone,
};
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use crate::record::System;

/// The backend behind a [`Warehouse`].
#[derive(Clone)]
enum Backend {
    Sqlite {
        store: Arc<Mutex<SqliteStore>>,
        /// The reading connection, opened on first use, and the file it opens.
        reader: Arc<Mutex<Option<SqliteStore>>>,
        path: Arc<std::path::Path>,
    },
    Postgres(Arc<PostgresStore>),
}

/// A shared handle on the warehouse.
#[derive(Clone)]
pub struct Warehouse {
    backend: Backend,
    /// `first_entered_<stage>` columns, by stage id, in vocabulary order.
    stage_ids: Arc<[String]>,
    description: Arc<str>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("at", &self.description)
            .finish_non_exhaustive()
    }
}

impl Warehouse {
    /// The SQLite warehouse `store`, whose vocabulary has these stage ids.
    pub fn sqlite(store: SqliteStore, stage_ids: Vec<String>) -> Self {
        let description = store.path().display().to_string();
        Self {
            backend: Backend::Sqlite {
                path: store.path().into(),
                store: Arc::new(Mutex::new(store)),
                reader: Arc::new(Mutex::new(None)),
            },
            stage_ids: stage_ids.into(),
            description: description.into(),
        }
    }

    /// The PostgreSQL warehouse `store`, whose vocabulary has these stage ids.
    pub fn postgres(store: PostgresStore, stage_ids: Vec<String>) -> Self {
        let description = store.url().to_string();
        Self {
            backend: Backend::Postgres(Arc::new(store)),
            stage_ids: stage_ids.into(),
            description: description.into(),
        }
    }

    /// Where the warehouse is (a file path or a URL without password).
    pub fn description(&self) -> &str {
        &self.description
    }

    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteStore, &[String]) -> Result<T, StoreError> + Send + 'static,
    {
        let Backend::Sqlite { store, .. } = &self.backend else {
            return Err(StoreError::Worker("not an SQLite warehouse".into()));
        };
        let sqlite = Arc::clone(store);
        let stage_ids = Arc::clone(&self.stage_ids);
        tokio::task::spawn_blocking(move || {
            let mut store = sqlite
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut store, &stage_ids)
        })
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
    }

    /// Runs a read on the SQLite reading connection, which sees what is committed.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteStore, &[String]) -> Result<T, StoreError> + Send + 'static,
    {
        let Backend::Sqlite { reader, path, .. } = &self.backend else {
            return Err(StoreError::Worker("not an SQLite warehouse".into()));
        };
        let reader = Arc::clone(reader);
        let path = Arc::clone(path);
        let stage_ids = Arc::clone(&self.stage_ids);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let store = match &mut *reader {
                Some(store) => store,
                empty => empty.insert(SqliteStore::open_reader(&path)?),
            };
            work(store, &stage_ids)
        })
        .await
        .map_err(|error| StoreError::Worker(error.to_string()))?
    }

    /// Opens a run's `sync_runs` row for the worker `holder` (see the stores' `begin_run`);
    /// `ttl` is the lease lifetime.
    pub async fn begin_run(
        &self,
        started: Timestamp,
        holder: String,
        ttl: SignedDuration,
    ) -> Result<i64, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.begin_run(started, &holder, ttl).await;
        }
        self.with(move |store, _| store.begin_run(started, &holder))
            .await
    }

    pub async fn finish_run(&self, run_id: i64, run: RunRow) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.finish_run(run_id, Timestamp::now(), &run).await;
        }
        self.with(move |store, _| store.finish_run(run_id, Timestamp::now(), &run))
            .await
    }

    pub async fn checkpoints(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.checkpoints().await;
        }
        self.with(|store, _| store.checkpoints()).await
    }

    /// Records how a read of a stream ended: `complete`, `stopped` or `failed`.
    pub async fn record_read(
        &self,
        system: System,
        object: String,
        status: &'static str,
        message: Option<String>,
        run_id: i64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg
                .record_read(system, &object, status, message.as_deref(), run_id, at)
                .await;
        }
        self.with(move |store, _| {
            store.record_read(system, &object, status, message.as_deref(), run_id, at)
        })
        .await
    }

    /// Streams whose last read, by any worker, did not end `complete`.
    pub async fn unfinished_reads(&self) -> Result<Vec<ReadOutcome>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.unfinished_reads().await;
        }
        self.with(|store, _| store.unfinished_reads()).await
    }

    /// A kept API answer (see `api_cache`) and when it was fetched.
    pub async fn cached(
        &self,
        system: System,
        name: String,
    ) -> Result<Option<(Timestamp, String)>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.cached(system, &name).await;
        }
        self.with(move |store, _| store.cached(system, &name)).await
    }

    /// Keeps an API answer for later runs; `None` forgets it.
    pub async fn keep_cached(
        &self,
        system: System,
        name: String,
        kept: Option<(Timestamp, String)>,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.keep_cached(system, &name, kept).await;
        }
        self.with(move |store, _| store.keep_cached(system, &name, kept))
            .await
    }

    /// Forgets where these streams' reads stood: (system, object).
    pub async fn clear_checkpoints(
        &self,
        streams: Vec<(System, String)>,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.clear_checkpoints(&streams).await;
        }
        self.with(move |store, _| store.clear_checkpoints(&streams))
            .await
    }

    pub async fn store_page(
        &self,
        run_id: i64,
        system: System,
        object: String,
        page: PageWrite,
    ) -> Result<PageStored, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg
                .store_page(run_id, system, &object, &page, Timestamp::now())
                .await;
        }
        self.with(move |store, _| {
            store.store_page(run_id, system, &object, &page, Timestamp::now())
        })
        .await
    }

    /// Drops the indexes `load` may build after it, if the load is worth it (SQLite only:
    /// PostgreSQL workers share the warehouse, and its indexes stay). Returns their names.
    pub async fn defer_indexes(&self, load: BulkLoad) -> Result<Vec<&'static str>, StoreError> {
        if let Backend::Postgres(_) = &self.backend {
            return Ok(Vec::new());
        }
        self.with(move |store, _| store.defer_indexes(load)).await
    }

    /// Builds the indexes a bulk load dropped; returns their names.
    pub async fn restore_indexes(&self) -> Result<Vec<&'static str>, StoreError> {
        if let Backend::Postgres(_) = &self.backend {
            return Ok(Vec::new());
        }
        self.with(|store, _| store.restore_indexes()).await
    }

    /// Up to about `limit` records waiting for reconcile after `after` (every record of the
    /// last email is taken: see the stores' `pending_records`).
    pub async fn pending_records(
        &self,
        after: Option<PendingPosition>,
        limit: usize,
    ) -> Result<Vec<MemberRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.pending_records(after.as_ref(), limit).await;
        }
        self.read(move |store, _| store.pending_records(after.as_ref(), limit))
            .await
    }

    pub async fn members_of(&self, unified_ids: Vec<String>) -> Result<Vec<MemberRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.members_of(&unified_ids).await;
        }
        self.read(move |store, _| store.members_of(&unified_ids))
            .await
    }

    pub async fn records_with_emails(
        &self,
        emails: Vec<String>,
    ) -> Result<Vec<MemberRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.records_with_emails(&emails).await;
        }
        self.read(move |store, _| store.records_with_emails(&emails))
            .await
    }

    pub async fn records(&self, keys: Vec<RecordKey>) -> Result<Vec<MemberRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.records(&keys).await;
        }
        self.read(move |store, _| store.records(&keys)).await
    }

    pub async fn unified(&self, unified_ids: Vec<String>) -> Result<Vec<UnifiedRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.unified(&unified_ids, &self.stage_ids).await;
        }
        self.read(move |store, stage_ids| store.unified(&unified_ids, stage_ids))
            .await
    }

    pub async fn ledger(&self, keys: Vec<RecordKey>) -> Result<Vec<LedgerRow>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.ledger(&keys).await;
        }
        self.read(move |store, _| store.ledger(&keys)).await
    }

    /// The number the next new person's id takes (see `engine::identity`).
    pub async fn next_person_number(&self) -> Result<i64, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.next_person_number().await;
        }
        self.with(|store, _| store.next_person_number()).await
    }

    /// Stores one reconciled chunk in one transaction.
    pub async fn commit_reconcile(
        &self,
        run_id: i64,
        at: Timestamp,
        commit: ReconcileCommit,
    ) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg
                .commit_reconcile(run_id, at, &commit, &self.stage_ids)
                .await;
        }
        self.with(move |store, stage_ids| store.commit_reconcile(run_id, at, &commit, stage_ids))
            .await
    }

    /// Up to `limit` waiting writes to `object` of `system`, after the record id `after`.
    pub async fn pending_writes(
        &self,
        system: System,
        object: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg
                .pending_writes(system, &object, after.as_deref(), limit)
                .await;
        }
        self.with(move |store, _| store.pending_writes(system, &object, after.as_deref(), limit))
            .await
    }

    pub async fn commit_writes(&self, run_id: i64, done: WritesDone) -> Result<(), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.commit_writes(run_id, Timestamp::now(), &done).await;
        }
        self.with(move |store, _| store.commit_writes(run_id, Timestamp::now(), &done))
            .await
    }

    /// Persons, persons by stage, persons whose systems disagree.
    pub async fn person_counts(&self) -> Result<PersonCounts, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.person_counts().await;
        }
        self.with(|store, _| store.person_counts()).await
    }

    /// The person a merged-away id now lives on, if it was merged.
    pub async fn survivor_of(&self, unified_id: String) -> Result<Option<String>, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.survivor_of(&unified_id).await;
        }
        self.with(move |store, _| store.survivor_of(&unified_id))
            .await
    }

    /// Transitions, merges, queued and written values of one person.
    pub async fn history(&self, unified_id: String) -> Result<PersonHistory, StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            return pg.history(&unified_id).await;
        }
        self.with(move |store, _| store.history(&unified_id)).await
    }

    /// Takes the warehouse for one run: `Ok(None)` when another run holds it. SQLite: an
    /// exclusive lock on `<file>.lock`, let go when the process ends, however it ends.
    /// PostgreSQL: always granted — runs there share the warehouse, each taking leases on the
    /// work it does (see [`Self::try_lease`]).
    pub async fn lock_for_run(&self) -> Result<Option<RunLock>, StoreError> {
        match &self.backend {
            Backend::Postgres(_) => Ok(Some(RunLock { file: None })),
            Backend::Sqlite {
                path: warehouse, ..
            } => {
                let mut path = warehouse.as_os_str().to_owned();
                path.push(".lock");
                let path = std::path::PathBuf::from(path);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|source| StoreError::Lock {
                        path: path.clone(),
                        source,
                    })?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(RunLock { file: Some(file) })),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(source)) => {
                        Err(StoreError::Lock { path, source })
                    }
                }
            }
        }
    }

    /// Whether several workers' runs may use this warehouse at once (PostgreSQL), so that
    /// work is shared out through leases.
    pub fn is_shared(&self) -> bool {
        self.shared_postgres().is_some()
    }

    /// The PostgreSQL store, if other workers share it (not a plan's private copy, whose
    /// copied leases name nobody working on it).
    fn shared_postgres(&self) -> Option<&PostgresStore> {
        match &self.backend {
            Backend::Postgres(pg) if !pg.is_scratch() => Some(pg),
            _ => None,
        }
    }

    /// Takes the lease `name` for `holder` for `ttl`: `None` when taken, else who holds it
    /// and until when. On SQLite, and on a plan's private copy, every lease is the run's
    /// already (it holds the whole file, or the copy is its own).
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: SignedDuration,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        match self.shared_postgres() {
            Some(pg) => pg.try_lease(name, holder, ttl).await,
            None => Ok(None),
        }
    }

    /// Lets `holder`'s `streams` go and takes `persons` unless another worker still reads a
    /// stream, as one step among workers (see `PostgresStore::hand_off`). On SQLite the run
    /// holds everything: taken.
    pub async fn hand_off(
        &self,
        holder: &str,
        streams: &[String],
        persons: &str,
        stream_prefix: &str,
        ttl: SignedDuration,
    ) -> Result<HandOff, StoreError> {
        match self.shared_postgres() {
            Some(pg) => {
                pg.hand_off(holder, streams, persons, stream_prefix, ttl)
                    .await
            }
            None => Ok(HandOff::Taken),
        }
    }

    /// Extends `holder`'s leases on `names`; returns those it no longer holds.
    pub async fn renew_leases(
        &self,
        names: Vec<String>,
        holder: &str,
        ttl: SignedDuration,
    ) -> Result<Vec<String>, StoreError> {
        match self.shared_postgres() {
            Some(pg) => pg.renew_leases(&names, holder, ttl).await,
            None => Ok(Vec::new()),
        }
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        match self.shared_postgres() {
            Some(pg) => pg.release_lease(name, holder).await,
            None => Ok(()),
        }
    }
}

/// A run's hold on an SQLite warehouse; see [`Warehouse::lock_for_run`].
#[derive(Debug)]
pub struct RunLock {
    /// Held open, and so locked, until dropped.
    file: Option<std::fs::File>,
}

impl RunLock {
    /// Lets the warehouse go.
    pub async fn release(self) -> Result<(), StoreError> {
        drop(self.file);
        Ok(())
    }
}
