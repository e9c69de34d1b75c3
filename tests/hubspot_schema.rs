//! The portal's schema as the connector reads it from the emulator: enumeration options per
//! org, deal pipelines and stages, owners — and the value check write-back relies on.

mod hubspot_common;

use crmsync::emulator::EmulatorConfig;
use crmsync::emulator::RunningEmulator;
use crmsync::emulator::data::OrgProfile;
use crmsync::hubspot::client::{HubspotClient, RateSettings};
use crmsync::hubspot::schema::{PortalSchema, ValueCheck, owners};
use hubspot_common::{private_client, start_with};

async fn connect(profile: OrgProfile) -> (RunningEmulator, HubspotClient) {
    let emulator = start_with(EmulatorConfig {
        records: 50,
        profile,
        rate_limits: false,
        ..EmulatorConfig::default()
    })
    .await;
    let client = private_client(&emulator, RateSettings::default());
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
