//! Test controls that are not part of HubSpot's API, under `/__emulator/hubspot/`: a bulk
//! "touch" that gives many records one identical modification time, as HubSpot's own bulk
//! updates (imports, workflows) do in real portals, and "new-day", which makes the daily
//! allowance whole again as midnight does.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::HubspotShared;
use super::writes::api_time;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/__emulator/hubspot/touch", post(touch))
        .route("/__emulator/hubspot/new-day", post(new_day))
        .with_state(shared)
}

/// `{"object": "contacts", "count": 12000, "properties": {"jobtitle": "…"}}`: the first
/// `count` live records get the properties and all the same modification time (now).
async fn touch(State(shared): State<Arc<HubspotShared>>, Json(request): Json<Value>) -> Response {
    let object = request["object"].as_str().unwrap_or("contacts");
    let Some(object) = super::OBJECT_TYPES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| *name == object)
    else {
        return (StatusCode::NOT_FOUND, format!("no object {object}")).into_response();
    };
    let count = request["count"].as_u64().unwrap_or(0) as usize;
    let now = Timestamp::now();
    let stamp = api_time(now);
    let modified = if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    };
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    let mut touched = 0;
    for record in records
        .iter_mut()
        .filter(|record| !record.archived)
        .take(count)
    {
        if let Some(properties) = request["properties"].as_object() {
            for (name, value) in properties {
                record.properties.insert(name, value);
            }
        }
        record.properties.insert(modified, stamp.as_str());
        record.updated_at = now;
        touched += 1;
    }
    shared.count_written(object, touched);
    Json(json!({"touched": touched, "at": stamp})).into_response()
}

/// Midnight in the portal's time zone: the daily allowance starts over.
async fn new_day(State(shared): State<Arc<HubspotShared>>) -> Response {
    shared.start_new_day();
    StatusCode::NO_CONTENT.into_response()
}
