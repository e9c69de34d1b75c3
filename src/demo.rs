//! `crmsync demo`: the whole product on one machine with no credentials. It starts the
//! emulator in-process over a seeded org, writes a working `crmsync.toml` (with the default
//! mappings and the emulator's test credentials as secret files) into a directory, runs a full
//! sync with write-back into `DIR/crmsync.db`, then a second sync, and reports both.

use std::path::{Path, PathBuf};

use crate::config::EnvVars;
use crate::emulator::{EmulatorConfig, RunningEmulator};
use crate::engine::{SyncOptions, SyncReport};

/// The default mapping files, as shipped.
pub const DEFAULT_MAPPINGS: [(&str, &str); 3] = [
    (
        "vocabulary.toml",
        include_str!("../mappings/vocabulary.toml"),
    ),
    ("hubspot.toml", include_str!("../mappings/hubspot.toml")),
    (
        "salesforce.toml",
        include_str!("../mappings/salesforce.toml"),
    ),
];

/// How the config a demo writes begins; a directory whose config does not is not the demo's.
const DEMO_HEADER: &str = "# Written by `crmsync demo`";

/// Problems running the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo directory {path}: {source} — pass a writable --dir")]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds files that are not an earlier demo's — the demo writes its own crmsync.toml, mappings and warehouse there; pass a new or empty --dir"
    )]
    NotADemoDir { path: PathBuf },
    #[error(transparent)]
    Emulator(#[from] crate::emulator::EmulatorError),
    #[error("the demo's own configuration is invalid (a bug, please report it):\n{0}")]
    Config(String),
    #[error(transparent)]
    Setup(#[from] crate::engine::SetupError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub warehouse: PathBuf,
    pub runs: Vec<SyncReport>,
}

/// Runs the demo with `records` people in the emulated org, in `dir`.
pub async fn run(records: usize, dir: &Path) -> Result<DemoReport, DemoError> {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            records,
            ..EmulatorConfig::default()
        },
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await?;
    let config_path = prepare_dir(dir, emulator.info())?;
    let env = EnvVars::default();
    let (config, diagnostics, _) = crate::config::load(Some(&config_path), &env)
        .map_err(|error| DemoError::Config(error.to_string()))?;
    if !diagnostics.is_empty() {
        return Err(DemoError::Config(diagnostics.to_string()));
    }
    let warehouse_path = dir.join("crmsync.db");
    let engine = crate::engine::open(config).await?;
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(engine.sync(SyncOptions::default()).await?);
    }
    drop(emulator);
    Ok(DemoReport {
        dir: dir.to_path_buf(),
        config: config_path,
        warehouse: warehouse_path,
        runs,
    })
}

impl DemoReport {
    /// One JSON object: the warehouse and, per run, its status and counts.
    pub fn to_json(&self) -> serde_json::Value {
        let runs: Vec<serde_json::Value> = self
            .runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "status": run.status.as_str(),
                    "read": per_system(&run.read),
                    "written": per_system(&run.written),
                    "dead_letters": run.dead_letters,
                    "api_calls": per_system(&run.api_calls),
                    "persons": run.warehouse.persons,
                    "reconciled": run.reconciled,
                    "stage_changes": run.stage_changes,
                    "drift": run.warehouse.drift,
                    "seconds": run.seconds,
                })
            })
            .collect();
        serde_json::json!({
            "warehouse": self.warehouse.display().to_string(),
            "config": self.config.display().to_string(),
            "runs": runs,
        })
    }

    /// A readable summary of both runs and how to look further.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        for (index, run) in self.runs.iter().enumerate() {
            let title = if index == 0 {
                "First sync (full read, write-back to both CRMs)"
            } else {
                "Second sync (incremental, right after)"
            };
            line(
                &mut out,
                format!("{title}: {} in {:.1} s", run.status.as_str(), run.seconds),
            );
            line(
                &mut out,
                format!("  records read      {}", pairs(&run.read)),
            );
            line(&mut out, format!("  new or changed    {}", run.changed));
            line(
                &mut out,
                format!(
                    "  persons reconciled {} ({} stage changes, {} merged)",
                    run.reconciled, run.stage_changes, run.merged_persons
                ),
            );
            line(
                &mut out,
                format!("  records written   {}", pairs(&run.written)),
            );
            line(
                &mut out,
                format!("  dead letters      {}", run.dead_letters),
            );
            line(
                &mut out,
                format!("  API calls         {}", pairs(&run.api_calls)),
            );
            for problem in &run.problems {
                line(&mut out, format!("  problem: {problem}"));
            }
        }
        if let Some(last) = self.runs.last() {
            line(&mut out, String::new());
            line(
                &mut out,
                format!(
                    "Persons unified: {} ({} whose own HubSpot and Salesforce stages still differ — a native field cannot say every stage; the shared stage field carries the agreed one)",
                    last.warehouse.persons, last.warehouse.drift
                ),
            );
            line(&mut out, "Stage distribution:".to_string());
            for (stage, count) in &last.warehouse.stages {
                line(&mut out, format!("  {stage:<14} {count}"));
            }
        }
        line(&mut out, String::new());
        line(&mut out, format!("Warehouse: {}", self.warehouse.display()));
        line(&mut out, format!("Config:    {}", self.config.display()));
        line(
            &mut out,
            format!(
                "Query it: sqlite3 {} \"SELECT stage, COUNT(*) FROM unified_leads GROUP BY stage\"",
                self.warehouse.display()
            ),
        );
        line(&mut out, "Tables: unified_leads, source_records, stage_transitions, sync_runs, checkpoints, dead_letters, write_ledger".to_string());
        out
    }
}

fn per_system(counts: &crate::engine::PerSystem) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for system in crate::record::System::ALL {
        map.insert(
            system.as_str().to_string(),
            serde_json::Value::from(counts.get(&system).copied().unwrap_or(0)),
        );
    }
    serde_json::Value::Object(map)
}

fn pairs(counts: &crate::engine::PerSystem) -> String {
    crate::record::System::ALL
        .iter()
        .map(|system| format!("{system} {}", counts.get(system).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Files {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a config for the emulator `info` describes, the default mappings and the secret
/// files into `dir`, and removes an earlier demo's warehouse (the emulator starts from its
/// seed every time, so old checkpoints would not fit it). Returns the config's path.
pub fn prepare_dir(dir: &Path, info: &crate::emulator::EmulatorInfo) -> Result<PathBuf, DemoError> {
    let files = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Files { path, source }
    };
    // Only a new or empty directory, or an earlier demo's, is written over.
    let config_path = dir.join("crmsync.toml");
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    let earlier_demo =
        std::fs::read_to_string(&config_path).is_ok_and(|text| text.starts_with(DEMO_HEADER));
    if has_files && !earlier_demo {
        return Err(DemoError::NotADemoDir {
            path: dir.to_path_buf(),
        });
    }
    for sub in ["mappings", "secrets"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(files(&dir.join(sub)))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let old = dir.join(format!("crmsync.db{suffix}"));
        if old.exists() {
            std::fs::remove_file(&old).map_err(files(&old))?;
        }
    }
    for (name, text) in DEFAULT_MAPPINGS {
        write(&dir.join("mappings").join(name), text)?;
    }
    write(&dir.join("secrets/hubspot-token"), &info.hubspot_token)?;
    let key = std::fs::read_to_string(&info.salesforce_private_key_file)
        .map_err(files(&info.salesforce_private_key_file))?;
    write(&dir.join("secrets/salesforce.pem"), &key)?;
    let config = format!(
        r#"{DEMO_HEADER}: the emulator's URLs and test credentials (as files).
[hubspot]
enabled = true
base_url = "{hubspot}"
objects = ["contacts", "deals"]

[hubspot.auth]
method = "private_app"
token_file = "secrets/hubspot-token"

[salesforce]
enabled = true
login_url = "{salesforce}"
objects = ["Lead", "Contact", "Opportunity"]

[salesforce.auth]
method = "jwt_bearer"
client_id = "{client_id}"
username = "{username}"
private_key_file = "secrets/salesforce.pem"

[mappings]
dir = "mappings"

[warehouse]
url = "sqlite://crmsync.db"

[write_back.hubspot]
enabled = true
object = "contacts"
stage = true
stage_field = "crmsync_stage"
link_field = "crmsync_salesforce_id"
fields = ["company", "title"]

[write_back.salesforce]
enabled = true
object = "Lead"
stage = true
stage_field = "CRMSync_Stage__c"
link_field = "HubSpot_Contact_Id__c"
fields = ["company", "title"]

[reconcile]
stage_policy = "furthest"
sales_side_states_override = true
allow_regression = false

[reconcile.field_sources]
default = "most_recent"
company = "salesforce"
title = "salesforce"
"#,
        hubspot = info.hubspot_base_url,
        salesforce = info.salesforce_login_url,
        client_id = info.salesforce_client_id,
        username = info.salesforce_username,
    );
    write(&config_path, &config)?;
    Ok(config_path)
}
