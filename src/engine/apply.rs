//! `crmsync apply`: carries out exactly a saved plan (see [`super::saved_plan`]). Each
//! planned record is read again first; one that changed in its CRM since the plan — a field
//! no longer holding the value the plan saw, a later modification, or the record gone — is
//! refused and named, never overwritten. The rest are written like a sync's write-back:
//! write ledger ahead (so the values are known as crmsync's own when read back), only the
//! planned fields, refusals to dead letters, one `sync_runs` row for the apply.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::plan::same_value;
use super::saved_plan::{Plan, RecordChange};
use super::writeback::{self, Queued};
use super::{Engine, EngineError, PerSystem, RunStatus, StreamStop};
use crate::hubspot::read::HubspotReader;
use crate::record::{SourceRecord, System, value_text};
use crate::salesforce::describe::ObjectDescribe;
use crate::salesforce::read::SalesforceReader;
use crate::store::model::{RecordKey, RunRow};

/// How applying a plan went.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub run_id: i64,
    pub status: RunStatus,
    /// Records the plan changes.
    pub planned: u64,
    pub written: PerSystem,
    /// Records not written because they changed since the plan (or cannot be written now).
    pub refused: Vec<Refusal>,
    /// Records the CRM refused (see `dead_letters`).
    pub dead_letters: u64,
    /// Records not sent because the apply stopped (see `problems`); apply the plan again
    /// later, or make a new one.
    pub unsent: u64,
    pub api_calls: PerSystem,
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// A planned record left alone, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    pub system: System,
    pub object: String,
    pub id: String,
    pub reason: String,
}

/// Counts an apply gathers as it goes.
#[derive(Debug, Default)]
struct ApplyTally {
    written: PerSystem,
    refused: Vec<Refusal>,
    dead_letters: u64,
    regressions_refused: u64,
    stops: Vec<StreamStop>,
    failed: bool,
}

impl ApplyTally {
    /// A read the apply needed failed: it stops as failed, saying so.
    fn could_not_read(&mut self, system: System, message: String) {
        self.failed = true;
        self.stops.push(StreamStop {
            system,
            message,
            resumable: false,
        });
    }
}

impl Engine {
    /// Applies `plan` (which must have been made against the CRMs this engine reaches).
    pub async fn apply(&self, plan: &Plan) -> Result<ApplyReport, EngineError> {
        for system in System::ALL {
            // A system the plan writes to, or read values from that apply checks again.
            let involved = plan.changes.iter().any(|change| {
                change.system == system || change.inputs.iter().any(|input| input.system == system)
            });
            if !involved {
                continue;
            }
            let planned = plan.crms.get(&system).cloned().unwrap_or_default();
            let configured = self.crm_address(system);
            let same = configured.as_deref().is_some_and(|configured| {
                configured.trim_end_matches('/') == planned.trim_end_matches('/')
            });
            if !same {
                return Err(EngineError::PlanElsewhere {
                    system,
                    planned,
                    configured: configured.unwrap_or_else(|| "nowhere (it is disabled)".into()),
                });
            }
        }
        let Some(lock) = self.warehouse().lock_for_run().await? else {
            return Err(EngineError::Busy {
                warehouse: self.warehouse().description().to_string(),
            });
        };
        // With several workers on one warehouse, applying is write-back: one worker at a time.
        let leases = super::lease::Leases::new(
            self.warehouse().clone(),
            self.config.warehouse.lease_ttl,
            self.stop.clone(),
        );
        if let Some(held) = leases.take(super::lease::PERSONS).await? {
            lock.release().await?;
            return Err(EngineError::Busy {
                warehouse: format!("{} ({held})", self.warehouse().description()),
            });
        }
        let report = self.locked_apply(plan, &leases).await;
        leases.release_all().await;
        let released = lock.release().await;
        let report = report?;
        released?;
        Ok(report)
    }

    async fn locked_apply(
        &self,
        plan: &Plan,
        leases: &super::lease::Leases,
    ) -> Result<ApplyReport, EngineError> {
        let clock = std::time::Instant::now();
        let calls_before = self.calls();
        let run_id = self
            .warehouse()
            .begin_run(Timestamp::now(), leases.holder().to_string(), leases.ttl())
            .await?;
        let mut tally = ApplyTally::default();
        let outcome = self.apply_changes(run_id, plan, &mut tally).await;
        let api_calls = self.calls_since(&calls_before);
        let mut problems = super::run::problems_of(&tally.stops, outcome.as_ref().err());
        let stopped = self.stop.reason();
        if let Some(reason) = &stopped {
            problems.push(format!(
                "the apply stopped early ({reason}): the changes not sent yet were not written; apply the plan again to send them (those already written are refused as changed)"
            ));
        }
        let status = if outcome.is_err() || tally.failed {
            RunStatus::Failed
        } else if !tally.stops.is_empty()
            || tally.dead_letters > 0
            || !tally.refused.is_empty()
            || stopped.is_some()
        {
            RunStatus::Partial
        } else {
            RunStatus::Complete
        };
        let written: u64 = tally.written.values().sum();
        let unsent = (plan.changes.len() as u64)
            .saturating_sub(written + tally.refused.len() as u64 + tally.dead_letters);
        let report = ApplyReport {
            run_id,
            status,
            unsent,
            planned: plan.changes.len() as u64,
            written: tally.written,
            refused: tally.refused,
            dead_letters: tally.dead_letters,
            api_calls,
            problems,
            seconds: clock.elapsed().as_secs_f64(),
        };
        let row = RunRow {
            records_written: report.written.values().sum(),
            records_dead_lettered: report.dead_letters,
            regressions_refused: tally.regressions_refused,
            ..RunRow::ended(
                status.as_str(),
                &report.api_calls,
                &report.problems,
                serde_json::to_string(&serde_json::json!({ "apply": &report })).ok(),
            )
        };
        let finished = self.warehouse().finish_run(run_id, row).await;
        outcome?;
        finished?;
        Ok(report)
    }

    async fn apply_changes(
        &self,
        run_id: i64,
        plan: &Plan,
        tally: &mut ApplyTally,
    ) -> Result<(), EngineError> {
        let stale = self.stale_inputs(plan, tally).await;
        for system in System::ALL {
            let mut objects: BTreeMap<&str, Vec<&RecordChange>> = BTreeMap::new();
            for change in plan.changes.iter().filter(|change| change.system == system) {
                objects.entry(&change.object).or_default().push(change);
            }
            for (object, changes) in objects {
                if !self.config.write_back.target(system).enabled.value {
                    refuse_all(
                        tally,
                        &changes,
                        &format!(
                            "write-back to {system} is off in the configuration ([write_back.{system}] enabled = false)"
                        ),
                    );
                    continue;
                }
                if tally.stops.iter().any(|stop| stop.system == system) {
                    refuse_all(
                        tally,
                        &changes,
                        &format!("not sent: the apply stopped writing to {system}"),
                    );
                    continue;
                }
                let target = self.config.write_back.target(system);
                if target.object.value != object {
                    refuse_all(
                        tally,
                        &changes,
                        &format!(
                            "{system} write-back goes to {} in the configuration, not {object}",
                            target.object.value
                        ),
                    );
                    continue;
                }
                // A value decided from another record (the other CRM's, say) that changed
                // since could be decided differently now.
                let (changes, outdated): (Vec<&RecordChange>, Vec<&RecordChange>) =
                    changes.into_iter().partition(|change| {
                        change
                            .inputs
                            .iter()
                            .all(|input| !stale.contains_key(&input.key()))
                    });
                for change in outdated {
                    let reason = change
                        .inputs
                        .iter()
                        .find_map(|input| stale.get(&input.key()))
                        .cloned()
                        .unwrap_or_default();
                    tally.refused.push(Refusal {
                        system,
                        object: object.to_string(),
                        id: change.id.clone(),
                        reason,
                    });
                }
                // Only what a sync could write: a plan file edited to set other fields is
                // refused record by record.
                let writable = self.writable_fields(system);
                let (changes, foreign): (Vec<&RecordChange>, Vec<&RecordChange>) =
                    changes.into_iter().partition(|change| {
                        change
                            .fields
                            .iter()
                            .all(|field| writable.contains(field.field.as_str()))
                    });
                for change in foreign {
                    let fields: Vec<&str> = change
                        .fields
                        .iter()
                        .map(|field| field.field.as_str())
                        .filter(|field| !writable.contains(*field))
                        .collect();
                    tally.refused.push(Refusal {
                        system,
                        object: object.to_string(),
                        id: change.id.clone(),
                        reason: format!(
                            "the plan sets {} which crmsync's write-back to {system} {object} does not write (was the plan edited?)",
                            fields.join(", ")
                        ),
                    });
                }
                let ids: Vec<String> = changes.iter().map(|change| change.id.clone()).collect();
                let mut fields: Vec<String> = changes
                    .iter()
                    .flat_map(|change| change.fields.iter().map(|field| field.field.clone()))
                    .collect();
                fields.sort();
                fields.dedup();
                let now = match self.read_now(system, object, &ids, &fields).await {
                    Ok(records) => records,
                    Err(message) => {
                        tally.could_not_read(
                            system,
                            format!("reading {system} {object} again before writing: {message}"),
                        );
                        refuse_all(
                            tally,
                            &changes,
                            "not sent: the records could not be read again to check them",
                        );
                        continue;
                    }
                };
                let allow_regression = self.config.reconcile.allow_regression;
                let mut writes = Vec::new();
                for change in changes {
                    match still_as_planned(change, now.get(&change.id), allow_regression) {
                        Ok(write) => writes.push(write),
                        Err(reason) => tally.refused.push(Refusal {
                            system,
                            object: object.to_string(),
                            id: change.id.clone(),
                            reason,
                        }),
                    }
                }
                let mut sink = writeback::Sink::new(self.progress.as_ref());
                let result = writeback::write_given(
                    self.writeback_context(system),
                    object.to_string(),
                    writes,
                    run_id,
                    &mut sink,
                )
                .await;
                tally.failed |= sink.add_to(
                    system,
                    &mut tally.written,
                    &mut tally.dead_letters,
                    &mut tally.regressions_refused,
                    &mut tally.stops,
                );
                result?;
            }
        }
        Ok(())
    }

    /// The records the plan's values were decided from (besides the written ones) that are
    /// not as the plan read them, each with why: changed, gone, or not readable now (which
    /// also stops the apply as failed).
    async fn stale_inputs(
        &self,
        plan: &Plan,
        tally: &mut ApplyTally,
    ) -> HashMap<RecordKey, String> {
        let mut planned: BTreeMap<(System, &str), BTreeMap<&str, Timestamp>> = BTreeMap::new();
        for input in plan.changes.iter().flat_map(|change| &change.inputs) {
            planned
                .entry((input.system, input.object.as_str()))
                .or_default()
                .insert(input.id.as_str(), input.modified_at);
        }
        let mut stale = HashMap::new();
        for ((system, object), stamps) in planned {
            let ids: Vec<String> = stamps.keys().map(|id| id.to_string()).collect();
            let now = self.read_now(system, object, &ids, &[]).await;
            if let Err(message) = &now {
                // As when a planned record cannot be read again: the apply did not finish.
                tally.could_not_read(
                    system,
                    format!(
                        "reading {system} {object} again to check what the plan's values were decided from: {message}"
                    ),
                );
            }
            for (id, planned_at) in stamps {
                let what = format!(
                    "{system} {object} {id}, a record this person's values were decided from,"
                );
                let reason = match &now {
                    Err(message) => {
                        format!("not sent: {what} could not be read again to check it ({message})")
                    }
                    Ok(records) => match records.get(id) {
                        None => format!(
                            "{what} is no longer in {system} (deleted or merged since the plan); make a new plan"
                        ),
                        Some(record) if record.modified_at != planned_at => format!(
                            "{what} changed since the plan (modified {}, the plan read it as of {planned_at}); make a new plan",
                            record.modified_at
                        ),
                        Some(_) => continue,
                    },
                };
                stale.insert(RecordKey::new(system, object, id), reason);
            }
        }
        stale
    }

    /// The records `ids` of `object` as the CRM holds them now, by id.
    async fn read_now(
        &self,
        system: System,
        object: &str,
        ids: &[String],
        fields: &[String],
    ) -> Result<HashMap<String, SourceRecord>, String> {
        let records = match system {
            System::Hubspot => {
                let client = self.hubspot.as_ref().ok_or("HubSpot is disabled")?;
                HubspotReader::new(client)
                    .by_ids(object, ids, fields)
                    .await
                    .map_err(|error| error.to_string())?
            }
            System::Salesforce => {
                let client = self.salesforce.as_ref().ok_or("Salesforce is disabled")?;
                let describe = ObjectDescribe::load(client, object)
                    .await
                    .map_err(|error| error.to_string())?;
                SalesforceReader::new(client)
                    .by_ids(&describe, ids, fields)
                    .await
                    .map_err(|error| error.to_string())?
            }
        };
        Ok(records
            .into_iter()
            .map(|record| (record.id.clone(), record))
            .collect())
    }
}

/// Refuses every one of `changes`, for `reason`.
fn refuse_all(tally: &mut ApplyTally, changes: &[&RecordChange], reason: &str) {
    tally.refused.extend(changes.iter().map(|change| Refusal {
        system: change.system,
        object: change.object.clone(),
        id: change.id.clone(),
        reason: reason.to_string(),
    }));
}

/// The write a planned record needs, if it still is as the plan saw it; else why not.
fn still_as_planned(
    change: &RecordChange,
    now: Option<&SourceRecord>,
    allow_regression: bool,
) -> Result<Queued, String> {
    let system = change.system;
    let Some(now) = now else {
        return Err(format!(
            "no longer in {system} (deleted or merged since the plan); make a new plan"
        ));
    };
    let moved: Vec<String> = change
        .fields
        .iter()
        .filter_map(|field| {
            let held = now.properties.get(&field.field).unwrap_or(&Value::Null);
            (!same_value(held, &field.from)).then(|| {
                format!(
                    "{} is now {} (the plan saw {})",
                    field.field,
                    quoted(held),
                    quoted(&field.from)
                )
            })
        })
        .collect();
    if !moved.is_empty() {
        return Err(format!(
            "changed in {system} since the plan: {}; make a new plan",
            moved.join(", ")
        ));
    }
    // Equal, not merely not later: a record the plan never saw (another portal or org with
    // the same record id) is refused too.
    if now.modified_at != change.modified_at {
        return Err(format!(
            "changed in {system} since the plan, or not the record the plan was made from (modified {}, the plan read it as of {}); make a new plan",
            now.modified_at, change.modified_at
        ));
    }
    Ok(Queued {
        key: RecordKey::new(system, change.object.clone(), change.id.clone()),
        desired: change
            .fields
            .iter()
            .map(|field| (field.field.clone(), field.to.clone()))
            .collect(),
        current: change
            .fields
            .iter()
            .map(|field| {
                let held = now
                    .properties
                    .get(&field.field)
                    .cloned()
                    .unwrap_or(Value::Null);
                (field.field.clone(), held)
            })
            .collect(),
        // The policy decides, not the file.
        allow_regression,
    })
}

fn quoted(value: &Value) -> String {
    match value_text(value) {
        Some(text) if !text.is_empty() => format!("{text:?}"),
        _ => "empty".to_string(),
    }
}

impl ApplyReport {
    /// The apply in a few lines, for stderr.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let thousands = super::saved_plan::thousands;
        let mut out = String::new();
        let written: u64 = self.written.values().sum();
        let per_system: Vec<String> = self
            .written
            .iter()
            .map(|(system, count)| format!("{system} {}", thousands(*count)))
            .collect();
        let _ = writeln!(
            out,
            "apply {}: {} of {} planned record(s) written{}; {} refused; {} dead letter(s); {} not sent; run {}.",
            self.status.as_str(),
            thousands(written),
            thousands(self.planned),
            if per_system.is_empty() {
                String::new()
            } else {
                format!(" ({})", per_system.join(", "))
            },
            thousands(self.refused.len() as u64),
            thousands(self.dead_letters),
            thousands(self.unsent),
            self.run_id
        );
        for refusal in self.refused.iter().take(20) {
            let _ = writeln!(
                out,
                "  refused {} {} {}: {}",
                refusal.system, refusal.object, refusal.id, refusal.reason
            );
        }
        if self.refused.len() > 20 {
            let _ = writeln!(
                out,
                "  … and {} more (crmsync apply --json lists them all)",
                self.refused.len() - 20
            );
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::saved_plan::{FieldChange, FieldKind};
    use crate::record::Properties;

    fn change() -> RecordChange {
        RecordChange {
            system: System::Hubspot,
            object: "contacts".into(),
            id: "7".into(),
            unified_id: "p-7".into(),
            modified_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            allow_regression: false,
            fields: vec![FieldChange {
                field: "crmsync_stage".into(),
                kind: FieldKind::SharedStage,
                from: Value::Null,
                to: Value::String("mql".into()),
                rule: "shared stage mql".into(),
            }],
            inputs: Vec::new(),
        }
    }

    fn record(stage: Option<&str>, modified: &str) -> SourceRecord {
        let mut properties = Properties::default();
        if let Some(stage) = stage {
            properties.insert("crmsync_stage".into(), Value::String(stage.into()));
        }
        SourceRecord {
            system: System::Hubspot,
            object: "contacts".into(),
            id: "7".into(),
            modified_at: modified.parse().unwrap(),
            properties,
        }
    }

    #[test]
    fn a_record_as_planned_gets_exactly_the_planned_fields() {
        let write = still_as_planned(
            &change(),
            Some(&record(Some(""), "2026-01-01T00:00:00Z")),
            false,
        )
        .expect("unchanged");
        assert_eq!(write.desired.len(), 1);
        assert_eq!(write.desired["crmsync_stage"], Value::String("mql".into()));
    }

    #[test]
    fn records_changed_since_the_plan_are_refused_with_what_changed() {
        let moved = still_as_planned(
            &change(),
            Some(&record(Some("sql"), "2026-01-01T00:00:00Z")),
            false,
        )
        .err()
        .unwrap();
        assert!(
            moved.contains("crmsync_stage is now \"sql\" (the plan saw empty)"),
            "{moved}"
        );
        let later = still_as_planned(
            &change(),
            Some(&record(None, "2026-02-01T00:00:00Z")),
            false,
        )
        .err()
        .unwrap();
        assert!(later.contains("modified 2026-02-01"), "{later}");
        // An earlier modification is refused too: not the record the plan was made from.
        let other = still_as_planned(
            &change(),
            Some(&record(None, "2025-06-01T00:00:00Z")),
            false,
        )
        .err()
        .unwrap();
        assert!(
            other.contains("not the record the plan was made from"),
            "{other}"
        );
        let gone = still_as_planned(&change(), None, false).err().unwrap();
        assert!(gone.contains("no longer in hubspot"), "{gone}");
    }
}
