//! The catalogue of broken config and mapping files.
//!
//! Each directory under `tests/broken/` is a complete, small setup (`crmsync.toml` plus
//! `mappings/{vocabulary,hubspot,salesforce}.toml`) with one deliberate defect, marked by a
//! `# BROKEN:` comment on the first line of the broken file. Its `expected.txt` holds the exact
//! diagnostics `crmsync check` must report, one per line and in report order, as
//! `<path relative to the case dir>:<line>:<col>: <message>` (the ` — help` part left out;
//! [`HELP`] checks the key part of some help texts).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use crmsync::config::EnvVars;
use crmsync::diagnostics::{Diagnostic, Location};

/// Key parts of help texts: (case, index of the diagnostic in the case, text the help contains).
const HELP: &[(&str, usize, &str)] = &[
    ("config-literal-secret", 0, "token_env = \"NAME\""),
    ("config-owner-policy-side-state", 0, "name a funnel stage"),
    (
        "config-owner-policy-unknown-stage",
        0,
        "did you mean \"mql\"?",
    ),
    ("config-postgres-password", 0, "password_env = \"NAME\""),
    ("config-schedule-bad-cron", 0, "cron = \"*/15 * * * *\""),
    ("config-toml-syntax", 0, "fix the syntax"),
    (
        "config-unknown-auth-method",
        0,
        "did you mean \"private_app\"?",
    ),
    (
        "config-unknown-sf-auth-method",
        0,
        "did you mean \"client_credentials\"?",
    ),
    ("config-unknown-key", 0, "did you mean `base_url`?"),
    ("config-unknown-table", 0, "did you mean `schedule`?"),
    ("config-unmapped-object", 0, "did you mean \"contacts\"?"),
    (
        "config-write-back-field-not-reversible",
        0,
        "reversible now: company",
    ),
    (
        "mapping-argument-to-plain-transform",
        0,
        "plain string \"trim\"",
    ),
    ("mapping-mapped-and-passed", 0, "remove it from one list"),
    ("mapping-not-round-trip", 0, "syncs would loop"),
    (
        "mapping-on-unknown-stage-name",
        0,
        "on_unknown = { default = \"lead\" }",
    ),
    ("mapping-padded-map-key", 0, "write \"Rejected\""),
    ("mapping-person-without-email", 0, "add email = "),
    (
        "mapping-reverse-field-not-mapped",
        0,
        "email, company, converted_on",
    ),
    ("mapping-transform-order", 0, "reorder the transforms"),
    ("mapping-unknown-key-in-rule", 0, "did you mean `pass`?"),
    (
        "mapping-unknown-key-property-typo",
        0,
        "did you mean `property`?",
    ),
    (
        "mapping-unknown-stage-fixed",
        0,
        "known stages: lead, mql, sql, disqualified",
    ),
    ("mapping-unknown-stage-in-map", 0, "did you mean \"sql\"?"),
    (
        "mapping-unknown-stage-on-unknown",
        0,
        "did you mean \"lead\"?",
    ),
    ("mapping-unknown-stage-reverse", 0, "did you mean \"mql\"?"),
    ("mapping-unknown-transform", 0, "did you mean \"trim\"?"),
    ("vocabulary-bad-category", 0, "did you mean \"sales\"?"),
    (
        "vocabulary-side-state-with-rank",
        0,
        "remove `rank` or `side_state`",
    ),
];

/// Secret values written into cases; they must never appear in any output.
const SECRETS: &[(&str, &str)] = &[
    ("config-literal-secret", "leak-me-not-0123456789"),
    ("config-postgres-password", "hunter2-pw"),
];

fn catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken")
}

fn case_dir(name: &str) -> PathBuf {
    catalogue().join(name)
}

fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(catalogue())
        .expect("tests/broken exists")
        .map(|entry| entry.expect("readable entry in tests/broken").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

fn expected_lines(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("expected.txt"))
        .unwrap_or_else(|error| panic!("{}/expected.txt: {error}", dir.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `crmsync check` through the library on a case.
fn check(dir: &Path) -> Vec<Diagnostic> {
    let report = crmsync::check::run(Some(&dir.join("crmsync.toml")), &EnvVars::default());
    report.diagnostics.into_vec()
}

/// `location: message`, with file paths relative to the case directory.
fn render(dir: &Path, diagnostic: &Diagnostic) -> String {
    let location = match &diagnostic.location {
        Location::File { file, line, column } => {
            let path = Path::new(&**file);
            let relative = path.strip_prefix(dir).unwrap_or(path);
            let shown = relative.display().to_string().replace('\\', "/");
            format!("{shown}:{line}:{column}")
        }
        other => other.to_string(),
    };
    // Messages may name files too (e.g. a missing mappings directory).
    let message = diagnostic
        .message
        .replace(&format!("{}/", dir.display()), "");
    format!("{location}: {message}")
}

/// The binary with no `CRMSYNC_*` variable of the test environment leaking in.
fn crmsync_binary() -> Command {
    let mut command = Command::cargo_bin("crmsync").expect("the crmsync binary is built");
    for (name, _) in std::env::vars() {
        if name.starts_with("CRMSYNC_") {
            command.env_remove(name);
        }
    }
    command
}

#[test]
fn the_catalogue_is_large_and_well_formed() {
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "the catalogue has only {} cases",
        cases.len()
    );
    for dir in &cases {
        for file in [
            "crmsync.toml",
            "expected.txt",
            "mappings/vocabulary.toml",
            "mappings/hubspot.toml",
            "mappings/salesforce.toml",
        ] {
            assert!(dir.join(file).is_file(), "{} has no {file}", dir.display());
        }
        let marked = [
            "crmsync.toml",
            "mappings/vocabulary.toml",
            "mappings/hubspot.toml",
            "mappings/salesforce.toml",
        ]
        .iter()
        .any(|file| {
            std::fs::read_to_string(dir.join(file)).is_ok_and(|text| text.starts_with("# BROKEN: "))
        });
        assert!(
            marked,
            "{}: no file starts with a `# BROKEN: ` comment",
            dir.display()
        );
        assert!(
            !expected_lines(dir).is_empty(),
            "{}/expected.txt expects no diagnostic",
            dir.display()
        );
    }
    let names: Vec<String> = cases.iter().map(|dir| case_name(dir)).collect();
    let referenced = HELP
        .iter()
        .map(|(case, _, _)| *case)
        .chain(SECRETS.iter().map(|(case, _)| *case));
    for case in referenced {
        assert!(
            names.iter().any(|name| name == case),
            "no case named {case}"
        );
    }
}

#[test]
fn every_case_reports_exactly_its_expected_diagnostics() {
    let mut failures = Vec::new();
    for dir in cases() {
        let expected = expected_lines(&dir);
        let found: Vec<String> = check(&dir)
            .iter()
            .map(|diagnostic| render(&dir, diagnostic))
            .collect();
        if found != expected {
            failures.push(format!(
                "{}:\n  expected:\n    {}\n  found:\n    {}",
                case_name(&dir),
                expected.join("\n    "),
                found.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn help_texts_carry_their_key_part() {
    let mut failures = Vec::new();
    for (case, index, fragment) in HELP {
        let diagnostics = check(&case_dir(case));
        let help = diagnostics
            .get(*index)
            .and_then(|diagnostic| diagnostic.help.clone());
        if !help.as_deref().is_some_and(|help| help.contains(fragment)) {
            failures.push(format!("{case}[{index}]: help {help:?} lacks {fragment:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secrets_in_broken_configs_never_appear_in_any_output() {
    for (case, secret) in SECRETS {
        let dir = case_dir(case);
        let config = std::fs::read_to_string(dir.join("crmsync.toml")).expect("case config");
        assert!(
            config.contains(secret),
            "{case} should hold the secret it tests"
        );
        for diagnostic in check(&dir) {
            assert!(
                !diagnostic.to_string().contains(secret),
                "{case}: {diagnostic}"
            );
        }
        let output = crmsync_binary()
            .args(["check", "--config", "crmsync.toml"])
            .current_dir(&dir)
            .output()
            .expect("crmsync runs");
        assert_eq!(output.status.code(), Some(1), "{case}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains(secret), "{case} leaks its secret:\n{all}");
        assert!(all.contains("<redacted"), "{case}:\n{all}");
    }
}

#[test]
fn the_binary_prints_file_line_col_and_exits_1() {
    let dir = case_dir("mapping-unknown-stage-in-map");
    // Run from the case directory, so the paths printed are the ones in expected.txt.
    let output = crmsync_binary()
        .args(["check", "--config", "crmsync.toml"])
        .current_dir(&dir)
        .output()
        .expect("crmsync runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = expected_lines(&dir);
    assert_eq!(
        expected,
        ["mappings/hubspot.toml:15:77: unknown stage \"sq1\""]
    );
    for line in &expected {
        assert!(
            stderr.contains(&format!("{line} — did you mean \"sql\"?")),
            "{stderr}"
        );
    }
    // The offending line is shown under the diagnostic.
    assert!(stderr.contains("salesqualifiedlead = \"sq1\""), "{stderr}");
    assert!(stderr.ends_with("1 problem(s) found\n"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let output = crmsync_binary()
        .args(["check", "--config", "crmsync.example.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("crmsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok: no problems found"), "{stdout}");
}
