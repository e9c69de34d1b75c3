//! How fast the emulator answers and how much memory its org takes.
//!
//! Run: `cargo bench --bench emulator [-- PEOPLE]` (default 100,000 people). It starts
//! `crmsync emulate --rate-limits off` as its own process, reads its resident memory, then has
//! 16 concurrent clients list HubSpot contacts page by page (100 per page), then page through a
//! Salesforce SOQL query over leads (`nextRecordsUrl`, 200 per page), and reports answered
//! requests per second for each. Client and emulator share this machine's cores.
//! Targets: at least 5,000 list requests/s; 1,000,000 people in under 2 GB.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 1_000;

// The client reads only the paging cursor: it shares the cores with the emulator, and
// building whole JSON trees would measure the client instead.
#[derive(Default, serde::Deserialize)]
struct ListPage {
    paging: Option<Paging>,
}

#[derive(serde::Deserialize)]
struct Paging {
    next: Option<NextPage>,
}

#[derive(serde::Deserialize)]
struct NextPage {
    after: String,
}

#[derive(Default, serde::Deserialize)]
struct QueryPage {
    #[serde(rename = "nextRecordsUrl")]
    next_records_url: Option<String>,
}

fn resident_megabytes(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes / 1024.0)
}

fn main() {
    let people: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let started = Instant::now();
    let mut child = match Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args([
            "emulate",
            "--rate-limits",
            "off",
            "--records",
            &people.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("cannot start crmsync emulate: {error}");
            std::process::exit(1);
        }
    };
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let startup = started.elapsed();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let base_url = info["hubspot_base_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = info["hubspot_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let memory = resident_megabytes(child.id());
    println!(
        "emulator with {people} people: started in {:.2} s, resident memory {:.0} MB",
        startup.as_secs_f64(),
        memory.unwrap_or(f64::NAN)
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            std::process::exit(1);
        }
    };
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let elapsed: Duration = runtime.block_on(async {
        let client = reqwest::Client::new();
        let began = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..CLIENTS {
            let client = client.clone();
            let base_url = base_url.clone();
            let token = token.clone();
            let answered = Arc::clone(&answered);
            let failed = Arc::clone(&failed);
            workers.push(tokio::spawn(async move {
                let mut after: Option<String> = None;
                for _ in 0..REQUESTS_PER_CLIENT {
                    let mut url = format!("{base_url}/crm/v3/objects/contacts?limit=100");
                    if let Some(after) = &after {
                        url.push_str(&format!("&after={after}"));
                    } else {
                        // Each client starts at another place in the id space.
                        url.push_str(&format!("&after={}", 1001 + worker * 997));
                    }
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(response) if response.status().is_success() => {
                            let body: ListPage = response.json().await.unwrap_or_default();
                            after = body
                                .paging
                                .and_then(|paging| paging.next)
                                .map(|next| next.after);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
        began.elapsed()
    });
    let answered = answered.load(Ordering::Relaxed);
    println!(
        "list contacts (100 per page), {CLIENTS} clients: {answered} answered, {} failed, {:.0} requests/s",
        failed.load(Ordering::Relaxed),
        answered as f64 / elapsed.as_secs_f64()
    );
    let (answered, failed, elapsed) = runtime.block_on(salesforce_paging(&info));
    println!(
        "query leads (200 per page via nextRecordsUrl), {CLIENTS} clients: {answered} answered, {failed} failed, {:.0} requests/s",
        answered as f64 / elapsed.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Logs in with client credentials, then has every client page through a query over all leads,
/// starting the query again whenever it is done. Returns (answered, failed, elapsed).
async fn salesforce_paging(info: &serde_json::Value) -> (u64, u64, Duration) {
    let base = info["salesforce_login_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client = reqwest::Client::new();
    let token: serde_json::Value = match client
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_id",
                info["salesforce_client_id"].as_str().unwrap_or_default(),
            ),
            (
                "client_secret",
                info["salesforce_client_secret"]
                    .as_str()
                    .unwrap_or_default(),
            ),
        ])
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            let first = format!(
                "{base}/services/data/v62.0/query?q=SELECT+Id,Email,Status,LastModifiedDate+FROM+Lead"
            );
            let mut next: Option<String> = None;
            for _ in 0..REQUESTS_PER_CLIENT {
                let url = next.take().map_or_else(|| first.clone(), |path| format!("{base}{path}"));
                let sent = client
                    .get(&url)
                    .bearer_auth(&token)
                    .header("Sforce-Query-Options", "batchSize=200")
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        let body: QueryPage = response.json().await.unwrap_or_default();
                        next = body.next_records_url;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        began.elapsed(),
    )
}
