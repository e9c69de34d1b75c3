//! The HubSpot side of the emulator: private-app and OAuth bearer tokens, the CRM v3 object
//! endpoints over the seeded org, rate-limit budgets and headers, and HubSpot's error bodies.

mod admin;
mod associations;
mod catalog;
mod limits;
mod oauth;
mod objects;
mod owners;
mod schema;
mod search;
mod single;
mod writes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

pub use limits::{HubspotLimits, HubspotTier, Policy};

use super::data::{EmulatedRecord, GeneratedOrg, SeededRng};
use super::stats::Stats;
use limits::{Budget, RateLimiter};

/// How the HubSpot side is set up.
#[derive(Debug, Clone)]
pub struct HubspotSettings {
    pub limits: HubspotLimits,
    pub enforce_limits: bool,
    /// Lifetime of OAuth access tokens (HubSpot: 30 minutes).
    pub token_lifetime: SignedDuration,
    /// Make some inputs of batch writes fail with a transient error and a 207 (the `partial`
    /// fault; see `writes`).
    pub partial_failures: bool,
}

/// The credentials the emulated account accepts.
#[derive(Clone)]
pub struct HubspotCredentials {
    pub private_app_token: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for HubspotCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubspotCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Everything the HubSpot handlers share.
pub struct HubspotShared {
    pub credentials: HubspotCredentials,
    /// Which picklists the portal has.
    pub profile: super::data::OrgProfile,
    /// The portal's users, by id.
    owners: Vec<super::data::Owner>,
    pub settings: HubspotSettings,
    /// Records by object type name (`contacts`, `companies`, `deals`), ordered by id.
    objects: RwLock<HashMap<&'static str, Vec<EmulatedRecord>>>,
    /// Which companies each contact is associated with.
    associations: RwLock<associations::ContactCompanies>,
    /// OAuth access tokens handed out, with their expiry.
    access_tokens: Mutex<HashMap<String, Timestamp>>,
    limiter: Mutex<RateLimiter>,
    search_limiter: Mutex<RateLimiter>,
    stats: Arc<Stats>,
    sequence: AtomicU64,
    /// Public base URL, for `paging.next.link`.
    base_url: RwLock<String>,
}

impl std::fmt::Debug for HubspotShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubspotShared").finish_non_exhaustive()
    }
}

/// Object type names and the ids HubSpot also accepts for them.
pub const OBJECT_TYPES: [(&str, &str); 3] =
    [("contacts", "0-1"), ("companies", "0-2"), ("deals", "0-3")];

impl HubspotShared {
    /// Takes the HubSpot records out of `org` (the emulator owns them from now on).
    pub fn new(
        org: &mut GeneratedOrg,
        seed: u64,
        settings: HubspotSettings,
        stats: Arc<Stats>,
    ) -> Self {
        let mut rng = SeededRng::new(seed ^ 0x4855_4253_504f_5421);
        let credentials = HubspotCredentials {
            private_app_token: format!("pat-na1-{}", uuid_like(&mut rng)),
            client_id: uuid_like(&mut rng),
            client_secret: uuid_like(&mut rng),
            refresh_token: format!("na1-{}-{}", hex(&mut rng, 4), uuid_like(&mut rng)),
        };
        let mut objects = HashMap::new();
        objects.insert(
            "contacts",
            sorted_by_id(std::mem::take(&mut org.hubspot_contacts)),
        );
        objects.insert(
            "companies",
            sorted_by_id(std::mem::take(&mut org.hubspot_companies)),
        );
        objects.insert(
            "deals",
            sorted_by_id(std::mem::take(&mut org.hubspot_deals)),
        );
        let associations = associations::ContactCompanies::seed(&objects);
        Self {
            credentials,
            profile: org.profile,
            owners: std::mem::take(&mut org.hubspot_owners),
            limiter: Mutex::new(RateLimiter::new(settings.limits, settings.enforce_limits)),
            search_limiter: Mutex::new(RateLimiter::search(
                limits::SEARCH_PER_SECOND,
                settings.enforce_limits,
            )),
            settings,
            objects: RwLock::new(objects),
            associations: RwLock::new(associations),
            access_tokens: Mutex::new(HashMap::new()),
            stats,
            sequence: AtomicU64::new(0),
            base_url: RwLock::new(String::new()),
        }
    }

    pub fn set_base_url(&self, url: &str) {
        if let Ok(mut base) = self.base_url.write() {
            *base = url.to_string();
        }
    }

    fn base_url(&self) -> String {
        self.base_url
            .read()
            .map(|url| url.clone())
            .unwrap_or_default()
    }

    /// A number not handed out before, to derive unique ids from.
    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh correlation id (UUID-shaped, as HubSpot's).
    fn correlation_id(&self) -> String {
        let mut rng = SeededRng::new(self.next_sequence() ^ 0x636f_7272);
        uuid_like(&mut rng)
    }

    /// The records, for reading. A lock poisoned by a panicked handler still holds valid data.
    fn read_objects(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<&'static str, Vec<EmulatedRecord>>> {
        self.objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records, for writing.
    fn write_objects(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<&'static str, Vec<EmulatedRecord>>> {
        self.objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The contact-company associations, for reading.
    fn read_associations(&self) -> std::sync::RwLockReadGuard<'_, associations::ContactCompanies> {
        self.associations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The contact-company associations, for writing.
    fn write_associations(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, associations::ContactCompanies> {
        self.associations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the daily allowance whole again.
    fn start_new_day(&self) {
        match self.limiter.lock() {
            Ok(mut limiter) => limiter.new_day(),
            Err(poisoned) => poisoned.into_inner().new_day(),
        }
    }

    fn count_written(&self, object: &str, count: usize) {
        self.stats.written("hubspot", object, count);
    }

    fn record(&self, endpoint: &str, status: StatusCode) {
        self.stats.record("hubspot", endpoint, status.as_u16());
    }
}

fn sorted_by_id(mut records: Vec<EmulatedRecord>) -> Vec<EmulatedRecord> {
    records.sort_by_key(|record| record.id.parse::<u64>().unwrap_or(u64::MAX));
    records
}

fn hex(rng: &mut SeededRng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.below(256)))
        .collect()
}

/// A version-4-shaped UUID from the seeded source.
fn uuid_like(rng: &mut SeededRng) -> String {
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        hex(rng, 4),
        hex(rng, 2),
        &hex(rng, 2)[1..],
        8 + rng.below(4),
        &hex(rng, 2)[1..],
        hex(rng, 6)
    )
}

/// The routes of the HubSpot API.
pub fn router(shared: Arc<HubspotShared>) -> Router {
    objects::routes(Arc::clone(&shared))
        .merge(search::routes(Arc::clone(&shared)))
        .merge(schema::routes(Arc::clone(&shared)))
        .merge(writes::routes(Arc::clone(&shared)))
        .merge(single::routes(Arc::clone(&shared)))
        .merge(associations::routes(Arc::clone(&shared)))
        .merge(owners::routes(Arc::clone(&shared)))
        .merge(admin::routes(Arc::clone(&shared)))
        .merge(oauth::routes(shared))
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    PrivateApp,
    OAuth,
}

/// A HubSpot error answer: status, body and headers, ready to send.
fn error_response(
    shared: &HubspotShared,
    status: StatusCode,
    category: &str,
    message: &str,
    extra: Option<(&str, Value)>,
) -> Response {
    let mut body = json!({
        "status": "error",
        "message": message,
        "correlationId": shared.correlation_id(),
        "category": category,
    });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    json_response(shared, status, &body, None)
}

fn json_response(
    shared: &HubspotShared,
    status: StatusCode,
    body: &impl serde::Serialize,
    budget: Option<(Budget, Caller)>,
) -> Response {
    let text = match serde_json::to_string(body) {
        Ok(text) => text,
        Err(error) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the emulator could not encode its answer: {error}"),
            )
                .into_response();
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&shared.correlation_id()) {
        headers.insert("x-hubspot-correlation-id", value);
    }
    // A portal whose limits are off has none to report: rate-limit headers would tell a
    // well-behaved client to pace itself for a budget that does not exist.
    if let Some((budget, caller)) = budget.filter(|_| shared.settings.enforce_limits) {
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        put(
            "x-hubspot-ratelimit-interval-milliseconds",
            "10000".to_string(),
        );
        put("x-hubspot-ratelimit-max", budget.max.to_string());
        put(
            "x-hubspot-ratelimit-remaining",
            budget.remaining.to_string(),
        );
        // The daily headers are not sent to OAuth apps.
        if caller == Caller::PrivateApp {
            put("x-hubspot-ratelimit-daily", budget.daily.to_string());
            put(
                "x-hubspot-ratelimit-daily-remaining",
                budget.daily_remaining.to_string(),
            );
        }
    }
    (status, headers, text).into_response()
}

/// A request's JSON body; `Err` is HubSpot's 400 for input that is not JSON.
fn parse_body(shared: &HubspotShared, body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|error| {
        Box::new(error_response(
            shared,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "Invalid input JSON on line {}, column {}: {error}",
                error.line(),
                error.column()
            ),
            None,
        ))
    })
}

/// Who is calling, from the bearer token. `Err` is the 401 to send instead.
fn authenticate(shared: &HubspotShared, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match token {
        Some(token) if token == shared.credentials.private_app_token => Ok(Caller::PrivateApp),
        Some(token) => {
            let expiry = shared
                .access_tokens
                .lock()
                .ok()
                .and_then(|tokens| tokens.get(token).copied());
            match expiry {
                Some(expires) if expires > Timestamp::now() => Ok(Caller::OAuth),
                Some(expires) => Err(Box::new(expired(shared, expires))),
                None => Err(Box::new(unauthenticated(shared))),
            }
        }
        None => Err(Box::new(unauthenticated(shared))),
    }
}

/// Counts a request against `limiter`; the 429 to send when it is refused.
fn spend(shared: &HubspotShared, limiter: &Mutex<RateLimiter>) -> Result<Budget, Box<Response>> {
    let verdict = match limiter.lock() {
        Ok(mut limiter) => limiter.admit(Instant::now()),
        Err(poisoned) => poisoned.into_inner().admit(Instant::now()),
    };
    verdict.map_err(|policy| {
        let body = json!({
            "status": "error",
            "message": policy.message(),
            "errorType": "RATE_LIMIT",
            "correlationId": shared.correlation_id(),
            "policyName": policy.name(),
            "requestId": shared.correlation_id(),
        });
        Box::new(json_response(
            shared,
            StatusCode::TOO_MANY_REQUESTS,
            &body,
            None,
        ))
    })
}

/// Checks the bearer token and the general rate budget. `Err` is the answer to send instead.
fn admit(shared: &HubspotShared, headers: &HeaderMap) -> Result<(Budget, Caller), Box<Response>> {
    let caller = authenticate(shared, headers)?;
    let budget = spend(shared, &shared.limiter)?;
    Ok((budget, caller))
}

/// Checks the bearer token and the search endpoints' own per-second budget.
fn admit_search(shared: &HubspotShared, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let caller = authenticate(shared, headers)?;
    spend(shared, &shared.search_limiter)?;
    Ok(caller)
}

fn with_auth_failure_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-hubspot-auth-failure",
        HeaderValue::from_static("401 Unauthorized"),
    );
    response
}

fn unauthenticated(shared: &HubspotShared) -> Response {
    with_auth_failure_header(error_response(
        shared,
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        None,
    ))
}

fn expired(shared: &HubspotShared, expires: Timestamp) -> Response {
    let ago = Timestamp::now().duration_since(expires).as_secs().max(0);
    let (amount, unit) = if ago < 120 {
        (ago, "second")
    } else if ago < 7_200 {
        (ago / 60, "minute")
    } else if ago < 172_800 {
        (ago / 3_600, "hour")
    } else {
        (ago / 86_400, "day")
    };
    with_auth_failure_header(error_response(
        shared,
        StatusCode::UNAUTHORIZED,
        "EXPIRED_AUTHENTICATION",
        &format!("The OAuth token used to make this call expired {amount} {unit}(s) ago."),
        Some((
            "context",
            json!({ "expire time": [expires.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()] }),
        )),
    ))
}
