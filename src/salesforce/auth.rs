//! Salesforce sessions: an access token and the instance URL it is good for, from the OAuth
//! 2.0 JWT bearer flow (an RS256 assertion signed here with the connected app's private key),
//! the refresh-token flow or the client-credentials flow (both through the `oauth2` crate and
//! our one HTTP client). Salesforce says nothing of a token's lifetime, so a session is kept
//! until the API calls it invalid (401 `INVALID_SESSION_ID`); then one fresh login serves every
//! request that saw it fail. Tokens and the key are secrets: they never reach logs, errors or
//! Debug output.

use std::time::Duration;

use oauth2::basic::{BasicErrorResponse, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields, RefreshToken,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::http::client::OAuthHttp;
use crate::http::retry::RetryPolicy;

/// The JWT grant type Salesforce's token endpoint takes.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a signed assertion is good for (Salesforce allows a few minutes).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

/// How crmsync signs in to a Salesforce org.
pub enum SalesforceCredentials {
    /// A connected app's consumer key, the integration user, and the private key of the
    /// certificate uploaded to the app (PEM).
    JwtBearer {
        client_id: String,
        username: String,
        private_key_pem: SecretString,
    },
    /// A connected app and a refresh token an admin granted it.
    RefreshToken {
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
    /// A connected app with a run-as user (the login URL must be the org's My Domain).
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
}

impl std::fmt::Debug for SalesforceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (flow, client_id) = match self {
            SalesforceCredentials::JwtBearer { client_id, .. } => ("JwtBearer", client_id),
            SalesforceCredentials::RefreshToken { client_id, .. } => ("RefreshToken", client_id),
            SalesforceCredentials::ClientCredentials { client_id, .. } => {
                ("ClientCredentials", client_id)
            }
        };
        f.debug_struct(flow)
            .field("client_id", client_id)
            .finish_non_exhaustive()
    }
}

/// Why no session could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the Salesforce login URL {url:?} cannot hold the token endpoint — check [salesforce] login_url"
    )]
    TokenUrl { url: String },
    #[error(
        "the private key for the Salesforce JWT bearer flow is not a usable RSA key in PEM form ({0}) — point [salesforce.auth] private_key at the key of the certificate uploaded to the connected app"
    )]
    PrivateKey(String),
    #[error("Salesforce refused to sign in ({code}: {description}) — {hint}")]
    Refused {
        code: String,
        description: String,
        hint: &'static str,
    },
    #[error(
        "Salesforce's token endpoint could not be reached: {0} — check the network and [salesforce] login_url"
    )]
    Unreachable(String),
    #[error("Salesforce's token endpoint answered something unexpected: {0}")]
    Unexpected(String),
}

/// The `aud` of a JWT bearer assertion: Salesforce's login host — production's, or
/// sandboxes' — even when the token is asked of a My Domain; any other host (an Experience
/// Cloud site, an emulator) is its own audience.
fn assertion_audience(login_url: &str) -> String {
    let host = login_url
        .split_once("://")
        .map_or(login_url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".to_string()
    } else if host == "login.salesforce.com" || host.ends_with(".my.salesforce.com") {
        "https://login.salesforce.com".to_string()
    } else {
        login_url.to_string()
    }
}

/// What to do about a refusal, by OAuth error code.
fn hint(code: &str, description: &str) -> &'static str {
    if description.contains("approved") {
        "an admin must pre-authorize the connected app for the user (OAuth policies: admin approved users, and the user's profile or permission set)"
    } else if code == "invalid_client" || code == "invalid_client_id" {
        "check the connected app's consumer key and secret"
    } else if code == "invalid_grant" {
        "check the username, the certificate uploaded to the connected app, the refresh token, and that the login URL is the org's (login, test or My Domain)"
    } else {
        "check the [salesforce.auth] settings against the connected app"
    }
}

/// A session: the bearer token, the instance every request goes to, and which login
/// produced it.
pub struct Session {
    token: SecretString,
    pub instance_url: String,
    pub generation: u64,
}

impl Session {
    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }
}

impl Clone for Session {
    fn clone(&self) -> Self {
        Self {
            token: self.token.clone(),
            instance_url: self.instance_url.clone(),
            generation: self.generation,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("instance_url", &self.instance_url)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What Salesforce's token answer adds to the OAuth standard fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SalesforceTokenFields {
    instance_url: String,
}

impl ExtraTokenFields for SalesforceTokenFields {}

type SalesforceTokenResponse = StandardTokenResponse<SalesforceTokenFields, BasicTokenType>;

type SalesforceOAuthClient = oauth2::Client<
    BasicErrorResponse,
    SalesforceTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The claims of a JWT bearer assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

enum Flow {
    JwtBearer {
        client_id: String,
        username: String,
        key: Box<jsonwebtoken::EncodingKey>,
    },
    RefreshToken {
        client: Box<SalesforceOAuthClient>,
        refresh_token: SecretString,
    },
    ClientCredentials {
        client: Box<SalesforceOAuthClient>,
    },
}

/// Hands out the session every request of a run uses.
pub struct SessionSource {
    flow: Flow,
    login_url: String,
    http: OAuthHttp,
    current: Mutex<Option<Session>>,
}

impl std::fmt::Debug for SessionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSource")
            .field("login_url", &self.login_url)
            .finish_non_exhaustive()
    }
}

impl SessionSource {
    /// Sessions for `credentials` from the org behind `login_url` (`https://login.salesforce.com`,
    /// `https://test.salesforce.com` or a My Domain).
    pub fn new(
        credentials: SalesforceCredentials,
        login_url: &str,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        let login_url = login_url.trim_end_matches('/').to_string();
        let oauth_client = |client_id: String, client_secret: &SecretString| {
            let url = format!("{login_url}/services/oauth2/token");
            let token_url = TokenUrl::new(url.clone()).map_err(|_| AuthError::TokenUrl { url })?;
            Ok::<_, AuthError>(Box::new(
                oauth2::Client::<
                    BasicErrorResponse,
                    SalesforceTokenResponse,
                    oauth2::basic::BasicTokenIntrospectionResponse,
                    StandardRevocableToken,
                    oauth2::basic::BasicRevocationErrorResponse,
                >::new(ClientId::new(client_id))
                .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
                .set_auth_type(AuthType::RequestBody)
                .set_token_uri(token_url),
            ))
        };
        let flow = match credentials {
            SalesforceCredentials::JwtBearer {
                client_id,
                username,
                private_key_pem,
            } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(
                    private_key_pem.expose_secret().as_bytes(),
                )
                .map_err(|error| AuthError::PrivateKey(error.to_string()))?;
                Flow::JwtBearer {
                    client_id,
                    username,
                    key: Box::new(key),
                }
            }
            SalesforceCredentials::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => Flow::RefreshToken {
                client: oauth_client(client_id, &client_secret)?,
                refresh_token,
            },
            SalesforceCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => Flow::ClientCredentials {
                client: oauth_client(client_id, &client_secret)?,
            },
        };
        Ok(Self {
            flow,
            login_url,
            http: OAuthHttp(http),
            current: Mutex::new(None),
        })
    }

    /// The session in use, signing in first if there is none.
    pub async fn session(&self) -> Result<Session, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = self.sign_in(1).await?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// After a 401 `INVALID_SESSION_ID` with the session of `rejected` generation: a fresh
    /// one, unless another request already replaced it (then that one).
    pub async fn after_invalid_session(&self, rejected: u64) -> Result<Session, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.generation != rejected) {
            return Ok(session.clone());
        }
        let session = self.sign_in(rejected + 1).await?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// Signs in, trying again when the token endpoint fails for a moment (a refusal is final).
    async fn sign_in(&self, generation: u64) -> Result<Session, AuthError> {
        let policy = RetryPolicy::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.request_token().await {
                Ok((token, instance_url)) => {
                    tracing::debug!(generation, instance_url = %instance_url, "Salesforce session started");
                    return Ok(Session {
                        token,
                        instance_url: instance_url.trim_end_matches('/').to_string(),
                        generation,
                    });
                }
                Err(failure @ (AuthError::Unreachable(_) | AuthError::Unexpected(_))) => failure,
                Err(refused) => return Err(refused),
            };
            if !policy.may_retry(attempt) {
                return Err(failure);
            }
            tracing::warn!(attempt, reason = %failure, "Salesforce sign-in failed; retrying");
            tokio::time::sleep(policy.jittered_delay(attempt)).await;
        }
    }

    /// One token request: the access token and the instance URL.
    async fn request_token(&self) -> Result<(SecretString, String), AuthError> {
        let answer = match &self.flow {
            Flow::JwtBearer {
                client_id,
                username,
                key,
            } => return self.jwt_bearer(client_id, username, key).await,
            Flow::RefreshToken {
                client,
                refresh_token,
            } => {
                let grant = RefreshToken::new(refresh_token.expose_secret().to_string());
                client
                    .exchange_refresh_token(&grant)
                    .request_async(&self.http)
                    .await
            }
            Flow::ClientCredentials { client } => {
                client
                    .exchange_client_credentials()
                    .request_async(&self.http)
                    .await
            }
        };
        match answer {
            Ok(answer) => Ok((
                SecretString::from(answer.access_token().secret().as_str()),
                answer.extra_fields().instance_url.clone(),
            )),
            Err(RequestTokenError::ServerResponse(response)) => {
                let code = response.error().to_string();
                let description = response
                    .error_description()
                    .cloned()
                    .unwrap_or_else(|| "no description".into());
                Err(AuthError::Refused {
                    hint: hint(&code, &description),
                    code,
                    description,
                })
            }
            Err(RequestTokenError::Request(error)) => {
                Err(AuthError::Unreachable(error.to_string()))
            }
            Err(RequestTokenError::Parse(error, _)) => {
                Err(AuthError::Unexpected(error.to_string()))
            }
            Err(RequestTokenError::Other(message)) => Err(AuthError::Unexpected(message)),
        }
    }

    /// The JWT bearer grant: an RS256 assertion (`iss` the consumer key, `sub` the user, `aud`
    /// the login URL, a short `exp`) exchanged for a session.
    async fn jwt_bearer(
        &self,
        client_id: &str,
        username: &str,
        key: &jsonwebtoken::EncodingKey,
    ) -> Result<(SecretString, String), AuthError> {
        let expires =
            jiff::Timestamp::now().as_second().max(0) as u64 + ASSERTION_LIFETIME.as_secs();
        let audience = assertion_audience(&self.login_url);
        let claims = Claims {
            iss: client_id,
            sub: username,
            aud: &audience,
            exp: expires,
        };
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .map_err(|error| AuthError::PrivateKey(error.to_string()))?;
        let assertion = SecretString::from(assertion);
        let url = format!("{}/services/oauth2/token", self.login_url);
        let response = self
            .http
            .0
            .post(&url)
            .form(&[
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", assertion.expose_secret()),
            ])
            .send()
            .await
            .map_err(|error| AuthError::Unreachable(crate::http::redact::describe_error(error)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| AuthError::Unreachable(crate::http::redact::describe_error(error)))?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            AuthError::Unexpected(format!("HTTP {status} with a body that is not JSON"))
        })?;
        if !status.is_success() {
            let code = body["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_string();
            let description = body["error_description"]
                .as_str()
                .unwrap_or("no description")
                .to_string();
            if status.is_server_error() {
                return Err(AuthError::Unexpected(format!("HTTP {status}: {code}")));
            }
            return Err(AuthError::Refused {
                hint: hint(&code, &description),
                code,
                description,
            });
        }
        match (body["access_token"].as_str(), body["instance_url"].as_str()) {
            (Some(token), Some(instance_url)) => {
                Ok((SecretString::from(token), instance_url.to_string()))
            }
            _ => Err(AuthError::Unexpected(
                "a token answer without access_token or instance_url".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_are_addressed_to_salesforces_login_host() {
        for (login_url, audience) in [
            (
                "https://login.salesforce.com",
                "https://login.salesforce.com",
            ),
            (
                "https://acme.my.salesforce.com",
                "https://login.salesforce.com",
            ),
            ("https://test.salesforce.com", "https://test.salesforce.com"),
            (
                "https://acme--uat.sandbox.my.salesforce.com",
                "https://test.salesforce.com",
            ),
            (
                "https://community.acme.com/partners",
                "https://community.acme.com/partners",
            ),
            ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
        ] {
            assert_eq!(assertion_audience(login_url), audience, "{login_url}");
        }
    }
}
