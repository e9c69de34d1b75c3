//! What the Salesforce connector tests share: an emulator, credentials for each sign-in flow,
//! and a client with quick retries.

// Each test binary uses some of these, not all.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::salesforce::auth::{SalesforceCredentials, SessionSource};
use crmsync::salesforce::client::{SalesforceClient, SalesforceSettings};
use secrecy::SecretString;

pub async fn start(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator starts")
}

/// An org of `records` people without rate limits or faults.
pub fn quiet(records: usize) -> EmulatorConfig {
    EmulatorConfig {
        seed: 5,
        records,
        rate_limits: false,
        ..EmulatorConfig::default()
    }
}

pub fn jwt(emulator: &RunningEmulator) -> SalesforceCredentials {
    let info = emulator.info();
    let pem = std::fs::read_to_string(&info.salesforce_private_key_file).expect("key file");
    SalesforceCredentials::JwtBearer {
        client_id: info.salesforce_client_id.clone(),
        username: info.salesforce_username.clone(),
        private_key_pem: SecretString::from(pem),
    }
}

pub fn refresh(emulator: &RunningEmulator) -> SalesforceCredentials {
    let info = emulator.info();
    SalesforceCredentials::RefreshToken {
        client_id: info.salesforce_client_id.clone(),
        client_secret: SecretString::from(info.salesforce_client_secret.as_str()),
        refresh_token: SecretString::from(info.salesforce_refresh_token.as_str()),
    }
}

pub fn client_credentials(emulator: &RunningEmulator) -> SalesforceCredentials {
    let info = emulator.info();
    SalesforceCredentials::ClientCredentials {
        client_id: info.salesforce_client_id.clone(),
        client_secret: SecretString::from(info.salesforce_client_secret.as_str()),
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    }
}

/// A client with default settings.
pub fn client(emulator: &RunningEmulator, credentials: SalesforceCredentials) -> SalesforceClient {
    client_with(emulator, credentials, SalesforceSettings::default())
}

pub fn client_with(
    emulator: &RunningEmulator,
    credentials: SalesforceCredentials,
    settings: SalesforceSettings,
) -> SalesforceClient {
    let http = reqwest::Client::new();
    let sessions = SessionSource::new(
        credentials,
        &emulator.info().salesforce_login_url,
        http.clone(),
    )
    .expect("sessions");
    SalesforceClient::new(http, sessions, settings, fast_retries()).expect("client")
}
