//! HubSpot CRM search on the emulator over HTTP: filters, sorting, offset paging, the
//! 10,000-result cap, archived records left out, no rate-limit headers, its own 429.

use std::net::SocketAddr;

use crmsync::emulator::data::{OrgProfile, generate};
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

async fn start(rate_limits: bool) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed: 21,
            records: 1_000,
            rate_limits,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

async fn search(
    emulator: &RunningEmulator,
    object: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/crm/v3/objects/{object}/search",
            emulator.info().hubspot_base_url
        ))
        .bearer_auth(&emulator.info().hubspot_token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn filters_sorts_and_pages() {
    let emulator = start(false).await;
    let org = generate(21, 1_000, OrgProfile::Classic);
    let customers = org
        .hubspot_contacts
        .iter()
        .filter(|c| !c.archived && c.properties.text("lifecyclestage") == Some("customer"))
        .count();
    let request = json!({
        "filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "customer"}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lifecyclestage", "lastmodifieddate"],
        "limit": 20,
    });
    let (status, headers, body) = search(&emulator, "contacts", request.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.get("x-hubspot-ratelimit-remaining").is_none(),
        "search answers carry no rate headers"
    );
    assert_eq!(body["total"], customers);
    let mut collected: Vec<Value> = Vec::new();
    let mut page = body;
    loop {
        collected.extend(page["results"].as_array().cloned().unwrap_or_default());
        let Some(after) = page["paging"]["next"]["after"].as_str() else {
            break;
        };
        let mut next = request.clone();
        next["after"] = json!(after);
        page = search(&emulator, "contacts", next).await.2;
    }
    assert_eq!(collected.len(), customers);
    let first = &collected[0];
    let url = first["url"].as_str().expect("search results carry a url");
    assert!(
        url.starts_with("https://app.hubspot.com/contacts/")
            && url.ends_with(&format!(
                "/record/0-1/{}",
                first["id"].as_str().expect("id")
            )),
        "{url}"
    );
    assert!(
        collected
            .iter()
            .all(|r| r["properties"]["lifecyclestage"] == "customer")
    );
    let times: Vec<jiff::Timestamp> = collected
        .iter()
        .map(|r| {
            r["properties"]["lastmodifieddate"]
                .as_str()
                .expect("time")
                .parse()
                .expect("timestamp")
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not sorted by lastmodifieddate"
    );
}

#[tokio::test]
async fn date_filters_take_epoch_milliseconds_and_groups_are_ored() {
    let emulator = start(false).await;
    let since = jiff::Timestamp::from_second(1_775_000_000).expect("instant");
    let request = json!({
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since.as_millisecond().to_string()}]},
            {"filters": [{"propertyName": "hs_lead_status", "operator": "IN", "values": ["UNQUALIFIED", "BAD_TIMING"]}]}
        ],
        "properties": ["lastmodifieddate", "hs_lead_status"],
        "limit": 200,
    });
    let (status, _, body) = search(&emulator, "contacts", request).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert!(!results.is_empty());
    for result in results {
        let modified: jiff::Timestamp = result["properties"]["lastmodifieddate"]
            .as_str()
            .expect("t")
            .parse()
            .expect("ts");
        let status = result["properties"]["hs_lead_status"]
            .as_str()
            .unwrap_or_default();
        assert!(
            modified >= since || status == "UNQUALIFIED" || status == "BAD_TIMING",
            "{result}"
        );
    }
}

#[tokio::test]
async fn the_ten_thousand_cap_and_bad_requests_answer_400() {
    let emulator = start(false).await;
    for request in [
        json!({"after": "9950", "limit": 100}),
        json!({"limit": 201}),
        json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]}),
        // At most six filters in a group.
        json!({"filterGroups": [{"filters": (0..7).map(|i| json!({"propertyName": "hs_object_id", "operator": "NEQ", "value": i.to_string()})).collect::<Vec<_>>()}]}),
    ] {
        let (status, _, body) = search(&emulator, "contacts", request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(body["category"], "VALIDATION_ERROR", "{request}");
    }
    let (status, _, _) = search(
        &emulator,
        "contacts",
        json!({"after": "9900", "limit": 100}),
    )
    .await;
    assert_eq!(status, 200, "paging up to exactly 10,000 is allowed");
}

#[tokio::test]
async fn text_compares_ignoring_case_but_enumerations_exactly() {
    let emulator = start(false).await;
    let (_, _, upper) = search(
        &emulator,
        "contacts",
        json!({"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "ANN"}]}),
    )
    .await;
    let (_, _, exact) = search(
        &emulator,
        "contacts",
        json!({"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Ann"}]}),
    )
    .await;
    assert!(upper["total"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(upper["total"], exact["total"]);
    let (_, _, wrong_case) = search(&emulator, "contacts", json!({"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "CUSTOMER"}]})).await;
    assert_eq!(
        wrong_case["total"], 0,
        "enumeration values are case-sensitive"
    );
}

#[tokio::test]
async fn archived_contacts_never_appear_in_search() {
    let emulator = start(false).await;
    let org = generate(21, 1_000, OrgProfile::Classic);
    let archived: Vec<&str> = org
        .hubspot_contacts
        .iter()
        .filter(|c| c.archived)
        .map(|c| c.id.as_str())
        .collect();
    assert!(!archived.is_empty());
    let request = json!({
        "filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": archived}]}],
    });
    let (status, _, body) = search(&emulator, "contacts", request).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 0);
}

#[tokio::test]
async fn search_has_its_own_per_second_budget() {
    let emulator = start(true).await;
    let mut refused = None;
    for _ in 0..10 {
        let (status, _, body) = search(&emulator, "contacts", json!({"limit": 1})).await;
        if status == 429 {
            refused = Some(body);
            break;
        }
    }
    let body = refused.expect("ten back-to-back searches exceed five per second");
    assert_eq!(body["policyName"], "SECONDLY");
    assert_eq!(body["message"], "You have reached your secondly limit.");
}
