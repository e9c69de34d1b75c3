//! The versioned warehouse schema, shared by SQLite and PostgreSQL.
//!
//! Each migration is written once. Where the dialects differ, a token stands in for the type:
//! `{{id}}` (auto-increment primary key), `{{timestamp}}`, `{{json}}` and `{{bigint}}`. A
//! migration is never edited after release; changes are new migrations.
//!
//! Besides the versioned list, `unified_leads` has one `first_entered_<stage>` column per stage
//! of the vocabulary. Admins may add stages at any time, so those columns are added (never
//! dropped) at start-up by [`stage_column_names`] + the backend, not by a numbered migration.

use crate::vocabulary::Vocabulary;

/// A SQL dialect the schema is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The SQL type or clause a token stands for.
    fn token(self, token: &str) -> Option<&'static str> {
        Some(match (self, token) {
            (Dialect::Sqlite, "id") => "INTEGER PRIMARY KEY AUTOINCREMENT",
            (Dialect::Postgres, "id") => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            // SQLite has no time type: RFC 3339 UTC text sorts and compares correctly.
            (Dialect::Sqlite, "timestamp") => "TEXT",
            (Dialect::Postgres, "timestamp") => "TIMESTAMPTZ",
            (Dialect::Sqlite, "json") => "TEXT",
            (Dialect::Postgres, "json") => "JSONB",
            (Dialect::Sqlite, "bigint") => "INTEGER",
            (Dialect::Postgres, "bigint") => "BIGINT",
            _ => return None,
        })
    }
}

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// The migration's SQL for a dialect. Unknown tokens are left in place, so a typo fails
    /// loudly when the SQL runs (and in the tests below).
    pub fn render(&self, dialect: Dialect) -> String {
        render(self.sql, dialect)
    }
}

fn render(sql: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let token = &after[..end];
                match dialect.token(token) {
                    Some(replacement) => out.push_str(replacement),
                    None => {
                        out.push_str("{{");
                        out.push_str(token);
                        out.push_str("}}");
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The type of a `first_entered_<stage>` column.
pub fn timestamp_type(dialect: Dialect) -> &'static str {
    dialect.token("timestamp").unwrap_or("TEXT")
}

/// The `first_entered_<stage>` columns the vocabulary needs. Stage ids are validated as
/// `[a-z][a-z0-9_]*`, so they are safe as identifiers.
pub fn stage_column_names(vocabulary: &Vocabulary) -> Vec<String> {
    vocabulary
        .stages()
        .map(|(_, stage)| format!("first_entered_{}", stage.id))
        .collect()
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "warehouse tables",
        sql: r#"
CREATE TABLE source_records (
    system        TEXT NOT NULL,
    object        TEXT NOT NULL,
    id            TEXT NOT NULL,
    modified_at   {{timestamp}} NOT NULL,
    properties    {{json}} NOT NULL,
    content_hash  TEXT NOT NULL,
    archived      BOOLEAN NOT NULL DEFAULT FALSE,
    first_seen_run {{bigint}},
    last_seen_run  {{bigint}},
    PRIMARY KEY (system, object, id)
);
CREATE INDEX source_records_modified ON source_records (system, object, modified_at);

CREATE TABLE unified_leads (
    unified_id            TEXT PRIMARY KEY,
    email                 TEXT,
    name                  TEXT,
    company               TEXT,
    stage                 TEXT,
    hubspot_id            TEXT,
    salesforce_lead_id    TEXT,
    salesforce_contact_id TEXT,
    hubspot_stage         TEXT,
    salesforce_stage      TEXT,
    hubspot_raw_stage     TEXT,
    salesforce_raw_stage  TEXT,
    drift                 BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at            {{timestamp}} NOT NULL
);
CREATE INDEX unified_leads_email ON unified_leads (email);
CREATE INDEX unified_leads_hubspot ON unified_leads (hubspot_id);
CREATE INDEX unified_leads_salesforce_lead ON unified_leads (salesforce_lead_id);
CREATE INDEX unified_leads_salesforce_contact ON unified_leads (salesforce_contact_id);

CREATE TABLE stage_transitions (
    transition_id {{id}},
    unified_id    TEXT NOT NULL,
    from_stage    TEXT,
    to_stage      TEXT NOT NULL,
    at            {{timestamp}} NOT NULL,
    system        TEXT NOT NULL,
    run_id        {{bigint}}
);
CREATE INDEX stage_transitions_lead ON stage_transitions (unified_id, at);

CREATE TABLE sync_runs (
    id                     {{id}},
    started_at             {{timestamp}} NOT NULL,
    finished_at            {{timestamp}},
    status                 TEXT NOT NULL,
    records_read           {{bigint}} NOT NULL DEFAULT 0,
    records_written        {{bigint}} NOT NULL DEFAULT 0,
    records_dead_lettered  {{bigint}} NOT NULL DEFAULT 0,
    hubspot_api_calls      {{bigint}} NOT NULL DEFAULT 0,
    salesforce_api_calls   {{bigint}} NOT NULL DEFAULT 0,
    error                  TEXT
);

CREATE TABLE checkpoints (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    cursor      TEXT NOT NULL,
    updated_at  {{timestamp}} NOT NULL,
    PRIMARY KEY (system, object)
);

CREATE TABLE dead_letters (
    dead_letter_id {{id}},
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    id          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    payload     {{json}},
    run_id      {{bigint}},
    created_at  {{timestamp}} NOT NULL
);
CREATE INDEX dead_letters_record ON dead_letters (system, object, id);
"#,
    },
    Migration {
        version: 2,
        name: "engine state: normalized records, identities, write ledger, outbox",
        sql: r#"
ALTER TABLE source_records ADD COLUMN email TEXT;
ALTER TABLE source_records ADD COLUMN stage TEXT;
ALTER TABLE source_records ADD COLUMN raw_stage TEXT;
ALTER TABLE source_records ADD COLUMN stage_rule TEXT;
ALTER TABLE source_records ADD COLUMN fields {{json}};
ALTER TABLE source_records ADD COLUMN unified_id TEXT;
ALTER TABLE source_records ADD COLUMN merged_into TEXT;
ALTER TABLE source_records ADD COLUMN pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX source_records_email ON source_records (email);
CREATE INDEX source_records_unified ON source_records (unified_id);
-- Pending records are reconciled in this order (records of one email together).
CREATE INDEX source_records_pending ON source_records (COALESCE(email, ''), system, object, id) WHERE pending;

ALTER TABLE unified_leads ADD COLUMN decision TEXT;
ALTER TABLE unified_leads ADD COLUMN created_at {{timestamp}};
ALTER TABLE unified_leads ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE person_merges (
    absorbed   TEXT PRIMARY KEY,
    survivor   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         {{timestamp}} NOT NULL,
    run_id     {{bigint}}
);

CREATE TABLE write_ledger (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    field       TEXT NOT NULL,
    value_hash  TEXT NOT NULL,
    run_id      {{bigint}} NOT NULL,
    written_at  {{timestamp}} NOT NULL,
    PRIMARY KEY (system, object, record_id, field)
);

CREATE TABLE pending_writes (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    unified_id  TEXT NOT NULL,
    changes     {{json}} NOT NULL,
    current     {{json}} NOT NULL,
    allow_regression BOOLEAN NOT NULL DEFAULT FALSE,
    run_id      {{bigint}},
    PRIMARY KEY (system, object, record_id)
);

ALTER TABLE sync_runs ADD COLUMN records_changed {{bigint}} NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN persons {{bigint}} NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN regressions_refused {{bigint}} NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN details {{json}};
"#,
    },
    Migration {
        version: 3,
        name: "answers of the CRMs' metadata APIs kept between runs",
        sql: r#"
CREATE TABLE api_cache (
    system      TEXT NOT NULL,
    name        TEXT NOT NULL,
    fetched_at  {{timestamp}} NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (system, name)
);
"#,
    },
    Migration {
        version: 4,
        name: "the person index holds only records that belong to a person",
        // Every record is stored before it is reconciled, so the full index held an entry per
        // unreconciled record under NULL, and reconcile deleted each at a random place: an
        // eighth of the pages a first sync's reconcile wrote. Lookups by person (`=`, `IN`,
        // `= ANY`) imply `IS NOT NULL`, so both dialects still use the index for them.
        sql: r#"
DROP INDEX source_records_unified;
CREATE INDEX source_records_unified ON source_records (unified_id) WHERE unified_id IS NOT NULL;
"#,
    },
    Migration {
        version: 5,
        name: "leases for many workers; record versions; how each stream's last read ended",
        // With a PostgreSQL warehouse several workers run at once: each stream, and the
        // person-wide steps (reconcile, write-back), is held by one worker at a time through a
        // lease that expires if its worker dies. A record's version moves with every store of
        // it, so a reconcile clears `pending` only on records no other worker stored since
        // it read them. A run's row names its worker, so a run left `running` is taken for
        // interrupted only once its worker holds no lease. How each stream's last read ended
        // (whoever read it) decides whether write-back may trust that system's stored values.
        sql: r#"
ALTER TABLE source_records ADD COLUMN version {{bigint}} NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN holder TEXT;
CREATE TABLE stream_reads (
    system      TEXT NOT NULL,
    object      TEXT NOT NULL,
    status      TEXT NOT NULL,
    message     TEXT,
    run_id      {{bigint}},
    at          {{timestamp}} NOT NULL,
    PRIMARY KEY (system, object)
);
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at {{timestamp}} NOT NULL,
    expires_at  {{timestamp}} NOT NULL
);
"#,
    },
    Migration {
        version: 6,
        name: "person ids numbered in the order persons are founded",
        // Ids hashed from each person's founding record fell at a random place in every index
        // keyed by person (persons, records by person, transitions): a page written per new
        // person in each. Numbered in founding order — email order, as reconcile goes — new
        // persons' entries come at the end. Ids given before stay; the number counts on in
        // the warehouse, so an id is never given twice.
        sql: r#"
CREATE TABLE person_ids (
    next_number {{bigint}} NOT NULL
);
INSERT INTO person_ids (next_number) VALUES (1);
"#,
    },
    Migration {
        version: 7,
        name: "queued writes and merges found by person",
        // A merge re-points the absorbed person's queued writes and earlier merges, and
        // `explain` lists a person's: without these, each read every row of the table.
        sql: r#"
CREATE INDEX pending_writes_person ON pending_writes (unified_id);
CREATE INDEX person_merges_survivor ON person_merges (survivor);
"#,
    },
];

/// The tables the migrations create (besides `schema_migrations`), in creation order.
pub fn table_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    for migration in MIGRATIONS {
        let mut rest = migration.sql;
        while let Some(at) = rest.find("CREATE TABLE ") {
            rest = &rest[at + "CREATE TABLE ".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(&rest[..end]);
        }
    }
    names
}

/// A bulk load into the warehouse that may build some indexes after it instead of during it
/// (see [`DEFERRABLE_INDEXES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkLoad {
    /// Extract storing records into a warehouse that holds none yet (a first sync).
    Records,
    /// Reconcile deciding more records than the warehouse holds persons.
    Persons,
}

/// A secondary index that crmsync itself never reads while `load` runs. Kept up to date row by
/// row, each stored row inserts an entry at a random place in it — a page written per row;
/// built after the load, it is one sorted pass. The SQLite warehouse drops such indexes for a
/// load worth it and builds them again right after, and at the start of every sync (a load cut
/// short by a crash leaves none missing past the next run). The definitions are the
/// migrations' own (a test compares them with a migrated warehouse); the indexes crmsync reads
/// during a load —
/// records by key, by person and by email in reconcile, persons by id, transitions by person
/// (a merge re-points them) — are never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferrableIndex {
    pub name: &'static str,
    pub load: BulkLoad,
    /// The `CREATE INDEX` statement, as the migrations create it.
    pub definition: &'static str,
}

/// Every index a bulk load may build after it (see [`DeferrableIndex`]).
pub const DEFERRABLE_INDEXES: &[DeferrableIndex] = &[
    DeferrableIndex {
        name: "source_records_modified",
        load: BulkLoad::Records,
        definition: "CREATE INDEX source_records_modified ON source_records (system, object, modified_at)",
    },
    DeferrableIndex {
        name: "source_records_email",
        load: BulkLoad::Records,
        definition: "CREATE INDEX source_records_email ON source_records (email)",
    },
    DeferrableIndex {
        name: "source_records_pending",
        load: BulkLoad::Records,
        definition: "CREATE INDEX source_records_pending ON source_records (COALESCE(email, ''), system, object, id) WHERE pending",
    },
    DeferrableIndex {
        name: "dead_letters_record",
        load: BulkLoad::Records,
        definition: "CREATE INDEX dead_letters_record ON dead_letters (system, object, id)",
    },
    DeferrableIndex {
        name: "unified_leads_email",
        load: BulkLoad::Persons,
        definition: "CREATE INDEX unified_leads_email ON unified_leads (email)",
    },
    DeferrableIndex {
        name: "unified_leads_hubspot",
        load: BulkLoad::Persons,
        definition: "CREATE INDEX unified_leads_hubspot ON unified_leads (hubspot_id)",
    },
    DeferrableIndex {
        name: "unified_leads_salesforce_lead",
        load: BulkLoad::Persons,
        definition: "CREATE INDEX unified_leads_salesforce_lead ON unified_leads (salesforce_lead_id)",
    },
    DeferrableIndex {
        name: "unified_leads_salesforce_contact",
        load: BulkLoad::Persons,
        definition: "CREATE INDEX unified_leads_salesforce_contact ON unified_leads (salesforce_contact_id)",
    },
];

impl DeferrableIndex {
    /// The definition as a statement that does nothing if the index exists.
    pub fn create_if_missing(&self) -> String {
        self.definition
            .replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
    }
}

/// The newest schema version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
    }

    #[test]
    fn every_token_renders_in_every_dialect() {
        for migration in MIGRATIONS {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let sql = migration.render(dialect);
                assert!(
                    !sql.contains("{{"),
                    "{dialect:?} migration {} left a token: {sql}",
                    migration.version
                );
            }
        }
        let postgres = MIGRATIONS[0].render(Dialect::Postgres);
        assert!(postgres.contains("JSONB") && postgres.contains("TIMESTAMPTZ"));
        assert!(!MIGRATIONS[0].render(Dialect::Sqlite).contains("JSONB"));
    }

    #[test]
    fn the_created_tables_are_known_by_name() {
        let names = table_names();
        for table in [
            "source_records",
            "unified_leads",
            "sync_runs",
            "pending_writes",
        ] {
            assert!(names.contains(&table), "{table} missing from {names:?}");
        }
        assert!(names.iter().all(|name| !name.is_empty()));
    }

    #[test]
    fn unknown_tokens_stay_visible() {
        assert_eq!(
            render("a {{nope}} b {{json}}", Dialect::Postgres),
            "a {{nope}} b JSONB"
        );
        assert_eq!(
            render("unterminated {{json", Dialect::Sqlite),
            "unterminated {{json"
        );
    }
}
