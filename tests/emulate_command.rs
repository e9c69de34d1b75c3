//! `crmsync emulate` as a process: one JSON line with the connection details on stdout, then
//! it serves until SIGTERM and exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test]
async fn emulate_prints_its_details_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args([
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--records",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("crmsync emulate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("one line");
    let info: Value = serde_json::from_str(&line).expect("the line is JSON");
    let base_url = info["hubspot_base_url"].as_str().expect("base url");
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    let token = info["hubspot_token"].as_str().expect("token");
    assert!(token.starts_with("pat-na1-"));
    let keys: Vec<&String> = info.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys,
        [
            "hubspot_base_url",
            "hubspot_token",
            "hubspot_client_id",
            "hubspot_client_secret",
            "hubspot_refresh_token",
            "salesforce_login_url",
            "salesforce_client_id",
            "salesforce_client_secret",
            "salesforce_username",
            "salesforce_private_key_file",
            "salesforce_refresh_token",
        ]
    );
    for key in [
        "hubspot_client_id",
        "hubspot_client_secret",
        "hubspot_refresh_token",
        "salesforce_client_id",
        "salesforce_client_secret",
        "salesforce_username",
        "salesforce_refresh_token",
    ] {
        assert!(
            info[key].as_str().is_some_and(|value| !value.is_empty()),
            "{key}"
        );
    }

    let response = reqwest::Client::new()
        .get(format!("{base_url}/crm/v3/objects/contacts?limit=5"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(5));

    let key_file = info["salesforce_private_key_file"]
        .as_str()
        .expect("key file")
        .to_string();
    let pem = std::fs::read_to_string(&key_file).expect("the key file exists while serving");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the private key");
    }
    let killed = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(&key_file).exists(),
        "the private key is removed at exit"
    );
}

#[tokio::test]
async fn emulate_takes_the_hubspot_tier_and_salesforce_api_version() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args([
            "emulate",
            "--records",
            "50",
            "--hubspot-tier",
            "professional",
            "--salesforce-api-version",
            "60.0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("crmsync emulate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("one line");
    let info: Value = serde_json::from_str(&line).expect("the line is JSON");
    let client = reqwest::Client::new();
    let hubspot = client
        .get(format!(
            "{}/crm/v3/objects/contacts?limit=1",
            info["hubspot_base_url"].as_str().expect("url")
        ))
        .bearer_auth(info["hubspot_token"].as_str().expect("token"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        hubspot
            .headers()
            .get("x-hubspot-ratelimit-max")
            .and_then(|value| value.to_str().ok()),
        Some("190"),
        "Professional's ten-second budget"
    );
    let versions: Value = client
        .get(format!(
            "{}/services/data",
            info["salesforce_login_url"].as_str().expect("url")
        ))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let newest = versions
        .as_array()
        .and_then(|list| list.last())
        .map(|version| version["version"].clone());
    assert_eq!(newest, Some(Value::from("60.0")));
    let _ = child.kill();
    let _ = child.wait();

    let refused = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["emulate", "--salesforce-api-version", "sixty"])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not a Salesforce API version"),
        "{stderr}"
    );
}
