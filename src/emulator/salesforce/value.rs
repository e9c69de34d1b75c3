//! One Salesforce field value as the emulator stores it, and its JSON form on the wire
//! (date-times as `2024-05-07T22:07:19.000+0000`, dates as `2024-05-07`).

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::Value;

use super::schema::FieldType;

/// A stored field value. Which variant a field holds follows from its [`FieldType`]. Text is
/// shared (`Arc`) so the many records holding the same picklist value, owner id or company
/// name hold one copy of it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Number(f64),
    Text(Arc<str>),
    Date(Date),
    DateTime(Timestamp),
}

impl FieldValue {
    pub fn text(text: impl Into<Arc<str>>) -> Self {
        FieldValue::Text(text.into())
    }

    /// A date-time as Salesforce stores it: to the second (milliseconds are dropped on save,
    /// which is why the API always shows `.000`).
    pub fn datetime(at: Timestamp) -> Self {
        FieldValue::DateTime(Timestamp::from_second(at.as_second()).unwrap_or(at))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            FieldValue::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_timestamp(&self) -> Option<Timestamp> {
        match self {
            FieldValue::DateTime(at) => Some(*at),
            _ => None,
        }
    }

    /// The JSON Salesforce sends for this value in a field of type `field_type`.
    pub fn to_json(&self, field_type: FieldType) -> Value {
        match self {
            FieldValue::Null => Value::Null,
            FieldValue::Bool(value) => Value::Bool(*value),
            FieldValue::Number(number) => {
                if field_type == FieldType::Int && number.abs() < 9.0e15 {
                    Value::from(*number as i64)
                } else {
                    serde_json::Number::from_f64(*number)
                        .map(Value::Number)
                        .unwrap_or(Value::Null)
                }
            }
            FieldValue::Text(text) => Value::String(text.to_string()),
            FieldValue::Date(date) => Value::String(date.to_string()),
            FieldValue::DateTime(at) => Value::String(format_datetime(*at)),
        }
    }

    /// The value as a CSV cell (Bulk API 2.0 results): empty for null.
    pub fn to_csv_text(&self) -> String {
        match self {
            FieldValue::Null => String::new(),
            FieldValue::Bool(value) => value.to_string(),
            FieldValue::Number(number) => {
                if number.fract() == 0.0 && number.abs() < 9.0e15 {
                    format!("{}", *number as i64)
                } else {
                    number.to_string()
                }
            }
            FieldValue::Text(text) => text.to_string(),
            FieldValue::Date(date) => date.to_string(),
            FieldValue::DateTime(at) => format_datetime(*at),
        }
    }
}

/// `2024-05-07T22:07:19.000+0000`, the form Salesforce's REST API writes date-times in.
pub fn format_datetime(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Reads a date-time as clients send it in JSON: `2024-05-07T22:07:19.000+0000`,
/// `2024-05-07T22:07:19Z`, `2024-05-07T22:07:19.000Z` or with a `+hh:mm` offset.
pub fn parse_datetime(text: &str) -> Option<Timestamp> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at);
    }
    // `+0000` without the colon.
    jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%z", text)
        .ok()
        .and_then(|parsed| parsed.to_timestamp().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip_in_salesforce_form() {
        let at: Timestamp = "2024-05-07T22:07:19.250Z".parse().expect("timestamp");
        let text = format_datetime(at);
        assert_eq!(text, "2024-05-07T22:07:19.250+0000");
        assert_eq!(parse_datetime(&text), Some(at));
        assert_eq!(parse_datetime("2024-05-07T22:07:19.250Z"), Some(at));
        assert_eq!(parse_datetime("2024-05-08T00:07:19.250+02:00"), Some(at));
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn numbers_keep_their_field_type_on_the_wire() {
        assert_eq!(
            FieldValue::Number(5000.0)
                .to_json(FieldType::Currency)
                .to_string(),
            "5000.0"
        );
        assert_eq!(
            FieldValue::Number(42.0).to_json(FieldType::Int).to_string(),
            "42"
        );
    }
}
