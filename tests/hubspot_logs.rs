//! The HubSpot client's logs at trace level: every request is a span, and no secret or
//! Authorization header ever appears. Alone in its own test binary: tracing caches whether a
//! call site is wanted process-wide, so a test running beside it without a subscriber could
//! switch these call sites off.

use std::net::SocketAddr;

use crmsync::emulator::faults::Faults;
use crmsync::emulator::hubspot::HubspotLimits;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::hubspot::auth::{HubspotCredentials, TokenSource};
use crmsync::hubspot::client::{Budget, HubspotClient, HubspotError, RateSettings};
use http::Method;
use secrecy::SecretString;

async fn start(faults: &str, limits: HubspotLimits, rate_limits: bool) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed: 21,
            records: 300,
            rate_limits,
            hubspot_limits: limits,
            faults: faults.parse::<Faults>().expect("faults"),
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

fn client(
    emulator: &RunningEmulator,
    credentials: HubspotCredentials,
    settings: RateSettings,
) -> HubspotClient {
    let base = &emulator.info().hubspot_base_url;
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(credentials, base, http.clone()).expect("tokens");
    let retry = RetryPolicy {
        max_attempts: 8,
        base_delay: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(200),
    };
    HubspotClient::new(http, base, tokens, settings, retry).expect("client")
}

fn oauth(emulator: &RunningEmulator) -> HubspotCredentials {
    let info = emulator.info();
    HubspotCredentials::OAuth {
        client_id: info.hubspot_client_id.clone(),
        client_secret: SecretString::from(info.hubspot_client_secret.as_str()),
        refresh_token: SecretString::from(info.hubspot_refresh_token.as_str()),
    }
}

async fn all_contact_ids(client: &HubspotClient) -> Result<Vec<String>, HubspotError> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100".to_string())];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let answer = client
            .send(
                Budget::General,
                Method::GET,
                "/crm/v3/objects/contacts",
                &query,
                None,
                "contacts",
            )
            .await?;
        for result in answer.body["results"].as_array().into_iter().flatten() {
            ids.push(result["id"].as_str().unwrap_or_default().to_string());
        }
        match answer.body["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(ids),
        }
    }
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn trace_logs_name_every_request_and_no_secret() {
    let emulator = start("expiry,flaky", HubspotLimits::default(), false).await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let client = client(&emulator, oauth(&emulator), RateSettings::default());
    all_contact_ids(&client).await.expect("a read");
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    all_contact_ids(&client)
        .await
        .expect("a read after the token expired");
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("logs")).to_string();
    assert!(logs.contains("hubspot_request"), "requests are spans");
    assert!(logs.contains("access token refreshed"), "{logs}");
    let info = emulator.info();
    for secret in [
        info.hubspot_client_secret.as_str(),
        info.hubspot_refresh_token.as_str(),
        info.hubspot_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret in the logs");
    }
    // Access tokens the emulator handed out look like UUIDs after "Bearer ".
    assert!(
        !logs.contains("Bearer "),
        "no authorization header in the logs"
    );
}
