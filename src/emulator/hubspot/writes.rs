//! Batch reads and writes: `POST /crm/v3/objects/{type}/batch/{read,create,update,upsert,archive}`,
//! and the write rules the single-object endpoints (`single`) share with them.
//!
//! Status codes are exactly HubSpot's (create 201; read, update, upsert 200; archive 204; 207 for
//! partial results), since the official SDKs accept nothing else. Writes validate like HubSpot:
//! an unknown property or an invalid option fails the whole batch with its VALIDATION_ERROR body;
//! `lifecyclestage` only moves forward unless it was cleared first; entering a stage stamps
//! `hs_v2_date_entered_<stage>`; every write advances the modification date.
//!
//! Under the `partial` fault about one input in twenty of a batch create, update or upsert fails
//! with a transient error (see [`transient_error`]) and the batch answers 207 with the others'
//! results. Batch archive has no multi-status answer in HubSpot's spec (204 or an error only), so
//! the fault leaves it alone.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::catalog::{self, PropertyDefinition};
use super::objects::{ObjectView, Selection, admit_object};
use super::{HubspotShared, error_response, json_response, parse_body};
use crate::emulator::data::{EmulatedRecord, HUBSPOT_DEAL_STAGES, OrgProfile, SeededRng};

/// Most inputs one batch takes.
pub const MAX_BATCH: usize = 100;
/// Share of batch-write inputs that fail under the `partial` fault, in percent.
const PARTIAL_FAILURE_PERCENT: u64 = 5;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object_type}/batch/{action}", post(batch))
        .with_state(shared)
}

pub(super) fn api_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub(super) fn validation(
    shared: &HubspotShared,
    message: &str,
    extra: Option<(&str, Value)>,
) -> Response {
    error_response(
        shared,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        message,
        extra,
    )
}

async fn batch(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, action)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = batch_inner(&shared, &object_type, &action, &pairs, &headers, &body);
    shared.record(
        &format!("POST /crm/v3/objects/{{type}}/batch/{action}"),
        response.status(),
    );
    response
}

fn batch_inner(
    shared: &HubspotShared,
    object_type: &str,
    action: &str,
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
    let inputs = request["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.len() > MAX_BATCH {
        return validation(
            shared,
            &format!(
                "The maximum number of inputs supported in a batch is {MAX_BATCH}. Please reduce the number of items and try again"
            ),
            None,
        );
    }
    let started = Timestamp::now();
    match action {
        "read" => read(shared, object, &request, &inputs, pairs, started),
        "create" => create(shared, object, &inputs, started),
        "update" => update(shared, object, &inputs, started),
        "upsert" => upsert(shared, object, &inputs, started),
        "archive" => archive(shared, object, &inputs),
        other => error_response(
            shared,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unknown batch action {other}"),
            None,
        ),
    }
}

/// The ids of the inputs; a 400 when one appears twice.
pub(super) fn input_ids(
    shared: &HubspotShared,
    inputs: &[Value],
) -> Result<Vec<String>, Box<Response>> {
    let ids: Vec<String> = inputs
        .iter()
        .map(|input| match &input["id"] {
            Value::Number(number) => number.to_string(),
            other => other.as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let mut duplicates: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(index, id)| ids[..*index].contains(id))
        .map(|(_, id)| id)
        .collect();
    duplicates.dedup();
    if duplicates.is_empty() {
        return Ok(ids);
    }
    let listed: Vec<&str> = duplicates.iter().map(|id| id.as_str()).collect();
    Err(Box::new(validation(
        shared,
        &format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            listed.join(", ")
        ),
        Some(("context", json!({ "ids": listed }))),
    )))
}

/// The HubSpot object kind in error messages (`CONTACT`, `COMPANY`, `DEAL`).
fn kind_word(object: &str) -> &'static str {
    match object {
        "contacts" => "CONTACT",
        "companies" => "COMPANY",
        _ => "DEAL",
    }
}

pub(super) fn not_found_error(object: &str, ids: &[String]) -> Value {
    json!({
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", kind_word(object)),
        "context": { "ids": ids },
    })
}

/// The batch answer: `status`, results and times, plus errors when some inputs failed.
fn batch_response(
    shared: &HubspotShared,
    success: StatusCode,
    results: Vec<ObjectView<'_>>,
    errors: Vec<Value>,
    started: Timestamp,
) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct BatchAnswer<'a> {
        status: &'static str,
        results: Vec<ObjectView<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        num_errors: Option<usize>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Value>,
        started_at: String,
        completed_at: String,
    }
    let status = if errors.is_empty() {
        success
    } else {
        StatusCode::MULTI_STATUS
    };
    let answer = BatchAnswer {
        status: "COMPLETE",
        results,
        num_errors: (!errors.is_empty()).then_some(errors.len()),
        errors,
        started_at: api_time(started),
        completed_at: api_time(Timestamp::now()),
    };
    json_response(shared, status, &answer, None)
}

fn read(
    shared: &HubspotShared,
    object: &'static str,
    request: &Value,
    inputs: &[Value],
    pairs: &[(String, String)],
    started: Timestamp,
) -> Response {
    let ids = match input_ids(shared, inputs) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let archived = pairs
        .iter()
        .any(|(key, value)| key == "archived" && value.eq_ignore_ascii_case("true"));
    let id_property = request["idProperty"].as_str().unwrap_or("hs_object_id");
    let requested: Vec<String> = request["properties"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let selection = Selection::new(object, &requested, shared.profile);
    let objects = shared.read_objects();
    let records = objects.get(object).map(Vec::as_slice).unwrap_or_default();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for id in &ids {
        match find(records, id_property, id).filter(|index| records[*index].archived == archived) {
            Some(index) => results.push(selection.view(&records[index])),
            None => missing.push(id.clone()),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![not_found_error(object, &missing)]
    };
    batch_response(shared, StatusCode::OK, results, errors, started)
}

/// The position of the record whose `id_property` is `value` (emails ignore case).
fn find(records: &[EmulatedRecord], id_property: &str, value: &str) -> Option<usize> {
    if id_property == "hs_object_id" {
        return records.iter().position(|record| record.id == value);
    }
    records.iter().position(|record| {
        record
            .properties
            .text(id_property)
            .is_some_and(|stored| stored.trim().eq_ignore_ascii_case(value.trim()))
    })
}

/// The position of the live record whose `id_property` is `value`. An object id a merge
/// absorbed resolves to the record it was merged into, as HubSpot's do.
pub(super) fn find_live(
    records: &[EmulatedRecord],
    id_property: &str,
    value: &str,
) -> Option<usize> {
    let live = |record: &EmulatedRecord| !record.archived;
    let matches = |record: &EmulatedRecord| {
        if id_property == "hs_object_id" {
            record.id == value
        } else {
            record
                .properties
                .text(id_property)
                .is_some_and(|stored| stored.trim().eq_ignore_ascii_case(value.trim()))
        }
    };
    // Records are created with rising numeric ids, so an id is found by bisection; should
    // that order ever not hold, the scan below still finds it.
    let bisected = (id_property == "hs_object_id")
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .and_then(|wanted| {
            records
                .binary_search_by_key(&wanted, |record| record.id.parse::<u64>().unwrap_or(0))
                .ok()
        })
        .filter(|position| records[*position].id == value);
    let found = match bisected {
        Some(position) => live(&records[position]).then_some(position),
        None => records
            .iter()
            .position(|record| live(record) && matches(record)),
    };
    found.or_else(|| {
        (id_property == "hs_object_id").then_some(())?;
        records.iter().position(|record| {
            live(record)
                && record
                    .properties
                    .text("hs_merged_object_ids")
                    .is_some_and(|merged| merged.split(';').any(|id| id.trim() == value))
        })
    })
}

/// A written value as HubSpot stores it: text, with null meaning "clear".
fn written_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `properties` of one input (none when absent).
pub(super) fn input_properties(input: &Value) -> &serde_json::Map<String, Value> {
    static NONE: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    input["properties"].as_object().unwrap_or(&NONE)
}

/// Checks every property of every input against the portal's definitions. The first problems
/// fail the whole batch, in HubSpot's "Property values were not valid" body.
pub(super) fn validate_properties(
    shared: &HubspotShared,
    object: &str,
    inputs: &[Value],
) -> Result<(), Box<Response>> {
    let definitions = catalog::properties(object, shared.profile);
    let mut problems: Vec<(String, String, &'static str)> = Vec::new();
    for input in inputs {
        let properties = input_properties(input);
        for (name, value) in properties {
            let text = written_text(value);
            match definitions
                .iter()
                .find(|definition| definition.name == name)
            {
                None => problems.push((
                    name.clone(),
                    format!("Property \"{name}\" does not exist"),
                    "PROPERTY_DOESNT_EXIST",
                )),
                Some(definition) => {
                    if let Some((message, error)) = invalid_value(definition, &text) {
                        problems.push((name.clone(), message, error));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let inner: Vec<Value> = problems
        .iter()
        .map(|(name, message, error)| {
            json!({"isValid": false, "message": message, "error": error, "name": name, "localizedErrorMessage": message, "portalId": super::oauth::HUB_ID})
        })
        .collect();
    let errors: Vec<Value> = problems
        .iter()
        .map(|(name, message, error)| json!({"message": message, "code": error, "context": {"propertyName": [name]}}))
        .collect();
    Err(Box::new(validation(
        shared,
        &format!("Property values were not valid: {}", Value::Array(inner)),
        Some(("errors", Value::Array(errors))),
    )))
}

/// Why `value` is not acceptable for `definition`, if it is not: HubSpot's message and error
/// code. Empty clears and is fine. Owner ids must be integers; numbers must parse; date-times
/// take epoch milliseconds or ISO 8601 up to milliseconds (a bare date is refused);
/// enumerations take one of their options.
fn invalid_value(definition: &PropertyDefinition, value: &str) -> Option<(String, &'static str)> {
    if value.is_empty() {
        return None;
    }
    if definition.name == "hubspot_owner_id" {
        return value.parse::<u64>().is_err().then(|| {
            (
                format!("{value} was not a valid integer (for owner ID)."),
                "INVALID_INTEGER",
            )
        });
    }
    match definition.kind {
        "number" => {
            return value
                .parse::<f64>()
                .map_or(true, |number| !number.is_finite())
                .then(|| (format!("{value} was not a valid number."), "INVALID_FLOAT"));
        }
        "datetime" => {
            return (!valid_datetime(value))
                .then(|| (format!("{value} was not a valid long."), "INVALID_LONG"));
        }
        "enumeration" => {}
        _ => return None,
    }
    let allowed: Vec<&str> = match definition.name {
        "dealstage" => HUBSPOT_DEAL_STAGES.iter().map(|(id, _, _)| *id).collect(),
        "pipeline" => vec!["default"],
        "hs_merged_object_ids" => return None,
        _ => definition.options.iter().map(|(value, _)| *value).collect(),
    };
    if allowed.contains(&value) {
        None
    } else {
        Some((
            format!(
                "{value} was not one of the allowed options: [{}]",
                allowed.join(", ")
            ),
            "INVALID_OPTION",
        ))
    }
}

/// A date-time as HubSpot takes one: epoch milliseconds, or ISO 8601 with at most millisecond
/// precision.
fn valid_datetime(value: &str) -> bool {
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return value.parse::<i64>().is_ok();
    }
    let fraction_digits = value
        .split_once('.')
        .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    fraction_digits <= 3 && value.contains('T') && value.parse::<jiff::Timestamp>().is_ok()
}

/// Applies a write to a record: the values, the lifecycle rule, stage-entry stamps and the
/// modification date.
pub(super) fn apply(
    record: &mut EmulatedRecord,
    object: &str,
    properties: &serde_json::Map<String, Value>,
    now: Timestamp,
) {
    let stamp = api_time(now);
    for (name, value) in properties {
        let text = written_text(value);
        // Calculated properties are HubSpot's to set.
        if matches!(
            name.as_str(),
            "hs_object_id" | "createdate" | "lastmodifieddate" | "hs_lastmodifieddate"
        ) {
            continue;
        }
        if name == "lifecyclestage" && !text.is_empty() {
            let order = |stage: &str| {
                OrgProfile::Custom
                    .lifecycle_stages()
                    .iter()
                    .position(|s| *s == stage)
            };
            let current = record.properties.text("lifecyclestage").map(str::to_string);
            // Only forward: a lower stage is ignored unless the stage was cleared first.
            if let (Some(current), Some(new)) = (current.as_deref().and_then(order), order(&text))
                && new < current
            {
                continue;
            }
            if current.as_deref() != Some(text.as_str()) {
                record
                    .properties
                    .insert(format!("hs_v2_date_entered_{text}"), stamp.as_str());
            }
        }
        if text.is_empty() {
            record.properties.remove(name);
        } else {
            record.properties.insert(name, text);
        }
    }
    let modified = if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    };
    record.properties.insert(modified, stamp);
    record.updated_at = now;
}

/// What a write did, input by input.
#[derive(Debug, Default)]
pub(super) struct WriteOutcome {
    /// Positions of the records written, and whether each is new.
    pub(super) written: Vec<(usize, bool)>,
    /// Ids no live record has.
    pub(super) missing: Vec<String>,
    /// Errors of single inputs: duplicates and the `partial` fault's transient failures.
    pub(super) item_errors: Vec<ItemError>,
}

/// Why one input of a write failed.
#[derive(Debug)]
pub(super) enum ItemError {
    /// A contact with this email exists: its id, and the input's trace id.
    /// Another live contact has the email: its id, and the input's context key and value.
    Conflict {
        existing_id: String,
        key: &'static str,
        value: String,
    },
    /// The `partial` fault: the input's context key and value.
    Transient { key: &'static str, value: String },
}

impl ItemError {
    /// The error as a batch answer lists it (HubSpot's `StandardError`).
    pub(super) fn to_json(&self) -> Value {
        match self {
            ItemError::Conflict {
                existing_id,
                key,
                value,
            } => json!({
                "status": "error",
                "category": "CONFLICT",
                "message": format!("Contact already exists. Existing ID: {existing_id}"),
                "context": {*key: [value], "existingId": [existing_id]},
            }),
            ItemError::Transient { key, value } => transient_error(key, value),
        }
    }
}

impl WriteOutcome {
    /// Every failure, as the batch answer lists them.
    fn errors(&self, object: &str) -> Vec<Value> {
        let mut errors: Vec<Value> = self.item_errors.iter().map(ItemError::to_json).collect();
        if !self.missing.is_empty() {
            errors.push(not_found_error(object, &self.missing));
        }
        errors
    }
}

/// The error of an input the `partial` fault fails: HubSpot's 423 "LOCKED" condition, which its
/// error-handling guide (developers.hubspot.com/docs/api-reference/error-handling) describes as
/// a temporary lock when a large volume is synced too quickly, to be retried after at least two
/// seconds. The message is the one client code and write-ups quote for that condition; that
/// HubSpot reports it per input inside a 207 is this emulator's assumption, not a recording.
/// The fields are those the spec's `StandardError` requires.
fn transient_error(key: &str, value: &str) -> Value {
    json!({
        "status": "error",
        "category": "LOCKED",
        "message": "Attempting to sync large volume too quickly; system lock for ~2 seconds",
        "context": { key: [value] },
        "errors": [],
        "links": {},
    })
}

/// Whether the next input fails, under the `partial` fault: one in twenty, decided by the
/// shared sequence number so a run can be repeated.
fn fails_transiently(shared: &HubspotShared, faults: Faults) -> bool {
    faults == Faults::Inject
        && shared.settings.partial_failures
        && SeededRng::new(shared.next_sequence() ^ 0x7061_7274_6961_6c21)
            .percent(PARTIAL_FAILURE_PERCENT)
}

/// Whether a write may be hit by the `partial` fault (batches) or not (single-object writes,
/// which have no multi-status answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Faults {
    Inject,
    Never,
}

/// The `idProperty` of an input (`hs_object_id` when absent).
pub(super) fn input_id_property(input: &Value) -> &str {
    input["idProperty"].as_str().unwrap_or("hs_object_id")
}

/// Updates the live records `ids` name (one per input); already validated.
pub(super) fn update_records(
    shared: &HubspotShared,
    object: &str,
    records: &mut [EmulatedRecord],
    inputs: &[Value],
    ids: &[String],
    faults: Faults,
) -> WriteOutcome {
    let now = Timestamp::now();
    let mut outcome = WriteOutcome::default();
    for (input, id) in inputs.iter().zip(ids) {
        if fails_transiently(shared, faults) {
            outcome.item_errors.push(ItemError::Transient {
                key: "ids",
                value: id.clone(),
            });
            continue;
        }
        match find_live(records, input_id_property(input), id) {
            Some(index) => {
                let properties = input_properties(input);
                // A contact's email stays unique.
                let taken = properties
                    .get("email")
                    .and_then(Value::as_str)
                    .filter(|_| object == "contacts")
                    .and_then(|email| find_live(records, "email", email))
                    .filter(|holder| *holder != index);
                if let Some(holder) = taken {
                    outcome.item_errors.push(ItemError::Conflict {
                        existing_id: records[holder].id.clone(),
                        key: "ids",
                        value: id.clone(),
                    });
                    continue;
                }
                apply(&mut records[index], object, properties, now);
                outcome.written.push((index, false));
            }
            None => outcome.missing.push(id.clone()),
        }
    }
    shared.count_written(object, outcome.written.len());
    outcome
}

fn update(
    shared: &HubspotShared,
    object: &'static str,
    inputs: &[Value],
    started: Timestamp,
) -> Response {
    let ids = match input_ids(shared, inputs) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    for input in inputs {
        let id_property = input_id_property(input);
        if id_property != "hs_object_id"
            && let Err(response) = check_id_property(shared, object, id_property)
        {
            return *response;
        }
    }
    if let Err(response) = validate_properties(shared, object, inputs) {
        return *response;
    }
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    let outcome = update_records(shared, object, records, inputs, &ids, Faults::Inject);
    let selection = written_selection(object, inputs, shared.profile);
    let results = outcome
        .written
        .iter()
        .map(|(index, _)| selection.view(&records[*index]))
        .collect();
    batch_response(
        shared,
        StatusCode::OK,
        results,
        outcome.errors(object),
        started,
    )
}

/// What a batch write answers with: the properties the inputs wrote (as now stored), the id
/// property upserts matched on, and the ones every answer carries — as HubSpot's documented
/// batch answers show the written values.
fn written_selection(object: &str, inputs: &[Value], profile: OrgProfile) -> Selection {
    let mut names: Vec<String> = Vec::new();
    for input in inputs {
        let written = input["properties"].as_object().into_iter().flatten();
        let matched = input["idProperty"].as_str().map(str::to_string);
        for name in written.map(|(name, _)| name.clone()).chain(matched) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return Selection::new(object, &[], profile);
    }
    for default in super::objects::default_properties(object) {
        if !names.iter().any(|name| name == default) {
            names.push(default.to_string());
        }
    }
    Selection::new(object, &names, profile)
}

/// The next free record id (ids grow, like HubSpot's; records are kept in id order, so the
/// last holds the highest).
fn next_id(records: &[EmulatedRecord]) -> u64 {
    records
        .iter()
        .rev()
        .find_map(|record| record.id.parse::<u64>().ok())
        .unwrap_or(1000)
        + 1
}

pub(super) fn new_record(records: &[EmulatedRecord], now: Timestamp) -> EmulatedRecord {
    let id = next_id(records).to_string();
    let mut record = EmulatedRecord {
        id: id.clone(),
        created_at: now,
        updated_at: now,
        archived: false,
        properties: Default::default(),
    };
    record.properties.insert("hs_object_id", id);
    record.properties.insert("createdate", api_time(now));
    record
}

/// Creates a record per input; already validated. Contacts are unique by email.
pub(super) fn create_records(
    shared: &HubspotShared,
    object: &str,
    records: &mut Vec<EmulatedRecord>,
    inputs: &[Value],
    faults: Faults,
) -> WriteOutcome {
    let now = Timestamp::now();
    let mut outcome = WriteOutcome::default();
    for (position, input) in inputs.iter().enumerate() {
        let trace = input["objectWriteTraceId"]
            .as_str()
            .map_or_else(|| position.to_string(), str::to_string);
        if fails_transiently(shared, faults) {
            outcome.item_errors.push(ItemError::Transient {
                key: "objectWriteTraceId",
                value: trace,
            });
            continue;
        }
        let properties = input_properties(input);
        if object == "contacts"
            && let Some(email) = properties.get("email").and_then(Value::as_str)
            && let Some(existing) = find_live(records, "email", email)
        {
            outcome.item_errors.push(ItemError::Conflict {
                existing_id: records[existing].id.clone(),
                key: "objectWriteTraceId",
                value: trace,
            });
            continue;
        }
        let mut record = new_record(records, now);
        apply(&mut record, object, properties, now);
        records.push(record);
        outcome.written.push((records.len() - 1, true));
    }
    shared.count_written(object, outcome.written.len());
    outcome
}

fn create(
    shared: &HubspotShared,
    object: &'static str,
    inputs: &[Value],
    started: Timestamp,
) -> Response {
    if let Err(response) = validate_properties(shared, object, inputs) {
        return *response;
    }
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    let outcome = create_records(shared, object, records, inputs, Faults::Inject);
    let selection = written_selection(object, inputs, shared.profile);
    let results = outcome
        .written
        .iter()
        .map(|(index, _)| selection.view(&records[*index]))
        .collect();
    batch_response(
        shared,
        StatusCode::CREATED,
        results,
        outcome.errors(object),
        started,
    )
}

/// A 400 unless `id_property` is a unique-value property of `object`, the only kind updates and
/// upserts may find records by.
pub(super) fn check_id_property(
    shared: &HubspotShared,
    object: &str,
    id_property: &str,
) -> Result<(), Box<Response>> {
    let unique = catalog::properties(object, shared.profile)
        .iter()
        .any(|d| d.name == id_property && d.unique);
    if unique {
        return Ok(());
    }
    let type_id = super::OBJECT_TYPES
        .iter()
        .find(|(name, _)| *name == object)
        .map_or("0-1", |(_, id)| *id);
    Err(Box::new(validation(
        shared,
        &format!(
            "Unable to perform update/upsert by non-unique {type_id} property {id_property} in portal ID {}",
            super::oauth::HUB_ID
        ),
        None,
    )))
}

fn upsert(
    shared: &HubspotShared,
    object: &'static str,
    inputs: &[Value],
    started: Timestamp,
) -> Response {
    let ids = match input_ids(shared, inputs) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    for input in inputs {
        if let Err(response) = check_id_property(shared, object, input_id_property(input)) {
            return *response;
        }
    }
    if let Err(response) = validate_properties(shared, object, inputs) {
        return *response;
    }
    let now = Timestamp::now();
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    let mut outcome = WriteOutcome::default();
    for (input, id) in inputs.iter().zip(&ids) {
        if fails_transiently(shared, Faults::Inject) {
            outcome.item_errors.push(ItemError::Transient {
                key: "ids",
                value: id.clone(),
            });
            continue;
        }
        let id_property = input_id_property(input);
        let properties = input_properties(input);
        match find_live(records, id_property, id) {
            Some(index) => {
                apply(&mut records[index], object, properties, now);
                outcome.written.push((index, false));
            }
            None => {
                let mut record = new_record(records, now);
                record.properties.insert(id_property, id.as_str());
                apply(&mut record, object, properties, now);
                records.push(record);
                outcome.written.push((records.len() - 1, true));
            }
        }
    }
    shared.count_written(object, outcome.written.len());
    let selection = written_selection(object, inputs, shared.profile);
    #[derive(serde::Serialize)]
    struct Upserted<'a> {
        #[serde(flatten)]
        object: ObjectView<'a>,
        new: bool,
    }
    let results: Vec<Upserted<'_>> = outcome
        .written
        .iter()
        .map(|(index, new)| Upserted {
            object: selection.view(&records[*index]),
            new: *new,
        })
        .collect();
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct UpsertAnswer<'a> {
        status: &'static str,
        results: Vec<Upserted<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        num_errors: Option<usize>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Value>,
        started_at: String,
        completed_at: String,
    }
    let errors = outcome.errors(object);
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let answer = UpsertAnswer {
        status: "COMPLETE",
        results,
        num_errors: (!errors.is_empty()).then_some(errors.len()),
        errors,
        started_at: api_time(started),
        completed_at: api_time(Timestamp::now()),
    };
    json_response(shared, status, &answer, None)
}

/// Archives the live records with these object ids. Ids no live record has are passed over,
/// as archiving is idempotent.
pub(super) fn archive_records(
    shared: &HubspotShared,
    object: &str,
    records: &mut [EmulatedRecord],
    ids: &[String],
) {
    let mut archived = 0;
    let now = Timestamp::now();
    for id in ids {
        if let Some(index) = records
            .iter()
            .position(|record| !record.archived && record.id == *id)
        {
            // `archivedAt` is the time of archiving.
            records[index].archived = true;
            records[index].updated_at = now;
            archived += 1;
        }
    }
    shared.count_written(object, archived);
}

fn archive(shared: &HubspotShared, object: &'static str, inputs: &[Value]) -> Response {
    let ids = match input_ids(shared, inputs) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let mut objects = shared.write_objects();
    let records = objects.entry(object).or_default();
    archive_records(shared, object, records, &ids);
    no_content()
}

/// HubSpot's 204: no body at all.
pub(super) fn no_content() -> Response {
    use axum::response::IntoResponse;
    StatusCode::NO_CONTENT.into_response()
}
