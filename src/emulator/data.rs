//! Seeded org data for the emulator: people spread over HubSpot and Salesforce as real
//! companies have them.
//!
//! Everything is derived from one seed, so the same seed always gives the same org. The data
//! is deliberately messy: some people exist only in HubSpot, some only in Salesforce, most in
//! both with the same email written differently (case, stray spaces); every standard picklist
//! value appears, plus the custom values of the chosen [`OrgProfile`]; leads get converted into
//! contacts, accounts and opportunities; HubSpot contacts get archived and merged; names carry
//! apostrophes and non-ASCII letters; modification times spread over months.
//!
//! Records keep their properties in the shape each API sends: HubSpot as strings, Salesforce as
//! typed scalars; repeated values are stored once ([`Properties`]). Salesforce's audit dates
//! (`CreatedDate`, `LastModifiedDate`, `SystemModstamp`) are the records' `created_at` and
//! `updated_at`, not properties.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};

pub use super::properties::{Properties, PropertyValue};

/// Which picklists the org has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgProfile {
    /// A new org as shipped: the standard values only.
    Classic,
    /// An org whose admins customised picklists: other lead statuses, a custom lifecycle stage.
    Custom,
}

impl OrgProfile {
    /// Salesforce `Lead.Status` values, with whether each counts as converted.
    pub fn lead_statuses(self) -> &'static [(&'static str, bool)] {
        match self {
            OrgProfile::Classic => &[
                ("Open - Not Contacted", false),
                ("Working - Contacted", false),
                ("Closed - Converted", true),
                ("Closed - Not Converted", false),
            ],
            OrgProfile::Custom => &[
                ("Open", false),
                ("Qualified", false),
                ("Closed - Converted", true),
                ("Closed - Rejected", false),
            ],
        }
    }

    /// HubSpot `lifecyclestage` internal values (custom stages have numeric ids).
    pub fn lifecycle_stages(self) -> &'static [&'static str] {
        match self {
            OrgProfile::Classic => &[
                "subscriber",
                "lead",
                "marketingqualifiedlead",
                "salesqualifiedlead",
                "opportunity",
                "customer",
                "evangelist",
                "other",
            ],
            OrgProfile::Custom => &[
                "subscriber",
                "lead",
                "marketingqualifiedlead",
                "salesqualifiedlead",
                "opportunity",
                "customer",
                "evangelist",
                "other",
                "153180554",
            ],
        }
    }
}

/// HubSpot `hs_lead_status` default values.
pub const HUBSPOT_LEAD_STATUSES: [&str; 8] = [
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
];

/// Stage ids of HubSpot's default deal pipeline, with whether each is closed and won.
pub const HUBSPOT_DEAL_STAGES: [(&str, bool, bool); 7] = [
    ("appointmentscheduled", false, false),
    ("qualifiedtobuy", false, false),
    ("presentationscheduled", false, false),
    ("decisionmakerboughtin", false, false),
    ("contractsent", false, false),
    ("closedwon", true, true),
    ("closedlost", true, false),
];

/// Salesforce `Opportunity.StageName` values of a new org: (name, closed, won, probability).
pub const SALESFORCE_OPPORTUNITY_STAGES: [(&str, bool, bool, u8); 10] = [
    ("Prospecting", false, false, 10),
    ("Qualification", false, false, 10),
    ("Needs Analysis", false, false, 20),
    ("Value Proposition", false, false, 50),
    ("Id. Decision Makers", false, false, 60),
    ("Perception Analysis", false, false, 70),
    ("Proposal/Price Quote", false, false, 75),
    ("Negotiation/Review", false, false, 90),
    ("Closed Won", true, true, 100),
    ("Closed Lost", true, false, 0),
];

/// A HubSpot user who owns records (`hubspot_owner_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub id: String,
    pub user_id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub team: &'static str,
}

/// One record as the emulator stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmulatedRecord {
    pub id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub archived: bool,
    pub properties: Properties,
}

/// A generated org: both CRMs' records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedOrg {
    pub profile: OrgProfile,
    pub hubspot_contacts: Vec<EmulatedRecord>,
    pub hubspot_companies: Vec<EmulatedRecord>,
    pub hubspot_deals: Vec<EmulatedRecord>,
    pub hubspot_owners: Vec<Owner>,
    pub salesforce_leads: Vec<EmulatedRecord>,
    pub salesforce_contacts: Vec<EmulatedRecord>,
    pub salesforce_accounts: Vec<EmulatedRecord>,
    pub salesforce_opportunities: Vec<EmulatedRecord>,
}

/// A small deterministic random source (SplitMix64): the same seed gives the same sequence on
/// every platform and release.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        // Multiply-shift keeps the bias negligible for the small bounds used here.
        ((u128::from(self.next_u64()) * u128::from(bound.max(1))) >> 64) as u64
    }

    /// True with the given percentage.
    pub fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST_NAMES: [&str; 24] = [
    "Ann", "Bob", "Chloé", "Dana", "Émile", "Farah", "Grace", "Hiro", "Ingrid", "José", "Kwame",
    "Łukasz", "Mei", "Nadia", "Oisín", "Priya", "Quinn", "Rosa", "Søren", "Tariq", "Uma", "Viktor",
    "Wen", "Zoë",
];
const LAST_NAMES: [&str; 20] = [
    "O'Brien",
    "Müller",
    "García",
    "Nguyen",
    "Smith",
    "D'Angelo",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Johansson",
    "Rossi",
    "Dubois",
    "Silva",
    "Chen",
    "O'Neil",
    "Hernández",
    "Patel",
    "Andersen",
    "Kim",
    "Walker",
];
const COMPANIES: [&str; 16] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay Industries",
    "Stark & Wayne",
    "Müller GmbH",
    "Société Générale de Test",
    "Tyrell",
    "Wonka",
    "Cyberdyne",
    "Soylent",
    "Aperture",
    "Dunder Mifflin",
    "Pied Piper",
];
const LEAD_SOURCES: [&str; 5] = [
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];

/// The instant all generated times count back from, so data does not depend on the clock.
const GENERATED_AT: i64 = 1_780_000_000; // 2026-05-28T20:26:40Z

/// How far back creation times go.
const HISTORY_DAYS: i64 = 240;

/// Salesforce's 18-character id: the 15-character id plus a suffix encoding which of its
/// letters are upper case.
pub fn salesforce_id(prefix: &str, number: u64) -> String {
    let short = format!("{prefix}{:0>12}", to_base62(number));
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut suffix = String::with_capacity(3);
    for chunk in short.as_bytes().chunks(5) {
        let mut bits = 0usize;
        for (position, byte) in chunk.iter().enumerate() {
            if byte.is_ascii_uppercase() {
                bits |= 1 << position;
            }
        }
        suffix.push(char::from(alphabet[bits]));
    }
    short + &suffix
}

fn to_base62(mut number: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(number % 62) as usize]);
        number /= 62;
        if number == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// HubSpot timestamps as the API writes them: `2024-05-01T12:34:56.789Z`.
fn hubspot_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Where a generated person lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    HubspotOnly,
    SalesforceOnly,
    Both,
}

/// The Salesforce objects the generator makes records of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesforceObject {
    Lead,
    Contact,
    Account,
    Opportunity,
}

impl SalesforceObject {
    pub fn name(self) -> &'static str {
        match self {
            SalesforceObject::Lead => "Lead",
            SalesforceObject::Contact => "Contact",
            SalesforceObject::Account => "Account",
            SalesforceObject::Opportunity => "Opportunity",
        }
    }
}

/// Builds an org of `people` people from `seed`.
pub fn generate(seed: u64, people: usize, profile: OrgProfile) -> GeneratedOrg {
    let mut leads = Vec::new();
    let mut contacts = Vec::new();
    let mut accounts = Vec::new();
    let mut opportunities = Vec::new();
    let mut org = generate_with(seed, people, profile, &mut |object, record| match object {
        SalesforceObject::Lead => leads.push(record),
        SalesforceObject::Contact => contacts.push(record),
        SalesforceObject::Account => accounts.push(record),
        SalesforceObject::Opportunity => opportunities.push(record),
    });
    org.salesforce_leads = leads;
    org.salesforce_contacts = contacts;
    org.salesforce_accounts = accounts;
    org.salesforce_opportunities = opportunities;
    org
}

/// Builds the org like [`generate`], but hands each Salesforce record to `salesforce` as it
/// is made instead of keeping it (the returned org has none), so a caller that converts them
/// never holds them all at once.
pub fn generate_with(
    seed: u64,
    people: usize,
    profile: OrgProfile,
    salesforce: &mut dyn FnMut(SalesforceObject, EmulatedRecord),
) -> GeneratedOrg {
    let mut org = GeneratedOrg {
        profile,
        hubspot_contacts: Vec::new(),
        hubspot_companies: Vec::new(),
        hubspot_deals: Vec::new(),
        hubspot_owners: Vec::new(),
        salesforce_leads: Vec::new(),
        salesforce_contacts: Vec::new(),
        salesforce_accounts: Vec::new(),
        salesforce_opportunities: Vec::new(),
    };
    let mut rng = SeededRng::new(seed);
    let now = Timestamp::from_second(GENERATED_AT).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut hubspot_next_id: u64 = 1001;
    let mut salesforce_next_id: u64 = 1;
    for index in 0..people {
        let first = *rng.pick(&FIRST_NAMES);
        let last = *rng.pick(&LAST_NAMES);
        let company = *rng.pick(&COMPANIES);
        let email = format!(
            "{}.{}{index}@{}.example",
            ascii_slug(first),
            ascii_slug(last),
            ascii_slug(company)
        );
        let created =
            now - SignedDuration::from_secs(rng.below((HISTORY_DAYS * 86_400) as u64) as i64);
        let modified = created
            + SignedDuration::from_secs(
                rng.below((now.as_second() - created.as_second()).max(1) as u64) as i64,
            );
        let presence = match rng.below(10) {
            0..=2 => Presence::HubspotOnly,
            3 | 4 => Presence::SalesforceOnly,
            _ => Presence::Both,
        };
        // Standard values come round in turn so every one appears; custom ones now and then.
        let lifecycle = profile.lifecycle_stages()[index % profile.lifecycle_stages().len()];
        let lead_status = HUBSPOT_LEAD_STATUSES[index % HUBSPOT_LEAD_STATUSES.len()];
        if presence != Presence::SalesforceOnly {
            let id = hubspot_next_id.to_string();
            hubspot_next_id += 1;
            // Room for the owner and the lead status too: no regrowing, no holes in the heap.
            let mut properties = Properties::with_capacity(12);
            let shown_email = messy_email(&email, &mut rng);
            // HubSpot stamps when a contact entered its lifecycle stage.
            let entered = created
                + SignedDuration::from_secs((modified.as_second() - created.as_second()) / 2);
            for (name, value) in [
                ("email", shown_email),
                ("createdate", hubspot_time(created)),
                ("lastmodifieddate", hubspot_time(modified)),
                ("hs_object_id", id.clone()),
                (
                    &format!("hs_v2_date_entered_{lifecycle}"),
                    hubspot_time(entered),
                ),
            ] {
                properties.insert(name, value);
            }
            for (name, value) in [
                ("firstname", first),
                ("lastname", last),
                ("company", company),
                ("jobtitle", "Head of Growth"),
                ("lifecyclestage", lifecycle),
            ] {
                properties.insert_shared(name, value);
            }
            if rng.percent(70) {
                properties.insert_shared("hs_lead_status", lead_status);
            }
            let archived = rng.percent(2);
            org.hubspot_contacts.push(EmulatedRecord {
                id,
                created_at: created,
                updated_at: modified,
                archived,
                properties,
            });
        }
        if presence != Presence::HubspotOnly {
            generate_salesforce_person(
                profile,
                salesforce,
                &mut rng,
                &mut salesforce_next_id,
                SalesforcePerson {
                    first,
                    last,
                    company,
                    email: &email,
                    created,
                    modified,
                    index,
                },
            );
        }
    }
    merge_some_contacts(&mut org, &mut rng);
    generate_companies_and_deals(&mut org, &mut rng, &mut hubspot_next_id, now);
    assign_owners(&mut org, seed);
    org
}

struct SalesforcePerson<'a> {
    first: &'a str,
    last: &'a str,
    company: &'a str,
    email: &'a str,
    created: Timestamp,
    modified: Timestamp,
    index: usize,
}

fn generate_salesforce_person(
    profile: OrgProfile,
    salesforce: &mut dyn FnMut(SalesforceObject, EmulatedRecord),
    rng: &mut SeededRng,
    next_id: &mut u64,
    person: SalesforcePerson<'_>,
) {
    let statuses = profile.lead_statuses();
    let (status, converted) = statuses[person.index % statuses.len()];
    let mut take_id = |prefix: &str| {
        let id = salesforce_id(prefix, *next_id);
        *next_id += 1;
        id
    };
    let lead_id = take_id("00Q");
    let email = messy_email(person.email, rng);
    let mut lead = json!({
        "Id": lead_id,
        "FirstName": person.first,
        "LastName": person.last,
        "Company": person.company,
        "Email": email,
        "Status": status,
        "LeadSource": *rng.pick(&LEAD_SOURCES),
        "IsConverted": converted,
        "ConvertedContactId": null,
        "ConvertedAccountId": null,
        "ConvertedOpportunityId": null,
        "ConvertedDate": null,
        "IsDeleted": false,
    });
    if converted {
        let account_id = take_id("001");
        let contact_id = take_id("003");
        let opportunity_id = take_id("006");
        let (stage, closed, won, probability) = *rng.pick(&SALESFORCE_OPPORTUNITY_STAGES);
        lead["ConvertedContactId"] = json!(contact_id);
        lead["ConvertedAccountId"] = json!(account_id);
        lead["ConvertedOpportunityId"] = json!(opportunity_id);
        lead["ConvertedDate"] = json!(person.modified.strftime("%Y-%m-%d").to_string());
        salesforce(
            SalesforceObject::Account,
            salesforce_record(
                &account_id,
                json!({"Id": account_id, "Name": person.company, "IsDeleted": false}),
                person.created,
                person.modified,
            ),
        );
        salesforce(
            SalesforceObject::Contact,
            salesforce_record(
                &contact_id,
                json!({
                    "Id": contact_id, "AccountId": account_id,
                    "FirstName": person.first, "LastName": person.last, "Email": email, "IsDeleted": false,
                }),
                person.created,
                person.modified,
            ),
        );
        salesforce(
            SalesforceObject::Opportunity,
            salesforce_record(
                &opportunity_id,
                json!({
                    "Id": opportunity_id, "AccountId": account_id,
                    "ContactId": contact_id, "Name": format!("{} — new business", person.company),
                    "StageName": stage, "IsClosed": closed, "IsWon": won, "Probability": probability,
                    "Amount": (rng.below(90) + 10) * 1000, "CloseDate": person.modified.strftime("%Y-%m-%d").to_string(),
                    "IsDeleted": false,
                }),
                person.created,
                person.modified,
            ),
        );
    }
    salesforce(
        SalesforceObject::Lead,
        salesforce_record(&lead_id, lead, person.created, person.modified),
    );
}

/// Salesforce fields whose values are (nearly) unique per record: kept as their own copy
/// rather than shared.
const SALESFORCE_UNIQUE_FIELDS: [&str; 9] = [
    "Id",
    "Email",
    "AccountId",
    "ContactId",
    "ConvertedAccountId",
    "ConvertedContactId",
    "ConvertedOpportunityId",
    "ConvertedDate",
    "CloseDate",
];

fn salesforce_record(
    id: &str,
    value: Value,
    created: Timestamp,
    modified: Timestamp,
) -> EmulatedRecord {
    let mut properties = Properties::with_capacity(value.as_object().map_or(0, |map| map.len()));
    if let Value::Object(map) = value {
        for (name, value) in map {
            match value {
                Value::Object(_) | Value::Array(_) => {}
                Value::String(text) if !SALESFORCE_UNIQUE_FIELDS.contains(&name.as_str()) => {
                    properties.insert_shared(&name, &text);
                }
                other => {
                    properties.insert(&name, other);
                }
            }
        }
    }
    EmulatedRecord {
        id: id.to_string(),
        created_at: created,
        updated_at: modified,
        archived: false,
        properties,
    }
}

/// Every fifth email comes out as people type them: mixed case, stray spaces.
fn messy_email(email: &str, rng: &mut SeededRng) -> String {
    match rng.below(5) {
        0 => email.to_uppercase(),
        1 => format!(" {email} "),
        2 => {
            let mut chars = email.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
        _ => email.to_string(),
    }
}

fn ascii_slug(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'é' | 'É' | 'è' => Some('e'),
            'ë' | 'Ë' => Some('e'),
            'ø' | 'Ø' | 'ö' | 'Ö' => Some('o'),
            'ü' | 'Ü' => Some('u'),
            'í' | 'Í' => Some('i'),
            'ł' | 'Ł' => Some('l'),
            'á' | 'Á' => Some('a'),
            _ => None,
        })
        .collect()
}

/// About 1% of HubSpot contacts are merged into another: the absorbed one is archived and the
/// survivor lists it in `hs_merged_object_ids`.
fn merge_some_contacts(org: &mut GeneratedOrg, rng: &mut SeededRng) {
    let count = org.hubspot_contacts.len();
    if count < 2 {
        return;
    }
    for _ in 0..count / 100 {
        let absorbed = rng.below(count as u64) as usize;
        let survivor = (absorbed + 1 + rng.below((count - 1) as u64) as usize) % count;
        if org.hubspot_contacts[absorbed].archived || org.hubspot_contacts[survivor].archived {
            continue;
        }
        let absorbed_id = org.hubspot_contacts[absorbed].id.clone();
        org.hubspot_contacts[absorbed].archived = true;
        let survivor_record = &mut org.hubspot_contacts[survivor];
        let merged = match survivor_record.properties.text("hs_merged_object_ids") {
            Some(existing) => format!("{existing};{absorbed_id}"),
            None => absorbed_id,
        };
        survivor_record
            .properties
            .insert("hs_merged_object_ids", merged);
    }
}

/// One HubSpot company per company name, and a deal for about a third of the contacts in the
/// late stages, in the default pipeline.
fn generate_companies_and_deals(
    org: &mut GeneratedOrg,
    rng: &mut SeededRng,
    next_id: &mut u64,
    now: Timestamp,
) {
    for name in COMPANIES {
        let id = next_id.to_string();
        *next_id += 1;
        let mut properties = Properties::default();
        properties.insert_shared("name", name);
        properties.insert("domain", format!("{}.example", ascii_slug(name)));
        properties.insert("hs_object_id", id.clone());
        properties.insert("createdate", hubspot_time(now));
        properties.insert("hs_lastmodifieddate", hubspot_time(now));
        org.hubspot_companies.push(EmulatedRecord {
            id,
            created_at: now,
            updated_at: now,
            archived: false,
            properties,
        });
    }
    let late_stages = ["opportunity", "customer", "evangelist"];
    let candidates: Vec<(Timestamp, Timestamp)> = org
        .hubspot_contacts
        .iter()
        .filter(|contact| {
            contact
                .properties
                .text("lifecyclestage")
                .is_some_and(|stage| late_stages.contains(&stage))
        })
        .map(|contact| (contact.created_at, contact.updated_at))
        .collect();
    for (created, modified) in candidates {
        let (stage, _, _) = *rng.pick(&HUBSPOT_DEAL_STAGES);
        let id = next_id.to_string();
        *next_id += 1;
        let mut properties = Properties::with_capacity(9);
        for (name, value) in [
            ("dealname", format!("Deal {id}")),
            ("closedate", hubspot_time(modified)),
            ("createdate", hubspot_time(created)),
            ("hs_lastmodifieddate", hubspot_time(modified)),
            ("hs_object_id", id.clone()),
        ] {
            properties.insert(name, value);
        }
        let amount = ((rng.below(90) + 10) * 1000).to_string();
        for (name, value) in [
            ("amount", amount.as_str()),
            ("pipeline", "default"),
            ("dealstage", stage),
        ] {
            properties.insert_shared(name, value);
        }
        org.hubspot_deals.push(EmulatedRecord {
            id,
            created_at: created,
            updated_at: modified,
            archived: false,
            properties,
        });
    }
}

/// Six sales and marketing users; contacts and deals get one of them as owner (about one in
/// five contacts has none). A separate random source keeps the other data unchanged.
fn assign_owners(org: &mut GeneratedOrg, seed: u64) {
    let mut rng = SeededRng::new(seed ^ 0x6f77_6e65_7273);
    org.hubspot_owners = owners();
    let owner_ids: Vec<String> = org
        .hubspot_owners
        .iter()
        .map(|owner| owner.id.clone())
        .collect();
    for record in org
        .hubspot_contacts
        .iter_mut()
        .chain(org.hubspot_deals.iter_mut())
    {
        if rng.percent(80) {
            let owner = rng.pick(&owner_ids);
            record.properties.insert_shared("hubspot_owner_id", owner);
        }
    }
}

/// The org's six sales and marketing users (the same in every org).
pub fn owners() -> Vec<Owner> {
    let people = [
        ("Maya", "Lindqvist", "Sales"),
        ("Tomás", "Ortega", "Sales"),
        ("Aisha", "Bello", "Sales"),
        ("Declan", "O'Shea", "Marketing"),
        ("Yuki", "Sato", "Marketing"),
        ("Greta", "Nowak", "Sales"),
    ];
    people
        .iter()
        .enumerate()
        .map(|(index, (first, last, team))| Owner {
            id: (41_629_779 + index as u64 * 7_919).to_string(),
            user_id: 9_586_504 + index as u64,
            email: format!(
                "{}.{}@crmsync-demo.example",
                ascii_slug(first),
                ascii_slug(last)
            ),
            first_name: (*first).to_string(),
            last_name: (*last).to_string(),
            team,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_ids_carry_the_case_checksum() {
        // No upper-case letter in any 5-character chunk: suffix "AAA".
        assert_eq!(salesforce_id("001", 1), "001000000000001AAA");
        // The `Q` of a lead id is upper case at position 2 of the first chunk: bit 2, "E".
        let id = salesforce_id("00Q", 0);
        assert_eq!(id, "00Q000000000000EAA");
        // Upper-case letters set the bits of their chunk.
        let with_letters = salesforce_id("00Q", 61 * 62 + 36);
        assert_eq!(with_letters.len(), 18);
        assert_ne!(&with_letters[15..], "AAA");
    }

    #[test]
    fn the_rng_is_stable_across_releases() {
        let mut rng = SeededRng::new(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        // The reference outputs of SplitMix64 from state 0.
        assert_eq!(
            first,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }
}
