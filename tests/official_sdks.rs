//! Clients written by others, against the real APIs, run unchanged against the emulator:
//! HubSpot's official Python SDK (`hubspot-api-client`) and jsforce, the Node client for
//! Salesforce. Each runs a script in `tests/sdk/` that exercises reads, paging, search or
//! SOQL, writes, validation errors, OAuth and (for Salesforce) Bulk API 2.0.
//!
//! The SDKs are not Rust crates: `.ci/run` installs them and points these tests at them with
//! `HUBSPOT_SDK_PYTHON` (a Python with hubspot-api-client) and `JSFORCE_NODE_PATH` (a
//! `node_modules` with jsforce) — names outside crmsync's own `CRMSYNC_*` settings, which
//! refuse unknown variables. Without them the tests say so and do nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};

async fn start() -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            // Enough leads for several 200-record query pages.
            records: 800,
            rate_limits: false,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
        .display()
        .to_string()
}

/// Runs `command` off the async threads (the emulator serves on them) and fails the test
/// with the script's own output when it fails.
async fn run(mut command: Command, what: &str) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the script runs to the end")
        .unwrap_or_else(|error| panic!("cannot run the {what} check: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed against the emulator:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

#[tokio::test]
async fn hubspot_python_sdk_works_against_the_emulator() {
    let Ok(python) = std::env::var("HUBSPOT_SDK_PYTHON") else {
        eprintln!(
            "skipped: set HUBSPOT_SDK_PYTHON to a Python with hubspot-api-client installed (.ci/run does)"
        );
        return;
    };
    let emulator = start().await;
    let info = emulator.info();
    let mut command = Command::new(python);
    command.arg(script("hubspot_python.py")).args([
        &info.hubspot_base_url,
        &info.hubspot_token,
        &info.hubspot_client_id,
        &info.hubspot_client_secret,
        &info.hubspot_refresh_token,
    ]);
    run(command, "hubspot-api-client").await;
}

#[tokio::test]
async fn jsforce_works_against_the_emulator() {
    let Ok(node_path) = std::env::var("JSFORCE_NODE_PATH") else {
        eprintln!(
            "skipped: set JSFORCE_NODE_PATH to a node_modules directory with jsforce installed (.ci/run does)"
        );
        return;
    };
    let emulator = start().await;
    let info = emulator.info();
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", node_path)
        .arg(script("salesforce_jsforce.js"))
        .arg(&info.salesforce_login_url)
        .arg(&info.salesforce_client_id)
        .arg(&info.salesforce_client_secret)
        .arg(&info.salesforce_username)
        .arg(&info.salesforce_private_key_file)
        .arg(&info.salesforce_refresh_token);
    run(command, "jsforce").await;
    let stats = emulator.stats();
    let pages = stats
        .requests_by_endpoint
        .get("salesforce GET /services/data/{version}/query/{locator}")
        .map_or(0, |by_status| by_status.get(&200).copied().unwrap_or(0));
    assert!(
        pages >= 2,
        "jsforce paged through nextRecordsUrl ({pages} pages)"
    );
    let bulk_results = stats
        .requests_by_endpoint
        .get("salesforce GET /services/data/{version}/jobs/query/{id}/results")
        .map_or(0, |by_status| by_status.get(&200).copied().unwrap_or(0));
    assert!(bulk_results >= 1, "jsforce read Bulk API 2.0 results");
}
