//! Building the Salesforce connector from configuration: secrets resolved from their
//! references, the request rate, concurrency and budget reserve, one shared HTTP client.

use crate::config::{SalesforceAuth, SalesforceConfig};
use crate::http::client::{ClientError, ClientSettings, build_client};
use crate::http::retry::RetryPolicy;
use crate::secret::SecretError;

use super::auth::{AuthError, SalesforceCredentials, SessionSource};
use super::client::{SalesforceClient, SalesforceError, SalesforceSettings};
use super::read::SalesforceReader;

/// Why the connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "Salesforce is enabled but has no [salesforce.auth] — add one (see crmsync.example.toml)"
    )]
    NoAuth,
    #[error("Salesforce {what}: {source}")]
    Secret {
        what: &'static str,
        source: SecretError,
    },
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Client(#[from] SalesforceError),
}

/// The connector for `config`, with its own client built from `settings`.
pub fn connect(
    config: &SalesforceConfig,
    settings: ClientSettings,
) -> Result<SalesforceClient, ConnectError> {
    let http = build_client(settings)?;
    let secret = |what: &'static str, reference: &crate::secret::SecretRef| {
        reference
            .resolve()
            .map_err(|source| ConnectError::Secret { what, source })
    };
    let credentials = match config.auth.as_ref().ok_or(ConnectError::NoAuth)? {
        SalesforceAuth::JwtBearer {
            client_id,
            username,
            private_key,
        } => SalesforceCredentials::JwtBearer {
            client_id: client_id.clone(),
            username: username.clone(),
            private_key_pem: secret("private key", private_key)?,
        },
        SalesforceAuth::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => SalesforceCredentials::RefreshToken {
            client_id: client_id.clone(),
            client_secret: secret("client secret", client_secret)?,
            refresh_token: secret("refresh token", refresh_token)?,
        },
        SalesforceAuth::ClientCredentials {
            client_id,
            client_secret,
        } => SalesforceCredentials::ClientCredentials {
            client_id: client_id.clone(),
            client_secret: secret("client secret", client_secret)?,
        },
    };
    let sessions = SessionSource::new(credentials, &config.login_url.value, http.clone())?;
    Ok(SalesforceClient::new(
        http,
        sessions,
        SalesforceSettings {
            api_version: config.api_version.value.clone(),
            requests_per_second: config.requests_per_second,
            max_concurrent: config.max_concurrent_requests,
            reserve_percent: config.api_budget_reserve_percent,
        },
        RetryPolicy::default(),
    )?)
}

/// A reader over `client` with the configured bulk threshold.
pub fn reader<'a>(client: &'a SalesforceClient, config: &SalesforceConfig) -> SalesforceReader<'a> {
    let mut reader = SalesforceReader::new(client);
    reader.bulk_threshold = config.bulk_threshold;
    reader
}
