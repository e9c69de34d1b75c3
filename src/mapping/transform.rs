//! Field transforms: the small steps that turn a CRM property into a canonical field value.
//!
//! A field map reads one property (or concatenates several) and runs its transforms in order.
//! Each transform declares what it accepts (text or a time) and what it produces, so a chain
//! such as `["datetime", "lowercase"]` is rejected when the mapping is compiled, not at run time.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::diagnostics::{did_you_mean, list};
use crate::record::FieldValue;
use crate::tomldoc::Node;

/// The names accepted in a `transform` list, for suggestions and help texts.
pub const TRANSFORM_NAMES: [&str; 10] = [
    "trim",
    "lowercase",
    "uppercase",
    "email",
    "datetime",
    "epoch_ms",
    "date",
    "map",
    "default",
    "digits",
];

/// One compiled transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Strip surrounding whitespace; an empty result becomes null.
    Trim,
    Lowercase,
    Uppercase,
    /// Trim, lowercase and require the shape `local@domain.tld`.
    Email,
    /// Parse an RFC 3339 / ISO 8601 timestamp (`2024-05-01T12:34:56.789Z`).
    Datetime,
    /// Parse milliseconds since the Unix epoch (a number or numeric text).
    EpochMillis,
    /// Parse a calendar date with a strftime-style format (default `%Y-%m-%d`).
    Date {
        format: String,
    },
    /// Replace values found in the table; others pass unchanged.
    Map {
        values: HashMap<String, String>,
    },
    /// Use this text when the value is null.
    Default {
        value: String,
    },
    /// Keep only the digits and a leading `+` (phone numbers).
    Digits,
}

/// What kind of value flows between transforms, checked when a mapping is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Time,
}

impl ValueKind {
    fn describe(self) -> &'static str {
        match self {
            ValueKind::Text => "text",
            ValueKind::Time => "a date or timestamp",
        }
    }
}

/// Why a transform could not handle a value (the record goes to dead letters for this field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("{value:?} is not a valid email address")]
    InvalidEmail { value: String },
    #[error("{value:?} is not an ISO 8601 timestamp: {reason}")]
    InvalidDatetime { value: String, reason: String },
    #[error("{value:?} is not a number of milliseconds since 1970")]
    InvalidEpochMillis { value: String },
    #[error("{value:?} does not match the date format {format:?}")]
    InvalidDate { value: String, format: String },
}

impl Transform {
    fn name(&self) -> &'static str {
        match self {
            Transform::Trim => "trim",
            Transform::Lowercase => "lowercase",
            Transform::Uppercase => "uppercase",
            Transform::Email => "email",
            Transform::Datetime => "datetime",
            Transform::EpochMillis => "epoch_ms",
            Transform::Date { .. } => "date",
            Transform::Map { .. } => "map",
            Transform::Default { .. } => "default",
            Transform::Digits => "digits",
        }
    }

    /// The kind of value this transform accepts and the kind it produces.
    fn signature(&self) -> (ValueKind, ValueKind) {
        match self {
            Transform::Datetime | Transform::EpochMillis | Transform::Date { .. } => {
                (ValueKind::Text, ValueKind::Time)
            }
            _ => (ValueKind::Text, ValueKind::Text),
        }
    }

    /// Applies the transform. Null passes through every transform except `default`.
    pub fn apply(&self, value: FieldValue) -> Result<FieldValue, TransformError> {
        let text = match value {
            FieldValue::Null => {
                return Ok(match self {
                    Transform::Default { value } => FieldValue::Text(value.clone()),
                    _ => FieldValue::Null,
                });
            }
            FieldValue::Text(text) => text,
            // Kinds are checked at compile time; a time reaching a text transform cannot happen.
            time => return Ok(time),
        };
        Ok(match self {
            Transform::Trim => {
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    FieldValue::Null
                } else if trimmed.len() == text.len() {
                    FieldValue::Text(text)
                } else {
                    FieldValue::Text(trimmed.to_string())
                }
            }
            Transform::Lowercase => FieldValue::Text(lowercase(text)),
            Transform::Uppercase => FieldValue::Text(text.to_uppercase()),
            Transform::Email => normalize_email(text)?,
            Transform::Datetime => match text.trim().parse::<Timestamp>() {
                Ok(at) => FieldValue::Timestamp(at),
                Err(error) => {
                    return Err(TransformError::InvalidDatetime {
                        value: text,
                        reason: error.to_string(),
                    });
                }
            },
            Transform::EpochMillis => parse_epoch_millis(&text)
                .map(FieldValue::Timestamp)
                .ok_or(TransformError::InvalidEpochMillis { value: text })?,
            Transform::Date { format } => match Date::strptime(format, text.trim()) {
                Ok(date) => FieldValue::Date(date),
                Err(_) => {
                    return Err(TransformError::InvalidDate {
                        value: text,
                        format: format.clone(),
                    });
                }
            },
            Transform::Map { values } => match values.get(&text) {
                Some(mapped) => FieldValue::Text(mapped.clone()),
                None => FieldValue::Text(text),
            },
            Transform::Default { .. } => FieldValue::Text(text),
            Transform::Digits => {
                let mut digits = String::with_capacity(text.len());
                for (index, c) in text.trim().chars().enumerate() {
                    if c.is_ascii_digit() || (index == 0 && c == '+') {
                        digits.push(c);
                    }
                }
                if digits.is_empty() {
                    FieldValue::Null
                } else {
                    FieldValue::Text(digits)
                }
            }
        })
    }
}

/// Lowercases without reallocating when the text is already lowercase ASCII.
fn lowercase(text: String) -> String {
    if text
        .bytes()
        .all(|b| !b.is_ascii_uppercase() && b.is_ascii())
    {
        text
    } else {
        text.to_lowercase()
    }
}

fn normalize_email(text: String) -> Result<FieldValue, TransformError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(FieldValue::Null);
    }
    let valid = match trimmed.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !trimmed.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(TransformError::InvalidEmail { value: text });
    }
    let normalized = if trimmed.len() == text.len() {
        lowercase(text)
    } else {
        lowercase(trimmed.to_string())
    };
    Ok(FieldValue::Text(normalized))
}

fn parse_epoch_millis(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    let millis: i64 = match text.parse::<i64>() {
        Ok(millis) => millis,
        // Some APIs send "1714566896789.0".
        Err(_) => {
            let float: f64 = text.parse().ok()?;
            if !float.is_finite() || float.fract() != 0.0 {
                return None;
            }
            float as i64
        }
    };
    Timestamp::from_millisecond(millis).ok()
}

/// Reads one entry of a `transform` list: a name (`"trim"`) or a one-key table
/// (`{ date = "%m/%d/%Y" }`, `{ map = { Web = "web" } }`, `{ default = "unknown" }`).
/// Problems are reported on the node; `None` means the entry was unusable.
pub fn parse_transform(node: &Node<'_, '_>) -> Option<Transform> {
    if let Some(name) = node.peek_str() {
        return match name {
            "trim" => Some(Transform::Trim),
            "lowercase" => Some(Transform::Lowercase),
            "uppercase" => Some(Transform::Uppercase),
            "email" => Some(Transform::Email),
            "datetime" => Some(Transform::Datetime),
            "epoch_ms" => Some(Transform::EpochMillis),
            "date" => Some(Transform::Date {
                format: "%Y-%m-%d".to_string(),
            }),
            "digits" => Some(Transform::Digits),
            "map" | "default" => {
                node.report(
                    format!("transform `{name}` needs an argument"),
                    if name == "map" {
                        "write it as { map = { \"from\" = \"to\" } }"
                    } else {
                        "write it as { default = \"value\" }"
                    },
                );
                None
            }
            other => {
                let help = match did_you_mean(other, TRANSFORM_NAMES) {
                    Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                    None => format!("known transforms: {}", list(TRANSFORM_NAMES)),
                };
                node.report(format!("unknown transform \"{other}\""), help);
                None
            }
        };
    }
    if !node.is_table() {
        node.report(
            format!(
                "a transform must be a name or a one-key table, found {}",
                node.type_name()
            ),
            format!("known transforms: {}", list(TRANSFORM_NAMES)),
        );
        return None;
    }
    let table = node.as_table()?;
    let entries = table.entries();
    let [(name, argument)] = entries.as_slice() else {
        node.report(
            format!(
                "a transform table must have exactly one key, found {}",
                entries.len()
            ),
            "write each transform as its own list entry, e.g. [\"trim\", { default = \"n/a\" }]",
        );
        return None;
    };
    match name.value.as_str() {
        "date" => {
            let format = argument.as_str()?;
            if let Err(error) =
                jiff::fmt::strtime::format(format.value.as_str(), Date::constant(2024, 5, 1))
            {
                argument.report(
                    format!("invalid date format \"{}\": {error}", format.value),
                    "use strftime directives such as %Y-%m-%d or %m/%d/%Y",
                );
                return None;
            }
            if !format.value.contains('%') {
                argument.report(
                    format!(
                        "invalid date format \"{}\": it has no % directive",
                        format.value
                    ),
                    "use strftime directives such as %Y-%m-%d or %m/%d/%Y",
                );
                return None;
            }
            Some(Transform::Date {
                format: format.value,
            })
        }
        "map" => {
            let map_table = argument.as_table()?;
            let mut values = HashMap::new();
            for (from, to) in map_table.entries() {
                let Some(to_text) = to.peek_str() else {
                    to.report(
                        format!(
                            "map value for \"{}\" must be a string, found {}",
                            from.value,
                            to.type_name()
                        ),
                        "write the replacement as a string",
                    );
                    continue;
                };
                values.insert(from.value, to_text.to_string());
            }
            if map_table.entries().is_empty() {
                argument.report(
                    "transform `map` has no entries",
                    "add entries like { \"Web\" = \"web\" } or remove the transform",
                );
                return None;
            }
            Some(Transform::Map { values })
        }
        "default" => {
            let value = argument.as_str()?;
            Some(Transform::Default { value: value.value })
        }
        "trim" | "lowercase" | "uppercase" | "email" | "datetime" | "epoch_ms" | "digits" => {
            argument.report(
                format!("transform `{}` takes no argument", name.value),
                format!("write it as the plain string \"{}\"", name.value),
            );
            None
        }
        other => {
            let help = match did_you_mean(other, TRANSFORM_NAMES) {
                Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                None => format!("known transforms: {}", list(TRANSFORM_NAMES)),
            };
            node.report(format!("unknown transform \"{other}\""), help);
            None
        }
    }
}

/// Checks that each transform accepts what the previous one produces. Returns the index of
/// the first transform that does not, with a message.
pub fn check_chain(transforms: &[Transform]) -> Result<(), (usize, String)> {
    let mut kind = ValueKind::Text;
    for (index, transform) in transforms.iter().enumerate() {
        let (accepts, produces) = transform.signature();
        if accepts != kind {
            let previous = transforms
                .get(index.wrapping_sub(1))
                .map_or("the source", Transform::name);
            return Err((
                index,
                format!(
                    "transform `{}` needs {} but `{previous}` produces {}",
                    transform.name(),
                    accepts.describe(),
                    kind.describe()
                ),
            ));
        }
        kind = produces;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> FieldValue {
        FieldValue::Text(value.to_string())
    }

    #[test]
    fn email_is_trimmed_lowercased_and_validated() {
        assert_eq!(
            Transform::Email.apply(text("  Ann@Example.COM ")),
            Ok(text("ann@example.com"))
        );
        assert!(matches!(
            Transform::Email.apply(text("ann.example.com")),
            Err(TransformError::InvalidEmail { .. })
        ));
        assert!(Transform::Email.apply(text("a@b")).is_err());
        assert!(Transform::Email.apply(text("a b@c.com")).is_err());
        assert_eq!(Transform::Email.apply(text("  ")), Ok(FieldValue::Null));
    }

    #[test]
    fn times_parse_from_iso_and_epoch_millis() {
        let iso = Transform::Datetime
            .apply(text("2024-05-01T12:34:56.789Z"))
            .ok();
        let millis = Transform::EpochMillis.apply(text("1714566896789")).ok();
        assert!(iso.is_some());
        assert_eq!(iso, millis);
        assert!(Transform::EpochMillis.apply(text("soon")).is_err());
        let date = Transform::Date {
            format: "%m/%d/%Y".into(),
        }
        .apply(text("05/01/2024"));
        assert_eq!(date, Ok(FieldValue::Date(Date::constant(2024, 5, 1))));
    }

    #[test]
    fn default_fills_null_only_and_trim_empties_to_null() {
        let default = Transform::Default {
            value: "n/a".into(),
        };
        assert_eq!(default.apply(FieldValue::Null), Ok(text("n/a")));
        assert_eq!(default.apply(text("x")), Ok(text("x")));
        assert_eq!(Transform::Trim.apply(text("   ")), Ok(FieldValue::Null));
        assert_eq!(
            Transform::Digits.apply(text("+1 (555) 010-9999")),
            Ok(text("+15550109999"))
        );
    }

    #[test]
    fn chains_are_kind_checked() {
        assert!(check_chain(&[Transform::Trim, Transform::Datetime]).is_ok());
        let error = check_chain(&[Transform::Datetime, Transform::Lowercase]);
        assert_eq!(
            error,
            Err((
                1,
                "transform `lowercase` needs text but `datetime` produces a date or timestamp"
                    .to_string()
            ))
        );
    }
}
