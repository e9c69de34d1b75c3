//! What the connector reads of an org's schema from the emulator: picklist values active and
//! inactive, lead statuses with the converted one, opportunity stages closed and won — per
//! org profile.

mod salesforce_common;

use crmsync::emulator::EmulatorConfig;
use crmsync::emulator::data::OrgProfile;
use crmsync::salesforce::describe::ObjectDescribe;
use crmsync::salesforce::metadata::{lead_statuses, opportunity_stages};
use salesforce_common::{client, jwt, quiet, start};

#[tokio::test]
async fn picklists_statuses_and_stages_are_read_per_org() {
    for profile in [OrgProfile::Classic, OrgProfile::Custom] {
        let emulator = start(EmulatorConfig {
            profile,
            ..quiet(200)
        })
        .await;
        let client = client(&emulator, jwt(&emulator));
        let describe = ObjectDescribe::load(&client, "Lead")
            .await
            .expect("describe");
        let status = describe.field("status").expect("Lead.Status, any case");
        assert_eq!(status.kind, "picklist");
        assert!(status.picklist.iter().any(|value| value.active));
        assert!(
            describe
                .field("SystemModstamp")
                .is_some_and(|field| field.kind == "datetime"),
            "{profile:?}"
        );

        let statuses = lead_statuses(&client).await.expect("lead statuses");
        assert!(
            statuses.iter().any(|status| status.converted),
            "{profile:?}: a converted status"
        );
        assert_eq!(statuses.iter().filter(|status| status.default).count(), 1);
        assert!(
            statuses
                .windows(2)
                .all(|pair| pair[0].sort_order <= pair[1].sort_order)
        );
        // Every status is a value of the picklist.
        for lead_status in &statuses {
            assert!(
                status
                    .picklist
                    .iter()
                    .any(|value| value.value == lead_status.api_name),
                "{profile:?}: {}",
                lead_status.api_name
            );
        }

        let stages = opportunity_stages(&client).await.expect("stages");
        assert!(
            stages.iter().any(|stage| stage.closed && stage.won),
            "{profile:?}"
        );
        assert!(
            stages.iter().any(|stage| stage.closed && !stage.won),
            "{profile:?}"
        );
        assert!(stages.iter().any(|stage| !stage.closed));
        if profile == OrgProfile::Classic {
            let names: Vec<&str> = statuses
                .iter()
                .map(|status| status.api_name.as_str())
                .collect();
            assert!(names.contains(&"Closed - Converted"), "{names:?}");
            assert!(stages.iter().any(|stage| stage.api_name == "Closed Won" && stage.probability == Some(100.0)));
        }
    }
}

#[tokio::test]
async fn inactive_picklist_values_are_kept_apart_from_active_ones() {
    let emulator = start(quiet(2_000)).await;
    let client = client(&emulator, jwt(&emulator));
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    let status = describe.field("Status").expect("Lead.Status");
    // The seeded org has leads on a status since deactivated.
    assert!(
        status.picklist.iter().any(|value| !value.active),
        "{:?}",
        status.picklist
    );
}
