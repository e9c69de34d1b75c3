//! Hostile values through the SOQL builder to the emulator's parser over HTTP: a lead is
//! created with each value as its last name, and a query built with that value finds exactly
//! that lead — the value never changes what the query means.

mod salesforce_common;

use crmsync::emulator::EmulatorConfig;
use crmsync::salesforce::client::{Body, SalesforceClient};
use crmsync::salesforce::describe::ObjectDescribe;
use crmsync::salesforce::soql::{Condition, Literal, Operator, SoqlQuery};
use http::Method;
use salesforce_common::{client, jwt, quiet, start};
use serde_json::{Value, json};

const HOSTILE: [&str; 14] = [
    "O'Brien",
    "' OR LastName != '",
    "' OR Id != null OR LastName = '",
    r"back\slash",
    r"trailing\",
    r"\'",
    "50%_off",
    "%",
    "_",
    "line\nbreak\r\ttab",
    "say \"hi\"",
    "Zoë 日本 🚀",
    "bell\u{7}",
    "'; DELETE FROM Lead; --",
];

/// The test's leads only (the seeded org has an O'Brien or two of its own).
fn hostile_company() -> Condition {
    Condition::compare(
        "Company",
        Operator::Eq,
        Literal::Text("Hostile Inputs Ltd".into()),
    )
}

async fn query_ids(client: &SalesforceClient, soql: &str) -> Vec<String> {
    let answer = client
        .send(
            Method::GET,
            &client.data_path("query"),
            &[("q", soql.to_string())],
            Body::None,
            "application/json",
            &[],
            "Lead",
        )
        .await
        .unwrap_or_else(|error| panic!("{soql}: {error}"));
    let page = answer.json().expect("JSON");
    page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|record| record["Id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_find_exactly_their_own_record() {
    let emulator = start(EmulatorConfig {
        seed: 9,
        ..quiet(200)
    })
    .await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    assert!(describe.field("LastName").is_some());
    let mut created = Vec::new();
    for value in HOSTILE {
        let answer = client
            .send(
                Method::POST,
                &client.data_path("sobjects/Lead"),
                &[],
                Body::Json(&json!({"LastName": value, "Company": "Hostile Inputs Ltd", "Status": "Open - Not Contacted"})),
                "application/json",
                &[],
                "Lead",
            )
            .await
            .unwrap_or_else(|error| panic!("create {value:?}: {error}"));
        let body: Value = answer.json().expect("JSON");
        created.push(body["id"].as_str().expect("an id").to_string());
    }
    for (value, id) in HOSTILE.iter().zip(&created) {
        let equal = SoqlQuery::select(&describe, &["Id", "LastName"])
            .and_then(|query| {
                query.filter(&Condition::compare(
                    "LastName",
                    Operator::Eq,
                    Literal::Text(value.to_string()),
                ))
            })
            .and_then(|query| query.filter(&hostile_company()))
            .expect("query")
            .build();
        assert_eq!(
            query_ids(&client, &equal).await,
            vec![id.clone()],
            "{value:?}: {equal}"
        );
        // As a LIKE pattern the value's `%` and `_` match only themselves.
        let contains = SoqlQuery::select(&describe, &["Id"])
            .and_then(|query| {
                query.filter(&Condition::compare(
                    "LastName",
                    Operator::Like,
                    Literal::Contains(value.to_string()),
                ))
            })
            .and_then(|query| query.filter(&hostile_company()))
            .expect("query")
            .build();
        let found = query_ids(&client, &contains).await;
        let expected: Vec<&String> = HOSTILE
            .iter()
            .zip(&created)
            .filter(|(other, _)| other.to_lowercase().contains(&value.to_lowercase()))
            .map(|(_, id)| id)
            .collect();
        let mut found_sorted: Vec<&String> = found.iter().collect();
        found_sorted.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(found_sorted, expected_sorted, "{value:?}: {contains}");
    }
}
