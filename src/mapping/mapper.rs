//! The compiled mapping: a pure function from a [`SourceRecord`] to its [`Normalized`] form.
//!
//! A [`Mapper`] holds, per system and object, the ordered stage rules, the field maps and the
//! reverse mapping for write-back. It does no I/O and never panics on record content, so the
//! engine can call it on every record of a run.

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use serde_json::Value;

use super::transform::{Transform, TransformError, Working};
use crate::diagnostics::Location;
use crate::record::{FieldValue, Properties, SourceRecord, System, value_text};
use crate::vocabulary::{StageId, Vocabulary};

/// What kind of thing an object's records describe; person objects must map `email`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Person,
    Deal,
    Account,
}

impl ObjectKind {
    pub const NAMES: [&'static str; 3] = ["person", "deal", "account"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "person" => Some(ObjectKind::Person),
            "deal" => Some(ObjectKind::Deal),
            "account" => Some(ObjectKind::Account),
            _ => None,
        }
    }
}

/// What to do with a record whose stage property holds a value no rule knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownValuePolicy {
    /// Fail the run: the mapping must be fixed first.
    Error,
    /// Set the record aside as a dead letter; the run goes on.
    Quarantine,
    /// Keep the stage the person had before.
    KeepPrevious,
    /// Use this stage.
    DefaultStage(StageId),
}

/// One condition of a rule: the property's text form is one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub property: String,
    pub values: Vec<String>,
    pub location: Location,
}

impl Condition {
    pub fn holds(&self, record: &SourceRecord) -> bool {
        self.holds_for(record.properties.get(&self.property))
    }

    /// Whether the condition holds for this value of its property (`None`: absent).
    pub fn holds_for(&self, value: Option<&serde_json::Value>) -> bool {
        value
            .and_then(crate::record::value_text)
            .is_some_and(|text| self.values.iter().any(|value| *value == *text))
    }
}

/// What a rule decides once its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Always this stage.
    Fixed { stage: StageId, location: Location },
    /// The stage is looked up from a property's value.
    Lookup(ValueLookup),
}

/// A value map over one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueLookup {
    pub property: String,
    /// Keys are lowercased when `ignore_case` is set.
    pub map: FxHashMap<String, StageId>,
    /// Where each map entry was written, by key (for diagnostics).
    pub entry_locations: FxHashMap<String, Location>,
    /// Values that are known but decide nothing here; later rules decide.
    pub pass: FxHashSet<String>,
    pub ignore_case: bool,
}

impl ValueLookup {
    /// The key a source value is looked up by.
    pub fn key_of<'v>(&self, value: &'v str) -> std::borrow::Cow<'v, str> {
        if self.ignore_case && value.chars().any(char::is_uppercase) {
            std::borrow::Cow::Owned(value.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(value)
        }
    }
}

/// One ordered stage rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRule {
    pub name: Arc<str>,
    pub location: Location,
    pub conditions: Vec<Condition>,
    pub action: RuleAction,
}

impl StageRule {
    /// Every source property this rule reads: its conditions' and its value map's.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        let looked_up = match &self.action {
            RuleAction::Lookup(lookup) => Some(lookup.property.as_str()),
            RuleAction::Fixed { .. } => None,
        };
        self.conditions
            .iter()
            .map(|condition| condition.property.as_str())
            .chain(looked_up)
    }
}

/// A canonical field and how it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap {
    pub name: Arc<str>,
    pub source: FieldSource,
    pub transforms: Vec<Transform>,
    pub location: Location,
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    Property(String),
    /// Non-empty parts joined with `separator`.
    Concat {
        properties: Vec<String>,
        separator: String,
    },
}

/// How a stage is written back: the native property values that mean this stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageWrite {
    pub stage: StageId,
    pub properties: Vec<(String, String)>,
    pub location: Location,
}

/// The reverse mapping of one object, used for write-back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReverseMapping {
    /// Write-back applies only to records meeting these conditions (e.g. Salesforce leads that
    /// are not converted, which the API refuses to update); others are skipped.
    pub requires: Vec<Condition>,
    pub stages: Vec<StageWrite>,
    /// Canonical field -> native property.
    pub fields: Vec<(String, String, Location)>,
}

/// The compiled mapping of one object of one system.
#[derive(Debug, Clone)]
pub struct ObjectMapping {
    pub system: System,
    pub object: String,
    pub kind: ObjectKind,
    pub rules: Vec<StageRule>,
    pub on_unknown: UnknownValuePolicy,
    pub fields: Vec<FieldMap>,
    pub reverse: ReverseMapping,
    /// Per stage, the native date/time property that says when a record first entered it
    /// (HubSpot's `hs_v2_date_entered_<value>`, Salesforce's `ConvertedDate`): the source of
    /// the warehouse's `first_entered_<stage>` where it exists.
    pub stage_dates: Vec<(StageId, String)>,
    pub location: Location,
    /// The names of `fields`, shared with every [`Normalized`] of this object.
    pub field_names: Arc<[Arc<str>]>,
}

/// Which rule decided a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// Position of the rule in the object's list (0-based).
    pub index: usize,
    pub name: Arc<str>,
    /// The property and value that matched, for value-map rules.
    pub matched_value: Option<(String, String)>,
}

/// A value of a stage property that no rule knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub property: String,
    pub value: String,
    pub rule: Arc<str>,
}

/// The stage a record maps to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    Matched {
        stage: StageId,
        rule: RuleMatch,
    },
    /// An unknown value, resolved by `on_unknown = { default = "…" }`.
    Defaulted {
        stage: StageId,
        unknown: UnknownValue,
    },
    /// An unknown value; `on_unknown = "keep_previous"`.
    KeepPrevious {
        unknown: UnknownValue,
    },
    /// An unknown value; `on_unknown = "quarantine"`: the record goes to dead letters.
    Quarantined {
        unknown: UnknownValue,
    },
    /// An unknown value; `on_unknown = "error"`: the run must stop.
    Rejected {
        unknown: UnknownValue,
    },
    /// No stage property was set (or every value was a deliberate pass).
    NoStage,
}

impl StageOutcome {
    /// The stage decided for this record, if any.
    pub fn stage(&self) -> Option<StageId> {
        match self {
            StageOutcome::Matched { stage, .. } | StageOutcome::Defaulted { stage, .. } => {
                Some(*stage)
            }
            _ => None,
        }
    }
}

/// A field whose transform failed on this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: Arc<str>,
    pub error: TransformError,
}

/// A record in the shared vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub stage: StageOutcome,
    /// Canonical field names, shared by every record of the object.
    pub field_names: Arc<[Arc<str>]>,
    /// Canonical field values, in the order of `field_names`.
    pub field_values: Vec<FieldValue>,
    pub field_problems: Vec<FieldProblem>,
}

impl Normalized {
    /// A canonical field's value, if the object maps that field.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.field_names
            .iter()
            .position(|field| &**field == name)
            .and_then(|index| self.field_values.get(index))
    }

    /// Every canonical field with its value, in mapping order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.field_names
            .iter()
            .map(|name| &**name)
            .zip(&self.field_values)
    }
}

/// The error for a record the mapper cannot handle at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(
        "no mapping for {system} object \"{object}\" (record {id}); add [objects.{object}] to the {system} mapping file or stop syncing that object"
    )]
    UnmappedObject {
        system: System,
        object: String,
        id: String,
    },
}

impl ObjectMapping {
    /// Evaluates the stage rules in order; the first match wins.
    pub fn stage_of(&self, record: &SourceRecord) -> StageOutcome {
        let mut first_unknown: Option<UnknownValue> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule
                .conditions
                .iter()
                .all(|condition| condition.holds(record))
            {
                continue;
            }
            match &rule.action {
                RuleAction::Fixed { stage, .. } => {
                    return StageOutcome::Matched {
                        stage: *stage,
                        rule: RuleMatch {
                            index,
                            name: Arc::clone(&rule.name),
                            matched_value: None,
                        },
                    };
                }
                RuleAction::Lookup(lookup) => {
                    let Some(text) = record.property_text(&lookup.property) else {
                        continue;
                    };
                    let key = lookup.key_of(&text);
                    if let Some(stage) = lookup.map.get(key.as_ref()) {
                        return StageOutcome::Matched {
                            stage: *stage,
                            rule: RuleMatch {
                                index,
                                name: Arc::clone(&rule.name),
                                matched_value: Some((lookup.property.clone(), text.into_owned())),
                            },
                        };
                    }
                    if !lookup.pass.contains(key.as_ref()) && first_unknown.is_none() {
                        first_unknown = Some(UnknownValue {
                            property: lookup.property.clone(),
                            value: text.into_owned(),
                            rule: Arc::clone(&rule.name),
                        });
                    }
                }
            }
        }
        match (first_unknown, self.on_unknown) {
            (None, _) => StageOutcome::NoStage,
            (Some(unknown), UnknownValuePolicy::Error) => StageOutcome::Rejected { unknown },
            (Some(unknown), UnknownValuePolicy::Quarantine) => {
                StageOutcome::Quarantined { unknown }
            }
            (Some(unknown), UnknownValuePolicy::KeepPrevious) => {
                StageOutcome::KeepPrevious { unknown }
            }
            (Some(unknown), UnknownValuePolicy::DefaultStage(stage)) => {
                StageOutcome::Defaulted { stage, unknown }
            }
        }
    }

    /// Reads and transforms every canonical field, in mapping order.
    pub fn fields_of(&self, record: &SourceRecord) -> (Vec<FieldValue>, Vec<FieldProblem>) {
        let mut fields = Vec::with_capacity(self.fields.len());
        let mut problems = Vec::new();
        for field in &self.fields {
            let mut value = match &field.source {
                FieldSource::Property(property) => record
                    .properties
                    .get(property)
                    .map_or(Working::Null, raw_field_value),
                FieldSource::Concat {
                    properties,
                    separator,
                } => concat(&record.properties, properties, separator),
            };
            for transform in &field.transforms {
                match transform.apply(value) {
                    Ok(next) => value = next,
                    Err(error) => {
                        problems.push(FieldProblem {
                            field: Arc::clone(&field.name),
                            error,
                        });
                        value = Working::Null;
                        break;
                    }
                }
            }
            fields.push(value.into_field_value());
        }
        (fields, problems)
    }

    /// The native property values that write `stage` back, if this object writes it.
    pub fn reverse_stage(&self, stage: StageId) -> Option<&StageWrite> {
        self.reverse
            .stages
            .iter()
            .find(|write| write.stage == stage)
    }
}

/// A JSON property as a field value before transforms: strings as they are (untrimmed),
/// booleans and numbers as text, null/arrays/objects as null.
fn raw_field_value(value: &Value) -> Working<'_> {
    match value {
        Value::String(text) if text.is_empty() => Working::Null,
        Value::String(text) => Working::Text(std::borrow::Cow::Borrowed(text)),
        other => value_text(other).map_or(Working::Null, Working::Text),
    }
}

fn concat<'a>(properties: &'a Properties, names: &[String], separator: &str) -> Working<'a> {
    let mut joined = String::new();
    for name in names {
        let Some(text) = properties.get(name).and_then(value_text) else {
            continue;
        };
        if !joined.is_empty() {
            joined.push_str(separator);
        }
        joined.push_str(&text);
    }
    if joined.is_empty() {
        Working::Null
    } else {
        Working::Text(std::borrow::Cow::Owned(joined))
    }
}

fn system_slot(system: System) -> usize {
    match system {
        System::Hubspot => 0,
        System::Salesforce => 1,
    }
}

/// Every object mapping of every system, compiled against one vocabulary.
#[derive(Debug, Clone)]
pub struct Mapper {
    vocabulary: Arc<Vocabulary>,
    /// Object mappings by system (indexed by [`system_slot`]) and object name.
    objects: [FxHashMap<String, ObjectMapping>; 2],
}

impl Mapper {
    pub fn new(vocabulary: Arc<Vocabulary>, objects: Vec<ObjectMapping>) -> Self {
        let mut by_system: [FxHashMap<String, ObjectMapping>; 2] = Default::default();
        for mapping in objects {
            by_system[system_slot(mapping.system)].insert(mapping.object.clone(), mapping);
        }
        Self {
            vocabulary,
            objects: by_system,
        }
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    pub fn object(&self, system: System, object: &str) -> Option<&ObjectMapping> {
        self.objects[system_slot(system)].get(object)
    }

    /// Whether records of `object` are people (and so belong to unified persons).
    pub fn holds_people(&self, system: System, object: &str) -> bool {
        self.object(system, object)
            .is_some_and(|mapping| mapping.kind == ObjectKind::Person)
    }

    /// Every object mapping, sorted by system then object name.
    pub fn objects(&self) -> Vec<&ObjectMapping> {
        let mut all: Vec<&ObjectMapping> =
            self.objects.iter().flat_map(FxHashMap::values).collect();
        all.sort_by(|a, b| (a.system, &a.object).cmp(&(b.system, &b.object)));
        all
    }

    /// Maps one record: its stage (and the rule that decided it) and its canonical fields.
    pub fn normalize(&self, record: &SourceRecord) -> Result<Normalized, NormalizeError> {
        let mapping = self.object(record.system, &record.object).ok_or_else(|| {
            NormalizeError::UnmappedObject {
                system: record.system,
                object: record.object.clone(),
                id: record.id.clone(),
            }
        })?;
        let stage = mapping.stage_of(record);
        let (field_values, field_problems) = mapping.fields_of(record);
        Ok(Normalized {
            stage,
            field_names: Arc::clone(&mapping.field_names),
            field_values,
            field_problems,
        })
    }
}
