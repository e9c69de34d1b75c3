//! HubSpot access tokens: a private app's fixed token, or an OAuth app's access token kept
//! fresh from its refresh token (`POST /oauth/v1/token` through the `oauth2` crate and our one
//! HTTP client). Tokens are refreshed ahead of expiry, at most once more after a 401, and one
//! refresh serves every request waiting for it. Tokens are secrets: they never reach logs,
//! errors or Debug output.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::http::client::OAuthHttp;
use crate::http::retry::RetryPolicy;

/// How crmsync authenticates with HubSpot.
pub enum HubspotCredentials {
    /// A private app's access token.
    PrivateApp { token: SecretString },
    /// An OAuth app's client and the portal's refresh token.
    OAuth {
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
}

impl std::fmt::Debug for HubspotCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubspotCredentials::PrivateApp { .. } => {
                f.write_str("PrivateApp { token: [redacted] }")
            }
            HubspotCredentials::OAuth { client_id, .. } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the HubSpot base URL {url:?} cannot hold the token endpoint — check [hubspot] base_url"
    )]
    TokenUrl { url: String },
    #[error(
        "HubSpot refused the OAuth refresh token ({code}: {description}) — the app may have been uninstalled or the token revoked; reconnect the app and update the refresh token"
    )]
    Refused { code: String, description: String },
    #[error(
        "HubSpot's token endpoint could not be reached: {0} — check the network and [hubspot] base_url"
    )]
    Unreachable(String),
    #[error("HubSpot's token endpoint answered something unexpected: {0}")]
    Unexpected(String),
}

/// An access token and which refresh produced it (0 for a private app's token).
pub struct Bearer {
    token: SecretString,
    pub generation: u64,
}

impl Bearer {
    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

type HubspotOAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

struct Cached {
    token: SecretString,
    refresh_at: Instant,
    generation: u64,
}

enum Source {
    Fixed(SecretString),
    OAuth {
        client: Box<HubspotOAuthClient>,
        refresh_token: Mutex<SecretString>,
        cached: Mutex<Option<Cached>>,
    },
}

/// Hands out access tokens for every request of a run.
pub struct TokenSource {
    source: Source,
    http: OAuthHttp,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").finish_non_exhaustive()
    }
}

/// How long before expiry a token is replaced: a tenth of its life, at most a minute.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

impl TokenSource {
    pub fn new(
        credentials: HubspotCredentials,
        base_url: &str,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        let source = match credentials {
            HubspotCredentials::PrivateApp { token } => Source::Fixed(token),
            HubspotCredentials::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let url = format!("{}/oauth/v1/token", base_url.trim_end_matches('/'));
                let token_url =
                    TokenUrl::new(url.clone()).map_err(|_| AuthError::TokenUrl { url })?;
                let client = BasicClient::new(ClientId::new(client_id))
                    .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
                    .set_auth_type(AuthType::RequestBody)
                    .set_token_uri(token_url);
                Source::OAuth {
                    client: Box::new(client),
                    refresh_token: Mutex::new(refresh_token),
                    cached: Mutex::new(None),
                }
            }
        };
        Ok(Self {
            source,
            http: OAuthHttp(http),
        })
    }

    /// A token good for the next request: the cached one, or a fresh one when it is close to
    /// expiry. Concurrent callers share one refresh.
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        match &self.source {
            Source::Fixed(token) => Ok(Bearer {
                token: token.clone(),
                generation: 0,
            }),
            Source::OAuth { cached, .. } => {
                let mut cached = cached.lock().await;
                if let Some(current) = cached.as_ref().filter(|c| c.refresh_at > Instant::now()) {
                    return Ok(Bearer {
                        token: current.token.clone(),
                        generation: current.generation,
                    });
                }
                let generation = cached.as_ref().map_or(1, |c| c.generation + 1);
                let fresh = self.refresh(generation).await?;
                let bearer = Bearer {
                    token: fresh.token.clone(),
                    generation,
                };
                *cached = Some(fresh);
                Ok(bearer)
            }
        }
    }

    /// After a 401 with the token of `rejected` generation: a new token, unless another request
    /// already replaced it (then that one). A private app's token cannot be replaced: `None`.
    pub async fn after_unauthorized(&self, rejected: u64) -> Result<Option<Bearer>, AuthError> {
        let Source::OAuth { cached, .. } = &self.source else {
            return Ok(None);
        };
        let mut cached = cached.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| c.generation != rejected) {
            return Ok(Some(Bearer {
                token: current.token.clone(),
                generation: current.generation,
            }));
        }
        let generation = rejected + 1;
        let fresh = self.refresh(generation).await?;
        let bearer = Bearer {
            token: fresh.token.clone(),
            generation,
        };
        *cached = Some(fresh);
        Ok(Some(bearer))
    }

    async fn refresh(&self, generation: u64) -> Result<Cached, AuthError> {
        let Source::OAuth {
            client,
            refresh_token,
            ..
        } = &self.source
        else {
            return Err(AuthError::Unexpected("no OAuth client".into()));
        };
        let mut refresh_token = refresh_token.lock().await;
        let grant = RefreshToken::new(refresh_token.expose_secret().to_string());
        // The token endpoint fails now and then like any other (a 502 page, a dropped
        // connection): those are tried again; a refusal is final.
        let policy = RetryPolicy::default();
        let mut attempt = 0;
        let (answer, requested) = loop {
            attempt += 1;
            let requested = Instant::now();
            let outcome = client
                .exchange_refresh_token(&grant)
                .request_async(&self.http)
                .await;
            let transient = match outcome {
                Ok(answer) => break (answer, requested),
                Err(RequestTokenError::ServerResponse(response)) => {
                    return Err(AuthError::Refused {
                        code: response.error().to_string(),
                        description: response
                            .error_description()
                            .cloned()
                            .unwrap_or_else(|| "no description".into()),
                    });
                }
                Err(RequestTokenError::Request(error)) => AuthError::Unreachable(error.to_string()),
                Err(RequestTokenError::Parse(error, _)) => AuthError::Unexpected(error.to_string()),
                Err(RequestTokenError::Other(message)) => AuthError::Unexpected(message),
            };
            if !policy.may_retry(attempt) {
                return Err(transient);
            }
            tracing::warn!(attempt, reason = %transient, "HubSpot token refresh failed; retrying");
            tokio::time::sleep(policy.jittered_delay(attempt)).await;
        };
        // HubSpot may hand out a new refresh token; the next refresh uses it.
        if let Some(rotated) = answer.refresh_token() {
            *refresh_token = SecretString::from(rotated.secret().as_str());
        }
        let lifetime = answer.expires_in().unwrap_or(Duration::from_secs(1_800));
        tracing::debug!(
            generation,
            lifetime_seconds = lifetime.as_secs(),
            "HubSpot access token refreshed"
        );
        Ok(Cached {
            token: SecretString::from(answer.access_token().secret().as_str()),
            refresh_at: requested + lifetime.saturating_sub(refresh_margin(lifetime)),
            generation,
        })
    }
}
