//! The HubSpot side of the emulator, over real HTTP on 127.0.0.1: authentication, paging,
//! property selection, reads by id and by email, rate-limit headers and 429s, counters.

use std::collections::HashSet;
use std::net::SocketAddr;

use crmsync::emulator::data::{OrgProfile, generate};
use crmsync::emulator::hubspot::HubspotLimits;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, any_port())
        .await
        .expect("emulator starts")
}

fn config(records: usize) -> EmulatorConfig {
    EmulatorConfig {
        seed: 11,
        records,
        ..EmulatorConfig::default()
    }
}

async fn get(emulator: &RunningEmulator, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", emulator.info().hubspot_base_url))
        .bearer_auth(&emulator.info().hubspot_token)
        .send()
        .await
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.expect("JSON body");
    (status, headers, body)
}

#[tokio::test]
async fn requests_without_a_valid_token_get_hubspots_401() {
    let emulator = start(config(50)).await;
    let client = reqwest::Client::new();
    for token in [None, Some("pat-na1-not-the-token")] {
        let mut request = client.get(format!(
            "{}/crm/v3/objects/contacts",
            emulator.info().hubspot_base_url
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request succeeds");
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(
            response
                .headers()
                .get("x-hubspot-auth-failure")
                .and_then(|v| v.to_str().ok()),
            Some("401 Unauthorized")
        );
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        assert!(
            body["correlationId"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        );
    }
}

#[tokio::test]
async fn listing_pages_through_every_live_contact_once() {
    let emulator = start(config(1_000)).await;
    let org = generate(11, 1_000, OrgProfile::Classic);
    let live: HashSet<String> = org
        .hubspot_contacts
        .iter()
        .filter(|c| !c.archived)
        .map(|c| c.id.clone())
        .collect();
    let mut seen = Vec::new();
    let mut path = "/crm/v3/objects/contacts?limit=100".to_string();
    let mut pages = 0;
    loop {
        let (status, headers, body) = get(&emulator, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json;charset=utf-8")
        );
        assert_eq!(
            headers
                .get("x-hubspot-ratelimit-max")
                .and_then(|v| v.to_str().ok()),
            Some("100")
        );
        assert!(headers.get("x-hubspot-ratelimit-daily-remaining").is_some());
        pages += 1;
        let results = body["results"].as_array().expect("results");
        assert!(results.len() <= 100);
        for result in results {
            assert_eq!(result["archived"], false);
            assert!(
                result["createdAt"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z'))
            );
            assert_eq!(result["properties"]["hs_object_id"], result["id"]);
            seen.push(result["id"].as_str().expect("id").to_string());
        }
        match body["paging"]["next"]["after"].as_str() {
            Some(after) => {
                let link = body["paging"]["next"]["link"].as_str().expect("link");
                assert!(link.ends_with(&format!("after={after}")), "{link}");
                path = format!("/crm/v3/objects/contacts?limit=100&after={after}");
            }
            None => break,
        }
    }
    assert_eq!(pages, live.len().div_ceil(100));
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a contact came twice");
    assert_eq!(unique, live);
    let ids: Vec<u64> = seen
        .iter()
        .map(|id| id.parse().expect("numeric id"))
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids are not ascending"
    );
    let stats = emulator.stats();
    assert_eq!(
        stats.requests_by_endpoint["hubspot GET /crm/v3/objects/{type}"][&200],
        pages as u64
    );
}

#[tokio::test]
async fn archived_listing_and_property_selection() {
    let emulator = start(config(1_000)).await;
    let (_, _, body) = get(
        &emulator,
        "/crm/v3/objects/contacts?archived=true&limit=100",
    )
    .await;
    let results = body["results"].as_array().expect("results");
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| r["archived"] == true && r["archivedAt"].is_string())
    );

    let (_, _, body) = get(
        &emulator,
        "/crm/v3/objects/0-1?limit=3&properties=email,lifecyclestage&properties=no_such_property",
    )
    .await;
    let first = &body["results"][0]["properties"];
    let mut names: Vec<&str> = first
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "createdate",
            "email",
            "hs_object_id",
            "lastmodifieddate",
            "lifecyclestage"
        ]
    );

    let (_, _, body) = get(&emulator, "/crm/v3/objects/deals?limit=1").await;
    let deal = &body["results"][0]["properties"];
    assert_eq!(deal["pipeline"], "default");
    assert!(deal["dealstage"].is_string());
}

#[tokio::test]
async fn reading_one_object_by_id_or_email() {
    let emulator = start(config(200)).await;
    let (_, _, page) = get(
        &emulator,
        "/crm/v3/objects/contacts?limit=1&properties=email",
    )
    .await;
    let first = &page["results"][0];
    let id = first["id"].as_str().expect("id");
    let email = first["properties"]["email"]
        .as_str()
        .expect("email")
        .trim()
        .to_uppercase();
    let (status, _, body) = get(&emulator, &format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    let (status, _, body) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{email}?idProperty=email"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id);
    let (status, _, body) = get(&emulator, "/crm/v3/objects/contacts/999999999").await;
    assert_eq!(status, 404);
    assert_eq!(body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["context"]["id"][0], "999999999");
}

#[tokio::test]
async fn bad_parameters_are_refused_with_a_validation_error() {
    let emulator = start(config(50)).await;
    for path in [
        "/crm/v3/objects/contacts?limit=ten",
        "/crm/v3/objects/contacts?after=x",
        "/crm/v3/objects/tickets_typo",
    ] {
        let (status, _, body) = get(&emulator, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["category"], "VALIDATION_ERROR", "{path}");
    }
}

#[tokio::test]
async fn the_ten_second_window_answers_429_with_the_policy() {
    let emulator = start(EmulatorConfig {
        hubspot_limits: HubspotLimits {
            per_ten_seconds: 5,
            per_day: 1_000,
        },
        ..config(50)
    })
    .await;
    for expected_remaining in (0..5).rev() {
        let (status, headers, _) = get(&emulator, "/crm/v3/objects/contacts?limit=1").await;
        assert_eq!(status, 200);
        assert_eq!(
            headers
                .get("x-hubspot-ratelimit-remaining")
                .and_then(|v| v.to_str().ok()),
            Some(expected_remaining.to_string().as_str())
        );
    }
    let (status, _, body) = get(&emulator, "/crm/v3/objects/contacts?limit=1").await;
    assert_eq!(status, 429);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(emulator.stats().rate_limited, 1);

    // With limits off nothing is refused.
    let unlimited = start(EmulatorConfig {
        rate_limits: false,
        hubspot_limits: HubspotLimits {
            per_ten_seconds: 1,
            per_day: 1,
        },
        ..config(50)
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            get(&unlimited, "/crm/v3/objects/contacts?limit=1").await.0,
            200
        );
    }
}

#[tokio::test]
async fn the_same_seed_serves_the_same_data() {
    let a = start(config(300)).await;
    let b = start(config(300)).await;
    let (_, _, first) = get(&a, "/crm/v3/objects/contacts?limit=50").await;
    let (_, _, second) = get(&b, "/crm/v3/objects/contacts?limit=50").await;
    assert_eq!(first["results"], second["results"]);
    assert_eq!(a.info().hubspot_token, b.info().hubspot_token);
    let stats: Value = reqwest::get(format!("{}/__emulator/stats", a.info().hubspot_base_url))
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stats["requests_by_system"]["hubspot"], 1);
}

async fn refresh(emulator: &RunningEmulator, refresh_token: &str) -> (u16, Value) {
    let info = emulator.info();
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/v1/token", info.hubspot_base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={refresh_token}",
            info.hubspot_client_id, info.hubspot_client_secret
        ))
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn oauth_refresh_hands_out_tokens_that_work_and_expire() {
    let emulator = start(config(100)).await;
    let refresh_token = emulator.info().hubspot_refresh_token.clone();
    let (status, body) = refresh(&emulator, &refresh_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["refresh_token"], refresh_token.as_str());
    let access_token = body["access_token"].as_str().expect("access token");
    let response = reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/objects/contacts?limit=1",
            emulator.info().hubspot_base_url
        ))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    // OAuth callers get the window headers but not the daily ones.
    assert!(
        response
            .headers()
            .get("x-hubspot-ratelimit-remaining")
            .is_some()
    );
    assert!(
        response
            .headers()
            .get("x-hubspot-ratelimit-daily")
            .is_none()
    );

    let (status, body) = refresh(&emulator, "na1-wrong").await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "BAD_REFRESH_TOKEN");
    assert_eq!(body["error"], "invalid_grant");

    // Tokens that have outlived their lifetime are refused as expired.
    let expiring = start(EmulatorConfig {
        hubspot_token_lifetime: jiff::SignedDuration::ZERO,
        ..config(50)
    })
    .await;
    let (_, body) = refresh(&expiring, &expiring.info().hubspot_refresh_token.clone()).await;
    let token = body["access_token"].as_str().expect("token");
    let response = reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/objects/contacts",
            expiring.info().hubspot_base_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The OAuth token used to make this call expired"))
    );
    assert!(
        body["context"]["expire time"][0]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test]
async fn large_pages_are_cut_to_100_and_python_style_booleans_are_read() {
    let emulator = start(config(500)).await;
    let (status, _, body) = get(
        &emulator,
        "/crm/v3/objects/contacts?limit=500&archived=False",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(100));
}
