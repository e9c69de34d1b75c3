//! Identity: which records are the same person. Explicit links come first — a HubSpot merge,
//! a converted Salesforce lead's contact, the cross-link ids crmsync writes and HubSpot's own
//! Salesforce-id properties — then the normalized email. A person keeps the `unified_id` it
//! was given; when two persons turn out to be one, the older survives (see [`age`]), the
//! other's records, transitions and waiting writes move to it, and `person_merges` says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::EngineError;
use crate::record::System;
use crate::store::Warehouse;
use crate::store::model::{Assignment, MemberRow, PersonMerge, RecordKey};

/// Canonical fields that name the same person's record in the other system (or the same).
const LINK_FIELDS: [&str; 6] = [
    "salesforce_id",
    "salesforce_lead_id",
    "salesforce_contact_id",
    "hubspot_id",
    "converted_contact_id",
    "contact_id",
];

/// Who is who after a chunk of records.
#[derive(Debug, Default)]
pub(super) struct Resolution {
    /// Each record of the chunk and its person (`None` for records of no person), then each
    /// record pulled in (see `pulled`).
    pub assignments: Vec<Assignment>,
    pub merges: Vec<PersonMerge>,
    /// Persons to reconcile again.
    pub affected: BTreeSet<String>,
    /// Absorbed person -> survivor, transitively resolved.
    pub aliases: HashMap<String, String>,
    /// The records the chunk's person records link to (each looked up by key).
    pub linked: Vec<RecordKey>,
    /// Records outside the chunk that no run has given a person yet (they wait for a later
    /// chunk), joined to the person of a chunk record that links to them: decided with it and
    /// given its person by this chunk, so a one-way link never founds two persons. They stay
    /// pending: their own chunk decides them again, with their own links and email.
    pub pulled: Vec<MemberRow>,
    /// The number the first person founded in this chunk takes, and the one after the last.
    pub first_number: i64,
    pub next_number: i64,
}

impl Resolution {
    /// The person an id now stands for.
    pub fn resolve<'a>(&'a self, mut id: &'a str) -> &'a str {
        while let Some(next) = self.aliases.get(id) {
            id = next;
        }
        id
    }
}

/// The id of the person founded with `number`: numbered in founding order, so every index
/// keyed by person grows at its end. The warehouse keeps the next number with each committed
/// chunk, so a rerun after a crash numbers the persons it founds again as the lost chunk had.
pub fn numbered_unified_id(number: i64) -> String {
    format!("p-{number:012}")
}

/// Orders persons by age, the older first: ids given before numbering (a hash of the founding
/// record) come before numbered ones, and numbered ones by number. The older of two persons
/// found to be one survives, so a known id is not given up for a new one.
fn age(id: &str) -> (bool, &str) {
    let numbered = id
        .strip_prefix("p-")
        .is_some_and(|number| number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()));
    (numbered, id)
}

/// The records a record names as the same person.
fn linked_keys(record: &MemberRow) -> Vec<(RecordKey, &'static str)> {
    let mut keys = Vec::new();
    if let Some(survivor) = &record.merged_into {
        keys.push((
            RecordKey::new(
                record.key.system,
                record.key.object.clone(),
                survivor.clone(),
            ),
            "merged in the CRM",
        ));
    }
    for field in LINK_FIELDS {
        let Some(id) = record.fields.get(field).and_then(|value| value.as_str()) else {
            continue;
        };
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let key = match field {
            "hubspot_id" => RecordKey::new(System::Hubspot, "contacts", id),
            _ => match salesforce_person_object(id) {
                Some(object) => RecordKey::new(System::Salesforce, object, id),
                None => continue,
            },
        };
        if key != record.key {
            keys.push((key, "linked by id"));
        }
    }
    keys
}

/// The Salesforce person object an id belongs to, by its key prefix.
pub fn salesforce_person_object(id: &str) -> Option<&'static str> {
    match id.get(..3) {
        Some("00Q") => Some("Lead"),
        Some("003") => Some("Contact"),
        _ => None,
    }
}

/// Decides the person of every record in `chunk` (ordered by email), and of the waiting records
/// they link to (see [`Resolution::pulled`]). `is_person` says which objects hold people;
/// persons founded take numbers from `next_number` on.
pub(super) async fn resolve(
    warehouse: &Warehouse,
    chunk: &[MemberRow],
    is_person: impl Fn(&RecordKey) -> bool,
    next_number: i64,
) -> Result<Resolution, EngineError> {
    // Each row's links, worked out once.
    let row_links: Vec<Vec<(RecordKey, &'static str)>> = chunk.iter().map(linked_keys).collect();
    let links: Vec<RecordKey> = chunk
        .iter()
        .zip(&row_links)
        .filter(|(row, _)| is_person(&row.key))
        .flat_map(|(_, links)| links.iter().map(|(key, _)| key.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let in_chunk: HashSet<&RecordKey> = chunk.iter().map(|row| &row.key).collect();
    let mut by_key: HashMap<RecordKey, String> = HashMap::new();
    // Linked records of people without a person wait for a later chunk (their email comes
    // later), or for the chunk committing while this one is read — then their key, in both
    // chunks' footprints, has this one read again. One that does not link back would found a
    // second person in its own chunk.
    let mut waiting: HashMap<RecordKey, MemberRow> = HashMap::new();
    for row in warehouse.records(links.clone()).await? {
        match &row.unified_id {
            Some(unified) => {
                by_key.insert(row.key.clone(), unified.clone());
            }
            None if !row.archived && is_person(&row.key) && !in_chunk.contains(&row.key) => {
                waiting.insert(row.key.clone(), row);
            }
            None => {}
        }
    }
    // The persons of the chunk's emails, and of the waiting records' emails.
    let emails: Vec<String> = chunk
        .iter()
        .filter(|row| is_person(&row.key))
        .chain(waiting.values())
        .filter(|row| !row.archived)
        .filter_map(|row| row.email.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_email: HashMap<String, BTreeSet<String>> = HashMap::new();
    for row in warehouse.records_with_emails(emails).await? {
        if let (Some(email), Some(unified), false) = (row.email, row.unified_id, row.archived) {
            by_email.entry(email).or_default().insert(unified);
        }
    }

    let mut resolution = Resolution {
        linked: links,
        first_number: next_number,
        next_number,
        ..Resolution::default()
    };
    let mut assigned: Vec<(RecordKey, Option<String>)> = Vec::with_capacity(chunk.len());
    for (row, links) in chunk.iter().zip(&row_links) {
        if !is_person(&row.key) {
            assigned.push((row.key.clone(), row.unified_id.clone()));
            continue;
        }
        // (person, why) candidates, most authoritative first.
        let mut candidates: Vec<(String, String)> = Vec::new();
        if let Some(existing) = &row.unified_id {
            candidates.push((existing.clone(), "same record".into()));
        }
        for (key, why) in links {
            if let Some(unified) = by_key.get(key) {
                candidates.push((unified.clone(), format!("{why}: {key}")));
            } else if let Some(email) = waiting.get(key).and_then(|row| row.email.as_ref())
                && let Some(persons) = by_email.get(email)
            {
                // The linked record will join its email's person: so does this one.
                for unified in persons {
                    candidates.push((unified.clone(), format!("{why}: {key}, of email {email}")));
                }
            }
        }
        if !row.archived
            && let Some(email) = &row.email
            && let Some(persons) = by_email.get(email)
        {
            for unified in persons {
                candidates.push((unified.clone(), format!("same email {email}")));
            }
        }
        let mut distinct: BTreeMap<String, String> = BTreeMap::new();
        for (unified, why) in candidates {
            let unified = resolution.resolve(&unified).to_string();
            distinct.entry(unified).or_insert(why);
        }
        let oldest = distinct.keys().min_by_key(|id| age(id)).cloned();
        let person = match oldest {
            Some(survivor) => {
                for (absorbed, why) in distinct.into_iter().filter(|(id, _)| *id != survivor) {
                    resolution.merges.push(PersonMerge {
                        absorbed: absorbed.clone(),
                        survivor: survivor.clone(),
                        reason: format!("{} {}: {why}", row.key.system, row.key.id),
                    });
                    resolution
                        .aliases
                        .insert(absorbed.clone(), survivor.clone());
                    resolution.affected.remove(&absorbed);
                }
                Some(survivor)
            }
            // A record deleted before it was ever seen founds nobody.
            None if row.archived => None,
            None => {
                let founded = numbered_unified_id(resolution.next_number);
                resolution.next_number += 1;
                Some(founded)
            }
        };
        if let Some(person) = &person {
            by_key.insert(row.key.clone(), person.clone());
            for (key, _) in links {
                if let Some(waiting_row) = waiting.remove(key) {
                    by_key.insert(key.clone(), person.clone());
                    if let Some(email) = &waiting_row.email {
                        by_email
                            .entry(email.clone())
                            .or_default()
                            .insert(person.clone());
                    }
                    resolution.pulled.push(waiting_row);
                }
            }
            if !row.archived
                && let Some(email) = &row.email
            {
                by_email
                    .entry(email.clone())
                    .or_default()
                    .insert(person.clone());
            }
            resolution.affected.insert(person.clone());
        }
        assigned.push((row.key.clone(), person));
    }
    // A link to a record decided later in the chunk (a merge's new survivor, say) joins the
    // two persons now.
    for ((row, links), (_, person)) in chunk.iter().zip(&row_links).zip(&assigned) {
        let Some(person) = person else {
            continue;
        };
        for (key, why) in links {
            let Some(other) = by_key.get(key) else {
                continue;
            };
            let mine = resolution.resolve(person).to_string();
            let theirs = resolution.resolve(other).to_string();
            if mine == theirs {
                continue;
            }
            let (survivor, absorbed) = if age(&mine) < age(&theirs) {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            resolution.merges.push(PersonMerge {
                absorbed: absorbed.clone(),
                survivor: survivor.clone(),
                reason: format!("{} {}: {why}: {key}", row.key.system, row.key.id),
            });
            resolution.affected.remove(&absorbed);
            resolution.affected.insert(survivor.clone());
            resolution.aliases.insert(absorbed, survivor);
        }
    }
    // Ids absorbed later in the chunk resolve to their survivor.
    let mut assignments: Vec<Assignment> = assigned
        .into_iter()
        .zip(chunk)
        .map(|((key, person), row)| Assignment {
            unified_id: person.map(|id| resolution.resolve(&id).to_string()),
            key,
            version: row.version,
            keep_pending: false,
        })
        .collect();
    for row in &resolution.pulled {
        assignments.push(Assignment {
            unified_id: by_key
                .get(&row.key)
                .map(|id| resolution.resolve(id).to_string()),
            key: row.key.clone(),
            version: row.version,
            keep_pending: true,
        });
    }
    resolution.assignments = assignments;
    resolution.affected = resolution
        .affected
        .iter()
        .map(|id| resolution.resolve(id).to_string())
        .collect();
    Ok(resolution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_older_than_numbered_ones_and_numbered_ones_go_by_number() {
        let hashed = "p-03f231fd844df775e970";
        let first = numbered_unified_id(1);
        let second = numbered_unified_id(2);
        let tenth = numbered_unified_id(10);
        assert_eq!(first, "p-000000000001");
        assert!(age(hashed) < age(&first), "{hashed} is older than {first}");
        // A hashed id that happens to be all digits is still a hashed id (20 digits).
        assert!(age("p-00000000000000000009") < age(&first));
        assert!(age(&first) < age(&second) && age(&second) < age(&tenth));
    }
}
