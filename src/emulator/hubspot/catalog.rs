//! The portal's schema: which properties each object defines (with their types and
//! enumeration options) and the default deal pipeline. The Properties and Pipelines APIs serve
//! it, and the object endpoints use it to tell known properties from unknown ones.

use serde_json::{Value, json};

use crate::emulator::data::{HUBSPOT_DEAL_STAGES, OrgProfile};

/// One property definition.
#[derive(Debug, Clone)]
pub struct PropertyDefinition {
    pub name: &'static str,
    pub label: &'static str,
    /// `string`, `number`, `datetime`, `enumeration`.
    pub kind: &'static str,
    /// `text`, `number`, `date`, `radio`, `select`, `checkbox`, `calculation_equation`.
    pub field_type: &'static str,
    pub group: &'static str,
    pub unique: bool,
    pub calculated: bool,
    /// Options live elsewhere (deal stages and pipelines come from the Pipelines API).
    pub external_options: bool,
    /// (value, label) of enumeration options, in display order.
    pub options: Vec<(&'static str, &'static str)>,
    /// False for custom properties a portal's admins created.
    pub hubspot_defined: bool,
}

fn property(
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    field_type: &'static str,
    group: &'static str,
) -> PropertyDefinition {
    PropertyDefinition {
        name,
        label,
        kind,
        field_type,
        group,
        unique: false,
        calculated: false,
        external_options: false,
        options: Vec::new(),
        hubspot_defined: true,
    }
}

fn lifecycle_label(value: &str) -> &'static str {
    match value {
        "subscriber" => "Subscriber",
        "lead" => "Lead",
        "marketingqualifiedlead" => "Marketing Qualified Lead",
        "salesqualifiedlead" => "Sales Qualified Lead",
        "opportunity" => "Opportunity",
        "customer" => "Customer",
        "evangelist" => "Evangelist",
        "other" => "Other",
        _ => "Nurture",
    }
}

/// The deal pipeline stage labels of the default pipeline.
pub fn deal_stage_label(id: &str) -> &'static str {
    match id {
        "appointmentscheduled" => "Appointment Scheduled",
        "qualifiedtobuy" => "Qualified To Buy",
        "presentationscheduled" => "Presentation Scheduled",
        "decisionmakerboughtin" => "Decision Maker Bought-In",
        "contractsent" => "Contract Sent",
        "closedwon" => "Closed Won",
        _ => "Closed Lost",
    }
}

/// Every property an object defines in the emulated portal.
pub fn properties(object: &str, profile: OrgProfile) -> Vec<PropertyDefinition> {
    let created = property(
        "createdate",
        "Create Date",
        "datetime",
        "date",
        "contactinformation",
    );
    let object_id = PropertyDefinition {
        calculated: true,
        ..property(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            "contactinformation",
        )
    };
    match object {
        "contacts" => {
            let lifecycle = PropertyDefinition {
                options: profile
                    .lifecycle_stages()
                    .iter()
                    .map(|value| (*value, lifecycle_label(value)))
                    .collect(),
                ..property(
                    "lifecyclestage",
                    "Lifecycle Stage",
                    "enumeration",
                    "radio",
                    "contactinformation",
                )
            };
            let lead_status = PropertyDefinition {
                options: vec![
                    ("NEW", "New"),
                    ("OPEN", "Open"),
                    ("IN_PROGRESS", "In Progress"),
                    ("OPEN_DEAL", "Open Deal"),
                    ("UNQUALIFIED", "Unqualified"),
                    ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
                    ("CONNECTED", "Connected"),
                    ("BAD_TIMING", "Bad Timing"),
                ],
                ..property(
                    "hs_lead_status",
                    "Lead Status",
                    "enumeration",
                    "radio",
                    "sales_properties",
                )
            };
            vec![
                PropertyDefinition {
                    unique: true,
                    ..property("email", "Email", "string", "text", "contactinformation")
                },
                property(
                    "firstname",
                    "First Name",
                    "string",
                    "text",
                    "contactinformation",
                ),
                property(
                    "lastname",
                    "Last Name",
                    "string",
                    "text",
                    "contactinformation",
                ),
                property(
                    "company",
                    "Company Name",
                    "string",
                    "text",
                    "contactinformation",
                ),
                property(
                    "jobtitle",
                    "Job Title",
                    "string",
                    "text",
                    "contactinformation",
                ),
                property(
                    "phone",
                    "Phone Number",
                    "string",
                    "phonenumber",
                    "contactinformation",
                ),
                // Custom properties the portal's admins added for crmsync.
                PropertyDefinition {
                    hubspot_defined: false,
                    ..property(
                        "crmsync_stage",
                        "Shared lead stage",
                        "string",
                        "text",
                        "sales_properties",
                    )
                },
                PropertyDefinition {
                    hubspot_defined: false,
                    ..property(
                        "crmsync_salesforce_id",
                        "Salesforce record ID",
                        "string",
                        "text",
                        "sales_properties",
                    )
                },
                property(
                    "hubspot_owner_id",
                    "Contact owner",
                    "enumeration",
                    "select",
                    "sales_properties",
                ),
                lifecycle,
                lead_status,
                created,
                PropertyDefinition {
                    calculated: true,
                    ..property(
                        "lastmodifieddate",
                        "Last Modified Date",
                        "datetime",
                        "date",
                        "contactinformation",
                    )
                },
                object_id,
                PropertyDefinition {
                    calculated: true,
                    ..property(
                        "hs_merged_object_ids",
                        "Merged Record IDs",
                        "enumeration",
                        "checkbox",
                        "contactinformation",
                    )
                },
            ]
        }
        "companies" => vec![
            property(
                "name",
                "Company name",
                "string",
                "text",
                "companyinformation",
            ),
            PropertyDefinition {
                unique: true,
                ..property(
                    "domain",
                    "Company Domain Name",
                    "string",
                    "text",
                    "companyinformation",
                )
            },
            created,
            PropertyDefinition {
                calculated: true,
                ..property(
                    "hs_lastmodifieddate",
                    "Last Modified Date",
                    "datetime",
                    "date",
                    "companyinformation",
                )
            },
            object_id,
        ],
        _ => vec![
            property("dealname", "Deal Name", "string", "text", "dealinformation"),
            property("amount", "Amount", "number", "number", "dealinformation"),
            // Pipelines and their stages come from the Pipelines API, not from options.
            PropertyDefinition {
                external_options: true,
                ..property(
                    "pipeline",
                    "Pipeline",
                    "enumeration",
                    "select",
                    "deal_activity",
                )
            },
            PropertyDefinition {
                external_options: true,
                ..property(
                    "dealstage",
                    "Deal Stage",
                    "enumeration",
                    "radio",
                    "deal_activity",
                )
            },
            property(
                "closedate",
                "Close Date",
                "datetime",
                "date",
                "dealinformation",
            ),
            property(
                "hubspot_owner_id",
                "Deal owner",
                "enumeration",
                "select",
                "dealinformation",
            ),
            created,
            PropertyDefinition {
                calculated: true,
                ..property(
                    "hs_lastmodifieddate",
                    "Last Modified Date",
                    "datetime",
                    "date",
                    "dealinformation",
                )
            },
            object_id,
        ],
    }
}

/// A property as the Properties API shows it.
pub fn render_property(definition: &PropertyDefinition, display_order: usize) -> Value {
    let options: Vec<Value> = definition
        .options
        .iter()
        .enumerate()
        .map(|(order, (value, label))| {
            json!({"label": label, "value": value, "displayOrder": order, "hidden": false})
        })
        .collect();
    json!({
        "name": definition.name,
        "label": definition.label,
        "type": definition.kind,
        "fieldType": definition.field_type,
        "groupName": definition.group,
        "description": "",
        "options": options,
        "displayOrder": display_order,
        "hidden": false,
        "formField": !definition.calculated,
        "calculated": definition.calculated,
        "externalOptions": definition.external_options,
        "hasUniqueValue": definition.unique,
        "hubspotDefined": definition.hubspot_defined,
        "archived": false,
        "createdAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2020-01-01T00:00:00Z",
        "modificationMetadata": {
            "archivable": false,
            "readOnlyDefinition": true,
            "readOnlyValue": definition.calculated,
        },
    })
}

/// The contacts' lifecycle stage pipeline (stage ids are the `lifecyclestage` values).
pub fn lifecycle_pipeline(profile: OrgProfile) -> Value {
    let stages: Vec<Value> = profile
        .lifecycle_stages()
        .iter()
        .enumerate()
        .map(|(order, id)| {
            let closed = *id == "other";
            json!({
                "id": id,
                "label": lifecycle_label(id),
                "displayOrder": order,
                "metadata": {"isClosed": closed.to_string(), "state": if closed { "CLOSED" } else { "OPEN" }},
                "createdAt": "1970-01-01T00:00:00Z",
                "updatedAt": "1970-01-01T00:00:00Z",
                "archived": false,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            })
        })
        .collect();
    json!({
        "id": "contacts-lifecycle-pipeline",
        "label": "Lifecycle Stage Pipeline",
        "displayOrder": 0,
        "stages": stages,
        "createdAt": "1970-01-01T00:00:00Z",
        "updatedAt": "1970-01-01T00:00:00Z",
        "archived": false,
    })
}

/// The default deal pipeline as the Pipelines API shows it (default pipelines have
/// `createdAt` at the epoch).
pub fn default_pipeline() -> Value {
    let stages: Vec<Value> = HUBSPOT_DEAL_STAGES
        .iter()
        .enumerate()
        .map(|(order, (id, closed, won))| {
            let probability = match *id {
                "appointmentscheduled" => "0.2",
                "qualifiedtobuy" => "0.4",
                "presentationscheduled" => "0.6",
                "decisionmakerboughtin" => "0.8",
                "contractsent" => "0.9",
                _ if *won => "1.0",
                _ => "0.0",
            };
            json!({
                "id": id,
                "label": deal_stage_label(id),
                "displayOrder": order,
                "metadata": {"isClosed": closed.to_string(), "probability": probability},
                "createdAt": "1970-01-01T00:00:00Z",
                "updatedAt": "1970-01-01T00:00:00Z",
                "archived": false,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            })
        })
        .collect();
    json!({
        "id": "default",
        "label": "Sales Pipeline",
        "displayOrder": 0,
        "stages": stages,
        "createdAt": "1970-01-01T00:00:00Z",
        "updatedAt": "1970-01-01T00:00:00Z",
        "archived": false,
    })
}
