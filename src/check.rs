//! `crmsync check`: offline validation of the config and the mapping files.
//!
//! It reads everything a sync would read before touching an API, reports every problem at once
//! as `file:line:col: what is wrong — how to fix`, and cross-checks the files against each
//! other: every synced object has a mapping, every written-back field has a reverse mapping,
//! every stage named in the config exists in the vocabulary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, EnvVars, StagePolicy};
use crate::diagnostics::{Diagnostic, Diagnostics, Location, SourceFile, did_you_mean, list};
use crate::mapping::{self, Compilation, Mapper, MappingSources};
use crate::record::System;

/// What a check found.
#[derive(Debug)]
pub struct CheckReport {
    pub config_file: Option<PathBuf>,
    pub diagnostics: Diagnostics,
    /// The files read, for showing source lines under diagnostics.
    pub sources: Vec<SourceFile>,
    /// The compiled mappings (complete only when there are no diagnostics).
    pub mapper: Option<Mapper>,
    pub config: Option<Config>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// A short description of what was checked, for the success message.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        match &self.config_file {
            Some(path) => lines.push(format!("config: {}", path.display())),
            None => {
                lines.push("config: none (built-in defaults and CRMSYNC_* variables)".to_string())
            }
        }
        if let Some(mapper) = &self.mapper {
            let vocabulary = mapper.vocabulary();
            lines.push(format!(
                "vocabulary: {} stages ({vocabulary})",
                vocabulary.len()
            ));
            for object in mapper.objects() {
                lines.push(format!(
                    "{}.{}: {} stage rules, {} fields, write-back of {} stages and {} fields",
                    object.system,
                    object.object,
                    object.rules.len(),
                    object.fields.len(),
                    object.reverse.stages.len(),
                    object.reverse.fields.len()
                ));
            }
        }
        lines.join("\n")
    }
}

/// Runs every offline check.
pub fn run(config_flag: Option<&Path>, env: &EnvVars) -> CheckReport {
    let mut diagnostics = Diagnostics::default();
    let mut sources = Vec::new();
    let config_file = config::config_path(config_flag, env);
    let config = match config::load(config_file.as_deref(), env) {
        Ok((config, found, source)) => {
            diagnostics.extend(found);
            sources.extend(source);
            Some(config)
        }
        Err(error) => {
            // The message already says how to fix it.
            let location = if config_flag.is_some() {
                Location::Argument {
                    name: "--config".to_string(),
                }
            } else {
                Location::env(config::CONFIG_ENV)
            };
            diagnostics.push(Diagnostic::new(location, error.to_string()));
            None
        }
    };
    let mut mapper = None;
    if let Some(config) = &config {
        match MappingSources::read_dir(&config.mappings_dir.value) {
            Ok(mapping_sources) => {
                let compilation = mapping::compile(&mapping_sources);
                diagnostics.extend(compilation.diagnostics.clone());
                sources.extend(mapping_sources.files());
                if config.parsed {
                    cross_check(config, &mapping_sources, &compilation, &mut diagnostics);
                }
                mapper = Some(compilation.mapper);
            }
            // The message already says how to fix it.
            Err(error) => diagnostics.push(Diagnostic::new(
                config.mappings_dir.location.clone(),
                error.to_string(),
            )),
        }
    }
    diagnostics.sort();
    CheckReport {
        config_file,
        diagnostics,
        sources,
        mapper,
        config,
    }
}

fn objects_of(config: &Config, system: System) -> (bool, &[crate::diagnostics::Located<String>]) {
    match system {
        System::Hubspot => (config.hubspot.enabled, &config.hubspot.objects),
        System::Salesforce => (config.salesforce.enabled, &config.salesforce.objects),
    }
}

fn cross_check(
    config: &Config,
    sources: &MappingSources,
    compilation: &Compilation,
    diagnostics: &mut Diagnostics,
) {
    let mapper = &compilation.mapper;
    let mapping_dir = config.mappings_dir.value.display().to_string();
    for system in System::ALL {
        let (enabled, objects) = objects_of(config, system);
        if !enabled {
            let target = config.write_back.target(system);
            if target.enabled.value {
                diagnostics.error(
                    target.enabled.location.clone(),
                    format!("write-back to {system} is on, but {system} is disabled"),
                    format!(
                        "set [{system}] enabled = true, or [write_back.{system}] enabled = false"
                    ),
                );
            }
            continue;
        }
        let has_file = sources.systems.iter().any(|(s, _)| *s == system);
        if !has_file {
            diagnostics.error(
                config.mappings_dir.location.clone(),
                format!(
                    "{system} is enabled but {mapping_dir}/{} does not exist",
                    mapping::system_file(system)
                ),
                format!("add the mapping file, or set [{system}] enabled = false"),
            );
            continue;
        }
        // A file that did not parse was reported; its objects cannot be judged.
        let Some((_, declared)) = compilation
            .declared_objects
            .iter()
            .find(|(s, _)| *s == system)
        else {
            continue;
        };
        let mapped: Vec<&str> = declared.iter().map(String::as_str).collect();
        for object in objects {
            if !mapped.contains(&object.value.as_str()) {
                let help = match did_you_mean(&object.value, mapped.iter().copied()) {
                    Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                    None => format!(
                        "add [objects.{}] to {mapping_dir}/{} (mapped now: {})",
                        object.value,
                        mapping::system_file(system),
                        list(&mapped)
                    ),
                };
                diagnostics.error(
                    object.location.clone(),
                    format!(
                        "{system} object \"{}\" is synced but has no mapping",
                        object.value
                    ),
                    help,
                );
            }
        }
        check_write_back(config, system, objects, mapper, diagnostics);
    }
    if let StagePolicy::Owners {
        marketing_owns_until,
    } = &config.reconcile.stage_policy
    {
        let vocabulary = mapper.vocabulary();
        match vocabulary.lookup(&marketing_owns_until.value) {
            Some(stage) if vocabulary.stage(stage).side_state => diagnostics.error(
                marketing_owns_until.location.clone(),
                format!(
                    "`marketing_owns_until` names the side state \"{}\"",
                    marketing_owns_until.value
                ),
                "name a funnel stage (one with a rank), e.g. \"mql\"",
            ),
            Some(_) => {}
            None => diagnostics.error(
                marketing_owns_until.location.clone(),
                format!("unknown stage \"{}\"", marketing_owns_until.value),
                vocabulary.unknown_stage_help(&marketing_owns_until.value),
            ),
        }
    }
    let canonical: BTreeSet<&str> = mapper
        .objects()
        .into_iter()
        .flat_map(|object| object.fields.iter().map(|field| &*field.name))
        .collect();
    for (field, source) in &config.reconcile.field_sources {
        if !canonical.contains(field.as_str()) {
            let help = match did_you_mean(field, canonical.iter().copied()) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!("canonical fields: {}", list(&canonical)),
            };
            diagnostics.error(
                source.location.clone(),
                format!("[reconcile.field_sources] names `{field}`, which no mapping defines"),
                help,
            );
        }
    }
}

fn check_write_back(
    config: &Config,
    system: System,
    objects: &[crate::diagnostics::Located<String>],
    mapper: &Mapper,
    diagnostics: &mut Diagnostics,
) {
    let target = config.write_back.target(system);
    if !target.enabled.value {
        return;
    }
    if !objects
        .iter()
        .any(|object| object.value == target.object.value)
    {
        diagnostics.error(
            target.object.location.clone(),
            format!(
                "write-back object \"{}\" is not synced from {system}",
                target.object.value
            ),
            format!(
                "add it to [{system}] objects, or write back to one of: {}",
                list(objects.iter().map(|o| o.value.as_str()))
            ),
        );
        return;
    }
    let Some(mapping) = mapper.object(system, &target.object.value) else {
        return;
    };
    if target.stage && mapping.reverse.stages.is_empty() {
        diagnostics.error(
            target.object.location.clone(),
            format!("write-back of the stage to {system} \"{}\" is on, but its mapping has no reverse stages", target.object.value),
            format!("add [objects.{}.reverse.stages], or set stage = false", target.object.value),
        );
    }
    for field in &target.fields {
        if !mapping
            .reverse
            .fields
            .iter()
            .any(|(name, _, _)| *name == field.value)
        {
            let reversible: Vec<&str> = mapping
                .reverse
                .fields
                .iter()
                .map(|(name, _, _)| name.as_str())
                .collect();
            let help = match did_you_mean(&field.value, reversible.iter().copied()) {
                Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                None => format!(
                    "add it under [objects.{}.reverse.fields] (reversible now: {})",
                    target.object.value,
                    list(&reversible)
                ),
            };
            diagnostics.error(
                field.location.clone(),
                format!(
                    "write-back field \"{}\" has no reverse mapping on {system} \"{}\"",
                    field.value, target.object.value
                ),
                help,
            );
        }
    }
}
