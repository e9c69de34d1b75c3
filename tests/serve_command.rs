//! `crmsync serve` as a process against the emulator: runs on its schedule, `/metrics` read
//! with a Prometheus parser agrees with the emulator's own counts, `/healthz` turns 503 when
//! runs keep failing, and SIGTERM ends the daemon with status 0.

mod engine_common;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crmsync::emulator::EmulatorConfig;
use crmsync::emulator::faults::Faults;
use engine_common::Setup;
use prometheus_parse::{Scrape, Value};
use serde_json::Value as Json;

/// A running `crmsync serve` and what it logs.
struct Daemon {
    child: Child,
    base: String,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    /// Starts `crmsync serve` on `setup`'s config with `env`, on a free port; waits for the
    /// log line that says where it listens.
    fn start(setup: &Setup, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&setup.config_path)
            .env("CRMSYNC_SCHEDULE_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crmsync serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            base: String::new(),
            logs,
            seen: Vec::new(),
        };
        let line = daemon.wait_for_log("serving /healthz and /metrics");
        let event: Json = serde_json::from_str(&line).expect("a JSON log line");
        daemon.base = format!(
            "http://{}",
            event["fields"]["address"].as_str().expect("the address")
        );
        daemon
    }

    /// The first log line (from now on) whose message contains `text`.
    fn wait_for_log(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let event: Json = serde_json::from_str(&line)
                        .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
                    if event["fields"]["message"]
                        .as_str()
                        .is_some_and(|message| message.contains(text))
                    {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {text:?} within 60 s; logged:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line logged so far.
    fn logged(&mut self) -> &[String] {
        while let Ok(line) = self.logs.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The warnings and errors logged so far, one per line.
    fn troubles(&mut self) -> String {
        self.logged()
            .iter()
            .filter(|line| {
                line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
            })
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let answer = reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("the daemon answers");
        let status = answer.status().as_u16();
        (status, answer.text().await.expect("a body"))
    }

    async fn metrics(&self) -> Metrics {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200);
        Metrics::parse(&text)
    }

    async fn health(&self) -> (u16, Json) {
        let (status, body) = self.get("/healthz").await;
        (status, serde_json::from_str(&body).expect("JSON health"))
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("status") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "serve did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/metrics` as a Prometheus parser reads it.
struct Metrics {
    samples: Vec<(String, HashMap<String, String>, f64)>,
    types: HashMap<String, String>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|line| Ok(line.to_string()));
        let scrape = Scrape::parse(lines).expect("Prometheus text format");
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            }
        }
        let mut samples = Vec::new();
        for sample in scrape.samples {
            let labels: HashMap<String, String> = sample
                .labels
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            match sample.value {
                Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => {
                    samples.push((sample.metric, labels, value));
                }
                Value::Histogram(buckets) => {
                    for bucket in buckets {
                        let mut labels = labels.clone();
                        labels.insert("le".into(), bucket.less_than.to_string());
                        samples.push((format!("{}_bucket", sample.metric), labels, bucket.count));
                    }
                }
                Value::Summary(_) => panic!("no summaries are exported"),
            }
        }
        Metrics { samples, types }
    }

    /// The sample of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(metric, have, _)| {
                metric == name
                    && have.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(key, value)| have.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|(_, _, value)| *value)
    }

    /// The sum of every sample of `name`.
    fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(metric, _, _)| metric == name)
            .map(|(_, _, value)| value)
            .sum()
    }

    fn runs(&self) -> f64 {
        self.total("crmsync_runs_total")
    }
}

/// An org whose HubSpot portal throws 429 storms now and then (the client's own count of them
/// is checked against the emulator's in the HubSpot client tests).
/// Records stored in the warehouse so far (0 before it exists or has its tables).
fn stored_so_far(setup: &Setup) -> i64 {
    if !setup.warehouse_path().exists() {
        return 0;
    }
    rusqlite::Connection::open(setup.warehouse_path())
        .and_then(|connection| {
            connection.query_row("SELECT COUNT(*) FROM source_records", [], |row| row.get(0))
        })
        .unwrap_or(0)
}

fn stormy_org() -> EmulatorConfig {
    EmulatorConfig {
        records: 600,
        rate_limits: false,
        seed: 11,
        faults: "storm".parse::<Faults>().expect("a fault profile"),
        ..EmulatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_its_schedule_and_its_metrics_agree_with_the_emulator() {
    let setup = Setup::with(stormy_org()).await;
    let mut daemon = Daemon::start(&setup, &[("CRMSYNC_SCHEDULE_EVERY", "5s")]);
    // Three runs on a 5 s interval, then a moment between runs when nothing is in flight:
    // the daemon's counters and the emulator's are read back to back, and taken only if no
    // run started in between.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (metrics, stats) = loop {
        assert!(
            Instant::now() < deadline,
            "three runs did not finish in 120 s"
        );
        let before = daemon.metrics().await;
        if before.runs() >= 3.0 && before.value("crmsync_run_in_progress", &[]) == Some(0.0) {
            let stats = setup.emulator.stats();
            let after = daemon.metrics().await;
            if after.runs() == before.runs()
                && after.value("crmsync_run_in_progress", &[]) == Some(0.0)
            {
                break (after, stats);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, health) = daemon.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    // The schedule: the next run is due 5 s after the last one started.
    let started: jiff::Timestamp = health["last_run"]["started_at"]
        .as_str()
        .expect("a last run")
        .parse()
        .expect("a time");
    let finished: jiff::Timestamp = health["last_run"]["finished_at"]
        .as_str()
        .expect("a finished run")
        .parse()
        .expect("a time");
    let next: jiff::Timestamp = health["next_run_at"]
        .as_str()
        .expect("a next run while none is going on")
        .parse()
        .expect("a time");
    let gap = next.duration_since(started).as_secs_f64();
    // Five seconds after the last start; later only if that run overran its slot.
    assert!(gap >= 4.9, "next run {gap} s after the last");
    if finished.duration_since(started).as_secs_f64() < 4.5 {
        assert!(gap <= 5.1, "next run {gap} s after the last");
    }

    // Every family is typed, and the counters agree with the emulator's counts.
    for name in [
        "crmsync_runs_total",
        "crmsync_records_read_total",
        "crmsync_records_written_total",
        "crmsync_api_calls_total",
        "crmsync_api_rate_limited_total",
        "crmsync_api_budget_remaining",
        "crmsync_dead_letters_total",
        "crmsync_run_duration_seconds",
        "crmsync_last_success_timestamp_seconds",
    ] {
        assert!(metrics.types.contains_key(name), "{name} has no TYPE line");
    }
    assert_eq!(
        metrics.value("crmsync_runs_total", &[("status", "failed")]),
        Some(0.0),
        "{}",
        daemon.troubles()
    );
    let token_requests: u64 = stats
        .requests_by_endpoint
        .iter()
        .filter(|(endpoint, _)| endpoint.contains("/oauth2/token"))
        .flat_map(|(_, by_status)| by_status.values())
        .sum();
    assert_eq!(
        metrics.value("crmsync_api_calls_total", &[("system", "hubspot")]),
        Some(stats.requests_by_system["hubspot"] as f64)
    );
    assert_eq!(
        metrics.value("crmsync_api_calls_total", &[("system", "salesforce")]),
        Some((stats.requests_by_system["salesforce"] - token_requests) as f64)
    );
    assert_eq!(
        metrics.total("crmsync_api_rate_limited_total"),
        stats.rate_limited as f64
    );
    for (system, object) in [("hubspot", "contacts"), ("salesforce", "Lead")] {
        let written = stats.records_written[&format!("{system} {object}")];
        assert!(written > 0);
        assert_eq!(
            metrics.value(
                "crmsync_records_written_total",
                &[("system", system), ("object", object)]
            ),
            Some(written as f64),
            "{system} {object}"
        );
    }
    // Reads and dead letters agree with the runs the warehouse recorded.
    let recorded =
        |column: &str| setup.count(&format!("SELECT SUM({column}) FROM sync_runs")) as f64;
    assert_eq!(
        metrics.total("crmsync_records_read_total"),
        recorded("records_read")
    );
    assert!(
        metrics.value(
            "crmsync_records_read_total",
            &[("system", "salesforce"), ("object", "Lead")]
        ) > Some(0.0)
    );
    assert_eq!(
        metrics.value("crmsync_dead_letters_total", &[]),
        Some(recorded("records_dead_lettered"))
    );
    assert_eq!(
        metrics.value("crmsync_run_duration_seconds_count", &[]),
        Some(metrics.runs())
    );
    assert!(metrics.value("crmsync_api_budget_remaining", &[("system", "salesforce")]) > Some(0.0));

    // SIGTERM between runs (or during one): status 0.
    assert_eq!(daemon.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_once_runs_keep_failing_past_the_bound() {
    let setup = Setup::new(150).await;
    let mut daemon = Daemon::start(
        &setup,
        &[
            ("CRMSYNC_SCHEDULE_EVERY", "1s"),
            ("CRMSYNC_SCHEDULE_HEALTHY_WITHIN", "3s"),
        ],
    );
    // The default org has values no mapping knows: its runs are partial, which counts as
    // success here (the run did its work; dead letters show in /metrics).
    daemon.wait_for_log("Run 1 partial");
    let (status, health) = daemon.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["last_run"]["status"], "partial");

    // The CRMs go away: every run from now on fails.
    let Setup {
        emulator,
        dir: _dir,
        ..
    } = setup;
    let address = emulator.info().hubspot_base_url.clone();
    drop(emulator);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(&address).await.is_ok() {
        assert!(Instant::now() < deadline, "the emulator still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let health = loop {
        let (status, health) = daemon.health().await;
        if status == 503 && health["last_run"]["status"] == "failed" {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after 90 s: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["status"], "stale");
    assert!(
        health["last_success_age_seconds"].as_f64() > Some(3.0),
        "{health}"
    );
    assert!(
        !health["last_run"]["problems"][0]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{health}"
    );
    let metrics = daemon.metrics().await;
    assert!(metrics.value("crmsync_runs_total", &[("status", "failed")]) >= Some(1.0));
    assert_eq!(
        metrics.value("crmsync_runs_total", &[("status", "complete")]),
        Some(0.0)
    );
    assert!(metrics.value("crmsync_runs_total", &[("status", "partial")]) >= Some(1.0));
    assert_eq!(daemon.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_keeps_what_it_stored_and_the_daemon_exits_0() {
    // Slow answers (50–250 ms each), so the first run is still reading when the signal comes.
    let setup = Setup::with(EmulatorConfig {
        records: 800,
        rate_limits: false,
        seed: 5,
        faults: "slow".parse::<Faults>().expect("a fault profile"),
        ..EmulatorConfig::default()
    })
    .await;
    let mut daemon = Daemon::start(&setup, &[("CRMSYNC_SCHEDULE_EVERY", "1h")]);
    daemon.wait_for_log("full read started");
    // Signalled once the run has stored some pages, with their checkpoints.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_so_far(&setup) == 0 {
        assert!(Instant::now() < deadline, "the run stored nothing in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, health) = daemon.health().await;
    assert!(
        !health["running_since"].is_null(),
        "a run is going on: {health}"
    );
    assert_eq!(daemon.terminate(), Some(0));
    let stopped = setup.strings("SELECT status || ' ' || COALESCE(error, '') FROM sync_runs");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(
        stopped[0].starts_with("partial ") && stopped[0].contains("SIGTERM received"),
        "{stopped:?}"
    );
    let read_before = setup.count("SELECT COUNT(*) FROM source_records");
    assert!(read_before > 0);
    // The stop came before the run was done: records wait, or streams were left unread.
    let unfinished = setup.count("SELECT COUNT(*) FROM source_records WHERE pending")
        + (5 - setup.count("SELECT COUNT(*) FROM stream_reads WHERE status = 'complete'"));
    assert!(unfinished > 0, "the run had finished before the signal");
    // The next run goes on from the checkpoints and finishes the work.
    let (code, _, stderr) = setup.crmsync(&["sync"], &[]);
    assert!(matches!(code, Some(0 | 2)), "{stderr}");
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM source_records WHERE pending"),
        0
    );
    assert_eq!(setup.count("SELECT COUNT(*) FROM checkpoints"), 5);
    assert!(setup.count("SELECT COUNT(*) FROM source_records") >= read_before);
    assert!(setup.count("SELECT COUNT(*) FROM unified_leads") > 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_midway_counts_what_it_read() {
    let setup = Setup::new(60).await;
    drop(setup.engine().await);
    setup.refuse_persons();
    let daemon = Daemon::start(&setup, &[("CRMSYNC_SCHEDULE_EVERY", "1h")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let metrics = daemon.metrics().await;
        if metrics.value("crmsync_runs_total", &[("status", "failed")]) == Some(1.0) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "no failed run in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The records it read before reconcile failed are counted, as its sync_runs row has them.
    let recorded = setup.count("SELECT SUM(records_read) FROM sync_runs") as f64;
    assert!(recorded > 0.0);
    assert_eq!(metrics.total("crmsync_records_read_total"), recorded);
    // A failed run's count of persons does not set the gauge (none has yet).
    assert_eq!(metrics.value("crmsync_persons", &[]), None);
    let (_, health) = daemon.health().await;
    assert_eq!(health["last_run"]["status"], "failed", "{health}");
    assert_eq!(health["last_run"]["run_id"], 1, "{health}");
    assert!(health["last_success_at"].is_null(), "{health}");
    assert!(
        health["last_run"]["problems"][0]
            .as_str()
            .is_some_and(|problem| problem.contains("no room for persons")),
        "{health}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}
