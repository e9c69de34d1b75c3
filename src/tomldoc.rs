//! Reading hand-edited TOML with positions.
//!
//! Config and mapping files are written by people, so reading them must say exactly where a
//! problem is and keep going to find the next one. This module parses a TOML document into its
//! spanned tree and offers typed accessors that record a [`Diagnostic`] (with `file:line:col`)
//! instead of failing. A [`Table`] remembers which keys were asked for; [`Table::finish`]
//! reports every other key as unknown, with a "did you mean" suggestion.

use std::cell::RefCell;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{
    Diagnostic, Diagnostics, Located, Location, SourceFile, did_you_mean, list,
};

/// Parses `source` and hands its root table to `read`. Syntax errors become diagnostics and
/// `read` is not called.
pub fn read_document<T>(
    source: &SourceFile,
    diagnostics: &mut Diagnostics,
    read: impl FnOnce(&Table<'_, '_>) -> T,
) -> Option<T> {
    let root = match DeTable::parse(source.text()) {
        Ok(root) => root,
        Err(error) => {
            let location = source.location(error.span().map_or(0, |span| span.start));
            let message = error.message().trim().to_string();
            diagnostics.push(
                Diagnostic::new(location, format!("invalid TOML: {message}"))
                    .with_help("fix the syntax; see https://toml.io for the format"),
            );
            return None;
        }
    };
    let reader = Reader {
        source,
        diagnostics: RefCell::new(Diagnostics::default()),
    };
    let table = Table {
        reader: &reader,
        entries: Some(root.get_ref()),
        location: source.location(0),
        path: String::new(),
        asked: RefCell::new(Vec::new()),
        takes_any_key: RefCell::new(false),
    };
    let result = read(&table);
    table.finish();
    diagnostics.extend(reader.diagnostics.into_inner());
    Some(result)
}

/// Shared state of one document being read.
pub struct Reader<'s> {
    source: &'s SourceFile,
    diagnostics: RefCell<Diagnostics>,
}

impl Reader<'_> {
    fn report(&self, diagnostic: Diagnostic) {
        self.diagnostics.borrow_mut().push(diagnostic);
    }

    fn location(&self, span: &Range<usize>) -> Location {
        self.source.span_location(span)
    }
}

/// A TOML table being read. A table that is absent from the file still exists as an empty
/// table, so callers can ask for its keys (and environment overrides can still apply).
pub struct Table<'r, 'i> {
    reader: &'r Reader<'r>,
    entries: Option<&'r DeTable<'i>>,
    location: Location,
    path: String,
    asked: RefCell<Vec<&'static str>>,
    takes_any_key: RefCell<bool>,
}

/// One value in a document, with its position.
#[derive(Clone)]
pub struct Node<'r, 'i> {
    reader: &'r Reader<'r>,
    value: &'r DeValue<'i>,
    span: Range<usize>,
    path: String,
}

impl<'r, 'i> Table<'r, 'i> {
    /// The dotted path of this table, as an admin would write it (`objects.contacts`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the table starts (for problems about the table as a whole).
    pub fn location(&self) -> Location {
        self.location.clone()
    }

    /// Whether the file wrote this table at all.
    pub fn is_present(&self) -> bool {
        self.entries.is_some()
    }

    /// Records a problem found by the caller.
    pub fn report(&self, diagnostic: Diagnostic) {
        self.reader.report(diagnostic);
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, marking the key as known.
    pub fn get(&self, key: &'static str) -> Option<Node<'r, 'i>> {
        self.asked.borrow_mut().push(key);
        let (_, value) = self.entries?.get_key_value(key)?;
        Some(Node {
            reader: self.reader,
            value: value.get_ref(),
            span: value.span(),
            path: self.child_path(key),
        })
    }

    /// Whether `key` was written (does not mark it as known).
    pub fn contains(&self, key: &str) -> bool {
        self.entries
            .is_some_and(|entries| entries.contains_key(key))
    }

    pub fn str(&self, key: &'static str) -> Option<Located<String>> {
        self.get(key)?.as_str()
    }

    pub fn bool(&self, key: &'static str) -> Option<Located<bool>> {
        self.get(key)?.as_bool()
    }

    pub fn integer(&self, key: &'static str) -> Option<Located<i64>> {
        self.get(key)?.as_integer()
    }

    /// A string that must be present; reports `help` if it is missing.
    pub fn required_str(&self, key: &'static str, help: &str) -> Option<Located<String>> {
        if !self.contains(key) {
            self.asked.borrow_mut().push(key);
            self.missing(key, help);
            return None;
        }
        self.str(key)
    }

    /// Reports that a required key is absent.
    pub fn missing(&self, key: &str, help: &str) {
        let within = if self.path.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in [{}]", self.path)
        };
        self.reader.report(
            Diagnostic::new(
                self.location(),
                format!("missing required key `{key}` {within}"),
            )
            .with_help(help.to_string()),
        );
    }

    /// The sub-table under `key`: an empty (absent) table when the key is missing or holds
    /// something else (which is reported), so callers can always read through it.
    pub fn table(&self, key: &'static str) -> Table<'r, 'i> {
        if let Some(node) = self.get(key) {
            // `as_table` reports a value of another type.
            if let Some(table) = node.as_table() {
                return table;
            }
        }
        Table {
            reader: self.reader,
            entries: None,
            location: self.location(),
            path: self.child_path(key),
            asked: RefCell::new(Vec::new()),
            takes_any_key: RefCell::new(false),
        }
    }

    /// The array under `key` (empty when absent).
    pub fn array(&self, key: &'static str) -> Vec<Node<'r, 'i>> {
        self.get(key)
            .and_then(|node| node.as_array())
            .unwrap_or_default()
    }

    /// Every entry, for tables whose keys are data (value maps, objects by name). All keys
    /// count as known.
    pub fn entries(&self) -> Vec<(Located<String>, Node<'r, 'i>)> {
        *self.takes_any_key.borrow_mut() = true;
        let Some(entries) = self.entries else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|(key, value)| {
                let key_text = key.get_ref().to_string();
                (
                    Located::new(key_text.clone(), self.reader.location(&key.span())),
                    Node {
                        reader: self.reader,
                        value: value.get_ref(),
                        span: value.span(),
                        path: self.child_path(&key_text),
                    },
                )
            })
            .collect()
    }

    /// Every entry, without marking any key as known (for scans over the whole document).
    pub fn entries_quiet(&self) -> Vec<(Located<String>, Node<'r, 'i>)> {
        let before = *self.takes_any_key.borrow();
        let entries = self.entries();
        *self.takes_any_key.borrow_mut() = before;
        entries
    }

    /// Reports every key that was never asked for, suggesting the closest known key.
    pub fn finish(&self) {
        if *self.takes_any_key.borrow() {
            return;
        }
        let Some(entries) = self.entries else {
            return;
        };
        let asked = self.asked.borrow();
        for key in entries.keys() {
            let name: &str = key.get_ref();
            if asked.contains(&name) {
                continue;
            }
            let mut known: Vec<&str> = asked.clone();
            known.sort_unstable();
            known.dedup();
            let within = if self.path.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", self.path)
            };
            let help = match did_you_mean(name, known.iter().copied()) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None if known.is_empty() => "this table takes no keys; remove it".to_string(),
                None => format!("known keys here: {}", list(&known)),
            };
            self.reader.report(
                Diagnostic::new(
                    self.reader.location(&key.span()),
                    format!("unknown key `{name}` {within}"),
                )
                .with_help(help),
            );
        }
    }
}

impl<'r, 'i> Node<'r, 'i> {
    pub fn location(&self) -> Location {
        self.reader.location(&self.span)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records a problem with this value.
    pub fn report(&self, message: impl Into<String>, help: impl Into<String>) {
        self.reader
            .report(Diagnostic::new(self.location(), message).with_help(help));
    }

    /// The TOML type name of the value, for messages.
    pub fn type_name(&self) -> &'static str {
        self.value.type_str()
    }

    fn wrong_type(&self, expected: &str) {
        self.report(
            format!(
                "`{}` must be {expected}, found {}",
                self.path,
                self.type_name()
            ),
            format!("write {expected} here"),
        );
    }

    pub fn is_table(&self) -> bool {
        self.value.is_table()
    }

    /// The raw string, without reporting when it is not one.
    pub fn peek_str(&self) -> Option<&str> {
        self.value.as_str()
    }

    /// The value as text when it is a string, a boolean or a number; no report.
    pub fn scalar_text(&self) -> Option<String> {
        match self.value {
            DeValue::String(text) => Some(text.to_string()),
            DeValue::Boolean(flag) => Some(flag.to_string()),
            // Hex, octal and binary integers compare by their decimal value, as JSON sends it.
            DeValue::Integer(number) => {
                i64::from_str_radix(&number.as_str().replace('_', ""), number.radix())
                    .ok()
                    .map(|value| value.to_string())
            }
            DeValue::Float(number) => Some(number.as_str().to_string()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<Located<String>> {
        match self.value.as_str() {
            Some(text) => Some(Located::new(text.to_string(), self.location())),
            None => {
                self.wrong_type("a string");
                None
            }
        }
    }

    pub fn as_bool(&self) -> Option<Located<bool>> {
        match self.value.as_bool() {
            Some(flag) => Some(Located::new(flag, self.location())),
            None => {
                self.wrong_type("true or false");
                None
            }
        }
    }

    pub fn as_integer(&self) -> Option<Located<i64>> {
        let parsed = self.value.as_integer().and_then(|number| {
            i64::from_str_radix(&number.as_str().replace('_', ""), number.radix()).ok()
        });
        match parsed {
            Some(number) => Some(Located::new(number, self.location())),
            None => {
                self.wrong_type("an integer");
                None
            }
        }
    }

    pub fn as_table(&self) -> Option<Table<'r, 'i>> {
        match self.value.as_table() {
            Some(entries) => Some(Table {
                reader: self.reader,
                entries: Some(entries),
                location: self.location(),
                path: self.path.clone(),
                asked: RefCell::new(Vec::new()),
                takes_any_key: RefCell::new(false),
            }),
            None => {
                self.wrong_type("a table");
                None
            }
        }
    }

    pub fn as_array(&self) -> Option<Vec<Node<'r, 'i>>> {
        match self.value.as_array() {
            Some(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item): (usize, &Spanned<DeValue<'i>>)| Node {
                        reader: self.reader,
                        value: item.get_ref(),
                        span: item.span(),
                        // Entries are counted from 1, as an admin counts `[[...]]` blocks.
                        path: format!("{}#{}", self.path, index + 1),
                    })
                    .collect(),
            ),
            None => {
                self.wrong_type("an array");
                None
            }
        }
    }

    /// The items when the value is an array; no report otherwise.
    pub fn as_array_quiet(&self) -> Option<Vec<Node<'r, 'i>>> {
        if self.value.is_array() {
            self.as_array()
        } else {
            None
        }
    }

    /// A string or an array of strings, as a list.
    pub fn as_str_list(&self) -> Vec<Located<String>> {
        if self.value.is_str() {
            return self.as_str().into_iter().collect();
        }
        if !self.value.is_array() {
            self.wrong_type("a string or an array of strings");
            return Vec::new();
        }
        self.as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(Node::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, f: impl FnOnce(&Table<'_, '_>)) -> Vec<String> {
        let source = SourceFile::new("t.toml", text.to_string());
        let mut diagnostics = Diagnostics::default();
        read_document(&source, &mut diagnostics, f);
        diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_keys_are_reported_with_suggestions() {
        let found = read("[rule]\nstgae = \"x\"\n", |root| {
            let rule = root.table("rule");
            rule.str("stage");
            rule.finish();
        });
        assert_eq!(
            found,
            vec!["t.toml:2:1: unknown key `stgae` in [rule] — did you mean `stage`?"]
        );
    }

    #[test]
    fn wrong_types_and_syntax_errors_have_positions() {
        let found = read("rank = \"one\"\n", |root| {
            root.integer("rank");
        });
        assert_eq!(
            found,
            vec!["t.toml:1:8: `rank` must be an integer, found string — write an integer here"]
        );
        let found = read("a = \n", |_| {});
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("t.toml:1:"), "{found:?}");
        assert!(found[0].contains("invalid TOML"), "{found:?}");
    }
}
