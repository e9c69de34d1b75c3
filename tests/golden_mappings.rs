//! Golden tests for the shipped mappings: every standard picklist value of a new HubSpot portal
//! and a new Salesforce org maps to the expected shared stage, and every stage written back
//! reads back as itself.

use std::path::Path;

use crmsync::mapping::{Mapper, StageOutcome, load_dir};
use crmsync::record::{Properties, SourceRecord, System};
use serde_json::{Value, json};

fn mapper() -> Mapper {
    load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
        .expect("shipped mappings compile")
}

fn record(system: System, object: &str, properties: Value) -> SourceRecord {
    let properties: Properties = match properties {
        Value::Object(map) => map.into_iter().collect(),
        other => panic!("test properties must be an object, got {other}"),
    };
    SourceRecord {
        system,
        object: object.to_string(),
        id: "golden-1".to_string(),
        modified_at: jiff::Timestamp::UNIX_EPOCH,
        properties,
    }
}

/// The stage id a record maps to, `None` for no stage; panics on quarantine and friends.
fn stage_of(mapper: &Mapper, record: &SourceRecord) -> Option<String> {
    let normalized = mapper.normalize(record).expect("object is mapped");
    match normalized.stage {
        StageOutcome::Matched { stage, .. } => Some(mapper.vocabulary().id_of(stage).to_string()),
        StageOutcome::NoStage => None,
        other => panic!("{record:?} gave {other:?}"),
    }
}

#[test]
fn hubspot_contact_values_map_to_shared_stages() {
    let mapper = mapper();
    // (lifecyclestage, hs_lead_status, expected stage)
    let table: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
        (Some("subscriber"), None, Some("subscriber")),
        (Some("lead"), None, Some("lead")),
        (Some("marketingqualifiedlead"), None, Some("mql")),
        (Some("salesqualifiedlead"), None, Some("sql")),
        (Some("opportunity"), None, Some("opportunity")),
        (Some("customer"), None, Some("customer")),
        (Some("evangelist"), None, Some("customer")),
        (Some("other"), None, None),
        (None, Some("NEW"), None),
        (None, Some("OPEN"), None),
        (None, Some("IN_PROGRESS"), None),
        (None, Some("OPEN_DEAL"), None),
        (None, Some("ATTEMPTED_TO_CONTACT"), None),
        (None, Some("CONNECTED"), None),
        (None, Some("UNQUALIFIED"), Some("disqualified")),
        (None, Some("BAD_TIMING"), Some("recycled")),
        // Sales' verdict beats the lifecycle stage.
        (Some("customer"), Some("UNQUALIFIED"), Some("disqualified")),
        (Some("lead"), Some("BAD_TIMING"), Some("recycled")),
        // Sales working an MQL makes it sales-accepted.
        (
            Some("marketingqualifiedlead"),
            Some("IN_PROGRESS"),
            Some("sal"),
        ),
        (
            Some("marketingqualifiedlead"),
            Some("ATTEMPTED_TO_CONTACT"),
            Some("sal"),
        ),
        (
            Some("marketingqualifiedlead"),
            Some("CONNECTED"),
            Some("sal"),
        ),
        (Some("marketingqualifiedlead"), Some("NEW"), Some("mql")),
        (Some("marketingqualifiedlead"), Some("OPEN"), Some("mql")),
        (Some("salesqualifiedlead"), Some("IN_PROGRESS"), Some("sql")),
        (Some("opportunity"), Some("OPEN_DEAL"), Some("opportunity")),
        (None, None, None),
    ];
    for (lifecycle, lead_status, expected) in table {
        let mut properties = json!({"email": "a@example.com"});
        if let Some(value) = lifecycle {
            properties["lifecyclestage"] = json!(value);
        }
        if let Some(value) = lead_status {
            properties["hs_lead_status"] = json!(value);
        }
        let record = record(System::Hubspot, "contacts", properties);
        assert_eq!(
            stage_of(&mapper, &record).as_deref(),
            *expected,
            "lifecyclestage={lifecycle:?} hs_lead_status={lead_status:?}"
        );
    }
}

#[test]
fn hubspot_default_pipeline_deal_stages_map() {
    let mapper = mapper();
    let table = [
        ("appointmentscheduled", "opportunity"),
        ("qualifiedtobuy", "opportunity"),
        ("presentationscheduled", "opportunity"),
        ("decisionmakerboughtin", "opportunity"),
        ("contractsent", "opportunity"),
        ("closedwon", "customer"),
        ("closedlost", "recycled"),
    ];
    for (dealstage, expected) in table {
        let record = record(
            System::Hubspot,
            "deals",
            json!({"dealstage": dealstage, "pipeline": "default"}),
        );
        assert_eq!(
            stage_of(&mapper, &record).as_deref(),
            Some(expected),
            "dealstage={dealstage}"
        );
    }
}

#[test]
fn salesforce_lead_statuses_map() {
    let mapper = mapper();
    let table: &[(&str, bool, &str)] = &[
        ("Open - Not Contacted", false, "mql"),
        ("Working - Contacted", false, "sal"),
        ("Closed - Converted", false, "sql"),
        ("Closed - Not Converted", false, "disqualified"),
        // IsConverted wins over Status.
        ("Closed - Converted", true, "sql"),
        ("Open - Not Contacted", true, "sql"),
    ];
    for (status, converted, expected) in table {
        let record = record(
            System::Salesforce,
            "Lead",
            json!({"Status": status, "IsConverted": converted, "Email": "b@example.com"}),
        );
        assert_eq!(
            stage_of(&mapper, &record).as_deref(),
            Some(*expected),
            "Status={status} IsConverted={converted}"
        );
    }
}

#[test]
fn salesforce_opportunity_stages_map() {
    let mapper = mapper();
    // (StageName, IsClosed, IsWon, expected) as in a new org's OpportunityStage picklist.
    let table = [
        ("Prospecting", false, false, "opportunity"),
        ("Qualification", false, false, "opportunity"),
        ("Needs Analysis", false, false, "opportunity"),
        ("Value Proposition", false, false, "opportunity"),
        ("Id. Decision Makers", false, false, "opportunity"),
        ("Perception Analysis", false, false, "opportunity"),
        ("Proposal/Price Quote", false, false, "opportunity"),
        ("Negotiation/Review", false, false, "opportunity"),
        ("Closed Won", true, true, "customer"),
        ("Closed Lost", true, false, "recycled"),
    ];
    for (stage_name, closed, won, expected) in table {
        let record = record(
            System::Salesforce,
            "Opportunity",
            json!({"StageName": stage_name, "IsClosed": closed, "IsWon": won}),
        );
        assert_eq!(
            stage_of(&mapper, &record).as_deref(),
            Some(expected),
            "StageName={stage_name}"
        );
        // Without the flags (a query that did not select them) the name alone decides.
        let record = record_without_flags(stage_name);
        assert_eq!(
            stage_of(&mapper, &record).as_deref(),
            Some(expected),
            "StageName={stage_name} alone"
        );
    }
    // A renamed closed stage still maps through the flags.
    let renamed = record(
        System::Salesforce,
        "Opportunity",
        json!({"StageName": "Signed!", "IsClosed": true, "IsWon": true}),
    );
    assert_eq!(stage_of(&mapper, &renamed).as_deref(), Some("customer"));
}

fn record_without_flags(stage_name: &str) -> SourceRecord {
    record(
        System::Salesforce,
        "Opportunity",
        json!({"StageName": stage_name}),
    )
}

#[test]
fn salesforce_contacts_carry_no_stage_but_map_fields() {
    let mapper = mapper();
    let record = record(
        System::Salesforce,
        "Contact",
        json!({"Email": " Dana@Example.COM ", "FirstName": "Dana", "LastName": "Ng", "CreatedDate": "2024-05-01T12:34:56.000+0000"}),
    );
    let normalized = mapper.normalize(&record).expect("mapped");
    assert_eq!(normalized.stage, StageOutcome::NoStage);
    assert_eq!(
        normalized.field("email").and_then(|v| v.as_text()),
        Some("dana@example.com")
    );
    assert_eq!(
        normalized.field("full_name").and_then(|v| v.as_text()),
        Some("Dana Ng")
    );
    assert!(
        normalized.field_problems.is_empty(),
        "{:?}",
        normalized.field_problems
    );
    assert_eq!(
        normalized
            .field("created_at")
            .map(ToString::to_string)
            .as_deref(),
        Some("2024-05-01T12:34:56Z")
    );
}

#[test]
fn unknown_stage_values_are_quarantined_with_the_value() {
    let mapper = mapper();
    let record = record(
        System::Hubspot,
        "contacts",
        json!({"lifecyclestage": "153180554"}),
    );
    match mapper.normalize(&record).expect("mapped").stage {
        StageOutcome::Quarantined { unknown } => {
            assert_eq!(unknown.property, "lifecyclestage");
            assert_eq!(unknown.value, "153180554");
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
}

/// (system, object, stage, native values written back)
type WriteCase = (
    System,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

#[test]
fn every_written_stage_reads_back_as_itself() {
    let mapper = mapper();
    // (system, object, stage, native values written)
    let expected: &[WriteCase] = &[
        (
            System::Hubspot,
            "contacts",
            "subscriber",
            &[("lifecyclestage", "subscriber"), ("hs_lead_status", "")],
        ),
        (
            System::Hubspot,
            "contacts",
            "lead",
            &[("lifecyclestage", "lead"), ("hs_lead_status", "NEW")],
        ),
        (
            System::Hubspot,
            "contacts",
            "mql",
            &[
                ("lifecyclestage", "marketingqualifiedlead"),
                ("hs_lead_status", "OPEN"),
            ],
        ),
        (
            System::Hubspot,
            "contacts",
            "sal",
            &[
                ("lifecyclestage", "marketingqualifiedlead"),
                ("hs_lead_status", "IN_PROGRESS"),
            ],
        ),
        (
            System::Hubspot,
            "contacts",
            "sql",
            &[
                ("lifecyclestage", "salesqualifiedlead"),
                ("hs_lead_status", "CONNECTED"),
            ],
        ),
        (
            System::Hubspot,
            "contacts",
            "opportunity",
            &[
                ("lifecyclestage", "opportunity"),
                ("hs_lead_status", "OPEN_DEAL"),
            ],
        ),
        (
            System::Hubspot,
            "contacts",
            "customer",
            &[("lifecyclestage", "customer"), ("hs_lead_status", "")],
        ),
        (
            System::Hubspot,
            "contacts",
            "disqualified",
            &[("hs_lead_status", "UNQUALIFIED")],
        ),
        (
            System::Hubspot,
            "contacts",
            "recycled",
            &[("hs_lead_status", "BAD_TIMING")],
        ),
        (
            System::Salesforce,
            "Lead",
            "mql",
            &[("Status", "Open - Not Contacted")],
        ),
        (
            System::Salesforce,
            "Lead",
            "sal",
            &[("Status", "Working - Contacted")],
        ),
        (
            System::Salesforce,
            "Lead",
            "disqualified",
            &[("Status", "Closed - Not Converted")],
        ),
    ];
    let mut covered = 0;
    for (system, object, stage, values) in expected {
        let mapping = mapper.object(*system, object).expect("object mapped");
        let stage_id = mapper.vocabulary().lookup(stage).expect("stage exists");
        let write = mapping
            .reverse_stage(stage_id)
            .expect("stage is written back");
        let written: Vec<(&str, &str)> = write
            .properties
            .iter()
            .map(|(p, v)| (p.as_str(), v.as_str()))
            .collect();
        assert_eq!(&written, values, "{system} {object} {stage}");
        let mut properties = serde_json::Map::new();
        for (property, value) in *values {
            properties.insert((*property).to_string(), json!(value));
        }
        let back = record(*system, object, Value::Object(properties));
        assert_eq!(
            stage_of(&mapper, &back).as_deref(),
            Some(*stage),
            "{system} {object} {stage}"
        );
        covered += 1;
    }
    // Every reverse entry of the shipped files is in the table above.
    let total: usize = mapper
        .objects()
        .iter()
        .map(|object| object.reverse.stages.len())
        .sum();
    assert_eq!(covered, total);
}
