//! Salesforce writes over HTTP: single-record create/read/update/delete, upsert by external
//! id, sObject Collections with allOrNone, the errors the real API answers with, the `partial`
//! fault, and the `updated`/`deleted` replication feeds seeing every change.

use std::net::SocketAddr;

use crmsync::emulator::faults::Faults;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

async fn start(faults: &str) -> RunningEmulator {
    RunningEmulator::start(
        EmulatorConfig {
            records: 300,
            rate_limits: false,
            faults: faults.parse::<Faults>().expect("faults"),
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts")
}

/// A client logged in with the client-credentials grant.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn login(emulator: &RunningEmulator) -> Self {
        let info = emulator.info();
        let http = reqwest::Client::new();
        let body: Value = http
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
            .expect("token")
            .json()
            .await
            .expect("JSON");
        Self {
            http,
            base: format!("{}/services/data/v62.0", info.salesforce_login_url),
            token: body["access_token"].as_str().expect("token").to_string(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, body)
    }

    async fn query(&self, soql: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/query", self.base))
            .query(&[("q", soql)])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("query");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("JSON")
    }
}

use reqwest::Method;

#[tokio::test]
async fn single_records_are_created_read_updated_and_deleted() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let (status, created) = client
        .send(
            Method::POST,
            "/sobjects/Lead",
            Some(json!({"FirstName": "Siobhán", "LastName": "O'Neill", "Company": "Acme", "Email": "siobhan@acme.example"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let keys: Vec<&String> = created.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["id", "success", "errors"]);
    let id = created["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("00Q") && id.len() == 18);

    let (status, lead) = client
        .send(Method::GET, &format!("/sobjects/Lead/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(lead["attributes"]["type"], "Lead");
    assert_eq!(lead["Name"], "Siobhán O'Neill");
    assert_eq!(lead["Status"], "Open - Not Contacted", "the default status");
    assert_eq!(lead["IsConverted"], false);
    let created_stamp = lead["SystemModstamp"].as_str().expect("stamp").to_string();
    assert!(created_stamp.ends_with("+0000"), "{created_stamp}");

    // Stamps are kept to the second, as Salesforce keeps them.
    assert!(created_stamp.ends_with(".000+0000"), "{created_stamp}");
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{id}"),
            Some(json!({"Status": "Working - Contacted", "Title": "VP Sales"})),
        )
        .await;
    assert_eq!((status, body), (204, Value::Null));
    let (_, lead) = client
        .send(
            Method::GET,
            &format!("/sobjects/Lead/{id}?fields=Status,Title,SystemModstamp"),
            None,
        )
        .await;
    assert_eq!(lead["Status"], "Working - Contacted");
    assert_eq!(lead["Title"], "VP Sales");
    assert!(lead["SystemModstamp"].as_str() > Some(created_stamp.as_str()));

    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{id}"),
            Some(json!({"Status": "Hot"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!([{
            "message": "Lead Status: bad value for restricted picklist field: Hot",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["Status"],
        }])
    );
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{id}"),
            Some(json!({"Favourite__c": 1})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body[0]["message"],
        "No such column 'Favourite__c' on sobject of type Lead"
    );
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{id}"),
            Some(json!({"CreatedDate": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("INVALID_FIELD_FOR_INSERT_UPDATE"))
    );
    let (status, body) = client
        .send(
            Method::POST,
            "/sobjects/Lead",
            Some(json!({"FirstName": "No", "Email": "not-an-email"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_EMAIL_ADDRESS");

    let (status, _) = client
        .send(Method::DELETE, &format!("/sobjects/Lead/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = client
        .send(Method::DELETE, &format!("/sobjects/Lead/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body[0]["errorCode"], "ENTITY_IS_DELETED");
    let (status, body) = client
        .send(Method::GET, "/sobjects/Lead/not-an-id", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body[0]["message"],
        "Provided external ID field does not exist or is not accessible: not-an-id"
    );
    let all = client
        .query(&format!("SELECT Id FROM Lead WHERE Id = '{id}'"))
        .await;
    assert_eq!(all["totalSize"], 0, "deleted records leave /query");
}

#[tokio::test]
async fn converted_leads_cannot_be_updated() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let converted = client
        .query("SELECT Id FROM Lead WHERE IsConverted = true LIMIT 1")
        .await;
    let id = converted["records"][0]["Id"]
        .as_str()
        .expect("a converted lead");
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{id}"),
            Some(json!({"Title": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!([{"message": "cannot reference converted lead", "errorCode": "CANNOT_UPDATE_CONVERTED_LEAD", "fields": []}])
    );
}

#[tokio::test]
async fn upsert_by_external_id_creates_then_updates_and_refuses_duplicates() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let path = "/sobjects/Lead/HubSpot_Contact_Id__c/hs-4242";
    let (status, body) = client
        .send(
            Method::PATCH,
            path,
            Some(json!({"LastName": "Okafor", "Company": "Initech"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    let id = body["id"].as_str().expect("id").to_string();
    let (status, body) = client
        .send(Method::PATCH, path, Some(json!({"Title": "CTO"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );
    let (status, lead) = client.send(Method::GET, path, None).await;
    assert_eq!((status, lead["Title"].clone()), (200, json!("CTO")));
    let (status, body) = client
        .send(
            Method::PATCH,
            "/sobjects/Lead/Company/Initech",
            Some(json!({"Title": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body[0]["message"],
        "Provided external ID field does not exist or is not accessible: Company"
    );
    let (status, body) = client
        .send(
            Method::POST,
            "/sobjects/Lead",
            Some(json!({"LastName": "Twin", "Company": "Initech", "HubSpot_Contact_Id__c": "HS-4242"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "DUPLICATE_VALUE");
    assert_eq!(
        body[0]["message"],
        format!(
            "duplicate value found: HubSpot_Contact_Id__c duplicates value on record with id: {}",
            &id[..15]
        )
    );
}

#[tokio::test]
async fn collections_answer_per_record_and_all_or_none_rolls_back() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let before = client.query("SELECT COUNT() FROM Lead").await["totalSize"].clone();
    let records = json!([
        {"attributes": {"type": "Lead"}, "LastName": "Ng", "Company": "Hooli"},
        {"attributes": {"type": "Lead"}, "LastName": "Lee"},
        {"attributes": {"type": "Contact"}, "LastName": "Ibe"},
    ]);
    let (status, results) = client
        .send(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        results[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(results[1]["errors"][0]["fields"], json!(["Company"]));
    assert_eq!(
        results[2]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert!(results[0].get("id").is_none());
    assert_eq!(
        client.query("SELECT COUNT() FROM Lead").await["totalSize"],
        before
    );

    let (status, results) = client
        .send(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": false, "records": records})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["success"], true);
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[2]["success"], true);
    assert!(
        results[2]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("003"))
    );

    let too_many: Vec<Value> = (0..201)
        .map(|n| json!({"attributes": {"type": "Lead"}, "LastName": format!("N{n}"), "Company": "X"}))
        .collect();
    let (status, body) = client
        .send(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"records": too_many})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "EXCEEDED_ID_LIMIT");

    // Upsert through collections: one new, one existing.
    let (status, results) = client
        .send(
            Method::PATCH,
            "/composite/sobjects/Contact/HubSpot_Contact_Id__c",
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Contact"}, "HubSpot_Contact_Id__c": "hs-1", "LastName": "Abe"},
                {"attributes": {"type": "Contact"}, "HubSpot_Contact_Id__c": "hs-1", "Title": "CFO"},
            ]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["created"], true);
    assert_eq!(results[1]["success"], false, "{results}");
}

#[tokio::test]
async fn the_partial_fault_fails_some_items_with_unable_to_lock_row() {
    let emulator = start("partial").await;
    let client = Client::login(&emulator).await;
    let leads = client
        .query("SELECT Id FROM Lead WHERE IsConverted = false LIMIT 150")
        .await;
    let records: Vec<Value> = leads["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|lead| json!({"attributes": {"type": "Lead"}, "Id": lead["Id"], "Title": "Buyer"}))
        .collect();
    let (status, results) = client
        .send(
            Method::PATCH,
            "/composite/sobjects",
            Some(json!({"records": records})),
        )
        .await;
    assert_eq!(status, 200);
    let failed: Vec<&Value> = results
        .as_array()
        .expect("results")
        .iter()
        .filter(|result| result["success"] == false)
        .collect();
    assert!(
        !failed.is_empty() && failed.len() < 30,
        "{} failed",
        failed.len()
    );
    for failure in failed {
        assert_eq!(failure["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    }
}

#[tokio::test]
async fn updated_and_deleted_feeds_and_incremental_queries_see_writes() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let start_at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(2);
    let leads = client
        .query("SELECT Id FROM Lead WHERE IsConverted = false ORDER BY Id LIMIT 2")
        .await;
    let changed = leads["records"][0]["Id"]
        .as_str()
        .expect("lead")
        .to_string();
    let removed = leads["records"][1]["Id"]
        .as_str()
        .expect("lead")
        .to_string();
    client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{changed}"),
            Some(json!({"Title": "New"})),
        )
        .await;
    client
        .send(Method::DELETE, &format!("/sobjects/Lead/{removed}"), None)
        .await;
    let end_at = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(2);
    let window = format!(
        "?start={}&end={}",
        start_at.strftime("%Y-%m-%dT%H:%M:%S%:z"),
        end_at.strftime("%Y-%m-%dT%H:%M:%S%:z")
    )
    .replace('+', "%2B");
    let (status, updated) = client
        .send(
            Method::GET,
            &format!("/sobjects/Lead/updated/{window}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["ids"], json!([changed]));
    assert!(updated["latestDateCovered"].as_str().is_some());
    let (status, deleted) = client
        .send(
            Method::GET,
            &format!("/sobjects/Lead/deleted/{window}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deletedRecords"][0]["id"], removed);
    let since = start_at.strftime("%Y-%m-%dT%H:%M:%SZ");
    let incremental = client
        .query(&format!(
            "SELECT Id FROM Lead WHERE SystemModstamp > {since}"
        ))
        .await;
    assert_eq!(incremental["records"][0]["Id"], changed);
    assert_eq!(incremental["totalSize"], 1);
    let stats = emulator.stats();
    assert_eq!(stats.records_written.get("salesforce Lead"), Some(&2));
}

#[tokio::test]
async fn writes_keep_to_what_salesforce_allows() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    // Upserting by record id only updates.
    let (status, body) = client
        .send(
            Method::PATCH,
            "/sobjects/Lead/Id/00Q000000000zzzAAA",
            Some(json!({"LastName": "Nobody", "Company": "X"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");
    // Read-only objects stay as they are.
    let users = client.query("SELECT Id FROM User LIMIT 1").await;
    let user = users["records"][0]["Id"].as_str().expect("a user");
    let (status, body) = client
        .send(Method::DELETE, &format!("/sobjects/User/{user}"), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INSUFFICIENT_ACCESS_OR_READONLY");
    // A body that is not a record is refused, not taken as an empty update.
    let leads = client
        .query("SELECT Id FROM Lead WHERE IsConverted = false LIMIT 1")
        .await;
    let lead = leads["records"][0]["Id"].as_str().expect("a lead");
    let (status, body) = client
        .send(
            Method::PATCH,
            &format!("/sobjects/Lead/{lead}"),
            Some(json!([])),
        )
        .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("JSON_PARSER_ERROR"))
    );
    // The URL's external id wins over one in the body: the upsert stays idempotent.
    for _ in 0..2 {
        let (status, _) = client
            .send(
                Method::PATCH,
                "/sobjects/Lead/HubSpot_Contact_Id__c/hs-9",
                Some(json!({"LastName": "Ito", "Company": "Y", "HubSpot_Contact_Id__c": "hs-10"})),
            )
            .await;
        assert!(status == 201 || status == 200, "{status}");
    }
    let keyed = client
        .query("SELECT HubSpot_Contact_Id__c FROM Lead WHERE LastName = 'Ito'")
        .await;
    assert_eq!(keyed["totalSize"], 1);
    assert_eq!(keyed["records"][0]["HubSpot_Contact_Id__c"], "hs-9");
    // The same key twice in one request: the second is refused even when the key exists.
    let (status, results) = client
        .send(
            Method::PATCH,
            "/composite/sobjects/Lead/HubSpot_Contact_Id__c",
            Some(json!({"records": [
                {"attributes": {"type": "Lead"}, "HubSpot_Contact_Id__c": "hs-9", "Title": "A"},
                {"attributes": {"type": "Lead"}, "HubSpot_Contact_Id__c": "HS-9", "Title": "B"},
            ]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["success"], true, "{results}");
    assert_eq!(results[1]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
}

#[tokio::test]
async fn a_new_stage_brings_its_probability() {
    let emulator = start("none").await;
    let client = Client::login(&emulator).await;
    let (status, created) = client
        .send(
            Method::POST,
            "/sobjects/Opportunity",
            Some(json!({"Name": "Renewal", "StageName": "Prospecting", "CloseDate": "2026-12-31"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    client
        .send(
            Method::PATCH,
            &format!("/sobjects/Opportunity/{id}"),
            Some(json!({"StageName": "Closed Won"})),
        )
        .await;
    let (_, opportunity) = client
        .send(
            Method::GET,
            &format!("/sobjects/Opportunity/{id}?fields=StageName,Probability,IsClosed,IsWon,ForecastCategory"),
            None,
        )
        .await;
    assert_eq!(opportunity["Probability"], 100.0);
    assert_eq!(opportunity["IsClosed"], true);
    assert_eq!(opportunity["IsWon"], true);
    assert_eq!(opportunity["ForecastCategory"], "Closed");
}
