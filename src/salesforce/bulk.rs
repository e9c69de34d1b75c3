//! Bulk API 2.0 query jobs, for reads too large for the REST query path: create a job from
//! SOQL (`query`, or `queryAll` to include deleted records), poll it with growing waits until
//! it completes, then stream its CSV results set by set (`Sforce-Locator`), each set turned
//! into the same records the REST path gives — CSV cells typed by the object's describe. Also
//! the jobs' end: deleted once read, and closed (aborted, deleted) when a read leaves one
//! part-read ([`close_open_jobs`]).

use std::time::Duration;

use http::Method;
use serde_json::{Map, Value, json};

use super::client::{Body, SalesforceClient, SalesforceError};
use super::describe::ObjectDescribe;
use crate::record::SourceRecord;

/// Why a bulk query did not give its results.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error(transparent)]
    Api(#[from] SalesforceError),
    #[error("the Bulk API query job {job} for {object} ended {state}: {message}")]
    Failed {
        job: String,
        object: String,
        state: String,
        message: String,
    },
    #[error(
        "the Bulk API query job {job} for {object} was not done after {waited:?} — Salesforce may be busy; the run can be retried later"
    )]
    TimedOut {
        job: String,
        object: String,
        waited: Duration,
    },
    #[error(
        "the Bulk API results for {object} are not CSV crmsync can read ({what}) — please report it"
    )]
    Csv { object: String, what: String },
}

/// How a job is waited for and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSettings {
    pub first_wait: Duration,
    pub longest_wait: Duration,
    /// Give up (and abort the job) after waiting this long in all.
    pub give_up_after: Duration,
    /// Rows asked for per result set.
    pub rows_per_set: u32,
}

impl Default for BulkSettings {
    fn default() -> Self {
        Self {
            first_wait: Duration::from_millis(250),
            longest_wait: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60 * 60),
            rows_per_set: 50_000,
        }
    }
}

enum Stage {
    Start {
        soql: String,
        include_deleted: bool,
    },
    Results {
        job: String,
        locator: Option<String>,
    },
    Done,
}

/// Records handed over per page: a result set (up to `rows_per_set` rows) is downloaded
/// whole but turned into records a page at a time, so memory holds its text and one page.
pub const ROWS_PER_PAGE: usize = 2_000;

/// A downloaded result set, read a page at a time.
struct ResultSet {
    reader: csv::Reader<std::io::Cursor<Vec<u8>>>,
    headers: Vec<String>,
    kinds: Vec<String>,
}

/// The result sets of one query job, in order.
pub struct BulkPages<'c> {
    client: &'c SalesforceClient,
    describe: &'c ObjectDescribe,
    settings: BulkSettings,
    stage: Stage,
    set: Option<ResultSet>,
}

impl<'c> BulkPages<'c> {
    pub fn new(
        client: &'c SalesforceClient,
        describe: &'c ObjectDescribe,
        soql: String,
        include_deleted: bool,
        settings: BulkSettings,
    ) -> Self {
        Self {
            client,
            describe,
            settings,
            stage: Stage::Start {
                soql,
                include_deleted,
            },
            set: None,
        }
    }

    /// The next page of records (up to [`ROWS_PER_PAGE`]), or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Value>>, BulkError> {
        loop {
            if let Some(set) = &mut self.set {
                let page = set.page(self.describe)?;
                if !page.is_empty() {
                    return Ok(Some(page));
                }
                self.set = None;
            }
            match self.next_set().await? {
                Some(set) => self.set = Some(set),
                None => return Ok(None),
            }
        }
    }

    /// Downloads the next result set, or `None` after the last.
    async fn next_set(&mut self) -> Result<Option<ResultSet>, BulkError> {
        if let Stage::Start {
            soql,
            include_deleted,
        } = &self.stage
        {
            let job = self.create(soql, *include_deleted).await?;
            self.client.note_query_job(&job, &self.describe.name);
            self.wait(&job).await?;
            self.stage = Stage::Results { job, locator: None };
        }
        let Stage::Results { job, locator } = &self.stage else {
            return Ok(None);
        };
        let job = job.clone();
        let mut query = vec![("maxRecords", self.settings.rows_per_set.to_string())];
        if let Some(locator) = locator {
            query.push(("locator", locator.clone()));
        }
        let object = self.describe.name.as_str();
        let answer = self
            .client
            .send(
                Method::GET,
                &self.client.data_path(&format!("jobs/query/{job}/results")),
                &query,
                Body::None,
                "text/csv",
                &[],
                object,
            )
            .await?;
        let next = answer
            .headers
            .get("sforce-locator")
            .and_then(|value| value.to_str().ok())
            .filter(|locator| !locator.is_empty() && *locator != "null")
            .map(str::to_string);
        self.stage = match next {
            Some(locator) => Stage::Results {
                job,
                locator: Some(locator),
            },
            None => {
                // Every result is downloaded: the job's copy of the records goes (Salesforce
                // would keep it for days).
                if let Err(error) = delete_job(self.client, &job, object).await {
                    tracing::warn!(job, %error, "could not delete the Bulk API query job");
                }
                Stage::Done
            }
        };
        ResultSet::new(self.describe, answer.body).map(Some)
    }

    async fn create(&self, soql: &str, include_deleted: bool) -> Result<String, BulkError> {
        let object = self.describe.name.as_str();
        let body = json!({
            "operation": if include_deleted { "queryAll" } else { "query" },
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        });
        let answer = self
            .client
            .send(
                Method::POST,
                &self.client.data_path("jobs/query"),
                &[],
                Body::Json(&body),
                "application/json",
                &[],
                object,
            )
            .await?;
        let info = answer.json().unwrap_or(Value::Null);
        info["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BulkError::Csv {
                object: object.to_string(),
                what: "a job answer without an id".into(),
            })
    }

    /// Stops a job given up on, so it does not run on in the org; a failure to is only logged.
    async fn abort(&self, job: &str) {
        if let Err(error) = abort_job(self.client, job, &self.describe.name).await {
            tracing::warn!(job, %error, "could not abort the Bulk API query job");
        }
    }

    /// Polls the job, waiting longer each time, until it completes.
    async fn wait(&self, job: &str) -> Result<(), BulkError> {
        let object = self.describe.name.as_str();
        let mut waited = Duration::ZERO;
        let mut wait = self.settings.first_wait;
        loop {
            let answer = self
                .client
                .send(
                    Method::GET,
                    &self.client.data_path(&format!("jobs/query/{job}")),
                    &[],
                    Body::None,
                    "application/json",
                    &[],
                    object,
                )
                .await?;
            let info = answer.json().unwrap_or(Value::Null);
            match info["state"].as_str().unwrap_or_default() {
                "JobComplete" => return Ok(()),
                "Failed" | "Aborted" => {
                    return Err(BulkError::Failed {
                        job: job.to_string(),
                        object: object.to_string(),
                        state: info["state"].as_str().unwrap_or_default().to_string(),
                        message: info["errorMessage"]
                            .as_str()
                            .unwrap_or("no message")
                            .to_string(),
                    });
                }
                _ => {}
            }
            if waited >= self.settings.give_up_after {
                self.abort(job).await;
                return Err(BulkError::TimedOut {
                    job: job.to_string(),
                    object: object.to_string(),
                    waited,
                });
            }
            tokio::time::sleep(wait).await;
            waited += wait;
            wait = (wait * 2).min(self.settings.longest_wait);
        }
    }
}

async fn abort_job(
    client: &SalesforceClient,
    job: &str,
    object: &str,
) -> Result<(), SalesforceError> {
    client
        .send(
            Method::PATCH,
            &client.data_path(&format!("jobs/query/{job}")),
            &[],
            Body::Json(&json!({"state": "Aborted"})),
            "application/json",
            &[],
            object,
        )
        .await
        .map(drop)
}

/// Deletes a job that has ended, with its results. A job already gone (an earlier delete
/// landed though its answer was lost) counts as deleted.
async fn delete_job(
    client: &SalesforceClient,
    job: &str,
    object: &str,
) -> Result<(), SalesforceError> {
    let deleted = client
        .send(
            Method::DELETE,
            &client.data_path(&format!("jobs/query/{job}")),
            &[],
            Body::None,
            "application/json",
            &[],
            object,
        )
        .await;
    match deleted {
        Ok(_) => {}
        Err(SalesforceError::Rejected(refusal)) if refusal.status == 404 => {}
        Err(error) => return Err(error),
    }
    client.forget_query_job(job);
    Ok(())
}

/// Ends the query jobs on `object` that `client` created and did not finish reading — a read
/// stopped or failed part way — deleting each with its results; one still running (which
/// Salesforce does not delete) is aborted first, so it stops using the org's resources.
/// Returns how many were deleted; failures are logged (the org drops ended jobs after some
/// days anyway).
pub async fn close_open_jobs(client: &SalesforceClient, object: &str) -> usize {
    let mut closed = 0;
    for job in client.open_query_jobs(object) {
        let mut deleted = delete_job(client, &job, object).await;
        if matches!(&deleted, Err(SalesforceError::Rejected(refusal)) if refusal.status == 400) {
            if let Err(error) = abort_job(client, &job, object).await {
                tracing::warn!(job, %error, "could not abort the Bulk API query job");
            }
            deleted = delete_job(client, &job, object).await;
        }
        match deleted {
            Ok(()) => closed += 1,
            Err(error) => {
                tracing::warn!(job, %error, "could not delete the Bulk API query job")
            }
        }
    }
    closed
}

/// CSV rows as JSON records typed like the REST API's: booleans and numbers by the field's
/// type, empty cells as null.
impl ResultSet {
    fn new(describe: &ObjectDescribe, csv: Vec<u8>) -> Result<Self, BulkError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(std::io::Cursor::new(csv));
        let headers: Vec<String> = reader
            .headers()
            .map_err(|error| csv_failure(describe, error))?
            .iter()
            .map(str::to_string)
            .collect();
        let kinds = headers
            .iter()
            .map(|name| {
                describe
                    .field(name)
                    .map_or("string", |field| field.kind.as_str())
                    .to_string()
            })
            .collect();
        Ok(Self {
            reader,
            headers,
            kinds,
        })
    }

    /// Up to [`ROWS_PER_PAGE`] more records; empty when the set is read.
    fn page(&mut self, describe: &ObjectDescribe) -> Result<Vec<Value>, BulkError> {
        let mut records = Vec::new();
        let mut row = csv::StringRecord::new();
        while records.len() < ROWS_PER_PAGE {
            let more = self
                .reader
                .read_record(&mut row)
                .map_err(|error| csv_failure(describe, error))?;
            if !more {
                break;
            }
            let mut record = Map::with_capacity(self.headers.len());
            for ((name, kind), cell) in self.headers.iter().zip(&self.kinds).zip(row.iter()) {
                record.insert(name.clone(), typed(kind, cell));
            }
            records.push(Value::Object(record));
        }
        Ok(records)
    }
}

fn csv_failure(describe: &ObjectDescribe, error: csv::Error) -> BulkError {
    BulkError::Csv {
        object: describe.name.clone(),
        what: error.to_string(),
    }
}

fn typed(kind: &str, cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    match kind {
        "boolean" => match cell {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        "int" | "long" => cell
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(cell.to_string())),
        // REST's notation (`…T22:07:19.000+0000`), whichever the CSV uses.
        "datetime" => super::read::parse_salesforce_time(cell)
            .map(|at| Value::String(at.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()))
            .unwrap_or_else(|| Value::String(cell.to_string())),
        "double" | "currency" | "percent" => cell
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(cell.to_string())),
        _ => Value::String(cell.to_string()),
    }
}

/// Records of a result set.
pub fn to_source_records(
    object: &str,
    rows: Vec<Value>,
) -> Result<Vec<SourceRecord>, super::read::ReadError> {
    rows.into_iter()
        .map(|row| super::read::source_record(object, row))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::describe::FieldInfo;

    #[test]
    fn cells_are_typed_like_rest_answers() {
        let field = |name: &str, kind: &str| FieldInfo {
            name: name.into(),
            label: name.into(),
            kind: kind.into(),
            filterable: true,
            updateable: true,
            external_id: false,
            restricted_picklist: false,
            picklist: Vec::new(),
        };
        let describe = ObjectDescribe {
            name: "Lead".into(),
            fields: [
                field("Id", "id"),
                field("IsConverted", "boolean"),
                field("AnnualRevenue", "currency"),
                field("NumberOfEmployees", "int"),
                field("LastName", "string"),
                field("SystemModstamp", "datetime"),
            ]
            .into_iter()
            .map(|info| (info.name.clone(), info))
            .collect(),
        };
        let csv = "\"Id\",\"IsConverted\",\"AnnualRevenue\",\"NumberOfEmployees\",\"LastName\",\"SystemModstamp\"\n\"00Q1\",\"true\",\"1500000.5\",\"40\",\"O'Brien, \"\"Jr\"\"\",\"2024-05-07T22:07:19.000Z\"\n\"00Q2\",\"false\",\"\",\"\",\"line\nbreak\",\"2024-05-07T22:07:19.000+0000\"\n";
        let mut set = ResultSet::new(&describe, csv.as_bytes().to_vec()).expect("csv");
        let records = set.page(&describe).expect("rows");
        assert!(set.page(&describe).expect("end").is_empty());
        assert_eq!(
            records,
            [
                json!({"Id": "00Q1", "IsConverted": true, "AnnualRevenue": 1500000.5, "NumberOfEmployees": 40, "LastName": "O'Brien, \"Jr\"", "SystemModstamp": "2024-05-07T22:07:19.000+0000"}),
                json!({"Id": "00Q2", "IsConverted": false, "AnnualRevenue": null, "NumberOfEmployees": null, "LastName": "line\nbreak", "SystemModstamp": "2024-05-07T22:07:19.000+0000"}),
            ]
        );
        // A large set is handed over a page at a time.
        let mut big = String::from("\"Id\",\"LastName\"\n");
        for row in 0..(ROWS_PER_PAGE + 5) {
            big.push_str(&format!("\"00Q{row}\",\"L{row}\"\n"));
        }
        let mut set = ResultSet::new(&describe, big.into_bytes()).expect("csv");
        assert_eq!(set.page(&describe).expect("rows").len(), ROWS_PER_PAGE);
        let rest = set.page(&describe).expect("rows");
        assert_eq!(rest.len(), 5);
        assert_eq!(rest[4]["Id"], format!("00Q{}", ROWS_PER_PAGE + 4));
        assert!(set.page(&describe).expect("end").is_empty());
    }
}
