//! The CRM emulator: HubSpot and Salesforce as their APIs look on the wire, so the connector,
//! the demo and the benchmarks can run without either service.
//!
//! [`data`] seeds the org; [`hubspot`] serves HubSpot's API over it; [`stats`] counts every
//! request (`GET /__emulator/stats`). One listener serves every API (their paths do not
//! collide). [`RunningEmulator::start`] runs it in-process on any address (port 0 picks one)
//! and stops it when dropped; `crmsync emulate` runs it as a process.

pub mod data;
pub mod faults;
pub mod hubspot;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jiff::SignedDuration;
use serde::Serialize;
use tokio::sync::oneshot;

use data::OrgProfile;
use faults::{FaultInjector, Faults};
use hubspot::{HubspotLimits, HubspotSettings, HubspotShared};
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
        }
    }
}

/// Where the emulator listens and the credentials it accepts: what a client needs to connect.
#[derive(Debug, Clone, Serialize)]
pub struct EmulatorInfo {
    pub hubspot_base_url: String,
    pub hubspot_token: String,
    pub hubspot_client_id: String,
    pub hubspot_client_secret: String,
    pub hubspot_refresh_token: String,
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
}

/// An emulator serving in the background; dropping it stops it.
#[derive(Debug)]
pub struct RunningEmulator {
    info: EmulatorInfo,
    address: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<oneshot::Sender<()>>,
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
        let mut org = data::generate(config.seed, config.records, config.profile);
        let stats = Arc::new(Stats::default());
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
            },
            Arc::clone(&stats),
        ));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| EmulatorError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { address, source })?;
        let base_url = format!("http://{bound}");
        hubspot.set_base_url(&base_url);
        let info = EmulatorInfo {
            hubspot_base_url: base_url,
            hubspot_token: hubspot.credentials.private_app_token.clone(),
            hubspot_client_id: hubspot.credentials.client_id.clone(),
            hubspot_client_secret: hubspot.credentials.client_secret.clone(),
            hubspot_refresh_token: hubspot.credentials.refresh_token.clone(),
        };
        let app = Router::new()
            .route("/__emulator/stats", get(stats_route))
            .with_state(EmulatorState {
                stats: Arc::clone(&stats),
            })
            .merge(hubspot::router(hubspot))
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
    }
}
