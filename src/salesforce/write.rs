//! Write-back to Salesforce through sObject Collections, 200 records a request (four requests
//! at once) with `allOrNone=false`: updates by record id, and upserts by an external-id field (records
//! Salesforce may lack). Only records, and only fields, whose values differ from what the
//! org holds are sent. Before sending, values are checked against the object's describe —
//! unknown or read-only fields, inactive or unknown values of restricted picklists, converted
//! leads (which Salesforce refuses to update) — and dead-lettered with a clear message.
//! Per-record failures that pass if tried again (`UNABLE_TO_LOCK_ROW`) are sent again,
//! without the records that went through; the rest are dead-lettered with Salesforce's error
//! code, message and fields. A request
//! refused whole is halved until the bad record is alone. A stop (the org's API budget)
//! returns what was written and which records were not sent.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use http::Method;
use serde_json::{Map, Value, json};

use super::client::{Body, SalesforceClient, SalesforceError};
use super::describe::ObjectDescribe;
use super::soql::{Condition, Literal, SoqlQuery};
use crate::http::in_flight::{cap_for_round, send_batches};

/// Records one collection request may carry.
pub const BATCH_SIZE: usize = 200;
/// Item error codes that pass if sent again a little later.
const RETRYABLE_CODES: [&str; 2] = ["UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"];

/// One record the sync wants changed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedUpdate {
    pub id: String,
    /// What the org holds now, as read.
    pub current: BTreeMap<String, Value>,
    /// What the sync wants; `null` clears.
    pub desired: BTreeMap<String, Value>,
}

/// A record the sync wants in Salesforce, found by an external-id field's value.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedUpsert {
    pub key: String,
    pub desired: BTreeMap<String, Value>,
}

/// A write that did not happen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub fields: Vec<String>,
    pub error_code: Option<String>,
    pub reason: String,
}

/// What a write-back did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Records Salesforce confirmed written.
    pub written: usize,
    /// Records created by upserts.
    pub created: usize,
    /// Records whose values the org already had.
    pub unchanged: usize,
    /// Item retries after a lock.
    pub retried: usize,
    pub dead_letters: Vec<DeadLetter>,
    /// Records not sent because the write-back stopped (ids, or keys for upserts).
    pub unsent: Vec<String>,
}

impl WriteReport {
    /// This report with `other`'s counts and letters added.
    fn absorb(mut self, other: WriteReport) -> Self {
        self.written += other.written;
        self.created += other.created;
        self.unchanged += other.unchanged;
        self.retried += other.retried;
        self.dead_letters.extend(other.dead_letters);
        self.unsent.extend(other.unsent);
        self
    }
}

/// Why a write-back stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{source} ({written} records were written before the stop, {unsent} not sent)", written = report.written, unsent = report.unsent.len())]
    Stopped {
        report: Box<WriteReport>,
        source: SalesforceError,
    },
    #[error(transparent)]
    Query(#[from] super::soql::SoqlError),
    #[error(
        "{object}.{field} is not an external-id field in this org — upserts need one (mark the field External ID in Salesforce, or choose another)"
    )]
    NotAnExternalId { object: String, field: String },
}

/// A record to send: its id (or upsert key) and fields.
type Input = (String, Map<String, Value>);

/// How records are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Update,
    Upsert { field: String },
}

/// What one request did.
#[derive(Debug, Default)]
struct Outcome {
    written: Vec<String>,
    created: usize,
    retry: Vec<Input>,
    resend: Vec<Vec<Input>>,
    dead_letters: Vec<DeadLetter>,
}

/// Writes to one org.
#[derive(Debug)]
pub struct SalesforceWriter<'a> {
    client: &'a SalesforceClient,
    /// Rounds of retrying locked records before dead-lettering them.
    pub item_retries: u32,
    /// Wait before a round of retries.
    pub retry_wait: Duration,
}

impl<'a> SalesforceWriter<'a> {
    pub fn new(client: &'a SalesforceClient) -> Self {
        Self {
            client,
            item_retries: 3,
            retry_wait: Duration::from_secs(1),
        }
    }

    /// Updates records of the object `describe` tells of, by id.
    pub async fn update(
        &self,
        describe: &ObjectDescribe,
        planned: Vec<PlannedUpdate>,
    ) -> Result<WriteReport, WriteError> {
        let mut report = WriteReport::default();
        let mut seen = HashSet::new();
        let mut inputs = Vec::new();
        for update in planned {
            if !seen.insert(update.id.clone()) {
                report.dead_letters.push(DeadLetter {
                    id: update.id,
                    fields: Vec::new(),
                    error_code: None,
                    reason: "a second write to the same record in one run: only the first was sent — two source records lead to this one; merge them or fix the matching".into(),
                });
                continue;
            }
            if describe.name == "Lead"
                && update.current.get("IsConverted") == Some(&Value::Bool(true))
            {
                report.dead_letters.push(DeadLetter {
                    id: update.id,
                    fields: Vec::new(),
                    error_code: Some("CANNOT_UPDATE_CONVERTED_LEAD".into()),
                    reason: "the lead is converted, and Salesforce keeps converted leads read-only — write to the contact, account or opportunity it became instead".into(),
                });
                continue;
            }
            let changes = changes(
                describe,
                &update.id,
                &update.current,
                &update.desired,
                &mut report,
            );
            if !changes.is_empty() {
                inputs.push((update.id, changes));
            } else if !differs(&update.current, &update.desired) {
                report.unchanged += 1;
            }
        }
        self.send_all(describe, &Kind::Update, inputs, report).await
    }

    /// Creates or updates records found by the external-id `field`. Those the org has are
    /// read first and updated like any record (only what differs; a null clears); the rest
    /// are created through the collection upsert.
    pub async fn upsert(
        &self,
        describe: &ObjectDescribe,
        field: &str,
        planned: Vec<PlannedUpsert>,
    ) -> Result<WriteReport, WriteError> {
        let Some(info) = describe.field(field).filter(|info| info.external_id) else {
            return Err(WriteError::NotAnExternalId {
                object: describe.name.clone(),
                field: field.to_string(),
            });
        };
        let field = info.name.clone();
        let mut report = WriteReport::default();
        let mut seen = HashSet::new();
        let mut keyed = Vec::new();
        for upsert in planned {
            let key = upsert.key.trim().to_string();
            if key.is_empty() || !seen.insert(key.to_lowercase()) {
                report.dead_letters.push(DeadLetter {
                    id: upsert.key,
                    fields: vec![field.clone()],
                    error_code: None,
                    reason: if key.is_empty() {
                        format!("the record has no {field}, which the upsert finds it by")
                    } else {
                        "a second write to the same record in one run: only the first was sent"
                            .into()
                    },
                });
                continue;
            }
            keyed.push(PlannedUpsert {
                key,
                desired: upsert.desired,
            });
        }
        // Which of them the org has, and what it holds.
        let mut found = HashMap::new();
        for chunk in keyed.chunks(BATCH_SIZE) {
            match self.find(describe, &field, chunk).await {
                Ok(part) => found.extend(part),
                Err(WriteError::Stopped { source, .. }) => {
                    // Nothing is written before every record has been looked up.
                    report.unsent = keyed.iter().map(|upsert| upsert.key.clone()).collect();
                    return Err(WriteError::Stopped {
                        report: Box::new(report),
                        source,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        let mut updates = Vec::new();
        let mut creates = Vec::new();
        for upsert in keyed {
            match found.remove(&upsert.key.to_lowercase()) {
                Some((id, current)) => updates.push(PlannedUpdate {
                    id,
                    current,
                    desired: upsert.desired,
                }),
                None => {
                    let letters_before = report.dead_letters.len();
                    let changes = changes(
                        describe,
                        &upsert.key,
                        &BTreeMap::new(),
                        &upsert.desired,
                        &mut report,
                    );
                    if !changes.is_empty() {
                        creates.push((upsert.key, changes));
                    } else if report.dead_letters.len() == letters_before {
                        report.dead_letters.push(DeadLetter {
                            id: upsert.key,
                            fields: Vec::new(),
                            error_code: None,
                            reason: format!(
                                "the org has no record with this {field} and there is no value to create one with"
                            ),
                        });
                    }
                }
            }
        }
        let pending_updates: Vec<String> = updates.iter().map(|update| update.id.clone()).collect();
        let report = match self
            .send_all(describe, &Kind::Upsert { field }, creates, report)
            .await
        {
            Ok(report) => report,
            Err(WriteError::Stopped { mut report, source }) => {
                report.unsent.extend(pending_updates);
                return Err(WriteError::Stopped { report, source });
            }
            Err(other) => return Err(other),
        };
        match self.update(describe, updates).await {
            Ok(updated) => Ok(report.absorb(updated)),
            Err(WriteError::Stopped {
                report: updated,
                source,
            }) => Err(WriteError::Stopped {
                report: Box::new(report.absorb(*updated)),
                source,
            }),
            Err(other) => Err(other),
        }
    }

    /// The records of `chunk` the org has, by lowercased key: their id and what they hold of
    /// the fields to write.
    async fn find(
        &self,
        describe: &ObjectDescribe,
        field: &str,
        chunk: &[PlannedUpsert],
    ) -> Result<HashMap<String, (String, BTreeMap<String, Value>)>, WriteError> {
        let mut fields: Vec<String> = vec!["Id".to_string(), field.to_string()];
        if describe.name == "Lead" {
            fields.push("IsConverted".to_string());
        }
        for upsert in chunk {
            for name in upsert.desired.keys() {
                if describe.field(name).is_some() && !fields.contains(name) {
                    fields.push(name.clone());
                }
            }
        }
        let keys = chunk
            .iter()
            .map(|upsert| Literal::Text(upsert.key.clone()))
            .collect();
        let soql = SoqlQuery::select(describe, &fields)
            .and_then(|query| query.filter(&Condition::is_in(field, keys)))
            .map(|query| query.build())?;
        let mut found = HashMap::new();
        let mut next = Some((self.client.data_path("query"), vec![("q", soql)]));
        while let Some((path, query)) = next.take() {
            let answer = self
                .client
                .send(
                    Method::GET,
                    &path,
                    &query,
                    Body::None,
                    "application/json",
                    &[],
                    &describe.name,
                )
                .await
                .map_err(|source| WriteError::Stopped {
                    report: Box::default(),
                    source,
                })?;
            let page = answer.json().unwrap_or(Value::Null);
            for record in page["records"].as_array().into_iter().flatten() {
                let (Some(id), Some(key)) = (record["Id"].as_str(), record[field].as_str()) else {
                    continue;
                };
                let current = record
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| name.as_str() != "attributes")
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                found.insert(key.to_lowercase(), (id.to_string(), current));
            }
            next = page["nextRecordsUrl"]
                .as_str()
                .map(|url| (url.to_string(), Vec::new()));
        }
        Ok(found)
    }

    /// Sends `inputs` in collections; locked records go again (without the rest of their
    /// batch) a few times.
    async fn send_all(
        &self,
        describe: &ObjectDescribe,
        kind: &Kind,
        inputs: Vec<Input>,
        mut report: WriteReport,
    ) -> Result<WriteReport, WriteError> {
        let mut pending = batches(inputs);
        let mut round = 0;
        loop {
            let mut retry: Vec<Input> = Vec::new();
            let sent = send_batches(
                &mut pending,
                cap_for_round(round),
                |batch| async move {
                    let sent = self.send_batch(describe, kind, &batch).await;
                    (batch, sent)
                },
                |outcome, pending| take_outcome(outcome, &mut report, &mut retry, pending),
            )
            .await;
            if let Err((error, unsent)) = sent {
                report.unsent = unsent
                    .iter()
                    .chain(&retry)
                    .map(|(id, _)| id.clone())
                    .collect();
                return Err(WriteError::Stopped {
                    report: Box::new(report),
                    source: error,
                });
            }
            if retry.is_empty() {
                return Ok(report);
            }
            round += 1;
            if round > self.item_retries {
                report.dead_letters.extend(retry.into_iter().map(|(id, _)| DeadLetter {
                    id,
                    fields: Vec::new(),
                    error_code: Some("UNABLE_TO_LOCK_ROW".into()),
                    reason: format!(
                        "the record stayed locked by other work in the org after {} retries — it is tried again on the next run",
                        self.item_retries
                    ),
                }));
                return Ok(report);
            }
            report.retried += retry.len();
            tokio::time::sleep(self.retry_wait).await;
            pending = batches(retry);
        }
    }

    async fn send_batch(
        &self,
        describe: &ObjectDescribe,
        kind: &Kind,
        batch: &[Input],
    ) -> Result<Outcome, SalesforceError> {
        let object = describe.name.as_str();
        let records: Vec<Value> = batch
            .iter()
            .map(|(id, fields)| {
                let mut record = Map::new();
                record.insert("attributes".into(), json!({"type": object}));
                match kind {
                    Kind::Update => {
                        record.insert("Id".into(), Value::String(id.clone()));
                    }
                    Kind::Upsert { field } => {
                        record.insert(field.clone(), Value::String(id.clone()));
                    }
                }
                record.extend(
                    fields
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone())),
                );
                Value::Object(record)
            })
            .collect();
        let path = match kind {
            Kind::Update => self.client.data_path("composite/sobjects"),
            Kind::Upsert { field } => self
                .client
                .data_path(&format!("composite/sobjects/{object}/{field}")),
        };
        let body = json!({"allOrNone": false, "records": records});
        let answer = self
            .client
            .send(
                Method::PATCH,
                &path,
                &[],
                Body::Json(&body),
                "application/json",
                &[],
                object,
            )
            .await;
        match answer {
            Ok(answer) => Ok(settle(batch, &answer.json().unwrap_or(Value::Null))),
            Err(SalesforceError::Rejected(refusal)) if refusal.status == 400 => Ok(halve(
                batch,
                &refusal.error_code,
                &refusal.message,
                &refusal.fields,
            )),
            Err(other) => Err(other),
        }
    }
}

/// The fields of `desired` that differ from `current` and may be sent; the others are
/// dead-lettered with the reason.
fn changes(
    describe: &ObjectDescribe,
    id: &str,
    current: &BTreeMap<String, Value>,
    desired: &BTreeMap<String, Value>,
    report: &mut WriteReport,
) -> Map<String, Value> {
    let object = &describe.name;
    let mut changes = Map::new();
    for (name, value) in desired {
        if same(current.get(name).unwrap_or(&Value::Null), value) {
            continue;
        }
        let refusal = match describe.field(name) {
            None => Some(format!(
                "{object} has no field {name:?} in this org — create it in Salesforce or remove it from the mapping's write-back"
            )),
            Some(field) if !field.updateable => Some(format!(
                "{object}.{} cannot be written (read-only or calculated) — remove it from the mapping's write-back",
                field.name
            )),
            Some(field) if field.restricted_picklist => value.as_str().and_then(|text| {
                // A multi-select picklist holds its values joined by `;`.
                let values: Vec<&str> = if field.kind == "multipicklist" {
                    text.split(';').map(str::trim).filter(|v| !v.is_empty()).collect()
                } else {
                    vec![text]
                };
                values.into_iter().find_map(|text| {
                    match field.picklist.iter().find(|entry| entry.value == text) {
                        Some(entry) if entry.active => None,
                        Some(_) => Some(format!(
                            "{text:?} is an inactive value of the restricted picklist {object}.{} — map it to an active value ({})",
                            field.name,
                            active_values(field)
                        )),
                        None => Some(format!(
                            "{text:?} is not a value of the restricted picklist {object}.{} ({}) — map it to one of them, or add it in Salesforce",
                            field.name,
                            active_values(field)
                        )),
                    }
                })
            }),
            Some(_) => None,
        };
        match (refusal, describe.field(name)) {
            (Some(reason), _) => report.dead_letters.push(DeadLetter {
                id: id.to_string(),
                fields: vec![name.clone()],
                error_code: None,
                reason,
            }),
            (None, Some(field)) => {
                changes.insert(field.name.clone(), value.clone());
            }
            (None, None) => {}
        }
    }
    changes
}

fn active_values(field: &super::describe::FieldInfo) -> String {
    field
        .picklist
        .iter()
        .filter(|entry| entry.active)
        .map(|entry| entry.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether two values are the same to Salesforce: text ignoring surrounding space, numbers
/// by value, empty text as null.
fn same(held: &Value, wanted: &Value) -> bool {
    match (held, wanted) {
        (Value::String(a), Value::String(b)) => a.trim() == b.trim(),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Null, Value::String(text)) | (Value::String(text), Value::Null) => {
            text.trim().is_empty()
        }
        (a, b) => a == b,
    }
}

fn differs(current: &BTreeMap<String, Value>, desired: &BTreeMap<String, Value>) -> bool {
    desired
        .iter()
        .any(|(name, value)| !same(current.get(name).unwrap_or(&Value::Null), value))
}

/// Takes a request's answer into the report; its parts to send again go next, and its
/// records to retry wait for the next round.
fn take_outcome(
    outcome: Outcome,
    report: &mut WriteReport,
    retry: &mut Vec<Input>,
    pending: &mut VecDeque<Vec<Input>>,
) {
    report.written += outcome.written.len();
    report.created += outcome.created;
    report.dead_letters.extend(outcome.dead_letters);
    retry.extend(outcome.retry);
    for part in outcome.resend.into_iter().rev() {
        pending.push_front(part);
    }
}

fn batches(inputs: Vec<Input>) -> VecDeque<Vec<Input>> {
    let mut batches = VecDeque::new();
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        batches.push_back(inputs.by_ref().take(BATCH_SIZE).collect());
    }
    batches
}

/// Reads a collection answer: one result per record, in request order.
fn settle(batch: &[Input], body: &Value) -> Outcome {
    let mut outcome = Outcome::default();
    let results = body.as_array().map(Vec::as_slice).unwrap_or_default();
    for (index, input) in batch.iter().enumerate() {
        let Some(result) = results.get(index) else {
            outcome.dead_letters.push(DeadLetter {
                id: input.0.clone(),
                fields: Vec::new(),
                error_code: None,
                reason: "Salesforce's answer neither confirmed nor refused this record — it is written again on the next run if it still differs".into(),
            });
            continue;
        };
        if result["success"].as_bool() == Some(true) {
            outcome.written.push(input.0.clone());
            if result["created"].as_bool() == Some(true) {
                outcome.created += 1;
            }
            continue;
        }
        let error = &result["errors"][0];
        let code = error["statusCode"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_string();
        if RETRYABLE_CODES.contains(&code.as_str()) {
            outcome.retry.push(input.clone());
            continue;
        }
        outcome.dead_letters.push(DeadLetter {
            id: input.0.clone(),
            fields: error["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            reason: format!(
                "Salesforce refused the write: {code}: {}",
                error["message"].as_str().unwrap_or_default()
            ),
            error_code: Some(code),
        });
    }
    outcome
}

/// After a request refused whole: halved until the bad record is alone, which is
/// dead-lettered with Salesforce's words.
fn halve(batch: &[Input], code: &str, message: &str, fields: &[String]) -> Outcome {
    let mut outcome = Outcome::default();
    match batch {
        [] => {}
        [(id, _)] => outcome.dead_letters.push(DeadLetter {
            id: id.clone(),
            fields: fields.to_vec(),
            error_code: Some(code.to_string()),
            reason: format!("Salesforce refused the record: {code}: {message}"),
        }),
        several => {
            let (first, second) = several.split_at(several.len() / 2);
            outcome.resend.push(first.to_vec());
            outcome.resend.push(second.to_vec());
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_salesforce_holds_them() {
        assert!(same(&json!(" Acme "), &json!("Acme")));
        assert!(same(&json!(100), &json!(100.0)));
        assert!(same(&Value::Null, &json!("")));
        assert!(!same(&json!(true), &json!("true")));
        assert!(!same(&json!("Open"), &json!("Working")));
    }

    #[test]
    fn answers_are_read_in_request_order() {
        let batch: Vec<Input> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| (id.to_string(), Map::new()))
            .collect();
        let body = json!([
            {"id": "a", "success": true, "errors": []},
            {"success": false, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]},
            {"success": false, "errors": [{"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Email required", "fields": ["Email"]}]},
        ]);
        let outcome = settle(&batch, &body);
        assert_eq!(outcome.written, ["a"]);
        assert_eq!(outcome.retry.len(), 1);
        assert_eq!(outcome.retry[0].0, "b");
        assert_eq!(outcome.dead_letters.len(), 2);
        assert_eq!(outcome.dead_letters[0].fields, ["Email"]);
        assert_eq!(
            outcome.dead_letters[0].error_code.as_deref(),
            Some("FIELD_CUSTOM_VALIDATION_EXCEPTION")
        );
        assert_eq!(outcome.dead_letters[1].id, "d", "no answer for d");
    }
}
