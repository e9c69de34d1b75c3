//! SOQL queries built from parts, never from text: field names must exist in the object's
//! describe, and every value goes in as a typed [`Literal`] rendered in SOQL's own notation —
//! strings quoted with `'`, `\` and control characters escaped, `LIKE` wildcards escaped
//! unless wanted, date-times as `YYYY-MM-DDThh:mm:ssZ`. No value can change what a query
//! means.

use jiff::Timestamp;
use jiff::civil::Date;

use super::describe::ObjectDescribe;

/// Why a query could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SoqlError {
    #[error(
        "{object} has no field {field:?} in this org — check the mapping's Salesforce field names against `crmsync discover`"
    )]
    UnknownField { object: String, field: String },
    #[error("{object}.{field} cannot be filtered on in SOQL — filter on another field")]
    NotFilterable { object: String, field: String },
    #[error("{object}.{field} is a {kind} field and cannot be compared with {literal} — {hint}")]
    WrongLiteral {
        object: String,
        field: String,
        kind: String,
        literal: &'static str,
        hint: &'static str,
    },
    #[error("{value:?} is not a Salesforce record id (15 or 18 letters and digits)")]
    NotAnId { value: String },
    #[error("{value} is not a finite number")]
    NotANumber { value: f64 },
    #[error("a query needs at least one field")]
    NoFields,
    #[error("an IN list needs at least one value")]
    EmptyList,
}

/// A value in a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    /// Matched by `LIKE` as written: its `%` and `_` are literal characters.
    Contains(String),
    StartsWith(String),
    DateTime(Timestamp),
    Date(Date),
    Bool(bool),
    Integer(i64),
    Decimal(f64),
    Id(String),
    Null,
}

/// How a field is compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

impl Operator {
    fn symbol(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Like => "LIKE",
        }
    }
}

/// A condition of a `WHERE` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Compare {
        field: String,
        operator: Operator,
        value: Literal,
    },
    In {
        field: String,
        values: Vec<Literal>,
    },
    NotIn {
        field: String,
        values: Vec<Literal>,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    pub fn compare(field: &str, operator: Operator, value: Literal) -> Self {
        Condition::Compare {
            field: field.to_string(),
            operator,
            value,
        }
    }

    pub fn is_in(field: &str, values: Vec<Literal>) -> Self {
        Condition::In {
            field: field.to_string(),
            values,
        }
    }

    pub fn is_not_in(field: &str, values: Vec<Literal>) -> Self {
        Condition::NotIn {
            field: field.to_string(),
            values,
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// A `SELECT … FROM … [WHERE …] [ORDER BY …] [LIMIT …]` query over one object.
#[derive(Debug, Clone)]
pub struct SoqlQuery<'d> {
    describe: &'d ObjectDescribe,
    /// Empty for `SELECT COUNT()`.
    fields: Vec<String>,
    conditions: Vec<String>,
    order: Vec<String>,
    limit: Option<u64>,
}

impl<'d> SoqlQuery<'d> {
    /// Selects `fields` of the object `describe` tells of; each must exist there.
    pub fn select<S: AsRef<str>>(
        describe: &'d ObjectDescribe,
        fields: &[S],
    ) -> Result<Self, SoqlError> {
        if fields.is_empty() {
            return Err(SoqlError::NoFields);
        }
        let mut names = Vec::with_capacity(fields.len());
        for field in fields {
            let name = canonical(describe, field.as_ref())?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(Self {
            describe,
            fields: names,
            conditions: Vec::new(),
            order: Vec::new(),
            limit: None,
        })
    }

    /// `SELECT COUNT() FROM …`: the number of matching records (in the answer's `totalSize`).
    pub fn count(describe: &'d ObjectDescribe) -> Self {
        Self {
            describe,
            fields: Vec::new(),
            conditions: Vec::new(),
            order: Vec::new(),
            limit: None,
        }
    }

    /// Adds a condition; conditions added one after another must all hold.
    pub fn filter(mut self, condition: &Condition) -> Result<Self, SoqlError> {
        let rendered = render_condition(self.describe, condition)?;
        self.conditions.push(rendered);
        Ok(self)
    }

    pub fn order_by(mut self, field: &str, direction: Direction) -> Result<Self, SoqlError> {
        let name = canonical(self.describe, field)?;
        self.order.push(match direction {
            Direction::Ascending => format!("{name} ASC"),
            Direction::Descending => format!("{name} DESC"),
        });
        Ok(self)
    }

    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The query text.
    pub fn build(&self) -> String {
        let selection = if self.fields.is_empty() {
            "COUNT()".to_string()
        } else {
            self.fields.join(", ")
        };
        let mut text = format!("SELECT {selection} FROM {}", self.describe.name);
        if !self.conditions.is_empty() {
            text.push_str(" WHERE ");
            text.push_str(&self.conditions.join(" AND "));
        }
        if !self.order.is_empty() {
            text.push_str(" ORDER BY ");
            text.push_str(&self.order.join(", "));
        }
        if let Some(limit) = self.limit {
            text.push_str(&format!(" LIMIT {limit}"));
        }
        text
    }
}

/// The field's name as the org spells it, if the object has it.
fn canonical(describe: &ObjectDescribe, field: &str) -> Result<String, SoqlError> {
    describe
        .field(field)
        .map(|info| info.name.clone())
        .ok_or_else(|| SoqlError::UnknownField {
            object: describe.name.clone(),
            field: field.to_string(),
        })
}

fn render_condition(describe: &ObjectDescribe, condition: &Condition) -> Result<String, SoqlError> {
    match condition {
        Condition::Compare {
            field,
            operator,
            value,
        } => {
            let name = filterable(describe, field)?;
            check_literal(describe, &name, value)?;
            let operator = match (operator, value) {
                (_, Literal::Contains(_) | Literal::StartsWith(_)) => Operator::Like,
                (operator, _) => *operator,
            };
            Ok(format!("{name} {} {}", operator.symbol(), render(value)?))
        }
        Condition::In { field, values } | Condition::NotIn { field, values } => {
            let name = filterable(describe, field)?;
            if values.is_empty() {
                return Err(SoqlError::EmptyList);
            }
            let mut rendered = Vec::with_capacity(values.len());
            for value in values {
                check_literal(describe, &name, value)?;
                rendered.push(render(value)?);
            }
            let operator = if matches!(condition, Condition::NotIn { .. }) {
                "NOT IN"
            } else {
                "IN"
            };
            Ok(format!("{name} {operator} ({})", rendered.join(", ")))
        }
        Condition::All(parts) | Condition::Any(parts) => {
            let joiner = if matches!(condition, Condition::All(_)) {
                " AND "
            } else {
                " OR "
            };
            let rendered = parts
                .iter()
                .map(|part| render_condition(describe, part))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match rendered.len() {
                // No alternatives: nothing matches; no conditions: everything does.
                0 if matches!(condition, Condition::Any(_)) => "Id = null".to_string(),
                0 => "Id != null".to_string(),
                1 => rendered.into_iter().next().unwrap_or_default(),
                _ => format!("({})", rendered.join(joiner)),
            })
        }
    }
}

fn filterable(describe: &ObjectDescribe, field: &str) -> Result<String, SoqlError> {
    let name = canonical(describe, field)?;
    match describe.field(&name) {
        Some(info) if !info.filterable => Err(SoqlError::NotFilterable {
            object: describe.name.clone(),
            field: name,
        }),
        _ => Ok(name),
    }
}

/// Date-time literals compare only with date-time fields, dates with dates (Salesforce
/// refuses the query otherwise).
fn check_literal(describe: &ObjectDescribe, field: &str, value: &Literal) -> Result<(), SoqlError> {
    let kind = describe
        .field(field)
        .map(|info| info.kind.as_str())
        .unwrap_or_default();
    let wrong = |literal: &'static str, hint: &'static str| {
        Err(SoqlError::WrongLiteral {
            object: describe.name.clone(),
            field: field.to_string(),
            kind: kind.to_string(),
            literal,
            hint,
        })
    };
    match value {
        Literal::DateTime(_) if kind != "datetime" => {
            wrong("a date-time", "compare a date field with a date")
        }
        Literal::Date(_) if kind != "date" => {
            wrong("a date", "compare a date-time field with a date-time")
        }
        _ => Ok(()),
    }
}

fn render(value: &Literal) -> Result<String, SoqlError> {
    Ok(match value {
        Literal::Text(text) => quote(text, false),
        Literal::Contains(text) => format!("'%{}%'", escape(text, true)),
        Literal::StartsWith(text) => format!("'{}%'", escape(text, true)),
        // SOQL takes whole seconds; a `>=` from the second before loses nothing.
        Literal::DateTime(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Literal::Date(date) => date.strftime("%Y-%m-%d").to_string(),
        Literal::Bool(flag) => flag.to_string(),
        Literal::Integer(number) => number.to_string(),
        Literal::Decimal(number) if number.is_finite() => {
            // Never exponent notation, which SOQL does not read.
            let text = format!("{number:.10}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Literal::Decimal(number) => return Err(SoqlError::NotANumber { value: *number }),
        Literal::Id(id) => {
            let valid = (id.len() == 15 || id.len() == 18)
                && id.bytes().all(|byte| byte.is_ascii_alphanumeric());
            if !valid {
                return Err(SoqlError::NotAnId { value: id.clone() });
            }
            format!("'{id}'")
        }
        Literal::Null => "null".to_string(),
    })
}

/// `text` as a quoted SOQL string.
pub fn quote(text: &str, like: bool) -> String {
    format!("'{}'", escape(text, like))
}

/// The inside of a quoted SOQL string: `'`, `"` and `\` backslash-escaped, line breaks, tabs
/// and the like as their escapes, other control characters as `\uXXXX`; in a `LIKE` pattern
/// also `%` and `_`, so they match only themselves. Everything else (any Unicode) stays.
pub fn escape(text: &str, like: bool) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for character in text.chars() {
        match character {
            '\'' => escaped.push_str("\\'"),
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\u{8}' => escaped.push_str("\\b"),
            '\u{c}' => escaped.push_str("\\f"),
            '%' | '_' if like => {
                escaped.push('\\');
                escaped.push(character);
            }
            control if control.is_control() && (control as u32) < 0x1_0000 => {
                escaped.push_str(&format!("\\u{:04x}", control as u32));
            }
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::describe::FieldInfo;

    fn field(name: &str, kind: &str) -> FieldInfo {
        FieldInfo {
            name: name.to_string(),
            label: name.to_string(),
            kind: kind.to_string(),
            filterable: name != "Description",
            updateable: true,
            external_id: false,
            restricted_picklist: false,
            picklist: Vec::new(),
        }
    }

    fn lead() -> ObjectDescribe {
        ObjectDescribe {
            name: "Lead".to_string(),
            fields: [
                field("Id", "id"),
                field("LastName", "string"),
                field("Email", "email"),
                field("SystemModstamp", "datetime"),
                field("ConvertedDate", "date"),
                field("IsConverted", "boolean"),
                field("AnnualRevenue", "currency"),
                field("Description", "textarea"),
            ]
            .into_iter()
            .map(|info| (info.name.clone(), info))
            .collect(),
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_quotes() {
        for (value, expected) in [
            ("O'Brien", r"'O\'Brien'"),
            ("' OR Name != '", r"'\' OR Name != \''"),
            (r"back\slash", r"'back\\slash'"),
            (r"\'", r"'\\\''"),
            ("50%_off", "'50%_off'"),
            ("line\nbreak\r\ttab", r"'line\nbreak\r\ttab'"),
            ("say \"hi\"", r#"'say \"hi\"'"#),
            ("Zoë 日本 🚀", "'Zoë 日本 🚀'"),
            ("bell\u{7}", r"'bell\u0007'"),
        ] {
            assert_eq!(quote(value, false), expected, "{value:?}");
        }
        assert_eq!(
            render(&Literal::Contains("50%_off".into())).expect("like"),
            r"'%50\%\_off%'"
        );
    }

    #[test]
    fn value_lists_render_in_and_not_in_and_are_never_empty() {
        let describe = lead();
        let values = vec![Literal::Text("a'b".into()), Literal::Text("c".into())];
        let query = SoqlQuery::count(&describe)
            .filter(&Condition::All(vec![
                Condition::compare("LastName", Operator::Ne, Literal::Null),
                Condition::is_not_in("LastName", values.clone()),
            ]))
            .expect("query")
            .build();
        assert_eq!(
            query,
            r"SELECT COUNT() FROM Lead WHERE (LastName != null AND LastName NOT IN ('a\'b', 'c'))"
        );
        let listed = SoqlQuery::count(&describe)
            .filter(&Condition::is_in("LastName", values))
            .expect("query")
            .build();
        assert!(
            listed.ends_with(r"WHERE LastName IN ('a\'b', 'c')"),
            "{listed}"
        );
        assert!(matches!(
            SoqlQuery::count(&describe).filter(&Condition::is_not_in("LastName", Vec::new())),
            Err(SoqlError::EmptyList)
        ));
    }

    #[test]
    fn queries_take_only_known_fields_and_typed_values() {
        let describe = lead();
        let since = Timestamp::from_second(1_714_564_800).expect("time");
        let query = SoqlQuery::select(&describe, &["id", "Email", "SystemModstamp"])
            .and_then(|query| {
                query.filter(&Condition::Any(vec![
                    Condition::compare("SystemModstamp", Operator::Gt, Literal::DateTime(since)),
                    Condition::All(vec![
                        Condition::compare(
                            "SystemModstamp",
                            Operator::Eq,
                            Literal::DateTime(since),
                        ),
                        Condition::compare(
                            "Id",
                            Operator::Gt,
                            Literal::Id("00Q000000000001AAA".into()),
                        ),
                    ]),
                ]))
            })
            .and_then(|query| query.order_by("SystemModstamp", Direction::Ascending))
            .and_then(|query| query.order_by("Id", Direction::Ascending))
            .map(|query| query.limit(2_000).build())
            .expect("query");
        assert_eq!(
            query,
            "SELECT Id, Email, SystemModstamp FROM Lead WHERE (SystemModstamp > 2024-05-01T12:00:00Z OR (SystemModstamp = 2024-05-01T12:00:00Z AND Id > '00Q000000000001AAA')) ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000"
        );
        assert!(matches!(
            SoqlQuery::select(&describe, &["Id", "Email; DELETE"]),
            Err(SoqlError::UnknownField { .. })
        ));
        let select = || SoqlQuery::select(&describe, &["Id"]).expect("select");
        assert!(matches!(
            select().filter(&Condition::compare(
                "ConvertedDate",
                Operator::Ge,
                Literal::DateTime(since)
            )),
            Err(SoqlError::WrongLiteral { .. })
        ));
        assert!(matches!(
            select().filter(&Condition::compare(
                "Description",
                Operator::Eq,
                Literal::Text("x".into())
            )),
            Err(SoqlError::NotFilterable { .. })
        ));
        assert!(matches!(
            select().filter(&Condition::compare(
                "Id",
                Operator::Eq,
                Literal::Id("' OR Id != '".into())
            )),
            Err(SoqlError::NotAnId { .. })
        ));
        assert!(matches!(
            render(&Literal::Decimal(f64::NAN)),
            Err(SoqlError::NotANumber { .. })
        ));
        assert_eq!(
            render(&Literal::Decimal(1e21)).expect("number"),
            "1000000000000000000000"
        );
        assert_eq!(render(&Literal::Decimal(0.5)).expect("number"), "0.5");
        let count = SoqlQuery::count(&describe)
            .filter(&Condition::compare(
                "IsConverted",
                Operator::Eq,
                Literal::Bool(false),
            ))
            .expect("count")
            .build();
        assert_eq!(count, "SELECT COUNT() FROM Lead WHERE IsConverted = false");
        assert_eq!(
            SoqlQuery::select(&describe, &["Id"])
                .and_then(|query| query.filter(&Condition::Any(Vec::new())))
                .expect("query")
                .build(),
            "SELECT Id FROM Lead WHERE Id = null",
            "no alternatives match nothing"
        );
    }
}
