//! The catalogue of broken config and mapping files: each case under `tests/broken/` is the
//! valid `base/` with one file replaced by a broken one, and `expected.txt` holds the exact
//! diagnostics `crmsync check` must print for it (`file:line:col: message — help`), in order.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use crmsync::config::EnvVars;

fn catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken")
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read case dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "expected.txt" {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The base with the case's files laid over it, in a fresh directory.
fn materialize(case: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&catalogue().join("base"), dir.path());
    copy_dir(case, dir.path());
    dir
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(catalogue())
        .expect("catalogue")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_dir() && path.file_name().is_some_and(|name| name != "base"))
        .collect();
    cases.sort();
    cases
}

/// Diagnostics as printed, with the temporary directory removed from file names.
fn diagnostics_of(dir: &Path) -> Vec<String> {
    let report = crmsync::check::run(Some(&dir.join("crmsync.toml")), &EnvVars::default());
    let prefix = format!("{}/", dir.display());
    report
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect()
}

#[test]
fn the_base_is_valid() {
    let dir = materialize(&catalogue().join("base"));
    assert_eq!(diagnostics_of(dir.path()), Vec::<String>::new());
}

#[test]
fn every_broken_case_reports_exactly_its_diagnostics() {
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "the catalogue has only {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(case.join("expected.txt")).expect("expected.txt");
        let expected: Vec<&str> = expected.lines().filter(|line| !line.is_empty()).collect();
        assert!(!expected.is_empty(), "{} expects nothing", case.display());
        let dir = materialize(case);
        let found = diagnostics_of(dir.path());
        if found != expected {
            failures.push(format!(
                "{}:\n  expected: {expected:#?}\n  found:    {found:#?}",
                case.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_binary_prints_the_position_and_exits_1() {
    let dir = materialize(&catalogue().join("mapping-unknown-stage-in-map"));
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(dir.path().join("crmsync.toml"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let location = format!(
        "{}/mappings/hubspot.toml:13:77: unknown stage \"sq1\"",
        dir.path().display()
    );
    assert!(stderr.contains(&location), "{stderr}");
    // The offending line is shown with a caret under the column.
    assert!(stderr.contains("salesqualifiedlead = \"sq1\""), "{stderr}");
    assert!(stderr.ends_with("1 problem(s) found\n"), "{stderr}");
}

#[test]
fn the_literal_secret_case_never_shows_the_secret() {
    let dir = materialize(&catalogue().join("config-literal-secret"));
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(dir.path().join("crmsync.toml"))
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("literal secret `token`"), "{all}");
    assert!(!all.contains("leak-me-not"), "{all}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config", "crmsync.example.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok: no problems found"), "{stdout}");
}
