//! The SQLite warehouse on real files: migrations create the public tables, re-opening is a
//! no-op, stage columns follow the vocabulary, and a newer schema is refused.

use std::path::Path;

use crmsync::diagnostics::{Diagnostics, SourceFile};
use crmsync::store::migrations::{
    BulkLoad, DEFERRABLE_INDEXES, Dialect, MIGRATIONS, latest_version,
};
use crmsync::store::{SqliteStore, StoreError};
use crmsync::vocabulary::Vocabulary;

fn default_vocabulary() -> Vocabulary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/vocabulary.toml");
    let text = std::fs::read_to_string(&path).expect("vocabulary file");
    let mut diagnostics = Diagnostics::default();
    let vocabulary = Vocabulary::parse(&SourceFile::new("vocabulary.toml", text), &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics}");
    vocabulary
}

#[test]
fn migrations_create_every_warehouse_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    assert_eq!(store.schema_version().expect("version"), latest_version());
    let tables = store.tables().expect("tables");
    for table in [
        "checkpoints",
        "dead_letters",
        "pending_writes",
        "person_merges",
        "schema_migrations",
        "source_records",
        "stage_transitions",
        "sync_runs",
        "unified_leads",
        "write_ledger",
    ] {
        assert!(
            tables.contains(&table.to_string()),
            "missing {table} in {tables:?}"
        );
    }
    let columns = store.columns("unified_leads").expect("columns");
    for column in [
        "unified_id",
        "email",
        "name",
        "company",
        "stage",
        "hubspot_id",
        "salesforce_lead_id",
        "drift",
        "updated_at",
        "first_entered_mql",
        "first_entered_customer",
        "first_entered_recycled",
    ] {
        assert!(
            columns.contains(&column.to_string()),
            "missing {column} in {columns:?}"
        );
    }
    let dead_letters = store.columns("dead_letters").expect("columns");
    for column in ["system", "object", "id", "reason", "payload", "run_id"] {
        assert!(
            dead_letters.contains(&column.to_string()),
            "missing {column}"
        );
    }
}

#[test]
fn reopening_keeps_data_and_adds_columns_for_new_stages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    {
        let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
        store
            .connection()
            .execute(
                "INSERT INTO checkpoints (system, object, cursor, updated_at) VALUES ('hubspot', 'contacts', 'c1', '2024-05-01T00:00:00Z')",
                [],
            )
            .expect("insert");
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/vocabulary.toml"),
    )
    .expect("read")
        + "\n[[stage]]\nid = \"nurture\"\nlabel = \"Nurture\"\nrank = 15\ncategory = \"marketing\"\n";
    let mut diagnostics = Diagnostics::default();
    let extended = Vocabulary::parse(&SourceFile::new("vocabulary.toml", text), &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics}");
    let store = SqliteStore::open(&path, &extended).expect("re-opens");
    assert_eq!(store.schema_version().expect("version"), latest_version());
    let columns = store.columns("unified_leads").expect("columns");
    assert!(columns.contains(&"first_entered_nurture".to_string()));
    let cursor: String = store
        .connection()
        .query_row(
            "SELECT cursor FROM checkpoints WHERE system = 'hubspot'",
            [],
            |row| row.get(0),
        )
        .expect("checkpoint kept");
    assert_eq!(cursor, "c1");
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    {
        let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
        store
            .connection()
            .execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 'x')", [])
            .expect("insert");
    }
    let error = SqliteStore::open(&path, &default_vocabulary()).expect_err("refused");
    assert!(
        matches!(
            error,
            StoreError::TooNew {
                found: 99,
                known,
                ..
            } if known == latest_version()
        ),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade crmsync"), "{error}");
}

#[test]
fn an_unwritable_location_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing-dir").join("warehouse.db");
    let error = SqliteStore::open(&path, &default_vocabulary()).expect_err("fails");
    assert!(error.to_string().contains("missing-dir"), "{error}");
}

#[test]
fn a_version_one_warehouse_is_upgraded_in_place_keeping_its_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    {
        let connection = rusqlite::Connection::open(&path).expect("opens");
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 'warehouse tables', '2026-11-01T00:00:00Z');",
            )
            .expect("version table");
        connection
            .execute_batch(&MIGRATIONS[0].render(Dialect::Sqlite))
            .expect("version 1");
        connection
            .execute(
                "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash)
                 VALUES ('hubspot', 'contacts', '1001', '2026-11-01T00:00:00Z', '{}', 'h')",
                [],
            )
            .expect("a record");
    }
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("upgrades");
    assert_eq!(store.schema_version().expect("version"), latest_version());
    let (id, pending): (String, bool) = store
        .connection()
        .query_row("SELECT id, pending FROM source_records", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .expect("record kept");
    assert_eq!((id.as_str(), pending), ("1001", false));
    assert!(
        store
            .columns("source_records")
            .expect("columns")
            .contains(&"unified_id".to_string())
    );
}

#[test]
fn the_person_index_leaves_out_unreconciled_records_and_serves_person_lookups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    let connection = store.connection();
    connection
        .execute_batch(
            "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash, unified_id)
             VALUES ('hubspot', 'contacts', '1', '2026-11-01T00:00:00Z', '{}', 'h', NULL),
                    ('hubspot', 'contacts', '2', '2026-11-01T00:00:00Z', '{}', 'h', 'p-2'),
                    ('salesforce', 'Lead', '00Q3', '2026-11-01T00:00:00Z', '{}', 'h', NULL);",
        )
        .expect("records");
    let partial: bool = connection
        .query_row(
            "SELECT partial FROM pragma_index_list('source_records') WHERE name = 'source_records_unified'",
            [],
            |row| row.get(0),
        )
        .expect("the index exists");
    assert!(
        partial,
        "the person index should leave out records without a person"
    );
    for lookup in [
        "SELECT id FROM source_records WHERE unified_id IN ('p-2', 'p-9')",
        "UPDATE source_records SET unified_id = 'p-3' WHERE unified_id = 'p-2'",
    ] {
        let plan = query_plan(connection, lookup);
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX source_records_unified")),
            "{lookup}: {plan:?}"
        );
    }
}

/// The steps of SQLite's plan for `sql`, as `EXPLAIN QUERY PLAN` describes them.
fn query_plan(connection: &rusqlite::Connection, sql: &str) -> Vec<String> {
    connection
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(3))?
                .collect()
        })
        .expect("query plan")
}

/// The default vocabulary's stage ids, as reconcile writes `first_entered_<stage>` for them.
fn stage_ids() -> Vec<String> {
    default_vocabulary()
        .stages()
        .map(|(_, stage)| stage.id.to_string())
        .collect()
}

/// Stores records as a sync would have left them, by (system, object, id, email, pending);
/// the rest of each row is a placeholder.
fn add_records(store: &SqliteStore, records: &[(&str, &str, &str, Option<&str>, bool)]) {
    let mut insert = store
        .connection()
        .prepare(
            "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash, email, pending)
             VALUES (?1, ?2, ?3, '2026-11-01T00:00:00Z', '{}', 'h', ?4, ?5)",
        )
        .expect("an insert");
    for (system, object, id, email, pending) in records {
        insert
            .execute(rusqlite::params![system, object, id, email, pending])
            .expect("a record");
    }
}

#[test]
fn pending_records_come_by_email_after_a_position_and_an_email_is_never_split() {
    use crmsync::store::model::PendingPosition;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    add_records(
        &store,
        &[
            ("hubspot", "contacts", "n1", None, true),
            ("hubspot", "contacts", "n2", Some(""), true),
            ("hubspot", "contacts", "n3", None, true),
            ("salesforce", "Lead", "a2", Some("a@example.com"), true),
            ("hubspot", "contacts", "a1", Some("a@example.com"), true),
            ("salesforce", "Contact", "a3", Some("a@example.com"), true),
            ("hubspot", "contacts", "a4", Some("a@example.com"), false),
            ("hubspot", "contacts", "b1", Some("b@example.com"), true),
            ("hubspot", "contacts", "c1", Some("c@example.com"), true),
        ],
    );
    let ids = |rows: &[crmsync::store::model::MemberRow]| -> Vec<String> {
        rows.iter().map(|row| row.key.id.clone()).collect()
    };
    let mut after: Option<PendingPosition> = None;
    let mut reads = Vec::new();
    loop {
        let rows = store.pending_records(after.as_ref(), 2).expect("pending");
        let Some(last) = rows.last() else { break };
        after = Some(PendingPosition::of(last));
        reads.push(ids(&rows));
    }
    // Records without an email (NULL or empty) come first and are cut at the limit like any;
    // an email's records all come in one read, whatever the limit; settled ones never.
    assert_eq!(
        reads,
        [
            vec!["n1", "n2"],
            vec!["n3", "a1", "a3", "a2"],
            vec!["b1", "c1"],
        ]
    );
    let plan = query_plan(
        store.connection(),
        "SELECT id FROM source_records
         WHERE pending AND COALESCE(email, '') >= 'a' AND (COALESCE(email, ''), system, object, id) > ('a', 'h', 'c', '1')
         ORDER BY COALESCE(email, ''), system, object, id LIMIT 2",
    );
    assert!(
        plan.iter()
            .any(|step| step.starts_with("SEARCH") && step.contains("source_records_pending")),
        "a read after a position seeks in the pending index: {plan:?}"
    );
}

#[tokio::test]
async fn reconcile_reads_see_each_committed_chunk_at_once() {
    use crmsync::record::System;
    use crmsync::store::Warehouse;
    use crmsync::store::model::{Assignment, ReconcileCommit, RecordKey};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    add_records(
        &store,
        &[("hubspot", "contacts", "7", Some("a@example.com"), true)],
    );
    let warehouse = Warehouse::sqlite(store, stage_ids());
    let pending = warehouse.pending_records(None, 10).await.expect("reads");
    assert_eq!(pending.len(), 1);
    assert!(
        warehouse
            .members_of(vec!["p-1".into()])
            .await
            .expect("reads")
            .is_empty()
    );
    let commit = ReconcileCommit {
        assignments: vec![Assignment {
            key: RecordKey::new(System::Hubspot, "contacts", "7"),
            unified_id: Some("p-1".into()),
            version: 0,
            keep_pending: false,
        }],
        ..ReconcileCommit::default()
    };
    warehouse
        .commit_reconcile(1, jiff::Timestamp::now(), commit)
        .await
        .expect("commits");
    // The reading connection is not the writing one, and sees the commit.
    assert!(
        warehouse
            .pending_records(None, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    let members = warehouse
        .members_of(vec!["p-1".into()])
        .await
        .expect("reads");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].key.id, "7");
}

#[test]
fn a_record_taken_along_by_a_link_gets_its_person_and_stays_pending() {
    use crmsync::record::System;
    use crmsync::store::model::{Assignment, ReconcileCommit, RecordKey};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    add_records(
        &store,
        &[
            ("hubspot", "contacts", "1", Some("a@example.com"), true),
            ("salesforce", "Lead", "00Q2", Some("b@example.com"), true),
        ],
    );
    let assignment = |key: RecordKey, keep_pending: bool| Assignment {
        key,
        unified_id: Some("p-1".into()),
        version: 0,
        keep_pending,
    };
    let commit = ReconcileCommit {
        assignments: vec![
            assignment(RecordKey::new(System::Hubspot, "contacts", "1"), false),
            assignment(RecordKey::new(System::Salesforce, "Lead", "00Q2"), true),
        ],
        ..ReconcileCommit::default()
    };
    store
        .commit_reconcile(1, jiff::Timestamp::now(), &commit, &stage_ids())
        .expect("commits");
    let waiting: Vec<(String, Option<String>)> = store
        .pending_records(None, 10)
        .expect("pending")
        .into_iter()
        .map(|row| (row.key.id, row.unified_id))
        .collect();
    assert_eq!(waiting, [("00Q2".to_string(), Some("p-1".to_string()))]);
}

#[test]
fn a_record_stored_again_while_its_chunk_is_decided_stays_pending() {
    use crmsync::record::System;
    use crmsync::store::model::{Assignment, PageWrite, ReconcileCommit, RecordKey, StoredRecord};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    let stage_ids = stage_ids();
    let at = jiff::Timestamp::now();
    let record = |id: &str, hash: &str| StoredRecord {
        key: RecordKey::new(System::Hubspot, "contacts", id),
        modified_at: at,
        properties: "{}".into(),
        content_hash: hash.into(),
        email: Some(format!("{id}@example.com")),
        stage: None,
        raw_stage: None,
        stage_rule: None,
        fields: "{}".into(),
    };
    let page = |records| PageWrite {
        records,
        ..PageWrite::default()
    };
    store
        .store_page(
            1,
            System::Hubspot,
            "contacts",
            &page(vec![record("1", "a"), record("2", "a")]),
            at,
        )
        .expect("stored");
    let read = store.pending_records(None, 10).expect("pending");
    assert_eq!(read.len(), 2);
    // Another worker stores a newer version of record 2 while this chunk is decided.
    store
        .store_page(
            1,
            System::Hubspot,
            "contacts",
            &page(vec![record("2", "b")]),
            at,
        )
        .expect("stored again");
    let commit = ReconcileCommit {
        assignments: read
            .iter()
            .map(|row| Assignment {
                key: row.key.clone(),
                unified_id: Some(format!("p-{}", row.key.id)),
                version: row.version,
                keep_pending: false,
            })
            .collect(),
        ..ReconcileCommit::default()
    };
    store
        .commit_reconcile(1, at, &commit, &stage_ids)
        .expect("commits");
    let still: Vec<String> = store
        .pending_records(None, 10)
        .expect("pending")
        .into_iter()
        .map(|row| row.key.id)
        .collect();
    assert_eq!(
        still,
        ["2"],
        "the newer version waits for the next reconcile"
    );
    let people: Vec<(String, Option<String>)> = store
        .connection()
        .prepare("SELECT id, unified_id FROM source_records ORDER BY id")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .expect("records");
    assert_eq!(
        people,
        [
            ("1".to_string(), Some("p-1".to_string())),
            ("2".to_string(), Some("p-2".to_string()))
        ]
    );
}

/// The size of the write-ahead log file (0 when there is none).
fn log_size(path: &Path) -> u64 {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    std::fs::metadata(log).map_or(0, |meta| meta.len())
}

#[test]
fn a_writer_that_never_pauses_still_finds_the_log_starting_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    // The writer finishes a checkpoint itself past 64 frames of 4 KB, so the log starts over
    // (about 0.4 MB at most here; with the limit off it passes 30 MB).
    store.set_log_limit_frames(64).expect("sets the limit");
    let body = "x".repeat(64 * 1024);
    let started = std::time::Instant::now();
    let mut written: u64 = 0;
    let mut largest = 0;
    // Commit after commit, with no pause, 512 MB (one row rewritten each time, so the
    // database stays small and only the log could grow).
    while written < 512 * 1024 * 1024 && started.elapsed() < std::time::Duration::from_secs(30) {
        store
            .connection()
            .execute(
                "INSERT INTO api_cache (system, name, fetched_at, body) VALUES ('hubspot', 'big', '2026-01-01T00:00:00Z', ?1)
                 ON CONFLICT (system, name) DO UPDATE SET body = excluded.body",
                [format!("{written}{body}")],
            )
            .expect("writes");
        written += body.len() as u64;
        largest = largest.max(log_size(&path));
    }
    assert!(
        written > 64 * 1024 * 1024,
        "only {written} bytes written: too few to tell"
    );
    assert!(
        largest < 4 * 1024 * 1024,
        "the log grew to {largest} bytes while {written} were written"
    );
    drop(store);
    assert_eq!(
        log_size(&path),
        0,
        "the last connection to close empties the log"
    );
}

/// Each index's `CREATE` statement as SQLite keeps it, by name.
fn index_definitions(store: &SqliteStore) -> Vec<(String, String)> {
    store
        .connection()
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .expect("index definitions")
}

#[test]
fn a_merge_and_explain_find_a_persons_rows_through_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("w.db"), &default_vocabulary()).expect("opens");
    let mut lookups: Vec<String> = crmsync::store::PERSON_REFERENCES
        .iter()
        .map(|(table, column)| {
            format!("UPDATE {table} SET {column} = 'p-2' WHERE {column} = 'p-1'")
        })
        .collect();
    lookups.push("SELECT * FROM pending_writes WHERE unified_id = 'p-1'".into());
    lookups.push("SELECT * FROM person_merges WHERE survivor = 'p-1'".into());
    for lookup in lookups {
        let plan = query_plan(store.connection(), &lookup);
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX")),
            "{lookup}: {plan:?}"
        );
    }
}

#[test]
fn deferrable_indexes_are_defined_as_the_migrations_create_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("w.db"), &default_vocabulary()).expect("opens");
    let definitions = index_definitions(&store);
    for index in DEFERRABLE_INDEXES {
        let created = definitions
            .iter()
            .find(|(name, _)| name == index.name)
            .map(|(_, sql)| sql.as_str());
        assert_eq!(created, Some(index.definition), "{}", index.name);
    }
}

#[test]
fn a_first_load_of_records_drops_its_indexes_and_they_come_back_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.db");
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    let migrated = index_definitions(&store);
    let of_records: Vec<&str> = DEFERRABLE_INDEXES
        .iter()
        .filter(|index| index.load == BulkLoad::Records)
        .map(|index| index.name)
        .collect();
    assert!(of_records.contains(&"source_records_pending"));

    // No records yet: the load is worth it.
    assert_eq!(
        store.defer_indexes(BulkLoad::Records).expect("defers"),
        of_records
    );
    let during = store.indexes().expect("indexes");
    for name in &of_records {
        assert!(!during.contains(&name.to_string()), "{name} in {during:?}");
    }
    // Indexes the load reads stay.
    for name in ["source_records_unified", "unified_leads_email"] {
        assert!(during.contains(&name.to_string()), "{name} in {during:?}");
    }
    add_records(
        &store,
        &[
            ("hubspot", "contacts", "1", Some("a@example.com"), true),
            ("hubspot", "contacts", "2", Some("b@example.com"), false),
        ],
    );
    assert_eq!(store.restore_indexes().expect("builds"), of_records);
    assert_eq!(index_definitions(&store), migrated);
    // Built over the rows the load stored: the pending index holds the pending record.
    let pending: Vec<String> = store
        .connection()
        .prepare("SELECT id FROM source_records INDEXED BY source_records_pending WHERE pending")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .expect("read through the index");
    assert_eq!(pending, ["1"]);
    assert!(
        store
            .restore_indexes()
            .expect("nothing to build")
            .is_empty()
    );

    // A warehouse that holds records keeps its indexes.
    assert!(
        store
            .defer_indexes(BulkLoad::Records)
            .expect("no")
            .is_empty()
    );
    assert_eq!(index_definitions(&store), migrated);
}

#[test]
fn reconcile_drops_person_indexes_only_when_more_records_wait_than_persons_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.db");
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    let migrated = index_definitions(&store);
    add_records(
        &store,
        &[
            ("hubspot", "contacts", "1", Some("a@example.com"), true),
            ("hubspot", "contacts", "2", Some("b@example.com"), true),
        ],
    );
    store
        .connection()
        .execute_batch(
            "INSERT INTO unified_leads (unified_id, email, updated_at)
             VALUES ('p-1', 'a@example.com', '2026-11-01T00:00:00Z'),
                    ('p-2', 'b@example.com', '2026-11-01T00:00:00Z');",
        )
        .expect("two persons for the two pending records");
    // As many persons as waiting records: the indexes stay.
    assert!(
        store
            .defer_indexes(BulkLoad::Persons)
            .expect("no")
            .is_empty()
    );
    assert_eq!(index_definitions(&store), migrated);

    add_records(
        &store,
        &[("salesforce", "Lead", "00Q3", Some("c@example.com"), true)],
    );
    let of_persons: Vec<&str> = DEFERRABLE_INDEXES
        .iter()
        .filter(|index| index.load == BulkLoad::Persons)
        .map(|index| index.name)
        .collect();
    assert_eq!(
        store.defer_indexes(BulkLoad::Persons).expect("defers"),
        of_persons
    );
    let during = store.indexes().expect("indexes");
    assert!(during.contains(&"source_records_pending".to_string()));
    assert!(!during.contains(&"unified_leads_hubspot".to_string()));
    drop(store);

    // A load a crash cut short: opening leaves the indexes to the next sync (another process
    // must not build them under a running load's feet), which builds what was dropped.
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("reopens");
    assert!(
        !store
            .indexes()
            .expect("indexes")
            .contains(&"unified_leads_hubspot".to_string())
    );
    assert_eq!(store.restore_indexes().expect("builds"), of_persons);
    assert_eq!(index_definitions(&store), migrated);
}

#[test]
fn a_chunk_founds_persons_only_from_the_number_the_warehouse_still_holds() {
    use crmsync::record::System;
    use crmsync::store::model::{Assignment, ReconcileCommit, RecordKey};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("warehouse.db");
    let mut store = SqliteStore::open(&path, &default_vocabulary()).expect("opens");
    assert_eq!(store.next_person_number().expect("a number"), 1);
    add_records(
        &store,
        &[
            ("hubspot", "contacts", "1", Some("a@example.com"), true),
            ("hubspot", "contacts", "2", Some("b@example.com"), true),
        ],
    );
    let founding = |id: &str, person: &str, numbers: (i64, i64)| ReconcileCommit {
        assignments: vec![Assignment {
            key: RecordKey::new(System::Hubspot, "contacts", id),
            unified_id: Some(person.into()),
            version: 0,
            keep_pending: false,
        }],
        person_numbers: Some(numbers),
        ..ReconcileCommit::default()
    };
    let at = jiff::Timestamp::now();
    store
        .commit_reconcile(
            1,
            at,
            &founding("1", "p-000000000001", (1, 2)),
            &stage_ids(),
        )
        .expect("commits");
    assert_eq!(store.next_person_number().expect("a number"), 2);
    // A second reconciler that also started from 1 would give p-000000000001 again.
    let error = store
        .commit_reconcile(
            1,
            at,
            &founding("2", "p-000000000001", (1, 2)),
            &stage_ids(),
        )
        .expect_err("refused");
    assert!(
        matches!(error, StoreError::PersonNumbersTaken { expected: 1, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("another worker"), "{error}");
    // Nothing of the refused chunk is kept.
    let pending: Vec<String> = store
        .pending_records(None, 10)
        .expect("pending")
        .into_iter()
        .map(|row| row.key.id)
        .collect();
    assert_eq!(pending, ["2"]);
    assert_eq!(store.next_person_number().expect("a number"), 2);
}
