//! Fault profiles over HTTP: flaky server errors, 429 storms, short-lived tokens, latency —
//! deterministic from the seed.

use std::net::SocketAddr;

use crmsync::emulator::faults::Faults;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

async fn start(faults: &str, seed: u64) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed,
            records: 100,
            rate_limits: false,
            faults: faults.parse::<Faults>().expect("fault profile"),
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

/// Status, content type and retry-after of `count` sequential list requests; a connection
/// dropped mid-answer shows as status 0, a 200 with malformed JSON as status 1.
async fn statuses(emulator: &RunningEmulator, count: usize) -> Vec<(u16, String, Option<String>)> {
    let client = reqwest::Client::new();
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let sent = client
            .get(format!(
                "{}/crm/v3/objects/contacts?limit=1",
                emulator.info().hubspot_base_url
            ))
            .bearer_auth(&emulator.info().hubspot_token)
            .send()
            .await;
        let Ok(response) = sent else {
            seen.push((0, String::new(), None));
            continue;
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        match response.text().await {
            // A 200 whose JSON is cut short counts as its own kind of fault.
            Ok(body) if status == 200 && serde_json::from_str::<Value>(&body).is_err() => {
                seen.push((1, content_type, retry_after))
            }
            Ok(_) => seen.push((status, content_type, retry_after)),
            Err(_) => seen.push((0, String::new(), None)),
        }
    }
    seen
}

#[tokio::test]
async fn flaky_answers_some_server_errors_the_same_way_every_run() {
    let first = statuses(&start("flaky", 9).await, 300).await;
    let second = statuses(&start("flaky", 9).await, 300).await;
    assert_eq!(first, second, "the same seed gives the same faults");
    let errors: Vec<&(u16, String, Option<String>)> = first
        .iter()
        .filter(|(status, _, _)| *status != 200)
        .collect();
    assert!((3..=40).contains(&errors.len()), "{} faults", errors.len());
    for (status, content_type, _) in &errors {
        assert!([0, 1, 429, 500, 502, 503].contains(status), "{status}");
        match status {
            0 => {}
            1 => assert!(content_type.starts_with("application/json")),
            429 | 500 => assert!(content_type.starts_with("application/json")),
            _ => assert_eq!(content_type, "text/html"),
        }
    }
    let kinds: std::collections::BTreeSet<u16> =
        errors.iter().map(|(status, _, _)| *status).collect();
    assert!(kinds.len() >= 3, "several kinds of fault: {kinds:?}");
    assert!(
        kinds.contains(&1),
        "some 200s carry malformed JSON: {kinds:?}"
    );
    assert!(first.iter().filter(|(status, _, _)| *status == 200).count() > 250);
}

#[tokio::test]
async fn storms_are_bursts_of_429_with_retry_after() {
    let emulator = start("storm", 4).await;
    let seen = statuses(&emulator, 400).await;
    let limited: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, (s, _, _))| *s == 429)
        .map(|(i, _)| i)
        .collect();
    assert!(!limited.is_empty(), "no storm in 400 requests");
    assert!(
        seen.iter()
            .filter(|(s, _, _)| *s == 429)
            .all(|(_, _, retry)| retry.as_deref() == Some("1"))
    );
    // At least one burst of five or more in a row.
    let longest = limited
        .windows(2)
        .fold((1, 1), |(best, run), pair| {
            let run = if pair[1] == pair[0] + 1 { run + 1 } else { 1 };
            (best.max(run), run)
        })
        .0;
    assert!(longest >= 5, "longest burst {longest}");
    assert_eq!(emulator.stats().rate_limited, limited.len() as u64);
    // A storm's answer is HubSpot's ten-second 429 body.
    let client = reqwest::Client::new();
    let mut limited_body = None;
    for _ in 0..400 {
        let sent = client
            .get(format!(
                "{}/crm/v3/objects/contacts?limit=1",
                emulator.info().hubspot_base_url
            ))
            .bearer_auth(&emulator.info().hubspot_token)
            .send()
            .await
            .expect("request");
        let response = sent;
        if response.status().as_u16() == 429 {
            limited_body = Some(response.json::<Value>().await.expect("JSON"));
            break;
        }
    }
    let body = limited_body.expect("another storm within 400 requests");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
}

#[tokio::test]
async fn expiry_hands_out_tokens_that_last_seconds_and_slow_still_answers() {
    let emulator = start("expiry,slow", 2).await;
    let info = emulator.info();
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/v1/token", info.hubspot_base_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", info.hubspot_client_id.as_str()),
            ("client_secret", info.hubspot_client_secret.as_str()),
            ("refresh_token", info.hubspot_refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["expires_in"], 2);
    assert!(
        statuses(&emulator, 3)
            .await
            .iter()
            .all(|(status, _, _)| *status == 200)
    );
}

#[tokio::test]
async fn salesforce_gets_its_own_kinds_of_fault() {
    let emulator = start("flaky,storm", 11).await;
    let info = emulator.info().clone();
    let client = reqwest::Client::new();
    // Log in until the token endpoint answers (it can be hit by a fault too).
    let mut token = None;
    for _ in 0..50 {
        let Ok(response) = client
            .post(format!(
                "{}/services/oauth2/token",
                info.salesforce_login_url
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", info.salesforce_client_id.as_str()),
                ("client_secret", info.salesforce_client_secret.as_str()),
            ])
            .send()
            .await
        else {
            continue;
        };
        if response.status().is_success()
            && let Ok(body) = response.json::<Value>().await
        {
            token = body["access_token"].as_str().map(str::to_string);
            break;
        }
    }
    let token = token.expect("a token within 50 tries");
    let mut kinds: std::collections::BTreeMap<u16, Value> = std::collections::BTreeMap::new();
    for _ in 0..600 {
        let Ok(response) = client
            .get(format!(
                "{}/services/data/v62.0/limits",
                info.salesforce_login_url
            ))
            .bearer_auth(&token)
            .send()
            .await
        else {
            kinds.entry(0).or_insert(Value::Null);
            continue;
        };
        let status = response.status().as_u16();
        let body = match response.text().await {
            Ok(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            Err(_) => {
                kinds.entry(0).or_insert(Value::Null);
                continue;
            }
        };
        if status != 200 {
            kinds.entry(status).or_insert(body);
        }
    }
    assert_eq!(
        kinds.get(&403).map(|body| body[0]["errorCode"].clone()),
        Some(Value::from("REQUEST_LIMIT_EXCEEDED")),
        "storms refuse with the concurrent-request limit: {kinds:?}"
    );
    assert!(!kinds.contains_key(&429), "Salesforce sends no 429");
    if let Some(body) = kinds.get(&500) {
        assert_eq!(body[0]["errorCode"], "UNKNOWN_EXCEPTION");
    }
    if let Some(body) = kinds.get(&503) {
        assert_eq!(body[0]["errorCode"], "SERVER_UNAVAILABLE");
    }
    assert!(
        kinds.len() >= 3,
        "several kinds of fault: {:?}",
        kinds.keys()
    );
}
