//! The emulated org's records: one table per object, each record the non-null values of its
//! fields (a bitmap says which fields have one), findable by id (15- or 18-character, as
//! Salesforce accepts). Repeated text (picklist values, owner ids, names) is interned, so a
//! million records fit in little memory.

use jiff::Timestamp;
use rustc_hash::FxHashMap;

use super::schema::{Catalog, FieldType, ObjectSchema};
use super::value::{FieldValue, parse_datetime};

/// Objects have at most this many fields (one bit each in [`SfRecord`]'s bitmap).
pub const MAX_FIELDS: usize = 64;

static NULL: FieldValue = FieldValue::Null;

/// One record: the non-null values of its fields, in field order; bit `i` of `present` says
/// whether field `i` has one. Field 0 is the Id.
#[derive(Debug, Clone, PartialEq)]
pub struct SfRecord {
    present: u64,
    values: Box<[FieldValue]>,
    /// When the record went to the recycle bin (`IsDeleted` is true from then on).
    pub deleted_at: Option<Timestamp>,
}

impl SfRecord {
    /// A record from one value per field, in field order (nulls are not stored).
    pub fn from_values(values: Vec<FieldValue>) -> Self {
        let mut present = 0u64;
        let mut kept = Vec::with_capacity(values.iter().filter(|value| !value.is_null()).count());
        for (index, value) in values.into_iter().enumerate().take(MAX_FIELDS) {
            if !value.is_null() {
                present |= 1 << index;
                kept.push(value);
            }
        }
        Self {
            present,
            values: kept.into_boxed_slice(),
            deleted_at: None,
        }
    }

    pub fn id(&self) -> &str {
        self.value(ObjectSchema::ID).as_text().unwrap_or_default()
    }

    /// Where field `index`'s value sits in `values`, if it has one.
    fn slot(&self, index: usize) -> Option<usize> {
        if index >= MAX_FIELDS || self.present & (1 << index) == 0 {
            return None;
        }
        Some((self.present & ((1u64 << index) - 1)).count_ones() as usize)
    }

    pub fn value(&self, index: usize) -> &FieldValue {
        self.slot(index)
            .and_then(|slot| self.values.get(slot))
            .unwrap_or(&NULL)
    }

    /// Sets field `index` (null removes its value).
    pub fn set(&mut self, index: usize, value: FieldValue) {
        if index >= MAX_FIELDS {
            return;
        }
        match (self.slot(index), value.is_null()) {
            (Some(slot), false) => {
                if let Some(held) = self.values.get_mut(slot) {
                    *held = value;
                }
            }
            (Some(slot), true) => {
                let mut values = std::mem::take(&mut self.values).into_vec();
                values.remove(slot);
                self.values = values.into_boxed_slice();
                self.present &= !(1 << index);
            }
            (None, false) => {
                let slot = (self.present & ((1u64 << index) - 1)).count_ones() as usize;
                let mut values = std::mem::take(&mut self.values).into_vec();
                values.insert(slot, value);
                self.values = values.into_boxed_slice();
                self.present |= 1 << index;
            }
            (None, true) => {}
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// One shared copy of each text value seeded into the org.
#[derive(Debug, Default)]
pub struct Interner {
    held: rustc_hash::FxHashSet<std::sync::Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, text: &str) -> std::sync::Arc<str> {
        if let Some(held) = self.held.get(text) {
            return std::sync::Arc::clone(held);
        }
        let shared: std::sync::Arc<str> = std::sync::Arc::from(text);
        self.held.insert(std::sync::Arc::clone(&shared));
        shared
    }
}

/// The records of one object, in creation order, with an index by id and one by each
/// external-id field's value (upserts look records up by it).
#[derive(Debug, Clone, Default)]
pub struct ObjectTable {
    /// The records; change an external-id field through [`ObjectTable::set`] so its index
    /// follows.
    pub records: Vec<SfRecord>,
    /// Position in `records` by the id's first 15 characters (case-sensitive), packed into a
    /// number.
    by_id: FxHashMap<u128, usize>,
    /// Which fields are external ids.
    external_fields: Vec<usize>,
    /// Positions (deleted records included) by external-id field and value, trimmed and
    /// lowercased, as Salesforce matches external ids.
    by_external_id: FxHashMap<(usize, Box<str>), Vec<usize>>,
}

/// An external-id value as it is matched: trimmed, case-insensitive.
fn external_key(value: &str) -> Box<str> {
    value.trim().to_lowercase().into_boxed_str()
}

impl ObjectTable {
    /// A table whose `external_fields` are indexed by value.
    pub fn new(external_fields: Vec<usize>) -> Self {
        Self {
            external_fields,
            ..Self::default()
        }
    }

    pub fn push(&mut self, record: SfRecord) -> usize {
        let position = self.records.len();
        if let Some(key) = id_key(record.id()) {
            self.by_id.insert(key, position);
        }
        for field in &self.external_fields {
            if let Some(value) = record.value(*field).as_text() {
                self.by_external_id
                    .entry((*field, external_key(value)))
                    .or_default()
                    .push(position);
            }
        }
        self.records.push(record);
        position
    }

    /// Sets field `index` of the record at `position`, keeping the external-id index current.
    pub fn set(&mut self, position: usize, index: usize, value: FieldValue) {
        let Some(record) = self.records.get_mut(position) else {
            return;
        };
        if self.external_fields.contains(&index) {
            if let Some(old) = record.value(index).as_text() {
                let key = (index, external_key(old));
                if let Some(positions) = self.by_external_id.get_mut(&key) {
                    positions.retain(|held| *held != position);
                    if positions.is_empty() {
                        self.by_external_id.remove(&key);
                    }
                }
            }
            if let Some(new) = value.as_text() {
                self.by_external_id
                    .entry((index, external_key(new)))
                    .or_default()
                    .push(position);
            }
        }
        record.set(index, value);
    }

    /// Positions of the records (deleted ones included) whose external-id field `index` holds
    /// `value`; `None` when `index` is not an indexed external-id field.
    pub fn with_external_id(&self, index: usize, value: &str) -> Option<&[usize]> {
        if !self.external_fields.contains(&index) {
            return None;
        }
        Some(
            self.by_external_id
                .get(&(index, external_key(value)))
                .map_or(&[], Vec::as_slice),
        )
    }

    /// Position of the record with `id` (15 or 18 characters).
    pub fn position(&self, id: &str) -> Option<usize> {
        if id.len() != 15 && id.len() != 18 {
            return None;
        }
        self.by_id.get(&id_key(id)?).copied()
    }

    pub fn get(&self, id: &str) -> Option<&SfRecord> {
        self.position(id).map(|position| &self.records[position])
    }
}

pub fn short_id(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

/// An id's first 15 characters as one number (6 bits a character); `None` for characters an
/// id cannot have.
fn id_key(id: &str) -> Option<u128> {
    short_id(id).bytes().try_fold(0u128, |key, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 36,
            _ => return None,
        };
        Some((key << 6) | u128::from(digit))
    })
}

/// Every record of the org, one table per object of the catalog (same order).
#[derive(Debug)]
pub struct OrgData {
    pub catalog: Catalog,
    pub tables: Vec<ObjectTable>,
    /// Shared copies of the text values seeded.
    pub interner: Interner,
}

impl OrgData {
    pub fn new(catalog: Catalog) -> Self {
        let tables = catalog
            .objects()
            .iter()
            .map(|object| {
                ObjectTable::new(
                    object
                        .fields
                        .iter()
                        .enumerate()
                        .filter(|(_, field)| field.external_id)
                        .map(|(index, _)| index)
                        .collect(),
                )
            })
            .collect();
        Self {
            catalog,
            tables,
            interner: Interner::default(),
        }
    }

    /// The schema and table of an object by name, case-insensitively.
    pub fn object(&self, name: &str) -> Option<(&ObjectSchema, &ObjectTable)> {
        let index = self.catalog.object_index(name)?;
        Some((&self.catalog.objects()[index], &self.tables[index]))
    }

    /// Any record by id, whatever its object (found by the id's key prefix).
    pub fn find(&self, id: &str) -> Option<(&ObjectSchema, &SfRecord)> {
        let schema = self.catalog.object_for_id(id)?;
        let index = self.catalog.object_index(&schema.name)?;
        self.tables[index].get(id).map(|record| (schema, record))
    }

    /// Builds a record of `object` from JSON field values (as the generator writes them);
    /// fields left out are null (false for booleans). Text is shared through `interner`.
    pub fn record_from_json(
        schema: &ObjectSchema,
        fields: &serde_json::Map<String, serde_json::Value>,
        interner: &mut Interner,
    ) -> SfRecord {
        let values = schema
            .fields
            .iter()
            .map(|field| {
                let value = fields.get(&field.name).unwrap_or(&serde_json::Value::Null);
                match value_from_json(field.field_type, value).unwrap_or(FieldValue::Null) {
                    FieldValue::Null if field.field_type == FieldType::Boolean => {
                        FieldValue::Bool(false)
                    }
                    FieldValue::Text(text) => FieldValue::Text(interner.intern(&text)),
                    other => other,
                }
            })
            .collect::<Vec<_>>();
        SfRecord::from_values(values)
    }
}

/// A JSON value as a field of type `field_type` holds it; `None` when the JSON has the wrong
/// type or shape for the field.
pub fn value_from_json(field_type: FieldType, value: &serde_json::Value) -> Option<FieldValue> {
    use serde_json::Value;
    if value.is_null() {
        return Some(FieldValue::Null);
    }
    match field_type {
        FieldType::Boolean => match value {
            Value::Bool(flag) => Some(FieldValue::Bool(*flag)),
            Value::String(text) if text.eq_ignore_ascii_case("true") => {
                Some(FieldValue::Bool(true))
            }
            Value::String(text) if text.eq_ignore_ascii_case("false") => {
                Some(FieldValue::Bool(false))
            }
            _ => None,
        },
        FieldType::Double | FieldType::Currency | FieldType::Percent | FieldType::Int => {
            let number = match value {
                Value::Number(number) => number.as_f64(),
                Value::String(text) => text.trim().parse::<f64>().ok(),
                _ => None,
            }?;
            if field_type == FieldType::Int && number.fract() != 0.0 {
                return None;
            }
            Some(FieldValue::Number(number))
        }
        FieldType::Date => {
            // A date, or a date-time whose day is taken.
            let text = value.as_str()?.trim();
            text.parse::<jiff::civil::Date>()
                .ok()
                .or_else(|| {
                    parse_datetime(text).map(|at| at.to_zoned(jiff::tz::TimeZone::UTC).date())
                })
                .map(FieldValue::Date)
        }
        FieldType::DateTime => value
            .as_str()
            .and_then(parse_datetime)
            .map(FieldValue::datetime),
        _ => match value {
            Value::String(text) => Some(FieldValue::text(text.as_str())),
            Value::Number(number) => Some(FieldValue::text(number.to_string())),
            Value::Bool(flag) => Some(FieldValue::text(flag.to_string())),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_store_only_non_null_values_and_set_any_field() {
        let mut record = SfRecord::from_values(vec![
            FieldValue::text("00Q000000000001AAA"),
            FieldValue::Null,
            FieldValue::Bool(false),
            FieldValue::Null,
            FieldValue::Number(3.0),
        ]);
        assert_eq!(record.id(), "00Q000000000001AAA");
        assert_eq!(record.value(1), &FieldValue::Null);
        assert_eq!(record.value(2), &FieldValue::Bool(false));
        assert_eq!(record.value(4), &FieldValue::Number(3.0));
        assert_eq!(record.value(63), &FieldValue::Null);
        assert_eq!(record.value(64), &FieldValue::Null);
        record.set(3, FieldValue::text("between"));
        assert_eq!(record.value(3).as_text(), Some("between"));
        assert_eq!(record.value(4), &FieldValue::Number(3.0));
        record.set(2, FieldValue::Null);
        assert_eq!(record.value(2), &FieldValue::Null);
        assert_eq!(record.value(3).as_text(), Some("between"));
        record.set(40, FieldValue::Bool(true));
        record.set(4, FieldValue::Number(5.0));
        assert_eq!(record.value(40), &FieldValue::Bool(true));
        assert_eq!(record.value(4), &FieldValue::Number(5.0));
        assert_eq!(record.id(), "00Q000000000001AAA");
    }

    #[test]
    fn ids_are_found_by_15_or_18_characters() {
        let mut table = ObjectTable::default();
        table.push(SfRecord::from_values(vec![FieldValue::text(
            "00Q000000000001AAA",
        )]));
        assert!(table.get("00Q000000000001AAA").is_some());
        assert!(table.get("00Q000000000001").is_some());
        assert!(
            table.get("00Q000000000001AAB").is_some(),
            "the suffix is only a checksum"
        );
        assert!(
            table.get("00q000000000001").is_none(),
            "ids are case-sensitive"
        );
        assert!(table.get("00Q00000000000").is_none());
    }
}
