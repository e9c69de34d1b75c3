//! A whole sync against the in-process emulator (rate limits off), with `crmsync sync` run as
//! its own process so its memory is measured alone: end-to-end records per second and peak
//! resident memory of a full sync with write-back, then the read-back run, then a run with
//! nothing new — API calls per stream and records written.
//!
//! Run: `cargo bench --bench sync [-- PEOPLE]` (default 100,000 people). Targets: ≥ 20,000
//! records/s and ≤ 200 MB for the full sync; ≤ 1 read call per stream and 0 writes when
//! nothing changed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

fn fail(message: &str) -> ! {
    eprintln!("benchmark failed: {message}");
    std::process::exit(1)
}

fn sum(counts: &Value) -> u64 {
    counts
        .as_object()
        .map_or(0, |counts| counts.values().filter_map(Value::as_u64).sum())
}

fn sync(config: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["sync", "--json", "--config"])
        .arg(config)
        // The emulator enforces no limits; neither does crmsync here.
        .env("CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S", "100000")
        .env("CRMSYNC_HUBSPOT_RATE_LIMIT_SEARCH_PER_SECOND", "100")
        .env("CRMSYNC_SALESFORCE_REQUESTS_PER_SECOND", "1000")
        .env("CRMSYNC_SALESFORCE_MAX_CONCURRENT_REQUESTS", "25")
        .output()
        .unwrap_or_else(|error| fail(&error.to_string()));
    if !matches!(output.status.code(), Some(0 | 2)) {
        fail(&String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| fail(&error.to_string()))
}

fn main() {
    let people: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&error.to_string()));
    runtime.block_on(run(people));
}

async fn run(people: usize) {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            seed: 5,
            records: people,
            rate_limits: false,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap_or_else(|error| fail(&error.to_string()));
    let dir = tempfile::tempdir().unwrap_or_else(|error| fail(&error.to_string()));
    let config = crmsync::demo::prepare_dir(dir.path(), emulator.info())
        .unwrap_or_else(|error| fail(&error.to_string()));
    println!("{people} people in the emulated org; crmsync sync runs as its own process");
    for (label, run) in [
        "full sync with write-back",
        "read-back sync",
        "no-change sync",
    ]
    .iter()
    .enumerate()
    .map(|(index, label)| (label, index))
    {
        if run == 1 {
            // Scheduled runs come minutes apart: past the 60 s overlap each incremental read
            // takes before its checkpoint. Back to back, the no-change run would re-read what
            // the first run wrote, as it lies within the read-back run's overlap.
            println!("  (waiting 61 s, as a schedule would, past the incremental reads' overlap)");
            tokio::time::sleep(std::time::Duration::from_secs(61)).await;
        }
        let before = emulator.stats().requests_by_endpoint;
        let config = config.clone();
        let report = tokio::task::spawn_blocking(move || sync(&config))
            .await
            .unwrap_or_else(|error| fail(&error.to_string()));
        let read = sum(&report["read"]);
        let seconds = report["seconds"].as_f64().unwrap_or(0.0);
        let streams = report["streams"].as_array().map_or(0, Vec::len);
        let calls = sum(&report["api_calls"]);
        println!(
            "{label}: {} in {seconds:.1} s — {read} records read ({:.0} records/s), {} persons, {} written, {} dead letters, peak RSS {:.0} MB, {calls} API calls over {streams} streams ({:.1} per stream; {})",
            report["status"].as_str().unwrap_or("?"),
            read as f64 / seconds.max(0.001),
            report["warehouse"]["persons"],
            sum(&report["written"]),
            report["dead_letters"],
            report["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1_048_576.0,
            calls as f64 / streams.max(1) as f64,
            report["api_calls"],
        );
        println!("  seconds by step: {}", report["phase_seconds"]);
        for stream in report["streams"].as_array().into_iter().flatten() {
            println!(
                "  {} {}: {} read in {:.1} s",
                stream["system"],
                stream["object"],
                stream["read"],
                stream["seconds"].as_f64().unwrap_or(0.0)
            );
        }
        if run == 2 {
            for (endpoint, statuses) in emulator.stats().requests_by_endpoint {
                let count: u64 = statuses.values().sum();
                let earlier: u64 = before.get(&endpoint).map_or(0, |s| s.values().sum());
                if count > earlier {
                    println!("  {endpoint}: {}", count - earlier);
                }
            }
            let written = sum(&report["written"]);
            if written > 0 {
                println!("  (no-change run wrote {written} records: target is 0)");
            }
        }
    }
    let stats = emulator.stats();
    println!(
        "emulator requests by system: {:?}",
        stats.requests_by_system
    );
}
