//! The org's metadata endpoints: API versions (`/services/data`), the resources of a version,
//! `limits`, `sobjects` (describeGlobal), an object's basic info and its `describe`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::SalesforceShared;
use super::schema::{FieldDef, ObjectSchema};

/// Release names of the API versions served, oldest first.
const RELEASES: [(u32, &str); 37] = [
    (31, "Summer '14"),
    (32, "Winter '15"),
    (33, "Spring '15"),
    (34, "Summer '15"),
    (35, "Winter '16"),
    (36, "Spring '16"),
    (37, "Summer '16"),
    (38, "Winter '17"),
    (39, "Spring '17"),
    (40, "Summer '17"),
    (41, "Winter '18"),
    (42, "Spring '18"),
    (43, "Summer '18"),
    (44, "Winter '19"),
    (45, "Spring '19"),
    (46, "Summer '19"),
    (47, "Winter '20"),
    (48, "Spring '20"),
    (49, "Summer '20"),
    (50, "Winter '21"),
    (51, "Spring '21"),
    (52, "Summer '21"),
    (53, "Winter '22"),
    (54, "Spring '22"),
    (55, "Summer '22"),
    (56, "Winter '23"),
    (57, "Spring '23"),
    (58, "Summer '23"),
    (59, "Winter '24"),
    (60, "Spring '24"),
    (61, "Summer '24"),
    (62, "Winter '25"),
    (63, "Spring '25"),
    (64, "Summer '25"),
    (65, "Winter '26"),
    (66, "Spring '26"),
    (67, "Summer '26"),
];

pub fn routes(shared: Arc<SalesforceShared>) -> Router {
    Router::new()
        .route("/services/data", get(versions))
        .route("/services/data/", get(versions))
        .route("/services/data/{version}", get(resources))
        .route("/services/data/{version}/", get(resources))
        .route("/services/data/{version}/limits", get(limits))
        .route("/services/data/{version}/limits/", get(limits))
        .route("/services/data/{version}/sobjects", get(describe_global))
        .route("/services/data/{version}/sobjects/", get(describe_global))
        .route(
            "/services/data/{version}/sobjects/{object}/describe",
            get(describe_object),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/describe/",
            get(describe_object),
        )
        .with_state(shared)
}

/// `GET /services/data`: every version served (no authentication needed).
async fn versions(State(shared): State<Arc<SalesforceShared>>) -> Response {
    let newest = shared.newest_version();
    let list: Vec<Value> = RELEASES
        .iter()
        .filter(|(major, _)| *major <= newest)
        .map(|(major, label)| {
            json!({"label": label, "url": format!("/services/data/v{major}.0"), "version": format!("{major}.0")})
        })
        .collect();
    let response = shared.plain_json(StatusCode::OK, &list);
    shared.answered("GET /services/data", response)
}

/// Checks the version and the session; `Err` is the answer to send instead.
pub(super) fn admit_versioned(
    shared: &SalesforceShared,
    version: &str,
    headers: &HeaderMap,
) -> Result<u32, Box<Response>> {
    let major = shared
        .api_version(version)
        .ok_or_else(|| Box::new(shared.not_found()))?;
    shared.admit(headers)?;
    Ok(major)
}

async fn resources(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(major) => {
            let base = format!("/services/data/v{major}.0");
            let mut body = Map::new();
            for resource in [
                "tooling",
                "metadata",
                "search",
                "query",
                "queryAll",
                "sobjects",
                "limits",
                "composite",
                "jobs",
                "recent",
                "tabs",
            ] {
                body.insert(resource.to_string(), json!(format!("{base}/{resource}")));
            }
            body.insert(
                "identity".to_string(),
                json!(format!(
                    "{}/id/{}/{}",
                    shared.base_url(),
                    shared.credentials.org_id,
                    shared.credentials.user_id
                )),
            );
            shared.api_json(StatusCode::OK, &body)
        }
    };
    shared.answered("GET /services/data/{version}", response)
}

async fn limits(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(_) => {
            let max = shared.settings.daily_api_requests;
            let used = shared.api_usage();
            let jobs = shared.bulk_jobs_today();
            let entry = |max: u64, remaining: u64| json!({"Max": max, "Remaining": remaining});
            let body = json!({
                "ConcurrentAsyncGetReportInstances": entry(200, 200),
                "ConcurrentSyncReportRuns": entry(20, 20),
                "DailyApiRequests": entry(max, max.saturating_sub(used)),
                "DailyAsyncApexExecutions": entry(250_000, 250_000),
                "DailyBulkApiBatches": entry(15_000, 15_000),
                "DailyBulkV2QueryFileStorageMB": entry(976_562, 976_562),
                "DailyBulkV2QueryJobs": entry(10_000, 10_000_u64.saturating_sub(jobs)),
                "DailyGenericStreamingApiEvents": entry(10_000, 10_000),
                "DailyStreamingApiEvents": entry(10_000, 10_000),
                "DailyWorkflowEmails": entry(100_000, 100_000),
                "DataStorageMB": entry(1_024, 1_010),
                "FileStorageMB": entry(1_024, 1_024),
                "HourlyAsyncReportRuns": entry(1_200, 1_200),
                "HourlyDashboardRefreshes": entry(200, 200),
                "HourlySyncReportRuns": entry(500, 500),
                "MassEmail": entry(5_000, 5_000),
                "SingleEmail": entry(5_000, 5_000),
                "StreamingApiConcurrentClients": entry(20, 20),
            });
            shared.api_json(StatusCode::OK, &body)
        }
    };
    shared.answered("GET /services/data/{version}/limits", response)
}

/// The flags every object shares in describeGlobal and describe.
fn object_flags(object: &ObjectSchema, major: u32) -> Map<String, Value> {
    let base = format!("/services/data/v{major}.0/sobjects/{}", object.name);
    let writable = object.createable;
    let mut flags = Map::new();
    for (key, value) in [
        ("activateable", json!(false)),
        ("createable", json!(writable)),
        ("custom", json!(false)),
        ("customSetting", json!(false)),
        ("deepCloneable", json!(false)),
        ("deletable", json!(writable)),
        ("deprecatedAndHidden", json!(false)),
        ("feedEnabled", json!(writable)),
        ("hasSubtypes", json!(false)),
        ("isInterface", json!(false)),
        ("isSubtype", json!(false)),
        ("keyPrefix", json!(object.key_prefix)),
        ("label", json!(object.label)),
        ("labelPlural", json!(object.label_plural)),
        ("layoutable", json!(writable)),
        (
            "mergeable",
            json!(matches!(
                object.name.as_str(),
                "Lead" | "Contact" | "Account"
            )),
        ),
        ("mruEnabled", json!(writable)),
        ("name", json!(object.name)),
        ("queryable", json!(true)),
        ("replicateable", json!(true)),
        ("retrieveable", json!(true)),
        ("searchable", json!(writable)),
        ("triggerable", json!(writable)),
        ("undeletable", json!(writable)),
        ("updateable", json!(writable)),
        (
            "urls",
            json!({
                "rowTemplate": format!("{base}/{{ID}}"),
                "describe": format!("{base}/describe"),
                "sobject": base,
            }),
        ),
    ] {
        flags.insert(key.to_string(), value);
    }
    flags
}

async fn describe_global(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(major) => {
            let org = shared.read_org();
            let sobjects: Vec<Value> = org
                .catalog
                .objects()
                .iter()
                .map(|object| Value::Object(object_flags(object, major)))
                .collect();
            shared.api_json(
                StatusCode::OK,
                &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}),
            )
        }
    };
    shared.answered("GET /services/data/{version}/sobjects", response)
}

async fn describe_object(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(major) => {
            let org = shared.read_org();
            match org.catalog.object(&object) {
                None => shared.not_found(),
                Some(schema) => shared.api_json(StatusCode::OK, &describe(schema, major)),
            }
        }
    };
    shared.answered(
        "GET /services/data/{version}/sobjects/{object}/describe",
        response,
    )
}

/// An object's full describe: flags, fields, record types, child relationships.
pub fn describe(object: &ObjectSchema, major: u32) -> Value {
    let mut body = object_flags(object, major);
    let base = format!("/services/data/v{major}.0/sobjects/{}", object.name);
    body.insert("actionOverrides".into(), json!([]));
    body.insert("childRelationships".into(), json!([]));
    body.insert("compactLayoutable".into(), json!(object.createable));
    body.insert(
        "fields".into(),
        Value::Array(object.fields.iter().map(describe_field).collect()),
    );
    body.insert("namedLayoutInfos".into(), json!([]));
    body.insert("networkScopeFieldName".into(), Value::Null);
    body.insert(
        "recordTypeInfos".into(),
        json!([{
            "active": true, "available": true, "defaultRecordTypeMapping": true,
            "developerName": "Master", "master": true, "name": "Master",
            "recordTypeId": "012000000000000AAA",
            "urls": {"layout": format!("{base}/describe/layouts/012000000000000AAA")},
        }]),
    );
    body.insert("searchLayoutable".into(), json!(object.createable));
    body.insert("sobjectDescribeOption".into(), json!("FULL"));
    body.insert("supportedScopes".into(), json!([]));
    Value::Object(body)
}

fn describe_field(field: &FieldDef) -> Value {
    use super::schema::FieldType;
    let text = field.field_type.is_text();
    let byte_length = if text { field.length * 3 } else { 0 };
    let length = if text { field.length } else { 0 };
    let default_value = field
        .picklist
        .iter()
        .find(|entry| entry.default)
        .map(|entry| json!(entry.value))
        .unwrap_or(Value::Null);
    let picklist: Vec<Value> = field
        .picklist
        .iter()
        .map(|entry| {
            json!({
                "active": entry.active, "defaultValue": entry.default, "label": entry.label,
                "validFor": null, "value": entry.value,
            })
        })
        .collect();
    let entries: [(&str, Value); 55] = [
        (
            "aggregatable",
            json!(field.field_type != FieldType::Textarea),
        ),
        ("autoNumber", json!(false)),
        ("byteLength", json!(byte_length)),
        (
            "calculated",
            json!(field.name == "Name" && !field.createable),
        ),
        ("calculatedFormula", json!(null)),
        ("cascadeDelete", json!(false)),
        ("caseSensitive", json!(false)),
        ("compoundFieldName", json!(null)),
        ("controllerName", json!(null)),
        ("createable", json!(field.createable)),
        ("custom", json!(field.custom)),
        ("defaultValue", json!(default_value)),
        ("defaultValueFormula", json!(null)),
        ("defaultedOnCreate", json!(field.defaulted_on_create)),
        ("dependentPicklist", json!(false)),
        ("deprecatedAndHidden", json!(false)),
        ("digits", json!(field.digits)),
        ("displayLocationInDecimal", json!(false)),
        ("encrypted", json!(false)),
        ("externalId", json!(field.external_id)),
        ("extraTypeInfo", json!(null)),
        ("filterable", json!(field.filterable)),
        ("filteredLookupInfo", json!(null)),
        (
            "groupable",
            json!(
                field.filterable
                    && !field.field_type.is_number()
                    && field.field_type != FieldType::DateTime
            ),
        ),
        ("highScaleNumber", json!(false)),
        ("htmlFormatted", json!(false)),
        ("idLookup", json!(field.id_lookup)),
        ("inlineHelpText", json!(null)),
        ("label", json!(field.label)),
        ("length", json!(length)),
        ("mask", json!(null)),
        ("maskType", json!(null)),
        ("name", json!(field.name)),
        ("nameField", json!(field.name == "Name")),
        ("namePointing", json!(false)),
        ("nillable", json!(field.nillable)),
        ("permissionable", json!(field.nillable && field.createable)),
        ("picklistValues", json!(picklist)),
        ("polymorphicForeignKey", json!(false)),
        ("precision", json!(field.precision)),
        ("queryByDistance", json!(false)),
        ("referenceTargetField", json!(null)),
        ("referenceTo", json!(field.reference_to)),
        ("relationshipName", json!(field.relationship_name)),
        ("relationshipOrder", json!(null)),
        ("restrictedDelete", json!(false)),
        ("restrictedPicklist", json!(field.restricted_picklist)),
        ("scale", json!(field.scale)),
        ("searchPrefilterable", json!(false)),
        ("soapType", json!(field.field_type.soap_type())),
        ("sortable", json!(field.sortable)),
        ("type", json!(field.field_type.api_name())),
        ("unique", json!(field.unique)),
        ("updateable", json!(field.updateable)),
        ("writeRequiresMasterRead", json!(false)),
    ];
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
    )
}
