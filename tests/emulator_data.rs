//! The emulator's seeded org: deterministic, messy in the ways real orgs are, and readable by
//! the shipped mappings.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use crmsync::emulator::data::{
    EmulatedRecord, GeneratedOrg, HUBSPOT_LEAD_STATUSES, OrgProfile, generate,
};
use crmsync::mapping::{StageOutcome, load_dir};
use crmsync::record::{SourceRecord, System};

fn text<'a>(record: &'a EmulatedRecord, property: &str) -> Option<&'a str> {
    record
        .properties
        .get(property)
        .and_then(|value| value.as_str())
}

fn values(records: &[EmulatedRecord], property: &str) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| text(r, property))
        .map(str::to_string)
        .collect()
}

fn normalized_emails(records: &[EmulatedRecord], property: &str) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| text(r, property))
        .map(|email| email.trim().to_lowercase())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_org_and_another_seed_another() {
    let a = serde_json::to_string(&generate(7, 500, OrgProfile::Classic)).expect("serializes");
    let b = serde_json::to_string(&generate(7, 500, OrgProfile::Classic)).expect("serializes");
    let c = serde_json::to_string(&generate(8, 500, OrgProfile::Classic)).expect("serializes");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_standard_value_appears() {
    let org = generate(1, 2_000, OrgProfile::Classic);
    let lifecycle = values(&org.hubspot_contacts, "lifecyclestage");
    for stage in OrgProfile::Classic.lifecycle_stages() {
        assert!(lifecycle.contains(*stage), "no contact in {stage}");
    }
    let lead_status = values(&org.hubspot_contacts, "hs_lead_status");
    for status in HUBSPOT_LEAD_STATUSES {
        assert!(lead_status.contains(status), "no contact with {status}");
    }
    let statuses = values(&org.salesforce_leads, "Status");
    for (status, _) in OrgProfile::Classic.lead_statuses() {
        assert!(statuses.contains(*status), "no lead with {status}");
    }
    assert!(values(&org.hubspot_deals, "dealstage").len() >= 5);
    assert!(values(&org.salesforce_opportunities, "StageName").len() >= 5);

    let custom = generate(1, 2_000, OrgProfile::Custom);
    assert!(values(&custom.hubspot_contacts, "lifecyclestage").contains("153180554"));
    assert!(values(&custom.salesforce_leads, "Status").contains("Qualified"));
}

#[test]
fn people_are_spread_over_both_systems_with_messy_emails() {
    let org = generate(3, 2_000, OrgProfile::Classic);
    let hubspot = normalized_emails(&org.hubspot_contacts, "email");
    let salesforce = normalized_emails(&org.salesforce_leads, "Email");
    let both = hubspot.intersection(&salesforce).count();
    let hubspot_only = hubspot.difference(&salesforce).count();
    let salesforce_only = salesforce.difference(&hubspot).count();
    assert!(
        both > 800 && hubspot_only > 300 && salesforce_only > 200,
        "{both} {hubspot_only} {salesforce_only}"
    );
    let raw: Vec<&str> = org
        .hubspot_contacts
        .iter()
        .filter_map(|r| text(r, "email"))
        .collect();
    assert!(
        raw.iter().any(|email| email.starts_with(' ')),
        "no stray spaces"
    );
    assert!(
        raw.iter()
            .any(|email| email.chars().any(char::is_uppercase)),
        "no mixed case"
    );
    let names = values(&org.hubspot_contacts, "lastname");
    assert!(
        names.iter().any(|name| name.contains('\'')),
        "no apostrophes"
    );
    assert!(
        values(&org.hubspot_contacts, "firstname")
            .iter()
            .any(|name| !name.is_ascii()),
        "no accents"
    );
}

#[test]
fn conversions_archives_and_merges_hold_together() {
    let org: GeneratedOrg = generate(5, 3_000, OrgProfile::Classic);
    let contact_ids: HashSet<&str> = org
        .salesforce_contacts
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let account_ids: HashSet<&str> = org
        .salesforce_accounts
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let opportunity_ids: HashSet<&str> = org
        .salesforce_opportunities
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let converted: Vec<&EmulatedRecord> = org
        .salesforce_leads
        .iter()
        .filter(|lead| lead.properties.get("IsConverted").and_then(|v| v.as_bool()) == Some(true))
        .collect();
    assert!(!converted.is_empty());
    for lead in &converted {
        assert!(contact_ids.contains(text(lead, "ConvertedContactId").expect("contact id")));
        assert!(account_ids.contains(text(lead, "ConvertedAccountId").expect("account id")));
        assert!(
            opportunity_ids.contains(text(lead, "ConvertedOpportunityId").expect("opportunity id"))
        );
    }
    let archived: HashSet<&str> = org
        .hubspot_contacts
        .iter()
        .filter(|r| r.archived)
        .map(|r| r.id.as_str())
        .collect();
    assert!(!archived.is_empty());
    let merged: Vec<&str> = org
        .hubspot_contacts
        .iter()
        .filter_map(|r| text(r, "hs_merged_object_ids"))
        .collect();
    assert!(!merged.is_empty(), "no merged contacts");
    for ids in merged {
        for id in ids.split(';') {
            assert!(archived.contains(id), "merged id {id} is not archived");
        }
    }
    let mut all_ids = HashSet::new();
    for record in org
        .salesforce_leads
        .iter()
        .chain(&org.salesforce_contacts)
        .chain(&org.salesforce_accounts)
        .chain(&org.salesforce_opportunities)
    {
        assert_eq!(record.id.len(), 18, "{}", record.id);
        assert!(
            all_ids.insert(record.id.clone()),
            "duplicate id {}",
            record.id
        );
        assert!(record.updated_at >= record.created_at);
    }
}

#[test]
fn the_shipped_mappings_read_the_classic_org_and_quarantine_the_custom_values() {
    let mapper =
        load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")).expect("mappings");
    let outcomes = |org: &GeneratedOrg| -> (usize, usize) {
        let mut quarantined = 0;
        let mut staged = 0;
        let records = org
            .hubspot_contacts
            .iter()
            .map(|r| (System::Hubspot, "contacts", r))
            .chain(
                org.salesforce_leads
                    .iter()
                    .map(|r| (System::Salesforce, "Lead", r)),
            )
            .chain(
                org.salesforce_opportunities
                    .iter()
                    .map(|r| (System::Salesforce, "Opportunity", r)),
            )
            .chain(
                org.hubspot_deals
                    .iter()
                    .map(|r| (System::Hubspot, "deals", r)),
            );
        for (system, object, record) in records {
            let source = SourceRecord {
                system,
                object: object.to_string(),
                id: record.id.clone(),
                modified_at: record.updated_at,
                properties: {
                    let mut properties: crmsync::record::Properties =
                        record.properties.to_json_map().into_iter().collect();
                    // Salesforce's audit dates are the record's own timestamps.
                    if system == System::Salesforce {
                        for (name, at) in [
                            ("CreatedDate", record.created_at),
                            ("LastModifiedDate", record.updated_at),
                        ] {
                            properties.insert(
                                name.to_string(),
                                serde_json::Value::String(
                                    at.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
                                ),
                            );
                        }
                    }
                    properties
                },
            };
            let normalized = mapper.normalize(&source).expect("mapped object");
            assert!(
                normalized.field_problems.is_empty(),
                "{object} {}: {:?}",
                record.id,
                normalized.field_problems
            );
            match normalized.stage {
                StageOutcome::Quarantined { .. } => quarantined += 1,
                StageOutcome::Matched { .. } => staged += 1,
                _ => {}
            }
        }
        (staged, quarantined)
    };
    let (staged, quarantined) = outcomes(&generate(9, 1_000, OrgProfile::Classic));
    assert!(staged > 900, "{staged}");
    assert_eq!(quarantined, 0);
    let (_, quarantined) = outcomes(&generate(9, 1_000, OrgProfile::Custom));
    assert!(
        quarantined > 50,
        "custom values should be quarantined, got {quarantined}"
    );
}
