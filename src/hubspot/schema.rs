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
    /// Enumeration options as (value, label), in display order.
    pub options: Vec<(String, String)>,
    /// The options live elsewhere (deal stages in pipelines, owners).
    pub external_options: bool,
    /// HubSpot computes it; writes are refused.
    pub calculated: bool,
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
    NotAnOption { allowed: Vec<String> },
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
    pub fn check(&self, object: &str, property: &str, value: &str) -> ValueCheck {
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
        if value.is_empty() || info.kind != "enumeration" || property == "hubspot_owner_id" {
            return ValueCheck::Allowed;
        }
        let allowed: Vec<String> = if info.external_options && property == "dealstage" {
            self.pipelines
                .get(object)
                .into_iter()
                .flatten()
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
                .map(|(value, _)| value.clone())
                .collect()
        };
        if allowed.is_empty() || allowed.iter().any(|option| option == value) {
            ValueCheck::Allowed
        } else {
            ValueCheck::NotAnOption { allowed }
        }
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
            options: property["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|option| option["hidden"].as_bool() != Some(true))
                .map(|option| (text(option, "value"), text(option, "label")))
                .collect(),
            external_options: property["externalOptions"].as_bool().unwrap_or(false),
            calculated: property["calculated"].as_bool().unwrap_or(false)
                || property["modificationMetadata"]["readOnlyValue"].as_bool() == Some(true),
        })
        .collect())
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
