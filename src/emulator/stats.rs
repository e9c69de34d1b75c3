//! Request counters: every request the emulator answers, by system, endpoint and status, so
//! tests and benchmarks can read API calls per record (`GET /__emulator/stats`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Counts of answered requests.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<StatsSnapshot>,
    /// Requests being answered now, by system.
    in_flight: Mutex<BTreeMap<&'static str, u64>>,
}

/// What `/__emulator/stats` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests by system (`hubspot`, `salesforce`).
    pub requests_by_system: BTreeMap<String, u64>,
    /// Requests by `"<system> <METHOD> <route>"` and status code.
    pub requests_by_endpoint: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Answers with status 429.
    pub rate_limited: u64,
    /// Records created or changed, by `"<system> <object>"`.
    pub records_written: BTreeMap<String, u64>,
    /// The most requests of a system the emulator was answering at once.
    pub peak_in_flight: BTreeMap<String, u64>,
}

/// A request being answered; it is counted out when this is dropped.
pub struct InFlight<'a> {
    stats: &'a Stats,
    system: &'static str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .stats
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(self.system) {
            *count = count.saturating_sub(1);
        }
    }
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a request of `system` in until the returned guard is dropped.
    pub fn enter(&self, system: &'static str) -> InFlight<'_> {
        let now = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = in_flight.entry(system).or_default();
            *count += 1;
            *count
        };
        let mut inner = self.lock();
        let peak = inner.peak_in_flight.entry(system.to_string()).or_default();
        *peak = (*peak).max(now);
        InFlight {
            stats: self,
            system,
        }
    }

    pub fn record(&self, system: &str, endpoint: &str, status: u16) {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *inner
            .requests_by_system
            .entry(system.to_string())
            .or_default() += 1;
        *inner
            .requests_by_endpoint
            .entry(format!("{system} {endpoint}"))
            .or_default()
            .entry(status)
            .or_default() += 1;
        if status == 429 {
            inner.rate_limited += 1;
        }
    }

    pub fn written(&self, system: &str, object: &str, count: usize) {
        if count == 0 {
            return;
        }
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *inner
            .records_written
            .entry(format!("{system} {object}"))
            .or_default() += count as u64;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
