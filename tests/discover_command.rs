//! `crmsync discover` through the binary, against the emulator over HTTP.

mod engine_common;

use engine_common::Setup;
use serde_json::Value;

fn discover(setup: &Setup, json: bool) -> (Option<i32>, String, String) {
    let args: &[&str] = if json {
        &["discover", "--json"]
    } else {
        &["discover"]
    };
    // The emulator's limits are off; the client's own pacing of HubSpot search (5 a
    // second, as HubSpot allows) would only slow the test down.
    setup.crmsync(
        args,
        &[("CRMSYNC_HUBSPOT_RATE_LIMIT_SEARCH_PER_SECOND", "100")],
    )
}

fn property<'a>(discovery: &'a Value, object: &str, name: &str) -> &'a Value {
    discovery["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|property| property["object"] == object && property["property"] == name)
        .unwrap_or_else(|| panic!("no {object} {name} in {discovery:#}"))
}

fn total(property: &Value) -> u64 {
    property["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value["records"].as_u64().unwrap())
        .sum::<u64>()
        + property["empty"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_counts_every_value_of_every_stage_property_and_fails_on_unmapped_ones() {
    let setup = Setup::new(300).await;
    let crms = setup.crms();
    let (code, text, stderr) = discover(&setup, false);
    assert_eq!(code, Some(1), "{stderr}");
    let nurturing = crms
        .salesforce_query("SELECT Id FROM Lead WHERE Status = 'Nurturing'")
        .await
        .len();
    assert!(nurturing > 0);
    for expected in [
        "salesforce Lead Status (Lead Status) — values from picklist",
        "hubspot contacts lifecyclestage",
        "hubspot deals dealstage",
        "values from pipelines",
        "salesforce Opportunity StageName",
        "→ mql  (rule \"lead status\")",
        "passes: decides nothing here",
        "UNMAPPED: on_unknown = \"quarantine\"",
        &format!("salesforce Lead Status = \"Nurturing\" ({nurturing} records)"),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let (code, json, _) = discover(&setup, true);
    assert_eq!(code, Some(1));
    let discovery: Value = serde_json::from_str(&json).unwrap();
    // Unmapped values lead their property's list.
    let status = property(&discovery, "Lead", "Status");
    assert_eq!(status["values"][0]["value"], "Nurturing");
    assert_eq!(status["values"][0]["mapping"]["kind"], "unmapped");
    assert_eq!(status["values"][0]["records"], nurturing);
    assert_eq!(
        status["values"][0]["active"], false,
        "Nurturing is inactive"
    );
    // Every live record is counted once per property: under its value or as empty.
    let leads = crms.salesforce_query("SELECT Id FROM Lead").await.len() as u64;
    assert_eq!(total(status), leads);
    let lifecycle = property(&discovery, "contacts", "lifecyclestage");
    let contacts = crms
        .hubspot
        .send(
            crmsync::hubspot::client::Budget::Search,
            http::Method::POST,
            "/crm/v3/objects/contacts/search",
            &[],
            Some(&serde_json::json!({"limit": 1})),
            "contacts",
        )
        .await
        .unwrap()
        .body["total"]
        .as_u64()
        .unwrap();
    assert_eq!(total(lifecycle), contacts);
    let customer = lifecycle["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|value| value["value"] == "customer")
        .unwrap();
    assert_eq!(customer["mapping"]["stage"], "customer");
    let dealstage = property(&discovery, "deals", "dealstage");
    assert_eq!(dealstage["defined_by"], "pipelines");
    assert!(
        dealstage["values"][0]["pipeline"].is_string(),
        "{dealstage:#}"
    );

    // Mapping the value makes discover pass.
    let path = setup.dir.path().join("mappings/salesforce.toml");
    let mappings = std::fs::read_to_string(&path).unwrap();
    let mapped = mappings.replacen(
        "\"Open - Not Contacted\" = \"mql\"",
        "\"Open - Not Contacted\" = \"mql\", \"Nurturing\" = \"recycled\"",
        1,
    );
    assert_ne!(
        mapped, mappings,
        "the default mapping's lead status map changed"
    );
    std::fs::write(&path, mapped).unwrap();
    let (code, text, stderr) = discover(&setup, false);
    assert_eq!(code, Some(0), "{stderr}\n{text}");
    assert!(
        text.contains("Every value records hold is mapped."),
        "{text}"
    );
    assert!(
        text.contains("→ recycled  (rule \"lead status\")"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customised_org_shows_its_own_stages_as_unmapped_with_their_counts() {
    let setup = Setup::with(crmsync::emulator::EmulatorConfig {
        records: 200,
        rate_limits: false,
        profile: crmsync::emulator::data::OrgProfile::Custom,
        ..Default::default()
    })
    .await;
    let (code, json, stderr) = discover(&setup, true);
    assert_eq!(code, Some(1), "{stderr}");
    let discovery: Value = serde_json::from_str(&json).unwrap();
    let lifecycle = property(&discovery, "contacts", "lifecyclestage");
    let custom = &lifecycle["values"][0];
    assert_eq!(custom["value"], "153180554", "{lifecycle:#}");
    assert_eq!(custom["mapping"]["kind"], "unmapped");
    assert!(custom["records"].as_u64().unwrap() > 0);
    let status = property(&discovery, "Lead", "Status");
    let unmapped: Vec<&str> = status["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|value| value["mapping"]["kind"] == "unmapped")
        .map(|value| value["value"].as_str().unwrap())
        .collect();
    for expected in ["Open", "Qualified", "Closed - Rejected"] {
        assert!(unmapped.contains(&expected), "{expected} in {unmapped:?}");
    }
    // Unmapped values come before every mapped one.
    let kinds: Vec<bool> = status["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value["mapping"]["kind"] == "unmapped")
        .collect();
    assert!(kinds.windows(2).all(|pair| pair[0] >= pair[1]), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_a_property_without_options_are_found_in_the_records() {
    let setup = Setup::new(120).await;
    // A rule over a free-text property: every value comes from the records themselves.
    let path = setup.dir.path().join("mappings/hubspot.toml");
    let mappings = std::fs::read_to_string(&path).unwrap();
    let with_rule = mappings.replacen(
        "\n[objects.contacts.fields]",
        "\n[[objects.contacts.stage_rules]]\nname = \"by title\"\nproperty = \"jobtitle\"\nmap = { \"Head of Growth\" = \"lead\" }\n\n[objects.contacts.fields]",
        1,
    );
    assert_ne!(with_rule, mappings);
    std::fs::write(&path, with_rule).unwrap();
    let crms = setup.crms();
    let contacts = setup_contacts(&crms).await;
    crms.hubspot_update(&contacts[0], serde_json::json!({"jobtitle": "Ops Lead"}))
        .await;
    crms.hubspot_update(&contacts[1], serde_json::json!({"jobtitle": "Ops Lead"}))
        .await;

    let (code, json, stderr) = discover(&setup, true);
    assert_eq!(code, Some(1), "{stderr}");
    let discovery: Value = serde_json::from_str(&json).unwrap();
    let title = property(&discovery, "contacts", "jobtitle");
    assert!(title["problem"].is_null(), "{title:#}");
    let values = title["values"].as_array().unwrap();
    assert_eq!(values[0]["value"], "Ops Lead");
    assert_eq!(values[0]["records"], 2);
    assert_eq!(values[0]["defined"], false);
    assert_eq!(values[0]["mapping"]["kind"], "unmapped");
    let head = values
        .iter()
        .find(|value| value["value"] == "Head of Growth")
        .expect("the seeded title");
    assert_eq!(head["mapping"]["stage"], "lead");
    assert_eq!(
        total(title),
        total(property(&discovery, "contacts", "lifecyclestage"))
    );
}

/// Two live contact ids.
async fn setup_contacts(crms: &engine_common::Crms) -> Vec<String> {
    let answer = crms
        .hubspot
        .send(
            crmsync::hubspot::client::Budget::General,
            http::Method::GET,
            "/crm/v3/objects/contacts",
            &[("limit", "2".to_string())],
            None,
            "contacts",
        )
        .await
        .unwrap();
    answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|contact| contact["id"].as_str().unwrap().to_string())
        .collect()
}
