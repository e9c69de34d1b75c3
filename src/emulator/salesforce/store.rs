//! The emulated org's records: one table per object, each record a row of [`FieldValue`]s in
//! the object's field order, findable by id (15- or 18-character, as Salesforce accepts).

use jiff::Timestamp;
use rustc_hash::FxHashMap;

use super::schema::{Catalog, FieldType, ObjectSchema};
use super::value::{FieldValue, parse_datetime};

/// One record: values in the order of its object's fields; `values[0]` is the Id.
#[derive(Debug, Clone, PartialEq)]
pub struct SfRecord {
    pub values: Vec<FieldValue>,
    /// When the record went to the recycle bin (`IsDeleted` is true from then on).
    pub deleted_at: Option<Timestamp>,
}

impl SfRecord {
    pub fn id(&self) -> &str {
        self.values
            .get(ObjectSchema::ID)
            .and_then(FieldValue::as_text)
            .unwrap_or_default()
    }

    pub fn value(&self, index: usize) -> &FieldValue {
        self.values.get(index).unwrap_or(&FieldValue::Null)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// The records of one object, in creation order, with an index by id.
#[derive(Debug, Clone, Default)]
pub struct ObjectTable {
    pub records: Vec<SfRecord>,
    /// Position in `records` by the id's first 15 characters (case-sensitive).
    by_id: FxHashMap<Box<str>, usize>,
}

impl ObjectTable {
    pub fn push(&mut self, record: SfRecord) -> usize {
        let position = self.records.len();
        self.by_id.insert(short_id(record.id()).into(), position);
        self.records.push(record);
        position
    }

    /// Position of the record with `id` (15 or 18 characters).
    pub fn position(&self, id: &str) -> Option<usize> {
        if id.len() != 15 && id.len() != 18 {
            return None;
        }
        self.by_id.get(short_id(id)).copied()
    }

    pub fn get(&self, id: &str) -> Option<&SfRecord> {
        self.position(id).map(|position| &self.records[position])
    }
}

pub fn short_id(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

/// Every record of the org, one table per object of the catalog (same order).
#[derive(Debug, Clone)]
pub struct OrgData {
    pub catalog: Catalog,
    pub tables: Vec<ObjectTable>,
}

impl OrgData {
    pub fn new(catalog: Catalog) -> Self {
        let tables = catalog
            .objects()
            .iter()
            .map(|_| ObjectTable::default())
            .collect();
        Self { catalog, tables }
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
    /// fields left out are null (false for booleans).
    pub fn record_from_json(
        schema: &ObjectSchema,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> SfRecord {
        let mut values = schema
            .fields
            .iter()
            .map(|field| {
                let value = fields.get(&field.name).unwrap_or(&serde_json::Value::Null);
                value_from_json(field.field_type, value).unwrap_or(FieldValue::Null)
            })
            .collect::<Vec<_>>();
        for (field, value) in schema.fields.iter().zip(values.iter_mut()) {
            if field.field_type == FieldType::Boolean && value.is_null() {
                *value = FieldValue::Bool(false);
            }
        }
        SfRecord {
            values,
            deleted_at: None,
        }
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
            let text = value.as_str()?;
            text.get(..10)
                .and_then(|day| day.parse::<jiff::civil::Date>().ok())
                .map(FieldValue::Date)
        }
        FieldType::DateTime => value
            .as_str()
            .and_then(parse_datetime)
            .map(FieldValue::DateTime),
        _ => match value {
            Value::String(text) => Some(FieldValue::text(text.as_str())),
            Value::Number(number) => Some(FieldValue::text(number.to_string())),
            Value::Bool(flag) => Some(FieldValue::text(flag.to_string())),
            _ => None,
        },
    }
}
