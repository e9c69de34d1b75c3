//! `crmsync discover`: the live picklists and pipelines of both CRMs against the mappings.
//!
//! For every configured object and every property a stage rule looks values up in, it lists
//! each value the CRM defines (HubSpot property options, or the deal pipelines' stages for
//! pipeline-backed properties; Salesforce picklist values, active or not) and each value the
//! records hold outside those definitions, with how many live records hold it and what the
//! mappings make of it: the stage (and the rule), "passes" (known, decides nothing), or
//! unmapped — and then what `on_unknown` does with such records. Unmapped values come first.
//! A value held by records but unmapped is what breaks syncs, so it makes the command fail.
//!
//! Counts are one call per value (HubSpot search totals; Salesforce `SELECT COUNT()`), so a
//! picklist of twenty values costs twenty calls, within either CRM's limits.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::hubspot::client::{HubspotClient, HubspotError};
use crate::hubspot::read::{HubspotReader, ReadError as HubspotReadError};
use crate::mapping::{Mapper, ObjectMapping, RuleAction, UnknownValuePolicy};
use crate::record::System;
use crate::salesforce::client::{SalesforceClient, SalesforceError};
use crate::salesforce::describe::ObjectDescribe;
use crate::salesforce::read::{ReadError as SalesforceReadError, SalesforceReader};
use crate::salesforce::soql::{Condition, Literal, Operator};
use crate::vocabulary::Vocabulary;

/// Records read per round when looking for values outside a property's definitions; each
/// round finds at least one new value, so the rounds end.
const SAMPLE: u64 = 200;
/// Values outside the definitions looked for per property, at most.
const MAX_UNDEFINED: usize = 100;

/// Why discovery could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    #[error(transparent)]
    HubspotConnect(#[from] crate::hubspot::connect::ConnectError),
    #[error(transparent)]
    SalesforceConnect(#[from] crate::salesforce::connect::ConnectError),
    #[error("reading HubSpot's {what}: {source}")]
    Hubspot {
        what: String,
        source: Box<HubspotReadError>,
    },
    #[error("reading Salesforce's {what}: {source}")]
    Salesforce {
        what: String,
        source: Box<SalesforceReadError>,
    },
    #[error(
        "{system} object {object:?} is configured but has no mapping — add [objects.{object}] to mappings/{system}.toml or remove it from [{system}] objects"
    )]
    Unmapped { system: System, object: String },
}

impl From<(String, HubspotError)> for DiscoverError {
    fn from((what, error): (String, HubspotError)) -> Self {
        DiscoverError::Hubspot {
            what,
            source: Box::new(HubspotReadError::Api(error)),
        }
    }
}

impl From<(String, SalesforceError)> for DiscoverError {
    fn from((what, error): (String, SalesforceError)) -> Self {
        DiscoverError::Salesforce {
            what,
            source: Box::new(SalesforceReadError::Api(error)),
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    pub properties: Vec<PropertyCoverage>,
}

/// One stage property of one object.
#[derive(Debug, Clone, Serialize)]
pub struct PropertyCoverage {
    pub system: System,
    pub object: String,
    pub property: String,
    pub label: Option<String>,
    /// Where the values come from: `options`, `pipelines` or `picklist`.
    pub defined_by: &'static str,
    /// Unmapped values first (most records first), then the rest in the CRM's order.
    pub values: Vec<ValueCoverage>,
    /// Live records without a value.
    pub empty: u64,
    /// A problem with the property itself (the CRM has no such property).
    pub problem: Option<String>,
}

/// One value of a stage property.
#[derive(Debug, Clone, Serialize)]
pub struct ValueCoverage {
    pub value: String,
    pub label: Option<String>,
    /// The deal pipeline a pipeline stage belongs to.
    pub pipeline: Option<String>,
    /// False for hidden options and inactive picklist values.
    pub active: bool,
    /// False for values records hold that the CRM does not define (any more).
    pub defined: bool,
    /// Live records holding it.
    pub records: u64,
    pub mapping: ValueMapping,
}

/// What the mappings make of a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ValueMapping {
    Stage {
        stage: String,
        rule: String,
    },
    /// Known, and decides nothing here (a later rule, or no stage).
    Passes {
        rule: String,
    },
    /// No rule knows it; `then` says what `on_unknown` does with its records.
    Unmapped {
        then: String,
    },
}

impl ValueCoverage {
    fn unmapped(&self) -> bool {
        matches!(self.mapping, ValueMapping::Unmapped { .. })
    }
}

impl Discovery {
    /// Values that records hold and no mapping rule knows: `(system, object, property, value, records)`.
    pub fn unmapped_in_data(&self) -> Vec<(System, &str, &str, &str, u64)> {
        self.properties
            .iter()
            .flat_map(|property| {
                property
                    .values
                    .iter()
                    .filter(|value| value.unmapped() && value.records > 0)
                    .map(|value| {
                        (
                            property.system,
                            property.object.as_str(),
                            property.property.as_str(),
                            value.value.as_str(),
                            value.records,
                        )
                    })
            })
            .collect()
    }

    /// The report `crmsync discover` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for property in &self.properties {
            let _ = writeln!(
                out,
                "{} {} {}{} — values from {}",
                property.system,
                property.object,
                property.property,
                property
                    .label
                    .as_ref()
                    .map(|label| format!(" ({label})"))
                    .unwrap_or_default(),
                property.defined_by
            );
            if let Some(problem) = &property.problem {
                let _ = writeln!(out, "  PROBLEM: {problem}");
            }
            let width = property
                .values
                .iter()
                .map(|value| value.value.chars().count())
                .max()
                .unwrap_or(5)
                .max(5);
            for value in &property.values {
                let mut notes = Vec::new();
                if let Some(label) = &value.label
                    && label != &value.value
                {
                    notes.push(format!("\"{label}\""));
                }
                if let Some(pipeline) = &value.pipeline {
                    notes.push(format!("pipeline \"{pipeline}\""));
                }
                if !value.active {
                    notes.push("inactive".to_string());
                }
                if !value.defined {
                    notes.push(format!("not defined in {}", property.system));
                }
                let meaning = match &value.mapping {
                    ValueMapping::Stage { stage, rule } => format!("→ {stage}  (rule \"{rule}\")"),
                    ValueMapping::Passes { rule } => {
                        format!("passes: decides nothing here (rule \"{rule}\")")
                    }
                    ValueMapping::Unmapped { then } => format!("UNMAPPED: {then}"),
                };
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>8}  {meaning}{}",
                    value.value,
                    value.records,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", notes.join(", "))
                    }
                );
            }
            let _ = writeln!(out, "  {:<width$}  {:>8}", "(empty)", property.empty);
            out.push('\n');
        }
        let unmapped = self.unmapped_in_data();
        if unmapped.is_empty() {
            let _ = writeln!(out, "Every value records hold is mapped.");
        } else {
            let _ = writeln!(
                out,
                "{} value(s) held by records are unmapped — add each to its rule's `map` (or `pass`) in the mapping files, then run crmsync check:",
                unmapped.len()
            );
            for (system, object, property, value, records) in unmapped {
                let _ = writeln!(
                    out,
                    "  {system} {object} {property} = \"{value}\" ({records} records)"
                );
            }
        }
        out
    }
}

/// Discovers every configured object's stage properties.
pub async fn discover(config: &Config) -> Result<Discovery, DiscoverError> {
    let mapper = crate::mapping::load_dir(&config.mappings_dir.value)?;
    let settings = crate::http::client::ClientSettings::default();
    let mut properties = Vec::new();
    if config.hubspot.enabled {
        let client = crate::hubspot::connect::connect(&config.hubspot, settings)?;
        for object in &config.hubspot.objects {
            let mapping = mapping_of(&mapper, System::Hubspot, &object.value)?;
            properties.extend(discover_hubspot(&client, &mapper, &object.value, mapping).await?);
        }
    }
    if config.salesforce.enabled {
        let client = crate::salesforce::connect::connect(&config.salesforce, settings)?;
        for object in &config.salesforce.objects {
            let mapping = mapping_of(&mapper, System::Salesforce, &object.value)?;
            properties.extend(discover_salesforce(&client, &mapper, &object.value, mapping).await?);
        }
    }
    Ok(Discovery { properties })
}

fn mapping_of<'m>(
    mapper: &'m Mapper,
    system: System,
    object: &str,
) -> Result<&'m ObjectMapping, DiscoverError> {
    mapper
        .object(system, object)
        .ok_or_else(|| DiscoverError::Unmapped {
            system,
            object: object.to_string(),
        })
}

/// The properties stage rules look values up in, in rule order.
fn looked_up(mapping: &ObjectMapping) -> Vec<String> {
    let mut seen = BTreeSet::new();
    mapping
        .rules
        .iter()
        .filter_map(|rule| match &rule.action {
            RuleAction::Lookup(lookup) => Some(lookup.property.clone()),
            RuleAction::Fixed { .. } => None,
        })
        .filter(|property| seen.insert(property.clone()))
        .collect()
}

/// What the mapping's rules make of `value` of `property`: the first rule that maps it, else
/// the first that passes it, else unmapped.
fn meaning(
    vocabulary: &Vocabulary,
    mapping: &ObjectMapping,
    property: &str,
    value: &str,
) -> ValueMapping {
    let mut passes = None;
    for rule in &mapping.rules {
        let RuleAction::Lookup(lookup) = &rule.action else {
            continue;
        };
        if lookup.property != property {
            continue;
        }
        let key = lookup.key_of(value);
        if let Some(stage) = lookup.map.get(key.as_ref()) {
            return ValueMapping::Stage {
                stage: vocabulary.id_of(*stage).to_string(),
                rule: rule.name.to_string(),
            };
        }
        if passes.is_none() && lookup.pass.contains(key.as_ref()) {
            passes = Some(ValueMapping::Passes {
                rule: rule.name.to_string(),
            });
        }
    }
    passes.unwrap_or_else(|| ValueMapping::Unmapped {
        then: match mapping.on_unknown {
            UnknownValuePolicy::Error => {
                "on_unknown = \"error\": a sync stops at such records".to_string()
            }
            UnknownValuePolicy::Quarantine => {
                "on_unknown = \"quarantine\": such records go to dead letters".to_string()
            }
            UnknownValuePolicy::KeepPrevious => {
                "on_unknown = \"keep_previous\": such records keep their person's stage".to_string()
            }
            UnknownValuePolicy::DefaultStage(stage) => format!(
                "on_unknown = {{ default = \"{}\" }}: such records get that stage",
                vocabulary.id_of(stage)
            ),
        },
    })
}

/// A value records hold that the CRM does not define (any more).
fn undefined(
    vocabulary: &Vocabulary,
    mapping: &ObjectMapping,
    property: &str,
    value: &str,
    records: u64,
) -> ValueCoverage {
    ValueCoverage {
        mapping: meaning(vocabulary, mapping, property, value),
        value: value.to_string(),
        label: None,
        pipeline: None,
        active: false,
        defined: false,
        records,
    }
}

/// Unmapped values first (most records first), the rest in the CRM's order.
fn ordered(mut values: Vec<ValueCoverage>) -> Vec<ValueCoverage> {
    values.sort_by_key(|value| {
        (
            !value.unmapped(),
            if value.unmapped() {
                u64::MAX - value.records
            } else {
                0
            },
        )
    });
    values
}

/// Live records of `object` whose `property` is `value` (one search).
async fn hubspot_count(
    reader: &HubspotReader<'_>,
    object: &str,
    property: &str,
    value: &str,
) -> Result<u64, HubspotReadError> {
    let filter = json!({"propertyName": property, "operator": "EQ", "value": value});
    let (total, _) = reader.search_sample(object, vec![filter], &[], 0).await?;
    Ok(total)
}

async fn discover_hubspot(
    client: &HubspotClient,
    mapper: &Mapper,
    object: &str,
    mapping: &ObjectMapping,
) -> Result<Vec<PropertyCoverage>, DiscoverError> {
    let vocabulary = mapper.vocabulary();
    let reader = HubspotReader::new(client);
    let schema = crate::hubspot::schema::properties(client, object)
        .await
        .map_err(|error| (format!("{object} properties"), error))?;
    let mut pipelines = None;
    let mut found = Vec::new();
    for property in looked_up(mapping) {
        let search_error = |source| DiscoverError::Hubspot {
            what: format!("{object} counts by {property}"),
            source: Box::new(source),
        };
        let Some(info) = schema.iter().find(|info| info.name == property) else {
            found.push(PropertyCoverage {
                system: System::Hubspot,
                object: object.to_string(),
                property: property.clone(),
                label: None,
                defined_by: "options",
                values: Vec::new(),
                empty: 0,
                problem: Some(format!(
                    "the portal has no {object} property {property:?}: the rule reading it never matches — fix the property name in mappings/hubspot.toml"
                )),
            });
            continue;
        };
        // (value, label, pipeline, active)
        let mut defined: Vec<(String, String, Option<String>, bool)> = Vec::new();
        // Pipeline stages are defined by the pipelines API, not by property options.
        let pipeline_backed =
            info.external_options || property == "dealstage" || property == "hs_pipeline_stage";
        let defined_by = if pipeline_backed {
            if pipelines.is_none() {
                pipelines = Some(
                    crate::hubspot::schema::pipelines(client, object)
                        .await
                        .map_err(|error| (format!("{object} pipelines"), error))?,
                );
            }
            for pipeline in pipelines.iter().flatten() {
                for stage in &pipeline.stages {
                    defined.push((
                        stage.id.clone(),
                        stage.label.clone(),
                        Some(pipeline.label.clone()),
                        true,
                    ));
                }
            }
            "pipelines"
        } else {
            for option in &info.options {
                defined.push((
                    option.value.clone(),
                    option.label.clone(),
                    None,
                    !option.hidden,
                ));
            }
            "options"
        };
        let mut values = Vec::new();
        for (value, label, pipeline, active) in defined.iter().cloned() {
            let records = hubspot_count(&reader, object, &property, &value)
                .await
                .map_err(search_error)?;
            values.push(ValueCoverage {
                mapping: meaning(vocabulary, mapping, &property, &value),
                value,
                label: Some(label),
                pipeline,
                active,
                defined: true,
                records,
            });
        }
        // Values records hold that are not (or no longer) options. HubSpot compares
        // enumeration values exactly and other text in lowercase.
        let exact = info.kind == "enumeration";
        let excluded = |value: &String| {
            if exact {
                value.clone()
            } else {
                value.to_lowercase()
            }
        };
        let mut known: Vec<String> = defined.iter().map(|(value, ..)| value.clone()).collect();
        let mut problem = None;
        for _ in 0..MAX_UNDEFINED {
            let mut filters = vec![json!({"propertyName": property, "operator": "HAS_PROPERTY"})];
            if !known.is_empty() {
                let values: Vec<String> = known.iter().map(excluded).collect();
                filters.push(
                    json!({"propertyName": property, "operator": "NOT_IN", "values": values}),
                );
            }
            let (_, sample) = reader
                .search_sample(
                    object,
                    filters,
                    std::slice::from_ref(&property),
                    SAMPLE as usize,
                )
                .await
                .map_err(search_error)?;
            if sample.is_empty() {
                break;
            }
            let new: BTreeSet<String> = sample
                .iter()
                .filter_map(|record| {
                    record
                        .property_text(&property)
                        .map(|text| text.into_owned())
                })
                .filter(|value| !known.contains(value))
                .collect();
            if new.is_empty() {
                problem = Some(format!(
                    "HubSpot's search kept returning {object} records whose {property} is already counted; values outside the options may be missing from this list"
                ));
                break;
            }
            for value in new {
                let count = hubspot_count(&reader, object, &property, &value)
                    .await
                    .map_err(search_error)?;
                values.push(undefined(vocabulary, mapping, &property, &value, count));
                known.push(value);
            }
        }
        let (empty, _) = reader
            .search_sample(
                object,
                vec![json!({"propertyName": property, "operator": "NOT_HAS_PROPERTY"})],
                &[],
                0,
            )
            .await
            .map_err(search_error)?;
        found.push(PropertyCoverage {
            system: System::Hubspot,
            object: object.to_string(),
            property: property.clone(),
            label: Some(info.label.clone()),
            defined_by,
            values: ordered(values),
            empty,
            problem,
        });
    }
    Ok(found)
}

async fn discover_salesforce(
    client: &SalesforceClient,
    mapper: &Mapper,
    object: &str,
    mapping: &ObjectMapping,
) -> Result<Vec<PropertyCoverage>, DiscoverError> {
    let vocabulary = mapper.vocabulary();
    let reader = SalesforceReader::new(client);
    let describe = ObjectDescribe::load(client, object)
        .await
        .map_err(|error| (format!("{object} describe"), error))?;
    let mut found = Vec::new();
    for property in looked_up(mapping) {
        let query_error = |source| DiscoverError::Salesforce {
            what: format!("{object} counts by {property}"),
            source: Box::new(source),
        };
        let Some(info) = describe.field(&property) else {
            found.push(PropertyCoverage {
                system: System::Salesforce,
                object: object.to_string(),
                property: property.clone(),
                label: None,
                defined_by: "picklist",
                values: Vec::new(),
                empty: 0,
                problem: Some(format!(
                    "the org's {object} has no field {property:?}: the rule reading it never matches — fix the field name in mappings/salesforce.toml"
                )),
            });
            continue;
        };
        let name = info.name.clone();
        let mut values = Vec::new();
        for picklist in &info.picklist {
            let records = reader
                .count(
                    &describe,
                    &Condition::compare(&name, Operator::Eq, Literal::Text(picklist.value.clone())),
                )
                .await
                .map_err(query_error)?;
            values.push(ValueCoverage {
                mapping: meaning(vocabulary, mapping, &property, &picklist.value),
                value: picklist.value.clone(),
                label: Some(picklist.label.clone()),
                pipeline: None,
                active: picklist.active,
                defined: true,
                records,
            });
        }
        // Values records hold outside the picklist (unrestricted picklists, removed values).
        let mut known: Vec<String> = info
            .picklist
            .iter()
            .map(|value| value.value.clone())
            .collect();
        for _ in 0..MAX_UNDEFINED {
            let mut parts = vec![Condition::compare(&name, Operator::Ne, Literal::Null)];
            if !known.is_empty() {
                parts.push(Condition::is_not_in(
                    &name,
                    known.iter().cloned().map(Literal::Text).collect(),
                ));
            }
            let sample = reader
                .sample(
                    &describe,
                    std::slice::from_ref(&name),
                    &Condition::All(parts),
                    SAMPLE,
                )
                .await
                .map_err(query_error)?;
            let new: BTreeSet<String> = sample
                .iter()
                .filter_map(|record| record.property_text(&name).map(|text| text.into_owned()))
                .filter(|value| !known.contains(value))
                .collect();
            if new.is_empty() {
                break;
            }
            for value in new {
                let records = reader
                    .count(
                        &describe,
                        &Condition::compare(&name, Operator::Eq, Literal::Text(value.clone())),
                    )
                    .await
                    .map_err(query_error)?;
                values.push(undefined(vocabulary, mapping, &property, &value, records));
                known.push(value);
            }
        }
        let empty = reader
            .count(
                &describe,
                &Condition::compare(&name, Operator::Eq, Literal::Null),
            )
            .await
            .map_err(query_error)?;
        found.push(PropertyCoverage {
            system: System::Salesforce,
            object: object.to_string(),
            property: property.clone(),
            label: Some(info.label.clone()),
            defined_by: "picklist",
            values: ordered(values),
            empty,
            problem: None,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, records: u64, mapping: ValueMapping) -> ValueCoverage {
        ValueCoverage {
            value: name.into(),
            label: None,
            pipeline: None,
            active: true,
            defined: true,
            records,
            mapping,
        }
    }

    #[test]
    fn unmapped_values_come_first_most_records_first_and_the_rest_keep_their_order() {
        let unmapped = || ValueMapping::Unmapped { then: "x".into() };
        let stage = || ValueMapping::Stage {
            stage: "lead".into(),
            rule: "r".into(),
        };
        let values = ordered(vec![
            value("b", 5, stage()),
            value("u1", 1, unmapped()),
            value("a", 9, stage()),
            value("u9", 9, unmapped()),
        ]);
        let names: Vec<&str> = values.iter().map(|value| value.value.as_str()).collect();
        assert_eq!(names, ["u9", "u1", "b", "a"]);
    }
}
