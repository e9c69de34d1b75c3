//! Record reads and writes: single-record endpoints (`sobjects/{object}[/{id}]`, lookups and
//! upserts by external id), sObject Collections (create, update, upsert, delete, retrieve;
//! ≤ 200 records, `allOrNone`), and the replication feeds `updated` and `deleted`. Every write
//! is checked against the object's describe as the real API checks it, and answers with its
//! error codes; accepted writes bump `LastModifiedDate`/`SystemModstamp`.

// Handlers return early with the answer to send: `Result<Response, Response>` reads plainly,
// and a response is built once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::SalesforceShared;
use super::describe::admit_versioned;
use super::schema::{FieldType, ObjectSchema};
use super::seed::forecast_category;
use super::store::{OrgData, SfRecord, short_id, value_from_json};
use super::value::{FieldValue, format_datetime, parse_datetime};
use crate::emulator::data::{SALESFORCE_OPPORTUNITY_STAGES, SeededRng};

/// Records one sObject Collections request may carry.
pub const MAX_COLLECTION_RECORDS: usize = 200;
/// Share of collection items that fail with UNABLE_TO_LOCK_ROW under the `partial` fault.
const PARTIAL_FAILURE_PERCENT: u64 = 5;
/// How far back `updated` reaches.
const UPDATED_WINDOW_DAYS: i64 = 30;
/// How far back `deleted` reaches.
const DELETED_WINDOW_DAYS: i64 = 15;
/// Most ids `updated`/`deleted` return before refusing with EXCEEDED_ID_LIMIT.
const MAX_REPLICATION_IDS: usize = 600_000;

/// Recomputes the fields Salesforce derives: full names, and an opportunity's closed/won
/// flags, probability and forecast category from its stage.
pub fn derive_fields(
    schema: &ObjectSchema,
    record: &mut SfRecord,
    interner: Option<&mut super::store::Interner>,
) {
    let get = |record: &SfRecord, name: &str| {
        schema
            .field_index(name)
            .and_then(|index| record.value(index).as_text().map(str::to_string))
    };
    if let (Some(name), Some(_)) = (schema.field_index("Name"), schema.field_index("LastName")) {
        let full = [get(record, "FirstName"), get(record, "LastName")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        // Full names repeat across records: one shared copy each, where the org's interner is
        // at hand.
        record.set(
            name,
            match (full.is_empty(), interner) {
                (true, _) => FieldValue::Null,
                (false, Some(interner)) => FieldValue::Text(interner.intern(&full)),
                (false, None) => FieldValue::text(full),
            },
        );
    }
    if schema.name == "Opportunity"
        && let Some(stage) = get(record, "StageName")
        && let Some((_, closed, won, probability)) = SALESFORCE_OPPORTUNITY_STAGES
            .iter()
            .find(|(name, ..)| *name == stage)
    {
        let (category, category_name) = forecast_category(&stage);
        for (field, value) in [
            ("IsClosed", FieldValue::Bool(*closed)),
            ("IsWon", FieldValue::Bool(*won)),
            ("ForecastCategory", FieldValue::text(category)),
            ("ForecastCategoryName", FieldValue::text(category_name)),
        ] {
            if let Some(index) = schema.field_index(field) {
                record.set(index, value);
            }
        }
        if let Some(index) = schema.field_index("Probability")
            && record.value(index).is_null()
        {
            record.set(index, FieldValue::Number(f64::from(*probability)));
        }
    }
}

pub fn routes(shared: Arc<SalesforceShared>) -> Router {
    let base = "/services/data/{version}";
    Router::new()
        .route(
            &format!("{base}/sobjects/{{object}}"),
            get(object_info).post(create_one),
        )
        .route(&format!("{base}/sobjects/{{object}}/updated"), get(updated))
        .route(
            &format!("{base}/sobjects/{{object}}/updated/"),
            get(updated),
        )
        .route(&format!("{base}/sobjects/{{object}}/deleted"), get(deleted))
        .route(
            &format!("{base}/sobjects/{{object}}/deleted/"),
            get(deleted),
        )
        .route(
            &format!("{base}/sobjects/{{object}}/{{id}}"),
            get(read_one).patch(update_one).delete(delete_one),
        )
        .route(
            &format!("{base}/sobjects/{{object}}/{{field}}/{{value}}"),
            get(read_by_external_id).patch(upsert_one),
        )
        .route(
            &format!("{base}/composite/sobjects"),
            axum::routing::post(create_many)
                .patch(update_many)
                .delete(delete_many),
        )
        .route(
            &format!("{base}/composite/sobjects/{{object}}"),
            get(retrieve_many_get).post(retrieve_many_post),
        )
        .route(
            &format!("{base}/composite/sobjects/{{object}}/{{field}}"),
            axum::routing::patch(upsert_many),
        )
        .with_state(shared)
}

/// One record's failure: `{"statusCode", "message", "fields"}` in collections,
/// `{"message", "errorCode", "fields"}` at the top level.
#[derive(Debug, Clone)]
struct ItemError {
    code: &'static str,
    message: String,
    fields: Vec<String>,
}

impl ItemError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    fn on(mut self, field: &str) -> Self {
        self.fields.push(field.to_string());
        self
    }

    fn item_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }

    fn top_level_json(&self) -> Value {
        json!([{"message": self.message, "errorCode": self.code, "fields": self.fields}])
    }
}

/// A request-level failure (the whole call is refused with this status).
struct Refused {
    status: StatusCode,
    error: ItemError,
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        error: ItemError::new(code, message),
    }
}

impl SalesforceShared {
    fn refusal(&self, refused: Refused) -> Response {
        self.api_json(refused.status, &refused.error.top_level_json())
    }
}

/// What one item of a write does once accepted.
#[derive(Debug)]
enum Change {
    Create(SfRecord),
    Update {
        position: usize,
        values: Vec<(usize, FieldValue)>,
    },
    Delete {
        position: usize,
    },
}

/// The outcome of one item: its id, whether it created a record, or its error.
#[derive(Debug)]
struct ItemOutcome {
    id: Option<String>,
    created: bool,
    result: Result<Change, ItemError>,
}

/// The fields of a JSON body checked against the object's describe: unknown fields and values
/// of the wrong JSON type refuse the whole request, as Salesforce's deserializer does.
fn parse_fields(
    schema: &ObjectSchema,
    body: &Map<String, Value>,
) -> Result<Vec<(usize, FieldValue)>, Refused> {
    let mut fields = Vec::new();
    for (name, value) in body {
        if name == "attributes" {
            continue;
        }
        let Some(index) = schema.field_index(name) else {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {}", schema.name),
            ));
        };
        let field = &schema.fields[index];
        let parsed = if field.field_type.is_text() && value.as_str() == Some("") {
            // Salesforce stores empty text as null.
            Some(FieldValue::Null)
        } else {
            value_from_json(field.field_type, value)
        };
        let Some(parsed) = parsed else {
            let (kind, token) = match value {
                Value::String(_) => ("VALUE_STRING", value.to_string()),
                Value::Number(_) => ("VALUE_NUMBER_INT", value.to_string()),
                Value::Bool(_) => ("VALUE_TRUE", value.to_string()),
                _ => ("START_OBJECT", "{".to_string()),
            };
            let type_name = match field.field_type {
                FieldType::DateTime => "datetime",
                FieldType::Date => "date",
                FieldType::Boolean => "boolean",
                FieldType::Int => "int",
                FieldType::Double | FieldType::Currency | FieldType::Percent => "double",
                _ => "string",
            };
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {type_name} from {kind} value {token} or request may be missing a required field"
                ),
            ));
        };
        fields.push((index, parsed));
    }
    Ok(fields)
}

/// Checks values the way the save does: writable fields, picklists, lengths, emails, lookups.
fn check_values(
    schema: &ObjectSchema,
    data: &OrgData,
    fields: &[(usize, FieldValue)],
    creating: bool,
) -> Result<(), ItemError> {
    let not_writable: Vec<&str> = fields
        .iter()
        .map(|(index, _)| &schema.fields[*index])
        .filter(|field| {
            if creating {
                !field.createable
            } else {
                !field.updateable
            }
        })
        .map(|field| field.name.as_str())
        .collect();
    if !not_writable.is_empty() {
        let mut error = ItemError::new(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                not_writable.join(", ")
            ),
        );
        error.fields = not_writable.iter().map(|name| name.to_string()).collect();
        return Err(error);
    }
    for (index, value) in fields {
        let field = &schema.fields[*index];
        let Some(text) = value.as_text() else {
            if value.is_null()
                && field.field_type == FieldType::Picklist
                && field.restricted_picklist
                && !field.nillable
            {
                return Err(ItemError::new(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!("{}: bad value for restricted picklist field: ", field.label),
                )
                .on(&field.name));
            }
            continue;
        };
        if field.field_type == FieldType::Picklist && !field.allows(text) {
            return Err(ItemError::new(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!(
                    "{}: bad value for restricted picklist field: {text}",
                    field.label
                ),
            )
            .on(&field.name));
        }
        if field.length > 0 && text.chars().count() > field.length as usize {
            return Err(ItemError::new(
                "STRING_TOO_LONG",
                format!(
                    "{}: data value too large: {text} (max length={})",
                    field.label, field.length
                ),
            )
            .on(&field.name));
        }
        if field.field_type == FieldType::Email && !plausible_email(text) {
            return Err(ItemError::new(
                "INVALID_EMAIL_ADDRESS",
                format!("{}: invalid email address: {text}", field.label),
            )
            .on(&field.name));
        }
        if field.field_type == FieldType::Reference {
            let targets_ok = data
                .catalog
                .object_for_id(text)
                .is_some_and(|target| field.reference_to.contains(&target.name));
            if !targets_ok || (text.len() != 15 && text.len() != 18) {
                return Err(ItemError::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {text}", field.label),
                )
                .on(&field.name));
            }
            if data
                .find(text)
                .is_none_or(|(_, record)| record.is_deleted())
            {
                return Err(ItemError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id".to_string(),
                )
                .on(&field.name));
            }
        }
    }
    Ok(())
}

/// What Salesforce's email check lets through: one `@`, something on both sides, a dot after it.
fn plausible_email(text: &str) -> bool {
    let text = text.trim();
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Another live record of the object already holding `value` in unique field `index`.
fn unique_holder<'a>(
    table: &'a super::store::ObjectTable,
    index: usize,
    value: &str,
    except: Option<usize>,
) -> Option<&'a SfRecord> {
    let live_other = |position: &usize| {
        Some(*position) != except
            && table
                .records
                .get(*position)
                .is_some_and(|r| !r.is_deleted())
    };
    if let Some(positions) = table.with_external_id(index, value) {
        return positions
            .iter()
            .find(|position| live_other(position))
            .and_then(|position| table.records.get(*position));
    }
    table
        .records
        .iter()
        .enumerate()
        .find_map(|(position, record)| {
            (live_other(&position)
                && record
                    .value(index)
                    .as_text()
                    .is_some_and(|held| held.eq_ignore_ascii_case(value)))
            .then_some(record)
        })
}

/// Per-request context for planning writes: the batch's own claims on unique values.
struct Planner<'a> {
    shared: &'a SalesforceShared,
    data: &'a OrgData,
    object_index: usize,
    schema: &'a ObjectSchema,
    /// Unique values claimed by earlier items of this request (field index, lowercase value).
    claimed: HashSet<(usize, String)>,
    /// External-id values earlier upsert items of this request named (lowercase, trimmed).
    upsert_keys: HashSet<String>,
    now: Timestamp,
    user_id: String,
}

impl<'a> Planner<'a> {
    fn new(shared: &'a SalesforceShared, data: &'a OrgData, object_index: usize) -> Self {
        Self {
            shared,
            data,
            object_index,
            schema: &data.catalog.objects()[object_index],
            claimed: HashSet::new(),
            upsert_keys: HashSet::new(),
            now: Timestamp::now(),
            user_id: shared.credentials.user_id.clone(),
        }
    }

    fn table(&self) -> &super::store::ObjectTable {
        &self.data.tables[self.object_index]
    }

    /// A simulated row-lock conflict under the `partial` fault.
    fn lock_conflict(&self, id: &str) -> Option<ItemError> {
        if !self.shared.settings.partial_failures {
            return None;
        }
        let mut rng = SeededRng::new(self.shared.next_sequence() ^ 0x6c6f_636b);
        rng.percent(PARTIAL_FAILURE_PERCENT).then(|| {
            ItemError::new(
                "UNABLE_TO_LOCK_ROW",
                format!("unable to obtain exclusive access to this record or 1 records: {id}"),
            )
        })
    }

    fn check_unique(
        &mut self,
        fields: &[(usize, FieldValue)],
        except: Option<usize>,
    ) -> Result<(), ItemError> {
        for (index, value) in fields {
            let field = &self.schema.fields[*index];
            let Some(text) = value.as_text().filter(|_| field.unique) else {
                continue;
            };
            if let Some(holder) = unique_holder(self.table(), *index, text, except) {
                return Err(ItemError::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {}",
                        field.name,
                        short_id(holder.id())
                    ),
                ));
            }
            if !self.claimed.insert((*index, text.to_lowercase())) {
                return Err(ItemError::new(
                    "DUPLICATE_VALUE",
                    format!("Duplicate external id specified: {text}"),
                )
                .on(&field.name));
            }
        }
        Ok(())
    }

    fn plan_create(&mut self, fields: Vec<(usize, FieldValue)>) -> ItemOutcome {
        let failed = |error| ItemOutcome {
            id: None,
            created: false,
            result: Err(error),
        };
        if !self.schema.createable {
            return failed(ItemError::new(
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id".to_string(),
            ));
        }
        if fields.iter().any(|(index, _)| *index == ObjectSchema::ID) {
            return failed(
                ItemError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "cannot specify Id in an insert call",
                )
                .on("Id"),
            );
        }
        if let Err(error) = check_values(self.schema, self.data, &fields, true) {
            return failed(error);
        }
        let mut values: Vec<FieldValue> = self
            .schema
            .fields
            .iter()
            .map(|field| {
                if field.field_type == FieldType::Boolean {
                    FieldValue::Bool(false)
                } else {
                    FieldValue::Null
                }
            })
            .collect();
        for (index, value) in &fields {
            values[*index] = value.clone();
        }
        // Defaults the server fills in.
        for (index, field) in self.schema.fields.iter().enumerate() {
            if values[index].is_null()
                && let Some(default) = field.picklist.iter().find(|entry| entry.default)
                && field.defaulted_on_create
            {
                values[index] = FieldValue::text(default.value.as_str());
            }
        }
        let missing: Vec<&str> = self
            .schema
            .fields
            .iter()
            .enumerate()
            .filter(|(index, field)| field.required_on_create() && values[*index].is_null())
            .map(|(_, field)| field.name.as_str())
            .collect();
        if !missing.is_empty() {
            let mut error = ItemError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            );
            error.fields = missing.iter().map(|name| name.to_string()).collect();
            return failed(error);
        }
        if let Err(error) = self.check_unique(&fields, None) {
            return failed(error);
        }
        let id = self.shared.new_record_id(&self.schema.key_prefix);
        values[ObjectSchema::ID] = FieldValue::text(id.as_str());
        for (name, value) in [
            ("OwnerId", FieldValue::text(self.user_id.as_str())),
            ("CreatedById", FieldValue::text(self.user_id.as_str())),
            ("LastModifiedById", FieldValue::text(self.user_id.as_str())),
            ("CreatedDate", FieldValue::datetime(self.now)),
            ("LastModifiedDate", FieldValue::datetime(self.now)),
            ("SystemModstamp", FieldValue::datetime(self.now)),
        ] {
            if let Some(index) = self.schema.field_index(name)
                && values[index].is_null()
            {
                values[index] = value;
            }
        }
        let mut record = SfRecord::from_values(values);
        derive_fields(self.schema, &mut record, None);
        ItemOutcome {
            id: Some(id),
            created: true,
            result: Ok(Change::Create(record)),
        }
    }

    /// Finds a live record of this object by id, or the error an update or delete gets.
    fn target(&self, id: &str) -> Result<usize, ItemError> {
        let wrong_type = || {
            ItemError::new(
                "MALFORMED_ID",
                format!("{} ID: id value of incorrect type: {id}", self.schema.label),
            )
            .on("Id")
        };
        if !id.starts_with(self.schema.key_prefix.as_str()) || (id.len() != 15 && id.len() != 18) {
            return Err(wrong_type());
        }
        if !self.schema.createable {
            return Err(ItemError::new(
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id",
            ));
        }
        let position = self
            .table()
            .position(id)
            .ok_or_else(|| ItemError::new("ENTITY_IS_DELETED", "entity is deleted"))?;
        if self.table().records[position].is_deleted() {
            return Err(ItemError::new("ENTITY_IS_DELETED", "entity is deleted"));
        }
        Ok(position)
    }

    fn plan_update(&mut self, id: &str, fields: Vec<(usize, FieldValue)>) -> ItemOutcome {
        let id_out = Some(id.to_string());
        let failed = |error| ItemOutcome {
            id: Some(id.to_string()),
            created: false,
            result: Err(error),
        };
        let position = match self.target(id) {
            Ok(position) => position,
            Err(error) => return failed(error),
        };
        let fields: Vec<(usize, FieldValue)> = fields
            .into_iter()
            .filter(|(index, _)| *index != ObjectSchema::ID)
            .collect();
        let record = &self.table().records[position];
        if self.schema.name == "Lead"
            && self
                .schema
                .field_index("IsConverted")
                .is_some_and(|index| record.value(index).as_bool() == Some(true))
        {
            return failed(ItemError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
            ));
        }
        if let Err(error) = check_values(self.schema, self.data, &fields, false) {
            return failed(error);
        }
        for (index, value) in &fields {
            let field = &self.schema.fields[*index];
            if value.is_null() && !field.nillable && field.field_type != FieldType::Boolean {
                return failed(
                    ItemError::new(
                        "REQUIRED_FIELD_MISSING",
                        format!("Required fields are missing: [{}]", field.name),
                    )
                    .on(&field.name),
                );
            }
        }
        if let Err(error) = self.check_unique(&fields, Some(position)) {
            return failed(error);
        }
        if let Some(error) = self.lock_conflict(id) {
            return failed(error);
        }
        ItemOutcome {
            id: id_out,
            created: false,
            result: Ok(Change::Update {
                position,
                values: fields,
            }),
        }
    }

    fn plan_delete(&mut self, id: &str) -> ItemOutcome {
        match self.target(id) {
            Ok(position) => match self.lock_conflict(id) {
                Some(error) => ItemOutcome {
                    id: Some(id.to_string()),
                    created: false,
                    result: Err(error),
                },
                None => ItemOutcome {
                    id: Some(id.to_string()),
                    created: false,
                    result: Ok(Change::Delete { position }),
                },
            },
            Err(error) => ItemOutcome {
                id: Some(id.to_string()),
                created: false,
                result: Err(error),
            },
        }
    }

    /// Upsert by `external_field`: creates when no live record holds the value, updates the
    /// one that does, refuses when several do.
    fn plan_upsert(
        &mut self,
        external_field: usize,
        key: &str,
        mut fields: Vec<(usize, FieldValue)>,
    ) -> Result<ItemOutcome, Vec<String>> {
        let failed = |error| {
            Ok(ItemOutcome {
                id: None,
                created: false,
                result: Err(error),
            })
        };
        if !self.upsert_keys.insert(key.trim().to_lowercase()) {
            return failed(
                ItemError::new(
                    "DUPLICATE_VALUE",
                    format!("Duplicate external id specified: {key}"),
                )
                .on(&self.schema.fields[external_field].name),
            );
        }
        // The key named by the URL (or the item) is the one that counts.
        fields.retain(|(index, _)| *index != external_field);
        let holders = matching_positions(self.table(), external_field, key);
        match holders.as_slice() {
            // An upsert by record id only ever updates.
            [] if external_field == ObjectSchema::ID => failed(ItemError::new(
                "NOT_FOUND",
                "The requested resource does not exist",
            )),
            [] => {
                fields.push((external_field, FieldValue::text(key)));
                Ok(self.plan_create(fields))
            }
            [position] => {
                let id = self.table().records[*position].id().to_string();
                Ok(self.plan_update(&id, fields))
            }
            many => Err(many
                .iter()
                .map(|position| self.table().records[*position].id().to_string())
                .collect()),
        }
    }
}

/// Live records whose field `index` holds `key` (case-insensitively, as external ids match).
fn matching_positions(table: &super::store::ObjectTable, index: usize, key: &str) -> Vec<usize> {
    let live = |position: &usize| {
        table
            .records
            .get(*position)
            .is_some_and(|r| !r.is_deleted())
    };
    if index == ObjectSchema::ID {
        return table.position(key).filter(live).into_iter().collect();
    }
    if let Some(positions) = table.with_external_id(index, key) {
        return positions.iter().copied().filter(live).collect();
    }
    // Id-lookup fields (such as Email) that are not external ids: a scan, for reads.
    table
        .records
        .iter()
        .enumerate()
        .filter(|(_, record)| {
            !record.is_deleted()
                && record
                    .value(index)
                    .as_text()
                    .is_some_and(|held| held.trim().eq_ignore_ascii_case(key.trim()))
        })
        .map(|(position, _)| position)
        .collect()
}

/// Applies accepted changes (all, or none when `all_or_none` and one failed); returns the
/// per-item JSON results in request order.
fn commit(
    shared: &SalesforceShared,
    data: &mut OrgData,
    items: Vec<(usize, ItemOutcome)>,
    all_or_none: bool,
    with_created: bool,
) -> Vec<Value> {
    let roll_back = all_or_none && items.iter().any(|(_, outcome)| outcome.result.is_err());
    let now = Timestamp::now();
    let user = shared.credentials.user_id.clone();
    let mut written: HashMap<usize, usize> = HashMap::new();
    let mut results = Vec::with_capacity(items.len());
    for (object_index, outcome) in items {
        let mut result = match &outcome.result {
            Err(error) => json!({"success": false, "errors": [error.item_json()]}),
            Ok(_) if roll_back => json!({
                "success": false,
                "errors": [{
                    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    "fields": [],
                }],
            }),
            // Salesforce puts the id first.
            Ok(_) => json!({"id": outcome.id, "success": true, "errors": []}),
        };
        if with_created {
            result["created"] = json!(outcome.created && outcome.result.is_ok() && !roll_back);
        }
        if !roll_back && let Ok(change) = outcome.result {
            apply(data, object_index, change, now, &user);
            *written.entry(object_index).or_default() += 1;
        }
        results.push(result);
    }
    for (object_index, count) in written {
        let name = data.catalog.objects()[object_index].name.clone();
        shared.count_written(&name, count);
    }
    results
}

fn apply(data: &mut OrgData, object_index: usize, change: Change, now: Timestamp, user: &str) {
    let OrgData {
        catalog,
        tables,
        interner,
    } = data;
    let (Some(schema), Some(table)) = (
        catalog.objects().get(object_index),
        tables.get_mut(object_index),
    ) else {
        return;
    };
    let stamps = [
        ("LastModifiedDate", FieldValue::datetime(now)),
        ("SystemModstamp", FieldValue::datetime(now)),
        ("LastModifiedById", FieldValue::text(user)),
    ];
    match change {
        Change::Create(record) => {
            table.push(record);
        }
        Change::Update { position, values } => {
            // A new stage brings its default probability unless the write sets one.
            let stage = schema.field_index("StageName");
            let probability = schema.field_index("Probability");
            let stage_changes = values.iter().any(|(index, _)| Some(*index) == stage);
            let sets_probability = values.iter().any(|(index, _)| Some(*index) == probability);
            for (index, value) in values {
                table.set(position, index, value);
            }
            if let (true, false, Some(probability)) = (stage_changes, sets_probability, probability)
            {
                table.set(position, probability, FieldValue::Null);
            }
            for (name, value) in stamps {
                if let Some(index) = schema.field_index(name) {
                    table.set(position, index, value);
                }
            }
            if let Some(record) = table.records.get_mut(position) {
                derive_fields(schema, record, Some(interner));
            }
        }
        Change::Delete { position } => {
            if let Some(record) = table.records.get_mut(position) {
                record.deleted_at = Some(now);
            }
            if let Some(index) = schema.field_index("IsDeleted") {
                table.set(position, index, FieldValue::Bool(true));
            }
            if let Some(index) = schema.field_index("SystemModstamp") {
                table.set(position, index, FieldValue::datetime(now));
            }
        }
    }
}

fn parse_json(shared: &SalesforceShared, body: &[u8]) -> Result<Value, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Box::new(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The HTTP entity body is required, but this request has no entity body.",
        ))));
    }
    serde_json::from_slice(body).map_err(|error| {
        Box::new(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            format!(
                "{error} at [line:{}, column:{}]",
                error.line(),
                error.column()
            ),
        )))
    })
}

/// The object named in the path, or the 404 for one the org does not have.
fn object_of(
    shared: &SalesforceShared,
    data: &OrgData,
    name: &str,
) -> Result<usize, Box<Response>> {
    data.catalog
        .object_index(name)
        .ok_or_else(|| Box::new(shared.not_found()))
}

/// A record as `GET sobjects/{object}/{id}` renders it: attributes, then the fields asked for
/// (all when `fields` is `None`).
fn record_json(
    schema: &ObjectSchema,
    record: &SfRecord,
    major: u32,
    fields: Option<&[usize]>,
) -> Value {
    let mut body = Map::new();
    body.insert(
        "attributes".into(),
        json!({
            "type": schema.name,
            "url": format!("/services/data/v{major}.0/sobjects/{}/{}", schema.name, record.id()),
        }),
    );
    let all: Vec<usize> = (0..schema.fields.len()).collect();
    for index in fields.unwrap_or(&all) {
        let field = &schema.fields[*index];
        body.insert(
            field.name.clone(),
            record.value(*index).to_json(field.field_type),
        );
    }
    Value::Object(body)
}

/// `fields=A,B` as field indices; `Err` names the first unknown field.
fn requested_fields(
    schema: &ObjectSchema,
    list: Option<&String>,
) -> Result<Option<Vec<usize>>, String> {
    let Some(list) = list.filter(|list| !list.trim().is_empty()) else {
        return Ok(None);
    };
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| schema.field_index(name).ok_or_else(|| name.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn unknown_column(schema: &ObjectSchema, name: &str) -> Refused {
    refused(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD",
        format!(
            "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            schema.name
        ),
    )
}

async fn object_info(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    shared.respond("GET /services/data/{version}/sobjects/{object}", || {
        let major = admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
        let data = shared.read_org();
        let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
        let schema = &data.catalog.objects()[index];
        let mut info = super::describe::describe(schema, major);
        if let Some(map) = info.as_object_mut() {
            for key in [
                "fields",
                "childRelationships",
                "recordTypeInfos",
                "actionOverrides",
                "namedLayoutInfos",
                "supportedScopes",
            ] {
                map.remove(key);
            }
        }
        Ok::<_, Response>(shared.api_json(
            StatusCode::OK,
            &json!({"objectDescribe": info, "recentItems": []}),
        ))
    })
}

async fn create_one(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.respond("POST /services/data/{version}/sobjects/{object}", || {
        admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
        let body = parse_json(&shared, &body).map_err(|response| *response)?;
        let mut data = shared.write_org();
        let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
        let map = record_body(&shared, &body)?;
        let map = &map;
        let fields = parse_fields(&data.catalog.objects()[index], map)
            .map_err(|refusal| shared.refusal(refusal))?;
        let outcome = Planner::new(&shared, &data, index).plan_create(fields);
        single_answer(
            &shared,
            &mut data,
            index,
            outcome,
            StatusCode::CREATED,
            false,
        )
    })
}

/// The fields of a single-record body, which must be a JSON object.
fn record_body(shared: &SalesforceShared, body: &Value) -> Result<Map<String, Value>, Response> {
    body.as_object().cloned().ok_or_else(|| {
        shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of SObject from a value that is not an object at [line:1, column:1]",
        ))
    })
}

/// Commits one item and answers as the single-record endpoints do: `success_status` with
/// `{"id","success","errors"}` (or no body for 204), the error array otherwise.
fn single_answer(
    shared: &SalesforceShared,
    data: &mut OrgData,
    object_index: usize,
    outcome: ItemOutcome,
    success_status: StatusCode,
    with_created: bool,
) -> Result<Response, Response> {
    if let Err(error) = &outcome.result {
        let status = if matches!(error.code, "ENTITY_IS_DELETED" | "NOT_FOUND") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        return Err(shared.api_json(status, &error.top_level_json()));
    }
    let id = outcome.id.clone();
    commit(
        shared,
        data,
        vec![(object_index, outcome)],
        true,
        with_created,
    );
    if success_status == StatusCode::NO_CONTENT {
        let mut response = shared.json_text(StatusCode::NO_CONTENT, String::new(), true);
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_TYPE);
        return Ok(response);
    }
    let mut body = json!({"id": id, "success": true, "errors": []});
    if with_created {
        body["created"] = json!(success_status == StatusCode::CREATED);
    }
    Ok(shared.api_json(success_status, &body))
}

async fn read_one(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond(
        "GET /services/data/{version}/sobjects/{object}/{id}",
        || {
            let major =
                admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let data = shared.read_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let schema = &data.catalog.objects()[index];
            let fields = requested_fields(schema, params.get("fields"))
                .map_err(|name| shared.refusal(unknown_column(schema, &name)))?;
            if !id.starts_with(schema.key_prefix.as_str()) || (id.len() != 15 && id.len() != 18) {
                return Err(shared.error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!(
                        "Provided external ID field does not exist or is not accessible: {id}"
                    ),
                    None,
                ));
            }
            match data.tables[index].get(&id) {
                None => Err(shared.not_found()),
                Some(record) if record.is_deleted() => Err(shared.error(
                    StatusCode::NOT_FOUND,
                    "ENTITY_IS_DELETED",
                    "entity is deleted",
                    Some(&[]),
                )),
                Some(record) => Ok(shared.api_json(
                    StatusCode::OK,
                    &record_json(schema, record, major, fields.as_deref()),
                )),
            }
        },
    )
}

async fn update_one(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.respond(
        "PATCH /services/data/{version}/sobjects/{object}/{id}",
        || {
            admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let body = parse_json(&shared, &body).map_err(|response| *response)?;
            let mut data = shared.write_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let schema = &data.catalog.objects()[index];
            if !id.starts_with(schema.key_prefix.as_str()) || (id.len() != 15 && id.len() != 18) {
                return Err(shared.error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!(
                        "Provided external ID field does not exist or is not accessible: {id}"
                    ),
                    None,
                ));
            }
            if data.tables[index].position(&id).is_none() {
                return Err(shared.not_found());
            }
            let map = record_body(&shared, &body)?;
            let fields = parse_fields(schema, &map).map_err(|refusal| shared.refusal(refusal))?;
            let outcome = Planner::new(&shared, &data, index).plan_update(&id, fields);
            single_answer(
                &shared,
                &mut data,
                index,
                outcome,
                StatusCode::NO_CONTENT,
                false,
            )
        },
    )
}

async fn delete_one(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    shared.respond(
        "DELETE /services/data/{version}/sobjects/{object}/{id}",
        || {
            admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let mut data = shared.write_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            if data.tables[index].position(&id).is_none() {
                return Err(shared.not_found());
            }
            let outcome = Planner::new(&shared, &data, index).plan_delete(&id);
            single_answer(
                &shared,
                &mut data,
                index,
                outcome,
                StatusCode::NO_CONTENT,
                false,
            )
        },
    )
}

/// The external-id (or id-lookup, for reads) field named in the path; `Err` is the 404.
fn external_field(
    shared: &SalesforceShared,
    schema: &ObjectSchema,
    name: &str,
    for_write: bool,
) -> Result<usize, Response> {
    schema
        .field_index(name)
        .filter(|index| {
            let field = &schema.fields[*index];
            *index == ObjectSchema::ID || field.external_id || (!for_write && field.id_lookup)
        })
        .ok_or_else(|| {
            shared.error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {name}"),
                None,
            )
        })
}

/// The 300 answer: the URLs of every record that matches an external id.
fn multiple_choices(
    shared: &SalesforceShared,
    schema: &ObjectSchema,
    ids: &[String],
    major: u32,
) -> Response {
    let urls: Vec<String> = ids
        .iter()
        .map(|id| format!("/services/data/v{major}.0/sobjects/{}/{id}", schema.name))
        .collect();
    shared.api_json(StatusCode::MULTIPLE_CHOICES, &urls)
}

async fn read_by_external_id(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, field, value)): Path<(String, String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond(
        "GET /services/data/{version}/sobjects/{object}/{field}/{value}",
        || {
            let major =
                admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let data = shared.read_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let schema = &data.catalog.objects()[index];
            let field_index = external_field(&shared, schema, &field, false)?;
            let fields = requested_fields(schema, params.get("fields"))
                .map_err(|name| shared.refusal(unknown_column(schema, &name)))?;
            let table = &data.tables[index];
            match matching_positions(table, field_index, &value).as_slice() {
                [] => Err(shared.not_found()),
                [position] => Ok(shared.api_json(
                    StatusCode::OK,
                    &record_json(schema, &table.records[*position], major, fields.as_deref()),
                )),
                many => {
                    let ids: Vec<String> = many
                        .iter()
                        .map(|position| table.records[*position].id().to_string())
                        .collect();
                    Ok(multiple_choices(&shared, schema, &ids, major))
                }
            }
        },
    )
}

async fn upsert_one(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, field, value)): Path<(String, String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.respond(
        "PATCH /services/data/{version}/sobjects/{object}/{field}/{value}",
        || {
            let major =
                admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let body = parse_json(&shared, &body).map_err(|response| *response)?;
            let mut data = shared.write_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let schema = &data.catalog.objects()[index];
            let field_index = external_field(&shared, schema, &field, true)?;
            let map = record_body(&shared, &body)?;
            let fields = parse_fields(schema, &map).map_err(|refusal| shared.refusal(refusal))?;
            let update_only = params
                .get("updateOnly")
                .is_some_and(|flag| flag.eq_ignore_ascii_case("true"));
            if update_only
                && matching_positions(&data.tables[index], field_index, &value).is_empty()
            {
                return Err(shared.not_found());
            }
            let planned =
                Planner::new(&shared, &data, index).plan_upsert(field_index, &value, fields);
            match planned {
                Err(ids) => {
                    let schema = data.catalog.objects()[index].clone();
                    Ok(multiple_choices(&shared, &schema, &ids, major))
                }
                Ok(outcome) => {
                    let status = match (outcome.created, major >= 46) {
                        (true, _) => StatusCode::CREATED,
                        (false, true) => StatusCode::OK,
                        (false, false) => StatusCode::NO_CONTENT,
                    };
                    single_answer(&shared, &mut data, index, outcome, status, true)
                }
            }
        },
    )
}

/// The `records` array of a collections request, after the request-level checks.
fn collection_records(
    shared: &SalesforceShared,
    body: &Value,
) -> Result<(Vec<Map<String, Value>>, bool), Response> {
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let records = body
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                "No records specified",
            ))
        })?;
    if records.len() > MAX_COLLECTION_RECORDS {
        return Err(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )));
    }
    let mut maps = Vec::with_capacity(records.len());
    for record in records {
        let Some(map) = record.as_object() else {
            return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of SObject from VALUE_STRING",
            )));
        };
        maps.push(map.clone());
    }
    Ok((maps, all_or_none))
}

fn record_type(map: &Map<String, Value>) -> Option<&str> {
    map.get("attributes")
        .and_then(|attributes| attributes.get("type"))
        .and_then(Value::as_str)
}

async fn create_many(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = write_many(&shared, &version, &headers, &body, WriteKind::Create);
    shared.answered("POST /services/data/{version}/composite/sobjects", response)
}

async fn update_many(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = write_many(&shared, &version, &headers, &body, WriteKind::Update);
    shared.answered(
        "PATCH /services/data/{version}/composite/sobjects",
        response,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Create,
    Update,
}

/// Collections create and update: records may be of several types (each needs
/// `attributes.type`); results come back in request order.
fn write_many(
    shared: &SalesforceShared,
    version: &str,
    headers: &HeaderMap,
    body: &[u8],
    kind: WriteKind,
) -> Response {
    (|| {
        admit_versioned(shared, version, headers).map_err(|response| *response)?;
        let body = parse_json(shared, body).map_err(|response| *response)?;
        let (records, all_or_none) = collection_records(shared, &body)?;
        let mut data = shared.write_org();
        // Each record is checked against its own type first: a request-level problem in any
        // record refuses the whole call.
        let mut typed = Vec::with_capacity(records.len());
        for map in &records {
            let Some(object) = record_type(map) else {
                return Err(shared.refusal(refused(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    "Must send a concrete entity type.",
                )));
            };
            let index = data.catalog.object_index(object).ok_or_else(|| {
                shared.refusal(refused(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."),
                ))
            })?;
            let fields = parse_fields(&data.catalog.objects()[index], map).map_err(|refusal| shared.refusal(refusal))?;
            // Field names are case-insensitive: jsforce, for one, sends `id`.
            let id = map
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("Id"))
                .and_then(|(_, id)| id.as_str())
                .map(str::to_string);
            typed.push((index, fields, id));
        }
        let mut planned: Vec<(usize, ItemOutcome)> = Vec::with_capacity(typed.len());
        {
            let mut planners: HashMap<usize, Planner<'_>> = HashMap::new();
            for (index, fields, id) in typed {
                let planner = planners
                    .entry(index)
                    .or_insert_with(|| Planner::new(shared, &data, index));
                let outcome = match (kind, id) {
                    (WriteKind::Create, _) => planner.plan_create(fields),
                    (WriteKind::Update, Some(id)) => planner.plan_update(&id, fields),
                    (WriteKind::Update, None) => ItemOutcome {
                        id: None,
                        created: false,
                        result: Err(ItemError::new(
                            "MISSING_ARGUMENT",
                            "Id not specified in an update call",
                        )),
                    },
                };
                planned.push((index, outcome));
            }
        }
        let results = commit(shared, &mut data, planned, all_or_none, false);
        Ok(shared.api_json(StatusCode::OK, &results))
    })()
    .unwrap_or_else(|response| response)
}

async fn upsert_many(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.respond(
        "PATCH /services/data/{version}/composite/sobjects/{object}/{field}",
        || {
            admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let body = parse_json(&shared, &body).map_err(|response| *response)?;
            let (records, all_or_none) = collection_records(&shared, &body)?;
            let mut data = shared.write_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let schema = &data.catalog.objects()[index];
            let field_index = external_field(&shared, schema, &field, true)?;
            let mut parsed = Vec::with_capacity(records.len());
            for map in &records {
                if record_type(map).is_some_and(|kind| !kind.eq_ignore_ascii_case(&schema.name)) {
                    return Err(shared.refusal(refused(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        format!(
                            "Only the {} sObject type is allowed in this upsert call",
                            schema.name
                        ),
                    )));
                }
                parsed.push(parse_fields(schema, map).map_err(|refusal| shared.refusal(refusal))?);
            }
            let mut planned = Vec::with_capacity(parsed.len());
            {
                let mut planner = Planner::new(&shared, &data, index);
                for fields in parsed {
                    let key = fields
                        .iter()
                        .find(|(index, _)| *index == field_index)
                        .and_then(|(_, value)| value.as_text().map(str::to_string));
                    let outcome = if fields.iter().any(|(index, _)| *index == ObjectSchema::ID)
                        && field_index != ObjectSchema::ID
                    {
                        ItemOutcome {
                            id: None,
                            created: false,
                            result: Err(ItemError::new(
                                "INVALID_FIELD",
                                "Id field should not be specified in the sobject data.",
                            )
                            .on("Id")),
                        }
                    } else if let Some(key) = key {
                        match planner.plan_upsert(field_index, &key, fields) {
                            Ok(outcome) => outcome,
                            Err(ids) => ItemOutcome {
                                id: None,
                                created: false,
                                result: Err(ItemError::new(
                                    "DUPLICATE_EXTERNAL_ID",
                                    format!(
                                        "{}: more than one record found for external id field: {}",
                                        schema.fields[field_index].name,
                                        ids.join(", ")
                                    ),
                                )
                                .on(&schema.fields[field_index].name)),
                            },
                        }
                    } else {
                        ItemOutcome {
                            id: None,
                            created: false,
                            result: Err(ItemError::new(
                                "MISSING_ARGUMENT",
                                format!("{} not specified", schema.fields[field_index].name),
                            )),
                        }
                    };
                    planned.push((index, outcome));
                }
            }
            let results = commit(&shared, &mut data, planned, all_or_none, true);
            Ok::<_, Response>(shared.api_json(StatusCode::OK, &results))
        },
    )
}

async fn delete_many(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond("DELETE /services/data/{version}/composite/sobjects", || {
        admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
        let ids: Vec<String> = params
            .get("ids")
            .map(|ids| {
                ids.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENT",
                "Ids not specified",
            )));
        }
        if ids.len() > MAX_COLLECTION_RECORDS {
            return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )));
        }
        let all_or_none = params
            .get("allOrNone")
            .is_some_and(|flag| flag.eq_ignore_ascii_case("true"));
        let mut data = shared.write_org();
        let mut planned = Vec::with_capacity(ids.len());
        {
            let mut planners: HashMap<usize, Planner<'_>> = HashMap::new();
            for id in &ids {
                let index = data
                    .catalog
                    .object_for_id(id)
                    .and_then(|schema| data.catalog.object_index(&schema.name));
                let outcome = match index {
                    Some(index) => planners
                        .entry(index)
                        .or_insert_with(|| Planner::new(&shared, &data, index))
                        .plan_delete(id),
                    None => ItemOutcome {
                        id: None,
                        created: false,
                        result: Err(ItemError::new("MALFORMED_ID", format!("malformed id {id}"))),
                    },
                };
                planned.push((index.unwrap_or(0), outcome));
            }
        }
        let results = commit(&shared, &mut data, planned, all_or_none, false);
        Ok::<_, Response>(shared.api_json(StatusCode::OK, &results))
    })
}

async fn retrieve_many_get(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let ids: Vec<String> = params
        .get("ids")
        .map(|ids| ids.split(',').map(str::trim).map(str::to_string).collect())
        .unwrap_or_default();
    let response = retrieve_many(
        &shared,
        &version,
        &object,
        &headers,
        ids,
        params.get("fields").cloned(),
    );
    shared.answered(
        "GET /services/data/{version}/composite/sobjects/{object}",
        response,
    )
}

async fn retrieve_many_post(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = match parse_json(&shared, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let list = |key: &str| -> Vec<String> {
        parsed
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let fields = list("fields");
    let response = retrieve_many(
        &shared,
        &version,
        &object,
        &headers,
        list("ids"),
        Some(fields.join(",")),
    );
    shared.answered(
        "POST /services/data/{version}/composite/sobjects/{object}",
        response,
    )
}

/// Records by id (null where none is found), with the fields asked for.
fn retrieve_many(
    shared: &SalesforceShared,
    version: &str,
    object: &str,
    headers: &HeaderMap,
    ids: Vec<String>,
    fields: Option<String>,
) -> Response {
    (|| {
        let major = admit_versioned(shared, version, headers).map_err(|response| *response)?;
        let data = shared.read_org();
        let index = object_of(shared, &data, object).map_err(|response| *response)?;
        let schema = &data.catalog.objects()[index];
        let Some(fields) = requested_fields(schema, fields.as_ref())
            .map_err(|name| shared.refusal(unknown_column(schema, &name)))?
        else {
            return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENT",
                "fields not specified",
            )));
        };
        if ids.len() > 2_000 {
            return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "too many ids",
            )));
        }
        let records: Vec<Value> = ids
            .iter()
            .map(|id| match data.tables[index].get(id) {
                Some(record) if !record.is_deleted() => {
                    record_json(schema, record, major, Some(&fields))
                }
                _ => Value::Null,
            })
            .collect();
        Ok::<_, Response>(shared.api_json(StatusCode::OK, &records))
    })()
    .unwrap_or_else(|response| response)
}

/// `start`/`end` of a replication call, seconds dropped as Salesforce drops them.
fn replication_window(
    shared: &SalesforceShared,
    params: &HashMap<String, String>,
    max_days: i64,
) -> Result<(Timestamp, Timestamp), Response> {
    let parse = |key: &str| {
        params
            .get(key)
            .and_then(|text| parse_datetime(text.trim()))
            .map(|at| {
                let seconds = at.as_second();
                Timestamp::from_second(seconds - seconds.rem_euclid(60)).unwrap_or(at)
            })
    };
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return Err(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "MISSING_ARGUMENT",
            "start and end must be given as ISO 8601 date-times, e.g. 2024-05-01T00:00:00+00:00",
        )));
    };
    if start >= end {
        return Err(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            "startDate must chronologically precede endDate",
        )));
    }
    if start < Timestamp::now() - SignedDuration::from_hours(24 * max_days) {
        return Err(shared.refusal(refused(
            StatusCode::BAD_REQUEST,
            "INVALID_REPLICATION_DATE",
            format!("startDate cannot be more than {max_days} days ago"),
        )));
    }
    Ok((start, end.min(Timestamp::now())))
}

async fn updated(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond(
        "GET /services/data/{version}/sobjects/{object}/updated",
        || {
            admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let data = shared.read_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let (start, end) = replication_window(&shared, &params, UPDATED_WINDOW_DAYS)?;
            let schema = &data.catalog.objects()[index];
            let modstamp = schema
                .field_index("SystemModstamp")
                .unwrap_or(ObjectSchema::ID);
            let ids: Vec<&str> = data.tables[index]
                .records
                .iter()
                .filter(|record| !record.is_deleted())
                .filter(|record| {
                    record
                        .value(modstamp)
                        .as_timestamp()
                        .is_some_and(|at| at >= start && at < end)
                })
                .map(SfRecord::id)
                .collect();
            if ids.len() > MAX_REPLICATION_IDS {
                return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "The number of ids returned exceeds the limit of 600,000; narrow the date range",
            )));
            }
            Ok::<_, Response>(shared.api_json(
                StatusCode::OK,
                &json!({"ids": ids, "latestDateCovered": format_datetime(end)}),
            ))
        },
    )
}

async fn deleted(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond(
        "GET /services/data/{version}/sobjects/{object}/deleted",
        || {
            admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
            let data = shared.read_org();
            let index = object_of(&shared, &data, &object).map_err(|response| *response)?;
            let (start, end) = replication_window(&shared, &params, DELETED_WINDOW_DAYS)?;
            let records: Vec<Value> = data.tables[index]
                .records
                .iter()
                .filter_map(|record| {
                    let at = record.deleted_at?;
                    (at >= start && at < end)
                        .then(|| json!({"id": record.id(), "deletedDate": format_datetime(at)}))
                })
                .collect();
            if records.len() > MAX_REPLICATION_IDS {
                return Err(shared.refusal(refused(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "The number of ids returned exceeds the limit of 600,000; narrow the date range",
            )));
            }
            // Nothing has been purged from the recycle bin of the emulated org.
            let earliest = Timestamp::now() - SignedDuration::from_hours(24 * DELETED_WINDOW_DAYS);
            Ok::<_, Response>(shared.api_json(
                StatusCode::OK,
                &json!({
                    "deletedRecords": records,
                    "earliestDateAvailable": format_datetime(earliest),
                    "latestDateCovered": format_datetime(end),
                }),
            ))
        },
    )
}
