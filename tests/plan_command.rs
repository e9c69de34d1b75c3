//! `crmsync plan` and `crmsync apply` through the binary, against the emulator over HTTP and
//! SQLite warehouses on disk.

mod engine_common;

use std::path::Path;

use crmsync::engine::SyncOptions;
use engine_common::Setup;
use serde_json::Value;

fn crmsync(setup: &Setup, args: &[&str]) -> (Option<i32>, String, String) {
    setup.crmsync(args, &[])
}

fn written_total(setup: &Setup) -> u64 {
    setup.emulator.stats().records_written.values().sum()
}

/// Every table of the warehouse, row by row, as text: equal dumps mean nothing changed.
fn dump(path: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut rows = Vec::new();
    for table in tables {
        let width = connection
            .prepare(&format!("SELECT * FROM {table}"))
            .unwrap()
            .column_count();
        let order: Vec<String> = (1..=width.min(3)).map(|n| n.to_string()).collect();
        let mut statement = connection
            .prepare(&format!(
                "SELECT * FROM {table} ORDER BY {}",
                order.join(", ")
            ))
            .unwrap();
        let columns = statement.column_count();
        let mut query = statement.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|index| format!("{:?}", row.get_ref(index).unwrap()))
                .collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows
}

fn changes_of<'a>(plan: &'a Value, system: &str) -> Vec<&'a Value> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|change| change["system"] == system)
        .collect()
}

fn field<'a>(change: &'a Value, name: &str) -> Option<&'a Value> {
    change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["field"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_writes_nothing_anywhere_and_apply_writes_exactly_it_refusing_records_changed_since()
{
    let setup = Setup::new(250).await;
    let plan_path = setup.dir.path().join("plan.json");
    let (code, table, stderr) = crmsync(&setup, &["plan", "--out", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "nothing has been written",
        "hubspot contacts:",
        "salesforce Lead:",
        "crmsync_stage (shared stage)",
        "(cross-link)",
        " → ",
    ] {
        assert!(
            table.contains(expected),
            "missing {expected:?} in:\n{table}"
        );
    }
    assert!(stderr.contains("crmsync apply"), "{stderr}");
    // Nothing written: not to either CRM, not even a warehouse file.
    assert_eq!(written_total(&setup), 0);
    assert!(
        !setup.warehouse_path().exists(),
        "plan created the warehouse"
    );

    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    assert_eq!(plan["format"], "crmsync-plan/1");
    let hubspot = changes_of(&plan, "hubspot");
    let salesforce = changes_of(&plan, "salesforce");
    assert!(
        hubspot.len() > 50 && salesforce.len() > 50,
        "{} {}",
        hubspot.len(),
        salesforce.len()
    );
    // The JSON summary counts the same records.
    let (code, json, _) = crmsync(&setup, &["plan", "--format", "json"]);
    assert_eq!(code, Some(0));
    let summary: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        summary["records"],
        plan["changes"].as_array().unwrap().len()
    );

    // Two planned HubSpot records change before the apply: one in a planned field, one
    // elsewhere (only its modification time tells).
    let crms = setup.crms();
    let linked: Vec<&&Value> = hubspot
        .iter()
        .filter(|change| field(change, "crmsync_salesforce_id").is_some())
        .collect();
    let edited_field = linked[0]["id"].as_str().unwrap();
    let edited_elsewhere = linked[1]["id"].as_str().unwrap();
    crms.hubspot_update(
        edited_field,
        serde_json::json!({"crmsync_salesforce_id": "edited-by-an-admin"}),
    )
    .await;
    crms.hubspot_update(
        edited_elsewhere,
        serde_json::json!({"jobtitle": "Head of Ops"}),
    )
    .await;

    let (code, json, stderr) = crmsync(&setup, &["apply", plan_path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2), "{stderr}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let refusals = report["refused"].as_array().unwrap();
    let refused: Vec<&str> = refusals
        .iter()
        .filter(|refusal| refusal["system"] == "hubspot")
        .map(|refusal| refusal["id"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 2, "{report}");
    assert!(refused.contains(&edited_field) && refused.contains(&edited_elsewhere));
    assert!(
        stderr.contains("crmsync_salesforce_id is now \"edited-by-an-admin\""),
        "{stderr}"
    );
    // The changes planned from the edited contacts (their persons' leads) are refused too,
    // exactly those.
    let decided_from_edited = |change: &&&Value| {
        change["inputs"].as_array().is_some_and(|inputs| {
            inputs.iter().any(|input| {
                input["system"] == "hubspot"
                    && (input["id"] == edited_field || input["id"] == edited_elsewhere)
            })
        })
    };
    let mut expected_leads: Vec<&str> = salesforce
        .iter()
        .filter(decided_from_edited)
        .map(|change| change["id"].as_str().unwrap())
        .collect();
    let refused_leads: Vec<&Value> = refusals
        .iter()
        .filter(|refusal| refusal["system"] == "salesforce")
        .collect();
    let mut refused_lead_ids: Vec<&str> = refused_leads
        .iter()
        .map(|refusal| refusal["id"].as_str().unwrap())
        .collect();
    expected_leads.sort();
    refused_lead_ids.sort();
    assert_eq!(refused_lead_ids, expected_leads, "{report}");
    for refusal in &refused_leads {
        let reason = refusal["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("hubspot contacts {edited_field}"))
                || reason.contains(&format!("hubspot contacts {edited_elsewhere}")),
            "{reason}"
        );
    }
    assert_eq!(report["written"]["hubspot"], hubspot.len() - 2);
    assert_eq!(
        report["written"]["salesforce"],
        salesforce.len() - refused_leads.len()
    );

    // The CRMs hold exactly the planned values; the refused record keeps the admin's edit.
    let applied = hubspot
        .iter()
        .find(|change| change["id"] != edited_field && change["id"] != edited_elsewhere)
        .unwrap();
    let names: Vec<&str> = applied["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["field"].as_str().unwrap())
        .collect();
    let now = crms
        .hubspot_contact(applied["id"].as_str().unwrap(), &names.join(","))
        .await;
    for change in applied["fields"].as_array().unwrap() {
        let name = change["field"].as_str().unwrap();
        assert_eq!(now[name], change["to"], "{name} of {}", applied["id"]);
    }
    let kept = crms
        .hubspot_contact(edited_field, "crmsync_salesforce_id")
        .await;
    assert_eq!(kept["crmsync_salesforce_id"], "edited-by-an-admin");
    let lead = salesforce
        .iter()
        .find(|lead| {
            !refused_leads
                .iter()
                .any(|refusal| refusal["id"] == lead["id"])
        })
        .unwrap();
    let lead_fields: Vec<&str> = lead["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["field"].as_str().unwrap())
        .collect();
    let held = crms
        .salesforce_query(&format!(
            "SELECT {} FROM Lead WHERE Id = '{}'",
            lead_fields.join(", "),
            lead["id"].as_str().unwrap()
        ))
        .await;
    for change in lead["fields"].as_array().unwrap() {
        let name = change["field"].as_str().unwrap();
        assert_eq!(held[0][name], change["to"], "{name} of {}", lead["id"]);
    }
    // The apply is one run in the warehouse, with its ledger.
    assert_eq!(setup.count("SELECT COUNT(*) FROM sync_runs"), 1);
    assert!(setup.count("SELECT COUNT(*) FROM write_ledger") > 100);

    // A sync now writes only what the apply refused: the rest is in place, and what the
    // apply wrote is known as crmsync's own.
    let engine = setup.engine().await;
    let sync = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        sync.written.get(&crmsync::record::System::Hubspot),
        Some(&2),
        "{}",
        sync.paragraph()
    );
    assert!(
        sync.written
            .get(&crmsync::record::System::Salesforce)
            .copied()
            .unwrap_or(0)
            <= refused_leads.len() as u64,
        "{}",
        sync.paragraph()
    );
    drop(engine);

    // The same plan again: every record changed since (crmsync's own writes included).
    let before = written_total(&setup);
    let (code, json, _) = crmsync(&setup, &["apply", plan_path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2));
    let again: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        again["refused"].as_array().unwrap().len(),
        plan["changes"].as_array().unwrap().len()
    );
    assert_eq!(written_total(&setup), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_values_decided_from_a_record_that_changed_since_the_plan() {
    let setup = Setup::new(250).await;
    let plan_path = setup.dir.path().join("plan.json");
    let (code, _, stderr) = crmsync(&setup, &["plan", "--out", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    let hubspot = changes_of(&plan, "hubspot");
    // A HubSpot contact whose values were decided with a Salesforce lead of the same person.
    let lead_of = |change: &Value| -> Option<String> {
        change["inputs"]
            .as_array()?
            .iter()
            .find(|input| input["system"] == "salesforce" && input["object"] == "Lead")
            .map(|input| input["id"].as_str().unwrap().to_string())
    };
    let (contact, lead) = hubspot
        .iter()
        .find_map(|change| Some((change["id"].as_str().unwrap(), lead_of(change)?)))
        .expect("a planned HubSpot change decided with a Salesforce lead");
    // The lead changes in Salesforce, in a field the contact does not get.
    setup
        .crms()
        .salesforce_update("Lead", &lead, serde_json::json!({"Title": "VP Revenue"}))
        .await;

    let (code, json, stderr) = crmsync(&setup, &["apply", plan_path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2), "{stderr}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let refused = report["refused"].as_array().unwrap();
    let contact_refusal = refused
        .iter()
        .find(|refusal| refusal["id"] == contact)
        .unwrap_or_else(|| panic!("{contact} not refused: {report}"));
    let reason = contact_refusal["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("salesforce Lead {lead}"))
            && reason.contains("changed since the plan"),
        "{reason}"
    );
    // Exactly the changes decided from the lead (and the lead's own, if planned) are refused;
    // every other planned change is written.
    let mut expected: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|change| change["id"] == lead.as_str() || lead_of(change).as_deref() == Some(&lead))
        .map(|change| change["id"].as_str().unwrap().to_string())
        .collect();
    let mut refused_ids: Vec<String> = refused
        .iter()
        .map(|refusal| refusal["id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    refused_ids.sort();
    assert_eq!(refused_ids, expected, "{report}");
    let refused_hubspot = refused
        .iter()
        .filter(|refusal| refusal["system"] == "hubspot")
        .count();
    assert_eq!(
        report["written"]["hubspot"],
        (hubspot.len() - refused_hubspot) as u64
    );
    // The refused contact holds none of its planned values.
    let planned = hubspot
        .iter()
        .find(|change| change["id"] == contact)
        .unwrap();
    let names: Vec<&str> = planned["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["field"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    let kept = setup
        .crms()
        .hubspot_contact(contact, &names.join(","))
        .await;
    for change in planned["fields"].as_array().unwrap() {
        let name = change["field"].as_str().unwrap();
        assert_ne!(
            kept[name], change["to"],
            "{name} of the refused {contact} was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_a_warehouse_leaves_it_untouched_and_holds_only_what_changed_since() {
    let setup = Setup::new(200).await;
    let engine = setup.engine().await;
    // The first sync writes; the second reads those writes back.
    engine.sync(SyncOptions::default()).await.unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    let (code, table, stderr) = crmsync(&setup, &["plan"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(table.contains("Nothing to write"), "{table}");

    // Marketing moves one shared person forward in HubSpot.
    let person = setup.strings(
        "SELECT hubspot_id || ' ' || salesforce_lead_id FROM unified_leads
         WHERE stage = 'mql' AND hubspot_raw_stage = 'marketingqualifiedlead'
         AND hubspot_id IS NOT NULL AND salesforce_lead_id IS NOT NULL
         AND salesforce_contact_id IS NULL ORDER BY unified_id LIMIT 1",
    );
    let ids: Vec<&str> = person[0].split(' ').collect();
    let (contact, lead) = (ids[0], ids[1]);
    setup
        .crms()
        .hubspot_update(
            contact,
            serde_json::json!({"lifecyclestage": "salesqualifiedlead"}),
        )
        .await;

    let before = dump(&setup.warehouse_path());
    let writes_before = written_total(&setup);
    let plan_path = setup.dir.path().join("plan.json");
    let (code, table, stderr) = crmsync(&setup, &["plan", "--out", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        dump(&setup.warehouse_path()),
        before,
        "the plan changed the warehouse"
    );
    assert_eq!(written_total(&setup), writes_before);
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{plan:#}");
    let to_lead = changes
        .iter()
        .find(|change| change["id"] == lead)
        .expect("the lead");
    let shared = field(to_lead, "CRMSync_Stage__c").expect("the lead's shared stage");
    assert_eq!(
        (&shared["from"], &shared["to"], &shared["kind"]),
        (&"mql".into(), &"sql".into(), &"shared_stage".into())
    );
    assert!(
        shared["rule"]
            .as_str()
            .unwrap()
            .contains("hubspot says sql"),
        "{shared}"
    );
    // Converting a lead is a sales action: the default mapping never writes sql natively.
    assert!(field(to_lead, "Status").is_none(), "{plan:#}");
    let to_contact = changes
        .iter()
        .find(|change| change["id"] == contact)
        .expect("the contact");
    assert_eq!(field(to_contact, "crmsync_stage").unwrap()["to"], "sql");
    assert!(table.contains("mql → sql: 1"), "{table}");

    // A sync makes exactly the planned writes.
    let sync = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        sync.written.values().sum::<u64>(),
        2,
        "{}",
        sync.paragraph()
    );
    let held = setup
        .crms()
        .salesforce_query(&format!(
            "SELECT CRMSync_Stage__c FROM Lead WHERE Id = '{lead}'"
        ))
        .await;
    assert_eq!(held[0]["CRMSync_Stage__c"], "sql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_plan_made_against_other_crms_and_a_file_that_is_not_a_plan() {
    let setup = Setup::new(50).await;
    let plan_path = setup.dir.path().join("plan.json");
    let (code, _, stderr) = crmsync(&setup, &["plan", "--out", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut plan: Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    plan["crms"]["hubspot"] = Value::String("https://api.hubapi.com".into());
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let (code, _, stderr) = crmsync(&setup, &["apply", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("made against hubspot at https://api.hubapi.com"),
        "{stderr}"
    );
    // A plan edited to write a field crmsync never writes: that record is refused, the
    // rest applied.
    let address = setup.emulator.info().hubspot_base_url.clone();
    plan["crms"]["hubspot"] = Value::String(address);
    let edited = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|change| change["system"] == "hubspot")
        .unwrap();
    let edited_id = plan["changes"][edited]["id"].clone();
    plan["changes"][edited]["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"field": "email", "kind": "field", "from": null, "to": "x@evil.example", "rule": "edited"}));
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let (code, json, stderr) = crmsync(&setup, &["apply", plan_path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2), "{stderr}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let refused = report["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{report}");
    assert_eq!(refused[0]["id"], edited_id);
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("sets email which"),
        "{report}"
    );
    assert_eq!(
        report["written"]["hubspot"].as_u64().unwrap()
            + report["written"]["salesforce"].as_u64().unwrap(),
        plan["changes"].as_array().unwrap().len() as u64 - 1
    );
    let before = written_total(&setup);

    std::fs::write(&plan_path, "{\"not\": \"a plan\"}").unwrap();
    let (code, _, stderr) = crmsync(&setup, &["apply", plan_path.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a crmsync plan"), "{stderr}");
    assert_eq!(written_total(&setup), before);
}
