//! Reading Salesforce objects into [`SourceRecord`]s over the REST query API, page by page
//! (2,000 a page, through `nextRecordsUrl`) into a bounded channel.
//!
//! - Full reads select every live record ordered by `Id`; a stopped one resumes after the
//!   last id handed over.
//! - Incremental reads use `queryAll` on `SystemModstamp >=` the checkpoint less an overlap
//!   (records committed late carry earlier stamps), ordered by `SystemModstamp, Id`, so
//!   deleted records come too — as tombstones, and as merges when `MasterRecordId` names the
//!   record they were merged into. A stopped read resumes from the latest stamp handed over,
//!   less the overlap again: records at the boundary may come twice, none is skipped.
//! - Reads of more records than a threshold (50,000 by default; the first REST page's
//!   `totalSize` decides) go through a Bulk API 2.0 query job instead: the same records, unsorted (Bulk jobs do not
//!   sort), so such a read says where to resume only once the job is done.
//! - Converted leads carry `ConvertedContactId`, `ConvertedAccountId` and
//!   `ConvertedOpportunityId`; reads of leads always select them.

use std::time::Duration;

use http::Method;
use jiff::Timestamp;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::bulk::{BulkError, BulkPages, BulkSettings};
use super::client::{Body, SalesforceClient, SalesforceError};
use super::describe::ObjectDescribe;
use super::soql::{Condition, Direction, Literal, Operator, SoqlError, SoqlQuery};
use crate::record::{Merge, Properties, SourceRecord, System, Tombstone};

/// Records a query page holds (Salesforce's maximum).
pub const PAGE_SIZE: u32 = 2_000;

/// What a Salesforce read hands the engine, in order.
pub type ReadEvent = crate::record::ReadEvent<ResumePoint>;

/// Where a read can pick up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePoint {
    /// A full read: every record up to this id (in id order) is handed over; `started` is
    /// when the read first began, where the next incremental read starts.
    Full {
        after_id: String,
        started: Timestamp,
    },
    /// An incremental read: every record modified before this is handed over. A resumed
    /// read starts the overlap before it again — records committed late carry earlier
    /// stamps — so records at the boundary may come twice, but none is skipped.
    Incremental { modstamp: Timestamp },
}

/// How a read went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSummary {
    pub records: usize,
    pub deleted: usize,
    pub merges: usize,
    /// Where the next incremental read starts: the latest `SystemModstamp` read (for a full
    /// read, the time it started).
    pub high_water: Option<Timestamp>,
}

/// Why a read stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Api(#[from] SalesforceError),
    #[error(transparent)]
    Query(#[from] SoqlError),
    #[error(transparent)]
    Bulk(#[from] BulkError),
    #[error("the engine stopped taking {object} records before the read was done")]
    Closed { object: String },
    #[error(
        "Salesforce sent a {object} record crmsync cannot read ({what}) — its answer changed shape; please report it"
    )]
    Shape { object: String, what: String },
}

/// Reads objects of one org.
#[derive(Debug)]
pub struct SalesforceReader<'a> {
    client: &'a SalesforceClient,
    /// Incremental reads start this long before the checkpoint.
    pub overlap: Duration,
    /// Reads of more records than this go through a Bulk API 2.0 query job (one count query
    /// first decides); `u64::MAX` never does and skips the count.
    pub bulk_threshold: u64,
    /// How Bulk API jobs are waited for and read.
    pub bulk: BulkSettings,
}

/// Reads of more records than this use the Bulk API by default.
pub const DEFAULT_BULK_THRESHOLD: u64 = 50_000;

impl<'a> SalesforceReader<'a> {
    pub fn new(client: &'a SalesforceClient) -> Self {
        Self {
            client,
            overlap: Duration::from_secs(60),
            bulk_threshold: DEFAULT_BULK_THRESHOLD,
            bulk: BulkSettings::default(),
        }
    }

    /// The pages of a query: REST for up to `bulk_threshold` matching records, else a Bulk
    /// API job (`queryAll` when deleted records are wanted).
    async fn pages(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        condition: Option<&Condition>,
        order: &[&str],
        include_deleted: bool,
    ) -> Result<Source<'a>, ReadError> {
        let mut query = SoqlQuery::select(describe, fields)?;
        if let Some(condition) = condition {
            query = query.filter(condition)?;
        }
        let unordered = query.clone();
        for field in order {
            query = query.order_by(field, Direction::Ascending)?;
        }
        let resource = if include_deleted { "queryAll" } else { "query" };
        let mut rest = Pages::new(self.client, resource, query.build());
        // The first REST page says how many records match: a small read goes on from it, a
        // large one leaves it for a Bulk job (one call either way; none extra when small).
        if self.bulk_threshold == u64::MAX
            || rest.total(&describe.name).await? <= self.bulk_threshold
        {
            return Ok(Source::Rest(rest));
        }
        // Bulk jobs do not sort (ORDER BY is unsupported or slows them badly): rows come in
        // the job's own order, so progress is only known when the job is done.
        Ok(Source::Bulk(BulkPages::new(
            self.client,
            describe,
            unordered.build(),
            include_deleted,
            self.bulk,
        )))
    }

    /// Every live record of the object `describe` tells of, with `fields`.
    pub async fn full(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        // Where the next incremental read starts: when this one started, by the earlier of
        // the org's clock (its last answer) and ours, so a clock running ahead skips nothing.
        let local = Timestamp::now();
        let started = self
            .client
            .server_clock()
            .map_or(local, |server| server.min(local));
        self.full_read(describe, fields, None, started, events)
            .await
    }

    /// Records modified (or deleted) since `since`, less the overlap.
    pub async fn incremental(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        since: Timestamp,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let overlap = jiff::SignedDuration::try_from(self.overlap).unwrap_or_default();
        let from = since.checked_sub(overlap).unwrap_or(since);
        let condition = Condition::compare("SystemModstamp", Operator::Ge, Literal::DateTime(from));
        self.incremental_read(describe, fields, condition, events)
            .await
    }

    /// Picks up a read that stopped at `point` (the last progress it sent).
    pub async fn resume(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        point: ResumePoint,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        match point {
            ResumePoint::Full { after_id, started } => {
                self.full_read(describe, fields, Some(after_id), started, events)
                    .await
            }
            ResumePoint::Incremental { modstamp } => {
                self.incremental(describe, fields, modstamp, events).await
            }
        }
    }

    /// The live records `ids` of the object `describe` tells of, as they are now, with
    /// `fields` (200 ids a query). Ids the org no longer has live (deleted, merged away) are
    /// absent from the answer.
    pub async fn by_ids(
        &self,
        describe: &ObjectDescribe,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<SourceRecord>, ReadError> {
        let selected = read_fields(describe, fields, false);
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let condition = Condition::is_in(
                "Id",
                chunk.iter().map(|id| Literal::Id(id.clone())).collect(),
            );
            let query = SoqlQuery::select(describe, &selected)?.filter(&condition)?;
            let mut pages = Pages::new(self.client, "query", query.build());
            while let Some(page) = pages.next(&describe.name).await? {
                records.extend(page);
            }
        }
        Ok(records)
    }

    /// How many live records match `condition` (`SELECT COUNT()`, one call).
    pub async fn count(
        &self,
        describe: &ObjectDescribe,
        condition: &Condition,
    ) -> Result<u64, ReadError> {
        let query = SoqlQuery::count(describe).filter(condition)?;
        Pages::new(self.client, "query", query.build())
            .total(&describe.name)
            .await
    }

    /// Up to `limit` live records matching `condition`, with `fields` (one call).
    pub async fn sample(
        &self,
        describe: &ObjectDescribe,
        fields: &[String],
        condition: &Condition,
        limit: u64,
    ) -> Result<Vec<SourceRecord>, ReadError> {
        let selected = read_fields(describe, fields, false);
        let query = SoqlQuery::select(describe, &selected)?
            .filter(condition)?
            .limit(limit);
        let mut pages = Pages::new(self.client, "query", query.build());
        Ok(pages.next(&describe.name).await?.unwrap_or_default())
    }

    async fn full_read(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        after_id: Option<String>,
        started: Timestamp,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let object = describe.name.as_str();
        let fields = read_fields(describe, fields, false);
        let condition =
            after_id.map(|after_id| Condition::compare("Id", Operator::Gt, Literal::Id(after_id)));
        let mut pages = self
            .pages(describe, &fields, condition.as_ref(), &["Id"], false)
            .await?;
        let mut summary = ReadSummary::default();
        // The largest id handed over: the place to resume, once everything up to it is in.
        let mut furthest: Option<String> = None;
        while let Some(records) = pages.next(object).await? {
            for record in &records {
                if furthest
                    .as_deref()
                    .is_none_or(|id| id_order(&record.id, id).is_gt())
                {
                    furthest = Some(record.id.clone());
                }
            }
            self.deliver(object, records, &mut summary, events).await?;
            if let (true, Some(after_id)) = (pages.ordered(), furthest.clone()) {
                let point = ResumePoint::Full { after_id, started };
                send(events, ReadEvent::Progress(point), object).await?;
            }
        }
        if let (false, Some(after_id)) = (pages.ordered(), furthest) {
            let point = ResumePoint::Full { after_id, started };
            send(events, ReadEvent::Progress(point), object).await?;
        }
        summary.high_water = Some(started);
        Ok(summary)
    }

    async fn incremental_read(
        &self,
        describe: &'a ObjectDescribe,
        fields: &[String],
        condition: Condition,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<ReadSummary, ReadError> {
        let object = describe.name.as_str();
        let fields = read_fields(describe, fields, true);
        let mut summary = ReadSummary::default();
        // queryAll: deleted records (IsDeleted) come along.
        let mut pages = self
            .pages(
                describe,
                &fields,
                Some(&condition),
                &["SystemModstamp", "Id"],
                true,
            )
            .await?;
        // The latest modification handed over: the place to resume, once everything up to
        // it is in.
        let mut latest: Option<Timestamp> = None;
        while let Some(records) = pages.next(object).await? {
            latest = records
                .iter()
                .map(|record| record.modified_at)
                .chain(latest)
                .max();
            self.deliver(object, records, &mut summary, events).await?;
            if let (true, Some(modstamp)) = (pages.ordered(), latest) {
                let point = ResumePoint::Incremental { modstamp };
                send(events, ReadEvent::Progress(point), object).await?;
            }
        }
        if let (false, Some(modstamp)) = (pages.ordered(), latest) {
            let point = ResumePoint::Incremental { modstamp };
            send(events, ReadEvent::Progress(point), object).await?;
        }
        Ok(summary)
    }

    /// Hands a page on: live records, then tombstones and merges for deleted ones.
    async fn deliver(
        &self,
        object: &str,
        records: Vec<SourceRecord>,
        summary: &mut ReadSummary,
        events: &mpsc::Sender<ReadEvent>,
    ) -> Result<(), ReadError> {
        let mut live = Vec::with_capacity(records.len());
        let mut deleted = Vec::new();
        let mut merges: Vec<Merge> = Vec::new();
        for record in records {
            summary.high_water = summary.high_water.max(Some(record.modified_at));
            if record.properties.get("IsDeleted").and_then(Value::as_bool) != Some(true) {
                live.push(record);
                continue;
            }
            if let Some(master) = record
                .properties
                .get("MasterRecordId")
                .and_then(Value::as_str)
                .filter(|master| !master.is_empty())
            {
                match merges.iter_mut().find(|merge| merge.survivor == master) {
                    Some(merge) => merge.absorbed.push(record.id.clone()),
                    None => merges.push(Merge {
                        survivor: master.to_string(),
                        absorbed: vec![record.id.clone()],
                    }),
                }
            }
            deleted.push(Tombstone {
                id: record.id,
                archived_at: Some(record.modified_at),
            });
        }
        if !live.is_empty() {
            summary.records += live.len();
            send(events, ReadEvent::Records(live), object).await?;
        }
        if !deleted.is_empty() {
            summary.deleted += deleted.len();
            send(events, ReadEvent::Archived(deleted), object).await?;
        }
        if !merges.is_empty() {
            summary.merges += merges.len();
            send(events, ReadEvent::Merged(merges), object).await?;
        }
        Ok(())
    }
}

/// Where a read's pages come from.
enum Source<'c> {
    Rest(Pages<'c>),
    Bulk(BulkPages<'c>),
}

impl Source<'_> {
    /// Whether records come in the query's order (REST), or in a Bulk job's own.
    fn ordered(&self) -> bool {
        matches!(self, Source::Rest(_))
    }

    async fn next(&mut self, object: &str) -> Result<Option<Vec<SourceRecord>>, ReadError> {
        match self {
            Source::Rest(pages) => pages.next(object).await,
            Source::Bulk(pages) => match pages.next().await? {
                Some(rows) => super::bulk::to_source_records(object, rows).map(Some),
                None => Ok(None),
            },
        }
    }
}

/// The pages of one query: the first from `query`/`queryAll`, the rest from each answer's
/// `nextRecordsUrl`.
struct Pages<'c> {
    client: &'c SalesforceClient,
    next: Option<(String, Vec<(&'static str, String)>)>,
    /// A page already fetched (the first, whose `totalSize` chose REST), not yet handed out.
    fetched: Option<Map<String, Value>>,
}

impl<'c> Pages<'c> {
    fn new(client: &'c SalesforceClient, resource: &str, soql: String) -> Self {
        Self {
            client,
            next: Some((client.data_path(resource), vec![("q", soql)])),
            fetched: None,
        }
    }

    /// Fetches the first page ahead, and tells how many records the query matches.
    async fn total(&mut self, object: &str) -> Result<u64, ReadError> {
        let page = self.fetch(object).await?;
        let total = page
            .as_ref()
            .and_then(|page| page.get("totalSize"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        self.fetched = page;
        Ok(total)
    }

    async fn next(&mut self, object: &str) -> Result<Option<Vec<SourceRecord>>, ReadError> {
        let page = match self.fetched.take() {
            Some(page) => Some(page),
            None => self.fetch(object).await?,
        };
        let Some(mut page) = page else {
            return Ok(None);
        };
        let records = match page.remove("records") {
            Some(Value::Array(records)) => records,
            _ => {
                return Err(ReadError::Shape {
                    object: object.to_string(),
                    what: "a query answer without records".into(),
                });
            }
        };
        records
            .into_iter()
            .map(|record| source_record(object, record))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The next page's answer, and where the one after it is.
    async fn fetch(&mut self, object: &str) -> Result<Option<Map<String, Value>>, ReadError> {
        let Some((path, query)) = self.next.take() else {
            return Ok(None);
        };
        let answer = self
            .client
            .send(
                Method::GET,
                &path,
                &query,
                Body::None,
                "application/json",
                &[("Sforce-Query-Options", format!("batchSize={PAGE_SIZE}"))],
                object,
            )
            .await?;
        let shape = |what: &str| ReadError::Shape {
            object: object.to_string(),
            what: what.to_string(),
        };
        let page = match answer.json() {
            Ok(Value::Object(page)) => page,
            _ => return Err(shape("a query answer that is not a JSON object")),
        };
        if page.get("done").and_then(Value::as_bool) == Some(false) {
            let next = page
                .get("nextRecordsUrl")
                .and_then(Value::as_str)
                .ok_or_else(|| shape("a query answer not done and without nextRecordsUrl"))?;
            self.next = Some((next.to_string(), Vec::new()));
        }
        Ok(Some(page))
    }
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

/// The fields a read selects: the configured ones (those the org has) plus what reading
/// needs — `Id`, `SystemModstamp`, and for incremental reads `IsDeleted` and the merge
/// master; for leads the conversion links.
fn read_fields(describe: &ObjectDescribe, fields: &[String], incremental: bool) -> Vec<String> {
    let mut wanted: Vec<String> = vec!["Id".to_string(), "SystemModstamp".to_string()];
    wanted.extend(fields.iter().cloned());
    if incremental {
        wanted.extend(["IsDeleted", "MasterRecordId"].map(str::to_string));
    }
    if describe.name == "Lead" {
        wanted.extend(
            [
                "IsConverted",
                "ConvertedDate",
                "ConvertedContactId",
                "ConvertedAccountId",
                "ConvertedOpportunityId",
            ]
            .map(str::to_string),
        );
    }
    let mut seen = Vec::new();
    wanted
        .into_iter()
        .filter(|name| {
            // Configured fields the org lacks are caught by the query builder; the ones
            // added here are skipped where the object has none (Opportunity has no master).
            let needed = fields.contains(name) || describe.field(name).is_some();
            let fresh = !seen
                .iter()
                .any(|seen: &String| seen.eq_ignore_ascii_case(name));
            if needed && fresh {
                seen.push(name.clone());
            }
            needed && fresh
        })
        .collect()
}

/// One API record (`{"attributes", "Id", …}`) as a source record.
pub(super) fn source_record(object: &str, record: Value) -> Result<SourceRecord, ReadError> {
    let shape = |what: String| ReadError::Shape {
        object: object.to_string(),
        what,
    };
    let Value::Object(mut fields) = record else {
        return Err(shape("a record that is not an object".into()));
    };
    fields.remove("attributes");
    let id = fields
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("a record without Id".into()))?
        .to_string();
    let modified_at = fields
        .get("SystemModstamp")
        .and_then(Value::as_str)
        .and_then(parse_salesforce_time)
        .ok_or_else(|| shape(format!("record {id} without a readable SystemModstamp")))?;
    Ok(SourceRecord {
        system: System::Salesforce,
        object: object.to_string(),
        id,
        modified_at,
        properties: flatten(fields),
    })
}

/// Fields as properties; a relationship (`Owner: {attributes, Email}`) keeps its fields
/// without the attributes.
fn flatten(fields: Map<String, Value>) -> Properties {
    fields
        .into_iter()
        .map(|(name, value)| match value {
            Value::Object(mut nested) => {
                nested.remove("attributes");
                (name, Value::Object(nested))
            }
            other => (name, other),
        })
        .collect()
}

/// Salesforce's order of record ids: by their case-sensitive 15-character form (the
/// 18-character form adds a checksum that sorts with it).
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let stem = |id: &str| id.get(..15).unwrap_or(id).to_string();
    stem(a).cmp(&stem(b))
}

/// Salesforce's JSON date-time: `2024-05-07T22:07:19.000+0000` (no colon in the offset), or
/// any RFC 3339 form.
pub fn parse_salesforce_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok().or_else(|| {
        jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%z", text)
            .ok()
            .and_then(|parsed| parsed.to_timestamp().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_times_parse_with_or_without_the_colon() {
        let expected = Timestamp::from_second(1_715_119_639).expect("time");
        for text in [
            "2024-05-07T22:07:19.000+0000",
            "2024-05-07T22:07:19Z",
            "2024-05-07T23:07:19.000+0100",
        ] {
            assert_eq!(parse_salesforce_time(text), Some(expected), "{text}");
        }
        assert_eq!(parse_salesforce_time("yesterday"), None);
    }
}
