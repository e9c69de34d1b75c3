//! The Salesforce client's logs at trace level: every request is a span with its object,
//! endpoint and attempt, and no token, secret, key or signed assertion ever appears — also
//! across a session replaced mid-run. Alone in its own test binary: tracing caches whether a
//! call site is wanted process-wide.

mod log_capture;
mod salesforce_common;

use crmsync::emulator::EmulatorConfig;
use crmsync::salesforce::client::{Body, SalesforceClient};
use http::Method;
use log_capture::Captured;
use salesforce_common::{client, jwt, quiet, refresh, start};

async fn query_leads(client: &SalesforceClient) {
    client
        .send(
            Method::GET,
            &client.data_path("query"),
            &[("q", "SELECT Id FROM Lead LIMIT 5".to_string())],
            Body::None,
            "application/json",
            &[],
            "Lead",
        )
        .await
        .expect("a query");
}

#[tokio::test]
async fn trace_logs_name_every_request_and_no_secret() {
    let emulator = start(EmulatorConfig {
        salesforce_session_lifetime: jiff::SignedDuration::from_millis(300),
        faults: "expiry,flaky".parse().expect("faults"),
        ..quiet(100)
    })
    .await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for credentials in [jwt(&emulator), refresh(&emulator)] {
        let client = client(&emulator, credentials);
        query_leads(&client).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        query_leads(&client).await;
    }
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("logs")).to_string();
    assert!(logs.contains("salesforce_request"), "requests are spans");
    assert!(
        logs.contains("salesforce_request{object=\"Lead\" endpoint=GET /services/data/{version}/query attempt=1}"),
        "object, endpoint and attempt"
    );
    assert!(logs.contains("Salesforce session started"), "{logs}");
    let info = emulator.info();
    let key = std::fs::read_to_string(&info.salesforce_private_key_file).expect("key");
    let key_line = key.lines().nth(1).expect("a line of the key");
    for secret in [
        info.salesforce_client_secret.as_str(),
        info.salesforce_refresh_token.as_str(),
        key_line,
    ] {
        assert!(!logs.contains(secret), "a secret in the logs");
    }
    assert!(
        !logs.contains("Bearer "),
        "no authorization header in the logs"
    );
    assert!(!logs.contains("eyJ"), "no signed assertion in the logs");
}
