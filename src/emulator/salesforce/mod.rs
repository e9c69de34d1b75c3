//! The Salesforce side of the emulator: OAuth token endpoint, REST query/describe/sObject
//! endpoints, sObject Collections, Bulk API 2.0 query jobs and the org's API limits, over a
//! seeded org whose picklists follow the chosen profile.

mod bulk;
mod describe;
pub mod oauth;
mod query;
pub mod schema;
pub mod seed;
pub mod soql;
pub mod store;
pub mod value;
mod writes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::data::{SeededRng, salesforce_id};
use super::stats::Stats;
use oauth::{AppKeys, Session, Sessions};
use store::OrgData;

/// The newest API version the emulated org serves when none is configured.
pub const DEFAULT_API_VERSION: &str = "62.0";
/// The oldest API version the emulated org still serves.
pub const OLDEST_API_VERSION: u32 = 31;

/// How the Salesforce side is set up.
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    /// The newest API version served (`62.0`); older ones down to 31.0 are served too.
    pub api_version: String,
    /// API requests allowed per rolling 24 hours (`DailyApiRequests.Max`).
    pub daily_api_requests: u64,
    /// Refuse requests with REQUEST_LIMIT_EXCEEDED once the allocation is spent.
    pub enforce_limits: bool,
    /// Session timeout (org default: 2 hours).
    pub session_lifetime: SignedDuration,
    /// Sessions end at a fixed time, however busy (the `expiry` fault); otherwise each call
    /// keeps a session alive, as Salesforce does.
    pub fixed_session_expiry: bool,
    /// Make some collection items fail with UNABLE_TO_LOCK_ROW (the `partial` fault).
    pub partial_failures: bool,
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        Self {
            api_version: DEFAULT_API_VERSION.to_string(),
            daily_api_requests: 100_000,
            enforce_limits: true,
            session_lifetime: SignedDuration::from_hours(2),
            fixed_session_expiry: false,
            partial_failures: false,
        }
    }
}

/// What a client needs to log in to the emulated org.
#[derive(Clone)]
pub struct SalesforceCredentials {
    /// Consumer key of the connected app.
    pub client_id: String,
    /// Consumer secret of the connected app.
    pub client_secret: String,
    /// The integration user the app runs as.
    pub username: String,
    pub refresh_token: String,
    pub org_id: String,
    pub user_id: String,
}

impl std::fmt::Debug for SalesforceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceCredentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Everything the Salesforce handlers share.
pub struct SalesforceShared {
    pub credentials: SalesforceCredentials,
    pub keys: AppKeys,
    pub settings: SalesforceSettings,
    org: RwLock<OrgData>,
    sessions: Mutex<Sessions>,
    /// API requests counted against the daily allocation.
    api_usage: AtomicU64,
    bulk_jobs_created: AtomicU64,
    sequence: AtomicU64,
    /// Number for the next record id the org hands out.
    next_record_number: AtomicU64,
    stats: Arc<Stats>,
    base_url: RwLock<String>,
    cursors: Mutex<query::Cursors>,
    bulk_jobs: Mutex<bulk::Jobs>,
}

impl std::fmt::Debug for SalesforceShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceShared").finish_non_exhaustive()
    }
}

impl SalesforceShared {
    /// Serves `data` (built by [`seed::OrgSeeder`]).
    pub fn new(
        data: OrgData,
        seed: u64,
        keys: AppKeys,
        settings: SalesforceSettings,
        stats: Arc<Stats>,
    ) -> Self {
        let mut rng = SeededRng::new(seed ^ 0x5346_4443_5245_4453);
        let org_id = salesforce_id("00D", 5_000_000 + rng.below(1_000_000));
        let user_id = salesforce_id("005", seed::INTEGRATION_USER_NUMBER);
        let credentials = SalesforceCredentials {
            client_id: format!("3MVG9{}", token_text(&mut rng, 80)),
            client_secret: (0..64)
                .map(|_| char::from(b"0123456789ABCDEF"[rng.below(16) as usize]))
                .collect(),
            username: "integration@crmsync-demo.example".to_string(),
            refresh_token: format!("5Aep861{}", token_text(&mut rng, 80)),
            org_id,
            user_id,
        };
        Self {
            credentials,
            keys,
            settings,
            org: RwLock::new(data),
            sessions: Mutex::new(Sessions::default()),
            api_usage: AtomicU64::new(0),
            bulk_jobs_created: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            next_record_number: AtomicU64::new(seed::FIRST_NEW_RECORD_NUMBER),
            stats,
            base_url: RwLock::new(String::new()),
            cursors: Mutex::new(query::Cursors::default()),
            bulk_jobs: Mutex::new(bulk::Jobs::default()),
        }
    }

    pub fn set_base_url(&self, url: &str) {
        if let Ok(mut base) = self.base_url.write() {
            *base = url.to_string();
        }
    }

    /// The emulator's own URL: login URL and instance URL at once.
    pub fn base_url(&self) -> String {
        self.base_url
            .read()
            .map(|url| url.clone())
            .unwrap_or_default()
    }

    fn accepts_audience(&self, audience: &str) -> bool {
        let audience = audience.trim_end_matches('/');
        oauth::ACCEPTED_AUDIENCES.contains(&audience) || audience == self.base_url()
    }

    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh 18-character id for a new record of the object with `key_prefix`.
    fn new_record_id(&self, key_prefix: &str) -> String {
        salesforce_id(
            key_prefix,
            self.next_record_number.fetch_add(1, Ordering::Relaxed),
        )
    }

    fn read_org(&self) -> std::sync::RwLockReadGuard<'_, OrgData> {
        self.org
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_org(&self) -> std::sync::RwLockWriteGuard<'_, OrgData> {
        self.org
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a handler whose early returns are answers too, and counts its answer under
    /// `endpoint`.
    fn respond(
        &self,
        endpoint: &str,
        handler: impl FnOnce() -> Result<Response, Response>,
    ) -> Response {
        self.answered(endpoint, handler().unwrap_or_else(|response| response))
    }

    /// Counts `response` under `endpoint` and hands it on.
    fn answered(&self, endpoint: &str, response: Response) -> Response {
        self.stats
            .record("salesforce", endpoint, response.status().as_u16());
        response
    }

    fn count_written(&self, object: &str, count: usize) {
        self.stats.written("salesforce", object, count);
    }

    /// A new access token and the token endpoint's success body.
    fn issue_token(&self, scope: &str, with_refresh_token: bool) -> Value {
        let mut rng = SeededRng::new(self.next_sequence() ^ 0x0074_6f6b_656e);
        let access_token = format!(
            "{}!AQ{}",
            &self.credentials.org_id[..15],
            token_text(&mut rng, 96)
        );
        let now = Timestamp::now();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(
                access_token.clone(),
                Session {
                    expires: now + self.settings.session_lifetime,
                },
            );
        }
        let issued_at = now.as_millisecond().to_string();
        let id_url = format!(
            "{}/id/{}/{}",
            self.base_url(),
            self.credentials.org_id,
            self.credentials.user_id
        );
        let mut body = json!({
            "access_token": access_token,
            "signature": oauth::response_signature(&self.credentials.client_secret, &id_url, &issued_at),
            "scope": scope,
            "instance_url": self.base_url(),
            "id": id_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        });
        if with_refresh_token {
            body["refresh_token"] = json!(self.credentials.refresh_token);
        }
        body
    }

    /// JSON with Salesforce's content type, without limit headers (token endpoint, errors
    /// before authentication).
    fn plain_json(&self, status: StatusCode, body: &impl serde::Serialize) -> Response {
        match serde_json::to_string(body) {
            Ok(text) => self.json_text(status, text, false),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the emulator could not encode its answer: {error}"),
            )
                .into_response(),
        }
    }

    /// A REST answer: JSON with `Sforce-Limit-Info`.
    fn api_json(&self, status: StatusCode, body: &impl serde::Serialize) -> Response {
        match serde_json::to_string(body) {
            Ok(text) => self.json_text(status, text, true),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the emulator could not encode its answer: {error}"),
            )
                .into_response(),
        }
    }

    fn json_text(&self, status: StatusCode, text: String, limit_info: bool) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        if limit_info {
            self.add_limit_info(&mut headers);
        }
        (status, headers, text).into_response()
    }

    fn add_limit_info(&self, headers: &mut HeaderMap) {
        let used = self.api_usage.load(Ordering::Relaxed);
        if let Ok(value) = HeaderValue::from_str(&format!(
            "api-usage={used}/{}",
            self.settings.daily_api_requests
        )) {
            headers.insert("sforce-limit-info", value);
        }
    }

    /// Salesforce's error array: `[{"message", "errorCode"}]` (plus `fields` when given).
    fn error(
        &self,
        status: StatusCode,
        code: &str,
        message: &str,
        fields: Option<&[&str]>,
    ) -> Response {
        let mut item = json!({"message": message, "errorCode": code});
        if let Some(fields) = fields {
            item["fields"] = json!(fields);
        }
        self.api_json(status, &json!([item]))
    }

    /// Checks the bearer token and counts the call against the daily allocation. `Err` is the
    /// answer to send instead (401 INVALID_SESSION_ID, 403 REQUEST_LIMIT_EXCEEDED).
    fn admit(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("OAuth "))
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim);
        let now = Timestamp::now();
        let valid = token.is_some_and(|token| {
            let Ok(mut sessions) = self.sessions.lock() else {
                return false;
            };
            match sessions.get_mut(token) {
                Some(session) if session.expires > now => {
                    if !self.settings.fixed_session_expiry {
                        session.expires = now + self.settings.session_lifetime;
                    }
                    true
                }
                _ => false,
            }
        });
        if !valid {
            let mut response = self.plain_json(
                StatusCode::UNAUTHORIZED,
                &json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
            );
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Token"),
            );
            return Err(Box::new(response));
        }
        let used = self.api_usage.fetch_add(1, Ordering::Relaxed) + 1;
        if self.settings.enforce_limits && used > self.settings.daily_api_requests {
            self.api_usage.fetch_sub(1, Ordering::Relaxed);
            return Err(Box::new(self.error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
                None,
            )));
        }
        Ok(())
    }

    /// API requests counted so far against the daily allocation.
    fn api_usage(&self) -> u64 {
        self.api_usage.load(Ordering::Relaxed)
    }

    /// Bulk API 2.0 query jobs created so far.
    fn bulk_jobs_today(&self) -> u64 {
        self.bulk_jobs_created.load(Ordering::Relaxed)
    }

    /// The newest API version served, as its major number (62 for `62.0`).
    fn newest_version(&self) -> u32 {
        self.settings
            .api_version
            .split('.')
            .next()
            .and_then(|major| major.parse::<u32>().ok())
            .unwrap_or(62)
    }

    /// Number of the requested API version (`v62.0` → 62) if this org serves it.
    fn api_version(&self, segment: &str) -> Option<u32> {
        let newest = self.newest_version();
        let major = segment
            .strip_prefix('v')?
            .strip_suffix(".0")?
            .parse::<u32>()
            .ok()?;
        (OLDEST_API_VERSION..=newest)
            .contains(&major)
            .then_some(major)
    }

    /// The 404 for paths that do not exist.
    fn not_found(&self) -> Response {
        self.error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
            None,
        )
    }
}

/// Letters and digits from the seeded source, as Salesforce's opaque tokens look.
fn token_text(rng: &mut SeededRng, length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    (0..length)
        .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len() as u64) as usize]))
        .collect()
}

/// The routes of the Salesforce API.
pub fn router(shared: Arc<SalesforceShared>) -> Router {
    oauth::routes(Arc::clone(&shared))
        .merge(describe::routes(Arc::clone(&shared)))
        .merge(query::routes(Arc::clone(&shared)))
        .merge(bulk::routes(Arc::clone(&shared)))
        .merge(writes::routes(shared))
}
