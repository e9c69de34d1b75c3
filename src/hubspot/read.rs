//! Reading HubSpot objects into [`SourceRecord`]s, page by page through a bounded channel so
//! memory stays flat however large the portal.
//!
//! - Full reads page the list endpoint (100 a page). When the property list would make the URL
//!   too long, the list only yields ids and the properties come from `batch/read` (POST).
//! - Incremental reads search on the last-modified property, ascending, 200 a page, from the
//!   checkpoint minus a small overlap. Each query starts where the previous page ended rather
//!   than at an offset, so records edited during the read cannot shift one past a page
//!   boundary, and search's 10,000-result cap never applies. Records sharing the instant a
//!   page ended on are left out of the next query by id; more of them than a page holds
//!   (thousands, after a bulk update) are read in id order, so none is lost and none loops.
//! - Archived records (which search never returns) come from the `archived=true` listing on
//!   every run, as tombstones; merges come from `hs_merged_object_ids`.
//! - Progress events say where a stopped read resumes without losing anything.

use std::collections::HashSet;
use std::time::Duration;

use http::Method;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Answer, Budget, HubspotClient, HubspotError};
use crate::record::{Properties, SourceRecord, System};

/// Records a list page holds.
pub const LIST_PAGE: usize = 100;
/// Records a search page holds.
pub const SEARCH_PAGE: usize = 200;
/// URLs longer than this read properties through `batch/read` instead.
pub const MAX_URL_LENGTH: usize = 4_000;

/// What a HubSpot read hands the engine, in order.
pub type ReadEvent = crate::record::ReadEvent<ResumePoint>;
pub use crate::record::{Merge, Tombstone};

/// Where a read can pick up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePoint {
    /// A full read: the list page to continue from, and when the read first started (where
    /// the next incremental read begins, however many runs the full read takes).
    Full { after: String, started: Timestamp },
    /// An incremental read: records modified from `modified_since` on are still to read,
    /// and records archived from `archived_since` on (where the stopped read began). `tie`
    /// says how far the read came through the records sharing one instant, read in id order.
    Incremental {
        modified_since: Timestamp,
        archived_since: Timestamp,
        tie: Option<TieProgress>,
    },
}

/// Of the records modified at `at`, those up to `after_id` (in HubSpot's id order) are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieProgress {
    pub at: Timestamp,
    pub after_id: String,
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
    #[error(
        "HubSpot's search of {object} stopped making progress ({what}); the read stops rather than loop — run it again, and report it if it recurs"
    )]
    Stalled { object: String, what: String },
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
        // Records edited while the list is paged may be older than the newest one read: the
        // next incremental read starts from when this one started — by the earlier of
        // HubSpot's clock (its last answer) and ours, so a clock running ahead skips nothing.
        let local = Timestamp::now();
        let started = self
            .client
            .server_clock()
            .map_or(local, |server| server.min(local));
        self.full_read(object, properties, None, started, events)
            .await
    }

    async fn full_read(
        &self,
        object: &str,
        properties: &[String],
        resume_after: Option<String>,
        started: Timestamp,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let properties = with_read_properties(object, properties);
        let joined = properties.join(",");
        let list_path = format!("/crm/v3/objects/{object}");
        // Base URL, path, `limit`, `after` and the list itself.
        let by_batch = list_path.len() + joined.len() + 200 > MAX_URL_LENGTH;
        let mut summary = ReadSummary::default();
        let mut after: Option<String> = resume_after;
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
            let mut page = self
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
            let mut results = take_results(&mut page.body);
            if by_batch && !results.is_empty() {
                results = self.batch_read(object, &results, &properties).await?;
            }
            self.deliver(object, results, &mut summary, events).await?;
            match page.body["paging"]["next"]["after"].as_str() {
                Some(next) => {
                    after = Some(next.to_string());
                    let point = ResumePoint::Full {
                        after: next.to_string(),
                        started,
                    };
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
        let mut answer = self
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
        let mut results = take_results(&mut answer.body);
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

    /// The records `ids` of `object` as they are now, with `properties`, through
    /// `batch/read` (100 a request). Ids HubSpot no longer has (archived, merged away) are
    /// absent from the answer (HubSpot lists them as errors of a 207).
    pub async fn by_ids(
        &self,
        object: &str,
        ids: &[String],
        properties: &[String],
    ) -> Result<Vec<SourceRecord>, ReadError> {
        let properties = with_read_properties(object, properties);
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_PAGE) {
            let listed: Vec<Value> = chunk.iter().map(|id| json!({ "id": id })).collect();
            for result in self.batch_read(object, &listed, &properties).await? {
                records.push(source_record(object, result)?);
            }
        }
        Ok(records)
    }

    /// How many records of `object` match all `filters` (HubSpot search filters), and up to
    /// `limit` (at most 200) of them with `properties` — one search call.
    pub async fn search_sample(
        &self,
        object: &str,
        filters: Vec<Value>,
        properties: &[String],
        limit: usize,
    ) -> Result<(u64, Vec<SourceRecord>), ReadError> {
        let body = json!({
            "filterGroups": [{"filters": filters}],
            "properties": with_read_properties(object, properties),
            "limit": limit.clamp(1, SEARCH_PAGE),
        });
        let answer = self.post_search(object, &body).await?;
        let total = answer.body["total"]
            .as_u64()
            .ok_or_else(|| ReadError::Shape {
                object: object.to_string(),
                what: "a search answer without total".into(),
            })?;
        let mut records = Vec::new();
        if limit > 0
            && let Some(results) = answer.body["results"].as_array()
        {
            for result in results {
                records.push(source_record(object, result.clone())?);
            }
        }
        Ok((total, records))
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
        self.incremental_sweeping(object, properties, since, since, true, events)
            .await
    }

    /// Records of `object` modified since `since` (less the overlap); then, when `sweep` is
    /// set, the records archived since `archived_since` (less the overlap). The archived
    /// listing can only be read whole, so callers sweep it now and then rather than on every
    /// read; progress events keep saying where the unswept archives start.
    pub async fn incremental_sweeping(
        &self,
        object: &str,
        properties: &[String],
        since: Timestamp,
        archived_since: Timestamp,
        sweep: bool,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let start = self.less_overlap(since);
        let archived_from = self.less_overlap(archived_since);
        self.incremental_read(
            object,
            properties,
            Position::new(start),
            archived_from,
            sweep,
            events,
        )
        .await
    }

    /// Picks up a read that stopped at `point` (the last [`ReadEvent::Progress`] it sent).
    pub async fn resume(
        &self,
        object: &str,
        properties: &[String],
        point: ResumePoint,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        match point {
            ResumePoint::Full { after, started } => {
                self.full_read(object, properties, Some(after), started, events)
                    .await
            }
            ResumePoint::Incremental {
                modified_since,
                archived_since,
                tie,
            } => {
                // The overlap again: changes the search index had not shown yet at the stop.
                let mut position = Position::new(self.less_overlap(modified_since));
                position.resume_tie = tie.map(|tie| (tie.at.as_millisecond(), tie.after_id));
                self.incremental_read(object, properties, position, archived_since, true, events)
                    .await
            }
        }
    }

    fn less_overlap(&self, at: Timestamp) -> Timestamp {
        let overlap = jiff::SignedDuration::try_from(self.overlap).unwrap_or_default();
        at.checked_sub(overlap).unwrap_or(at)
    }

    /// Records modified from `position` on, then (when `sweep` is set) tombstones for records
    /// archived at or after `archived_from`.
    ///
    /// Every query starts from where the last one ended (keyset paging: `after` stays 0), so
    /// records edited while the read runs cannot shift a page boundary past a record, and
    /// the 10,000-result cap never applies. Records at the instant a page ended on are left
    /// out of the next query by id; a full page at one instant drains that instant by id.
    async fn incremental_read(
        &self,
        object: &str,
        properties: &[String],
        mut position: Position,
        archived_from: Timestamp,
        sweep: bool,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let properties = with_read_properties(object, properties);
        let modified = modified_property(object);
        let mut summary = ReadSummary::default();
        loop {
            let page = self
                .search(
                    object,
                    &properties,
                    position.filter_groups(modified),
                    modified,
                )
                .await?;
            let started_at = position.at;
            let full = page.results.len() == SEARCH_PAGE;
            let all_at_start = page
                .results
                .iter()
                .all(|record| modified_ms(record, modified) == Some(started_at));
            let fresh = position.take(page.results, modified);
            let stalled = fresh.is_empty() && position.at == started_at;
            self.deliver(object, fresh, &mut summary, events).await?;
            position.report(object, archived_from, None, events).await?;
            if !page.more {
                break;
            }
            if (full && all_at_start) || stalled {
                if position.past {
                    return Err(ReadError::Stalled {
                        object: object.to_string(),
                        what: "answers that repeat records already read".to_string(),
                    });
                }
                // More records share this instant than a page holds: read them by id.
                self.drain_instant(
                    object,
                    &properties,
                    &mut position,
                    archived_from,
                    &mut summary,
                    events,
                )
                .await?;
                position.report(object, archived_from, None, events).await?;
            }
        }
        if sweep {
            self.archived(object, Some(archived_from), &mut summary, events)
                .await?;
        }
        Ok(summary)
    }

    /// Every record modified at exactly `position.at`, in id order, skipping those read.
    async fn drain_instant(
        &self,
        object: &str,
        properties: &[String],
        position: &mut Position,
        archived_from: Timestamp,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        let modified = modified_property(object);
        // Ids compared as HubSpot compares them: each query continues after the raw id the
        // previous one ended on — or, resuming this very instant, where the stopped run got.
        let mut after_id = match position.resume_tie.take() {
            Some((at, after_id)) if at == position.at => after_id,
            other => {
                // Another instant: the stopped run's place is kept for later.
                position.resume_tie = other;
                "0".to_string()
            }
        };
        loop {
            let filters = json!([{"filters": [
                {"propertyName": modified, "operator": "EQ", "value": position.at.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": after_id},
            ]}]);
            let page = self
                .search(object, properties, filters, "hs_object_id")
                .await?;
            let last_id = page
                .results
                .last()
                .and_then(|record| record["id"].as_str())
                .map(str::to_string);
            let fresh = position.take(page.results, modified);
            self.deliver(object, fresh, summary, events).await?;
            if let Some(last) = &last_id {
                position
                    .report(object, archived_from, Some(last), events)
                    .await?;
            }
            match last_id {
                Some(last) if page.more => {
                    if last == after_id {
                        return Err(ReadError::Stalled {
                            object: object.to_string(),
                            what: format!("answers that do not move past id {last}"),
                        });
                    }
                    after_id = last;
                }
                _ => break,
            }
        }
        position.past = true;
        position.read_at.clear();
        Ok(())
    }

    /// One search page (always from the first result: queries move by their filters),
    /// sorted ascending by `sort`.
    async fn search(
        &self,
        object: &str,
        properties: &[String],
        filter_groups: Value,
        sort: &str,
    ) -> Result<SearchPage, ReadError> {
        let body = json!({
            "filterGroups": filter_groups,
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": SEARCH_PAGE,
        });
        let answer = self.post_search(object, &body).await?;
        let more = answer.body["paging"]["next"].is_object();
        let results = match answer.body {
            Value::Object(mut map) => match map.remove("results") {
                Some(Value::Array(results)) => results,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok(SearchPage { results, more })
    }

    /// One call to `object`'s search endpoint, on the search budget.
    async fn post_search(&self, object: &str, body: &Value) -> Result<Answer, ReadError> {
        let answer = self
            .client
            .send(
                Budget::Search,
                Method::POST,
                &format!("/crm/v3/objects/{object}/search"),
                &[],
                Some(body),
                object,
            )
            .await?;
        Ok(answer)
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
            // The property search filters on, where HubSpot sends it.
            let modified_at = record
                .properties
                .get(modified_property(object))
                .and_then(Value::as_str)
                .and_then(parse_hubspot_time)
                .unwrap_or(record.modified_at);
            summary.high_water = summary.high_water.max(Some(modified_at));
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

/// One page of search results, and whether the query matched more.
struct SearchPage {
    results: Vec<Value>,
    more: bool,
}

/// Ids at most one query leaves out with `NOT_IN`.
const MAX_EXCLUDED_IDS: usize = 100;

/// How far an incremental read has come: every record modified before `at` (ms) has been
/// handed over, and of those modified at `at`, the ids in `read_at` — or all of them once
/// `past` is set.
#[derive(Debug)]
struct Position {
    at: i64,
    read_at: HashSet<String>,
    past: bool,
    /// Where a stopped run got through the records of one instant (ms, id).
    resume_tie: Option<(i64, String)>,
}

impl Position {
    fn new(from: Timestamp) -> Self {
        Self {
            at: from.as_millisecond(),
            read_at: HashSet::new(),
            past: false,
            resume_tie: None,
        }
    }

    /// The next query's filters: past `at`, or at it but for the ids already read.
    fn filter_groups(&self, modified: &str) -> Value {
        let at = self.at.to_string();
        if self.past {
            return json!([{"filters": [{"propertyName": modified, "operator": "GT", "value": at}]}]);
        }
        if self.read_at.is_empty() || self.read_at.len() > MAX_EXCLUDED_IDS {
            // Too many to leave out: those read come back and are skipped here.
            return json!([{"filters": [{"propertyName": modified, "operator": "GTE", "value": at}]}]);
        }
        let mut read: Vec<&String> = self.read_at.iter().collect();
        read.sort();
        json!([
            {"filters": [{"propertyName": modified, "operator": "GT", "value": at}]},
            {"filters": [
                {"propertyName": modified, "operator": "EQ", "value": at},
                {"propertyName": "hs_object_id", "operator": "NOT_IN", "values": read},
            ]},
        ])
    }

    /// Moves past a page of results (ascending by modification time); returns those not
    /// read before.
    fn take(&mut self, results: Vec<Value>, modified: &str) -> Vec<Value> {
        let mut fresh = Vec::with_capacity(results.len());
        for record in results {
            let Some(id) = record["id"].as_str().map(str::to_string) else {
                fresh.push(record);
                continue;
            };
            match modified_ms(&record, modified) {
                Some(ms) if ms > self.at => {
                    self.at = ms;
                    self.past = false;
                    self.read_at.clear();
                    self.read_at.insert(id);
                    fresh.push(record);
                }
                Some(ms) if ms == self.at && self.past => {}
                _ => {
                    if self.read_at.insert(id) {
                        fresh.push(record);
                    }
                }
            }
        }
        fresh
    }

    /// Tells the engine where a stopped read would pick up (`tie_after`: the last id read
    /// of the records at this instant, while they are read by id).
    async fn report(
        &self,
        object: &str,
        archived_since: Timestamp,
        tie_after: Option<&str>,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        let next = if self.past { self.at + 1 } else { self.at };
        let (Ok(modified_since), Ok(at)) = (
            Timestamp::from_millisecond(next),
            Timestamp::from_millisecond(self.at),
        ) else {
            return Ok(());
        };
        let point = ResumePoint::Incremental {
            modified_since,
            archived_since,
            tie: tie_after.map(|after_id| TieProgress {
                at,
                after_id: after_id.to_string(),
            }),
        };
        send(events, ReadEvent::Progress(point), object).await
    }
}

/// A search result's modification time in epoch milliseconds.
fn modified_ms(record: &Value, modified: &str) -> Option<i64> {
    record["properties"][modified]
        .as_str()
        .and_then(parse_hubspot_time)
        .map(|at| at.as_millisecond())
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
/// The `results` array of an answer's body, taken out of it (the rest, `paging` say, stays):
/// pages are moved into records, not copied.
fn take_results(body: &mut Value) -> Vec<Value> {
    match body.get_mut("results").map(Value::take) {
        Some(Value::Array(results)) => results,
        _ => Vec::new(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, modified_ms: i64) -> Value {
        json!({"id": id, "properties": {"lastmodifieddate": modified_ms.to_string()}})
    }

    #[test]
    fn the_next_query_leaves_out_what_was_read_at_the_last_instant() {
        let start = Timestamp::from_millisecond(1_000).expect("time");
        let mut position = Position::new(start);
        let fresh = position.take(
            vec![record("1", 1_000), record("2", 2_000), record("3", 2_000)],
            "lastmodifieddate",
        );
        assert_eq!(fresh.len(), 3);
        assert_eq!(position.at, 2_000);
        let groups = position.filter_groups("lastmodifieddate");
        assert_eq!(groups[0]["filters"][0]["operator"], "GT");
        assert_eq!(groups[1]["filters"][1]["operator"], "NOT_IN");
        assert_eq!(groups[1]["filters"][1]["values"], json!(["2", "3"]));
        // Already read: skipped when it comes back.
        let again = position.take(
            vec![record("3", 2_000), record("4", 2_000)],
            "lastmodifieddate",
        );
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn more_ids_than_one_filter_takes_fall_back_to_reading_them_again() {
        let mut position = Position::new(Timestamp::from_millisecond(0).expect("time"));
        let page: Vec<Value> = (0..=MAX_EXCLUDED_IDS)
            .map(|n| record(&n.to_string(), 5_000))
            .collect();
        position.take(page, "lastmodifieddate");
        let groups = position.filter_groups("lastmodifieddate");
        assert_eq!(groups.as_array().map(Vec::len), Some(1));
        assert_eq!(groups[0]["filters"][0]["operator"], "GTE");
        position.past = true;
        assert_eq!(
            position.filter_groups("lastmodifieddate")[0]["filters"][0]["operator"],
            "GT"
        );
    }
}
