//! What a run tells whoever watches it, as it goes: records read per stream, persons
//! reconciled, records written. [`Bars`] draws progress bars on a terminal; [`Lines`] writes
//! plain lines as log events (for logs and pipes, in the log format); [`Silent`] says nothing.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::extract::Stream;
use crate::record::System;

/// A watcher of a run. Every method has a do-nothing default.
pub trait Progress: Send + Sync {
    fn stream_started(&self, _stream: &Stream, _mode: &str) {}
    /// `total` records of the stream read so far.
    fn read(&self, _stream: &Stream, _total: u64) {}
    fn stream_finished(&self, _stream: &Stream, _total: u64, _stopped: bool) {}
    /// `total` persons reconciled so far.
    fn reconciled(&self, _total: u64) {}
    /// `total` records written to `system` so far.
    fn written(&self, _system: System, _total: u64) {}
    fn finished(&self) {}
}

/// Says nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

/// Plain lines (log events at `info` by default): each stream's start and end, and a line
/// every 10,000 records read, persons reconciled or records written.
pub struct Lines {
    last: Mutex<HashMap<String, u64>>,
    /// Where lines go other than the log.
    out: Option<Mutex<Box<dyn std::io::Write + Send>>>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").finish_non_exhaustive()
    }
}

impl Default for Lines {
    /// Lines as log events, so they come in the log's format with the run's fields.
    fn default() -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            out: None,
        }
    }
}

const LINE_EVERY: u64 = 10_000;

impl Lines {
    /// Lines written to `out`.
    pub fn to(out: Box<dyn std::io::Write + Send>) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            out: Some(Mutex::new(out)),
        }
    }

    /// One line; as a log event it carries the system and object it is about.
    fn line(&self, system: Option<System>, object: Option<&str>, text: &str) {
        let Some(out) = &self.out else {
            tracing::info!(
                target: "crmsync::progress",
                system = system.map(System::as_str),
                object,
                "{text}"
            );
            return;
        };
        let mut out = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A closed stderr is no reason to stop a sync.
        let _ = writeln!(out, "{text}");
    }

    fn every(
        &self,
        about: (Option<System>, Option<&str>),
        key: String,
        total: u64,
        line: impl FnOnce() -> String,
    ) {
        let crossed = {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let seen = last.entry(key).or_insert(0);
            let crossed = total / LINE_EVERY > *seen / LINE_EVERY;
            *seen = total;
            crossed
        };
        if crossed {
            self.line(about.0, about.1, &line());
        }
    }
}

impl Progress for Lines {
    fn stream_started(&self, stream: &Stream, mode: &str) {
        let about = (Some(stream.system), Some(stream.object.as_str()));
        self.line(about.0, about.1, &format!("{stream}: {mode} read started"));
    }

    fn read(&self, stream: &Stream, total: u64) {
        let about = (Some(stream.system), Some(stream.object.as_str()));
        self.every(about, format!("read {stream}"), total, || {
            format!("{stream}: {total} records read")
        });
    }

    fn stream_finished(&self, stream: &Stream, total: u64, stopped: bool) {
        let how = if stopped { "stopped" } else { "done" };
        let about = (Some(stream.system), Some(stream.object.as_str()));
        self.line(
            about.0,
            about.1,
            &format!("{stream}: {how}, {total} records read"),
        );
    }

    fn reconciled(&self, total: u64) {
        self.every((None, None), "reconcile".into(), total, || {
            format!("reconcile: {total} persons")
        });
    }

    fn written(&self, system: System, total: u64) {
        self.every(
            (Some(system), None),
            format!("write {system}"),
            total,
            || format!("write-back to {system}: {total} records"),
        );
    }
}

/// Progress bars on a terminal: a spinner per stream, one for reconcile, one per write-back.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").finish_non_exhaustive()
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Bars {
    fn bar(&self, key: &str, prefix: String) -> ProgressBar {
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bars.entry(key.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                let style =
                    ProgressStyle::with_template("{spinner} {prefix:<24} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_prefix(prefix);
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn stream_started(&self, stream: &Stream, mode: &str) {
        self.bar(&format!("read {stream}"), stream.to_string())
            .set_message(format!("{mode} read"));
    }

    fn read(&self, stream: &Stream, total: u64) {
        self.bar(&format!("read {stream}"), stream.to_string())
            .set_message(format!("{total} records read"));
    }

    fn stream_finished(&self, stream: &Stream, total: u64, stopped: bool) {
        let how = if stopped { "stopped after" } else { "read" };
        self.bar(&format!("read {stream}"), stream.to_string())
            .finish_with_message(format!("{how} {total} records"));
    }

    fn reconciled(&self, total: u64) {
        self.bar("reconcile", "reconcile".into())
            .set_message(format!("{total} persons"));
    }

    fn written(&self, system: System, total: u64) {
        self.bar(
            &format!("write {system}"),
            format!("write-back to {system}"),
        )
        .set_message(format!("{total} records"));
    }

    fn finished(&self) {
        let bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for bar in bars.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watcher_takes_a_whole_run() {
        let stream = Stream {
            system: System::Hubspot,
            object: "contacts".into(),
        };
        let watchers: [Box<dyn Progress>; 3] = [
            Box::new(Silent),
            Box::new(Lines::default()),
            Box::new(Bars::default()),
        ];
        for watcher in watchers {
            watcher.stream_started(&stream, "full");
            for total in [100, 10_100, 20_200] {
                watcher.read(&stream, total);
            }
            watcher.stream_finished(&stream, 20_200, false);
            watcher.reconciled(1_000);
            watcher.written(System::Salesforce, 200);
            watcher.finished();
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_every_ten_thousand_records_not_every_page() {
        let buffer = Shared::default();
        let lines = Lines::to(Box::new(buffer.clone()));
        let stream = Stream {
            system: System::Salesforce,
            object: "Lead".into(),
        };
        lines.stream_started(&stream, "incremental");
        for total in (100..=35_000).step_by(100) {
            lines.read(&stream, total);
        }
        lines.stream_finished(&stream, 35_000, false);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "salesforce Lead: incremental read started\n\
             salesforce Lead: 10000 records read\n\
             salesforce Lead: 20000 records read\n\
             salesforce Lead: 30000 records read\n\
             salesforce Lead: done, 35000 records read\n"
        );
    }
}
