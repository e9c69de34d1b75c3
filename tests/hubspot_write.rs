//! HubSpot write-back against the emulator: only changed records and properties are sent, in
//! batches of 100; under the `partial` fault good items land, locked ones are retried alone
//! and land too, refused ones are dead-lettered with their reason; values HubSpot would refuse
//! never leave; lifecycle regressions happen only when allowed, by clearing first.

mod hubspot_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crmsync::emulator::faults::Faults;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::hubspot::client::{HubspotClient, RateSettings};
use crmsync::hubspot::read::{HubspotReader, ReadEvent};
use crmsync::hubspot::schema::PortalSchema;
use crmsync::hubspot::write::{HubspotWriter, PlannedUpdate, PlannedUpsert, WriteError};
use crmsync::record::SourceRecord;
use hubspot_common::{private_client, start_with};
use serde_json::Value;
use tokio::sync::mpsc;

async fn connect(faults: &str) -> (RunningEmulator, HubspotClient) {
    let emulator = start_with(EmulatorConfig {
        seed: 41,
        records: 400,
        rate_limits: false,
        faults: faults.parse::<Faults>().expect("faults"),
        ..EmulatorConfig::default()
    })
    .await;
    let client = private_client(&emulator, RateSettings::default());
    (emulator, client)
}

/// An emulated portal with `faults`, a client, the contacts' schema and the contacts.
async fn portal(
    faults: &str,
) -> (
    RunningEmulator,
    HubspotClient,
    PortalSchema,
    Vec<SourceRecord>,
) {
    let (emulator, client) = connect(faults).await;
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("schema");
    let records = contacts(&client).await;
    (emulator, client, schema, records)
}

async fn contacts(client: &HubspotClient) -> Vec<SourceRecord> {
    let reader = HubspotReader::new(client);
    let (sender, mut receiver) = mpsc::channel(4);
    let properties: Vec<String> = ["email", "jobtitle", "lifecyclestage"]
        .map(str::to_string)
        .to_vec();
    let read = async {
        let summary = reader.full("contacts", &properties, &sender).await;
        drop(sender);
        summary
    };
    let collect = async {
        let mut records = Vec::new();
        while let Some(event) = receiver.recv().await {
            if let ReadEvent::Records(page) = event {
                records.extend(page);
            }
        }
        records
    };
    let (summary, records) = tokio::join!(read, collect);
    summary.expect("read");
    records
}

fn current(record: &SourceRecord) -> BTreeMap<String, String> {
    record
        .properties
        .iter()
        .filter_map(|(name, value)| value.as_str().map(|text| (name.clone(), text.to_string())))
        .collect()
}

fn planned(
    record: &SourceRecord,
    desired: &[(&str, &str)],
    allow_regression: bool,
) -> PlannedUpdate {
    PlannedUpdate {
        id: record.id.clone(),
        current: current(record),
        desired: desired
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        allow_regression,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_land_the_good_retry_the_locked_and_dead_letter_the_refused() {
    let (emulator, client, schema, records) = portal("partial").await;
    assert!(records.len() > 290);
    let mut plan: Vec<PlannedUpdate> = records[..250]
        .iter()
        .map(|record| planned(record, &[("jobtitle", "Revenue Lead")], false))
        .collect();
    // Already right: nothing to send.
    plan.extend(records[250..270].iter().map(|record| {
        let title = current(record).get("jobtitle").cloned().unwrap_or_default();
        planned(record, &[("jobtitle", title.as_str())], false)
    }));
    // A value HubSpot would refuse, and a record that no longer exists.
    plan.push(planned(
        &records[280],
        &[("lifecyclestage", "wizard")],
        false,
    ));
    let mut ghost = planned(&records[281], &[("jobtitle", "Ghost")], false);
    ghost.id = "999999999".into();
    plan.push(ghost);
    let calls_before = client.calls();
    let mut writer = HubspotWriter::new(&client, &schema);
    writer.retry_wait = Duration::from_millis(50);
    let report = writer.update("contacts", plan).await.expect("write-back");
    assert_eq!(report.written, 250, "{report:?}");
    assert_eq!(report.unchanged, 20);
    assert!(report.retried > 0, "the partial fault locked some items");
    let letters: Vec<(&str, Option<&str>)> = report
        .dead_letters
        .iter()
        .map(|letter| (letter.id.as_str(), letter.property.as_deref()))
        .collect();
    assert_eq!(
        letters,
        vec![
            (records[280].id.as_str(), Some("lifecyclestage")),
            ("999999999", None)
        ],
        "{:?}",
        report.dead_letters
    );
    assert!(
        report.dead_letters[0]
            .reason
            .contains("not one of the options")
    );
    assert!(report.dead_letters[1].reason.contains("OBJECT_NOT_FOUND"));
    let calls = client.calls() - calls_before;
    assert!(
        calls <= 3 + 3,
        "batches of 100 and retries of the locked only: {calls} calls"
    );
    // Every intended change is in HubSpot.
    let after = contacts(&client).await;
    let titled = after
        .iter()
        .filter(|record| {
            record.properties.get("jobtitle").and_then(Value::as_str) == Some("Revenue Lead")
        })
        .count();
    assert_eq!(titled, 250);
    drop(emulator);
}

#[tokio::test]
async fn lifecycle_regressions_happen_only_when_allowed() {
    let (_emulator, client, schema, records) = portal("none").await;
    let customers: Vec<&SourceRecord> = records
        .iter()
        .filter(|record| {
            record
                .properties
                .get("lifecyclestage")
                .and_then(Value::as_str)
                == Some("customer")
        })
        .take(2)
        .collect();
    assert_eq!(customers.len(), 2);
    let writer = HubspotWriter::new(&client, &schema);
    let report = writer
        .update(
            "contacts",
            vec![
                planned(customers[0], &[("lifecyclestage", "lead")], false),
                planned(customers[1], &[("lifecyclestage", "lead")], true),
            ],
        )
        .await
        .expect("write-back");
    assert_eq!(report.refused_regressions.len(), 1);
    assert_eq!(report.refused_regressions[0].id, customers[0].id);
    assert_eq!(report.refused_regressions[0].from, "customer");
    assert_eq!(report.written, 1);
    let after = contacts(&client).await;
    let stage = |id: &str| {
        after
            .iter()
            .find(|record| record.id == id)
            .and_then(|record| record.properties.get("lifecyclestage"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    assert_eq!(
        stage(&customers[0].id).as_deref(),
        Some("customer"),
        "refused: unchanged"
    );
    assert_eq!(
        stage(&customers[1].id).as_deref(),
        Some("lead"),
        "allowed: cleared, then set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_by_email_create_the_missing_and_update_the_known() {
    let (_emulator, client, schema, records) = portal("partial").await;
    let known: Vec<String> = records
        .iter()
        .filter_map(|record| record.properties.get("email").and_then(Value::as_str))
        .take(2)
        .map(|email| email.trim().to_string())
        .collect();
    let upsert = |key: &str, desired: &[(&str, &str)]| PlannedUpsert {
        key: key.to_string(),
        desired: desired
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        allow_regression: false,
    };
    let mut upserts: Vec<PlannedUpsert> = (0..150)
        .map(|n| {
            upsert(
                &format!("new.person{n}@salesforce-only.example"),
                &[
                    ("firstname", &format!("New{n}")),
                    ("lifecyclestage", "lead"),
                ],
            )
        })
        .collect();
    for email in &known {
        // HubSpot matches emails ignoring case.
        upserts.push(upsert(&email.to_uppercase(), &[("jobtitle", "Known")]));
    }
    upserts.push(upsert(
        "bad.stage@salesforce-only.example",
        &[("lifecyclestage", "wizard")],
    ));
    // The same person twice (two Salesforce records, one email): one write, one dead letter.
    upserts.push(upsert(
        "NEW.PERSON0@salesforce-only.example",
        &[("firstname", "Twin")],
    ));
    let mut writer = HubspotWriter::new(&client, &schema);
    writer.retry_wait = Duration::from_millis(50);
    let report = writer
        .upsert("contacts", "email", upserts)
        .await
        .expect("upsert");
    assert_eq!(report.written, 152, "{report:?}");
    assert_eq!(report.dead_letters.len(), 2, "{:?}", report.dead_letters);
    assert!(report.dead_letters[0].reason.contains("second write"));
    assert_eq!(
        report.dead_letters[1].property.as_deref(),
        Some("lifecyclestage")
    );
    let after = contacts(&client).await;
    assert_eq!(
        after.len(),
        records.len() + 150,
        "150 created, the known ones updated"
    );
    let titled = after
        .iter()
        .filter(|record| record.properties.get("jobtitle").and_then(Value::as_str) == Some("Known"))
        .count();
    assert_eq!(titled, 2);
}

fn stage_of(records: &[SourceRecord], id: &str) -> Option<String> {
    records
        .iter()
        .find(|record| record.id == id)
        .and_then(|record| record.properties.get("lifecyclestage"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn with_stage<'r>(records: &'r [SourceRecord], stage: &str) -> Vec<&'r SourceRecord> {
    records
        .iter()
        .filter(|record| {
            record
                .properties
                .get("lifecyclestage")
                .and_then(Value::as_str)
                == Some(stage)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_of_a_known_contact_keeps_to_the_regression_policy() {
    let (_emulator, client, schema, records) = portal("none").await;
    let customers = with_stage(&records, "customer");
    let email = |record: &SourceRecord| {
        record
            .properties
            .get("email")
            .and_then(Value::as_str)
            .map(|email| email.trim().to_string())
            .expect("an email")
    };
    let (kept, moved) = (customers[0], customers[1]);
    let writer = HubspotWriter::new(&client, &schema);
    let report = writer
        .upsert(
            "contacts",
            "email",
            vec![
                PlannedUpsert {
                    key: email(kept),
                    desired: BTreeMap::from([("lifecyclestage".into(), "lead".into())]),
                    allow_regression: false,
                },
                PlannedUpsert {
                    key: email(moved),
                    desired: BTreeMap::from([("lifecyclestage".into(), "lead".into())]),
                    allow_regression: true,
                },
            ],
        )
        .await
        .expect("upsert");
    assert_eq!(report.refused_regressions.len(), 1, "{report:?}");
    assert_eq!(report.refused_regressions[0].id, kept.id);
    assert_eq!(report.written, 1);
    let after = contacts(&client).await;
    assert_eq!(after.len(), records.len(), "nothing created");
    assert_eq!(stage_of(&after, &kept.id).as_deref(), Some("customer"));
    assert_eq!(stage_of(&after, &moved.id).as_deref(), Some("lead"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_regressions_land_through_locked_items() {
    let (_emulator, client, schema, records) = portal("partial").await;
    let later: Vec<&SourceRecord> = records
        .iter()
        .filter(|record| {
            matches!(
                record
                    .properties
                    .get("lifecyclestage")
                    .and_then(Value::as_str),
                Some("customer" | "opportunity" | "salesqualifiedlead")
            )
        })
        .collect();
    assert!(later.len() >= 30, "{} records", later.len());
    let plan: Vec<PlannedUpdate> = later
        .iter()
        .map(|record| {
            planned(
                record,
                &[("lifecyclestage", "subscriber"), ("jobtitle", "Moved back")],
                true,
            )
        })
        .collect();
    let mut writer = HubspotWriter::new(&client, &schema);
    writer.retry_wait = Duration::from_millis(50);
    let report = writer.update("contacts", plan).await.expect("write-back");
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    assert_eq!(report.written, later.len());
    let after = contacts(&client).await;
    for record in &later {
        assert_eq!(
            stage_of(&after, &record.id).as_deref(),
            Some("subscriber"),
            "{}",
            record.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_hubspot_refuses_whole_loses_only_the_bad_record() {
    let (_emulator, client) = connect("none").await;
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("schema");
    let owners = crmsync::hubspot::schema::owners(&client)
        .await
        .expect("owners");
    let records = contacts(&client).await;
    // Owner ids are left to HubSpot to check: one that is not a number fails the batch.
    let mut plan: Vec<PlannedUpdate> = records[..60]
        .iter()
        .enumerate()
        .map(|(n, record)| {
            let owner = &owners[n % owners.len()].id;
            planned(
                record,
                &[("hubspot_owner_id", owner), ("jobtitle", "Assigned")],
                false,
            )
        })
        .collect();
    plan[37] = planned(
        &records[37],
        &[
            ("hubspot_owner_id", "not-an-owner"),
            ("jobtitle", "Assigned"),
        ],
        false,
    );
    let calls_before = client.calls();
    let writer = HubspotWriter::new(&client, &schema);
    let report = writer.update("contacts", plan).await.expect("write-back");
    let calls = client.calls() - calls_before;
    assert_eq!(report.dead_letters.len(), 1, "{:?}", report.dead_letters);
    let letter = &report.dead_letters[0];
    assert_eq!(
        (letter.id.as_str(), letter.property.as_deref()),
        (records[37].id.as_str(), Some("hubspot_owner_id"))
    );
    assert!(letter.reason.contains("not-an-owner"), "{}", letter.reason);
    assert_eq!(
        report.written, 60,
        "the bad record's other change lands too"
    );
    // Halving 60 down to one: a handful of calls, not one per record.
    assert!(calls <= 16, "{calls} calls");
    let after = contacts(&client).await;
    let assigned: BTreeSet<&str> = after
        .iter()
        .filter(|record| {
            record.properties.get("jobtitle").and_then(Value::as_str) == Some("Assigned")
        })
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(assigned.len(), 60);
}

/// A portal whose day allows `per_day` requests (10 s windows unlimited in practice).
struct DayLimit {
    records: usize,
    faults: &'static str,
    per_day: u64,
}

/// The emulator for `day`, a client with `rates`, and the contacts' schema (loaded).
async fn portal_with_a_day_of(
    day: DayLimit,
    rates: RateSettings,
) -> (RunningEmulator, HubspotClient, PortalSchema) {
    let emulator = start_with(EmulatorConfig {
        seed: 41,
        records: day.records,
        rate_limits: true,
        faults: day.faults.parse::<Faults>().expect("faults"),
        hubspot_limits: crmsync::emulator::hubspot::HubspotLimits {
            per_ten_seconds: 1_000,
            per_day: day.per_day,
        },
        ..EmulatorConfig::default()
    })
    .await;
    let client = private_client(&emulator, rates);
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("schema");
    (emulator, client, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_stopped_by_the_daily_allowance_reports_what_it_wrote() {
    let (_emulator, client, schema) = portal_with_a_day_of(
        DayLimit {
            records: 400,
            faults: "none",
            per_day: 8,
        },
        RateSettings {
            requests_per_10s: 1_000,
            daily_reserve_percent: 0,
            ..RateSettings::default()
        },
    )
    .await;
    // The schema and the full read (four list pages, one of archived) leave two calls.
    let records: Vec<SourceRecord> = contacts(&client).await.into_iter().take(300).collect();
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .map(|record| planned(record, &[("jobtitle", "Before midnight")], false))
        .collect();
    let writer = HubspotWriter::new(&client, &schema);
    let calls_before = client.calls();
    let outcome = writer.update("contacts", plan).await;
    let Err(WriteError::Stopped { report, source }) = outcome else {
        panic!("the allowance runs out: {outcome:?}");
    };
    // Two batches fit in the day; the third is never sent.
    assert_eq!(client.calls() - calls_before, 2);
    assert!(source.to_string().contains("daily"), "{source}");
    assert_eq!(report.written, 200, "{report:?}");
    assert_eq!(report.unsent.len(), 100, "{report:?}");
    let unsent: BTreeSet<&String> = report.unsent.iter().collect();
    assert!(
        records[200..]
            .iter()
            .all(|record| unsent.contains(&record.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_out_several_at_once() {
    // Every answer takes 50–250 ms: batches sent one after another never overlap.
    let emulator = start_with(EmulatorConfig {
        seed: 41,
        records: 400,
        rate_limits: false,
        faults: "slow".parse::<Faults>().expect("faults"),
        ..EmulatorConfig::default()
    })
    .await;
    let client = private_client(
        &emulator,
        RateSettings {
            requests_per_10s: 1_000,
            ..RateSettings::default()
        },
    );
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("schema");
    let records = contacts(&client).await;
    assert!(records.len() > 300, "{}", records.len());
    let peak_before = emulator.stats().peak_in_flight.get("hubspot").copied();
    assert_eq!(peak_before, Some(1), "the reads go one at a time");
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .map(|record| planned(record, &[("jobtitle", "Several at once")], false))
        .collect();
    let report = HubspotWriter::new(&client, &schema)
        .update("contacts", plan)
        .await
        .expect("written");
    assert_eq!(report.written, records.len(), "{report:?}");
    let peak = emulator.stats().peak_in_flight.get("hubspot").copied();
    assert!(peak.is_some_and(|peak| peak >= 2), "{peak:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_at_once_stop_together_at_the_daily_reserve() {
    // Answers take 50–250 ms, so batches are out together, and the client's pacing makes
    // requests wait for their turn between the check and the sending.
    let (_emulator, client, schema) = portal_with_a_day_of(
        DayLimit {
            records: 1_500,
            faults: "slow",
            per_day: 40,
        },
        RateSettings {
            requests_per_10s: 100,
            daily_reserve_percent: 50,
            ..RateSettings::default()
        },
    )
    .await;
    let records = contacts(&client).await;
    let used = client.calls();
    let allowed = 20 - used;
    assert!(
        records.len() / 100 > allowed as usize + 4,
        "more batches than the day leaves: {} records, {used} calls made",
        records.len()
    );
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .map(|record| planned(record, &[("jobtitle", "Up to the reserve")], false))
        .collect();
    let outcome = HubspotWriter::new(&client, &schema)
        .update("contacts", plan)
        .await;
    let Err(WriteError::Stopped { report, source }) = outcome else {
        panic!("the reserve stops the write-back: {outcome:?}");
    };
    assert!(source.to_string().contains("reserve"), "{source}");
    // Exactly the calls the reserve leaves, though four go out at once.
    assert_eq!(client.calls(), 20, "{source}");
    assert_eq!(report.written, allowed as usize * 100, "{report:?}");
    assert_eq!(report.written + report.unsent.len(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_read_before_hubspot_moved_it_on_is_not_reported_as_written() {
    let (_emulator, client, schema, records) = portal("none").await;
    let customers = with_stage(&records, "customer");
    let (kept, moved) = (customers[0], customers[1]);
    // Read as leads; since then HubSpot moved them on to customer.
    let stale = |record: &SourceRecord, allow_regression: bool| {
        let mut update = planned(
            record,
            &[("lifecyclestage", "opportunity")],
            allow_regression,
        );
        update
            .current
            .insert("lifecyclestage".to_string(), "lead".to_string());
        update
    };
    let writer = HubspotWriter::new(&client, &schema);
    let report = writer
        .update("contacts", vec![stale(kept, false), stale(moved, true)])
        .await
        .expect("write-back");
    assert_eq!(report.refused_regressions.len(), 1, "{report:?}");
    let refused = &report.refused_regressions[0];
    assert_eq!(
        (
            refused.id.as_str(),
            refused.from.as_str(),
            refused.to.as_str()
        ),
        (kept.id.as_str(), "customer", "opportunity")
    );
    assert_eq!(report.written, 1, "only the one moved back: {report:?}");
    let after = contacts(&client).await;
    assert_eq!(stage_of(&after, &kept.id).as_deref(), Some("customer"));
    assert_eq!(stage_of(&after, &moved.id).as_deref(), Some("opportunity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_stopped_while_looking_records_up_reports_every_record_unsent() {
    let emulator = start_with(EmulatorConfig {
        seed: 41,
        records: 100,
        rate_limits: true,
        hubspot_limits: crmsync::emulator::hubspot::HubspotLimits {
            per_ten_seconds: 1_000,
            per_day: 3,
        },
        ..EmulatorConfig::default()
    })
    .await;
    let client = private_client(
        &emulator,
        RateSettings {
            requests_per_10s: 1_000,
            daily_reserve_percent: 0,
            ..RateSettings::default()
        },
    );
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("schema");
    // Two calls left after the schema: two lookups of 100 go through, the third is over the
    // allowance, before anything is written.
    let upserts: Vec<PlannedUpsert> = (0..250)
        .map(|n| PlannedUpsert {
            key: format!("late.person{n}@salesforce-only.example"),
            desired: BTreeMap::from([("firstname".to_string(), format!("Late{n}"))]),
            allow_regression: false,
        })
        .collect();
    let outcome = HubspotWriter::new(&client, &schema)
        .upsert("contacts", "email", upserts)
        .await;
    let Err(WriteError::Stopped { report, .. }) = outcome else {
        panic!("the allowance runs out: {outcome:?}");
    };
    assert_eq!(report.written, 0);
    assert_eq!(report.unsent.len(), 250, "{report:?}");
}
