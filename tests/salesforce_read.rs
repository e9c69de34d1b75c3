//! Salesforce reads against the emulator over HTTP: a full read of 20,000 leads is exact; an
//! incremental read after writes returns exactly the changed records, thousands of them
//! sharing one `SystemModstamp`, with deletions as tombstones and merges; a stopped read
//! resumes after the last record handed over; converted leads carry their conversion links;
//! every fault profile leaves a read unchanged.

mod read_events;
mod salesforce_common;

use std::collections::{BTreeMap, BTreeSet};

use crmsync::emulator::EmulatorConfig;
use crmsync::emulator::data::{OrgProfile, generate};
use crmsync::record::SourceRecord;
use crmsync::salesforce::client::{Body, SalesforceClient};
use crmsync::salesforce::describe::ObjectDescribe;
use crmsync::salesforce::read::{ReadError, ReadSummary, ResumePoint, SalesforceReader};
use http::Method;
use read_events::{collect, read_until};
use salesforce_common::{client, jwt, quiet, start};
use serde_json::{Value, json};

const SEED: u64 = 5;

fn fields() -> Vec<String> {
    ["Email", "FirstName", "LastName", "Status", "Company"]
        .map(str::to_string)
        .to_vec()
}

/// Ids matching `soql`, through the query API directly (not the reader).
async fn ids_where(client: &SalesforceClient, resource: &str, soql: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut next = Some((client.data_path(resource), vec![("q", soql.to_string())]));
    while let Some((path, query)) = next.take() {
        let answer = client
            .send(
                Method::GET,
                &path,
                &query,
                Body::None,
                "application/json",
                &[],
                "Lead",
            )
            .await
            .expect("query");
        let page = answer.json().expect("JSON");
        ids.extend(
            page["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|record| record["Id"].as_str().map(str::to_string)),
        );
        next = page["nextRecordsUrl"]
            .as_str()
            .map(|url| (url.to_string(), Vec::new()));
    }
    ids
}

async fn patch(client: &SalesforceClient, records: Vec<Value>) -> Value {
    client
        .send(
            Method::PATCH,
            &client.data_path("composite/sobjects"),
            &[],
            Body::Json(&json!({"allOrNone": false, "records": records})),
            "application/json",
            &[],
            "Lead",
        )
        .await
        .expect("collection update")
        .json()
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_of_twenty_thousand_leads_is_exact() {
    let people = 34_000;
    let emulator = start(EmulatorConfig {
        seed: SEED,
        ..quiet(people)
    })
    .await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let reader = SalesforceReader::new(&client);
    let reader = &reader;
    let describe = &describe;
    let calls_before = client.calls();
    let (collected, summary) = collect(|events| async move {
        reader
            .full(describe, &fields(), &events)
            .await
            .expect("full read")
    })
    .await;
    let calls = client.calls() - calls_before;
    let deleted = ids_where(
        &client,
        "queryAll",
        "SELECT Id FROM Lead WHERE IsDeleted = true",
    )
    .await;
    let generated = generate(SEED, people, OrgProfile::Classic);
    let expected: BTreeMap<String, (Option<String>, Option<String>)> = generated
        .salesforce_leads
        .iter()
        .filter(|lead| !deleted.contains(&lead.id))
        .map(|lead| {
            let text = |name: &str| lead.properties.text(name).map(str::to_string);
            // Salesforce stores email fields without surrounding space.
            let email = text("Email").map(|email| email.trim().to_string());
            (lead.id.clone(), (email, text("LastName")))
        })
        .collect();
    assert!(expected.len() >= 20_000, "{} leads", expected.len());
    let read: BTreeMap<String, (Option<String>, Option<String>)> = collected
        .records
        .iter()
        .map(|record| {
            let text = |name: &str| {
                record
                    .properties
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            (record.id.clone(), (text("Email"), text("LastName")))
        })
        .collect();
    assert_eq!(read.len(), collected.records.len(), "no lead twice");
    let differing: Vec<_> = expected
        .iter()
        .filter(|(id, values)| read.get(*id) != Some(values))
        .map(|(id, values)| (id, values, read.get(id)))
        .take(3)
        .collect();
    let unexpected: Vec<&String> = read
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .take(3)
        .collect();
    assert!(
        differing.is_empty() && unexpected.is_empty(),
        "differing {differing:?}, unexpected {unexpected:?} ({} read, {} expected)",
        read.len(),
        expected.len()
    );
    assert_eq!(summary.records, expected.len());
    assert_eq!(
        calls as usize,
        expected.len().div_ceil(2_000),
        "2,000 leads a call, the first page's total keeping the read on REST"
    );
    // Converted leads carry where they went.
    let converted = collected
        .records
        .iter()
        .filter(|record| record.properties.get("IsConverted") == Some(&Value::Bool(true)))
        .collect::<Vec<_>>();
    assert!(!converted.is_empty());
    for lead in converted {
        for link in ["ConvertedContactId", "ConvertedAccountId"] {
            assert!(
                lead.properties.get(link).and_then(Value::as_str).is_some(),
                "{} has no {link}",
                lead.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_read_returns_exactly_what_changed_and_resumes_where_it_stopped() {
    let people = 9_000;
    let emulator = start(EmulatorConfig {
        seed: SEED,
        ..quiet(people)
    })
    .await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let mut reader = SalesforceReader::new(&client);
    reader.overlap = std::time::Duration::ZERO;
    let reader = &reader;
    let describe = &describe;
    let (before, full) = collect(|events| async move {
        reader
            .full(describe, &fields(), &events)
            .await
            .expect("full read")
    })
    .await;
    let since = full.high_water.expect("high water");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Bulk edits: 3,000 leads in collections of 200, most sharing a second.
    let editable: Vec<&SourceRecord> = before
        .records
        .iter()
        .filter(|record| record.properties.get("IsConverted") != Some(&Value::Bool(true)))
        .take(3_000)
        .collect();
    assert_eq!(editable.len(), 3_000);
    for chunk in editable.chunks(200) {
        let records = chunk
            .iter()
            .map(|record| json!({"attributes": {"type": "Lead"}, "Id": record.id, "Title": "Bulk edited"}))
            .collect();
        let answer = patch(&client, records).await;
        assert!(
            answer
                .as_array()
                .is_some_and(|items| items.iter().all(|item| item["success"] == true)),
            "{answer}"
        );
    }
    let mut changed: BTreeSet<String> = editable.iter().map(|record| record.id.clone()).collect();
    // One deleted.
    let gone = editable[0].id.clone();
    client
        .send(
            Method::DELETE,
            &client.data_path(&format!("sobjects/Lead/{gone}")),
            &[],
            Body::None,
            "application/json",
            &[],
            "Lead",
        )
        .await
        .expect("delete");
    changed.remove(&gone);

    let (after, summary) = collect(|events| async move {
        reader
            .incremental(describe, &fields(), since, &events)
            .await
            .expect("incremental read")
    })
    .await;
    let read: BTreeSet<String> = after
        .records
        .iter()
        .map(|record| record.id.clone())
        .collect();
    assert_eq!(read.len(), after.records.len(), "no lead twice");
    assert_eq!(read, changed, "exactly the edited leads");
    assert_eq!(
        after.gone,
        vec![gone.clone()],
        "the deleted lead as a tombstone"
    );
    assert!(summary.high_water > Some(since));
    let stamps: BTreeSet<jiff::Timestamp> = after
        .records
        .iter()
        .map(|record| record.modified_at)
        .collect();
    assert!(
        stamps.len() < 50,
        "{} distinct stamps for 3,000 edits",
        stamps.len()
    );

    // The same read stopped after its first page resumes from the latest stamp handed over.
    let stopped = read_until(1, |events| async move {
        reader
            .incremental(describe, &fields(), since, &events)
            .await
    })
    .await;
    assert!(
        matches!(stopped.outcome, Err(ReadError::Closed { .. })),
        "{:?}",
        stopped.outcome
    );
    let (first_ids, point) = (stopped.ids, stopped.point);
    let point = point.expect("a resume point");
    let ResumePoint::Incremental { modstamp } = point else {
        panic!("an incremental read resumes as one: {point:?}");
    };
    let (rest, _) = collect(|events| async move {
        reader
            .resume(describe, &fields(), point, &events)
            .await
            .expect("resumed read")
    })
    .await;
    let first: BTreeSet<String> = first_ids.into_iter().collect();
    let resumed: BTreeSet<String> = rest
        .records
        .iter()
        .map(|record| record.id.clone())
        .collect();
    let all: BTreeSet<String> = first.union(&resumed).cloned().collect();
    assert_eq!(all, changed, "none lost across the stop");
    // Read again: only records of the second the first run stopped in.
    let at_boundary: BTreeSet<String> = rest
        .records
        .iter()
        .filter(|record| record.modified_at == modstamp)
        .map(|record| record.id.clone())
        .collect();
    let again: BTreeSet<String> = first.intersection(&resumed).cloned().collect();
    assert!(again.is_subset(&at_boundary), "{} read again", again.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_leads_arrive_as_merges_and_tombstones() {
    let emulator = start(quiet(3_000)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let reader = SalesforceReader::new(&client);
    let since = jiff::Timestamp::from_second(0).expect("epoch");
    let (collected, summary) = collect(|events| {
        let reader = &reader;
        let describe = &describe;
        async move {
            reader
                .incremental(describe, &fields(), since, &events)
                .await
                .expect("incremental read")
        }
    })
    .await;
    // The seeded org has leads in the recycle bin, some merged into another.
    let deleted = ids_where(
        &client,
        "queryAll",
        "SELECT Id FROM Lead WHERE IsDeleted = true",
    )
    .await;
    assert!(!deleted.is_empty());
    let tombstones: BTreeSet<String> = collected.gone.iter().cloned().collect();
    assert_eq!(tombstones, deleted);
    assert!(summary.merges > 0, "{summary:?}");
    let live: BTreeSet<&String> = collected.records.iter().map(|record| &record.id).collect();
    for (survivor, absorbed) in &collected.merges {
        assert!(live.contains(survivor), "the survivor {survivor} is live");
        assert!(absorbed.iter().all(|id| deleted.contains(id)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_profile_leaves_a_read_unchanged() {
    let steady = start(quiet(4_000)).await;
    let read_ids = |emulator: &crmsync::emulator::RunningEmulator| {
        let client = client(emulator, jwt(emulator));
        async move {
            let describe = ObjectDescribe::load(&client, "Lead")
                .await
                .expect("describe");
            let reader = SalesforceReader::new(&client);
            let since = jiff::Timestamp::from_second(0).expect("epoch");
            let (collected, _) = collect(|events| {
                let reader = &reader;
                let describe = &describe;
                async move {
                    reader
                        .incremental(describe, &fields(), since, &events)
                        .await
                        .expect("incremental read")
                }
            })
            .await;
            collected
                .records
                .iter()
                .map(|record| record.id.clone())
                .collect::<Vec<_>>()
        }
    };
    let expected = read_ids(&steady).await;
    assert!(expected.len() > 2_000);
    for faults in ["flaky", "storm", "expiry", "flaky,storm,slow"] {
        let emulator = start(EmulatorConfig {
            faults: faults.parse().expect("faults"),
            ..quiet(4_000)
        })
        .await;
        assert_eq!(read_ids(&emulator).await, expected, "{faults}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_path_returns_the_same_records_as_the_rest_path() {
    let emulator = start(quiet(12_000)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let describe = &describe;
    let mut rest = SalesforceReader::new(&client);
    rest.bulk_threshold = u64::MAX;
    let mut bulk = SalesforceReader::new(&client);
    bulk.bulk_threshold = 0;
    bulk.bulk.first_wait = std::time::Duration::from_millis(10);
    // Several result sets, which the emulator, like Salesforce, hands out in no order.
    bulk.bulk.rows_per_set = 1_000;
    let epoch = jiff::Timestamp::from_second(0).expect("epoch");
    let fields: Vec<String> = [
        "Email",
        "LastName",
        "Status",
        "AnnualRevenue",
        "NumberOfEmployees",
        "HubSpot_Contact_Id__c",
    ]
    .map(str::to_string)
    .to_vec();
    let fields = &fields;
    let mut results = Vec::new();
    for reader in [&rest, &bulk] {
        let calls_before = client.calls();
        let (full, _) = collect(|events| async move {
            reader
                .full(describe, fields, &events)
                .await
                .expect("full read")
        })
        .await;
        let full_calls = client.calls() - calls_before;
        // Resuming after the furthest id handed over loses nothing, in either order.
        let furthest = full
            .records
            .iter()
            .map(|record| record.id[..15].to_string())
            .max()
            .expect("records");
        match &full.resume {
            Some(ResumePoint::Full { after_id, .. }) => assert_eq!(after_id[..15], furthest),
            other => panic!("{other:?}"),
        }
        let (changed, _) = collect(|events| async move {
            reader
                .incremental(describe, fields, epoch, &events)
                .await
                .expect("incremental read")
        })
        .await;
        let by_id = |records: &[SourceRecord]| -> BTreeMap<String, BTreeMap<String, Value>> {
            records
                .iter()
                .map(|record| {
                    let properties = record
                        .properties
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect();
                    (record.id.clone(), properties)
                })
                .collect()
        };
        let mut deleted = changed.gone.clone();
        deleted.sort();
        results.push((
            by_id(&full.records),
            by_id(&changed.records),
            deleted,
            full_calls,
        ));
    }
    let (rest, bulk) = (&results[0], &results[1]);
    assert!(rest.0.len() > 5_000);
    assert_eq!(rest.0, bulk.0, "full reads: the same records and values");
    assert_eq!(
        rest.1, bulk.1,
        "incremental reads: the same records and values"
    );
    assert_eq!(rest.2, bulk.2, "the same deletions");
    assert!(!bulk.2.is_empty());
    println!(
        "{} leads: REST {} calls, Bulk {} calls",
        rest.0.len(),
        rest.3,
        bulk.3
    );
    assert!(
        bulk.3 <= 5 + 9 + 1,
        "a first REST page, the job, its polls, nine result sets and the job's deletion: {}",
        bulk.3
    );
    // Every job read to its end was deleted with its results.
    let (created, deleted) = job_counts(&emulator);
    assert_eq!(
        (created[&200], deleted[&204]),
        (2, 2),
        "{created:?} {deleted:?}"
    );
}

/// Answers to creating Bulk API query jobs and to deleting them, by status.
fn job_counts(
    emulator: &crmsync::emulator::RunningEmulator,
) -> (BTreeMap<u16, u64>, BTreeMap<u16, u64>) {
    let stats = emulator.stats();
    let answers = |endpoint: &str| {
        stats
            .requests_by_endpoint
            .get(&format!("salesforce {endpoint}"))
            .cloned()
            .unwrap_or_default()
    };
    (
        answers("POST /services/data/{version}/jobs/query"),
        answers("DELETE /services/data/{version}/jobs/query/{id}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_read_dropped_part_way_leaves_no_job_behind() {
    use crmsync::salesforce::bulk::close_open_jobs;
    let emulator = start(quiet(6_000)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let fields = vec!["Email".to_string(), "Status".to_string()];
    let mut reader = SalesforceReader::new(&client);
    reader.bulk_threshold = 0;
    reader.bulk.first_wait = std::time::Duration::from_millis(10);
    reader.bulk.rows_per_set = 1_000;

    // Dropped while its results are read (a stop): the ended job is deleted at once.
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
    tokio::select! {
        read = reader.full(&describe, &fields, &sender) => panic!("the read ended first: {:?}", read.map(|_| ())),
        event = receiver.recv() => assert!(event.is_some()),
    }
    assert_eq!(
        close_open_jobs(&client, "Contact").await,
        0,
        "another object's jobs are left alone"
    );
    assert_eq!(close_open_jobs(&client, "Lead").await, 1);
    let (created, deleted) = job_counts(&emulator);
    assert_eq!((created[&200], deleted.get(&204)), (1, Some(&1)));
    assert_eq!(
        close_open_jobs(&client, "Lead").await,
        0,
        "nothing is left to close"
    );

    // Dropped while the job still runs: Salesforce deletes only ended jobs, so it is aborted
    // first.
    reader.bulk.first_wait = std::time::Duration::from_secs(60);
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        reader.full(&describe, &fields, &sender),
    )
    .await;
    assert!(read.is_err(), "the read waits on its job");
    assert_eq!(close_open_jobs(&client, "Lead").await, 1);
    let (created, deleted) = job_counts(&emulator);
    assert_eq!(created[&200], 2);
    assert_eq!(
        (deleted.get(&400), deleted.get(&204)),
        (Some(&1), Some(&2)),
        "refused while running, deleted once aborted: {deleted:?}"
    );
    let aborted = emulator
        .stats()
        .requests_by_endpoint
        .get("salesforce PATCH /services/data/{version}/jobs/query/{id}")
        .cloned()
        .unwrap_or_default();
    assert_eq!(aborted.get(&200), Some(&1), "{aborted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_accounts_and_opportunities_read_in_full_and_incrementally() {
    let emulator = start(quiet(3_000)).await;
    let client = client(&emulator, jwt(&emulator));
    let epoch = jiff::Timestamp::from_second(0).expect("epoch");
    for (object, field) in [
        ("Contact", "Email"),
        ("Account", "Name"),
        ("Opportunity", "StageName"),
    ] {
        let describe = ObjectDescribe::load(&client, object)
            .await
            .expect("describe");
        let describe = &describe;
        let reader = SalesforceReader::new(&client);
        let reader = &reader;
        let fields = vec![field.to_string()];
        let fields = &fields;
        let (full, _) = collect(|events| async move {
            reader
                .full(describe, fields, &events)
                .await
                .expect("full read")
        })
        .await;
        let (changed, _) = collect(|events| async move {
            reader
                .incremental(describe, fields, epoch, &events)
                .await
                .expect("incremental read")
        })
        .await;
        let expected = ids_where(&client, "query", &format!("SELECT Id FROM {object}")).await;
        assert!(expected.len() > 50, "{object}: {}", expected.len());
        let ids = |records: &[SourceRecord]| -> BTreeSet<String> {
            records.iter().map(|record| record.id.clone()).collect()
        };
        assert_eq!(ids(&full.records), expected, "{object}: full read");
        assert_eq!(
            ids(&changed.records),
            expected,
            "{object}: incremental read"
        );
        assert!(
            full.records
                .iter()
                .all(|record| record.object == object && record.properties.contains_key(field)),
            "{object}: the field is read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stopped_at_the_budget_reserve_resumes_in_the_next_run() {
    let emulator = start(EmulatorConfig {
        seed: SEED,
        rate_limits: true,
        salesforce_daily_api_requests: 8,
        ..quiet(9_000)
    })
    .await;
    // The first run keeps half the day's eight requests for the org's other integrations.
    let first_client = salesforce_common::client_with(
        &emulator,
        jwt(&emulator),
        crmsync::salesforce::client::SalesforceSettings {
            reserve_percent: 50,
            ..Default::default()
        },
    );
    let describe = ObjectDescribe::load(&first_client, "Lead")
        .await
        .expect("describe");
    let describe = &describe;
    let mut reader = SalesforceReader::new(&first_client);
    reader.bulk_threshold = u64::MAX;
    let reader = &reader;
    let mut outcome = None;
    let (first, _) = collect(|events| {
        let outcome = &mut outcome;
        async move {
            *outcome = Some(reader.full(describe, &fields(), &events).await);
            ReadSummary::default()
        }
    })
    .await;
    let stopped = outcome
        .expect("ran")
        .expect_err("the reserve stops the read");
    assert!(stopped.to_string().contains("reserve"), "{stopped}");
    let point = first.resume.clone().expect("a resume point");
    assert!(first.records.len() >= 2_000, "{}", first.records.len());
    // The next run, with the rest of the day's requests, picks up at the checkpoint.
    let next_client = salesforce_common::client_with(
        &emulator,
        jwt(&emulator),
        crmsync::salesforce::client::SalesforceSettings {
            reserve_percent: 0,
            ..Default::default()
        },
    );
    let mut reader = SalesforceReader::new(&next_client);
    reader.bulk_threshold = u64::MAX;
    let reader = &reader;
    let (rest, _) = collect(|events| async move {
        reader
            .resume(describe, &fields(), point, &events)
            .await
            .expect("the rest reads")
    })
    .await;
    let mut ids: Vec<String> = first
        .records
        .iter()
        .chain(&rest.records)
        .map(|record| record.id.clone())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no lead twice");
    let deleted = ids_where(
        &next_client,
        "queryAll",
        "SELECT Id FROM Lead WHERE IsDeleted = true",
    )
    .await;
    let expected = generate(SEED, 9_000, OrgProfile::Classic)
        .salesforce_leads
        .iter()
        .filter(|lead| !deleted.contains(&lead.id))
        .count();
    assert_eq!(total, expected, "every lead once across the two runs");
}
