//! What the emulated Salesforce org's objects look like: each object's fields with their
//! types, picklist values, lookups and flags (`createable`, `updateable`, `externalId`, …).
//! The describe endpoints, SOQL and every write check against this catalog. Picklists follow
//! the org profile, as real orgs' do.

use rustc_hash::FxHashMap;

use super::super::data::{OrgProfile, SALESFORCE_OPPORTUNITY_STAGES};

/// A field's data type, as `describe` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Id,
    Reference,
    String,
    Textarea,
    Email,
    Phone,
    Url,
    Picklist,
    Boolean,
    Double,
    Currency,
    Percent,
    Int,
    Date,
    DateTime,
}

impl FieldType {
    /// The `type` in describe output.
    pub fn api_name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::Reference => "reference",
            FieldType::String => "string",
            FieldType::Textarea => "textarea",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Picklist => "picklist",
            FieldType::Boolean => "boolean",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Percent => "percent",
            FieldType::Int => "int",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
        }
    }

    /// The `soapType` in describe output.
    pub fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Double | FieldType::Currency | FieldType::Percent => "xsd:double",
            FieldType::Int => "xsd:int",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }

    /// Text-like types: compared case-insensitively, matched by LIKE.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::Id
                | FieldType::Reference
                | FieldType::String
                | FieldType::Textarea
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
        )
    }

    pub fn is_number(self) -> bool {
        matches!(
            self,
            FieldType::Double | FieldType::Currency | FieldType::Percent | FieldType::Int
        )
    }
}

/// One value of a picklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PicklistEntry {
    pub value: String,
    pub label: String,
    pub active: bool,
    pub default: bool,
}

/// One field of an object.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: String,
    pub label: String,
    pub field_type: FieldType,
    pub length: u32,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    /// Set by the server when a create leaves it out (Status, OwnerId, IsConverted, …).
    pub defaulted_on_create: bool,
    pub external_id: bool,
    pub unique: bool,
    pub id_lookup: bool,
    pub custom: bool,
    pub filterable: bool,
    pub sortable: bool,
    pub reference_to: Vec<String>,
    pub relationship_name: Option<String>,
    pub picklist: Vec<PicklistEntry>,
    pub restricted_picklist: bool,
    pub precision: u32,
    pub scale: u32,
    pub digits: u32,
}

impl FieldDef {
    fn new(name: &str, field_type: FieldType) -> Self {
        let (length, precision, scale, digits) = match field_type {
            FieldType::Id | FieldType::Reference => (18, 0, 0, 0),
            FieldType::String => (255, 0, 0, 0),
            FieldType::Textarea => (32_000, 0, 0, 0),
            FieldType::Email => (80, 0, 0, 0),
            FieldType::Phone => (40, 0, 0, 0),
            FieldType::Url => (255, 0, 0, 0),
            FieldType::Picklist => (255, 0, 0, 0),
            FieldType::Currency => (0, 18, 2, 0),
            FieldType::Percent => (0, 3, 0, 0),
            FieldType::Double => (0, 18, 0, 0),
            FieldType::Int => (0, 0, 0, 8),
            _ => (0, 0, 0, 0),
        };
        Self {
            name: name.to_string(),
            label: label_of(name),
            field_type,
            length,
            nillable: !matches!(field_type, FieldType::Boolean | FieldType::Id),
            createable: true,
            updateable: true,
            defaulted_on_create: field_type == FieldType::Boolean,
            external_id: false,
            unique: false,
            id_lookup: field_type == FieldType::Id,
            custom: name.ends_with("__c"),
            filterable: field_type != FieldType::Textarea,
            sortable: field_type != FieldType::Textarea,
            reference_to: Vec::new(),
            relationship_name: None,
            picklist: Vec::new(),
            restricted_picklist: false,
            precision,
            scale,
            digits,
        }
    }

    /// Whether a create without this field fails with REQUIRED_FIELD_MISSING.
    pub fn required_on_create(&self) -> bool {
        self.createable && !self.nillable && !self.defaulted_on_create
    }

    fn length(mut self, length: u32) -> Self {
        self.length = length;
        self
    }

    fn label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    fn required(mut self) -> Self {
        self.nillable = false;
        self
    }

    fn read_only(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }

    fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }

    fn defaulted(mut self) -> Self {
        self.defaulted_on_create = true;
        self
    }

    fn lookup(mut self, to: &[&str], relationship: &str) -> Self {
        self.reference_to = to.iter().map(|name| name.to_string()).collect();
        self.relationship_name = Some(relationship.to_string());
        self
    }

    fn id_lookup(mut self) -> Self {
        self.id_lookup = true;
        self
    }

    fn external_id(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self.id_lookup = true;
        self
    }

    fn picklist(mut self, values: &[&str], default: Option<&str>) -> Self {
        self.picklist = values
            .iter()
            .map(|value| PicklistEntry {
                value: value.to_string(),
                label: value.to_string(),
                active: true,
                default: Some(*value) == default,
            })
            .collect();
        self
    }

    fn restricted(mut self) -> Self {
        self.restricted_picklist = true;
        self
    }

    /// Adds a value that was deactivated: records keep it, writes may not set it.
    fn inactive_value(mut self, value: &str) -> Self {
        self.picklist.push(PicklistEntry {
            value: value.to_string(),
            label: value.to_string(),
            active: false,
            default: false,
        });
        self
    }

    /// Whether a write may set `value` (restricted picklists take only their active values,
    /// case-sensitively, as the API checks).
    pub fn allows(&self, value: &str) -> bool {
        !self.restricted_picklist
            || self
                .picklist
                .iter()
                .any(|entry| entry.active && entry.value == value)
    }
}

/// `FirstName` → `First Name`; ids and custom suffixes get the labels Salesforce gives them.
fn label_of(name: &str) -> String {
    let base = name.strip_suffix("__c").unwrap_or(name);
    let base = if base == "Id" {
        "Record ID"
    } else {
        base.strip_suffix("Id")
            .filter(|rest| rest.ends_with(|last: char| last.is_lowercase()))
            .unwrap_or(base)
    };
    let mut label = String::new();
    let mut previous_lower = false;
    for character in base.chars() {
        if character == '_' {
            label.push(' ');
            previous_lower = false;
            continue;
        }
        if character.is_uppercase() && previous_lower {
            label.push(' ');
        }
        previous_lower = character.is_lowercase();
        label.push(character);
    }
    label
}

/// One object type: its name, key prefix and fields.
#[derive(Debug, Clone)]
pub struct ObjectSchema {
    pub name: String,
    pub label: String,
    pub label_plural: String,
    pub key_prefix: String,
    pub fields: Vec<FieldDef>,
    /// Writes to records of this object are allowed through the API.
    pub createable: bool,
    by_lowercase_name: FxHashMap<String, usize>,
    by_lowercase_relationship: FxHashMap<String, usize>,
}

impl ObjectSchema {
    fn new(name: &str, label_plural: &str, key_prefix: &str, fields: Vec<FieldDef>) -> Self {
        let label = label_of(name);
        let mut fields = fields;
        if let Some(id) = fields.first_mut().filter(|id| id.label == "Record ID") {
            id.label = format!("{label} ID");
        }
        let by_lowercase_name = fields
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.to_ascii_lowercase(), index))
            .collect();
        let by_lowercase_relationship = fields
            .iter()
            .enumerate()
            .filter_map(|(index, field)| {
                field
                    .relationship_name
                    .as_ref()
                    .map(|relationship| (relationship.to_ascii_lowercase(), index))
            })
            .collect();
        Self {
            name: name.to_string(),
            label,
            label_plural: label_plural.to_string(),
            key_prefix: key_prefix.to_string(),
            fields,
            createable: true,
            by_lowercase_name,
            by_lowercase_relationship,
        }
    }

    fn read_only(mut self) -> Self {
        self.createable = false;
        for field in &mut self.fields {
            field.createable = false;
            field.updateable = false;
        }
        self
    }

    /// A field by name, case-insensitively (as SOQL and the REST API match names).
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.by_lowercase_name
            .get(&name.to_ascii_lowercase())
            .copied()
    }

    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.field_index(name).map(|index| &self.fields[index])
    }

    /// The lookup field behind a relationship name (`Owner` → `OwnerId`), case-insensitively.
    pub fn relationship_index(&self, relationship: &str) -> Option<usize> {
        self.by_lowercase_relationship
            .get(&relationship.to_ascii_lowercase())
            .copied()
    }

    /// Index of the `Id` field (always the first).
    pub const ID: usize = 0;
}

/// Every object the emulated org has.
#[derive(Debug, Clone)]
pub struct Catalog {
    objects: Vec<ObjectSchema>,
}

/// Objects whose records the emulator holds, in the order `describeGlobal` lists them.
pub const OBJECT_NAMES: [&str; 7] = [
    "Account",
    "Contact",
    "Lead",
    "LeadStatus",
    "Opportunity",
    "OpportunityStage",
    "User",
];

impl Catalog {
    /// The objects of an org with `profile`'s picklists.
    pub fn new(profile: OrgProfile) -> Self {
        Self {
            objects: vec![
                account(),
                contact(),
                lead(profile),
                lead_status(),
                opportunity(),
                opportunity_stage(),
                user(),
            ],
        }
    }

    /// An object by name, case-insensitively.
    pub fn object(&self, name: &str) -> Option<&ObjectSchema> {
        self.objects
            .iter()
            .find(|object| object.name.eq_ignore_ascii_case(name))
    }

    /// Position of an object in [`Catalog::objects`], case-insensitively.
    pub fn object_index(&self, name: &str) -> Option<usize> {
        self.objects
            .iter()
            .position(|object| object.name.eq_ignore_ascii_case(name))
    }

    pub fn objects(&self) -> &[ObjectSchema] {
        &self.objects
    }

    /// The object whose ids start with `id`'s first three characters.
    pub fn object_for_id(&self, id: &str) -> Option<&ObjectSchema> {
        let prefix = id.get(..3)?;
        self.objects
            .iter()
            .find(|object| object.key_prefix == prefix && object.name != "OpportunityStage")
    }
}

/// Fields every object has at the end: owner and audit fields.
fn audit_fields(with_owner: bool) -> Vec<FieldDef> {
    let mut fields = Vec::new();
    if with_owner {
        fields.push(
            FieldDef::new("OwnerId", FieldType::Reference)
                .lookup(&["User"], "Owner")
                .required()
                .defaulted()
                .label("Owner ID"),
        );
    }
    fields.extend([
        FieldDef::new("CreatedDate", FieldType::DateTime)
            .read_only()
            .required()
            .defaulted(),
        FieldDef::new("CreatedById", FieldType::Reference)
            .lookup(&["User"], "CreatedBy")
            .read_only()
            .required()
            .defaulted()
            .label("Created By ID"),
        FieldDef::new("LastModifiedDate", FieldType::DateTime)
            .read_only()
            .required()
            .defaulted(),
        FieldDef::new("LastModifiedById", FieldType::Reference)
            .lookup(&["User"], "LastModifiedBy")
            .read_only()
            .required()
            .defaulted()
            .label("Last Modified By ID"),
        FieldDef::new("SystemModstamp", FieldType::DateTime)
            .read_only()
            .required()
            .defaulted()
            .label("System Modstamp"),
    ]);
    fields
}

fn id_field() -> FieldDef {
    FieldDef::new("Id", FieldType::Id).read_only().defaulted()
}

fn is_deleted() -> FieldDef {
    FieldDef::new("IsDeleted", FieldType::Boolean)
        .read_only()
        .label("Deleted")
}

const LEAD_SOURCES: [&str; 5] = [
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];
const INDUSTRIES: [&str; 8] = [
    "Agriculture",
    "Banking",
    "Education",
    "Energy",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Technology",
];
const SALUTATIONS: [&str; 6] = ["Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx."];

fn person_name_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new("LastName", FieldType::String)
            .length(80)
            .required(),
        FieldDef::new("FirstName", FieldType::String).length(40),
        FieldDef::new("Salutation", FieldType::Picklist).picklist(&SALUTATIONS, None),
        FieldDef::new("Name", FieldType::String)
            .length(121)
            .read_only()
            .label("Full Name"),
    ]
}

/// A `Lead.Status` value the org's admins deactivated; some old leads still have it.
pub fn inactive_lead_status(profile: OrgProfile) -> &'static str {
    match profile {
        OrgProfile::Classic => "Nurturing",
        OrgProfile::Custom => "Working",
    }
}

/// The custom external-id field the org's admins added to hold HubSpot's contact id.
fn hubspot_id_field() -> FieldDef {
    FieldDef::new("HubSpot_Contact_Id__c", FieldType::String)
        .length(64)
        .external_id()
        .label("HubSpot Contact ID")
}

/// The custom field the org's admins added for crmsync's shared lead stage.
fn shared_stage_field() -> FieldDef {
    FieldDef::new("CRMSync_Stage__c", FieldType::String)
        .length(40)
        .label("Shared Lead Stage")
}

fn lead(profile: OrgProfile) -> ObjectSchema {
    let statuses: Vec<&str> = profile
        .lead_statuses()
        .iter()
        .map(|(status, _)| *status)
        .collect();
    let mut fields = vec![
        id_field(),
        is_deleted(),
        FieldDef::new("MasterRecordId", FieldType::Reference)
            .lookup(&["Lead"], "MasterRecord")
            .read_only()
            .label("Master Record ID"),
    ];
    fields.extend(person_name_fields());
    fields.extend([
        FieldDef::new("Title", FieldType::String).length(128),
        FieldDef::new("Company", FieldType::String).required(),
        FieldDef::new("Street", FieldType::Textarea).length(255),
        FieldDef::new("City", FieldType::String).length(40),
        FieldDef::new("State", FieldType::String)
            .length(80)
            .label("State/Province"),
        FieldDef::new("PostalCode", FieldType::String)
            .length(20)
            .label("Zip/Postal Code"),
        FieldDef::new("Country", FieldType::String).length(80),
        FieldDef::new("Phone", FieldType::Phone),
        FieldDef::new("MobilePhone", FieldType::Phone),
        FieldDef::new("Email", FieldType::Email).id_lookup(),
        FieldDef::new("Website", FieldType::Url),
        FieldDef::new("Description", FieldType::Textarea),
        FieldDef::new("LeadSource", FieldType::Picklist).picklist(&LEAD_SOURCES, None),
        FieldDef::new("Status", FieldType::Picklist)
            .picklist(&statuses, statuses.first().copied())
            .inactive_value(inactive_lead_status(profile))
            .restricted()
            .required()
            .defaulted()
            .label("Lead Status"),
        FieldDef::new("Industry", FieldType::Picklist).picklist(&INDUSTRIES, None),
        FieldDef::new("Rating", FieldType::Picklist).picklist(&["Hot", "Warm", "Cold"], None),
        FieldDef::new("AnnualRevenue", FieldType::Currency),
        FieldDef::new("NumberOfEmployees", FieldType::Int).label("Employees"),
        FieldDef::new("IsConverted", FieldType::Boolean)
            .create_only()
            .label("Converted"),
        FieldDef::new("ConvertedDate", FieldType::Date).read_only(),
        FieldDef::new("ConvertedAccountId", FieldType::Reference)
            .lookup(&["Account"], "ConvertedAccount")
            .read_only()
            .label("Converted Account ID"),
        FieldDef::new("ConvertedContactId", FieldType::Reference)
            .lookup(&["Contact"], "ConvertedContact")
            .read_only()
            .label("Converted Contact ID"),
        FieldDef::new("ConvertedOpportunityId", FieldType::Reference)
            .lookup(&["Opportunity"], "ConvertedOpportunity")
            .read_only()
            .label("Converted Opportunity ID"),
        FieldDef::new("IsUnreadByOwner", FieldType::Boolean).label("Unread By Owner"),
    ]);
    fields.extend(audit_fields(true));
    fields.push(
        FieldDef::new("LastActivityDate", FieldType::Date)
            .read_only()
            .label("Last Activity"),
    );
    fields.push(hubspot_id_field());
    fields.push(shared_stage_field());
    ObjectSchema::new("Lead", "Leads", "00Q", fields)
}

fn contact() -> ObjectSchema {
    let mut fields = vec![
        id_field(),
        is_deleted(),
        FieldDef::new("MasterRecordId", FieldType::Reference)
            .lookup(&["Contact"], "MasterRecord")
            .read_only()
            .label("Master Record ID"),
        FieldDef::new("AccountId", FieldType::Reference)
            .lookup(&["Account"], "Account")
            .label("Account ID"),
    ];
    fields.extend(person_name_fields());
    fields.extend([
        FieldDef::new("MailingStreet", FieldType::Textarea).length(255),
        FieldDef::new("MailingCity", FieldType::String).length(40),
        FieldDef::new("MailingState", FieldType::String).length(80),
        FieldDef::new("MailingPostalCode", FieldType::String).length(20),
        FieldDef::new("MailingCountry", FieldType::String).length(80),
        FieldDef::new("Phone", FieldType::Phone).label("Business Phone"),
        FieldDef::new("MobilePhone", FieldType::Phone),
        FieldDef::new("Email", FieldType::Email).id_lookup(),
        FieldDef::new("Title", FieldType::String).length(128),
        FieldDef::new("Department", FieldType::String).length(80),
        FieldDef::new("LeadSource", FieldType::Picklist).picklist(&LEAD_SOURCES, None),
        FieldDef::new("Description", FieldType::Textarea),
        FieldDef::new("HasOptedOutOfEmail", FieldType::Boolean).label("Email Opt Out"),
        FieldDef::new("DoNotCall", FieldType::Boolean),
    ]);
    fields.extend(audit_fields(true));
    fields.push(
        FieldDef::new("LastActivityDate", FieldType::Date)
            .read_only()
            .label("Last Activity"),
    );
    fields.push(hubspot_id_field());
    fields.push(shared_stage_field());
    ObjectSchema::new("Contact", "Contacts", "003", fields)
}

fn account() -> ObjectSchema {
    let mut fields = vec![
        id_field(),
        is_deleted(),
        FieldDef::new("MasterRecordId", FieldType::Reference)
            .lookup(&["Account"], "MasterRecord")
            .read_only()
            .label("Master Record ID"),
        FieldDef::new("Name", FieldType::String)
            .required()
            .label("Account Name"),
        FieldDef::new("Type", FieldType::Picklist)
            .picklist(
                &[
                    "Prospect",
                    "Customer - Direct",
                    "Customer - Channel",
                    "Channel Partner / Reseller",
                    "Installation Partner",
                    "Technology Partner",
                    "Other",
                ],
                None,
            )
            .label("Account Type"),
        FieldDef::new("ParentId", FieldType::Reference)
            .lookup(&["Account"], "Parent")
            .label("Parent Account ID"),
        FieldDef::new("BillingStreet", FieldType::Textarea).length(255),
        FieldDef::new("BillingCity", FieldType::String).length(40),
        FieldDef::new("BillingCountry", FieldType::String).length(80),
        FieldDef::new("Phone", FieldType::Phone).label("Account Phone"),
        FieldDef::new("Website", FieldType::Url),
        FieldDef::new("Industry", FieldType::Picklist).picklist(&INDUSTRIES, None),
        FieldDef::new("AnnualRevenue", FieldType::Currency),
        FieldDef::new("NumberOfEmployees", FieldType::Int).label("Employees"),
        FieldDef::new("AccountSource", FieldType::Picklist).picklist(&LEAD_SOURCES, None),
        FieldDef::new("Description", FieldType::Textarea).label("Account Description"),
    ];
    fields.extend(audit_fields(true));
    ObjectSchema::new("Account", "Accounts", "001", fields)
}

fn opportunity() -> ObjectSchema {
    let stages: Vec<&str> = SALESFORCE_OPPORTUNITY_STAGES
        .iter()
        .map(|(name, ..)| *name)
        .collect();
    let mut fields = vec![
        id_field(),
        is_deleted(),
        FieldDef::new("AccountId", FieldType::Reference)
            .lookup(&["Account"], "Account")
            .label("Account ID"),
        FieldDef::new("ContactId", FieldType::Reference)
            .lookup(&["Contact"], "Contact")
            .label("Contact ID"),
        FieldDef::new("Name", FieldType::String)
            .length(120)
            .required(),
        FieldDef::new("Description", FieldType::Textarea),
        FieldDef::new("StageName", FieldType::Picklist)
            .picklist(&stages, stages.first().copied())
            .restricted()
            .required()
            .label("Stage"),
        FieldDef::new("Amount", FieldType::Currency),
        FieldDef::new("Probability", FieldType::Percent).label("Probability (%)"),
        FieldDef::new("CloseDate", FieldType::Date).required(),
        FieldDef::new("Type", FieldType::Picklist)
            .picklist(
                &[
                    "Existing Customer - Upgrade",
                    "Existing Customer - Replacement",
                    "Existing Customer - Downgrade",
                    "New Customer",
                ],
                None,
            )
            .label("Opportunity Type"),
        FieldDef::new("NextStep", FieldType::String).length(255),
        FieldDef::new("LeadSource", FieldType::Picklist).picklist(&LEAD_SOURCES, None),
        FieldDef::new("IsClosed", FieldType::Boolean)
            .read_only()
            .label("Closed"),
        FieldDef::new("IsWon", FieldType::Boolean)
            .read_only()
            .label("Won"),
        FieldDef::new("ForecastCategory", FieldType::Picklist)
            .picklist(
                &[
                    "Omitted",
                    "Pipeline",
                    "BestCase",
                    "MostLikely",
                    "Forecast",
                    "Closed",
                ],
                None,
            )
            .read_only(),
        FieldDef::new("ForecastCategoryName", FieldType::Picklist)
            .picklist(
                &[
                    "Omitted",
                    "Pipeline",
                    "Best Case",
                    "Most Likely",
                    "Commit",
                    "Closed",
                ],
                None,
            )
            .defaulted()
            .label("Forecast Category"),
    ];
    fields.extend(audit_fields(true));
    ObjectSchema::new("Opportunity", "Opportunities", "006", fields)
}

fn user() -> ObjectSchema {
    let mut fields = vec![
        id_field().label("User ID"),
        FieldDef::new("Username", FieldType::String)
            .length(80)
            .required()
            .id_lookup(),
        FieldDef::new("LastName", FieldType::String)
            .length(80)
            .required(),
        FieldDef::new("FirstName", FieldType::String).length(40),
        FieldDef::new("Name", FieldType::String)
            .length(121)
            .read_only()
            .label("Full Name"),
        FieldDef::new("Email", FieldType::Email).required(),
        FieldDef::new("IsActive", FieldType::Boolean).label("Active"),
        FieldDef::new("Department", FieldType::String).length(80),
        FieldDef::new("UserType", FieldType::Picklist)
            .picklist(&["Standard"], Some("Standard"))
            .read_only(),
    ];
    fields.extend(audit_fields(false));
    ObjectSchema::new("User", "Users", "005", fields).read_only()
}

fn lead_status() -> ObjectSchema {
    let mut fields = vec![
        id_field().label("Lead Status Value ID"),
        FieldDef::new("MasterLabel", FieldType::String).label("Master Label"),
        FieldDef::new("ApiName", FieldType::String).label("Api Name"),
        FieldDef::new("SortOrder", FieldType::Int).label("Sort Order"),
        FieldDef::new("IsDefault", FieldType::Boolean).label("Is Default"),
        FieldDef::new("IsConverted", FieldType::Boolean).label("Is Converted"),
    ];
    fields.extend(audit_fields(false));
    ObjectSchema::new("LeadStatus", "Lead Status Values", "01J", fields).read_only()
}

fn opportunity_stage() -> ObjectSchema {
    let mut fields = vec![
        id_field().label("Opportunity Stage ID"),
        FieldDef::new("MasterLabel", FieldType::String).label("Master Label"),
        FieldDef::new("ApiName", FieldType::String).label("Api Name"),
        FieldDef::new("IsActive", FieldType::Boolean).label("Is Active"),
        FieldDef::new("SortOrder", FieldType::Int).label("Sort Order"),
        FieldDef::new("IsClosed", FieldType::Boolean).label("Is Closed"),
        FieldDef::new("IsWon", FieldType::Boolean).label("Is Won"),
        FieldDef::new("ForecastCategory", FieldType::Picklist)
            .picklist(
                &[
                    "Omitted",
                    "Pipeline",
                    "BestCase",
                    "MostLikely",
                    "Forecast",
                    "Closed",
                ],
                None,
            )
            .label("Forecast Category"),
        FieldDef::new("ForecastCategoryName", FieldType::Picklist)
            .picklist(
                &[
                    "Omitted",
                    "Pipeline",
                    "Best Case",
                    "Most Likely",
                    "Commit",
                    "Closed",
                ],
                None,
            )
            .label("Forecast Category Name"),
        FieldDef::new("DefaultProbability", FieldType::Percent).label("Default Probability"),
        FieldDef::new("Description", FieldType::String),
    ];
    fields.extend(audit_fields(false));
    ObjectSchema::new("OpportunityStage", "Opportunity Stages", "01J", fields).read_only()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_like_salesforce_labels() {
        assert_eq!(label_of("FirstName"), "First Name");
        assert_eq!(label_of("AccountId"), "Account");
        assert_eq!(label_of("Id"), "Record ID");
        assert_eq!(label_of("HubSpot_Contact_Id__c"), "Hub Spot Contact Id");
    }

    #[test]
    fn fields_and_relationships_resolve_case_insensitively() {
        let catalog = Catalog::new(OrgProfile::Classic);
        let lead = catalog.object("lead").expect("Lead");
        assert_eq!(
            lead.field("EMAIL").map(|field| field.name.as_str()),
            Some("Email")
        );
        let owner = lead
            .relationship_index("owner")
            .expect("Owner relationship");
        assert_eq!(lead.fields[owner].name, "OwnerId");
        assert_eq!(lead.fields[ObjectSchema::ID].name, "Id");
        for object in catalog.objects() {
            assert_eq!(
                object.fields[ObjectSchema::ID].name,
                "Id",
                "{}",
                object.name
            );
        }
    }

    #[test]
    fn every_object_fits_the_record_bitmap() {
        for profile in [OrgProfile::Classic, OrgProfile::Custom] {
            for object in Catalog::new(profile).objects() {
                assert!(
                    object.fields.len() <= super::super::store::MAX_FIELDS,
                    "{} has {} fields",
                    object.name,
                    object.fields.len()
                );
            }
        }
    }

    #[test]
    fn picklists_follow_the_org_profile() {
        let custom = Catalog::new(OrgProfile::Custom);
        let status = custom
            .object("Lead")
            .and_then(|lead| lead.field("Status"))
            .expect("Lead.Status");
        assert!(status.allows("Qualified"));
        assert!(!status.allows("Working - Contacted"));
        assert!(!status.required_on_create());
    }
}
