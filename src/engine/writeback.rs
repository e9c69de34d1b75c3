//! Write-back: sends the queued writes of one system through its writer, a page of the queue
//! at a time. Before a page is sent, the write ledger records every value in it (so it is
//! recognised, not echoed, when it is read back — even if the process dies before the CRM's
//! answer is stored); after, one transaction records dead letters for what the CRM refused
//! and which queued writes are settled. Writes not sent (a stop
//! at the API budget) stay queued for the next run.
//!
//! The writes of a saved plan (`crmsync apply`) go the same way — ledger ahead, dead letters
//! after — but come from the plan, not the queue, and leave the queue alone.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::{EngineError, StreamStop};
use crate::config::WriteTarget;
use crate::hubspot::client::{HubspotClient, HubspotError};
use crate::hubspot::schema::PortalSchema;
use crate::hubspot::write::{self as hubspot_write, HubspotWriter};
use crate::record::{System, value_text};
use crate::salesforce::client::{SalesforceClient, SalesforceError};
use crate::salesforce::describe::ObjectDescribe;
use crate::salesforce::write::{self as salesforce_write, SalesforceWriter};
use crate::store::Warehouse;
use crate::store::model::{DeadLetterRow, LedgerRow, PendingWrite, RecordKey, WritesDone};

/// Queued writes sent per round (the writers batch them further: 100 or 200 a request).
const ROUND: usize = 1_000;
/// How long a round already sent may go on once a stop is asked for. A round normally takes
/// well under a second; one the CRM keeps throttling could take minutes, past a container's
/// grace period (`[schedule] stop_grace`, 25 s by default, should stay above this). A dropped
/// round's values are in the ledger already (so a write that did land is known as crmsync's
/// own), and queued writes stay queued for the next run, which sends the same values again; a
/// saved plan's writes count as not sent. What landed of it is not counted as written, and a
/// HubSpot lifecycle move-back cut between its clearing and its setting leaves the stage
/// empty until the next run.
const ROUND_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a write-back needs.
pub(super) struct Context<'a> {
    pub system: System,
    pub target: &'a WriteTarget,
    pub warehouse: &'a Warehouse,
    pub hubspot: Option<&'a HubspotClient>,
    pub salesforce: Option<&'a SalesforceClient>,
    /// Checked between rounds: a requested stop ends the write-back after the round out
    /// (given [`ROUND_STOP_GRACE`] to answer).
    pub stop: &'a super::stop::StopRequest,
}

/// What one system's write-back did, gathered as it goes (each system's write-back has its
/// own, so both can run at once).
pub(super) struct Sink<'a> {
    pub progress: &'a dyn super::progress::Progress,
    pub written: u64,
    pub dead_letters: u64,
    pub regressions_refused: u64,
    pub stops: Vec<StreamStop>,
    pub failed: bool,
}

impl<'a> Sink<'a> {
    pub fn new(progress: &'a dyn super::progress::Progress) -> Self {
        Self {
            progress,
            written: 0,
            dead_letters: 0,
            regressions_refused: 0,
            stops: Vec::new(),
            failed: false,
        }
    }

    /// Adds what this write-back of `system` did to a run's counts; true when it failed.
    pub fn add_to(
        self,
        system: System,
        written: &mut super::PerSystem,
        dead_letters: &mut u64,
        regressions_refused: &mut u64,
        stops: &mut Vec<StreamStop>,
    ) -> bool {
        *written.entry(system).or_default() += self.written;
        *dead_letters += self.dead_letters;
        *regressions_refused += self.regressions_refused;
        stops.extend(self.stops);
        self.failed
    }
}

/// A write to send: from the queue, or from a saved plan.
pub(super) struct Queued {
    pub key: RecordKey,
    /// Property -> wanted value.
    pub desired: BTreeMap<String, Value>,
    /// Property -> the value the record holds (as last read).
    pub current: BTreeMap<String, Value>,
    pub allow_regression: bool,
}

/// Where the writes to send come from.
enum Batches {
    /// The warehouse's queue, a round at a time from after this record id; sent writes are
    /// taken off it. Queued writes that cannot be read back are set aside here.
    Queue {
        after: Option<String>,
        unreadable: Vec<DeadLetterRow>,
    },
    /// Given writes (a saved plan's); the queue is left as it is.
    Given(std::vec::IntoIter<Queued>),
}

impl Batches {
    async fn next(
        &mut self,
        warehouse: &Warehouse,
        system: System,
        object: &str,
    ) -> Result<Vec<Queued>, EngineError> {
        match self {
            Batches::Queue { after, unreadable } => {
                let queued = warehouse
                    .pending_writes(system, object.to_string(), after.clone(), ROUND)
                    .await?;
                if let Some(last) = queued.last() {
                    *after = Some(last.key.id.clone());
                }
                let mut writes = Vec::with_capacity(queued.len());
                for write in &queued {
                    match decode(write) {
                        Ok(decoded) => writes.push(decoded),
                        Err(letter) => unreadable.push(letter),
                    }
                }
                Ok(writes)
            }
            Batches::Given(writes) => Ok(writes.by_ref().take(ROUND).collect()),
        }
    }

    /// Whether there is nothing to send at all (checked before the CRM's schema is loaded,
    /// so a run with nothing to write makes no call for it).
    async fn is_empty(
        &self,
        warehouse: &Warehouse,
        system: System,
        object: &str,
    ) -> Result<bool, EngineError> {
        Ok(match self {
            Batches::Queue { after, .. } => warehouse
                .pending_writes(system, object.to_string(), after.clone(), 1)
                .await?
                .is_empty(),
            Batches::Given(writes) => writes.len() == 0,
        })
    }

    fn settles_queue(&self) -> bool {
        matches!(self, Batches::Queue { .. })
    }
}

/// A queued write as sent, or — when its stored JSON does not read back as the objects
/// reconcile wrote (a damaged row) — the dead letter that says so, keeping the row's text.
fn decode(write: &PendingWrite) -> Result<Queued, DeadLetterRow> {
    let unreadable = |column: &str, error: serde_json::Error| DeadLetterRow {
        key: write.key.clone(),
        reason: format!(
            "the queued write-back to {} {} {} could not be read: pending_writes.{column} is not a JSON object ({error}); it was taken off the queue unsent — the next change to the person queues it again",
            write.key.system, write.key.object, write.key.id
        ),
        payload: Some(format!(
            "{{\"changes\": {}, \"current\": {}}}",
            serde_json::Value::String(write.changes.clone()),
            serde_json::Value::String(write.current.clone())
        )),
    };
    let changes: Map<String, Value> =
        serde_json::from_str(&write.changes).map_err(|error| unreadable("changes", error))?;
    let current: Map<String, Value> =
        serde_json::from_str(&write.current).map_err(|error| unreadable("current", error))?;
    Ok(Queued {
        key: write.key.clone(),
        desired: changes
            .into_iter()
            .map(|(field, change)| (field, change.get("value").cloned().unwrap_or(Value::Null)))
            .collect(),
        current: current.into_iter().collect(),
        allow_regression: write.allow_regression,
    })
}

/// Sends every queued write of `context.system`.
pub(super) async fn write_back(
    context: Context<'_>,
    run_id: i64,
    sink: &mut Sink<'_>,
) -> Result<(), EngineError> {
    if !context.target.enabled.value {
        return Ok(());
    }
    let object = context.target.object.value.clone();
    send_all(
        context,
        object,
        Batches::Queue {
            after: None,
            unreadable: Vec::new(),
        },
        run_id,
        sink,
    )
    .await
}

/// Sends `writes` to records of `object` of `context.system` (a saved plan's, checked against
/// the CRM already), leaving the queue alone.
pub(super) async fn write_given(
    context: Context<'_>,
    object: String,
    writes: Vec<Queued>,
    run_id: i64,
    sink: &mut Sink<'_>,
) -> Result<(), EngineError> {
    send_all(
        context,
        object,
        Batches::Given(writes.into_iter()),
        run_id,
        sink,
    )
    .await
}

async fn send_all(
    context: Context<'_>,
    object: String,
    batches: Batches,
    run_id: i64,
    sink: &mut Sink<'_>,
) -> Result<(), EngineError> {
    if batches
        .is_empty(context.warehouse, context.system, &object)
        .await?
    {
        return Ok(());
    }
    match context.system {
        System::Hubspot => {
            let Some(client) = context.hubspot else {
                return Ok(());
            };
            let mut schema = PortalSchema::default();
            if let Err(error) = schema.load(client, &object).await {
                stop_hubspot(sink, &object, &error);
                return Ok(());
            }
            let writer = HubspotWriter::new(client, &schema);
            write_rounds(
                context.warehouse,
                context.stop,
                System::Hubspot,
                &object,
                batches,
                run_id,
                sink,
                |batch| {
                    let writer = &writer;
                    let object = object.clone();
                    async move { send_hubspot(writer, &object, batch).await }
                },
            )
            .await
        }
        System::Salesforce => {
            let Some(client) = context.salesforce else {
                return Ok(());
            };
            let describe = match ObjectDescribe::load(client, &object).await {
                Ok(describe) => describe,
                Err(error) => {
                    stop_salesforce(sink, &object, &error);
                    return Ok(());
                }
            };
            let writer = SalesforceWriter::new(client);
            write_rounds(
                context.warehouse,
                context.stop,
                System::Salesforce,
                &object,
                batches,
                run_id,
                sink,
                |batch| {
                    let writer = &writer;
                    let describe = &describe;
                    async move { send_salesforce(writer, describe, batch).await }
                },
            )
            .await
        }
    }
}

/// What one round of sending did.
struct RoundOutcome {
    done: WritesDone,
    written: u64,
    refused_regressions: u64,
    stop: Option<StreamStop>,
}

#[allow(clippy::too_many_arguments)]
async fn write_rounds<F, Fut>(
    warehouse: &Warehouse,
    stop: &super::stop::StopRequest,
    system: System,
    object: &str,
    mut batches: Batches,
    run_id: i64,
    sink: &mut Sink<'_>,
    send: F,
) -> Result<(), EngineError>
where
    F: Fn(Vec<Queued>) -> Fut,
    Fut: std::future::Future<Output = RoundOutcome>,
{
    loop {
        if stop.is_requested() {
            // What is not sent stays queued for the next run.
            return Ok(());
        }
        let batch = batches.next(warehouse, system, object).await?;
        let mut set_aside = false;
        if let Batches::Queue { unreadable, .. } = &mut batches
            && !unreadable.is_empty()
        {
            set_aside = true;
            let letters = std::mem::take(unreadable);
            tracing::warn!(%system, count = letters.len(), "queued writes that cannot be read go to dead letters");
            sink.dead_letters += letters.len() as u64;
            let done = WritesDone {
                settled: letters.iter().map(|letter| letter.key.clone()).collect(),
                dead_letters: letters,
                ..WritesDone::default()
            };
            warehouse.commit_writes(run_id, done).await?;
        }
        if batch.is_empty() {
            if set_aside {
                // The round held only unreadable writes: the queue goes on after them.
                continue;
            }
            return Ok(());
        }
        // The ledger is written ahead: a process killed after the CRM took a write but before
        // its answer was stored still knows the value as its own when it reads it back. A
        // value that never landed does not match what the CRM holds, so it is never taken for
        // an echo.
        let intents = WritesDone {
            ledger: ledger_rows(&batch),
            ..Default::default()
        };
        warehouse.commit_writes(run_id, intents).await?;
        let Some(mut outcome) = stop.finish_within(ROUND_STOP_GRACE, send(batch)).await else {
            tracing::warn!(
                %system,
                object,
                "a write round still unanswered {} s after the stop was asked for was dropped; its writes are not confirmed (queued ones stay queued)",
                ROUND_STOP_GRACE.as_secs()
            );
            return Ok(());
        };
        if !batches.settles_queue() {
            outcome.done.settled.clear();
        }
        sink.written += outcome.written;
        sink.progress.written(system, sink.written);
        sink.dead_letters += outcome.done.dead_letters.len() as u64;
        sink.regressions_refused += outcome.refused_regressions;
        warehouse.commit_writes(run_id, outcome.done).await?;
        if let Some(stop) = outcome.stop {
            if !stop.resumable {
                sink.failed = true;
            }
            sink.stops.push(stop);
            return Ok(());
        }
    }
}

/// The ledger rows of a round: every value it is about to write.
fn ledger_rows(batch: &[Queued]) -> Vec<LedgerRow> {
    batch
        .iter()
        .flat_map(|write| {
            write.desired.iter().map(|(field, value)| LedgerRow {
                key: write.key.clone(),
                field: field.clone(),
                value_hash: super::plan::value_hash(value),
            })
        })
        .collect()
}

/// The settled keys of the sent writes and how many were confirmed.
fn settle(
    batch: &[Queued],
    letters: Vec<DeadLetterRow>,
    unconfirmed: &HashSet<String>,
    unsent: &HashSet<String>,
) -> (WritesDone, u64) {
    let mut done = WritesDone {
        dead_letters: letters,
        ..Default::default()
    };
    let mut written = 0;
    for write in batch {
        if unsent.contains(&write.key.id) {
            continue;
        }
        done.settled.push(write.key.clone());
        if !unconfirmed.contains(&write.key.id) {
            written += 1;
        }
    }
    (done, written)
}

fn text(value: &Value) -> String {
    value_text(value)
        .map(|text| text.into_owned())
        .unwrap_or_default()
}

async fn send_hubspot(
    writer: &HubspotWriter<'_>,
    object: &str,
    batch: Vec<Queued>,
) -> RoundOutcome {
    let planned: Vec<hubspot_write::PlannedUpdate> = batch
        .iter()
        .map(|write| hubspot_write::PlannedUpdate {
            id: write.key.id.clone(),
            current: write
                .current
                .iter()
                .map(|(field, value)| (field.clone(), text(value)))
                .collect(),
            desired: write
                .desired
                .iter()
                .map(|(field, value)| (field.clone(), text(value)))
                .collect(),
            allow_regression: write.allow_regression,
        })
        .collect();
    let (report, stop) = match writer.update(object, planned).await {
        Ok(report) => (report, None),
        Err(hubspot_write::WriteError::Stopped { report, source }) => {
            let budget = matches!(
                source,
                HubspotError::DailyLimit { .. } | HubspotError::DailyReserve { .. }
            );
            (
                *report,
                Some(StreamStop {
                    system: System::Hubspot,
                    message: format!("HubSpot write-back to {object}: {source}"),
                    resumable: budget,
                }),
            )
        }
    };
    let mut unconfirmed: HashSet<String> = HashSet::new();
    let mut letters = Vec::new();
    for letter in &report.dead_letters {
        unconfirmed.insert(letter.id.clone());
        letters.push(DeadLetterRow {
            key: RecordKey::new(System::Hubspot, object, letter.id.clone()),
            reason: match &letter.property {
                Some(property) => format!("write-back of {property} refused: {}", letter.reason),
                None => format!("write-back refused: {}", letter.reason),
            },
            payload: None,
        });
    }
    for refused in &report.refused_regressions {
        unconfirmed.insert(refused.id.clone());
        tracing::info!(id = %refused.id, from = %refused.from, to = %refused.to, "HubSpot kept a lifecycle stage the policy does not move back");
    }
    let unsent: HashSet<String> = report.unsent.iter().cloned().collect();
    let (done, written) = settle(&batch, letters, &unconfirmed, &unsent);
    RoundOutcome {
        done,
        written,
        refused_regressions: report.refused_regressions.len() as u64,
        stop,
    }
}

async fn send_salesforce(
    writer: &SalesforceWriter<'_>,
    describe: &ObjectDescribe,
    batch: Vec<Queued>,
) -> RoundOutcome {
    let object = describe.name.clone();
    let planned: Vec<salesforce_write::PlannedUpdate> = batch
        .iter()
        .map(|write| salesforce_write::PlannedUpdate {
            id: write.key.id.clone(),
            current: write.current.clone(),
            desired: write.desired.clone(),
        })
        .collect();
    let (report, stop) = match writer.update(describe, planned).await {
        Ok(report) => (report, None),
        Err(salesforce_write::WriteError::Stopped { report, source }) => {
            let budget = matches!(
                source,
                SalesforceError::DailyLimit { .. } | SalesforceError::Reserve { .. }
            );
            (
                *report,
                Some(StreamStop {
                    system: System::Salesforce,
                    message: format!("Salesforce write-back to {object}: {source}"),
                    resumable: budget,
                }),
            )
        }
        Err(other) => (
            salesforce_write::WriteReport {
                unsent: batch.iter().map(|write| write.key.id.clone()).collect(),
                ..Default::default()
            },
            Some(StreamStop {
                system: System::Salesforce,
                message: format!("Salesforce write-back to {object}: {other}"),
                resumable: false,
            }),
        ),
    };
    let mut unconfirmed: HashSet<String> = HashSet::new();
    let mut letters = Vec::new();
    for letter in &report.dead_letters {
        unconfirmed.insert(letter.id.clone());
        let code = letter.error_code.as_deref().unwrap_or("refused");
        let fields = if letter.fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", letter.fields.join(", "))
        };
        letters.push(DeadLetterRow {
            key: RecordKey::new(System::Salesforce, object.clone(), letter.id.clone()),
            reason: format!("write-back {code}{fields}: {}", letter.reason),
            payload: None,
        });
    }
    let unsent: HashSet<String> = report.unsent.iter().cloned().collect();
    let (done, written) = settle(&batch, letters, &unconfirmed, &unsent);
    RoundOutcome {
        done,
        written,
        refused_regressions: 0,
        stop,
    }
}

fn stop_hubspot(sink: &mut Sink<'_>, object: &str, error: &HubspotError) {
    let budget = matches!(
        error,
        HubspotError::DailyLimit { .. } | HubspotError::DailyReserve { .. }
    );
    if !budget {
        sink.failed = true;
    }
    sink.stops.push(StreamStop {
        system: System::Hubspot,
        message: format!("HubSpot write-back to {object}: {error}"),
        resumable: budget,
    });
}

fn stop_salesforce(sink: &mut Sink<'_>, object: &str, error: &SalesforceError) {
    let budget = matches!(
        error,
        SalesforceError::DailyLimit { .. } | SalesforceError::Reserve { .. }
    );
    if !budget {
        sink.failed = true;
    }
    sink.stops.push(StreamStop {
        system: System::Salesforce,
        message: format!("Salesforce write-back to {object}: {error}"),
        resumable: budget,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::ReconcileCommit;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_the_crm_never_answers_is_dropped_after_a_stop_and_its_writes_stay_queued() {
        let mapper = crate::mapping::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
        )
        .expect("the shipped mappings load");
        let directory = tempfile::tempdir().expect("a temporary directory");
        let store = crate::store::SqliteStore::open(
            &directory.path().join("warehouse.db"),
            mapper.vocabulary(),
        )
        .expect("the warehouse opens");
        let warehouse = Warehouse::sqlite(store, super::super::stage_ids(&mapper));
        let run_id = warehouse
            .begin_run(
                jiff::Timestamp::now(),
                "test".into(),
                jiff::SignedDuration::from_secs(60),
            )
            .await
            .expect("a run begins");
        let key = RecordKey::new(System::Hubspot, "contacts", "101");
        let queued = ReconcileCommit {
            writes: vec![PendingWrite {
                key: key.clone(),
                unified_id: "p-1".into(),
                changes: r#"{"lifecyclestage":{"value":"lead","rule":"test"}}"#.into(),
                current: r#"{"lifecyclestage":"subscriber"}"#.into(),
                allow_regression: false,
            }],
            ..ReconcileCommit::default()
        };
        warehouse
            .commit_reconcile(run_id, jiff::Timestamp::now(), queued)
            .await
            .expect("the write is queued");

        let stop = super::super::stop::StopRequest::default();
        let progress = super::super::progress::Silent;
        let mut sink = Sink::new(&progress);
        let stopper = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                stop.request("SIGTERM received");
            }
        });
        let started = std::time::Instant::now();
        // A CRM that takes the round and never answers (as one that keeps throttling it).
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            write_rounds(
                &warehouse,
                &stop,
                System::Hubspot,
                "contacts",
                Batches::Queue {
                    after: None,
                    unreadable: Vec::new(),
                },
                run_id,
                &mut sink,
                |_round| std::future::pending::<RoundOutcome>(),
            ),
        )
        .await
        .expect("the write-back ends once the stop's grace is over")
        .expect("without an error");
        let waited = started.elapsed();
        assert!(
            waited >= ROUND_STOP_GRACE,
            "the round was dropped after {waited:?}, before its grace"
        );
        stopper.await.expect("the stopper ends");
        assert_eq!(sink.written, 0);
        let still_queued = warehouse
            .pending_writes(System::Hubspot, "contacts".into(), None, 10)
            .await
            .expect("the queue reads");
        assert_eq!(
            still_queued
                .iter()
                .map(|write| &write.key)
                .collect::<Vec<_>>(),
            vec![&key],
            "the dropped round's write stays queued for the next run"
        );
        let ledger = warehouse.ledger(vec![key]).await.expect("the ledger reads");
        assert_eq!(
            ledger
                .iter()
                .map(|row| row.field.as_str())
                .collect::<Vec<_>>(),
            vec!["lifecyclestage"],
            "the value was in the ledger before the round was sent"
        );
    }
}
