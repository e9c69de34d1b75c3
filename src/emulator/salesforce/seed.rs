//! Turns the generated people into the emulated org's records: users who own them, the lead
//! statuses and opportunity stages as queryable records, and the history real orgs carry —
//! leads in the recycle bin (some merged into another), leads on a status since deactivated.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::schema::{Catalog, FieldType};
use super::store::OrgData;
use super::value::FieldValue;
use crate::emulator::data::{
    EmulatedRecord, OrgProfile, Properties, SALESFORCE_OPPORTUNITY_STAGES, SalesforceObject,
    SeededRng, owners, salesforce_id,
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

/// Builds the org's records as the generator hands them over, one at a time, so the
/// generated records are never all held at once.
pub struct OrgSeeder {
    data: OrgData,
    rng: SeededRng,
    integration_user: String,
    owner_ids: Vec<String>,
    inactive_status: &'static str,
    /// Positions of the leads still live, candidates to have absorbed a merged one.
    surviving_leads: Vec<usize>,
}

impl OrgSeeder {
    /// The users, lead statuses and opportunity stages of an org with `profile`'s picklists.
    pub fn new(profile: OrgProfile, seed: u64) -> Self {
        let mut data = OrgData::new(Catalog::new(profile));
        let created = Timestamp::from_second(1_640_995_200).unwrap_or(Timestamp::UNIX_EPOCH);
        let integration_user = salesforce_id("005", INTEGRATION_USER_NUMBER);
        let mut users = vec![json!({
            "Id": integration_user, "Username": "integration@crmsync-demo.example",
            "FirstName": "Integration", "LastName": "User", "Email": "integration@crmsync-demo.example",
            "IsActive": true, "UserType": "Standard", "Department": "Revenue Operations",
        })];
        // The same people as HubSpot's owners, so owners can be matched across the systems.
        for (index, owner) in owners().iter().enumerate() {
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
        for (index, (status, converted)) in profile.lead_statuses().iter().enumerate() {
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
        Self {
            data,
            rng: SeededRng::new(seed ^ 0x7366_6f72_6773),
            integration_user,
            owner_ids,
            inactive_status: super::schema::inactive_lead_status(profile),
            surviving_leads: Vec::new(),
        }
    }

    fn owner(&mut self) -> String {
        if self.owner_ids.is_empty() {
            self.integration_user.clone()
        } else {
            self.rng.pick(&self.owner_ids).clone()
        }
    }

    /// Adds one generated record, with an owner; some unconverted leads end up on a
    /// deactivated status or in the recycle bin (half of those merged into another lead).
    pub fn add(&mut self, object: SalesforceObject, record: EmulatedRecord) {
        let mut fields = fields_of(record.properties);
        let owner = self.owner();
        fields.insert("OwnerId".into(), json!(owner));
        if object != SalesforceObject::Lead {
            if let Some(stage) = fields.get("StageName").and_then(Value::as_str) {
                let (category, name) = forecast_category(stage);
                fields.insert("ForecastCategory".into(), json!(category));
                fields.insert("ForecastCategoryName".into(), json!(name));
            }
            push(
                &mut self.data,
                object.name(),
                &Value::Object(fields),
                record.created_at,
                record.updated_at,
                &owner,
            );
            return;
        }
        let converted = fields
            .get("IsConverted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut deleted = None;
        if !converted {
            if self.rng.percent(INACTIVE_STATUS_PERCENT) {
                fields.insert("Status".into(), json!(self.inactive_status));
            }
            if self.rng.percent(DELETED_PERCENT) {
                let when = record.updated_at
                    + SignedDuration::from_secs(self.rng.below(86_400 * 5) as i64 + 60);
                let winner = (self.rng.percent(50) && !self.surviving_leads.is_empty())
                    .then(|| *self.rng.pick(&self.surviving_leads));
                deleted = Some((when, winner));
            }
        }
        let position = push(
            &mut self.data,
            "Lead",
            &Value::Object(fields),
            record.created_at,
            record.updated_at,
            &owner,
        );
        match deleted {
            Some((when, winner)) => self.delete_lead(position, when, winner),
            None => self.surviving_leads.push(position),
        }
    }

    /// Sends the lead at `position` to the recycle bin at `when`, merged into the lead at
    /// `winner` if given.
    fn delete_lead(&mut self, position: usize, when: Timestamp, winner: Option<usize>) {
        let Some(lead_index) = self.data.catalog.object_index("Lead") else {
            return;
        };
        let schema = &self.data.catalog.objects()[lead_index];
        let is_deleted = schema.field_index("IsDeleted");
        let master = schema.field_index("MasterRecordId");
        let modstamp = schema.field_index("SystemModstamp");
        let table = &mut self.data.tables[lead_index];
        let winner_id = winner
            .and_then(|winner| table.records.get(winner))
            .map(|record| FieldValue::text(record.id()));
        let Some(record) = table.records.get_mut(position) else {
            return;
        };
        record.deleted_at = Some(when);
        for (index, value) in [
            (is_deleted, FieldValue::Bool(true)),
            (modstamp, FieldValue::datetime(when)),
            (master, winner_id.unwrap_or(FieldValue::Null)),
        ] {
            if let Some(index) = index {
                record.set(index, value);
            }
        }
    }

    pub fn finish(self) -> OrgData {
        self.data
    }
}

/// The generated fields as JSON values.
fn fields_of(properties: Properties) -> Map<String, Value> {
    properties.to_json_map()
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
    super::writes::derive_fields(schema, &mut record, Some(&mut data.interner));
    data.tables[index].push(record)
}
