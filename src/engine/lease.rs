//! Leases: with a PostgreSQL warehouse several workers (replicas, overlapping CronJobs) run
//! at once, and each does only the work it holds a lease on — a stream
//! (`stream:<system>:<object>`; a warehouse serves one HubSpot portal and one Salesforce org,
//! so the system names the connection) or the person-wide steps (`persons`: reconcile and
//! write-back). A lease is renewed while its worker works and expires `lease_ttl` after the
//! last renewal, so a crashed worker's work is free again soon after. On SQLite the run holds
//! the whole file, and every lease is its own.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;

use super::StopRequest;
use super::extract::Stream;
use crate::store::model::HandOff;
use crate::store::{StoreError, Warehouse};

/// The lease on reconcile and write-back.
pub(super) const PERSONS: &str = "persons";

/// The prefix of every stream's lease.
pub(super) const STREAM_PREFIX: &str = "stream:";

/// The lease on one stream.
pub(super) fn stream_lease(stream: &Stream) -> String {
    format!("{STREAM_PREFIX}{}:{}", stream.system, stream.object)
}

/// The leases one run holds, renewed in the background until dropped.
pub(super) struct Leases {
    warehouse: Warehouse,
    holder: String,
    ttl: SignedDuration,
    held: Arc<Mutex<BTreeSet<String>>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl Leases {
    /// Leases for one run; on a shared warehouse they are renewed every third of `ttl`, and a
    /// lease found lost (expired and taken by another worker) stops the run through `stop`.
    pub fn new(warehouse: Warehouse, ttl: SignedDuration, stop: StopRequest) -> Self {
        let holder = worker_name();
        let held = Arc::new(Mutex::new(BTreeSet::new()));
        let renewer = warehouse.is_shared().then(|| {
            tokio::spawn(renew(
                warehouse.clone(),
                holder.clone(),
                ttl,
                Arc::clone(&held),
                stop,
            ))
        });
        Self {
            warehouse,
            holder,
            ttl,
            held,
            renewer,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the lease `name`: `None` when this run holds it now, else who holds it, in words.
    pub async fn take(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self
            .warehouse
            .try_lease(name, &self.holder, self.ttl)
            .await?
        {
            None => {
                self.held().insert(name.to_string());
                Ok(None)
            }
            Some((holder, until)) => Ok(Some(format!(
                "worker {holder} holds it (lease until {until})"
            ))),
        }
    }

    /// Lets every lease go; a failure is only logged (the leases expire anyway).
    pub async fn release_all(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.held()).into_iter().collect();
        for name in names {
            if let Err(error) = self.warehouse.release_lease(&name, &self.holder).await {
                tracing::warn!(lease = %name, %error, "could not let a lease go; it expires on its own");
            }
        }
    }

    /// This worker, as leases and `sync_runs` name it (`host/pid/nonce`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The leases' lifetime without renewal.
    pub fn ttl(&self) -> SignedDuration {
        self.ttl
    }

    /// A number from 0 to `count - 1` that differs between workers (from the nonce in the
    /// holder's name, as process ids are all 1 in containers): where this worker starts
    /// through a list that others go through too.
    pub fn turn(&self, count: usize) -> usize {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.holder, &mut hasher);
        (std::hash::Hasher::finish(&hasher) % count.max(1) as u64) as usize
    }

    /// Lets `streams` go and takes [`PERSONS`] unless another worker still reads a stream,
    /// as one step among workers, so the last reader to finish always takes over.
    pub async fn hand_off(&self, streams: Vec<String>) -> Result<HandOff, StoreError> {
        let outcome = self
            .warehouse
            .hand_off(&self.holder, &streams, PERSONS, STREAM_PREFIX, self.ttl)
            .await?;
        // Only once the hand-off committed: a failed one leaves the streams held (and renewed,
        // and let go at the run's end).
        let mut held = self.held();
        for stream in &streams {
            held.remove(stream);
        }
        if outcome == HandOff::Taken {
            held.insert(PERSONS.to_string());
        }
        Ok(outcome)
    }
}

/// Renews the held leases every third of `ttl`. A lease another worker has taken meanwhile, or
/// renewals failing or hanging for two thirds of `ttl`, stop the run: its work may soon no
/// longer be its own.
async fn renew(
    warehouse: Warehouse,
    holder: String,
    ttl: SignedDuration,
    held: Arc<Mutex<BTreeSet<String>>>,
    stop: StopRequest,
) {
    let every = std::time::Duration::try_from(ttl / 3).unwrap_or(std::time::Duration::from_secs(1));
    let mut last_renewal = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let names: Vec<String> = held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if names.is_empty() {
            last_renewal = std::time::Instant::now();
            continue;
        }
        // Stop before the leases can expire and be taken: after two thirds of their life.
        let patience = ttl / 3 * 2;
        let left = std::time::Duration::try_from(patience)
            .unwrap_or_default()
            .saturating_sub(last_renewal.elapsed());
        let renewed = tokio::time::timeout(left, warehouse.renew_leases(names, &holder, ttl))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Worker(
                    "renewing the leases did not answer in time".to_string(),
                ))
            });
        match renewed {
            Ok(lost) => {
                last_renewal = std::time::Instant::now();
                // A lease let go meanwhile (its row deleted) is not lost: only those still held.
                let lost: Vec<String> = {
                    let held = held
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    lost.into_iter()
                        .filter(|name| held.contains(name))
                        .collect()
                };
                if let Some(name) = lost.first() {
                    held.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .retain(|held| !lost.contains(held));
                    tracing::error!(lease = %name, "a lease was lost");
                    stop.request(format!(
                        "the lease on {name} expired and another worker took it; this run stops so that no work is done twice"
                    ));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew the run's leases");
                if SignedDuration::try_from(last_renewal.elapsed())
                    .is_ok_and(|since| since >= patience)
                {
                    stop.request(format!(
                        "the run's leases could not be renewed for {patience:#} ({error}); it stops before another worker may take its work"
                    ));
                }
            }
        }
    }
}

/// `host/pid/nonce`: the pod or machine, the process, and this run.
fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|host| host.trim().to_string())
                .filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_string());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!("{host}/{}/{nonce:08x}", std::process::id())
}
