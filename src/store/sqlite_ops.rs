//! The engine's reads and writes on the SQLite warehouse: pages of records with their
//! checkpoint, the reconcile step's lookups and commits, the write-back outbox and ledger,
//! and the run log. Every write is one transaction, so a process killed at any moment leaves
//! either all of a step or none of it. The reconcile step's lookups also run on a second,
//! read-only connection (see `Warehouse`), so the next chunk is read while one commits.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, Transaction, params, params_from_iter};

use super::model::{
    DeadLetterRow, LedgerRow, MemberRow, PageStored, PageWrite, PendingPosition, PendingWrite,
    PersonCounts, PersonHistory, PersonMerge, ReadOutcome, ReconcileCommit, RecordKey, RunRow,
    StoredProperties, TransitionRow, UnifiedRow, WritesDone,
};
use super::{StoreError, parse_sql_time, sql_time};
use crate::record::System;
use crate::store::SqliteStore;

/// Bound parameters per statement stay well under SQLite's limit.
const KEYS_PER_QUERY: usize = 300;

const MEMBER_COLUMNS: &str = "system, object, id, modified_at, properties, email, stage, raw_stage, stage_rule, fields, unified_id, merged_into, archived, version";

impl SqliteStore {
    fn transaction(&mut self) -> Result<Transaction<'_>, StoreError> {
        let path = self.path.clone();
        self.connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Query { path, source })
    }

    pub(super) fn failed(&self) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
        let path = self.path.clone();
        move |source| StoreError::Query {
            path: path.clone(),
            source,
        }
    }

    /// Opens a run: runs a killed process left `running` become `interrupted`.
    /// Opens a run's row for `holder`; rows left `running` (by a killed process: the file lock
    /// allows one run at a time) become `interrupted`.
    pub fn begin_run(&mut self, started: jiff::Timestamp, holder: &str) -> Result<i64, StoreError> {
        let failed = self.failed();
        let transaction = self.transaction()?;
        transaction
            .execute(
                "UPDATE sync_runs SET status = 'interrupted', finished_at = COALESCE(finished_at, started_at) WHERE status = 'running'",
                [],
            )
            .map_err(&failed)?;
        transaction
            .execute(
                "INSERT INTO sync_runs (started_at, status, holder) VALUES (?1, 'running', ?2)",
                params![sql_time(started), holder],
            )
            .map_err(&failed)?;
        let id = transaction.last_insert_rowid();
        transaction.commit().map_err(&failed)?;
        Ok(id)
    }

    /// Closes a run.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        finished: jiff::Timestamp,
        run: &RunRow,
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        self.connection
            .execute(
                "UPDATE sync_runs SET finished_at = ?2, status = ?3, records_read = ?4, records_changed = ?5,
                    records_written = ?6, records_dead_lettered = ?7, persons = ?8, regressions_refused = ?9,
                    hubspot_api_calls = ?10, salesforce_api_calls = ?11, error = ?12, details = ?13
                 WHERE id = ?1",
                params![
                    run_id,
                    sql_time(finished),
                    run.status,
                    run.records_read as i64,
                    run.records_changed as i64,
                    run.records_written as i64,
                    run.records_dead_lettered as i64,
                    run.persons as i64,
                    run.regressions_refused as i64,
                    run.hubspot_api_calls as i64,
                    run.salesforce_api_calls as i64,
                    run.error,
                    run.details,
                ],
            )
            .map_err(&failed)?;
        Ok(())
    }

    /// Every checkpoint: (system, object, cursor).
    pub fn checkpoints(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let failed = self.failed();
        let mut statement = self
            .connection
            .prepare("SELECT system, object, cursor FROM checkpoints ORDER BY system, object")
            .map_err(&failed)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(rows)
    }

    /// Records how a read of a stream ended: `complete`, `stopped` or `failed`.
    pub fn record_read(
        &mut self,
        system: System,
        object: &str,
        status: &str,
        message: Option<&str>,
        run_id: i64,
        at: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        let transaction = self.transaction()?;
        transaction
            .execute(
                "INSERT INTO stream_reads (system, object, status, message, run_id, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (system, object) DO UPDATE SET status = excluded.status,
                    message = excluded.message, run_id = excluded.run_id, at = excluded.at",
                params![
                    system.as_str(),
                    object,
                    status,
                    message,
                    run_id,
                    sql_time(at)
                ],
            )
            .map_err(&failed)?;
        transaction.commit().map_err(&failed)?;
        Ok(())
    }

    /// Streams whose last read did not end `complete`: (system, object, status, message).
    pub fn unfinished_reads(&self) -> Result<Vec<ReadOutcome>, StoreError> {
        let failed = self.failed();
        let mut statement = self
            .connection
            .prepare(
                "SELECT system, object, status, message FROM stream_reads
                 WHERE status <> 'complete' ORDER BY system, object",
            )
            .map_err(&failed)?;
        let rows = statement
            .query_map([], |row| {
                Ok(ReadOutcome {
                    system: system_column(row, 0)?,
                    object: row.get(1)?,
                    status: row.get(2)?,
                    message: row.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(rows)
    }

    /// A kept API answer and when it was fetched.
    pub fn cached(
        &self,
        system: System,
        name: &str,
    ) -> Result<Option<(jiff::Timestamp, String)>, StoreError> {
        let failed = self.failed();
        let row: Option<(String, String)> = self
            .connection
            .query_row(
                "SELECT fetched_at, body FROM api_cache WHERE system = ?1 AND name = ?2",
                rusqlite::params![system.as_str(), name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map(Some)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(&failed)?;
        Ok(row.and_then(|(at, body)| Some((super::parse_sql_time(&at)?, body))))
    }

    /// Keeps an API answer (`None` forgets it).
    pub fn keep_cached(
        &mut self,
        system: System,
        name: &str,
        kept: Option<(jiff::Timestamp, String)>,
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        match kept {
            Some((at, body)) => self.connection.execute(
                "INSERT INTO api_cache (system, name, fetched_at, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (system, name) DO UPDATE SET fetched_at = excluded.fetched_at, body = excluded.body",
                rusqlite::params![system.as_str(), name, super::sql_time(at), body],
            ),
            None => self.connection.execute(
                "DELETE FROM api_cache WHERE system = ?1 AND name = ?2",
                rusqlite::params![system.as_str(), name],
            ),
        }
        .map_err(&failed)?;
        Ok(())
    }

    /// Forgets every checkpoint (a `--full` run).
    /// Forgets where these streams' reads stood: (system, object).
    pub fn clear_checkpoints(&mut self, streams: &[(System, String)]) -> Result<(), StoreError> {
        let failed = self.failed();
        let transaction = self.transaction()?;
        for (system, object) in streams {
            transaction
                .execute(
                    "DELETE FROM checkpoints WHERE system = ?1 AND object = ?2",
                    params![system.as_str(), object],
                )
                .map_err(&failed)?;
        }
        transaction.commit().map_err(&failed)?;
        Ok(())
    }

    /// Stores one page of a read and, in the same transaction, its checkpoint.
    pub fn store_page(
        &mut self,
        run_id: i64,
        system: System,
        object: &str,
        page: &PageWrite,
        at: jiff::Timestamp,
    ) -> Result<PageStored, StoreError> {
        let failed = self.failed();
        let transaction = self.transaction()?;
        let mut stored = PageStored::default();
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash,
                        archived, first_seen_run, last_seen_run, email, stage, raw_stage, stage_rule, fields, pending)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, FALSE, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT (system, object, id) DO UPDATE SET
                        modified_at = excluded.modified_at, properties = excluded.properties,
                        content_hash = excluded.content_hash, archived = FALSE, merged_into = NULL,
                        last_seen_run = excluded.last_seen_run, email = excluded.email, stage = excluded.stage,
                        raw_stage = excluded.raw_stage, stage_rule = excluded.stage_rule, fields = excluded.fields,
                        pending = excluded.pending, version = source_records.version + 1
                     WHERE source_records.content_hash <> excluded.content_hash OR source_records.archived",
                )
                .map_err(&failed)?;
            let mut seen = transaction
                .prepare_cached(
                    "UPDATE source_records SET last_seen_run = ?4 WHERE system = ?1 AND object = ?2 AND id = ?3",
                )
                .map_err(&failed)?;
            let pending = !page.settled;
            let mut unchanged = std::collections::HashSet::new();
            for record in &page.records {
                let changed = upsert
                    .execute(params![
                        record.key.system.as_str(),
                        record.key.object,
                        record.key.id,
                        sql_time(record.modified_at),
                        record.properties,
                        record.content_hash,
                        run_id,
                        record.email,
                        record.stage,
                        record.raw_stage,
                        record.stage_rule,
                        record.fields,
                        pending,
                    ])
                    .map_err(&failed)?;
                if changed > 0 {
                    stored.changed += 1;
                } else {
                    unchanged.insert(&record.key);
                    seen.execute(params![
                        record.key.system.as_str(),
                        record.key.object,
                        record.key.id,
                        run_id
                    ])
                    .map_err(&failed)?;
                }
            }
            let mut tombstone = transaction
                .prepare_cached(
                    "UPDATE source_records SET archived = TRUE, pending = ?5, version = version + 1,
                        modified_at = COALESCE(?4, modified_at)
                     WHERE system = ?1 AND object = ?2 AND id = ?3 AND NOT archived",
                )
                .map_err(&failed)?;
            for gone in &page.tombstones {
                stored.tombstoned += tombstone
                    .execute(params![
                        system.as_str(),
                        object,
                        gone.id,
                        gone.archived_at.map(sql_time),
                        pending
                    ])
                    .map_err(&failed)?;
            }
            let mut absorb = transaction
                .prepare_cached(
                    "UPDATE source_records SET archived = TRUE, merged_into = ?4, pending = ?5,
                        version = version + 1
                     WHERE system = ?1 AND object = ?2 AND id = ?3
                       AND (merged_into IS NULL OR merged_into <> ?4 OR NOT archived)",
                )
                .map_err(&failed)?;
            for merge in &page.merges {
                for absorbed in &merge.absorbed {
                    absorb
                        .execute(params![
                            system.as_str(),
                            object,
                            absorbed,
                            merge.survivor,
                            pending
                        ])
                        .map_err(&failed)?;
                }
            }
            // A record read again unchanged had its dead letters stored when it changed.
            let letters: Vec<DeadLetterRow> = page
                .dead_letters
                .iter()
                .filter(|letter| !unchanged.contains(&letter.key))
                .cloned()
                .collect();
            stored.dead_letters = letters.len();
            insert_dead_letters(&transaction, run_id, at, &letters).map_err(&failed)?;
            if let Some(cursor) = &page.checkpoint {
                transaction
                    .execute(
                        "INSERT INTO checkpoints (system, object, cursor, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (system, object) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                        params![system.as_str(), object, cursor, sql_time(at)],
                    )
                    .map_err(&failed)?;
            }
        }
        transaction.commit().map_err(&failed)?;
        Ok(stored)
    }

    /// Up to about `limit` records waiting to be reconciled after `after`, in the order
    /// reconcile takes them: by email, then key. The records of the last email are all taken,
    /// however many, so no email's records are split between two reads.
    pub fn pending_records(
        &self,
        after: Option<&PendingPosition>,
        limit: usize,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let mut rows = match after {
            None => self.members(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM source_records WHERE pending
                     ORDER BY COALESCE(email, ''), system, object, id LIMIT ?1"
                ),
                vec![SqlValue::Integer(limit as i64)],
            )?,
            // The first condition lets SQLite seek in the pending index; the row value alone
            // would make it scan.
            Some(after) => self.members(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM source_records
                     WHERE pending AND COALESCE(email, '') >= ?1
                        AND (COALESCE(email, ''), system, object, id) > (?1, ?2, ?3, ?4)
                     ORDER BY COALESCE(email, ''), system, object, id LIMIT ?5"
                ),
                position_values(after, Some(limit)),
            )?,
        };
        if rows.len() == limit
            && let Some(last) = rows.last()
            && last.email.as_deref().is_some_and(|email| !email.is_empty())
        {
            let rest = self.members(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM source_records
                     WHERE pending AND COALESCE(email, '') = ?1
                        AND (system, object, id) > (?2, ?3, ?4)
                     ORDER BY system, object, id"
                ),
                position_values(&PendingPosition::of(last), None),
            )?;
            rows.extend(rest);
        }
        Ok(rows)
    }

    /// Every record of these persons.
    pub fn members_of(&self, unified_ids: &[String]) -> Result<Vec<MemberRow>, StoreError> {
        let mut all = Vec::new();
        for chunk in unified_ids.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT {MEMBER_COLUMNS} FROM source_records WHERE unified_id IN ({})",
                placeholders(chunk.len())
            );
            all.extend(self.members(&sql, texts(chunk))?);
        }
        Ok(all)
    }

    /// Records with these emails that belong to a person.
    pub fn records_with_emails(&self, emails: &[String]) -> Result<Vec<MemberRow>, StoreError> {
        let mut all = Vec::new();
        for chunk in emails.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT {MEMBER_COLUMNS} FROM source_records
                 WHERE email IN ({}) AND unified_id IS NOT NULL",
                placeholders(chunk.len())
            );
            all.extend(self.members(&sql, texts(chunk))?);
        }
        Ok(all)
    }

    /// The records with these keys that are stored. One indexed lookup per key: SQLite does
    /// not use the primary key for a row-value `IN` list.
    pub fn records(&self, keys: &[RecordKey]) -> Result<Vec<MemberRow>, StoreError> {
        let failed = self.failed();
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM source_records WHERE system = ?1 AND object = ?2 AND id = ?3"
        );
        let mut statement = self.connection.prepare_cached(&sql).map_err(&failed)?;
        let mut all = Vec::new();
        for key in keys {
            let mut rows = statement
                .query_map(params![key.system.as_str(), key.object, key.id], member_row)
                .map_err(&failed)?;
            if let Some(row) = rows.next() {
                all.push(row.map_err(&failed)?);
            }
        }
        Ok(all)
    }

    fn members(&self, sql: &str, values: Vec<SqlValue>) -> Result<Vec<MemberRow>, StoreError> {
        let failed = self.failed();
        let mut statement = self.connection.prepare_cached(sql).map_err(&failed)?;
        let rows = statement
            .query_map(params_from_iter(values), member_row)
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(rows)
    }

    /// The persons with these ids that exist.
    pub fn unified(
        &self,
        unified_ids: &[String],
        stage_ids: &[String],
    ) -> Result<Vec<UnifiedRow>, StoreError> {
        let failed = self.failed();
        let first_entered: String = stage_ids
            .iter()
            .map(|stage| format!(", first_entered_{stage}"))
            .collect();
        let mut all = Vec::new();
        for chunk in unified_ids.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT unified_id, email, name, company, stage, hubspot_id, salesforce_lead_id,
                    salesforce_contact_id, hubspot_stage, salesforce_stage, hubspot_raw_stage,
                    salesforce_raw_stage, drift, decision, deleted, created_at, updated_at{first_entered}
                 FROM unified_leads WHERE unified_id IN ({})",
                placeholders(chunk.len())
            );
            let mut statement = self.connection.prepare_cached(&sql).map_err(&failed)?;
            let rows: Vec<UnifiedRow> = statement
                .query_map(params_from_iter(texts(chunk)), |row| {
                    let mut person = UnifiedRow {
                        unified_id: row.get(0)?,
                        email: row.get(1)?,
                        name: row.get(2)?,
                        company: row.get(3)?,
                        stage: row.get(4)?,
                        hubspot_id: row.get(5)?,
                        salesforce_lead_id: row.get(6)?,
                        salesforce_contact_id: row.get(7)?,
                        hubspot_stage: row.get(8)?,
                        salesforce_stage: row.get(9)?,
                        hubspot_raw_stage: row.get(10)?,
                        salesforce_raw_stage: row.get(11)?,
                        drift: row.get(12)?,
                        decision: row.get(13)?,
                        deleted: row.get(14)?,
                        created_at: optional_time(row, 15)?,
                        updated_at: optional_time(row, 16)?,
                        first_entered: Default::default(),
                    };
                    for (offset, stage) in stage_ids.iter().enumerate() {
                        if let Some(at) = optional_time(row, 17 + offset)? {
                            person.first_entered.insert(stage.clone(), at);
                        }
                    }
                    Ok(person)
                })
                .and_then(Iterator::collect)
                .map_err(&failed)?;
            all.extend(rows);
        }
        Ok(all)
    }

    /// What crmsync last wrote to these records (an indexed lookup per record).
    pub fn ledger(&self, keys: &[RecordKey]) -> Result<Vec<LedgerRow>, StoreError> {
        let failed = self.failed();
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT field, value_hash FROM write_ledger WHERE system = ?1 AND object = ?2 AND record_id = ?3",
            )
            .map_err(&failed)?;
        let mut all = Vec::new();
        for key in keys {
            let rows = statement
                .query_map(params![key.system.as_str(), key.object, key.id], |row| {
                    Ok(LedgerRow {
                        key: key.clone(),
                        field: row.get(0)?,
                        value_hash: row.get(1)?,
                    })
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(&failed)?;
            all.extend(rows);
        }
        Ok(all)
    }

    /// The number the next new person's id takes.
    pub fn next_person_number(&self) -> Result<i64, StoreError> {
        self.connection
            .query_row("SELECT next_number FROM person_ids", [], |row| row.get(0))
            .map_err(self.failed())
    }

    /// Stores one reconciled chunk — identities, merged persons, persons, transitions and the
    /// writes they call for; the chunk's records stop being pending — in one transaction.
    pub fn commit_reconcile(
        &mut self,
        run_id: i64,
        at: jiff::Timestamp,
        commit: &ReconcileCommit,
        stage_ids: &[String],
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        let at_path = self.path.display().to_string();
        let transaction = self.transaction()?;
        write_reconcile(&transaction, run_id, at, commit, stage_ids).map_err(&failed)?;
        if let Some((from, to)) = commit.person_numbers
            && from != to
        {
            let moved = transaction
                .execute(
                    "UPDATE person_ids SET next_number = ?2 WHERE next_number = ?1",
                    [from, to],
                )
                .map_err(&failed)?;
            if moved == 0 {
                // Dropping the transaction rolls the chunk back.
                return Err(StoreError::PersonNumbersTaken {
                    at: at_path,
                    expected: from,
                });
            }
        }
        transaction.commit().map_err(&failed)
    }

    /// Up to `limit` waiting writes to `object` of `system`, after `after` in id order.
    pub fn pending_writes(
        &self,
        system: System,
        object: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        let failed = self.failed();
        let id = after.unwrap_or_default();
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT system, object, record_id, unified_id, changes, current, allow_regression
                 FROM pending_writes WHERE system = ?1 AND object = ?2 AND record_id > ?3
                 ORDER BY record_id LIMIT ?4",
            )
            .map_err(&failed)?;
        let rows = statement
            .query_map(params![system.as_str(), object, id, limit as i64], |row| {
                Ok(PendingWrite {
                    key: RecordKey::new(
                        system_column(row, 0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ),
                    unified_id: row.get(3)?,
                    changes: row.get(4)?,
                    current: row.get(5)?,
                    allow_regression: row.get(6)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(rows)
    }

    /// Records what a write-back did: the ledger, settled writes, dead letters.
    pub fn commit_writes(
        &mut self,
        run_id: i64,
        at: jiff::Timestamp,
        done: &WritesDone,
    ) -> Result<(), StoreError> {
        let failed = self.failed();
        let transaction = self.transaction()?;
        {
            let mut ledger = transaction
                .prepare_cached(
                    "INSERT INTO write_ledger (system, object, record_id, field, value_hash, run_id, written_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (system, object, record_id, field) DO UPDATE SET value_hash = excluded.value_hash,
                        run_id = excluded.run_id, written_at = excluded.written_at",
                )
                .map_err(&failed)?;
            for row in &done.ledger {
                ledger
                    .execute(params![
                        row.key.system.as_str(),
                        row.key.object,
                        row.key.id,
                        row.field,
                        row.value_hash,
                        run_id,
                        sql_time(at)
                    ])
                    .map_err(&failed)?;
            }
            delete_pending_writes(&transaction, &done.settled).map_err(&failed)?;
            insert_dead_letters(&transaction, run_id, at, &done.dead_letters).map_err(&failed)?;
        }
        transaction.commit().map_err(&failed)?;
        Ok(())
    }
}

impl SqliteStore {
    /// Persons, persons by stage, persons whose systems disagree.
    pub fn person_counts(&self) -> Result<PersonCounts, StoreError> {
        let failed = self.failed();
        let persons: i64 = self
            .connection
            .query_row(
                "SELECT COUNT(*) FROM unified_leads WHERE NOT deleted",
                [],
                |row| row.get(0),
            )
            .map_err(&failed)?;
        let drift: i64 = self
            .connection
            .query_row(
                "SELECT COUNT(*) FROM unified_leads WHERE NOT deleted AND drift",
                [],
                |row| row.get(0),
            )
            .map_err(&failed)?;
        let mut statement = self
            .connection
            .prepare("SELECT stage, COUNT(*) FROM unified_leads WHERE NOT deleted GROUP BY stage")
            .map_err(&failed)?;
        let stages = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Option<String>>(0)?,
                    row.get::<_, i64>(1)? as u64,
                ))
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(PersonCounts {
            persons: persons as u64,
            stages,
            drift: drift as u64,
        })
    }
}

impl SqliteStore {
    /// The person a merged-away id now lives on, if it was merged.
    pub fn survivor_of(&self, unified_id: &str) -> Result<Option<String>, StoreError> {
        let failed = self.failed();
        let mut statement = self
            .connection
            .prepare_cached("SELECT survivor FROM person_merges WHERE absorbed = ?1")
            .map_err(&failed)?;
        let mut rows = statement
            .query_map([unified_id], |row| row.get::<_, String>(0))
            .map_err(&failed)?;
        rows.next().transpose().map_err(&failed)
    }

    /// Transitions, merges, queued and written values of one person.
    pub fn history(&self, unified_id: &str) -> Result<PersonHistory, StoreError> {
        let failed = self.failed();
        let mut history = PersonHistory::default();
        let mut statement = self
            .connection
            .prepare(
                "SELECT unified_id, from_stage, to_stage, at, system, run_id FROM stage_transitions
                 WHERE unified_id = ?1 ORDER BY at, transition_id",
            )
            .map_err(&failed)?;
        history.transitions = statement
            .query_map([unified_id], |row| {
                Ok((
                    TransitionRow {
                        unified_id: row.get(0)?,
                        from: row.get(1)?,
                        to: row.get(2)?,
                        at: time_column(row, 3)?,
                        system: system_column(row, 4)?,
                    },
                    row.get(5)?,
                ))
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        let mut statement = self
            .connection
            .prepare("SELECT absorbed, survivor, reason FROM person_merges WHERE survivor = ?1 ORDER BY at")
            .map_err(&failed)?;
        history.merged = statement
            .query_map([unified_id], |row| {
                Ok(PersonMerge {
                    absorbed: row.get(0)?,
                    survivor: row.get(1)?,
                    reason: row.get(2)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT system, object, record_id, unified_id, changes, current, allow_regression
                 FROM pending_writes WHERE unified_id = ?1 ORDER BY system, object, record_id",
            )
            .map_err(&failed)?;
        history.queued = statement
            .query_map([unified_id], |row| {
                Ok(PendingWrite {
                    key: RecordKey::new(
                        system_column(row, 0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ),
                    unified_id: row.get(3)?,
                    changes: row.get(4)?,
                    current: row.get(5)?,
                    allow_regression: row.get(6)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT l.system, l.object, l.record_id, l.field, l.run_id FROM write_ledger l
                 JOIN source_records s ON s.system = l.system AND s.object = l.object AND s.id = l.record_id
                 WHERE s.unified_id = ?1 ORDER BY l.system, l.object, l.record_id, l.field",
            )
            .map_err(&failed)?;
        history.written = statement
            .query_map([unified_id], |row| {
                Ok((
                    RecordKey::new(
                        system_column(row, 0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ),
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .and_then(Iterator::collect)
            .map_err(&failed)?;
        Ok(history)
    }
}

/// The statements of one reconciled chunk (see [`SqliteStore::commit_reconcile`]).
fn write_reconcile(
    connection: &Connection,
    run_id: i64,
    at: jiff::Timestamp,
    commit: &ReconcileCommit,
    stage_ids: &[String],
) -> Result<(), rusqlite::Error> {
    for merge in &commit.merges {
        for (table, column) in super::PERSON_REFERENCES {
            connection.execute(
                &format!("UPDATE {table} SET {column} = ?2 WHERE {column} = ?1"),
                params![merge.absorbed, merge.survivor],
            )?;
        }
        connection.execute(
            "DELETE FROM unified_leads WHERE unified_id = ?1",
            [&merge.absorbed],
        )?;
        connection.execute(
            "INSERT INTO person_merges (absorbed, survivor, reason, at, run_id) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (absorbed) DO UPDATE SET survivor = excluded.survivor, reason = excluded.reason,
                at = excluded.at, run_id = excluded.run_id",
            params![merge.absorbed, merge.survivor, merge.reason, sql_time(at), run_id],
        )?;
    }
    let mut assign = connection.prepare_cached(
        "UPDATE source_records SET unified_id = ?4, pending = (?6 OR version <> ?5)
         WHERE system = ?1 AND object = ?2 AND id = ?3",
    )?;
    for assignment in &commit.assignments {
        let key = &assignment.key;
        assign.execute(params![
            key.system.as_str(),
            key.object,
            key.id,
            assignment.unified_id,
            assignment.version,
            assignment.keep_pending
        ])?;
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
        .map(|offset| format!(", ?{}", 18 + offset))
        .collect();
    let sql = format!(
        "INSERT INTO unified_leads (unified_id, email, name, company, stage, hubspot_id,
            salesforce_lead_id, salesforce_contact_id, hubspot_stage, salesforce_stage,
            hubspot_raw_stage, salesforce_raw_stage, drift, decision, deleted, created_at,
            updated_at{first_entered_columns})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17{first_entered_params})
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
    let mut upsert = connection.prepare_cached(&sql)?;
    for person in &commit.persons {
        let mut values: Vec<SqlValue> = vec![
            person.unified_id.clone().into(),
            optional_text(&person.email),
            optional_text(&person.name),
            optional_text(&person.company),
            optional_text(&person.stage),
            optional_text(&person.hubspot_id),
            optional_text(&person.salesforce_lead_id),
            optional_text(&person.salesforce_contact_id),
            optional_text(&person.hubspot_stage),
            optional_text(&person.salesforce_stage),
            optional_text(&person.hubspot_raw_stage),
            optional_text(&person.salesforce_raw_stage),
            SqlValue::Integer(i64::from(person.drift)),
            optional_text(&person.decision),
            SqlValue::Integer(i64::from(person.deleted)),
            person.created_at.map(sql_time).into(),
            sql_time(person.updated_at.unwrap_or(at)).into(),
        ];
        for stage in stage_ids {
            values.push(
                person
                    .first_entered
                    .get(stage)
                    .copied()
                    .map(sql_time)
                    .into(),
            );
        }
        upsert.execute(params_from_iter(values))?;
    }
    let mut transition = connection.prepare_cached(
        "INSERT INTO stage_transitions (unified_id, from_stage, to_stage, at, system, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for change in &commit.transitions {
        transition.execute(params![
            change.unified_id,
            change.from,
            change.to,
            sql_time(change.at),
            change.system.as_str(),
            run_id
        ])?;
    }
    let mut queue = connection.prepare_cached(
        "INSERT INTO pending_writes (system, object, record_id, unified_id, changes, current, allow_regression, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (system, object, record_id) DO UPDATE SET unified_id = excluded.unified_id,
            changes = excluded.changes, current = excluded.current,
            allow_regression = excluded.allow_regression, run_id = excluded.run_id",
    )?;
    for write in &commit.writes {
        queue.execute(params![
            write.key.system.as_str(),
            write.key.object,
            write.key.id,
            write.unified_id,
            write.changes,
            write.current,
            write.allow_regression,
            run_id
        ])?;
    }
    delete_pending_writes(connection, &commit.dropped_writes)?;
    insert_dead_letters(connection, run_id, at, &commit.dead_letters)?;
    Ok(())
}

/// Takes these records' writes off the queue.
fn delete_pending_writes(
    connection: &Connection,
    keys: &[RecordKey],
) -> Result<(), rusqlite::Error> {
    let mut delete = connection.prepare_cached(
        "DELETE FROM pending_writes WHERE system = ?1 AND object = ?2 AND record_id = ?3",
    )?;
    for key in keys {
        delete.execute(params![key.system.as_str(), key.object, key.id])?;
    }
    Ok(())
}

fn insert_dead_letters(
    connection: &Connection,
    run_id: i64,
    at: jiff::Timestamp,
    letters: &[DeadLetterRow],
) -> Result<(), rusqlite::Error> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO dead_letters (system, object, id, reason, payload, run_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for letter in letters {
        insert.execute(params![
            letter.key.system.as_str(),
            letter.key.object,
            letter.key.id,
            letter.reason,
            letter.payload,
            run_id,
            sql_time(at)
        ])?;
    }
    Ok(())
}

/// A pending position's values (email, system, object, id), then the limit if any.
fn position_values(position: &PendingPosition, limit: Option<usize>) -> Vec<SqlValue> {
    let mut values = vec![
        SqlValue::Text(position.email.clone()),
        SqlValue::Text(position.key.system.as_str().to_string()),
        SqlValue::Text(position.key.object.clone()),
        SqlValue::Text(position.key.id.clone()),
    ];
    values.extend(limit.map(|limit| SqlValue::Integer(limit as i64)));
    values
}

fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

fn texts(values: &[String]) -> Vec<SqlValue> {
    values
        .iter()
        .map(|value| SqlValue::Text(value.clone()))
        .collect()
}

fn optional_text(value: &Option<String>) -> SqlValue {
    value.clone().map_or(SqlValue::Null, SqlValue::Text)
}

fn conversion_error(index: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, message.into())
}

fn system_column(row: &Row<'_>, index: usize) -> rusqlite::Result<System> {
    let name: String = row.get(index)?;
    name.parse()
        .map_err(|error: crate::record::UnknownSystem| conversion_error(index, error.to_string()))
}

fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<jiff::Timestamp> {
    let text: String = row.get(index)?;
    parse_sql_time(&text).ok_or_else(|| conversion_error(index, format!("not a time: {text:?}")))
}

fn optional_time(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<jiff::Timestamp>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        parse_sql_time(&text)
            .ok_or_else(|| conversion_error(index, format!("not a time: {text:?}")))
    })
    .transpose()
}

fn json_object(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<serde_json::Map<String, serde_json::Value>> {
    // Parsed from SQLite's own buffer: the text is not copied first.
    let text = match row.get_ref(index)? {
        rusqlite::types::ValueRef::Null => return Ok(serde_json::Map::new()),
        value => value
            .as_str()
            .map_err(|error| conversion_error(index, format!("not JSON text: {error}")))?,
    };
    serde_json::from_str(text)
        .map_err(|error| conversion_error(index, format!("not a JSON object: {error}")))
}

/// A stored JSON object's text, checked but not parsed (see [`StoredProperties`]).
fn stored_properties(row: &Row<'_>, index: usize) -> rusqlite::Result<StoredProperties> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(StoredProperties::default()),
        Some(text) => StoredProperties::from_json(text)
            .map_err(|error| conversion_error(index, format!("not a JSON object: {error}"))),
    }
}

fn member_row(row: &Row<'_>) -> rusqlite::Result<MemberRow> {
    Ok(MemberRow {
        key: RecordKey::new(
            system_column(row, 0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ),
        modified_at: time_column(row, 3)?,
        properties: stored_properties(row, 4)?,
        email: row.get(5)?,
        stage: row.get(6)?,
        raw_stage: row.get(7)?,
        stage_rule: row.get(8)?,
        fields: json_object(row, 9)?,
        unified_id: row.get(10)?,
        merged_into: row.get(11)?,
        archived: row.get(12)?,
        version: row.get(13)?,
    })
}
