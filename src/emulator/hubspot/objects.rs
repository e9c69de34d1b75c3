//! CRM v3 objects: list (`GET /crm/v3/objects/{type}`) and read one
//! (`GET /crm/v3/objects/{type}/{id}`), for contacts, companies and deals (by name or by type
//! id such as `0-1`), with a contact's companies under `associations=companies`; an id a merge
//! absorbed reads as the merged record. Also how every endpoint renders a record.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use super::associations;
use super::catalog;
use super::limits::Budget;
use super::writes::find_live;
use super::{Caller, HubspotShared, OBJECT_TYPES, admit, error_response, json_response};
use crate::emulator::data::{EmulatedRecord, OrgProfile};

/// Largest page the list endpoint returns.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 10;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object_type}", get(list))
        .route("/crm/v3/objects/{object_type}/{object_id}", get(read_one))
        .with_state(shared)
}

/// What every object and schema endpoint does first: authenticate, spend the general budget and
/// resolve the object type. `Err` is the answer to send instead.
pub(super) fn admit_object(
    shared: &HubspotShared,
    headers: &HeaderMap,
    object_type: &str,
) -> Result<((Budget, Caller), &'static str), Box<Response>> {
    let budget = admit(shared, headers)?;
    let object = object_name(object_type)
        .ok_or_else(|| Box::new(unknown_object_type(shared, object_type)))?;
    Ok((budget, object))
}

/// The object type name for a path segment (`contacts` or `0-1`).
pub(super) fn object_name(segment: &str) -> Option<&'static str> {
    OBJECT_TYPES
        .iter()
        .find(|(name, type_id)| *name == segment || *type_id == segment)
        .map(|(name, _)| *name)
}

/// Properties returned when a request names none.
pub(super) fn default_properties(object: &str) -> &'static [&'static str] {
    match object {
        "contacts" => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        "companies" => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
        _ => &[
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
    }
}

/// Query parameters, which clients send comma-separated or repeated.
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    properties: Vec<String>,
    archived: Option<String>,
    id_property: Option<String>,
    /// Object types whose associated ids to include.
    associations: Vec<String>,
}

/// The names of a comma-separated query value.
fn comma_separated(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

impl ListQuery {
    fn parse(pairs: Vec<(String, String)>) -> Self {
        let mut query = ListQuery {
            limit: None,
            after: None,
            properties: Vec::new(),
            archived: None,
            id_property: None,
            associations: Vec::new(),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => query.limit = Some(value),
                "after" => query.after = Some(value),
                "archived" => query.archived = Some(value),
                "idProperty" => query.id_property = Some(value),
                "properties" => query.properties.extend(comma_separated(&value)),
                "associations" => query.associations.extend(comma_separated(&value)),
                _ => {}
            }
        }
        query
    }

    /// Clients send `true`/`false`; Python's SDK sends `True`/`False`.
    fn archived(&self) -> Result<bool, String> {
        match self.archived.as_deref() {
            None => Ok(false),
            Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
            Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
            Some(other) => Err(format!(
                "Unable to parse archived value {other:?}: expected true or false"
            )),
        }
    }
}

/// Which properties a request shows, worked out once per request.
pub(super) struct Selection {
    /// Names in output order, and whether a record lacking the property still shows it (as
    /// null): defaults and defined properties do, unknown requested names do not.
    names: Vec<(String, bool)>,
    /// The property whose value is `updatedAt`.
    modified: &'static str,
    /// Prefix of the app link search results carry (`…/record/0-1/`), when wanted.
    record_url: Option<String>,
}

impl Selection {
    pub(super) fn new(object: &str, requested: &[String], profile: OrgProfile) -> Self {
        let modified = if object == "contacts" {
            "lastmodifieddate"
        } else {
            "hs_lastmodifieddate"
        };
        let mut names: Vec<(String, bool)> = if requested.is_empty() {
            default_properties(object)
                .iter()
                .map(|name| (name.to_string(), true))
                .collect()
        } else {
            let defined = catalog::properties(object, profile);
            requested
                .iter()
                .map(|name| (name.clone(), defined.iter().any(|d| d.name == name)))
                .collect()
        };
        // Every answer carries the object id and the timestamps.
        for always in ["hs_object_id", "createdate", modified] {
            if !names.iter().any(|(name, _)| name == always) {
                names.push((always.to_string(), false));
            }
        }
        names.sort();
        names.dedup_by(|a, b| a.0 == b.0);
        Self {
            names,
            modified,
            record_url: None,
        }
    }

    /// Adds the `url` of each record in HubSpot's app, as search results have it.
    pub(super) fn with_record_urls(mut self, object: &str) -> Self {
        let type_id = OBJECT_TYPES
            .iter()
            .find(|(name, _)| *name == object)
            .map_or("0-1", |(_, type_id)| *type_id);
        self.record_url = Some(format!(
            "https://app.hubspot.com/contacts/{}/record/{type_id}/",
            super::oauth::HUB_ID
        ));
        self
    }

    /// One record as the API shows it.
    pub(super) fn view<'a>(&'a self, record: &'a EmulatedRecord) -> ObjectView<'a> {
        ObjectView {
            record,
            selection: self,
            associations: None,
        }
    }
}

/// A record rendered straight into the response, without building a JSON tree.
pub(super) struct ObjectView<'a> {
    record: &'a EmulatedRecord,
    selection: &'a Selection,
    /// The v3 `associations` member, when asked for and there are some.
    associations: Option<Value>,
}

impl ObjectView<'_> {
    /// Adds a contact's companies when `requested` asks for them.
    fn with_associations(
        mut self,
        shared: &HubspotShared,
        object: &str,
        requested: &[String],
    ) -> Self {
        if object == "contacts" && associations::wants_companies(requested) {
            self.associations = associations::v3_companies(shared, &self.record.id);
        }
        self
    }
}

struct PropertiesView<'a>(&'a ObjectView<'a>);

impl Serialize for PropertiesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0.record;
        let mut map = serializer.serialize_map(None)?;
        for (name, shown_when_missing) in &self.0.selection.names {
            match record.properties.get(name) {
                Some(value) => map.serialize_entry(name, value)?,
                None if *shown_when_missing => map.serialize_entry(name, &Value::Null)?,
                None => {}
            }
        }
        map.end()
    }
}

/// The API's time format; the stored date properties already use it.
fn api_time(record: &EmulatedRecord, property: &str, fallback: jiff::Timestamp) -> String {
    match record.properties.text(property) {
        Some(text) => text.to_string(),
        None => fallback.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    }
}

impl Serialize for ObjectView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.record;
        let updated = api_time(record, self.selection.modified, record.updated_at);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &record.id)?;
        map.serialize_entry("properties", &PropertiesView(self))?;
        map.serialize_entry(
            "createdAt",
            &api_time(record, "createdate", record.created_at),
        )?;
        map.serialize_entry("updatedAt", &updated)?;
        map.serialize_entry("archived", &record.archived)?;
        if record.archived {
            // Archiving stamps the record's time, not its modification property.
            map.serialize_entry(
                "archivedAt",
                &record
                    .updated_at
                    .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string(),
            )?;
        }
        if let Some(associations) = &self.associations {
            map.serialize_entry("associations", associations)?;
        }
        if let Some(prefix) = &self.selection.record_url {
            map.serialize_entry("url", &format!("{prefix}{}", record.id))?;
        }
        map.end()
    }
}

/// A page of a list answer.
#[derive(serde::Serialize)]
struct ListPage<'a> {
    results: Vec<ObjectView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Value>,
}

async fn list(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let endpoint = "GET /crm/v3/objects/{type}";
    let response = list_inner(&shared, &object_type, pairs, &headers);
    shared.record(endpoint, response.status());
    response
}

fn list_inner(
    shared: &HubspotShared,
    object_type: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Response {
    let (budget, object) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let query = ListQuery::parse(pairs);
    // Larger pages are cut to the maximum rather than refused.
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_PAGE,
        Some(Ok(limit)) if limit >= 1 => limit.min(MAX_PAGE),
        Some(_) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "limit must be a positive number, got {:?}",
                    query.limit.as_deref().unwrap_or_default()
                ),
                None,
            );
        }
    };
    let archived = match query.archived() {
        Ok(archived) => archived,
        Err(message) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &message,
                None,
            );
        }
    };
    // The cursor is the id of the next record to return.
    let after: u64 = match query.after.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Invalid paging cursor {:?}",
                    query.after.as_deref().unwrap_or_default()
                ),
                None,
            );
        }
    };
    let objects = shared.read_objects();
    let records = objects.get(object).map(Vec::as_slice).unwrap_or_default();
    // Records are kept in id order, so the cursor is found by binary search.
    let start =
        records.partition_point(|record| record.id.parse::<u64>().is_ok_and(|id| id < after));
    let mut page = records[start..]
        .iter()
        .filter(|record| record.archived == archived);
    let selection = Selection::new(object, &query.properties, shared.profile);
    let results: Vec<ObjectView<'_>> = page
        .by_ref()
        .take(limit)
        .map(|record| {
            selection
                .view(record)
                .with_associations(shared, object, &query.associations)
        })
        .collect();
    let mut body = ListPage {
        results,
        paging: None,
    };
    if let Some(next) = page.next() {
        body.paging = Some(json!({
            "next": {
                "after": next.id,
                "link": format!("{}/crm/v3/objects/{object}?after={}", shared.base_url(), next.id),
            }
        }));
    }
    json_response(shared, StatusCode::OK, &body, Some(budget))
}

async fn read_one(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, object_id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let endpoint = "GET /crm/v3/objects/{type}/{id}";
    let response = read_one_inner(&shared, &object_type, &object_id, pairs, &headers);
    shared.record(endpoint, response.status());
    response
}

fn read_one_inner(
    shared: &HubspotShared,
    object_type: &str,
    object_id: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Response {
    let (budget, object) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let query = ListQuery::parse(pairs);
    let archived = match query.archived() {
        Ok(archived) => archived,
        Err(message) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &message,
                None,
            );
        }
    };
    let id_property = query.id_property.as_deref().unwrap_or("hs_object_id");
    let objects = shared.read_objects();
    let records = objects.get(object).map(Vec::as_slice).unwrap_or_default();
    let found = if archived {
        records.iter().find(|record| {
            record.archived
                && match id_property {
                    "hs_object_id" => record.id == object_id,
                    // Unique-value properties such as email match case-insensitively.
                    property => record
                        .properties
                        .text(property)
                        .is_some_and(|value| value.trim().eq_ignore_ascii_case(object_id.trim())),
                }
        })
    } else {
        // Live records also resolve ids a merge absorbed to the merged record.
        find_live(records, id_property, object_id).map(|index| &records[index])
    };
    match found {
        Some(record) => json_response(
            shared,
            StatusCode::OK,
            &Selection::new(object, &query.properties, shared.profile)
                .view(record)
                .with_associations(shared, object, &query.associations),
            Some(budget),
        ),
        None => error_response(
            shared,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
            Some(("context", json!({ "id": [object_id] }))),
        ),
    }
}

pub(super) fn unknown_object_type(shared: &HubspotShared, object_type: &str) -> Response {
    error_response(
        shared,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &format!("Unable to infer object type from: {object_type}"),
        None,
    )
}
