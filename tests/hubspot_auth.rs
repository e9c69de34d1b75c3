//! HubSpot authentication against the emulator: private-app tokens, OAuth refresh ahead of
//! expiry, one refresh shared by concurrent requests, a refresh after a 401 only when nobody
//! else has refreshed, and refusals that name no secret.

use std::net::SocketAddr;
use std::sync::Arc;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::hubspot::auth::{AuthError, HubspotCredentials, TokenSource};
use secrecy::SecretString;

async fn start(token_lifetime: jiff::SignedDuration) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            records: 20,
            rate_limits: false,
            hubspot_token_lifetime: token_lifetime,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

fn oauth(emulator: &RunningEmulator, refresh_token: &str) -> TokenSource {
    let info = emulator.info();
    TokenSource::new(
        HubspotCredentials::OAuth {
            client_id: info.hubspot_client_id.clone(),
            client_secret: SecretString::from(info.hubspot_client_secret.as_str()),
            refresh_token: SecretString::from(refresh_token),
        },
        &info.hubspot_base_url,
        reqwest::Client::new(),
    )
    .expect("token source")
}

fn token_requests(emulator: &RunningEmulator) -> u64 {
    emulator
        .stats()
        .requests_by_endpoint
        .get("hubspot POST /oauth/v1/token")
        .map_or(0, |by_status| by_status.values().sum())
}

async fn contacts_status(emulator: &RunningEmulator, header: &str) -> u16 {
    reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/objects/contacts?limit=1",
            emulator.info().hubspot_base_url
        ))
        .header("authorization", header)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_private_app_token_is_used_as_it_is() {
    let emulator = start(jiff::SignedDuration::from_mins(30)).await;
    let source = TokenSource::new(
        HubspotCredentials::PrivateApp {
            token: SecretString::from(emulator.info().hubspot_token.as_str()),
        },
        &emulator.info().hubspot_base_url,
        reqwest::Client::new(),
    )
    .expect("token source");
    let bearer = source.bearer().await.expect("token");
    assert_eq!(
        contacts_status(&emulator, &bearer.header_value()).await,
        200
    );
    assert!(
        source
            .after_unauthorized(bearer.generation)
            .await
            .expect("no error")
            .is_none(),
        "a private app's token cannot be refreshed"
    );
    assert_eq!(token_requests(&emulator), 0);
}

#[tokio::test]
async fn oauth_tokens_are_refreshed_ahead_of_expiry_once_for_everyone() {
    let emulator = start(jiff::SignedDuration::from_secs(2)).await;
    let source = Arc::new(oauth(&emulator, &emulator.info().hubspot_refresh_token));
    let first = source.bearer().await.expect("token");
    assert_eq!(contacts_status(&emulator, &first.header_value()).await, 200);
    // Within its life the same token serves.
    assert_eq!(
        source.bearer().await.expect("token").generation,
        first.generation
    );
    assert_eq!(token_requests(&emulator), 1);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        contacts_status(&emulator, &first.header_value()).await,
        401,
        "the first token has expired"
    );
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let source = Arc::clone(&source);
            tokio::spawn(async move { source.bearer().await.map(|bearer| bearer.generation) })
        })
        .collect();
    for task in waiting {
        assert_eq!(
            task.await.expect("task").expect("token"),
            first.generation + 1
        );
    }
    assert_eq!(
        token_requests(&emulator),
        2,
        "one refresh for twenty waiting requests"
    );
    let fresh = source.bearer().await.expect("token");
    assert_eq!(contacts_status(&emulator, &fresh.header_value()).await, 200);
}

#[tokio::test]
async fn a_401_refreshes_only_a_token_nobody_has_replaced_yet() {
    let emulator = start(jiff::SignedDuration::from_mins(30)).await;
    let source = oauth(&emulator, &emulator.info().hubspot_refresh_token);
    let first = source.bearer().await.expect("token");
    let second = source
        .after_unauthorized(first.generation)
        .await
        .expect("refresh")
        .expect("a new token");
    assert_eq!(second.generation, first.generation + 1);
    // A second request that saw the same rejected token gets the new one, no new refresh.
    let third = source
        .after_unauthorized(first.generation)
        .await
        .expect("no error")
        .expect("a token");
    assert_eq!(third.generation, second.generation);
    assert_eq!(token_requests(&emulator), 2);
    assert_eq!(contacts_status(&emulator, &third.header_value()).await, 200);
}

#[tokio::test]
async fn a_refused_refresh_token_says_what_to_do_and_shows_no_secret() {
    let emulator = start(jiff::SignedDuration::from_mins(30)).await;
    let revoked = "na1-0000-revoked-refresh-token";
    let source = oauth(&emulator, revoked);
    let error = source.bearer().await.expect_err("refused");
    assert!(matches!(error, AuthError::Refused { .. }), "{error:?}");
    let shown = format!("{error} {error:?} {source:?}");
    assert!(shown.contains("reconnect the app"), "{shown}");
    for secret in [revoked, emulator.info().hubspot_client_secret.as_str()] {
        assert!(!shown.contains(secret), "a secret in {shown}");
    }
}
