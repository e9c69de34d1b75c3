//! Throughput of `Mapper::normalize` with the shipped mappings, on one core.
//!
//! Run: `cargo bench --bench normalize`. It builds realistic records (HubSpot contacts with
//! ~25 properties, Salesforce leads and opportunities typed as the REST API sends them) and
//! measures two ways:
//!
//! - page: a sync normalizes each API page right after parsing it, so the records are in
//!   cache. The bench normalizes pages of 1,000 distinct records over and over.
//! - cold: one pass after another over 100,000 records per object, far larger than the CPU
//!   caches; this bounds the cost when records come from memory.
//!
//! Target: at least 1,000,000 records/s (page mode, all objects).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use crmsync::emulator::data::{HUBSPOT_LEAD_STATUSES, OrgProfile};
use crmsync::mapping::load_dir;
use crmsync::record::{Properties, SourceRecord, System};
use serde_json::{Value, json};

const COLD_RECORDS: usize = 100_000;
const COLD_PASSES: usize = 3;
const PAGE_RECORDS: usize = 1_000;
const PAGE_PASSES: usize = 500;

fn properties(value: Value) -> Properties {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        _ => Properties::default(),
    }
}

fn hubspot_contact(i: usize) -> SourceRecord {
    let lifecycle = OrgProfile::Classic.lifecycle_stages();
    // One in nine contacts has no lead status.
    let status = (i % (HUBSPOT_LEAD_STATUSES.len() + 1))
        .checked_sub(1)
        .map(|index| HUBSPOT_LEAD_STATUSES[index]);
    let mut props = properties(json!({
        "email": format!("  Person.{i}@Example.COM "),
        "firstname": format!("First{i}"),
        "lastname": format!("Last{i}"),
        "company": format!(" Company {} ", i % 997),
        "jobtitle": "Head of Growth",
        "phone": "+1 (555) 010-9999",
        "hubspot_owner_id": "12345678",
        "createdate": "2024-05-01T12:34:56.789Z",
        "lastmodifieddate": "2024-06-01T08:00:00.000Z",
        "lifecyclestage": lifecycle[i % lifecycle.len()],
        "hs_object_id": i.to_string(),
        "salesforceleadid": null,
        "salesforcecontactid": null,
    }));
    if let Some(status) = status {
        props.insert("hs_lead_status".into(), json!(status));
    }
    // Properties nobody maps, as real portals return when many are requested.
    for extra in 0..12 {
        props.insert(
            format!("custom_property_{extra}"),
            json!(format!("value {extra}")),
        );
    }
    SourceRecord {
        system: System::Hubspot,
        object: "contacts".into(),
        id: i.to_string(),
        modified_at: jiff::Timestamp::UNIX_EPOCH,
        properties: props,
    }
}

fn salesforce_lead(i: usize) -> SourceRecord {
    const STATUS: [&str; 4] = [
        "Open - Not Contacted",
        "Working - Contacted",
        "Closed - Converted",
        "Closed - Not Converted",
    ];
    let status = STATUS[i % STATUS.len()];
    let props = properties(json!({
        "attributes": {"type": "Lead", "url": format!("/services/data/v62.0/sobjects/Lead/00Q{i:015}")},
        "Id": format!("00Q{i:015}"),
        "Email": format!("person.{i}@example.com"),
        "FirstName": format!("First{i}"),
        "LastName": format!("Last{i}"),
        "Company": "Acme",
        "Title": "VP Sales",
        "Phone": "(555) 010-1234",
        "LeadSource": "Web",
        "Status": status,
        "IsConverted": status == "Closed - Converted",
        "ConvertedContactId": null,
        "ConvertedOpportunityId": null,
        "ConvertedDate": if status == "Closed - Converted" { json!("2024-05-02") } else { json!(null) },
        "OwnerId": "005000000000001AAA",
        "CreatedDate": "2024-05-01T12:34:56.000+0000",
        "LastModifiedDate": "2024-06-01T08:00:00.000+0000",
    }));
    SourceRecord {
        system: System::Salesforce,
        object: "Lead".into(),
        id: i.to_string(),
        modified_at: jiff::Timestamp::UNIX_EPOCH,
        properties: props,
    }
}

fn salesforce_opportunity(i: usize) -> SourceRecord {
    const STAGES: [(&str, bool, bool); 4] = [
        ("Prospecting", false, false),
        ("Negotiation/Review", false, false),
        ("Closed Won", true, true),
        ("Closed Lost", true, false),
    ];
    let (stage, closed, won) = STAGES[i % STAGES.len()];
    let props = properties(json!({
        "Id": format!("006{i:015}"),
        "Name": format!("Deal {i}"),
        "StageName": stage,
        "IsClosed": closed,
        "IsWon": won,
        "Amount": 12000.5,
        "AccountId": "001000000000001AAA",
        "CloseDate": "2024-07-01",
        "OwnerId": "005000000000001AAA",
        "CreatedDate": "2024-05-01T12:34:56.000+0000",
    }));
    SourceRecord {
        system: System::Salesforce,
        object: "Opportunity".into(),
        id: i.to_string(),
        modified_at: jiff::Timestamp::UNIX_EPOCH,
        properties: props,
    }
}

fn measure(
    mapper: &crmsync::mapping::Mapper,
    records: &[SourceRecord],
    passes: usize,
) -> (Duration, usize) {
    // One warm-up pass, then the timed passes.
    for record in records {
        black_box(mapper.normalize(black_box(record)).ok());
    }
    let started = Instant::now();
    let mut matched = 0usize;
    for _ in 0..passes {
        for record in records {
            if let Ok(normalized) = mapper.normalize(black_box(record)) {
                matched += usize::from(normalized.stage.stage().is_some());
                black_box(&normalized);
            }
        }
    }
    (started.elapsed(), matched)
}

type Builder = fn(usize) -> SourceRecord;

fn run(mapper: &crmsync::mapping::Mapper, mode: &str, records_per_object: usize, passes: usize) {
    let objects: [(&str, Builder); 3] = [
        ("hubspot contacts", hubspot_contact),
        ("salesforce Lead", salesforce_lead),
        ("salesforce Opportunity", salesforce_opportunity),
    ];
    println!("{mode}: {passes} passes over {records_per_object} records per object, one core");
    let mut total_records = 0usize;
    let mut total_time = Duration::ZERO;
    for (name, build) in objects {
        let records: Vec<SourceRecord> = (0..records_per_object).map(build).collect();
        let (elapsed, matched) = measure(mapper, &records, passes);
        let count = records.len() * passes;
        total_records += count;
        total_time += elapsed;
        println!(
            "  {name:<24} {:>12.0} records/s  ({:.0} ns/record, {:.0}% with a stage)",
            count as f64 / elapsed.as_secs_f64(),
            elapsed.as_nanos() as f64 / count as f64,
            100.0 * matched as f64 / count as f64
        );
    }
    println!(
        "  {:<24} {:>12.0} records/s",
        "all objects",
        total_records as f64 / total_time.as_secs_f64()
    );
}

fn main() {
    let mapper = match load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")) {
        Ok(mapper) => mapper,
        Err(error) => {
            eprintln!("cannot load the shipped mappings: {error}");
            std::process::exit(1);
        }
    };
    // `cargo bench --bench normalize -- page` (or `cold`) runs one mode only.
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|arg| arg == "page" || arg == "cold");
    if only.as_deref() != Some("cold") {
        run(&mapper, "page", PAGE_RECORDS, PAGE_PASSES);
    }
    if only.as_deref() != Some("page") {
        run(&mapper, "cold", COLD_RECORDS, COLD_PASSES);
    }
}
