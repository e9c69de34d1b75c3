//! HubSpot on the emulator over HTTP, beyond batches: the `partial` fault's 207 answers,
//! single-object create/update/archive, batch archive, merges, and contact-company associations
//! (v4 endpoint and the v3 `associations` parameter).

use std::net::SocketAddr;

use crmsync::emulator::data::{OrgProfile, generate};
use crmsync::emulator::faults::Faults;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use reqwest::Method;
use serde_json::{Value, json};

const SEED: u64 = 9;
const RECORDS: usize = 300;

async fn start(faults: &str) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            seed: SEED,
            records: RECORDS,
            rate_limits: false,
            faults: faults.parse::<Faults>().expect("fault profile"),
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

/// Sends a request and returns the status and the body (null when there is none).
async fn call(
    emulator: &RunningEmulator,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!("{}{path}", emulator.info().hubspot_base_url),
        )
        .bearer_auth(&emulator.info().hubspot_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON")
    };
    (status, body)
}

async fn post(emulator: &RunningEmulator, path: &str, body: Value) -> (u16, Value) {
    call(emulator, Method::POST, path, Some(body)).await
}

async fn get(emulator: &RunningEmulator, path: &str) -> (u16, Value) {
    call(emulator, Method::GET, path, None).await
}

fn new_contacts(prefix: &str, count: usize) -> Value {
    let inputs: Vec<Value> = (0..count)
        .map(|n| {
            json!({
                "properties": {"email": format!("{prefix}{n}@more.example"), "firstname": "Test"},
                "objectWriteTraceId": format!("{prefix}-{n}"),
            })
        })
        .collect();
    json!({ "inputs": inputs })
}

#[tokio::test]
async fn partial_fault_fails_some_batch_inputs_with_a_multi_status_answer() {
    let emulator = start("partial").await;
    let mut failed_traces = Vec::new();
    let mut created = 0;
    for batch in 0..4 {
        let (status, body) = post(
            &emulator,
            "/crm/v3/objects/contacts/batch/create",
            new_contacts(&format!("p{batch}-"), 100),
        )
        .await;
        let results = body["results"].as_array().expect("results").len();
        created += results;
        if status == 201 {
            assert!(body.get("errors").is_none(), "{body}");
            continue;
        }
        assert_eq!(status, 207, "{body}");
        assert_eq!(body["status"], "COMPLETE");
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(body["numErrors"], errors.len());
        assert_eq!(results + errors.len(), 100);
        for error in errors {
            assert_eq!(error["status"], "error");
            assert_eq!(error["category"], "LOCKED");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(error["links"].is_object() && error["errors"].is_array());
            failed_traces.push(
                error["context"]["objectWriteTraceId"][0]
                    .as_str()
                    .expect("trace id")
                    .to_string(),
            );
        }
    }
    // About one in twenty, never all or none over 400 inputs.
    assert!(
        (5..=50).contains(&failed_traces.len()),
        "{} failures",
        failed_traces.len()
    );
    assert_eq!(created + failed_traces.len(), 400);

    // Updates and upserts fail the same way, with the id in the context.
    let (_, page) = get(
        &emulator,
        "/crm/v3/objects/contacts?limit=100&properties=email",
    )
    .await;
    let live: Vec<&Value> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["properties"]["email"].is_string())
        .collect();
    let updates: Vec<Value> = live
        .iter()
        .map(|r| json!({"id": r["id"], "properties": {"jobtitle": "Partial"}}))
        .collect();
    let upserts: Vec<Value> = live
        .iter()
        .map(|r| json!({"id": r["properties"]["email"], "idProperty": "email", "properties": {"jobtitle": "Upserted"}}))
        .collect();
    let mut statuses = Vec::new();
    for (action, inputs) in [
        ("update", &updates),
        ("update", &updates),
        ("upsert", &upserts),
        ("upsert", &upserts),
    ] {
        let (status, body) = post(
            &emulator,
            &format!("/crm/v3/objects/contacts/batch/{action}"),
            json!({ "inputs": inputs }),
        )
        .await;
        if status == 207 {
            let errors = body["errors"].as_array().expect("errors");
            assert!(
                errors
                    .iter()
                    .all(|e| e["category"] == "LOCKED" && e["context"]["ids"][0].is_string()),
                "{body}"
            );
            assert_eq!(
                body["results"].as_array().expect("results").len() + errors.len(),
                inputs.len()
            );
        } else {
            assert_eq!(status, 200, "{body}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&207), "{statuses:?}");
}

#[tokio::test]
async fn without_the_fault_batches_succeed_whole() {
    let emulator = start("none").await;
    for batch in 0..3 {
        let (status, body) = post(
            &emulator,
            "/crm/v3/objects/contacts/batch/create",
            new_contacts(&format!("n{batch}-"), 100),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test]
async fn single_object_create_update_and_archive() {
    let emulator = start("partial").await;
    // Create: 201 with the record.
    let (status, created) = post(
        &emulator,
        "/crm/v3/objects/contacts",
        json!({"properties": {"email": "single@more.example", "lifecyclestage": "lead"}, "associations": []}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["properties"]["email"], "single@more.example");
    assert_eq!(created["archived"], false);

    // The same email again: 409 CONFLICT naming the existing id.
    let (status, conflict) = post(
        &emulator,
        "/crm/v3/objects/contacts",
        json!({"properties": {"email": "single@more.example"}}),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["category"], "CONFLICT");
    assert_eq!(
        conflict["message"],
        format!("Contact already exists. Existing ID: {id}")
    );

    // Validation is the batch endpoints': unknown properties fail with VALIDATION_ERROR.
    let (status, invalid) = post(
        &emulator,
        "/crm/v3/objects/companies",
        json!({"properties": {"no_such_property": "x"}}),
    )
    .await;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(invalid["category"], "VALIDATION_ERROR");

    // Update by id: 200, forward-only lifecycle stage.
    let (status, updated) = call(
        &emulator,
        Method::PATCH,
        &format!("/crm/v3/objects/contacts/{id}"),
        Some(json!({"properties": {"lifecyclestage": "customer", "jobtitle": "CTO"}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["id"], id.as_str());
    let (_, read) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{id}?properties=jobtitle,lifecyclestage"),
    )
    .await;
    assert_eq!(read["properties"]["jobtitle"], "CTO");
    assert_eq!(read["properties"]["lifecyclestage"], "customer");

    // Update by email with idProperty; the backward stage is ignored.
    let (status, by_email) = call(
        &emulator,
        Method::PATCH,
        "/crm/v3/objects/contacts/SINGLE@more.example?idProperty=email",
        Some(json!({"properties": {"lifecyclestage": "lead", "jobtitle": "CEO"}})),
    )
    .await;
    assert_eq!(status, 200, "{by_email}");
    assert_eq!(by_email["id"], id.as_str());
    let (_, read) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{id}?properties=jobtitle,lifecyclestage"),
    )
    .await;
    assert_eq!(read["properties"]["jobtitle"], "CEO");
    assert_eq!(read["properties"]["lifecyclestage"], "customer");

    // A non-unique idProperty is refused; an unknown id is a 404.
    let (status, _) = call(
        &emulator,
        Method::PATCH,
        "/crm/v3/objects/contacts/Test?idProperty=firstname",
        Some(json!({"properties": {"jobtitle": "x"}})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, missing) = call(
        &emulator,
        Method::PATCH,
        "/crm/v3/objects/contacts/999999999",
        Some(json!({"properties": {"jobtitle": "x"}})),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["category"], "OBJECT_NOT_FOUND");

    // Delete archives: 204, then only `archived=true` finds it.
    let (status, body) = call(
        &emulator,
        Method::DELETE,
        &format!("/crm/v3/objects/contacts/{id}"),
        None,
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = get(&emulator, &format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(status, 404);
    let (status, archived) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{id}?archived=true"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(archived["archived"], true);
}

#[tokio::test]
async fn batch_archive_answers_204_and_archives() {
    let emulator = start("none").await;
    let (_, page) = get(&emulator, "/crm/v3/objects/deals?limit=3").await;
    let ids: Vec<String> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    let inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    let (status, body) = post(
        &emulator,
        "/crm/v3/objects/deals/batch/archive",
        json!({ "inputs": inputs }),
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    for id in &ids {
        let (status, _) = get(&emulator, &format!("/crm/v3/objects/deals/{id}")).await;
        assert_eq!(status, 404);
        let (status, _) = get(
            &emulator,
            &format!("/crm/v3/objects/deals/{id}?archived=true"),
        )
        .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn merging_creates_a_new_record_that_the_old_ids_resolve_to() {
    let emulator = start("none").await;
    let mut ids = Vec::new();
    for (email, job) in [
        ("primary@more.example", Some("CEO")),
        ("other@more.example", None),
    ] {
        let mut properties = json!({"email": email, "firstname": "Merge"});
        if let Some(job) = job {
            properties["jobtitle"] = json!(job);
        } else {
            properties["phone"] = json!("+1 555 0100");
            properties["jobtitle"] = json!("Intern");
        }
        let (status, created) = post(
            &emulator,
            "/crm/v3/objects/contacts",
            json!({ "properties": properties }),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().expect("id").to_string());
    }
    let (status, merged) = post(
        &emulator,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
    )
    .await;
    assert_eq!(status, 200, "{merged}");
    let merged_id = merged["id"].as_str().expect("id").to_string();
    assert!(!ids.contains(&merged_id), "the merged record gets a new id");

    let properties = "email,jobtitle,phone,hs_merged_object_ids";
    let (status, read) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{merged_id}?properties={properties}"),
    )
    .await;
    assert_eq!(status, 200);
    // The primary's values win; the other's fill the gaps.
    assert_eq!(read["properties"]["email"], "primary@more.example");
    assert_eq!(read["properties"]["jobtitle"], "CEO");
    assert_eq!(read["properties"]["phone"], "+1 555 0100");
    let absorbed: Vec<&str> = read["properties"]["hs_merged_object_ids"]
        .as_str()
        .expect("merged ids")
        .split(';')
        .collect();
    assert_eq!(absorbed, vec![ids[0].as_str(), ids[1].as_str()]);

    // Either old id reads as the merged record; both are archived.
    for old in &ids {
        let (status, read) = get(&emulator, &format!("/crm/v3/objects/contacts/{old}")).await;
        assert_eq!(status, 200);
        assert_eq!(read["id"], merged_id.as_str());
        let (status, archived) = get(
            &emulator,
            &format!("/crm/v3/objects/contacts/{old}?archived=true"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(archived["id"], old.as_str());
    }

    // Merging an unknown id is a 404; a missing field a 400.
    let (status, _) = post(
        &emulator,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": merged_id, "objectIdToMerge": "999999999"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &emulator,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": merged_id}),
    )
    .await;
    assert_eq!(status, 400);
}

/// A live seeded contact with a company that exists, and that company's id.
async fn contact_with_company(emulator: &RunningEmulator) -> (String, String) {
    let org = generate(SEED, RECORDS, OrgProfile::Classic);
    let contact = org
        .hubspot_contacts
        .iter()
        .find(|c| !c.archived)
        .expect("a live contact");
    let company_name = contact.properties.text("company").expect("company");
    let company = org
        .hubspot_companies
        .iter()
        .find(|c| c.properties.text("name") == Some(company_name))
        .expect("the company exists");
    let (status, _) = get(
        emulator,
        &format!("/crm/v3/objects/contacts/{}", contact.id),
    )
    .await;
    assert_eq!(status, 200);
    (contact.id.clone(), company.id.clone())
}

#[tokio::test]
async fn v4_associations_list_the_contacts_company() {
    let emulator = start("none").await;
    let (contact, company) = contact_with_company(&emulator).await;
    let (status, body) = get(
        &emulator,
        &format!("/crm/v4/objects/contacts/{contact}/associations/companies"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(
        results[0]["toObjectId"],
        company.parse::<u64>().expect("numeric id")
    );
    let types = results[0]["associationTypes"].as_array().expect("types");
    assert!(types.contains(&json!({"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null})));
    assert!(
        types.contains(&json!({"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}))
    );
    assert!(body.get("paging").is_none());

    // The other way round, paged.
    let (status, back) = get(
        &emulator,
        &format!("/crm/v4/objects/0-2/{company}/associations/contacts?limit=1"),
    )
    .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["results"].as_array().expect("results").len(), 1);
    assert!(
        back["results"][0]["associationTypes"]
            .as_array()
            .expect("types")
            .contains(&json!({"category": "HUBSPOT_DEFINED", "typeId": 280, "label": null}))
    );
    let after = back["paging"]["next"]["after"].as_str().expect("cursor");
    let (status, next) = get(
        &emulator,
        &format!("/crm/v4/objects/companies/{company}/associations/contacts?limit=1&after={after}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(
        next["results"][0]["toObjectId"],
        back["results"][0]["toObjectId"]
    );

    // No associations: an empty list; an unknown type: 400.
    let (status, none) = get(
        &emulator,
        &format!("/crm/v4/objects/contacts/{contact}/associations/deals"),
    )
    .await;
    assert_eq!((status, none), (200, json!({"results": []})));
    let (status, _) = get(
        &emulator,
        &format!("/crm/v4/objects/contacts/{contact}/associations/widgets"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn v3_reads_include_companies_when_asked() {
    let emulator = start("none").await;
    let (contact, company) = contact_with_company(&emulator).await;
    let expected = json!({"companies": {"results": [
        {"id": company, "type": "contact_to_company"},
        {"id": company, "type": "contact_to_company_unlabeled"},
    ]}});
    let (_, read) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{contact}?associations=companies"),
    )
    .await;
    assert_eq!(read["associations"], expected);
    let (_, plain) = get(&emulator, &format!("/crm/v3/objects/contacts/{contact}")).await;
    assert!(plain.get("associations").is_none());

    let (_, page) = get(
        &emulator,
        "/crm/v3/objects/contacts?limit=100&associations=companies",
    )
    .await;
    let listed = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["id"] == contact.as_str())
        .expect("the contact is on the first page");
    assert_eq!(listed["associations"], expected);

    // A merged contact keeps its companies.
    let (_, other) = get(&emulator, "/crm/v3/objects/contacts?limit=5").await;
    let other_id = other["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .find(|id| *id != contact)
        .expect("another contact")
        .to_string();
    let (status, merged) = post(
        &emulator,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": contact, "objectIdToMerge": other_id}),
    )
    .await;
    assert_eq!(status, 200, "{merged}");
    let merged_id = merged["id"].as_str().expect("id");
    let (_, read) = get(
        &emulator,
        &format!("/crm/v3/objects/contacts/{merged_id}?associations=companies"),
    )
    .await;
    assert_eq!(
        read["associations"]["companies"]["results"][0]["id"],
        company.as_str()
    );
}
