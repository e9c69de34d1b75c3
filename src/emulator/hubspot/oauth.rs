//! `POST /oauth/v1/token`: the refresh-token grant of HubSpot's OAuth, handing out access tokens
//! that expire after the configured lifetime.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{HubspotShared, json_response, uuid_like};
use crate::emulator::data::SeededRng;

/// The portal id the emulated account reports.
pub const HUB_ID: u64 = 24_681_357;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/oauth/v1/token", post(token))
        .with_state(shared)
}

/// A 400 in the shape HubSpot's token endpoint uses: RFC 6749 fields plus the older
/// `status`/`message` pair.
fn refused(shared: &HubspotShared, error: &str, status: &str, message: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": message,
        "status": status,
        "message": message,
    });
    json_response(shared, StatusCode::BAD_REQUEST, &body, None)
}

async fn token(
    State(shared): State<Arc<HubspotShared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let response = token_inner(&shared, &form);
    shared.record("POST /oauth/v1/token", response.status());
    response
}

fn token_inner(shared: &HubspotShared, form: &HashMap<String, String>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "refresh_token" => {}
        "" => {
            return refused(
                shared,
                "invalid_request",
                "BAD_GRANT_TYPE",
                "missing grant_type",
            );
        }
        _ => {
            return refused(
                shared,
                "unsupported_grant_type",
                "BAD_GRANT_TYPE",
                "unsupported grant_type",
            );
        }
    }
    let credentials = &shared.credentials;
    if field("client_id") != credentials.client_id {
        return refused(
            shared,
            "invalid_client",
            "BAD_CLIENT_ID",
            "missing or unknown client id",
        );
    }
    if field("client_secret") != credentials.client_secret {
        return refused(
            shared,
            "invalid_client",
            "BAD_CLIENT_SECRET",
            "missing or invalid client secret",
        );
    }
    if field("refresh_token") != credentials.refresh_token {
        return refused(
            shared,
            "invalid_grant",
            "BAD_REFRESH_TOKEN",
            "refresh token is invalid, expired or revoked",
        );
    }
    let lifetime = shared.settings.token_lifetime;
    let access_token = {
        let mut rng = SeededRng::new(shared.next_sequence() ^ 0x6163_6365_7373);
        // Opaque, and long like HubSpot's (they may reach 300 characters).
        format!(
            "CN{}",
            uuid_like(&mut rng).replace('-', "") + &uuid_like(&mut rng).replace('-', "")
        )
    };
    if let Ok(mut tokens) = shared.access_tokens.lock() {
        tokens.insert(access_token.clone(), Timestamp::now() + lifetime);
    }
    let body: Value = json!({
        "token_type": "bearer",
        "refresh_token": credentials.refresh_token,
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "hub_id": HUB_ID,
        "scopes": [
            "oauth",
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.objects.companies.read",
            "crm.objects.companies.write",
            "crm.objects.deals.read",
            "crm.objects.deals.write",
        ],
        "token_use": "access_token",
    });
    json_response(shared, StatusCode::OK, &body, None)
}
