//! Every Salesforce request goes through [`SalesforceClient::send`]: it waits for a slot among
//! the bounded concurrent requests and for the configured request rate, adds the session's
//! bearer token and sends to the session's instance, reads `Sforce-Limit-Info` on every
//! answer, and decides what an answer means — a 401 `INVALID_SESSION_ID` signs in again once,
//! server errors, dropped connections and answers cut short back off with jitter (a few
//! attempts), refusals for load (the concurrent long-running request limit, 429) are waited out
//! with more patience and count as no failed attempt, a spent daily allocation (`REQUEST_LIMIT_EXCEEDED`) or reaching the
//! configured reserve stops the run cleanly, and any other refusal comes back with
//! Salesforce's error code, message and fields.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::auth::{AuthError, Session, SessionSource};
use crate::http::limiter::{BudgetError, Pacer, WindowBudget};
use crate::http::redact::describe_error;
use crate::http::retry::RetryPolicy;

/// The API version used when none is configured (Winter '25).
pub const DEFAULT_API_VERSION: &str = "62.0";

/// How hard crmsync may use an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesforceSettings {
    /// `vNN.0` without the `v`.
    pub api_version: String,
    /// Requests a second at most.
    pub requests_per_second: u32,
    /// Requests in flight at once at most (Salesforce allows 25 long-running requests per
    /// production org, 5 in developer orgs, shared with every other integration).
    pub max_concurrent: usize,
    /// Share of the org's daily allocation left for its other integrations.
    pub reserve_percent: u8,
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        Self {
            api_version: DEFAULT_API_VERSION.to_string(),
            requests_per_second: 25,
            max_concurrent: 4,
            reserve_percent: 10,
        }
    }
}

/// A Salesforce request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(
        "Salesforce refused the session for {endpoint} even after signing in again ({message}) — check the connected app's OAuth scopes (api, refresh_token) and the user's API permission"
    )]
    InvalidSession { endpoint: String, message: String },
    #[error(
        "the org's daily API allocation is spent ({endpoint}: {message}) — the run stops here and resumes from its checkpoint once the rolling 24-hour window frees requests"
    )]
    DailyLimit { endpoint: String, message: String },
    #[error(
        "only {remaining} of the org's {max} daily API requests are left, the {reserve_percent}% reserve kept for its other integrations — the run stops here and resumes from its checkpoint later"
    )]
    Reserve {
        remaining: u64,
        max: u64,
        reserve_percent: u8,
    },
    #[error(
        "Salesforce answered {} to {}: {}: {}{}",
        .0.status, .0.endpoint, .0.error_code, .0.message, fields_note(&.0.fields)
    )]
    Rejected(Box<Refusal>),
    #[error(
        "Salesforce did not answer {endpoint} usefully after {attempts} attempts (last: {last}) — it may be down; the run can be retried later"
    )]
    Unavailable {
        endpoint: String,
        attempts: u32,
        last: String,
    },
}

fn fields_note(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", fields.join(", "))
    }
}

/// A refusal: the status and Salesforce's first error.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub endpoint: String,
    pub status: u16,
    pub error_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

/// What a request sends.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    Json(&'a Value),
}

/// A successful answer: status, headers and the body as sent (JSON or CSV).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (null when empty).
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
    }
}

/// The org's daily usage as `Sforce-Limit-Info` last reported it.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    used: u64,
    max: u64,
}

/// What the client knows of the org's daily allocation: the last reported usage, and the
/// requests sent since that have no answer yet — they count against what is left, so requests
/// sent at once cannot pass the reserve together.
#[derive(Debug, Default)]
struct Allocation {
    reported: Option<Usage>,
    unanswered: u64,
}

/// A request counted as unanswered until this is dropped.
struct Unanswered<'a> {
    allocation: &'a Mutex<Allocation>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let mut allocation = self
            .allocation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        allocation.unanswered = allocation.unanswered.saturating_sub(1);
    }
}

/// The Salesforce API as crmsync calls it.
#[derive(Debug)]
pub struct SalesforceClient {
    http: reqwest::Client,
    sessions: SessionSource,
    settings: SalesforceSettings,
    pacer: Pacer,
    in_flight: Semaphore,
    retry: RetryPolicy,
    allocation: Mutex<Allocation>,
    /// The org's clock as the last answer's `Date` header gave it.
    server_clock: Mutex<Option<jiff::Timestamp>>,
    calls: AtomicU64,
    /// Answers with status 429 (the org throttling this client).
    rate_limited: AtomicU64,
    /// Bulk API query jobs this client created and has not deleted yet, job id → object
    /// (see [`super::bulk::close_open_jobs`]).
    open_query_jobs: Mutex<std::collections::BTreeMap<String, String>>,
}

/// What one answer means.
enum Verdict {
    Done(Answer),
    /// A 401 `INVALID_SESSION_ID` that signing in again may cure.
    InvalidSession(String),
    /// The org refuses for now: too many long-running requests at once (403
    /// `REQUEST_LIMIT_EXCEEDED`), or 429. Waited out with patience (see
    /// `MAX_THROTTLED_WAITS`), not counted as a failed attempt.
    Throttled(String),
    Retry(String),
    Fail(SalesforceError),
}

/// Refusals for load in a row one request waits out (backing off up to the retry policy's
/// longest wait) before giving up: the org's concurrency limit clears as other requests end.
const MAX_THROTTLED_WAITS: u32 = 30;
/// The longest of those waits.
const MAX_THROTTLED_WAIT: Duration = Duration::from_secs(5);

impl SalesforceClient {
    pub fn new(
        http: reqwest::Client,
        sessions: SessionSource,
        settings: SalesforceSettings,
        retry: RetryPolicy,
    ) -> Result<Self, SalesforceError> {
        Ok(Self {
            http,
            sessions,
            pacer: Pacer::new(WindowBudget {
                max: settings.requests_per_second,
                window: Duration::from_secs(1),
            })?,
            in_flight: Semaphore::new(settings.max_concurrent.max(1)),
            settings,
            retry,
            allocation: Mutex::new(Allocation::default()),
            server_clock: Mutex::new(None),
            calls: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            open_query_jobs: Mutex::new(Default::default()),
        })
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Notes a query job on `object` as created.
    pub(super) fn note_query_job(&self, job: &str, object: &str) {
        self.open_query_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.to_string(), object.to_string());
    }

    /// Notes a query job as deleted.
    pub(super) fn forget_query_job(&self, job: &str) {
        self.open_query_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job);
    }

    /// The query jobs on `object` created and not deleted yet.
    pub(super) fn open_query_jobs(&self, object: &str) -> Vec<String> {
        self.open_query_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, on)| on.as_str() == object)
            .map(|(job, _)| job.clone())
            .collect()
    }

    /// Answers so far with status 429.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// API requests left in the org's daily allocation, as the last answer's
    /// `Sforce-Limit-Info` reported it (less the requests out since), if one did.
    pub fn daily_remaining(&self) -> Option<u64> {
        let allocation = self
            .allocation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        allocation
            .reported
            .map(|usage| usage.max.saturating_sub(usage.used + allocation.unanswered))
    }

    /// The org's daily usage and allocation as last reported, if any answer said.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        self.allocation
            .lock()
            .ok()
            .and_then(|allocation| allocation.reported.map(|usage| (usage.used, usage.max)))
    }

    /// The time at the org when the last answer left it (its `Date` header), if any came.
    pub fn server_clock(&self) -> Option<jiff::Timestamp> {
        self.server_clock.lock().ok().and_then(|clock| *clock)
    }

    /// `/services/data/vNN.0/{rest}`.
    pub fn data_path(&self, rest: &str) -> String {
        format!(
            "/services/data/v{}/{}",
            self.settings.api_version,
            rest.trim_start_matches('/')
        )
    }

    /// Sends one request to `path` on the session's instance (`/services/data/…`), retrying
    /// what is worth retrying. `accept` is the media type wanted (`application/json`,
    /// `text/csv`); `object` names the request in logs.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
        accept: &str,
        extra_headers: &[(&str, String)],
        object: &str,
    ) -> Result<Answer, SalesforceError> {
        let endpoint = format!("{method} {}", path_template(path));
        let mut attempt = 0u32;
        let mut throttled_waits = 0u32;
        let mut signed_in_again = false;
        loop {
            attempt += 1;
            let unanswered = self.check_reserve()?;
            let session = self.sessions.session().await?;
            self.pacer.ready().await;
            let span = tracing::info_span!(
                "salesforce_request",
                object,
                endpoint = %endpoint,
                attempt,
                status = tracing::field::Empty,
            );
            let outcome = {
                let _slot = self.in_flight.acquire().await.ok();
                self.attempt(&method, path, query, body, accept, extra_headers, &session)
                    .instrument(span.clone())
                    .await
            };
            self.calls.fetch_add(1, Ordering::Relaxed);
            let failure = match outcome {
                Ok((status, headers, bytes)) => {
                    span.record("status", status.as_u16());
                    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        self.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    self.observe_usage(&headers);
                    drop(unanswered);
                    self.observe_clock(&headers);
                    match classify(status, headers, bytes, accept, &endpoint) {
                        Verdict::Done(answer) => return Ok(answer),
                        Verdict::InvalidSession(message) => {
                            if signed_in_again {
                                return Err(SalesforceError::InvalidSession { endpoint, message });
                            }
                            signed_in_again = true;
                            self.sessions
                                .after_invalid_session(session.generation)
                                .await?;
                            attempt -= 1;
                            continue;
                        }
                        Verdict::Throttled(reason) if throttled_waits < MAX_THROTTLED_WAITS => {
                            throttled_waits += 1;
                            attempt -= 1;
                            tracing::warn!(endpoint = %endpoint, waits = throttled_waits, reason = %reason, "Salesforce is refusing for load; waiting");
                            // Short waits: the limit clears as other requests end, and a stop
                            // request must not wait behind minutes of backoff.
                            let wait = self
                                .retry
                                .jittered_delay(throttled_waits.min(8))
                                .min(MAX_THROTTLED_WAIT);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Verdict::Throttled(reason) | Verdict::Retry(reason) => reason,
                        Verdict::Fail(error) => return Err(error),
                    }
                }
                Err(reason) => reason,
            };
            if !self.retry.may_retry(attempt) {
                return Err(SalesforceError::Unavailable {
                    endpoint,
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(endpoint = %endpoint, attempt, reason = %failure, "Salesforce request failed; retrying");
            tokio::time::sleep(self.retry.jittered_delay(attempt)).await;
        }
    }

    /// One attempt: the status, headers and body, or why none came.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
        accept: &str,
        extra_headers: &[(&str, String)],
        session: &Session,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), String> {
        let url = format!("{}{path}", session.instance_url);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(http::header::AUTHORIZATION, session.header_value())
            .header(http::header::ACCEPT, accept);
        for (name, value) in extra_headers {
            request = request.header(*name, value);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Body::Json(body) = body {
            request = request.json(body);
        }
        tracing::debug!(url = %crate::http::redact::redact_url(&url), "sending");
        let response = request.send().await.map_err(describe_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(describe_error)?;
        Ok((status, headers, bytes.to_vec()))
    }

    /// Takes `Sforce-Limit-Info: api-usage=used/max` (other parts, such as per-app usage,
    /// are passed over).
    fn observe_usage(&self, headers: &HeaderMap) {
        let Some(usage) = headers
            .get("sforce-limit-info")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_api_usage)
        else {
            return;
        };
        if let Ok(mut allocation) = self.allocation.lock() {
            // An older answer arriving late may report less used than a newer one did; the
            // higher figure stands unless the fall is more than the requests out could
            // explain (the 24-hour window moved on).
            let stale = allocation.reported.is_some_and(|known| {
                known.max == usage.max
                    && usage.used < known.used
                    && known.used - usage.used <= allocation.unanswered
            });
            if !stale {
                allocation.reported = Some(usage);
            }
        }
    }

    /// Takes the `Date` header.
    fn observe_clock(&self, headers: &HeaderMap) {
        let Some(at) = crate::http::client::answer_date(headers) else {
            return;
        };
        if let Ok(mut clock) = self.server_clock.lock() {
            *clock = Some(at);
        }
    }

    /// Stops before a request once the org's remaining allocation — less the requests sent
    /// and not yet answered — is down to the reserve; otherwise counts this request as
    /// unanswered until the returned guard is dropped.
    fn check_reserve(&self) -> Result<Unanswered<'_>, SalesforceError> {
        let mut allocation = self
            .allocation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Usage { used, max }) = allocation.reported {
            let remaining = max.saturating_sub(used);
            let reserve = max * u64::from(self.settings.reserve_percent) / 100;
            let remaining = remaining.saturating_sub(allocation.unanswered);
            if remaining <= reserve {
                return Err(SalesforceError::Reserve {
                    remaining,
                    max,
                    reserve_percent: self.settings.reserve_percent,
                });
            }
        }
        allocation.unanswered += 1;
        Ok(Unanswered {
            allocation: &self.allocation,
        })
    }
}

/// `api-usage=18/5000` (possibly followed by `; per-app-api-usage=…`).
fn parse_api_usage(header: &str) -> Option<Usage> {
    header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        if name != "api-usage" {
            return None;
        }
        let (used, max) = value.split_once('/')?;
        Some(Usage {
            used: used.trim().parse().ok()?,
            max: max.trim().parse().ok()?,
        })
    })
}

/// What an answer means.
fn classify(
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    accept: &str,
    endpoint: &str,
) -> Verdict {
    if status.is_success() {
        let answer = Answer {
            status,
            headers,
            body,
        };
        // A JSON body cut short on the way: ask again. Checked without building it (the
        // caller parses it into what it needs).
        if accept.contains("json")
            && !answer.body.iter().all(u8::is_ascii_whitespace)
            && let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&answer.body)
        {
            return Verdict::Retry(format!("the answer was not complete JSON ({error})"));
        }
        return Verdict::Done(answer);
    }
    // Errors come as `[{"message", "errorCode", "fields"}]`.
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let first = parsed.get(0).unwrap_or(&parsed);
    let text = |key: &str| first[key].as_str().unwrap_or_default().to_string();
    let (error_code, message) = (text("errorCode"), text("message"));
    match (status.as_u16(), error_code.as_str()) {
        (401, _) if message.contains("not valid for use with the REST API") => {
            Verdict::Fail(SalesforceError::InvalidSession {
                endpoint: endpoint.to_string(),
                message,
            })
        }
        (401, _) => Verdict::InvalidSession(message),
        (403, "REQUEST_LIMIT_EXCEEDED") if message.contains("TotalRequests") => {
            Verdict::Fail(SalesforceError::DailyLimit {
                endpoint: endpoint.to_string(),
                message,
            })
        }
        // Too many long-running requests at once, in this org: wait and try again.
        (403, "REQUEST_LIMIT_EXCEEDED") => Verdict::Throttled(format!("{error_code}: {message}")),
        (420 | 429, _) => Verdict::Throttled(format!("HTTP {status} {error_code}")),
        (406, _) | (500..=599, _) => Verdict::Retry(format!("HTTP {status} {error_code}")),
        _ => Verdict::Fail(SalesforceError::Rejected(Box::new(Refusal {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            error_code,
            message,
            fields: first["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        }))),
    }
}

/// The path with record ids, versions and locators replaced, so logs group requests by
/// endpoint: `/services/data/v62.0/sobjects/Lead/00Q…` → `/services/data/{version}/sobjects/Lead/{id}`.
fn path_template(path: &str) -> String {
    path.split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .map(|segment| {
            let id_like = (segment.len() == 15 || segment.len() == 18)
                && segment.bytes().all(|byte| byte.is_ascii_alphanumeric())
                && segment.bytes().any(|byte| byte.is_ascii_digit());
            let locator = segment.contains('-') && segment.starts_with("01g");
            if segment.starts_with('v') && segment[1..].parse::<f32>().is_ok() {
                "{version}"
            } else if id_like || locator {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_limit_header() {
        let usage = parse_api_usage("api-usage=18/5000").expect("usage");
        assert_eq!((usage.used, usage.max), (18, 5000));
        let usage = parse_api_usage("api-usage=25/5000; per-app-api-usage=17/250(appName=sample)")
            .expect("usage");
        assert_eq!((usage.used, usage.max), (25, 5000));
        assert!(parse_api_usage("per-app-api-usage=17/250").is_none());
        assert!(parse_api_usage("api-usage=lots").is_none());
    }

    #[test]
    fn a_json_answer_cut_short_is_asked_again_and_other_answers_pass() {
        let verdict = |body: &[u8], accept: &str| {
            classify(
                StatusCode::OK,
                HeaderMap::new(),
                body.to_vec(),
                accept,
                "/services/data/{version}/query",
            )
        };
        let json = "application/json";
        match verdict(br#"{"records":[{"Id":""#, json) {
            Verdict::Retry(reason) => assert!(reason.contains("not complete JSON"), "{reason}"),
            _ => panic!("a cut-short JSON answer is asked again"),
        }
        for body in [&br#"{"records":[],"done":true}"#[..], b"", b" \n"] {
            assert!(matches!(verdict(body, json), Verdict::Done(_)), "{body:?}");
        }
        // CSV (Bulk API results) is not JSON and passes as it is.
        assert!(matches!(
            verdict(b"\"Id\"\n\"00Q1\"", "text/csv"),
            Verdict::Done(_)
        ));
    }

    #[test]
    fn paths_group_by_endpoint() {
        assert_eq!(
            path_template("/services/data/v62.0/sobjects/Lead/00Q5e00000AbCdEFGH"),
            "/services/data/{version}/sobjects/Lead/{id}"
        );
        assert_eq!(
            path_template("/services/data/v62.0/query/01gRO0000016PIAYA2-2000"),
            "/services/data/{version}/query/{id}"
        );
        assert_eq!(
            path_template("/services/data/v62.0/composite/sobjects"),
            "/services/data/{version}/composite/sobjects"
        );
    }
}
