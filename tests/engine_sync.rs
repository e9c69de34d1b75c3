//! The sync engine end to end: the emulator over HTTP, a real SQLite warehouse file.

mod engine_common;

use std::collections::BTreeMap;

use crmsync::engine::{RunStatus, SyncOptions};
use crmsync::record::System;
use engine_common::Setup;

fn total(counts: &BTreeMap<System, u64>) -> u64 {
    counts.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_unifies_and_writes_back_and_the_next_ones_write_nothing() {
    let setup = Setup::new(400).await;
    let engine = setup.engine().await;
    let first = engine.sync(SyncOptions::default()).await.unwrap();
    assert_ne!(first.status, RunStatus::Failed, "{}", first.paragraph());
    assert!(first.streams.iter().all(|stream| stream.mode == "full"));
    assert!(first.read[&System::Hubspot] > 300 && first.read[&System::Salesforce] > 300);
    assert!(first.written[&System::Hubspot] > 0 && first.written[&System::Salesforce] > 0);
    let persons = setup.count("SELECT COUNT(*) FROM unified_leads WHERE NOT deleted");
    assert_eq!(persons as u64, first.warehouse.persons);
    assert!(persons > 300, "{persons}");
    // Persons are numbered in founding order, and the warehouse counts on from the last.
    let numbered = setup.count(
        "SELECT COUNT(*) FROM unified_leads WHERE unified_id GLOB 'p-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'",
    );
    assert_eq!(numbered, setup.count("SELECT COUNT(*) FROM unified_leads"));
    let highest =
        setup.count("SELECT MAX(CAST(substr(unified_id, 3) AS INTEGER)) FROM unified_leads");
    assert_eq!(
        setup.count("SELECT next_number FROM person_ids"),
        highest + 1,
        "the last person founded is the highest number"
    );
    // The indexes the first sync's loads built after them are all back, as migrated.
    let indexes = setup.strings(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    );
    for index in crmsync::store::migrations::DEFERRABLE_INDEXES {
        assert!(
            indexes.iter().any(|sql| sql == index.definition),
            "{} missing: {indexes:?}",
            index.name
        );
    }

    // Both CRMs now hold each person's shared stage.
    let crms = setup.crms();
    let sample = setup.strings(
        "SELECT hubspot_id || ' ' || stage FROM unified_leads WHERE hubspot_id IS NOT NULL AND stage IS NOT NULL ORDER BY unified_id LIMIT 25",
    );
    assert_eq!(sample.len(), 25);
    for row in &sample {
        let (id, stage) = row.split_once(' ').unwrap();
        let held = crms.hubspot_contact(id, "crmsync_stage").await;
        assert_eq!(held["crmsync_stage"], stage, "HubSpot contact {id}");
    }
    let leads = setup.strings(
        "SELECT u.salesforce_lead_id || ' ' || u.stage || ' ' || COALESCE(u.hubspot_id, '') FROM unified_leads u
         JOIN source_records s ON s.system = 'salesforce' AND s.object = 'Lead' AND s.id = u.salesforce_lead_id
         WHERE u.stage IS NOT NULL AND json_extract(s.properties, '$.IsConverted') = 0 ORDER BY u.unified_id LIMIT 25",
    );
    assert_eq!(leads.len(), 25);
    for row in &leads {
        let mut parts = row.split(' ');
        let (id, stage, hubspot) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(""),
        );
        let held = crms
            .salesforce_query(&format!(
                "SELECT CRMSync_Stage__c, HubSpot_Contact_Id__c FROM Lead WHERE Id = '{id}'"
            ))
            .await;
        assert_eq!(held[0]["CRMSync_Stage__c"], stage, "lead {id}");
        if !hubspot.is_empty() {
            assert_eq!(
                held[0]["HubSpot_Contact_Id__c"], hubspot,
                "lead {id} links its contact"
            );
        }
    }

    // Reading back what was written changes nothing and writes nothing: no loop.
    let second = engine.sync(SyncOptions::default()).await.unwrap();
    assert!(
        second
            .streams
            .iter()
            .all(|stream| stream.mode == "incremental")
    );
    assert!(
        second.read[&System::Hubspot] > 0,
        "the written records come back"
    );
    assert_eq!(total(&second.written), 0, "{}", second.paragraph());
    assert_eq!(second.stage_changes, 0, "{}", second.paragraph());
    let third = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(total(&third.written), 0, "{}", third.paragraph());
    assert_eq!(third.changed, 0, "{}", third.paragraph());
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM sync_runs WHERE status IN ('complete', 'partial')"),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_person_is_one_person_across_systems_and_runs() {
    let setup = Setup::new(500).await;
    let engine = setup.engine().await;
    engine.sync(SyncOptions::default()).await.unwrap();
    // One person per normalised email (the org's emails come in mixed case and padding).
    assert_eq!(
        setup.count(
            "SELECT COUNT(*) FROM (SELECT email FROM source_records WHERE NOT archived AND email IS NOT NULL
             GROUP BY email HAVING COUNT(DISTINCT unified_id) > 1)"
        ),
        0
    );
    let mixed_case = setup.count(
        "SELECT COUNT(*) FROM source_records h JOIN source_records s ON s.system = 'salesforce' AND s.email = h.email
         WHERE h.system = 'hubspot' AND json_extract(h.properties, '$.email') <> json_extract(s.properties, '$.Email')
           AND h.unified_id = s.unified_id",
    );
    assert!(
        mixed_case > 0,
        "the org has records whose raw emails differ"
    );
    // A converted lead and its contact are one person.
    let converted = setup.count(
        "SELECT COUNT(*) FROM source_records l JOIN source_records c ON c.system = 'salesforce' AND c.object = 'Contact'
            AND c.id = json_extract(l.fields, '$.converted_contact_id')
         WHERE l.object = 'Lead' AND l.unified_id = c.unified_id",
    );
    assert!(converted > 10, "{converted}");
    assert_eq!(
        setup.count(
            "SELECT COUNT(*) FROM source_records l JOIN source_records c ON c.system = 'salesforce' AND c.object = 'Contact'
                AND c.id = json_extract(l.fields, '$.converted_contact_id')
             WHERE l.object = 'Lead' AND l.unified_id <> c.unified_id"
        ),
        0
    );
    // Nothing dangles: every record's person exists.
    assert_eq!(
        setup.count(
            "SELECT COUNT(*) FROM source_records s WHERE s.unified_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM unified_leads u WHERE u.unified_id = s.unified_id)"
        ),
        0
    );
    // Persons keep their ids from run to run.
    let before = setup.strings(
        "SELECT system || '/' || object || '/' || id || '=' || unified_id FROM source_records WHERE unified_id IS NOT NULL ORDER BY 1",
    );
    engine.sync(SyncOptions::default()).await.unwrap();
    let after = setup.strings(
        "SELECT system || '/' || object || '/' || id || '=' || unified_id FROM source_records WHERE unified_id IS NOT NULL ORDER BY 1",
    );
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_and_deletions_between_runs_repoint_persons_and_leave_nothing_dangling() {
    let setup = Setup::new(300).await;
    let engine = setup.engine().await;
    engine.sync(SyncOptions::default()).await.unwrap();
    let crms = setup.crms();
    // Two persons known to both systems; their HubSpot contacts are merged.
    let pairs = setup.strings(
        "SELECT unified_id || ' ' || hubspot_id || ' ' || salesforce_lead_id FROM unified_leads
         WHERE hubspot_id IS NOT NULL AND salesforce_lead_id IS NOT NULL AND NOT deleted ORDER BY unified_id LIMIT 2",
    );
    let split = |row: &String| -> (String, String, String) {
        let parts: Vec<&str> = row.split(' ').collect();
        (parts[0].into(), parts[1].into(), parts[2].into())
    };
    let (first_person, survivor, first_lead) = split(&pairs[0]);
    let (second_person, absorbed, second_lead) = split(&pairs[1]);
    crms.hubspot_merge(&survivor, &absorbed).await;
    // A person only Salesforce knows loses its lead.
    let lone = setup.strings(
        "SELECT unified_id || ' ' || salesforce_lead_id FROM unified_leads
         WHERE hubspot_id IS NULL AND salesforce_contact_id IS NULL AND salesforce_lead_id IS NOT NULL ORDER BY unified_id LIMIT 1",
    );
    let (lone_person, lone_lead) = lone[0].split_once(' ').unwrap();
    crms.salesforce_delete("Lead", lone_lead).await;

    let second = engine.sync(SyncOptions::default()).await.unwrap();
    assert!(second.merged_persons >= 1, "{}", second.paragraph());
    let merged_into = |lead: &str| {
        setup.strings(&format!(
            "SELECT unified_id FROM source_records WHERE system = 'salesforce' AND object = 'Lead' AND id = '{lead}'"
        ))
    };
    // Both leads now belong to one person, the smaller of the two ids.
    let kept = first_person.clone().min(second_person.clone());
    let gone = first_person.max(second_person);
    assert_eq!(merged_into(&first_lead), vec![kept.clone()]);
    assert_eq!(merged_into(&second_lead), vec![kept.clone()]);
    assert_eq!(
        setup.strings(&format!(
            "SELECT survivor FROM person_merges WHERE absorbed = '{gone}'"
        )),
        vec![kept.clone()]
    );
    assert_eq!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM unified_leads WHERE unified_id = '{gone}'"
        )),
        0
    );
    assert_eq!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM stage_transitions WHERE unified_id = '{gone}'"
        )),
        0,
        "transitions move to the survivor"
    );
    // HubSpot merged both contacts into a new one, which belongs to the surviving person.
    let merged_into = setup.strings(&format!(
        "SELECT DISTINCT merged_into FROM source_records WHERE system = 'hubspot' AND id IN ('{survivor}', '{absorbed}') AND archived"
    ));
    assert_eq!(merged_into.len(), 1, "{merged_into:?}");
    assert_eq!(
        setup.strings(&format!(
            "SELECT unified_id FROM source_records WHERE system = 'hubspot' AND id = '{}' AND NOT archived",
            merged_into[0]
        )),
        vec![kept.clone()]
    );
    // The deleted lead is a tombstone; its person, with no record left, is marked deleted.
    assert_eq!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM source_records WHERE id = '{lone_lead}' AND archived"
        )),
        1
    );
    assert_eq!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM unified_leads WHERE unified_id = '{lone_person}' AND deleted"
        )),
        1
    );
    assert_eq!(
        setup.count(
            "SELECT COUNT(*) FROM source_records s WHERE s.unified_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM unified_leads u WHERE u.unified_id = s.unified_id)"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_one_crm_reaches_the_other_once_and_is_recorded() {
    let setup = Setup::new(300).await;
    let engine = setup.engine().await;
    engine.sync(SyncOptions::default()).await.unwrap();
    let crms = setup.crms();
    // Marketing moves a person both systems know to customer in HubSpot…
    let rows = setup.strings(
        "SELECT u.unified_id || ' ' || u.hubspot_id || ' ' || u.salesforce_lead_id || ' ' || u.stage FROM unified_leads u
         JOIN source_records s ON s.system = 'salesforce' AND s.object = 'Lead' AND s.id = u.salesforce_lead_id
         WHERE u.stage IN ('lead', 'mql') AND json_extract(s.properties, '$.IsConverted') = 0
           AND u.hubspot_id IS NOT NULL
         ORDER BY u.unified_id LIMIT 2",
    );
    assert_eq!(
        rows.len(),
        2,
        "the org has early-stage persons in both systems"
    );
    let parts: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.split(' ').map(str::to_string).collect())
        .collect();
    let (person, hubspot_id, lead_id, before) =
        (&parts[0][0], &parts[0][1], &parts[0][2], &parts[0][3]);
    crms.hubspot_update(
        hubspot_id,
        serde_json::json!({"lifecyclestage": "customer", "hs_lead_status": ""}),
    )
    .await;
    // …and sales disqualifies another in Salesforce.
    let (other, other_hubspot, other_lead) = (&parts[1][0], &parts[1][1], &parts[1][2]);
    crms.salesforce_update(
        "Lead",
        other_lead,
        serde_json::json!({"Status": "Closed - Not Converted"}),
    )
    .await;

    let second = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(second.stage_changes, 2, "{}", second.paragraph());
    let stage_of = |id: &str| {
        setup.strings(&format!(
            "SELECT stage FROM unified_leads WHERE unified_id = '{id}'"
        ))
    };
    assert_eq!(stage_of(person), vec!["customer".to_string()]);
    assert_eq!(stage_of(other), vec!["disqualified".to_string()]);
    assert_eq!(
        setup.strings(&format!(
            "SELECT from_stage || ' ' || to_stage || ' ' || system FROM stage_transitions WHERE unified_id = '{person}' AND run_id = 2"
        )),
        vec![format!("{before} customer hubspot")]
    );
    assert_eq!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM unified_leads WHERE unified_id = '{person}' AND first_entered_customer IS NOT NULL"
        )),
        1
    );
    let lead = crms
        .salesforce_query(&format!(
            "SELECT CRMSync_Stage__c FROM Lead WHERE Id = '{lead_id}'"
        ))
        .await;
    assert_eq!(lead[0]["CRMSync_Stage__c"], "customer");
    let contact = crms
        .hubspot_contact(other_hubspot, "hs_lead_status,crmsync_stage")
        .await;
    assert_eq!(
        contact["hs_lead_status"], "UNQUALIFIED",
        "sales' verdict reaches HubSpot"
    );
    assert_eq!(contact["crmsync_stage"], "disqualified");
    // Each write is recorded in the ledger, and reading it back is no change.
    assert!(
        setup.count(&format!(
            "SELECT COUNT(*) FROM write_ledger WHERE record_id = '{lead_id}' AND field = 'CRMSync_Stage__c' AND run_id = 2"
        )) == 1
    );
    let third = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(third.stage_changes, 0, "{}", third.paragraph());
    assert_eq!(total(&third.written), 0, "{}", third.paragraph());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_one_warehouse_never_overlap() {
    let setup = Setup::new(100).await;
    let engine = setup.engine().await;
    let other = setup.engine().await;
    let held = other
        .warehouse()
        .lock_for_run()
        .await
        .unwrap()
        .expect("free at first");
    let refused = engine.sync(SyncOptions::default()).await.unwrap_err();
    assert!(
        matches!(refused, crmsync::engine::EngineError::Busy { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("another crmsync run"),
        "{refused}"
    );
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM sync_runs"),
        0,
        "nothing was started"
    );
    held.release().await.unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    // The lock is let go after each run.
    engine.sync(SyncOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_entered_dates_come_from_the_crms_own_dates_where_they_exist() {
    let setup = Setup::new(200).await;
    let engine = setup.engine().await;
    let started = jiff::Timestamp::now();
    engine.sync(SyncOptions::default()).await.unwrap();
    let sql_time = |text: &str| text.parse::<jiff::Timestamp>().unwrap();

    // A HubSpot-only contact at mql: entered when HubSpot says it did, before the sync ran.
    let row = setup.strings(
        "SELECT u.first_entered_mql || ' ' || json_extract(r.properties, '$.hs_v2_date_entered_marketingqualifiedlead')
         FROM unified_leads u JOIN source_records r ON r.unified_id = u.unified_id
         WHERE u.stage = 'mql' AND u.salesforce_lead_id IS NULL AND u.salesforce_contact_id IS NULL
         AND r.system = 'hubspot' AND NOT r.archived ORDER BY u.unified_id LIMIT 1",
    );
    let parts: Vec<&str> = row[0].split(' ').collect();
    let (entered, hubspot_says) = (sql_time(parts[0]), sql_time(parts[1]));
    assert_eq!(entered, hubspot_says);
    assert!(entered < started, "{entered} is not before the sync");

    // A converted lead entered sql on its conversion date.
    let row = setup.strings(
        "SELECT u.first_entered_sql || ' ' || json_extract(r.properties, '$.ConvertedDate')
         FROM unified_leads u JOIN source_records r ON r.unified_id = u.unified_id
         WHERE r.system = 'salesforce' AND r.object = 'Lead' AND json_extract(r.properties, '$.IsConverted') = 1
         AND u.hubspot_id IS NULL ORDER BY u.unified_id LIMIT 1",
    );
    let parts: Vec<&str> = row[0].split(' ').collect();
    let converted = sql_time(&format!("{}T00:00:00Z", parts[1]));
    assert_eq!(sql_time(parts[0]), converted, "converted on {}", parts[1]);
    // Stages without a CRM date are dated when first seen.
    let seen = setup.strings(
        "SELECT first_entered_sal FROM unified_leads WHERE stage = 'sal' AND hubspot_id IS NULL ORDER BY unified_id LIMIT 1",
    );
    assert!(sql_time(&seen[0]) >= started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_archives_are_swept_on_their_cadence_and_none_is_missed_in_between() {
    // With the real limits, whose headers tell the client its daily figures: no listing is
    // sent just to learn them, so every listing counted here is a read.
    let setup = Setup::with(crmsync::emulator::EmulatorConfig {
        records: 150,
        ..Default::default()
    })
    .await;
    // The default cadence: once an hour.
    let config = setup.config_with(|text| text.replace("archived_sweep_minutes = 0", ""));
    assert_eq!(config.hubspot.archived_sweep_minutes, 60);
    let engine = crmsync::engine::open(config).await.unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    let first_cursor = setup
        .strings("SELECT cursor FROM checkpoints WHERE system = 'hubspot' AND object = 'contacts'")
        .remove(0);
    let first_cursor: serde_json::Value = serde_json::from_str(&first_cursor).unwrap();
    let first_since: jiff::Timestamp = first_cursor["since"].as_str().unwrap().parse().unwrap();
    let listings = || -> u64 {
        setup
            .emulator
            .stats()
            .requests_by_endpoint
            .get("hubspot GET /crm/v3/objects/{type}")
            .map_or(0, |statuses| statuses.values().sum())
    };
    let contact = setup.strings(
        "SELECT id FROM source_records WHERE system = 'hubspot' AND object = 'contacts' AND NOT archived ORDER BY id LIMIT 1",
    )[0]
    .clone();
    setup.crms().hubspot_archive(&contact).await;
    let archived = || {
        setup.count(&format!(
            "SELECT COUNT(*) FROM source_records WHERE system = 'hubspot' AND object = 'contacts' AND id = '{contact}' AND archived"
        ))
    };

    // Within the hour: the archived listing is not read, and the checkpoint remembers where
    // the unswept archives start.
    let before = listings();
    let second = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        listings(),
        before,
        "an incremental run swept too early: {:?}",
        second.streams
    );
    assert_eq!(archived(), 0);
    let cursor = setup
        .strings("SELECT cursor FROM checkpoints WHERE system = 'hubspot' AND object = 'contacts'")
        [0]
    .clone();
    let cursor: serde_json::Value = serde_json::from_str(&cursor).unwrap();
    let unswept: jiff::Timestamp = cursor["archived_since"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        unswept, first_since,
        "the unswept archives start where the full read did"
    );

    // An hour on (the checkpoint says the last sweep began two hours ago): the sweep finds
    // the contact archived between the runs.
    let earlier = unswept - jiff::SignedDuration::from_hours(2);
    // The changes checkpoint is moved past the archive too: only a sweep that starts where
    // the unswept archives start (not at the changes checkpoint) can find it.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10);
    setup
        .sql()
        .execute(
            "UPDATE checkpoints SET cursor = json_set(cursor, '$.archived_since', ?1, '$.since', ?2) WHERE system = 'hubspot'",
            [earlier.to_string(), later.to_string()],
        )
        .unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    assert!(listings() > before, "the due sweep did not run");
    assert_eq!(archived(), 1);
    let cursor = setup
        .strings("SELECT cursor FROM checkpoints WHERE system = 'hubspot' AND object = 'contacts'")
        [0]
    .clone();
    assert!(!cursor.contains("archived_since"), "{cursor}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_describes_are_kept_between_runs_and_renewed_when_out_of_date() {
    let setup = Setup::new(120).await;
    let engine = setup.engine().await;
    let describes = || -> u64 {
        setup
            .emulator
            .stats()
            .requests_by_endpoint
            .get("salesforce GET /services/data/{version}/sobjects/{object}/describe")
            .map_or(0, |statuses| statuses.values().sum())
    };
    engine.sync(SyncOptions::default()).await.unwrap();
    let after_first = describes();
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM api_cache WHERE system = 'salesforce'"),
        3,
        "Lead, Contact and Opportunity kept"
    );
    // Incremental runs read with the kept describes.
    engine.sync(SyncOptions::default()).await.unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(describes(), after_first);

    // A kept describe without a field the read wants (created in the org since) is renewed.
    setup
        .sql()
        .execute(
            "UPDATE api_cache SET body = json_remove(body, '$.fields.Status') WHERE name LIKE 'describe/Lead/%'",
            [],
        )
        .unwrap();
    engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(describes(), after_first + 1);
    let kept = setup.strings("SELECT body FROM api_cache WHERE name LIKE 'describe/Lead/%'");
    assert!(
        kept[0].contains("\"Status\""),
        "the renewed describe is kept"
    );

    // A kept describe naming a field the org no longer has: that run's read of the object
    // stops with Salesforce's INVALID_FIELD, and the next describes afresh and goes on.
    let config = setup.config_with(|text| text);
    let mappings = config.mappings_dir.value.join("salesforce.toml");
    let text = std::fs::read_to_string(&mappings).unwrap();
    std::fs::write(
        &mappings,
        text.replacen(
            "[objects.Lead.fields]\n",
            "[objects.Lead.fields]\nregion = { from = \"Region__c\" }\n",
            1,
        ),
    )
    .unwrap();
    setup
        .sql()
        .execute(
            "UPDATE api_cache SET body = json_set(body, '$.fields.Region__c', json_extract(body, '$.fields.Title')) WHERE name LIKE 'describe/Lead/%'",
            [],
        )
        .unwrap();
    setup
        .sql()
        .execute(
            "UPDATE api_cache SET body = json_set(body, '$.fields.Region__c.name', 'Region__c') WHERE name LIKE 'describe/Lead/%'",
            [],
        )
        .unwrap();
    let engine = setup.engine().await;
    let stopped = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(stopped.status, RunStatus::Failed, "{}", stopped.paragraph());
    assert!(
        stopped
            .problems
            .iter()
            .any(|problem| problem.contains("INVALID_FIELD") && problem.contains("afresh")),
        "{:?}",
        stopped.problems
    );
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM api_cache WHERE name LIKE 'describe/Lead/%'"),
        0
    );
    let healed = engine.sync(SyncOptions::default()).await.unwrap();
    assert_ne!(healed.status, RunStatus::Failed, "{}", healed.paragraph());
    assert!(healed.streams.iter().all(|stream| stream.stopped.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_that_cannot_be_read_goes_to_dead_letters_and_the_rest_are_sent() {
    let setup = Setup::new(150).await;
    let engine = setup.engine().await;
    // A first run, and the one that reads back what it wrote: nothing is left to do.
    for _ in 0..2 {
        engine
            .sync(SyncOptions::default())
            .await
            .expect("a settling run");
    }
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM pending_writes"),
        0,
        "everything was sent"
    );
    // Two writes wait in the queue: the first damaged (its changes no longer JSON), the
    // second sound.
    let contacts = setup.strings(
        "SELECT id FROM source_records WHERE system = 'hubspot' AND object = 'contacts' AND NOT archived
         ORDER BY id LIMIT 2",
    );
    let (damaged, sound) = (&contacts[0], &contacts[1]);
    setup
        .sql()
        .execute(
            "INSERT INTO pending_writes (system, object, record_id, unified_id, changes, current, allow_regression, run_id)
             VALUES ('hubspot', 'contacts', ?1, 'p-damaged', '{\"company\": ', '{}', FALSE, 1),
                    ('hubspot', 'contacts', ?2, 'p-sound',
                     '{\"company\": {\"value\": \"Queue Check Inc\", \"rule\": \"test\"}}', '{}', FALSE, 1)",
            [damaged, sound],
        )
        .expect("queued");
    let report = engine
        .sync(SyncOptions::default())
        .await
        .expect("the second run");
    assert_eq!(
        report.written.get(&System::Hubspot).copied(),
        Some(1),
        "{}",
        report.paragraph()
    );
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(setup.count("SELECT COUNT(*) FROM pending_writes"), 0);
    let contact = setup.crms().hubspot_contact(sound, "company").await;
    assert_eq!(contact["company"], "Queue Check Inc");
    let reasons = setup.strings(&format!(
        "SELECT reason FROM dead_letters WHERE system = 'hubspot' AND id = '{damaged}'"
    ));
    assert!(
        reasons.iter().any(|reason| reason
            .contains("could not be read: pending_writes.changes is not a JSON object")),
        "{reasons:?}"
    );
}

/// Links HubSpot contacts to Salesforce leads whose email is the contact's with one letter
/// more, so each such person's records lie in neighbouring chunks when chunks are small.
async fn link_across_neighbouring_emails(setup: &Setup) {
    link_contacts_to_leads(setup, |email| format!("{email}x")).await;
}

/// Gives six HubSpot contacts the email `email_of` makes of a lead's and a link to that lead
/// (`crmsync_salesforce_id`); the leads do not link back.
async fn link_contacts_to_leads(setup: &Setup, email_of: impl Fn(&str) -> String) {
    let crms = setup.crms();
    let leads = crms
        .salesforce_query(
            "SELECT Id, Email FROM Lead WHERE IsConverted = false ORDER BY Id LIMIT 6",
        )
        .await;
    assert_eq!(leads.len(), 6);
    let contacts = crms
        .hubspot
        .send(
            crmsync::hubspot::client::Budget::General,
            http::Method::GET,
            "/crm/v3/objects/contacts",
            &[("limit", "6".to_string())],
            None,
            "contacts",
        )
        .await
        .unwrap()
        .body["results"]
        .clone();
    let contacts: Vec<String> = contacts
        .as_array()
        .expect("a page of contacts")
        .iter()
        .map(|contact| contact["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(contacts.len(), 6);
    for (contact, lead) in contacts.iter().zip(&leads) {
        let email = lead["Email"].as_str().expect("a lead with an email");
        crms.hubspot_update(
            contact,
            serde_json::json!({ "email": email_of(email), "crmsync_salesforce_id": lead["Id"] }),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_linking_to_a_later_emails_record_is_one_person_with_it_from_the_first_run() {
    // Each contact links to a lead whose email comes after its own, and the lead does not link
    // back: in one-record chunks the contact is decided while its lead still waits. The lead
    // joins the contact's person then, rather than founding a second one in its own chunk.
    let setup = Setup::new(150).await;
    link_contacts_to_leads(&setup, |email| format!("0{email}")).await;
    let engine = setup.engine().await.with_reconcile_chunk(1);
    let first = engine.sync(SyncOptions::default()).await.unwrap();
    assert_ne!(first.status, RunStatus::Failed, "{}", first.paragraph());
    let pairs =
        "SELECT c.unified_id || ' ' || l.unified_id FROM source_records c JOIN source_records l
            ON l.system = 'salesforce' AND l.object = 'Lead'
           AND l.id = json_extract(c.properties, '$.crmsync_salesforce_id')
         WHERE c.system = 'hubspot' AND c.object = 'contacts' AND c.email = '0' || l.email
         ORDER BY 1";
    let linked = setup.strings(pairs);
    assert_eq!(linked.len(), 6, "{linked:?}");
    for pair in &linked {
        let (contact, lead) = pair.split_once(' ').expect("two ids");
        assert_eq!(
            contact, lead,
            "a contact and the lead it links to are one person"
        );
        assert_eq!(
            setup.count(&format!(
                "SELECT COUNT(*) FROM person_merges WHERE absorbed = '{lead}' OR survivor = '{lead}'"
            )),
            0,
            "no second person was founded to be merged later"
        );
    }
    // The leads taken along were decided again in their own chunks: none is left waiting.
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM source_records WHERE pending"),
        0
    );
    // The next run keeps them as they are.
    engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(setup.strings(pairs), linked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_linking_to_a_new_record_of_a_known_email_brings_that_emails_person_along() {
    // After a first sync a new lead comes with the email of a known person, and a contact of
    // another person, whose email comes first, is linked to it. In one-record chunks the
    // contact is decided while the lead waits: the lead, the contact and the email's person
    // are one person, as they would be had the lead been decided in its own chunk.
    let setup = Setup::new(150).await;
    let engine = setup.engine().await.with_reconcile_chunk(1);
    engine.sync(SyncOptions::default()).await.unwrap();
    // The second run reads back what the first wrote; after it nothing of the email waits.
    engine.sync(SyncOptions::default()).await.unwrap();
    let known = setup.strings(
        "SELECT email FROM unified_leads WHERE hubspot_id IS NOT NULL AND salesforce_lead_id IS NULL
            AND salesforce_contact_id IS NULL AND email IS NOT NULL AND NOT deleted
         ORDER BY email DESC LIMIT 1",
    );
    let email = known[0].clone();
    let contact = setup.strings(&format!(
        "SELECT hubspot_id FROM unified_leads WHERE hubspot_id IS NOT NULL AND email < '{email}'
            AND NOT deleted ORDER BY email LIMIT 1"
    ))[0]
        .clone();
    let crms = setup.crms();
    let template = crms
        .salesforce_query("SELECT Company, Status FROM Lead WHERE IsConverted = false LIMIT 1")
        .await;
    let lead = crms
        .salesforce_create(
            "Lead",
            serde_json::json!({
                "LastName": "Linked",
                "Company": template[0]["Company"],
                "Status": template[0]["Status"],
                "Email": email,
            }),
        )
        .await;
    crms.hubspot_update(
        &contact,
        serde_json::json!({ "crmsync_salesforce_id": lead }),
    )
    .await;
    engine.sync(SyncOptions::default()).await.unwrap();
    let person_of = |system: &str, object: &str, id: &str| {
        setup.strings(&format!(
            "SELECT unified_id FROM source_records WHERE system = '{system}' AND object = '{object}' AND id = '{id}'"
        ))
    };
    let of_lead = person_of("salesforce", "Lead", &lead);
    assert_eq!(of_lead.len(), 1);
    assert_eq!(person_of("hubspot", "contacts", &contact), of_lead);
    let of_email = setup.strings(&format!(
        "SELECT DISTINCT unified_id FROM source_records WHERE email = '{email}' AND NOT archived"
    ));
    assert_eq!(
        of_email, of_lead,
        "every record of {email} is the lead's person"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_chunks_give_the_same_warehouse_as_large_ones() {
    // One record a chunk (an email's records still come together) makes hundreds of chunks,
    // each read while the one before it commits. A contact linked to the lead of the email just
    // before its own is read while that lead's chunk commits: it must be read again after the
    // commit to find the lead's person. The outcome must not depend on where chunks are cut.
    let large = Setup::new(150).await;
    link_across_neighbouring_emails(&large).await;
    let first = large
        .engine()
        .await
        .sync(SyncOptions::default())
        .await
        .unwrap();
    assert_ne!(first.status, RunStatus::Failed, "{}", first.paragraph());
    let small = Setup::new(150).await;
    link_across_neighbouring_emails(&small).await;
    let chunked = small
        .engine()
        .await
        .with_reconcile_chunk(1)
        .sync(SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(chunked.status, first.status, "{}", chunked.paragraph());
    assert!(
        chunked.reconcile_chunks > 100,
        "{}",
        chunked.reconcile_chunks
    );
    // Each chunk is read while the one before it may still commit; only a contact whose
    // lead's chunk is that one shares anything with it, and is read again.
    assert_eq!(chunked.reconcile_chunks_read_again, 6);
    // Each linked contact is one person with its lead.
    let linked = small.count(
        "SELECT COUNT(*) FROM source_records c JOIN source_records l
            ON l.system = 'salesforce' AND l.object = 'Lead'
           AND l.id = json_extract(c.properties, '$.crmsync_salesforce_id')
         WHERE c.system = 'hubspot' AND c.object = 'contacts' AND c.unified_id = l.unified_id
           AND c.email = l.email || 'x'",
    );
    assert_eq!(linked, 6);
    assert_eq!(chunked.warehouse.persons, first.warehouse.persons);
    // Persons, their records, merges, dead letters, writes: all the same. Only the history of
    // a person whose records lie in two chunks may differ — decided once per chunk, it can pass
    // through the stage the first chunk gave it — so transitions are left out.
    let (small, large) = (small.warehouse_state(), large.warehouse_state());
    for (index, (small, large)) in small.iter().zip(&large).enumerate() {
        if index != 2 {
            assert_eq!(small, large);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_midway_still_reports_what_it_did() {
    let setup = Setup::new(60).await;
    // The warehouse is made (and migrated) when an engine opens it.
    drop(setup.engine().await);
    setup.refuse_persons();

    // `sync --json`: exit 1, the error on stderr, and the report of the failed run on stdout.
    let (code, stdout, stderr) = setup.crmsync(&["sync", "--json"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no room for persons"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["status"], "failed", "{report}");
    let read: u64 = report["read"]
        .as_object()
        .expect("records read by system")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(read > 0, "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("no room for persons"),
        "{report}"
    );
    // No person was kept, so none is reported (a chunk decided but not committed is not).
    assert_eq!(report["reconciled"], 0, "{report}");
    let (recorded, persons): (i64, i64) = setup
        .sql()
        .query_row(
            "SELECT records_read, persons FROM sync_runs WHERE id = ?1",
            [report["run_id"].as_i64().expect("a run id")],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the run's row");
    assert_eq!((recorded as u64, persons), (read, 0));

    // In process: the error reads as the one that ended the run, the report beside it.
    let error = setup
        .engine()
        .await
        .sync(SyncOptions::default())
        .await
        .expect_err("the warehouse still refuses persons");
    assert!(error.to_string().contains("no room for persons"), "{error}");
    // Its causes are those of the error that ended the run, each once.
    let causes = |error: &dyn std::error::Error| {
        let mut causes = vec![error.to_string()];
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        causes
    };
    let shown = causes(&error);
    let crmsync::engine::EngineError::RunFailed(failure) = error else {
        panic!("not a failed run's error: {error:?}");
    };
    assert_eq!(shown, causes(&failure.error));
    assert_eq!(failure.report.status, RunStatus::Failed);
    assert_eq!(failure.report.run_id, 2);
    assert!(
        failure.report.problems[0].contains("no room for persons"),
        "{:?}",
        failure.report.problems
    );
}
