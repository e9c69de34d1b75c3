//! `crmsync explain` through the binary, on a warehouse filled by real syncs.

mod engine_common;

use crmsync::engine::SyncOptions;
use engine_common::Setup;

fn explain(setup: &Setup, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<&str> = std::iter::once("explain")
        .chain(args.iter().copied())
        .collect();
    setup.crmsync(&args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_records_rules_decision_history_and_writes_behind_a_person() {
    let setup = Setup::new(300).await;
    let engine = setup.engine().await;
    engine.sync(SyncOptions::default()).await.unwrap();
    let row = setup.strings(
        "SELECT unified_id || ' ' || email || ' ' || hubspot_id || ' ' || salesforce_lead_id || ' ' || stage FROM unified_leads
         WHERE hubspot_id IS NOT NULL AND salesforce_lead_id IS NOT NULL AND drift ORDER BY unified_id LIMIT 1",
    );
    let parts: Vec<&str> = row[0].split(' ').collect();
    let (id, email, hubspot, lead, stage) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let (code, text, stderr) = explain(&setup, &[&format!("  {} ", email.to_uppercase())]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        id,
        &format!("Stage: {stage}"),
        "decided: furthest along by rank",
        &format!("hubspot contacts {hubspot}"),
        &format!("salesforce Lead {lead}"),
        "rule \"",
        "Stage history:",
        "Last written by crmsync:",
        "they disagree",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (code, json, _) = explain(&setup, &[id, "--json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json[0]["unified_id"], id);
    assert_eq!(json[0]["stage"], stage);
    assert!(json[0]["records"].as_array().unwrap().len() >= 2);
    assert!(!json[0]["transitions"].as_array().unwrap().is_empty());

    // A person merged away is found under its old id too.
    let crms = setup.crms();
    let pair = setup.strings(
        "SELECT unified_id || ' ' || hubspot_id FROM unified_leads WHERE hubspot_id IS NOT NULL AND salesforce_lead_id IS NOT NULL
         AND unified_id <> (SELECT MIN(unified_id) FROM unified_leads) ORDER BY unified_id LIMIT 2",
    );
    let first: Vec<&str> = pair[0].split(' ').collect();
    let second: Vec<&str> = pair[1].split(' ').collect();
    crms.hubspot_merge(first[1], second[1]).await;
    engine.sync(SyncOptions::default()).await.unwrap();
    let (code, text, stderr) = explain(&setup, &[second[0]]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.contains(&format!("({} was merged into this person)", second[0])),
        "{text}"
    );
    assert!(text.contains(&format!("Person {}", first[0])), "{text}");
    assert!(text.contains("Merged in:"), "{text}");

    let (code, _, stderr) = explain(&setup, &["nobody@nowhere.example"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no person"), "{stderr}");
}
