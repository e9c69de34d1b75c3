//! Checks across the rules of an object mapping, beyond what reading one entry can see:
//! rules or values that an earlier rule always decides first, one source value mapped to two
//! stages, write-back values that would not read back as the stage they were written for
//! (which would make syncs loop), and person objects without an `email` field.

use std::collections::HashSet;

use super::mapper::{
    Condition, ObjectKind, ObjectMapping, RuleAction, StageOutcome, StageRule, StageWrite,
};
use crate::diagnostics::{Diagnostics, Location};
use crate::record::{Properties, SourceRecord};
use crate::vocabulary::Vocabulary;

/// Runs every cross-rule check on one object mapping. Field checks look at `declared_fields`
/// (every field the file names, even one that failed to compile); the round-trip check runs
/// only when `file_compiled_cleanly`.
pub fn validate_object(
    mapping: &ObjectMapping,
    vocabulary: &Vocabulary,
    declared_fields: &[String],
    file_compiled_cleanly: bool,
    diagnostics: &mut Diagnostics,
) {
    check_required_fields(mapping, declared_fields, diagnostics);
    check_shadowing(mapping, vocabulary, diagnostics);
    if file_compiled_cleanly {
        check_round_trip(mapping, vocabulary, diagnostics);
    }
    check_reverse_fields(mapping, declared_fields, diagnostics);
}

fn check_required_fields(
    mapping: &ObjectMapping,
    declared_fields: &[String],
    diagnostics: &mut Diagnostics,
) {
    if mapping.kind == ObjectKind::Person && !declared_fields.iter().any(|field| field == "email") {
        diagnostics.error(
            mapping.location.clone(),
            format!(
                "[objects.{}] maps no `email` field",
                mapping.object
            ),
            format!(
                "person objects need email to match people across systems; add email = {{ from = \"<property>\", transform = [\"email\"] }} under [objects.{}.fields]",
                mapping.object
            ),
        );
    }
}

/// A set of conditions a record satisfies: property -> allowed values.
type ConditionSet = Vec<(String, HashSet<String>)>;

fn conditions_of(rule: &StageRule) -> ConditionSet {
    rule.conditions
        .iter()
        .map(
            |Condition {
                 property, values, ..
             }| (property.clone(), values.iter().cloned().collect()),
        )
        .collect()
}

/// Adds `property ∈ values` to a condition set, intersecting with an existing condition.
fn with_condition(mut set: ConditionSet, property: &str, values: HashSet<String>) -> ConditionSet {
    match set.iter_mut().find(|(existing, _)| existing == property) {
        Some((_, existing_values)) => existing_values.retain(|value| values.contains(value)),
        None => set.push((property.to_string(), values)),
    }
    set
}

/// Whether every record satisfying `specific` also satisfies `general`.
fn implies(specific: &ConditionSet, general: &ConditionSet) -> bool {
    general.iter().all(|(property, allowed)| {
        specific
            .iter()
            .any(|(other, values)| other == property && values.is_subset(allowed))
    })
}

/// Whether `earlier` decides a stage for every record satisfying `set` (so a later rule never
/// sees those records). `ignoring_case`: the set's values stand for every spelling of them, so
/// only a case-insensitive earlier map can decide them all.
fn decides_all(earlier: &StageRule, set: &ConditionSet, ignoring_case: bool) -> bool {
    if !implies(set, &conditions_of(earlier)) {
        return false;
    }
    match &earlier.action {
        RuleAction::Fixed { .. } => true,
        RuleAction::Lookup(lookup) if ignoring_case && !lookup.ignore_case => false,
        RuleAction::Lookup(lookup) => set.iter().any(|(property, values)| {
            property == &lookup.property
                && !values.is_empty()
                && values
                    .iter()
                    .all(|value| lookup.map.contains_key(lookup.key_of(value).as_ref()))
        }),
    }
}

fn line_of(location: &Location) -> String {
    match location {
        Location::File { line, .. } => format!("line {line}"),
        other => other.to_string(),
    }
}

fn check_shadowing(
    mapping: &ObjectMapping,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) {
    for (index, rule) in mapping.rules.iter().enumerate() {
        let earlier = &mapping.rules[..index];
        let base = conditions_of(rule);
        match &rule.action {
            RuleAction::Fixed { .. } => {
                if let Some(shadow) = earlier.iter().find(|e| decides_all(e, &base, false)) {
                    diagnostics.error(
                        rule.location.clone(),
                        format!(
                            "rule \"{}\" can never match: rule \"{}\" ({}) decides every record it would",
                            rule.name,
                            shadow.name,
                            line_of(&shadow.location)
                        ),
                        "move this rule above the other one or narrow the earlier rule's conditions",
                    );
                }
            }
            RuleAction::Lookup(lookup) => {
                let mut shadowed = Vec::new();
                let mut keys: Vec<&String> = lookup.map.keys().collect();
                keys.sort();
                for key in keys {
                    let set = with_condition(
                        base.clone(),
                        &lookup.property,
                        HashSet::from([key.clone()]),
                    );
                    if let Some(shadow) = earlier
                        .iter()
                        .find(|e| decides_all(e, &set, lookup.ignore_case))
                    {
                        shadowed.push((key, shadow));
                    }
                }
                if shadowed.is_empty() {
                    continue;
                }
                if shadowed.len() == lookup.map.len() && lookup.pass.is_empty() {
                    let shadow = shadowed[0].1;
                    diagnostics.error(
                        rule.location.clone(),
                        format!(
                            "rule \"{}\" can never match: rule \"{}\" ({}) decides every value it maps",
                            rule.name,
                            shadow.name,
                            line_of(&shadow.location)
                        ),
                        "remove this rule or move it above the other one",
                    );
                    continue;
                }
                for (key, shadow) in shadowed {
                    let location = lookup
                        .entry_locations
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| rule.location.clone());
                    let stage_here = lookup.map[key];
                    let stage_there = match &shadow.action {
                        RuleAction::Lookup(other) if other.property == lookup.property => {
                            other.map.get(other.key_of(key).as_ref()).copied()
                        }
                        RuleAction::Fixed { stage, .. } => Some(*stage),
                        RuleAction::Lookup(_) => None,
                    };
                    match stage_there {
                        Some(there) if there != stage_here => diagnostics.error(
                            location,
                            format!(
                                "value \"{key}\" of `{}` is mapped to two stages: \"{}\" by rule \"{}\" ({}) and \"{}\" here",
                                lookup.property,
                                vocabulary.id_of(there),
                                shadow.name,
                                line_of(&shadow.location),
                                vocabulary.id_of(stage_here)
                            ),
                            "the earlier rule always wins; keep the mapping you mean in one place",
                        ),
                        _ => diagnostics.error(
                            location,
                            format!(
                                "value \"{key}\" here is never used: rule \"{}\" ({}) decides it first",
                                shadow.name,
                                line_of(&shadow.location)
                            ),
                            "remove the entry, or move this rule above the other one",
                        ),
                    }
                }
            }
        }
    }
}

/// How many combinations of unwritten property values a round-trip check tries at most.
const ROUND_TRIP_COMBINATIONS: usize = 4096;

/// A value no rule knows, standing for the custom values real orgs hold.
const UNKNOWN_VALUE: &str = "a value no rule maps";

/// Writing a stage must read back as that stage whatever else the record holds: every property
/// a rule reads that the write does not set (and `requires` does not fix) is tried absent and
/// with every value the rules name, plus one value they do not.
fn check_round_trip(
    mapping: &ObjectMapping,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) {
    for write in &mapping.reverse.stages {
        let mut fixed: Vec<(String, String)> = write.properties.clone();
        for condition in &mapping.reverse.requires {
            if !fixed
                .iter()
                .any(|(property, _)| *property == condition.property)
                && let Some(value) = condition.values.first()
            {
                fixed.push((condition.property.clone(), value.clone()));
            }
        }
        let free = free_properties(mapping, &fixed);
        let wanted = vocabulary.id_of(write.stage);
        let mut combination = vec![0usize; free.len()];
        for _ in 0..ROUND_TRIP_COMBINATIONS {
            let mut properties = Properties::default();
            for (property, value) in &fixed {
                properties.insert(property.clone(), serde_json::Value::String(value.clone()));
            }
            let mut others = Vec::new();
            for ((property, values), choice) in free.iter().zip(&combination) {
                if let Some(value) = &values[*choice] {
                    properties.insert(property.clone(), serde_json::Value::String(value.clone()));
                    others.push(format!("{property} = \"{value}\""));
                }
            }
            let record = SourceRecord {
                system: mapping.system,
                object: mapping.object.clone(),
                id: "round-trip-check".to_string(),
                modified_at: jiff::Timestamp::UNIX_EPOCH,
                properties,
            };
            let outcome = mapping.stage_of(&record);
            if outcome.stage() != Some(write.stage)
                || !matches!(outcome, StageOutcome::Matched { .. })
            {
                report_round_trip(write, wanted, &outcome, &others, vocabulary, diagnostics);
                break;
            }
            if !advance(&mut combination, &free) {
                break;
            }
        }
    }
}

/// Every property the rules read that `fixed` does not set, with the values to try (`None` is
/// absent).
fn free_properties(
    mapping: &ObjectMapping,
    fixed: &[(String, String)],
) -> Vec<(String, Vec<Option<String>>)> {
    let mut free: Vec<(String, Vec<Option<String>>)> = Vec::new();
    let mut add = |property: &str, value: Option<&str>| {
        if fixed.iter().any(|(written, _)| written == property) {
            return;
        }
        let index = match free.iter().position(|(name, _)| name == property) {
            Some(index) => index,
            None => {
                free.push((
                    property.to_string(),
                    vec![None, Some(UNKNOWN_VALUE.to_string())],
                ));
                free.len() - 1
            }
        };
        if let Some(value) = value {
            let values = &mut free[index].1;
            if !values.iter().any(|known| known.as_deref() == Some(value)) {
                values.push(Some(value.to_string()));
            }
        }
    };
    for rule in &mapping.rules {
        for condition in &rule.conditions {
            for value in &condition.values {
                add(&condition.property, Some(value));
            }
        }
        if let RuleAction::Lookup(lookup) = &rule.action {
            add(&lookup.property, None);
            let mut keys: Vec<&String> = lookup.map.keys().chain(lookup.pass.iter()).collect();
            keys.sort();
            for key in keys {
                add(&lookup.property, Some(key));
            }
        }
    }
    free
}

/// Steps to the next combination (like an odometer); false after the last one.
fn advance(combination: &mut [usize], free: &[(String, Vec<Option<String>>)]) -> bool {
    for (digit, (_, values)) in combination.iter_mut().zip(free) {
        *digit += 1;
        if *digit < values.len() {
            return true;
        }
        *digit = 0;
    }
    false
}

fn report_round_trip(
    write: &StageWrite,
    wanted: &str,
    outcome: &StageOutcome,
    others: &[String],
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) {
    let written: Vec<String> = write
        .properties
        .iter()
        .map(|(property, value)| format!("{property} = \"{value}\""))
        .collect();
    let read_back = match outcome {
        StageOutcome::Matched { stage, rule } => format!(
            "reads back as \"{}\" (rule \"{}\")",
            vocabulary.id_of(*stage),
            rule.name
        ),
        StageOutcome::NoStage => "reads back as no stage at all".to_string(),
        StageOutcome::Defaulted { unknown, .. }
        | StageOutcome::KeepPrevious { unknown }
        | StageOutcome::Quarantined { unknown }
        | StageOutcome::Rejected { unknown } => format!(
            "reads back as an unknown value (\"{}\" of `{}`)",
            unknown.value, unknown.property
        ),
    };
    let when = if others.is_empty() {
        String::new()
    } else {
        format!(" when the record has {}", others.join(", "))
    };
    let help = if others.is_empty() {
        format!(
            "syncs would loop; write values that the stage rules map back to \"{wanted}\", or remove the entry"
        )
    } else {
        format!(
            "syncs would loop; also write the properties that decide it here (or restrict write-back with [reverse] requires), so that \"{wanted}\" reads back whatever the record held"
        )
    };
    diagnostics.error(
        write.location.clone(),
        format!(
            "reverse mapping for stage \"{wanted}\" is not a round trip: writing {}{when} {read_back}",
            written.join(", ")
        ),
        help,
    );
}

fn check_reverse_fields(
    mapping: &ObjectMapping,
    declared_fields: &[String],
    diagnostics: &mut Diagnostics,
) {
    for (field, _, location) in &mapping.reverse.fields {
        if !declared_fields.contains(field) {
            let known: Vec<&str> = declared_fields.iter().map(String::as_str).collect();
            let help = match crate::diagnostics::did_you_mean(field, known.iter().copied()) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!(
                    "write back only fields this object maps under [objects.{}.fields]: {}",
                    mapping.object,
                    crate::diagnostics::list(&known)
                ),
            };
            diagnostics.error(
                location.clone(),
                format!(
                    "reverse field `{field}` is not a mapped field of {}",
                    mapping.object
                ),
                help,
            );
        }
    }
}
