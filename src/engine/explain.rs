//! `crmsync explain <email | unified id>`: everything behind one person's stage, from the
//! warehouse alone — the records in each CRM with the rule that mapped each, the policy
//! decision, the stage history, persons merged into this one, and the writes queued for or
//! last made to its records.

use serde_json::{Value, json};

use super::EngineError;
use crate::store::Warehouse;
use crate::store::model::{MemberRow, PersonHistory, UnifiedRow};

/// One person, explained.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub person: UnifiedRow,
    pub records: Vec<MemberRow>,
    pub history: PersonHistory,
    /// The id asked for, when it was merged into `person`.
    pub merged_from: Option<String>,
}

/// The persons `who` (an email or a unified id, merged ids followed) names.
pub async fn explain(warehouse: &Warehouse, who: &str) -> Result<Vec<Explanation>, EngineError> {
    let who = who.trim();
    let mut ids: Vec<(String, Option<String>)> = Vec::new();
    if who.contains('@') {
        let email = who.to_lowercase();
        let mut found: Vec<String> = warehouse
            .records_with_emails(vec![email])
            .await?
            .into_iter()
            .filter_map(|row| row.unified_id)
            .collect();
        found.sort();
        found.dedup();
        ids.extend(found.into_iter().map(|id| (id, None)));
    } else {
        let mut id = who.to_string();
        let mut merged_from = None;
        // Follow merges (bounded, in case of a cycle written by hand).
        for _ in 0..16 {
            match warehouse.survivor_of(id.clone()).await? {
                Some(survivor) => {
                    merged_from.get_or_insert_with(|| who.to_string());
                    id = survivor;
                }
                None => break,
            }
        }
        ids.push((id, merged_from));
    }
    let mut explanations = Vec::new();
    for (id, merged_from) in ids {
        let Some(person) = warehouse
            .unified(vec![id.clone()])
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        let mut records = warehouse.members_of(vec![id.clone()]).await?;
        records.sort_by(|a, b| a.key.cmp(&b.key));
        let history = warehouse.history(id).await?;
        explanations.push(Explanation {
            person,
            records,
            history,
            merged_from,
        });
    }
    Ok(explanations)
}

fn or_dash(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

impl Explanation {
    /// For people.
    pub fn render(&self) -> String {
        let person = &self.person;
        let mut out = format!(
            "Person {}  {}  {}\n",
            person.unified_id,
            or_dash(&person.email),
            or_dash(&person.name)
        );
        if let Some(from) = &self.merged_from {
            out.push_str(&format!("  ({from} was merged into this person)\n"));
        }
        if person.deleted {
            out.push_str("  deleted: no live record remains in either CRM\n");
        }
        out.push_str(&format!("Stage: {}\n", or_dash(&person.stage)));
        out.push_str(&format!("  decided: {}\n", or_dash(&person.decision)));
        out.push_str(&format!(
            "  hubspot says {} ({}), salesforce says {} ({}){}\n",
            or_dash(&person.hubspot_stage),
            or_dash(&person.hubspot_raw_stage),
            or_dash(&person.salesforce_stage),
            or_dash(&person.salesforce_raw_stage),
            if person.drift {
                " — they disagree"
            } else {
                ""
            }
        ));
        out.push_str("Records:\n");
        for record in &self.records {
            out.push_str(&format!(
                "  {} {} {}{}  stage {}  rule {}  value {}  modified {}\n",
                record.key.system,
                record.key.object,
                record.key.id,
                if record.archived { " (deleted)" } else { "" },
                or_dash(&record.stage),
                record
                    .stage_rule
                    .as_deref()
                    .map_or("-".to_string(), |rule| format!("\"{rule}\"")),
                or_dash(&record.raw_stage),
                record.modified_at
            ));
        }
        if !self.history.transitions.is_empty() {
            out.push_str("Stage history:\n");
            for (change, run) in &self.history.transitions {
                out.push_str(&format!(
                    "  {}  {} -> {}  ({}{})\n",
                    change.at,
                    or_dash(&change.from),
                    change.to,
                    change.system,
                    run.map_or(String::new(), |run| format!(", run {run}"))
                ));
            }
        }
        for merge in &self.history.merged {
            out.push_str(&format!(
                "Merged in: {} ({})\n",
                merge.absorbed, merge.reason
            ));
        }
        if !self.history.queued.is_empty() {
            out.push_str("Writes queued for the next write-back:\n");
            for write in &self.history.queued {
                let changes: serde_json::Map<String, Value> =
                    serde_json::from_str(&write.changes).unwrap_or_default();
                for (field, change) in changes {
                    out.push_str(&format!(
                        "  {} {} {}: {} = {} ({})\n",
                        write.key.system,
                        write.key.object,
                        write.key.id,
                        field,
                        change["value"],
                        change["rule"].as_str().unwrap_or("-")
                    ));
                }
            }
        }
        if !self.history.written.is_empty() {
            out.push_str("Last written by crmsync:\n");
            for (key, field, run) in &self.history.written {
                out.push_str(&format!("  {key}: {field} (run {run})\n"));
            }
        }
        out
    }

    /// For machines.
    pub fn to_json(&self) -> Value {
        let person = &self.person;
        json!({
            "unified_id": person.unified_id,
            "merged_from": self.merged_from,
            "email": person.email,
            "name": person.name,
            "stage": person.stage,
            "decision": person.decision,
            "drift": person.drift,
            "deleted": person.deleted,
            "hubspot": {"stage": person.hubspot_stage, "raw": person.hubspot_raw_stage, "id": person.hubspot_id},
            "salesforce": {"stage": person.salesforce_stage, "raw": person.salesforce_raw_stage,
                "lead_id": person.salesforce_lead_id, "contact_id": person.salesforce_contact_id},
            "first_entered": person.first_entered.iter().map(|(stage, at)| (stage.clone(), json!(at.to_string()))).collect::<serde_json::Map<_, _>>(),
            "records": self.records.iter().map(|record| json!({
                "system": record.key.system, "object": record.key.object, "id": record.key.id,
                "archived": record.archived, "stage": record.stage, "rule": record.stage_rule,
                "value": record.raw_stage, "modified_at": record.modified_at.to_string(),
            })).collect::<Vec<_>>(),
            "transitions": self.history.transitions.iter().map(|(change, run)| json!({
                "from": change.from, "to": change.to, "at": change.at.to_string(),
                "system": change.system, "run_id": run,
            })).collect::<Vec<_>>(),
            "merged": self.history.merged.iter().map(|merge| json!({"absorbed": merge.absorbed, "reason": merge.reason})).collect::<Vec<_>>(),
            "queued_writes": self.history.queued.iter().map(|write| json!({
                "system": write.key.system, "object": write.key.object, "id": write.key.id,
                "changes": serde_json::from_str::<Value>(&write.changes).unwrap_or(Value::Null),
            })).collect::<Vec<_>>(),
            "written": self.history.written.iter().map(|(key, field, run)| json!({
                "system": key.system, "object": key.object, "id": key.id, "field": field, "run_id": run,
            })).collect::<Vec<_>>(),
        })
    }
}
