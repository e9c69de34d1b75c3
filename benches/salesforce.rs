//! What the Salesforce connector costs in API calls, against the in-process emulator on
//! 127.0.0.1: calls per 10,000 leads for a REST read (with the count that decides between
//! REST and Bulk), a Bulk API 2.0 read (a first REST page, the job, its polls, result sets), an incremental read
//! of what was written, and writing 10,000 changed leads.
//!
//! Run: `cargo bench --bench salesforce [-- PEOPLE]` (default 20,000 people, about 14,000
//! leads). Targets: ≤ 6 calls per 10,000 read over REST, ≤ 10 over Bulk, ≤ 51 per 10,000
//! written.

use std::net::SocketAddr;
use std::time::Duration;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::record::SourceRecord;
use crmsync::salesforce::auth::{SalesforceCredentials, SessionSource};
use crmsync::salesforce::client::{SalesforceClient, SalesforceSettings};
use crmsync::salesforce::describe::ObjectDescribe;
use crmsync::salesforce::read::{ReadEvent, SalesforceReader};
use crmsync::salesforce::write::{PlannedUpdate, SalesforceWriter};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn fail(message: &str) -> ! {
    eprintln!("benchmark failed: {message}");
    std::process::exit(1)
}

fn per_10k(calls: u64, records: usize) -> f64 {
    calls as f64 * 10_000.0 / records.max(1) as f64
}

async fn drain<F: std::future::Future<Output = ()>>(
    read: impl FnOnce(mpsc::Sender<ReadEvent>) -> F,
) -> Vec<SourceRecord> {
    let (sender, mut receiver) = mpsc::channel(4);
    let collect = async {
        let mut records = Vec::new();
        while let Some(event) = receiver.recv().await {
            if let ReadEvent::Records(page) = event {
                records.extend(page);
            }
        }
        records
    };
    let (_, records) = tokio::join!(read(sender), collect);
    records
}

fn main() {
    let people: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&error.to_string()));
    runtime.block_on(run(people));
}

async fn run(people: usize) {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            seed: 11,
            records: people,
            rate_limits: false,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap_or_else(|error| fail(&error.to_string()));
    let info = emulator.info();
    let pem = std::fs::read_to_string(&info.salesforce_private_key_file)
        .unwrap_or_else(|error| fail(&error.to_string()));
    let http = reqwest::Client::new();
    let sessions = SessionSource::new(
        SalesforceCredentials::JwtBearer {
            client_id: info.salesforce_client_id.clone(),
            username: info.salesforce_username.clone(),
            private_key_pem: SecretString::from(pem),
        },
        &info.salesforce_login_url,
        http.clone(),
    )
    .unwrap_or_else(|error| fail(&error.to_string()));
    let client = SalesforceClient::new(
        http,
        sessions,
        SalesforceSettings::default(),
        RetryPolicy::default(),
    )
    .unwrap_or_else(|error| fail(&error.to_string()));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .unwrap_or_else(|error| fail(&error.to_string()));
    let describe = &describe;
    let fields: Vec<String> = [
        "Email",
        "FirstName",
        "LastName",
        "Status",
        "Company",
        "Title",
    ]
    .map(str::to_string)
    .to_vec();
    let fields = &fields;

    let rest = SalesforceReader::new(&client);
    let rest = &rest;
    let before = client.calls();
    let records = drain(|events| async move {
        if let Err(error) = rest.full(describe, fields, &events).await {
            fail(&error.to_string());
        }
    })
    .await;
    let calls = client.calls() - before;
    println!(
        "REST read: {} leads in {calls} calls = {:.1} calls per 10,000 (the first page's total deciding REST or Bulk)",
        records.len(),
        per_10k(calls, records.len())
    );

    let mut bulk = SalesforceReader::new(&client);
    bulk.bulk_threshold = 0;
    bulk.bulk.first_wait = Duration::from_millis(50);
    let bulk = &bulk;
    let before = client.calls();
    let bulk_records = drain(|events| async move {
        if let Err(error) = bulk.full(describe, fields, &events).await {
            fail(&error.to_string());
        }
    })
    .await;
    let calls = client.calls() - before;
    println!(
        "Bulk read: {} leads in {calls} calls = {:.1} calls per 10,000 (a first REST page, the job, its polls, result sets)",
        bulk_records.len(),
        per_10k(calls, bulk_records.len())
    );
    if bulk_records.len() != records.len() {
        fail("the Bulk read and the REST read differ");
    }

    let high_water = records
        .iter()
        .map(|record| record.modified_at)
        .max()
        .unwrap_or_else(|| fail("no records"));
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .filter(|record| record.properties.get("IsConverted") != Some(&Value::Bool(true)))
        .take(10_000)
        .map(|record| PlannedUpdate {
            id: record.id.clone(),
            current: record
                .properties
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            desired: [("Title".to_string(), json!("Benchmarked"))].into(),
        })
        .collect();
    let planned = plan.len();
    let before = client.calls();
    let report = SalesforceWriter::new(&client)
        .update(describe, plan)
        .await
        .unwrap_or_else(|error| fail(&error.to_string()));
    let calls = client.calls() - before;
    println!(
        "write-back: {} of {planned} leads written in {calls} calls = {:.1} calls per 10,000",
        report.written,
        per_10k(calls, report.written)
    );

    let before = client.calls();
    let changed = drain(|events| async move {
        if let Err(error) = rest
            .incremental(describe, fields, high_water, &events)
            .await
        {
            fail(&error.to_string());
        }
    })
    .await;
    let calls = client.calls() - before;
    println!(
        "incremental read: {} changed leads in {calls} calls = {:.1} calls per 10,000",
        changed.len(),
        per_10k(calls, changed.len())
    );
}
