//! The pacer against the emulator's HubSpot limits: many concurrent tasks, one budget, and
//! not a single 429 across several rolling windows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crmsync::emulator::{EmulatorConfig, RunningEmulator};
use crmsync::http::limiter::{Pacer, WindowBudget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_requests_never_meet_a_429() {
    let emulator = RunningEmulator::start(
        EmulatorConfig {
            records: 200,
            rate_limits: true,
            ..EmulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("emulator starts");
    let pacer = Arc::new(
        Pacer::new(WindowBudget {
            max: 100,
            window: Duration::from_secs(10),
        })
        .expect("pacer"),
    );
    let client = reqwest::Client::new();
    let url = format!(
        "{}/crm/v3/objects/contacts?limit=1",
        emulator.info().hubspot_base_url
    );
    let token = emulator.info().hubspot_token.clone();
    let answered = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let stop = tokio::time::Instant::now() + Duration::from_secs(22);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pacer, client, url, token) = (
            Arc::clone(&pacer),
            client.clone(),
            url.clone(),
            token.clone(),
        );
        let (answered, limited) = (Arc::clone(&answered), Arc::clone(&limited));
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < stop {
                pacer.ready().await;
                let response = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request");
                match response.status().as_u16() {
                    429 => limited.fetch_add(1, Ordering::Relaxed),
                    _ => answered.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(limited.load(Ordering::Relaxed), 0, "no 429 under the pacer");
    assert!(
        answered.load(Ordering::Relaxed) > 200,
        "the run spanned several windows ({} answered)",
        answered.load(Ordering::Relaxed)
    );
    assert_eq!(emulator.stats().rate_limited, 0);
}
