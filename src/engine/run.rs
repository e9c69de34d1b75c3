//! One sync run, step by step (see the module docs of [`crate::engine`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::cursor::Cursor;
use super::extract::{self, Stream};
use super::identity;
use super::lease::{self, Leases};
use super::plan::{self, Wanted};
use super::reconcile::{self, Opinion};
use super::stop::StopRequest;
use super::writeback;
use super::{
    EngineError, RunStatus, StreamOutcome, StreamReport, StreamStop, SyncReport, WarehouseSummary,
};
use crate::config::Config;
use crate::hubspot::client::{HubspotClient, HubspotError};
use crate::hubspot::read::{HubspotReader, ReadError as HubspotReadError};
use crate::mapping::{FieldSource, Mapper, ObjectMapping};
use crate::record::{System, value_text};
use crate::salesforce::client::{SalesforceClient, SalesforceError};
use crate::salesforce::describe::ObjectDescribe;
use crate::salesforce::read::ReadError as SalesforceReadError;
use crate::store::migrations::BulkLoad;
use crate::store::model::HandOff;
use crate::store::model::{
    MemberRow, PendingPosition, PersonCounts, ReconcileCommit, RecordKey, RunRow, TransitionRow,
    UnifiedRow,
};
use crate::store::{StoreError, Warehouse};

/// How long a kept Salesforce describe serves incremental reads.
const DESCRIBE_KEPT_HOURS: i64 = 24;

/// How long a stopped or failed Salesforce read may take to close its Bulk API query jobs.
const BULK_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pending records reconciled per transaction.
const RECONCILE_CHUNK: usize = 1_000;

/// What a run does besides reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    /// Read everything again, ignoring checkpoints.
    pub full: bool,
}

/// Whether a run sends the writes it queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteBack {
    Send,
    /// Leave them queued (`crmsync plan`, on a scratch copy).
    Keep,
}

/// Everything a run needs: configuration, mappings, the warehouse and the CRM clients.
pub struct Engine {
    pub(super) config: Config,
    mapper: Arc<Mapper>,
    warehouse: Warehouse,
    pub(super) hubspot: Option<HubspotClient>,
    pub(super) salesforce: Option<SalesforceClient>,
    pub(super) progress: Arc<dyn super::progress::Progress>,
    pub(super) stop: StopRequest,
    /// Pending records reconciled per chunk (see [`RECONCILE_CHUNK`]).
    reconcile_chunk: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("warehouse", &self.warehouse)
            .field("hubspot", &self.hubspot.is_some())
            .field("salesforce", &self.salesforce.is_some())
            .finish_non_exhaustive()
    }
}

/// Counts a run gathers as it goes.
#[derive(Debug, Default)]
struct Tally {
    read: BTreeMap<System, u64>,
    changed: u64,
    deleted: u64,
    dead_letters: u64,
    reconciled: u64,
    merged_persons: u64,
    stage_changes: u64,
    regressions_refused: u64,
    written: BTreeMap<System, u64>,
    streams: Vec<StreamReport>,
    phases: Vec<(&'static str, f64)>,
    reconcile_chunks: u64,
    reconcile_chunks_read_again: u64,
    stops: Vec<StreamStop>,
    failed: bool,
    /// Why the run ended early on request, if it did (see [`StopRequest`]).
    interrupted: Option<String>,
    /// Work left to other workers (held under their leases), in words.
    skipped: Vec<String>,
}

impl Tally {
    /// Adds what one system's write-back did.
    fn take_write_back(&mut self, system: System, sink: writeback::Sink<'_>) {
        self.failed |= sink.add_to(
            system,
            &mut self.written,
            &mut self.dead_letters,
            &mut self.regressions_refused,
            &mut self.stops,
        );
    }
}

/// A chunk of pending records with everything deciding them needs (see
/// [`Engine::load_chunk`]).
struct LoadedChunk {
    resolution: identity::Resolution,
    /// Every record of each affected person, the chunk's assignments applied.
    persons: BTreeMap<String, Vec<MemberRow>>,
    /// What the warehouse held of the persons (and of persons merged into them).
    previous: HashMap<String, UnifiedRow>,
    /// Hashes of the values crmsync wrote, by record and field.
    ledger: HashMap<RecordKey, HashMap<String, String>>,
    /// How many pending records the chunk holds, and where the last of them stands.
    records: usize,
    last: PendingPosition,
    footprint: Footprint,
}

/// What a chunk's reads looked up and its commit may change: its records and those they link
/// to, the records of its persons, its emails and those of the records it pulled in, and its
/// persons (merged ones included). Two chunks that share none of these cannot see each other's
/// writes.
#[derive(Debug, Default)]
struct Footprint {
    keys: HashSet<RecordKey>,
    emails: HashSet<String>,
    persons: HashSet<String>,
}

impl Footprint {
    fn overlaps(&self, other: &Footprint) -> bool {
        fn meet<T: std::hash::Hash + Eq>(a: &HashSet<T>, b: &HashSet<T>) -> bool {
            let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            small.iter().any(|item| large.contains(item))
        }
        meet(&self.keys, &other.keys)
            || meet(&self.emails, &other.emails)
            || meet(&self.persons, &other.persons)
    }
}

/// A reconciled chunk being committed, and its footprint.
struct Committing {
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
    footprint: Footprint,
    counts: DecidedCounts,
}

/// What deciding a chunk counts: added to the run's tally once the chunk is committed, so a
/// run never reports persons it did not keep.
#[derive(Debug, Default, Clone, Copy)]
struct DecidedCounts {
    reconciled: u64,
    merged_persons: u64,
    regressions_refused: u64,
    stage_changes: u64,
}

/// Waits for a chunk's commit, if one is under way, and counts the chunk once it is kept.
async fn finish_commit(
    committing: Option<Committing>,
    tally: &mut Tally,
) -> Result<(), EngineError> {
    let Some(committing) = committing else {
        return Ok(());
    };
    match committing.task.await {
        Ok(committed) => {
            committed?;
            let counts = committing.counts;
            tally.reconciled += counts.reconciled;
            tally.merged_persons += counts.merged_persons;
            tally.regressions_refused += counts.regressions_refused;
            tally.stage_changes += counts.stage_changes;
            Ok(())
        }
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(StoreError::Worker(error.to_string()).into()),
    }
}

impl Engine {
    /// Connects the enabled CRMs of `config`.
    pub fn connect(
        config: Config,
        mapper: Arc<Mapper>,
        warehouse: Warehouse,
    ) -> Result<Self, EngineError> {
        let settings = crate::http::client::ClientSettings::default();
        let hubspot = if config.hubspot.enabled {
            Some(crate::hubspot::connect::connect(&config.hubspot, settings)?)
        } else {
            None
        };
        let salesforce = if config.salesforce.enabled {
            Some(crate::salesforce::connect::connect(
                &config.salesforce,
                settings,
            )?)
        } else {
            None
        };
        Ok(Self {
            config,
            mapper,
            warehouse,
            hubspot,
            salesforce,
            progress: Arc::new(super::progress::Silent),
            stop: StopRequest::default(),
            reconcile_chunk: RECONCILE_CHUNK,
        })
    }

    /// This engine, telling `progress` how its runs go.
    pub fn with_progress(mut self, progress: Arc<dyn super::progress::Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// This engine, ending its runs early when `stop` is requested (see [`StopRequest`]).
    pub fn with_stop(mut self, stop: StopRequest) -> Self {
        self.stop = stop;
        self
    }

    /// Reconciles about `records` pending records per chunk instead of [`RECONCILE_CHUNK`]
    /// (at least one; an email's records are never split). Persons and their records come out
    /// the same; a person whose records lie in two chunks is decided in each, so its history
    /// may pass through the stage the first gave it. Tests use small chunks to make many.
    pub fn with_reconcile_chunk(mut self, records: usize) -> Self {
        self.reconcile_chunk = records.max(1);
        self
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Where an enabled CRM is reached (HubSpot's base URL, Salesforce's login URL).
    pub(super) fn crm_address(&self, system: System) -> Option<String> {
        match system {
            System::Hubspot => self
                .hubspot
                .as_ref()
                .map(|_| self.config.hubspot.base_url.value.clone()),
            System::Salesforce => self
                .salesforce
                .as_ref()
                .map(|_| self.config.salesforce.login_url.value.clone()),
        }
    }

    /// What each field write-back may set on `system`'s target object is to crmsync.
    pub(super) fn field_kinds(
        &self,
        system: System,
    ) -> HashMap<String, super::saved_plan::FieldKind> {
        use super::saved_plan::FieldKind;
        let target = self.config.write_back.target(system);
        let mut kinds = HashMap::new();
        if let Some(mapping) = self.mapper.object(system, &target.object.value) {
            for write in &mapping.reverse.stages {
                for (property, _) in &write.properties {
                    kinds.insert(property.clone(), FieldKind::Stage);
                }
            }
        }
        if let Some(field) = &target.stage_field {
            kinds.insert(field.value.clone(), FieldKind::SharedStage);
        }
        if let Some(field) = &target.link_field {
            kinds.insert(field.value.clone(), FieldKind::Link);
        }
        kinds
    }

    /// The native fields write-back may set on `system`'s target object: the stage fields of
    /// the reverse mapping, the shared-stage and link fields, the configured fields.
    pub(super) fn writable_fields(&self, system: System) -> std::collections::HashSet<String> {
        let target = self.config.write_back.target(system);
        let mut fields: std::collections::HashSet<String> =
            self.field_kinds(system).into_keys().collect();
        if let Some(mapping) = self.mapper.object(system, &target.object.value) {
            for field in &target.fields {
                fields.extend(
                    mapping
                        .reverse
                        .fields
                        .iter()
                        .filter(|(canonical, _, _)| *canonical == field.value)
                        .map(|(_, native, _)| native.clone()),
                );
            }
        }
        fields
    }

    /// API calls made since `before` (an earlier [`Self::calls`]), per system.
    pub(super) fn calls_since(&self, before: &BTreeMap<System, u64>) -> BTreeMap<System, u64> {
        self.calls()
            .into_iter()
            .map(|(system, after)| {
                (
                    system,
                    after.saturating_sub(before.get(&system).copied().unwrap_or(0)),
                )
            })
            .collect()
    }

    /// API calls made so far, per system.
    pub(super) fn calls(&self) -> BTreeMap<System, u64> {
        let mut calls = BTreeMap::new();
        if let Some(client) = &self.hubspot {
            calls.insert(System::Hubspot, client.calls());
        }
        if let Some(client) = &self.salesforce {
            calls.insert(System::Salesforce, client.calls());
        }
        calls
    }

    /// What this engine's CRM clients have used of each enabled system's API so far.
    pub fn api_usage(&self) -> Vec<super::ApiUsage> {
        let mut usage = Vec::new();
        if let Some(client) = &self.hubspot {
            usage.push(super::ApiUsage {
                system: System::Hubspot,
                calls: client.calls(),
                rate_limited: client.rate_limited(),
                daily_remaining: client.daily_remaining(),
            });
        }
        if let Some(client) = &self.salesforce {
            usage.push(super::ApiUsage {
                system: System::Salesforce,
                calls: client.calls(),
                rate_limited: client.rate_limited(),
                daily_remaining: client.daily_remaining(),
            });
        }
        usage
    }

    /// One run.
    pub async fn sync(&self, options: SyncOptions) -> Result<SyncReport, EngineError> {
        let Some(lock) = self.warehouse.lock_for_run().await? else {
            return Err(EngineError::Busy {
                warehouse: self.warehouse.description().to_string(),
            });
        };
        let report = self.locked_sync(options, WriteBack::Send).await;
        let released = lock.release().await;
        let report = report?;
        released?;
        Ok(report)
    }

    /// A run that reads and reconciles but writes nothing back: on a scratch copy of the
    /// warehouse (see [`super::open_scratch`]), what a sync would write is left queued there.
    /// Takes no run lock: the copy is this process's alone.
    pub(super) async fn run_without_write_back(
        &self,
        options: SyncOptions,
    ) -> Result<SyncReport, EngineError> {
        self.locked_sync(options, WriteBack::Keep).await
    }

    async fn locked_sync(
        &self,
        options: SyncOptions,
        write_back: WriteBack,
    ) -> Result<SyncReport, EngineError> {
        let clock = std::time::Instant::now();
        let calls_before = self.calls();
        let leases = Leases::new(
            self.warehouse.clone(),
            self.config.warehouse.lease_ttl,
            self.stop.clone(),
        );
        let run_id = self
            .warehouse
            .begin_run(Timestamp::now(), leases.holder().to_string(), leases.ttl())
            .await?;
        let mut tally = Tally::default();
        let outcome = self
            .steps(run_id, options, write_back, &leases, &mut tally)
            .instrument(tracing::info_span!("sync_run", run_id))
            .await;
        leases.release_all().await;
        let api_calls = self.calls_since(&calls_before);
        let mut problems = problems_of(&tally.stops, outcome.as_ref().err());
        if let Some(reason) = &tally.interrupted {
            problems.push(format!(
                "the run stopped early ({reason}): what it stored is kept, and the next run goes on from its checkpoints and pending records"
            ));
        }
        let status = if outcome.is_err() || tally.failed {
            RunStatus::Failed
        } else if !tally.stops.is_empty() || tally.dead_letters > 0 || tally.interrupted.is_some() {
            RunStatus::Partial
        } else {
            RunStatus::Complete
        };
        let warehouse = self.summary().await.unwrap_or_default();
        let report = SyncReport {
            run_id,
            status,
            full: options.full,
            read: tally.read.clone(),
            changed: tally.changed,
            deleted: tally.deleted,
            reconciled: tally.reconciled,
            merged_persons: tally.merged_persons,
            stage_changes: tally.stage_changes,
            written: tally.written.clone(),
            dead_letters: tally.dead_letters,
            regressions_refused: tally.regressions_refused,
            api_calls,
            streams: tally.streams.clone(),
            problems,
            skipped: tally.skipped.clone(),
            warehouse,
            seconds: clock.elapsed().as_secs_f64(),
            peak_rss_bytes: super::peak_rss_bytes(),
            phase_seconds: tally.phases.iter().copied().collect(),
            reconcile_chunks: tally.reconcile_chunks,
            reconcile_chunks_read_again: tally.reconcile_chunks_read_again,
        };
        let row = RunRow {
            records_read: report.read.values().sum(),
            records_changed: report.changed,
            records_written: report.written.values().sum(),
            records_dead_lettered: report.dead_letters,
            persons: report.reconciled,
            regressions_refused: report.regressions_refused,
            ..RunRow::ended(
                status.as_str(),
                &report.api_calls,
                &report.problems,
                serde_json::to_string(&report).ok(),
            )
        };
        self.progress.finished();
        let finished = self.warehouse.finish_run(run_id, row).await;
        // The run's own error matters more than a failure to record it.
        if let Err(error) = outcome {
            return Err(EngineError::RunFailed(Box::new(super::RunFailure {
                report,
                error,
            })));
        }
        finished?;
        Ok(report)
    }

    /// The run's steps on the work its leases give it: the streams no other worker reads
    /// now, then reconcile and write-back if no other worker is still reading a stream (the
    /// last reader to finish does them, on everything read).
    async fn steps(
        &self,
        run_id: i64,
        options: SyncOptions,
        write_back: WriteBack,
        leases: &Leases,
        tally: &mut Tally,
    ) -> Result<(), EngineError> {
        let mut streams = self.streams()?;
        let configured: Vec<(System, String)> = streams
            .iter()
            .map(|(stream, _)| (stream.system, stream.object.clone()))
            .collect();
        // Workers starting together try the streams in different orders, so they share
        // them out rather than one taking all.
        if !streams.is_empty() {
            let turn = leases.turn(streams.len());
            streams.rotate_left(turn);
        }
        let mut mine = Vec::new();
        for (stream, mapping) in streams {
            match leases.take(&lease::stream_lease(&stream)).await? {
                None => mine.push((stream, mapping)),
                Some(held) if options.full => tally.skipped.push(format!(
                    "{stream}: {held} — not read again in full by this run (run --full again once it is free)"
                )),
                Some(held) => tally.skipped.push(format!("{stream}: {held}")),
            }
        }
        if options.full {
            let keys = mine
                .iter()
                .map(|(stream, _)| (stream.system, stream.object.clone()))
                .collect();
            self.warehouse.clear_checkpoints(keys).await?;
        }
        let cursors = self.cursors().await?;
        let phase = std::time::Instant::now();
        // A bulk load a crash cut short left indexes out; the run holds the warehouse now.
        let rebuilt = self.warehouse.restore_indexes().await?;
        if !rebuilt.is_empty() {
            tracing::info!(indexes = ?rebuilt, "built the indexes an interrupted bulk load left out");
        }
        // On an error the stream leases are let go with the rest, at the run's end.
        self.with_indexes_deferred(
            BulkLoad::Records,
            self.extract(run_id, &mine, &cursors, tally),
        )
        .await?;
        let read: Vec<String> = mine
            .iter()
            .map(|(stream, _)| lease::stream_lease(stream))
            .collect();
        tally
            .phases
            .push(("extract", phase.elapsed().as_secs_f64()));
        if self.stopped(tally) {
            return Ok(());
        }
        match leases.hand_off(read).await? {
            HandOff::Taken => {}
            HandOff::HeldBy(holder, until) => {
                tally.skipped.push(format!(
                    "reconcile and write-back: worker {holder} holds them (lease until {until}); records read meanwhile wait for the next run"
                ));
                return Ok(());
            }
            HandOff::Readers(readers) => {
                let reading: Vec<String> = readers
                    .iter()
                    .map(|(name, holder)| {
                        format!(
                            "{} by {holder}",
                            name.trim_start_matches(lease::STREAM_PREFIX)
                        )
                    })
                    .collect();
                tally.skipped.push(format!(
                    "reconcile and write-back: left to the workers still reading ({}); the last to finish does them",
                    reading.join(", ")
                ));
                return Ok(());
            }
        }
        let phase = std::time::Instant::now();
        self.reconcile(run_id, tally)
            .instrument(tracing::info_span!("reconcile"))
            .await?;
        tally
            .phases
            .push(("reconcile", phase.elapsed().as_secs_f64()));
        if self.stopped(tally) || write_back == WriteBack::Keep {
            return Ok(());
        }
        let phase = std::time::Instant::now();
        // Each system is written at once with the other: their API budgets are their own.
        // A system whose last read of a configured stream stopped or failed — in this run or,
        // with several workers, in another's — is not written to: its stored values may be
        // stale, and writing from them could undo edits made since.
        let unfinished: Vec<_> = self
            .warehouse
            .unfinished_reads()
            .await?
            .into_iter()
            .filter(|read| configured.contains(&(read.system, read.object.clone())))
            .collect();
        let mut write_backs = Vec::new();
        for system in System::ALL {
            let read_stopped = tally.stops.iter().any(|stop| stop.system == system);
            if read_stopped {
                tracing::warn!(%system, "no write-back: this run's read of it stopped");
                continue;
            }
            if let Some(read) = unfinished.iter().find(|read| read.system == system) {
                let why = format!(
                    "no write-back to {system}: the last read of {} {} ended {} ({}); the next complete read lets it write again",
                    system,
                    read.object,
                    read.status,
                    read.message.as_deref().unwrap_or("no details")
                );
                tracing::warn!(%system, "{why}");
                tally.stops.push(StreamStop {
                    system,
                    message: why,
                    resumable: true,
                });
                continue;
            }
            let span = tracing::info_span!(
                "write_back",
                %system,
                object = %self.config.write_back.target(system).object.value
            );
            write_backs.push(
                async move {
                    let mut sink = writeback::Sink::new(self.progress.as_ref());
                    let result =
                        writeback::write_back(self.writeback_context(system), run_id, &mut sink)
                            .await;
                    (system, sink, result)
                }
                .instrument(span),
            );
        }
        let mut first_error = None;
        for (system, sink, result) in futures_util::future::join_all(write_backs).await {
            tally.take_write_back(system, sink);
            if let Err(error) = result {
                if first_error.is_some() {
                    // Only one error ends the run; the other is told here.
                    tracing::error!(%system, %error, "write-back failed");
                } else {
                    first_error = Some(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        tally
            .phases
            .push(("write_back", phase.elapsed().as_secs_f64()));
        self.stopped(tally);
        Ok(())
    }

    /// Whether a stop was requested; if so, the run's tally says why.
    fn stopped(&self, tally: &mut Tally) -> bool {
        let Some(reason) = self.stop.reason() else {
            return false;
        };
        tally.interrupted.get_or_insert(reason);
        true
    }

    pub(super) fn writeback_context(&self, system: System) -> writeback::Context<'_> {
        writeback::Context {
            system,
            target: self.config.write_back.target(system),
            warehouse: &self.warehouse,
            hubspot: self.hubspot.as_ref(),
            stop: &self.stop,
            salesforce: self.salesforce.as_ref(),
        }
    }

    async fn cursors(&self) -> Result<HashMap<(String, String), Cursor>, EngineError> {
        let mut cursors = HashMap::new();
        for (system, object, text) in self.warehouse.checkpoints().await? {
            let cursor = Cursor::parse(&system, &object, &text)?;
            cursors.insert((system, object), cursor);
        }
        Ok(cursors)
    }

    /// The streams of the run: every configured object of every enabled CRM.
    fn streams(&self) -> Result<Vec<(Stream, &ObjectMapping)>, EngineError> {
        let mut streams = Vec::new();
        let systems = [
            (
                System::Hubspot,
                self.hubspot.is_some(),
                &self.config.hubspot.objects,
            ),
            (
                System::Salesforce,
                self.salesforce.is_some(),
                &self.config.salesforce.objects,
            ),
        ];
        for (system, enabled, objects) in systems {
            if !enabled {
                continue;
            }
            for object in objects {
                let mapping = self.mapper.object(system, &object.value).ok_or_else(|| {
                    EngineError::Unmapped {
                        system,
                        object: object.value.clone(),
                    }
                })?;
                streams.push((
                    Stream {
                        system,
                        object: object.value.clone(),
                    },
                    mapping,
                ));
            }
        }
        Ok(streams)
    }

    /// The native properties a stream reads: everything its mapping and write-back use.
    fn read_properties(&self, stream: &Stream, mapping: &ObjectMapping) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for rule in &mapping.rules {
            names.extend(rule.properties().map(str::to_string));
        }
        for field in &mapping.fields {
            match &field.source {
                FieldSource::Property(property) => {
                    names.insert(property.clone());
                }
                FieldSource::Concat { properties, .. } => names.extend(properties.iter().cloned()),
            }
        }
        for condition in &mapping.reverse.requires {
            names.insert(condition.property.clone());
        }
        names.extend(
            mapping
                .stage_dates
                .iter()
                .map(|(_, property)| property.clone()),
        );
        for write in &mapping.reverse.stages {
            names.extend(write.properties.iter().map(|(name, _)| name.clone()));
        }
        names.extend(
            mapping
                .reverse
                .fields
                .iter()
                .map(|(_, native, _)| native.clone()),
        );
        let target = self.config.write_back.target(stream.system);
        if target.object.value == stream.object {
            names.extend(target.stage_field.iter().map(|field| field.value.clone()));
            names.extend(target.link_field.iter().map(|field| field.value.clone()));
        }
        names.into_iter().collect()
    }

    /// Reads `streams`, concurrently, into the warehouse.
    async fn extract(
        &self,
        run_id: i64,
        streams: &[(Stream, &ObjectMapping)],
        cursors: &HashMap<(String, String), Cursor>,
        tally: &mut Tally,
    ) -> Result<(), EngineError> {
        let mut reads = Vec::new();
        let mut modes = Vec::new();
        for (stream, mapping) in streams {
            let properties = self.read_properties(stream, mapping);
            let cursor = cursors
                .get(&(stream.system.as_str().to_string(), stream.object.clone()))
                .cloned();
            let mode = match &cursor {
                None => "full",
                Some(Cursor::Incremental { .. }) => "incremental",
                Some(_) => "resumed",
            };
            modes.push(mode);
            self.progress.stream_started(stream, mode);
            reads.push(self.extract_stream(run_id, stream, properties, cursor));
        }
        let results = futures_util::future::join_all(reads).await;
        // How each read ended is recorded first, all of them, for the workers that write back;
        // then the first error ends the run.
        for (stream, result) in streams.iter().map(|(stream, _)| stream).zip(&results) {
            let (status, message) = match result {
                Err(error) => ("failed", Some(error.to_string())),
                Ok((outcome, _)) if outcome.rejected_values > 0 => (
                    "failed",
                    Some("stage values the mapping rejects".to_string()),
                ),
                Ok((_, None)) => ("complete", None),
                Ok((_, Some(stop))) if stop.resumable => ("stopped", Some(stop.message.clone())),
                Ok((_, Some(stop))) => ("failed", Some(stop.message.clone())),
            };
            self.warehouse
                .record_read(
                    stream.system,
                    stream.object.clone(),
                    status,
                    message,
                    run_id,
                    Timestamp::now(),
                )
                .await?;
        }
        // A stream's error ends the run once every other stream's read is counted.
        let mut first_error: Option<EngineError> = None;
        for (((stream, _), result), mode) in streams.iter().zip(results).zip(modes) {
            let (outcome, stop) = match result {
                Ok(read) => read,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            self.progress
                .stream_finished(stream, outcome.read, stop.is_some());
            tally.streams.push(StreamReport {
                system: stream.system,
                object: stream.object.clone(),
                mode,
                read: outcome.read,
                changed: outcome.changed,
                deleted: outcome.deleted,
                seconds: outcome.seconds,
                stopped: stop.as_ref().map(|stop| stop.message.clone()),
            });
            *tally.read.entry(stream.system).or_default() += outcome.read;
            tally.changed += outcome.changed;
            tally.deleted += outcome.deleted;
            tally.dead_letters += outcome.dead_letters;
            if outcome.rejected_values > 0 {
                tally.failed = true;
                tally.stops.push(StreamStop {
                    system: stream.system,
                    message: format!(
                        "{stream}: {} record(s) have stage values the mapping rejects (on_unknown = \"error\"); see dead_letters and fix the mapping",
                        outcome.rejected_values
                    ),
                    resumable: false,
                });
            }
            if let Some(stop) = stop {
                tracing::warn!(stream = %stream, error = %stop.message, "stream stopped");
                if !stop.resumable {
                    tally.failed = true;
                }
                tally.stops.push(stop);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn extract_stream(
        &self,
        run_id: i64,
        stream: &Stream,
        properties: Vec<String>,
        cursor: Option<Cursor>,
    ) -> Result<(StreamOutcome, Option<StreamStop>), EngineError> {
        let span = tracing::info_span!("extract", system = %stream.system, object = %stream.object);
        let clock = std::time::Instant::now();
        let result = async {
            match stream.system {
                System::Hubspot => {
                    let Some(client) = &self.hubspot else {
                        return Ok((StreamOutcome::default(), None));
                    };
                    self.extract_hubspot(run_id, stream, client, properties, cursor)
                        .await
                }
                System::Salesforce => {
                    let Some(client) = &self.salesforce else {
                        return Ok((StreamOutcome::default(), None));
                    };
                    self.extract_salesforce(run_id, stream, client, properties, cursor)
                        .await
                }
            }
        }
        .instrument(span)
        .await;
        result.map(|(mut outcome, stop)| {
            outcome.seconds = clock.elapsed().as_secs_f64();
            (outcome, stop)
        })
    }

    async fn extract_hubspot(
        &self,
        run_id: i64,
        stream: &Stream,
        client: &HubspotClient,
        properties: Vec<String>,
        cursor: Option<Cursor>,
    ) -> Result<(StreamOutcome, Option<StreamStop>), EngineError> {
        let reader = HubspotReader::new(client);
        let started = read_started(client.server_clock());
        let (sender, receiver) = mpsc::channel(extract::CHANNEL_DEPTH);
        let object = stream.object.as_str();
        let cursor_kind = ReadKind::of(cursor.as_ref());
        // The archived listing is read whole, so it is swept every `archived_sweep_minutes`
        // (and by every full or resumed read), from where the last sweep started.
        let unswept = match &cursor {
            Some(Cursor::Incremental {
                since,
                archived_since,
            }) => Some(archived_since.unwrap_or(*since)),
            _ => None,
        };
        let interval =
            jiff::SignedDuration::from_mins(i64::from(self.config.hubspot.archived_sweep_minutes));
        let sweep = interval.is_zero()
            || unswept.is_none_or(|unswept| started.duration_since(unswept) >= interval);
        let read = async move {
            let result = match &cursor {
                Some(Cursor::Incremental { since, .. }) => {
                    reader
                        .incremental_sweeping(
                            object,
                            &properties,
                            *since,
                            unswept.unwrap_or(*since),
                            sweep,
                            &sender,
                        )
                        .await
                }
                Some(other) => match other.hubspot_point() {
                    Some(point) => reader.resume(object, &properties, point, &sender).await,
                    None => reader.full(object, &properties, &sender).await,
                },
                None => reader.full(object, &properties, &sender).await,
            };
            drop(sender);
            result
        };
        let store = extract::consume(
            stream,
            run_id,
            &self.mapper,
            &self.warehouse,
            self.progress.as_ref(),
            receiver,
            Cursor::from_hubspot,
        );
        let (read, stored) = tokio::join!(self.until_stopped(read), store);
        let read = match read {
            Some(read) => read,
            None => return self.finish_stopped(stream, stored?),
        };
        let read = read
            .map(|summary| summary.high_water)
            .map_err(|error| StreamStop {
                system: stream.system,
                resumable: matches!(
                    &error,
                    HubspotReadError::Api(
                        HubspotError::DailyLimit { .. } | HubspotError::DailyReserve { .. }
                    )
                ),
                message: format!("HubSpot {}: {error}", stream.object),
            });
        let archived_since = (!sweep).then_some(unswept).flatten();
        self.finish_read(
            run_id,
            stream,
            cursor_kind,
            started,
            archived_since,
            read,
            stored?,
        )
        .await
    }

    async fn extract_salesforce(
        &self,
        run_id: i64,
        stream: &Stream,
        client: &SalesforceClient,
        properties: Vec<String>,
        cursor: Option<Cursor>,
    ) -> Result<(StreamOutcome, Option<StreamStop>), EngineError> {
        // A full or resumed read describes the object afresh; an incremental one may use the
        // field list kept from an earlier run.
        let full = !matches!(cursor, Some(Cursor::Incremental { .. }));
        let (describe, from_cache) = match self
            .describe_for_read(client, &stream.object, &properties, full)
            .await
        {
            Ok(found) => found,
            Err(error) => {
                let budget = is_salesforce_budget(&error);
                return Ok((
                    StreamOutcome::default(),
                    Some(StreamStop {
                        system: stream.system,
                        message: format!("Salesforce {}: {error}", stream.object),
                        resumable: budget,
                    }),
                ));
            }
        };
        // Fields the org lacks are left out (the mapping reads them as empty), with a warning.
        let (fields, missing): (Vec<String>, Vec<String>) = properties
            .into_iter()
            .partition(|field| describe.field(field).is_some());
        if !missing.is_empty() {
            tracing::warn!(object = %stream.object, missing = ?missing, "the org has no such fields; they read as empty");
        }
        let started = read_started(client.server_clock());
        let mut reader = crate::salesforce::connect::reader(client, &self.config.salesforce);
        reader.bulk_threshold = self.config.salesforce.bulk_threshold;
        let (sender, receiver) = mpsc::channel(extract::CHANNEL_DEPTH);
        let describe_ref = &describe;
        let cursor_kind = ReadKind::of(cursor.as_ref());
        let read = async move {
            let result = match &cursor {
                Some(Cursor::Incremental { since, .. }) => {
                    reader
                        .incremental(describe_ref, &fields, *since, &sender)
                        .await
                }
                Some(other) => match other.salesforce_point() {
                    Some(point) => reader.resume(describe_ref, &fields, point, &sender).await,
                    None => reader.full(describe_ref, &fields, &sender).await,
                },
                None => reader.full(describe_ref, &fields, &sender).await,
            };
            drop(sender);
            result
        };
        let store = extract::consume(
            stream,
            run_id,
            &self.mapper,
            &self.warehouse,
            self.progress.as_ref(),
            receiver,
            Cursor::from_salesforce,
        );
        let (read, stored) = tokio::join!(self.until_stopped(read), store);
        let read = match read {
            Some(read) => read,
            None => {
                self.close_bulk_jobs(client, &stream.object).await;
                return self.finish_stopped(stream, stored?);
            }
        };
        if read.is_err() {
            self.close_bulk_jobs(client, &stream.object).await;
        }
        let read = read.map(|summary| summary.high_water).map_err(|error| {
            let stale = from_cache
                && matches!(&error, SalesforceReadError::Api(SalesforceError::Rejected(refusal))
                    if refusal.error_code == "INVALID_FIELD");
            StreamStop {
                system: stream.system,
                resumable: matches!(&error, SalesforceReadError::Api(api) if is_salesforce_budget(api)),
                message: if stale {
                    format!(
                        "Salesforce {}: {error} (the field list kept from an earlier run is out of date; the next run describes {} afresh)",
                        stream.object, stream.object
                    )
                } else {
                    format!("Salesforce {}: {error}", stream.object)
                },
            }
        });
        if from_cache && read.is_err() {
            // Whatever stopped the read, the next run describes the object afresh.
            self.forget_describe(&stream.object).await;
        }
        self.finish_read(run_id, stream, cursor_kind, started, None, read, stored?)
            .await
    }

    /// Ends the Bulk API query jobs a Salesforce read of `object` left part-read (see
    /// [`crate::salesforce::bulk::close_open_jobs`]), within [`BULK_CLOSE_GRACE`] — a stopping
    /// run must not wait long on it; a job left is dropped by Salesforce after some days.
    async fn close_bulk_jobs(&self, client: &SalesforceClient, object: &str) {
        let closing = crate::salesforce::bulk::close_open_jobs(client, object);
        match tokio::time::timeout(BULK_CLOSE_GRACE, closing).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(
                object,
                closed,
                "deleted the part-read Bulk API query job(s)"
            ),
            Err(_) => tracing::warn!(
                object,
                "the part-read Bulk API query job(s) were not closed within {} s; Salesforce drops them after some days",
                BULK_CLOSE_GRACE.as_secs()
            ),
        }
    }

    /// `read` to its end, or `None` once a stop is requested: the read is dropped there (its
    /// store takes what the read sent before) and the stream resumes from its last stored
    /// checkpoint next run.
    async fn until_stopped<T>(&self, read: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            result = read => Some(result),
            () = self.stop.requested() => None,
        }
    }

    /// A stream whose read was stopped on request: what was stored stands, the checkpoint
    /// stays at the last stored page.
    fn finish_stopped(
        &self,
        stream: &Stream,
        outcome: StreamOutcome,
    ) -> Result<(StreamOutcome, Option<StreamStop>), EngineError> {
        let reason = self.stop.reason().unwrap_or_default();
        let stop = StreamStop {
            system: stream.system,
            message: format!(
                "{stream}: the read stopped ({reason}) after {} record(s); the next run resumes from the last stored page",
                outcome.read
            ),
            resumable: true,
        };
        Ok((outcome, Some(stop)))
    }

    /// The object's describe for a read: kept in the warehouse for a day, so incremental runs
    /// make no call for it. A kept one is used only while it knows every field the read wants
    /// (a field created since is seen at once); `fresh` fetches anew. Keeping is a saving, not
    /// a duty: warehouse trouble here only costs the call.
    async fn describe_for_read(
        &self,
        client: &SalesforceClient,
        object: &str,
        wanted: &[String],
        fresh: bool,
    ) -> Result<(ObjectDescribe, bool), SalesforceError> {
        let name = self.describe_cache_name(object);
        if !fresh {
            let kept = match self
                .warehouse
                .cached(System::Salesforce, name.clone())
                .await
            {
                Ok(kept) => kept,
                Err(error) => {
                    tracing::warn!(%object, %error, "cannot read the kept describe; describing afresh");
                    None
                }
            };
            let lifetime = jiff::SignedDuration::from_hours(DESCRIBE_KEPT_HOURS);
            if let Some((fetched_at, body)) = kept
                && Timestamp::now().duration_since(fetched_at) < lifetime
                && let Ok(describe) = serde_json::from_str::<ObjectDescribe>(&body)
                && wanted.iter().all(|field| describe.field(field).is_some())
            {
                return Ok((describe, true));
            }
        }
        let describe = ObjectDescribe::load(client, object).await?;
        if let Ok(body) = serde_json::to_string(&describe) {
            let kept = self
                .warehouse
                .keep_cached(System::Salesforce, name, Some((Timestamp::now(), body)))
                .await;
            if let Err(error) = kept {
                tracing::warn!(%object, %error, "cannot keep the describe for later runs");
            }
        }
        Ok((describe, false))
    }

    /// The describe's name in `api_cache`: by object, API version and the org's sign-in
    /// address, so a warehouse pointed at another org (a sandbox) does not reuse it.
    fn describe_cache_name(&self, object: &str) -> String {
        let settings = &self.config.salesforce;
        let user = match &settings.auth {
            Some(crate::config::SalesforceAuth::JwtBearer { username, .. }) => username.as_str(),
            _ => "",
        };
        format!(
            "describe/{object}/v{}/{}/{user}",
            settings.api_version.value, settings.login_url.value
        )
    }

    async fn forget_describe(&self, object: &str) {
        let forgot = self
            .warehouse
            .keep_cached(System::Salesforce, self.describe_cache_name(object), None)
            .await;
        if let Err(error) = forgot {
            tracing::warn!(%object, %error, "cannot forget the kept describe");
        }
    }

    /// After a stream's read: a finished read stores where the next one starts (and where
    /// archives not swept yet start, when this read did not sweep them); a stopped one keeps
    /// the checkpoint its last stored page left.
    #[allow(clippy::too_many_arguments)]
    async fn finish_read(
        &self,
        run_id: i64,
        stream: &Stream,
        kind: ReadKind,
        started: Timestamp,
        archived_since: Option<Timestamp>,
        read: Result<Option<Timestamp>, StreamStop>,
        mut outcome: StreamOutcome,
    ) -> Result<(StreamOutcome, Option<StreamStop>), EngineError> {
        match read {
            Ok(high_water) => {
                let cursor = Cursor::Incremental {
                    since: next_since(&kind, high_water, started),
                    archived_since,
                };
                self.final_checkpoint(run_id, stream, cursor, &mut outcome)
                    .await?;
                Ok((outcome, None))
            }
            Err(stop) => Ok((outcome, Some(stop))),
        }
    }

    async fn final_checkpoint(
        &self,
        run_id: i64,
        stream: &Stream,
        cursor: Cursor,
        outcome: &mut StreamOutcome,
    ) -> Result<(), EngineError> {
        let mut page = crate::store::model::PageWrite {
            checkpoint: Some(cursor.to_json()),
            ..Default::default()
        };
        extract::store(stream, run_id, &self.warehouse, &mut page, outcome).await
    }

    /// Runs a bulk load with the indexes it does not read built after it rather than row by
    /// row during it, where that is worth it (see `DeferrableIndex`); whatever the load's
    /// outcome, they are built again before anything else runs.
    async fn with_indexes_deferred<T>(
        &self,
        load: BulkLoad,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let deferred = self.warehouse.defer_indexes(load).await?;
        if !deferred.is_empty() {
            tracing::info!(?load, indexes = ?deferred, "indexes are built after this bulk load");
        }
        let outcome = work.await;
        let clock = std::time::Instant::now();
        match self.warehouse.restore_indexes().await {
            Ok(built) if !built.is_empty() => tracing::info!(
                indexes = ?built,
                ms = clock.elapsed().as_millis() as u64,
                "built the indexes left out of a bulk load"
            ),
            Ok(_) => {}
            // The load's own error is the one reported; the next sync builds them.
            Err(error) if outcome.is_err() => tracing::warn!(
                %error,
                "could not build the indexes left out of a bulk load; the next sync builds them"
            ),
            Err(error) => return Err(error.into()),
        }
        outcome
    }

    /// Reconciles every pending record, a chunk at a time.
    async fn reconcile(&self, run_id: i64, tally: &mut Tally) -> Result<(), EngineError> {
        self.with_indexes_deferred(BulkLoad::Persons, self.reconcile_all(run_id, tally))
            .await
    }

    /// Reconciles the pending records a chunk at a time, in email order. Each chunk commits
    /// while the next is read (on the warehouse's reading connection, which sees the commits
    /// before it) and decided: the commit's writing and the reading and deciding use a core
    /// each. A chunk read while the one before it commits sees the warehouse without that
    /// chunk; it is read again after the commit if the two share a record, an email or a
    /// person (see [`Footprint`]) — otherwise nothing that commit changes is anything its
    /// reads found.
    async fn reconcile_all(&self, run_id: i64, tally: &mut Tally) -> Result<(), EngineError> {
        let mut after: Option<PendingPosition> = None;
        let mut committing: Option<Committing> = None;
        let mut next_number = match self.warehouse.next_person_number().await {
            Ok(number) => number,
            Err(error) => return Err(error.into()),
        };
        let outcome = loop {
            // A stop keeps the chunk committing; the records after it wait for the next run.
            if self.stop.is_requested() {
                break Ok(());
            }
            let clock = std::time::Instant::now();
            let mut loaded = match self.read_chunk(after.clone(), next_number).await {
                Ok(Some(loaded)) => loaded,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if let Some(previous) = &committing
                && loaded.footprint.overlaps(&previous.footprint)
            {
                if let Err(error) = finish_commit(committing.take(), tally).await {
                    break Err(error);
                }
                tally.reconcile_chunks_read_again += 1;
                loaded = match self.read_chunk(after.clone(), next_number).await {
                    Ok(Some(loaded)) => loaded,
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                };
            }
            let read = clock.elapsed();
            tally.reconcile_chunks += 1;
            let records = loaded.records;
            after = Some(loaded.last.clone());
            next_number = loaded.resolution.next_number;
            let footprint = std::mem::take(&mut loaded.footprint);
            let mut counts = DecidedCounts::default();
            let commit = self.decide_chunk(loaded, &mut counts);
            let decided = clock.elapsed();
            if let Err(error) = finish_commit(committing.take(), tally).await {
                break Err(error);
            }
            let warehouse = self.warehouse.clone();
            committing = Some(Committing {
                task: tokio::spawn(async move {
                    warehouse
                        .commit_reconcile(run_id, Timestamp::now(), commit)
                        .await
                }),
                footprint,
                counts,
            });
            // Decided persons, the chunk committing among them.
            self.progress
                .reconciled(tally.reconciled + counts.reconciled);
            tracing::debug!(
                records,
                read_ms = read.as_millis() as u64,
                decide_ms = (decided - read).as_millis() as u64,
                commit_wait_ms = (clock.elapsed() - decided).as_millis() as u64,
                "reconciled a chunk"
            );
        };
        // A chunk decided in full is kept (and counted) whatever ends the loop.
        let finished = finish_commit(committing.take(), tally).await;
        tracing::debug!(
            chunks = tally.reconcile_chunks,
            read_again = tally.reconcile_chunks_read_again,
            "reconcile read its chunks"
        );
        match (outcome, finished) {
            (Err(error), Err(commit_error)) => {
                tracing::warn!(error = %commit_error, "could not commit the last reconciled chunk");
                Err(error)
            }
            (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// The next chunk of pending records after `after`, loaded (`None` when none is left);
    /// persons it founds are numbered from `next_number`.
    async fn read_chunk(
        &self,
        after: Option<PendingPosition>,
        next_number: i64,
    ) -> Result<Option<LoadedChunk>, EngineError> {
        let chunk = self
            .warehouse
            .pending_records(after, self.reconcile_chunk)
            .await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        self.load_chunk(chunk, next_number).await.map(Some)
    }

    fn is_person(&self, key: &RecordKey) -> bool {
        self.mapper.holds_people(key.system, &key.object)
    }

    /// Reads what deciding a chunk needs: its persons (identity resolved), every record of
    /// them, what the warehouse held of them, and the ledger of their records.
    async fn load_chunk(
        &self,
        chunk: Vec<MemberRow>,
        next_number: i64,
    ) -> Result<LoadedChunk, EngineError> {
        let clock = std::time::Instant::now();
        let records = chunk.len();
        let last = chunk
            .last()
            .map(PendingPosition::of)
            .ok_or_else(|| StoreError::Worker("an empty reconcile chunk".into()))?;
        let mut footprint = Footprint::default();
        for row in &chunk {
            footprint.keys.insert(row.key.clone());
            if let Some(email) = row.email.as_ref().filter(|email| !email.is_empty()) {
                footprint.emails.insert(email.clone());
            }
            footprint.persons.extend(row.unified_id.iter().cloned());
        }
        let mut resolution = identity::resolve(
            &self.warehouse,
            &chunk,
            |key| self.is_person(key),
            next_number,
        )
        .await?;
        let resolved = clock.elapsed();
        let absorbed: Vec<String> = resolution
            .merges
            .iter()
            .map(|merge| merge.absorbed.clone())
            .collect();
        let mut lookup: Vec<String> = resolution.affected.iter().cloned().collect();
        lookup.extend(absorbed.iter().cloned());
        footprint.keys.extend(resolution.linked.iter().cloned());
        // A record pulled in from a later email changes what that email's lookups find (the
        // footprint's emails include those of the records pulled in).
        let pulled = std::mem::take(&mut resolution.pulled);
        footprint.emails.extend(
            pulled
                .iter()
                .filter_map(|row| row.email.clone())
                .filter(|email| !email.is_empty()),
        );
        // Every person a lookup found (by email, link or the record's own) is in `lookup`:
        // as the person a record joins, or as one merged into it.
        footprint.persons.extend(lookup.iter().cloned());
        // Every record of the affected persons, with the chunk's decisions applied.
        let assigned: HashMap<&RecordKey, &Option<String>> = resolution
            .assignments
            .iter()
            .map(|assignment| (&assignment.key, &assignment.unified_id))
            .collect();
        let mut members: BTreeMap<RecordKey, MemberRow> = BTreeMap::new();
        for mut row in self.warehouse.members_of(lookup.clone()).await? {
            footprint.keys.insert(row.key.clone());
            row.unified_id = match assigned.get(&row.key) {
                Some(person) => (*person).clone(),
                None => row.unified_id.map(|id| resolution.resolve(&id).to_string()),
            };
            members.insert(row.key.clone(), row);
        }
        for mut row in chunk.into_iter().chain(pulled) {
            if let Some(person) = assigned.get(&row.key) {
                row.unified_id = (*person).clone();
                members.insert(row.key.clone(), row);
            }
        }
        let mut persons: BTreeMap<String, Vec<MemberRow>> = BTreeMap::new();
        for row in members.into_values() {
            if let Some(person) = row.unified_id.clone()
                && resolution.affected.contains(&person)
            {
                persons.entry(person).or_default().push(row);
            }
        }
        let previous: HashMap<String, UnifiedRow> = self
            .warehouse
            .unified(lookup)
            .await?
            .into_iter()
            .map(|row| (row.unified_id.clone(), row))
            .collect();
        let keys: Vec<RecordKey> = persons
            .values()
            .flatten()
            .filter(|row| !row.archived)
            .map(|row| row.key.clone())
            .collect();
        let mut ledger: HashMap<RecordKey, HashMap<String, String>> = HashMap::new();
        for row in self.warehouse.ledger(keys).await? {
            ledger
                .entry(row.key)
                .or_default()
                .insert(row.field, row.value_hash);
        }

        tracing::debug!(
            resolve_ms = resolved.as_millis() as u64,
            load_ms = (clock.elapsed() - resolved).as_millis() as u64,
            "loaded a chunk's persons"
        );
        Ok(LoadedChunk {
            resolution,
            persons,
            previous,
            ledger,
            records,
            last,
            footprint,
        })
    }

    /// Decides a loaded chunk's persons and the writes they call for.
    fn decide_chunk(&self, loaded: LoadedChunk, counts: &mut DecidedCounts) -> ReconcileCommit {
        let LoadedChunk {
            resolution,
            persons,
            previous,
            ledger,
            ..
        } = loaded;
        let mut commit = ReconcileCommit {
            assignments: resolution.assignments.clone(),
            merges: resolution.merges.clone(),
            person_numbers: Some((resolution.first_number, resolution.next_number)),
            ..Default::default()
        };
        counts.merged_persons += commit.merges.len() as u64;
        let now = Timestamp::now();
        for (unified_id, records) in &persons {
            // A merged-away person's history carries over to the survivor.
            let mut before: Option<UnifiedRow> = previous.get(unified_id).cloned();
            for merge in &resolution.merges {
                if resolution.resolve(&merge.survivor) == unified_id
                    && let Some(absorbed) = previous.get(&merge.absorbed)
                {
                    let base = before.get_or_insert_with(|| UnifiedRow {
                        unified_id: unified_id.clone(),
                        ..absorbed.clone()
                    });
                    for (stage, at) in &absorbed.first_entered {
                        let entry = base.first_entered.entry(stage.clone()).or_insert(*at);
                        *entry = (*entry).min(*at);
                    }
                    base.created_at = match (base.created_at, absorbed.created_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            self.reconcile_person(
                unified_id,
                records,
                before,
                &ledger,
                now,
                &mut commit,
                counts,
            );
        }
        commit
    }

    /// Decides one person and the writes it calls for.
    #[allow(clippy::too_many_arguments)]
    fn reconcile_person(
        &self,
        unified_id: &str,
        records: &[MemberRow],
        before: Option<UnifiedRow>,
        ledger: &HashMap<RecordKey, HashMap<String, String>>,
        now: Timestamp,
        commit: &mut ReconcileCommit,
        counts: &mut DecidedCounts,
    ) {
        let vocabulary = self.mapper.vocabulary();
        let policy = &self.config.reconcile;
        counts.reconciled += 1;
        let live: Vec<&MemberRow> = records.iter().filter(|row| !row.archived).collect();
        let written = |record: &MemberRow, property: &str| -> bool {
            let held = record.properties.get(property).unwrap_or(&Value::Null);
            ledger
                .get(&record.key)
                .and_then(|fields| fields.get(property))
                .is_some_and(|hash| *hash == plan::value_hash(held))
        };
        // Each system's opinion: its most recently changed live record that has a stage.
        let mut opinions: Vec<Opinion> = Vec::new();
        let mut raw: BTreeMap<System, (Option<String>, Option<String>)> = BTreeMap::new();
        for system in System::ALL {
            let Some(record) = live
                .iter()
                .copied()
                .filter(|row| row.key.system == system && row.stage.is_some())
                .max_by_key(|row| row.modified_at)
            else {
                continue;
            };
            let echo = self
                .mapper
                .object(system, &record.key.object)
                .and_then(|mapping| {
                    let stage = vocabulary.lookup(record.stage.as_deref()?)?;
                    mapping.reverse_stage(stage)
                })
                .is_some_and(|write| {
                    !write.properties.is_empty()
                        && write
                            .properties
                            .iter()
                            .all(|(property, _)| written(record, property))
                });
            if let Some(opinion) = reconcile::opinion_of(vocabulary, record, echo) {
                raw.insert(system, (record.stage.clone(), record.raw_stage.clone()));
                opinions.push(opinion);
            }
        }
        let previous_stage = before
            .as_ref()
            .and_then(|row| row.stage.as_deref())
            .and_then(|stage| vocabulary.lookup(stage));
        let decision = reconcile::decide_stage(vocabulary, policy, &opinions, previous_stage);
        if decision.refused_regression.is_some() {
            counts.regressions_refused += 1;
        }
        // Fields: per canonical field, the configured source of truth.
        let mut echoes: BTreeMap<(System, String), bool> = BTreeMap::new();
        for record in &live {
            if let Some(mapping) = self.mapper.object(record.key.system, &record.key.object) {
                for (canonical, native, _) in &mapping.reverse.fields {
                    if written(record, native) {
                        echoes.insert((record.key.system, canonical.clone()), true);
                    }
                }
            }
        }
        let offers = reconcile::field_offers(&live, &echoes);
        let chosen: BTreeMap<String, reconcile::FieldChoice> = offers
            .iter()
            .map(|(field, offers)| {
                (
                    field.clone(),
                    reconcile::choose_field(field, policy, offers),
                )
            })
            .collect();
        let text = |field: &str| {
            chosen
                .get(field)
                .and_then(|choice| choice.value.as_str())
                .map(str::to_string)
        };
        let first_of = |system: System, object: &str| {
            live.iter()
                .filter(|row| row.key.system == system && row.key.object == object)
                .max_by_key(|row| row.modified_at)
                .map(|row| row.key.id.clone())
        };
        let hubspot_id = first_of(System::Hubspot, "contacts");
        let salesforce_lead_id = first_of(System::Salesforce, "Lead");
        let salesforce_contact_id = first_of(System::Salesforce, "Contact");
        let stage_id = decision
            .stage
            .map(|stage| vocabulary.id_of(stage).to_string());
        let mut person = UnifiedRow {
            unified_id: unified_id.to_string(),
            email: text("email").or_else(|| live.iter().find_map(|row| row.email.clone())),
            name: text("full_name"),
            company: text("company"),
            stage: stage_id.clone(),
            hubspot_id: hubspot_id.clone(),
            salesforce_lead_id: salesforce_lead_id.clone(),
            salesforce_contact_id: salesforce_contact_id.clone(),
            hubspot_stage: raw
                .get(&System::Hubspot)
                .and_then(|(stage, _)| stage.clone()),
            salesforce_stage: raw
                .get(&System::Salesforce)
                .and_then(|(stage, _)| stage.clone()),
            hubspot_raw_stage: raw.get(&System::Hubspot).and_then(|(_, raw)| raw.clone()),
            salesforce_raw_stage: raw
                .get(&System::Salesforce)
                .and_then(|(_, raw)| raw.clone()),
            drift: false,
            decision: Some(decision.reason.clone()),
            deleted: live.is_empty(),
            created_at: before.as_ref().and_then(|row| row.created_at).or(Some(now)),
            updated_at: Some(now),
            first_entered: before
                .as_ref()
                .map(|row| row.first_entered.clone())
                .unwrap_or_default(),
        };
        // When the person first entered each stage, by the CRMs' own dates where the mapping
        // names them (a date in the future is a data error and is not believed).
        for record in &live {
            let Some(mapping) = self.mapper.object(record.key.system, &record.key.object) else {
                continue;
            };
            for (stage, property) in &mapping.stage_dates {
                let Some(at) = record
                    .properties
                    .get(property)
                    .and_then(value_text)
                    .and_then(|text| reconcile::native_time(record.key.system, &text))
                    .filter(|at| *at <= now)
                else {
                    continue;
                };
                let entered = person
                    .first_entered
                    .entry(vocabulary.id_of(*stage).to_string())
                    .or_insert(at);
                *entered = (*entered).min(at);
            }
        }
        person.drift = matches!(
            (&person.hubspot_stage, &person.salesforce_stage),
            (Some(a), Some(b)) if a != b
        );
        if let Some(stage) = &stage_id {
            person.first_entered.entry(stage.clone()).or_insert(now);
            let before_stage = before.as_ref().and_then(|row| row.stage.clone());
            if before_stage.as_deref() != Some(stage.as_str()) {
                counts.stage_changes += 1;
                commit.transitions.push(TransitionRow {
                    unified_id: unified_id.to_string(),
                    from: before_stage,
                    to: stage.clone(),
                    at: now,
                    system: decision.system.unwrap_or(System::Hubspot),
                });
            }
        }
        // Unchanged persons are not rewritten (their updated_at stays).
        let unchanged = before.as_ref().is_some_and(|row| {
            let mut same = person.clone();
            same.updated_at = row.updated_at;
            same.created_at = row.created_at;
            *row == same
        });
        // Writes queued for records since deleted are never sent.
        commit.dropped_writes.extend(
            records
                .iter()
                .filter(|row| row.archived)
                .map(|row| row.key.clone()),
        );
        let fields: BTreeMap<String, (Value, String)> = chosen
            .iter()
            .map(|(field, choice)| (field.clone(), (choice.value.clone(), choice.rule.clone())))
            .collect();
        for system in System::ALL {
            let target = self.config.write_back.target(system);
            if !target.enabled.value {
                continue;
            }
            let Some(mapping) = self.mapper.object(system, &target.object.value) else {
                continue;
            };
            let link = match system {
                System::Hubspot => salesforce_contact_id.clone().or(salesforce_lead_id.clone()),
                System::Salesforce => hubspot_id.clone(),
            };
            let wanted = Wanted {
                stage: decision.stage,
                stage_reason: &decision.reason,
                link,
                fields: &fields,
                allow_regression: policy.allow_regression,
            };
            for record in live
                .iter()
                .filter(|row| row.key.system == system && row.key.object == target.object.value)
            {
                let planned =
                    plan::plan_record(vocabulary, target, mapping, record, unified_id, &wanted);
                if let Some((from, to)) = planned.refused_regression {
                    counts.regressions_refused += 1;
                    tracing::debug!(record = %record.key, %from, %to, "native stage not written: it would move back");
                }
                match planned.write {
                    Some(write) => commit.writes.push(write),
                    None => commit.dropped_writes.push(record.key.clone()),
                }
            }
        }
        if !unchanged {
            commit.persons.push(person);
        }
    }

    /// What the warehouse holds now.
    pub async fn summary(&self) -> Result<WarehouseSummary, EngineError> {
        let PersonCounts {
            persons,
            stages,
            drift,
        } = self.warehouse.person_counts().await?;
        let vocabulary = self.mapper.vocabulary();
        let mut ordered: Vec<(String, u64)> = vocabulary
            .stages()
            .filter_map(|(_, stage)| {
                stages
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(stage.id.as_str()))
                    .map(|(_, count)| (stage.id.clone(), *count))
            })
            .collect();
        for (id, count) in &stages {
            match id {
                None => ordered.push(("(none)".to_string(), *count)),
                Some(id) if vocabulary.lookup(id).is_none() => ordered.push((id.clone(), *count)),
                Some(_) => {}
            }
        }
        Ok(WarehouseSummary {
            persons,
            stages: ordered,
            drift,
        })
    }
}

/// What went wrong in a run, in words: every stop, then the error that ended it.
pub(super) fn problems_of(stops: &[StreamStop], error: Option<&EngineError>) -> Vec<String> {
    stops
        .iter()
        .map(|stop| stop.message.clone())
        .chain(error.map(ToString::to_string))
        .collect()
}

/// When a read starts, by the earlier of the CRM's clock (its last answer) and ours.
fn read_started(server_clock: Option<Timestamp>) -> Timestamp {
    let local = Timestamp::now();
    server_clock.map_or(local, |server| server.min(local))
}

/// What kind of read a stream does this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadKind {
    /// From the start, or resuming one that began in an earlier run.
    Full,
    Incremental,
}

impl ReadKind {
    fn of(cursor: Option<&Cursor>) -> Self {
        match cursor {
            None | Some(Cursor::HubspotFull { .. } | Cursor::SalesforceFull { .. }) => {
                ReadKind::Full
            }
            Some(_) => ReadKind::Incremental,
        }
    }
}

/// Where the next incremental read starts once this read finished. A full read says itself
/// (when it first began, perhaps runs ago). An incremental read has seen every change up to
/// when it started, so the next starts there — not at the newest change it saw: after a
/// quiet spell that lies far back and would be read again on every run, and a change seen
/// late in a long read (or dated in the future) would carry the checkpoint past changes the
/// CRM had not shown yet. (Each read goes back an overlap before its start for those.)
fn next_since(kind: &ReadKind, high_water: Option<Timestamp>, started: Timestamp) -> Timestamp {
    match (kind, high_water) {
        (ReadKind::Full, Some(high_water)) => high_water,
        (ReadKind::Full, None) => started,
        (ReadKind::Incremental, _) => started,
    }
}

fn is_salesforce_budget(error: &SalesforceError) -> bool {
    matches!(
        error,
        SalesforceError::DailyLimit { .. } | SalesforceError::Reserve { .. }
    )
}
