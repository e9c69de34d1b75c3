//! Reading a mapping file (`mappings/hubspot.toml`, `mappings/salesforce.toml`) into
//! [`ObjectMapping`]s, reporting every problem with its position.
//!
//! File layout, per object:
//!
//! ```toml
//! [objects.contacts]
//! kind = "person"                       # person | deal | account
//! on_unknown = "quarantine"             # error | quarantine | keep_previous | { default = "lead" }
//!
//! [[objects.contacts.stage_rules]]      # ordered; first match wins
//! name = "lifecycle stage"
//! when = { hs_lead_status = ["NEW", "OPEN"] }   # optional conditions, all must hold
//! property = "lifecyclestage"           # a value map over one property ...
//! map = { lead = "lead", marketingqualifiedlead = "mql" }
//! pass = ["other"]                      # ... known values that decide nothing here
//! # stage = "sql"                       # ... or a fixed stage when the conditions hold
//!
//! [objects.contacts.fields]
//! email = { from = "email", transform = ["email"] }
//! full_name = { concat = ["firstname", "lastname"], separator = " " }
//!
//! [objects.contacts.reverse.stages]     # write-back: stage -> native values
//! mql = { lifecyclestage = "marketingqualifiedlead" }
//! [objects.contacts.reverse.fields]     # write-back: canonical field -> native property
//! first_name = "firstname"
//! [objects.contacts.stage_dates]        # when a record entered a stage: stage -> date property
//! mql = "hs_v2_date_entered_marketingqualifiedlead"
//! ```

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use super::mapper::{
    Condition, FieldMap, FieldSource, ObjectKind, ObjectMapping, ReverseMapping, RuleAction,
    StageRule, StageWrite, UnknownValuePolicy, ValueLookup,
};
use super::transform::{check_chain, parse_transform};
use crate::diagnostics::{Diagnostic, Diagnostics, Located, SourceFile, did_you_mean, list};
use crate::record::System;
use crate::tomldoc::{Node, Table, read_document};
use crate::vocabulary::{StageId, Vocabulary};

const POLICY_NAMES: [&str; 4] = [
    "error",
    "quarantine",
    "keep_previous",
    "{ default = \"<stage>\" }",
];

/// What one mapping file holds: the objects that compiled, and every object and field name it
/// declares, including those that failed (so later checks do not report them again as missing).
#[derive(Debug, Default)]
pub struct CompiledFile {
    pub objects: Vec<ObjectMapping>,
    pub declared_objects: Vec<String>,
    /// Per declared object, the canonical field names it declares.
    pub declared_fields: Vec<(String, Vec<String>)>,
}

impl CompiledFile {
    pub fn declared_fields_of(&self, object: &str) -> &[String] {
        self.declared_fields
            .iter()
            .find(|(name, _)| name == object)
            .map_or(&[], |(_, fields)| fields.as_slice())
    }
}

/// Reads one system's mapping file. Problems go to `diagnostics`; `None` when the TOML itself
/// could not be parsed.
pub fn compile_file(
    system: System,
    source: &SourceFile,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> Option<CompiledFile> {
    let mut found = Diagnostics::default();
    let compiled = read_document(source, diagnostics, |root| {
        let objects = root.table("objects");
        if !objects.is_present() {
            root.missing(
                "objects",
                &format!(
                    "map at least one {system} object, e.g. [objects.{}]",
                    example_object(system)
                ),
            );
        }
        let mut file = CompiledFile::default();
        for (name, node) in objects.entries() {
            file.declared_objects.push(name.value.clone());
            let Some(table) = node.as_table() else {
                continue;
            };
            let declared_fields = table
                .table("fields")
                .entries_quiet()
                .into_iter()
                .map(|(field, _)| field.value)
                .collect();
            file.declared_fields
                .push((name.value.clone(), declared_fields));
            if let Some(mapping) = read_object(system, &name.value, &table, vocabulary, &mut found)
            {
                file.objects.push(mapping);
            }
        }
        file
    });
    diagnostics.extend(found);
    compiled
}

fn example_object(system: System) -> &'static str {
    match system {
        System::Hubspot => "contacts",
        System::Salesforce => "Lead",
    }
}

fn read_object(
    system: System,
    object: &str,
    table: &Table<'_, '_>,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> Option<ObjectMapping> {
    let kind = table
        .required_str("kind", "set `kind` to person, deal or account")
        .and_then(|kind| {
            let parsed = ObjectKind::parse(&kind.value);
            if parsed.is_none() {
                diagnostics.error(
                    kind.location.clone(),
                    format!("unknown object kind \"{}\"", kind.value),
                    suggestion_or_list(&kind.value, &ObjectKind::NAMES),
                );
            }
            parsed
        });
    let on_unknown = read_policy(table, vocabulary, diagnostics);
    let rules = table
        .array("stage_rules")
        .iter()
        .enumerate()
        .filter_map(|(index, node)| read_rule(index, node, vocabulary, diagnostics))
        .collect();
    let fields = read_fields(&table.table("fields"));
    let reverse = read_reverse(&table.table("reverse"), vocabulary, diagnostics);
    let stage_dates = read_stage_dates(&table.table("stage_dates"), vocabulary, diagnostics);
    table.finish();
    let kind = kind?;
    let field_names = fields
        .iter()
        .map(|field: &FieldMap| Arc::clone(&field.name))
        .collect();
    Some(ObjectMapping {
        field_names,
        system,
        object: object.to_string(),
        kind,
        rules,
        on_unknown,
        fields,
        reverse,
        stage_dates,
        location: table.location(),
    })
}

/// `[objects.X.stage_dates]`: `stage = "native date property"`.
fn read_stage_dates(
    table: &Table<'_, '_>,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> Vec<(StageId, String)> {
    let mut dates = Vec::new();
    for (stage_name, node) in table.entries() {
        let stage = vocabulary.resolve(&stage_name, diagnostics);
        // A value that is not a string is reported by `as_str`.
        let Some(property) = node.as_str() else {
            continue;
        };
        if let Some(stage) = stage {
            dates.push((stage, property.value));
        }
    }
    table.finish();
    dates
}

fn suggestion_or_list(word: &str, names: &[&str]) -> String {
    match did_you_mean(word, names.iter().copied()) {
        Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
        None => format!("use one of: {}", list(names)),
    }
}

fn read_policy(
    table: &Table<'_, '_>,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> UnknownValuePolicy {
    let Some(node) = table.get("on_unknown") else {
        return UnknownValuePolicy::Quarantine;
    };
    if let Some(name) = node.peek_str() {
        return match name {
            "error" => UnknownValuePolicy::Error,
            "quarantine" => UnknownValuePolicy::Quarantine,
            "keep_previous" => UnknownValuePolicy::KeepPrevious,
            other => {
                let help = if vocabulary.lookup(other).is_some() {
                    format!(
                        "to fall back to a stage write on_unknown = {{ default = \"{other}\" }}"
                    )
                } else {
                    suggestion_or_list(other, &POLICY_NAMES)
                };
                node.report(format!("unknown on_unknown policy \"{other}\""), help);
                UnknownValuePolicy::Quarantine
            }
        };
    }
    let Some(policy) = node.as_table() else {
        return UnknownValuePolicy::Quarantine;
    };
    let stage = policy.required_str("default", "write on_unknown = { default = \"<stage>\" }");
    policy.finish();
    stage
        .and_then(|stage| vocabulary.resolve(&stage, diagnostics))
        .map_or(
            UnknownValuePolicy::Quarantine,
            UnknownValuePolicy::DefaultStage,
        )
}

fn read_rule(
    index: usize,
    node: &Node<'_, '_>,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> Option<StageRule> {
    let table = node.as_table()?;
    let name = table
        .str("name")
        .map_or_else(|| format!("rule {}", index + 1), |name| name.value);
    let conditions = read_conditions(&table.table("when"));
    let property = table.str("property");
    let map_node = table.get("map");
    let pass = table
        .get("pass")
        .map(|pass| pass.as_str_list())
        .unwrap_or_default();
    let ignore_case = table.bool("ignore_case").is_some_and(|flag| flag.value);
    let fixed_stage = table.str("stage");
    table.finish();

    let action = match (fixed_stage, property, map_node) {
        (Some(stage), None, None) => {
            if !pass.is_empty() {
                table.report(Diagnostic::new(
                    pass[0].location.clone(),
                    format!("rule \"{name}\" has `pass` but no value map"),
                ).with_help("`pass` lists values of `property` that the `map` leaves to later rules; remove it"));
            }
            let location = stage.location.clone();
            RuleAction::Fixed {
                stage: vocabulary.resolve(&stage, diagnostics)?,
                location,
            }
        }
        (None, Some(property), Some(map_node)) => {
            let map_table = map_node.as_table()?;
            let mut map: FxHashMap<String, StageId> = FxHashMap::default();
            let mut entry_locations = FxHashMap::default();
            for (value, stage_node) in map_table.entries() {
                let Some(stage) = stage_node.as_str() else {
                    continue;
                };
                if !reject_padded(&value, &format!("map key of rule \"{name}\""), diagnostics) {
                    continue;
                }
                let key = if ignore_case {
                    value.value.to_lowercase()
                } else {
                    value.value.clone()
                };
                let Some(stage_id) = vocabulary.resolve(&stage, diagnostics) else {
                    continue;
                };
                if let Some(previous) = map.get(&key) {
                    if *previous != stage_id {
                        diagnostics.error(
                            value.location.clone(),
                            format!(
                                "value \"{}\" of `{}` is mapped to two stages: \"{}\" and \"{}\"",
                                value.value,
                                property.value,
                                vocabulary.id_of(*previous),
                                vocabulary.id_of(stage_id)
                            ),
                            "with ignore_case these keys are the same value; keep one entry",
                        );
                    }
                    continue;
                }
                map.insert(key.clone(), stage_id);
                entry_locations.insert(key, value.location);
            }
            let mut pass_set = FxHashSet::default();
            for value in pass {
                if !reject_padded(
                    &value,
                    &format!("`pass` value of rule \"{name}\""),
                    diagnostics,
                ) {
                    continue;
                }
                let key = if ignore_case {
                    value.value.to_lowercase()
                } else {
                    value.value.clone()
                };
                if let Some(stage) = map.get(&key) {
                    diagnostics.error(
                        value.location.clone(),
                        format!(
                            "value \"{}\" is both mapped (to \"{}\") and listed in `pass`",
                            value.value,
                            vocabulary.id_of(*stage)
                        ),
                        "a value either decides the stage here or is left to later rules; remove it from one list",
                    );
                }
                pass_set.insert(key);
            }
            RuleAction::Lookup(ValueLookup {
                property: property.value,
                map,
                entry_locations,
                pass: pass_set,
                ignore_case,
            })
        }
        (None, Some(property), None) => {
            diagnostics.error(
                property.location,
                format!("rule \"{name}\" names a `property` but has no `map`"),
                "add map = { \"<value>\" = \"<stage>\" } for the values of this property",
            );
            return None;
        }
        (None, None, Some(map_node)) => {
            diagnostics.error(
                map_node.location(),
                format!("rule \"{name}\" has a `map` but no `property`"),
                "add property = \"<source property>\" that the map's keys are values of",
            );
            return None;
        }
        (Some(stage), _, _) => {
            diagnostics.error(
                stage.location,
                format!("rule \"{name}\" has both a fixed `stage` and `property`/`map`"),
                "a rule either sets a fixed `stage` or looks one up with `property` + `map`; split it into two rules",
            );
            return None;
        }
        (None, None, None) => {
            diagnostics.error(
                node.location(),
                format!("rule \"{name}\" decides no stage"),
                "add `stage = \"<stage>\"` (with `when` conditions) or `property` + `map`",
            );
            return None;
        }
    };
    Some(StageRule {
        name: Arc::from(name),
        location: node.location(),
        conditions: conditions?,
        action,
    })
}

/// Source values are compared trimmed, so a key with surrounding spaces could never match.
/// Reports it and returns false.
fn reject_padded(value: &Located<String>, what: &str, diagnostics: &mut Diagnostics) -> bool {
    if value.value.trim() == value.value && !value.value.is_empty() {
        return true;
    }
    diagnostics.error(
        value.location.clone(),
        format!(
            "{what} {:?} has leading or trailing spaces (or is empty)",
            value.value
        ),
        format!(
            "values are compared without surrounding spaces; write {:?}",
            value.value.trim()
        ),
    );
    false
}

/// Reads `when`-style conditions. `None` when any was invalid (already reported): a rule
/// missing one of its conditions would match records it must not.
fn read_conditions(when: &Table<'_, '_>) -> Option<Vec<Condition>> {
    let mut conditions = Vec::new();
    let mut all_valid = true;
    for (property, node) in when.entries() {
        // A single value or a list of them ("any of").
        let items = match node.scalar_text() {
            Some(_) => vec![node.clone()],
            None => match node.as_array() {
                Some(items) => items,
                None => {
                    all_valid = false;
                    continue;
                }
            },
        };
        if items.is_empty() {
            node.report(
                format!("condition on `{}` lists no values", property.value),
                "list the values that satisfy the condition",
            );
            all_valid = false;
            continue;
        }
        let mut values = Vec::new();
        for item in &items {
            let Some(text) = item.scalar_text() else {
                item.report(
                    format!(
                        "condition values must be strings, booleans or numbers, found {}",
                        item.type_name()
                    ),
                    "write the value the property must have",
                );
                continue;
            };
            if text.trim() != text || text.is_empty() {
                item.report(
                    format!("condition value {text:?} of `{}` has leading or trailing spaces (or is empty)", property.value),
                    format!("values are compared without surrounding spaces; write {:?}", text.trim()),
                );
                continue;
            }
            values.push(text);
        }
        if values.len() == items.len() {
            conditions.push(Condition {
                property: property.value,
                values,
                location: property.location,
            });
        } else {
            all_valid = false;
        }
    }
    all_valid.then_some(conditions)
}

fn read_fields(fields: &Table<'_, '_>) -> Vec<FieldMap> {
    let mut compiled = Vec::new();
    for (name, node) in fields.entries() {
        let Some(table) = node.as_table() else {
            continue;
        };
        let from = table.str("from");
        let concat = table.get("concat");
        let separator = table.str("separator");
        let transforms: Vec<_> = table
            .get("transform")
            .map(|list| {
                list.as_array()
                    .unwrap_or_default()
                    .iter()
                    .map(|item| (item.location(), parse_transform(item)))
                    .collect()
            })
            .unwrap_or_default();
        table.finish();
        let source = match (from, concat) {
            (Some(from), None) => {
                if let Some(separator) = separator {
                    table.report(
                        Diagnostic::new(separator.location, "`separator` only applies to `concat`")
                            .with_help(
                                "remove `separator` or read several properties with `concat`",
                            ),
                    );
                }
                FieldSource::Property(from.value)
            }
            (None, Some(concat)) => {
                let properties: Vec<String> =
                    concat.as_str_list().into_iter().map(|p| p.value).collect();
                if properties.len() < 2 {
                    concat.report(
                        "`concat` needs at least two properties",
                        "list the properties to join, e.g. concat = [\"firstname\", \"lastname\"]",
                    );
                    continue;
                }
                FieldSource::Concat {
                    properties,
                    separator: separator.map_or_else(|| " ".to_string(), |s| s.value),
                }
            }
            (Some(from), Some(_)) => {
                table.report(
                    Diagnostic::new(
                        from.location,
                        format!("field `{}` has both `from` and `concat`", name.value),
                    )
                    .with_help("read one property with `from` or join several with `concat`"),
                );
                continue;
            }
            (None, None) => {
                table.missing("from", "name the source property with from = \"<property>\" (or join several with concat)");
                continue;
            }
        };
        // A field with a bad transform is still kept (minus that transform), so that checks
        // which name the field do not report it again as missing; the problem itself is
        // already a diagnostic, and a mapper with diagnostics is never used.
        let all_parsed = transforms.iter().all(|(_, parsed)| parsed.is_some());
        let transforms: Vec<_> = transforms
            .into_iter()
            .filter_map(|(location, parsed)| parsed.map(|t| (location, t)))
            .collect();
        let chain: Vec<_> = transforms
            .iter()
            .map(|(_, transform)| transform.clone())
            .collect();
        if all_parsed && let Err((index, message)) = check_chain(&chain) {
            table.report(
                Diagnostic::new(transforms[index].0.clone(), message).with_help(
                    "reorder the transforms: text transforms first, then one date/time parse",
                ),
            );
        }
        compiled.push(FieldMap {
            name: Arc::from(name.value.as_str()),
            source,
            transforms: chain,
            location: name.location,
        });
    }
    compiled
}

fn read_reverse(
    reverse: &Table<'_, '_>,
    vocabulary: &Vocabulary,
    diagnostics: &mut Diagnostics,
) -> ReverseMapping {
    let mut mapping = ReverseMapping {
        requires: read_conditions(&reverse.table("requires")).unwrap_or_default(),
        ..ReverseMapping::default()
    };
    {
        let stages = reverse.table("stages");
        for (stage_name, node) in stages.entries() {
            let stage = vocabulary.resolve(&stage_name, diagnostics);
            let Some(values) = node.as_table() else {
                continue;
            };
            let mut properties = Vec::new();
            for (property, value) in values.entries() {
                match value.scalar_text() {
                    Some(text) => properties.push((property.value, text)),
                    None => value.report(
                        format!("write-back value for `{}` must be a string, boolean or number, found {}", property.value, value.type_name()),
                        "write the native value to set",
                    ),
                }
            }
            if properties.is_empty() {
                node.report(
                    format!(
                        "reverse mapping for stage \"{}\" sets no property",
                        stage_name.value
                    ),
                    "name the native properties and values to write, or remove the entry",
                );
                continue;
            }
            if let Some(stage) = stage {
                mapping.stages.push(StageWrite {
                    stage,
                    properties,
                    location: stage_name.location,
                });
            }
        }
    }
    {
        let fields = reverse.table("fields");
        for (field, node) in fields.entries() {
            if let Some(target) = node.as_str() {
                mapping
                    .fields
                    .push((field.value, target.value, field.location));
            }
        }
    }
    reverse.finish();
    mapping
}
