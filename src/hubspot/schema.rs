//! What a HubSpot portal defines: each object's properties with their types and enumeration
//! options (for `discover`, and so write-back never sends a value HubSpot would refuse), the
//! deal pipelines and their stages, and the owners.

use std::collections::BTreeMap;

use http::Method;
use serde_json::Value;

use super::client::{Budget, HubspotClient, HubspotError};

/// One property definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyInfo {
    pub name: String,
    pub label: String,
    /// `string`, `number`, `datetime`, `date`, `enumeration`, `bool`.
    pub kind: String,
    /// Enumeration options in display order (hidden ones included: HubSpot only hides them
    /// in its forms and still accepts them through the API).
    pub options: Vec<EnumOption>,
    /// The options live elsewhere (deal stages in pipelines, owners).
    pub external_options: bool,
    /// HubSpot computes it; writes are refused.
    pub calculated: bool,
}

/// One option of an enumeration property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumOption {
    pub value: String,
    pub label: String,
    pub hidden: bool,
}

/// A pipeline and its stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub id: String,
    pub label: String,
    pub stages: Vec<PipelineStage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStage {
    pub id: String,
    pub label: String,
    pub closed: bool,
    pub probability: Option<f64>,
}

/// A user who can own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// Whether a value may be written, and HubSpot's options when it may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCheck {
    Allowed,
    NotAnOption {
        allowed: Vec<String>,
    },
    /// Not a value of the property's type (`expected` says what is).
    WrongType {
        expected: &'static str,
    },
    UnknownProperty,
    Calculated,
}

/// A portal's schema for the objects read so far.
#[derive(Debug, Default, Clone)]
pub struct PortalSchema {
    /// Properties by object, then by name.
    pub properties: BTreeMap<String, BTreeMap<String, PropertyInfo>>,
    /// Pipelines by object (`deals`).
    pub pipelines: BTreeMap<String, Vec<Pipeline>>,
}

impl PortalSchema {
    /// Reads the properties (and, for deals, the pipelines) of `object`.
    pub async fn load(&mut self, client: &HubspotClient, object: &str) -> Result<(), HubspotError> {
        let properties = properties(client, object).await?;
        self.properties.insert(
            object.to_string(),
            properties
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
        );
        if object == "deals" {
            self.pipelines
                .insert(object.to_string(), pipelines(client, object).await?);
        }
        Ok(())
    }

    /// Whether `value` may be written to `property` of `object` (empty clears and always may).
    /// A deal stage must belong to the record's `pipeline` when that is known.
    pub fn check(
        &self,
        object: &str,
        property: &str,
        value: &str,
        pipeline: Option<&str>,
    ) -> ValueCheck {
        let Some(info) = self
            .properties
            .get(object)
            .and_then(|all| all.get(property))
        else {
            return ValueCheck::UnknownProperty;
        };
        if info.calculated {
            return ValueCheck::Calculated;
        }
        if value.is_empty() {
            return ValueCheck::Allowed;
        }
        match info.kind.as_str() {
            "number" if !value.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                return ValueCheck::WrongType {
                    expected: "a number",
                };
            }
            "datetime" if !is_hubspot_datetime(value) => {
                return ValueCheck::WrongType {
                    expected: "a date-time as epoch milliseconds or ISO 8601 with at most milliseconds (2024-05-01T12:00:00.000Z)",
                };
            }
            "date" if !is_hubspot_date(value) => {
                return ValueCheck::WrongType {
                    expected: "a date as 2024-05-01 or as epoch milliseconds at midnight UTC",
                };
            }
            _ => {}
        }
        // Owners are checked by HubSpot: they come and go between schema reads.
        if info.kind != "enumeration" || property == "hubspot_owner_id" {
            return ValueCheck::Allowed;
        }
        let allowed: Vec<String> = if info.external_options && property == "dealstage" {
            let pipelines = self
                .pipelines
                .get(object)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let of_record: Vec<&Pipeline> = pipelines
                .iter()
                .filter(|candidate| pipeline.is_some_and(|id| candidate.id == id))
                .collect();
            // An unknown pipeline is checked against every stage; HubSpot has the last word.
            let searched = if of_record.is_empty() {
                pipelines.iter().collect()
            } else {
                of_record
            };
            searched
                .into_iter()
                .flat_map(|pipeline| pipeline.stages.iter().map(|stage| stage.id.clone()))
                .collect()
        } else if info.external_options && property == "pipeline" {
            self.pipelines
                .get(object)
                .into_iter()
                .flatten()
                .map(|pipeline| pipeline.id.clone())
                .collect()
        } else {
            info.options
                .iter()
                .map(|option| option.value.clone())
                .collect()
        };
        if allowed.is_empty() || allowed.iter().any(|option| option == value) {
            ValueCheck::Allowed
        } else {
            ValueCheck::NotAnOption { allowed }
        }
    }
}

/// Epoch milliseconds, or an ISO 8601 instant with at most millisecond precision.
fn is_hubspot_datetime(value: &str) -> bool {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return value.parse::<i64>().is_ok();
    }
    let fraction_digits = value
        .split_once('.')
        .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    fraction_digits <= 3 && value.contains('T') && value.parse::<jiff::Timestamp>().is_ok()
}

/// A calendar date (`2024-05-01`), or epoch milliseconds at midnight UTC.
fn is_hubspot_date(value: &str) -> bool {
    let value = value.trim();
    match value.parse::<i64>() {
        Ok(millis) => millis % 86_400_000 == 0,
        Err(_) => value.len() == 10 && value.parse::<jiff::civil::Date>().is_ok(),
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

/// Every property `object` defines.
pub async fn properties(
    client: &HubspotClient,
    object: &str,
) -> Result<Vec<PropertyInfo>, HubspotError> {
    let answer = client
        .send(
            Budget::General,
            Method::GET,
            &format!("/crm/v3/properties/{object}"),
            &[],
            None,
            object,
        )
        .await?;
    Ok(answer.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|property| PropertyInfo {
            name: text(property, "name"),
            label: text(property, "label"),
            kind: text(property, "type"),
            options: options_in_display_order(&property["options"]),
            external_options: property["externalOptions"].as_bool().unwrap_or(false),
            calculated: property["calculated"].as_bool().unwrap_or(false)
                || property["modificationMetadata"]["readOnlyValue"].as_bool() == Some(true),
        })
        .collect())
}

/// A property's options sorted by `displayOrder` (options without one keep their place
/// after those with one; HubSpot sends -1 for "not set").
fn options_in_display_order(options: &Value) -> Vec<EnumOption> {
    let mut ordered: Vec<(i64, EnumOption)> = options
        .as_array()
        .into_iter()
        .flatten()
        .map(|option| {
            let order = option["displayOrder"]
                .as_i64()
                .filter(|order| *order >= 0)
                .unwrap_or(i64::MAX);
            let entry = EnumOption {
                value: text(option, "value"),
                label: text(option, "label"),
                hidden: option["hidden"].as_bool() == Some(true),
            };
            (order, entry)
        })
        .collect();
    // Stable: equal orders keep the order HubSpot sent.
    ordered.sort_by_key(|(order, _)| *order);
    ordered.into_iter().map(|(_, option)| option).collect()
}

/// The pipelines of `object` (`deals`) with their stages.
pub async fn pipelines(
    client: &HubspotClient,
    object: &str,
) -> Result<Vec<Pipeline>, HubspotError> {
    let answer = client
        .send(
            Budget::General,
            Method::GET,
            &format!("/crm/v3/pipelines/{object}"),
            &[],
            None,
            object,
        )
        .await?;
    Ok(answer.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pipeline| Pipeline {
            id: text(pipeline, "id"),
            label: text(pipeline, "label"),
            stages: pipeline["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|stage| PipelineStage {
                    id: text(stage, "id"),
                    label: text(stage, "label"),
                    closed: stage["metadata"]["isClosed"].as_str() == Some("true"),
                    probability: stage["metadata"]["probability"]
                        .as_str()
                        .and_then(|p| p.parse().ok()),
                })
                .collect(),
        })
        .collect())
}

/// Every owner of the portal (paged, 100 at a time).
pub async fn owners(client: &HubspotClient) -> Result<Vec<Owner>, HubspotError> {
    let mut owners = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100".to_string())];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let answer = client
            .send(
                Budget::General,
                Method::GET,
                "/crm/v3/owners",
                &query,
                None,
                "owners",
            )
            .await?;
        owners.extend(
            answer.body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|owner| Owner {
                    id: text(owner, "id"),
                    email: text(owner, "email"),
                    first_name: text(owner, "firstName"),
                    last_name: text(owner, "lastName"),
                }),
        );
        match answer.body["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(owners),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(id: &str) -> PipelineStage {
        PipelineStage {
            id: id.to_string(),
            label: id.to_string(),
            closed: false,
            probability: None,
        }
    }

    fn property(name: &str, kind: &str, external_options: bool) -> PropertyInfo {
        PropertyInfo {
            name: name.to_string(),
            label: name.to_string(),
            kind: kind.to_string(),
            options: Vec::new(),
            external_options,
            calculated: false,
        }
    }

    fn deals_schema() -> PortalSchema {
        let mut schema = PortalSchema::default();
        schema.properties.insert(
            "deals".to_string(),
            [
                property("dealstage", "enumeration", true),
                property("amount", "number", false),
                property("closedate", "datetime", false),
                property("renewal_date", "date", false),
            ]
            .into_iter()
            .map(|info| (info.name.clone(), info))
            .collect(),
        );
        schema.pipelines.insert(
            "deals".to_string(),
            vec![
                Pipeline {
                    id: "default".to_string(),
                    label: "Sales".to_string(),
                    stages: vec![stage("appointmentscheduled"), stage("closedwon")],
                },
                Pipeline {
                    id: "renewals".to_string(),
                    label: "Renewals".to_string(),
                    stages: vec![stage("renewal_due"), stage("renewed")],
                },
            ],
        );
        schema
    }

    #[test]
    fn a_deal_stage_must_belong_to_the_deals_pipeline() {
        let schema = deals_schema();
        assert_eq!(
            schema.check("deals", "dealstage", "renewed", Some("renewals")),
            ValueCheck::Allowed
        );
        let ValueCheck::NotAnOption { allowed } =
            schema.check("deals", "dealstage", "closedwon", Some("renewals"))
        else {
            panic!("a stage of another pipeline");
        };
        assert_eq!(allowed, ["renewal_due", "renewed"]);
        // Pipeline unknown: any pipeline's stage.
        assert_eq!(
            schema.check("deals", "dealstage", "closedwon", None),
            ValueCheck::Allowed
        );
    }

    #[test]
    fn numbers_and_dates_are_checked_before_sending() {
        let schema = deals_schema();
        for (property, value, allowed) in [
            ("amount", "1200.50", true),
            ("amount", "lots", false),
            ("amount", "NaN", false),
            ("closedate", "1714564800000", true),
            ("closedate", "2024-05-01T12:00:00Z", true),
            ("closedate", "2024-05-01T12:00:00.123Z", true),
            ("closedate", "2024-05-01T12:00:00.123456Z", false),
            ("closedate", "2024-05-01", false),
            ("closedate", "01/05/2024", false),
            ("renewal_date", "2024-05-01", true),
            ("renewal_date", "1714521600000", true),
            ("renewal_date", "1714564800000", false),
            ("renewal_date", "2024-05-01T00:00:00Z", false),
        ] {
            let check = schema.check("deals", property, value, None);
            assert_eq!(
                check == ValueCheck::Allowed,
                allowed,
                "{property}={value}: {check:?}"
            );
        }
    }

    #[test]
    fn options_follow_display_order_and_keep_hidden_ones() {
        let options = options_in_display_order(&json!([
            {"value": "customer", "label": "Customer", "displayOrder": 5, "hidden": false},
            {"value": "lead", "label": "Lead", "displayOrder": 1, "hidden": false},
            {"value": "legacy", "label": "Legacy", "displayOrder": -1, "hidden": true},
            {"value": "subscriber", "label": "Subscriber", "displayOrder": 0, "hidden": false},
        ]));
        let values: Vec<&str> = options.iter().map(|option| option.value.as_str()).collect();
        assert_eq!(values, ["subscriber", "lead", "customer", "legacy"]);
        assert!(options[3].hidden);
    }
}
