//! The daemon's Prometheus metrics: what its runs did since it started, kept in memory and
//! rendered in the text exposition format (version 0.0.4) for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;

use crate::engine::{ApiUsage, RunStatus, SyncReport};
use crate::record::System;

/// Upper bounds (seconds) of the run duration histogram's buckets.
const DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0,
];

/// What one finished run adds.
#[derive(Debug)]
pub struct RunRecord<'a> {
    pub status: RunStatus,
    /// The run's report; `None` when the run could not start (a run that failed midway has
    /// one: what it did before).
    pub report: Option<&'a SyncReport>,
    /// The run's API use, per system (its clients are the run's own).
    pub usage: &'a [ApiUsage],
    /// The object write-back writes to, per system.
    pub write_objects: &'a BTreeMap<System, String>,
    pub seconds: f64,
    pub finished: Timestamp,
}

/// Everything `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    runs: BTreeMap<&'static str, u64>,
    skipped: u64,
    read: BTreeMap<(System, String), u64>,
    written: BTreeMap<(System, String), u64>,
    dead_letters: u64,
    api_calls: BTreeMap<System, u64>,
    rate_limited: BTreeMap<System, u64>,
    budget_remaining: BTreeMap<System, u64>,
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    persons: Option<u64>,
    last_run: Option<Timestamp>,
    last_success: Option<Timestamp>,
}

impl Metrics {
    /// A run that did not start: another process's run held the warehouse.
    pub fn run_skipped(&mut self) {
        self.skipped += 1;
    }

    /// Adds a finished run.
    pub fn record(&mut self, run: RunRecord<'_>) {
        *self.runs.entry(run.status.as_str()).or_default() += 1;
        if let Some(report) = run.report {
            for stream in &report.streams {
                *self
                    .read
                    .entry((stream.system, stream.object.clone()))
                    .or_default() += stream.read;
            }
            for (system, written) in &report.written {
                let object = run.write_objects.get(system).cloned().unwrap_or_default();
                *self.written.entry((*system, object)).or_default() += written;
            }
            self.dead_letters += report.dead_letters;
            // A failed run's count of persons may be a summary it could not read (the
            // warehouse gone): the gauge keeps the last good one.
            if run.status != RunStatus::Failed {
                self.persons = Some(report.warehouse.persons);
            }
        }
        for usage in run.usage {
            *self.api_calls.entry(usage.system).or_default() += usage.calls;
            *self.rate_limited.entry(usage.system).or_default() += usage.rate_limited;
            if let Some(remaining) = usage.daily_remaining {
                self.budget_remaining.insert(usage.system, remaining);
            }
        }
        for (bucket, bound) in self.duration_buckets.iter_mut().zip(DURATION_BUCKETS) {
            if run.seconds <= bound {
                *bucket += 1;
            }
        }
        self.duration_sum += run.seconds;
        self.duration_count += 1;
        self.last_run = Some(run.finished);
        if run.status != RunStatus::Failed {
            self.last_success = Some(run.finished);
        }
    }

    /// When the last run that did not fail finished.
    pub fn last_success(&self) -> Option<Timestamp> {
        self.last_success
    }

    /// The exposition text; `running` while a run is going on.
    pub fn render(&self, running: bool) -> String {
        let mut out = String::new();
        let statuses = [RunStatus::Complete, RunStatus::Partial, RunStatus::Failed];
        family(
            &mut out,
            "crmsync_runs_total",
            "counter",
            "Sync runs finished, by status (complete, partial: resumable, failed).",
            statuses.iter().map(|status| {
                (
                    labels(&[("status", status.as_str())]),
                    self.runs.get(status.as_str()).copied().unwrap_or(0) as f64,
                )
            }),
        );
        family(
            &mut out,
            "crmsync_runs_skipped_total",
            "counter",
            "Runs not started because another process's run held the warehouse.",
            std::iter::once((String::new(), self.skipped as f64)),
        );
        family(
            &mut out,
            "crmsync_records_read_total",
            "counter",
            "Records read from the CRMs, by system and object.",
            self.read.iter().map(|((system, object), count)| {
                (
                    labels(&[("system", system.as_str()), ("object", object)]),
                    *count as f64,
                )
            }),
        );
        family(
            &mut out,
            "crmsync_records_written_total",
            "counter",
            "Records written back to the CRMs, by system and object.",
            self.written.iter().map(|((system, object), count)| {
                (
                    labels(&[("system", system.as_str()), ("object", object)]),
                    *count as f64,
                )
            }),
        );
        family(
            &mut out,
            "crmsync_dead_letters_total",
            "counter",
            "Records set aside in dead_letters (refused by a mapping or a CRM).",
            std::iter::once((String::new(), self.dead_letters as f64)),
        );
        family(
            &mut out,
            "crmsync_api_calls_total",
            "counter",
            "Requests sent to the CRMs' APIs, retries included, by system.",
            per_system(&self.api_calls),
        );
        family(
            &mut out,
            "crmsync_api_rate_limited_total",
            "counter",
            "Answers with HTTP status 429 (rate limited), by system.",
            per_system(&self.rate_limited),
        );
        family(
            &mut out,
            "crmsync_api_budget_remaining",
            "gauge",
            "Requests left in the CRM's daily API allowance, as it last reported, by system.",
            per_system(&self.budget_remaining),
        );
        let _ = writeln!(
            out,
            "# HELP crmsync_run_duration_seconds How long sync runs took.\n# TYPE crmsync_run_duration_seconds histogram"
        );
        for (bucket, bound) in self.duration_buckets.iter().zip(DURATION_BUCKETS) {
            let _ = writeln!(
                out,
                "crmsync_run_duration_seconds_bucket{{le=\"{bound}\"}} {bucket}"
            );
        }
        let _ = writeln!(
            out,
            "crmsync_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}\ncrmsync_run_duration_seconds_sum {sum}\ncrmsync_run_duration_seconds_count {count}",
            count = self.duration_count,
            sum = self.duration_sum,
        );
        let seconds = |at: Option<Timestamp>| at.map(|at| at.as_millisecond() as f64 / 1000.0);
        let gauges = [
            (
                "crmsync_last_success_timestamp_seconds",
                "When the last run that did not fail finished (Unix time).",
                seconds(self.last_success),
            ),
            (
                "crmsync_last_run_timestamp_seconds",
                "When the last run finished (Unix time).",
                seconds(self.last_run),
            ),
            (
                "crmsync_run_in_progress",
                "1 while a run is going on.",
                Some(if running { 1.0 } else { 0.0 }),
            ),
            (
                "crmsync_persons",
                "Persons in the warehouse after the last run.",
                self.persons.map(|persons| persons as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                family(
                    &mut out,
                    name,
                    "gauge",
                    help,
                    std::iter::once((String::new(), value)),
                );
            }
        }
        out
    }
}

fn per_system(counts: &BTreeMap<System, u64>) -> impl Iterator<Item = (String, f64)> + '_ {
    counts
        .iter()
        .map(|(system, count)| (labels(&[("system", system.as_str())]), *count as f64))
}

/// One metric family: its HELP and TYPE lines, then a sample per label set.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// `{name="value",…}`, values escaped as the format asks (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("object", "a\"b\\c\nd")]),
            "{object=\"a\\\"b\\\\c\\nd\"}"
        );
    }

    #[test]
    fn a_failed_run_counts_but_is_no_success() {
        let mut metrics = Metrics::default();
        let objects = BTreeMap::new();
        let usage = [ApiUsage {
            system: System::Salesforce,
            calls: 3,
            rate_limited: 1,
            daily_remaining: Some(14_000),
        }];
        metrics.record(RunRecord {
            status: RunStatus::Failed,
            report: None,
            usage: &usage,
            write_objects: &objects,
            seconds: 2.5,
            finished: Timestamp::UNIX_EPOCH,
        });
        assert_eq!(metrics.last_success(), None);
        let text = metrics.render(false);
        assert!(text.contains("crmsync_runs_total{status=\"failed\"} 1\n"));
        assert!(text.contains("crmsync_runs_total{status=\"complete\"} 0\n"));
        assert!(text.contains("crmsync_api_rate_limited_total{system=\"salesforce\"} 1\n"));
        assert!(text.contains("crmsync_run_duration_seconds_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("crmsync_run_duration_seconds_bucket{le=\"5\"} 1\n"));
        assert!(!text.contains("crmsync_last_success_timestamp_seconds"));
    }
}
