//! The Salesforce emulator over HTTP: the OAuth grants (JWT signature, audience, expiry),
//! sessions, SOQL query paging, describe, limits — as a client written against the real API
//! sees them.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crmsync::emulator::data::OrgProfile;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;

async fn start(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator starts")
}

fn config(records: usize) -> EmulatorConfig {
    EmulatorConfig {
        records,
        rate_limits: false,
        ..EmulatorConfig::default()
    }
}

/// A JWT bearer assertion signed with `pem`.
fn assertion(pem: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("PEM private key");
    let signed = format!("{header}.{payload}");
    let signature = SigningKey::<Sha256>::new(key).sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_vec()))
}

fn claims(emulator: &RunningEmulator, audience: &str, expires_in: i64) -> Value {
    json!({
        "iss": emulator.info().salesforce_client_id,
        "sub": emulator.info().salesforce_username,
        "aud": audience,
        "exp": jiff::Timestamp::now().as_second() + expires_in,
    })
}

async fn token_request(emulator: &RunningEmulator, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/services/oauth2/token",
            emulator.info().salesforce_login_url
        ))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn jwt_login(emulator: &RunningEmulator) -> String {
    let pem = std::fs::read_to_string(&emulator.info().salesforce_private_key_file)
        .expect("private key file");
    let jwt = assertion(&pem, &claims(emulator, "https://login.salesforce.com", 180));
    let (status, body) = token_request(
        emulator,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &jwt),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

async fn get(emulator: &RunningEmulator, token: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", emulator.info().salesforce_login_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn query(emulator: &RunningEmulator, token: &str, soql: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!(
            "{}/services/data/v62.0/query",
            emulator.info().salesforce_login_url
        ))
        .query(&[("q", soql)])
        .bearer_auth(token)
        .send()
        .await
        .expect("query");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn jwt_bearer_login_answers_like_salesforce() {
    let emulator = start(config(50)).await;
    let pem = std::fs::read_to_string(&emulator.info().salesforce_private_key_file)
        .expect("private key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    for audience in [
        "https://login.salesforce.com",
        "https://test.salesforce.com",
    ] {
        let jwt = assertion(&pem, &claims(&emulator, audience, 180));
        let (status, body) = token_request(
            &emulator,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["instance_url"], emulator.info().salesforce_login_url);
        assert!(
            body.get("refresh_token").is_none(),
            "JWT grants carry no refresh token"
        );
        assert!(body.get("expires_in").is_none());
        let id = body["id"].as_str().expect("id");
        let parts: Vec<&str> = id.rsplitn(3, '/').collect();
        assert!(
            parts[0].starts_with("005") && parts[1].starts_with("00D"),
            "{id}"
        );
        let issued = body["issued_at"].as_str().expect("issued_at is a string");
        assert!(issued.parse::<i64>().expect("epoch milliseconds") > 1_600_000_000_000);
        assert!(!body["signature"].as_str().unwrap_or_default().is_empty());
    }
}

#[tokio::test]
async fn jwt_bearer_refuses_bad_signatures_audiences_issuers_and_expired_assertions() {
    let emulator = start(config(20)).await;
    let pem = std::fs::read_to_string(&emulator.info().salesforce_private_key_file)
        .expect("private key file");
    let refused = |jwt: String| {
        let emulator = &emulator;
        async move {
            token_request(
                emulator,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &jwt),
                ],
            )
            .await
        }
    };
    // Signed by someone else's key.
    let other = crmsync::emulator::salesforce::oauth::AppKeys::generate(999).expect("other key");
    let forged = assertion(
        secrecy::ExposeSecret::expose_secret(&other.private_pem),
        &claims(&emulator, "https://login.salesforce.com", 180),
    );
    assert_eq!(
        refused(forged).await,
        (
            400,
            json!({"error": "invalid_grant", "error_description": "invalid assertion"})
        )
    );
    // A tampered payload under a genuine signature.
    let genuine = assertion(
        &pem,
        &claims(&emulator, "https://login.salesforce.com", 180),
    );
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(claims(&emulator, "https://login.salesforce.com", 9_999).to_string());
    assert_eq!(
        refused(parts.join(".")).await.1["error_description"],
        "invalid assertion"
    );
    let wrong_audience = assertion(&pem, &claims(&emulator, "https://example.my.site.com", 180));
    assert_eq!(
        refused(wrong_audience).await,
        (
            400,
            json!({"error": "invalid_grant", "error_description": "audience is invalid"})
        )
    );
    let expired = assertion(
        &pem,
        &claims(&emulator, "https://login.salesforce.com", -60),
    );
    assert_eq!(
        refused(expired).await,
        (
            400,
            json!({"error": "invalid_grant", "error_description": "expired authorization code"})
        )
    );
    let mut stranger = claims(&emulator, "https://login.salesforce.com", 180);
    stranger["iss"] = json!("3MVG9-not-this-app");
    assert_eq!(
        refused(assertion(&pem, &stranger)).await,
        (
            400,
            json!({"error": "invalid_client_id", "error_description": "client identifier invalid"})
        )
    );
    assert_eq!(refused("not.a.jwt".into()).await.0, 400);
}

#[tokio::test]
async fn refresh_and_client_credentials_grants_and_expired_sessions() {
    let emulator = start(EmulatorConfig {
        salesforce_session_lifetime: jiff::SignedDuration::from_secs(1),
        ..config(20)
    })
    .await;
    let info = emulator.info().clone();
    let (status, body) = token_request(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &info.salesforce_client_id),
            ("client_secret", &info.salesforce_client_secret),
            ("refresh_token", &info.salesforce_refresh_token),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "api refresh_token");
    let token = body["access_token"].as_str().expect("token").to_string();
    let (status, body) = token_request(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &info.salesforce_client_id),
            ("refresh_token", "5Aep861-revoked"),
        ],
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "expired access/refresh token"})
        )
    );
    // Client credentials, with HTTP Basic as simple-salesforce sends them.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/services/oauth2/token",
            info.salesforce_login_url
        ))
        .basic_auth(
            &info.salesforce_client_id,
            Some(&info.salesforce_client_secret),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status().as_u16(), 200);
    let (status, body) = token_request(
        &emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &info.salesforce_client_id),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid_client", "error_description": "invalid client credentials"})
        )
    );
    // The session works, then times out after a second without calls.
    let response = get(&emulator, &token, "/services/data/v62.0/limits").await;
    assert_eq!(response.status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let response = get(&emulator, &token, "/services/data/v62.0/limits").await;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let response = get(&emulator, "00Dbogus!token", "/services/data/v62.0/limits").await;
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn query_pages_follow_next_records_url_in_batches() {
    let emulator = start(config(1_500)).await;
    let token = jwt_login(&emulator).await;
    let (status, everything) = query(&emulator, &token, "SELECT COUNT() FROM Lead").await;
    assert_eq!(status, 200);
    let total = everything["totalSize"].as_u64().expect("count") as usize;
    assert!(total > 800, "{total} leads");
    assert_eq!(everything["records"], json!([]));

    let client = reqwest::Client::new();
    let first = client
        .get(format!(
            "{}/services/data/v62.0/query",
            emulator.info().salesforce_login_url
        ))
        .query(&[("q", "SELECT Id, Email FROM Lead ORDER BY Id")])
        .header("Sforce-Query-Options", "batchSize=300")
        .bearer_auth(&token)
        .send()
        .await
        .expect("query");
    let limit_info = first
        .headers()
        .get("sforce-limit-info")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .expect("Sforce-Limit-Info");
    assert!(limit_info.starts_with("api-usage="), "{limit_info}");
    let mut page: Value = first.json().await.expect("JSON");
    let mut ids: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(page["totalSize"].as_u64(), Some(total as u64));
        for record in page["records"].as_array().expect("records") {
            assert_eq!(record["attributes"]["type"], "Lead");
            ids.push(record["Id"].as_str().expect("Id").to_string());
        }
        if page["done"] == json!(true) {
            assert!(page.get("nextRecordsUrl").is_none());
            break;
        }
        assert_eq!(page["records"].as_array().map(Vec::len), Some(300));
        let next = page["nextRecordsUrl"]
            .as_str()
            .expect("nextRecordsUrl")
            .to_string();
        assert!(next.starts_with("/services/data/v62.0/query/01g"), "{next}");
        page = get(&emulator, &token, &next)
            .await
            .json()
            .await
            .expect("JSON");
    }
    assert_eq!(ids.len(), total);
    assert_eq!(pages, total.div_ceil(300));
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "ordered by Id, no repeats");

    let response = get(
        &emulator,
        &token,
        "/services/data/v62.0/query/01gNOSUCHLOCATOR-300",
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.json::<Value>().await.expect("JSON")[0]["errorCode"],
        "INVALID_QUERY_LOCATOR"
    );
}

#[tokio::test]
async fn soql_errors_and_escapes_come_back_as_salesforce_words_them() {
    let emulator = start(config(300)).await;
    let token = jwt_login(&emulator).await;
    let (status, body) = query(&emulator, &token, "SELECT Id, Foo FROM Lead").await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    assert_eq!(
        body[0]["message"],
        "\nSELECT Id, Foo FROM Lead\n           ^\nERROR at Row:1:Column:12\nNo such column 'Foo' on entity 'Lead'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
    );
    let (status, body) = query(&emulator, &token, "SELECT Id FROM Leed").await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("INVALID_TYPE"))
    );
    let (status, body) = query(&emulator, &token, "SELECT Id FRM Lead").await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("MALFORMED_QUERY"))
    );

    // A name with an apostrophe, escaped as the docs say.
    let create = reqwest::Client::new()
        .post(format!(
            "{}/services/data/v62.0/sobjects/Lead",
            emulator.info().salesforce_login_url
        ))
        .bearer_auth(&token)
        .json(&json!({"LastName": "O'Brien-Ní", "Company": "Ac\\me", "Email": "ob@acme.example"}))
        .send()
        .await
        .expect("create");
    assert_eq!(create.status().as_u16(), 201);
    let (status, body) = query(
        &emulator,
        &token,
        r"SELECT Name, Company FROM Lead WHERE LastName = 'o\'brien-n\u00ed' AND Company LIKE 'ac\\%'",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalSize"], 1);
    assert_eq!(body["records"][0]["Name"], "O'Brien-Ní");
    let (status, body) = query(
        &emulator,
        &token,
        r"SELECT Id FROM Lead WHERE LastName = 'O\q'",
    )
    .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("MALFORMED_QUERY"))
    );
}

#[tokio::test]
async fn relationship_fields_and_date_filters_work_over_http() {
    let emulator = start(config(300)).await;
    let token = jwt_login(&emulator).await;
    let (status, body) = query(
        &emulator,
        &token,
        "SELECT Id, Owner.Email, ConvertedContact.Email FROM Lead WHERE IsConverted = true AND CreatedDate > 2020-01-01T00:00:00Z LIMIT 5",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().expect("records");
    assert!(!records.is_empty());
    for record in records {
        assert_eq!(record["Owner"]["attributes"]["type"], "User");
        assert!(
            record["Owner"]["Email"]
                .as_str()
                .is_some_and(|email| email.contains('@'))
        );
        assert_eq!(record["ConvertedContact"]["attributes"]["type"], "Contact");
    }
}

#[tokio::test]
async fn describe_and_picklists_follow_the_org_profile() {
    for (profile, statuses) in [
        (
            OrgProfile::Classic,
            [
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ],
        ),
        (
            OrgProfile::Custom,
            [
                "Open",
                "Qualified",
                "Closed - Converted",
                "Closed - Rejected",
            ],
        ),
    ] {
        let emulator = start(EmulatorConfig {
            profile,
            ..config(50)
        })
        .await;
        let token = jwt_login(&emulator).await;
        let describe: Value = get(
            &emulator,
            &token,
            "/services/data/v62.0/sobjects/Lead/describe",
        )
        .await
        .json()
        .await
        .expect("JSON");
        assert_eq!(describe["name"], "Lead");
        assert_eq!(describe["keyPrefix"], "00Q");
        let fields = describe["fields"].as_array().expect("fields");
        let status = fields
            .iter()
            .find(|field| field["name"] == "Status")
            .expect("Status field");
        assert_eq!(status["type"], "picklist");
        assert_eq!(status["restrictedPicklist"], true);
        let active: Vec<&str> = status["picklistValues"]
            .as_array()
            .expect("values")
            .iter()
            .filter(|value| value["active"] == true)
            .filter_map(|value| value["value"].as_str())
            .collect();
        assert_eq!(active, statuses);
        let external = fields
            .iter()
            .find(|field| field["externalId"] == true)
            .expect("an external id field");
        assert_eq!(external["name"], "HubSpot_Contact_Id__c");
        let (_, lead_statuses) = query(
            &emulator,
            &token,
            "SELECT ApiName, IsConverted FROM LeadStatus ORDER BY SortOrder",
        )
        .await;
        let names: Vec<&str> = lead_statuses["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|record| record["ApiName"].as_str())
            .collect();
        assert_eq!(names, statuses);
        let response = get(
            &emulator,
            &token,
            "/services/data/v62.0/sobjects/Leed/describe",
        )
        .await;
        assert_eq!(response.status().as_u16(), 404);
        let response = get(
            &emulator,
            &token,
            "/services/data/v99.0/sobjects/Lead/describe",
        )
        .await;
        assert_eq!(response.status().as_u16(), 404);
    }
}

#[tokio::test]
async fn the_daily_allocation_runs_out_with_request_limit_exceeded() {
    let emulator = start(EmulatorConfig {
        rate_limits: true,
        salesforce_daily_api_requests: 5,
        ..config(20)
    })
    .await;
    let token = jwt_login(&emulator).await;
    let mut usages = Vec::new();
    for _ in 0..5 {
        let response = get(&emulator, &token, "/services/data/v62.0/limits").await;
        assert_eq!(response.status().as_u16(), 200);
        usages.push(
            response
                .headers()
                .get("sforce-limit-info")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
                .unwrap_or_default(),
        );
    }
    assert_eq!(
        usages,
        [
            "api-usage=1/5",
            "api-usage=2/5",
            "api-usage=3/5",
            "api-usage=4/5",
            "api-usage=5/5"
        ]
    );
    let response = get(&emulator, &token, "/services/data/v62.0/limits").await;
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
}

#[tokio::test]
async fn the_same_seed_serves_the_same_org() {
    let soql = "SELECT Id, Email, Status, Owner.Email, CreatedDate FROM Lead ORDER BY Id LIMIT 200";
    let mut answers = Vec::new();
    for seed in [7, 7, 8] {
        let emulator = start(EmulatorConfig {
            seed,
            ..config(200)
        })
        .await;
        let token = jwt_login(&emulator).await;
        answers.push(query(&emulator, &token, soql).await.1);
    }
    assert_eq!(answers[0], answers[1]);
    assert_ne!(answers[0], answers[2]);
}

/// Creates a Bulk API 2.0 query job at `base` (`…/jobs/query`) and returns its job info.
async fn create_query_job(client: &reqwest::Client, base: &str, token: &str, soql: &str) -> Value {
    client
        .post(base)
        .bearer_auth(token)
        .json(&json!({"operation": "query", "query": soql}))
        .send()
        .await
        .expect("create job")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn bulk_query_jobs_run_to_completion_and_page_csv_by_locator() {
    let emulator = start(config(600)).await;
    let token = jwt_login(&emulator).await;
    let base = format!(
        "{}/services/data/v62.0/jobs/query",
        emulator.info().salesforce_login_url
    );
    let client = reqwest::Client::new();
    let created = create_query_job(
        &client,
        &base,
        &token,
        "SELECT Id, LastName, Owner.Email FROM Lead ORDER BY Id",
    )
    .await;
    assert_eq!(created["state"], "UploadComplete");
    assert_eq!(created["object"], "Lead");
    let creator = created["createdById"].as_str().expect("creator");
    assert!(
        creator.starts_with("005") && creator.len() == 18,
        "{creator}"
    );
    let id = created["id"].as_str().expect("job id").to_string();
    assert!(id.starts_with("750"));
    let early = client
        .get(format!("{base}/{id}/results"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("early results");
    assert_eq!(early.status().as_u16(), 412);
    let mut states = Vec::new();
    loop {
        let job: Value = client
            .get(format!("{base}/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("JSON");
        states.push(job["state"].as_str().unwrap_or_default().to_string());
        if job["state"] == "JobComplete" {
            assert_eq!(job["jobType"], "V2Query");
            break;
        }
        assert!(states.len() < 10, "{states:?}");
    }
    assert_eq!(states, ["UploadComplete", "InProgress", "JobComplete"]);
    let (status, count) = query(&emulator, &token, "SELECT COUNT() FROM Lead").await;
    assert_eq!(status, 200);
    let total = count["totalSize"].as_u64().expect("count") as usize;
    let mut locator: Option<String> = None;
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut request = client
            .get(format!("{base}/{id}/results"))
            .bearer_auth(&token)
            .query(&[("maxRecords", "150")]);
        if let Some(locator) = &locator {
            request = request.query(&[("locator", locator.as_str())]);
        }
        let response = request.send().await.expect("results");
        assert_eq!(response.status().as_u16(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
                .expect(name)
        };
        assert_eq!(header("content-type"), "text/csv");
        let next = header("sforce-locator");
        let count: usize = header("sforce-numberofrecords").parse().expect("count");
        let body = response.text().await.expect("CSV");
        let mut rows = body.lines();
        assert_eq!(rows.next(), Some(r#""Id","LastName","Owner.Email""#));
        let rows: Vec<String> = rows.map(str::to_string).collect();
        assert_eq!(rows.len(), count);
        lines.extend(rows);
        if next == "null" {
            break;
        }
        locator = Some(next);
    }
    assert_eq!(lines.len(), total);
    assert!(lines.iter().all(|line| line.starts_with("\"00Q")));

    // An ended job cannot be aborted, only deleted (with its results); a running one cannot
    // be deleted until it is aborted.
    let abort = |id: &str| {
        client
            .patch(format!("{base}/{id}"))
            .bearer_auth(&token)
            .json(&json!({"state": "Aborted"}))
            .send()
    };
    let delete = |id: &str| {
        client
            .delete(format!("{base}/{id}"))
            .bearer_auth(&token)
            .send()
    };
    let refused = abort(&id).await.expect("abort");
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body[0]["errorCode"], "INVALIDJOBSTATE");
    assert_eq!(delete(&id).await.expect("delete").status().as_u16(), 204);
    assert_eq!(delete(&id).await.expect("delete").status().as_u16(), 404);
    let running = create_query_job(&client, &base, &token, "SELECT Id FROM Lead").await;
    let running = running["id"].as_str().expect("job id").to_string();
    let refused = delete(&running).await.expect("delete");
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body[0]["errorCode"], "API_ERROR");
    let aborted = abort(&running).await.expect("abort");
    assert_eq!(aborted.status().as_u16(), 200);
    let aborted: Value = aborted.json().await.expect("JSON");
    assert_eq!(aborted["state"], "Aborted");
    assert_eq!(
        delete(&running).await.expect("delete").status().as_u16(),
        204
    );
}

#[tokio::test]
async fn bulk_results_take_any_max_records_without_failing() {
    let emulator = start(config(100)).await;
    let token = jwt_login(&emulator).await;
    let base = format!(
        "{}/services/data/v62.0/jobs/query",
        emulator.info().salesforce_login_url
    );
    let client = reqwest::Client::new();
    let created = create_query_job(&client, &base, &token, "SELECT Id FROM Lead").await;
    let id = created["id"].as_str().expect("job id");
    for _ in 0..3 {
        client
            .get(format!("{base}/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("poll");
    }
    let first = client
        .get(format!("{base}/{id}/results?maxRecords=5"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("results");
    let locator = first
        .headers()
        .get("sforce-locator")
        .and_then(|value| value.to_str().ok())
        .expect("locator")
        .to_string();
    let rest = client
        .get(format!(
            "{base}/{id}/results?locator={locator}&maxRecords=18446744073709551615"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("results");
    assert_eq!(rest.status().as_u16(), 200);
    assert_eq!(
        rest.headers()
            .get("sforce-locator")
            .and_then(|value| value.to_str().ok()),
        Some("null")
    );
}
