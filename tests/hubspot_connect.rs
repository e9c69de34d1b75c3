//! The HubSpot connector built from a crmsync.toml, its token read from a mounted file, talks
//! to the emulator with the tier's limits.

use std::net::SocketAddr;

use crmsync::config::{self, EnvVars};
use crmsync::diagnostics::SourceFile;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::client::ClientSettings;
use crmsync::hubspot::client::Budget;
use crmsync::hubspot::connect::{ConnectError, connect};

#[tokio::test]
async fn a_configured_connector_reads_from_the_portal() {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            records: 50,
            rate_limits: true,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("hubspot-token");
    std::fs::write(&token_file, format!("{}\n", emulator.info().hubspot_token))
        .expect("token file");
    let text = format!(
        "[hubspot]\nbase_url = \"{}\"\nobjects = [\"contacts\"]\n\n[hubspot.auth]\nmethod = \"private_app\"\ntoken_file = \"{}\"\n\n[hubspot.rate_limit]\ntier = \"professional\"\n",
        emulator.info().hubspot_base_url,
        token_file.display()
    );
    let source = SourceFile::new("crmsync.toml", text);
    let (config, _) = config::parse(
        Some(&source),
        dir.path(),
        &EnvVars::from_pairs(std::iter::empty::<(&str, &str)>()),
    );
    assert_eq!(
        config.hubspot.rate_limit.requests_per_10s, 190,
        "the tier's limit"
    );
    assert_eq!(config.hubspot.rate_limit.daily_limit, 625_000);
    let client = connect(&config.hubspot, ClientSettings::default()).expect("connector");
    let answer = client
        .send(
            Budget::General,
            http::Method::GET,
            "/crm/v3/objects/contacts",
            &[("limit", "5".to_string())],
            None,
            "contacts",
        )
        .await
        .expect("a page");
    assert_eq!(answer.body["results"].as_array().map(Vec::len), Some(5));

    std::fs::remove_file(&token_file).expect("remove");
    let error = connect(&config.hubspot, ClientSettings::default()).expect_err("no token");
    assert!(matches!(error, ConnectError::Secret { .. }), "{error}");
    assert!(error.to_string().contains("hubspot-token"), "{error}");
}
