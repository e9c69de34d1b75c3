//! `GET /services/data/vXX.X/query?q=` and `/queryAll?q=`: runs SOQL over the org and pages
//! the result through `nextRecordsUrl` locators (`…/query/01g…-2000`), in batches of 2,000
//! or what `Sforce-Query-Options: batchSize=` asks for (200–2,000).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use super::SalesforceShared;
use super::describe::admit_versioned;
use super::soql::{self, PreparedQuery};
use crate::emulator::data::SeededRng;

/// Rows per page when the client does not ask otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 2_000;
const MIN_BATCH_SIZE: usize = 200;
/// Open locators kept; the oldest are forgotten first (Salesforce caps open cursors too).
const MAX_OPEN_CURSORS: usize = 10_000;

/// A query's result, kept for its later pages.
struct Cursor {
    query: Arc<PreparedQuery>,
    rows: Arc<Vec<usize>>,
    batch_size: usize,
    include_deleted: bool,
}

/// Open query locators.
#[derive(Default)]
pub struct Cursors {
    by_locator: HashMap<String, Cursor>,
    order: VecDeque<String>,
}

impl Cursors {
    fn insert(&mut self, locator: String, cursor: Cursor) {
        if self.order.len() >= MAX_OPEN_CURSORS
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_locator.remove(&oldest);
        }
        self.order.push_back(locator.clone());
        self.by_locator.insert(locator, cursor);
    }
}

pub fn routes(shared: Arc<SalesforceShared>) -> Router {
    Router::new()
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/", get(query))
        .route("/services/data/{version}/queryAll", get(query_all))
        .route("/services/data/{version}/queryAll/", get(query_all))
        .route("/services/data/{version}/query/{locator}", get(more))
        .route("/services/data/{version}/queryAll/{locator}", get(more_all))
        .with_state(shared)
}

async fn query(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let response = run(&shared, &version, &params, &headers, false);
    shared.answered("GET /services/data/{version}/query", response)
}

async fn query_all(
    State(shared): State<Arc<SalesforceShared>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let response = run(&shared, &version, &params, &headers, true);
    shared.answered("GET /services/data/{version}/queryAll", response)
}

async fn more(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = next_page(&shared, &version, &locator, &headers, false);
    shared.answered("GET /services/data/{version}/query/{locator}", response)
}

async fn more_all(
    State(shared): State<Arc<SalesforceShared>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = next_page(&shared, &version, &locator, &headers, true);
    shared.answered("GET /services/data/{version}/queryAll/{locator}", response)
}

/// `batchSize=N` from `Sforce-Query-Options`, held to 200–2,000.
fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|value| value.to_str().ok())
        .and_then(|options| {
            options.split(',').find_map(|option| {
                let (key, value) = option.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("batchSize")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
        })
        .map_or(DEFAULT_BATCH_SIZE, |size| {
            size.clamp(MIN_BATCH_SIZE, DEFAULT_BATCH_SIZE)
        })
}

fn run(
    shared: &SalesforceShared,
    version: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    include_deleted: bool,
) -> Response {
    let major = match admit_versioned(shared, version, headers) {
        Ok(major) => major,
        Err(response) => return *response,
    };
    let Some(text) = params.get("q").filter(|text| !text.trim().is_empty()) else {
        return shared.error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
            None,
        );
    };
    let org = shared.read_org();
    let prepared = match soql::parse(text).and_then(|query| query.prepare(&org.catalog)) {
        Ok(prepared) => prepared,
        Err(error) => {
            return shared.error(StatusCode::BAD_REQUEST, error.code, &error.message, None);
        }
    };
    let rows = prepared.select(&org, include_deleted);
    if prepared.is_count() {
        return shared.json_text(
            StatusCode::OK,
            format!(r#"{{"totalSize":{},"done":true,"records":[]}}"#, rows.len()),
            true,
        );
    }
    let cursor = Cursor {
        query: Arc::new(prepared),
        rows: Arc::new(rows),
        batch_size: batch_size(headers),
        include_deleted,
    };
    let page = render_page(shared, &org, &cursor, 0, major, None);
    drop(org);
    let (text, next_locator) = page;
    if let Some(locator) = next_locator
        && let Ok(mut cursors) = shared.cursors.lock()
    {
        cursors.insert(locator, cursor);
    }
    shared.json_text(StatusCode::OK, text, true)
}

/// `01g…-2000`: the locator and the offset of the next page.
fn split_locator(text: &str) -> Option<(&str, usize)> {
    let (locator, offset) = text.rsplit_once('-')?;
    Some((locator, offset.parse().ok()?))
}

fn next_page(
    shared: &SalesforceShared,
    version: &str,
    locator_text: &str,
    headers: &HeaderMap,
    include_deleted: bool,
) -> Response {
    let major = match admit_versioned(shared, version, headers) {
        Ok(major) => major,
        Err(response) => return *response,
    };
    let invalid = || {
        shared.error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
            None,
        )
    };
    let Some((locator, offset)) = split_locator(locator_text) else {
        return invalid();
    };
    let cursor = shared.cursors.lock().ok().and_then(|cursors| {
        cursors.by_locator.get(locator).map(|cursor| Cursor {
            query: Arc::clone(&cursor.query),
            rows: Arc::clone(&cursor.rows),
            batch_size: cursor.batch_size,
            include_deleted: cursor.include_deleted,
        })
    });
    let Some(cursor) = cursor
        .filter(|cursor| cursor.include_deleted == include_deleted && offset <= cursor.rows.len())
    else {
        return invalid();
    };
    let org = shared.read_org();
    let (text, _) = render_page(shared, &org, &cursor, offset, major, Some(locator));
    drop(org);
    shared.json_text(StatusCode::OK, text, true)
}

/// One page of `cursor` from `offset`; the locator to page on with, when more rows remain.
fn render_page(
    shared: &SalesforceShared,
    org: &super::store::OrgData,
    cursor: &Cursor,
    offset: usize,
    major: u32,
    locator: Option<&str>,
) -> (String, Option<String>) {
    let total = cursor.rows.len();
    let end = (offset + cursor.batch_size).min(total);
    let done = end >= total;
    let api_version = format!("{major}.0");
    let mut text = String::with_capacity(64 + (end - offset) * 400);
    text.push_str(&format!(r#"{{"totalSize":{total},"done":{done},"#));
    let mut new_locator = None;
    if !done {
        let locator = match locator {
            Some(locator) => locator.to_string(),
            None => {
                let mut rng = SeededRng::new(shared.next_sequence() ^ 0x0167_6c6f_6361);
                let locator = super::store::short_id(&crate::emulator::data::salesforce_id(
                    "01g",
                    rng.below(1 << 48),
                ))
                .to_string();
                new_locator = Some(locator.clone());
                locator
            }
        };
        let segment = if cursor.include_deleted {
            "queryAll"
        } else {
            "query"
        };
        text.push_str(&format!(
            r#""nextRecordsUrl":"/services/data/v{api_version}/{segment}/{locator}-{end}","#
        ));
    }
    text.push_str(r#""records":["#);
    for (position, row) in cursor.rows[offset..end].iter().enumerate() {
        if position > 0 {
            text.push(',');
        }
        cursor
            .query
            .render_record(org, *row, &api_version, &mut text);
    }
    text.push_str("]}");
    (text, new_locator)
}
