//! Turns the generated people into the emulated org's records: users who own them, the lead
//! statuses and opportunity stages as queryable records, and the history real orgs carry —
//! leads in the recycle bin (some merged into another), leads on a status since deactivated.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::schema::{Catalog, FieldType};
use super::store::OrgData;
use super::value::FieldValue;
use crate::emulator::data::{
    GeneratedOrg, SALESFORCE_OPPORTUNITY_STAGES, SeededRng, salesforce_id,
};

/// Id number of the integration user the connected app runs as.
pub const INTEGRATION_USER_NUMBER: u64 = 900_000_000;
/// Numbers of records created through the API start here, past every seeded record.
pub const FIRST_NEW_RECORD_NUMBER: u64 = 3_000_000_000;
/// Leads sent to the recycle bin, in percent of unconverted leads.
const DELETED_PERCENT: u64 = 2;
/// Leads still on a status since deactivated, in percent of unconverted leads.
const INACTIVE_STATUS_PERCENT: u64 = 3;

/// Salesforce's forecast category (API value, label) for an opportunity stage.
pub fn forecast_category(stage: &str) -> (&'static str, &'static str) {
    match SALESFORCE_OPPORTUNITY_STAGES
        .iter()
        .find(|(name, ..)| *name == stage)
    {
        Some((_, true, true, _)) => ("Closed", "Closed"),
        Some((_, true, false, _)) => ("Omitted", "Omitted"),
        _ => ("Pipeline", "Pipeline"),
    }
}

/// The org's records, taken out of `org`.
pub fn org_data(org: &mut GeneratedOrg, seed: u64) -> OrgData {
    let catalog = Catalog::new(org.profile);
    let mut data = OrgData::new(catalog);
    let mut rng = SeededRng::new(seed ^ 0x7366_6f72_6773);
    let created = Timestamp::from_second(1_640_995_200).unwrap_or(Timestamp::UNIX_EPOCH);
    let integration_user = salesforce_id("005", INTEGRATION_USER_NUMBER);

    let mut users = vec![json!({
        "Id": integration_user, "Username": "integration@crmsync-demo.example",
        "FirstName": "Integration", "LastName": "User", "Email": "integration@crmsync-demo.example",
        "IsActive": true, "UserType": "Standard", "Department": "Revenue Operations",
    })];
    for (index, owner) in org.hubspot_owners.iter().enumerate() {
        users.push(json!({
            "Id": salesforce_id("005", INTEGRATION_USER_NUMBER + 1 + index as u64),
            "Username": owner.email, "Email": owner.email,
            "FirstName": owner.first_name, "LastName": owner.last_name,
            "IsActive": true, "UserType": "Standard", "Department": owner.team,
        }));
    }
    let owner_ids: Vec<String> = users
        .iter()
        .skip(1)
        .filter_map(|user| user["Id"].as_str().map(str::to_string))
        .collect();
    for user in &users {
        push(&mut data, "User", user, created, created, &integration_user);
    }

    for (index, (status, converted)) in org.profile.lead_statuses().iter().enumerate() {
        let record = json!({
            "Id": salesforce_id("01J", 10_000 + index as u64),
            "MasterLabel": status, "ApiName": status, "SortOrder": index + 1,
            "IsDefault": index == 0, "IsConverted": converted,
        });
        push(
            &mut data,
            "LeadStatus",
            &record,
            created,
            created,
            &integration_user,
        );
    }
    for (index, (stage, closed, won, probability)) in
        SALESFORCE_OPPORTUNITY_STAGES.iter().enumerate()
    {
        let (category, category_name) = forecast_category(stage);
        let record = json!({
            "Id": salesforce_id("01J", 20_000 + index as u64),
            "MasterLabel": stage, "ApiName": stage, "IsActive": true, "SortOrder": index + 1,
            "IsClosed": closed, "IsWon": won, "DefaultProbability": probability,
            "ForecastCategory": category, "ForecastCategoryName": category_name,
        });
        push(
            &mut data,
            "OpportunityStage",
            &record,
            created,
            created,
            &integration_user,
        );
    }

    let owner_of = |rng: &mut SeededRng| -> String {
        if owner_ids.is_empty() {
            integration_user.clone()
        } else {
            rng.pick(&owner_ids).clone()
        }
    };
    for (object, records) in [
        ("Account", std::mem::take(&mut org.salesforce_accounts)),
        ("Contact", std::mem::take(&mut org.salesforce_contacts)),
        (
            "Opportunity",
            std::mem::take(&mut org.salesforce_opportunities),
        ),
    ] {
        for record in records {
            let mut fields = fields_of(record.properties);
            let owner = owner_of(&mut rng);
            fields.insert("OwnerId".into(), json!(owner));
            if let Some(stage) = fields.get("StageName").and_then(Value::as_str) {
                let (category, name) = forecast_category(stage);
                fields.insert("ForecastCategory".into(), json!(category));
                fields.insert("ForecastCategoryName".into(), json!(name));
            }
            push(
                &mut data,
                object,
                &Value::Object(fields),
                record.created_at,
                record.updated_at,
                &owner,
            );
        }
    }

    let inactive = super::schema::inactive_lead_status(org.profile);
    let leads = std::mem::take(&mut org.salesforce_leads);
    let mut survivors: Vec<String> = Vec::new();
    let mut deletions: Vec<(usize, Timestamp, Option<String>)> = Vec::new();
    for record in leads {
        let mut fields = fields_of(record.properties);
        let owner = owner_of(&mut rng);
        fields.insert("OwnerId".into(), json!(owner));
        let converted = fields
            .get("IsConverted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut deleted = None;
        if !converted {
            if rng.percent(INACTIVE_STATUS_PERCENT) {
                fields.insert("Status".into(), json!(inactive));
            }
            if rng.percent(DELETED_PERCENT) {
                let when = record.updated_at
                    + SignedDuration::from_secs(rng.below(86_400 * 5) as i64 + 60);
                // Half of the leads in the recycle bin lost a merge.
                let winner = (rng.percent(50) && !survivors.is_empty())
                    .then(|| rng.pick(&survivors).clone());
                deleted = Some((when, winner));
            }
        }
        let position = push(
            &mut data,
            "Lead",
            &Value::Object(fields),
            record.created_at,
            record.updated_at,
            &owner,
        );
        match deleted {
            Some((when, winner)) => deletions.push((position, when, winner)),
            None => survivors.push(record.id),
        }
    }
    if let Some(lead_index) = data.catalog.object_index("Lead") {
        let schema = &data.catalog.objects()[lead_index];
        let is_deleted = schema.field_index("IsDeleted");
        let master = schema.field_index("MasterRecordId");
        let modstamp = schema.field_index("SystemModstamp");
        let table = &mut data.tables[lead_index];
        for (position, when, winner) in deletions {
            let record = &mut table.records[position];
            record.deleted_at = Some(when);
            for (index, value) in [
                (is_deleted, FieldValue::Bool(true)),
                (modstamp, FieldValue::DateTime(when)),
                (master, winner.map_or(FieldValue::Null, FieldValue::text)),
            ] {
                if let Some(index) = index {
                    record.set(index, value);
                }
            }
        }
    }
    data
}

/// The generated fields without the `attributes` the generator adds.
fn fields_of(properties: std::collections::BTreeMap<String, Value>) -> Map<String, Value> {
    properties
        .into_iter()
        .filter(|(name, _)| name != "attributes")
        .collect()
}

/// Adds a record with its audit fields and full name; returns its position in its table.
fn push(
    data: &mut OrgData,
    object: &str,
    fields: &Value,
    created: Timestamp,
    modified: Timestamp,
    creator: &str,
) -> usize {
    let Some(index) = data.catalog.object_index(object) else {
        return 0;
    };
    let schema = &data.catalog.objects()[index];
    let mut map = fields.as_object().cloned().unwrap_or_default();
    let stamp = |at: Timestamp| json!(super::value::format_datetime(at));
    for (name, value) in [
        ("CreatedDate", stamp(created)),
        ("LastModifiedDate", stamp(modified)),
        ("SystemModstamp", stamp(modified)),
        ("CreatedById", json!(creator)),
        ("LastModifiedById", json!(creator)),
    ] {
        map.entry(name.to_string()).or_insert(value);
    }
    // Salesforce trims email addresses on save; their case stays as typed.
    for field in schema
        .fields
        .iter()
        .filter(|field| field.field_type == FieldType::Email)
    {
        if let Some(Value::String(email)) = map.get_mut(&field.name) {
            *email = email.trim().to_string();
        }
    }
    let mut record = OrgData::record_from_json(schema, &map, &mut data.interner);
    super::writes::derive_fields(schema, &mut record);
    data.tables[index].push(record)
}
