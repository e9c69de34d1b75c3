//! Reading HubSpot objects into [`SourceRecord`]s, page by page through a bounded channel so
//! memory stays flat however large the portal.
//!
//! - Full reads page the list endpoint (100 a page). When the property list would make the URL
//!   too long, the list only yields ids and the properties come from `batch/read` (POST).
//! - Incremental reads search on the last-modified property, ascending, 200 a page, from the
//!   checkpoint minus a small overlap. Search stops at 10,000 results a query, so a long run
//!   restarts its window from the last timestamp seen; records sharing that very timestamp
//!   (thousands, after a bulk update) are read in id order with an id tie-break, so none is
//!   lost and none loops.
//! - Archived records (which search never returns) come from the `archived=true` listing on
//!   every run, as tombstones; merges come from `hs_merged_object_ids`.

use std::collections::HashSet;
use std::time::Duration;

use http::Method;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Budget, HubspotClient, HubspotError};
use crate::record::{Properties, SourceRecord, System};

/// Records a list page holds.
pub const LIST_PAGE: usize = 100;
/// Records a search page holds.
pub const SEARCH_PAGE: usize = 200;
/// Results one search query can page through.
pub const SEARCH_CAP: usize = 10_000;
/// URLs longer than this read properties through `batch/read` instead.
pub const MAX_URL_LENGTH: usize = 4_000;

/// What a read hands the engine, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadEvent {
    /// A page of live records.
    Records(Vec<SourceRecord>),
    /// Records archived (deleted) in HubSpot, with when.
    Archived(Vec<Tombstone>),
    /// Records that absorbed others in a merge.
    Merged(Vec<Merge>),
    /// Everything before this point has been handed over: a run stopped after it (a spent
    /// daily allowance, say) resumes here.
    Progress(ResumePoint),
}

/// Where a read can pick up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePoint {
    /// A full read: the list page to continue from.
    FullAfter(String),
    /// An incremental read: the modification time read up to.
    ModifiedSince(Timestamp),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub archived_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub survivor: String,
    pub absorbed: Vec<String>,
}

/// How a read went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSummary {
    pub records: usize,
    pub archived: usize,
    pub merges: usize,
    /// Where the next incremental read starts: the latest modification time read (for a full
    /// read, the time it started).
    pub high_water: Option<Timestamp>,
}

/// Why a read stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Api(#[from] HubspotError),
    #[error("the engine stopped taking {object} records before the read was done")]
    Closed { object: String },
    #[error(
        "HubSpot sent a {object} record crmsync cannot read ({what}) — its answer changed shape; please report it"
    )]
    Shape { object: String, what: String },
}

/// The property HubSpot stamps on every change of an object.
pub fn modified_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// Reads objects of one HubSpot portal.
#[derive(Debug)]
pub struct HubspotReader<'a> {
    client: &'a HubspotClient,
    /// Incremental reads start this long before the checkpoint.
    pub overlap: Duration,
}

impl<'a> HubspotReader<'a> {
    pub fn new(client: &'a HubspotClient) -> Self {
        Self {
            client,
            overlap: Duration::from_secs(60),
        }
    }

    /// Every property `object` defines (the `all` selection), from the properties API.
    pub async fn all_properties(&self, object: &str) -> Result<Vec<String>, ReadError> {
        Ok(super::schema::properties(self.client, object)
            .await?
            .into_iter()
            .map(|property| property.name)
            .collect())
    }

    /// Every live record of `object`, then every archived one as a tombstone.
    pub async fn full(
        &self,
        object: &str,
        properties: &[String],
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        self.full_from(object, properties, None, events).await
    }

    /// A full read picked up at `resume` (a [`ResumePoint::FullAfter`] cursor), or from the
    /// start.
    pub async fn full_from(
        &self,
        object: &str,
        properties: &[String],
        resume: Option<String>,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let properties = with_read_properties(object, properties);
        let joined = properties.join(",");
        let list_path = format!("/crm/v3/objects/{object}");
        // Base URL, path, `limit`, `after` and the list itself.
        let by_batch = list_path.len() + joined.len() + 200 > MAX_URL_LENGTH;
        // Records edited while the list is paged may be older than the newest one read: the
        // next incremental read starts from when this one started.
        let started = Timestamp::now();
        let mut summary = ReadSummary::default();
        let mut after: Option<String> = resume;
        loop {
            let mut query = vec![("limit", LIST_PAGE.to_string())];
            query.push((
                "properties",
                if by_batch {
                    "hs_object_id".to_string()
                } else {
                    joined.clone()
                },
            ));
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page = self
                .client
                .send(
                    Budget::General,
                    Method::GET,
                    &list_path,
                    &query,
                    None,
                    object,
                )
                .await?;
            let mut results: Vec<Value> =
                page.body["results"].as_array().cloned().unwrap_or_default();
            if by_batch && !results.is_empty() {
                results = self.batch_read(object, &results, &properties).await?;
            }
            self.deliver(object, results, &mut summary, events).await?;
            match page.body["paging"]["next"]["after"].as_str() {
                Some(next) => {
                    after = Some(next.to_string());
                    let point = ResumePoint::FullAfter(next.to_string());
                    send(events, ReadEvent::Progress(point), object).await?;
                }
                None => break,
            }
        }
        self.archived(object, None, &mut summary, events).await?;
        summary.high_water = Some(started);
        Ok(summary)
    }

    /// The properties of listed records through `batch/read`.
    async fn batch_read(
        &self,
        object: &str,
        listed: &[Value],
        properties: &[String],
    ) -> Result<Vec<Value>, ReadError> {
        let inputs: Vec<Value> = listed
            .iter()
            .filter_map(|record| record["id"].as_str())
            .map(|id| json!({"id": id}))
            .collect();
        let answer = self
            .client
            .send(
                Budget::General,
                Method::POST,
                &format!("/crm/v3/objects/{object}/batch/read"),
                &[],
                Some(&json!({"inputs": inputs, "properties": properties})),
                object,
            )
            .await?;
        let mut results = answer.body["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Keep the list's order.
        let order: Vec<&str> = listed.iter().filter_map(|r| r["id"].as_str()).collect();
        results.sort_by_key(|record| {
            record["id"]
                .as_str()
                .and_then(|id| order.iter().position(|listed| *listed == id))
                .unwrap_or(usize::MAX)
        });
        Ok(results)
    }

    /// Records of `object` modified since `since` (less the overlap), then the records
    /// archived since then.
    pub async fn incremental(
        &self,
        object: &str,
        properties: &[String],
        since: Timestamp,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let properties = with_read_properties(object, properties);
        let modified = modified_property(object);
        let start = since - jiff::SignedDuration::try_from(self.overlap).unwrap_or_default();
        let mut summary = ReadSummary::default();
        // The window: everything modified at or after `from` (after it, once restarted).
        let mut from = start.as_millisecond();
        let mut inclusive = true;
        loop {
            let operator = if inclusive { "GTE" } else { "GT" };
            let filters = json!([{"propertyName": modified, "operator": operator, "value": from.to_string()}]);
            let sorts = json!([{"propertyName": modified, "direction": "ASCENDING"}]);
            let read = self
                .search_window(object, &properties, filters, sorts, &mut summary, events)
                .await?;
            let Some(last) = read.last_modified_ms.filter(|_| read.capped) else {
                break;
            };
            // The cap was reached: every record at exactly `last`, in id order, then past it.
            self.read_tie(
                object,
                &properties,
                modified,
                last,
                &read.ids_at_last,
                &mut summary,
                events,
            )
            .await?;
            from = last;
            inclusive = false;
        }
        self.archived(object, Some(start), &mut summary, events)
            .await?;
        Ok(summary)
    }

    /// Every record modified at exactly `at` (ms), by id, skipping `seen`.
    #[allow(clippy::too_many_arguments)]
    async fn read_tie(
        &self,
        object: &str,
        properties: &[String],
        modified: &str,
        at: i64,
        seen: &HashSet<String>,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        let mut after_id: u64 = 0;
        loop {
            let filters = json!([
                {"propertyName": modified, "operator": "EQ", "value": at.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": after_id.to_string()},
            ]);
            let sorts = json!([{"propertyName": "hs_object_id", "direction": "ASCENDING"}]);
            let mut read = self
                .search_pages(
                    object,
                    properties,
                    filters,
                    sorts,
                    summary,
                    events,
                    Some(seen),
                )
                .await?;
            match read.last_id.take().filter(|_| read.capped) {
                Some(last_id) => after_id = last_id,
                None => return Ok(()),
            }
        }
    }

    async fn search_window(
        &self,
        object: &str,
        properties: &[String],
        filters: Value,
        sorts: Value,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<WindowRead, ReadError> {
        self.search_pages(object, properties, filters, sorts, summary, events, None)
            .await
    }

    /// Pages one search query until it ends, reaches the cap, or (outside the tie phase, `skip`
    /// unset) meets a whole page at one instant.
    #[allow(clippy::too_many_arguments)]
    async fn search_pages(
        &self,
        object: &str,
        properties: &[String],
        filters: Value,
        sorts: Value,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
        skip: Option<&HashSet<String>>,
    ) -> Result<WindowRead, ReadError> {
        let path = format!("/crm/v3/objects/{object}/search");
        let modified = modified_property(object);
        let mut window = WindowRead::default();
        let mut after = 0usize;
        loop {
            let body = json!({
                "filterGroups": [{"filters": filters}],
                "sorts": sorts,
                "properties": properties,
                "limit": SEARCH_PAGE,
                "after": after.to_string(),
            });
            let page = self
                .client
                .send(
                    Budget::Search,
                    Method::POST,
                    &path,
                    &[],
                    Some(&body),
                    object,
                )
                .await?;
            let results: Vec<Value> = page.body["results"].as_array().cloned().unwrap_or_default();
            let previous_last = window.last_modified_ms;
            // A whole page at the instant the previous one ended on: a bulk update left many
            // records at one time. Read that instant by id instead of paging towards the cap.
            let all_tied = skip.is_none()
                && results.len() == SEARCH_PAGE
                && previous_last.is_some()
                && results.iter().all(|record| {
                    record["properties"][modified]
                        .as_str()
                        .and_then(parse_hubspot_time)
                        .map(|at| at.as_millisecond())
                        == previous_last
                });
            for record in &results {
                let Some(at) = record["properties"][modified]
                    .as_str()
                    .and_then(parse_hubspot_time)
                else {
                    continue;
                };
                let ms = at.as_millisecond();
                if window.last_modified_ms != Some(ms) {
                    window.last_modified_ms = Some(ms);
                    window.ids_at_last.clear();
                }
                if let Some(id) = record["id"].as_str() {
                    window.ids_at_last.insert(id.to_string());
                    window.last_id = id.parse().ok().or(window.last_id);
                }
            }
            let fresh: Vec<Value> = results
                .into_iter()
                .filter(|record| {
                    skip.is_none_or(|seen| {
                        record["id"].as_str().is_none_or(|id| !seen.contains(id))
                    })
                })
                .collect();
            self.deliver(object, fresh, summary, events).await?;
            // Everything modified before the latest instant read is in; resuming there (at
            // or after it) loses nothing.
            if let Some(ms) = window.last_modified_ms
                && let Ok(at) = Timestamp::from_millisecond(ms)
            {
                send(
                    events,
                    ReadEvent::Progress(ResumePoint::ModifiedSince(at)),
                    object,
                )
                .await?;
            }
            if all_tied && page.body["paging"]["next"].is_object() {
                window.capped = true;
                return Ok(window);
            }
            let next = match page.body["paging"]["next"]["after"].as_str() {
                None => return Ok(window),
                Some(next) => next.parse::<usize>().map_err(|_| ReadError::Shape {
                    object: object.to_string(),
                    what: format!("a search paging cursor {next:?} that is not an offset"),
                })?,
            };
            if next + SEARCH_PAGE > SEARCH_CAP {
                window.capped = true;
                return Ok(window);
            }
            after = next;
        }
    }

    /// Tombstones for records archived at or after `since` (all of them without one).
    async fn archived(
        &self,
        object: &str,
        since: Option<Timestamp>,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        let path = format!("/crm/v3/objects/{object}");
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("limit", LIST_PAGE.to_string()),
                ("archived", "true".to_string()),
                ("properties", "hs_object_id".to_string()),
            ];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let page = self
                .client
                .send(Budget::General, Method::GET, &path, &query, None, object)
                .await?;
            let tombstones: Vec<Tombstone> = page.body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|record| {
                    let id = record["id"].as_str()?.to_string();
                    let archived_at = record["archivedAt"].as_str().and_then(parse_hubspot_time);
                    let recent = match (since, archived_at) {
                        (Some(since), Some(at)) => at >= since,
                        _ => true,
                    };
                    recent.then_some(Tombstone { id, archived_at })
                })
                .collect();
            if !tombstones.is_empty() {
                summary.archived += tombstones.len();
                send(events, ReadEvent::Archived(tombstones), object).await?;
            }
            match page.body["paging"]["next"]["after"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return Ok(()),
            }
        }
    }

    /// Turns a page of API records into source records (and merges) and hands them on.
    async fn deliver(
        &self,
        object: &str,
        results: Vec<Value>,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(results.len());
        let mut merges = Vec::new();
        for result in results {
            let record = source_record(object, result)?;
            if let Some(absorbed) = record
                .properties
                .get("hs_merged_object_ids")
                .and_then(Value::as_str)
                .filter(|ids| !ids.trim().is_empty())
            {
                merges.push(Merge {
                    survivor: record.id.clone(),
                    absorbed: absorbed
                        .split(';')
                        .map(str::trim)
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                        .collect(),
                });
            }
            summary.high_water = summary.high_water.max(Some(record.modified_at));
            records.push(record);
        }
        summary.records += records.len();
        send(events, ReadEvent::Records(records), object).await?;
        if !merges.is_empty() {
            summary.merges += merges.len();
            send(events, ReadEvent::Merged(merges), object).await?;
        }
        Ok(())
    }
}

/// What one search query read: whether it stopped early (the cap, or a pile-up at one
/// instant) and where.
#[derive(Debug, Default)]
struct WindowRead {
    capped: bool,
    last_modified_ms: Option<i64>,
    /// Ids read whose modification time is `last_modified_ms`.
    ids_at_last: HashSet<String>,
    last_id: Option<u64>,
}

async fn send(
    events: &mpsc::Sender<ReadEvent>,
    event: ReadEvent,
    object: &str,
) -> Result<(), ReadError> {
    events.send(event).await.map_err(|_| ReadError::Closed {
        object: object.to_string(),
    })
}

/// The properties a read asks for: the configured ones plus what reading itself needs.
fn with_read_properties(object: &str, properties: &[String]) -> Vec<String> {
    let mut wanted: Vec<String> = properties.to_vec();
    for needed in [
        modified_property(object),
        "hs_merged_object_ids",
        "createdate",
    ] {
        if !wanted.iter().any(|name| name == needed) {
            wanted.push(needed.to_string());
        }
    }
    wanted
}

/// HubSpot writes times as ISO 8601 (`2024-05-01T12:34:56.789Z`) or epoch milliseconds.
pub fn parse_hubspot_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<i64>()
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    })
}

/// One API record (`{"id", "properties", "updatedAt", …}`) as a source record.
fn source_record(object: &str, result: Value) -> Result<SourceRecord, ReadError> {
    let shape = |what: &str| ReadError::Shape {
        object: object.to_string(),
        what: what.to_string(),
    };
    let Value::Object(mut map) = result else {
        return Err(shape("not an object"));
    };
    let id = map
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no id"))?
        .to_string();
    let modified_at = map
        .get("updatedAt")
        .and_then(Value::as_str)
        .and_then(parse_hubspot_time)
        .ok_or_else(|| shape(&format!("record {id} has no readable updatedAt")))?;
    let properties: Properties = match map.remove("properties") {
        Some(Value::Object(properties)) => properties.into_iter().collect(),
        _ => Properties::default(),
    };
    Ok(SourceRecord {
        system: System::Hubspot,
        object: object.to_string(),
        id,
        modified_at,
        properties,
    })
}
