//! Bulk API 2.0 query jobs (`/services/data/vXX.X/jobs/query`): create a job from SOQL, poll
//! its state (`UploadComplete` → `InProgress` → `JobComplete`, one step per poll, so clients'
//! polling loops are exercised), read results as CSV in sets paged by `Sforce-Locator`
//! (`null` after the last) with `Sforce-NumberOfRecords`, abort or delete a job, list jobs.

// Handlers return early with the answer to send (see writes.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::SalesforceShared;
use super::describe::admit_versioned;
use super::soql::{self, PreparedQuery};
use super::value::format_datetime;
use crate::emulator::data::salesforce_id;

/// Rows per result set when the client sets no `maxRecords`.
const DEFAULT_MAX_RECORDS: usize = 50_000;
/// Rows of one chunk of an unordered job's results.
const UNORDERED_CHUNK: usize = 2_000;
/// Jobs kept; beyond this the oldest is forgotten.
const MAX_JOBS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    UploadComplete,
    InProgress,
    JobComplete,
    Aborted,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Aborted => "Aborted",
        }
    }
}

/// One query job and its result rows (fixed when the job was created).
struct Job {
    id: String,
    operation: String,
    object: String,
    api_version: u32,
    created: Timestamp,
    /// The user whose session created it (the org's one integration user).
    created_by: String,
    state: JobState,
    column_delimiter: String,
    line_ending: String,
    query: Arc<PreparedQuery>,
    rows: Arc<Vec<usize>>,
}

impl Job {
    fn info(&self, full: bool) -> Value {
        let mut info = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": format_datetime(self.created),
            "systemModstamp": format_datetime(self.created),
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": f64::from(self.api_version),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        });
        if full {
            info["jobType"] = json!("V2Query");
            info["numberRecordsProcessed"] = json!(if self.state == JobState::JobComplete {
                self.rows.len()
            } else {
                0
            });
            info["retries"] = json!(0);
            info["totalProcessingTime"] = json!(if self.state == JobState::JobComplete {
                120
            } else {
                0
            });
            info["isPkChunkingSupported"] = json!(true);
        }
        info
    }
}

/// The org's query jobs.
#[derive(Default)]
pub struct Jobs {
    by_id: HashMap<String, Job>,
    order: Vec<String>,
}

pub fn routes(shared: Arc<SalesforceShared>) -> Router {
    Router::new()
        .route(
            "/services/data/{version}/jobs/query",
            get(list).post(create),
        )
        .route(
            "/services/data/{version}/jobs/query/{id}",
            get(poll).patch(abort).delete(remove),
        )
        .route(
            "/services/data/{version}/jobs/query/{id}/results",
            get(results),
        )
        .with_state(shared)
}

fn delimiter_char(name: &str) -> Option<char> {
    Some(match name {
        "COMMA" => ',',
        "TAB" => '\t',
        "PIPE" => '|',
        "SEMICOLON" => ';',
        "CARET" => '^',
        "BACKQUOTE" => '`',
        _ => return None,
    })
}

async fn create(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.respond("POST /services/data/{version}/jobs/query", || {
        let major = admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
        let bad_request =
            |message: &str| shared.error(StatusCode::BAD_REQUEST, "API_ERROR", message, None);
        let request: Value = serde_json::from_slice(&body).map_err(|error| {
            shared.error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!(
                    "{error} at [line:{}, column:{}]",
                    error.line(),
                    error.column()
                ),
                None,
            )
        })?;
        let operation = request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if operation != "query" && operation != "queryAll" {
            return Err(bad_request(
                "Invalid operation: the operation of a query job must be query or queryAll",
            ));
        }
        let Some(text) = request.get("query").and_then(Value::as_str) else {
            return Err(bad_request("Invalid query: a query job needs a query"));
        };
        if let Some(content_type) = request.get("contentType").and_then(Value::as_str)
            && content_type != "CSV"
        {
            return Err(bad_request(&format!(
                "Invalid content type: {content_type}; query results are CSV"
            )));
        }
        let delimiter = request
            .get("columnDelimiter")
            .and_then(Value::as_str)
            .unwrap_or("COMMA");
        if delimiter_char(delimiter).is_none() {
            return Err(bad_request(&format!(
                "Invalid column delimiter: {delimiter}"
            )));
        }
        let line_ending = request
            .get("lineEnding")
            .and_then(Value::as_str)
            .unwrap_or("LF");
        if line_ending != "LF" && line_ending != "CRLF" {
            return Err(bad_request(&format!("Invalid line ending: {line_ending}")));
        }
        let org = shared.read_org();
        let prepared = soql::parse(text)
            .and_then(|query| query.prepare(&org.catalog))
            .map_err(|error| {
                shared.error(StatusCode::BAD_REQUEST, error.code, &error.message, None)
            })?;
        if prepared.is_count() {
            return Err(bad_request(
                "Aggregate queries are not supported in Bulk API 2.0 query jobs",
            ));
        }
        let mut rows = prepared.select(&org, operation == "queryAll");
        drop(org);
        if !prepared.is_ordered() {
            // Salesforce splits a job into chunks processed side by side: without ORDER BY,
            // rows come chunk by chunk in no promised order. Here the chunks come last first.
            rows = rows
                .chunks(UNORDERED_CHUNK)
                .rev()
                .flat_map(|chunk| chunk.iter().copied())
                .collect();
        }
        let number = shared.bulk_jobs_created.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id: salesforce_id("750", 7_000_000 + number),
            operation: operation.to_string(),
            object: prepared.object_name().to_string(),
            api_version: major,
            created: Timestamp::now(),
            created_by: shared.credentials.user_id.clone(),
            state: JobState::UploadComplete,
            column_delimiter: delimiter.to_string(),
            line_ending: line_ending.to_string(),
            query: Arc::new(prepared),
            rows: Arc::new(rows),
        };
        let info = job.info(false);
        if let Ok(mut jobs) = shared.bulk_jobs.lock() {
            if jobs.order.len() >= MAX_JOBS {
                let oldest = jobs.order.remove(0);
                jobs.by_id.remove(&oldest);
            }
            jobs.order.push(job.id.clone());
            jobs.by_id.insert(job.id.clone(), job);
        }
        Ok(shared.api_json(StatusCode::OK, &info))
    })
}

async fn list(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(_) => {
            let records: Vec<Value> = shared
                .bulk_jobs
                .lock()
                .map(|jobs| {
                    jobs.order
                        .iter()
                        .filter_map(|id| jobs.by_id.get(id))
                        .map(|job| {
                            let mut info = job.info(false);
                            info["jobType"] = json!("V2Query");
                            info
                        })
                        .collect()
                })
                .unwrap_or_default();
            shared.api_json(
                StatusCode::OK,
                &json!({"done": true, "records": records, "nextRecordsUrl": null}),
            )
        }
    };
    shared.answered("GET /services/data/{version}/jobs/query", response)
}

async fn poll(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(_) => {
            let info = shared.bulk_jobs.lock().ok().and_then(|mut jobs| {
                let job = jobs.by_id.get_mut(&id)?;
                let info = job.info(true);
                // Each poll moves the job one step on.
                job.state = match job.state {
                    JobState::UploadComplete => JobState::InProgress,
                    JobState::InProgress | JobState::JobComplete => JobState::JobComplete,
                    JobState::Aborted => JobState::Aborted,
                };
                Some(info)
            });
            match info {
                Some(info) => shared.api_json(StatusCode::OK, &info),
                None => shared.not_found(),
            }
        }
    };
    shared.answered("GET /services/data/{version}/jobs/query/{id}", response)
}

async fn abort(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(_) => {
            let wanted = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|body| {
                    body.get("state")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            if wanted.as_deref() != Some("Aborted") {
                shared.error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOBSTATE",
                    "A query job's state can only be changed to Aborted",
                    None,
                )
            } else {
                // Only a job still running can be aborted (UploadComplete, InProgress); the
                // documentation gives the rule, not the refusal's code.
                let info = shared.bulk_jobs.lock().ok().and_then(|mut jobs| {
                    let job = jobs.by_id.get_mut(&id)?;
                    let running =
                        matches!(job.state, JobState::UploadComplete | JobState::InProgress);
                    if running {
                        job.state = JobState::Aborted;
                    }
                    Some((running, job.state, job.info(false)))
                });
                match info {
                    Some((true, _, info)) => shared.api_json(StatusCode::OK, &info),
                    Some((false, state, _)) => shared.error(
                        StatusCode::BAD_REQUEST,
                        "INVALIDJOBSTATE",
                        &format!(
                            "Aborting the job is not allowed: the job is {}",
                            state.name()
                        ),
                        None,
                    ),
                    None => shared.not_found(),
                }
            }
        }
    };
    shared.answered("PATCH /services/data/{version}/jobs/query/{id}", response)
}

async fn remove(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = match admit_versioned(&shared, &version, &headers) {
        Err(response) => *response,
        Ok(_) => {
            // Only a job that has ended (JobComplete, Aborted, Failed) can be deleted.
            let removed = shared.bulk_jobs.lock().ok().and_then(|mut jobs| {
                let running = matches!(
                    jobs.by_id.get(&id)?.state,
                    JobState::UploadComplete | JobState::InProgress
                );
                if running {
                    return Some(false);
                }
                jobs.order.retain(|kept| *kept != id);
                jobs.by_id.remove(&id).map(|_| true)
            });
            match removed {
                Some(true) => StatusCode::NO_CONTENT.into_response(),
                Some(false) => shared.error(
                    StatusCode::BAD_REQUEST,
                    "API_ERROR",
                    "Error encountered when deleting the job because the job is not terminated",
                    None,
                ),
                None => shared.not_found(),
            }
        }
    };
    shared.answered("DELETE /services/data/{version}/jobs/query/{id}", response)
}

/// A CSV cell, always quoted, with quotes doubled.
fn push_cell(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        if character == '"' {
            out.push('"');
        }
        out.push(character);
    }
    out.push('"');
}

async fn results(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.respond("GET /services/data/{version}/jobs/query/{id}/results", || {
        let major = admit_versioned(&shared, &version, &headers).map_err(|response| *response)?;
        let found = shared.bulk_jobs.lock().ok().and_then(|jobs| {
            jobs.by_id.get(&id).map(|job| {
                (
                    job.state,
                    job.api_version,
                    Arc::clone(&job.query),
                    Arc::clone(&job.rows),
                    job.column_delimiter.clone(),
                    job.line_ending.clone(),
                )
            })
        });
        let Some((state, job_version, query, rows, delimiter, line_ending)) = found else {
            return Err(shared.not_found());
        };
        if job_version != major {
            return Err(shared.error(StatusCode::CONFLICT, "INVALIDJOBSTATE", &format!("The job was created with API version {job_version}.0; read its results with the same version"), None));
        }
        if state != JobState::JobComplete {
            return Err(shared.error(StatusCode::PRECONDITION_FAILED, "JOB_NOT_COMPLETE", &format!("The job {id} is not complete; poll it until its state is JobComplete"), None));
        }
        let start = match params.get("locator").filter(|locator| !locator.is_empty()) {
            None => 0,
            Some(locator) => decode_locator(locator)
                .filter(|offset| *offset <= rows.len())
                .ok_or_else(|| shared.error(StatusCode::BAD_REQUEST, "INVALID_LOCATOR", &format!("Invalid locator: {locator}"), None))?,
        };
        let max_records = params
            .get("maxRecords")
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|count| *count > 0)
            .unwrap_or(DEFAULT_MAX_RECORDS);
        let end = start.saturating_add(max_records).min(rows.len());
        let separator = delimiter_char(&delimiter).unwrap_or(',');
        let newline = if line_ending == "CRLF" { "\r\n" } else { "\n" };
        let org = shared.read_org();
        let mut csv = String::with_capacity(64 + (end - start) * 200);
        for (position, column) in query.csv_columns().iter().enumerate() {
            if position > 0 {
                csv.push(separator);
            }
            push_cell(&mut csv, column);
        }
        csv.push_str(newline);
        for row in &rows[start..end] {
            for (position, cell) in query.csv_values(&org, *row).iter().enumerate() {
                if position > 0 {
                    csv.push(separator);
                }
                push_cell(&mut csv, cell);
            }
            csv.push_str(newline);
        }
        drop(org);
        let next = if end < rows.len() { encode_locator(end) } else { "null".to_string() };
        let mut response = (StatusCode::OK, csv).into_response();
        let response_headers = response.headers_mut();
        response_headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        for (name, value) in [("sforce-locator", next), ("sforce-numberofrecords", (end - start).to_string())] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response_headers.insert(name, value);
            }
        }
        shared.add_limit_info(response_headers);
        Ok::<_, Response>(response)
    })
}

/// Locators are opaque to clients; these are base64 of the next row's offset.
fn encode_locator(offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(offset.to_string())
}

fn decode_locator(locator: &str) -> Option<usize> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(locator.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()?.parse().ok()
}
