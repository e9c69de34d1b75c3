//! `crmsync demo` and `crmsync sync` as a user runs them: the binary, its output and exit codes.

mod engine_common;

use std::process::Command;

#[test]
fn the_demo_runs_two_syncs_and_reports_them_as_one_json_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["demo", "--records", "200", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("crmsync runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    let warehouse = report["warehouse"].as_str().expect("warehouse path");
    assert!(std::path::Path::new(warehouse).exists(), "{warehouse}");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let first = &runs[0];
    assert!(first["read"]["hubspot"].as_u64().unwrap() > 100);
    assert!(first["read"]["salesforce"].as_u64().unwrap() > 100);
    assert!(first["written"]["hubspot"].as_u64().unwrap() > 0);
    assert!(first["api_calls"]["salesforce"].as_u64().unwrap() > 0);
    assert!(first["persons"].as_u64().unwrap() > 150);
    assert!(["complete", "partial"].contains(&first["status"].as_str().unwrap()));
    let second = &runs[1];
    assert_eq!(second["written"]["hubspot"], 0, "{second}");
    assert_eq!(second["written"]["salesforce"], 0, "{second}");
    // The written config is a working one: `check` accepts it.
    let check = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["check", "--config"])
        .arg(dir.path().join("crmsync.toml"))
        .output()
        .expect("check runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_demo_summary_reads_like_a_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["demo", "--records", "150", "--dir"])
        .arg(dir.path())
        .output()
        .expect("crmsync runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "First sync",
        "Second sync",
        "records read",
        "Persons unified",
        "Stage distribution",
        "dead letters",
        "API calls",
        "sqlite3",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_exits_2_when_records_were_dead_lettered_and_says_why() {
    let setup = engine_common::Setup::new(300).await;
    let output = tokio::task::spawn_blocking({
        let config = setup.config_path.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_crmsync"))
                .args(["sync", "--json", "--config"])
                .arg(config)
                .output()
                .expect("crmsync runs")
        }
    })
    .await
    .unwrap();
    // The org has leads with a status no mapping knows: partial, never success.
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("partial") && stderr.contains("dead letters"),
        "{stderr}"
    );
    // Not a terminal: progress comes as plain lines.
    assert!(
        stderr.contains("hubspot contacts: full read started"),
        "{stderr}"
    );
    assert!(stderr.contains("salesforce Lead: done,"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["status"], "partial");
    assert!(report["dead_letters"].as_u64().unwrap() > 0);
    let reasons = setup.strings("SELECT reason FROM dead_letters");
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("is not mapped") && reason.contains("crmsync discover")),
        "{reasons:?}"
    );
}

#[test]
fn sync_refuses_a_broken_config_with_its_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("crmsync.toml");
    std::fs::write(&config, "[warehouse]\nurl = \"mysql://nope\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["sync", "--config"])
        .arg(&config)
        .output()
        .expect("crmsync runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported warehouse URL"), "{stderr}");
}

#[test]
fn the_demo_will_not_write_over_a_directory_that_is_not_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("crmsync.toml"),
        "[warehouse]\nurl = \"sqlite://prod.db\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("crmsync.db"), "precious").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["demo", "--records", "50", "--dir"])
        .arg(dir.path())
        .output()
        .expect("crmsync runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not an earlier demo's"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("crmsync.db")).unwrap(),
        "precious"
    );
    // An earlier demo's directory is fine to run again.
    let again = tempfile::tempdir().expect("temp dir");
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_crmsync"))
            .args(["demo", "--records", "50", "--json", "--dir"])
            .arg(again.path())
            .output()
            .expect("crmsync runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
