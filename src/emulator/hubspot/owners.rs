//! The Owners API: `GET /crm/v3/owners` (paged, filterable by email) and
//! `GET /crm/v3/owners/{ownerId}` (by owner id or `idProperty=userId`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{HubspotShared, admit, error_response, json_response};
use crate::emulator::data::Owner;

const DEFAULT_PAGE: usize = 100;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/owners", get(list))
        // The official SDKs ask with a trailing slash.
        .route("/crm/v3/owners/", get(list))
        .route("/crm/v3/owners/{owner_id}", get(read_one))
        .with_state(shared)
}

fn render(owner: &Owner) -> Value {
    json!({
        "id": owner.id,
        "email": owner.email,
        "type": "PERSON",
        "firstName": owner.first_name,
        "lastName": owner.last_name,
        "userId": owner.user_id,
        "userIdIncludingInactive": owner.user_id,
        "createdAt": "2019-12-25T13:01:35.228Z",
        "updatedAt": "2019-12-25T13:01:35.228Z",
        "archived": false,
        "teams": [{"id": if owner.team == "Sales" { "368389" } else { "368390" }, "name": format!("{} Team", owner.team), "primary": true}],
    })
}

fn parameter<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

async fn list(
    State(shared): State<Arc<HubspotShared>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let response = match admit(&shared, &headers) {
        Err(response) => *response,
        Ok(budget) => {
            let limit = parameter(&pairs, "limit")
                .and_then(|limit| limit.parse::<usize>().ok())
                .filter(|limit| *limit > 0)
                .unwrap_or(DEFAULT_PAGE);
            let archived = parameter(&pairs, "archived")
                .is_some_and(|value| value.eq_ignore_ascii_case("true"));
            let email = parameter(&pairs, "email");
            let after = parameter(&pairs, "after")
                .and_then(|after| after.parse::<u64>().ok())
                .unwrap_or(0);
            // The seeded owners are all active.
            let mut matching = shared
                .owners
                .iter()
                .filter(|_| !archived)
                .filter(|owner| email.is_none_or(|email| owner.email.eq_ignore_ascii_case(email)))
                .filter(|owner| owner.id.parse::<u64>().is_ok_and(|id| id >= after));
            let results: Vec<Value> = matching.by_ref().take(limit).map(render).collect();
            let mut body = json!({ "results": results });
            if let Some(next) = matching.next() {
                body["paging"] = json!({"next": {"after": next.id, "link": format!("{}/crm/v3/owners?after={}", shared.base_url(), next.id)}});
            }
            json_response(&shared, StatusCode::OK, &body, Some(budget))
        }
    };
    shared.record("GET /crm/v3/owners", response.status());
    response
}

async fn read_one(
    State(shared): State<Arc<HubspotShared>>,
    Path(owner_id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let response = match admit(&shared, &headers) {
        Err(response) => *response,
        Ok(budget) => {
            let by_user = parameter(&pairs, "idProperty") == Some("userId");
            let found = shared.owners.iter().find(|owner| {
                if by_user {
                    owner.user_id.to_string() == owner_id
                } else {
                    owner.id == owner_id
                }
            });
            match found {
                Some(owner) => json_response(&shared, StatusCode::OK, &render(owner), Some(budget)),
                None => error_response(
                    &shared,
                    StatusCode::NOT_FOUND,
                    "OBJECT_NOT_FOUND",
                    &format!("Unable to find owner {owner_id}"),
                    None,
                ),
            }
        }
    };
    shared.record("GET /crm/v3/owners/{id}", response.status());
    response
}
