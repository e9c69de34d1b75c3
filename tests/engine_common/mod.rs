//! A sync engine against a fresh emulator, in a temporary directory with the demo's config.

#![allow(dead_code)]

use std::path::PathBuf;

use crmsync::config::EnvVars;
use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::engine::Engine;
use crmsync::salesforce::client::Body;

pub struct Setup {
    pub emulator: RunningEmulator,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Setup {
    /// An emulator over `records` people (rate limits off) and the demo's files.
    pub async fn new(records: usize) -> Setup {
        Self::with(EmulatorConfig {
            records,
            rate_limits: false,
            ..EmulatorConfig::default()
        })
        .await
    }

    pub async fn with(config: EmulatorConfig) -> Setup {
        let emulator = RunningEmulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("emulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path =
            crmsync::demo::prepare_dir(dir.path(), emulator.info()).expect("demo files");
        // Runs here follow each other within seconds: sweep HubSpot's archived records on
        // every run, not once an hour, so archives made between runs are seen at once.
        let text = std::fs::read_to_string(&config_path).unwrap();
        let text = text.replacen(
            "objects = [\"contacts\", \"deals\"]",
            "objects = [\"contacts\", \"deals\"]\narchived_sweep_minutes = 0",
            1,
        );
        assert!(text.contains("archived_sweep_minutes = 0"), "{text}");
        std::fs::write(&config_path, text).unwrap();
        Setup {
            emulator,
            dir,
            config_path,
        }
    }

    /// The configuration, with `edit` applied to the file's text first.
    pub fn config_with(&self, edit: impl Fn(String) -> String) -> crmsync::config::Config {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(text)).unwrap();
        let (config, diagnostics, _) =
            crmsync::config::load(Some(&self.config_path), &EnvVars::default()).unwrap();
        assert!(diagnostics.is_empty(), "{diagnostics}");
        config
    }

    pub async fn engine(&self) -> Engine {
        crmsync::engine::open(self.config_with(|text| text))
            .await
            .expect("engine opens")
    }

    /// Runs the `crmsync` binary with `args` and this setup's config, with `env` set:
    /// (exit code, stdout, stderr).
    pub fn crmsync(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_crmsync"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .envs(env.iter().copied())
            .output()
            .expect("crmsync runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn warehouse_path(&self) -> PathBuf {
        self.dir.path().join("crmsync.db")
    }

    /// A read-only look at the warehouse.
    pub fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.warehouse_path()).unwrap()
    }

    /// Makes the warehouse (already migrated) refuse persons, as a full disk would: a run then
    /// fails in reconcile, after extract stored its pages. Its error says "no room for persons".
    pub fn refuse_persons(&self) {
        self.sql()
            .execute_batch(
                "CREATE TRIGGER persons_refused BEFORE INSERT ON unified_leads
                 BEGIN SELECT RAISE(ABORT, 'no room for persons (a test trigger)'); END;",
            )
            .expect("the trigger");
    }
}

/// Direct access to the emulated CRMs over HTTP, as an admin's edits.
pub struct Crms {
    pub hubspot: crmsync::hubspot::client::HubspotClient,
    pub salesforce: crmsync::salesforce::client::SalesforceClient,
}

impl Setup {
    pub fn crms(&self) -> Crms {
        let config = self.config_with(|text| text);
        let settings = crmsync::http::client::ClientSettings::default();
        Crms {
            hubspot: crmsync::hubspot::connect::connect(&config.hubspot, settings).unwrap(),
            salesforce: crmsync::salesforce::connect::connect(&config.salesforce, settings)
                .unwrap(),
        }
    }

    /// One text column of every row a query returns.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let connection = self.sql();
        let mut statement = connection.prepare(sql).unwrap();
        statement
            .query_map([], |row| row.get::<_, Option<String>>(0))
            .unwrap()
            .map(|row| row.unwrap().unwrap_or_default())
            .collect()
    }

    /// The warehouse's lasting content, without times.
    pub fn warehouse_state(&self) -> Vec<Vec<String>> {
        [
            "SELECT unified_id || '|' || COALESCE(stage, '') || '|' || COALESCE(email, '') || '|' || COALESCE(hubspot_id, '')
                || '|' || COALESCE(salesforce_lead_id, '') || '|' || COALESCE(salesforce_contact_id, '') || '|' || deleted
             FROM unified_leads ORDER BY unified_id",
            "SELECT system || '|' || object || '|' || id || '|' || COALESCE(unified_id, '') || '|' || archived || '|' || pending
             FROM source_records ORDER BY system, object, id",
            "SELECT unified_id || '|' || COALESCE(from_stage, '') || '|' || to_stage || '|' || system
             FROM stage_transitions ORDER BY unified_id, transition_id",
            "SELECT absorbed || '|' || survivor FROM person_merges ORDER BY absorbed",
            "SELECT DISTINCT system || '|' || object || '|' || id || '|' || reason FROM dead_letters ORDER BY 1",
            "SELECT system || '|' || object || '|' || record_id || '|' || field || '|' || value_hash FROM write_ledger ORDER BY 1",
            "SELECT CAST(COUNT(*) AS TEXT) FROM pending_writes",
        ]
        .iter()
        .map(|sql| self.strings(sql))
        .collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.sql().query_row(sql, [], |row| row.get(0)).unwrap()
    }
}

impl Crms {
    pub async fn hubspot_contact(&self, id: &str, properties: &str) -> serde_json::Value {
        self.hubspot
            .send(
                crmsync::hubspot::client::Budget::General,
                http::Method::GET,
                &format!("/crm/v3/objects/contacts/{id}"),
                &[("properties", properties.to_string())],
                None,
                "contacts",
            )
            .await
            .unwrap()
            .body["properties"]
            .clone()
    }

    pub async fn hubspot_update(&self, id: &str, properties: serde_json::Value) {
        self.hubspot
            .send(
                crmsync::hubspot::client::Budget::General,
                http::Method::PATCH,
                &format!("/crm/v3/objects/contacts/{id}"),
                &[],
                Some(&serde_json::json!({ "properties": properties })),
                "contacts",
            )
            .await
            .unwrap();
    }

    pub async fn hubspot_archive(&self, id: &str) {
        self.hubspot
            .send(
                crmsync::hubspot::client::Budget::General,
                http::Method::DELETE,
                &format!("/crm/v3/objects/contacts/{id}"),
                &[],
                None,
                "contacts",
            )
            .await
            .unwrap();
    }

    /// Merges `absorbed` into `primary` (HubSpot's merge endpoint).
    pub async fn hubspot_merge(&self, primary: &str, absorbed: &str) {
        self.hubspot
            .send(
                crmsync::hubspot::client::Budget::General,
                http::Method::POST,
                "/crm/v3/objects/contacts/merge",
                &[],
                Some(
                    &serde_json::json!({ "primaryObjectId": primary, "objectIdToMerge": absorbed }),
                ),
                "contacts",
            )
            .await
            .unwrap();
    }

    pub async fn salesforce_query(&self, soql: &str) -> Vec<serde_json::Value> {
        let answer = self
            .salesforce
            .send(
                http::Method::GET,
                &self.salesforce.data_path("query"),
                &[("q", soql.to_string())],
                Body::None,
                "application/json",
                &[],
                "test",
            )
            .await
            .unwrap();
        answer.json().unwrap()["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn salesforce_update(&self, object: &str, id: &str, fields: serde_json::Value) {
        let path = format!("{object}/{id}");
        self.salesforce_sobjects(http::Method::PATCH, &path, object, Body::Json(&fields))
            .await;
    }

    /// Creates a Salesforce record; returns its id.
    pub async fn salesforce_create(&self, object: &str, fields: serde_json::Value) -> String {
        let created = self
            .salesforce_sobjects(http::Method::POST, object, object, Body::Json(&fields))
            .await;
        let answer: serde_json::Value = serde_json::from_slice(&created).expect("a JSON answer");
        answer["id"]
            .as_str()
            .expect("the created record's id")
            .to_string()
    }

    pub async fn salesforce_delete(&self, object: &str, id: &str) {
        let path = format!("{object}/{id}");
        self.salesforce_sobjects(http::Method::DELETE, &path, object, Body::None)
            .await;
    }

    /// Sends one request to the org's `sobjects/<path>`; returns the answer's body.
    async fn salesforce_sobjects(
        &self,
        method: http::Method,
        path: &str,
        object: &str,
        body: Body<'_>,
    ) -> Vec<u8> {
        self.salesforce
            .send(
                method,
                &self.salesforce.data_path(&format!("sobjects/{path}")),
                &[],
                body,
                "application/json",
                &[],
                object,
            )
            .await
            .unwrap()
            .body
    }
}
