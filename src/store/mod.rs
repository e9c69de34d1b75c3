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
    let utc = jiff::tz::Offset::UTC.to_datetime(at);
    let Ok(year) = u32::try_from(utc.year()) else {
        return at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    };
    // Written into a fixed buffer: every row a sync stores carries a few of these, and
    // `strftime` reads its pattern each time.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, mut value: u32, width: usize| {
        for place in (end - width..end).rev() {
            text[place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, year, 4);
    put(7, u32::from(utc.month().unsigned_abs()), 2);
    put(10, u32::from(utc.day().unsigned_abs()), 2);
    put(13, u32::from(utc.hour().unsigned_abs()), 2);
    put(16, u32::from(utc.minute().unsigned_abs()), 2);
    put(19, u32::from(utc.second().unsigned_abs()), 2);
    put(26, utc.subsec_nanosecond().unsigned_abs() / 1_000, 6);
    text.iter().map(|&byte| char::from(byte)).collect()
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
        "the warehouse {at} numbered new persons while this reconcile did (it expected the next number {expected}) — another worker reconciles at the same time; nothing of this chunk was kept, and its records wait for the next run"
    )]
    PersonNumbersTaken { at: String, expected: i64 },
    #[error(
        "cannot take the run lock {path}: {source} — check that the warehouse's directory is writable"
    )]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_pattern(at: jiff::Timestamp) -> String {
        at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    proptest! {
        /// Any time jiff can hold, the years before 0 and after 9999 included.
        #[test]
        fn times_are_written_as_the_pattern_writes_them(
            seconds in jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second(),
            nanoseconds in 0..1_000_000_000i32,
        ) {
            let at = jiff::Timestamp::new(seconds, nanoseconds).expect("in range");
            prop_assert_eq!(sql_time(at), by_pattern(at));
        }

        /// The years a CRM's records hold, more densely.
        #[test]
        fn recent_times_are_written_as_the_pattern_writes_them_and_read_back(
            seconds in 0..4_102_444_800i64,
            micros in 0..1_000_000i32,
        ) {
            let at = jiff::Timestamp::new(seconds, micros * 1_000).expect("in range");
            let text = sql_time(at);
            prop_assert_eq!(&text, &by_pattern(at));
            prop_assert_eq!(parse_sql_time(&text), Some(at));
        }
    }

    #[test]
    fn edges_of_the_fixed_width_form() {
        for text in [
            "0000-01-01T00:00:00.000000Z",
            "9999-12-30T21:59:59.999999Z",
            "1970-01-01T00:00:00.000000Z",
            "2024-02-29T12:34:56.000001Z",
        ] {
            let at: jiff::Timestamp = text.parse().expect("a time");
            assert_eq!(sql_time(at), text);
        }
        let before_zero: jiff::Timestamp = "-000001-12-31T23:59:59.5Z".parse().expect("a time");
        for at in [before_zero, jiff::Timestamp::MIN, jiff::Timestamp::MAX] {
            assert_eq!(sql_time(at), by_pattern(at));
        }
    }
}
