//! The records that flow between the stages of a sync.
//!
//! Connectors produce [`SourceRecord`]s: one record of one object in one CRM, with its
//! properties exactly as the API sent them — with deletions and merges, in the
//! [`ReadEvent`]s a read streams to the engine. The mapping layer turns each into a
//! [`Normalized`](crate::mapping::Normalized) value in the shared vocabulary. Nothing here knows
//! HTTP or mapping rules.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The CRMs crmsync speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Hubspot,
    Salesforce,
}

impl System {
    pub const ALL: [System; 2] = [System::Hubspot, System::Salesforce];

    /// The lowercase name used in files, tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Hubspot => "hubspot",
            System::Salesforce => "salesforce",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a system name that is neither `hubspot` nor `salesforce`.
#[derive(Debug, thiserror::Error)]
#[error("unknown system {0:?}: expected \"hubspot\" or \"salesforce\"")]
pub struct UnknownSystem(pub String);

impl FromStr for System {
    type Err = UnknownSystem;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "hubspot" => Ok(System::Hubspot),
            "salesforce" => Ok(System::Salesforce),
            other => Err(UnknownSystem(other.to_string())),
        }
    }
}

/// A record's properties as the API sent them: HubSpot sends strings (or null), Salesforce
/// sends typed JSON (booleans, numbers, strings, null, nested objects).
///
/// A hash map with a fast non-cryptographic hasher: mapping looks properties up by name many
/// times per record, and portals return hundreds of properties per record. Iteration order is
/// unspecified; anything that serializes properties for storage must sort the keys.
pub type Properties = rustc_hash::FxHashMap<String, serde_json::Value>;

/// One record of one object in one CRM, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub system: System,
    /// The object type in the system's own spelling: `contacts`, `deals`, `Lead`, `Opportunity`.
    pub object: String,
    pub id: String,
    pub modified_at: Timestamp,
    pub properties: Properties,
}

impl SourceRecord {
    /// The text form of a property, as mapping rules compare it: strings trimmed (empty means
    /// absent), booleans as `true`/`false`, numbers in JSON form. Arrays and objects have no
    /// text form.
    pub fn property_text(&self, name: &str) -> Option<Cow<'_, str>> {
        self.properties.get(name).and_then(value_text)
    }
}

/// The text form of one JSON value (see [`SourceRecord::property_text`]).
pub fn value_text(value: &serde_json::Value) -> Option<Cow<'_, str>> {
    match value {
        serde_json::Value::String(text) => {
            let trimmed = text.trim();
            (!trimmed.is_empty()).then_some(Cow::Borrowed(trimmed))
        }
        serde_json::Value::Bool(true) => Some(Cow::Borrowed("true")),
        serde_json::Value::Bool(false) => Some(Cow::Borrowed("false")),
        serde_json::Value::Number(number) => Some(Cow::Owned(number.to_string())),
        serde_json::Value::Null | serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            None
        }
    }
}

/// What a read hands the engine, in order; `R` is where the connector's read can resume.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadEvent<R> {
    /// A page of live records.
    Records(Vec<SourceRecord>),
    /// Records deleted (HubSpot: archived) in the CRM, with when.
    Archived(Vec<Tombstone>),
    /// Records that absorbed others in a merge.
    Merged(Vec<Merge>),
    /// Everything before this point has been handed over: a run stopped after it (a spent
    /// daily allowance, say) resumes here.
    Progress(R),
}

/// A record gone from its CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub archived_at: Option<Timestamp>,
}

/// A record that absorbed others, which are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub survivor: String,
    pub absorbed: Vec<String>,
}

/// A canonical field value after the mapping's transforms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum FieldValue {
    Null,
    Text(String),
    Timestamp(Timestamp),
    Date(jiff::civil::Date),
}

impl FieldValue {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            FieldValue::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Null => f.write_str("null"),
            FieldValue::Text(text) => f.write_str(text),
            FieldValue::Timestamp(at) => write!(f, "{at}"),
            FieldValue::Date(date) => write!(f, "{date}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn property_text_trims_and_types() {
        let mut properties = Properties::default();
        properties.insert("a".into(), json!("  x "));
        properties.insert("b".into(), json!(true));
        properties.insert("c".into(), json!(12));
        properties.insert("d".into(), json!(""));
        properties.insert("e".into(), json!(null));
        let record = SourceRecord {
            system: System::Salesforce,
            object: "Lead".into(),
            id: "00Q1".into(),
            modified_at: Timestamp::UNIX_EPOCH,
            properties,
        };
        assert_eq!(record.property_text("a").as_deref(), Some("x"));
        assert_eq!(record.property_text("b").as_deref(), Some("true"));
        assert_eq!(record.property_text("c").as_deref(), Some("12"));
        assert_eq!(record.property_text("d"), None);
        assert_eq!(record.property_text("e"), None);
        assert_eq!(record.property_text("missing"), None);
    }

    #[test]
    fn systems_parse_from_their_names() {
        assert_eq!("hubspot".parse::<System>().ok(), Some(System::Hubspot));
        assert!("HubSpot".parse::<System>().is_err());
    }
}
