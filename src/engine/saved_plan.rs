//! The plan an admin reviews before anything is written: `crmsync plan` shows it (a table per
//! system, object and field, with the stage moves) and saves it (`--out`: every record's
//! every field change, with the value it holds, the value it gets and the rule that decided);
//! `crmsync apply` (see [`super::apply`]) carries out exactly a saved plan.
//!
//! A plan is made by a run without write-back on a private copy of the warehouse
//! ([`Planner`]): the same reads, identity and reconcile as a sync, so the plan is what a
//! sync would write now — and nothing is written anywhere, not even to the warehouse.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Engine, EngineError, RunStatus, Scratch, SyncOptions, SyncReport};
use crate::record::{System, value_text};
use crate::store::model::RecordKey;

/// What a saved plan's `format` says; a file with another is refused.
pub const PLAN_FORMAT: &str = "crmsync-plan/1";

/// Queued writes read from the scratch warehouse at a time.
const PAGE: usize = 1_000;

/// Stage moves listed per field in the table; the rest are counted.
const MOVES_SHOWN: usize = 12;

/// Every change a sync would make now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub created_at: Timestamp,
    /// Where each CRM was reached (HubSpot's base URL, Salesforce's login URL): a plan is
    /// applied only where it was made.
    pub crms: BTreeMap<System, String>,
    /// What the plan does not cover, in words (a read that stopped); empty when it covers
    /// everything a sync would write.
    #[serde(default)]
    pub incomplete: Vec<String>,
    /// Records that could not be read or mapped: a sync would dead-letter them and write
    /// nothing to them, so the plan has nothing for them either.
    #[serde(default)]
    pub dead_letters: u64,
    pub changes: Vec<RecordChange>,
}

/// The changes to one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordChange {
    pub system: System,
    pub object: String,
    pub id: String,
    /// The person the record belongs to (`crmsync explain` tells why it gets these values).
    pub unified_id: String,
    /// The CRM's last change to the record when the plan read it: `apply` refuses a record
    /// changed since.
    pub modified_at: Timestamp,
    /// Whether the policy let this record's stage move backwards when the plan was made
    /// (for the reader: `apply` follows the configuration's policy, not the file).
    #[serde(default)]
    pub allow_regression: bool,
    pub fields: Vec<FieldChange>,
    /// The person's other records the values were decided from, as the plan read them:
    /// `apply` refuses the record if any of them changed since (the values could differ now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<RecordStamp>,
}

/// A record as a plan read it: when its CRM last changed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordStamp {
    pub system: System,
    pub object: String,
    pub id: String,
    pub modified_at: Timestamp,
}

impl RecordStamp {
    pub fn key(&self) -> RecordKey {
        RecordKey::new(self.system, self.object.clone(), self.id.clone())
    }
}

/// One field of one record: from what it holds to what it gets, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub kind: FieldKind,
    pub from: Value,
    pub to: Value,
    pub rule: String,
}

/// What a written field is to crmsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// The CRM's own stage field, through the reverse mapping.
    Stage,
    /// The configured field that holds the shared stage's id.
    SharedStage,
    /// The configured field that holds the other system's record id.
    Link,
    /// A configured canonical field.
    Field,
}

impl FieldKind {
    fn label(self) -> &'static str {
        match self {
            FieldKind::Stage => "stage",
            FieldKind::SharedStage => "shared stage",
            FieldKind::Link => "cross-link",
            FieldKind::Field => "field",
        }
    }

    fn is_stage(self) -> bool {
        matches!(self, FieldKind::Stage | FieldKind::SharedStage)
    }
}

/// A plan in counts: what the table shows and `--format json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSummary {
    pub created_at: Timestamp,
    /// Records that change.
    pub records: u64,
    pub incomplete: Vec<String>,
    pub dead_letters: u64,
    pub objects: Vec<ObjectSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectSummary {
    pub system: System,
    pub object: String,
    pub records: u64,
    pub fields: Vec<FieldSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSummary {
    pub field: String,
    pub kind: FieldKind,
    pub records: u64,
    /// For stage fields: how many records move from which value to which, most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<StageMove>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageMove {
    pub from: String,
    pub to: String,
    pub records: u64,
}

/// Why a saved plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read the plan {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: not a crmsync plan: {message} — make one with crmsync plan --out FILE"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path} is a {found:?} file, not a {PLAN_FORMAT} plan — make a new one with crmsync plan --out FILE"
    )]
    Format { path: PathBuf, found: String },
    #[error(
        "{path}: change {index} ({system} {object} {id:?}) {problem} — was the plan edited? Make a new one with crmsync plan --out FILE"
    )]
    Invalid {
        path: PathBuf,
        index: usize,
        system: System,
        object: String,
        id: String,
        problem: String,
    },
    #[error(
        "cannot write the plan to {path}: {source} — check that the directory exists and is writable"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Plan {
    /// Reads and checks a saved plan.
    pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let plan: Plan = serde_json::from_str(&text).map_err(|error| {
            // The format is checked first when the file at least names one.
            match serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|value| value.get("format")?.as_str().map(str::to_string))
            {
                Some(found) if found != PLAN_FORMAT => PlanFileError::Format {
                    path: path.to_path_buf(),
                    found,
                },
                _ => PlanFileError::Parse {
                    path: path.to_path_buf(),
                    line: error.line(),
                    column: error.column(),
                    message: error.to_string(),
                },
            }
        })?;
        if plan.format != PLAN_FORMAT {
            return Err(PlanFileError::Format {
                path: path.to_path_buf(),
                found: plan.format,
            });
        }
        plan.validate(path)?;
        Ok(plan)
    }

    /// Every record once, with an id and at least one distinct field.
    fn validate(&self, path: &Path) -> Result<(), PlanFileError> {
        let mut seen: BTreeSet<(System, &str, &str)> = BTreeSet::new();
        for (index, change) in self.changes.iter().enumerate() {
            let invalid = |problem: &str| PlanFileError::Invalid {
                path: path.to_path_buf(),
                index: index + 1,
                system: change.system,
                object: change.object.clone(),
                id: change.id.clone(),
                problem: problem.to_string(),
            };
            let well_formed =
                !change.id.is_empty() && change.id.bytes().all(|byte| byte.is_ascii_alphanumeric());
            if !well_formed {
                return Err(invalid("has an id that is not a CRM record id"));
            }
            if change.object.is_empty()
                || !change
                    .object
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
            {
                return Err(invalid("names no valid object"));
            }
            if !seen.insert((change.system, &change.object, &change.id)) {
                return Err(invalid("comes twice"));
            }
            if change.fields.is_empty() {
                return Err(invalid("changes no field"));
            }
            let mut fields = BTreeSet::new();
            if !change
                .fields
                .iter()
                .all(|field| !field.field.is_empty() && fields.insert(field.field.as_str()))
            {
                return Err(invalid("names a field twice, or an empty one"));
            }
        }
        Ok(())
    }

    /// Writes the plan as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), PlanFileError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| PlanFileError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The plan in counts.
    pub fn summary(&self) -> PlanSummary {
        /// Records, and records per (from, to) stage move.
        type FieldCounts = (u64, BTreeMap<(String, String), u64>);
        /// Records, and counts per field.
        type ObjectCounts = (u64, BTreeMap<(FieldKind, String), FieldCounts>);
        let mut objects: BTreeMap<(System, String), ObjectCounts> = BTreeMap::new();
        for change in &self.changes {
            let (records, fields) = objects
                .entry((change.system, change.object.clone()))
                .or_default();
            *records += 1;
            for field in &change.fields {
                let (count, moves) = fields.entry((field.kind, field.field.clone())).or_default();
                *count += 1;
                if field.kind.is_stage() {
                    *moves
                        .entry((shown(&field.from), shown(&field.to)))
                        .or_default() += 1;
                }
            }
        }
        PlanSummary {
            created_at: self.created_at,
            records: self.changes.len() as u64,
            incomplete: self.incomplete.clone(),
            dead_letters: self.dead_letters,
            objects: objects
                .into_iter()
                .map(|((system, object), (records, fields))| ObjectSummary {
                    system,
                    object,
                    records,
                    fields: fields
                        .into_iter()
                        .map(|((kind, field), (records, moves))| {
                            let mut moves: Vec<StageMove> = moves
                                .into_iter()
                                .map(|((from, to), records)| StageMove { from, to, records })
                                .collect();
                            moves.sort_by_key(|stage_move| std::cmp::Reverse(stage_move.records));
                            FieldSummary {
                                field,
                                kind,
                                records,
                                moves,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A value as the table shows it.
fn shown(value: &Value) -> String {
    match value_text(value) {
        Some(text) if !text.is_empty() => text.into_owned(),
        _ => "(empty)".to_string(),
    }
}

impl PlanSummary {
    /// The table `crmsync plan` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Plan made {} — what a sync would write now; nothing has been written.",
            self.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        );
        for problem in &self.incomplete {
            let _ = writeln!(out, "INCOMPLETE: {problem}");
        }
        if self.dead_letters > 0 {
            let _ = writeln!(
                out,
                "{} record(s) could not be read or mapped; a sync would dead-letter them and write nothing to them (see dead_letters after a sync).",
                thousands(self.dead_letters)
            );
        }
        if self.objects.is_empty() {
            let _ = writeln!(
                out,
                "\nNothing to write: both CRMs already hold what crmsync would write."
            );
            return out;
        }
        for object in &self.objects {
            let _ = writeln!(
                out,
                "\n{} {}: {} record{} change",
                object.system,
                object.object,
                thousands(object.records),
                if object.records == 1 { "" } else { "s" }
            );
            let width = object
                .fields
                .iter()
                .map(|field| field.field.len() + field.kind.label().len() + 3)
                .max()
                .unwrap_or(0)
                .max(5);
            let _ = writeln!(out, "  {:<width$}  {:>9}", "field", "records");
            for field in &object.fields {
                let name = format!("{} ({})", field.field, field.kind.label());
                let _ = writeln!(out, "  {name:<width$}  {:>9}", thousands(field.records));
                for change in field.moves.iter().take(MOVES_SHOWN) {
                    let _ = writeln!(
                        out,
                        "      {} → {}: {}",
                        change.from,
                        change.to,
                        thousands(change.records)
                    );
                }
                if field.moves.len() > MOVES_SHOWN {
                    let rest: u64 = field.moves[MOVES_SHOWN..].iter().map(|m| m.records).sum();
                    let _ = writeln!(
                        out,
                        "      … {} more moves ({} records)",
                        field.moves.len() - MOVES_SHOWN,
                        thousands(rest)
                    );
                }
            }
        }
        out
    }
}

/// 12345 as `12,345`.
pub(super) fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// An engine on a private copy of the warehouse, which makes plans.
#[derive(Debug)]
pub struct Planner {
    engine: Engine,
    _scratch: Scratch,
}

impl Planner {
    pub(super) fn new(engine: Engine, scratch: Scratch) -> Self {
        Self {
            engine,
            _scratch: scratch,
        }
    }

    /// What a sync would write now, and the run that found out (on the copy).
    pub async fn plan(&self, options: SyncOptions) -> Result<(Plan, SyncReport), EngineError> {
        let engine = &self.engine;
        let report = engine.run_without_write_back(options).await?;
        let mut plan = Plan {
            format: PLAN_FORMAT.to_string(),
            created_at: Timestamp::now(),
            crms: BTreeMap::new(),
            incomplete: Vec::new(),
            dead_letters: report.dead_letters,
            changes: Vec::new(),
        };
        if report.status == RunStatus::Failed {
            plan.incomplete.extend(report.problems.iter().cloned());
        }
        for system in System::ALL {
            if let Some(place) = engine.crm_address(system) {
                plan.crms.insert(system, place);
            } else {
                continue;
            }
            if let Some(stopped) = report
                .streams
                .iter()
                .find(|stream| stream.system == system && stream.stopped.is_some())
            {
                plan.incomplete.push(format!(
                    "{system}'s read stopped ({}); a sync would write nothing to {system}, so the plan has nothing for it",
                    stopped.stopped.as_deref().unwrap_or("")
                ));
                continue;
            }
            let target = engine.config.write_back.target(system);
            if !target.enabled.value {
                continue;
            }
            let kinds = engine.field_kinds(system);
            let changes = queued_changes(
                engine,
                system,
                &target.object.value,
                &kinds,
                &mut plan.incomplete,
            )
            .await?;
            plan.changes.extend(changes);
        }
        Ok((plan, report))
    }
}

/// The writes queued on the scratch warehouse for one object, as record changes.
async fn queued_changes(
    engine: &Engine,
    system: System,
    object: &str,
    kinds: &HashMap<String, FieldKind>,
    incomplete: &mut Vec<String>,
) -> Result<Vec<RecordChange>, EngineError> {
    let warehouse = engine.warehouse();
    let mut changes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let queued = warehouse
            .pending_writes(system, object.to_string(), after.clone(), PAGE)
            .await?;
        let Some(last) = queued.last() else {
            return Ok(changes);
        };
        after = Some(last.key.id.clone());
        // The persons' records: the written ones (their modification times) and the rest (the
        // values' inputs).
        let persons: BTreeSet<String> = queued
            .iter()
            .map(|write| write.unified_id.clone())
            .collect();
        let mut modified: HashMap<RecordKey, Timestamp> = HashMap::new();
        let mut records_of: HashMap<String, Vec<RecordStamp>> = HashMap::new();
        for row in warehouse.members_of(persons.into_iter().collect()).await? {
            modified.insert(row.key.clone(), row.modified_at);
            if let (Some(person), false) = (row.unified_id, row.archived) {
                records_of.entry(person).or_default().push(RecordStamp {
                    system: row.key.system,
                    object: row.key.object,
                    id: row.key.id,
                    modified_at: row.modified_at,
                });
            }
        }
        for write in queued {
            let modified_at = modified.get(&write.key).copied();
            let wanted = serde_json::from_str::<serde_json::Map<String, Value>>(&write.changes);
            let (Some(modified_at), Ok(wanted)) = (modified_at, wanted) else {
                // Cannot happen with a consistent warehouse; said rather than hidden.
                incomplete.push(format!(
                    "the write queued for {} could not be read back from the plan's copy of the warehouse; it is not in the plan",
                    write.key
                ));
                continue;
            };
            if wanted.is_empty() {
                continue;
            }
            let held: serde_json::Map<String, Value> =
                serde_json::from_str(&write.current).unwrap_or_default();
            let fields = wanted
                .into_iter()
                .map(|(field, change)| FieldChange {
                    kind: kinds.get(&field).copied().unwrap_or(FieldKind::Field),
                    from: held.get(&field).cloned().unwrap_or(Value::Null),
                    to: change.get("value").cloned().unwrap_or(Value::Null),
                    rule: change
                        .get("rule")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    field,
                })
                .collect();
            let mut inputs: Vec<RecordStamp> = records_of
                .get(&write.unified_id)
                .into_iter()
                .flatten()
                .filter(|stamp| {
                    (stamp.system, stamp.object.as_str(), stamp.id.as_str())
                        != (system, write.key.object.as_str(), write.key.id.as_str())
                })
                .cloned()
                .collect();
            inputs.sort();
            changes.push(RecordChange {
                system,
                object: write.key.object,
                id: write.key.id,
                unified_id: write.unified_id,
                modified_at,
                allow_regression: write.allow_regression,
                fields,
                inputs,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, from: &str, to: &str) -> RecordChange {
        RecordChange {
            system: System::Hubspot,
            object: "contacts".into(),
            id: id.into(),
            unified_id: format!("p-{id}"),
            modified_at: Timestamp::UNIX_EPOCH,
            allow_regression: false,
            fields: vec![
                FieldChange {
                    field: "lifecyclestage".into(),
                    kind: FieldKind::Stage,
                    from: Value::String(from.into()),
                    to: Value::String(to.into()),
                    rule: "stage mql".into(),
                },
                FieldChange {
                    field: "crmsync_salesforce_id".into(),
                    kind: FieldKind::Link,
                    from: Value::Null,
                    to: Value::String("00Q1".into()),
                    rule: "cross-link".into(),
                },
            ],
            inputs: Vec::new(),
        }
    }

    fn plan(changes: Vec<RecordChange>) -> Plan {
        Plan {
            format: PLAN_FORMAT.into(),
            created_at: Timestamp::UNIX_EPOCH,
            crms: BTreeMap::new(),
            incomplete: Vec::new(),
            dead_letters: 0,
            changes,
        }
    }

    #[test]
    fn the_summary_counts_records_fields_and_stage_moves() {
        let plan = plan(vec![
            change("1", "lead", "marketingqualifiedlead"),
            change("2", "lead", "marketingqualifiedlead"),
            change("3", "", "lead"),
        ]);
        let summary = plan.summary();
        assert_eq!(summary.records, 3);
        let fields = &summary.objects[0].fields;
        assert_eq!(fields[0].field, "lifecyclestage");
        assert_eq!(fields[0].records, 3);
        assert_eq!(
            fields[0].moves[0],
            StageMove {
                from: "lead".into(),
                to: "marketingqualifiedlead".into(),
                records: 2
            }
        );
        assert_eq!(fields[0].moves[1].from, "(empty)");
        assert!(fields[1].moves.is_empty(), "links have no moves");
        let table = summary.render();
        assert!(
            table.contains("hubspot contacts: 3 records change"),
            "{table}"
        );
        assert!(
            table.contains("lead → marketingqualifiedlead: 2"),
            "{table}"
        );
    }

    #[test]
    fn saved_plans_load_back_and_bad_ones_are_refused_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let saved = plan(vec![change("1", "lead", "customer")]);
        saved.save(&path).unwrap();
        assert_eq!(Plan::load(&path).unwrap(), saved);

        let mut twice = saved.clone();
        twice.changes.push(change("1", "lead", "customer"));
        twice.save(&path).unwrap();
        let error = Plan::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("change 2") && error.contains("comes twice"),
            "{error}"
        );

        let mut injected = saved.clone();
        injected.changes[0].id = "1' OR Id != '".into();
        injected.save(&path).unwrap();
        let error = Plan::load(&path).unwrap_err().to_string();
        assert!(error.contains("not a CRM record id"), "{error}");

        std::fs::write(&path, "{\"format\": \"something-else/3\"}").unwrap();
        let error = Plan::load(&path).unwrap_err().to_string();
        assert!(error.contains("something-else/3"), "{error}");

        std::fs::write(&path, "{\"format\": \"crmsync-plan/1\",\n \"changes\": [}").unwrap();
        let error = Plan::load(&path).unwrap_err().to_string();
        assert!(error.contains("plan.json:2:"), "{error}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
