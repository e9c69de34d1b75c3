//! How the emulator stores a record's properties compactly: names and repeated values are
//! shared (`Arc<str>`, one copy per distinct text), values are a small enum rather than JSON,
//! and a record's properties sit in one sorted vector. A million records fit in a few hundred
//! megabytes this way, where maps of JSON values took gigabytes.

use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashSet;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// One shared copy of each distinct text handed to [`shared_text`].
fn interned() -> &'static Mutex<FxHashSet<Arc<str>>> {
    static TEXTS: OnceLock<Mutex<FxHashSet<Arc<str>>>> = OnceLock::new();
    TEXTS.get_or_init(Default::default)
}

/// The stored copy of `text`, if some record or value holds it.
pub fn interned_text(text: &str) -> Option<Arc<str>> {
    interned()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(text)
        .cloned()
}

/// The shared copy of `text`. Use it for names and for values many records repeat (picklist
/// values, owner ids, company names); unique values (emails, ids, timestamps) are better kept
/// as their own copy, since the shared set keeps every text it ever saw.
pub fn shared_text(text: &str) -> Arc<str> {
    let mut texts = interned()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(held) = texts.get(text) {
        return Arc::clone(held);
    }
    let shared: Arc<str> = Arc::from(text);
    texts.insert(Arc::clone(&shared));
    shared
}

/// A property value: what HubSpot sends as strings, and Salesforce's typed scalars.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    Null,
    Bool(bool),
    Number(f64),
    Text(Arc<str>),
}

impl PropertyValue {
    /// A value repeated across records, stored once.
    pub fn shared(text: &str) -> Self {
        PropertyValue::Text(shared_text(text))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PropertyValue::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PropertyValue::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PropertyValue::Number(number) => Some(*number),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, PropertyValue::Null)
    }

    /// The value as JSON (whole numbers as integers).
    pub fn to_json(&self) -> Value {
        match self {
            PropertyValue::Null => Value::Null,
            PropertyValue::Bool(flag) => Value::Bool(*flag),
            PropertyValue::Number(number) => whole(*number)
                .map(Value::from)
                .or_else(|| serde_json::Number::from_f64(*number).map(Value::Number))
                .unwrap_or(Value::Null),
            PropertyValue::Text(text) => Value::String(text.to_string()),
        }
    }
}

/// `number` as an integer when it is one (and fits).
fn whole(number: f64) -> Option<i64> {
    (number.fract() == 0.0 && number.abs() < 9.0e15).then_some(number as i64)
}

impl Serialize for PropertyValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PropertyValue::Null => serializer.serialize_none(),
            PropertyValue::Bool(flag) => serializer.serialize_bool(*flag),
            PropertyValue::Number(number) => match whole(*number) {
                Some(integer) => serializer.serialize_i64(integer),
                None => serializer.serialize_f64(*number),
            },
            PropertyValue::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl From<&str> for PropertyValue {
    fn from(text: &str) -> Self {
        PropertyValue::Text(Arc::from(text))
    }
}

impl From<String> for PropertyValue {
    fn from(text: String) -> Self {
        PropertyValue::Text(Arc::from(text))
    }
}

impl From<&Value> for PropertyValue {
    /// Scalars as they are; arrays and objects (which no stored property holds) as their JSON text.
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => PropertyValue::Null,
            Value::Bool(flag) => PropertyValue::Bool(*flag),
            Value::Number(number) => number
                .as_f64()
                .map_or(PropertyValue::Null, PropertyValue::Number),
            Value::String(text) => PropertyValue::from(text.as_str()),
            other => PropertyValue::from(other.to_string()),
        }
    }
}

impl From<Value> for PropertyValue {
    fn from(value: Value) -> Self {
        match value {
            Value::String(text) => PropertyValue::from(text),
            other => PropertyValue::from(&other),
        }
    }
}

/// A record's properties, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    entries: Vec<(Arc<str>, PropertyValue)>,
}

impl Properties {
    /// Room for `count` properties without growing.
    pub fn with_capacity(count: usize) -> Self {
        Self {
            entries: Vec::with_capacity(count),
        }
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(held, _)| held.as_ref().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&PropertyValue> {
        self.position(name)
            .ok()
            .and_then(|position| self.entries.get(position))
            .map(|(_, value)| value)
    }

    /// The text of property `name`, if it holds text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(PropertyValue::as_str)
    }

    /// The text of the property with this name as stored once (see [`interned_text`]): found
    /// by comparing the entries' name pointers, in order, rather than by reading the names —
    /// the quicker way for a search that looks up one name in every record.
    pub fn text_by_interned(&self, name: &Arc<str>) -> Option<&str> {
        self.entries
            .iter()
            .find(|(held, _)| Arc::ptr_eq(held, name))
            .and_then(|(_, value)| value.as_str())
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets property `name`; returns the value it replaces.
    pub fn insert(
        &mut self,
        name: impl AsRef<str>,
        value: impl Into<PropertyValue>,
    ) -> Option<PropertyValue> {
        let name = name.as_ref();
        let value = value.into();
        match self.position(name) {
            Ok(position) => self
                .entries
                .get_mut(position)
                .map(|(_, held)| std::mem::replace(held, value)),
            Err(position) => {
                self.entries.insert(position, (shared_text(name), value));
                None
            }
        }
    }

    /// Sets property `name` to a text many records repeat, stored once.
    pub fn insert_shared(&mut self, name: &str, text: &str) -> Option<PropertyValue> {
        self.insert(name, PropertyValue::shared(text))
    }

    pub fn remove(&mut self, name: &str) -> Option<PropertyValue> {
        self.position(name)
            .ok()
            .map(|position| self.entries.remove(position).1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name and value of every property, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PropertyValue)> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_ref(), value))
    }

    /// The properties as JSON values by name.
    pub fn to_json_map(&self) -> serde_json::Map<String, Value> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_json()))
            .collect()
    }

    /// Gives back unused capacity (after a record is built).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a str, &'a PropertyValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, PropertyValue)>,
        fn(&'a (Arc<str>, PropertyValue)) -> (&'a str, &'a PropertyValue),
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn pair(entry: &(Arc<str>, PropertyValue)) -> (&str, &PropertyValue) {
            (entry.0.as_ref(), &entry.1)
        }
        self.entries.iter().map(pair)
    }
}

impl<N: AsRef<str>, V: Into<PropertyValue>> FromIterator<(N, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut properties = Properties::default();
        for (name, value) in pairs {
            properties.insert(name, value);
        }
        properties.shrink_to_fit();
        properties
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            map.serialize_entry(name.as_ref(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_stay_sorted_and_replace_in_place() {
        let mut properties = Properties::default();
        assert_eq!(properties.insert("lastname", "Ng"), None);
        properties.insert("email", "ng@hooli.example");
        properties.insert_shared("lifecyclestage", "lead");
        assert_eq!(
            properties.insert("lastname", "Nguyen"),
            Some(PropertyValue::from("Ng"))
        );
        let names: Vec<&str> = properties.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["email", "lastname", "lifecyclestage"]);
        assert_eq!(properties.text("lastname"), Some("Nguyen"));
        assert_eq!(
            properties.remove("email"),
            Some(PropertyValue::from("ng@hooli.example"))
        );
        assert!(!properties.contains_key("email"));
        assert_eq!(properties.len(), 2);
    }

    #[test]
    fn shared_values_are_one_copy() {
        let (PropertyValue::Text(first), PropertyValue::Text(second)) = (
            PropertyValue::shared("marketingqualifiedlead"),
            PropertyValue::shared("marketingqualifiedlead"),
        ) else {
            panic!("text values");
        };
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn values_convert_to_and_from_json() {
        for json in [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(42),
            serde_json::json!(2.5),
            serde_json::json!("O'Brien"),
        ] {
            assert_eq!(PropertyValue::from(&json).to_json(), json);
            assert_eq!(
                serde_json::to_value(PropertyValue::from(&json)).expect("serializes"),
                json
            );
        }
    }
}
