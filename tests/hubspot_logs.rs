//! The HubSpot client's logs at trace level: every request is a span, and no secret or
//! Authorization header ever appears. Alone in its own test binary: tracing caches whether a
//! call site is wanted process-wide, so a test running beside it without a subscriber could
//! switch these call sites off.

mod hubspot_common;
mod log_capture;

use crmsync::emulator::hubspot::HubspotLimits;
use crmsync::hubspot::client::RateSettings;
use hubspot_common::{all_contact_ids, client, oauth, start};
use log_capture::Captured;

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
