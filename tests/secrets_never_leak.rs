//! A secret value never appears in an error, a log line or Debug output — whether it was
//! written by mistake into the config file or supplied properly through the environment.

use std::path::Path;

use assert_cmd::Command;
use crmsync::config::{self, EnvVars};
use crmsync::diagnostics::SourceFile;
use crmsync::secret::SecretRef;

const TOKEN: &str = "pat-na1-5ec7e7-do-not-print-me";
const PASSWORD: &str = "hunter2-do-not-print-me";
const ENV_SECRET: &str = "env-secret-do-not-print-me";

fn write_case(dir: &Path, auth_lines: &str, warehouse_url: &str) -> std::path::PathBuf {
    let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let config = format!(
        "[hubspot]\nobjects = [\"contacts\"]\n[hubspot.auth]\n{auth_lines}\n\
         [salesforce]\nenabled = false\n\
         [mappings]\ndir = {mappings:?}\n\
         [warehouse]\nurl = {warehouse_url:?}\n\
         [log]\nlevel = \"trace\"\n",
        mappings = mappings.display().to_string(),
    );
    let path = dir.join("crmsync.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

#[test]
fn literal_secrets_in_the_file_are_reported_without_their_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_case(
        dir.path(),
        &format!("token = {TOKEN:?}\nclient_secret = {PASSWORD:?}"),
        &format!("postgres://crmsync:{PASSWORD}@127.0.0.1:5432/test"),
    );
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(&path)
        .env("CRMSYNC_LOG_LEVEL", "trace")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("literal secret `token`"), "{all}");
    assert!(all.contains("literal secret `client_secret`"), "{all}");
    assert!(all.contains("`warehouse.url` contains a password"), "{all}");
    for secret in [TOKEN, PASSWORD, "5ec7e7", "hunter2"] {
        assert!(!all.contains(secret), "output leaks {secret}:\n{all}");
    }

    // The parsed config and its diagnostics, printed with Debug, do not hold them either.
    let text = std::fs::read_to_string(&path).expect("read back");
    let source = SourceFile::new("crmsync.toml", text);
    let (config, diagnostics) = config::parse(Some(&source), dir.path(), &EnvVars::default());
    let debug = format!("{config:?} {diagnostics:?} {diagnostics}");
    for secret in [TOKEN, PASSWORD, "hunter2"] {
        assert!(!debug.contains(secret), "Debug output leaks {secret}");
    }
}

#[test]
fn secrets_from_the_environment_stay_out_of_output_and_debug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_case(
        dir.path(),
        "token_env = \"SECRETS_TEST_HUBSPOT_TOKEN\"",
        "sqlite://w.db",
    );
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(&path)
        .env("CRMSYNC_LOG_LEVEL", "trace")
        .env("SECRETS_TEST_HUBSPOT_TOKEN", ENV_SECRET)
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(ENV_SECRET), "output leaks the token:\n{all}");

    // The same secret put by mistake into the override that names the variable is reported
    // without being echoed.
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(&path)
        .env("CRMSYNC_HUBSPOT_AUTH_TOKEN_ENV", format!("{ENV_SECRET} ok"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "env CRMSYNC_HUBSPOT_AUTH_TOKEN_ENV: `token_env` must name an environment variable"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains(ENV_SECRET),
        "output leaks the token:\n{stderr}"
    );

    // Resolving a file secret gives a value whose Debug is redacted.
    let key_file = dir.path().join("token");
    std::fs::write(&key_file, format!("{ENV_SECRET}\n")).expect("write secret file");
    let secret = SecretRef::File(key_file).resolve().expect("resolves");
    assert!(!format!("{secret:?}").contains(ENV_SECRET));
}

#[test]
fn a_secret_pasted_where_a_variable_name_belongs_is_not_echoed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_case(
        dir.path(),
        &format!("token_env = {TOKEN:?}"),
        "sqlite://w.db",
    );
    let output = Command::cargo_bin("crmsync")
        .expect("binary")
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must name an environment variable"),
        "{stderr}"
    );
    assert!(!stderr.contains("5ec7e7"), "{stderr}");
}

#[test]
fn missing_secret_errors_name_the_reference_only() {
    let error = SecretRef::Env("SECRETS_TEST_SURELY_UNSET_VARIABLE".into())
        .resolve()
        .expect_err("unset");
    assert_eq!(
        error.to_string(),
        "environment variable SECRETS_TEST_SURELY_UNSET_VARIABLE is not set — export it (or mount it) before starting crmsync"
    );
}

#[tokio::test]
async fn the_emulators_credentials_stay_out_of_debug_output() {
    let emulator = crmsync::emulator::RunningEmulator::start(
        crmsync::emulator::EmulatorConfig {
            records: 10,
            ..crmsync::emulator::EmulatorConfig::default()
        },
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts");
    let info = emulator.info().clone();
    let shown = format!("{emulator:?} {info:?} {info:#?}");
    for secret in [
        &info.hubspot_token,
        &info.hubspot_client_secret,
        &info.hubspot_refresh_token,
        &info.salesforce_client_secret,
        &info.salesforce_refresh_token,
    ] {
        assert!(!shown.contains(secret.as_str()), "a secret in {shown}");
    }
    assert!(
        shown.contains(&info.hubspot_base_url),
        "the URLs still show"
    );
    let line = serde_json::to_string(&info).expect("the JSON line");
    assert!(
        line.contains(&info.salesforce_client_secret),
        "the JSON line is for clients and carries the credentials"
    );
}
