//! The org's lead statuses (`LeadStatus`) and opportunity stages (`OpportunityStage`): which
//! status converts a lead, which stages are closed or won, in the org's order — what the
//! mappings' stage rules and `discover` need beyond a picklist's values.

use http::Method;
use serde_json::Value;

use super::client::{Body, SalesforceClient, SalesforceError};
use super::describe::ObjectDescribe;
use super::soql::{Direction, SoqlError, SoqlQuery};

/// Why the metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Api(#[from] SalesforceError),
    #[error(transparent)]
    Query(#[from] SoqlError),
}

/// One lead status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadStatus {
    pub api_name: String,
    pub label: String,
    /// A lead converted gets this status (an org may have several).
    pub converted: bool,
    pub default: bool,
    pub sort_order: i64,
}

/// One opportunity stage.
#[derive(Debug, Clone, PartialEq)]
pub struct OpportunityStage {
    pub api_name: String,
    pub label: String,
    pub active: bool,
    pub closed: bool,
    pub won: bool,
    pub probability: Option<f64>,
    pub forecast_category: String,
    pub sort_order: i64,
}

/// The org's lead statuses in its order.
pub async fn lead_statuses(client: &SalesforceClient) -> Result<Vec<LeadStatus>, MetadataError> {
    let rows = rows(
        client,
        "LeadStatus",
        &[
            "ApiName",
            "MasterLabel",
            "IsConverted",
            "IsDefault",
            "SortOrder",
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| LeadStatus {
            api_name: text(row, "ApiName"),
            label: text(row, "MasterLabel"),
            converted: row["IsConverted"].as_bool().unwrap_or(false),
            default: row["IsDefault"].as_bool().unwrap_or(false),
            sort_order: row["SortOrder"].as_i64().unwrap_or(i64::MAX),
        })
        .collect())
}

/// The org's opportunity stages in its order.
pub async fn opportunity_stages(
    client: &SalesforceClient,
) -> Result<Vec<OpportunityStage>, MetadataError> {
    let rows = rows(
        client,
        "OpportunityStage",
        &[
            "ApiName",
            "MasterLabel",
            "IsActive",
            "IsClosed",
            "IsWon",
            "DefaultProbability",
            "ForecastCategoryName",
            "SortOrder",
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| OpportunityStage {
            api_name: text(row, "ApiName"),
            label: text(row, "MasterLabel"),
            active: row["IsActive"].as_bool().unwrap_or(false),
            closed: row["IsClosed"].as_bool().unwrap_or(false),
            won: row["IsWon"].as_bool().unwrap_or(false),
            probability: row["DefaultProbability"].as_f64(),
            forecast_category: text(row, "ForecastCategoryName"),
            sort_order: row["SortOrder"].as_i64().unwrap_or(i64::MAX),
        })
        .collect())
}

fn text(row: &Value, field: &str) -> String {
    row[field].as_str().unwrap_or_default().to_string()
}

/// Every row of a small metadata object, ordered by `SortOrder` (one page holds them).
async fn rows(
    client: &SalesforceClient,
    object: &str,
    fields: &[&str],
) -> Result<Vec<Value>, MetadataError> {
    let describe = ObjectDescribe::load(client, object).await?;
    let query = SoqlQuery::select(&describe, fields)?
        .order_by("SortOrder", Direction::Ascending)?
        .build();
    let answer = client
        .send(
            Method::GET,
            &client.data_path("query"),
            &[("q", query)],
            Body::None,
            "application/json",
            &[],
            object,
        )
        .await?;
    let page = answer.json().unwrap_or(Value::Null);
    Ok(page["records"].as_array().cloned().unwrap_or_default())
}
