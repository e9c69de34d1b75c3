//! Salesforce write-back against the emulator: only changed records and fields are sent, 200
//! a collection; under the `partial` fault locked records are retried and land; inactive or
//! unknown restricted-picklist values and converted leads never reach the API; upserts by an
//! external id create the missing and update the known; a spent budget stops with a report.

mod salesforce_common;

use std::collections::BTreeMap;
use std::time::Duration;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::record::SourceRecord;
use crmsync::salesforce::client::{SalesforceClient, SalesforceSettings};
use crmsync::salesforce::describe::ObjectDescribe;
use crmsync::salesforce::read::{ReadEvent, SalesforceReader};
use crmsync::salesforce::write::{PlannedUpdate, PlannedUpsert, SalesforceWriter, WriteError};
use salesforce_common::{client, client_with, jwt, quiet, start};
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn leads(client: &SalesforceClient, describe: &ObjectDescribe) -> Vec<SourceRecord> {
    let reader = SalesforceReader::new(client);
    let fields: Vec<String> = ["Title", "Status", "HubSpot_Contact_Id__c", "LastName"]
        .map(str::to_string)
        .to_vec();
    let (sender, mut receiver) = mpsc::channel(4);
    let read = async {
        let summary = reader.full(describe, &fields, &sender).await;
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

/// An emulated org of 2,000 people with `faults`, a client, the Lead describe and the leads.
async fn org_with_faults(
    faults: &str,
) -> (
    RunningEmulator,
    SalesforceClient,
    ObjectDescribe,
    Vec<SourceRecord>,
) {
    let emulator = start(EmulatorConfig {
        faults: faults.parse().expect("faults"),
        ..quiet(2_000)
    })
    .await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let records = leads(&client, &describe).await;
    (emulator, client, describe, records)
}

fn planned(record: &SourceRecord, desired: &[(&str, Value)]) -> PlannedUpdate {
    PlannedUpdate {
        id: record.id.clone(),
        current: record
            .properties
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        desired: desired
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    }
}

fn is_converted(record: &SourceRecord) -> bool {
    record.properties.get("IsConverted") == Some(&Value::Bool(true))
}

fn title(records: &[SourceRecord], id: &str) -> Option<String> {
    records
        .iter()
        .find(|record| record.id == id)
        .and_then(|record| record.properties.get("Title"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_records_are_retried_and_bad_values_never_leave() {
    let (_emulator, client, describe, records) = org_with_faults("partial").await;
    let open: Vec<&SourceRecord> = records
        .iter()
        .filter(|record| !is_converted(record))
        .collect();
    assert!(open.len() > 700);
    let mut plan: Vec<PlannedUpdate> = open[..600]
        .iter()
        .map(|record| planned(record, &[("Title", json!("Revenue Lead"))]))
        .collect();
    // Already right: nothing to send.
    plan.extend(open[600..620].iter().map(|record| {
        let held = record
            .properties
            .get("Title")
            .cloned()
            .unwrap_or(Value::Null);
        planned(record, &[("Title", held)])
    }));
    let status = describe.field("Status").expect("Status");
    let inactive = status
        .picklist
        .iter()
        .find(|value| !value.active)
        .expect("an inactive status")
        .value
        .clone();
    plan.push(planned(open[650], &[("Status", json!(inactive))]));
    plan.push(planned(open[651], &[("Status", json!("Wizard"))]));
    plan.push(planned(open[652], &[("NoSuchField__c", json!("x"))]));
    let converted = records
        .iter()
        .find(|record| is_converted(record))
        .expect("a converted lead");
    plan.push(planned(converted, &[("Title", json!("Revenue Lead"))]));

    let calls_before = client.calls();
    let mut writer = SalesforceWriter::new(&client);
    writer.retry_wait = Duration::from_millis(50);
    let report = writer.update(&describe, plan).await.expect("write-back");
    assert_eq!(report.written, 600, "{report:?}");
    assert_eq!(report.unchanged, 20);
    assert!(report.retried > 0, "the partial fault locked some records");
    let letters: Vec<(&str, Vec<String>)> = report
        .dead_letters
        .iter()
        .map(|letter| (letter.id.as_str(), letter.fields.clone()))
        .collect();
    assert_eq!(
        letters,
        vec![
            (open[650].id.as_str(), vec!["Status".to_string()]),
            (open[651].id.as_str(), vec!["Status".to_string()]),
            (open[652].id.as_str(), vec!["NoSuchField__c".to_string()]),
            (converted.id.as_str(), vec![]),
        ],
        "{:?}",
        report.dead_letters
    );
    assert!(report.dead_letters[0].reason.contains("inactive"));
    assert!(report.dead_letters[1].reason.contains("not a value"));
    assert_eq!(
        report.dead_letters[3].error_code.as_deref(),
        Some("CANNOT_UPDATE_CONVERTED_LEAD")
    );
    let calls = client.calls() - calls_before;
    assert!(
        calls <= 3 + 4,
        "collections of 200 and retries of the locked: {calls} calls"
    );
    let after = leads(&client, &describe).await;
    for record in &open[..600] {
        assert_eq!(title(&after, &record.id).as_deref(), Some("Revenue Lead"));
    }
    // The refused values never reached the org, nor did any write to their records.
    let status = |records: &[SourceRecord], id: &str| {
        records
            .iter()
            .find(|record| record.id == id)
            .and_then(|record| record.properties.get("Status"))
            .cloned()
    };
    for refused in [open[650], open[651]] {
        assert_eq!(status(&after, &refused.id), status(&records, &refused.id));
        let stamp = |records: &[SourceRecord]| {
            records
                .iter()
                .find(|record| record.id == refused.id)
                .map(|record| record.modified_at)
        };
        assert_eq!(stamp(&after), stamp(&records), "{} untouched", refused.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_by_external_id_create_the_missing_and_update_the_known() {
    let emulator = start(quiet(300)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let records = leads(&client, &describe).await;
    let known: Vec<&SourceRecord> = records
        .iter()
        .filter(|record| !is_converted(record))
        .take(2)
        .collect();
    let writer = SalesforceWriter::new(&client);
    // Two leads already carry HubSpot ids.
    let tagged = writer
        .update(
            &describe,
            known
                .iter()
                .enumerate()
                .map(|(n, record)| {
                    planned(
                        record,
                        &[("HubSpot_Contact_Id__c", json!(format!("hs-known-{n}")))],
                    )
                })
                .collect(),
        )
        .await
        .expect("tag");
    assert_eq!(tagged.written, 2);
    let fields = |n: usize| {
        BTreeMap::from([
            ("LastName".to_string(), json!(format!("New{n}"))),
            ("Company".to_string(), json!("From HubSpot Inc")),
            ("Title".to_string(), json!("Upserted")),
        ])
    };
    let mut upserts: Vec<PlannedUpsert> = (0..250)
        .map(|n| PlannedUpsert {
            key: format!("hs-new-{n}"),
            desired: fields(n),
        })
        .collect();
    upserts.extend((0..2).map(|n| PlannedUpsert {
        key: format!("hs-known-{n}"),
        desired: BTreeMap::from([("Title".to_string(), json!("Upserted"))]),
    }));
    let report = writer
        .upsert(&describe, "HubSpot_Contact_Id__c", upserts)
        .await
        .expect("upsert");
    assert_eq!(report.written, 252, "{report:?}");
    assert_eq!(report.created, 250);
    let after = leads(&client, &describe).await;
    assert_eq!(after.len(), records.len() + 250);
    for record in &known {
        assert_eq!(title(&after, &record.id).as_deref(), Some("Upserted"));
    }
    let not_external = writer
        .upsert(&describe, "LastName", Vec::new())
        .await
        .expect_err("LastName is no external id");
    assert!(matches!(not_external, WriteError::NotAnExternalId { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_reaching_the_reserve_reports_what_it_wrote() {
    let emulator = start(EmulatorConfig {
        rate_limits: true,
        salesforce_daily_api_requests: 40,
        ..quiet(12_000)
    })
    .await;
    let client = client_with(
        &emulator,
        jwt(&emulator),
        SalesforceSettings {
            reserve_percent: 50,
            ..SalesforceSettings::default()
        },
    );
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let records = leads(&client, &describe).await;
    let used = client.api_usage().expect("usage").0;
    let open: Vec<&SourceRecord> = records
        .iter()
        .filter(|record| !is_converted(record))
        .collect();
    let plan: Vec<PlannedUpdate> = open
        .iter()
        .take(200 * 25)
        .map(|record| planned(record, &[("Title", json!("Before the reserve"))]))
        .collect();
    let sent = plan.len();
    assert_eq!(sent, 5_000, "more than the budget allows");
    let outcome = SalesforceWriter::new(&client).update(&describe, plan).await;
    let Err(WriteError::Stopped { report, source }) = outcome else {
        panic!("the reserve stops the write-back: {outcome:?}");
    };
    let allowed = (20 - used) as usize;
    assert_eq!(report.written, allowed * 200, "{source}");
    assert_eq!(report.written + report.unsent.len(), sent);
    assert!(source.to_string().contains("reserve"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_out_several_at_once() {
    // Every answer takes 50–250 ms: requests sent one after another never overlap.
    let (emulator, client, describe, records) = org_with_faults("slow").await;
    assert_eq!(
        emulator.stats().peak_in_flight.get("salesforce"),
        Some(&1),
        "the reads go one at a time"
    );
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .filter(|record| !is_converted(record))
        .map(|record| planned(record, &[("Title", json!("Several at once"))]))
        .collect();
    assert!(plan.len() > 3 * 200, "{}", plan.len());
    let report = SalesforceWriter::new(&client)
        .update(&describe, plan.clone())
        .await
        .expect("written");
    assert_eq!(report.written, plan.len(), "{report:?}");
    let peak = emulator.stats().peak_in_flight.get("salesforce").copied();
    assert!(peak.is_some_and(|peak| peak >= 2), "{peak:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_of_a_known_record_sends_only_what_differs_and_a_null_clears() {
    let emulator = start(quiet(200)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let writer = SalesforceWriter::new(&client);
    let upsert = |key: &str, desired: &[(&str, Value)]| PlannedUpsert {
        key: key.to_string(),
        desired: desired
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    };
    let created = writer
        .upsert(
            &describe,
            "HubSpot_Contact_Id__c",
            vec![upsert(
                "hs-x",
                &[
                    ("LastName", json!("Known")),
                    ("Company", json!("Acme")),
                    ("Title", json!("T")),
                ],
            )],
        )
        .await
        .expect("create");
    assert_eq!((created.written, created.created), (1, 1), "{created:?}");
    // The same values again: nothing to send.
    let calls_before = client.calls();
    let again = writer
        .upsert(
            &describe,
            "HubSpot_Contact_Id__c",
            vec![upsert(
                "hs-x",
                &[("LastName", json!("Known")), ("Title", json!("T"))],
            )],
        )
        .await
        .expect("again");
    assert_eq!((again.written, again.unchanged), (0, 1), "{again:?}");
    assert_eq!(client.calls() - calls_before, 1, "one lookup, no write");
    // A null clears; a new record with nothing to create it with is reported.
    let cleared = writer
        .upsert(
            &describe,
            "HubSpot_Contact_Id__c",
            vec![
                upsert("hs-x", &[("Title", Value::Null)]),
                upsert("hs-y", &[("Title", Value::Null)]),
            ],
        )
        .await
        .expect("clear");
    assert_eq!(cleared.written, 1, "{cleared:?}");
    assert_eq!(cleared.dead_letters.len(), 1, "{cleared:?}");
    assert_eq!(cleared.dead_letters[0].id, "hs-y");
    let after = leads(&client, &describe).await;
    let known = after
        .iter()
        .find(|record| {
            record
                .properties
                .get("HubSpot_Contact_Id__c")
                .and_then(Value::as_str)
                == Some("hs-x")
        })
        .expect("the upserted lead");
    assert_eq!(known.properties.get("Title"), Some(&Value::Null), "cleared");
}
