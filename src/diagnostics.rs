//! Diagnostics for files that people edit by hand.
//!
//! Every problem crmsync finds in a config or mapping file becomes a [`Diagnostic`]: where it
//! is (`file:line:col`, an environment variable, or a built-in default), what is wrong, and how
//! to fix it. Checks collect diagnostics instead of stopping at the first one, so an admin sees
//! every problem in one run of `crmsync check`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A text file kept in memory with its line index, so byte offsets become `line:col`.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: Arc<str>,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// `name` is how the file is shown to the user (usually the path as given).
    pub fn new(name: impl Into<Arc<str>>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
        Self {
            name: name.into(),
            text,
            line_starts,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The location of a byte offset: 1-based line and 1-based column counted in characters.
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line_index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_index];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(1, |prefix| prefix.chars().count() + 1);
        Location::File {
            file: Arc::clone(&self.name),
            line: line_index as u32 + 1,
            column: column as u32,
        }
    }

    /// The location of the start of a span.
    pub fn span_location(&self, span: &Range<usize>) -> Location {
        self.location(span.start)
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        let index = (line as usize).checked_sub(1)?;
        let start = *self.line_starts.get(index)?;
        let end = self
            .line_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .map(|line| line.trim_end_matches(['\n', '\r']))
    }
}

/// Where a setting or a problem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    File {
        file: Arc<str>,
        line: u32,
        column: u32,
    },
    /// A value that came from an environment variable.
    Env { variable: String },
    /// A command-line argument, such as `--config`.
    Argument { name: String },
    /// A value nobody wrote: crmsync's built-in default.
    Default,
}

impl Location {
    pub fn env(variable: impl Into<String>) -> Self {
        Location::Env {
            variable: variable.into(),
        }
    }

    /// A location at the start of a whole file (problems that have no better place).
    pub fn file_start(file: &str) -> Self {
        Location::File {
            file: file.into(),
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            Location::Env { variable } => write!(f, "env {variable}"),
            Location::Argument { name } => write!(f, "argument {name}"),
            Location::Default => f.write_str("built-in default"),
        }
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub location: Location,
}

impl<T> Located<T> {
    pub fn new(value: T, location: Location) -> Self {
        Self { value, location }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Located<U> {
        Located {
            value: f(self.value),
            location: self.location,
        }
    }
}

/// One problem: where, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " — {help}")?;
        }
        Ok(())
    }
}

/// Diagnostics collected by a check, in the order they were found.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn error(
        &mut self,
        location: Location,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.items
            .push(Diagnostic::new(location, message).with_help(help));
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }

    /// Sorts by file, line and column so output follows the files top to bottom.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| sort_key(&a.location).cmp(&sort_key(&b.location)));
    }
}

fn sort_key(location: &Location) -> (u8, &str, u32, u32) {
    match location {
        Location::File { file, line, column } => (0, file, *line, *column),
        Location::Env { variable } => (1, variable.as_str(), 0, 0),
        Location::Argument { name } => (2, name.as_str(), 0, 0),
        Location::Default => (3, "", 0, 0),
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.items {
            writeln!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Renders a diagnostic with the offending source line and a caret under the column.
pub fn render_with_source(diagnostic: &Diagnostic, sources: &[SourceFile]) -> String {
    let mut out = diagnostic.to_string();
    if let Location::File { file, line, column } = &diagnostic.location
        && let Some(source) = sources.iter().find(|s| s.name() == &**file)
        && let Some(raw) = source.line_text(*line)
    {
        // Excerpts come from files that may (wrongly) hold secrets: never echo them. The caret
        // goes under the same place of the masked line.
        let text = crate::secret::mask_line(raw);
        let raw_prefix: String = raw
            .chars()
            .take((*column as usize).saturating_sub(1))
            .collect();
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        let caret_pad: String = crate::secret::mask_line(&raw_prefix)
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!(
            "\n {pad} |\n {gutter} | {text}\n {pad} | {caret_pad}^"
        ));
    }
    out
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&word_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, candidate)| {
            let allowed = (word.chars().count().max(candidate.chars().count()) / 3).max(1);
            *distance <= allowed
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance over characters, counting a swap of two neighbours as one edit (typos such as
/// `stgae` for `stage` are one edit away).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        table[i * width] = i;
    }
    for (j, cell) in table.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

/// Formats a list of names as `a, b, c` for help texts.
pub fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    names
        .into_iter()
        .map(|name| name.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_character_column() {
        let source = SourceFile::new("f.toml", "a = 1\nbé = \"x\"\n".to_string());
        assert_eq!(source.location(0).to_string(), "f.toml:1:1");
        // 'é' is two bytes but one column.
        // Line 2 starts at byte 6; `=` follows "bé " (4 bytes), so it is at byte 10, column 4.
        assert_eq!(source.location(10).to_string(), "f.toml:2:4");
        assert_eq!(source.line_text(2), Some("bé = \"x\""));
    }

    #[test]
    fn suggestions_pick_close_names_only() {
        assert_eq!(
            did_you_mean("stgae", ["stage", "map", "when"]),
            Some("stage")
        );
        assert_eq!(did_you_mean("xyz", ["stage", "map"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("stgae", "stage"), 1);
    }
}
