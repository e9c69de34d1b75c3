//! Reading one config document: each setting from its `CRMSYNC_*` variable or the file (in
//! that order), validated, with every problem recorded at its location.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::SignedDuration;

use crate::serve::schedule::{Cron, Schedule};

use super::{
    Config, EnvVars, FieldSource, HubspotAuth, HubspotConfig, HubspotRateLimit, HubspotTier,
    LogConfig, LogFormat, ReconcileConfig, SalesforceAuth, SalesforceConfig, ScheduleConfig,
    StagePolicy, WarehouseConfig, WarehouseUrl, WriteBackConfig, WriteTarget, env_var_name,
};
use crate::diagnostics::{Diagnostics, Located, Location, SourceFile, did_you_mean, list};
use crate::secret::{
    LITERAL_SECRET_KEYS, SecretRef, looks_like_secret, redacted, url_has_password,
    url_without_password,
};
use crate::tomldoc::{Node, Table, read_document};

/// Reads `source` with environment overrides: the config (unless the TOML did not parse), the
/// problems found, and every environment variable name a setting answers to.
pub(super) fn read_settings(
    source: &SourceFile,
    base_dir: &Path,
    env: &EnvVars,
) -> (Option<Config>, Diagnostics, Vec<String>) {
    let mut diagnostics = Diagnostics::default();
    let settings = Settings {
        env,
        asked: RefCell::new(Vec::new()),
        found: RefCell::new(Diagnostics::default()),
        base_dir: base_dir.to_path_buf(),
        require_auth: Cell::new(true),
    };
    let config = read_document(source, &mut diagnostics, |root| settings.read_config(root));
    diagnostics.extend(settings.found.into_inner());
    (config, diagnostics, settings.asked.into_inner())
}

/// Where one setting's value was found.
enum SettingSource<'r, 'i, 'e> {
    Env { variable: String, value: &'e str },
    File(Node<'r, 'i>),
    Unset,
}

/// One reading of the config: the file's tables plus environment overrides.
struct Settings<'e> {
    env: &'e EnvVars,
    /// Every environment variable name a setting answers to (for unknown-variable checks).
    asked: RefCell<Vec<String>>,
    found: RefCell<Diagnostics>,
    base_dir: PathBuf,
    /// Whether the system whose auth is being read is enabled (a disabled one needs no secrets).
    require_auth: Cell<bool>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'e> Settings<'e> {
    fn report(&self, location: Location, message: impl Into<String>, help: impl Into<String>) {
        self.found.borrow_mut().error(location, message, help);
    }

    /// Where a setting's value comes from: its environment variable when set, else the file.
    /// Registers the variable name and marks the key as known either way.
    fn source<'r, 'i>(
        &self,
        table: &Table<'r, 'i>,
        key: &'static str,
    ) -> SettingSource<'r, 'i, 'e> {
        let variable = env_var_name(&join(table.path(), key));
        self.asked.borrow_mut().push(variable.clone());
        let from_file = table.get(key);
        match self.env.get(&variable) {
            Some(value) => SettingSource::Env { variable, value },
            None => from_file.map_or(SettingSource::Unset, SettingSource::File),
        }
    }

    /// A string setting.
    fn string(&self, table: &Table<'_, '_>, key: &'static str) -> Option<Located<String>> {
        match self.source(table, key) {
            SettingSource::Env { variable, value } => {
                Some(Located::new(value.to_string(), Location::env(variable)))
            }
            SettingSource::File(node) => node.as_str(),
            SettingSource::Unset => None,
        }
    }

    fn string_or(
        &self,
        table: &Table<'_, '_>,
        key: &'static str,
        default: &str,
    ) -> Located<String> {
        self.string(table, key)
            .unwrap_or_else(|| Located::new(default.to_string(), Location::Default))
    }

    fn boolean(&self, table: &Table<'_, '_>, key: &'static str, default: bool) -> bool {
        self.located_boolean(table, key, default).value
    }

    /// A boolean with where it was set (for problems about the setting's consequences).
    fn located_boolean(
        &self,
        table: &Table<'_, '_>,
        key: &'static str,
        default: bool,
    ) -> Located<bool> {
        let unset = Located::new(default, Location::Default);
        match self.source(table, key) {
            SettingSource::Env { variable, value } => {
                let flag = match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => {
                        self.report(
                            Location::env(variable),
                            format!("expected true or false, found {value:?}"),
                            "set it to true or false",
                        );
                        return unset;
                    }
                };
                Located::new(flag, Location::env(variable))
            }
            SettingSource::File(node) => node.as_bool().unwrap_or(unset),
            SettingSource::Unset => unset,
        }
    }

    fn integer(&self, table: &Table<'_, '_>, key: &'static str) -> Option<Located<i64>> {
        match self.source(table, key) {
            SettingSource::Env { variable, value } => match value.trim().parse::<i64>() {
                Ok(number) => Some(Located::new(number, Location::env(variable))),
                Err(_) => {
                    self.report(
                        Location::env(variable),
                        format!("expected an integer, found {value:?}"),
                        "set it to a whole number",
                    );
                    None
                }
            },
            SettingSource::File(node) => node.as_integer(),
            SettingSource::Unset => None,
        }
    }

    /// An integer within `range`, else the default.
    fn bounded(
        &self,
        table: &Table<'_, '_>,
        key: &'static str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match self.integer(table, key) {
            Some(number) if range.contains(&number.value) => number.value,
            Some(number) => {
                self.report(
                    number.location,
                    format!(
                        "`{}` must be between {} and {}, found {}",
                        join(table.path(), key),
                        range.start(),
                        range.end(),
                        number.value
                    ),
                    format!("use a value from {} to {}", range.start(), range.end()),
                );
                default
            }
            None => default,
        }
    }

    /// A list of strings: an array in the file, comma-separated in the environment.
    fn list(
        &self,
        table: &Table<'_, '_>,
        key: &'static str,
        default: &[&str],
    ) -> Vec<Located<String>> {
        match self.source(table, key) {
            SettingSource::Env { variable, value } => value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Located::new(item.to_string(), Location::env(variable.clone())))
                .collect(),
            SettingSource::File(node) => node
                .as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(Node::as_str)
                .collect(),
            SettingSource::Unset => default
                .iter()
                .map(|item| Located::new((*item).to_string(), Location::Default))
                .collect(),
        }
    }

    /// A secret reference: `<name>_env` or `<name>_file`. A literal `<name>` is reported by
    /// [`Settings::reject_literal_secrets`].
    fn secret(
        &self,
        table: &Table<'_, '_>,
        name: &'static str,
        env_key: &'static str,
        file_key: &'static str,
        example_env: &str,
    ) -> Option<SecretRef> {
        let from_env = self.string(table, env_key);
        let from_file = self.string(table, file_key);
        match (from_env, from_file) {
            (Some(env), None) => {
                let valid = !env.value.is_empty()
                    && env
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !env.value.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    // The value may be the secret itself, pasted here by mistake: never show it.
                    self.report(
                        env.location,
                        format!(
                            "`{env_key}` must name an environment variable, found a value that is not a variable name ({})",
                            redacted(&env.value)
                        ),
                        format!("write the variable's name, e.g. {env_key} = \"{example_env}\", and put the secret in that variable"),
                    );
                    return None;
                }
                Some(SecretRef::Env(env.value))
            }
            (None, Some(file)) => Some(SecretRef::File(self.base_dir.join(file.value))),
            (Some(env), Some(_)) => {
                self.report(
                    env.location,
                    format!("both `{env_key}` and `{file_key}` are set for {name}"),
                    "keep one: an environment variable or a file",
                );
                None
            }
            (None, None) => {
                let literal_written = LITERAL_SECRET_KEYS.iter().any(|key| table.contains(key));
                if !self.require_auth.get() || literal_written {
                    return None;
                }
                self.report(
                    table.location(),
                    format!(
                        "[{}] needs the {name}: set `{env_key}` or `{file_key}`",
                        table.path()
                    ),
                    format!(
                        "e.g. {env_key} = \"{example_env}\" and export {example_env} before running"
                    ),
                );
                None
            }
        }
    }

    /// Marks the keys of every auth method as known, and reports those written in the file that
    /// the chosen `method` does not use (they would be silently ignored otherwise).
    fn other_method_keys(
        &self,
        auth: &Table<'_, '_>,
        method: &str,
        methods: &[(&str, &[&'static str])],
    ) {
        let known_method = methods.iter().any(|(name, _)| *name == method);
        let used: Vec<&str> = methods
            .iter()
            .filter(|(name, _)| *name == method)
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        let mut all_keys: Vec<&'static str> = methods
            .iter()
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        all_keys.sort_unstable();
        all_keys.dedup();
        for key in all_keys {
            if used.contains(&key) {
                continue;
            }
            // Registers the key and its variable; the value is not used.
            let value = self.string(auth, key);
            // An unknown method is reported on its own; its keys cannot be judged.
            let written_in_file = value
                .filter(|value| known_method && matches!(value.location, Location::File { .. }));
            if let Some(value) = written_in_file {
                let owners: Vec<&str> = methods
                    .iter()
                    .filter(|(_, keys)| keys.contains(&key))
                    .map(|(name, _)| *name)
                    .collect();
                self.report(
                    value.location,
                    format!("`{key}` is not used by auth method {method:?}"),
                    format!(
                        "remove it, or set method to one that uses it: {}",
                        list(owners.iter().map(|o| format!("{o:?}")))
                    ),
                );
            }
        }
    }

    /// Reports secret values written literally in `table`: known secret keys, and any string
    /// that looks like a credential. The value is never shown.
    fn reject_literal_secrets(&self, table: &Table<'_, '_>) {
        for key in LITERAL_SECRET_KEYS {
            // Only keys that are present are asked for, so they never appear among the
            // suggestions for an unknown key.
            if !table.contains(key) {
                continue;
            }
            if let Some(node) = table.get(key) {
                self.report(
                    node.location(),
                    format!("literal secret `{key}` in the config file (value {})", node.peek_str().map_or_else(|| "hidden".to_string(), redacted)),
                    format!("secrets never go in files: put it in an environment variable and write {key}_env = \"NAME\" (or {key}_file = \"/run/secrets/...\")"),
                );
            }
        }
    }

    fn read_config(&self, root: &Table<'_, '_>) -> Config {
        let hubspot = self.read_hubspot(root);
        let salesforce = self.read_salesforce(root);
        let mappings_dir = {
            let table = root.table("mappings");
            let dir = self.string_or(&table, "dir", "mappings");
            table.finish();
            dir.map(|dir| self.base_dir.join(dir))
        };
        let warehouse = self.read_warehouse(root);
        let write_back = self.read_write_back(root);
        let reconcile = self.read_reconcile(root);
        let schedule = self.read_schedule(root);
        let log = self.read_log(root);
        self.scan_for_secrets(root);
        Config {
            file: None,
            parsed: true,
            hubspot,
            salesforce,
            mappings_dir,
            warehouse,
            write_back,
            reconcile,
            schedule,
            log,
        }
    }

    /// Reports any string anywhere in the document that looks like a credential.
    fn scan_for_secrets(&self, root: &Table<'_, '_>) {
        fn walk(settings: &Settings<'_>, node: &crate::tomldoc::Node<'_, '_>) {
            if let Some(text) = node.peek_str() {
                if looks_like_secret(text) {
                    settings.report(
                        node.location(),
                        format!("`{}` holds what looks like a secret (value {})", node.path(), redacted(text)),
                        "secrets never go in files: reference an environment variable (`*_env`) or a file (`*_file`) instead",
                    );
                }
                return;
            }
            if node.is_table() {
                if let Some(table) = node.as_table() {
                    for (key, child) in table.entries() {
                        // Keys named like secrets are reported with a better message.
                        if !LITERAL_SECRET_KEYS.contains(&key.value.as_str()) {
                            walk(settings, &child);
                        }
                    }
                }
            } else if let Some(items) = node.as_array_quiet() {
                for item in items {
                    walk(settings, &item);
                }
            }
        }
        for (_, node) in root.entries_quiet() {
            walk(self, &node);
        }
    }

    fn read_url(&self, table: &Table<'_, '_>, key: &'static str, default: &str) -> Located<String> {
        let url = self.string_or(table, key, default);
        let valid = url
            .value
            .strip_prefix("https://")
            .or_else(|| url.value.strip_prefix("http://"))
            .is_some_and(|rest| {
                !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
            });
        if !valid {
            self.report(
                url.location.clone(),
                format!(
                    "`{}` must be an http(s) URL, found {:?}",
                    join(table.path(), key),
                    url.value
                ),
                format!("e.g. {key} = \"{default}\""),
            );
        }
        let value = url.value.trim_end_matches('/').to_string();
        Located::new(value, url.location)
    }

    fn read_objects(&self, table: &Table<'_, '_>, defaults: &[&str]) -> Vec<Located<String>> {
        let objects = self.list(table, "objects", defaults);
        if objects.is_empty() {
            self.report(
                table.location(),
                format!("[{}] syncs no objects", table.path()),
                format!(
                    "list them, e.g. objects = [{}], or set enabled = false",
                    list(defaults.iter().map(|d| format!("\"{d}\"")))
                ),
            );
        }
        objects
    }

    fn read_hubspot(&self, root: &Table<'_, '_>) -> HubspotConfig {
        let table = root.table("hubspot");
        let enabled = self.boolean(&table, "enabled", true);
        let base_url = self.read_url(&table, "base_url", "https://api.hubapi.com");
        let objects = self.read_objects(&table, &["contacts", "deals"]);
        let archived_sweep_minutes =
            self.bounded(&table, "archived_sweep_minutes", 0..=10_080, 60) as u32;
        self.require_auth.set(enabled);
        let auth = {
            let auth = &table.table("auth");
            let method = self.string_or(auth, "method", "private_app");
            self.reject_literal_secrets(auth);
            let result = match method.value.as_str() {
                "private_app" => {
                    let token = self.secret(
                        auth,
                        "private app token",
                        "token_env",
                        "token_file",
                        "HUBSPOT_TOKEN",
                    );
                    token.map(|token| HubspotAuth::PrivateApp { token })
                }
                "oauth" => {
                    let client_id = self.string(auth, "client_id");
                    let client_secret = self.secret(
                        auth,
                        "OAuth client secret",
                        "client_secret_env",
                        "client_secret_file",
                        "HUBSPOT_CLIENT_SECRET",
                    );
                    let refresh_token = self.secret(
                        auth,
                        "OAuth refresh token",
                        "refresh_token_env",
                        "refresh_token_file",
                        "HUBSPOT_REFRESH_TOKEN",
                    );
                    if client_id.is_none() && enabled {
                        self.report(
                            auth.location(),
                            "[hubspot.auth] method \"oauth\" needs `client_id`",
                            "copy the app's client id from its Auth settings",
                        );
                    }
                    match (client_id, client_secret, refresh_token) {
                        (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                            Some(HubspotAuth::OAuthRefreshToken {
                                client_id: client_id.value,
                                client_secret,
                                refresh_token,
                            })
                        }
                        _ => None,
                    }
                }
                other => {
                    self.report(
                        method.location.clone(),
                        format!("unknown HubSpot auth method {other:?}"),
                        suggest(other, &["private_app", "oauth"]),
                    );
                    None
                }
            };
            self.other_method_keys(
                auth,
                &method.value,
                &[
                    ("private_app", &["token_env", "token_file"]),
                    (
                        "oauth",
                        &[
                            "client_id",
                            "client_secret_env",
                            "client_secret_file",
                            "refresh_token_env",
                            "refresh_token_file",
                        ],
                    ),
                ],
            );
            auth.finish();
            result
        };
        let rate = &table.table("rate_limit");
        let rate_limit = {
            let tier_name = self.string_or(rate, "tier", "free");
            let tier = HubspotTier::from_name(&tier_name.value).unwrap_or_else(|| {
                self.report(
                    tier_name.location.clone(),
                    format!("unknown HubSpot tier {:?}", tier_name.value),
                    suggest(&tier_name.value, &HubspotTier::NAMES),
                );
                HubspotTier::Free
            });
            let limit = HubspotRateLimit {
                tier,
                requests_per_10s: self.bounded(
                    rate,
                    "requests_per_10s",
                    1..=100_000,
                    i64::from(tier.requests_per_10s()),
                ) as u32,
                search_per_second: self.bounded(rate, "search_per_second", 1..=100, 5) as u32,
                daily_limit: self
                    .integer(rate, "daily_limit")
                    .and_then(|n| {
                        if n.value <= 0 {
                            self.report(
                                n.location,
                                "`hubspot.rate_limit.daily_limit` must be positive",
                                "set the account's daily allowance, or remove the key to use the tier's",
                            );
                            None
                        } else {
                            Some(n.value as u64)
                        }
                    })
                    .unwrap_or(tier.daily_limit()),
                daily_reserve_percent: self.bounded(rate, "daily_reserve_percent", 0..=90, 10)
                    as u8,
            };
            rate.finish();
            limit
        };
        table.finish();
        HubspotConfig {
            enabled,
            base_url,
            auth,
            objects,
            rate_limit,
            archived_sweep_minutes,
        }
    }

    fn read_salesforce(&self, root: &Table<'_, '_>) -> SalesforceConfig {
        let table = root.table("salesforce");
        let enabled = self.boolean(&table, "enabled", true);
        let login_url = self.read_url(&table, "login_url", "https://login.salesforce.com");
        let api_version = self.string_or(&table, "api_version", "62.0");
        let version_ok = api_version
            .value
            .split_once('.')
            .is_some_and(|(major, minor)| {
                major.parse::<u32>().is_ok_and(|m| m >= 31) && minor == "0"
            });
        if !version_ok {
            self.report(
                api_version.location.clone(),
                format!(
                    "`salesforce.api_version` must look like \"62.0\", found {:?}",
                    api_version.value
                ),
                "use a REST API version such as \"62.0\" (31.0 or later)",
            );
        }
        let objects = self.read_objects(&table, &["Lead", "Contact", "Opportunity"]);
        let api_budget_reserve_percent =
            self.bounded(&table, "api_budget_reserve_percent", 0..=90, 10) as u8;
        let requests_per_second = self.bounded(&table, "requests_per_second", 1..=1_000, 25) as u32;
        let max_concurrent_requests =
            self.bounded(&table, "max_concurrent_requests", 1..=25, 4) as usize;
        let bulk_threshold = self.bounded(&table, "bulk_threshold", 0..=i64::MAX, 50_000) as u64;
        self.require_auth.set(enabled);
        let auth = {
            let auth = table.table("auth");
            let method = self.string_or(&auth, "method", "jwt_bearer");
            self.reject_literal_secrets(&auth);
            let client_id = self.string(&auth, "client_id");
            let need_client_id = || {
                if client_id.is_none() && enabled {
                    self.report(
                        auth.location(),
                        format!(
                            "[salesforce.auth] method {:?} needs `client_id`",
                            method.value
                        ),
                        "copy the connected app's consumer key",
                    );
                }
            };
            let result = match method.value.as_str() {
                "jwt_bearer" => {
                    need_client_id();
                    let username = self.string(&auth, "username");
                    if username.is_none() && enabled {
                        self.report(
                            auth.location(),
                            "[salesforce.auth] method \"jwt_bearer\" needs `username`",
                            "the Salesforce username the integration acts as",
                        );
                    }
                    let private_key = self.secret(
                        &auth,
                        "private key",
                        "private_key_env",
                        "private_key_file",
                        "SALESFORCE_PRIVATE_KEY",
                    );
                    match (&client_id, username, private_key) {
                        (Some(client_id), Some(username), Some(private_key)) => {
                            Some(SalesforceAuth::JwtBearer {
                                client_id: client_id.value.clone(),
                                username: username.value,
                                private_key,
                            })
                        }
                        _ => None,
                    }
                }
                "refresh_token" => {
                    need_client_id();
                    let client_secret = self.secret(
                        &auth,
                        "client secret",
                        "client_secret_env",
                        "client_secret_file",
                        "SALESFORCE_CLIENT_SECRET",
                    );
                    let refresh_token = self.secret(
                        &auth,
                        "refresh token",
                        "refresh_token_env",
                        "refresh_token_file",
                        "SALESFORCE_REFRESH_TOKEN",
                    );
                    match (&client_id, client_secret, refresh_token) {
                        (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                            Some(SalesforceAuth::RefreshToken {
                                client_id: client_id.value.clone(),
                                client_secret,
                                refresh_token,
                            })
                        }
                        _ => None,
                    }
                }
                "client_credentials" => {
                    need_client_id();
                    let client_secret = self.secret(
                        &auth,
                        "client secret",
                        "client_secret_env",
                        "client_secret_file",
                        "SALESFORCE_CLIENT_SECRET",
                    );
                    match (&client_id, client_secret) {
                        (Some(client_id), Some(client_secret)) => {
                            Some(SalesforceAuth::ClientCredentials {
                                client_id: client_id.value.clone(),
                                client_secret,
                            })
                        }
                        _ => None,
                    }
                }
                other => {
                    self.report(
                        method.location.clone(),
                        format!("unknown Salesforce auth method {other:?}"),
                        suggest(
                            other,
                            &["jwt_bearer", "refresh_token", "client_credentials"],
                        ),
                    );
                    None
                }
            };
            self.other_method_keys(
                &auth,
                &method.value,
                &[
                    (
                        "jwt_bearer",
                        &[
                            "client_id",
                            "username",
                            "private_key_env",
                            "private_key_file",
                        ],
                    ),
                    (
                        "refresh_token",
                        &[
                            "client_id",
                            "client_secret_env",
                            "client_secret_file",
                            "refresh_token_env",
                            "refresh_token_file",
                        ],
                    ),
                    (
                        "client_credentials",
                        &["client_id", "client_secret_env", "client_secret_file"],
                    ),
                ],
            );
            auth.finish();
            result
        };
        table.finish();
        SalesforceConfig {
            enabled,
            login_url,
            api_version,
            auth,
            objects,
            api_budget_reserve_percent,
            requests_per_second,
            max_concurrent_requests,
            bulk_threshold,
        }
    }

    fn read_warehouse(&self, root: &Table<'_, '_>) -> WarehouseConfig {
        let table = root.table("warehouse");
        let url = self.string_or(&table, "url", "sqlite://crmsync.db");
        self.reject_literal_secrets(&table);
        // A password is optional (trust or certificate authentication needs none).
        self.require_auth.set(false);
        let password = self.secret(
            &table,
            "warehouse password",
            "password_env",
            "password_file",
            "CRMSYNC_PG_PASSWORD",
        );
        let lease_ttl = self.string_or(&table, "lease_ttl", "60s");
        table.finish();
        let lease_ttl = match lease_ttl
            .value
            .parse::<SignedDuration>()
            .ok()
            .filter(|ttl| *ttl >= SignedDuration::from_secs(3))
        {
            Some(ttl) => ttl,
            None => {
                self.report(
                    lease_ttl.location.clone(),
                    format!(
                        "`warehouse.lease_ttl` must be a duration of at least 3 seconds, found {:?}",
                        lease_ttl.value
                    ),
                    "e.g. lease_ttl = \"60s\"",
                );
                SignedDuration::from_secs(60)
            }
        };
        let parsed = if let Some(path) = url.value.strip_prefix("sqlite://") {
            if path.is_empty() {
                self.report(
                    url.location.clone(),
                    "`warehouse.url` names no SQLite file",
                    "e.g. url = \"sqlite://crmsync.db\"",
                );
            }
            WarehouseUrl::Sqlite(self.base_dir.join(path))
        } else if url.value.starts_with("postgres://") || url.value.starts_with("postgresql://") {
            if url_has_password(&url.value) {
                self.report(
                    url.location.clone(),
                    format!("`warehouse.url` contains a password (value {})", redacted(&url.value)),
                    "remove the password from the URL and set password_env = \"NAME\" (or password_file)",
                );
            }
            // Keep the URL without its password, so nothing downstream can print it; relative
            // TLS files (sslrootcert, sslcert, sslkey) are taken from the configuration's
            // directory.
            let kept = crate::store::postgres_tls::with_file_paths_resolved(
                &url_without_password(&url.value),
                &self.base_dir,
            );
            let tls = crate::store::postgres_tls::TlsSettings::from_url(&kept)
                .and_then(|(tls, _)| tls.check_files());
            if let Err(error) = tls {
                self.report(
                    url.location.clone(),
                    format!("`warehouse.url`: {error}"),
                    "see the README's PostgreSQL section for sslmode, sslrootcert, sslcert and sslkey",
                );
            }
            WarehouseUrl::Postgres(kept)
        } else {
            self.report(
                url.location.clone(),
                format!("unsupported warehouse URL {:?}", url.value),
                "use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
            );
            WarehouseUrl::Sqlite(self.base_dir.join("crmsync.db"))
        };
        WarehouseConfig {
            url: Located::new(parsed, url.location),
            password,
            lease_ttl,
        }
    }

    fn read_write_back(&self, root: &Table<'_, '_>) -> WriteBackConfig {
        let table = root.table("write_back");
        let read_target = |key: &'static str, default_object: &str| -> WriteTarget {
            let target = table.table(key);
            let enabled = self.located_boolean(&target, "enabled", false);
            let object = self.string_or(&target, "object", default_object);
            let stage = self.boolean(&target, "stage", true);
            let fields = self.list(&target, "fields", &[]);
            let stage_field = self.string(&target, "stage_field");
            let link_field = self.string(&target, "link_field");
            target.finish();
            WriteTarget {
                enabled,
                object,
                stage,
                fields,
                stage_field,
                link_field,
            }
        };
        let hubspot = read_target("hubspot", "contacts");
        let salesforce = read_target("salesforce", "Lead");
        table.finish();
        WriteBackConfig {
            hubspot,
            salesforce,
        }
    }

    fn read_reconcile(&self, root: &Table<'_, '_>) -> ReconcileConfig {
        let table = root.table("reconcile");
        let policy = self.string_or(&table, "stage_policy", "furthest");
        let owner_boundary = self.string(&table, "marketing_owns_until");
        let stage_policy = match policy.value.as_str() {
            "furthest" => {
                if let Some(boundary) = &owner_boundary {
                    self.report(
                        boundary.location.clone(),
                        "`marketing_owns_until` only applies to stage_policy = \"owners\"",
                        "remove it or set stage_policy = \"owners\"",
                    );
                }
                StagePolicy::Furthest
            }
            "owners" => {
                match owner_boundary {
                    Some(boundary) => StagePolicy::Owners {
                        marketing_owns_until: boundary,
                    },
                    None => {
                        self.report(policy.location.clone(), "stage_policy \"owners\" needs `marketing_owns_until`", "name the last stage marketing owns, e.g. marketing_owns_until = \"mql\"");
                        StagePolicy::Furthest
                    }
                }
            }
            other => {
                self.report(
                    policy.location.clone(),
                    format!("unknown stage_policy {other:?}"),
                    suggest(other, &["furthest", "owners"]),
                );
                StagePolicy::Furthest
            }
        };
        let sales_side_states_override = self.boolean(&table, "sales_side_states_override", true);
        let allow_regression = self.boolean(&table, "allow_regression", false);
        let mut field_sources = BTreeMap::new();
        let mut default_field_source = FieldSource::MostRecent;
        {
            let sources = table.table("field_sources");
            for (field, node) in sources.entries() {
                let Some(name) = node.as_str() else { continue };
                let Some(source) = FieldSource::parse(&name.value) else {
                    self.report(
                        name.location,
                        format!(
                            "unknown field source {:?} for `{}`",
                            name.value, field.value
                        ),
                        suggest(&name.value, &FieldSource::NAMES),
                    );
                    continue;
                };
                if field.value == "default" {
                    default_field_source = source;
                } else {
                    field_sources.insert(field.value, Located::new(source, field.location));
                }
            }
        }
        self.asked
            .borrow_mut()
            .push("CRMSYNC_RECONCILE_FIELD_SOURCES_DEFAULT".into());
        if let Some(value) = self.env.get("CRMSYNC_RECONCILE_FIELD_SOURCES_DEFAULT") {
            match FieldSource::parse(value) {
                Some(source) => default_field_source = source,
                None => self.report(
                    Location::env("CRMSYNC_RECONCILE_FIELD_SOURCES_DEFAULT"),
                    format!("unknown field source {value:?}"),
                    suggest(value, &FieldSource::NAMES),
                ),
            }
        }
        table.finish();
        ReconcileConfig {
            stage_policy,
            sales_side_states_override,
            allow_regression,
            field_sources,
            default_field_source,
        }
    }

    fn read_schedule(&self, root: &Table<'_, '_>) -> ScheduleConfig {
        let table = root.table("schedule");
        let every = self.string(&table, "every");
        let cron = self.string(&table, "cron");
        let listen = self.string_or(&table, "listen", "0.0.0.0:9464");
        let healthy_within = self.string(&table, "healthy_within");
        let stop_grace = self.string_or(&table, "stop_grace", "25s");
        table.finish();
        let default_interval = Schedule::Every(SignedDuration::from_mins(15));
        let interval = every.as_ref().map(|every| {
            match every
                .value
                .parse::<SignedDuration>()
                .ok()
                .filter(|d| *d >= SignedDuration::from_secs(1))
            {
                Some(duration) => Schedule::Every(duration),
                None => {
                    self.report(
                        every.location.clone(),
                        format!(
                            "`schedule.every` must be a duration of at least 1 second, found {:?}",
                            every.value
                        ),
                        "e.g. every = \"15m\", \"1h\" or \"1h 30m\"",
                    );
                    default_interval.clone()
                }
            }
        });
        let cron_schedule = cron.as_ref().map(|cron| match cron.value.parse::<Cron>() {
            Ok(parsed) => Schedule::Cron(parsed),
            Err(error) => {
                self.report(
                    cron.location.clone(),
                    format!("`schedule.cron` {:?}: {error}", cron.value),
                    "e.g. cron = \"*/15 * * * *\" (every 15 minutes, UTC) or \"0 6 * * MON-FRI\"",
                );
                default_interval.clone()
            }
        });
        let when = match (interval, cron_schedule) {
            (Some(_), Some(cron_schedule)) => {
                if let Some(cron) = &cron {
                    self.report(
                        cron.location.clone(),
                        "`schedule.cron` and `schedule.every` are both set".to_string(),
                        "keep one: cron for times of day, every for a fixed interval",
                    );
                }
                cron_schedule
            }
            (None, Some(cron_schedule)) => cron_schedule,
            (Some(interval), None) => interval,
            (None, None) => default_interval,
        };
        if listen.value.parse::<std::net::SocketAddr>().is_err() {
            self.report(
                listen.location.clone(),
                format!(
                    "`schedule.listen` must be an address like 0.0.0.0:9464, found {:?}",
                    listen.value
                ),
                "write IP:PORT",
            );
        }
        let duration = |setting: &Located<String>, key: &str, minimum: SignedDuration| {
            let parsed = setting
                .value
                .parse::<SignedDuration>()
                .ok()
                .filter(|d| *d >= minimum);
            if parsed.is_none() {
                self.report(
                    setting.location.clone(),
                    format!(
                        "`schedule.{key}` must be a duration of at least {minimum:#}, found {:?}",
                        setting.value
                    ),
                    "e.g. \"30s\", \"2h\" or \"1h 30m\"",
                );
            }
            parsed
        };
        let healthy_within = healthy_within
            .as_ref()
            .and_then(|setting| duration(setting, "healthy_within", SignedDuration::from_secs(1)));
        let stop_grace = duration(&stop_grace, "stop_grace", SignedDuration::ZERO)
            .unwrap_or(SignedDuration::from_secs(25));
        ScheduleConfig {
            when,
            listen: listen.value,
            healthy_within,
            stop_grace,
        }
    }

    fn read_log(&self, root: &Table<'_, '_>) -> LogConfig {
        let table = root.table("log");
        let format = self.string_or(&table, "format", "auto");
        let level = self.string_or(&table, "level", "info");
        table.finish();
        let format = match LogFormat::from_name(&format.value) {
            Some(format) => format,
            None => {
                let other = format.value.as_str();
                self.report(
                    format.location,
                    format!("unknown log format {other:?}"),
                    suggest(other, &["auto", "json", "text"]),
                );
                LogFormat::Auto
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&level.value).is_err() {
            self.report(
                level.location.clone(),
                format!("invalid log level {:?}", level.value),
                "use error, warn, info, debug or trace, or a filter such as \"crmsync=debug,info\"",
            );
        }
        LogConfig {
            format,
            level: level.value,
        }
    }
}

fn suggest(word: &str, names: &[&str]) -> String {
    match did_you_mean(word, names.iter().copied()) {
        Some(suggestion) => format!("did you mean {suggestion:?}?"),
        None => format!("use one of: {}", list(names)),
    }
}
