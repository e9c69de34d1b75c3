//! HubSpot reads against the emulator: a full read returns exactly the portal's contacts; an
//! incremental read after writes returns exactly what changed — also when 12,000 records share
//! one modification time past search's 10,000-result cap — with archived records as
//! tombstones; records stream through a bounded channel.

mod hubspot_common;
mod read_events;

use std::collections::{BTreeMap, BTreeSet};

use crmsync::emulator::data::{OrgProfile, generate};
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::hubspot::client::HubspotError;
use crmsync::hubspot::client::{HubspotClient, RateSettings};
use crmsync::hubspot::read::{HubspotReader, ReadError, ReadEvent, ReadSummary, ResumePoint};
use crmsync::record::SourceRecord;
use hubspot_common::{private_client, start_with};
use read_events::{Collected, collect, read_until};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SEED: u64 = 31;

async fn start(people: usize) -> RunningEmulator {
    start_with(EmulatorConfig {
        seed: SEED,
        records: people,
        rate_limits: false,
        ..EmulatorConfig::default()
    })
    .await
}

fn client(emulator: &RunningEmulator) -> HubspotClient {
    private_client(emulator, RateSettings::default())
}

fn properties() -> Vec<String> {
    [
        "email",
        "firstname",
        "lastname",
        "lifecyclestage",
        "hs_lead_status",
    ]
    .map(str::to_string)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_returns_exactly_the_portals_contacts() {
    let people = 26_000;
    let emulator = start(people).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let (collected, summary) = read_everything(&reader).await;
    let generated = generate(SEED, people, OrgProfile::Classic);
    // Every requested property of every live contact, as generated.
    type Values = BTreeMap<String, Vec<Option<String>>>;
    let expected: Values = generated
        .hubspot_contacts
        .iter()
        .filter(|contact| !contact.archived)
        .map(|contact| {
            let values = properties()
                .iter()
                .map(|name| contact.properties.text(name).map(str::to_string))
                .collect();
            (contact.id.clone(), values)
        })
        .collect();
    assert!(expected.len() >= 20_000, "{} contacts", expected.len());
    let read: Values = collected
        .records
        .iter()
        .map(|record| {
            let values = properties()
                .iter()
                .map(|name| {
                    record
                        .properties
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            (record.id.clone(), values)
        })
        .collect();
    assert_eq!(read.len(), collected.records.len(), "no record twice");
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(id, values)| read.get(*id) != Some(values))
        .map(|(id, _)| id)
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "differing contacts, e.g. {differing:?}"
    );
    assert_eq!(read, expected, "the same ids with the same property values");
    let archived: BTreeSet<&String> = collected.gone.iter().collect();
    let expected_archived: BTreeSet<&String> = generated
        .hubspot_contacts
        .iter()
        .filter(|contact| contact.archived)
        .map(|contact| &contact.id)
        .collect();
    assert_eq!(
        archived, expected_archived,
        "archived contacts as tombstones"
    );
    assert_eq!(summary.records, expected.len());
    let list_pages = expected.len().div_ceil(100);
    let archived_pages = expected_archived.len().div_ceil(100).max(1);
    assert_eq!(
        client.calls() as usize,
        list_pages + archived_pages,
        "one call per 100 records"
    );
}

async fn post(emulator: &RunningEmulator, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", emulator.info().hubspot_base_url))
        .bearer_auth(&emulator.info().hubspot_token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Every contact, read in full with the usual properties.
async fn read_everything(reader: &HubspotReader<'_>) -> (Collected<ResumePoint>, ReadSummary) {
    collect(|events| async move {
        reader
            .full("contacts", &properties(), &events)
            .await
            .expect("full read")
    })
    .await
}

/// Gives the first `count` live contacts the job title and one identical modification time,
/// as a bulk update in HubSpot does.
async fn touch(emulator: &RunningEmulator, count: usize, title: &str) {
    let touched = post(
        emulator,
        "/__emulator/hubspot/touch",
        json!({"object": "contacts", "count": count, "properties": {"jobtitle": title}}),
    )
    .await;
    assert_eq!(touched["touched"], count);
}

/// An incremental read from `since` the engine stops taking after `pages` pages: the ids it
/// took and the last resume point.
async fn stop_incremental(
    reader: &HubspotReader<'_>,
    since: jiff::Timestamp,
    pages: usize,
) -> (Vec<String>, Option<ResumePoint>) {
    let stopped = read_until(pages, |events| async move {
        reader
            .incremental("contacts", &properties(), since, &events)
            .await
    })
    .await;
    assert!(
        matches!(stopped.outcome, Err(ReadError::Closed { .. })),
        "{:?}",
        stopped.outcome
    );
    (stopped.ids, stopped.point)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_read_returns_what_changed_past_the_search_cap() {
    let emulator = start(17_000).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let (before, full) = read_everything(reader).await;
    let high_water = full.high_water.expect("a high-water mark");
    assert!(before.records.len() > 13_000);

    // 12,000 contacts stamped with one identical time, as a bulk update leaves them.
    touch(&emulator, 12_000, "Bulk").await;
    let mut changed: BTreeSet<String> = before
        .records
        .iter()
        .take(12_000)
        .map(|record| record.id.clone())
        .collect();
    // Two more, changed one by one after the bulk update, and one archived.
    let others: Vec<String> = before.records[12_500..12_502]
        .iter()
        .map(|record| record.id.clone())
        .collect();
    for id in &others {
        post(
            &emulator,
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [{"id": id, "properties": {"jobtitle": "Single"}}]}),
        )
        .await;
        changed.insert(id.clone());
    }
    let archived_id = before.records[13_000].id.clone();
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/archive",
        json!({"inputs": [{"id": archived_id}]}),
    )
    .await;
    // The overlap window may bring back records from just before the checkpoint.
    let overlap_start = high_water - jiff::SignedDuration::from_secs(60);
    let boundary: BTreeSet<String> = before
        .records
        .iter()
        .filter(|record| record.modified_at >= overlap_start && record.id != archived_id)
        .map(|record| record.id.clone())
        .collect();

    let calls_before = client.calls();
    let (after, summary) = collect(|events| async move {
        reader
            .incremental("contacts", &properties(), high_water, &events)
            .await
            .expect("incremental read")
    })
    .await;
    let read: BTreeSet<String> = after
        .records
        .iter()
        .map(|record| record.id.clone())
        .collect();
    assert_eq!(read.len(), after.records.len(), "no record twice");
    let expected: BTreeSet<String> = changed.union(&boundary).cloned().collect();
    assert_eq!(read.len(), expected.len());
    assert_eq!(read, expected, "exactly what changed");
    assert_eq!(
        after.gone,
        vec![archived_id],
        "the archived contact as a tombstone"
    );
    assert!(summary.high_water > Some(high_water));
    let calls = client.calls() - calls_before;
    println!("incremental read of {} records: {calls} calls", read.len());
    assert!(calls <= 70, "{calls} calls for {} records", read.len());
}

#[tokio::test]
async fn a_property_list_too_long_for_a_url_is_read_through_batch_read() {
    let emulator = start(600).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    // The `all` selection: every property the portal defines.
    let all = reader.all_properties("contacts").await.expect("properties");
    assert!(
        ["email", "lifecyclestage", "hs_lead_status"]
            .iter()
            .all(|name| all.iter().any(|p| p == name))
    );
    // Hundreds of properties: portals with many custom properties ask for this.
    let mut many = properties();
    many.extend((0..400).map(|n| format!("custom_property_with_a_long_name_{n:03}")));
    let (collected, _) = collect(|events| async move {
        reader
            .full("contacts", &many, &events)
            .await
            .expect("full read")
    })
    .await;
    let (plain, _) = read_everything(reader).await;
    let emails = |records: &[SourceRecord]| -> Vec<(String, Option<String>)> {
        records
            .iter()
            .map(|record| {
                (
                    record.id.clone(),
                    record
                        .properties
                        .get("email")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                )
            })
            .collect()
    };
    assert_eq!(emails(&collected.records), emails(&plain.records));
    let stats = emulator.stats();
    let batch_reads: u64 = stats
        .requests_by_endpoint
        .get("hubspot POST /crm/v3/objects/{type}/batch/read")
        .map_or(0, |by_status| by_status.values().sum());
    let pages = plain.records.len().div_ceil(100) as u64;
    assert_eq!(batch_reads, pages, "one batch/read per listed page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stopped_by_the_daily_allowance_resumes_where_it_stopped() {
    let emulator = start_with(EmulatorConfig {
        seed: SEED,
        records: 5_000,
        rate_limits: true,
        hubspot_limits: crmsync::emulator::hubspot::HubspotLimits {
            per_ten_seconds: 1_000,
            per_day: 30,
        },
        ..EmulatorConfig::default()
    })
    .await;
    let base = emulator.info().hubspot_base_url.clone();
    // Each run is its own process with its own client.
    let run_client = || {
        private_client(
            &emulator,
            RateSettings {
                requests_per_10s: 1_000,
                daily_reserve_percent: 0,
                ..RateSettings::default()
            },
        )
    };
    let client = run_client();
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let mut outcome = None;
    let (first, _) = collect(|events| {
        let outcome = &mut outcome;
        async move {
            *outcome = Some(reader.full("contacts", &properties(), &events).await);
            ReadSummary::default()
        }
    })
    .await;
    let stopped = outcome
        .expect("ran")
        .expect_err("the allowance runs out mid-read");
    assert!(
        matches!(
            stopped,
            ReadError::Api(HubspotError::DailyReserve { .. } | HubspotError::DailyLimit { .. })
        ),
        "{stopped}"
    );
    let Some(point) = first.resume.clone() else {
        panic!("no resume point after {} records", first.records.len());
    };
    let ResumePoint::Full { started, .. } = point.clone() else {
        panic!("a full read resumes as a full read: {point:?}");
    };
    assert!(
        first.records.len() >= 1_000,
        "{} records before the stop",
        first.records.len()
    );
    // Midnight: the allowance is whole again; the next run resumes from the checkpoint.
    reqwest::Client::new()
        .post(format!("{base}/__emulator/hubspot/new-day"))
        .send()
        .await
        .expect("new day");
    let client = run_client();
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let mut outcome = None;
    let (rest, _) = collect(|events| {
        let outcome = &mut outcome;
        async move {
            *outcome = Some(
                reader
                    .resume("contacts", &properties(), point.clone(), &events)
                    .await,
            );
            ReadSummary::default()
        }
    })
    .await;
    let resumed = outcome.expect("ran").expect("the rest reads");
    assert_eq!(
        resumed.high_water,
        Some(started),
        "the next incremental read starts from when the first run began"
    );
    let mut ids: Vec<String> = first
        .records
        .iter()
        .chain(&rest.records)
        .map(|record| record.id.clone())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no record twice");
    let expected = generate(SEED, 5_000, OrgProfile::Classic)
        .hubspot_contacts
        .iter()
        .filter(|contact| !contact.archived)
        .count();
    assert_eq!(total, expected, "every record once across the two runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_come_through_every_fault_profile_unchanged() {
    let quiet = start(1_500).await;
    let since = jiff::Timestamp::from_second(1_700_000_000).expect("timestamp");
    let read_all = |emulator: &RunningEmulator| {
        let client = client(emulator);
        async move {
            let reader = HubspotReader::new(&client);
            let reader = &reader;
            let (collected, _) = collect(|events| async move {
                reader
                    .incremental("contacts", &properties(), since, &events)
                    .await
                    .expect("incremental read")
            })
            .await;
            collected
                .records
                .iter()
                .map(|record| record.id.clone())
                .collect::<Vec<_>>()
        }
    };
    let expected = read_all(&quiet).await;
    assert!(expected.len() > 1_000);
    for faults in ["flaky", "storm", "flaky,storm,slow"] {
        let emulator = start_with(EmulatorConfig {
            seed: SEED,
            records: 1_500,
            rate_limits: false,
            faults: faults.parse().expect("faults"),
            ..EmulatorConfig::default()
        })
        .await;
        assert_eq!(read_all(&emulator).await, expected, "{faults}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_reach_an_incremental_read_as_a_merge_and_tombstones() {
    let emulator = start(400).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let (before, full) = read_everything(reader).await;
    let (primary, other) = (before.records[10].id.clone(), before.records[11].id.clone());
    let merged = post(
        &emulator,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": primary, "objectIdToMerge": other}),
    )
    .await;
    let merged_id = merged["id"]
        .as_str()
        .expect("the merged record")
        .to_string();
    let (sender, mut receiver) = mpsc::channel(2);
    let since = full.high_water.expect("high water");
    let read = async {
        let summary = reader
            .incremental("contacts", &properties(), since, &sender)
            .await;
        drop(sender);
        summary
    };
    let events = async {
        let mut merges = Vec::new();
        let mut tombstones = Vec::new();
        while let Some(event) = receiver.recv().await {
            match event {
                ReadEvent::Merged(found) => merges.extend(found),
                ReadEvent::Archived(found) => tombstones.extend(found.into_iter().map(|t| t.id)),
                _ => {}
            }
        }
        (merges, tombstones)
    };
    let (summary, (merges, mut tombstones)) = tokio::join!(read, events);
    summary.expect("incremental read");
    let merge = merges
        .iter()
        .find(|merge| merge.survivor == merged_id)
        .expect("the merge");
    let mut absorbed = merge.absorbed.clone();
    absorbed.sort();
    let mut originals = vec![primary, other];
    originals.sort();
    assert_eq!(absorbed, originals);
    tombstones.sort();
    assert_eq!(tombstones, originals, "both originals are archived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_edited_while_an_incremental_read_runs_are_not_skipped() {
    let emulator = start(4_000).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let since = jiff::Timestamp::from_second(1_000_000_000).expect("timestamp");
    // One event in flight: the reader is at most a page ahead of the edits below.
    let (sender, mut receiver) = mpsc::channel(1);
    let read = async {
        let summary = reader
            .incremental("contacts", &properties(), since, &sender)
            .await;
        drop(sender);
        summary
    };
    let consume = async {
        let mut ids = Vec::new();
        let mut edited = false;
        while let Some(event) = receiver.recv().await {
            let ReadEvent::Records(records) = event else {
                continue;
            };
            if !edited {
                // Records already read change: they move to the end of the modification
                // order, and everything after them moves up by as many places.
                edited = true;
                let inputs: Vec<Value> = records
                    .iter()
                    .take(50)
                    .map(|record| json!({"id": record.id, "properties": {"jobtitle": "Edited"}}))
                    .collect();
                let answer = post(
                    &emulator,
                    "/crm/v3/objects/contacts/batch/update",
                    json!({ "inputs": inputs }),
                )
                .await;
                assert_eq!(answer["status"], "COMPLETE", "{answer}");
            }
            ids.extend(records.into_iter().map(|record| record.id));
        }
        ids
    };
    let (summary, ids) = tokio::join!(read, consume);
    summary.expect("incremental read");
    let read: BTreeSet<String> = ids.into_iter().collect();
    let live: BTreeSet<String> = generate(SEED, 4_000, OrgProfile::Classic)
        .hubspot_contacts
        .iter()
        .filter(|contact| !contact.archived)
        .map(|contact| contact.id.clone())
        .collect();
    let missing: Vec<&String> = live.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "{} contacts never read, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_incremental_read_still_reports_what_was_archived_before_it_stopped() {
    let emulator = start(3_000).await;
    let client = client(&emulator);
    let mut reader = HubspotReader::new(&client);
    // No overlap: the resume point alone decides what the second run reads.
    reader.overlap = std::time::Duration::ZERO;
    let reader = &reader;
    let (before, full) = read_everything(reader).await;
    let high_water = full.high_water.expect("high water");
    let archived_id = before.records[5].id.clone();
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/archive",
        json!({"inputs": [{"id": archived_id}]}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    touch(&emulator, 1_500, "Later").await;

    // The first run stops (the engine went away) after three pages.
    let (first_ids, point) = stop_incremental(reader, high_water, 3).await;
    let point = point.expect("a resume point");
    let ResumePoint::Incremental { modified_since, .. } = point else {
        panic!("an incremental read resumes as one: {point:?}");
    };
    assert!(modified_since > high_water, "{point:?}");

    let (rest, _) = collect(|events| async move {
        reader
            .resume("contacts", &properties(), point, &events)
            .await
            .expect("resumed read")
    })
    .await;
    assert_eq!(
        rest.gone,
        vec![archived_id],
        "archived before the stop, reported after it"
    );
    let read: BTreeSet<String> = first_ids
        .into_iter()
        .chain(rest.records.iter().map(|record| record.id.clone()))
        .collect();
    assert!(
        read.len() >= 1_500,
        "{} records across both runs",
        read.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companies_and_deals_read_in_full_and_incrementally() {
    let people = 6_000;
    let emulator = start(people).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let generated = generate(SEED, people, OrgProfile::Classic);
    let epoch = jiff::Timestamp::from_second(1_000_000_000).expect("timestamp");
    for (object, records, property) in [
        ("companies", &generated.hubspot_companies, "domain"),
        ("deals", &generated.hubspot_deals, "dealstage"),
    ] {
        let expected: BTreeMap<String, Option<String>> = records
            .iter()
            .filter(|record| !record.archived)
            .map(|record| {
                let value = record.properties.text(property).map(str::to_string);
                (record.id.clone(), value)
            })
            .collect();
        // Companies are a fixed few; deals run to several pages.
        assert!(expected.len() >= 10, "{object}: {}", expected.len());
        let wanted = vec![property.to_string()];
        let wanted = &wanted;
        let values = |collected: &Collected<ResumePoint>| -> BTreeMap<String, Option<String>> {
            collected
                .records
                .iter()
                .map(|record| {
                    let value = record.properties.get(property).and_then(Value::as_str);
                    (record.id.clone(), value.map(str::to_string))
                })
                .collect()
        };
        let (full, _) = collect(|events| async move {
            reader
                .full(object, wanted, &events)
                .await
                .expect("full read")
        })
        .await;
        assert_eq!(values(&full), expected, "{object}: full read");
        // Every record changed since long ago: search on `hs_lastmodifieddate`.
        let (changed, summary) = collect(|events| async move {
            reader
                .incremental(object, wanted, epoch, &events)
                .await
                .expect("incremental read")
        })
        .await;
        assert_eq!(
            changed.records.len(),
            expected.len(),
            "{object}: none twice"
        );
        assert_eq!(values(&changed), expected, "{object}: incremental read");
        let newest = changed
            .records
            .iter()
            .filter_map(|record| record.properties.get("hs_lastmodifieddate"))
            .filter_map(Value::as_str)
            .filter_map(crmsync::hubspot::read::parse_hubspot_time)
            .max();
        assert_eq!(
            summary.high_water, newest,
            "{object}: the newest change read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stopped_among_records_of_one_instant_resumes_there() {
    let emulator = start(4_000).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let (_, full) = read_everything(reader).await;
    let high_water = full.high_water.expect("high water");
    touch(&emulator, 3_000, "Bulk").await;
    // The first run stops after eight pages, well inside the 3,000 records of one instant.
    let (first_ids, point) = stop_incremental(reader, high_water, 8).await;
    let point = point.expect("a resume point");
    assert!(
        matches!(&point, ResumePoint::Incremental { tie: Some(_), .. }),
        "stopped among the records of one instant: {point:?}"
    );
    let (rest, _) = collect(|events| async move {
        reader
            .resume("contacts", &properties(), point, &events)
            .await
            .expect("resumed read")
    })
    .await;
    let first_ids: BTreeSet<String> = first_ids.into_iter().collect();
    let rest_ids: BTreeSet<String> = rest
        .records
        .iter()
        .map(|record| record.id.clone())
        .collect();
    assert_eq!(
        first_ids.union(&rest_ids).count(),
        3_000,
        "every touched record"
    );
    let again = first_ids.intersection(&rest_ids).count();
    assert!(
        again <= 400,
        "{again} records read again: the resumed run started where the first stopped"
    );
}
