//! The PostgreSQL warehouse: the same schema (rendered for PostgreSQL) and the same
//! operations as the SQLite one, over `tokio-postgres`. Pages of records are upserted with
//! one multi-row statement (`unnest` of column arrays); every step is one transaction.
//! Migrations run under an advisory lock, so two processes starting at once cannot both
//! migrate. TLS as the URL's `sslmode`/`sslrootcert` say ([`super::postgres_tls`]).

use jiff::Timestamp;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Row, Transaction};

use super::postgres_tls::{SslMode, TlsSettings};

use super::StoreError;
use super::migrations::{Dialect, MIGRATIONS, latest_version, stage_column_names, timestamp_type};
use super::model::{
    DeadLetterRow, HandOff, LedgerRow, MemberRow, PageStored, PageWrite, PendingPosition,
    PendingWrite, PersonCounts, PersonHistory, PersonMerge, ReadOutcome, ReconcileCommit,
    RecordKey, RunRow, StoredProperties, TransitionRow, UnifiedRow, WritesDone,
};
use crate::record::System;
use crate::vocabulary::Vocabulary;

/// Arbitrary, fixed keys for the migration lock and the run lock.
const MIGRATION_LOCK: i64 = 0x0063_726d_7379_6e63;
/// Takes lease $1 for holder $2 for $3 seconds, unless another holder's has not expired;
/// returns a row when taken.
/// The clock is read when the statement runs (`clock_timestamp()`), not when its transaction
/// began: a hand-off may have waited for its lock.
const TAKE_LEASE: &str = "INSERT INTO leases (name, holder, acquired_at, expires_at)
     VALUES ($1, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3))
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
        acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
     WHERE leases.expires_at < clock_timestamp() OR leases.holder = excluded.holder
     RETURNING holder";
/// Serialises workers' hand-offs from reading streams to reconcile (see `hand_off`).
const HAND_OFF_LOCK: i64 = 0x0063_726d_7379_6e64;

const MEMBER_COLUMNS: &str = "system, object, id, modified_at, properties::text, email, stage, raw_stage, stage_rule, fields::text, unified_id, merged_into, archived, version";

/// Which tables a connection works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tables {
    /// The database's own.
    Shared,
    /// This session's temporary copies (see [`PostgresStore::connect_scratch`]).
    Temporary,
}

/// A connected PostgreSQL warehouse at the current schema version.
pub struct PostgresStore {
    client: Mutex<Client>,
    /// The URL without password, for messages.
    url: String,
    /// A session-private copy (`crmsync plan`): no other worker shares it.
    scratch: bool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn failed(url: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |source| StoreError::Postgres {
        url: url.to_string(),
        source,
    }
}

impl PostgresStore {
    /// Connects to `url` (no password in it; `password` from its secret reference), migrates
    /// the schema and adds the vocabulary's stage columns.
    pub async fn connect(
        url: &str,
        password: Option<&secrecy::SecretString>,
        vocabulary: &Vocabulary,
    ) -> Result<Self, StoreError> {
        let store = Self::open(url, password).await?;
        store.migrate(vocabulary, Tables::Shared).await?;
        Ok(store)
    }

    /// A session-private copy of the warehouse at `url`, for work that must leave the
    /// warehouse itself untouched (`crmsync plan`): every crmsync table is copied, in one
    /// repeatable-read snapshot, into a temporary table of the same name, which shadows the
    /// real one for this connection only and vanishes with it. Migrations the warehouse
    /// still lacks are applied to the copies; tables it does not have yet are created
    /// temporary. Nothing is written to the database's own tables or sequences.
    pub async fn connect_scratch(
        url: &str,
        password: Option<&secrecy::SecretString>,
        vocabulary: &Vocabulary,
    ) -> Result<Self, StoreError> {
        let mut store = Self::open(url, password).await?;
        store.scratch = true;
        store.copy_into_temporary_tables().await?;
        // Before anything runs on them (migrations included), and after.
        store.check_shadowing(false).await?;
        store.migrate(vocabulary, Tables::Temporary).await?;
        store.check_shadowing(true).await?;
        Ok(store)
    }

    /// Whether this is a session-private copy (see [`Self::connect_scratch`]).
    pub fn is_scratch(&self) -> bool {
        self.scratch
    }

    /// Makes sure every crmsync table name resolves to this session's temporary copy (it
    /// would not with `pg_temp` late on the search path), so work on the copy cannot reach
    /// the real tables. Names that resolve to no table at all pass unless `all` is set
    /// (before migrating, tables the warehouse lacks have no copy yet).
    async fn check_shadowing(&self, all: bool) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        for table in std::iter::once("schema_migrations").chain(super::migrations::table_names()) {
            let resolved = client
                .query_opt(
                    "SELECT c.relnamespace = pg_my_temp_schema() FROM pg_class c WHERE c.oid = to_regclass($1)",
                    &[&table],
                )
                .await
                .map_err(failed(&self.url))?;
            let temporary: Option<bool> = resolved.map(|row| row.get(0));
            if temporary == Some(false) || (all && temporary.is_none()) {
                return Err(StoreError::ScratchNotPrivate {
                    url: self.url.clone(),
                    table: table.to_string(),
                });
            }
        }
        Ok(())
    }

    async fn open(url: &str, password: Option<&secrecy::SecretString>) -> Result<Self, StoreError> {
        let tls_failed = |source| StoreError::PostgresTls {
            url: url.to_string(),
            source,
        };
        let (tls, driver_url) = TlsSettings::from_url(url).map_err(tls_failed)?;
        let connector = tls.connector().map_err(tls_failed)?;
        let mut config: tokio_postgres::Config = driver_url
            .parse()
            .map_err(|source| connect_failed(url, &source, &tls))?;
        if let Some(password) = password {
            config.password(password.expose_secret());
        }
        config.application_name("crmsync");
        let connected = match config.connect(connector.clone()).await {
            // libpq's prefer: a server that offers TLS but cannot complete a handshake with
            // crmsync (an old protocol version or key, say) is used without it. Only a failed
            // handshake falls back, not a setting tokio-postgres refuses before one.
            Err(error) if tls.mode == SslMode::Prefer && is_failed_handshake(&error) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                match config.connect(connector).await {
                    Ok(connected) => {
                        tracing::warn!(
                            url,
                            cause = %error_with_causes(&error),
                            "the PostgreSQL server offered TLS but the handshake failed; connected without TLS, as sslmode=prefer allows (sslmode=require refuses instead)"
                        );
                        Ok(connected)
                    }
                    // The failed handshake is the problem to report.
                    Err(_) => Err(error),
                }
            }
            other => other,
        };
        let (client, connection) =
            connected.map_err(|source| connect_failed(url, &source, &tls))?;
        let task_url = url.to_string();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!(url = %task_url, %error, "the PostgreSQL connection ended");
            }
        });
        Ok(Self {
            client: Mutex::new(client),
            url: url.to_string(),
            scratch: false,
        })
    }

    /// Copies crmsync's tables (those the database has) into temporary tables of the same
    /// names, identity counters carried on.
    async fn copy_into_temporary_tables(&self) -> Result<(), StoreError> {
        let failed = failed(&self.url);
        let mut client = self.client.lock().await;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(&failed)?;
        let schema: Option<String> = transaction
            .query_one("SELECT current_schema()", &[])
            .await
            .map_err(&failed)?
            .get(0);
        let Some(schema) = schema else {
            // No schema on the search path: the warehouse has no tables to copy.
            return transaction.commit().await.map_err(&failed);
        };
        let existing: Vec<String> = transaction
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
                &[&schema],
            )
            .await
            .map_err(&failed)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let schema = format!("\"{}\"", schema.replace('"', "\"\""));
        let tables = std::iter::once("schema_migrations").chain(super::migrations::table_names());
        for table in tables.filter(|table| existing.iter().any(|name| name == table)) {
            transaction
                .batch_execute(&format!(
                    "CREATE TEMPORARY TABLE {table} (LIKE {schema}.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING IDENTITY);
                     INSERT INTO pg_temp.{table} OVERRIDING SYSTEM VALUE SELECT * FROM {schema}.{table};"
                ))
                .await
                .map_err(&failed)?;
            let identities = transaction
                .query(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attidentity <> ''",
                    &[&format!("pg_temp.{table}")],
                )
                .await
                .map_err(&failed)?;
            for row in identities {
                let column: String = row.get(0);
                transaction
                    .batch_execute(&format!(
                        "SELECT setval(pg_get_serial_sequence('pg_temp.{table}', '{column}'), COALESCE((SELECT MAX({column}) FROM pg_temp.{table}), 0) + 1, false)"
                    ))
                    .await
                    .map_err(&failed)?;
            }
        }
        transaction.commit().await.map_err(&failed)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server sees this connection as encrypted (TLS).
    pub async fn is_encrypted(&self) -> Result<bool, StoreError> {
        let client = self.client.lock().await;
        let row = client
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), FALSE)",
                &[],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(row.get(0))
    }

    /// Takes the lease `name` for `holder` until `ttl` from now (the server's clock), unless
    /// another holder's lease on it has not expired: then who holds it, and until when.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: jiff::SignedDuration,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let failed = failed(&self.url);
        let seconds = ttl.as_secs_f64();
        let client = self.client.lock().await;
        let taken = client
            .query_opt(TAKE_LEASE, &[&name, &holder, &seconds])
            .await
            .map_err(&failed)?;
        if taken.is_some() {
            return Ok(None);
        }
        let held = client
            .query_opt(
                "SELECT holder, expires_at FROM leases WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(&failed)?;
        // Gone between the two statements: free, but not taken by this call; say so plainly.
        Ok(Some(held.map_or_else(
            || ("a worker that just let it go".to_string(), Timestamp::now()),
            |row| (row.get(0), row.get(1)),
        )))
    }

    /// In one transaction, one worker at a time: lets `holder`'s `streams` leases go, takes
    /// the lease `persons` for `ttl`, and keeps it only if no other worker still holds a lease
    /// named `stream_prefix…`. So of workers finishing their reads together, the last one
    /// always takes over (none can see another's released lease as still held).
    pub async fn hand_off(
        &self,
        holder: &str,
        streams: &[String],
        persons: &str,
        stream_prefix: &str,
        ttl: jiff::SignedDuration,
    ) -> Result<HandOff, StoreError> {
        let failed = failed(&self.url);
        let seconds = ttl.as_secs_f64();
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&HAND_OFF_LOCK])
            .await
            .map_err(&failed)?;
        transaction
            .execute(
                "DELETE FROM leases WHERE holder = $1 AND name = ANY($2)",
                &[&holder, &streams],
            )
            .await
            .map_err(&failed)?;
        let taken = transaction
            .query_opt(TAKE_LEASE, &[&persons, &holder, &seconds])
            .await
            .map_err(&failed)?;
        let outcome = if taken.is_none() {
            let held = transaction
                .query_one(
                    "SELECT holder, expires_at FROM leases WHERE name = $1",
                    &[&persons],
                )
                .await
                .map_err(&failed)?;
            HandOff::HeldBy(held.get(0), held.get(1))
        } else {
            let readers: Vec<(String, String)> = transaction
                .query(
                    "SELECT name, holder FROM leases
                     WHERE starts_with(name, $1) AND holder <> $2 AND expires_at >= clock_timestamp()
                     ORDER BY name",
                    &[&stream_prefix, &holder],
                )
                .await
                .map_err(&failed)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            if readers.is_empty() {
                HandOff::Taken
            } else {
                transaction
                    .execute(
                        "DELETE FROM leases WHERE name = $1 AND holder = $2",
                        &[&persons, &holder],
                    )
                    .await
                    .map_err(&failed)?;
                HandOff::Readers(readers)
            }
        };
        transaction.commit().await.map_err(&failed)?;
        Ok(outcome)
    }

    /// Extends `holder`'s leases on `names` to `ttl` from now; the names it no longer holds.
    pub async fn renew_leases(
        &self,
        names: &[String],
        holder: &str,
        ttl: jiff::SignedDuration,
    ) -> Result<Vec<String>, StoreError> {
        let seconds = ttl.as_secs_f64();
        let client = self.client.lock().await;
        let renewed = client
            .query(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $3)
                 WHERE name = ANY($1) AND holder = $2 RETURNING name",
                &[&names, &holder, &seconds],
            )
            .await
            .map_err(failed(&self.url))?;
        let renewed: Vec<String> = renewed.iter().map(|row| row.get(0)).collect();
        Ok(names
            .iter()
            .filter(|name| !renewed.contains(name))
            .cloned()
            .collect())
    }

    /// Lets `holder`'s lease on `name` go.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        client
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(())
    }

    async fn migrate(&self, vocabulary: &Vocabulary, tables: Tables) -> Result<(), StoreError> {
        let failed = failed(&self.url);
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        // Temporary copies are this session's alone: no other process migrates them. An
        // index to drop is named in `pg_temp` only: the copies' indexes have names of
        // PostgreSQL's choosing, so an unqualified name would find the real table's index.
        let render = |sql: String| match tables {
            Tables::Shared => sql,
            Tables::Temporary => sql
                .replace("CREATE TABLE ", "CREATE TEMPORARY TABLE ")
                .replace("DROP INDEX ", "DROP INDEX IF EXISTS pg_temp."),
        };
        if tables == Tables::Shared {
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(&failed)?;
        }
        transaction
            .batch_execute(&render(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL
                )"
                .to_string(),
            ))
            .await
            .map_err(&failed)?;
        let current: i32 = transaction
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(&failed)?
            .get(0);
        let current = u32::try_from(current).unwrap_or(0);
        if current > latest_version() {
            return Err(StoreError::TooNew {
                path: self.url.clone().into(),
                found: current,
                known: latest_version(),
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            transaction
                .batch_execute(&render(migration.render(Dialect::Postgres)))
                .await
                .map_err(|source| StoreError::PostgresMigration {
                    url: self.url.clone(),
                    version: migration.version,
                    name: migration.name,
                    source,
                })?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
                    &[&(migration.version as i32), &migration.name],
                )
                .await
                .map_err(&failed)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied warehouse migration"
            );
        }
        for column in stage_column_names(vocabulary) {
            transaction
                .batch_execute(&format!(
                    "ALTER TABLE unified_leads ADD COLUMN IF NOT EXISTS {column} {}",
                    timestamp_type(Dialect::Postgres)
                ))
                .await
                .map_err(&failed)?;
        }
        transaction.commit().await.map_err(&failed)
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        let client = self.client.lock().await;
        let version: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(failed(&self.url))?
            .get(0);
        Ok(u32::try_from(version).unwrap_or(0))
    }

    /// Opens a run's row for `holder`. Rows other workers left `running` become
    /// `interrupted` once they are older than `ttl` and their worker holds no lease: other
    /// workers' live runs are left alone.
    pub async fn begin_run(
        &self,
        started: Timestamp,
        holder: &str,
        ttl: jiff::SignedDuration,
    ) -> Result<i64, StoreError> {
        let failed = failed(&self.url);
        let seconds = ttl.as_secs_f64();
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        transaction
            .execute(
                "UPDATE sync_runs SET status = 'interrupted', finished_at = COALESCE(finished_at, started_at)
                 WHERE status = 'running' AND started_at < now() - make_interval(secs => $1)
                   AND (holder IS NULL
                        OR holder NOT IN (SELECT holder FROM leases WHERE expires_at >= now()))",
                &[&seconds],
            )
            .await
            .map_err(&failed)?;
        let id: i64 = transaction
            .query_one(
                "INSERT INTO sync_runs (started_at, status, holder) VALUES ($1, 'running', $2) RETURNING id",
                &[&started, &holder],
            )
            .await
            .map_err(&failed)?
            .get(0);
        transaction.commit().await.map_err(&failed)?;
        Ok(id)
    }

    pub async fn finish_run(
        &self,
        run_id: i64,
        finished: Timestamp,
        run: &RunRow,
    ) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        client
            .execute(
                "UPDATE sync_runs SET finished_at = $2, status = $3, records_read = $4, records_changed = $5,
                    records_written = $6, records_dead_lettered = $7, persons = $8, regressions_refused = $9,
                    hubspot_api_calls = $10, salesforce_api_calls = $11, error = $12, details = ($13::text)::jsonb
                 WHERE id = $1",
                &[
                    &run_id,
                    &finished,
                    &run.status,
                    &(run.records_read as i64),
                    &(run.records_changed as i64),
                    &(run.records_written as i64),
                    &(run.records_dead_lettered as i64),
                    &(run.persons as i64),
                    &(run.regressions_refused as i64),
                    &(run.hubspot_api_calls as i64),
                    &(run.salesforce_api_calls as i64),
                    &run.error,
                    &run.details,
                ],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(())
    }

    /// Records how a read of a stream ended: `complete`, `stopped` or `failed`.
    pub async fn record_read(
        &self,
        system: System,
        object: &str,
        status: &str,
        message: Option<&str>,
        run_id: i64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        client
            .execute(
                "INSERT INTO stream_reads (system, object, status, message, run_id, at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (system, object) DO UPDATE SET status = excluded.status,
                    message = excluded.message, run_id = excluded.run_id, at = excluded.at",
                &[&system.as_str(), &object, &status, &message, &run_id, &at],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(())
    }

    /// Streams whose last read did not end `complete`.
    pub async fn unfinished_reads(&self) -> Result<Vec<ReadOutcome>, StoreError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                "SELECT system, object, status, message FROM stream_reads
                 WHERE status <> 'complete' ORDER BY system, object",
                &[],
            )
            .await
            .map_err(failed(&self.url))?;
        rows.iter()
            .map(|row| {
                Ok(ReadOutcome {
                    system: system_of(row.get(0), &self.url)?,
                    object: row.get(1),
                    status: row.get(2),
                    message: row.get(3),
                })
            })
            .collect()
    }

    pub async fn checkpoints(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                "SELECT system, object, cursor FROM checkpoints ORDER BY system, object",
                &[],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }

    /// A kept API answer and when it was fetched.
    pub async fn cached(
        &self,
        system: System,
        name: &str,
    ) -> Result<Option<(Timestamp, String)>, StoreError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT fetched_at, body FROM api_cache WHERE system = $1 AND name = $2",
                &[&system.as_str(), &name],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(row.map(|row| (row.get(0), row.get(1))))
    }

    /// Keeps an API answer (`None` forgets it).
    pub async fn keep_cached(
        &self,
        system: System,
        name: &str,
        kept: Option<(Timestamp, String)>,
    ) -> Result<(), StoreError> {
        let client = self.client.lock().await;
        match kept {
            Some((at, body)) => client.execute(
                "INSERT INTO api_cache (system, name, fetched_at, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (system, name) DO UPDATE SET fetched_at = excluded.fetched_at, body = excluded.body",
                &[&system.as_str(), &name, &at, &body],
            )
            .await,
            None => client
                .execute(
                    "DELETE FROM api_cache WHERE system = $1 AND name = $2",
                    &[&system.as_str(), &name],
                )
                .await,
        }
        .map_err(failed(&self.url))?;
        Ok(())
    }

    /// Forgets where these streams' reads stood: (system, object).
    pub async fn clear_checkpoints(&self, streams: &[(System, String)]) -> Result<(), StoreError> {
        let systems: Vec<&str> = streams.iter().map(|(system, _)| system.as_str()).collect();
        let objects: Vec<&str> = streams.iter().map(|(_, object)| object.as_str()).collect();
        let client = self.client.lock().await;
        client
            .execute(
                "DELETE FROM checkpoints c USING unnest($1::text[], $2::text[]) AS u(system, object)
                 WHERE c.system = u.system AND c.object = u.object",
                &[&systems, &objects],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(())
    }

    pub async fn store_page(
        &self,
        run_id: i64,
        system: System,
        object: &str,
        page: &PageWrite,
        at: Timestamp,
    ) -> Result<PageStored, StoreError> {
        let failed = failed(&self.url);
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        let mut stored = PageStored::default();
        let mut unchanged: std::collections::HashSet<&RecordKey> = std::collections::HashSet::new();
        let pending = !page.settled;
        if !page.records.is_empty() {
            let column =
                |f: &dyn Fn(&super::model::StoredRecord) -> Option<String>| -> Vec<Option<String>> {
                    page.records.iter().map(f).collect()
                };
            let ids = column(&|r| Some(r.key.id.clone()));
            let modified: Vec<Timestamp> = page.records.iter().map(|r| r.modified_at).collect();
            let properties = column(&|r| Some(r.properties.clone()));
            let hashes = column(&|r| Some(r.content_hash.clone()));
            let emails = column(&|r| r.email.clone());
            let stages = column(&|r| r.stage.clone());
            let raw = column(&|r| r.raw_stage.clone());
            let rules = column(&|r| r.stage_rule.clone());
            let fields = column(&|r| Some(r.fields.clone()));
            let changed_rows = transaction
                .query(
                    "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash,
                        archived, first_seen_run, last_seen_run, email, stage, raw_stage, stage_rule, fields, pending)
                     SELECT $1, $2, u.id, u.modified_at, u.properties::jsonb, u.hash, FALSE, $3, $3,
                        u.email, u.stage, u.raw_stage, u.rule, u.fields::jsonb, $13
                     FROM unnest($4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[],
                        $10::text[], $11::text[], $12::text[])
                        AS u(id, modified_at, properties, hash, email, stage, raw_stage, rule, fields)
                     ON CONFLICT (system, object, id) DO UPDATE SET
                        modified_at = excluded.modified_at, properties = excluded.properties,
                        content_hash = excluded.content_hash, archived = FALSE, merged_into = NULL,
                        last_seen_run = excluded.last_seen_run, email = excluded.email, stage = excluded.stage,
                        raw_stage = excluded.raw_stage, stage_rule = excluded.stage_rule, fields = excluded.fields,
                        pending = excluded.pending, version = source_records.version + 1
                     WHERE source_records.content_hash <> excluded.content_hash OR source_records.archived
                     RETURNING id",
                    &[
                        &system.as_str(),
                        &object,
                        &run_id,
                        &ids,
                        &modified,
                        &properties,
                        &hashes,
                        &emails,
                        &stages,
                        &raw,
                        &rules,
                        &fields,
                        &pending,
                    ],
                )
                .await
                .map_err(&failed)?;
            let changed: std::collections::HashSet<String> = changed_rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect();
            stored.changed = changed.len();
            let seen: Vec<String> = page
                .records
                .iter()
                .filter(|record| !changed.contains(&record.key.id))
                .map(|record| record.key.id.clone())
                .collect();
            for record in &page.records {
                if !changed.contains(&record.key.id) {
                    unchanged.insert(&record.key);
                }
            }
            if !seen.is_empty() {
                transaction
                    .execute(
                        "UPDATE source_records SET last_seen_run = $3 WHERE system = $1 AND object = $2 AND id = ANY($4)",
                        &[&system.as_str(), &object, &run_id, &seen],
                    )
                    .await
                    .map_err(&failed)?;
            }
        }
        for gone in &page.tombstones {
            stored.tombstoned += transaction
                .execute(
                    "UPDATE source_records SET archived = TRUE, pending = $5, version = version + 1,
                        modified_at = COALESCE($4, modified_at)
                     WHERE system = $1 AND object = $2 AND id = $3 AND NOT archived",
                    &[&system.as_str(), &object, &gone.id, &gone.archived_at, &pending],
                )
                .await
                .map_err(&failed)? as usize;
        }
        for merge in &page.merges {
            transaction
                .execute(
                    "UPDATE source_records SET archived = TRUE, merged_into = $4, pending = $5,
                        version = version + 1
                     WHERE system = $1 AND object = $2 AND id = ANY($3)
                       AND (merged_into IS NULL OR merged_into <> $4 OR NOT archived)",
                    &[
                        &system.as_str(),
                        &object,
                        &merge.absorbed,
                        &merge.survivor,
                        &pending,
                    ],
                )
                .await
                .map_err(&failed)?;
        }
        let letters: Vec<DeadLetterRow> = page
            .dead_letters
            .iter()
            .filter(|letter| !unchanged.contains(&letter.key))
            .cloned()
            .collect();
        stored.dead_letters = letters.len();
        insert_dead_letters(&transaction, run_id, at, &letters)
            .await
            .map_err(&failed)?;
        if let Some(cursor) = &page.checkpoint {
            transaction
                .execute(
                    "INSERT INTO checkpoints (system, object, cursor, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (system, object) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                    &[&system.as_str(), &object, cursor, &at],
                )
                .await
                .map_err(&failed)?;
        }
        transaction.commit().await.map_err(&failed)?;
        Ok(stored)
    }

    async fn members(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<MemberRow>, StoreError> {
        let client = self.client.lock().await;
        let rows = client.query(sql, params).await.map_err(failed(&self.url))?;
        rows.iter().map(|row| member_row(row, &self.url)).collect()
    }

    /// Up to about `limit` records waiting for reconcile after `after`, by email then key;
    /// the records of the last email are all taken.
    pub async fn pending_records(
        &self,
        after: Option<&PendingPosition>,
        limit: usize,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let limit = limit as i64;
        let mut rows = match after {
            None => {
                let sql = format!(
                    "SELECT {MEMBER_COLUMNS} FROM source_records WHERE pending
                     ORDER BY COALESCE(email, ''), system, object, id LIMIT $1"
                );
                self.members(&sql, &[&limit]).await?
            }
            Some(after) => {
                let sql = format!(
                    "SELECT {MEMBER_COLUMNS} FROM source_records
                     WHERE pending AND COALESCE(email, '') >= $1
                        AND (COALESCE(email, ''), system, object, id) > ($1, $2, $3, $4)
                     ORDER BY COALESCE(email, ''), system, object, id LIMIT $5"
                );
                self.members(
                    &sql,
                    &[
                        &after.email,
                        &after.key.system.as_str(),
                        &after.key.object,
                        &after.key.id,
                        &limit,
                    ],
                )
                .await?
            }
        };
        if rows.len() as i64 == limit
            && let Some(last) = rows.last()
            && last.email.as_deref().is_some_and(|email| !email.is_empty())
        {
            let last = PendingPosition::of(last);
            let sql = format!(
                "SELECT {MEMBER_COLUMNS} FROM source_records
                 WHERE pending AND COALESCE(email, '') = $1 AND (system, object, id) > ($2, $3, $4)
                 ORDER BY system, object, id"
            );
            let rest = self
                .members(
                    &sql,
                    &[
                        &last.email,
                        &last.key.system.as_str(),
                        &last.key.object,
                        &last.key.id,
                    ],
                )
                .await?;
            rows.extend(rest);
        }
        Ok(rows)
    }

    pub async fn members_of(&self, unified_ids: &[String]) -> Result<Vec<MemberRow>, StoreError> {
        let sql = format!("SELECT {MEMBER_COLUMNS} FROM source_records WHERE unified_id = ANY($1)");
        self.members(&sql, &[&unified_ids]).await
    }

    pub async fn records_with_emails(
        &self,
        emails: &[String],
    ) -> Result<Vec<MemberRow>, StoreError> {
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM source_records WHERE email = ANY($1) AND unified_id IS NOT NULL"
        );
        self.members(&sql, &[&emails]).await
    }

    pub async fn records(&self, keys: &[RecordKey]) -> Result<Vec<MemberRow>, StoreError> {
        let (systems, objects, ids) = key_columns(keys);
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM source_records
             WHERE (system, object, id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
        );
        self.members(&sql, &[&systems, &objects, &ids]).await
    }

    pub async fn unified(
        &self,
        unified_ids: &[String],
        stage_ids: &[String],
    ) -> Result<Vec<UnifiedRow>, StoreError> {
        let first_entered: String = stage_ids
            .iter()
            .map(|stage| format!(", first_entered_{stage}"))
            .collect();
        let sql = format!(
            "SELECT unified_id, email, name, company, stage, hubspot_id, salesforce_lead_id,
                salesforce_contact_id, hubspot_stage, salesforce_stage, hubspot_raw_stage,
                salesforce_raw_stage, drift, decision, deleted, created_at, updated_at{first_entered}
             FROM unified_leads WHERE unified_id = ANY($1)"
        );
        let client = self.client.lock().await;
        let rows = client
            .query(&sql, &[&unified_ids])
            .await
            .map_err(failed(&self.url))?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut person = UnifiedRow {
                    unified_id: row.get(0),
                    email: row.get(1),
                    name: row.get(2),
                    company: row.get(3),
                    stage: row.get(4),
                    hubspot_id: row.get(5),
                    salesforce_lead_id: row.get(6),
                    salesforce_contact_id: row.get(7),
                    hubspot_stage: row.get(8),
                    salesforce_stage: row.get(9),
                    hubspot_raw_stage: row.get(10),
                    salesforce_raw_stage: row.get(11),
                    drift: row.get(12),
                    decision: row.get(13),
                    deleted: row.get(14),
                    created_at: row.get(15),
                    updated_at: row.get(16),
                    first_entered: Default::default(),
                };
                for (offset, stage) in stage_ids.iter().enumerate() {
                    if let Some(at) = row.get::<_, Option<Timestamp>>(17 + offset) {
                        person.first_entered.insert(stage.clone(), at);
                    }
                }
                person
            })
            .collect())
    }

    pub async fn ledger(&self, keys: &[RecordKey]) -> Result<Vec<LedgerRow>, StoreError> {
        let (systems, objects, ids) = key_columns(keys);
        let client = self.client.lock().await;
        let rows = client
            .query(
                "SELECT system, object, record_id, field, value_hash FROM write_ledger
                 WHERE (system, object, record_id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
                &[&systems, &objects, &ids],
            )
            .await
            .map_err(failed(&self.url))?;
        rows.iter()
            .map(|row| {
                Ok(LedgerRow {
                    key: RecordKey::new(
                        system_of(row.get(0), &self.url)?,
                        row.get::<_, String>(1),
                        row.get::<_, String>(2),
                    ),
                    field: row.get(3),
                    value_hash: row.get(4),
                })
            })
            .collect()
    }

    pub async fn commit_reconcile(
        &self,
        run_id: i64,
        at: Timestamp,
        commit: &ReconcileCommit,
        stage_ids: &[String],
    ) -> Result<(), StoreError> {
        let failed = failed(&self.url);
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        for merge in &commit.merges {
            for (table, column) in super::PERSON_REFERENCES {
                transaction
                    .execute(
                        &format!("UPDATE {table} SET {column} = $2 WHERE {column} = $1"),
                        &[&merge.absorbed, &merge.survivor],
                    )
                    .await
                    .map_err(&failed)?;
            }
            transaction
                .execute(
                    "DELETE FROM unified_leads WHERE unified_id = $1",
                    &[&merge.absorbed],
                )
                .await
                .map_err(&failed)?;
            transaction
                .execute(
                    "INSERT INTO person_merges (absorbed, survivor, reason, at, run_id) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (absorbed) DO UPDATE SET survivor = excluded.survivor, reason = excluded.reason,
                        at = excluded.at, run_id = excluded.run_id",
                    &[&merge.absorbed, &merge.survivor, &merge.reason, &at, &run_id],
                )
                .await
                .map_err(&failed)?;
        }
        if !commit.assignments.is_empty() {
            let keys: Vec<RecordKey> = commit
                .assignments
                .iter()
                .map(|assignment| assignment.key.clone())
                .collect();
            let (systems, objects, ids) = key_columns(&keys);
            let persons: Vec<Option<String>> = commit
                .assignments
                .iter()
                .map(|assignment| assignment.unified_id.clone())
                .collect();
            let versions: Vec<i64> = commit
                .assignments
                .iter()
                .map(|assignment| assignment.version)
                .collect();
            let kept: Vec<bool> = commit
                .assignments
                .iter()
                .map(|assignment| assignment.keep_pending)
                .collect();
            transaction
                .execute(
                    "UPDATE source_records s SET unified_id = u.person,
                        pending = (u.kept OR s.version <> u.version)
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[])
                        AS u(system, object, id, person, version, kept)
                     WHERE s.system = u.system AND s.object = u.object AND s.id = u.id",
                    &[&systems, &objects, &ids, &persons, &versions, &kept],
                )
                .await
                .map_err(&failed)?;
        }
        let first_entered_columns: String = stage_ids
            .iter()
            .map(|stage| format!(", first_entered_{stage}"))
            .collect();
        let first_entered_updates: String = stage_ids
            .iter()
            .map(|stage| format!(", first_entered_{stage} = excluded.first_entered_{stage}"))
            .collect();
        let first_entered_params: String = (0..stage_ids.len())
            .map(|offset| format!(", ${}", 18 + offset))
            .collect();
        let sql = format!(
            "INSERT INTO unified_leads (unified_id, email, name, company, stage, hubspot_id,
                salesforce_lead_id, salesforce_contact_id, hubspot_stage, salesforce_stage,
                hubspot_raw_stage, salesforce_raw_stage, drift, decision, deleted, created_at,
                updated_at{first_entered_columns})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17{first_entered_params})
             ON CONFLICT (unified_id) DO UPDATE SET email = excluded.email, name = excluded.name,
                company = excluded.company, stage = excluded.stage, hubspot_id = excluded.hubspot_id,
                salesforce_lead_id = excluded.salesforce_lead_id,
                salesforce_contact_id = excluded.salesforce_contact_id,
                hubspot_stage = excluded.hubspot_stage, salesforce_stage = excluded.salesforce_stage,
                hubspot_raw_stage = excluded.hubspot_raw_stage,
                salesforce_raw_stage = excluded.salesforce_raw_stage, drift = excluded.drift,
                decision = excluded.decision, deleted = excluded.deleted,
                updated_at = excluded.updated_at{first_entered_updates}"
        );
        let statement = transaction.prepare(&sql).await.map_err(&failed)?;
        for person in &commit.persons {
            let updated_at = person.updated_at.unwrap_or(at);
            let first: Vec<Option<Timestamp>> = stage_ids
                .iter()
                .map(|stage| person.first_entered.get(stage).copied())
                .collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                &person.unified_id,
                &person.email,
                &person.name,
                &person.company,
                &person.stage,
                &person.hubspot_id,
                &person.salesforce_lead_id,
                &person.salesforce_contact_id,
                &person.hubspot_stage,
                &person.salesforce_stage,
                &person.hubspot_raw_stage,
                &person.salesforce_raw_stage,
                &person.drift,
                &person.decision,
                &person.deleted,
                &person.created_at,
                &updated_at,
            ];
            for value in &first {
                params.push(value);
            }
            transaction
                .execute(&statement, &params)
                .await
                .map_err(&failed)?;
        }
        for change in &commit.transitions {
            transaction
                .execute(
                    "INSERT INTO stage_transitions (unified_id, from_stage, to_stage, at, system, run_id)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&change.unified_id, &change.from, &change.to, &change.at, &change.system.as_str(), &run_id],
                )
                .await
                .map_err(&failed)?;
        }
        for write in &commit.writes {
            transaction
                .execute(
                    "INSERT INTO pending_writes (system, object, record_id, unified_id, changes, current, allow_regression, run_id)
                     VALUES ($1, $2, $3, $4, ($5::text)::jsonb, ($6::text)::jsonb, $7, $8)
                     ON CONFLICT (system, object, record_id) DO UPDATE SET unified_id = excluded.unified_id,
                        changes = excluded.changes, current = excluded.current,
                        allow_regression = excluded.allow_regression, run_id = excluded.run_id",
                    &[
                        &write.key.system.as_str(),
                        &write.key.object,
                        &write.key.id,
                        &write.unified_id,
                        &write.changes,
                        &write.current,
                        &write.allow_regression,
                        &run_id,
                    ],
                )
                .await
                .map_err(&failed)?;
        }
        delete_pending_writes(&transaction, &commit.dropped_writes)
            .await
            .map_err(&failed)?;
        insert_dead_letters(&transaction, run_id, at, &commit.dead_letters)
            .await
            .map_err(&failed)?;
        if let Some((from, to)) = commit.person_numbers
            && from != to
        {
            let moved = transaction
                .execute(
                    "UPDATE person_ids SET next_number = $2 WHERE next_number = $1",
                    &[&from, &to],
                )
                .await
                .map_err(&failed)?;
            if moved == 0 {
                // Dropping the transaction rolls the chunk back.
                return Err(StoreError::PersonNumbersTaken {
                    at: self.url.clone(),
                    expected: from,
                });
            }
        }
        transaction.commit().await.map_err(&failed)
    }

    /// The number the next new person's id takes.
    pub async fn next_person_number(&self) -> Result<i64, StoreError> {
        let client = self.client.lock().await;
        let row = client
            .query_one("SELECT next_number FROM person_ids", &[])
            .await
            .map_err(failed(&self.url))?;
        Ok(row.get(0))
    }

    pub async fn pending_writes(
        &self,
        system: System,
        object: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        let id = after.unwrap_or_default();
        let client = self.client.lock().await;
        let rows = client
            .query(
                "SELECT system, object, record_id, unified_id, changes::text, current::text, allow_regression
                 FROM pending_writes WHERE system = $1 AND object = $2 AND record_id > $3
                 ORDER BY record_id LIMIT $4",
                &[&system.as_str(), &object, &id, &(limit as i64)],
            )
            .await
            .map_err(failed(&self.url))?;
        rows.iter()
            .map(|row| {
                Ok(PendingWrite {
                    key: RecordKey::new(
                        system_of(row.get(0), &self.url)?,
                        row.get::<_, String>(1),
                        row.get::<_, String>(2),
                    ),
                    unified_id: row.get(3),
                    changes: row.get(4),
                    current: row.get(5),
                    allow_regression: row.get(6),
                })
            })
            .collect()
    }

    pub async fn commit_writes(
        &self,
        run_id: i64,
        at: Timestamp,
        done: &WritesDone,
    ) -> Result<(), StoreError> {
        let failed = failed(&self.url);
        let mut client = self.client.lock().await;
        let transaction = client.transaction().await.map_err(&failed)?;
        if !done.ledger.is_empty() {
            let keys: Vec<RecordKey> = done.ledger.iter().map(|row| row.key.clone()).collect();
            let (systems, objects, ids) = key_columns(&keys);
            let fields: Vec<String> = done.ledger.iter().map(|row| row.field.clone()).collect();
            let hashes: Vec<String> = done
                .ledger
                .iter()
                .map(|row| row.value_hash.clone())
                .collect();
            transaction
                .execute(
                    "INSERT INTO write_ledger (system, object, record_id, field, value_hash, run_id, written_at)
                     SELECT u.system, u.object, u.id, u.field, u.hash, $6, $7
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(system, object, id, field, hash)
                     ON CONFLICT (system, object, record_id, field) DO UPDATE SET value_hash = excluded.value_hash,
                        run_id = excluded.run_id, written_at = excluded.written_at",
                    &[&systems, &objects, &ids, &fields, &hashes, &run_id, &at],
                )
                .await
                .map_err(&failed)?;
        }
        delete_pending_writes(&transaction, &done.settled)
            .await
            .map_err(&failed)?;
        insert_dead_letters(&transaction, run_id, at, &done.dead_letters)
            .await
            .map_err(&failed)?;
        transaction.commit().await.map_err(&failed)
    }

    pub async fn person_counts(&self) -> Result<PersonCounts, StoreError> {
        let failed = failed(&self.url);
        let client = self.client.lock().await;
        let persons: i64 = client
            .query_one("SELECT COUNT(*) FROM unified_leads WHERE NOT deleted", &[])
            .await
            .map_err(&failed)?
            .get(0);
        let drift: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM unified_leads WHERE NOT deleted AND drift",
                &[],
            )
            .await
            .map_err(&failed)?
            .get(0);
        let stages = client
            .query(
                "SELECT stage, COUNT(*) FROM unified_leads WHERE NOT deleted GROUP BY stage",
                &[],
            )
            .await
            .map_err(&failed)?
            .iter()
            .map(|row| (row.get::<_, Option<String>>(0), row.get::<_, i64>(1) as u64))
            .collect();
        Ok(PersonCounts {
            persons: persons as u64,
            stages,
            drift: drift as u64,
        })
    }
}

impl PostgresStore {
    /// The person a merged-away id now lives on, if it was merged.
    pub async fn survivor_of(&self, unified_id: &str) -> Result<Option<String>, StoreError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT survivor FROM person_merges WHERE absorbed = $1",
                &[&unified_id],
            )
            .await
            .map_err(failed(&self.url))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Transitions, merges, queued and written values of one person.
    pub async fn history(&self, unified_id: &str) -> Result<PersonHistory, StoreError> {
        let failed = failed(&self.url);
        let client = self.client.lock().await;
        let mut history = PersonHistory::default();
        for row in client
            .query(
                "SELECT unified_id, from_stage, to_stage, at, system, run_id FROM stage_transitions
                 WHERE unified_id = $1 ORDER BY at, transition_id",
                &[&unified_id],
            )
            .await
            .map_err(&failed)?
        {
            history.transitions.push((
                TransitionRow {
                    unified_id: row.get(0),
                    from: row.get(1),
                    to: row.get(2),
                    at: row.get(3),
                    system: system_of(row.get(4), &self.url)?,
                },
                row.get(5),
            ));
        }
        for row in client
            .query("SELECT absorbed, survivor, reason FROM person_merges WHERE survivor = $1 ORDER BY at", &[&unified_id])
            .await
            .map_err(&failed)?
        {
            history.merged.push(PersonMerge {
                absorbed: row.get(0),
                survivor: row.get(1),
                reason: row.get(2),
            });
        }
        for row in client
            .query(
                "SELECT system, object, record_id, unified_id, changes::text, current::text, allow_regression
                 FROM pending_writes WHERE unified_id = $1 ORDER BY system, object, record_id",
                &[&unified_id],
            )
            .await
            .map_err(&failed)?
        {
            history.queued.push(PendingWrite {
                key: RecordKey::new(system_of(row.get(0), &self.url)?, row.get::<_, String>(1), row.get::<_, String>(2)),
                unified_id: row.get(3),
                changes: row.get(4),
                current: row.get(5),
                allow_regression: row.get(6),
            });
        }
        for row in client
            .query(
                "SELECT l.system, l.object, l.record_id, l.field, l.run_id FROM write_ledger l
                 JOIN source_records s ON s.system = l.system AND s.object = l.object AND s.id = l.record_id
                 WHERE s.unified_id = $1 ORDER BY l.system, l.object, l.record_id, l.field",
                &[&unified_id],
            )
            .await
            .map_err(&failed)?
        {
            history.written.push((
                RecordKey::new(system_of(row.get(0), &self.url)?, row.get::<_, String>(1), row.get::<_, String>(2)),
                row.get(3),
                row.get(4),
            ));
        }
        Ok(history)
    }
}

/// Takes these records' writes off the queue.
async fn delete_pending_writes(
    transaction: &Transaction<'_>,
    keys: &[RecordKey],
) -> Result<(), tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let (systems, objects, ids) = key_columns(keys);
    transaction
        .execute(
            "DELETE FROM pending_writes p USING unnest($1::text[], $2::text[], $3::text[]) AS u(system, object, id)
             WHERE p.system = u.system AND p.object = u.object AND p.record_id = u.id",
            &[&systems, &objects, &ids],
        )
        .await?;
    Ok(())
}

async fn insert_dead_letters(
    transaction: &Transaction<'_>,
    run_id: i64,
    at: Timestamp,
    letters: &[DeadLetterRow],
) -> Result<(), tokio_postgres::Error> {
    if letters.is_empty() {
        return Ok(());
    }
    let keys: Vec<RecordKey> = letters.iter().map(|letter| letter.key.clone()).collect();
    let (systems, objects, ids) = key_columns(&keys);
    let reasons: Vec<String> = letters.iter().map(|letter| letter.reason.clone()).collect();
    let payloads: Vec<Option<String>> = letters
        .iter()
        .map(|letter| letter.payload.clone())
        .collect();
    transaction
        .execute(
            "INSERT INTO dead_letters (system, object, id, reason, payload, run_id, created_at)
             SELECT u.system, u.object, u.id, u.reason, u.payload::jsonb, $6, $7
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(system, object, id, reason, payload)",
            &[&systems, &objects, &ids, &reasons, &payloads, &run_id, &at],
        )
        .await?;
    Ok(())
}

fn key_columns(keys: &[RecordKey]) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        keys.iter()
            .map(|key| key.system.as_str().to_string())
            .collect(),
        keys.iter().map(|key| key.object.clone()).collect(),
        keys.iter().map(|key| key.id.clone()).collect(),
    )
}

fn system_of(name: String, url: &str) -> Result<System, StoreError> {
    name.parse()
        .map_err(|error: crate::record::UnknownSystem| StoreError::Corrupt {
            at: url.to_string(),
            what: error.to_string(),
        })
}

fn json_object(
    text: Option<String>,
    url: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    match text {
        None => Ok(serde_json::Map::new()),
        Some(text) => serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
            at: url.to_string(),
            what: format!("not a JSON object: {error}"),
        }),
    }
}

/// A stored JSON object's text, checked but not parsed (see [`StoredProperties`]).
fn stored_properties(text: Option<String>, url: &str) -> Result<StoredProperties, StoreError> {
    match text {
        None => Ok(StoredProperties::default()),
        Some(text) => StoredProperties::from_json(text).map_err(|error| StoreError::Corrupt {
            at: url.to_string(),
            what: format!("not a JSON object: {error}"),
        }),
    }
}

fn member_row(row: &Row, url: &str) -> Result<MemberRow, StoreError> {
    Ok(MemberRow {
        key: RecordKey::new(
            system_of(row.get(0), url)?,
            row.get::<_, String>(1),
            row.get::<_, String>(2),
        ),
        modified_at: row.get(3),
        properties: stored_properties(row.get(4), url)?,
        email: row.get(5),
        stage: row.get(6),
        raw_stage: row.get(7),
        stage_rule: row.get(8),
        fields: json_object(row.get(9), url)?,
        unified_id: row.get(10),
        merged_into: row.get(11),
        archived: row.get(12),
        version: row.get(13),
    })
}

/// A failed connection, with the driver error's causes and what to check.
fn connect_failed(url: &str, error: &tokio_postgres::Error, tls: &TlsSettings) -> StoreError {
    let cause = error_with_causes(error);
    StoreError::PostgresConnect {
        url: url.to_string(),
        hint: connect_hint(&cause, tls.client.is_some()),
        cause,
    }
}

/// What to check after a failed connection, by its causes and whether a client certificate
/// was given.
fn connect_hint(cause: &str, client_certificate: bool) -> &'static str {
    // PostgreSQL asks for a client certificate without requiring one in the handshake, then
    // refuses the session; a TLS proxy may require one in the handshake itself.
    let wants_certificate = [
        "connection requires a valid client certificate",
        "certificate authentication failed",
        "CertificateRequired",
    ];
    // Alerts a server sends about the certificate a client showed.
    let refused_certificate = [
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "CertificateExpired",
        "CertificateRevoked",
        "UnsupportedCertificate",
        "AccessDenied",
        "DecryptError",
    ];
    if wants_certificate.iter().any(|text| cause.contains(text)) {
        if client_certificate {
            "the server did not take the client certificate (sslcert) — it must be issued by a CA the server trusts for clients, and with `cert` authentication name the user (its CN)"
        } else {
            "the server asks for a client certificate — add sslcert=PATH&sslkey=PATH to the URL (a certificate its client CA issued, and its key)"
        }
    } else if client_certificate
        && cause.contains("received fatal alert")
        && refused_certificate
            .iter()
            .any(|alert| cause.contains(alert))
    {
        "the server refused the client certificate (sslcert) — it must be issued by a CA the server trusts for clients, and be valid now"
    } else if cause.contains("TLS") || cause.contains("certificate") {
        "check sslmode and sslrootcert in the URL (the server's certificate must chain to a root in sslrootcert, and verify-full also needs it issued for the host in the URL)"
    } else {
        "check that the server runs, the URL (postgres://USER@HOST:PORT/DATABASE) and the password reference"
    }
}

/// A driver error with its causes (its own text leaves them out).
fn error_with_causes(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// Whether a connection failed in the TLS handshake itself (an I/O error of the TLS stream),
/// not on a setting refused before one (no host name, a combination tokio-postgres forbids).
fn is_failed_handshake(error: &tokio_postgres::Error) -> bool {
    error
        .to_string()
        .starts_with("error performing TLS handshake")
        && std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() != std::io::ErrorKind::InvalidInput)
}

#[cfg(test)]
mod tests {
    use super::connect_hint;

    #[test]
    fn a_server_wanting_a_client_certificate_is_told_apart_from_other_failures() {
        // PostgreSQL refuses after the handshake; a TLS proxy may refuse in it.
        for cause in [
            "db error: FATAL: connection requires a valid client certificate",
            "error communicating with the server: received fatal alert: CertificateRequired",
        ] {
            assert!(
                connect_hint(cause, false).contains("add sslcert=PATH&sslkey=PATH"),
                "{cause}"
            );
            assert!(
                connect_hint(cause, true).contains("did not take the client certificate"),
                "{cause}"
            );
        }
        let refused = "error performing TLS handshake: received fatal alert: UnknownCA";
        assert!(connect_hint(refused, true).contains("refused the client certificate"));
        // Without a client certificate, an alert is about the server's side of TLS.
        assert!(connect_hint(refused, false).starts_with("check sslmode and sslrootcert"));
        let protocol = "error performing TLS handshake: received fatal alert: ProtocolVersion";
        assert!(connect_hint(protocol, true).starts_with("check sslmode and sslrootcert"));
        let down = "error connecting to server: Connection refused (os error 111)";
        assert!(connect_hint(down, true).starts_with("check that the server runs"));
    }
}
