//! `POST /crm/v3/objects/{type}/search`: filter groups (OR of ANDs), one sort, offset paging
//! capped at 10,000 results, its own per-second budget, and no rate-limit headers — as HubSpot
//! answers it. Archived records never appear in search.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::catalog;
use super::objects::{ObjectView, Selection, object_name, unknown_object_type};
use super::{HubspotShared, admit_search, error_response, json_response, parse_body};
use crate::emulator::data::EmulatedRecord;
use crate::emulator::properties::interned_text;

/// Largest search page.
pub const MAX_SEARCH_PAGE: usize = 200;
const DEFAULT_SEARCH_PAGE: usize = 10;
/// Search never pages past this many results.
pub const SEARCH_RESULT_CAP: usize = 10_000;
/// At most five groups of at most six filters, 18 filters in all.
const MAX_FILTER_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;

pub fn routes(shared: Arc<HubspotShared>) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object_type}/search", post(search))
        .with_state(shared)
}

/// One filter of a request.
#[derive(Debug)]
struct Filter {
    property: String,
    /// The property's name as records store it; `None` when no record has the property.
    stored_name: Option<Arc<str>>,
    operator: String,
    value: Option<Comparand>,
    high_value: Option<Comparand>,
    values: Vec<Comparand>,
}

/// A filter's value, read once per search as an instant, a number and lowercase text — not
/// again for every record it is compared with.
#[derive(Debug, Clone)]
struct Comparand {
    text: String,
    lowered: String,
    instant: Option<Timestamp>,
    number: Option<f64>,
    /// Written as ISO text with a time (epoch milliseconds compare as instants only with such
    /// a value).
    has_time: bool,
}

impl Comparand {
    fn of(text: String) -> Self {
        Self {
            lowered: text.to_lowercase(),
            instant: as_instant(&text),
            number: text.parse::<f64>().ok(),
            has_time: text.contains('T'),
            text,
        }
    }
}

/// The text of a JSON scalar (clients send numbers and strings interchangeably).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn parse_filter(value: &Value) -> Result<Filter, String> {
    let property = value["propertyName"]
        .as_str()
        .ok_or("Each filter needs a propertyName")?
        .to_string();
    let operator = value["operator"].as_str().unwrap_or("EQ").to_string();
    const OPERATORS: [&str; 13] = [
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    ];
    if !OPERATORS.contains(&operator.as_str()) {
        return Err(format!("Unsupported filter operator {operator}"));
    }
    Ok(Filter {
        stored_name: interned_text(&property),
        property,
        operator,
        value: scalar(&value["value"]).map(Comparand::of),
        high_value: scalar(&value["highValue"]).map(Comparand::of),
        values: value["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(scalar)
                    .map(Comparand::of)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Dates compare as instants whether written as epoch milliseconds or ISO text.
fn as_instant(text: &str) -> Option<Timestamp> {
    utc_instant(text)
        .or_else(|| {
            text.parse::<i64>()
                .ok()
                .and_then(|millis| Timestamp::from_millisecond(millis).ok())
        })
        .or_else(|| text.parse::<Timestamp>().ok())
}

/// The instant of the form the emulator itself writes (`2024-05-01T12:30:00.123Z`: UTC,
/// seconds, an optional fraction), read directly: a search reads one in every record, and
/// the general parser is most of a search's time. Other forms give `None`.
fn utc_instant(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        digits.iter().try_fold(0_i64, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + i64::from(byte - b'0'))
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if bytes.len() < 20
        || bytes.last() != Some(&b'Z')
        || punctuation
            .iter()
            .any(|&(at, byte)| bytes.get(at) != Some(&byte))
    {
        return None;
    }
    let nanos = match &bytes[19..bytes.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            number(20..bytes.len() - 1)? * 10_i64.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let date = jiff::civil::Date::new(
        i16::try_from(number(0..4)?).ok()?,
        i8::try_from(number(5..7)?).ok()?,
        i8::try_from(number(8..10)?).ok()?,
    )
    .ok()?;
    let days = i64::from(date.since(jiff::civil::date(1970, 1, 1)).ok()?.get_days());
    Timestamp::new(
        days * 86_400 + hour * 3_600 + minute * 60 + second,
        i32::try_from(nanos).ok()?,
    )
    .ok()
}

/// Compares a record's value with a filter value: as instants, as numbers, else as text
/// ignoring case.
fn compare(record_value: &str, filter_value: &Comparand) -> Ordering {
    if let Some(b) = filter_value.instant
        && (filter_value.has_time || record_value.contains('T'))
        && let Some(a) = as_instant(record_value)
    {
        return a.cmp(&b);
    }
    if let Some(b) = filter_value.number
        && let Ok(a) = record_value.parse::<f64>()
    {
        return a.partial_cmp(&b).unwrap_or(Ordering::Equal);
    }
    record_value.to_lowercase().cmp(&filter_value.lowered)
}

/// How a sort property's values are ordered: by the property's type, as HubSpot orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKind {
    Instant,
    Number,
    Text,
}

impl SortKind {
    /// The order of a property of this definition type (`datetime`, `number`, ...).
    fn of(kind: Option<&str>) -> Self {
        match kind {
            Some("datetime" | "date") => Self::Instant,
            Some("number") => Self::Number,
            _ => Self::Text,
        }
    }
}

/// A record's value of the sort property, read once. Every value of one sort is read the same
/// way, so the order is total (a sort may rely on it): values that do not read as the
/// property's type, empty ones included, come first, by text ignoring case; the rest by value.
#[derive(Debug, Clone, PartialEq)]
enum SortValue {
    Unread(String),
    Instant(Timestamp),
    Number(f64),
}

impl SortValue {
    fn of(kind: SortKind, text: &str) -> Self {
        let read = match kind {
            SortKind::Instant => as_instant(text)
                .or_else(|| {
                    let date = text.parse::<jiff::civil::Date>().ok()?;
                    date.to_zoned(jiff::tz::TimeZone::UTC)
                        .ok()
                        .map(|day| day.timestamp())
                })
                .map(SortValue::Instant),
            SortKind::Number => text.trim().parse::<f64>().ok().map(SortValue::Number),
            SortKind::Text => None,
        };
        read.unwrap_or_else(|| SortValue::Unread(text.to_lowercase()))
    }

    fn compare(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (SortValue::Unread(a), SortValue::Unread(b)) => a.cmp(b),
            (SortValue::Unread(_), _) => Ordering::Less,
            (_, SortValue::Unread(_)) => Ordering::Greater,
            (SortValue::Instant(a), SortValue::Instant(b)) => a.cmp(b),
            (SortValue::Number(a), SortValue::Number(b)) => a.total_cmp(b),
            // One sort reads every value as one kind; these never meet.
            (SortValue::Instant(_), SortValue::Number(_)) => Ordering::Less,
            (SortValue::Number(_), SortValue::Instant(_)) => Ordering::Greater,
        }
    }
}

/// Whether `filter` holds for `record`. Text compares ignoring case, except enumeration
/// properties (exact, for every operator) and `IN`/`NOT_IN` on text, which compare the
/// lowercased value with the values as sent (HubSpot asks for lowercase values there).
fn matches(record: &EmulatedRecord, filter: &Filter, enumeration: bool) -> bool {
    let value = filter
        .stored_name
        .as_ref()
        .and_then(|name| record.properties.text_by_interned(name))
        .filter(|value| !value.is_empty());
    let compare = |left: &str, right: &Comparand| {
        if enumeration {
            left.cmp(&right.text)
        } else {
            compare(left, right)
        }
    };
    let against = |wanted: &Option<Comparand>, test: fn(Ordering) -> bool| match (value, wanted) {
        (Some(value), Some(wanted)) => test(compare(value, wanted)),
        _ => false,
    };
    let listed = |value: &str| {
        if enumeration {
            filter.values.iter().any(|v| v.text == value)
        } else {
            let lowered = value.to_lowercase();
            filter.values.iter().any(|v| {
                v.text == lowered || v.number.is_some() && compare(value, v) == Ordering::Equal
            })
        }
    };
    match filter.operator.as_str() {
        "EQ" => against(&filter.value, |o| o == Ordering::Equal),
        "NEQ" => !against(&filter.value, |o| o == Ordering::Equal),
        "LT" => against(&filter.value, |o| o == Ordering::Less),
        "LTE" => against(&filter.value, |o| o != Ordering::Greater),
        "GT" => against(&filter.value, |o| o == Ordering::Greater),
        "GTE" => against(&filter.value, |o| o != Ordering::Less),
        "BETWEEN" => {
            against(&filter.value, |o| o != Ordering::Less)
                && against(&filter.high_value, |o| o != Ordering::Greater)
        }
        "IN" => value.is_some_and(listed),
        "NOT_IN" => !value.is_some_and(listed),
        "HAS_PROPERTY" => value.is_some(),
        "NOT_HAS_PROPERTY" => value.is_none(),
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let token = filter
                .value
                .as_ref()
                .map(|value| value.lowered.clone())
                .unwrap_or_default();
            let token = token.trim_matches('*');
            let contains = value.is_some_and(|value| {
                value
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
                    .any(|word| word == token || (!token.is_empty() && word.contains(token)))
            });
            contains == (filter.operator == "CONTAINS_TOKEN")
        }
        _ => false,
    }
}

/// Where a record falls among records with equal sort values: a fixed scramble of its id.
fn tie_rank(id: &str) -> (u64, &str) {
    // FNV-1a: stable across runs and platforms.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash, id)
}

/// A page of a search answer.
#[derive(serde::Serialize)]
struct SearchPage<'a> {
    total: usize,
    results: Vec<ObjectView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Value>,
}

async fn search(
    State(shared): State<Arc<HubspotShared>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = search_inner(&shared, &object_type, &headers, &body);
    shared.record("POST /crm/v3/objects/{type}/search", response.status());
    response
}

fn validation(shared: &HubspotShared, message: &str) -> Response {
    error_response(
        shared,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        message,
        None,
    )
}

fn search_inner(
    shared: &HubspotShared,
    object_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Err(response) = admit_search(shared, headers) {
        return *response;
    }
    let Some(object) = object_name(object_type) else {
        return unknown_object_type(shared, object_type);
    };
    let request = match parse_body(shared, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let limit = match &request["limit"] {
        Value::Null => DEFAULT_SEARCH_PAGE,
        value => match value.as_u64().map(|n| n as usize) {
            Some(limit) if (1..=MAX_SEARCH_PAGE).contains(&limit) => limit,
            _ => {
                return validation(
                    shared,
                    &format!("limit must be between 1 and {MAX_SEARCH_PAGE}, got {value}"),
                );
            }
        },
    };
    let offset = match &request["after"] {
        Value::Null => 0,
        value => match scalar(value).and_then(|text| text.parse::<usize>().ok()) {
            Some(offset) => offset,
            None => return validation(shared, &format!("Invalid paging cursor {value}")),
        },
    };
    if offset + limit > SEARCH_RESULT_CAP {
        return validation(
            shared,
            &format!(
                "The search endpoint returns at most {SEARCH_RESULT_CAP} results for a query; narrow the filters instead of paging past it (after={offset}, limit={limit})"
            ),
        );
    }
    // Groups are OR-ed, filters within a group AND-ed; top-level `filters` is one group.
    let mut groups: Vec<Vec<Filter>> = Vec::new();
    let raw_groups: Vec<&Value> = match (&request["filterGroups"], &request["filters"]) {
        (Value::Array(groups), _) if !groups.is_empty() => {
            groups.iter().map(|g| &g["filters"]).collect()
        }
        (_, filters @ Value::Array(_)) => vec![filters],
        _ => Vec::new(),
    };
    if raw_groups.len() > MAX_FILTER_GROUPS {
        return validation(
            shared,
            &format!("Too many filter groups: at most {MAX_FILTER_GROUPS}"),
        );
    }
    let mut filter_count = 0;
    for raw in raw_groups {
        let mut group = Vec::new();
        for filter in raw.as_array().map(Vec::as_slice).unwrap_or_default() {
            match parse_filter(filter) {
                Ok(filter) => group.push(filter),
                Err(message) => return validation(shared, &message),
            }
        }
        if group.len() > MAX_FILTERS_PER_GROUP {
            return validation(
                shared,
                &format!("Too many filters in a group: at most {MAX_FILTERS_PER_GROUP}"),
            );
        }
        filter_count += group.len();
        groups.push(group);
    }
    if filter_count > MAX_FILTERS {
        return validation(
            shared,
            &format!("Too many filters: at most {MAX_FILTERS} in all groups"),
        );
    }
    let query = request["query"]
        .as_str()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let requested: Vec<String> = request["properties"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (sort_property, descending) =
        match request["sorts"].as_array().and_then(|sorts| sorts.first()) {
            Some(Value::String(name)) => (
                name.trim_start_matches('-').to_string(),
                name.starts_with('-'),
            ),
            Some(sort) => (
                sort["propertyName"]
                    .as_str()
                    .unwrap_or("hs_object_id")
                    .to_string(),
                sort["direction"].as_str() == Some("DESCENDING"),
            ),
            // Without a sort, results come in creation order (oldest first).
            None => ("createdate".to_string(), false),
        };

    let definitions = catalog::properties(object, shared.profile);
    let sort_kind = SortKind::of(
        definitions
            .iter()
            .find(|definition| definition.name == sort_property)
            .map(|definition| definition.kind),
    );
    let enumerations: Vec<&str> = definitions
        .iter()
        .filter(|definition| definition.kind == "enumeration")
        .map(|definition| definition.name)
        .collect();
    let objects = shared.read_objects();
    let records = objects.get(object).map(Vec::as_slice).unwrap_or_default();
    let found: Vec<&EmulatedRecord> = records
        .iter()
        .filter(|record| !record.archived)
        .filter(|record| {
            groups.is_empty()
                || groups.iter().any(|group| {
                    group
                        .iter()
                        .all(|f| matches(record, f, enumerations.contains(&f.property.as_str())))
                })
        })
        .filter(|record| {
            query.as_ref().is_none_or(|query| {
                [
                    "email",
                    "firstname",
                    "lastname",
                    "company",
                    "name",
                    "domain",
                    "dealname",
                    "phone",
                ]
                .iter()
                .filter_map(|p| record.properties.text(p))
                .any(|value| value.to_lowercase().contains(query.as_str()))
            })
        })
        .collect();
    // HubSpot promises no order among records with equal sort values. Ties here come in a
    // fixed order that is not id order, so paging is stable but a client that assumes ties
    // arrive by id (and pages on that) fails here as it would against HubSpot.
    // Each record's sort value is read once, not at every comparison; only the records up
    // to the end of the requested page are put in order.
    type Keyed<'r> = (SortValue, (u64, &'r str), &'r EmulatedRecord);
    let sort_name = interned_text(&sort_property);
    let mut keyed: Vec<Keyed<'_>> = found
        .into_iter()
        .map(|record| {
            let text = sort_name
                .as_ref()
                .and_then(|name| record.properties.text_by_interned(name));
            let value = SortValue::of(sort_kind, text.unwrap_or_default());
            (value, tie_rank(&record.id), record)
        })
        .collect();
    let order = |(left, left_tie, _): &Keyed<'_>, (right, right_tie, _): &Keyed<'_>| {
        let order = left.compare(right);
        let order = if descending { order.reverse() } else { order };
        order.then_with(|| left_tie.cmp(right_tie))
    };
    let total = keyed.len();
    let page_end = offset.saturating_add(limit);
    if page_end < keyed.len() {
        keyed.select_nth_unstable_by(page_end, order);
        keyed.truncate(page_end);
    }
    keyed.sort_by(order);
    let found: Vec<&EmulatedRecord> = keyed.into_iter().map(|(_, _, record)| record).collect();
    let selection = Selection::new(object, &requested, shared.profile).with_record_urls(object);
    let results: Vec<ObjectView<'_>> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|record| selection.view(record))
        .collect();
    let next = offset + limit;
    let body = SearchPage {
        total,
        results,
        paging: (next < total).then(|| json!({ "next": { "after": next.to_string() } })),
    };
    // Search answers carry no rate-limit headers.
    json_response(shared, StatusCode::OK, &body, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_instants_read_as_the_general_parser_reads_them() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut texts: Vec<String> = [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2024-02-29T12:00:00.5Z",
            "2023-02-29T12:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T10:00:00.123456789Z",
            "2024-01-01T10:00:00.1234567890Z",
            "2024-01-01T10:00:00.Z",
            "2024-01-01T10:00:00+00:00",
            "2024-01-01 10:00:00Z",
            "2024-1-01T10:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "",
            "Z",
        ]
        .iter()
        .map(|text| text.to_string())
        .collect();
        // Every shortened form of an instant, with and without its closing `Z`.
        let whole = "2024-01-01T10:00:00.123Z";
        for end in 0..whole.len() {
            texts.push(whole[..end].to_string());
            texts.push(format!("{}Z", &whole[..end]));
        }
        for _ in 0..20_000 {
            let at = Timestamp::from_second((next() % 8_000_000_000) as i64 - 2_000_000_000)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let text = match next() % 3 {
                0 => format!("{}", at.strftime("%Y-%m-%dT%H:%M:%SZ")),
                1 => format!("{}", at.strftime("%Y-%m-%dT%H:%M:%S.%3fZ")),
                _ => format!("{}", at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
            };
            texts.push(text);
        }
        // Whatever it reads, it reads as the general parser does; the rest it leaves to it.
        let mut read = 0;
        for text in &texts {
            if let Some(at) = utc_instant(text) {
                read += 1;
                assert_eq!(Some(at), text.parse::<Timestamp>().ok(), "{text}");
            }
        }
        // Every instant the emulator writes is read directly (the five edge cases above that
        // are real instants too, and four of the shortened forms: no fraction, or one of one
        // to three digits).
        assert_eq!(read, 20_000 + 5 + 4, "instants read directly");
        for text in [
            "2023-02-29T12:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T10:00:00+00:00",
        ] {
            assert_eq!(utc_instant(text), None, "{text}");
        }
        for text in [
            "2024-01-01T23:59:60Z",
            "2024-01-01T10:00:00+00:00",
            "1712000000000",
        ] {
            assert_eq!(
                as_instant(text),
                text.parse::<Timestamp>()
                    .ok()
                    .or_else(|| { Timestamp::from_millisecond(text.parse().ok()?).ok() }),
                "{text}"
            );
        }
    }

    #[test]
    fn sort_values_are_a_total_order_by_the_property_type() {
        let samples = [
            "",
            "1714566896789",
            "2024-05-01T12:34:56.789Z",
            "2024-05-01T12:34:56Z",
            "2023-01-01",
            "42",
            "4.5",
            "-3",
            "NaN",
            "Zoë",
            "apple",
            "Apple",
            "T-Rex",
        ];
        for kind in [SortKind::Instant, SortKind::Number, SortKind::Text] {
            let values: Vec<SortValue> = samples
                .iter()
                .map(|text| SortValue::of(kind, text))
                .collect();
            for a in &values {
                assert_eq!(a.compare(a), Ordering::Equal, "{kind:?} {a:?}");
                for b in &values {
                    assert_eq!(a.compare(b), b.compare(a).reverse(), "{kind:?} {a:?} {b:?}");
                    for c in &values {
                        if a.compare(b) != Ordering::Greater && b.compare(c) != Ordering::Greater {
                            assert_ne!(
                                a.compare(c),
                                Ordering::Greater,
                                "{kind:?} {a:?} {b:?} {c:?}"
                            );
                        }
                    }
                }
            }
        }
        let order = |kind, a, b| SortValue::of(kind, a).compare(&SortValue::of(kind, b));
        assert_eq!(order(SortKind::Number, "10", "9"), Ordering::Greater);
        assert_eq!(order(SortKind::Text, "10", "9"), Ordering::Less);
        assert_eq!(order(SortKind::Number, "", "-3"), Ordering::Less);
        assert_eq!(
            order(
                SortKind::Instant,
                "2024-05-01T12:34:56.789Z",
                "1714566896789"
            ),
            Ordering::Equal
        );
        assert_eq!(
            order(SortKind::Instant, "2023-01-01", "2024-05-01T12:34:56Z"),
            Ordering::Less
        );
        assert_eq!(order(SortKind::Text, "apple", "Apple"), Ordering::Equal);
        assert_eq!(order(SortKind::Text, "apple", "T-Rex"), Ordering::Less);
    }
}
