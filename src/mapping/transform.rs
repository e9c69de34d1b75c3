//! Field transforms: the small steps that turn a CRM property into a canonical field value.
//!
//! A field map reads one property (or concatenates several) and runs its transforms in order.
//! Each transform declares what it accepts (text or a time) and what it produces, so a chain
//! such as `["datetime", "lowercase"]` is rejected when the mapping is compiled, not at run time.

use std::borrow::Cow;
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

    /// Applies the transform. Null passes through every transform except `default`. Text stays
    /// borrowed from the record until a transform has to change it.
    pub fn apply<'a>(&'a self, value: Working<'a>) -> Result<Working<'a>, TransformError> {
        let text = match value {
            Working::Null => {
                return Ok(match self {
                    Transform::Default { value } => Working::Text(Cow::Borrowed(value)),
                    _ => Working::Null,
                });
            }
            Working::Text(text) => text,
            // Kinds are checked at compile time; a time reaching a text transform cannot happen.
            time => return Ok(time),
        };
        Ok(match self {
            Transform::Trim => match trim_cow(text) {
                Some(text) => Working::Text(text),
                None => Working::Null,
            },
            Transform::Lowercase => Working::Text(lowercase(text)),
            Transform::Uppercase => {
                if text.chars().any(char::is_lowercase) {
                    Working::Text(Cow::Owned(text.to_uppercase()))
                } else {
                    Working::Text(text)
                }
            }
            Transform::Email => normalize_email(text)?,
            Transform::Datetime => match parse_timestamp(text.trim()) {
                Ok(at) => Working::Timestamp(at),
                Err(error) => {
                    return Err(TransformError::InvalidDatetime {
                        value: text.into_owned(),
                        reason: error.to_string(),
                    });
                }
            },
            Transform::EpochMillis => match parse_epoch_millis(&text) {
                Some(at) => Working::Timestamp(at),
                None => {
                    return Err(TransformError::InvalidEpochMillis {
                        value: text.into_owned(),
                    });
                }
            },
            Transform::Date { format } => match Date::strptime(format, text.trim()) {
                Ok(date) => Working::Date(date),
                Err(_) => {
                    return Err(TransformError::InvalidDate {
                        value: text.into_owned(),
                        format: format.clone(),
                    });
                }
            },
            Transform::Map { values } => match values.get(text.as_ref()) {
                Some(mapped) => Working::Text(Cow::Borrowed(mapped)),
                None => Working::Text(text),
            },
            Transform::Default { .. } => Working::Text(text),
            Transform::Digits => {
                let trimmed = text.trim();
                let keep =
                    |(index, c): &(usize, char)| c.is_ascii_digit() || (*index == 0 && *c == '+');
                if trimmed.chars().enumerate().all(|pair| keep(&pair)) {
                    match trim_cow(text) {
                        Some(text) => Working::Text(text),
                        None => Working::Null,
                    }
                } else {
                    let digits: String = trimmed
                        .chars()
                        .enumerate()
                        .filter(keep)
                        .map(|(_, c)| c)
                        .collect();
                    if digits.is_empty() {
                        Working::Null
                    } else {
                        Working::Text(Cow::Owned(digits))
                    }
                }
            }
        })
    }
}

/// A value between transforms: text borrowed from the record where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Working<'a> {
    Null,
    Text(Cow<'a, str>),
    Timestamp(Timestamp),
    Date(Date),
}

impl Working<'_> {
    /// The final field value (the one place text is copied out of the record).
    pub fn into_field_value(self) -> FieldValue {
        match self {
            Working::Null => FieldValue::Null,
            Working::Text(text) => FieldValue::Text(text.into_owned()),
            Working::Timestamp(at) => FieldValue::Timestamp(at),
            Working::Date(date) => FieldValue::Date(date),
        }
    }
}

/// Trims without copying; `None` when nothing is left.
fn trim_cow(text: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let trimmed_len = text.trim().len();
    if trimmed_len == 0 {
        return None;
    }
    if trimmed_len == text.len() {
        return Some(text);
    }
    Some(match text {
        Cow::Borrowed(borrowed) => Cow::Borrowed(borrowed.trim()),
        Cow::Owned(owned) => Cow::Owned(owned.trim().to_string()),
    })
}

/// Lowercases, copying only when something changes.
fn lowercase(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        Cow::Owned(text.to_lowercase())
    } else {
        text
    }
}

fn normalize_email(text: Cow<'_, str>) -> Result<Working<'_>, TransformError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Working::Null);
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
        return Err(TransformError::InvalidEmail {
            value: text.into_owned(),
        });
    }
    let trimmed = trim_cow(text).unwrap_or(Cow::Borrowed(""));
    Ok(Working::Text(lowercase(trimmed)))
}

/// Parses an RFC 3339 / ISO 8601 timestamp. The shapes CRMs send
/// (`2024-05-01T12:34:56.789Z`, Salesforce's `2024-05-01T12:34:56.000+0000`) take a fast path;
/// anything else goes to jiff's full parser, which also words the errors.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, jiff::Error> {
    match parse_common_timestamp(text.as_bytes()) {
        Some(at) => Ok(at),
        None => text.parse::<Timestamp>(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM|±HHMM)`; `None` for anything else.
fn parse_common_timestamp(bytes: &[u8]) -> Option<Timestamp> {
    fn digits(bytes: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
        let slice = bytes.get(range)?;
        let mut value = 0i64;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        Some(value)
    }
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let year = digits(bytes, 0..4)?;
    let month = digits(bytes, 5..7)?;
    let day = digits(bytes, 8..10)?;
    let hour = digits(bytes, 11..13)?;
    let minute = digits(bytes, 14..16)?;
    let second = digits(bytes, 17..19)?;
    // Leap seconds and other oddities go to the full parser.
    if !(1..=12).contains(&month) || day < 1 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days_in_month = match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > days_in_month {
        return None;
    }
    let mut position = 19;
    let mut nanos = 0i64;
    if bytes.get(position) == Some(&b'.') {
        let start = position + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let count = end - start;
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(bytes, start..end)? * 10i64.pow(9 - count as u32);
        position = end;
    }
    let offset_seconds = match bytes.get(position..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hours = digits(&[*h1, *h2], 0..2)?;
            let minutes = digits(&[*m1, *m2], 0..2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the civil date (proleptic Gregorian).
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Timestamp::new(seconds, nanos as i32).ok()
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
            match check_date_format(&format.value) {
                Ok(()) => Some(Transform::Date {
                    format: format.value,
                }),
                Err(reason) => {
                    argument.report(
                        format!("invalid date format \"{}\": {reason}", format.value),
                        "use strftime directives that give a whole date, such as %Y-%m-%d or %m/%d/%Y",
                    );
                    None
                }
            }
        }
        "map" => {
            let entries = argument.as_table()?.entries();
            if entries.is_empty() {
                argument.report(
                    "transform `map` has no entries",
                    "add entries like { \"Web\" = \"web\" } or remove the transform",
                );
                return None;
            }
            let mut values = HashMap::new();
            let mut all_text = true;
            for (from, to) in entries {
                let Some(to_text) = to.peek_str() else {
                    to.report(
                        format!(
                            "map value for \"{}\" must be a string, found {}",
                            from.value,
                            to.type_name()
                        ),
                        "write the replacement as a string",
                    );
                    all_text = false;
                    continue;
                };
                values.insert(from.value, to_text.to_string());
            }
            all_text.then_some(Transform::Map { values })
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

/// A date format is usable when a date written with it reads back as the same date: that
/// rejects unknown directives and formats that leave out the year, month or day, and accepts
/// formats that also carry a time or zone.
fn check_date_format(format: &str) -> Result<(), String> {
    if !format.contains('%') {
        return Err("it has no % directive".to_string());
    }
    let sample = Timestamp::constant(1_715_953_530, 0).to_zoned(jiff::tz::TimeZone::UTC);
    let written = jiff::fmt::strtime::format(format, &sample).map_err(|error| error.to_string())?;
    match Date::strptime(format, &written) {
        Ok(date) if date == sample.date() => Ok(()),
        Ok(_) => Err("dates written with it read back as another date".to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// Checks that each transform accepts what the previous one produces. Returns the index of
/// the first transform that does not, with a message.
pub fn check_chain(transforms: &[Transform]) -> Result<(), (usize, String)> {
    let mut kind = ValueKind::Text;
    for (index, transform) in transforms.iter().enumerate() {
        let (accepts, produces) = transform.signature();
        if accepts != kind {
            // Every chain starts with text, so a mismatch is never at the first transform.
            let previous = index
                .checked_sub(1)
                .and_then(|before| transforms.get(before))
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

    fn text(value: &str) -> Working<'_> {
        Working::Text(Cow::Borrowed(value))
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
        assert_eq!(Transform::Email.apply(text("  ")), Ok(Working::Null));
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
        let transform = Transform::Date {
            format: "%m/%d/%Y".into(),
        };
        let date = transform.apply(text("05/01/2024"));
        assert_eq!(date, Ok(Working::Date(Date::constant(2024, 5, 1))));
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_jiff() {
        let samples = [
            "2024-05-01T12:34:56.789Z",
            "2024-05-01T12:34:56.000+0000",
            "2024-02-29T23:59:59-05:30",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2000-03-01T00:00:00.1+01:00",
            "2100-12-31T12:00:00-0800",
        ];
        for sample in samples {
            let fast = parse_common_timestamp(sample.as_bytes());
            let full: Option<Timestamp> = sample.parse().ok().or_else(|| {
                // jiff wants a colon in offsets; insert one to get its reading.
                let (head, offset) = sample.split_at(sample.len() - 5);
                format!("{head}{}:{}", &offset[..3], &offset[3..])
                    .parse()
                    .ok()
            });
            assert!(fast.is_some(), "{sample} should take the fast path");
            assert_eq!(fast, full, "{sample}");
        }
        for odd in [
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:34:60Z",
            "2024-05-01 12:34:56Z",
            "2024-05-01T12:34:56",
            "2024-05-01T12:34:56.Z",
        ] {
            assert_eq!(parse_common_timestamp(odd.as_bytes()), None, "{odd}");
        }
        assert!(parse_timestamp("2023-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn default_fills_null_only_and_trim_empties_to_null() {
        let default = Transform::Default {
            value: "n/a".into(),
        };
        assert_eq!(default.apply(Working::Null), Ok(text("n/a")));
        assert_eq!(default.apply(text("x")), Ok(text("x")));
        assert_eq!(Transform::Trim.apply(text("   ")), Ok(Working::Null));
        assert_eq!(
            Transform::Digits.apply(text("+1 (555) 010-9999")),
            Ok(text("+15550109999"))
        );
    }

    proptest::proptest! {
        /// The fast path itself (not the fallback) reads every RFC 3339 rendering of an
        /// instant, with or without a colon in the offset, as that instant.
        #[test]
        fn the_fast_path_reads_every_rendering_of_an_instant(
            seconds in -2_208_988_800i64..4_102_444_800,
            nanos in 0i32..1_000_000_000,
            offset_minutes in -(14 * 60)..=(14 * 60i32),
            colon in proptest::prelude::any::<bool>(),
        ) {
            let instant = Timestamp::new(seconds, nanos).expect("in range");
            let offset = jiff::tz::Offset::from_seconds(offset_minutes * 60).expect("offset");
            let zoned = instant.to_zoned(jiff::tz::TimeZone::fixed(offset));
            let format = if colon { "%Y-%m-%dT%H:%M:%S%.f%:z" } else { "%Y-%m-%dT%H:%M:%S%.f%z" };
            let text = zoned.strftime(format).to_string();
            proptest::prop_assert_eq!(parse_common_timestamp(text.as_bytes()), Some(instant), "{}", text);
        }
    }

    #[test]
    fn date_formats_must_give_back_a_whole_date() {
        assert_eq!(check_date_format("%Y-%m-%d"), Ok(()));
        assert_eq!(check_date_format("%m/%d/%Y %H:%M"), Ok(()));
        assert_eq!(check_date_format("%d.%m.%Y"), Ok(()));
        assert!(check_date_format("%Y-%m").is_err());
        assert!(check_date_format("%Y-%m-%J").is_err());
        assert!(check_date_format("YYYY-MM-DD").is_err());
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
