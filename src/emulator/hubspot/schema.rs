//! The Properties API (`/crm/v3/properties/{type}`) and the Pipelines API
//! (`/crm/v3/pipelines/deals`): what `discover` reads to compare live picklists with mappings.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::catalog::{default_pipeline, lifecycle_pipeline, properties, render_property};
use super::objects::admit_object;
use super::{HubspotShared, error_response, json_response};

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/properties/{object_type}", get(list_properties))
        .route(
            "/crm/v3/properties/{object_type}/{property}",
            get(read_property),
        )
        .route("/crm/v3/pipelines/{object_type}", get(list_pipelines))
        .route(
            "/crm/v3/pipelines/{object_type}/{pipeline}",
            get(read_pipeline),
        )
        .with_state(shared)
}

async fn list_properties(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = (|| -> Result<Response, Box<Response>> {
        let (budget, object) = admit_object(&shared, &headers, &object_type)?;
        let results: Vec<_> = properties(object, shared.profile)
            .iter()
            .enumerate()
            .map(|(order, definition)| render_property(definition, order))
            .collect();
        Ok(json_response(
            &shared,
            StatusCode::OK,
            &json!({ "results": results }),
            Some(budget),
        ))
    })()
    .unwrap_or_else(|response| *response);
    shared.record("GET /crm/v3/properties/{type}", response.status());
    response
}

async fn read_property(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, property)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = (|| -> Result<Response, Box<Response>> {
        let (budget, object) = admit_object(&shared, &headers, &object_type)?;
        let definitions = properties(object, shared.profile);
        let found = definitions
            .iter()
            .enumerate()
            .find(|(_, definition)| definition.name == property);
        Ok(match found {
            Some((order, definition)) => json_response(
                &shared,
                StatusCode::OK,
                &render_property(definition, order),
                Some(budget),
            ),
            None => error_response(
                &shared,
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                &format!("Unable to find property {property} for object type {object}"),
                None,
            ),
        })
    })()
    .unwrap_or_else(|response| *response);
    shared.record("GET /crm/v3/properties/{type}/{name}", response.status());
    response
}

async fn list_pipelines(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = (|| -> Result<Response, Box<Response>> {
        let (budget, object) = admit_object(&shared, &headers, &object_type)?;
        let results = match object {
            "deals" => vec![default_pipeline()],
            "contacts" => vec![lifecycle_pipeline(shared.profile)],
            _ => Vec::new(),
        };
        Ok(json_response(
            &shared,
            StatusCode::OK,
            &json!({ "results": results }),
            Some(budget),
        ))
    })()
    .unwrap_or_else(|response| *response);
    shared.record("GET /crm/v3/pipelines/{type}", response.status());
    response
}

async fn read_pipeline(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = (|| -> Result<Response, Box<Response>> {
        let (budget, object) = admit_object(&shared, &headers, &object_type)?;
        let found = match (object, pipeline.as_str()) {
            ("deals", "default") => Some(default_pipeline()),
            ("contacts", "contacts-lifecycle-pipeline") => Some(lifecycle_pipeline(shared.profile)),
            _ => None,
        };
        Ok(if let Some(found) = found {
            json_response(&shared, StatusCode::OK, &found, Some(budget))
        } else {
            error_response(
                &shared,
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                &format!("Unable to find pipeline {pipeline} for object type {object}"),
                None,
            )
        })
    })()
    .unwrap_or_else(|response| *response);
    shared.record("GET /crm/v3/pipelines/{type}/{id}", response.status());
    response
}
