//! The rows the engine hands the warehouse and reads back: plain values, the same for every
//! backend. JSON columns travel as JSON text so no backend re-orders keys.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::record::{Merge, System, Tombstone};

/// One record of one object in one CRM.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub system: System,
    pub object: String,
    pub id: String,
}

impl RecordKey {
    pub fn new(system: System, object: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            system,
            object: object.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.system, self.object, self.id)
    }
}

/// A record as read and normalized, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub key: RecordKey,
    pub modified_at: Timestamp,
    /// The properties as the API sent them, as JSON text with sorted keys.
    pub properties: String,
    /// Of the properties and what the mapping made of them: equal hashes mean nothing to do.
    pub content_hash: String,
    pub email: Option<String>,
    pub stage: Option<String>,
    /// The native value the stage came from (`marketingqualifiedlead`, `Working - Contacted`).
    pub raw_stage: Option<String>,
    /// The mapping rule that decided the stage.
    pub stage_rule: Option<String>,
    /// The canonical fields, as a JSON object text.
    pub fields: String,
}

/// A record that could not be used, kept for an admin to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    pub key: RecordKey,
    pub reason: String,
    pub payload: Option<String>,
}

/// What one page of a read leaves in the warehouse, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageWrite {
    pub records: Vec<StoredRecord>,
    pub tombstones: Vec<Tombstone>,
    pub merges: Vec<Merge>,
    pub dead_letters: Vec<DeadLetterRow>,
    /// Where the read resumes once this page is stored; `None` leaves the checkpoint alone.
    pub checkpoint: Option<String>,
    /// The page's object holds no people (deals, opportunities): reconcile has nothing to do
    /// with its records, so they are stored settled rather than pending — a full sync's
    /// reconcile neither reads nor rewrites them.
    pub settled: bool,
}

/// What storing a page changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStored {
    /// Records new or different from what was stored.
    pub changed: usize,
    pub tombstoned: usize,
    /// Dead letters stored: those of records that did not change are stored once already.
    pub dead_letters: usize,
}

/// A stored record's native properties: the stored JSON object's text, checked for an
/// object's shape when read and parsed when a property is first looked up — so reading rows back leaves the parsing
/// to the engine, which does it while the store commits, rather than to the store's thread.
#[derive(Clone)]
pub struct StoredProperties {
    text: String,
    parsed: std::sync::OnceLock<Map<String, Value>>,
}

impl StoredProperties {
    /// The properties stored as this text, which must be a JSON object.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<JsonObjectShape>(&text)?;
        Ok(Self {
            text,
            parsed: std::sync::OnceLock::new(),
        })
    }

    /// The value of one property, if the record has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.parsed().get(name)
    }

    fn parsed(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| {
            // The text was checked to be a JSON object when it was read; the check does not
            // read string escapes or number ranges, so a damaged cell (a lone surrogate, a
            // number past f64, nesting past 128 levels — nothing crmsync writes) fails here.
            serde_json::from_str(&self.text).unwrap_or_else(|error| {
                tracing::error!(%error, "a stored record's properties are damaged JSON; they count as empty");
                Map::new()
            })
        })
    }
}

impl Default for StoredProperties {
    fn default() -> Self {
        Self {
            text: "{}".into(),
            parsed: std::sync::OnceLock::new(),
        }
    }
}

impl PartialEq for StoredProperties {
    fn eq(&self, other: &Self) -> bool {
        self.parsed() == other.parsed()
    }
}

impl std::fmt::Debug for StoredProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Accepts a JSON object without building it (so checking a stored object is cheap).
struct JsonObjectShape;

impl<'de> serde::Deserialize<'de> for JsonObjectShape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonObjectShape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonObjectShape, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(JsonObjectShape)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A stored record as the reconcile step reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub key: RecordKey,
    pub modified_at: Timestamp,
    pub properties: StoredProperties,
    pub email: Option<String>,
    pub stage: Option<String>,
    pub raw_stage: Option<String>,
    pub stage_rule: Option<String>,
    pub fields: Map<String, Value>,
    pub unified_id: Option<String>,
    pub merged_into: Option<String>,
    pub archived: bool,
    /// Moves with every store of the record (see [`Assignment`]).
    pub version: i64,
}

/// A place in the order reconcile takes pending records: by email (none counts as empty),
/// then key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPosition {
    pub email: String,
    pub key: RecordKey,
}

impl PendingPosition {
    /// The position of a record.
    pub fn of(row: &MemberRow) -> Self {
        Self {
            email: row.email.clone().unwrap_or_default(),
            key: row.key.clone(),
        }
    }
}

/// How the last read of a stream ended, by whichever worker read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    pub system: System,
    pub object: String,
    /// `complete`, `stopped` (a budget or a stop request: resumable) or `failed`.
    pub status: String,
    pub message: Option<String>,
}

/// What a worker's hand-off from reading to reconcile found (see `Warehouse::hand_off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOff {
    /// The lease on reconcile and write-back is this worker's now.
    Taken,
    /// Another worker holds it: who, and until when.
    HeldBy(String, jiff::Timestamp),
    /// Other workers still read streams (lease, holder): the last of them takes over.
    Readers(Vec<(String, String)>),
}

/// A reconciled record's person. Its `pending` flag is cleared only if the record's version
/// is still the one reconcile read: a record another worker stored meanwhile stays pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: RecordKey,
    pub unified_id: Option<String>,
    pub version: i64,
    /// The record stays pending whatever its version: a record another chunk took along by a
    /// link gets that chunk's person now and is decided again in its own chunk, where its own
    /// links and email count too.
    pub keep_pending: bool,
}

/// One person as the warehouse holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnifiedRow {
    pub unified_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub company: Option<String>,
    pub stage: Option<String>,
    pub hubspot_id: Option<String>,
    pub salesforce_lead_id: Option<String>,
    pub salesforce_contact_id: Option<String>,
    pub hubspot_stage: Option<String>,
    pub salesforce_stage: Option<String>,
    pub hubspot_raw_stage: Option<String>,
    pub salesforce_raw_stage: Option<String>,
    pub drift: bool,
    /// How the stage was decided, in words.
    pub decision: Option<String>,
    pub deleted: bool,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    /// `first_entered_<stage>` by stage id.
    pub first_entered: BTreeMap<String, Timestamp>,
}

/// A stage change of one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub unified_id: String,
    pub from: Option<String>,
    pub to: String,
    pub at: Timestamp,
    pub system: System,
}

/// Two persons found to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonMerge {
    pub absorbed: String,
    pub survivor: String,
    pub reason: String,
}

/// A write-back waiting to be sent: per field, the value wanted and the rule behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    pub key: RecordKey,
    pub unified_id: String,
    /// `{field: {"value": …, "rule": …}}` as JSON text.
    pub changes: String,
    /// The record's native values of those fields as read, as a JSON object text.
    pub current: String,
    pub allow_regression: bool,
}

/// What crmsync last wrote to one field of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub key: RecordKey,
    pub field: String,
    pub value_hash: String,
}

/// The outcome of reconciling one chunk of pending records, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileCommit {
    /// Records whose person is decided (their pending flag is cleared).
    pub assignments: Vec<Assignment>,
    pub merges: Vec<PersonMerge>,
    pub persons: Vec<UnifiedRow>,
    pub transitions: Vec<TransitionRow>,
    pub writes: Vec<PendingWrite>,
    /// Waiting writes no longer wanted (the CRM already holds the values).
    pub dropped_writes: Vec<RecordKey>,
    pub dead_letters: Vec<DeadLetterRow>,
    /// The numbers of new persons' ids before and after the chunk (see
    /// `engine::identity::numbered_unified_id`): the warehouse's next number moves from the
    /// first to the second only if it still is the first.
    pub person_numbers: Option<(i64, i64)>,
}

/// The outcome of sending write-backs, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritesDone {
    pub ledger: Vec<LedgerRow>,
    /// Waiting writes that are settled (written, refused or dead-lettered).
    pub settled: Vec<RecordKey>,
    pub dead_letters: Vec<DeadLetterRow>,
}

/// How a run ended, for `sync_runs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRow {
    pub status: String,
    pub records_read: u64,
    pub records_changed: u64,
    pub records_written: u64,
    pub records_dead_lettered: u64,
    pub persons: u64,
    pub regressions_refused: u64,
    pub hubspot_api_calls: u64,
    pub salesforce_api_calls: u64,
    pub error: Option<String>,
    /// Everything else the summary shows, as JSON text.
    pub details: Option<String>,
}

impl RunRow {
    /// A run's row with how it ended — status, API calls per system, problems (one a line) and
    /// the summary as JSON — and no counts yet (the caller's, by struct update).
    pub fn ended(
        status: &str,
        api_calls: &std::collections::BTreeMap<System, u64>,
        problems: &[String],
        details: Option<String>,
    ) -> Self {
        let calls = |system| api_calls.get(&system).copied().unwrap_or(0);
        Self {
            status: status.to_string(),
            hubspot_api_calls: calls(System::Hubspot),
            salesforce_api_calls: calls(System::Salesforce),
            error: (!problems.is_empty()).then(|| problems.join("\n")),
            details,
            ..Self::default()
        }
    }
}

/// How many persons the warehouse holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonCounts {
    pub persons: u64,
    /// Persons by stage id (`None`: no stage).
    pub stages: Vec<(Option<String>, u64)>,
    /// Persons whose systems disagree on the stage.
    pub drift: u64,
}

/// What the warehouse knows of one person beyond its records: for `crmsync explain`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonHistory {
    /// Stage changes, oldest first, with the run that made each.
    pub transitions: Vec<(TransitionRow, Option<i64>)>,
    /// Persons merged into this one, with why.
    pub merged: Vec<PersonMerge>,
    /// Write-backs queued for the person's records.
    pub queued: Vec<PendingWrite>,
    /// The last value crmsync wrote to each field of the person's records: key, field, run.
    pub written: Vec<(RecordKey, String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_properties_are_checked_when_read_and_parsed_when_looked_up() {
        let stored = StoredProperties::from_json(r#"{"email":"a@x.io","n":{"deep":[1,2]}}"#.into())
            .expect("an object");
        assert_eq!(stored.get("email"), Some(&Value::from("a@x.io")));
        assert_eq!(stored.get("n"), Some(&serde_json::json!({"deep": [1, 2]})));
        assert_eq!(stored.get("missing"), None);
        for not_an_object in ["[1]", "3", "\"text\"", "{\"a\":", "{\"a\" 1}", ""] {
            assert!(
                StoredProperties::from_json(not_an_object.into()).is_err(),
                "{not_an_object:?} was taken for an object"
            );
        }
        // Equal by content, whether parsed yet or not, and however the text is spaced.
        let spaced =
            StoredProperties::from_json(r#"{ "n": {"deep": [1, 2]}, "email": "a@x.io" }"#.into())
                .expect("an object");
        assert_eq!(stored, spaced);
        let fewer = StoredProperties::from_json(r#"{"email":"a@x.io"}"#.into()).expect("an object");
        assert_ne!(fewer, stored);
        assert_eq!(fewer.get("email"), stored.get("email"));
        assert_eq!(StoredProperties::default().get("email"), None);
    }
}
