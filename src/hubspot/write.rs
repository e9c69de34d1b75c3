//! Write-back to HubSpot: `batch/update` in batches of 100 (four in flight at once) holding only
//! the records, and only the properties, whose values differ from what HubSpot holds;
//! `batch/upsert` by a unique property for records HubSpot lacks (those it has are found first and
//! updated like any other, so the lifecycle rules hold for them too). Values HubSpot would refuse
//! (not one of a property's options, unknown or calculated properties) are dead-lettered before
//! sending. A lifecycle stage only moves backwards when the reconcile policy allows it — by
//! clearing it first, since HubSpot ignores a direct backward write, then setting it for the
//! records whose clearing went through — and every refused regression is reported. On a 207, failed
//! items worth retrying are retried alone; the rest are dead-lettered with the record id, the
//! property and HubSpot's message, as are items HubSpot neither confirms nor refuses. A batch
//! HubSpot refuses whole (400) is narrowed down to the inputs it names, or halved until the bad
//! input is alone: a whole batch is never lost for one bad item. A stop (a spent daily allowance,
//! say) returns what was written so far and which records were not sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::client::{Budget, HubspotClient, HubspotError};
use super::schema::{PortalSchema, ValueCheck};
use crate::http::in_flight::{cap_for_round, send_batches};

/// Inputs one batch call may carry.
pub const BATCH_SIZE: usize = 100;
/// Item error categories that pass if sent again a little later.
const RETRYABLE_CATEGORIES: [&str; 3] = ["LOCKED", "RATE_LIMITS", "INTERNAL_ERROR"];
const LIFECYCLE: &str = "lifecyclestage";

/// One record the sync wants changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUpdate {
    pub id: String,
    /// What HubSpot holds now, as read.
    pub current: BTreeMap<String, String>,
    /// What the sync wants; an empty value clears.
    pub desired: BTreeMap<String, String>,
    /// The reconcile policy allows moving this record's lifecycle stage backwards.
    pub allow_regression: bool,
}

/// A record the sync wants in HubSpot, found by a unique property (`email` for contacts),
/// which HubSpot may or may not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUpsert {
    /// The unique property's value.
    pub key: String,
    pub desired: BTreeMap<String, String>,
    /// As for [`PlannedUpdate`], should HubSpot have the record already.
    pub allow_regression: bool,
}

/// A write that did not happen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub property: Option<String>,
    pub reason: String,
}

/// A lifecycle stage the policy kept from moving backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRegression {
    pub id: String,
    pub from: String,
    pub to: String,
}

/// What a write-back did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Records HubSpot confirmed written (created or updated).
    pub written: usize,
    /// Records whose values HubSpot already had.
    pub unchanged: usize,
    /// Item retries after a 207.
    pub retried: usize,
    pub dead_letters: Vec<DeadLetter>,
    pub refused_regressions: Vec<RefusedRegression>,
    /// Records not sent because the write-back stopped (ids, or keys for upserts).
    pub unsent: Vec<String>,
}

/// Why a write-back stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{source} ({written} records were written before the stop, {unsent} not sent)", written = report.written, unsent = report.unsent.len())]
    Stopped {
        /// Everything up to the stop.
        report: Box<WriteReport>,
        source: HubspotError,
    },
}

/// Writes updates to one portal.
#[derive(Debug)]
pub struct HubspotWriter<'a> {
    client: &'a HubspotClient,
    schema: &'a PortalSchema,
    /// Rounds of retrying failed items before dead-lettering them.
    pub item_retries: u32,
    /// Wait before a round of retries (HubSpot asks for about two seconds after a LOCKED).
    pub retry_wait: Duration,
}

/// A batch input: the record id (or, for upserts, the unique key) and the properties to set.
type Input = (String, BTreeMap<String, String>);

/// What HubSpot confirmed as a write-back goes.
#[derive(Debug, Default)]
struct Tally {
    /// Records written (ids, or keys of records created).
    written: HashSet<String>,
    /// Records whose answer shows HubSpot kept another lifecycle stage than the one sent
    /// (it had moved on since the record was read): id, the stage kept, the stage sent.
    kept_stages: Vec<(String, String, String)>,
}

/// A write-back cut short: HubSpot's error and the records not sent.
struct Stop {
    error: HubspotError,
    unsent: Vec<String>,
}

impl<'a> HubspotWriter<'a> {
    pub fn new(client: &'a HubspotClient, schema: &'a PortalSchema) -> Self {
        Self {
            client,
            schema,
            item_retries: 3,
            retry_wait: Duration::from_secs(2),
        }
    }

    /// Writes `planned` to `object` (schema for it must be loaded).
    pub async fn update(
        &self,
        object: &str,
        planned: Vec<PlannedUpdate>,
    ) -> Result<WriteReport, WriteError> {
        let mut report = WriteReport::default();
        let mut tally = Tally::default();
        let outcome = self
            .write_updates(object, planned, &mut report, &mut tally)
            .await;
        finish(report, tally, outcome)
    }

    /// Writes records found by the unique `id_property` (`email` for contacts) that HubSpot
    /// may lack (people known only to Salesforce). Those HubSpot has are read first and
    /// updated like any other record (only what differs, lifecycle rules applied); the rest
    /// are created through `batch/upsert`.
    pub async fn upsert(
        &self,
        object: &str,
        id_property: &str,
        planned: Vec<PlannedUpsert>,
    ) -> Result<WriteReport, WriteError> {
        let mut report = WriteReport::default();
        let mut tally = Tally::default();
        let outcome = self
            .write_upserts(object, id_property, planned, &mut report, &mut tally)
            .await;
        finish(report, tally, outcome)
    }

    async fn write_updates(
        &self,
        object: &str,
        planned: Vec<PlannedUpdate>,
        report: &mut WriteReport,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let planned = unique(planned, |update| update.id.clone(), "id", report);
        let mut inputs: Vec<Input> = Vec::new();
        let mut moves_back: Vec<(String, String)> = Vec::new();
        for update in &planned {
            let mut changes = self.changes(object, update, report);
            if let Some(stage) = changes.get(LIFECYCLE).cloned()
                && !stage.is_empty()
                && update.allow_regression
                && self.is_regression(object, update, &stage)
            {
                changes.remove(LIFECYCLE);
                moves_back.push((update.id.clone(), stage));
            }
            if !changes.is_empty() {
                inputs.push((update.id.clone(), changes));
            } else if !differs(update) {
                report.unchanged += 1;
            }
            // Otherwise its changes were dead-lettered, refused or are moving back.
        }
        let letters_before = report.dead_letters.len();
        self.send_all(object, &BatchKind::Update, inputs, report, tally)
            .await
            .map_err(|mut stop| {
                stop.unsent
                    .extend(moves_back.iter().map(|(id, _)| id.clone()));
                stop
            })?;
        // A stage read before HubSpot moved it on: the write looked like a step forward, and
        // HubSpot kept its later stage. That is a regression like any other.
        let allowed: HashSet<&str> = planned
            .iter()
            .filter(|update| update.allow_regression)
            .map(|update| update.id.as_str())
            .collect();
        for (id, kept, sent) in std::mem::take(&mut tally.kept_stages) {
            if allowed.contains(id.as_str()) {
                moves_back.push((id, sent));
            } else {
                report.refused_regressions.push(RefusedRegression {
                    id,
                    from: kept,
                    to: sent,
                });
            }
        }
        // Records HubSpot refused outright (gone, say) are not moved back as well.
        let refused: HashSet<String> = report.dead_letters[letters_before..]
            .iter()
            .filter(|letter| letter.property.is_none())
            .map(|letter| letter.id.clone())
            .collect();
        moves_back.retain(|(id, _)| !refused.contains(id));
        self.move_back(object, moves_back, report, tally).await
    }

    /// Moves lifecycle stages backwards, a batch at a time: clears them, then sets the new
    /// stage on the records whose clearing went through.
    async fn move_back(
        &self,
        object: &str,
        moves: Vec<(String, String)>,
        report: &mut WriteReport,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let mut moves: VecDeque<(String, String)> = moves.into();
        while !moves.is_empty() {
            let chunk: Vec<(String, String)> = moves.drain(..BATCH_SIZE.min(moves.len())).collect();
            let target: HashMap<&str, &str> = chunk
                .iter()
                .map(|(id, stage)| (id.as_str(), stage.as_str()))
                .collect();
            let clears: Vec<Input> = chunk
                .iter()
                .map(|(id, _)| {
                    (
                        id.clone(),
                        BTreeMap::from([(LIFECYCLE.to_string(), String::new())]),
                    )
                })
                .collect();
            let mut clearing = WriteReport::default();
            let mut cleared = Tally::default();
            let outcome = self
                .send_all(
                    object,
                    &BatchKind::Update,
                    clears,
                    &mut clearing,
                    &mut cleared,
                )
                .await;
            let cleared = cleared.written;
            report.retried += clearing.retried;
            report
                .dead_letters
                .extend(restate(clearing.dead_letters, &target, |to, reason| {
                    format!(
                        "moving the lifecycle stage back to {to:?} takes clearing it first, which failed: {reason}"
                    )
                }));
            let sets: Vec<Input> = chunk
                .iter()
                .filter(|(id, _)| cleared.contains(id))
                .map(|(id, stage)| {
                    (
                        id.clone(),
                        BTreeMap::from([(LIFECYCLE.to_string(), stage.clone())]),
                    )
                })
                .collect();
            let not_moved = |stop: Stop, sets: &[Input], moves: &VecDeque<(String, String)>| Stop {
                error: stop.error,
                unsent: stop
                    .unsent
                    .into_iter()
                    .chain(sets.iter().map(|(id, _)| id.clone()))
                    .chain(moves.iter().map(|(id, _)| id.clone()))
                    .collect(),
            };
            if let Err(stop) = outcome {
                // Records cleared but not yet set get their stage on the next run.
                return Err(not_moved(stop, &sets, &moves));
            }
            let mut setting = WriteReport::default();
            let outcome = self
                .send_all(object, &BatchKind::Update, sets, &mut setting, tally)
                .await;
            // Cleared, yet HubSpot would not take the stage.
            for (id, kept, sent) in std::mem::take(&mut tally.kept_stages) {
                tally.written.remove(&id);
                setting.dead_letters.push(DeadLetter {
                    id,
                    property: Some(LIFECYCLE.to_string()),
                    reason: format!("HubSpot kept {kept:?} instead of {sent:?}"),
                });
            }
            report.retried += setting.retried;
            report
                .dead_letters
                .extend(restate(setting.dead_letters, &target, |to, reason| {
                    format!(
                        "the lifecycle stage was cleared to move it back to {to:?}, but setting it failed, so the record has no stage until the next run: {reason}"
                    )
                }));
            if let Err(stop) = outcome {
                return Err(not_moved(stop, &[], &moves));
            }
        }
        Ok(())
    }

    async fn write_upserts(
        &self,
        object: &str,
        id_property: &str,
        planned: Vec<PlannedUpsert>,
        report: &mut WriteReport,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let keyed: Vec<PlannedUpsert> = planned
            .into_iter()
            .filter(|upsert| {
                let keyed = !upsert.key.trim().is_empty();
                if !keyed {
                    report.dead_letters.push(DeadLetter {
                        id: upsert.key.clone(),
                        property: Some(id_property.to_string()),
                        reason: format!(
                            "the record has no {id_property}, which HubSpot needs to find or create it — fill it in at the source"
                        ),
                    });
                }
                keyed
            })
            .collect();
        let planned = unique(keyed, |upsert| fold_key(&upsert.key), id_property, report);
        // Which of them HubSpot has, and what it holds.
        let mut found: HashMap<String, (String, BTreeMap<String, String>)> = HashMap::new();
        for chunk in planned.chunks(BATCH_SIZE) {
            match self.find(object, id_property, chunk).await {
                Ok(part) => found.extend(part),
                Err(error) => {
                    // Nothing is written before every record has been looked up.
                    let unsent = planned.iter().map(|upsert| upsert.key.clone()).collect();
                    return Err(Stop { error, unsent });
                }
            }
        }
        let mut updates = Vec::new();
        let mut creates: Vec<Input> = Vec::new();
        for upsert in planned {
            match found.remove(&fold_key(&upsert.key)) {
                Some((id, current)) => updates.push(PlannedUpdate {
                    id,
                    current,
                    desired: upsert.desired,
                    allow_regression: upsert.allow_regression,
                }),
                None => {
                    let new = PlannedUpdate {
                        id: upsert.key,
                        current: BTreeMap::new(),
                        desired: upsert.desired,
                        allow_regression: true,
                    };
                    let letters_before = report.dead_letters.len();
                    let changes = self.changes(object, &new, report);
                    if !changes.is_empty() {
                        creates.push((new.id, changes));
                    } else if report.dead_letters.len() == letters_before {
                        report.dead_letters.push(DeadLetter {
                            id: new.id,
                            property: None,
                            reason: format!(
                                "HubSpot has no record with this {id_property} and there is no value to create one with"
                            ),
                        });
                    }
                }
            }
        }
        let kind = BatchKind::Upsert {
            id_property: id_property.to_string(),
        };
        self.send_all(object, &kind, creates, report, tally)
            .await
            .map_err(|mut stop| {
                stop.unsent
                    .extend(updates.iter().map(|update| update.id.clone()));
                stop
            })?;
        self.write_updates(object, updates, report, tally).await
    }

    /// The records of `chunk` HubSpot has, by folded key: their id and what they hold of the
    /// properties to write.
    async fn find(
        &self,
        object: &str,
        id_property: &str,
        chunk: &[PlannedUpsert],
    ) -> Result<HashMap<String, (String, BTreeMap<String, String>)>, HubspotError> {
        let mut properties: BTreeSet<&str> = chunk
            .iter()
            .flat_map(|upsert| upsert.desired.keys().map(String::as_str))
            .collect();
        properties.insert(id_property);
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|upsert| json!({"id": upsert.key}))
            .collect();
        let body = json!({"idProperty": id_property, "inputs": inputs, "properties": properties});
        // Records HubSpot lacks come back as OBJECT_NOT_FOUND errors in a 207.
        let answer = self
            .client
            .send(
                Budget::General,
                Method::POST,
                &format!("/crm/v3/objects/{object}/batch/read"),
                &[],
                Some(&body),
                object,
            )
            .await?;
        let mut found = HashMap::new();
        for result in answer.body["results"].as_array().into_iter().flatten() {
            let (Some(id), Some(key)) = (
                result["id"].as_str(),
                result["properties"][id_property].as_str(),
            ) else {
                continue;
            };
            let current: BTreeMap<String, String> = result["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(name, value)| {
                    value.as_str().map(|text| (name.clone(), text.to_string()))
                })
                .collect();
            found.insert(fold_key(key), (id.to_string(), current));
        }
        Ok(found)
    }

    /// The properties of `update` that differ from what HubSpot holds and may be sent.
    fn changes(
        &self,
        object: &str,
        update: &PlannedUpdate,
        report: &mut WriteReport,
    ) -> BTreeMap<String, String> {
        let pipeline = update
            .desired
            .get("pipeline")
            .or_else(|| update.current.get("pipeline"))
            .map(String::as_str)
            .filter(|pipeline| !pipeline.is_empty());
        let mut changes = BTreeMap::new();
        for (property, value) in &update.desired {
            let held = held(update, property);
            if held.trim() == value.trim() {
                continue;
            }
            let refusal = match self.schema.check(object, property, value, pipeline) {
                ValueCheck::Allowed => None,
                ValueCheck::NotAnOption { allowed } => Some(format!(
                    "{value:?} is not one of the options of {object}.{property} ({}) — map it to one of them, or add it as an option in HubSpot",
                    allowed.join(", ")
                )),
                ValueCheck::WrongType { expected } => Some(format!(
                    "{value:?} is not {expected}, which {object}.{property} holds — fix the value at the source or the mapping's transform"
                )),
                ValueCheck::UnknownProperty => Some(format!(
                    "{object} has no property {property:?} in this portal — create it in HubSpot or remove it from the mapping's write-back"
                )),
                ValueCheck::Calculated => Some(format!(
                    "{object}.{property} is calculated by HubSpot and cannot be written — remove it from the mapping's write-back"
                )),
            };
            if let Some(reason) = refusal {
                report.dead_letters.push(DeadLetter {
                    id: update.id.clone(),
                    property: Some(property.clone()),
                    reason,
                });
                continue;
            }
            if property == LIFECYCLE
                && !value.is_empty()
                && !update.allow_regression
                && self.is_regression(object, update, value)
            {
                report.refused_regressions.push(RefusedRegression {
                    id: update.id.clone(),
                    from: held.to_string(),
                    to: value.clone(),
                });
                continue;
            }
            changes.insert(property.clone(), value.clone());
        }
        changes
    }

    /// Whether `to` is an earlier lifecycle stage than the one the record holds (by the
    /// options' display order).
    fn is_regression(&self, object: &str, update: &PlannedUpdate, to: &str) -> bool {
        let Some(options) = self
            .schema
            .properties
            .get(object)
            .and_then(|all| all.get(LIFECYCLE))
            .map(|info| &info.options)
        else {
            return false;
        };
        let rank = |value: &str| options.iter().position(|option| option.value == value);
        match (rank(held(update, LIFECYCLE)), rank(to)) {
            (Some(from), Some(to)) => to < from,
            _ => false,
        }
    }

    /// Sends `inputs` in batches; failed items worth retrying go again, alone, a few times.
    /// What HubSpot confirms goes into `tally`.
    async fn send_all(
        &self,
        object: &str,
        kind: &BatchKind,
        inputs: Vec<Input>,
        report: &mut WriteReport,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        let mut pending = batches(inputs);
        let mut round = 0;
        loop {
            let mut retry: Vec<Input> = Vec::new();
            let sent = send_batches(
                &mut pending,
                cap_for_round(round),
                |batch| async move {
                    let sent = self.send_batch(object, kind, &batch).await;
                    (batch, sent)
                },
                |outcome, pending| take_outcome(outcome, tally, report, &mut retry, pending),
            )
            .await;
            if let Err((error, unsent)) = sent {
                let unsent = unsent
                    .iter()
                    .chain(&retry)
                    .map(|(id, _)| id.clone())
                    .collect();
                return Err(Stop { error, unsent });
            }
            if retry.is_empty() {
                return Ok(());
            }
            round += 1;
            if round > self.item_retries {
                report.dead_letters.extend(retry.into_iter().map(|(id, _)| DeadLetter {
                    id,
                    property: None,
                    reason: format!(
                        "HubSpot kept refusing the write for the moment after {} retries — it will be tried again on the next run",
                        self.item_retries
                    ),
                }));
                return Ok(());
            }
            report.retried += retry.len();
            tokio::time::sleep(self.retry_wait).await;
            pending = batches(retry);
        }
    }

    async fn send_batch(
        &self,
        object: &str,
        kind: &BatchKind,
        batch: &[Input],
    ) -> Result<BatchOutcome, HubspotError> {
        let (endpoint, id_property) = match kind {
            BatchKind::Update => ("update", None),
            BatchKind::Upsert { id_property } => ("upsert", Some(id_property.as_str())),
        };
        let body = json!({
            "inputs": batch
                .iter()
                .map(|(id, properties)| match id_property {
                    Some(id_property) => {
                        json!({"idProperty": id_property, "id": id, "properties": properties})
                    }
                    None => json!({"id": id, "properties": properties}),
                })
                .collect::<Vec<_>>(),
        });
        let path = format!("/crm/v3/objects/{object}/batch/{endpoint}");
        match self
            .client
            .send(
                Budget::General,
                Method::POST,
                &path,
                &[],
                Some(&body),
                object,
            )
            .await
        {
            Ok(answer) => Ok(settle(kind, batch, &answer.body)),
            // The whole batch refused: narrow it down to what is wrong, send the rest.
            Err(HubspotError::Rejected(rejection)) if rejection.status == 400 => {
                Ok(narrow(kind, batch, &rejection.body, &rejection.message))
            }
            Err(other) => Err(other),
        }
    }
}

/// Takes a batch's answer into the write-back's tally and report; its parts to send again go
/// next, and its items to retry wait for the next round.
fn take_outcome(
    outcome: BatchOutcome,
    tally: &mut Tally,
    report: &mut WriteReport,
    retry: &mut Vec<Input>,
    pending: &mut VecDeque<Vec<Input>>,
) {
    tally.written.extend(outcome.written);
    tally.kept_stages.extend(outcome.kept_stages);
    report.dead_letters.extend(outcome.dead_letters);
    retry.extend(outcome.retry);
    for part in outcome.resend.into_iter().rev() {
        pending.push_front(part);
    }
}

/// Dead letters of a step in moving lifecycle stages back, said in that step's terms
/// (`explain` gets the stage each record was moving to and the original reason).
fn restate<'t>(
    letters: Vec<DeadLetter>,
    target: &'t HashMap<&str, &str>,
    explain: impl Fn(&str, &str) -> String + 't,
) -> impl Iterator<Item = DeadLetter> + 't {
    letters.into_iter().map(move |letter| DeadLetter {
        reason: explain(
            target.get(letter.id.as_str()).copied().unwrap_or_default(),
            &letter.reason,
        ),
        property: Some(LIFECYCLE.to_string()),
        id: letter.id,
    })
}

/// Ends a write-back: the count of records written, and the stop if there was one.
fn finish(
    mut report: WriteReport,
    tally: Tally,
    outcome: Result<(), Stop>,
) -> Result<WriteReport, WriteError> {
    report.written = tally.written.len();
    match outcome {
        Ok(()) => Ok(report),
        Err(stop) => {
            let mut seen = HashSet::new();
            report.unsent = stop
                .unsent
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            Err(WriteError::Stopped {
                report: Box::new(report),
                source: stop.error,
            })
        }
    }
}

/// Keeps the first of items with the same key; the others are dead-lettered, as one batch
/// cannot name a record twice and two writes to one record in a run contradict each other.
fn unique<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    what: &str,
    report: &mut WriteReport,
) -> Vec<T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|item| {
            let key = key(item);
            if seen.insert(key.clone()) {
                return true;
            }
            report.dead_letters.push(DeadLetter {
                id: key,
                property: None,
                reason: format!(
                    "a second write to the same record (the same {what}) in one run: only the first was sent — two source records lead to this one; merge them or fix the matching"
                ),
            });
            false
        })
        .collect()
}

/// A unique key as HubSpot matches it: emails and domains ignore case and surrounding space.
fn fold_key(key: &str) -> String {
    key.trim().to_lowercase()
}

fn batches(inputs: Vec<Input>) -> VecDeque<Vec<Input>> {
    let mut batches = VecDeque::new();
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        batches.push_back(inputs.by_ref().take(BATCH_SIZE).collect());
    }
    batches
}

/// How inputs of `kind` are matched with what HubSpot names in its answers.
fn input_key(kind: &BatchKind, text: &str) -> String {
    match kind {
        BatchKind::Update => text.to_string(),
        BatchKind::Upsert { .. } => fold_key(text),
    }
}

/// Every text an error's `context` holds (ids, emails, …) but the property names and the ids
/// of other records.
fn context_texts(context: &Value) -> Vec<&str> {
    context
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !matches!(name.as_str(), "propertyName" | "existingId"))
        .flat_map(|(_, value)| match value {
            Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
            Value::String(text) => vec![text.as_str()],
            _ => Vec::new(),
        })
        .collect()
}

/// Reads a 200 or 207 batch answer: the inputs HubSpot confirms are written, those it
/// refuses are dead-lettered or retried, and those it does neither for are dead-lettered.
fn settle(kind: &BatchKind, batch: &[Input], body: &Value) -> BatchOutcome {
    let by_key: HashMap<String, &Input> = batch
        .iter()
        .map(|input| (input_key(kind, &input.0), input))
        .collect();
    let mut settled: HashSet<String> = HashSet::new();
    let mut outcome = BatchOutcome::default();
    let mut unattributed: Vec<String> = Vec::new();
    for error in body["errors"].as_array().into_iter().flatten() {
        let category = error["category"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        let property = error["context"]["propertyName"][0]
            .as_str()
            .map(str::to_string);
        let named: Vec<&Input> = context_texts(&error["context"])
            .into_iter()
            .filter_map(|text| by_key.get(&input_key(kind, text)).copied())
            .collect();
        if named.is_empty() {
            unattributed.push(format!("{category}: {message}"));
        }
        for input in named {
            if !settled.insert(input_key(kind, &input.0)) {
                continue;
            }
            if RETRYABLE_CATEGORIES.contains(&category) {
                outcome.retry.push(input.clone());
            } else {
                outcome.dead_letters.push(DeadLetter {
                    id: input.0.clone(),
                    property: property.clone(),
                    reason: format!("HubSpot refused the write: {category}: {message}"),
                });
            }
        }
    }
    let mut anonymous_results = 0;
    for result in body["results"].as_array().into_iter().flatten() {
        let confirmed = match kind {
            BatchKind::Update => result["id"].as_str(),
            BatchKind::Upsert { id_property } => result["properties"][id_property].as_str(),
        };
        match confirmed.map(|text| input_key(kind, text)) {
            Some(key) if by_key.contains_key(&key) => {
                if settled.insert(key.clone())
                    && let Some(input) = by_key.get(&key)
                {
                    // HubSpot ignores a backward stage; the answer shows the one it kept.
                    let kept = match (
                        input.1.get(LIFECYCLE).filter(|sent| !sent.is_empty()),
                        result["properties"][LIFECYCLE].as_str(),
                    ) {
                        (Some(sent), Some(kept)) if kept != sent => Some((kept, sent)),
                        _ => None,
                    };
                    if let Some((kept, sent)) = kept {
                        outcome
                            .kept_stages
                            .push((input.0.clone(), kept.to_string(), sent.clone()));
                    }
                    // Written, unless the ignored stage was all it carried.
                    if kept.is_none() || input.1.len() > 1 {
                        outcome.written.push(input.0.clone());
                    }
                }
            }
            _ => anonymous_results += 1,
        }
    }
    let unsettled: Vec<&Input> = batch
        .iter()
        .filter(|input| !settled.contains(&input_key(kind, &input.0)))
        .collect();
    if anonymous_results >= unsettled.len() {
        // As many results not saying which input they answer (an upsert answer without the
        // key property) as inputs left: those went through.
        outcome
            .written
            .extend(unsettled.into_iter().map(|input| input.0.clone()));
    } else {
        let reported = if unattributed.is_empty() {
            String::new()
        } else {
            format!(" (it reported {})", unattributed.join("; "))
        };
        outcome
            .dead_letters
            .extend(unsettled.into_iter().map(|input| DeadLetter {
                id: input.0.clone(),
                property: None,
                reason: format!(
                    "HubSpot's answer neither confirmed nor refused this record{reported} — it is written again on the next run if it still differs"
                ),
            }));
    }
    outcome
}

/// After a 400 for a whole batch: the inputs it names are dead-lettered and the rest sent
/// again; else the inputs carrying a property it names are halved until the bad one is alone,
/// which is dead-lettered for that property and sent again without it.
fn narrow(kind: &BatchKind, batch: &[Input], body: &Value, message: &str) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let errors: Vec<&Value> = body["errors"].as_array().into_iter().flatten().collect();
    let named: HashSet<String> = std::iter::once(&body["context"])
        .chain(errors.iter().map(|error| &error["context"]))
        .flat_map(context_texts)
        .map(|text| input_key(kind, text))
        .collect();
    let (refused, rest): (Vec<&Input>, Vec<&Input>) = batch
        .iter()
        .partition(|input| named.contains(&input_key(kind, &input.0)));
    if !refused.is_empty() {
        outcome
            .dead_letters
            .extend(refused.into_iter().map(|input| DeadLetter {
                id: input.0.clone(),
                property: None,
                reason: format!("HubSpot refused the record: {message}"),
            }));
        if !rest.is_empty() {
            outcome.resend.push(rest.into_iter().cloned().collect());
        }
        return outcome;
    }
    let mut properties: BTreeSet<String> = errors
        .iter()
        .flat_map(|error| {
            error["context"]["propertyName"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
        })
        .map(str::to_string)
        .collect();
    if properties.is_empty() {
        properties = names_in_message(message);
    }
    let (mut carriers, mut others): (Vec<&Input>, Vec<&Input>) = batch.iter().partition(|input| {
        properties.is_empty()
            || input
                .1
                .keys()
                .any(|name| properties.contains(name.as_str()))
    });
    if carriers.is_empty() {
        // Named properties no input carries: look for the bad input among all of them.
        carriers = std::mem::take(&mut others);
    }
    if !others.is_empty() {
        outcome.resend.push(others.into_iter().cloned().collect());
    }
    match carriers.as_slice() {
        [] => {}
        [(id, values)] => {
            let bad: Vec<(&String, &String)> = values
                .iter()
                .filter(|(name, _)| properties.contains(*name))
                .collect();
            if bad.is_empty() {
                outcome.dead_letters.push(DeadLetter {
                    id: id.clone(),
                    property: None,
                    reason: format!("HubSpot refused the record: {message}"),
                });
            } else {
                for (name, value) in &bad {
                    outcome.dead_letters.push(DeadLetter {
                        id: id.clone(),
                        property: Some((*name).clone()),
                        reason: format!("HubSpot refused the value {value:?}: {message}"),
                    });
                }
                let rest: BTreeMap<String, String> = values
                    .iter()
                    .filter(|(name, _)| !properties.contains(*name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                if !rest.is_empty() {
                    outcome.resend.push(vec![(id.clone(), rest)]);
                }
            }
        }
        several => {
            let (first, second) = several.split_at(several.len() / 2);
            outcome
                .resend
                .push(first.iter().map(|input| (*input).clone()).collect());
            outcome
                .resend
                .push(second.iter().map(|input| (*input).clone()).collect());
        }
    }
    outcome
}

/// The property names in a refusal's message: HubSpot's "Property values were not valid:
/// [{…, "name": "…"}]" carries them in JSON inside the text.
fn names_in_message(message: &str) -> BTreeSet<String> {
    let Some(start) = message.find('[') else {
        return BTreeSet::new();
    };
    let parsed: Value = serde_json::from_str(&message[start..]).unwrap_or(Value::Null);
    parsed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["name"].as_str())
        .map(str::to_string)
        .collect()
}

/// What HubSpot holds in `property` of the planned record (empty when nothing).
fn held<'u>(update: &'u PlannedUpdate, property: &str) -> &'u str {
    update.current.get(property).map_or("", String::as_str)
}

/// Whether `update` wants any value HubSpot does not hold.
fn differs(update: &PlannedUpdate) -> bool {
    update
        .desired
        .iter()
        .any(|(property, value)| held(update, property).trim() != value.trim())
}

/// Which batch endpoint inputs go to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchKind {
    /// `batch/update`: inputs name records by id.
    Update,
    /// `batch/upsert`: inputs name records by a unique property; missing ones are created.
    Upsert { id_property: String },
}

/// What one batch call did.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// Inputs HubSpot confirmed (ids, or upsert keys).
    written: Vec<String>,
    /// Inputs to send again after a wait.
    retry: Vec<Input>,
    /// Parts of a refused batch to send again straight away.
    resend: Vec<Vec<Input>>,
    dead_letters: Vec<DeadLetter>,
    /// Written, but HubSpot kept another lifecycle stage: id, stage kept, stage sent.
    kept_stages: Vec<(String, String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str, properties: &[(&str, &str)]) -> Input {
        (
            id.to_string(),
            properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_input_the_answer_neither_confirms_nor_refuses_is_dead_lettered() {
        let batch = [
            input("1", &[("jobtitle", "A")]),
            input("2", &[("jobtitle", "B")]),
            input("3", &[("jobtitle", "C")]),
        ];
        let body = json!({
            "status": "COMPLETE",
            "results": [{"id": "1", "properties": {}}],
            "errors": [{"category": "LOCKED", "message": "locked", "context": {"ids": ["2"]}}],
        });
        let outcome = settle(&BatchKind::Update, &batch, &body);
        assert_eq!(outcome.written, ["1"]);
        assert_eq!(outcome.retry.len(), 1);
        assert_eq!(outcome.retry[0].0, "2");
        assert_eq!(outcome.dead_letters.len(), 1);
        assert_eq!(outcome.dead_letters[0].id, "3");
        assert!(
            outcome.dead_letters[0]
                .reason
                .contains("neither confirmed nor refused")
        );
    }

    #[test]
    fn upsert_answers_are_matched_by_key_ignoring_case() {
        let kind = BatchKind::Upsert {
            id_property: "email".to_string(),
        };
        let batch = [input("Ann@Example.com", &[]), input("bo@example.com", &[])];
        let body = json!({"results": [
            {"id": "7", "properties": {"email": "ann@example.com"}, "new": false},
            {"id": "8", "properties": {"email": "bo@example.com"}, "new": true},
        ]});
        let outcome = settle(&kind, &batch, &body);
        assert_eq!(outcome.written, ["Ann@Example.com", "bo@example.com"]);
        assert!(outcome.dead_letters.is_empty());
        // Results that do not carry the key: as many as the inputs, so all went through.
        let anonymous =
            json!({"results": [{"id": "7", "properties": {}}, {"id": "8", "properties": {}}]});
        assert_eq!(settle(&kind, &batch, &anonymous).written.len(), 2);
    }

    #[test]
    fn a_refused_batch_naming_ids_loses_only_those() {
        let batch = [input("1", &[]), input("2", &[]), input("3", &[])];
        let body = json!({"category": "VALIDATION_ERROR", "context": {"ids": ["2"]}});
        let outcome = narrow(
            &BatchKind::Update,
            &batch,
            &body,
            "Duplicate IDs found in batch input: [2]",
        );
        let letters: Vec<&str> = outcome
            .dead_letters
            .iter()
            .map(|letter| letter.id.as_str())
            .collect();
        assert_eq!(letters, ["2"]);
        assert_eq!(outcome.resend.len(), 1);
        let resent: Vec<&str> = outcome.resend[0]
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(resent, ["1", "3"]);
    }

    #[test]
    fn a_refused_batch_naming_a_property_is_halved_down_to_the_bad_input() {
        let body = json!({"errors": [{"context": {"propertyName": ["hubspot_owner_id"]}}]});
        let batch = [
            input("1", &[("jobtitle", "A")]),
            input("2", &[("hubspot_owner_id", "x"), ("jobtitle", "B")]),
            input("3", &[("hubspot_owner_id", "y")]),
        ];
        let outcome = narrow(&BatchKind::Update, &batch, &body, "not valid");
        assert!(outcome.dead_letters.is_empty());
        // The input without the property goes alone; the carriers are halved.
        let parts: Vec<Vec<&str>> = outcome
            .resend
            .iter()
            .map(|part| part.iter().map(|(id, _)| id.as_str()).collect())
            .collect();
        assert_eq!(parts, [vec!["1"], vec!["2"], vec!["3"]]);
        // Alone: dead-lettered for the property, sent again without it.
        let outcome = narrow(&BatchKind::Update, &batch[1..2], &body, "not valid");
        assert_eq!(outcome.dead_letters.len(), 1);
        assert_eq!(
            outcome.dead_letters[0].property.as_deref(),
            Some("hubspot_owner_id")
        );
        assert_eq!(outcome.resend, [vec![input("2", &[("jobtitle", "B")])]]);
    }

    #[test]
    fn property_names_are_found_in_hubspots_message_too() {
        let message = r#"Property values were not valid: [{"isValid":false,"message":"x was not a valid number.","error":"INVALID_FLOAT","name":"numemployees"}]"#;
        assert_eq!(
            names_in_message(message).into_iter().collect::<Vec<_>>(),
            ["numemployees"]
        );
        assert!(names_in_message("Duplicate IDs found in batch input").is_empty());
        let batch = [input("1", &[("numemployees", "x"), ("jobtitle", "A")])];
        let outcome = narrow(&BatchKind::Update, &batch, &json!({}), message);
        assert_eq!(
            outcome.dead_letters[0].property.as_deref(),
            Some("numemployees")
        );
        assert_eq!(outcome.resend, [vec![input("1", &[("jobtitle", "A")])]]);
    }

    #[test]
    fn a_stage_hubspot_kept_is_reported_not_counted_as_written() {
        let batch = [
            input("1", &[("lifecyclestage", "opportunity")]),
            input("2", &[("lifecyclestage", "opportunity"), ("jobtitle", "B")]),
        ];
        let body = json!({"results": [
            {"id": "1", "properties": {"lifecyclestage": "customer"}},
            {"id": "2", "properties": {"lifecyclestage": "customer", "jobtitle": "B"}},
        ]});
        let outcome = settle(&BatchKind::Update, &batch, &body);
        assert_eq!(outcome.written, ["2"], "the other change of 2 landed");
        assert_eq!(outcome.kept_stages.len(), 2);
        assert_eq!(
            outcome.kept_stages[0],
            (
                "1".to_string(),
                "customer".to_string(),
                "opportunity".to_string()
            )
        );
    }

    #[test]
    fn a_second_write_to_one_record_is_dead_lettered() {
        let mut report = WriteReport::default();
        let kept = unique(
            vec!["Ann@example.com", "bo@example.com", " ann@EXAMPLE.com"],
            |key| fold_key(key),
            "email",
            &mut report,
        );
        assert_eq!(kept, ["Ann@example.com", "bo@example.com"]);
        assert_eq!(report.dead_letters.len(), 1);
        assert!(report.dead_letters[0].reason.contains("the same email"));
    }
}
