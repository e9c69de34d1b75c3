//! The Properties and Pipelines APIs on the emulator: the picklists `discover` compares with
//! the mappings, per org profile.

use std::net::SocketAddr;

use crmsync::emulator::data::OrgProfile;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;

async fn start(profile: OrgProfile) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            records: 20,
            profile,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

async fn get(emulator: &RunningEmulator, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", emulator.info().hubspot_base_url))
        .bearer_auth(&emulator.info().hubspot_token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn option_values(property: &Value) -> Vec<String> {
    property["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|option| option["value"].as_str().expect("value").to_string())
        .collect()
}

#[tokio::test]
async fn contact_properties_carry_the_profiles_picklists() {
    let classic = start(OrgProfile::Classic).await;
    let (status, body) = get(&classic, "/crm/v3/properties/contacts").await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().expect("results");
    let lifecycle = results
        .iter()
        .find(|p| p["name"] == "lifecyclestage")
        .expect("lifecyclestage");
    assert_eq!(lifecycle["type"], "enumeration");
    assert_eq!(
        option_values(lifecycle),
        [
            "subscriber",
            "lead",
            "marketingqualifiedlead",
            "salesqualifiedlead",
            "opportunity",
            "customer",
            "evangelist",
            "other"
        ]
    );
    assert_eq!(lifecycle["options"][2]["label"], "Marketing Qualified Lead");
    let (status, lead_status) = get(&classic, "/crm/v3/properties/0-1/hs_lead_status").await;
    assert_eq!(status, 200);
    assert_eq!(option_values(&lead_status).len(), 8);
    let email = results
        .iter()
        .find(|p| p["name"] == "email")
        .expect("email");
    assert_eq!(email["hasUniqueValue"], true);

    let custom = start(OrgProfile::Custom).await;
    let (_, lifecycle) = get(&custom, "/crm/v3/properties/contacts/lifecyclestage").await;
    assert!(option_values(&lifecycle).contains(&"153180554".to_string()));

    let (status, body) = get(&classic, "/crm/v3/properties/contacts/no_such_property").await;
    assert_eq!(status, 404);
    assert_eq!(body["category"], "OBJECT_NOT_FOUND");
}

#[tokio::test]
async fn the_default_deal_pipeline_has_its_seven_stages() {
    let emulator = start(OrgProfile::Classic).await;
    let (status, body) = get(&emulator, "/crm/v3/pipelines/deals").await;
    assert_eq!(status, 200);
    let pipeline = &body["results"][0];
    assert_eq!(pipeline["id"], "default");
    assert_eq!(pipeline["label"], "Sales Pipeline");
    let stages = pipeline["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 7);
    let won = stages
        .iter()
        .find(|s| s["id"] == "closedwon")
        .expect("closedwon");
    assert_eq!(won["metadata"]["isClosed"], "true");
    assert_eq!(won["metadata"]["probability"], "1.0");
    let (status, one) = get(&emulator, "/crm/v3/pipelines/deals/default").await;
    assert_eq!(status, 200);
    assert_eq!(&one, pipeline);
    assert_eq!(get(&emulator, "/crm/v3/pipelines/deals/other").await.0, 404);

    // Deal stages are not options of the property: they come from the pipeline.
    let (_, dealstage) = get(&emulator, "/crm/v3/properties/deals/dealstage").await;
    assert_eq!(dealstage["externalOptions"], true);
    assert_eq!(dealstage["options"].as_array().map(Vec::len), Some(0));

    let (_, contacts) = get(&emulator, "/crm/v3/pipelines/contacts").await;
    let lifecycle = &contacts["results"][0];
    assert_eq!(lifecycle["id"], "contacts-lifecycle-pipeline");
    let other = lifecycle["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["id"] == "other")
        .expect("other");
    assert_eq!(other["metadata"]["state"], "CLOSED");
}

#[tokio::test]
async fn owners_are_listed_and_own_records() {
    let emulator = start(OrgProfile::Classic).await;
    let (status, body) = get(&emulator, "/crm/v3/owners").await;
    assert_eq!(status, 200);
    let owners = body["results"].as_array().expect("owners");
    assert_eq!(owners.len(), 6);
    let first = &owners[0];
    assert_eq!(first["type"], "PERSON");
    assert!(first["userId"].is_u64());
    let owner_ids: Vec<&str> = owners.iter().filter_map(|o| o["id"].as_str()).collect();

    let (_, page) = get(&emulator, "/crm/v3/owners?limit=2").await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["paging"]["next"]["after"], owners[2]["id"]);

    let email = first["email"].as_str().expect("email");
    let (_, by_email) = get(
        &emulator,
        &format!("/crm/v3/owners?email={}", email.to_uppercase()),
    )
    .await;
    assert_eq!(by_email["results"][0]["id"], first["id"]);
    let user_id = first["userId"].as_u64().expect("user id");
    let (status, by_user) = get(
        &emulator,
        &format!("/crm/v3/owners/{user_id}?idProperty=userId"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_user["id"], first["id"]);
    assert_eq!(get(&emulator, "/crm/v3/owners/1").await.0, 404);

    // Contacts point at these owners.
    let (_, contacts) = get(
        &emulator,
        "/crm/v3/objects/contacts?limit=20&properties=hubspot_owner_id",
    )
    .await;
    let owned: Vec<&str> = contacts["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|c| c["properties"]["hubspot_owner_id"].as_str())
        .collect();
    assert!(!owned.is_empty());
    assert!(owned.iter().all(|id| owner_ids.contains(id)));
}
