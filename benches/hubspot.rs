//! What the HubSpot connector costs in API calls, and how close it runs to the rate limit.
//!
//! Run: `cargo bench --bench hubspot [-- SECONDS]` (default 60). Against the in-process
//! emulator on 127.0.0.1:
//! 1. API calls per 10,000 contacts for a full read, for writing 10,000 changed contacts, and
//!    for the incremental read that follows (rate limits off: calls, not time, are measured).
//! 2. With the emulator enforcing the default limits (100 requests per 10 s), eight tasks
//!    share one client for SECONDS: the sustained request rate against the allowed 10/s, and
//!    the 429s the emulator answered.
//!
//! Targets: ≤ 101 calls per 10,000 read in full, ≤ 51 incremental, ≤ 101 written; ≥ 90% of
//! the allowed rate with zero 429s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::hubspot::auth::{HubspotCredentials, TokenSource};
use crmsync::hubspot::client::{Budget, HubspotClient, RateSettings};
use crmsync::hubspot::read::{HubspotReader, ReadEvent};
use crmsync::hubspot::schema::PortalSchema;
use crmsync::hubspot::write::{HubspotWriter, PlannedUpdate};
use crmsync::record::SourceRecord;
use secrecy::SecretString;
use tokio::sync::mpsc;

fn client(emulator: &RunningEmulator) -> HubspotClient {
    let base = &emulator.info().hubspot_base_url;
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(
        HubspotCredentials::PrivateApp {
            token: SecretString::from(emulator.info().hubspot_token.as_str()),
        },
        base,
        http.clone(),
    )
    .unwrap_or_else(|error| fail(&error.to_string()));
    let settings = RateSettings {
        // Search at its own pace; the read cost is what is measured here.
        ..RateSettings::default()
    };
    HubspotClient::new(http, base, tokens, settings, RetryPolicy::default())
        .unwrap_or_else(|error| fail(&error.to_string()))
}

fn fail(message: &str) -> ! {
    eprintln!("benchmark failed: {message}");
    std::process::exit(1)
}

async fn start(people: usize, rate_limits: bool) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed: 7,
            records: people,
            rate_limits,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap_or_else(|error| fail(&error.to_string()))
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

fn properties() -> Vec<String> {
    [
        "email",
        "firstname",
        "lastname",
        "jobtitle",
        "lifecyclestage",
        "hs_lead_status",
    ]
    .map(str::to_string)
    .to_vec()
}

fn per_10k(calls: u64, records: usize) -> f64 {
    calls as f64 * 10_000.0 / records.max(1) as f64
}

async fn calls_per_record() {
    let emulator = start(12_600, false).await;
    let client = client(&emulator);
    let reader = HubspotReader::new(&client);
    let reader = &reader;
    let before = client.calls();
    let mut archived = 0;
    let records = drain(|events| {
        let archived = &mut archived;
        async move {
            match reader.full("contacts", &properties(), &events).await {
                Ok(summary) => *archived = summary.archived,
                Err(error) => fail(&error.to_string()),
            }
        }
    })
    .await;
    let full_calls = client.calls() - before;
    // The archived listing (tombstones) runs with every read, full or incremental.
    let archived_calls = archived.div_ceil(100).max(1) as u64;
    println!(
        "full read: {} contacts in {full_calls} calls = {:.1} calls per 10,000 ({:.1} without the {archived_calls} calls listing {archived} archived contacts)",
        records.len(),
        per_10k(full_calls, records.len()),
        per_10k(full_calls - archived_calls, records.len())
    );
    let high_water = records
        .iter()
        .map(|record| record.modified_at)
        .max()
        .unwrap_or_else(|| fail("no records"));

    let mut schema = PortalSchema::default();
    if let Err(error) = schema.load(&client, "contacts").await {
        fail(&error.to_string());
    }
    let plan: Vec<PlannedUpdate> = records
        .iter()
        .take(10_000)
        .map(|record| PlannedUpdate {
            id: record.id.clone(),
            current: record
                .properties
                .iter()
                .filter_map(|(name, value)| value.as_str().map(|v| (name.clone(), v.to_string())))
                .collect::<BTreeMap<_, _>>(),
            desired: BTreeMap::from([("jobtitle".to_string(), "Benchmark".to_string())]),
            allow_regression: false,
        })
        .collect();
    let written_count = plan.len();
    let before = client.calls();
    let report = HubspotWriter::new(&client, &schema)
        .update("contacts", plan)
        .await
        .unwrap_or_else(|error| fail(&error.to_string()));
    let write_calls = client.calls() - before;
    println!(
        "write-back: {} of {written_count} contacts written in {write_calls} calls = {:.1} calls per 10,000",
        report.written,
        per_10k(write_calls, report.written)
    );

    let before = client.calls();
    let changed = drain(|events| async move {
        if let Err(error) = reader
            .incremental("contacts", &properties(), high_water, &events)
            .await
        {
            fail(&error.to_string());
        }
    })
    .await;
    let incremental_calls = client.calls() - before;
    println!(
        "incremental read: {} changed contacts in {incremental_calls} calls = {:.1} calls per 10,000 ({:.1} without the archived listing)",
        changed.len(),
        per_10k(incremental_calls, changed.len()),
        per_10k(incremental_calls - archived_calls, changed.len())
    );
}

async fn sustained_rate(seconds: u64) {
    let emulator = start(2_000, true).await;
    let client = Arc::new(client(&emulator));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let stop = began + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, answered, failed) = (
            Arc::clone(&client),
            Arc::clone(&answered),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let sent = client
                    .send(
                        Budget::General,
                        http::Method::GET,
                        "/crm/v3/objects/contacts",
                        &[("limit", "100".to_string())],
                        None,
                        "contacts",
                    )
                    .await;
                match sent {
                    Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let answered = answered.load(Ordering::Relaxed);
    let rate = answered as f64 / elapsed;
    println!(
        "sustained: {answered} requests in {elapsed:.1} s = {rate:.2}/s of the allowed 10/s ({:.1}%), {} failed, {} answered 429 by the emulator",
        rate / 10.0 * 100.0,
        failed.load(Ordering::Relaxed),
        emulator.stats().rate_limited
    );
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&error.to_string()));
    runtime.block_on(async {
        calls_per_record().await;
        sustained_rate(seconds).await;
    });
}
