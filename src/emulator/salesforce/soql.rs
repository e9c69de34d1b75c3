//! SOQL for the emulator's `query` and `queryAll` endpoints: parses the subset of SOQL that
//! sync connectors send (field lists with relationship paths, `COUNT()`, `WHERE` with
//! comparisons, `IN`, `LIKE`, `AND`/`OR`/`NOT`, date literals, `ORDER BY`, `LIMIT`, `OFFSET`),
//! checks it against the org's [`Catalog`] the way Salesforce does (same error codes and
//! wording, with the query echoed and a caret under the offending token), selects the matching
//! rows of an [`OrgData`] table and renders each result record as Salesforce's REST API writes
//! it.
//!
//! Parsing ([`parse`]) and checking ([`Query::prepare`]) happen once per request; the
//! [`PreparedQuery`] then evaluates with field indices resolved and string literals already
//! case-folded, so scanning a table allocates nothing per row.

use std::cmp::Ordering;
use std::fmt::Write as _;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use rustc_hash::FxHashSet;

use super::schema::{Catalog, FieldDef, FieldType, ObjectSchema};
use super::store::{OrgData, SfRecord};
use super::value::FieldValue;

/// A SOQL error as Salesforce reports it: errorCode + message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SoqlError {
    pub code: &'static str,
    pub message: String,
}

/// The query does not parse, or uses the language in a way Salesforce rejects.
pub const MALFORMED_QUERY: &str = "MALFORMED_QUERY";
/// A field that does not exist, cannot be used where it is, or a value of the wrong type.
pub const INVALID_FIELD: &str = "INVALID_FIELD";
/// An object that does not exist.
pub const INVALID_TYPE: &str = "INVALID_TYPE";
/// An operator or id value a field does not accept.
pub const INVALID_QUERY_FILTER_OPERATOR: &str = "INVALID_QUERY_FILTER_OPERATOR";
/// `OFFSET` above the maximum.
pub const NUMBER_OUTSIDE_VALID_RANGE: &str = "NUMBER_OUTSIDE_VALID_RANGE";

/// The largest `OFFSET` Salesforce accepts.
pub const MAX_OFFSET: u64 = 2000;

impl SoqlError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error pointing at `offset` (a byte offset into `query`), in Salesforce's multi-line
    /// form: the query's line (from a little before the problem), a caret, the 1-based row and
    /// column, then `detail`.
    fn located(code: &'static str, query: &str, offset: usize, detail: &str) -> Self {
        Self::new(code, locate(query, offset, detail))
    }
}

/// How many characters of the line Salesforce echoes before the offending token.
const ECHO_CONTEXT_CHARS: usize = 40;

fn locate(query: &str, offset: usize, detail: &str) -> String {
    let mut offset = offset.min(query.len());
    while !query.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &query[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line_end = query[offset..]
        .find(['\n', '\r'])
        .map_or(query.len(), |end| offset + end);
    let row = before.matches('\n').count() + 1;
    let column = query[line_start..offset].chars().count() + 1;

    // Salesforce starts the echo at the word around 40 characters before the problem.
    let mut echo_start = line_start;
    if column - 1 > ECHO_CONTEXT_CHARS {
        let skip = column - 1 - ECHO_CONTEXT_CHARS;
        echo_start = query[line_start..]
            .char_indices()
            .nth(skip)
            .map_or(offset, |(index, _)| line_start + index);
        while let Some(previous) = query[line_start..echo_start].chars().next_back() {
            if previous.is_whitespace() {
                break;
            }
            echo_start -= previous.len_utf8();
        }
    }
    let echo = &query[echo_start..line_end];
    let caret_indent = query[echo_start..offset].chars().count();
    format!(
        "\n{echo}\n{:caret_indent$}^\nERROR at Row:{row}:Column:{column}\n{detail}",
        ""
    )
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Word,
    Number,
    Date,
    DateTime,
    Text,
    Symbol,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'q> {
    kind: TokenKind,
    text: &'q str,
    offset: usize,
}

const SYMBOLS: [&str; 12] = [
    "!=", "<>", "<=", ">=", "(", ")", ",", ".", ":", "=", "<", ">",
];

fn tokenize(query: &str) -> Result<Vec<Token<'_>>, SoqlError> {
    let mut tokens = Vec::new();
    let mut position = 0;
    while let Some(first) = query[position..].chars().next() {
        let rest = &query[position..];
        if first.is_whitespace() {
            position += first.len_utf8();
            continue;
        }
        let starts_digit = |from: usize| {
            rest.get(from..)
                .is_some_and(|tail| tail.starts_with(|c: char| c.is_ascii_digit()))
        };
        let run_of = |from: usize, accept: fn(char) -> bool| {
            rest.get(from..).map_or(0, |tail| {
                tail.find(|c: char| !accept(c)).unwrap_or(tail.len())
            })
        };
        let (kind, length) = if first.is_ascii_alphabetic() || first == '_' {
            (
                TokenKind::Word,
                run_of(0, |c| c.is_ascii_alphanumeric() || c == '_'),
            )
        } else if first.is_ascii_digit() || (matches!(first, '-' | '+') && starts_digit(1)) {
            let digits = run_of(0, |c| c.is_ascii_digit());
            if first.is_ascii_digit()
                && digits == 4
                && rest[4..].starts_with('-')
                && starts_digit(5)
            {
                let length = run_of(0, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '+' | '-')
                });
                let kind = if rest.as_bytes().get(10) == Some(&b'T') {
                    TokenKind::DateTime
                } else {
                    TokenKind::Date
                };
                (kind, length)
            } else {
                let sign = usize::from(!first.is_ascii_digit());
                let mut length = sign + run_of(sign, |c| c.is_ascii_digit());
                if rest[length..].starts_with('.') && starts_digit(length + 1) {
                    length += 1 + run_of(length + 1, |c| c.is_ascii_digit());
                }
                (TokenKind::Number, length)
            }
        } else if first == '\'' {
            let mut escaped = false;
            let mut closing = None;
            for (index, character) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if character == '\\' {
                    escaped = true;
                } else if character == '\'' {
                    closing = Some(index);
                    break;
                }
            }
            let Some(closing) = closing else {
                return Err(SoqlError::located(
                    MALFORMED_QUERY,
                    query,
                    query.len(),
                    "mismatched character '<EOF>' expecting '''",
                ));
            };
            (TokenKind::Text, closing + 1)
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            (TokenKind::Symbol, symbol.len())
        } else {
            let (row, column) = row_and_column(query, position);
            return Err(SoqlError::located(
                MALFORMED_QUERY,
                query,
                position,
                &format!("line {row}:{column} no viable alternative at character '{first}'"),
            ));
        };
        tokens.push(Token {
            kind,
            text: &query[position..position + length],
            offset: position,
        });
        position += length;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        text: "",
        offset: query.len(),
    });
    Ok(tokens)
}

fn row_and_column(query: &str, offset: usize) -> (usize, usize) {
    let before = query.get(..offset).unwrap_or(query);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

// ---------------------------------------------------------------------------------------------
// The parsed query

/// A parsed SOQL query, not yet checked against any catalog.
#[derive(Debug, Clone)]
pub struct Query {
    text: Box<str>,
    selection: Selection,
    object: Box<str>,
    object_offset: usize,
    filter: Option<Condition>,
    order_by: Vec<OrderItem>,
    limit: Option<usize>,
    /// The offset and where its number is in the query.
    offset: Option<(u64, usize)>,
}

#[derive(Debug, Clone)]
enum Selection {
    Count,
    Fields(Vec<FieldPath>),
}

/// `Owner.Email` as written: its dot-separated names and where it starts in the query.
#[derive(Debug, Clone)]
struct FieldPath {
    segments: Vec<Box<str>>,
    offset: usize,
}

#[derive(Debug, Clone)]
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Comparison),
}

#[derive(Debug, Clone)]
struct Comparison {
    field: FieldPath,
    operator: Operator,
    /// The operator as written, for error messages.
    operator_text: Box<str>,
    values: Vec<Literal>,
    value_offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    In,
    NotIn,
    Like,
}

impl Operator {
    fn ordering_operator(self) -> Option<OrderingOperator> {
        Some(match self {
            Operator::Equal => OrderingOperator::Equal,
            Operator::NotEqual => OrderingOperator::NotEqual,
            Operator::Less => OrderingOperator::Less,
            Operator::LessOrEqual => OrderingOperator::LessOrEqual,
            Operator::Greater => OrderingOperator::Greater,
            Operator::GreaterOrEqual => OrderingOperator::GreaterOrEqual,
            Operator::In | Operator::NotIn | Operator::Like => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(Box<str>),
    /// A `LIKE` pattern, wildcards already told apart from escaped `\%` and `\_`.
    Pattern(Vec<LikeAtom>),
    Number(f64),
    Bool(bool),
    Null,
    Date(Date),
    DateTime(Timestamp),
    /// `TODAY`, `LAST_N_DAYS:n`, …: the days from `first` to `last` (inclusive) relative to
    /// today in UTC.
    Days {
        first: i64,
        last: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LikeAtom {
    Char(char),
    AnyOne,
    AnyMany,
}

#[derive(Debug, Clone)]
struct OrderItem {
    field: FieldPath,
    descending: bool,
    nulls_last: bool,
}

/// Words that cannot be field or object names.
const RESERVED: [&str; 19] = [
    "and", "asc", "by", "desc", "false", "from", "group", "having", "in", "like", "limit", "not",
    "null", "nulls", "offset", "or", "order", "select", "true",
];

fn is_reserved(word: &str) -> bool {
    RESERVED
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(word))
}

/// Parses a SOQL query.
pub fn parse(text: &str) -> Result<Query, SoqlError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        text,
        tokens,
        position: 0,
    };
    parser.query()
}

struct Parser<'q> {
    text: &'q str,
    tokens: Vec<Token<'q>>,
    position: usize,
}

impl<'q> Parser<'q> {
    fn peek(&self) -> Token<'q> {
        self.tokens.get(self.position).copied().unwrap_or(Token {
            kind: TokenKind::End,
            text: "",
            offset: self.text.len(),
        })
    }

    fn peek_is_keyword(&self, keyword: &str) -> bool {
        let token = self.peek();
        token.kind == TokenKind::Word && token.text.eq_ignore_ascii_case(keyword)
    }

    fn peek_is_symbol(&self, symbol: &str) -> bool {
        let token = self.peek();
        token.kind == TokenKind::Symbol && token.text == symbol
    }

    fn advance(&mut self) -> Token<'q> {
        let token = self.peek();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let matched = self.peek_is_keyword(keyword);
        if matched {
            self.advance();
        }
        matched
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let matched = self.peek_is_symbol(symbol);
        if matched {
            self.advance();
        }
        matched
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.unexpected(self.peek()))
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), SoqlError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.unexpected(self.peek()))
        }
    }

    fn unexpected(&self, token: Token<'_>) -> SoqlError {
        let shown = if token.kind == TokenKind::End {
            "<EOF>"
        } else {
            token.text
        };
        SoqlError::located(
            MALFORMED_QUERY,
            self.text,
            token.offset,
            &format!("unexpected token: '{shown}'"),
        )
    }

    fn name(&mut self) -> Result<Token<'q>, SoqlError> {
        let token = self.peek();
        if token.kind == TokenKind::Word && !is_reserved(token.text) {
            Ok(self.advance())
        } else {
            Err(self.unexpected(token))
        }
    }

    fn query(&mut self) -> Result<Query, SoqlError> {
        self.expect_keyword("SELECT")?;
        let selection = if self.peek_is_keyword("COUNT")
            && self
                .tokens
                .get(self.position + 1)
                .is_some_and(|next| next.kind == TokenKind::Symbol && next.text == "(")
        {
            self.advance();
            self.expect_symbol("(")?;
            self.expect_symbol(")")?;
            Selection::Count
        } else {
            let mut fields = vec![self.field_path()?];
            while self.eat_symbol(",") {
                fields.push(self.field_path()?);
            }
            Selection::Fields(fields)
        };
        self.expect_keyword("FROM")?;
        let object = self.name()?;
        let filter = if self.eat_keyword("WHERE") {
            Some(self.condition()?)
        } else {
            None
        };
        let mut order_by = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                order_by.push(self.order_item()?);
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            let (value, _) = self.unsigned_integer()?;
            Some(usize::try_from(value).unwrap_or(usize::MAX))
        } else {
            None
        };
        let offset = if self.eat_keyword("OFFSET") {
            Some(self.unsigned_integer()?)
        } else {
            None
        };
        let end = self.peek();
        if end.kind != TokenKind::End {
            return Err(self.unexpected(end));
        }
        Ok(Query {
            text: self.text.into(),
            selection,
            object: object.text.into(),
            object_offset: object.offset,
            filter,
            order_by,
            limit,
            offset,
        })
    }

    fn unsigned_integer(&mut self) -> Result<(u64, usize), SoqlError> {
        let token = self.peek();
        if token.kind == TokenKind::Number && token.text.bytes().all(|byte| byte.is_ascii_digit()) {
            self.advance();
            // Digits only: parsing fails only on overflow, which saturates.
            Ok((token.text.parse().unwrap_or(u64::MAX), token.offset))
        } else {
            Err(self.unexpected(token))
        }
    }

    fn field_path(&mut self) -> Result<FieldPath, SoqlError> {
        let first = self.name()?;
        let mut segments = vec![Box::from(first.text)];
        while self.eat_symbol(".") {
            segments.push(self.name()?.text.into());
        }
        Ok(FieldPath {
            segments,
            offset: first.offset,
        })
    }

    fn order_item(&mut self) -> Result<OrderItem, SoqlError> {
        let field = self.field_path()?;
        let descending = if self.eat_keyword("DESC") {
            true
        } else {
            self.eat_keyword("ASC");
            false
        };
        let nulls_last = if self.eat_keyword("NULLS") {
            if self.eat_keyword("LAST") {
                true
            } else {
                self.expect_keyword("FIRST")?;
                false
            }
        } else {
            descending
        };
        Ok(OrderItem {
            field,
            descending,
            nulls_last,
        })
    }

    /// A condition list: terms joined all by `AND` or all by `OR` (Salesforce wants
    /// parentheses to mix them), optionally starting with `NOT`.
    fn condition(&mut self) -> Result<Condition, SoqlError> {
        let first = if self.eat_keyword("NOT") {
            Condition::Not(Box::new(self.term()?))
        } else {
            self.term()?
        };
        let mut terms = vec![first];
        let mut joined_by_and = None;
        loop {
            let is_and = if self.peek_is_keyword("AND") {
                true
            } else if self.peek_is_keyword("OR") {
                false
            } else {
                break;
            };
            if joined_by_and.is_some_and(|and| and != is_and) {
                return Err(self.unexpected(self.peek()));
            }
            joined_by_and = Some(is_and);
            self.advance();
            terms.push(self.term()?);
        }
        Ok(match joined_by_and {
            None => terms.pop().unwrap_or(Condition::All(Vec::new())),
            Some(true) => Condition::All(terms),
            Some(false) => Condition::Any(terms),
        })
    }

    fn term(&mut self) -> Result<Condition, SoqlError> {
        if self.eat_symbol("(") {
            let inner = self.condition()?;
            self.expect_symbol(")")?;
            return Ok(inner);
        }
        let field = self.field_path()?;
        let token = self.peek();
        let mut operator_text = token.text.to_string();
        let operator = match (token.kind, token.text) {
            (TokenKind::Symbol, "=") => Operator::Equal,
            (TokenKind::Symbol, "!=" | "<>") => Operator::NotEqual,
            (TokenKind::Symbol, "<") => Operator::Less,
            (TokenKind::Symbol, "<=") => Operator::LessOrEqual,
            (TokenKind::Symbol, ">") => Operator::Greater,
            (TokenKind::Symbol, ">=") => Operator::GreaterOrEqual,
            (TokenKind::Word, word) if word.eq_ignore_ascii_case("IN") => Operator::In,
            (TokenKind::Word, word) if word.eq_ignore_ascii_case("LIKE") => Operator::Like,
            (TokenKind::Word, word) if word.eq_ignore_ascii_case("NOT") => {
                self.advance();
                if !self.peek_is_keyword("IN") {
                    return Err(self.unexpected(self.peek()));
                }
                operator_text = format!("{} {}", token.text, self.peek().text);
                Operator::NotIn
            }
            _ => return Err(self.unexpected(token)),
        };
        self.advance();
        let value_offset = self.peek().offset;
        let values = if matches!(operator, Operator::In | Operator::NotIn) {
            self.expect_symbol("(")?;
            let mut values = vec![self.literal(false)?];
            while self.eat_symbol(",") {
                values.push(self.literal(false)?);
            }
            self.expect_symbol(")")?;
            values
        } else {
            vec![self.literal(operator == Operator::Like)?]
        };
        Ok(Condition::Compare(Comparison {
            field,
            operator,
            operator_text: operator_text.into(),
            values,
            value_offset,
        }))
    }

    fn literal(&mut self, like_pattern: bool) -> Result<Literal, SoqlError> {
        let token = self.peek();
        let literal = match token.kind {
            TokenKind::Text => {
                let raw = &token.text[1..token.text.len() - 1];
                let atoms = decode_string(raw, like_pattern).map_err(|sequence| {
                    SoqlError::located(
                        MALFORMED_QUERY,
                        self.text,
                        token.offset,
                        &format!(
                            "Invalid string literal '{raw}'. Illegal character sequence \
                             '{sequence}' in string literal."
                        ),
                    )
                })?;
                if like_pattern {
                    Literal::Pattern(atoms)
                } else {
                    Literal::Text(
                        atoms
                            .iter()
                            .filter_map(|atom| match atom {
                                LikeAtom::Char(character) => Some(*character),
                                LikeAtom::AnyOne | LikeAtom::AnyMany => None,
                            })
                            .collect::<String>()
                            .into(),
                    )
                }
            }
            TokenKind::Number => match token.text.parse::<f64>() {
                Ok(number) if number.is_finite() => Literal::Number(number),
                _ => return Err(self.unexpected(token)),
            },
            TokenKind::Date => match parse_date_literal(token.text) {
                Some(date) => Literal::Date(date),
                None => return Err(self.unexpected(token)),
            },
            TokenKind::DateTime => match parse_datetime_literal(token.text) {
                Some(at) => Literal::DateTime(at),
                None => return Err(self.unexpected(token)),
            },
            TokenKind::Word => {
                let word = token.text.to_ascii_uppercase();
                match word.as_str() {
                    "NULL" => Literal::Null,
                    "TRUE" => Literal::Bool(true),
                    "FALSE" => Literal::Bool(false),
                    "TODAY" => Literal::Days { first: 0, last: 0 },
                    "YESTERDAY" => Literal::Days {
                        first: -1,
                        last: -1,
                    },
                    "TOMORROW" => Literal::Days { first: 1, last: 1 },
                    "LAST_N_DAYS" | "NEXT_N_DAYS" => {
                        self.advance();
                        self.expect_symbol(":")?;
                        let (days, _) = self.unsigned_integer()?;
                        let days = i64::try_from(days).unwrap_or(i64::MAX);
                        return Ok(if word == "LAST_N_DAYS" {
                            Literal::Days {
                                first: -days,
                                last: 0,
                            }
                        } else {
                            Literal::Days {
                                first: 1,
                                last: days,
                            }
                        });
                    }
                    _ => return Err(self.unexpected(token)),
                }
            }
            TokenKind::Symbol | TokenKind::End => return Err(self.unexpected(token)),
        };
        self.advance();
        Ok(literal)
    }
}

/// The characters of a quoted string's content with its escapes applied. Outside `LIKE`
/// every atom is a [`LikeAtom::Char`]; in a `LIKE` pattern unescaped `%` and `_` are
/// wildcards. Fails with the offending escape sequence.
fn decode_string(raw: &str, like_pattern: bool) -> Result<Vec<LikeAtom>, String> {
    let mut atoms = Vec::with_capacity(raw.len());
    let mut characters = raw.chars();
    while let Some(character) = characters.next() {
        let atom = match character {
            '%' if like_pattern => LikeAtom::AnyMany,
            '_' if like_pattern => LikeAtom::AnyOne,
            '\\' => {
                let Some(escaped) = characters.next() else {
                    return Err("\\".to_string());
                };
                LikeAtom::Char(match escaped {
                    'n' | 'N' => '\n',
                    'r' | 'R' => '\r',
                    't' | 'T' => '\t',
                    'b' | 'B' => '\u{8}',
                    'f' | 'F' => '\u{c}',
                    '"' | '\'' | '\\' => escaped,
                    '%' | '_' if like_pattern => escaped,
                    'u' => {
                        let hex: String = characters.clone().take(4).collect();
                        let decoded = (hex.len() == 4
                            && hex.chars().all(|c| c.is_ascii_hexdigit()))
                        .then(|| u32::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .and_then(char::from_u32);
                        match decoded {
                            Some(decoded) => {
                                for _ in 0..4 {
                                    characters.next();
                                }
                                decoded
                            }
                            None => return Err(format!("\\u{hex}")),
                        }
                    }
                    other => return Err(format!("\\{other}")),
                })
            }
            other => LikeAtom::Char(other),
        };
        atoms.push(atom);
    }
    Ok(atoms)
}

/// `2024-01-31`.
fn parse_date_literal(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    let year = text[..4].parse().ok()?;
    let month = text[5..7].parse().ok()?;
    let day = text[8..10].parse().ok()?;
    Date::new(year, month, day).ok()
}

/// `2024-01-31T10:00:00Z`, with optional fractional seconds, or `+hh:mm`/`-hh:mm` for `Z`.
fn parse_datetime_literal(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let shaped = bytes[..19]
        .iter()
        .enumerate()
        .all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            10 => *byte == b'T',
            13 | 16 => *byte == b':',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    let mut zone = &text[19..];
    if let Some(fraction) = zone.strip_prefix('.') {
        let digits = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if digits == 0 || digits > 9 {
            return None;
        }
        zone = &fraction[digits..];
    }
    let zone_bytes = zone.as_bytes();
    let zone_ok = zone == "Z"
        || (zone_bytes.len() == 6
            && matches!(zone_bytes[0], b'+' | b'-')
            && zone_bytes[1].is_ascii_digit()
            && zone_bytes[2].is_ascii_digit()
            && zone_bytes[3] == b':'
            && zone_bytes[4].is_ascii_digit()
            && zone_bytes[5].is_ascii_digit());
    if !zone_ok {
        return None;
    }
    text.parse::<Timestamp>().ok()
}

// ---------------------------------------------------------------------------------------------
// Checking against the catalog

/// A query checked against the catalog, ready to run: names resolved to field indices,
/// literals converted to the compared fields' types.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    object_name: String,
    table: usize,
    count: bool,
    columns: Vec<Column>,
    flat_fields: FlatFields,
    filter: Option<Filter>,
    order_by: Vec<OrderKey>,
    limit: Option<usize>,
    offset: usize,
}

/// The selected fields in `SELECT` order, each with its canonical path (`Owner.Email`).
type FlatFields = Vec<(Box<str>, FieldAccess)>;

/// One step through a lookup: the lookup field on the current record and the table of the
/// object it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop {
    lookup_index: usize,
    table: usize,
}

/// How to reach one field's value from a row of the queried object.
#[derive(Debug, Clone)]
struct FieldAccess {
    hops: Vec<Hop>,
    index: usize,
    field_type: FieldType,
    /// `IsDeleted`: true whenever the record is in the recycle bin.
    is_deleted_flag: bool,
}

static NULL_VALUE: FieldValue = FieldValue::Null;
static TRUE_VALUE: FieldValue = FieldValue::Bool(true);

impl FieldAccess {
    fn value<'d>(&self, data: &'d OrgData, record: &'d SfRecord) -> &'d FieldValue {
        let mut record = record;
        for hop in &self.hops {
            match follow(data, record, *hop) {
                Some(next) => record = next,
                None => return &NULL_VALUE,
            }
        }
        local_value(record, self.index, self.is_deleted_flag)
    }
}

fn local_value(record: &SfRecord, index: usize, is_deleted_flag: bool) -> &FieldValue {
    if is_deleted_flag && record.is_deleted() {
        &TRUE_VALUE
    } else {
        record.value(index)
    }
}

/// The record a lookup field points at, if it is set and the record exists.
fn follow<'d>(data: &'d OrgData, record: &SfRecord, hop: Hop) -> Option<&'d SfRecord> {
    let id = record.value(hop.lookup_index).as_text()?;
    data.tables.get(hop.table)?.get(id)
}

/// One entry of a rendered record: a field, or a relationship rendered as a nested record.
#[derive(Debug, Clone)]
enum Column {
    Field {
        name: Box<str>,
        index: usize,
        field_type: FieldType,
        is_deleted_flag: bool,
    },
    Relationship {
        name: Box<str>,
        hop: Hop,
        object_name: Box<str>,
        columns: Vec<Column>,
    },
}

#[derive(Debug, Clone)]
struct OrderKey {
    access: FieldAccess,
    descending: bool,
    nulls_last: bool,
}

#[derive(Debug, Clone)]
enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Test { access: FieldAccess, test: Test },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderingOperator {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl OrderingOperator {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            OrderingOperator::Equal => ordering == Ordering::Equal,
            OrderingOperator::NotEqual => ordering != Ordering::Equal,
            OrderingOperator::Less => ordering == Ordering::Less,
            OrderingOperator::LessOrEqual => ordering != Ordering::Greater,
            OrderingOperator::Greater => ordering == Ordering::Greater,
            OrderingOperator::GreaterOrEqual => ordering != Ordering::Less,
        }
    }

    /// Whether a value in `first..=last` (or not) satisfies `value <op> range`, where `=`
    /// means "within the range" (a date literal against a date field, `TODAY` against a
    /// date-time field).
    fn holds_for_range<T: Ord>(self, value: &T, first: &T, last: &T) -> bool {
        match self {
            OrderingOperator::Equal => first <= value && value <= last,
            OrderingOperator::NotEqual => !(first <= value && value <= last),
            OrderingOperator::Less => value < first,
            OrderingOperator::LessOrEqual => value <= last,
            OrderingOperator::Greater => value > last,
            OrderingOperator::GreaterOrEqual => value >= first,
        }
    }
}

/// A literal converted for the field it is compared with.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Null,
    /// Case-folded text, for case-insensitive comparison.
    Text(Box<str>),
    /// The first 15 characters of an id (case-sensitive, as ids are).
    Id(Box<str>),
    Number(f64),
    Bool(bool),
    Dates(Date, Date),
    Times(Timestamp, Timestamp),
}

impl Operand {
    /// `value <op> self`; null values only equal a null literal, and are unequal to others.
    fn compared(&self, operator: OrderingOperator, value: &FieldValue) -> bool {
        if let Operand::Null = self {
            return match operator {
                OrderingOperator::Equal => value.is_null(),
                OrderingOperator::NotEqual => !value.is_null(),
                _ => false,
            };
        }
        let holds = match (self, value) {
            (_, FieldValue::Null) => None,
            (Operand::Text(literal), FieldValue::Text(text)) => Some(match operator {
                OrderingOperator::Equal => equals_folded(text, literal),
                OrderingOperator::NotEqual => !equals_folded(text, literal),
                _ => operator.holds(compare_folded(text, literal)),
            }),
            (Operand::Id(literal), FieldValue::Text(text)) => {
                Some(operator.holds(id_key(text).cmp(literal)))
            }
            (Operand::Number(literal), FieldValue::Number(number)) => number
                .partial_cmp(literal)
                .map(|ordering| operator.holds(ordering)),
            (Operand::Bool(literal), FieldValue::Bool(flag)) => {
                Some(operator.holds(flag.cmp(literal)))
            }
            (Operand::Dates(first, last), FieldValue::Date(date)) => {
                Some(operator.holds_for_range(date, first, last))
            }
            (Operand::Times(first, last), FieldValue::DateTime(at)) => {
                Some(operator.holds_for_range(at, first, last))
            }
            _ => None,
        };
        holds.unwrap_or(operator == OrderingOperator::NotEqual)
    }

    fn equals(&self, value: &FieldValue) -> bool {
        self.compared(OrderingOperator::Equal, value)
    }
}

/// Above this many values, a text or id `IN` list is looked up in a hash set.
const IN_LIST_SET_THRESHOLD: usize = 8;

#[derive(Debug, Clone)]
enum Test {
    Compare {
        operator: OrderingOperator,
        operand: Operand,
    },
    In {
        operands: Vec<Operand>,
        /// The text or id operands as a set, for long lists.
        lookup: Option<InSet>,
        negated: bool,
    },
    Like(Vec<LikeAtom>),
}

#[derive(Debug, Clone)]
struct InSet {
    ids: bool,
    values: FxHashSet<Box<str>>,
    includes_null: bool,
}

impl InSet {
    fn contains(&self, value: &FieldValue, folded: &mut String) -> bool {
        match value {
            FieldValue::Null => self.includes_null,
            FieldValue::Text(text) if self.ids => self.values.contains(id_key(text)),
            FieldValue::Text(text) => {
                folded.clear();
                folded.extend(text.chars().flat_map(char::to_lowercase));
                self.values.contains(folded.as_str())
            }
            _ => false,
        }
    }
}

/// Reused buffers, so that evaluating a row allocates nothing.
#[derive(Default)]
struct Scratch {
    folded: String,
}

impl Test {
    fn matches(&self, value: &FieldValue, scratch: &mut Scratch) -> bool {
        match self {
            Test::Compare { operator, operand } => operand.compared(*operator, value),
            Test::In {
                operands,
                lookup,
                negated,
            } => {
                let found = match lookup {
                    Some(set) => set.contains(value, &mut scratch.folded),
                    None => operands.iter().any(|operand| operand.equals(value)),
                };
                found != *negated
            }
            Test::Like(pattern) => match value {
                FieldValue::Text(text) => like_matches(pattern, text),
                _ => false,
            },
        }
    }
}

impl Filter {
    fn matches(&self, data: &OrgData, record: &SfRecord, scratch: &mut Scratch) -> bool {
        match self {
            Filter::All(filters) => filters
                .iter()
                .all(|filter| filter.matches(data, record, scratch)),
            Filter::Any(filters) => filters
                .iter()
                .any(|filter| filter.matches(data, record, scratch)),
            Filter::Not(filter) => !filter.matches(data, record, scratch),
            Filter::Test { access, test } => test.matches(access.value(data, record), scratch),
        }
    }
}

fn fold(text: &str) -> Box<str> {
    text.chars()
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .into()
}

/// Compares `text` case-insensitively with already case-folded `folded`.
fn compare_folded(text: &str, folded: &str) -> Ordering {
    if text.is_ascii() && folded.is_ascii() {
        text.bytes()
            .map(|byte| byte.to_ascii_lowercase())
            .cmp(folded.bytes())
    } else {
        text.chars()
            .flat_map(char::to_lowercase)
            .cmp(folded.chars())
    }
}

/// Whether `text` equals already case-folded `folded`, case-insensitively.
fn equals_folded(text: &str, folded: &str) -> bool {
    if folded.is_ascii() {
        // Folding never turns ASCII into anything else, and turns other characters into
        // ASCII only while getting shorter: equal lengths compare byte by byte, and a shorter
        // text never matches.
        match text.len().cmp(&folded.len()) {
            Ordering::Equal => return text.eq_ignore_ascii_case(folded),
            Ordering::Less => return false,
            Ordering::Greater if text.is_ascii() => return false,
            Ordering::Greater => {}
        }
    }
    text.chars().flat_map(char::to_lowercase).eq(folded.chars())
}

fn compare_case_insensitive(left: &str, right: &str) -> Ordering {
    if left.is_ascii() && right.is_ascii() {
        left.bytes()
            .map(|byte| byte.to_ascii_lowercase())
            .cmp(right.bytes().map(|byte| byte.to_ascii_lowercase()))
    } else {
        left.chars()
            .flat_map(char::to_lowercase)
            .cmp(right.chars().flat_map(char::to_lowercase))
    }
}

/// The part of an id that identifies the record: the first 15 characters.
fn id_key(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

fn is_valid_id(text: &str) -> bool {
    (text.len() == 15 || text.len() == 18) && text.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// `LIKE` matching, case-insensitive; `pattern` is already case-folded.
fn like_matches(pattern: &[LikeAtom], text: &str) -> bool {
    if text.is_ascii()
        && pattern
            .iter()
            .all(|atom| !matches!(atom, LikeAtom::Char(character) if !character.is_ascii()))
    {
        like_matches_ascii(pattern, text.as_bytes())
    } else {
        like_matches_unicode(pattern, text)
    }
}

/// [`like_matches`] over ASCII text with an ASCII pattern, byte by byte.
fn like_matches_ascii(pattern: &[LikeAtom], text: &[u8]) -> bool {
    let (mut position, mut next) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while next < text.len() {
        let byte = text[next].to_ascii_lowercase();
        match pattern.get(position) {
            Some(LikeAtom::AnyMany) => {
                retry = Some((position, next));
                position += 1;
                continue;
            }
            Some(LikeAtom::AnyOne) => {
                position += 1;
                next += 1;
                continue;
            }
            Some(LikeAtom::Char(expected)) if u32::from(byte) == u32::from(*expected) => {
                position += 1;
                next += 1;
                continue;
            }
            _ => {}
        }
        match &mut retry {
            Some((star, resume)) => {
                *resume += 1;
                next = *resume;
                position = *star + 1;
            }
            None => return false,
        }
    }
    pattern
        .get(position..)
        .unwrap_or_default()
        .iter()
        .all(|atom| *atom == LikeAtom::AnyMany)
}

fn like_matches_unicode(pattern: &[LikeAtom], text: &str) -> bool {
    let mut remaining = text.chars().flat_map(char::to_lowercase);
    let mut position = 0;
    let mut retry = None;
    loop {
        let mut after = remaining.clone();
        let Some(character) = after.next() else {
            return pattern
                .get(position..)
                .unwrap_or_default()
                .iter()
                .all(|atom| *atom == LikeAtom::AnyMany);
        };
        match pattern.get(position) {
            Some(LikeAtom::AnyMany) => {
                retry = Some((position, remaining.clone()));
                position += 1;
                continue;
            }
            Some(LikeAtom::AnyOne) => {
                remaining = after;
                position += 1;
                continue;
            }
            Some(LikeAtom::Char(expected)) if *expected == character => {
                remaining = after;
                position += 1;
                continue;
            }
            _ => {}
        }
        match &mut retry {
            Some((star, resume)) => {
                resume.next();
                remaining = resume.clone();
                position = *star + 1;
            }
            None => return false,
        }
    }
}

/// A field path resolved against the catalog.
struct ResolvedPath<'c> {
    access: FieldAccess,
    field: &'c FieldDef,
    /// Canonical names joined by dots: `Owner.Email`.
    display: String,
    /// Each hop's canonical relationship name and target object.
    relationships: Vec<(&'c str, Hop, &'c str)>,
}

/// Checking context: the query text (for error echoes), the catalog and the queried object.
struct Checker<'c> {
    text: &'c str,
    catalog: &'c Catalog,
    object: &'c ObjectSchema,
    today: Date,
}

const NO_SUCH_COLUMN_HINT: &str = "If you are attempting to use a custom field, be sure to append \
     the '__c' after the custom field name. Please reference your WSDL or the describe call for \
     the appropriate names.";
const NO_SUCH_RELATIONSHIP_HINT: &str = "If you are attempting to use a custom relationship, be \
     sure to append the '__r' after the custom relationship name. Please reference your WSDL or \
     the describe call for the appropriate names.";
const NO_SUCH_OBJECT_HINT: &str = "If you are attempting to use a custom object, be sure to \
     append the '__c' after the custom object name. Please reference your WSDL or the describe \
     call for the appropriate names.";

impl<'c> Checker<'c> {
    fn resolve(&self, path: &FieldPath) -> Result<ResolvedPath<'c>, SoqlError> {
        let mut segments = path.segments.as_slice();
        // `Lead.Email` in a query on Lead: the object's own name may qualify a field.
        if segments.len() > 1
            && self.object.relationship_index(&segments[0]).is_none()
            && self.object.name.eq_ignore_ascii_case(&segments[0])
        {
            segments = &segments[1..];
        }
        let Some((field_name, relationship_names)) = segments.split_last() else {
            return Err(SoqlError::located(
                MALFORMED_QUERY,
                self.text,
                path.offset,
                "unexpected token: '<EOF>'",
            ));
        };
        let mut object = self.object;
        let mut hops = Vec::new();
        let mut relationships = Vec::new();
        let mut display = String::new();
        for relationship in relationship_names {
            let target = object.relationship_index(relationship).and_then(|index| {
                let lookup = &object.fields[index];
                let target_name = lookup.reference_to.first()?;
                let table = self.catalog.object_index(target_name)?;
                let target = self.catalog.objects().get(table)?;
                Some((index, lookup, table, target))
            });
            let Some((lookup_index, lookup, table, target)) = target else {
                return Err(SoqlError::located(
                    INVALID_FIELD,
                    self.text,
                    path.offset,
                    &format!(
                        "Didn't understand relationship '{relationship}' in field path. \
                         {NO_SUCH_RELATIONSHIP_HINT}"
                    ),
                ));
            };
            let hop = Hop {
                lookup_index,
                table,
            };
            let relationship_name = lookup
                .relationship_name
                .as_deref()
                .unwrap_or(lookup.name.as_str());
            display.push_str(relationship_name);
            display.push('.');
            hops.push(hop);
            relationships.push((relationship_name, hop, target.name.as_str()));
            object = target;
        }
        let Some(index) = object.field_index(field_name) else {
            return Err(SoqlError::located(
                INVALID_FIELD,
                self.text,
                path.offset,
                &format!(
                    "No such column '{field_name}' on entity '{}'. {NO_SUCH_COLUMN_HINT}",
                    object.name
                ),
            ));
        };
        let field = &object.fields[index];
        display.push_str(&field.name);
        Ok(ResolvedPath {
            access: FieldAccess {
                hops,
                index,
                field_type: field.field_type,
                is_deleted_flag: field.name == "IsDeleted"
                    && field.field_type == FieldType::Boolean,
            },
            field,
            display,
            relationships,
        })
    }

    /// The render tree of the selected fields, and the same fields flat in `SELECT` order.
    fn columns(&self, paths: &[FieldPath]) -> Result<(Vec<Column>, FlatFields), SoqlError> {
        let mut columns = Vec::new();
        let mut flat_fields = Vec::new();
        let mut seen: Vec<(Vec<Hop>, usize)> = Vec::new();
        for path in paths {
            let resolved = self.resolve(path)?;
            let key = (resolved.access.hops.clone(), resolved.access.index);
            if seen.contains(&key) {
                return Err(SoqlError::new(
                    MALFORMED_QUERY,
                    format!("duplicate field selected: {}", resolved.display),
                ));
            }
            seen.push(key);
            insert_column(
                &mut columns,
                &resolved.relationships,
                Column::Field {
                    name: resolved.field.name.as_str().into(),
                    index: resolved.access.index,
                    field_type: resolved.field.field_type,
                    is_deleted_flag: resolved.access.is_deleted_flag,
                },
            );
            flat_fields.push((resolved.display.into_boxed_str(), resolved.access));
        }
        Ok((columns, flat_fields))
    }

    fn filter(&self, condition: &Condition) -> Result<Filter, SoqlError> {
        Ok(match condition {
            Condition::All(conditions) => Filter::All(
                conditions
                    .iter()
                    .map(|condition| self.filter(condition))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Any(conditions) => Filter::Any(
                conditions
                    .iter()
                    .map(|condition| self.filter(condition))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Not(condition) => Filter::Not(Box::new(self.filter(condition)?)),
            Condition::Compare(comparison) => self.comparison(comparison)?,
        })
    }

    fn comparison(&self, comparison: &Comparison) -> Result<Filter, SoqlError> {
        let resolved = self.resolve(&comparison.field)?;
        if !resolved.field.filterable {
            return Err(SoqlError::located(
                INVALID_FIELD,
                self.text,
                comparison.field.offset,
                &format!(
                    "field '{}' can not be filtered in a query call",
                    resolved.field.name
                ),
            ));
        }
        let field_type = resolved.field.field_type;
        let test = match comparison.operator {
            Operator::Like => {
                if !field_type.is_text() {
                    return Err(self.invalid_operator(comparison, &resolved, "LIKE"));
                }
                match comparison.values.first() {
                    Some(Literal::Pattern(atoms)) => Test::Like(
                        atoms
                            .iter()
                            .flat_map(|atom| -> Vec<LikeAtom> {
                                match atom {
                                    LikeAtom::Char(character) => {
                                        character.to_lowercase().map(LikeAtom::Char).collect()
                                    }
                                    other => vec![*other],
                                }
                            })
                            .collect(),
                    ),
                    _ => return Err(type_mismatch(&resolved)),
                }
            }
            Operator::In | Operator::NotIn => {
                let operands = comparison
                    .values
                    .iter()
                    .map(|literal| self.operand(literal, &resolved, comparison))
                    .collect::<Result<Vec<_>, _>>()?;
                Test::In {
                    lookup: in_set(&operands),
                    operands,
                    negated: comparison.operator == Operator::NotIn,
                }
            }
            operator => {
                let operator = operator
                    .ordering_operator()
                    .ok_or_else(|| SoqlError::new(MALFORMED_QUERY, "unexpected operator"))?;
                let Some(literal) = comparison.values.first() else {
                    return Err(SoqlError::located(
                        MALFORMED_QUERY,
                        self.text,
                        comparison.value_offset,
                        "unexpected token: '<EOF>'",
                    ));
                };
                let operand = self.operand(literal, &resolved, comparison)?;
                let ordered = !matches!(
                    operator,
                    OrderingOperator::Equal | OrderingOperator::NotEqual
                );
                if ordered && field_type == FieldType::Boolean {
                    return Err(self.invalid_operator(
                        comparison,
                        &resolved,
                        &comparison.operator_text,
                    ));
                }
                Test::Compare { operator, operand }
            }
        };
        Ok(Filter::Test {
            access: resolved.access,
            test,
        })
    }

    fn invalid_operator(
        &self,
        comparison: &Comparison,
        resolved: &ResolvedPath<'_>,
        operator: &str,
    ) -> SoqlError {
        SoqlError::located(
            INVALID_QUERY_FILTER_OPERATOR,
            self.text,
            comparison.field.offset,
            &format!(
                "invalid operator '{operator}' on field '{}' of type {}",
                resolved.display,
                resolved.field.field_type.api_name()
            ),
        )
    }

    fn operand(
        &self,
        literal: &Literal,
        resolved: &ResolvedPath<'_>,
        comparison: &Comparison,
    ) -> Result<Operand, SoqlError> {
        let field_type = resolved.field.field_type;
        let mismatch = || type_mismatch(resolved);
        Ok(match literal {
            Literal::Null => Operand::Null,
            Literal::Text(text) => match field_type {
                FieldType::Id | FieldType::Reference => {
                    if !is_valid_id(text) {
                        return Err(SoqlError::located(
                            INVALID_QUERY_FILTER_OPERATOR,
                            self.text,
                            comparison.field.offset,
                            &format!("invalid ID field: {text}"),
                        ));
                    }
                    Operand::Id(id_key(text).into())
                }
                _ if field_type.is_text() => Operand::Text(fold(text)),
                _ => return Err(mismatch()),
            },
            Literal::Number(number) if field_type.is_number() => Operand::Number(*number),
            Literal::Bool(flag) if field_type == FieldType::Boolean => Operand::Bool(*flag),
            Literal::Date(date) if field_type == FieldType::Date => Operand::Dates(*date, *date),
            Literal::DateTime(at) if field_type == FieldType::DateTime => Operand::Times(*at, *at),
            Literal::Days { first, last } if field_type == FieldType::Date => {
                Operand::Dates(self.day(*first), self.day(*last))
            }
            Literal::Days { first, last } if field_type == FieldType::DateTime => {
                let start = start_of_day(self.day(*first));
                let end = self
                    .day(*last)
                    .tomorrow()
                    .ok()
                    .map(start_of_day)
                    .and_then(|next| next.checked_sub(SignedDuration::from_nanos(1)).ok())
                    .unwrap_or(Timestamp::MAX);
                Operand::Times(start, end)
            }
            _ => return Err(mismatch()),
        })
    }

    /// Today plus `days`, clamped to the calendar's range.
    fn day(&self, days: i64) -> Date {
        Span::new()
            .try_days(days)
            .ok()
            .and_then(|span| self.today.checked_add(span).ok())
            .unwrap_or(if days < 0 { Date::MIN } else { Date::MAX })
    }

    fn order_key(&self, item: &OrderItem) -> Result<OrderKey, SoqlError> {
        let resolved = self.resolve(&item.field)?;
        if !resolved.field.sortable {
            return Err(SoqlError::located(
                INVALID_FIELD,
                self.text,
                item.field.offset,
                &format!(
                    "field '{}' can not be sorted in a query call",
                    resolved.field.name
                ),
            ));
        }
        Ok(OrderKey {
            access: resolved.access,
            descending: item.descending,
            nulls_last: item.nulls_last,
        })
    }
}

/// Puts `field` under its relationships, merging with a relationship already rendered at the
/// same level (several fields through `Owner` make one nested `Owner` record).
fn insert_column(level: &mut Vec<Column>, relationships: &[(&str, Hop, &str)], field: Column) {
    let Some(((name, hop, object_name), deeper)) = relationships.split_first() else {
        level.push(field);
        return;
    };
    for column in level.iter_mut() {
        if let Column::Relationship {
            hop: existing,
            columns,
            ..
        } = column
            && existing == hop
        {
            insert_column(columns, deeper, field);
            return;
        }
    }
    let mut columns = Vec::new();
    insert_column(&mut columns, deeper, field);
    level.push(Column::Relationship {
        name: (*name).into(),
        hop: *hop,
        object_name: (*object_name).into(),
        columns,
    });
}

fn start_of_day(date: Date) -> Timestamp {
    date.to_zoned(TimeZone::UTC)
        .map(|zoned| zoned.timestamp())
        .unwrap_or(if date.year() < 1970 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
}

/// The `type` Salesforce names in "must be of type …" messages.
fn criterion_type_name(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::Id | FieldType::Reference => "id",
        FieldType::Boolean => "boolean",
        FieldType::Double | FieldType::Currency | FieldType::Percent => "double",
        FieldType::Int => "int",
        FieldType::Date => "date",
        FieldType::DateTime => "dateTime",
        _ => "string",
    }
}

fn type_mismatch(resolved: &ResolvedPath<'_>) -> SoqlError {
    let field_type = resolved.field.field_type;
    let quoting = if field_type.is_text() {
        "should be enclosed in quotes"
    } else {
        "should not be enclosed in quotes"
    };
    SoqlError::new(
        INVALID_FIELD,
        format!(
            "value of filter criterion for field '{}' must be of type {} and {quoting}",
            resolved.display,
            criterion_type_name(field_type)
        ),
    )
}

/// A hash set for long `IN` lists of text or ids.
fn in_set(operands: &[Operand]) -> Option<InSet> {
    if operands.len() <= IN_LIST_SET_THRESHOLD {
        return None;
    }
    let ids = operands
        .iter()
        .any(|operand| matches!(operand, Operand::Id(_)));
    let mut set = InSet {
        ids,
        values: FxHashSet::default(),
        includes_null: false,
    };
    for operand in operands {
        match operand {
            Operand::Null => set.includes_null = true,
            Operand::Id(value) | Operand::Text(value) => {
                set.values.insert(value.clone());
            }
            _ => return None,
        }
    }
    Some(set)
}

impl Query {
    /// Checks the query against `catalog` as Salesforce would, resolving relative date
    /// literals (`TODAY`, `LAST_N_DAYS:n`) against the current time.
    pub fn prepare(self, catalog: &Catalog) -> Result<PreparedQuery, SoqlError> {
        self.prepare_at(catalog, Timestamp::now())
    }

    /// [`Query::prepare`] with relative date literals resolved against `now` (UTC days).
    pub fn prepare_at(self, catalog: &Catalog, now: Timestamp) -> Result<PreparedQuery, SoqlError> {
        let Some(table) = catalog.object_index(&self.object) else {
            return Err(SoqlError::located(
                INVALID_TYPE,
                &self.text,
                self.object_offset,
                &format!(
                    "sObject type '{}' is not supported. {NO_SUCH_OBJECT_HINT}",
                    self.object
                ),
            ));
        };
        let object = catalog.objects().get(table).ok_or_else(|| {
            SoqlError::new(
                INVALID_TYPE,
                format!("sObject type '{}' is not supported.", self.object),
            )
        })?;
        let checker = Checker {
            text: &self.text,
            catalog,
            object,
            today: now.to_zoned(TimeZone::UTC).date(),
        };
        let (count, (columns, flat_fields)) = match &self.selection {
            Selection::Count => (true, (Vec::new(), Vec::new())),
            Selection::Fields(paths) => (false, checker.columns(paths)?),
        };
        let filter = self
            .filter
            .as_ref()
            .map(|condition| checker.filter(condition))
            .transpose()?;
        let order_by = self
            .order_by
            .iter()
            .map(|item| checker.order_key(item))
            .collect::<Result<Vec<_>, _>>()?;
        let offset = match self.offset {
            Some((offset, _)) if offset > MAX_OFFSET => {
                return Err(SoqlError::new(
                    NUMBER_OUTSIDE_VALID_RANGE,
                    format!(
                        "Maximum SOQL offset allowed for apiName {} is {MAX_OFFSET}",
                        object.name
                    ),
                ));
            }
            Some((offset, _)) => usize::try_from(offset).unwrap_or(usize::MAX),
            None => 0,
        };
        Ok(PreparedQuery {
            object_name: object.name.clone(),
            table,
            count,
            columns,
            flat_fields,
            filter,
            order_by,
            limit: self.limit,
            offset,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running and rendering

impl PreparedQuery {
    /// The queried object's canonical name, e.g. `Lead`.
    pub fn object_name(&self) -> &str {
        &self.object_name
    }

    /// `SELECT COUNT() FROM …`: the answer is the number of rows, with no records.
    pub fn is_count(&self) -> bool {
        self.count
    }

    /// Whether the query asks for an order.
    pub fn is_ordered(&self) -> bool {
        !self.order_by.is_empty()
    }

    /// The query's `LIMIT`, if any.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Indices into the object's table of the rows the query returns, in result order:
    /// `WHERE`, then `ORDER BY` (stable; without it, table order), then `OFFSET`, then
    /// `LIMIT`. Rows in the recycle bin count only when `include_deleted` (`queryAll`).
    pub fn select(&self, data: &OrgData, include_deleted: bool) -> Vec<usize> {
        let Some(table) = data.tables.get(self.table) else {
            return Vec::new();
        };
        let limit = self.limit.unwrap_or(usize::MAX);
        // Without ORDER BY the first OFFSET + LIMIT matches are all that is needed.
        let enough = if self.order_by.is_empty() {
            self.offset.saturating_add(limit)
        } else {
            usize::MAX
        };
        let mut scratch = Scratch::default();
        let mut rows = Vec::new();
        if enough > 0 {
            for (row, record) in table.records.iter().enumerate() {
                if !include_deleted && record.is_deleted() {
                    continue;
                }
                if let Some(filter) = &self.filter
                    && !filter.matches(data, record, &mut scratch)
                {
                    continue;
                }
                rows.push(row);
                if rows.len() >= enough {
                    break;
                }
            }
        }
        if !self.order_by.is_empty() {
            rows = self.sorted(data, &table.records, rows);
        }
        rows.drain(..self.offset.min(rows.len()));
        rows.truncate(limit);
        rows
    }

    fn sorted(&self, data: &OrgData, records: &[SfRecord], rows: Vec<usize>) -> Vec<usize> {
        let key_count = self.order_by.len();
        let mut keys: Vec<&FieldValue> = Vec::with_capacity(rows.len() * key_count);
        for &row in &rows {
            let record = &records[row];
            keys.extend(
                self.order_by
                    .iter()
                    .map(|key| key.access.value(data, record)),
            );
        }
        // Ties keep table order (the position breaks them), so an unstable sort is stable here
        // and only the first OFFSET + LIMIT rows need sorting.
        let compare = |left: &usize, right: &usize| {
            let left_keys = &keys[left * key_count..(left + 1) * key_count];
            let right_keys = &keys[right * key_count..(right + 1) * key_count];
            self.order_by
                .iter()
                .zip(left_keys.iter().zip(right_keys))
                .map(|(key, (left, right))| compare_for_order(key, left, right))
                .find(|ordering| *ordering != Ordering::Equal)
                .unwrap_or_else(|| left.cmp(right))
        };
        let mut positions: Vec<usize> = (0..rows.len()).collect();
        let wanted = self
            .limit
            .map_or(usize::MAX, |limit| self.offset.saturating_add(limit));
        if wanted < positions.len() {
            if wanted > 0 {
                positions.select_nth_unstable_by(wanted - 1, compare);
            }
            positions.truncate(wanted);
        }
        positions.sort_unstable_by(compare);
        positions
            .into_iter()
            .map(|position| rows[position])
            .collect()
    }

    /// Appends one result record as JSON to `out`, as Salesforce's REST query renders it:
    /// `attributes` first, then the selected fields in `SELECT` order with their canonical
    /// names; fields through a relationship nest as a record of their own (`"Owner":{…}`),
    /// or `null` when the lookup is empty. `api_version` is like `62.0`.
    pub fn render_record(&self, data: &OrgData, row: usize, api_version: &str, out: &mut String) {
        let record = data
            .tables
            .get(self.table)
            .and_then(|table| table.records.get(row));
        match record {
            Some(record) => render_object(
                data,
                &self.object_name,
                record,
                &self.columns,
                api_version,
                out,
            ),
            None => out.push_str("null"),
        }
    }
}

fn compare_for_order(key: &OrderKey, left: &FieldValue, right: &FieldValue) -> Ordering {
    match (left.is_null(), right.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) if key.nulls_last => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, true) if key.nulls_last => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => {
            let ordering = compare_values(key.access.field_type, left, right);
            if key.descending {
                ordering.reverse()
            } else {
                ordering
            }
        }
    }
}

fn compare_values(field_type: FieldType, left: &FieldValue, right: &FieldValue) -> Ordering {
    match (left, right) {
        (FieldValue::Text(left), FieldValue::Text(right)) => {
            if matches!(field_type, FieldType::Id | FieldType::Reference) {
                id_key(left).cmp(id_key(right))
            } else {
                compare_case_insensitive(left, right)
            }
        }
        (FieldValue::Number(left), FieldValue::Number(right)) => left.total_cmp(right),
        (FieldValue::Bool(left), FieldValue::Bool(right)) => left.cmp(right),
        (FieldValue::Date(left), FieldValue::Date(right)) => left.cmp(right),
        (FieldValue::DateTime(left), FieldValue::DateTime(right)) => left.cmp(right),
        _ => variant_rank(left).cmp(&variant_rank(right)),
    }
}

fn variant_rank(value: &FieldValue) -> u8 {
    match value {
        FieldValue::Null => 0,
        FieldValue::Bool(_) => 1,
        FieldValue::Number(_) => 2,
        FieldValue::Text(_) => 3,
        FieldValue::Date(_) => 4,
        FieldValue::DateTime(_) => 5,
    }
}

fn render_object(
    data: &OrgData,
    object_name: &str,
    record: &SfRecord,
    columns: &[Column],
    api_version: &str,
    out: &mut String,
) {
    out.push_str("{\"attributes\":{\"type\":\"");
    escape_json_into(out, object_name);
    out.push_str("\",\"url\":\"/services/data/v");
    escape_json_into(out, api_version);
    out.push_str("/sobjects/");
    escape_json_into(out, object_name);
    out.push('/');
    escape_json_into(out, record.id());
    out.push_str("\"}");
    for column in columns {
        out.push_str(",\"");
        match column {
            Column::Field {
                name,
                index,
                field_type,
                is_deleted_flag,
            } => {
                escape_json_into(out, name);
                out.push_str("\":");
                write_value(
                    out,
                    local_value(record, *index, *is_deleted_flag),
                    *field_type,
                );
            }
            Column::Relationship {
                name,
                hop,
                object_name,
                columns,
            } => {
                escape_json_into(out, name);
                out.push_str("\":");
                match follow(data, record, *hop) {
                    Some(related) => {
                        render_object(data, object_name, related, columns, api_version, out);
                    }
                    None => out.push_str("null"),
                }
            }
        }
    }
    out.push('}');
}

/// A field value as JSON, the way [`FieldValue::to_json`] writes it.
fn write_value(out: &mut String, value: &FieldValue, field_type: FieldType) {
    // Writing to a String cannot fail.
    match value {
        FieldValue::Null => out.push_str("null"),
        FieldValue::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        FieldValue::Number(number) => {
            if field_type == FieldType::Int && number.is_finite() {
                let _ = write!(out, "{}", *number as i64);
            } else {
                match serde_json::Number::from_f64(*number) {
                    Some(number) => {
                        let _ = write!(out, "{number}");
                    }
                    None => out.push_str("null"),
                }
            }
        }
        FieldValue::Text(text) => {
            out.push('"');
            escape_json_into(out, text);
            out.push('"');
        }
        FieldValue::Date(date) => {
            let _ = write!(out, "\"{date}\"");
        }
        FieldValue::DateTime(at) => {
            let _ = write!(out, "\"{}\"", at.strftime("%Y-%m-%dT%H:%M:%S%.3f+0000"));
        }
    }
}

/// Appends `text` escaped for the inside of a JSON string.
fn escape_json_into(out: &mut String, text: &str) {
    let mut unescaped_from = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[unescaped_from..index]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        unescaped_from = index + 1;
    }
    out.push_str(&text[unescaped_from..]);
}

/// Result rows as Bulk API 2.0 writes them: one flat column per selected field, in `SELECT`
/// order, named by its path (`Owner.Email`).
impl PreparedQuery {
    /// Column names, in the order [`PreparedQuery::csv_values`] gives values.
    pub fn csv_columns(&self) -> Vec<String> {
        self.flat_fields
            .iter()
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// One row's cells as text (empty for null, and for every field behind an empty lookup).
    pub fn csv_values(&self, data: &OrgData, row: usize) -> Vec<String> {
        let Some(record) = data
            .tables
            .get(self.table)
            .and_then(|table| table.records.get(row))
        else {
            return vec![String::new(); self.flat_fields.len()];
        };
        self.flat_fields
            .iter()
            .map(|(_, access)| access.value(data, record).to_csv_text())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::emulator::data::OrgProfile;

    const OWNER_ONE: &str = "005000000000001AAA";
    const OWNER_TWO: &str = "005000000000002AAA";
    const ACCOUNT: &str = "001000000000001AAA";
    const CONTACT: &str = "003000000000001AAA";
    const LEAD_ONE: &str = "00Q000000000001AAA";
    const LEAD_TWO: &str = "00Q000000000002AAA";
    const LEAD_THREE: &str = "00Q000000000003AAA";
    const LEAD_DELETED: &str = "00Q000000000004AAA";

    /// The moment relative date literals are resolved against in these tests.
    fn now() -> Timestamp {
        "2024-03-15T12:00:00Z".parse().expect("timestamp")
    }

    fn push(data: &mut OrgData, object: &str, fields: Value) -> usize {
        let index = data.catalog.object_index(object).expect("object");
        let schema = &data.catalog.objects()[index];
        let record = OrgData::record_from_json(
            schema,
            fields.as_object().expect("object"),
            &mut data.interner,
        );
        data.tables[index].push(record)
    }

    fn org() -> OrgData {
        let mut data = OrgData::new(Catalog::new(OrgProfile::Classic));
        push(
            &mut data,
            "User",
            json!({"Id": OWNER_ONE, "LastName": "One", "Name": "Olive One",
                   "Email": "owner.one@example.com", "IsActive": true}),
        );
        push(
            &mut data,
            "User",
            json!({"Id": OWNER_TWO, "LastName": "Two", "Name": "Otto Two",
                   "Email": "Owner.Two@Example.com", "IsActive": true}),
        );
        push(
            &mut data,
            "Account",
            json!({"Id": ACCOUNT, "Name": "Acme \"Global\""}),
        );
        push(
            &mut data,
            "Contact",
            json!({"Id": CONTACT, "LastName": "Zed", "AccountId": ACCOUNT,
                   "Email": "contact@acme.test"}),
        );
        push(
            &mut data,
            "Lead",
            json!({"Id": LEAD_ONE, "LastName": "O'Brien", "FirstName": "Seán", "Company": "Acme",
                   "Email": "obrien@acme.test", "OwnerId": OWNER_ONE,
                   "Status": "Open - Not Contacted", "AnnualRevenue": 5000,
                   "NumberOfEmployees": 10, "CreatedDate": "2024-01-31T10:00:00.000+0000",
                   "Rating": "Hot"}),
        );
        push(
            &mut data,
            "Lead",
            json!({"Id": LEAD_TWO, "LastName": "zed", "Company": "100% Pure",
                   "OwnerId": OWNER_TWO, "Status": "Closed - Converted",
                   "AnnualRevenue": 250000.5, "CreatedDate": "2024-02-01T00:00:00.000+0000",
                   "IsConverted": true, "ConvertedContactId": CONTACT,
                   "ConvertedDate": "2024-03-14", "Description": "Line one\nline \"two\"",
                   "Rating": "Warm"}),
        );
        push(
            &mut data,
            "Lead",
            json!({"Id": LEAD_THREE, "LastName": "Élan", "Company": "under_score",
                   "Email": "ELAN@EXAMPLE.COM", "Status": "Working - Contacted",
                   "NumberOfEmployees": 3, "CreatedDate": "2024-03-15T01:00:00.000+0000",
                   "Rating": "Hot"}),
        );
        let deleted = push(
            &mut data,
            "Lead",
            json!({"Id": LEAD_DELETED, "LastName": "Gone", "Company": "Deleted Co",
                   "Email": "gone@acme.test", "OwnerId": OWNER_ONE,
                   "CreatedDate": "2023-12-01T00:00:00.000+0000"}),
        );
        let leads = data.catalog.object_index("Lead").expect("Lead");
        data.tables[leads].records[deleted].deleted_at = Some(now());
        data
    }

    fn prepare(data: &OrgData, query: &str) -> Result<PreparedQuery, SoqlError> {
        parse(query)?.prepare_at(&data.catalog, now())
    }

    /// The ids of the rows `query` returns from `/query`.
    fn ids(data: &OrgData, query: &str) -> Vec<String> {
        ids_from(data, query, false)
    }

    fn ids_from(data: &OrgData, query: &str, include_deleted: bool) -> Vec<String> {
        let prepared = prepare(data, query).unwrap_or_else(|error| panic!("{query}: {error}"));
        let (_, table) = data.object(prepared.object_name()).expect("table");
        prepared
            .select(data, include_deleted)
            .into_iter()
            .map(|row| table.records[row].id().to_string())
            .collect()
    }

    fn rendered(data: &OrgData, query: &str) -> Vec<Value> {
        let prepared = prepare(data, query).unwrap_or_else(|error| panic!("{query}: {error}"));
        prepared
            .select(data, false)
            .into_iter()
            .map(|row| {
                let mut out = String::new();
                prepared.render_record(data, row, "62.0", &mut out);
                serde_json::from_str(&out).unwrap_or_else(|error| panic!("{out}: {error}"))
            })
            .collect()
    }

    fn error(data: &OrgData, query: &str) -> SoqlError {
        match prepare(data, query) {
            Ok(_) => panic!("{query} should fail"),
            Err(error) => error,
        }
    }

    // ---- parse errors -----------------------------------------------------------------------

    #[test]
    fn unexpected_tokens_echo_the_query_with_a_caret() {
        let data = org();
        assert_eq!(
            error(&data, "SELECT Id FRM Lead"),
            SoqlError::new(
                MALFORMED_QUERY,
                "\nSELECT Id FRM Lead\n          ^\nERROR at Row:1:Column:11\nunexpected token: 'FRM'"
            )
        );
        assert_eq!(
            error(&data, "SELECT Id FROM").message,
            "\nSELECT Id FROM\n              ^\nERROR at Row:1:Column:15\nunexpected token: '<EOF>'"
        );
        assert_eq!(
            error(&data, "").message,
            "\n\n^\nERROR at Row:1:Column:1\nunexpected token: '<EOF>'"
        );
        for (query, token) in [
            ("SELECT FROM Lead", "FROM"),
            ("SELECT Id, FROM Lead", "FROM"),
            ("SELECT Id Lead", "Lead"),
            ("SELECT Id FROM Lead WHERE", "<EOF>"),
            ("SELECT Id FROM Lead WHERE Email", "<EOF>"),
            ("SELECT Id FROM Lead WHERE Email = ", "<EOF>"),
            ("SELECT Id FROM Lead WHERE Email IN ()", ")"),
            ("SELECT Id FROM Lead WHERE Email = 'a' )", ")"),
            ("SELECT Id FROM Lead WHERE (Email = 'a'", "<EOF>"),
            ("SELECT Id FROM Lead LIMIT -1", "-1"),
            ("SELECT Id FROM Lead LIMIT 1.5", "1.5"),
            ("SELECT Id FROM Lead LIMIT ten", "ten"),
            ("SELECT Id FROM Lead ORDER Email", "Email"),
            ("SELECT Id FROM Lead ORDER BY Email NULLS", "<EOF>"),
            ("SELECT Id FROM Lead OFFSET 1 LIMIT 1", "LIMIT"),
            ("SELECT Id FROM Lead WHERE Email = bob", "bob"),
            (
                "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-31T10:00:00",
                "2024-01-31T10:00:00",
            ),
            (
                "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-31T10:00Z",
                "2024-01-31T10:00Z",
            ),
            (
                "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-31T10:00:00+0200",
                "2024-01-31T10:00:00+0200",
            ),
            (
                "SELECT Id FROM Lead WHERE ConvertedDate = 2024-02-30",
                "2024-02-30",
            ),
            ("SELECT COUNT(Id) FROM Lead", "Id"),
        ] {
            let error = error(&data, query);
            assert_eq!(error.code, MALFORMED_QUERY, "{query}");
            assert!(
                error
                    .message
                    .ends_with(&format!("\nunexpected token: '{token}'")),
                "{query}: {}",
                error.message
            );
        }
    }

    #[test]
    fn keywords_and_names_are_case_insensitive() {
        let data = org();
        assert_eq!(
            ids(
                &data,
                "select id from LEAD where EMAIL = 'OBRIEN@acme.test' order by lastname"
            ),
            [LEAD_ONE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Lead.Id FROM Lead WHERE Lead.Email = 'obrien@acme.test'"
            ),
            [LEAD_ONE]
        );
    }

    #[test]
    fn long_lines_are_echoed_from_about_forty_characters_before_the_problem() {
        // Modelled on a real message, whose echo starts at the word 40 characters before `OR`.
        let data = org();
        let query = "SELECT Id, Email, Name\nFROM Contact\nWHERE AccountId = '0014000000p6XlS' \
                     AND LastName LIKE 'test' OR email LIKE 'test'";
        assert_eq!(
            error(&data, query).message,
            format!(
                "\n'0014000000p6XlS' AND LastName LIKE 'test' OR email LIKE 'test'\n{}^\n\
                 ERROR at Row:3:Column:62\nunexpected token: 'OR'",
                " ".repeat(43)
            )
        );
    }

    #[test]
    fn unknown_names_are_reported_as_salesforce_words_them() {
        let data = org();
        assert_eq!(
            error(&data, "SELECT Id, Foo FROM Lead"),
            SoqlError::new(
                INVALID_FIELD,
                "\nSELECT Id, Foo FROM Lead\n           ^\nERROR at Row:1:Column:12\nNo such column \
                 'Foo' on entity 'Lead'. If you are attempting to use a custom field, be sure to \
                 append the '__c' after the custom field name. Please reference your WSDL or the \
                 describe call for the appropriate names."
            )
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Foo"),
            SoqlError::new(
                INVALID_TYPE,
                "\nSELECT Id FROM Foo\n               ^\nERROR at Row:1:Column:16\nsObject type \
                 'Foo' is not supported. If you are attempting to use a custom object, be sure to \
                 append the '__c' after the custom object name. Please reference your WSDL or the \
                 describe call for the appropriate names."
            )
        );
        assert_eq!(
            error(&data, "SELECT Id, Foo.Name FROM Lead"),
            SoqlError::new(
                INVALID_FIELD,
                "\nSELECT Id, Foo.Name FROM Lead\n           ^\nERROR at Row:1:Column:12\n\
                 Didn't understand relationship 'Foo' in field path. If you are attempting to use \
                 a custom relationship, be sure to append the '__r' after the custom relationship \
                 name. Please reference your WSDL or the describe call for the appropriate names."
            )
        );
        let through_relationship = error(&data, "SELECT Owner.Foo FROM Lead");
        assert_eq!(through_relationship.code, INVALID_FIELD);
        assert!(
            through_relationship
                .message
                .contains("No such column 'Foo' on entity 'User'.")
        );
        // A field, not a relationship, in the middle of a path.
        let not_a_relationship = error(&data, "SELECT Email.Name FROM Lead");
        assert!(
            not_a_relationship
                .message
                .contains("Didn't understand relationship 'Email' in field path.")
        );
        let in_where = error(&data, "SELECT Id FROM Lead WHERE Nope = 1");
        assert!(
            in_where
                .message
                .contains("ERROR at Row:1:Column:27\nNo such column 'Nope'")
        );
        let in_order = error(&data, "SELECT Id FROM Lead ORDER BY Nope");
        assert!(
            in_order
                .message
                .contains("ERROR at Row:1:Column:30\nNo such column 'Nope'")
        );
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let data = org();
        assert_eq!(
            error(&data, "SELECT Id, Email, email FROM Lead"),
            SoqlError::new(MALFORMED_QUERY, "duplicate field selected: Email")
        );
        assert_eq!(
            error(&data, "SELECT Owner.Email, owner.EMAIL FROM Lead").message,
            "duplicate field selected: Owner.Email"
        );
        // The same name on different objects is not a duplicate.
        assert!(prepare(&data, "SELECT Email, Owner.Email, Id, Owner.Id FROM Lead").is_ok());
    }

    #[test]
    fn textarea_fields_cannot_be_filtered_or_sorted() {
        let data = org();
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE Description = 'x'"),
            SoqlError::new(
                INVALID_FIELD,
                "\nSELECT Id FROM Lead WHERE Description = 'x'\n                          ^\n\
                 ERROR at Row:1:Column:27\nfield 'Description' can not be filtered in a query call"
            )
        );
        let sorted = error(&data, "SELECT Id FROM Lead ORDER BY Description");
        assert_eq!(sorted.code, INVALID_FIELD);
        assert!(
            sorted
                .message
                .ends_with("\nfield 'Description' can not be sorted in a query call")
        );
        // Selecting it is fine.
        assert_eq!(
            rendered(
                &data,
                "SELECT Description FROM Lead WHERE Id = '00Q000000000002AAA'"
            )[0]["Description"],
            "Line one\nline \"two\""
        );
    }

    // ---- literals -----------------------------------------------------------------------------

    #[test]
    fn string_escapes_decode_as_documented() {
        let decoded = |raw: &str| -> String {
            decode_string(raw, false)
                .expect("valid")
                .into_iter()
                .map(|atom| match atom {
                    LikeAtom::Char(character) => character,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(decoded(r"O\'Brien"), "O'Brien");
        assert_eq!(decoded(r"\u00e9l\u00E9ment"), "élément");
        assert_eq!(
            decoded(r#"a\nb\Nc\rd\Re\tf\Tg\bh\Bi\fj\Fk\"l\\m"#),
            "a\nb\nc\rd\re\tf\tg\u{8}h\u{8}i\u{c}j\u{c}k\"l\\m"
        );
        assert_eq!(decoded("100% _"), "100% _");
        assert_eq!(decode_string(r"\q", false), Err(r"\q".to_string()));
        assert_eq!(decode_string(r"\%", false), Err(r"\%".to_string()));
        assert_eq!(decode_string(r"\_", false), Err(r"\_".to_string()));
        assert_eq!(decode_string(r"\u00g1", false), Err(r"\u00g1".to_string()));
        assert_eq!(decode_string(r"\ud800", false), Err(r"\ud800".to_string()));
        assert_eq!(decode_string(r"\u12", false), Err(r"\u12".to_string()));
        assert_eq!(
            decode_string(r"a\%b\_%_", true),
            Ok(vec![
                LikeAtom::Char('a'),
                LikeAtom::Char('%'),
                LikeAtom::Char('b'),
                LikeAtom::Char('_'),
                LikeAtom::AnyMany,
                LikeAtom::AnyOne,
            ])
        );
    }

    #[test]
    fn escaped_literals_match_records() {
        let data = org();
        assert_eq!(
            ids(&data, r"SELECT Id FROM Lead WHERE LastName = 'O\'Brien'"),
            [LEAD_ONE]
        );
        assert_eq!(
            ids(&data, r"SELECT Id FROM Lead WHERE LastName = '\u00c9lan'"),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(&data, r"SELECT Id FROM Lead WHERE LastName = '\u00e9LAN'"),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(&data, r"SELECT Id FROM Lead WHERE FirstName = 'SEÁN'"),
            [LEAD_ONE]
        );
    }

    #[test]
    fn bad_escapes_are_malformed() {
        let data = org();
        assert_eq!(
            error(&data, r"SELECT Id FROM Lead WHERE LastName = 'a\qb'"),
            SoqlError::new(
                MALFORMED_QUERY,
                "\nSELECT Id FROM Lead WHERE LastName = 'a\\qb'\n                                     ^\n\
                 ERROR at Row:1:Column:38\nInvalid string literal 'a\\qb'. Illegal character \
                 sequence '\\q' in string literal."
            )
        );
        let percent = error(&data, r"SELECT Id FROM Lead WHERE Company = '100\% Pure'");
        assert!(
            percent
                .message
                .ends_with(r"Illegal character sequence '\%' in string literal.")
        );
        let unterminated = error(&data, "SELECT Id FROM Lead WHERE Company = 'Acme");
        assert_eq!(unterminated.code, MALFORMED_QUERY);
        assert!(
            unterminated
                .message
                .ends_with("mismatched character '<EOF>' expecting '''")
        );
        let stray = error(&data, "SELECT Id FROM Lead WHERE Company = \"Acme\"");
        assert_eq!(
            stray.message,
            "\nSELECT Id FROM Lead WHERE Company = \"Acme\"\n                                    ^\n\
             ERROR at Row:1:Column:37\nline 1:37 no viable alternative at character '\"'"
        );
    }

    #[test]
    fn datetime_literals_take_z_fractions_and_offsets() {
        let data = org();
        for literal in [
            "2024-01-31T10:00:00Z",
            "2024-01-31T10:00:00.000Z",
            "2024-01-31T12:00:00+02:00",
            "2024-01-31T05:00:00-05:00",
        ] {
            assert_eq!(
                ids(
                    &data,
                    &format!("SELECT Id FROM Lead WHERE CreatedDate = {literal}")
                ),
                [LEAD_ONE],
                "{literal}"
            );
        }
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-31T10:00:00Z"
            ),
            [LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate >= 2024-01-31T10:00:00Z AND CreatedDate < 2024-03-01T00:00:00Z"
            ),
            [LEAD_ONE, LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE ConvertedDate = 2024-03-14"
            ),
            [LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE ConvertedDate < 2024-03-14"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn dates_and_datetimes_do_not_mix() {
        let data = org();
        assert_eq!(
            error(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate > '2024-01-01T00:00:00Z'"
            ),
            SoqlError::new(
                INVALID_FIELD,
                "value of filter criterion for field 'CreatedDate' must be of type dateTime and \
                 should not be enclosed in quotes"
            )
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-01").message,
            "value of filter criterion for field 'CreatedDate' must be of type dateTime and \
             should not be enclosed in quotes"
        );
        assert_eq!(
            error(
                &data,
                "SELECT Id FROM Lead WHERE ConvertedDate > 2024-01-01T00:00:00Z"
            )
            .message,
            "value of filter criterion for field 'ConvertedDate' must be of type date and should \
             not be enclosed in quotes"
        );
    }

    #[test]
    fn relative_date_literals_cover_utc_days() {
        let data = org();
        // now() is 2024-03-15T12:00:00Z.
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE CreatedDate = TODAY"),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE ConvertedDate = YESTERDAY"),
            [LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate < TODAY ORDER BY CreatedDate"
            ),
            [LEAD_ONE, LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate = LAST_N_DAYS:43"
            ),
            [LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate = last_n_days:42"
            ),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE ConvertedDate = NEXT_N_DAYS:30"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE CreatedDate > YESTERDAY"),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate = LAST_N_DAYS:999999999999"
            ),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
        let text = error(&data, "SELECT Id FROM Lead WHERE Email = TODAY");
        assert_eq!(
            text.message,
            "value of filter criterion for field 'Email' must be of type string and should be \
             enclosed in quotes"
        );
        assert_eq!(
            error(
                &data,
                "SELECT Id FROM Lead WHERE CreatedDate = LAST_N_DAYS:x"
            )
            .code,
            MALFORMED_QUERY
        );
    }

    // ---- operators ----------------------------------------------------------------------------

    #[test]
    fn comparisons_follow_salesforce_semantics() {
        let data = org();
        let query = |condition: &str| ids(&data, &format!("SELECT Id FROM Lead WHERE {condition}"));
        assert_eq!(query("Email = 'obrien@ACME.test'"), [LEAD_ONE]);
        // != and <> keep rows whose value is null.
        assert_eq!(query("Email != 'obrien@acme.test'"), [LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("Email <> 'OBRIEN@acme.test'"), [LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("Email = null"), [LEAD_TWO]);
        assert_eq!(query("Email != null"), [LEAD_ONE, LEAD_THREE]);
        assert_eq!(query("AnnualRevenue > 5000"), [LEAD_TWO]);
        assert_eq!(query("AnnualRevenue >= 5000"), [LEAD_ONE, LEAD_TWO]);
        assert_eq!(query("AnnualRevenue < 250000.5"), [LEAD_ONE]);
        assert_eq!(query("AnnualRevenue <= 250000.5"), [LEAD_ONE, LEAD_TWO]);
        assert_eq!(query("AnnualRevenue > -1.5"), [LEAD_ONE, LEAD_TWO]);
        assert_eq!(query("NumberOfEmployees = 10"), [LEAD_ONE]);
        // Text ordering is case-insensitive: 'zed' > 'P', 'Élan' > 'P'.
        assert_eq!(query("LastName > 'P'"), [LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("LastName < 'P'"), [LEAD_ONE]);
        assert_eq!(query("Rating IN ('hot', 'Cold')"), [LEAD_ONE, LEAD_THREE]);
        assert_eq!(query("Rating NOT IN ('HOT')"), [LEAD_TWO]);
        assert_eq!(
            query("Email IN ('elan@example.com', null)"),
            [LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            query("Email NOT IN ('elan@example.com')"),
            [LEAD_ONE, LEAD_TWO]
        );
        assert_eq!(
            query("NumberOfEmployees IN (3, 10)"),
            [LEAD_ONE, LEAD_THREE]
        );
        assert_eq!(query("IsConverted = true"), [LEAD_TWO]);
        assert_eq!(query("IsConverted = FALSE"), [LEAD_ONE, LEAD_THREE]);
        assert_eq!(query("IsConverted != true"), [LEAD_ONE, LEAD_THREE]);
        assert_eq!(query("Id = '00Q000000000002AAA'"), [LEAD_TWO]);
        // 15-character ids match their 18-character form; ids are case-sensitive.
        assert_eq!(query("Id = '00Q000000000002'"), [LEAD_TWO]);
        assert_eq!(query("Id = '00q000000000002'"), Vec::<String>::new());
        assert_eq!(query("Id > '00Q000000000001AAA'"), [LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("OwnerId = '005000000000001AAA'"), [LEAD_ONE]);
        assert_eq!(query("OwnerId = null"), [LEAD_THREE]);
    }

    #[test]
    fn long_in_lists_match_like_short_ones() {
        let data = org();
        let mut emails: Vec<String> = (0..20)
            .map(|n| format!("'nobody{n}@example.com'"))
            .collect();
        emails.push("'Elan@Example.com'".to_string());
        let query = format!("SELECT Id FROM Lead WHERE Email IN ({})", emails.join(", "));
        assert_eq!(ids(&data, &query), [LEAD_THREE]);
        let negated = query.replace(" IN ", " NOT IN ");
        assert_eq!(ids(&data, &negated), [LEAD_ONE, LEAD_TWO]);
        let mut with_null = emails.clone();
        with_null.push("null".to_string());
        let query = format!(
            "SELECT Id FROM Lead WHERE Email IN ({})",
            with_null.join(",")
        );
        assert_eq!(ids(&data, &query), [LEAD_TWO, LEAD_THREE]);
        let mut lead_ids: Vec<String> =
            (10..30).map(|n| format!("'00Q0000000000{n}AAA'")).collect();
        lead_ids.push("'00Q000000000001'".to_string());
        let query = format!("SELECT Id FROM Lead WHERE Id IN ({})", lead_ids.join(","));
        assert_eq!(ids(&data, &query), [LEAD_ONE]);
    }

    #[test]
    fn and_or_need_parentheses_to_mix() {
        let data = org();
        let mixed = error(
            &data,
            "SELECT Id FROM Lead WHERE Rating = 'Hot' AND Email != null OR IsConverted = true",
        );
        assert_eq!(mixed.code, MALFORMED_QUERY);
        assert!(
            mixed
                .message
                .ends_with("ERROR at Row:1:Column:60\nunexpected token: 'OR'")
        );
        let mixed = error(
            &data,
            "SELECT Id FROM Lead WHERE Rating = 'Hot' OR Email != null AND IsConverted = true",
        );
        assert!(mixed.message.ends_with("unexpected token: 'AND'"));
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE (Rating = 'Hot' AND Email != null) OR IsConverted = true"
            ),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE Rating = 'Hot' AND (Email = null OR IsConverted = true)"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE Rating = 'Hot' AND Email != null AND NumberOfEmployees < 5"
            ),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE Rating = 'Warm' OR Email = 'obrien@acme.test' OR NumberOfEmployees = 3"
            ),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
    }

    #[test]
    fn not_negates_the_first_term_of_a_group() {
        let data = org();
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE NOT Rating = 'Hot'"),
            [LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE IsConverted = false AND (NOT Email LIKE 'o%')"
            ),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE NOT (Rating = 'Hot' OR Email = null)"
            ),
            Vec::<String>::new()
        );
        // As in Salesforce, NOT after AND needs its own parentheses.
        let error = error(
            &data,
            "SELECT Id FROM Lead WHERE Email != null AND NOT (Rating = 'Hot')",
        );
        assert!(error.message.ends_with("unexpected token: 'NOT'"));
    }

    #[test]
    fn like_matches_wildcards_case_insensitively() {
        let data = org();
        let query = |pattern: &str| {
            ids(
                &data,
                &format!("SELECT Id FROM Lead WHERE Company LIKE '{pattern}'"),
            )
        };
        assert_eq!(query("ac%"), [LEAD_ONE]);
        assert_eq!(query("%E%"), [LEAD_ONE, LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("%pure"), [LEAD_TWO]);
        assert_eq!(query("A_me"), [LEAD_ONE]);
        assert_eq!(query("A_e"), Vec::<String>::new());
        assert_eq!(query("100\\% Pure"), [LEAD_TWO]);
        assert_eq!(query("100\\%%"), [LEAD_TWO]);
        assert_eq!(query("1000%"), Vec::<String>::new());
        assert_eq!(query("under\\_score"), [LEAD_THREE]);
        assert_eq!(query("under_score"), [LEAD_THREE]);
        assert_eq!(query("%"), [LEAD_ONE, LEAD_TWO, LEAD_THREE]);
        assert_eq!(query("%%c%m%e"), [LEAD_ONE]);
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE LastName LIKE '\\u00e9%'"),
            [LEAD_THREE]
        );
        // Null values never match.
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE Email LIKE '%'"),
            [LEAD_ONE, LEAD_THREE]
        );
        let numeric = error(&data, "SELECT Id FROM Lead WHERE AnnualRevenue LIKE '5%'");
        assert_eq!(numeric.code, INVALID_QUERY_FILTER_OPERATOR);
        let unquoted = error(&data, "SELECT Id FROM Lead WHERE Company LIKE 5");
        assert_eq!(unquoted.code, INVALID_FIELD);
    }

    #[test]
    fn like_matcher_backtracks() {
        let pattern = |text: &str| decode_string(text, true).expect("pattern");
        assert!(like_matches(&pattern("%a%b%c"), "xxaxxbxxcxxc"));
        assert!(!like_matches(&pattern("%a%b%c"), "xxaxxcxxb"));
        assert!(like_matches(&pattern("a%"), "a"));
        assert!(like_matches(&pattern(""), ""));
        assert!(!like_matches(&pattern(""), "a"));
        assert!(like_matches(&pattern("_%_"), "ab"));
        assert!(!like_matches(&pattern("_%_"), "a"));
    }

    #[test]
    fn values_must_have_the_fields_type() {
        let data = org();
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE IsConverted = 'true'"),
            SoqlError::new(
                INVALID_FIELD,
                "value of filter criterion for field 'IsConverted' must be of type boolean and \
                 should not be enclosed in quotes"
            )
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE AnnualRevenue = '5000'").message,
            "value of filter criterion for field 'AnnualRevenue' must be of type double and \
             should not be enclosed in quotes"
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE Email = 5").message,
            "value of filter criterion for field 'Email' must be of type string and should be \
             enclosed in quotes"
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Lead WHERE Owner.Email IN ('a', 5)").message,
            "value of filter criterion for field 'Owner.Email' must be of type string and should \
             be enclosed in quotes"
        );
        let ordered_boolean = error(&data, "SELECT Id FROM Lead WHERE IsConverted > false");
        assert_eq!(ordered_boolean.code, INVALID_QUERY_FILTER_OPERATOR);
        let bad_id = error(&data, "SELECT Id FROM Lead WHERE Id = 'abc'");
        assert_eq!(bad_id.code, INVALID_QUERY_FILTER_OPERATOR);
        assert!(
            bad_id.message.ends_with("\ninvalid ID field: abc"),
            "{}",
            bad_id.message
        );
    }

    // ---- relationships ------------------------------------------------------------------------

    #[test]
    fn relationship_fields_render_as_nested_records() {
        let data = org();
        let prepared = prepare(
            &data,
            "SELECT Id, owner.email, Email, Owner.Name, ConvertedContact.Account.Name, \
             ConvertedContact.Email FROM Lead WHERE Id IN ('00Q000000000001AAA', '00Q000000000002AAA')",
        )
        .expect("prepared");
        let rows = prepared.select(&data, false);
        let mut out = String::new();
        prepared.render_record(&data, rows[0], "62.0", &mut out);
        assert_eq!(
            out,
            r#"{"attributes":{"type":"Lead","url":"/services/data/v62.0/sobjects/Lead/00Q000000000001AAA"},"Id":"00Q000000000001AAA","Owner":{"attributes":{"type":"User","url":"/services/data/v62.0/sobjects/User/005000000000001AAA"},"Email":"owner.one@example.com","Name":"Olive One"},"Email":"obrien@acme.test","ConvertedContact":null}"#
        );
        out.clear();
        prepared.render_record(&data, rows[1], "62.0", &mut out);
        assert_eq!(
            out,
            r#"{"attributes":{"type":"Lead","url":"/services/data/v62.0/sobjects/Lead/00Q000000000002AAA"},"Id":"00Q000000000002AAA","Owner":{"attributes":{"type":"User","url":"/services/data/v62.0/sobjects/User/005000000000002AAA"},"Email":"Owner.Two@Example.com","Name":"Otto Two"},"Email":null,"ConvertedContact":{"attributes":{"type":"Contact","url":"/services/data/v62.0/sobjects/Contact/003000000000001AAA"},"Account":{"attributes":{"type":"Account","url":"/services/data/v62.0/sobjects/Account/001000000000001AAA"},"Name":"Acme \"Global\""},"Email":"contact@acme.test"}}"#
        );
        let without_owner = rendered(&data, "SELECT Owner.Email FROM Lead WHERE OwnerId = null");
        assert_eq!(
            without_owner,
            [json!({"attributes": {"type": "Lead",
                    "url": "/services/data/v62.0/sobjects/Lead/00Q000000000003AAA"},
                    "Owner": null})]
        );
    }

    #[test]
    fn relationship_fields_filter_and_sort() {
        let data = org();
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE Owner.Email = 'OWNER.two@example.com'"
            ),
            [LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE Owner.Email LIKE 'owner.%' ORDER BY Owner.Name DESC"
            ),
            [LEAD_TWO, LEAD_ONE]
        );
        // A null lookup makes every field through it null.
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE Owner.Email = null"),
            [LEAD_THREE]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead WHERE ConvertedContact.Account.Name LIKE 'acme%'"
            ),
            [LEAD_TWO]
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead ORDER BY Owner.Email NULLS LAST, Id"
            ),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
        let textarea = error(
            &data,
            "SELECT Id FROM Contact WHERE Account.Description = 'x'",
        );
        assert!(
            textarea
                .message
                .ends_with("field 'Description' can not be filtered in a query call")
        );
    }

    // ---- ordering, paging, counting -----------------------------------------------------------

    #[test]
    fn order_by_handles_direction_nulls_and_several_keys() {
        let data = org();
        let query = |order: &str| ids(&data, &format!("SELECT Id FROM Lead ORDER BY {order}"));
        // ASC defaults to NULLS FIRST, DESC to NULLS LAST.
        assert_eq!(query("AnnualRevenue"), [LEAD_THREE, LEAD_ONE, LEAD_TWO]);
        assert_eq!(
            query("AnnualRevenue ASC NULLS LAST"),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            query("AnnualRevenue DESC"),
            [LEAD_TWO, LEAD_ONE, LEAD_THREE]
        );
        assert_eq!(
            query("AnnualRevenue DESC NULLS FIRST"),
            [LEAD_THREE, LEAD_TWO, LEAD_ONE]
        );
        // Case-insensitive text: "O'Brien" < "zed" < "Élan".
        assert_eq!(query("LastName"), [LEAD_ONE, LEAD_TWO, LEAD_THREE]);
        assert_eq!(
            query("Rating DESC, CreatedDate DESC"),
            [LEAD_TWO, LEAD_THREE, LEAD_ONE]
        );
        assert_eq!(
            query("Rating, CreatedDate"),
            [LEAD_ONE, LEAD_THREE, LEAD_TWO]
        );
        assert_eq!(
            query("IsConverted DESC, Id DESC"),
            [LEAD_TWO, LEAD_THREE, LEAD_ONE]
        );
        assert_eq!(
            query("ConvertedDate, NumberOfEmployees DESC"),
            [LEAD_ONE, LEAD_THREE, LEAD_TWO]
        );
    }

    #[test]
    fn limit_and_offset_apply_after_ordering() {
        let data = org();
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead LIMIT 2"),
            [LEAD_ONE, LEAD_TWO]
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead LIMIT 0"),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead LIMIT 1 OFFSET 1"),
            [LEAD_TWO]
        );
        assert_eq!(ids(&data, "SELECT Id FROM Lead OFFSET 2"), [LEAD_THREE]);
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead OFFSET 2000"),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(
                &data,
                "SELECT Id FROM Lead ORDER BY CreatedDate DESC LIMIT 2 OFFSET 1"
            ),
            [LEAD_TWO, LEAD_ONE]
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead LIMIT 99999999999999999999999"),
            [LEAD_ONE, LEAD_TWO, LEAD_THREE]
        );
        assert_eq!(
            error(&data, "SELECT Id FROM Lead OFFSET 2001"),
            SoqlError::new(
                NUMBER_OUTSIDE_VALID_RANGE,
                "Maximum SOQL offset allowed for apiName Lead is 2000"
            )
        );
        let prepared = prepare(&data, "SELECT Id FROM Lead LIMIT 7").expect("prepared");
        assert_eq!(prepared.limit(), Some(7));
    }

    #[test]
    fn count_queries_count_matching_rows() {
        let data = org();
        let prepared =
            prepare(&data, "SELECT COUNT() FROM Lead WHERE Rating = 'Hot'").expect("count");
        assert!(prepared.is_count());
        assert_eq!(prepared.object_name(), "Lead");
        assert_eq!(prepared.select(&data, false).len(), 2);
        assert_eq!(prepared.select(&data, true).len(), 2);
        let all = prepare(&data, "select count ( ) from lead").expect("count");
        assert_eq!(all.select(&data, false).len(), 3);
        assert_eq!(all.select(&data, true).len(), 4);
        assert!(
            !prepare(&data, "SELECT Id FROM Lead")
                .expect("plain")
                .is_count()
        );
    }

    #[test]
    fn query_all_includes_deleted_rows() {
        let data = org();
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE Email LIKE '%@acme.test'"),
            [LEAD_ONE]
        );
        assert_eq!(
            ids_from(
                &data,
                "SELECT Id FROM Lead WHERE Email LIKE '%@acme.test'",
                true
            ),
            [LEAD_ONE, LEAD_DELETED]
        );
        assert_eq!(
            ids_from(&data, "SELECT Id FROM Lead WHERE IsDeleted = true", true),
            [LEAD_DELETED]
        );
        assert_eq!(
            ids(&data, "SELECT Id FROM Lead WHERE IsDeleted = true"),
            Vec::<String>::new()
        );
        let prepared = prepare(&data, "SELECT Id, IsDeleted FROM Lead").expect("prepared");
        let rows = prepared.select(&data, true);
        let mut out = String::new();
        prepared.render_record(&data, rows[3], "62.0", &mut out);
        assert!(
            out.ends_with(r#""Id":"00Q000000000004AAA","IsDeleted":true}"#),
            "{out}"
        );
    }

    // ---- rendering ----------------------------------------------------------------------------

    #[test]
    fn rendered_values_match_the_json_salesforce_sends() {
        let data = org();
        let (schema, table) = data.object("Lead").expect("Lead");
        let names: Vec<&str> = schema
            .fields
            .iter()
            .map(|field| field.name.as_str())
            .collect();
        let query = format!("SELECT {} FROM Lead", names.join(", "));
        let prepared = prepare(&data, &query).expect("every field");
        for row in prepared.select(&data, true) {
            let mut out = String::new();
            prepared.render_record(&data, row, "62.0", &mut out);
            let rendered: Value = serde_json::from_str(&out).expect("json");
            let record = &table.records[row];
            let mut expected = serde_json::Map::new();
            expected.insert(
                "attributes".into(),
                json!({"type": "Lead", "url": format!("/services/data/v62.0/sobjects/Lead/{}", record.id())}),
            );
            for (index, field) in schema.fields.iter().enumerate() {
                let value = if field.name == "IsDeleted" {
                    Value::Bool(record.is_deleted())
                } else {
                    record.value(index).to_json(field.field_type)
                };
                expected.insert(field.name.clone(), value);
            }
            assert_eq!(rendered, Value::Object(expected));
            // Field order follows SELECT order.
            let keys: Vec<String> = rendered
                .as_object()
                .expect("object")
                .keys()
                .cloned()
                .collect();
            assert_eq!(keys.len(), names.len() + 1);
            let number = rendered["AnnualRevenue"].to_string();
            assert!(number == "null" || number.contains('.'), "{number}");
        }
        let one = rendered(
            &data,
            "SELECT CreatedDate, AnnualRevenue, NumberOfEmployees FROM Lead LIMIT 1",
        );
        assert_eq!(one[0]["CreatedDate"], "2024-01-31T10:00:00.000+0000");
        let mut out = String::new();
        let prepared = prepare(
            &data,
            "SELECT AnnualRevenue, NumberOfEmployees FROM Lead LIMIT 1",
        )
        .expect("prepared");
        prepared.render_record(&data, 0, "62.0", &mut out);
        assert!(
            out.ends_with(r#""AnnualRevenue":5000.0,"NumberOfEmployees":10}"#),
            "{out}"
        );
    }

    #[test]
    fn csv_rows_follow_select_order() {
        let data = org();
        let prepared = prepare(
            &data,
            "SELECT owner.email, Email, Owner.Name, IsConverted, AnnualRevenue FROM Lead \
             ORDER BY Id DESC",
        )
        .expect("prepared");
        assert_eq!(
            prepared.csv_columns(),
            [
                "Owner.Email",
                "Email",
                "Owner.Name",
                "IsConverted",
                "AnnualRevenue"
            ]
        );
        let rows = prepared.select(&data, false);
        assert_eq!(
            prepared.csv_values(&data, rows[0]),
            ["", "ELAN@EXAMPLE.COM", "", "false", ""]
        );
        assert_eq!(
            prepared.csv_values(&data, rows[1]),
            ["Owner.Two@Example.com", "", "Otto Two", "true", "250000.5"]
        );
        assert_eq!(prepared.csv_values(&data, 999), ["", "", "", "", ""]);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        escape_json_into(&mut out, "a\"b\\c\nd\u{1}e\u{8}f\u{c}g\th\ré/");
        assert_eq!(out, r#"a\"b\\c\nd\u0001e\bf\fg\th\ré/"#);
        let decoded: String = serde_json::from_str(&format!("\"{out}\"")).expect("valid JSON");
        assert_eq!(decoded, "a\"b\\c\nd\u{1}e\u{8}f\u{c}g\th\ré/");
    }

    #[test]
    fn render_of_a_missing_row_is_null() {
        let data = org();
        let prepared = prepare(&data, "SELECT Id FROM Lead").expect("prepared");
        let mut out = String::new();
        prepared.render_record(&data, 999, "62.0", &mut out);
        assert_eq!(out, "null");
    }

    // ---- robustness ---------------------------------------------------------------------------

    fn exercise(data: &OrgData, query: &str) {
        if let Ok(prepared) = prepare(data, query) {
            for include_deleted in [false, true] {
                for row in prepared.select(data, include_deleted) {
                    let mut out = String::new();
                    prepared.render_record(data, row, "62.0", &mut out);
                    assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
                }
            }
        }
    }

    const FRAGMENTS: [&str; 48] = [
        "SELECT",
        "FROM",
        "WHERE",
        "Lead",
        "Contact",
        "Id",
        "Email",
        "Owner.Email",
        "Owner",
        ".",
        ",",
        "(",
        ")",
        "COUNT()",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "=",
        "!=",
        "<",
        ">=",
        "<>",
        "'x%'",
        "'\\u00e9'",
        "'\\q'",
        "'",
        "null",
        "true",
        "5",
        "-2.5",
        "2024-01-31",
        "2024-01-31T10:00:00Z",
        "2024-01-31T10:00:00+02:00",
        "TODAY",
        "LAST_N_DAYS:3",
        "ORDER BY",
        "DESC",
        "NULLS LAST",
        "LIMIT",
        "OFFSET",
        "2001",
        "CreatedDate",
        "ConvertedDate",
        "IsConverted",
        "é",
        "\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fast_paths_agree_with_the_general_ones(
            text in "[a-cA-C%_ K\u{212A}é]{0,12}",
            raw_pattern in "[a-cA-C%_ ké]{0,8}",
        ) {
            let pattern: Vec<LikeAtom> = decode_string(&raw_pattern, true)
                .expect("no escapes")
                .into_iter()
                .map(|atom| match atom {
                    LikeAtom::Char(character) => {
                        LikeAtom::Char(character.to_lowercase().next().unwrap_or(character))
                    }
                    other => other,
                })
                .collect();
            prop_assert_eq!(
                like_matches(&pattern, &text),
                like_matches_unicode(&pattern, &text)
            );
            let folded = fold(&raw_pattern);
            prop_assert_eq!(
                equals_folded(&text, &folded),
                compare_folded(&text, &folded) == Ordering::Equal
            );
        }

        #[test]
        fn arbitrary_text_never_panics(query in "\\PC{0,80}") {
            exercise(&org(), &query);
        }

        #[test]
        fn soql_shaped_text_never_panics(
            pieces in proptest::collection::vec(0..FRAGMENTS.len(), 0..24)
        ) {
            let body: Vec<&str> = pieces.iter().map(|index| FRAGMENTS[*index]).collect();
            let data = org();
            exercise(&data, &body.join(" "));
            exercise(&data, &format!("SELECT Id FROM Lead WHERE {}", body.join(" ")));
            exercise(&data, &format!("SELECT Id, Owner.Email FROM Lead {}", body.join("")));
        }
    }
}
