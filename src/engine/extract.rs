//! Extraction: each stream (one object of one CRM) is read page by page through a bounded
//! channel, normalized through the mappings and stored a few pages at a time with the newest
//! of their checkpoints in one transaction. Pages are durable before the checkpoint moves past
//! them, so a process killed at any moment re-reads at most the pages after the last stored
//! ones.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::cursor::Cursor;
use super::{EngineError, StreamOutcome};
use crate::mapping::{Mapper, StageOutcome};
use crate::record::{FieldValue, ReadEvent, SourceRecord, System};
use crate::store::Warehouse;
use crate::store::model::{DeadLetterRow, PageWrite, RecordKey, StoredRecord};

/// Events in flight between a read and its store: memory stays a few pages deep.
pub(super) const CHANNEL_DEPTH: usize = 4;
/// Records held before they are stored even without a checkpoint (Bulk API reads say where
/// to resume only at their end).
const FLUSH_RECORDS: usize = 2_000;
/// Pages read are stored together, with the newest checkpoint, until this long has passed.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One object of one CRM, as the run reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub system: System,
    pub object: String,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.system, self.object)
    }
}

/// Stores what a read sends, until the read ends; returns the read's own result and what was
/// stored.
pub(super) async fn consume<R, F>(
    stream: &Stream,
    run_id: i64,
    mapper: &Arc<Mapper>,
    warehouse: &Warehouse,
    progress: &dyn super::progress::Progress,
    mut events: mpsc::Receiver<ReadEvent<R>>,
    to_cursor: F,
) -> Result<StreamOutcome, EngineError>
where
    F: Fn(R) -> Cursor,
{
    let mut outcome = StreamOutcome::default();
    let mut page = PageWrite {
        settled: !mapper.holds_people(stream.system, &stream.object),
        ..PageWrite::default()
    };
    let mut in_page = HashSet::new();
    let mut last_store = std::time::Instant::now();
    while let Some(event) = events.recv().await {
        match event {
            ReadEvent::Records(records) => {
                outcome.read += records.len() as u64;
                progress.read(stream, outcome.read);
                // Mapping is CPU work: done on the blocking pool, so the reads of the other
                // streams go on meanwhile.
                let worker_mapper = Arc::clone(mapper);
                let normalized = tokio::task::spawn_blocking(move || {
                    let mut rejected_values = 0;
                    let mapped: Vec<Mapped> = records
                        .into_iter()
                        .map(|record| normalize(&worker_mapper, record, &mut rejected_values))
                        .collect();
                    (mapped, rejected_values)
                })
                .await;
                let (mapped, rejected_values) = match normalized {
                    Ok(normalized) => normalized,
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(error) => {
                        return Err(EngineError::Worker {
                            stream: stream.to_string(),
                            reason: error.to_string(),
                        });
                    }
                };
                add_read(&mut page, &mut in_page, mapped);
                outcome.rejected_values += rejected_values;
                if page.records.len() >= FLUSH_RECORDS {
                    store(stream, run_id, warehouse, &mut page, &mut outcome).await?;
                    in_page.clear();
                    last_store = std::time::Instant::now();
                }
            }
            ReadEvent::Archived(tombstones) => {
                outcome.deleted += tombstones.len() as u64;
                page.tombstones.extend(tombstones);
            }
            ReadEvent::Merged(merges) => page.merges.extend(merges),
            ReadEvent::Progress(point) => {
                page.checkpoint = Some(to_cursor(point).to_json());
                if page.records.len() >= FLUSH_RECORDS || last_store.elapsed() >= FLUSH_AFTER {
                    store(stream, run_id, warehouse, &mut page, &mut outcome).await?;
                    in_page.clear();
                    last_store = std::time::Instant::now();
                }
            }
        }
    }
    // Whatever came after the last progress is stored too; the caller adds the final
    // checkpoint once it knows the read finished.
    store(stream, run_id, warehouse, &mut page, &mut outcome).await?;
    Ok(outcome)
}

/// Stores the page (if it holds anything) and starts a new one for the same object.
pub(super) async fn store(
    stream: &Stream,
    run_id: i64,
    warehouse: &Warehouse,
    page: &mut PageWrite,
    outcome: &mut StreamOutcome,
) -> Result<(), EngineError> {
    if page.records.is_empty()
        && page.tombstones.is_empty()
        && page.merges.is_empty()
        && page.dead_letters.is_empty()
        && page.checkpoint.is_none()
    {
        return Ok(());
    }
    let full = std::mem::take(page);
    page.settled = full.settled;
    // Each record is in the page once, as last read (see [`add_read`]); a statement that
    // touched one row twice would fail on PostgreSQL.
    debug_assert_eq!(
        full.records
            .iter()
            .map(|record| &record.key)
            .collect::<HashSet<_>>()
            .len(),
        full.records.len(),
        "a page holds a record twice"
    );
    let stored = warehouse
        .store_page(run_id, stream.system, stream.object.clone(), full)
        .await?;
    outcome.changed += stored.changed as u64;
    outcome.dead_letters += stored.dead_letters as u64;
    Ok(())
}

/// One record as mapped: what to store of it (nothing when it could not be mapped at all) and
/// the dead letters it earned.
#[derive(Debug)]
struct Mapped {
    key: RecordKey,
    record: Option<StoredRecord>,
    dead_letters: Vec<DeadLetterRow>,
}

/// Adds records, in the order they were read, to the page. A record read again before the
/// page is stored (Bulk results, a record changed while a search pages) replaces all its
/// earlier read left in the page — the version to store and the dead letters alike — so the
/// page holds each record as last read: never an older version because the last read could
/// not be mapped, nor an older version's dead letters.
fn add_read(page: &mut PageWrite, in_page: &mut HashSet<RecordKey>, mapped: Vec<Mapped>) {
    for read in mapped {
        if !in_page.insert(read.key.clone()) {
            page.records.retain(|record| record.key != read.key);
            page.dead_letters.retain(|letter| letter.key != read.key);
        }
        page.records.extend(read.record);
        page.dead_letters.extend(read.dead_letters);
    }
}

/// Maps one record: what to store and the dead letters it earns; counts a stage value the
/// mapping rejects in `rejected_values`.
fn normalize(mapper: &Mapper, record: SourceRecord, rejected_values: &mut u64) -> Mapped {
    let key = RecordKey::new(record.system, record.object.clone(), record.id.clone());
    let properties = sorted_json(&record);
    let mut dead_letters = Vec::new();
    let normalized = match mapper.normalize(&record) {
        Ok(normalized) => normalized,
        Err(error) => {
            dead_letters.push(DeadLetterRow {
                key: key.clone(),
                reason: error.to_string(),
                payload: Some(properties),
            });
            return Mapped {
                key,
                record: None,
                dead_letters,
            };
        }
    };
    let vocabulary = mapper.vocabulary();
    let (stage, raw_stage, stage_rule) = match &normalized.stage {
        StageOutcome::Matched { stage, rule } => (
            Some(vocabulary.id_of(*stage).to_string()),
            rule.matched_value.as_ref().map(|(_, value)| value.clone()),
            Some(rule.name.to_string()),
        ),
        StageOutcome::Defaulted { stage, unknown } => (
            Some(vocabulary.id_of(*stage).to_string()),
            Some(unknown.value.clone()),
            Some(format!(
                "{} (unknown value, on_unknown default)",
                unknown.rule
            )),
        ),
        StageOutcome::KeepPrevious { unknown } => (
            None,
            Some(unknown.value.clone()),
            Some(format!("{} (unknown value, stage kept)", unknown.rule)),
        ),
        StageOutcome::Quarantined { unknown } | StageOutcome::Rejected { unknown } => {
            dead_letters.push(DeadLetterRow {
                key: key.clone(),
                reason: format!(
                    "{} = {:?} is not mapped by rule \"{}\" — add it to the mapping (run `crmsync discover` to list unmapped values); the record is stored without a stage",
                    unknown.property, unknown.value, unknown.rule
                ),
                payload: None,
            });
            if matches!(normalized.stage, StageOutcome::Rejected { .. }) {
                *rejected_values += 1;
            }
            (None, Some(unknown.value.clone()), None)
        }
        StageOutcome::NoStage => (None, None, None),
    };
    for problem in &normalized.field_problems {
        dead_letters.push(DeadLetterRow {
            key: key.clone(),
            reason: format!(
                "field {}: {} — the record is used with the field empty",
                problem.field, problem.error
            ),
            payload: None,
        });
    }
    let fields: Vec<(&str, Value)> = normalized
        .fields()
        .map(|(name, value)| (name, field_json(value)))
        .collect();
    let email = normalized
        .field("email")
        .and_then(FieldValue::as_text)
        .map(|email| email.trim().to_lowercase())
        .filter(|email| !email.is_empty());
    let fields = object_json(&fields);
    let content_hash = content_hash(&[
        &properties,
        stage.as_deref().unwrap_or(""),
        raw_stage.as_deref().unwrap_or(""),
        stage_rule.as_deref().unwrap_or(""),
        &fields,
    ]);
    Mapped {
        record: Some(StoredRecord {
            key: key.clone(),
            modified_at: record.modified_at,
            properties,
            content_hash,
            email,
            stage,
            raw_stage,
            stage_rule,
            fields,
        }),
        key,
        dead_letters,
    }
}

/// A canonical field value as JSON.
pub fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::Null,
        FieldValue::Text(text) => Value::String(text.replace('\0', "")),
        FieldValue::Timestamp(at) => Value::String(at.to_string()),
        FieldValue::Date(date) => Value::String(date.to_string()),
    }
}

/// The record's properties as JSON text with sorted keys. NUL characters, which no CRM
/// means and PostgreSQL's JSON refuses, are left out.
fn sorted_json(record: &SourceRecord) -> String {
    let mut sorted: Vec<(&str, std::borrow::Cow<'_, Value>)> = record
        .properties
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) if text.contains('\0') => {
                    std::borrow::Cow::Owned(Value::String(text.replace('\0', "")))
                }
                other => std::borrow::Cow::Borrowed(other),
            };
            (name.as_str(), value)
        })
        .collect();
    // Property names are a map's keys, so no two are equal.
    sorted.sort_unstable_by_key(|(name, _)| *name);
    object_json(&sorted)
}

/// A JSON object's text from its entries, in their order (names distinct): what
/// `Value::Object(…).to_string()` writes, without building the map.
fn object_json<V: serde::Serialize>(entries: &[(&str, V)]) -> String {
    struct Entries<'a, V>(&'a [(&'a str, V)]);
    impl<V: serde::Serialize> serde::Serialize for Entries<'_, V> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
        }
    }
    serde_json::to_string(&Entries(entries)).unwrap_or_default()
}

/// A short hex digest of `parts`.
pub fn content_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(32);
    for byte in &digest[..16] {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: &str, version: Option<&str>, letters: &[&str]) -> Mapped {
        let key = RecordKey::new(System::Salesforce, "Lead", id);
        Mapped {
            record: version.map(|version| StoredRecord {
                key: key.clone(),
                modified_at: jiff::Timestamp::UNIX_EPOCH,
                properties: format!(r#"{{"Status":"{version}"}}"#),
                content_hash: version.to_string(),
                email: None,
                stage: None,
                raw_stage: None,
                stage_rule: None,
                fields: "{}".into(),
            }),
            dead_letters: letters
                .iter()
                .map(|reason| DeadLetterRow {
                    key: key.clone(),
                    reason: reason.to_string(),
                    payload: None,
                })
                .collect(),
            key,
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |number| number.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
            "[a\\x00\"\\\\é]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-c]{0,2}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Stored text is compared with what earlier versions stored (content hashes): the
        /// properties' text is the sorted map's, NUL characters left out of strings.
        #[test]
        fn properties_are_written_as_the_sorted_map_writes_them(
            properties in proptest::collection::hash_map(".{0,8}", json_value(), 0..12),
        ) {
            let record = SourceRecord {
                system: System::Hubspot,
                object: "contacts".into(),
                id: "1".into(),
                modified_at: jiff::Timestamp::UNIX_EPOCH,
                properties: properties.clone().into_iter().collect(),
            };
            let cleaned: std::collections::BTreeMap<String, Value> = properties
                .into_iter()
                .map(|(name, value)| match value {
                    Value::String(text) => (name, Value::String(text.replace('\0', ""))),
                    other => (name, other),
                })
                .collect();
            proptest::prop_assert_eq!(
                sorted_json(&record),
                serde_json::to_string(&cleaned).expect("text")
            );
        }

        #[test]
        fn entries_are_written_as_the_map_of_them_writes_them(
            entries in proptest::collection::btree_map(".{0,8}", json_value(), 0..12),
        ) {
            let pairs: Vec<(&str, Value)> =
                entries.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
            let map: serde_json::Map<String, Value> = entries.clone().into_iter().collect();
            proptest::prop_assert_eq!(object_json(&pairs), Value::Object(map).to_string());
        }
    }

    #[test]
    fn content_hashes_are_the_first_16_bytes_of_sha256_in_lowercase_hex() {
        // Stored hashes, ledger hashes and person ids are compared with ones earlier
        // versions wrote: the form never changes.
        assert_eq!(content_hash(&["a"]), "ffe9aaeaa2a2d5048174df0b80599ef0");
        assert_eq!(
            content_hash(&["hubspot", "contacts", "101"]),
            "5e9a6abd4ad30757eabae8fa502ed933"
        );
    }

    #[test]
    fn a_record_read_again_before_the_store_is_kept_as_last_read() {
        let mut page = PageWrite::default();
        let mut in_page = HashSet::new();
        add_read(
            &mut page,
            &mut in_page,
            vec![
                read("A", Some("v1"), &["A v1: field email unreadable"]),
                read("B", Some("v1"), &[]),
                read("C", Some("v1"), &["C v1: status unmapped"]),
            ],
        );
        add_read(
            &mut page,
            &mut in_page,
            vec![
                // Read again, now clean: the earlier version's dead letter goes too.
                read("A", Some("v2"), &[]),
                // Read again and now unmappable: its older version is not stored as current.
                read("B", None, &["B v2: could not be mapped"]),
                read("D", Some("v1"), &[]),
                // Twice within one page of the API as well.
                read("D", Some("v2"), &["D v2: field phone unreadable"]),
            ],
        );
        let records: Vec<(&str, &str)> = page
            .records
            .iter()
            .map(|record| (record.key.id.as_str(), record.content_hash.as_str()))
            .collect();
        assert_eq!(records, vec![("C", "v1"), ("A", "v2"), ("D", "v2")]);
        let letters: Vec<&str> = page
            .dead_letters
            .iter()
            .map(|letter| letter.reason.as_str())
            .collect();
        assert_eq!(
            letters,
            vec![
                "C v1: status unmapped",
                "B v2: could not be mapped",
                "D v2: field phone unreadable"
            ]
        );
    }

    /// Reads records "1", "2" and "3" of `object` through [`consume`] with enough others
    /// that they are stored as a page of their own; then "1" deleted and "3" merged into "2",
    /// stored as a second page. Returns the three records' `pending` flags and how many of the
    /// others are pending.
    async fn consumed(object: &str) -> (Vec<(String, bool)>, usize) {
        let mappings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mapper = Arc::new(crate::mapping::load_dir(&mappings).expect("shipped mappings"));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warehouse.db");
        let store = crate::store::SqliteStore::open(&path, mapper.vocabulary()).expect("opens");
        let warehouse = Warehouse::sqlite(store, super::super::stage_ids(&mapper));
        let stream = Stream {
            system: System::Hubspot,
            object: object.to_string(),
        };
        let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
        let ids = ["1", "2", "3"]
            .map(String::from)
            .into_iter()
            .chain((0..FLUSH_RECORDS).map(|n| format!("other-{n}")));
        let records = ids
            .map(|id| SourceRecord {
                system: System::Hubspot,
                object: object.to_string(),
                properties: [(
                    "email".to_string(),
                    Value::from(format!("{id}@example.com")),
                )]
                .into_iter()
                .collect(),
                id,
                modified_at: jiff::Timestamp::UNIX_EPOCH,
            })
            .collect();
        let events = [
            ReadEvent::Records(records),
            ReadEvent::Archived(vec![crate::record::Tombstone {
                id: "1".into(),
                archived_at: None,
            }]),
            ReadEvent::Merged(vec![crate::record::Merge {
                survivor: "2".into(),
                absorbed: vec!["3".into()],
            }]),
        ];
        for event in events {
            sender.send(event).await.expect("sends");
        }
        drop(sender);
        let outcome = consume(
            &stream,
            1,
            &mapper,
            &warehouse,
            &super::super::progress::Silent,
            receiver,
            |()| Cursor::Incremental {
                since: jiff::Timestamp::UNIX_EPOCH,
                archived_since: None,
            },
        )
        .await
        .expect("stored");
        assert_eq!(outcome.read, FLUSH_RECORDS as u64 + 3);
        let connection = rusqlite::Connection::open(&path).expect("opens the file");
        let named = connection
            .prepare(
                "SELECT id, pending FROM source_records WHERE id NOT LIKE 'other-%' ORDER BY id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .expect("records");
        let others: i64 = connection
            .query_row(
                "SELECT count(*) FROM source_records WHERE id LIKE 'other-%' AND pending",
                [],
                |row| row.get(0),
            )
            .expect("count");
        let gone: Vec<(String, bool, Option<String>)> = connection
            .prepare(
                "SELECT id, archived, merged_into FROM source_records WHERE archived ORDER BY id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("records");
        assert_eq!(
            gone,
            [
                ("1".to_string(), true, None),
                ("3".to_string(), true, Some("2".to_string()))
            ],
            "the deletion and the merge were stored"
        );
        (named, usize::try_from(others).expect("a count"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_people_wait_for_reconcile_and_other_records_are_stored_settled() {
        let pending = |flags: [bool; 3]| {
            ["1", "2", "3"]
                .iter()
                .zip(flags)
                .map(|(id, flag)| (id.to_string(), flag))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            consumed("contacts").await,
            (pending([true, true, true]), FLUSH_RECORDS),
            "contacts are people: reconcile decides them, deleted and merged ones too"
        );
        assert_eq!(
            consumed("deals").await,
            (pending([false, false, false]), 0),
            "deals hold no people: nothing reconciles them, in any page, deleted, merged or not"
        );
    }
}
