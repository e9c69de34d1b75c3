//! `crmsync.toml`: connections, objects, mappings, warehouse, write-back, reconcile policy,
//! schedule and logging.
//!
//! Every setting has a built-in default and can be overridden by an environment variable
//! named after its path: `[hubspot] base_url` is `CRMSYNC_HUBSPOT_BASE_URL`,
//! `[salesforce.auth] method` is `CRMSYNC_SALESFORCE_AUTH_METHOD`. `CRMSYNC_CONFIG` names the
//! file. So a container needs no file edits. Secrets are only ever references
//! (`token_env`, `private_key_file`, …): a literal secret in the file is an error.
//!
//! Loading never stops at the first problem: [`load`] returns every diagnostic it found.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jiff::SignedDuration;

use crate::diagnostics::{Diagnostic, Diagnostics, Located, Location, SourceFile, did_you_mean};
use crate::record::System;
use crate::secret::SecretRef;

mod reader;

use reader::read_settings;

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "CRMSYNC_CONFIG";
/// The config file used when neither `--config` nor `CRMSYNC_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "crmsync.toml";
const ENV_PREFIX: &str = "CRMSYNC_";
/// Environment variables with the prefix that are not settings.
const NON_SETTING_VARS: [&str; 1] = ["CRMSYNC_CONFIG"];

/// Problems that stop the config from loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} — pass an existing file with --config or set CRMSYNC_CONFIG"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration has {count} problem(s):\n{report}")]
    Invalid { count: usize, report: String },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// False when the file's TOML could not be parsed and defaults stand in for it: checks
    /// that compare the config with other files would only report noise.
    pub parsed: bool,
    pub hubspot: HubspotConfig,
    pub salesforce: SalesforceConfig,
    pub mappings_dir: Located<PathBuf>,
    pub warehouse: WarehouseConfig,
    pub write_back: WriteBackConfig,
    pub reconcile: ReconcileConfig,
    pub schedule: ScheduleConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct HubspotConfig {
    pub enabled: bool,
    pub base_url: Located<String>,
    pub auth: Option<HubspotAuth>,
    pub objects: Vec<Located<String>>,
    pub rate_limit: HubspotRateLimit,
    /// Minutes between sweeps for archived records (HubSpot's search never returns them, and
    /// the archived listing can only be read whole); 0 sweeps on every run.
    pub archived_sweep_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubspotAuth {
    /// A private app's access token, sent as a bearer token.
    PrivateApp { token: SecretRef },
    /// An OAuth app: the refresh token is exchanged at `/oauth/v1/token`.
    OAuthRefreshToken {
        client_id: String,
        client_secret: SecretRef,
        refresh_token: SecretRef,
    },
}

/// HubSpot subscription tiers, which set the default API limits (HubSpot's usage guidelines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubspotTier {
    /// Free and Starter: 100 requests per 10 s, 250,000 a day.
    Free,
    /// Professional: 190 per 10 s, 625,000 a day.
    Professional,
    /// Enterprise: 190 per 10 s, 1,000,000 a day.
    Enterprise,
    /// With the API limit increase: 250 per 10 s, 1,000,000 a day.
    LimitIncrease,
}

impl HubspotTier {
    /// The names `tier` takes.
    pub const NAMES: [&'static str; 5] = [
        "free",
        "starter",
        "professional",
        "enterprise",
        "limit_increase",
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "free" | "starter" => HubspotTier::Free,
            "professional" => HubspotTier::Professional,
            "enterprise" => HubspotTier::Enterprise,
            "limit_increase" => HubspotTier::LimitIncrease,
            _ => return None,
        })
    }

    /// Requests per rolling 10 seconds.
    pub fn requests_per_10s(self) -> u32 {
        match self {
            HubspotTier::Free => 100,
            HubspotTier::Professional | HubspotTier::Enterprise => 190,
            HubspotTier::LimitIncrease => 250,
        }
    }

    /// Requests per day.
    pub fn daily_limit(self) -> u64 {
        match self {
            HubspotTier::Free => 250_000,
            HubspotTier::Professional => 625_000,
            HubspotTier::Enterprise | HubspotTier::LimitIncrease => 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubspotRateLimit {
    /// The subscription the defaults below come from.
    pub tier: HubspotTier,
    /// Requests allowed per rolling 10 seconds (default: the tier's).
    pub requests_per_10s: u32,
    /// CRM search requests per second (HubSpot: 5 per account).
    pub search_per_second: u32,
    /// The account's daily request allowance (default: the tier's).
    pub daily_limit: u64,
    /// Share of the daily allowance crmsync leaves for other integrations.
    pub daily_reserve_percent: u8,
}

#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    pub enabled: bool,
    pub login_url: Located<String>,
    pub api_version: Located<String>,
    pub auth: Option<SalesforceAuth>,
    pub objects: Vec<Located<String>>,
    /// Stop a run when less than this share of the org's daily API requests remains.
    pub api_budget_reserve_percent: u8,
    /// Requests a second at most.
    pub requests_per_second: u32,
    /// Requests in flight at once at most.
    pub max_concurrent_requests: usize,
    /// Reads of more records than this use Bulk API 2.0 query jobs.
    pub bulk_threshold: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesforceAuth {
    /// OAuth 2.0 JWT bearer flow with a connected app's certificate.
    JwtBearer {
        client_id: String,
        username: String,
        private_key: SecretRef,
    },
    RefreshToken {
        client_id: String,
        client_secret: SecretRef,
        refresh_token: SecretRef,
    },
    ClientCredentials {
        client_id: String,
        client_secret: SecretRef,
    },
}

#[derive(Debug, Clone)]
pub struct WarehouseConfig {
    pub url: Located<WarehouseUrl>,
    /// PostgreSQL password, if the server needs one.
    pub password: Option<SecretRef>,
    /// How long a worker's hold on a stream (or on reconcile and write-back) lasts without
    /// renewal, with a PostgreSQL warehouse: a crashed worker's work is free again after it.
    pub lease_ttl: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseUrl {
    Sqlite(PathBuf),
    /// A `postgres://` URL without a password.
    Postgres(String),
}

#[derive(Debug, Clone, Default)]
pub struct WriteBackConfig {
    pub hubspot: WriteTarget,
    pub salesforce: WriteTarget,
}

impl WriteBackConfig {
    pub fn target(&self, system: System) -> &WriteTarget {
        match system {
            System::Hubspot => &self.hubspot,
            System::Salesforce => &self.salesforce,
        }
    }
}

/// What crmsync writes back to one CRM.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub enabled: Located<bool>,
    /// The object whose records receive the unified stage and fields.
    pub object: Located<String>,
    pub stage: bool,
    /// Canonical fields written back (each needs a reverse mapping).
    pub fields: Vec<Located<String>>,
    /// A custom property (HubSpot) or field (Salesforce) that receives the shared stage's id.
    pub stage_field: Option<Located<String>>,
    /// A custom property or field that receives the other system's record id.
    pub link_field: Option<Located<String>>,
}

impl Default for WriteTarget {
    fn default() -> Self {
        Self {
            enabled: Located::new(false, Location::Default),
            object: Located::new(String::new(), Location::Default),
            stage: true,
            fields: Vec::new(),
            stage_field: None,
            link_field: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub stage_policy: StagePolicy,
    /// A sales-side side state (disqualified, recycled) overrides marketing's stage.
    pub sales_side_states_override: bool,
    /// Whether a unified stage may move backwards; when false regressions are reported.
    pub allow_regression: bool,
    /// Which system's value wins per canonical field; `default` for the rest.
    /// Per canonical field, located at the field's key in the file.
    pub field_sources: BTreeMap<String, Located<FieldSource>>,
    pub default_field_source: FieldSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagePolicy {
    /// The furthest stage by rank wins.
    Furthest,
    /// Marketing's system owns stages up to and including this one, sales owns the rest.
    Owners {
        marketing_owns_until: Located<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSource {
    Hubspot,
    Salesforce,
    MostRecent,
}

impl FieldSource {
    const NAMES: [&'static str; 3] = ["hubspot", "salesforce", "most_recent"];

    fn parse(name: &str) -> Option<Self> {
        match name {
            "hubspot" => Some(FieldSource::Hubspot),
            "salesforce" => Some(FieldSource::Salesforce),
            "most_recent" => Some(FieldSource::MostRecent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// When `crmsync serve` starts runs.
    pub when: crate::serve::schedule::Schedule,
    /// Address `serve` listens on for /healthz and /metrics.
    pub listen: String,
    /// `/healthz` fails when the last complete or partial run is older than this; unset, twice
    /// the longest wait between scheduled runs, plus the time a run takes.
    pub healthy_within: Option<SignedDuration>,
    /// After SIGTERM, how long a run may take to finish the batch in hand and store its
    /// checkpoint before the process exits anyway (`sync` and `serve`).
    pub stop_grace: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

impl LogFormat {
    /// The format named `auto`, `json` or `text`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "json" => Some(Self::Json),
            "text" => Some(Self::Text),
            _ => None,
        }
    }
}

/// A snapshot of the `CRMSYNC_*` environment, so tests can pass their own.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    vars: HashMap<String, String>,
}

impl EnvVars {
    /// The process environment's `CRMSYNC_*` variables.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(name, _)| name.starts_with(ENV_PREFIX))
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// The environment variable that overrides a setting: `CRMSYNC_` + its dotted path in
/// uppercase with `_` for dots.
pub fn env_var_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "_").to_uppercase())
}

/// Which file to read: `--config`, else `CRMSYNC_CONFIG`, else `./crmsync.toml` if it exists.
pub fn config_path(flag: Option<&Path>, env: &EnvVars) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env.get(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    default.exists().then_some(default)
}

/// Reads the config file (if any) and the environment. Returns the config and every problem.
pub fn load(
    path: Option<&Path>,
    env: &EnvVars,
) -> Result<(Config, Diagnostics, Option<SourceFile>), ConfigError> {
    let source = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Some(SourceFile::new(path.display().to_string(), text))
        }
        None => None,
    };
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (config, diagnostics) = parse(source.as_ref(), &base_dir, env);
    let config = Config {
        file: path.map(Path::to_path_buf),
        ..config
    };
    Ok((config, diagnostics, source))
}

/// Parses config text (or none) plus environment overrides. Relative paths resolve against
/// `base_dir` (the config file's directory).
pub fn parse(source: Option<&SourceFile>, base_dir: &Path, env: &EnvVars) -> (Config, Diagnostics) {
    let empty = SourceFile::new("<no config file>", String::new());
    let (config, mut diagnostics, asked) = read_settings(source.unwrap_or(&empty), base_dir, env);
    let (config, asked) = match config {
        Some(config) => (config, asked),
        None => {
            // The file did not parse: go on with defaults and the environment, so `check`
            // can still validate the mappings. Problems of this second reading would only
            // repeat the first's.
            let blank = SourceFile::new("<defaults>", String::new());
            let (config, _, asked) = read_settings(&blank, base_dir, env);
            let config = config.expect("an empty document always parses");
            (
                Config {
                    parsed: false,
                    ..config
                },
                asked,
            )
        }
    };
    report_unknown_env(env, &asked, &mut diagnostics);
    diagnostics.sort();
    (config, diagnostics)
}

/// Every environment variable that overrides a setting, in the order settings are read.
pub fn setting_env_vars() -> Vec<String> {
    let blank = SourceFile::new("<defaults>", String::new());
    let (_, _, mut asked) = read_settings(&blank, Path::new(""), &EnvVars::default());
    let mut seen = std::collections::HashSet::new();
    asked.retain(|name| seen.insert(name.clone()));
    asked
}

fn report_unknown_env(env: &EnvVars, asked: &[String], diagnostics: &mut Diagnostics) {
    let mut names: Vec<&String> = env.vars.keys().collect();
    names.sort();
    for name in names {
        if asked.contains(name) || NON_SETTING_VARS.contains(&name.as_str()) {
            continue;
        }
        let help = match did_you_mean(name, asked.iter().map(String::as_str)) {
            Some(suggestion) => format!("did you mean {suggestion}?"),
            None => {
                "remove it, or see the README's config reference for the variable names".to_string()
            }
        };
        diagnostics.push(
            Diagnostic::new(
                Location::env(name.clone()),
                format!("unknown setting {name}"),
            )
            .with_help(help),
        );
    }
}
