//! Mapping files: from each CRM's own values to the shared vocabulary and back.
//!
//! A mappings directory holds `vocabulary.toml` (the shared stages), `hubspot.toml` and
//! `salesforce.toml` (per object: ordered stage rules, field maps with transforms, and the
//! reverse mapping for write-back). [`compile`] turns their text into a pure [`Mapper`] and a
//! list of diagnostics; [`MappingSources::read_dir`] is the only place that touches the disk.

mod compile;
mod mapper;
pub mod transform;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use mapper::{
    Condition, FieldMap, FieldProblem, FieldSource, Mapper, NormalizeError, Normalized, ObjectKind,
    ObjectMapping, ReverseMapping, RuleAction, RuleMatch, StageOutcome, StageRule, StageWrite,
    UnknownValue, UnknownValuePolicy, ValueLookup,
};

use crate::diagnostics::{Diagnostics, SourceFile};
use crate::record::System;
use crate::vocabulary::Vocabulary;

/// The file that defines the shared stages.
pub const VOCABULARY_FILE: &str = "vocabulary.toml";

/// The mapping file of one system.
pub fn system_file(system: System) -> String {
    format!("{}.toml", system.as_str())
}

/// Problems loading mappings.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error(
        "cannot read {path}: {source} — check that the mappings directory exists and is readable (set [mappings] dir or CRMSYNC_MAPPINGS_DIR)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the mapping files have {count} problem(s); run `crmsync check` to see them:\n{report}"
    )]
    Invalid { count: usize, report: String },
}

/// The text of a mappings directory.
#[derive(Debug, Clone)]
pub struct MappingSources {
    pub vocabulary: SourceFile,
    /// Mapping files of the systems that have one.
    pub systems: Vec<(System, SourceFile)>,
}

impl MappingSources {
    /// Reads `vocabulary.toml` and the system files that exist in `dir`.
    pub fn read_dir(dir: &Path) -> Result<Self, MappingError> {
        let vocabulary = read_source(&dir.join(VOCABULARY_FILE))?;
        let mut systems = Vec::new();
        for system in System::ALL {
            let path = dir.join(system_file(system));
            if path.exists() {
                systems.push((system, read_source(&path)?));
            }
        }
        Ok(Self {
            vocabulary,
            systems,
        })
    }

    /// Every source file, for rendering diagnostics with their lines.
    pub fn files(&self) -> Vec<SourceFile> {
        std::iter::once(self.vocabulary.clone())
            .chain(self.systems.iter().map(|(_, source)| source.clone()))
            .collect()
    }
}

fn read_source(path: &Path) -> Result<SourceFile, MappingError> {
    let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// The result of compiling a mappings directory.
#[derive(Debug)]
pub struct Compilation {
    /// Every object that compiled; safe to use only when `diagnostics` is empty.
    pub mapper: Mapper,
    pub diagnostics: Diagnostics,
    /// Per system whose file parsed: every object name it declares, compiled or not.
    pub declared_objects: Vec<(System, Vec<String>)>,
}

/// Compiles vocabulary and mapping files, collecting every problem.
pub fn compile(sources: &MappingSources) -> Compilation {
    let mut diagnostics = Diagnostics::default();
    let vocabulary = Vocabulary::parse(&sources.vocabulary, &mut diagnostics);
    let mut objects = Vec::new();
    let mut declared_objects = Vec::new();
    for (system, source) in &sources.systems {
        let before = diagnostics.len();
        let Some(file) = compile::compile_file(*system, source, &vocabulary, &mut diagnostics)
        else {
            continue;
        };
        // Round trips are judged only on rules that compiled cleanly; otherwise a dropped rule
        // or entry would be reported a second time as a broken round trip.
        let file_is_clean = diagnostics.len() == before;
        for object in &file.objects {
            validate::validate_object(
                object,
                &vocabulary,
                file.declared_fields_of(&object.object),
                file_is_clean,
                &mut diagnostics,
            );
        }
        declared_objects.push((*system, file.declared_objects));
        objects.extend(file.objects);
    }
    diagnostics.sort();
    Compilation {
        mapper: Mapper::new(Arc::new(vocabulary), objects),
        diagnostics,
        declared_objects,
    }
}

/// Reads and compiles a mappings directory, failing on any problem.
pub fn load_dir(dir: &Path) -> Result<Mapper, MappingError> {
    let sources = MappingSources::read_dir(dir)?;
    let compilation = compile(&sources);
    if compilation.diagnostics.is_empty() {
        Ok(compilation.mapper)
    } else {
        Err(MappingError::Invalid {
            count: compilation.diagnostics.len(),
            report: compilation.diagnostics.to_string(),
        })
    }
}
