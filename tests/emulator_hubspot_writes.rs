//! HubSpot batch reads and writes on the emulator over HTTP: exact status codes, validation
//! bodies, the forward-only lifecycle stage, stage-entry stamps and modification dates.

use std::net::SocketAddr;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

async fn start() -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed: 5,
            records: 300,
            rate_limits: false,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

async fn post(emulator: &RunningEmulator, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", emulator.info().hubspot_base_url))
        .bearer_auth(&emulator.info().hubspot_token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    (status, serde_json::from_str(&text).expect("JSON"))
}

async fn contact(emulator: &RunningEmulator, id: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/objects/contacts/{id}?properties=lifecyclestage,email,hs_v2_date_entered_customer,lastmodifieddate",
            emulator.info().hubspot_base_url
        ))
        .bearer_auth(&emulator.info().hubspot_token)
        .send()
        .await
        .expect("request");
    response.json().await.expect("JSON")
}

/// A live contact's id and email.
async fn some_contact(emulator: &RunningEmulator, skip: usize) -> (String, String) {
    let (_, body) = post(
        emulator,
        "/crm/v3/objects/contacts/search",
        json!({"limit": 10, "properties": ["email"], "filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}),
    )
    .await;
    let result = &body["results"][skip];
    (
        result["id"].as_str().expect("id").to_string(),
        result["properties"]["email"]
            .as_str()
            .expect("email")
            .to_string(),
    )
}

#[tokio::test]
async fn updates_move_the_lifecycle_stage_forward_only_and_stamp_entries() {
    let emulator = start().await;
    let (id, _) = some_contact(&emulator, 0).await;
    let before = contact(&emulator, &id).await;
    let update =
        |stage: &str| json!({"inputs": [{"id": id, "properties": {"lifecyclestage": stage}}]});
    // Start from no stage, whatever the seeded contact had.
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        update(""),
    )
    .await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        update("customer"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "COMPLETE");
    let after = contact(&emulator, &id).await;
    assert_eq!(after["properties"]["lifecyclestage"], "customer");
    assert!(after["properties"]["hs_v2_date_entered_customer"].is_string());
    let modified = |record: &Value| -> jiff::Timestamp {
        record["properties"]["lastmodifieddate"]
            .as_str()
            .expect("date")
            .parse()
            .expect("timestamp")
    };
    assert!(modified(&after) > modified(&before));

    // A lower stage is ignored...
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        update("lead"),
    )
    .await;
    assert_eq!(
        contact(&emulator, &id).await["properties"]["lifecyclestage"],
        "customer"
    );
    // ...unless the stage is cleared first.
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        update(""),
    )
    .await;
    post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        update("lead"),
    )
    .await;
    assert_eq!(
        contact(&emulator, &id).await["properties"]["lifecyclestage"],
        "lead"
    );
    assert!(emulator.stats().records_written["hubspot contacts"] >= 5);
}

#[tokio::test]
async fn invalid_properties_and_options_fail_the_whole_batch() {
    let emulator = start().await;
    let (id, _) = some_contact(&emulator, 1).await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": id, "properties": {"lifecyclestage": "customer", "no_such_property": "x"}}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["category"], "VALIDATION_ERROR");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Property values were not valid: ["))
    );
    assert_eq!(body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(
        body["errors"][0]["context"]["propertyName"][0],
        "no_such_property"
    );
    assert_ne!(
        contact(&emulator, &id).await["properties"]["lifecyclestage"],
        "customer",
        "nothing was written"
    );

    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": id, "properties": {"hs_lead_status": "MAYBE"}}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "INVALID_OPTION");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("MAYBE was not one of the allowed options: [NEW, OPEN"))
    );
}

#[tokio::test]
async fn batch_limits_duplicates_and_missing_ids() {
    let emulator = start().await;
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": i.to_string(), "properties": {}}))
        .collect();
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": too_many}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "The maximum number of inputs supported in a batch is 100. Please reduce the number of items and try again"
    );

    let (id, _) = some_contact(&emulator, 2).await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": id, "properties": {}}, {"id": id, "properties": {}}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["context"]["ids"][0], id.as_str());

    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": id, "properties": {"jobtitle": "CMO"}}, {"id": "999999999", "properties": {"jobtitle": "CMO"}}]}),
    )
    .await;
    assert_eq!(status, 207);
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["errors"][0]["context"]["ids"][0], "999999999");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));

    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/read",
        json!({"inputs": [{"id": id}, {"id": "999999999"}], "properties": ["jobtitle"]}),
    )
    .await;
    assert_eq!(status, 207);
    assert_eq!(body["results"][0]["properties"]["jobtitle"], "CMO");
}

#[tokio::test]
async fn create_answers_201_and_refuses_a_taken_email() {
    let emulator = start().await;
    let (existing_id, email) = some_contact(&emulator, 3).await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/create",
        json!({"inputs": [{"properties": {"email": "new.person@example.org", "lifecyclestage": "lead"}}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let new_id = body["results"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        contact(&emulator, &new_id).await["properties"]["email"],
        "new.person@example.org"
    );

    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/create",
        json!({"inputs": [{"properties": {"email": email.trim().to_uppercase()}, "objectWriteTraceId": "t1"}]}),
    )
    .await;
    assert_eq!(status, 207);
    assert_eq!(body["errors"][0]["category"], "CONFLICT");
    assert_eq!(
        body["errors"][0]["context"]["existingId"][0],
        existing_id.as_str()
    );
}

#[tokio::test]
async fn upsert_by_email_updates_or_creates() {
    let emulator = start().await;
    let (existing_id, email) = some_contact(&emulator, 4).await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/upsert",
        json!({"inputs": [
            {"id": email.trim(), "idProperty": "email", "properties": {"jobtitle": "VP"}},
            {"id": "brand.new@example.org", "idProperty": "email", "properties": {"jobtitle": "CTO"}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["id"], existing_id.as_str());
    assert_eq!(body["results"][0]["new"], false);
    assert_eq!(body["results"][1]["new"], true);
    let created = body["results"][1]["id"].as_str().expect("id").to_string();
    assert_eq!(
        contact(&emulator, &created).await["properties"]["email"],
        "brand.new@example.org"
    );

    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/upsert",
        json!({"inputs": [{"id": existing_id, "idProperty": "hs_object_id", "properties": {}}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().is_some_and(|m| {
        m.starts_with("Unable to perform update/upsert by non-unique 0-1 property hs_object_id")
    }));
}

#[tokio::test]
async fn numbers_date_times_and_owner_ids_are_validated_by_type() {
    let emulator = start().await;
    let deal = |properties: Value| json!({"inputs": [{"properties": properties}]});
    for (properties, property, error) in [
        (
            json!({"dealname": "Big", "amount": "lots"}),
            "amount",
            "INVALID_FLOAT",
        ),
        (
            json!({"dealname": "Big", "closedate": "2025-10-23"}),
            "closedate",
            "INVALID_LONG",
        ),
        (
            json!({"dealname": "Big", "closedate": "2025-10-23T10:00:00.123456Z"}),
            "closedate",
            "INVALID_LONG",
        ),
        (
            json!({"dealname": "Big", "hubspot_owner_id": "maya"}),
            "hubspot_owner_id",
            "INVALID_INTEGER",
        ),
    ] {
        let (status, body) = post(
            &emulator,
            "/crm/v3/objects/deals/batch/create",
            deal(properties),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert_eq!(body["errors"][0]["code"], error, "{body}");
        assert_eq!(body["errors"][0]["context"]["propertyName"][0], property);
    }
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/deals/batch/create",
        deal(json!({"dealname": "Big", "amount": "1250.50", "closedate": "1767225600000", "hubspot_owner_id": "41629779"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = post(
        &emulator,
        "/crm/v3/objects/deals/batch/create",
        deal(json!({"dealname": "Later", "closedate": "2026-01-01T00:00:00.000Z"})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn updates_keep_emails_unique_and_find_records_by_unique_properties_only() {
    let emulator = start().await;
    let (first_id, _) = some_contact(&emulator, 0).await;
    let (_, second_email) = some_contact(&emulator, 1).await;
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": first_id, "properties": {"email": second_email}}]}),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["errors"][0]["category"], "CONFLICT");
    assert_eq!(body["errors"][0]["context"]["ids"][0], first_id);
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": "Quixote", "idProperty": "firstname", "properties": {"jobtitle": "Knight"}}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("non-unique")),
        "{body}"
    );
}

#[tokio::test]
async fn an_archived_contacts_email_can_be_used_again() {
    let emulator = start().await;
    let (id, email) = some_contact(&emulator, 2).await;
    let (status, _) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/archive",
        json!({"inputs": [{"id": id}]}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/contacts/batch/create",
        json!({"inputs": [{"properties": {"email": email}}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
