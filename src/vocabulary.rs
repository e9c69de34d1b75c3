//! The shared lead-stage vocabulary.
//!
//! The vocabulary is data, read from `mappings/vocabulary.toml`: an ordered list of stages
//! (by `rank`), each in a category, plus side states such as "disqualified" and "recycled"
//! that sit outside the funnel order. No stage name is written in code; everything refers to
//! stages through [`StageId`]s handed out by a loaded [`Vocabulary`].

use std::collections::HashMap;
use std::fmt;

use crate::diagnostics::{Diagnostic, Diagnostics, Located, SourceFile, did_you_mean, list};
use crate::tomldoc::{Table, read_document};

/// A stage of a loaded vocabulary; an index, cheap to copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(u16);

impl StageId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Which team owns a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Marketing,
    Sales,
    Closed,
}

impl Category {
    const NAMES: [&'static str; 3] = ["marketing", "sales", "closed"];

    fn parse(name: &str) -> Option<Self> {
        match name {
            "marketing" => Some(Category::Marketing),
            "sales" => Some(Category::Sales),
            "closed" => Some(Category::Closed),
            _ => None,
        }
    }
}

/// One stage as the vocabulary file defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Lowercase identifier (`[a-z][a-z0-9_]*`); also the suffix of warehouse columns.
    pub id: String,
    pub label: String,
    /// Position in the funnel; `None` for side states.
    pub rank: Option<u32>,
    pub category: Category,
    /// Outside the funnel order (e.g. disqualified, recycled).
    pub side_state: bool,
    /// A stage a lead does not normally leave.
    pub terminal: bool,
}

/// The loaded vocabulary.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    stages: Vec<Stage>,
    by_id: HashMap<String, StageId>,
    /// False when the file could not be parsed: stage names are then not judged, since every
    /// one would look unknown.
    parsed: bool,
}

impl Vocabulary {
    /// Reads `vocabulary.toml`. Problems are added to `diagnostics`; the stages that were valid
    /// are still returned so later checks can run.
    pub fn parse(source: &SourceFile, diagnostics: &mut Diagnostics) -> Vocabulary {
        read_document(source, diagnostics, read_vocabulary).unwrap_or_else(|| Vocabulary {
            parsed: false,
            ..Vocabulary::empty()
        })
    }

    fn empty() -> Vocabulary {
        Vocabulary {
            stages: Vec::new(),
            by_id: HashMap::new(),
            parsed: true,
        }
    }

    pub fn lookup(&self, id: &str) -> Option<StageId> {
        self.by_id.get(id).copied()
    }

    pub fn stage(&self, id: StageId) -> &Stage {
        &self.stages[id.index()]
    }

    pub fn id_of(&self, id: StageId) -> &str {
        &self.stages[id.index()].id
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Every stage in file order.
    pub fn stages(&self) -> impl Iterator<Item = (StageId, &Stage)> {
        self.stages
            .iter()
            .enumerate()
            .map(|(index, stage)| (StageId(index as u16), stage))
    }

    /// The help text for an unknown stage name: a suggestion and the list of known stages.
    pub fn unknown_stage_help(&self, name: &str) -> String {
        let known = list(self.stages.iter().map(|stage| stage.id.as_str()));
        match did_you_mean(name, self.stages.iter().map(|stage| stage.id.as_str())) {
            Some(suggestion) => format!("did you mean \"{suggestion}\"? known stages: {known}"),
            None => format!("known stages: {known} (vocabulary.toml)"),
        }
    }

    /// Resolves a stage name written in a file, reporting an unknown one at its location.
    pub fn resolve(
        &self,
        name: &Located<String>,
        diagnostics: &mut Diagnostics,
    ) -> Option<StageId> {
        let found = self.lookup(&name.value);
        if found.is_none() && self.parsed {
            diagnostics.error(
                name.location.clone(),
                format!("unknown stage \"{}\"", name.value),
                self.unknown_stage_help(&name.value),
            );
        }
        found
    }
}

impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&list(self.stages.iter().map(|stage| stage.id.as_str())))
    }
}

fn is_valid_stage_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && id.len() <= 40
}

fn read_vocabulary(root: &Table<'_, '_>) -> Vocabulary {
    let mut vocabulary = Vocabulary::empty();
    let mut ranks: HashMap<u32, String> = HashMap::new();
    let nodes = root.array("stage");
    if nodes.is_empty() {
        root.missing(
            "stage",
            "define the shared stages as [[stage]] tables with id, label, rank and category",
        );
    }
    for node in nodes {
        let Some(table) = node.as_table() else {
            continue;
        };
        let id = table.required_str("id", "give every stage an `id` such as \"mql\"");
        let label = table.required_str("label", "give every stage a human `label`");
        let rank = table.integer("rank");
        let category = table.required_str(
            "category",
            "set `category` to one of: marketing, sales, closed",
        );
        let side_state = table.bool("side_state").is_some_and(|flag| flag.value);
        let terminal = table.bool("terminal").is_some_and(|flag| flag.value);
        table.finish();

        let category = category.and_then(|name| {
            let parsed = Category::parse(&name.value);
            if parsed.is_none() {
                let help = match did_you_mean(&name.value, Category::NAMES) {
                    Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                    None => format!("use one of: {}", list(Category::NAMES)),
                };
                table.report(
                    Diagnostic::new(
                        name.location.clone(),
                        format!("unknown category \"{}\"", name.value),
                    )
                    .with_help(help),
                );
            }
            parsed
        });
        let rank = match (rank, side_state) {
            (Some(rank), true) => {
                table.report(
                    Diagnostic::new(rank.location, "a side state has no rank").with_help(
                        "side states sit outside the funnel order; remove `rank` or `side_state`",
                    ),
                );
                None
            }
            (None, false) => {
                // A rank of the wrong type was reported where it was read.
                if id.is_some() && !table.contains("rank") {
                    table.missing("rank", "funnel stages need a `rank` (higher = further along); side states need `side_state = true`");
                }
                None
            }
            (Some(rank), false) => match u32::try_from(rank.value) {
                Ok(value) => {
                    if let Some(other) = ranks.get(&value) {
                        table.report(
                            Diagnostic::new(
                                rank.location.clone(),
                                format!("rank {value} is already used by stage \"{other}\""),
                            )
                            .with_help("give every funnel stage its own rank"),
                        );
                    }
                    Some(value)
                }
                Err(_) => {
                    table.report(
                        Diagnostic::new(
                            rank.location,
                            format!("rank must be zero or positive, found {}", rank.value),
                        )
                        .with_help("use a positive integer"),
                    );
                    None
                }
            },
            (None, true) => None,
        };

        // A stage with a bad label or category was reported above; keep it so that mapping
        // files naming it do not report it again as unknown.
        let Some(id) = id else {
            continue;
        };
        let label = label.map_or_else(|| id.value.clone(), |label| label.value);
        let category = category.unwrap_or(Category::Marketing);
        // An invalid id is reported but kept, so mapping files naming it are not reported too.
        if !is_valid_stage_id(&id.value) {
            table.report(
                Diagnostic::new(id.location.clone(), format!("invalid stage id \"{}\"", id.value))
                    .with_help("stage ids are lowercase letters, digits and `_`, starting with a letter, at most 40 characters (they name warehouse columns)"),
            );
        }
        if vocabulary.by_id.contains_key(&id.value) {
            table.report(
                Diagnostic::new(
                    id.location.clone(),
                    format!("stage \"{}\" is defined twice", id.value),
                )
                .with_help("remove or rename one of the two definitions"),
            );
            continue;
        }
        if let Some(rank) = rank {
            ranks.insert(rank, id.value.clone());
        }
        let stage_id = StageId(vocabulary.stages.len() as u16);
        vocabulary.by_id.insert(id.value.clone(), stage_id);
        // An invalid id was reported; its lowercase form also finds it, so mapping files that
        // already use the intended id are not reported as well.
        let lowercase = id.value.to_lowercase();
        if lowercase != id.value && !vocabulary.by_id.contains_key(&lowercase) {
            vocabulary.by_id.insert(lowercase, stage_id);
        }
        vocabulary.stages.push(Stage {
            id: id.value,
            label,
            rank,
            category,
            side_state,
            terminal,
        });
    }
    vocabulary
}
