//! Plan: for each person, the native values each CRM should hold — the shared stage through
//! the reverse mapping (only where the record's own stage differs), the shared stage's id in
//! the configured custom field, the other system's id, and the configured fields — diffed
//! against what the record holds now. Only differences become writes, each with the rule
//! that decided it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::WriteTarget;
use crate::mapping::{ObjectMapping, RuleAction, StageWrite};
use crate::record::{System, value_text};
use crate::store::model::{MemberRow, PendingWrite};
use crate::vocabulary::{StageId, Vocabulary};

/// One native field to set, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldWrite {
    /// The value wanted; `null` clears.
    pub value: Value,
    pub rule: String,
}

/// What the person's unified view asks of one system.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub stage: Option<StageId>,
    pub stage_reason: &'a str,
    /// The other system's record id, for the link field.
    pub link: Option<String>,
    /// Canonical field -> (value, rule).
    pub fields: &'a BTreeMap<String, (Value, String)>,
    pub allow_regression: bool,
}

/// HubSpot's lifecycle stage, which HubSpot itself never moves backwards on a plain write.
const LIFECYCLE: &str = "lifecyclestage";

/// What planning one record gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordPlan {
    /// The write the record needs; `None` when it holds every value already.
    pub write: Option<PendingWrite>,
    /// The native stage was left alone: writing it would move HubSpot's lifecycle stage
    /// backwards, which the policy does not allow — (from, to) lifecycle values.
    pub refused_regression: Option<(String, String)>,
}

/// The write one record needs, if any.
pub fn plan_record(
    vocabulary: &Vocabulary,
    target: &WriteTarget,
    mapping: &ObjectMapping,
    record: &MemberRow,
    unified_id: &str,
    wanted: &Wanted<'_>,
) -> RecordPlan {
    let mut plan = RecordPlan::default();
    if !mapping
        .reverse
        .requires
        .iter()
        .all(|condition| condition.holds_for(record.properties.get(&condition.property)))
    {
        // Records the reverse mapping excludes (converted leads) are never written.
        return plan;
    }
    let mut desired: BTreeMap<String, FieldWrite> = BTreeMap::new();
    if let Some(stage) = wanted.stage {
        let stage_id = vocabulary.id_of(stage);
        let own = record.stage.as_deref();
        let native_write = mapping
            .reverse_stage(stage)
            .filter(|_| target.stage && own != Some(stage_id));
        // The native stage is written whole or not at all: a lifecycle stage HubSpot keeps
        // with a lead status that moved would read back as yet another stage.
        let native_write = match native_write
            .and_then(|write| lifecycle_regression(vocabulary, mapping, record, write))
        {
            Some(moves) if !wanted.allow_regression => {
                plan.refused_regression = Some(moves);
                None
            }
            _ => native_write,
        };
        if let Some(write) = native_write {
            for (property, value) in &write.properties {
                desired.insert(
                    property.clone(),
                    FieldWrite {
                        value: native(record.key.system, value),
                        rule: format!("stage {stage_id}: {}", wanted.stage_reason),
                    },
                );
            }
        }
        if let Some(field) = &target.stage_field {
            desired.insert(
                field.value.clone(),
                FieldWrite {
                    value: Value::String(stage_id.to_string()),
                    rule: format!("shared stage {stage_id}: {}", wanted.stage_reason),
                },
            );
        }
    }
    if let (Some(field), Some(link)) = (&target.link_field, &wanted.link) {
        desired.insert(
            field.value.clone(),
            FieldWrite {
                value: Value::String(link.clone()),
                rule: "cross-link: the same person's record in the other system".into(),
            },
        );
    }
    for field in &target.fields {
        let Some((_, property, _)) = mapping
            .reverse
            .fields
            .iter()
            .find(|(canonical, _, _)| *canonical == field.value)
        else {
            continue;
        };
        if let Some((value, rule)) = wanted.fields.get(&field.value) {
            desired.insert(
                property.clone(),
                FieldWrite {
                    value: match value {
                        Value::Null => Value::Null,
                        Value::String(text) => native(record.key.system, text),
                        other => other.clone(),
                    },
                    rule: rule.clone(),
                },
            );
        }
    }
    let mut changes = Map::new();
    let mut current = Map::new();
    for (property, write) in desired {
        let held = record.properties.get(&property).unwrap_or(&Value::Null);
        if same_value(held, &write.value) {
            continue;
        }
        current.insert(property.clone(), held.clone());
        changes.insert(property, json!({"value": write.value, "rule": write.rule}));
    }
    if !changes.is_empty() {
        plan.write = Some(PendingWrite {
            key: record.key.clone(),
            unified_id: unified_id.to_string(),
            changes: Value::Object(changes).to_string(),
            current: Value::Object(current).to_string(),
            allow_regression: wanted.allow_regression,
        });
    }
    plan
}

/// (from, to) when `write` would move the record's HubSpot lifecycle stage to an earlier
/// stage, ranked by what the mapping's lifecycle rule makes of each value.
fn lifecycle_regression(
    vocabulary: &Vocabulary,
    mapping: &ObjectMapping,
    record: &MemberRow,
    write: &StageWrite,
) -> Option<(String, String)> {
    if record.key.system != System::Hubspot {
        return None;
    }
    let (_, wanted) = write
        .properties
        .iter()
        .find(|(property, _)| property == LIFECYCLE)?;
    let held = record.properties.get(LIFECYCLE).and_then(value_text)?;
    if wanted.is_empty() || *wanted == *held {
        return None;
    }
    let rank_of = |value: &str| {
        mapping
            .rules
            .iter()
            .find_map(|rule| match &rule.action {
                RuleAction::Lookup(lookup) if lookup.property == LIFECYCLE => {
                    lookup.map.get(lookup.key_of(value).as_ref()).copied()
                }
                _ => None,
            })
            .and_then(|stage| vocabulary.stage(stage).rank)
    };
    match (rank_of(&held), rank_of(wanted)) {
        (Some(from), Some(to)) if to < from => Some((held.into_owned(), wanted.clone())),
        _ => None,
    }
}

/// A mapping's text value as the system stores it: an empty text clears (HubSpot keeps an
/// empty string, Salesforce a null).
fn native(system: System, text: &str) -> Value {
    match (system, text.is_empty()) {
        (System::Salesforce, true) => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

/// Whether a held value already is the wanted one (empty and null are the same; numbers and
/// booleans compare by their text).
pub fn same_value(held: &Value, wanted: &Value) -> bool {
    let held = value_text(held);
    let wanted = value_text(wanted);
    held == wanted
}

/// The hash the write ledger keeps of a native value.
pub fn value_hash(value: &Value) -> String {
    let text = value_text(value);
    super::extract::content_hash(&[text.as_deref().unwrap_or("")])
}
