//! What the HubSpot connector tests share: an emulator with given faults and limits, a client
//! with quick retries, credentials, and a paged read of every contact.

// Each test binary uses some of these, not all.
#![allow(dead_code)]

use std::net::SocketAddr;

use crmsync::emulator::faults::Faults;
use crmsync::emulator::hubspot::HubspotLimits;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::hubspot::auth::{HubspotCredentials, TokenSource};
use crmsync::hubspot::client::{Budget, HubspotClient, HubspotError, RateSettings};
use http::Method;
use secrecy::SecretString;

pub async fn start(faults: &str, limits: HubspotLimits, rate_limits: bool) -> RunningEmulator {
    start_with(EmulatorConfig {
        seed: 21,
        records: 300,
        rate_limits,
        hubspot_limits: limits,
        faults: faults.parse::<Faults>().expect("faults"),
        ..EmulatorConfig::default()
    })
    .await
}

/// An emulator as `config` says, on an ephemeral port of 127.0.0.1.
pub async fn start_with(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator starts")
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base_delay: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(200),
    }
}

pub fn client(
    emulator: &RunningEmulator,
    credentials: HubspotCredentials,
    settings: RateSettings,
) -> HubspotClient {
    let base = &emulator.info().hubspot_base_url;
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(credentials, base, http.clone()).expect("tokens");
    HubspotClient::new(http, base, tokens, settings, fast_retries()).expect("client")
}

/// A client with the emulator's private-app token.
pub fn private_client(emulator: &RunningEmulator, settings: RateSettings) -> HubspotClient {
    client(emulator, private_app(emulator), settings)
}

pub fn private_app(emulator: &RunningEmulator) -> HubspotCredentials {
    HubspotCredentials::PrivateApp {
        token: SecretString::from(emulator.info().hubspot_token.as_str()),
    }
}

pub fn oauth(emulator: &RunningEmulator) -> HubspotCredentials {
    let info = emulator.info();
    HubspotCredentials::OAuth {
        client_id: info.hubspot_client_id.clone(),
        client_secret: SecretString::from(info.hubspot_client_secret.as_str()),
        refresh_token: SecretString::from(info.hubspot_refresh_token.as_str()),
    }
}

/// Pages through every contact with the client; returns the ids in order.
pub async fn all_contact_ids(client: &HubspotClient) -> Result<Vec<String>, HubspotError> {
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
