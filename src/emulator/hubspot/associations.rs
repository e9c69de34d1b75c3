//! Contact-company associations: which companies each contact is associated with (seeded from
//! the contact's `company` property matching a company's `name`), served by the v4 endpoint
//! `GET /crm/v4/objects/{type}/{id}/associations/{toType}` and by the v3 objects'
//! `associations=companies` query parameter.
//!
//! Every association here is a contact's primary company. HubSpot reports a primary association
//! under two types: the "Primary" label (contact→company typeId 1, company→contact 2) and the
//! unlabeled default (279, and 280 back), both `HUBSPOT_DEFINED`. In v4 one result per associated
//! record lists both types, with `toObjectId` a JSON number; v3 repeats the id once per type, as
//! `contact_to_company` and `contact_to_company_unlabeled`. Sources: the v4 spec
//! (`PublicApiSpecs/CRM/Associations/Rollouts/130902/v4/associations.json`, shapes and the
//! default `limit` of 500), HubSpot's associations overview (279 is the unlabeled
//! contact→company type) and client fixtures in public repositories (both types on a primary
//! association, numeric `toObjectId`, the v3 type names).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::objects::admit_object;
use super::{HubspotShared, error_response, json_response};
use crate::emulator::data::EmulatedRecord;

/// Most results one page of the v4 endpoint returns, and how many it returns by default.
const DEFAULT_ASSOCIATION_PAGE: usize = 500;

/// The association types one contact-company pair has, in each direction.
const CONTACT_TO_COMPANY_TYPES: [(u32, Option<&str>); 2] = [(1, Some("Primary")), (279, None)];
const COMPANY_TO_CONTACT_TYPES: [(u32, Option<&str>); 2] = [(2, Some("Primary")), (280, None)];

/// Contact id → the ids of its associated companies, in association order.
#[derive(Debug, Default)]
pub(super) struct ContactCompanies {
    by_contact: BTreeMap<String, Vec<String>>,
}

impl ContactCompanies {
    /// Associates every contact whose `company` names an existing company with that company.
    pub(super) fn seed(objects: &HashMap<&'static str, Vec<EmulatedRecord>>) -> Self {
        let text =
            |record: &EmulatedRecord, name: &str| record.properties.text(name).map(str::to_string);
        let company_ids: HashMap<String, String> = objects
            .get("companies")
            .into_iter()
            .flatten()
            .filter_map(|company| Some((text(company, "name")?, company.id.clone())))
            .collect();
        let by_contact = objects
            .get("contacts")
            .into_iter()
            .flatten()
            .filter_map(|contact| {
                let company = company_ids.get(&text(contact, "company")?)?;
                Some((contact.id.clone(), vec![company.clone()]))
            })
            .collect();
        Self { by_contact }
    }

    /// The companies `contact_id` is associated with.
    pub(super) fn companies_of(&self, contact_id: &str) -> &[String] {
        self.by_contact
            .get(contact_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The contacts associated with `company_id`, in id order.
    fn contacts_of(&self, company_id: &str) -> Vec<String> {
        self.by_contact
            .iter()
            .filter(|(_, companies)| companies.iter().any(|id| id == company_id))
            .map(|(contact, _)| contact.clone())
            .collect()
    }

    /// Gives `merged_id` the associations of `absorbed` (the primary record's first, without
    /// repeats), as a merge does.
    pub(super) fn merge(&mut self, absorbed: &[&str], merged_id: &str) {
        let mut companies: Vec<String> = Vec::new();
        for contact in absorbed {
            for company in self.companies_of(contact) {
                if !companies.contains(company) {
                    companies.push(company.clone());
                }
            }
        }
        if !companies.is_empty() {
            self.by_contact.insert(merged_id.to_string(), companies);
        }
    }
}

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route(
            "/crm/v4/objects/{object_type}/{object_id}/associations/{to_object_type}",
            get(list_associations),
        )
        .with_state(shared)
}

/// The v3 `associations` member of a contact, when companies are asked for and it has any:
/// `{"companies": {"results": [{"id", "type"}]}}`.
pub(super) fn v3_companies(shared: &HubspotShared, contact_id: &str) -> Option<Value> {
    let associations = shared.read_associations();
    let companies = associations.companies_of(contact_id);
    if companies.is_empty() {
        return None;
    }
    let results: Vec<Value> = companies
        .iter()
        .flat_map(|id| {
            ["contact_to_company", "contact_to_company_unlabeled"]
                .map(|kind| json!({"id": id, "type": kind}))
        })
        .collect();
    Some(json!({"companies": {"results": results}}))
}

/// Whether an `associations` query value asks for companies (by name or type id).
pub(super) fn wants_companies(requested: &[String]) -> bool {
    requested.iter().any(|name| {
        matches!(
            name.to_ascii_lowercase().as_str(),
            "companies" | "company" | "0-2"
        )
    })
}

async fn list_associations(
    State(shared): State<Arc<HubspotShared>>,
    Path((object_type, object_id, to_object_type)): Path<(String, String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let response = list_associations_inner(
        &shared,
        &object_type,
        &object_id,
        &to_object_type,
        &pairs,
        &headers,
    );
    shared.record(
        "GET /crm/v4/objects/{type}/{id}/associations/{toType}",
        response.status(),
    );
    response
}

fn list_associations_inner(
    shared: &HubspotShared,
    object_type: &str,
    object_id: &str,
    to_object_type: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let (budget, from) = match admit_object(shared, headers, object_type) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let Some(to) = super::objects::object_name(to_object_type) else {
        return super::objects::unknown_object_type(shared, to_object_type);
    };
    let query = |key: &str| {
        pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    let limit = match query("limit").map(str::parse::<usize>) {
        None => DEFAULT_ASSOCIATION_PAGE,
        Some(Ok(limit)) if limit >= 1 => limit.min(DEFAULT_ASSOCIATION_PAGE),
        Some(_) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("limit must be a positive number, got {:?}", query("limit")),
                None,
            );
        }
    };
    // The cursor is the position of the next result.
    let start = match query("after").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Invalid paging cursor {:?}", query("after").unwrap_or("")),
                None,
            );
        }
    };
    let (associated, types): (Vec<String>, &[(u32, Option<&str>)]) = {
        let associations = shared.read_associations();
        match (from, to) {
            ("contacts", "companies") => (
                associations.companies_of(object_id).to_vec(),
                &CONTACT_TO_COMPANY_TYPES,
            ),
            ("companies", "contacts") => (
                associations.contacts_of(object_id),
                &COMPANY_TO_CONTACT_TYPES,
            ),
            // No other pair has associations in the emulated portal.
            _ => (Vec::new(), &[]),
        }
    };
    let association_types: Vec<Value> = types
        .iter()
        .map(|(type_id, label)| json!({"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": label}))
        .collect();
    let results: Vec<Value> = associated
        .iter()
        .skip(start)
        .take(limit)
        .map(|id| {
            // HubSpot sends the id as a number, though its spec says string.
            let to_object_id = id
                .parse::<u64>()
                .map_or_else(|_| Value::String(id.clone()), Value::from);
            json!({"toObjectId": to_object_id, "associationTypes": association_types})
        })
        .collect();
    let mut body = json!({ "results": results });
    let next = start.saturating_add(limit);
    if next < associated.len() {
        body["paging"] = json!({
            "next": {
                "after": next.to_string(),
                "link": format!(
                    "{}/crm/v4/objects/{object_type}/{object_id}/associations/{to_object_type}?after={next}",
                    shared.base_url()
                ),
            }
        });
    }
    json_response(shared, StatusCode::OK, &body, Some(budget))
}
