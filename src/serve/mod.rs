//! `crmsync serve`: the daemon. Starts sync runs on the configured schedule, one at a time
//! (a run that overruns its slot delays the next; missed cron slots are skipped, not queued),
//! and answers `/healthz` and `/metrics` meanwhile. Each run opens the engine afresh, so an
//! edited mapping takes effect at the next run. A stop request (SIGTERM) ends the run in hand
//! at its next safe point, and then the daemon.

pub mod metrics;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::config::Config;
use crate::engine::{EngineError, RunStatus, StopRequest, SyncOptions};
use crate::record::System;
use metrics::{Metrics, RunRecord};
use schedule::Schedule;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {address} for /healthz and /metrics: {source} — set [schedule] listen (CRMSYNC_SCHEDULE_LISTEN) to a free IP:PORT"
    )]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the /healthz and /metrics server failed: {0}")]
    Http(std::io::Error),
}

/// How the last run went, for `/healthz`.
#[derive(Debug, Clone)]
struct LastRun {
    run_id: Option<i64>,
    status: &'static str,
    started: Timestamp,
    finished: Timestamp,
    problems: Vec<String>,
}

/// What the HTTP handlers read and the run loop writes.
struct Daemon {
    started: Timestamp,
    schedule: String,
    healthy_within: SignedDuration,
    state: Mutex<DaemonState>,
}

#[derive(Default)]
struct DaemonState {
    metrics: Metrics,
    last_run: Option<LastRun>,
    running_since: Option<Timestamp>,
    next_run: Option<Timestamp>,
}

impl Daemon {
    fn state(&self) -> std::sync::MutexGuard<'_, DaemonState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The health bound when none is configured: twice the longest wait between scheduled runs
/// over the next eight days (a weekend and then some), plus 15 minutes for the run itself.
pub fn default_healthy_within(schedule: &Schedule, from: Timestamp) -> SignedDuration {
    schedule
        .longest_gap_within(from, SignedDuration::from_hours(8 * 24))
        .checked_mul(2)
        .and_then(|gap| gap.checked_add(SignedDuration::from_mins(15)))
        .unwrap_or(SignedDuration::MAX)
}

/// Runs the daemon until `stop` is requested: the run in hand then stops at its next safe
/// point, and this returns.
pub async fn serve(config: Config, stop: StopRequest) -> Result<(), ServeError> {
    let address = config.schedule.listen.clone();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| ServeError::Listen {
            address: address.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(ServeError::Http)?;
    let started = Timestamp::now();
    let schedule = config.schedule.when.clone();
    let daemon = Arc::new(Daemon {
        started,
        schedule: schedule.describe(),
        healthy_within: config
            .schedule
            .healthy_within
            .unwrap_or_else(|| default_healthy_within(&schedule, started)),
        state: Mutex::new(DaemonState::default()),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&daemon));
    let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = quitting.await;
            })
            .await
    });
    tracing::info!(
        address = %bound,
        schedule = %daemon.schedule,
        healthy_within = %format!("{:#}", daemon.healthy_within),
        "serving /healthz and /metrics"
    );
    run_on_schedule(&config, &schedule, &stop, &daemon).await;
    let _ = quit.send(());
    match server.await {
        Ok(served) => served.map_err(ServeError::Http)?,
        Err(error) => return Err(ServeError::Http(std::io::Error::other(error.to_string()))),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run_on_schedule(
    config: &Config,
    schedule: &Schedule,
    stop: &StopRequest,
    daemon: &Daemon,
) {
    // An interval schedule runs at once; a cron schedule waits for its first slot.
    let mut next = match schedule {
        Schedule::Every(_) => Some(Timestamp::now()),
        Schedule::Cron(_) => schedule.next_after(Timestamp::now()),
    };
    loop {
        let Some(at) = next else {
            tracing::error!("the schedule has no next run; stopping");
            return;
        };
        daemon.state().next_run = Some(at);
        let wait = Timestamp::now().duration_until(at);
        if wait.is_positive() {
            tracing::info!(next_run = %at, "waiting for the next run");
            let wait = std::time::Duration::try_from(wait).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.requested() => return,
            }
        }
        if stop.is_requested() {
            return;
        }
        let started = Timestamp::now();
        run_once(config, stop, daemon).await;
        if stop.is_requested() {
            return;
        }
        let now = Timestamp::now();
        next = match schedule {
            Schedule::Every(interval) => started
                .checked_add(*interval)
                .ok()
                .map(|slot| slot.max(now)),
            Schedule::Cron(_) => {
                // Never the slot just run again, even if the clock stepped back.
                let slot = schedule.next_after(now.max(at));
                if let Some(slot) = slot
                    && schedule.next_after(at).is_some_and(|missed| missed < now)
                {
                    tracing::warn!(next_run = %slot, "the run overran its slot; missed slots are skipped");
                }
                slot
            }
        };
    }
}

/// One run, its outcome kept for `/healthz` and `/metrics`.
async fn run_once(config: &Config, stop: &StopRequest, daemon: &Daemon) {
    let started = Timestamp::now();
    {
        let mut state = daemon.state();
        state.running_since = Some(started);
        state.next_run = None;
    }
    let clock = std::time::Instant::now();
    let write_objects: BTreeMap<System, String> = System::ALL
        .iter()
        .map(|system| {
            (
                *system,
                config.write_back.target(*system).object.value.clone(),
            )
        })
        .collect();
    let (status, report, usage, problems) = match crate::engine::open(config.clone()).await {
        Err(error) => {
            tracing::error!(%error, "the run could not start");
            (RunStatus::Failed, None, Vec::new(), vec![error.to_string()])
        }
        Ok(engine) => {
            // The run's own stop request: the daemon's (SIGTERM) reaches it, but what stops
            // only the run (a lost lease) does not stop the daemon.
            let engine = engine
                .with_stop(stop.linked())
                .with_progress(Arc::new(crate::engine::progress::Lines::default()));
            let result = engine.sync(SyncOptions::default()).await;
            let usage = engine.api_usage();
            match result {
                Ok(report) => {
                    let problems = report.problems.clone();
                    (report.status, Some(report), usage, problems)
                }
                Err(error @ EngineError::Busy { .. }) => {
                    // Another process's run holds the warehouse: runs never overlap.
                    tracing::warn!(%error, "run skipped");
                    let mut state = daemon.state();
                    state.running_since = None;
                    state.metrics.run_skipped();
                    return;
                }
                // What the run did before it failed still counts.
                // (Its summary, logged below, names the error.)
                Err(EngineError::RunFailed(failure)) => {
                    let problems = failure.report.problems.clone();
                    (RunStatus::Failed, Some(failure.report), usage, problems)
                }
                Err(error) => {
                    tracing::error!(%error, "the run failed");
                    (RunStatus::Failed, None, usage, vec![error.to_string()])
                }
            }
        }
    };
    let finished = Timestamp::now();
    if let Some(report) = &report {
        match report.status {
            RunStatus::Complete => tracing::info!(run_id = report.run_id, "{}", report.paragraph()),
            RunStatus::Partial => tracing::warn!(run_id = report.run_id, "{}", report.paragraph()),
            RunStatus::Failed => tracing::error!(run_id = report.run_id, "{}", report.paragraph()),
        }
    }
    let mut state = daemon.state();
    state.running_since = None;
    state.metrics.record(RunRecord {
        status,
        report: report.as_ref(),
        usage: &usage,
        write_objects: &write_objects,
        seconds: clock.elapsed().as_secs_f64(),
        finished,
    });
    state.last_run = Some(LastRun {
        run_id: report.as_ref().map(|report| report.run_id),
        status: status.as_str(),
        started,
        finished,
        problems,
    });
}

/// 200 while the last successful run (complete or partial) finished within the health bound
/// (counted from the daemon's start until one has), 503 after; the body says why.
async fn healthz(State(daemon): State<Arc<Daemon>>) -> Response {
    let now = Timestamp::now();
    let state = daemon.state();
    let last_success = state.metrics.last_success();
    let since = last_success.unwrap_or(daemon.started);
    let age = now.duration_since(since);
    let healthy = age <= daemon.healthy_within;
    let seconds = |duration: SignedDuration| duration.as_secs_f64().max(0.0);
    let body = json!({
        "status": if healthy { "ok" } else { "stale" },
        "schedule": daemon.schedule,
        "healthy_within_seconds": seconds(daemon.healthy_within),
        "last_success_at": last_success.map(|at| at.to_string()),
        "last_success_age_seconds": last_success.map(|at| seconds(now.duration_since(at))),
        "last_run": state.last_run.as_ref().map(|run| json!({
            "run_id": run.run_id,
            "status": run.status,
            "started_at": run.started.to_string(),
            "finished_at": run.finished.to_string(),
            "age_seconds": seconds(now.duration_since(run.finished)),
            "problems": run.problems,
        })),
        "running_since": state.running_since.map(|at| at.to_string()),
        "next_run_at": state.next_run.map(|at| at.to_string()),
        "serving_since": daemon.started.to_string(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(daemon): State<Arc<Daemon>>) -> Response {
    let text = {
        let state = daemon.state();
        state.metrics.render(state.running_since.is_some())
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
