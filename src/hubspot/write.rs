//! Write-back to HubSpot: `batch/update` in batches of 100 holding only the records, and only
//! the properties, whose values differ from what HubSpot holds; `batch/upsert` by a unique
//! property for records HubSpot lacks. Values HubSpot would refuse
//! (not one of a property's options, unknown or calculated properties) are dead-lettered before
//! sending. A lifecycle stage only moves backwards when the reconcile policy allows it — by
//! clearing it first, since HubSpot ignores a direct backward write — and every refused
//! regression is reported. On a 207, failed items that are worth retrying are retried alone;
//! the rest are dead-lettered with the record id, the property and HubSpot's message. A whole
//! batch is never resent for one bad item.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::client::{Budget, HubspotClient, HubspotError};
use super::schema::{PortalSchema, ValueCheck};

/// Inputs one batch call may carry.
pub const BATCH_SIZE: usize = 100;
/// Item error categories that pass if sent again a little later.
const RETRYABLE_CATEGORIES: [&str; 3] = ["LOCKED", "RATE_LIMITS", "INTERNAL_ERROR"];

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
    /// Records updated.
    pub written: usize,
    /// Records whose values HubSpot already had.
    pub unchanged: usize,
    /// Item retries after a 207.
    pub retried: usize,
    pub dead_letters: Vec<DeadLetter>,
    pub refused_regressions: Vec<RefusedRegression>,
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

/// A batch input: the id and the properties to set.
type Input = (String, BTreeMap<String, String>);

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
    ) -> Result<WriteReport, HubspotError> {
        let mut report = WriteReport::default();
        let mut inputs: Vec<Input> = Vec::new();
        let mut clear_first: Vec<Input> = Vec::new();
        for update in planned {
            let changes = self.changes(object, &update, &mut report);
            if changes.is_empty() {
                // Dead-lettered or refused changes are counted there, not as unchanged.
                if !differs(&update) {
                    report.unchanged += 1;
                }
                continue;
            }
            if let Some(stage) = changes.get("lifecyclestage")
                && !stage.is_empty()
                && update.allow_regression
                && self.is_regression(object, &update, stage)
            {
                clear_first.push((
                    update.id.clone(),
                    BTreeMap::from([("lifecyclestage".to_string(), String::new())]),
                ));
            }
            inputs.push((update.id, changes));
        }
        // Clearing first: HubSpot ignores a direct backward lifecycle write.
        let mut cleared = WriteReport::default();
        self.send_all(object, &BatchKind::Update, clear_first, &mut cleared)
            .await?;
        report.dead_letters.extend(cleared.dead_letters);
        report.retried += cleared.retried;
        self.send_all(object, &BatchKind::Update, inputs, &mut report)
            .await?;
        Ok(report)
    }

    /// Creates or updates records found by the unique `id_property` (`email` for contacts):
    /// records HubSpot lacks (people known only to Salesforce). Values are checked as for
    /// updates; nothing is compared, since HubSpot's values are not known.
    pub async fn upsert(
        &self,
        object: &str,
        id_property: &str,
        records: Vec<(String, BTreeMap<String, String>)>,
    ) -> Result<WriteReport, HubspotError> {
        let mut report = WriteReport::default();
        let mut inputs: Vec<Input> = Vec::new();
        for (key, desired) in records {
            let planned = PlannedUpdate {
                id: key,
                current: BTreeMap::new(),
                desired,
                allow_regression: true,
            };
            let changes = self.changes(object, &planned, &mut report);
            if !changes.is_empty() {
                inputs.push((planned.id, changes));
            }
        }
        let kind = BatchKind::Upsert {
            id_property: id_property.to_string(),
        };
        self.send_all(object, &kind, inputs, &mut report).await?;
        Ok(report)
    }

    /// The properties of `update` that differ from what HubSpot holds and may be sent.
    fn changes(
        &self,
        object: &str,
        update: &PlannedUpdate,
        report: &mut WriteReport,
    ) -> BTreeMap<String, String> {
        let mut changes = BTreeMap::new();
        for (property, value) in &update.desired {
            let held = update
                .current
                .get(property)
                .map_or("", |held| held.as_str());
            if held.trim() == value.trim() {
                continue;
            }
            let refusal = match self.schema.check(object, property, value) {
                ValueCheck::Allowed => None,
                ValueCheck::NotAnOption { allowed } => Some(format!(
                    "{value:?} is not one of the options of {object}.{property} ({}) — map it to one of them, or add it as an option in HubSpot",
                    allowed.join(", ")
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
            if property == "lifecyclestage"
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

    /// Whether `to` is an earlier lifecycle stage than the one the record holds (by the order
    /// of the property's options).
    fn is_regression(&self, object: &str, update: &PlannedUpdate, to: &str) -> bool {
        let Some(options) = self
            .schema
            .properties
            .get(object)
            .and_then(|all| all.get("lifecyclestage"))
            .map(|info| &info.options)
        else {
            return false;
        };
        let rank = |value: &str| options.iter().position(|(option, _)| option == value);
        match (
            update
                .current
                .get("lifecyclestage")
                .and_then(|held| rank(held)),
            rank(to),
        ) {
            (Some(from), Some(to)) => to < from,
            _ => false,
        }
    }

    /// Sends `inputs` in batches; failed items worth retrying go again, alone, a few times.
    async fn send_all(
        &self,
        object: &str,
        kind: &BatchKind,
        inputs: Vec<Input>,
        report: &mut WriteReport,
    ) -> Result<(), HubspotError> {
        let mut pending = inputs;
        let mut round = 0;
        while !pending.is_empty() {
            let mut retry: Vec<Input> = Vec::new();
            for batch in pending.chunks(BATCH_SIZE) {
                let outcome = self.send_batch(object, kind, batch).await?;
                report.written += outcome.written;
                report.dead_letters.extend(outcome.dead_letters);
                retry.extend(outcome.retry);
            }
            if retry.is_empty() {
                break;
            }
            round += 1;
            if round > self.item_retries {
                report.dead_letters.extend(retry.into_iter().map(|(id, _)| DeadLetter {
                    id,
                    property: None,
                    reason: format!(
                        "HubSpot kept refusing the update for the moment after {} retries — it will be tried again on the next run",
                        self.item_retries
                    ),
                }));
                break;
            }
            report.retried += retry.len();
            tokio::time::sleep(self.retry_wait).await;
            pending = retry;
        }
        Ok(())
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
        let answer = self
            .client
            .send(
                Budget::General,
                Method::POST,
                &path,
                &[],
                Some(&body),
                object,
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            // A validation refusal of the whole batch: dead-letter what it names, send the rest.
            Err(HubspotError::Rejected(rejection)) if rejection.status == 400 => {
                return Ok(self.split_refused_batch(batch, &rejection.body, &rejection.message));
            }
            Err(other) => return Err(other),
        };
        let mut outcome = BatchOutcome::default();
        for error in answer.body["errors"].as_array().into_iter().flatten() {
            let category = error["category"].as_str().unwrap_or_default();
            let message = error["message"].as_str().unwrap_or_default();
            let property = error["context"]["propertyName"][0]
                .as_str()
                .map(str::to_string);
            for id in error["context"]["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if RETRYABLE_CATEGORIES.contains(&category) {
                    if let Some(input) = batch.iter().find(|(input_id, _)| input_id == id) {
                        outcome.retry.push(input.clone());
                    }
                } else {
                    outcome.dead_letters.push(DeadLetter {
                        id: id.to_string(),
                        property: property.clone(),
                        reason: format!("HubSpot refused the update: {category}: {message}"),
                    });
                }
            }
        }
        // What HubSpot reports as done counts, not what was not reported as failed.
        outcome.written = answer.body["results"]
            .as_array()
            .map_or(0, Vec::len)
            .min(batch.len());
        Ok(outcome)
    }

    /// After a 400 for a whole batch: the inputs carrying a property it names are
    /// dead-lettered for that property, the others are sent again without it next round.
    fn split_refused_batch(&self, batch: &[Input], body: &Value, message: &str) -> BatchOutcome {
        let named: BTreeSet<String> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|error| error["context"]["propertyName"][0].as_str())
            .map(str::to_string)
            .collect();
        let mut outcome = BatchOutcome::default();
        for (id, properties) in batch {
            let bad: Vec<&String> = properties
                .keys()
                .filter(|name| named.contains(*name))
                .collect();
            if named.is_empty() || !bad.is_empty() {
                for property in &bad {
                    outcome.dead_letters.push(DeadLetter {
                        id: id.clone(),
                        property: Some((*property).clone()),
                        reason: format!("HubSpot refused the value: {message}"),
                    });
                }
                if named.is_empty() {
                    outcome.dead_letters.push(DeadLetter {
                        id: id.clone(),
                        property: None,
                        reason: format!("HubSpot refused the batch: {message}"),
                    });
                    continue;
                }
                let rest: BTreeMap<String, String> = properties
                    .iter()
                    .filter(|(name, _)| !named.contains(*name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                if !rest.is_empty() {
                    outcome.retry.push((id.clone(), rest));
                }
            } else {
                outcome.retry.push((id.clone(), properties.clone()));
            }
        }
        outcome
    }
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
    written: usize,
    retry: Vec<Input>,
    dead_letters: Vec<DeadLetter>,
}
