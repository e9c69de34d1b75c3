//! Environment overrides: every setting answers to `CRMSYNC_<PATH>`, values from the
//! environment win over the file and are located as `env NAME` in diagnostics, unknown
//! `CRMSYNC_*` variables are reported, and the README documents exactly the variables that exist.

use std::path::Path;

use assert_cmd::Command;
use crmsync::config::{self, EnvVars, HubspotAuth, WarehouseUrl, setting_env_vars};
use crmsync::diagnostics::{Location, SourceFile};
use crmsync::secret::SecretRef;

const FILE: &str = r#"
[hubspot]
base_url = "https://api.hubapi.com"
objects = ["contacts"]
[hubspot.auth]
token_env = "HUBSPOT_TOKEN"
[salesforce]
enabled = false
"#;

fn parse(env: &[(&str, &str)]) -> (config::Config, Vec<String>) {
    let source = SourceFile::new("crmsync.toml", FILE.to_string());
    let (config, diagnostics) = config::parse(
        Some(&source),
        Path::new("/etc/crmsync"),
        &EnvVars::from_pairs(env.iter().copied()),
    );
    (
        config,
        diagnostics.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn environment_values_win_over_the_file() {
    let (config, problems) = parse(&[
        ("CRMSYNC_HUBSPOT_BASE_URL", "http://127.0.0.1:8080/"),
        ("CRMSYNC_HUBSPOT_OBJECTS", "contacts, deals"),
        ("CRMSYNC_HUBSPOT_AUTH_TOKEN_ENV", "OTHER_TOKEN"),
        ("CRMSYNC_WAREHOUSE_URL", "sqlite:///var/lib/crmsync/w.db"),
        ("CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S", "190"),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(config.hubspot.base_url.value, "http://127.0.0.1:8080");
    assert_eq!(
        config.hubspot.base_url.location,
        Location::env("CRMSYNC_HUBSPOT_BASE_URL")
    );
    let objects: Vec<&str> = config
        .hubspot
        .objects
        .iter()
        .map(|o| o.value.as_str())
        .collect();
    assert_eq!(objects, ["contacts", "deals"]);
    assert_eq!(
        config.hubspot.auth,
        Some(HubspotAuth::PrivateApp {
            token: SecretRef::Env("OTHER_TOKEN".into())
        })
    );
    assert_eq!(
        config.warehouse.url.value,
        WarehouseUrl::Sqlite("/var/lib/crmsync/w.db".into())
    );
    assert_eq!(config.hubspot.rate_limit.requests_per_10s, 190);
    // Relative paths resolve against the config file's directory.
    assert_eq!(
        config.mappings_dir.value,
        Path::new("/etc/crmsync/mappings")
    );
}

#[test]
fn bad_environment_values_are_located_at_the_variable() {
    let (_, problems) = parse(&[
        ("CRMSYNC_SALESFORCE_ENABLED", "maybe"),
        ("CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S", "lots"),
        ("CRMSYNC_HUBSPOT_BASEURL", "http://x"),
    ]);
    let at_variables: Vec<&String> = problems.iter().filter(|p| p.starts_with("env ")).collect();
    assert_eq!(
        at_variables,
        [
            "env CRMSYNC_HUBSPOT_BASEURL: unknown setting CRMSYNC_HUBSPOT_BASEURL — did you mean CRMSYNC_HUBSPOT_BASE_URL?",
            "env CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S: expected an integer, found \"lots\" — set it to a whole number",
            "env CRMSYNC_SALESFORCE_ENABLED: expected true or false, found \"maybe\" — set it to true or false",
        ]
    );
}

#[test]
fn hubspot_pacing_goes_up_to_an_emulator_without_limits_and_no_further() {
    let (config, problems) = parse(&[("CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S", "100000")]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(config.hubspot.rate_limit.requests_per_10s, 100_000);
    let (_, problems) = parse(&[("CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S", "100001")]);
    assert_eq!(
        problems,
        [
            "env CRMSYNC_HUBSPOT_RATE_LIMIT_REQUESTS_PER_10S: `hubspot.rate_limit.requests_per_10s` must be between 1 and 100000, found 100001 — use a value from 1 to 100000"
        ]
    );
}

#[test]
fn crmsync_config_names_the_file() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    Command::cargo_bin("crmsync")
        .expect("binary")
        .arg("check")
        .current_dir(dir.path())
        .env("CRMSYNC_CONFIG", manifest.join("crmsync.example.toml"))
        .assert()
        .success();
    // The same file with the mappings directory overridden to a missing one fails, located
    // at the variable.
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .arg("check")
        .current_dir(dir.path())
        .env("CRMSYNC_CONFIG", manifest.join("crmsync.example.toml"))
        .env("CRMSYNC_MAPPINGS_DIR", "no-such-dir")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("env CRMSYNC_MAPPINGS_DIR: cannot read "),
        "{stderr}"
    );
}

#[test]
fn the_readme_documents_every_variable_and_no_other() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let section = readme
        .split("<!-- env-vars:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- env-vars:end -->").next())
        .expect("README has an env-vars section");
    let mut documented: Vec<String> = section
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("CRMSYNC_"))
        .map(str::to_string)
        .collect();
    documented.sort();
    documented.dedup();
    let mut known = setting_env_vars();
    known.push("CRMSYNC_CONFIG".to_string());
    known.sort();
    assert_eq!(documented, known);
}

#[test]
fn postgres_tls_parameters_are_checked_and_relative_files_are_the_configs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), "no certificate here\n").expect("writes");
    let parse_in = |url: &str| {
        let source = SourceFile::new("crmsync.toml", FILE.to_string());
        let (config, diagnostics) = config::parse(
            Some(&source),
            dir.path(),
            &EnvVars::from_pairs([("CRMSYNC_WAREHOUSE_URL", url)]),
        );
        let problems: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        (config, problems)
    };
    let (_, problems) = parse_in("postgres://crmsync@db:5432/w?sslmode=verify-full");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("env CRMSYNC_WAREHOUSE_URL:")
            && problems[0].contains("add sslrootcert=PATH"),
        "{problems:?}"
    );
    let (_, problems) = parse_in("postgres://crmsync@db:5432/w?sslmode=allow");
    assert!(
        problems[0].contains("sslmode=\"allow\" is not supported"),
        "{problems:?}"
    );
    // The root file is read at check time, from the configuration's directory.
    let (config, problems) =
        parse_in("postgres://crmsync@db:5432/w?sslmode=verify-full&sslrootcert=ca.pem");
    assert!(problems[0].contains("no certificate in it"), "{problems:?}");
    let expected = format!(
        "postgres://crmsync@db:5432/w?sslmode=verify-full&sslrootcert={}",
        dir.path().join("ca.pem").display()
    );
    assert_eq!(config.warehouse.url.value, WarehouseUrl::Postgres(expected));
    let (_, problems) = parse_in("postgres://crmsync@db:5432/w?sslmode=require");
    assert!(problems.is_empty(), "{problems:?}");
    // A client certificate comes as a pair, its files read from the configuration's directory.
    let (_, problems) = parse_in("postgres://crmsync@db:5432/w?sslmode=require&sslcert=me.pem");
    assert!(
        problems[0].contains("sslcert is given without sslkey"),
        "{problems:?}"
    );
    let (config, problems) = parse_in(
        "postgres://crmsync@db:5432/w?sslmode=require&sslcert=certs/me.pem&sslkey=certs/me.key",
    );
    let certificate = dir.path().join("certs/me.pem");
    assert!(
        problems[0].contains(&format!(
            "cannot read the client certificate in {}",
            certificate.display()
        )),
        "{problems:?}"
    );
    let expected = format!(
        "postgres://crmsync@db:5432/w?sslmode=require&sslcert={}&sslkey={}",
        certificate.display(),
        dir.path().join("certs/me.key").display()
    );
    assert_eq!(config.warehouse.url.value, WarehouseUrl::Postgres(expected));
}
