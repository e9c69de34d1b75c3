//! Salesforce's token endpoint (`POST /services/oauth2/token`) with the JWT bearer,
//! refresh-token and client-credentials grants, the org's signing key pair (its private key is
//! written as a PEM for clients), and the access tokens handed out with their expiry.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;

use super::SalesforceShared;

/// Audiences the real token endpoint accepts in a JWT assertion (besides the emulator's own
/// login URL).
pub const ACCEPTED_AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// Size of the org's RSA key.
const KEY_BITS: usize = 2048;

/// Problems making the org's key pair.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate the emulator's RSA key: {0}")]
    Generate(#[from] rsa::Error),
    #[error("cannot encode the emulator's RSA key as PEM: {0}")]
    Encode(#[from] rsa::pkcs8::Error),
    #[error("the emulator's RSA key generation was interrupted")]
    Interrupted,
}

/// The key pair of the emulated connected app's certificate: clients sign JWT assertions with
/// the private key; the emulator verifies with the public one.
#[derive(Clone)]
pub struct AppKeys {
    pub public: RsaPublicKey,
    /// PKCS#8 PEM of the private key (what `salesforce_private_key_file` holds).
    pub private_pem: secrecy::SecretString,
}

impl std::fmt::Debug for AppKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKeys").finish_non_exhaustive()
    }
}

impl AppKeys {
    /// The same key pair for the same seed; generated once per process and seed (it takes a
    /// noticeable moment).
    pub fn generate(seed: u64) -> Result<Self, KeyError> {
        static MADE: std::sync::OnceLock<std::sync::Mutex<HashMap<u64, AppKeys>>> =
            std::sync::OnceLock::new();
        let made = MADE.get_or_init(Default::default);
        if let Some(keys) = made.lock().ok().and_then(|made| made.get(&seed).cloned()) {
            return Ok(keys);
        }
        let keys = Self::generate_uncached(seed)?;
        if let Ok(mut made) = made.lock() {
            made.insert(seed, keys.clone());
        }
        Ok(keys)
    }

    fn generate_uncached(seed: u64) -> Result<Self, KeyError> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5346_4b45_5953);
        let private = RsaPrivateKey::new(&mut rng, KEY_BITS)?;
        let pem = private.to_pkcs8_pem(LineEnding::LF)?;
        Ok(Self {
            public: RsaPublicKey::from(&private),
            private_pem: secrecy::SecretString::from(pem.as_str()),
        })
    }
}

/// An access token handed out, and until when it is good.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub expires: Timestamp,
}

/// The access tokens handed out.
#[derive(Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokens are secrets: only how many there are.
        f.debug_struct("Sessions")
            .field("open", &self.by_token.len())
            .finish()
    }
}

impl Sessions {
    pub fn insert(&mut self, token: String, session: Session) {
        self.by_token.insert(token, session);
    }

    pub fn get_mut(&mut self, token: &str) -> Option<&mut Session> {
        self.by_token.get_mut(token)
    }
}

pub fn routes(shared: Arc<SalesforceShared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .with_state(shared)
}

/// A token-endpoint failure: `{"error", "error_description"}`, status 400 (401 for a bad client).
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

const fn refuse(error: &'static str, description: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        description,
    }
}

async fn token(
    State(shared): State<Arc<SalesforceShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let answer = match form.get("grant_type").map(String::as_str) {
        None => Err(refuse("invalid_request", "grant type is missing")),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => jwt_bearer(&shared, &form),
        Some("refresh_token") => refresh(&shared, &form, &headers),
        Some("client_credentials") => client_credentials(&shared, &form, &headers),
        Some(_) => Err(refuse("unsupported_grant_type", "grant type not supported")),
    };
    let response = match answer {
        Ok(body) => shared.plain_json(StatusCode::OK, &body),
        Err(refusal) => shared.plain_json(
            refusal.status,
            &json!({"error": refusal.error, "error_description": refusal.description}),
        ),
    };
    shared.answered("POST /services/oauth2/token", response)
}

/// The JWT bearer grant: an RS256-signed assertion naming the app (`iss`), the user (`sub`),
/// the login server (`aud`) and an expiry (`exp`).
fn jwt_bearer(shared: &SalesforceShared, form: &HashMap<String, String>) -> Result<Value, Refusal> {
    let assertion = form
        .get("assertion")
        .ok_or(refuse("invalid_request", "assertion is missing"))?;
    let claims = verify_assertion(shared, assertion)?;
    let issuer = claims.get("iss").and_then(Value::as_str);
    if issuer != Some(shared.credentials.client_id.as_str()) {
        return Err(refuse("invalid_client_id", "client identifier invalid"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(audience)) => shared.accepts_audience(audience),
        Some(Value::Array(audiences)) => audiences
            .iter()
            .filter_map(Value::as_str)
            .any(|audience| shared.accepts_audience(audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(refuse("invalid_grant", "audience is invalid"));
    }
    let expiry = match claims.get("exp") {
        Some(Value::Number(number)) => number.as_i64(),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or(refuse("invalid_grant", "expiration time is missing"))?;
    if expiry <= Timestamp::now().as_second() {
        // What the real endpoint says for a stale assertion.
        return Err(refuse("invalid_grant", "expired authorization code"));
    }
    let subject = claims.get("sub").and_then(Value::as_str);
    if subject != Some(shared.credentials.username.as_str()) {
        return Err(refuse(
            "invalid_grant",
            "user hasn't approved this consumer",
        ));
    }
    Ok(shared.issue_token("api", false))
}

/// Checks the assertion's form, algorithm and signature; returns its claims.
fn verify_assertion(shared: &SalesforceShared, assertion: &str) -> Result<Value, Refusal> {
    const INVALID: Refusal = refuse("invalid_grant", "invalid assertion");
    let mut parts = assertion.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(INVALID);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header_json: Value = decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(INVALID)?;
    if header_json.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(refuse(
            "invalid_grant",
            "invalid assertion: only RS256 is supported",
        ));
    }
    let signature = decode(signature)
        .ok()
        .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
        .ok_or(INVALID)?;
    let verifier = VerifyingKey::<Sha256>::new(shared.keys.public.clone());
    let signed = format!("{header}.{payload}");
    verifier
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| INVALID)?;
    decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(Value::is_object)
        .ok_or(INVALID)
}

/// Client id and secret from the form or from HTTP Basic authentication.
fn client_from(
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (Option<String>, Option<String>) {
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
        });
    match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    }
}

fn check_client(
    shared: &SalesforceShared,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    secret_required: bool,
) -> Result<(), Refusal> {
    let (id, secret) = client_from(form, headers);
    if id.as_deref() != Some(shared.credentials.client_id.as_str()) {
        return Err(refuse("invalid_client_id", "client identifier invalid"));
    }
    match secret {
        Some(secret) if secret == shared.credentials.client_secret => Ok(()),
        None if !secret_required => Ok(()),
        _ => Err(refuse("invalid_client", "invalid client credentials")),
    }
}

fn refresh(
    shared: &SalesforceShared,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Value, Refusal> {
    check_client(shared, form, headers, false)?;
    match form.get("refresh_token") {
        Some(token) if *token == shared.credentials.refresh_token => {
            Ok(shared.issue_token("api refresh_token", false))
        }
        Some(_) => Err(refuse("invalid_grant", "expired access/refresh token")),
        None => Err(refuse("invalid_request", "refresh_token is missing")),
    }
}

fn client_credentials(
    shared: &SalesforceShared,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Value, Refusal> {
    check_client(shared, form, headers, true)?;
    Ok(shared.issue_token("api", false))
}

/// `signature` of a token response: HMAC-SHA256 over `id` + `issued_at`, keyed with the
/// consumer secret, in base64.
pub fn response_signature(client_secret: &str, id_url: &str, issued_at: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(id_url.as_bytes());
    mac.update(issued_at.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}
