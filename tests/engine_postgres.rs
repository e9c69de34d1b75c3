//! The PostgreSQL warehouse against a real server: the URL comes from PG_TEST_URL
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); each test works in a database of its own,
//! created and dropped here. Without the variable the tests say so and pass, unless
//! PG_TEST_REQUIRED is set (as in CI), where a missing server is a failure.

mod pg_common;

mod engine_common;

use crmsync::engine::SyncOptions;
use engine_common::Setup;
use tokio_postgres::NoTls;

/// A fresh database on the test server, dropped when the guard goes.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create(label: &str) -> Option<TestDatabase> {
        let admin_url = pg_common::admin_url("PostgreSQL warehouse tests")?;
        let name = format!(
            "crmsync_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot reach PG_TEST_URL {admin_url}: {error}"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    async fn drop_it(self) {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop the test database");
    }
}

/// A fresh test database, an emulator over `people` and the warehouse on that database
/// (`None` when no server is configured, as `TestDatabase::create` says).
async fn warehouse_on_postgres(
    label: &str,
    people: usize,
) -> Option<(TestDatabase, Setup, crmsync::store::Warehouse)> {
    let database = TestDatabase::create(label).await?;
    let setup = Setup::new(people).await;
    let config = setup.config_with(|text| on_postgres(text, &database.url));
    let (_, warehouse) = crmsync::engine::open_warehouse(&config)
        .await
        .expect("opens");
    Some((database, setup, warehouse))
}

/// The unexpired leases in the database: (name, holder), by name.
async fn live_leases(database: &TestDatabase) -> Vec<(String, String)> {
    database
        .client()
        .await
        .query(
            "SELECT name, holder FROM leases WHERE expires_at >= now() ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// An emulator over `people` whose answers take 50–250 ms each, as real APIs' do.
async fn slow_org(people: usize) -> Setup {
    Setup::with(crmsync::emulator::EmulatorConfig {
        records: people,
        rate_limits: false,
        faults: "slow"
            .parse::<crmsync::emulator::faults::Faults>()
            .expect("faults"),
        ..crmsync::emulator::EmulatorConfig::default()
    })
    .await
}

fn on_postgres(text: String, url: &str) -> String {
    text.replace("url = \"sqlite://crmsync.db\"", &format!("url = \"{url}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_into_postgresql_unifies_writes_back_and_then_writes_nothing() {
    let Some(database) = TestDatabase::create("sync").await else {
        return;
    };
    let setup = Setup::new(300).await;
    let config = setup.config_with(|text| on_postgres(text, &database.url));
    let engine = crmsync::engine::open(config.clone()).await.expect("opens");
    let first = engine.sync(SyncOptions::default()).await.unwrap();
    assert!(
        first.written.values().sum::<u64>() > 0,
        "{}",
        first.paragraph()
    );
    let client = database.client().await;
    let persons: i64 = client
        .query_one("SELECT COUNT(*) FROM unified_leads WHERE NOT deleted", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(persons as u64, first.warehouse.persons);
    assert!(persons > 250, "{persons}");
    let version: i32 = client
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version as u32, crmsync::store::migrations::latest_version());
    let person_index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'source_records_unified' AND schemaname = current_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        person_index.contains("WHERE (unified_id IS NOT NULL)"),
        "{person_index}"
    );
    let json_type: String = client
        .query_one(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'source_records' AND column_name = 'properties'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(json_type, "jsonb");
    let second = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        second.written.values().sum::<u64>(),
        0,
        "{}",
        second.paragraph()
    );
    assert_eq!(second.stage_changes, 0);
    // explain reads the same history from PostgreSQL.
    let someone: String = client
        .query_one(
            "SELECT unified_id FROM unified_leads WHERE hubspot_id IS NOT NULL AND salesforce_lead_id IS NOT NULL ORDER BY unified_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let found = crmsync::engine::explain::explain(engine.warehouse(), &someone)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].records.len() >= 2);
    assert!(!found[0].history.transitions.is_empty());
    assert!(!found[0].history.written.is_empty());
    let by_email = crmsync::engine::explain::explain(
        engine.warehouse(),
        &found[0].person.email.clone().unwrap().to_uppercase(),
    )
    .await
    .unwrap();
    assert_eq!(by_email[0].person.unified_id, someone);
    // Another worker holding every stream and the person-wide steps: this run leaves them
    // to it, saying who holds them; once let go, they are this run's again.
    let other = crmsync::engine::open(config.clone()).await.expect("opens");
    let leases = [
        "stream:hubspot:contacts",
        "stream:hubspot:deals",
        "stream:salesforce:Lead",
        "stream:salesforce:Contact",
        "stream:salesforce:Opportunity",
        "persons",
    ];
    let ttl = jiff::SignedDuration::from_secs(60);
    for name in leases {
        assert_eq!(
            other
                .warehouse()
                .try_lease(name, "other-worker", ttl)
                .await
                .unwrap(),
            None
        );
    }
    let left = engine.sync(SyncOptions::default()).await.unwrap();
    assert!(left.streams.is_empty(), "{}", left.paragraph());
    assert_eq!(left.skipped.len(), 6, "{:?}", left.skipped);
    assert!(
        left.skipped
            .iter()
            .all(|skipped| skipped.contains("worker other-worker holds")),
        "{:?}",
        left.skipped
    );
    for name in leases {
        other
            .warehouse()
            .release_lease(name, "other-worker")
            .await
            .unwrap();
    }
    let own = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(own.streams.len(), 5);
    assert!(own.skipped.is_empty(), "{:?}", own.skipped);
    drop(other);
    // Opening again is a no-op migration.
    drop(engine);
    let again = crmsync::engine::open(config).await.expect("re-opens");
    drop(again);
    drop(client);
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgresql_warehouses_end_up_holding_the_same_persons() {
    let Some(database) = TestDatabase::create("same").await else {
        return;
    };
    let emulator = || crmsync::emulator::EmulatorConfig {
        records: 250,
        seed: 9,
        rate_limits: false,
        ..Default::default()
    };
    let on_sqlite = Setup::with(emulator()).await;
    let on_pg = Setup::with(emulator()).await;
    let sqlite_engine = on_sqlite.engine().await;
    let pg_engine =
        crmsync::engine::open(on_pg.config_with(|text| on_postgres(text, &database.url)))
            .await
            .unwrap();
    for _ in 0..2 {
        sqlite_engine.sync(SyncOptions::default()).await.unwrap();
        pg_engine.sync(SyncOptions::default()).await.unwrap();
    }
    let query = "SELECT unified_id || '|' || COALESCE(stage, '') || '|' || COALESCE(hubspot_id, '') || '|' || COALESCE(salesforce_lead_id, '') || '|' || COALESCE(salesforce_contact_id, '') || '|' || COALESCE(email, '') FROM unified_leads ORDER BY unified_id";
    let from_sqlite = on_sqlite.strings(query);
    let client = database.client().await;
    let from_pg: Vec<String> = client
        .query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(from_sqlite.len() > 200);
    assert_eq!(from_pg, from_sqlite);
    let transitions = "SELECT COUNT(*) FROM stage_transitions";
    let pg_transitions: i64 = client.query_one(transitions, &[]).await.unwrap().get(0);
    assert_eq!(pg_transitions, on_sqlite.count(transitions));
    drop(client);
    drop(pg_engine);
    database.drop_it().await;
}

/// Every crmsync table's rows (as one digest each) and every sequence's position.
async fn snapshot(client: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for table in
        std::iter::once("schema_migrations").chain(crmsync::store::migrations::table_names())
    {
        let digest: Option<String> = client
            .query_one(
                &format!("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        out.push(format!("{table}: {}", digest.unwrap_or_default()));
    }
    for row in client
        .query(
            "SELECT sequencename::text, COALESCE(last_value, 0) FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        out.push(format!("{}: {}", row.get::<_, String>(0), row.get::<_, i64>(1)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_postgresql_works_on_temporary_copies_and_leaves_the_database_as_it_was() {
    let Some(database) = TestDatabase::create("plan").await else {
        return;
    };
    let setup = Setup::new(150).await;
    let config = setup.config_with(|text| on_postgres(text, &database.url));
    let client = database.client().await;
    let public_tables = || async {
        client
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // A database crmsync never ran on: the plan's tables are temporary, none is left.
    let planner = crmsync::engine::open_planner(config.clone()).await.unwrap();
    let (first_plan, _) = planner.plan(SyncOptions::default()).await.unwrap();
    assert!(
        first_plan.changes.len() > 50,
        "{}",
        first_plan.changes.len()
    );
    assert_eq!(public_tables().await, 0);
    drop(planner);
    assert_eq!(public_tables().await, 0);

    let engine = crmsync::engine::open(config.clone()).await.unwrap();
    let first = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        first.written.values().sum::<u64>(),
        first_plan.changes.len() as u64,
        "the plan held what the first sync wrote"
    );
    engine.sync(SyncOptions::default()).await.unwrap();
    let row = client
        .query_one(
            "SELECT hubspot_id, salesforce_lead_id FROM unified_leads
             WHERE stage = 'mql' AND hubspot_raw_stage = 'marketingqualifiedlead'
             AND salesforce_lead_id IS NOT NULL AND salesforce_contact_id IS NULL
             ORDER BY unified_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (contact, lead): (String, String) = (row.get(0), row.get(1));
    setup
        .crms()
        .hubspot_update(
            &contact,
            serde_json::json!({"lifecyclestage": "salesqualifiedlead"}),
        )
        .await;

    let before = snapshot(&client).await;
    let planner = crmsync::engine::open_planner(config.clone()).await.unwrap();
    let (plan, report) = planner.plan(SyncOptions::default()).await.unwrap();
    let mut planned: Vec<&str> = plan
        .changes
        .iter()
        .map(|change| change.id.as_str())
        .collect();
    planned.sort();
    let mut expected = vec![contact.as_str(), lead.as_str()];
    expected.sort();
    assert_eq!(planned, expected, "{}", report.paragraph());
    drop(planner);
    assert_eq!(
        snapshot(&client).await,
        before,
        "the plan changed the database"
    );

    // With pg_temp late on the search path the copies would not shadow the real tables:
    // the plan stops before touching anything.
    let mut late = config.clone();
    late.warehouse.url.value = crmsync::config::WarehouseUrl::Postgres(format!(
        "{}?options=-c%20search_path%3Dpublic%2Cpg_temp",
        database.url
    ));
    let refused = crmsync::engine::open_planner(late).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not lead to the plan's private copy"),
        "{refused}"
    );
    assert_eq!(
        snapshot(&client).await,
        before,
        "the refused plan changed the database"
    );

    let sync = engine.sync(SyncOptions::default()).await.unwrap();
    assert_eq!(
        sync.written.values().sum::<u64>(),
        2,
        "{}",
        sync.paragraph()
    );
    drop(engine);
    drop(client);
    database.drop_it().await;
}

/// The definition of the person index in the database's own schema, if it has one.
async fn shared_person_index(client: &tokio_postgres::Client) -> Option<String> {
    client
        .query_opt(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = 'source_records_unified'",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_an_older_warehouse_migrates_only_its_copies() {
    let Some(database) = TestDatabase::create("older_plan").await else {
        return;
    };
    let client = database.client().await;
    // A warehouse an earlier release left at version 3 (before the person index was partial).
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .unwrap();
    for migration in &crmsync::store::MIGRATIONS[..3] {
        client
            .batch_execute(&migration.render(crmsync::store::Dialect::Postgres))
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, now())",
                &[&(migration.version as i32), &migration.name],
            )
            .await
            .unwrap();
    }
    let before = shared_person_index(&client)
        .await
        .expect("version 3 has it");
    assert!(!before.contains("WHERE"), "{before}");
    let vocabulary = pg_common::shipped_vocabulary();

    let scratch =
        crmsync::store::postgres::PostgresStore::connect_scratch(&database.url, None, &vocabulary)
            .await
            .expect("a plan's private copy");
    drop(scratch);
    assert_eq!(
        shared_person_index(&client).await.as_deref(),
        Some(before.as_str()),
        "migrating the plan's copies reached the warehouse's own index"
    );

    crmsync::store::postgres::PostgresStore::connect(&database.url, None, &vocabulary)
        .await
        .expect("the warehouse itself still migrates");
    let after = shared_person_index(&client).await.expect("migrated");
    assert!(after.contains("WHERE (unified_id IS NOT NULL)"), "{after}");
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_belongs_to_one_worker_until_let_go_or_expired() {
    let Some((database, _setup, warehouse)) = warehouse_on_postgres("leases", 50).await else {
        return;
    };
    assert!(warehouse.is_shared());
    let ttl = jiff::SignedDuration::from_secs(2);
    let stream = "stream:hubspot:contacts";
    assert_eq!(warehouse.try_lease(stream, "a", ttl).await.unwrap(), None);
    let (holder, until) = warehouse
        .try_lease(stream, "b", ttl)
        .await
        .unwrap()
        .expect("a holds it");
    assert_eq!(holder, "a");
    assert!(until > jiff::Timestamp::now());
    // Its holder may take it again (that renews it); others see it as taken.
    assert_eq!(warehouse.try_lease(stream, "a", ttl).await.unwrap(), None);
    assert_eq!(
        live_leases(&database).await,
        [(stream.to_string(), "a".to_string())]
    );
    // Only its holder lets it go.
    warehouse.release_lease(stream, "b").await.unwrap();
    assert!(
        warehouse
            .try_lease(stream, "b", ttl)
            .await
            .unwrap()
            .is_some()
    );
    warehouse.release_lease(stream, "a").await.unwrap();
    assert_eq!(warehouse.try_lease(stream, "b", ttl).await.unwrap(), None);
    warehouse.release_lease(stream, "b").await.unwrap();

    // The hand-off from reading to reconcile: a worker finishing while another still reads
    // lets its streams go and leaves reconcile to the other, which takes it when it finishes.
    let hour = jiff::SignedDuration::from_hours(1);
    let (contacts, lead) = ("stream:hubspot:contacts", "stream:salesforce:Lead");
    assert_eq!(
        warehouse.try_lease(contacts, "a", hour).await.unwrap(),
        None
    );
    assert_eq!(warehouse.try_lease(lead, "b", hour).await.unwrap(), None);
    let handed = warehouse
        .hand_off("a", &[contacts.to_string()], "persons", "stream:", hour)
        .await
        .unwrap();
    assert_eq!(
        handed,
        crmsync::store::model::HandOff::Readers(vec![(lead.to_string(), "b".to_string())])
    );
    assert_eq!(
        warehouse
            .hand_off("b", &[lead.to_string()], "persons", "stream:", hour)
            .await
            .unwrap(),
        crmsync::store::model::HandOff::Taken
    );
    let Ok(crmsync::store::model::HandOff::HeldBy(holder, _)) = warehouse
        .hand_off("c", &[], "persons", "stream:", hour)
        .await
    else {
        panic!("b holds reconcile");
    };
    assert_eq!(holder, "b");
    assert_eq!(
        live_leases(&database).await,
        [("persons".to_string(), "b".to_string())],
        "no stream is held any more"
    );
    warehouse.release_lease("persons", "b").await.unwrap();

    // A lease not renewed expires: another worker takes it, and its old holder learns so.
    assert_eq!(
        warehouse.try_lease("persons", "a", ttl).await.unwrap(),
        None
    );
    assert_eq!(
        warehouse
            .renew_leases(vec!["persons".into()], "a", ttl)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    assert_eq!(
        warehouse.try_lease("persons", "b", ttl).await.unwrap(),
        None
    );
    assert_eq!(
        warehouse
            .renew_leases(vec!["persons".into()], "a", ttl)
            .await
            .unwrap(),
        ["persons"]
    );
    database.drop_it().await;
}

/// Runs `crmsync sync --json` on `config` to its end: the report.
fn sync_report(config: &std::path::Path) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["sync", "--json", "--config"])
        .arg(config)
        .output()
        .expect("crmsync runs");
    assert!(
        matches!(output.status.code(), Some(0 | 2)),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// Syncs until a run writes and changes nothing.
fn settle(config: &std::path::Path) {
    for _ in 0..6 {
        let report = sync_report(config);
        let written: u64 = report["written"]
            .as_object()
            .map_or(0, |counts| counts.values().filter_map(|n| n.as_u64()).sum());
        if written == 0 && report["changed"] == 0 {
            return;
        }
    }
    panic!("the syncs did not settle within six runs");
}

/// Requests that read records: HubSpot lists and searches, Salesforce queries and their pages.
fn read_requests(stats: &crmsync::emulator::stats::StatsSnapshot) -> u64 {
    stats
        .requests_by_endpoint
        .iter()
        .filter(|(endpoint, _)| {
            endpoint.starts_with("hubspot GET /crm/v3/objects/{type}")
                || endpoint.starts_with("hubspot POST /crm/v3/objects/{type}/search")
                || endpoint.contains("/query")
        })
        .flat_map(|(_, by_status)| by_status.values())
        .sum()
}

fn workers_org() -> crmsync::emulator::EmulatorConfig {
    crmsync::emulator::EmulatorConfig {
        records: 500,
        rate_limits: false,
        seed: 23,
        ..crmsync::emulator::EmulatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_running_at_once_on_one_postgresql_never_process_a_stream_twice() {
    let Some(reference_db) = TestDatabase::create("workers_reference").await else {
        return;
    };
    let Some(shared_db) = TestDatabase::create("workers_shared").await else {
        return;
    };
    // One worker alone: what a first run reads, and what syncing to the end writes.
    let reference = Setup::with(workers_org()).await;
    reference.config_with(|text| on_postgres(text, &reference_db.url));
    sync_report(&reference.config_path);
    let reference_reads = read_requests(&reference.emulator.stats());
    settle(&reference.config_path);
    let reference_written = reference.emulator.stats().records_written;

    // Three workers started together on the same org and warehouse.
    let shared = Setup::with(workers_org()).await;
    shared.config_with(|text| on_postgres(text, &shared_db.url));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let config = shared.config_path.clone();
            std::thread::spawn(move || sync_report(&config))
        })
        .collect();
    let reports: Vec<serde_json::Value> = workers
        .into_iter()
        .map(|worker| worker.join().expect("a worker"))
        .collect();
    // Each stream was read by exactly one of them; the others say who held it.
    for (system, object) in [
        ("hubspot", "contacts"),
        ("hubspot", "deals"),
        ("salesforce", "Lead"),
        ("salesforce", "Contact"),
        ("salesforce", "Opportunity"),
    ] {
        let readers = reports
            .iter()
            .filter(|report| {
                report["streams"].as_array().is_some_and(|streams| {
                    streams
                        .iter()
                        .any(|stream| stream["system"] == system && stream["object"] == object)
                })
            })
            .count();
        assert_eq!(readers, 1, "{system} {object} read by {readers} workers");
        let left = reports
            .iter()
            .filter(|report| {
                report["skipped"]
                    .to_string()
                    .contains(&format!("{system} {object}: worker "))
            })
            .count();
        assert_eq!(left, 2, "{system} {object}: {reports:#?}");
    }
    // Exactly one of them, the last to finish reading, reconciled and wrote back.
    let person_steps = reports
        .iter()
        .filter(|report| {
            !report["skipped"]
                .to_string()
                .contains("reconcile and write-back")
        })
        .count();
    assert_eq!(person_steps, 1, "{reports:#?}");
    assert_eq!(
        read_requests(&shared.emulator.stats()),
        reference_reads,
        "the workers together read each stream once"
    );
    // Synced to the end, the CRMs received exactly the writes one worker alone sends.
    settle(&shared.config_path);
    assert_eq!(shared.emulator.stats().records_written, reference_written);
    assert!(reference_written.values().sum::<u64>() > 100);
    let client = shared_db.client().await;
    let leases: i64 = client
        .query_one("SELECT COUNT(*) FROM leases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "every lease was let go");
    reference_db.drop_it().await;
    shared_db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leaves_live_runs_alone_and_writes_nothing_to_a_system_whose_read_failed_elsewhere()
 {
    let Some(database) = TestDatabase::create("elsewhere").await else {
        return;
    };
    // Slow answers (50–250 ms), so this run is still reading when the other worker fails.
    let setup = slow_org(200).await;
    let config = setup.config_with(|text| on_postgres(text, &database.url));
    let engine = crmsync::engine::open(config.clone()).await.expect("opens");
    let client = database.client().await;
    let hour = jiff::SignedDuration::from_hours(1);
    // Another worker's run is live (it holds a lease); a third's died long ago.
    engine
        .warehouse()
        .try_lease("unrelated", "live-worker", hour)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO sync_runs (started_at, status, holder) VALUES
                (now() - interval '2 hours', 'running', 'live-worker'),
                (now() - interval '2 hours', 'running', 'dead-worker');",
        )
        .await
        .unwrap();
    // A fourth worker is reading Salesforce Lead as this run starts; its read fails, and it
    // lets the stream go while this run reads the others. This run, the last reader, then
    // reconciles — and writes back to HubSpot only.
    engine
        .warehouse()
        .try_lease("stream:salesforce:Lead", "failed-worker", hour)
        .await
        .unwrap();
    let fail_meanwhile = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let others: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM leases WHERE name LIKE 'stream:%' AND holder <> 'failed-worker'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if others >= 4 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the run took no streams"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        client
            .batch_execute(
                "INSERT INTO stream_reads (system, object, status, message, run_id, at)
                    VALUES ('salesforce', 'Lead', 'failed', 'HTTP 503 from the org', 1, now());
                 DELETE FROM leases WHERE holder = 'failed-worker';",
            )
            .await
            .unwrap();
    };
    let (report, ()) = tokio::join!(engine.sync(SyncOptions::default()), fail_meanwhile);
    let report = report.unwrap();
    // Held when this run tried it: by failed-worker, or — when the lease went between the two
    // statements of the run's try — by a worker that just let it go.
    assert!(
        report.skipped.iter().any(|skipped| {
            skipped.starts_with("salesforce Lead: worker failed-worker holds it")
                || skipped
                    .starts_with("salesforce Lead: worker a worker that just let it go holds it")
        }),
        "{:?}",
        report.skipped
    );
    assert_eq!(report.status, crmsync::engine::RunStatus::Partial);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("no write-back to salesforce: the last read of salesforce Lead ended failed (HTTP 503 from the org)")),
        "{:?}",
        report.problems
    );
    assert_eq!(
        report
            .written
            .get(&crmsync::record::System::Salesforce)
            .copied()
            .unwrap_or(0),
        0
    );
    assert!(
        report
            .written
            .get(&crmsync::record::System::Hubspot)
            .copied()
            .unwrap_or(0)
            > 0,
        "{}",
        report.paragraph()
    );
    let statuses: Vec<String> = client
        .query("SELECT holder || ' ' || status FROM sync_runs WHERE holder LIKE '%-worker' ORDER BY holder", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(statuses, ["dead-worker interrupted", "live-worker running"]);
    // This run's own reads are recorded; once Lead is read in full, Salesforce is written to.
    let recorded: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM stream_reads WHERE status = 'complete'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(recorded >= 3, "{recorded}");
    let next = engine.sync(SyncOptions::default()).await.unwrap();
    assert!(
        next.written
            .get(&crmsync::record::System::Salesforce)
            .copied()
            .unwrap_or(0)
            > 0,
        "{}",
        next.paragraph()
    );
    drop(engine);
    drop(client);
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_another_worker_takes_stops_at_its_next_safe_point() {
    let Some(database) = TestDatabase::create("lost_lease").await else {
        return;
    };
    // Slow answers keep the run reading HubSpot contacts for seconds (60 pages of at least
    // 50 ms); leases live 3 s, renewed every second.
    let setup = slow_org(6_000).await;
    let config = setup.config_with(|text| {
        on_postgres(text, &database.url).replace("[warehouse]", "[warehouse]\nlease_ttl = \"3s\"")
    });
    assert_eq!(
        config.warehouse.lease_ttl,
        jiff::SignedDuration::from_secs(3)
    );
    let engine = crmsync::engine::open(config).await.expect("opens");
    let client = database.client().await;
    // Once the run reads, a stream of its is taken over (as if its lease had expired).
    let take_over = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let taken = client
                .execute(
                    "UPDATE leases SET holder = 'thief'
                     WHERE name = (SELECT min(name) FROM leases WHERE name LIKE 'stream:%')",
                    &[],
                )
                .await
                .unwrap();
            if taken == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the run took no stream"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (report, ()) = tokio::join!(engine.sync(SyncOptions::default()), take_over);
    let report = report.expect("the run ends with a report");
    assert_eq!(report.status, crmsync::engine::RunStatus::Partial);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("expired and another worker took it")),
        "{:?}",
        report.problems
    );
    // It let go of the rest, and left the stolen lease to its new holder.
    let left: Vec<String> = client
        .query("SELECT holder FROM leases", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, ["thief"]);
    drop(engine);
    drop(client);
    database.drop_it().await;
}

/// The ids of the records waiting to be reconciled, in reconcile's order.
async fn pending_ids(warehouse: &crmsync::store::Warehouse) -> Vec<String> {
    warehouse
        .pending_records(None, 10)
        .await
        .expect("pending")
        .into_iter()
        .map(|row| row.key.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_objects_without_people_are_stored_settled_deleted_and_merged_alike() {
    use crmsync::record::{Merge, System, Tombstone};
    use crmsync::store::model::{PageWrite, RecordKey, StoredRecord};

    let Some((database, _setup, warehouse)) = warehouse_on_postgres("settled", 20).await else {
        return;
    };
    let at = jiff::Timestamp::now();
    let record = |object: &str, id: &str| StoredRecord {
        key: RecordKey::new(System::Hubspot, object, id),
        modified_at: at,
        properties: "{}".into(),
        content_hash: "a".into(),
        email: None,
        stage: None,
        raw_stage: None,
        stage_rule: None,
        fields: "{}".into(),
    };
    let deals = PageWrite {
        records: ["1", "2", "3"]
            .into_iter()
            .map(|id| record("deals", id))
            .collect(),
        settled: true,
        ..PageWrite::default()
    };
    warehouse
        .store_page(1, System::Hubspot, "deals".into(), deals)
        .await
        .expect("stored");
    // Deleted, and merged away, later: still nothing for reconcile.
    let changes = PageWrite {
        tombstones: vec![Tombstone {
            id: "1".into(),
            archived_at: None,
        }],
        merges: vec![Merge {
            survivor: "2".into(),
            absorbed: vec!["3".into()],
        }],
        settled: true,
        ..PageWrite::default()
    };
    warehouse
        .store_page(1, System::Hubspot, "deals".into(), changes)
        .await
        .expect("stored");
    assert!(
        pending_ids(&warehouse).await.is_empty(),
        "settled records wait for nothing"
    );
    let client = database.client().await;
    let stored: Vec<String> = client
        .query(
            "SELECT id || ' ' || archived || ' ' || COALESCE(merged_into, '-') FROM source_records ORDER BY id",
            &[],
        )
        .await
        .expect("records")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, ["1 true -", "2 false -", "3 true 2"]);
    // Records of a people object wait for reconcile, and so do their deletions and merges
    // (records "7" and "8" start settled here only so that the change shows).
    let contacts = |records: Vec<StoredRecord>, settled: bool| PageWrite {
        records,
        settled,
        ..PageWrite::default()
    };
    for page in [
        contacts(vec![record("contacts", "7"), record("contacts", "8")], true),
        contacts(vec![record("contacts", "9")], false),
        PageWrite {
            tombstones: vec![Tombstone {
                id: "7".into(),
                archived_at: None,
            }],
            merges: vec![Merge {
                survivor: "9".into(),
                absorbed: vec!["8".into()],
            }],
            ..PageWrite::default()
        },
    ] {
        warehouse
            .store_page(1, System::Hubspot, "contacts".into(), page)
            .await
            .expect("stored");
    }
    assert_eq!(pending_ids(&warehouse).await, ["7", "8", "9"]);
    drop(client);
    drop(warehouse);
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_another_worker_stores_while_its_chunk_is_decided_stays_pending() {
    use crmsync::record::System;
    use crmsync::store::model::{Assignment, PageWrite, ReconcileCommit, RecordKey, StoredRecord};

    let Some((database, _setup, warehouse)) = warehouse_on_postgres("versions", 20).await else {
        return;
    };
    let at = jiff::Timestamp::now();
    let page = |records: Vec<(&str, &str)>| PageWrite {
        records: records
            .into_iter()
            .map(|(id, hash)| StoredRecord {
                key: RecordKey::new(System::Hubspot, "contacts", id),
                modified_at: at,
                properties: "{}".into(),
                content_hash: hash.into(),
                email: Some(format!("{id}@example.com")),
                stage: None,
                raw_stage: None,
                stage_rule: None,
                fields: "{}".into(),
            })
            .collect(),
        ..PageWrite::default()
    };
    warehouse
        .store_page(
            1,
            System::Hubspot,
            "contacts".into(),
            page(vec![("1", "a"), ("2", "a")]),
        )
        .await
        .expect("stored");
    let read = warehouse.pending_records(None, 10).await.expect("pending");
    assert_eq!(read.len(), 2);
    // Another worker stores a newer version of record 2 while this worker decides the chunk.
    warehouse
        .store_page(
            1,
            System::Hubspot,
            "contacts".into(),
            page(vec![("2", "b")]),
        )
        .await
        .expect("stored again");
    let commit = ReconcileCommit {
        assignments: read
            .iter()
            .map(|row| Assignment {
                key: row.key.clone(),
                unified_id: Some(format!("p-{}", row.key.id)),
                version: row.version,
                keep_pending: false,
            })
            .collect(),
        ..ReconcileCommit::default()
    };
    warehouse
        .commit_reconcile(1, at, commit)
        .await
        .expect("committed");
    assert_eq!(
        pending_ids(&warehouse).await,
        ["2"],
        "the newer version waits for the next reconcile"
    );
    let client = database.client().await;
    let people: Vec<String> = client
        .query(
            "SELECT id || ' ' || unified_id FROM source_records ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(people, ["1 p-1", "2 p-2"]);
    drop(client);
    drop(warehouse);
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_records_come_by_email_after_a_position_and_an_email_is_never_split() {
    use crmsync::store::model::PendingPosition;

    let Some((database, _setup, warehouse)) = warehouse_on_postgres("pending_order", 20).await
    else {
        return;
    };
    database
        .client()
        .await
        .batch_execute(
            "INSERT INTO source_records (system, object, id, modified_at, properties, content_hash, email, pending)
             VALUES ('hubspot', 'contacts', 'n1', now(), '{}', 'h', NULL, TRUE),
                    ('hubspot', 'contacts', 'n2', now(), '{}', 'h', '', TRUE),
                    ('hubspot', 'contacts', 'n3', now(), '{}', 'h', NULL, TRUE),
                    ('salesforce', 'Lead', 'a2', now(), '{}', 'h', 'a@example.com', TRUE),
                    ('hubspot', 'contacts', 'a1', now(), '{}', 'h', 'a@example.com', TRUE),
                    ('salesforce', 'Contact', 'a3', now(), '{}', 'h', 'a@example.com', TRUE),
                    ('hubspot', 'contacts', 'a4', now(), '{}', 'h', 'a@example.com', FALSE),
                    ('hubspot', 'contacts', 'b1', now(), '{}', 'h', 'b@example.com', TRUE),
                    ('hubspot', 'contacts', 'c1', now(), '{}', 'h', 'c@example.com', TRUE);",
        )
        .await
        .expect("records");
    let mut after: Option<PendingPosition> = None;
    let mut reads: Vec<Vec<String>> = Vec::new();
    loop {
        let rows = warehouse
            .pending_records(after.clone(), 2)
            .await
            .expect("pending");
        let Some(last) = rows.last() else { break };
        after = Some(PendingPosition::of(last));
        reads.push(rows.into_iter().map(|row| row.key.id).collect());
    }
    assert_eq!(
        reads,
        [
            vec!["n1", "n2"],
            vec!["n3", "a1", "a3", "a2"],
            vec!["b1", "c1"],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_founds_persons_only_from_the_number_the_warehouse_still_holds() {
    use crmsync::store::StoreError;
    use crmsync::store::model::ReconcileCommit;

    let Some((_database, _setup, warehouse)) = warehouse_on_postgres("person_numbers", 20).await
    else {
        return;
    };
    assert_eq!(warehouse.next_person_number().await.expect("a number"), 1);
    let founding = |numbers: (i64, i64)| ReconcileCommit {
        person_numbers: Some(numbers),
        ..ReconcileCommit::default()
    };
    let at = jiff::Timestamp::now();
    warehouse
        .commit_reconcile(1, at, founding((1, 4)))
        .await
        .expect("commits");
    assert_eq!(warehouse.next_person_number().await.expect("a number"), 4);
    // A second reconciler that also started from 1 is refused, and changes nothing.
    let error = warehouse
        .commit_reconcile(1, at, founding((1, 2)))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, StoreError::PersonNumbersTaken { expected: 1, .. }),
        "{error}"
    );
    assert_eq!(warehouse.next_person_number().await.expect("a number"), 4);
}
