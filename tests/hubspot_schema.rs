//! The portal's schema as the connector reads it from the emulator: enumeration options per
//! org, deal pipelines and stages, owners — and the value check write-back relies on.

use std::net::SocketAddr;

use crmsync::emulator::data::OrgProfile;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::retry::RetryPolicy;
use crmsync::hubspot::auth::{HubspotCredentials, TokenSource};
use crmsync::hubspot::client::{HubspotClient, RateSettings};
use crmsync::hubspot::schema::{PortalSchema, ValueCheck, owners};
use secrecy::SecretString;

async fn connect(profile: OrgProfile) -> (RunningEmulator, HubspotClient) {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            records: 50,
            profile,
            rate_limits: false,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts");
    let base = emulator.info().hubspot_base_url.clone();
    let http = reqwest::Client::new();
    let tokens = TokenSource::new(
        HubspotCredentials::PrivateApp {
            token: SecretString::from(emulator.info().hubspot_token.as_str()),
        },
        &base,
        http.clone(),
    )
    .expect("tokens");
    let client = HubspotClient::new(
        http,
        &base,
        tokens,
        RateSettings::default(),
        RetryPolicy::default(),
    )
    .expect("client");
    (emulator, client)
}

#[tokio::test]
async fn options_pipelines_and_owners_are_read_and_checked() {
    let (_emulator, client) = connect(OrgProfile::Classic).await;
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("contacts");
    schema.load(&client, "deals").await.expect("deals");
    let lifecycle = &schema.properties["contacts"]["lifecyclestage"];
    assert_eq!(lifecycle.kind, "enumeration");
    assert!(
        lifecycle
            .options
            .iter()
            .any(|option| option.value == "marketingqualifiedlead")
    );
    assert_eq!(
        schema.check("contacts", "lifecyclestage", "lead", None),
        ValueCheck::Allowed
    );
    assert_eq!(
        schema.check("contacts", "lifecyclestage", "", None),
        ValueCheck::Allowed,
        "clearing"
    );
    match schema.check("contacts", "lifecyclestage", "wizard", None) {
        ValueCheck::NotAnOption { allowed } => assert!(allowed.contains(&"customer".to_string())),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        schema.check("contacts", "no_such_property", "x", None),
        ValueCheck::UnknownProperty
    );
    assert_eq!(
        schema.check("deals", "dealstage", "closedwon", None),
        ValueCheck::Allowed
    );
    assert!(matches!(
        schema.check("deals", "dealstage", "Closed Won", None),
        ValueCheck::NotAnOption { .. }
    ));
    let pipeline = &schema.pipelines["deals"][0];
    assert_eq!(pipeline.id, "default");
    assert!(
        pipeline
            .stages
            .iter()
            .any(|stage| stage.id == "closedwon" && stage.closed)
    );
    let owners = owners(&client).await.expect("owners");
    assert_eq!(owners.len(), 6);
    assert!(owners.iter().all(|owner| owner.email.contains('@')));
}

#[tokio::test]
async fn a_customised_portal_shows_its_own_options() {
    let (_emulator, client) = connect(OrgProfile::Custom).await;
    let mut schema = PortalSchema::default();
    schema.load(&client, "contacts").await.expect("contacts");
    assert_eq!(
        schema.check("contacts", "lifecyclestage", "153180554", None),
        ValueCheck::Allowed
    );
}
