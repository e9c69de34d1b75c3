//! Single-object writes: `POST /crm/v3/objects/{type}` (201), `PATCH …/{id}` (200, with
//! `idProperty`), `DELETE …/{id}` (204, archives), and `POST …/merge` (200). They validate and
//! write through the batch endpoints' code in `writes`, so both follow the same rules; the
//! `partial` fault never touches them (they have no multi-status answer).
//!
//! Merging follows HubSpot's changelog "Updated merge functionality for contacts and companies"
//! (developers.hubspot.com/changelog): the result is a new record with a new id; the primary
//! record's values win and the other record's fill the gaps; both originals are archived, and
//! fetching either original id returns the merged record. The merged record's
//! `hs_merged_object_ids` lists both originals (and whatever they had absorbed before), and it
//! inherits both records' company associations, the primary's first.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{patch, post};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::objects::{Selection, admit_object};
use super::writes::{
    Faults, ItemError, WriteOutcome, api_time, archive_records, check_id_property, create_records,
    find_live, new_record, no_content, update_records, validate_properties, validation,
};
use super::{HubspotShared, error_response, json_response, parse_body};
use crate::emulator::properties::PropertyValue;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object_type}", post(create_one))
        .route(
            "/crm/v3/objects/{object_type}/{object_id}",
            patch(update_one).delete(archive_one),
        )
        .route("/crm/v3/objects/{object_type}/merge", post(merge))
        .with_state(shared)
}

/// HubSpot's 404 for an object id that resolves to no live record.
fn not_found(shared: &HubspotShared, object_id: &str) -> Response {
    error_response(
        shared,
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
        Some(("context", json!({ "id": [object_id] }))),
    )
}

/// The answer for a single write that touched one record, or failed on one input.
fn single_answer(
    shared: &HubspotShared,
    object: &'static str,
    outcome: &WriteOutcome,
    success: StatusCode,
    object_id: &str,
) -> Response {
    if let Some(ItemError::Conflict { existing_id, .. }) = outcome.item_errors.first() {
        return error_response(
            shared,
            StatusCode::CONFLICT,
            "CONFLICT",
            &format!("Contact already exists. Existing ID: {existing_id}"),
            None,
        );
    }
    let Some((index, _)) = outcome.written.first() else {
        return not_found(shared, object_id);
    };
    let objects = shared.read_objects();
    match objects.get(object).and_then(|records| records.get(*index)) {
        Some(record) => json_response(
            shared,
            success,
            &Selection::new(object, &[], shared.profile).view(record),
            None,
        ),
        None => not_found(shared, object_id),
    }
}

async fn create_one(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = create_one_inner(&shared, &object_type, &headers, &body);
    shared.record("POST /crm/v3/objects/{type}", response.status());
    response
}

fn create_one_inner(
    shared: &HubspotShared,
    object_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (_, object) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let input = match parse_body(shared, body) {
        Ok(input) => input,
        Err(response) => return *response,
    };
    let inputs = [input];
    if let Err(response) = validate_properties(shared, object, &inputs) {
        return *response;
    }
    let outcome = {
        let mut objects = shared.write_objects();
        let records = objects.entry(object).or_default();
        create_records(shared, object, records, &inputs, Faults::Never)
    };
    single_answer(shared, object, &outcome, StatusCode::CREATED, "")
}

async fn update_one(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, object_id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = update_one_inner(&shared, &object_type, &object_id, &pairs, &headers, &body);
    shared.record("PATCH /crm/v3/objects/{type}/{id}", response.status());
    response
}

fn update_one_inner(
    shared: &HubspotShared,
    object_type: &str,
    object_id: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (_, object) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let request = match parse_body(shared, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let id_property = pairs
        .iter()
        .find(|(key, _)| key == "idProperty")
        .map_or("hs_object_id", |(_, value)| value.as_str());
    if id_property != "hs_object_id"
        && let Err(response) = check_id_property(shared, object, id_property)
    {
        return *response;
    }
    let inputs = [json!({
        "id": object_id,
        "idProperty": id_property,
        "properties": request["properties"],
    })];
    if let Err(response) = validate_properties(shared, object, &inputs) {
        return *response;
    }
    let outcome = {
        let mut objects = shared.write_objects();
        let records = objects.entry(object).or_default();
        update_records(
            shared,
            object,
            records,
            &inputs,
            &[object_id.to_string()],
            Faults::Never,
        )
    };
    single_answer(shared, object, &outcome, StatusCode::OK, object_id)
}

async fn archive_one(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, object_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_object(&shared, &headers, &object_type) {
        Ok((_, object)) => {
            let mut objects = shared.write_objects();
            let records = objects.entry(object).or_default();
            archive_records(&shared, object, records, &[object_id]);
            no_content()
        }
        Err(response) => *response,
    };
    shared.record("DELETE /crm/v3/objects/{type}/{id}", response.status());
    response
}

async fn merge(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = merge_inner(&shared, &object_type, &headers, &body);
    shared.record("POST /crm/v3/objects/{type}/merge", response.status());
    response
}

/// An id field of the merge input, sent as a string or a number.
fn merge_id(request: &Value, field: &str) -> Option<String> {
    match &request[field] {
        Value::String(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

fn merge_inner(
    shared: &HubspotShared,
    object_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (_, object) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let request = match parse_body(shared, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let (Some(primary_id), Some(other_id)) = (
        merge_id(&request, "primaryObjectId"),
        merge_id(&request, "objectIdToMerge"),
    ) else {
        return validation(
            shared,
            "Invalid input JSON: primaryObjectId and objectIdToMerge are both required",
            None,
        );
    };
    let now = Timestamp::now();
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    let Some(primary) = find_live(records, "hs_object_id", &primary_id) else {
        return not_found(shared, &primary_id);
    };
    let Some(other) = find_live(records, "hs_object_id", &other_id) else {
        return not_found(shared, &other_id);
    };
    if primary == other {
        return validation(
            shared,
            &format!("Cannot merge object {primary_id} with itself"),
            None,
        );
    }
    let mut merged = new_record(records, now);
    let merged_id = merged.id.clone();
    // The other record's values, then the primary's over them.
    for source in [other, primary] {
        for (name, value) in &records[source].properties {
            if !matches!(name, "hs_object_id" | "hs_merged_object_ids") {
                merged.properties.insert(name, value.clone());
            }
        }
    }
    let mut absorbed: Vec<String> = Vec::new();
    for source in [primary, other] {
        let record = &records[source];
        absorbed.push(record.id.clone());
        if let Some(earlier) = record.properties.text("hs_merged_object_ids") {
            absorbed.extend(earlier.split(';').map(str::to_string));
        }
    }
    absorbed.retain(|id| !id.is_empty());
    absorbed.dedup();
    merged
        .properties
        .insert("hs_merged_object_ids", absorbed.join(";"));
    // The oldest creation date stays; the merge is the latest modification.
    let created = records[primary].created_at.min(records[other].created_at);
    let created_text = [primary, other]
        .into_iter()
        .find(|source| records[*source].created_at == created)
        .and_then(|source| records[source].properties.get("createdate").cloned())
        .unwrap_or_else(|| PropertyValue::from(api_time(created)));
    merged.created_at = created;
    merged.properties.insert("createdate", created_text);
    let modified = if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    };
    merged.properties.insert(modified, api_time(now));
    merged.updated_at = now;
    let originals = [records[primary].id.clone(), records[other].id.clone()];
    for original in [primary, other] {
        records[original].archived = true;
        records[original].updated_at = now;
    }
    records.push(merged);
    shared.count_written(object, 1);
    if object == "contacts" {
        shared
            .write_associations()
            .merge(&[originals[0].as_str(), originals[1].as_str()], &merged_id);
    }
    let merged = &records[records.len() - 1];
    json_response(
        shared,
        StatusCode::OK,
        &Selection::new(object, &[], shared.profile).view(merged),
        None,
    )
}
