//! Switchable faults, so clients are tested against the failures real APIs have: `flaky`
//! (a share of 429/500/502/503 answers, connections dropped mid-answer, and 200s whose JSON
//! is cut short), `storm` (bursts
//! of 429 with Retry-After from HubSpot; Salesforce, which has no 429, refuses bursts with its
//! concurrent-request limit), `slow` (added latency), `expiry` (access tokens that expire
//! within seconds) and `partial` (some items of batch writes fail; see each API's writes). Which request gets
//! which fault follows from the seed and the request's number, so a run can be repeated.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::data::SeededRng;
use super::stats::Stats;
use crate::diagnostics::did_you_mean;

/// The faults switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub flaky: bool,
    pub storm: bool,
    pub slow: bool,
    pub expiry: bool,
    pub partial: bool,
}

/// The names `--faults` takes.
pub const FAULT_NAMES: [&str; 6] = ["none", "flaky", "storm", "slow", "expiry", "partial"];

/// An unknown fault name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown fault profile {name:?}{suggestion} — use none or a comma-separated list of flaky, storm, slow, expiry, partial"
)]
pub struct UnknownFault {
    name: String,
    suggestion: String,
}

impl FromStr for Faults {
    type Err = UnknownFault;

    /// `none`, or names joined by commas: `flaky,storm`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut faults = Faults::default();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name {
                "none" => {}
                "flaky" => faults.flaky = true,
                "storm" => faults.storm = true,
                "slow" => faults.slow = true,
                "expiry" => faults.expiry = true,
                "partial" => faults.partial = true,
                other => {
                    return Err(UnknownFault {
                        name: other.to_string(),
                        suggestion: did_you_mean(other, FAULT_NAMES)
                            .map(|s| format!(" (did you mean {s:?}?)"))
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(faults)
    }
}

/// Share of requests that fail with a server error under `flaky`, in percent.
const FLAKY_PERCENT: u64 = 5;
/// Chance that a request starts a 429 storm under `storm`, in percent.
const STORM_START_PERCENT: u64 = 2;
/// Lifetime of OAuth access tokens under `expiry`.
pub const EXPIRY_TOKEN_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

/// Decides, request by request, which fault to inject.
#[derive(Debug)]
pub struct FaultInjector {
    faults: Faults,
    seed: u64,
    requests: AtomicU64,
    storm_left: AtomicU32,
    stats: Arc<Stats>,
}

impl FaultInjector {
    pub fn new(faults: Faults, seed: u64, stats: Arc<Stats>) -> Self {
        Self {
            faults,
            seed,
            requests: AtomicU64::new(0),
            storm_left: AtomicU32::new(0),
            stats,
        }
    }
}

fn hubspot_rate_limited() -> Response {
    let body = json!({
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "00000000-0000-4000-8000-000000000429",
        "policyName": "TEN_SECONDLY_ROLLING",
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    headers.insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// Which API a request is for, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Hubspot,
    Salesforce,
}

impl System {
    fn of(path: &str) -> Self {
        if path.starts_with("/services/") || path.starts_with("/id/") {
            System::Salesforce
        } else {
            System::Hubspot
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Hubspot => "hubspot",
            System::Salesforce => "salesforce",
        }
    }
}

fn json_answer(
    status: StatusCode,
    body: serde_json::Value,
    content_type: &'static str,
) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

/// Salesforce's answer when too many long requests run at once: 403 REQUEST_LIMIT_EXCEEDED.
fn salesforce_concurrency_limited() -> Response {
    json_answer(
        StatusCode::FORBIDDEN,
        json!([{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]),
        "application/json;charset=UTF-8",
    )
}

fn salesforce_server_error(status: StatusCode, number: u64) -> Option<Response> {
    let body = match status {
        StatusCode::INTERNAL_SERVER_ERROR => json!([{
            "errorCode": "UNKNOWN_EXCEPTION",
            "message": format!("An unexpected error occurred. Please include this ErrorId if you contact support: {}-{} ({})", 1_000_000_000 + number % 1_000_000_000, number % 100_000, -(number as i64 % 1_000_000_000)),
        }]),
        StatusCode::SERVICE_UNAVAILABLE => json!([{
            "errorCode": "SERVER_UNAVAILABLE",
            "message": "Server temporarily unavailable, please try again later.",
        }]),
        _ => return None,
    };
    Some(json_answer(status, body, "application/json;charset=UTF-8"))
}

/// A 200 whose body is not the JSON it claims to be (a proxy cut it short).
fn malformed_body() -> Response {
    let mut response = (StatusCode::OK, "{\"results\":[{\"id\":\"").into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// An answer whose body breaks off: the connection drops mid-response.
fn dropped_connection() -> Response {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(axum::body::Bytes::from_static(b"{\"results\":[")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection drop",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn server_error(status: StatusCode) -> Response {
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let body = json!({
            "status": "error",
            "message": "internal error",
            "correlationId": "00000000-0000-4000-8000-000000000500",
            "category": "INTERNAL_ERROR",
        });
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        return response;
    }
    // Gateway errors come from the edge, as HTML.
    let body = format!(
        "<html><head><title>{code} {reason}</title></head><body><center><h1>{code} {reason}</h1></center></body></html>",
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or("Error")
    );
    let mut response = (status, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    response
}

/// The middleware: counts the request in flight (see [`Stats::enter`]), and may delay it, or
/// answer it with a fault instead.
pub async fn inject(
    State(injector): State<Arc<FaultInjector>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/__emulator") {
        return next.run(request).await;
    }
    let system = System::of(request.uri().path());
    // Counted as being answered until its response is made (delays included).
    let _in_flight = injector.stats.enter(system.name());
    let faults = injector.faults;
    if !(faults.flaky || faults.storm || faults.slow) {
        return next.run(request).await;
    }
    // Token endpoints answer in OAuth's own error shape; of the faults, only the edge's (502,
    // 503 pages, dropped connections) reach them.
    let token_endpoint = matches!(
        request.uri().path(),
        "/services/oauth2/token" | "/oauth/v1/token"
    );
    let number = injector.requests.fetch_add(1, Ordering::Relaxed);
    let mut rng = SeededRng::new(injector.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    if faults.slow {
        tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
    }
    let endpoint = format!("{} (fault)", request.method());
    if faults.storm && !token_endpoint {
        let in_storm = injector
            .storm_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        let starts = !in_storm && rng.percent(STORM_START_PERCENT);
        if starts {
            injector
                .storm_left
                .store(4 + rng.below(12) as u32, Ordering::Relaxed);
        }
        if in_storm || starts {
            return match system {
                System::Hubspot => {
                    injector.stats.record(system.name(), &endpoint, 429);
                    hubspot_rate_limited()
                }
                System::Salesforce => {
                    injector.stats.record(system.name(), &endpoint, 403);
                    salesforce_concurrency_limited()
                }
            };
        }
    }
    if faults.flaky && rng.percent(FLAKY_PERCENT) {
        // A dropped connection now and then; otherwise a status the API really sends.
        if rng.percent(15) {
            injector.stats.record(system.name(), &endpoint, 0);
            return dropped_connection();
        }
        if !token_endpoint && rng.percent(10) {
            injector.stats.record(system.name(), &endpoint, 200);
            return malformed_body();
        }
        let statuses: &[StatusCode] = match (system, token_endpoint) {
            (_, true) => &[StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE],
            (System::Hubspot, false) => &[
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            (System::Salesforce, false) => &[
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
        };
        let status = *rng.pick(statuses);
        injector
            .stats
            .record(system.name(), &endpoint, status.as_u16());
        return match (system, status) {
            (_, StatusCode::BAD_GATEWAY) => server_error(status),
            (_, _) if token_endpoint => server_error(status),
            (System::Hubspot, StatusCode::TOO_MANY_REQUESTS) => hubspot_rate_limited(),
            (System::Salesforce, status) => {
                salesforce_server_error(status, number).unwrap_or_else(|| server_error(status))
            }
            (System::Hubspot, status) => server_error(status),
        };
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_alone_and_combined() {
        assert_eq!("none".parse::<Faults>().ok(), Some(Faults::default()));
        let combined: Faults = "flaky, storm".parse().expect("parses");
        assert!(combined.flaky && combined.storm && !combined.slow && !combined.expiry);
        let error = "stromm".parse::<Faults>().expect_err("unknown");
        assert!(
            error.to_string().contains("did you mean \"storm\"?"),
            "{error}"
        );
    }
}
