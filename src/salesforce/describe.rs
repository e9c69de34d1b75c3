//! What an org says about an object (`GET …/sobjects/{object}/describe`): its fields with
//! their types, whether they can be filtered, written or used as external ids, and their
//! picklist values, active and inactive — for `discover`, for building queries only from
//! fields that exist, and for checking a value before it is written.

use std::collections::BTreeMap;

use http::Method;
use serde_json::Value;

use super::client::{Body, SalesforceClient, SalesforceError};

/// One picklist value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PicklistValue {
    pub value: String,
    pub label: String,
    pub active: bool,
}

/// One field of an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldInfo {
    pub name: String,
    pub label: String,
    /// `id`, `string`, `picklist`, `datetime`, `date`, `boolean`, `double`, `reference`, …
    pub kind: String,
    pub filterable: bool,
    pub updateable: bool,
    pub external_id: bool,
    /// Values outside the list are refused (restricted picklists).
    pub restricted_picklist: bool,
    pub picklist: Vec<PicklistValue>,
}

/// An object's fields, by name as the org spells it.
/// Serializable, so a read can keep it between runs (see the engine's describe cache).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectDescribe {
    pub name: String,
    pub fields: BTreeMap<String, FieldInfo>,
}

impl ObjectDescribe {
    /// The field called `name` (field names ignore case in Salesforce).
    pub fn field(&self, name: &str) -> Option<&FieldInfo> {
        self.fields.get(name).or_else(|| {
            self.fields
                .values()
                .find(|field| field.name.eq_ignore_ascii_case(name))
        })
    }

    /// Reads `object`'s describe.
    pub async fn load(client: &SalesforceClient, object: &str) -> Result<Self, SalesforceError> {
        let answer = client
            .send(
                Method::GET,
                &client.data_path(&format!("sobjects/{object}/describe")),
                &[],
                Body::None,
                "application/json",
                &[],
                object,
            )
            .await?;
        let body = answer.json().unwrap_or(Value::Null);
        Ok(Self::from_json(object, &body))
    }

    /// The describe answer as read.
    pub fn from_json(object: &str, body: &Value) -> Self {
        let text = |value: &Value, key: &str| value[key].as_str().unwrap_or_default().to_string();
        let flag = |value: &Value, key: &str| value[key].as_bool().unwrap_or(false);
        let fields = body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|field| FieldInfo {
                name: text(field, "name"),
                label: text(field, "label"),
                kind: text(field, "type"),
                filterable: flag(field, "filterable"),
                updateable: flag(field, "updateable"),
                external_id: flag(field, "externalId"),
                restricted_picklist: flag(field, "restrictedPicklist"),
                picklist: field["picklistValues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|value| PicklistValue {
                        value: text(value, "value"),
                        label: text(value, "label"),
                        active: flag(value, "active"),
                    })
                    .collect(),
            })
            .filter(|field| !field.name.is_empty())
            .map(|field| (field.name.clone(), field))
            .collect();
        Self {
            name: body["name"].as_str().unwrap_or(object).to_string(),
            fields,
        }
    }
}
