//! Building the HubSpot connector from configuration: secrets resolved from their
//! references, the tier's limits, one shared HTTP client.

use crate::config::{HubspotAuth, HubspotConfig};
use crate::http::client::{ClientError, ClientSettings, build_client};
use crate::http::retry::RetryPolicy;
use crate::secret::SecretError;

use super::auth::{AuthError, HubspotCredentials, TokenSource};
use super::client::{HubspotClient, HubspotError, RateSettings};

/// Why the connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("HubSpot is enabled but has no [hubspot.auth] — add one (see crmsync.example.toml)")]
    NoAuth,
    #[error("HubSpot {what}: {source}")]
    Secret {
        what: &'static str,
        source: SecretError,
    },
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Client(#[from] HubspotError),
}

/// The connector for `config`, with its own client built from `settings`.
pub fn connect(
    config: &HubspotConfig,
    settings: ClientSettings,
) -> Result<HubspotClient, ConnectError> {
    let http = build_client(settings)?;
    let secret = |what: &'static str, reference: &crate::secret::SecretRef| {
        reference
            .resolve()
            .map_err(|source| ConnectError::Secret { what, source })
    };
    let credentials = match config.auth.as_ref().ok_or(ConnectError::NoAuth)? {
        HubspotAuth::PrivateApp { token } => HubspotCredentials::PrivateApp {
            token: secret("private app token", token)?,
        },
        HubspotAuth::OAuthRefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => HubspotCredentials::OAuth {
            client_id: client_id.clone(),
            client_secret: secret("OAuth client secret", client_secret)?,
            refresh_token: secret("OAuth refresh token", refresh_token)?,
        },
    };
    let base_url = config.base_url.value.as_str();
    let tokens = TokenSource::new(credentials, base_url, http.clone())?;
    let rate = &config.rate_limit;
    Ok(HubspotClient::new(
        http,
        base_url,
        tokens,
        RateSettings {
            requests_per_10s: rate.requests_per_10s,
            search_per_second: rate.search_per_second,
            daily_limit: rate.daily_limit,
            daily_reserve_percent: rate.daily_reserve_percent,
        },
        RetryPolicy::default(),
    )?)
}
