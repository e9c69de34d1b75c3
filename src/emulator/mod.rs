//! The CRM emulator: HubSpot and Salesforce as their APIs look on the wire, so the connector,
//! the demo and the benchmarks can run without either service.
//!
//! [`data`] seeds the org; [`hubspot`] and [`salesforce`] serve each CRM's API over it;
//! [`faults`] injects failures; [`stats`] counts every request (`GET /__emulator/stats`). One listener serves every API (their paths do not
//! collide). [`RunningEmulator::start`] runs it in-process on any address (port 0 picks one)
//! and stops it when dropped; `crmsync emulate` runs it as a process.

pub mod data;
pub mod faults;
pub mod hubspot;
pub mod properties;
pub mod salesforce;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jiff::SignedDuration;
use serde::Serialize;
use tokio::sync::oneshot;

use std::path::PathBuf;

use data::OrgProfile;
use faults::{FaultInjector, Faults};
use hubspot::{HubspotLimits, HubspotSettings, HubspotShared};
use salesforce::oauth::{AppKeys, KeyError};
use salesforce::{SalesforceSettings, SalesforceShared};
use stats::{Stats, StatsSnapshot};

/// How an emulator is set up.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub seed: u64,
    /// People in the org, spread over both systems.
    pub records: usize,
    pub profile: OrgProfile,
    /// Enforce the real rate limits (off for fast benchmarks).
    pub rate_limits: bool,
    pub hubspot_limits: HubspotLimits,
    /// Lifetime of HubSpot OAuth access tokens (30 minutes in reality; shorter in tests).
    pub hubspot_token_lifetime: SignedDuration,
    /// Faults to inject (none by default).
    pub faults: Faults,
    /// The newest Salesforce API version served (`62.0`).
    pub salesforce_api_version: String,
    /// Salesforce API requests allowed per 24 hours.
    pub salesforce_daily_api_requests: u64,
    /// Salesforce session timeout (2 hours by default; shorter in tests).
    pub salesforce_session_lifetime: SignedDuration,
    /// The base URL clients reach the emulator at, where it differs from the address it
    /// listens on (behind a container name: `http://emulator:8080`); it goes into the
    /// answers that name URLs (Salesforce's `instance_url`, HubSpot's paging links).
    pub public_url: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            records: 1_000,
            profile: OrgProfile::Classic,
            rate_limits: true,
            hubspot_limits: HubspotLimits::default(),
            hubspot_token_lifetime: SignedDuration::from_mins(30),
            faults: Faults::default(),
            salesforce_api_version: salesforce::DEFAULT_API_VERSION.to_string(),
            salesforce_daily_api_requests: SalesforceSettings::default().daily_api_requests,
            salesforce_session_lifetime: SalesforceSettings::default().session_lifetime,
            public_url: None,
        }
    }
}

/// Where the emulator listens and the credentials it accepts: what a client needs to connect.
/// Serialized, this is the line `crmsync emulate` prints; its Debug form hides the secrets.
#[derive(Clone, Serialize)]
pub struct EmulatorInfo {
    pub hubspot_base_url: String,
    pub hubspot_token: String,
    pub hubspot_client_id: String,
    pub hubspot_client_secret: String,
    pub hubspot_refresh_token: String,
    /// Login URL and instance URL at once (the token endpoint is `{login}/services/oauth2/token`).
    pub salesforce_login_url: String,
    pub salesforce_client_id: String,
    pub salesforce_client_secret: String,
    pub salesforce_username: String,
    /// A PEM file with the private key JWT bearer assertions are signed with.
    pub salesforce_private_key_file: PathBuf,
    pub salesforce_refresh_token: String,
}

impl std::fmt::Debug for EmulatorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HIDDEN: &str = "[redacted]";
        f.debug_struct("EmulatorInfo")
            .field("hubspot_base_url", &self.hubspot_base_url)
            .field("hubspot_token", &HIDDEN)
            .field("hubspot_client_id", &self.hubspot_client_id)
            .field("hubspot_client_secret", &HIDDEN)
            .field("hubspot_refresh_token", &HIDDEN)
            .field("salesforce_login_url", &self.salesforce_login_url)
            .field("salesforce_client_id", &self.salesforce_client_id)
            .field("salesforce_client_secret", &HIDDEN)
            .field("salesforce_username", &self.salesforce_username)
            .field(
                "salesforce_private_key_file",
                &self.salesforce_private_key_file,
            )
            .field("salesforce_refresh_token", &HIDDEN)
            .finish()
    }
}

/// Problems starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "cannot listen on {address}: {source} — pick a free port, or port 0 to let the system choose"
    )]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("generating the emulator's org was interrupted")]
    Interrupted,
    #[error(
        "cannot write the emulator's private key to {path}: {source} — make the temporary directory writable or set TMPDIR"
    )]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An emulator serving in the background; dropping it stops it.
#[derive(Debug)]
pub struct RunningEmulator {
    info: EmulatorInfo,
    address: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The private-key PEM written for clients; removed on drop.
    key_file: PathBuf,
}

#[derive(Clone)]
struct EmulatorState {
    stats: Arc<Stats>,
}

async fn stats_route(State(state): State<EmulatorState>) -> axum::Json<StatsSnapshot> {
    axum::Json(state.stats.snapshot())
}

impl RunningEmulator {
    /// Seeds the org, binds `address` and serves until dropped.
    pub async fn start(config: EmulatorConfig, address: SocketAddr) -> Result<Self, EmulatorError> {
        let stats = Arc::new(Stats::default());
        let (seed, people, profile) = (config.seed, config.records, config.profile);
        // Generating a large org takes seconds: off the async threads. Salesforce records go
        // straight into the org's compact tables as they are made.
        let (generated, keys) = tokio::join!(
            async {
                tokio::task::spawn_blocking(move || {
                    let mut seeder = salesforce::seed::OrgSeeder::new(profile, seed);
                    let org = data::generate_with(seed, people, profile, &mut |object, record| {
                        seeder.add(object, record)
                    });
                    (org, seeder.finish())
                })
                .await
            },
            async { tokio::task::spawn_blocking(move || AppKeys::generate(seed)).await }
        );
        let (mut org, salesforce_data) = generated.map_err(|_| EmulatorError::Interrupted)?;
        let keys = keys.map_err(|_| KeyError::Interrupted)??;
        let salesforce = Arc::new(SalesforceShared::new(
            salesforce_data,
            config.seed,
            keys,
            SalesforceSettings {
                api_version: config.salesforce_api_version.clone(),
                daily_api_requests: config.salesforce_daily_api_requests,
                enforce_limits: config.rate_limits,
                session_lifetime: if config.faults.expiry {
                    config
                        .salesforce_session_lifetime
                        .min(faults::EXPIRY_TOKEN_LIFETIME)
                } else {
                    config.salesforce_session_lifetime
                },
                fixed_session_expiry: config.faults.expiry,
                partial_failures: config.faults.partial,
            },
            Arc::clone(&stats),
        ));
        let hubspot = Arc::new(HubspotShared::new(
            &mut org,
            config.seed,
            HubspotSettings {
                limits: config.hubspot_limits,
                enforce_limits: config.rate_limits,
                // Under `expiry`, tokens run out within seconds, in the middle of any run.
                token_lifetime: if config.faults.expiry {
                    config
                        .hubspot_token_lifetime
                        .min(faults::EXPIRY_TOKEN_LIFETIME)
                } else {
                    config.hubspot_token_lifetime
                },
                partial_failures: config.faults.partial,
            },
            Arc::clone(&stats),
        ));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| EmulatorError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { address, source })?;
        let base_url = config.public_url.as_ref().map_or_else(
            || format!("http://{bound}"),
            |url| url.trim_end_matches('/').to_string(),
        );
        hubspot.set_base_url(&base_url);
        salesforce.set_base_url(&base_url);
        // A name nobody can guess ahead, created fresh (never through an existing file).
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let key_file = std::env::temp_dir().join(format!(
            "crmsync-emulator-{}-{}-{nonce:08x}.pem",
            std::process::id(),
            bound.port()
        ));
        write_private_key(&key_file, &salesforce.keys)?;
        let info = EmulatorInfo {
            hubspot_base_url: base_url.clone(),
            hubspot_token: hubspot.credentials.private_app_token.clone(),
            hubspot_client_id: hubspot.credentials.client_id.clone(),
            hubspot_client_secret: hubspot.credentials.client_secret.clone(),
            hubspot_refresh_token: hubspot.credentials.refresh_token.clone(),
            salesforce_login_url: base_url.clone(),
            salesforce_client_id: salesforce.credentials.client_id.clone(),
            salesforce_client_secret: salesforce.credentials.client_secret.clone(),
            salesforce_username: salesforce.credentials.username.clone(),
            salesforce_private_key_file: key_file.clone(),
            salesforce_refresh_token: salesforce.credentials.refresh_token.clone(),
        };
        let app = Router::new()
            .route("/__emulator/stats", get(stats_route))
            .with_state(EmulatorState {
                stats: Arc::clone(&stats),
            })
            .merge(hubspot::router(hubspot))
            .merge(salesforce::router(salesforce))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(FaultInjector::new(
                    config.faults,
                    config.seed,
                    Arc::clone(&stats),
                )),
                faults::inject,
            ));
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "emulator stopped serving");
            }
        });
        Ok(Self {
            info,
            address: bound,
            stats,
            shutdown: Some(shutdown),
            key_file,
        })
    }

    pub fn info(&self) -> &EmulatorInfo {
        &self.info
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The request counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Writes the private key where only this user can read it.
fn write_private_key(path: &std::path::Path, keys: &AppKeys) -> Result<(), EmulatorError> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    let failed = |source| EmulatorError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(keys.private_pem.expose_secret().as_bytes())
        .map_err(failed)
}
