//! Every HubSpot request goes through [`HubspotClient::send`]: it waits for the rate budget
//! (the general one, or search's own), adds the bearer token, reads the rate-limit headers,
//! and decides what an answer means — a 429 waits as HubSpot says and tries again, a 401
//! refreshes the token once, server errors and dropped connections back off with jitter, a
//! spent daily allowance (or the reserve left for the portal's other apps) stops the run
//! cleanly, and any other refusal comes back with HubSpot's own category and message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use super::auth::{AuthError, TokenSource};
use crate::http::limiter::{BudgetError, Pacer, WindowBudget};
use crate::http::redact::describe_error;
use crate::http::retry::{RetryPolicy, random_unit, retry_after};

/// Which of HubSpot's budgets a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The rolling ten-second budget of every CRM endpoint but search.
    General,
    /// The search endpoints' own per-second budget (their answers carry no rate headers).
    Search,
}

/// The account's limits, as configured (HubSpot's answers correct them as they come).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub requests_per_10s: u32,
    pub search_per_second: u32,
    /// The account's daily allowance: what the reserve is counted against until HubSpot's
    /// headers say otherwise (search answers carry none).
    pub daily_limit: u64,
    /// Share of the daily allowance left for the portal's other integrations.
    pub daily_reserve_percent: u8,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            requests_per_10s: 100,
            search_per_second: 5,
            daily_limit: 250_000,
            daily_reserve_percent: 10,
        }
    }
}

/// A HubSpot request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HubspotError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(
        "HubSpot rejected the credentials for {endpoint} even after a fresh token ({message}) — check the token and the app's scopes"
    )]
    Unauthorized { endpoint: String, message: String },
    #[error(
        "HubSpot's daily API allowance is spent ({endpoint}: {message}) — the run stops here and resumes from its checkpoint on the next run"
    )]
    DailyLimit { endpoint: String, message: String },
    #[error(
        "only {remaining} of the portal's {daily} daily API calls are left ({basis}), the {reserve_percent}% reserve kept for its other apps — the run stops here and resumes from its checkpoint later"
    )]
    DailyReserve {
        remaining: u64,
        daily: u64,
        reserve_percent: u8,
        /// Where the figures come from.
        basis: &'static str,
    },
    #[error(
        "HubSpot answered {} to {}: {}: {} (correlation id {})",
        .0.status, .0.endpoint, .0.category, .0.message, .0.correlation_id
    )]
    Rejected(Box<Rejection>),
    #[error(
        "HubSpot could not be reached for {endpoint} after {attempts} attempts: {last} — check the network or HubSpot's status page, then run again"
    )]
    Unavailable {
        endpoint: String,
        attempts: u32,
        last: String,
    },
}

/// What HubSpot said when it refused a request (other than for rate or credentials).
#[derive(Debug)]
pub struct Rejection {
    pub endpoint: String,
    pub status: u16,
    pub category: String,
    pub message: String,
    pub correlation_id: String,
    pub body: Value,
}

/// A successful answer: status (200, 201, 204 or 207), body (null when empty) and headers.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

/// What the daily headers last said, and when; and the requests sent since, which those
/// figures do not count yet (requests answered since, and those still unanswered).
#[derive(Debug, Default, Clone, Copy)]
struct DailyState {
    daily: Option<u64>,
    remaining: Option<u64>,
    observed: Option<tokio::time::Instant>,
    sent_since: u64,
    /// Requests sent and not yet answered: an answer's figures may not count them yet.
    unanswered: u64,
    /// HubSpot sends this app rate headers but no daily figures (OAuth apps get none).
    without_figures: bool,
    /// When a request was last sent just to learn the daily figures.
    probed: Option<tokio::time::Instant>,
}

/// A request claimed against the day (see `check_daily_reserve`) and not yet answered; it
/// stops being counted as out when this is dropped.
struct Unanswered<'a> {
    daily: &'a std::sync::Mutex<DailyState>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let mut state = self
            .daily
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.unanswered = state.unanswered.saturating_sub(1);
    }
}

/// Whether a request may go now.
enum DailyCheck {
    Go,
    /// Learn the daily figures first (search answers carry none).
    ProbeFirst,
}

/// Daily figures older than this no longer hold requests back: the allowance may have been
/// renewed at midnight (in the portal's time zone, which the API does not say), and the next
/// answer brings fresh figures.
const DAILY_FIGURES_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The HubSpot API as crmsync calls it. One client serves one run: its count of requests
/// against the daily allowance starts with it.
#[derive(Debug)]
pub struct HubspotClient {
    http: reqwest::Client,
    base_url: String,
    tokens: TokenSource,
    general: Pacer,
    search: Pacer,
    settings: RateSettings,
    retry: RetryPolicy,
    daily: Mutex<DailyState>,
    /// HubSpot's clock as the last answer's `Date` header gave it.
    server_clock: Mutex<Option<jiff::Timestamp>>,
    calls: AtomicU64,
    /// Answers with status 429 (the portal's limits throttling this client).
    rate_limited: AtomicU64,
}

/// 429s in a row one request waits out before giving up.
const MAX_RATE_LIMITED_WAITS: u32 = 30;

/// What one answer means.
enum Verdict {
    /// Usable.
    Done(Answer),
    /// A 401: the token was refused.
    Unauthorized,
    /// Worth another attempt.
    Retry(Transient),
    /// Final.
    Fail(HubspotError),
}

/// The kinds of trouble worth another attempt.
enum Transient {
    /// Wait this long (the server said so), then try again.
    RateLimited(Duration),
    /// Back off, then try again.
    Failed(String),
}

impl HubspotClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        tokens: TokenSource,
        settings: RateSettings,
        retry: RetryPolicy,
    ) -> Result<Self, HubspotError> {
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            tokens,
            general: Pacer::new(WindowBudget {
                max: settings.requests_per_10s,
                window: Duration::from_secs(10),
            })?,
            search: Pacer::new(WindowBudget {
                max: settings.search_per_second,
                window: Duration::from_secs(1),
            })?,
            settings,
            retry,
            daily: Mutex::new(DailyState::default()),
            server_clock: Mutex::new(None),
            calls: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Answers so far with status 429.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Requests left in the portal's daily allowance, as the last answer's daily headers
    /// reported it (less the requests sent since), if one did.
    pub fn daily_remaining(&self) -> Option<u64> {
        let state = self
            .daily
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .remaining
            .map(|remaining| remaining.saturating_sub(state.sent_since))
    }

    /// The time at HubSpot when the last answer left it (its `Date` header), if any came.
    pub fn server_clock(&self) -> Option<jiff::Timestamp> {
        self.server_clock.lock().ok().and_then(|clock| *clock)
    }

    fn pacer(&self, budget: Budget) -> &Pacer {
        match budget {
            Budget::General => &self.general,
            Budget::Search => &self.search,
        }
    }

    /// Sends one request (`path` after the base URL, e.g. `/crm/v3/objects/contacts`), retrying
    /// what is worth retrying. `object` and `endpoint` name it in logs and errors.
    pub async fn send(
        &self,
        budget: Budget,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        object: &str,
    ) -> Result<Answer, HubspotError> {
        let endpoint = format!("{method} {}", path_template(path));
        let mut attempt = 0u32;
        let mut rate_limited_waits = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            if let DailyCheck::ProbeFirst = self.check_daily_reserve(budget, false)? {
                Box::pin(self.probe_daily_figures(object)).await?;
                self.check_daily_reserve(budget, false)?;
            }
            // Fetched for every attempt: waits and backoff can outlast a token.
            let bearer = self.tokens.bearer().await?;
            self.pacer(budget).ready().await;
            let span = tracing::info_span!(
                "hubspot_request",
                object,
                endpoint = %endpoint,
                attempt,
                correlation_id = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            // Checked again and counted as sent before the answer (its daily headers already
            // include it): other requests may have gone while this one waited its turn.
            self.check_daily_reserve(budget, true)?;
            let unanswered = Unanswered { daily: &self.daily };
            let outcome = self
                .attempt(&method, path, query, body, &bearer, budget)
                .instrument(span.clone())
                .await;
            drop(unanswered);
            self.calls.fetch_add(1, Ordering::Relaxed);
            let transient = match outcome {
                Ok((status, headers, body)) => {
                    span.record("status", status.as_u16());
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(id) = header_text(&headers, "x-hubspot-correlation-id") {
                        span.record("correlation_id", id);
                    }
                    match self.classify(status, &headers, body, &endpoint) {
                        Verdict::Done(answer) => return Ok(answer),
                        Verdict::Unauthorized if !refreshed => {
                            // A 401: one fresh token, then the verdict stands.
                            refreshed = true;
                            match self.tokens.after_unauthorized(bearer.generation).await? {
                                // The next attempt takes the fresh token.
                                Some(_) => {
                                    attempt -= 1;
                                    continue;
                                }
                                None => {
                                    return Err(HubspotError::Unauthorized {
                                        endpoint,
                                        message: "the private app token was refused".into(),
                                    });
                                }
                            }
                        }
                        Verdict::Unauthorized => {
                            return Err(HubspotError::Unauthorized {
                                endpoint,
                                message: "a freshly refreshed token was refused too".into(),
                            });
                        }
                        Verdict::Retry(transient) => transient,
                        Verdict::Fail(error) => return Err(error),
                    }
                }
                Err(failure) => Transient::Failed(failure),
            };
            match transient {
                Transient::RateLimited(wait) => {
                    rate_limited_waits += 1;
                    attempt -= 1;
                    if rate_limited_waits > MAX_RATE_LIMITED_WAITS {
                        return Err(HubspotError::Unavailable {
                            endpoint,
                            attempts: rate_limited_waits,
                            last: "rate limited every time".into(),
                        });
                    }
                    // Everyone sharing the budget waits, plus a little jitter for this one.
                    self.pacer(budget).pause_for(wait);
                    tokio::time::sleep(wait + self.retry.delay(1, random_unit()) / 4).await;
                }
                Transient::Failed(last) => {
                    if !self.retry.may_retry(attempt) {
                        return Err(HubspotError::Unavailable {
                            endpoint,
                            attempts: attempt,
                            last,
                        });
                    }
                    tracing::warn!(endpoint = %endpoint, attempt, reason = %last, "HubSpot request failed; retrying");
                    tokio::time::sleep(self.retry.jittered_delay(attempt)).await;
                }
            }
        }
    }

    /// One attempt: the status, headers and body, or why none came.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        bearer: &super::auth::Bearer,
        budget: Budget,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .header(http::header::AUTHORIZATION, bearer.header_value())
            .header(http::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        tracing::debug!(
            url = %crate::http::redact::redact_url(&format!("{}{path}", self.base_url)),
            "sending"
        );
        let response = request.send().await.map_err(describe_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        if budget == Budget::General {
            self.observe_headers(&headers);
        }
        if let (Some(at), Ok(mut clock)) = (
            crate::http::client::answer_date(&headers),
            self.server_clock.lock(),
        ) {
            *clock = Some(at);
        }
        let body = response.bytes().await.map_err(describe_error)?;
        Ok((status, headers, body.to_vec()))
    }

    /// What an answer means.
    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Vec<u8>,
        endpoint: &str,
    ) -> Verdict {
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&body)
        };
        if status.is_success() {
            return match parsed {
                Ok(body) => Verdict::Done(Answer {
                    status,
                    body,
                    headers: headers.clone(),
                }),
                // A body cut short on the way: ask again.
                Err(error) => Verdict::Retry(Transient::Failed(format!(
                    "the answer was not complete JSON ({error})"
                ))),
            };
        }
        let body = parsed.unwrap_or(Value::Null);
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match status.as_u16() {
            401 => Verdict::Unauthorized,
            429 if text("policyName") == "DAILY" => Verdict::Fail(HubspotError::DailyLimit {
                endpoint: endpoint.to_string(),
                message: text("message"),
            }),
            429 => {
                let interval = header_text(headers, "x-hubspot-ratelimit-interval-milliseconds")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .map(Duration::from_millis);
                let wait = retry_after(headers)
                    .or(interval)
                    .unwrap_or(Duration::from_secs(1));
                Verdict::Retry(Transient::RateLimited(wait))
            }
            // Locked: HubSpot asks for a retry after about two seconds.
            423 => Verdict::Retry(Transient::RateLimited(
                retry_after(headers).unwrap_or(Duration::from_secs(2)),
            )),
            500..=599 => Verdict::Retry(Transient::Failed(format!("HTTP {status}"))),
            _ => Verdict::Fail(HubspotError::Rejected(Box::new(Rejection {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                category: text("category"),
                message: text("message"),
                correlation_id: text("correlationId"),
                body,
            }))),
        }
    }

    /// Follows the rate-limit headers: a different maximum rebuilds the budget; a spent window
    /// pauses everyone briefly; the daily figures feed the reserve check.
    fn observe_headers(&self, headers: &HeaderMap) {
        let number =
            |name: &str| header_text(headers, name).and_then(|text| text.parse::<u64>().ok());
        if let Some(max) = number("x-hubspot-ratelimit-max").and_then(|max| u32::try_from(max).ok())
            && self.general.observe_max(max)
        {
            tracing::info!(
                max,
                "HubSpot reports a different ten-second limit; pacing to it"
            );
        }
        // A full window (other apps share it, or requests bunched up on the way): hold back
        // for one request's share of the window, the time the oldest needs to age out.
        if number("x-hubspot-ratelimit-remaining") == Some(0) {
            let interval = number("x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
            let max = number("x-hubspot-ratelimit-max").unwrap_or(100).max(1);
            self.general
                .pause_for(Duration::from_millis((interval / max).clamp(100, 10_000)));
        }
        let Ok(mut state) = self.daily.lock() else {
            return;
        };
        match (
            number("x-hubspot-ratelimit-daily"),
            number("x-hubspot-ratelimit-daily-remaining"),
        ) {
            (Some(daily), Some(remaining)) => {
                // This answer's figures count its own request, maybe not the others still
                // out: those stay counted. An older answer arriving late may say more is left
                // than a newer one did; the lower figure stands unless the rise is more than
                // the requests counted since could explain (a new day).
                let others_out = state.unanswered.saturating_sub(1);
                let left_now = remaining.saturating_sub(others_out);
                let left_known = state
                    .remaining
                    .filter(|_| state.daily == Some(daily))
                    .map(|known| known.saturating_sub(state.sent_since));
                let stale = left_known.is_some_and(|known| {
                    left_now > known && left_now - known <= state.unanswered + state.sent_since
                });
                if !stale {
                    state.remaining = Some(remaining);
                    state.sent_since = others_out;
                }
                state.daily = Some(daily);
                state.observed = Some(tokio::time::Instant::now());
                state.without_figures = false;
            }
            // Rate headers without daily ones: an OAuth app, which never gets them.
            _ if number("x-hubspot-ratelimit-max").is_some() => state.without_figures = true,
            _ => {}
        }
    }

    /// One small listing of `object`, sent for the daily figures its answer carries.
    async fn probe_daily_figures(&self, object: &str) -> Result<(), HubspotError> {
        if let Ok(mut state) = self.daily.lock() {
            state.probed = Some(tokio::time::Instant::now());
        }
        let query = [
            ("limit", "1".to_string()),
            ("properties", "hs_object_id".to_string()),
        ];
        self.send(
            Budget::General,
            Method::GET,
            &format!("/crm/v3/objects/{object}"),
            &query,
            None,
            object,
        )
        .await
        .map(drop)
    }

    /// Stops before a request that would eat into the reserve: by HubSpot's latest daily
    /// figures less what was sent since; or, for an app HubSpot sends none (or when asking
    /// brought none), by the configured allowance less what was sent. Figures may be stale
    /// (the allowance renews at midnight in the portal's time zone): a general request brings
    /// fresh ones itself, a search (whose answers carry none) is preceded by a small listing.
    /// With `claim`, the moment of sending, a request that may go is counted against the day
    /// under the same lock, so requests sent at once cannot pass the reserve together (answers
    /// with daily headers correct the count).
    fn check_daily_reserve(&self, budget: Budget, claim: bool) -> Result<DailyCheck, HubspotError> {
        let mut state = self
            .daily
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent = |at: Option<tokio::time::Instant>| {
            at.is_some_and(|at| at.elapsed() < DAILY_FIGURES_LIFETIME)
        };
        let figures = match (recent(state.observed), state.daily, state.remaining) {
            (true, Some(daily), Some(remaining)) => {
                Some((daily, remaining, "by HubSpot's daily figures"))
            }
            _ if state.without_figures || recent(state.probed) => Some((
                self.settings.daily_limit,
                self.settings.daily_limit,
                "counted against the configured hubspot.rate_limit.daily_limit, as HubSpot sends this app no daily figures",
            )),
            _ if budget == Budget::Search && !claim => return Ok(DailyCheck::ProbeFirst),
            _ => None,
        };
        if let Some((daily, remaining, basis)) = figures {
            let remaining = remaining.saturating_sub(state.sent_since);
            let reserve = daily * u64::from(self.settings.daily_reserve_percent) / 100;
            if remaining <= reserve {
                return Err(HubspotError::DailyReserve {
                    remaining,
                    daily,
                    reserve_percent: self.settings.daily_reserve_percent,
                    basis,
                });
            }
        }
        if claim {
            state.sent_since += 1;
            state.unanswered += 1;
        }
        Ok(DailyCheck::Go)
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The path with ids replaced, so logs group requests by endpoint:
/// `/crm/v3/objects/contacts/123` → `/crm/v3/objects/contacts/{id}`.
fn path_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|byte| byte.is_ascii_digit()) {
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
    fn paths_group_by_endpoint() {
        assert_eq!(
            path_template("/crm/v3/objects/contacts/123"),
            "/crm/v3/objects/contacts/{id}"
        );
        assert_eq!(
            path_template("/crm/v3/objects/0-1/batch/read"),
            "/crm/v3/objects/0-1/batch/read"
        );
    }
}
