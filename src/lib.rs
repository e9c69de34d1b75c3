//! crmsync keeps HubSpot and Salesforce speaking one language about where every lead stands.
//!
//! The crate is laid out along the data flow of a sync run:
//!
//! - [`config`]: `crmsync.toml` and its `CRMSYNC_*` environment overrides; secrets only by
//!   reference.
//! - [`record`]: what connectors read ([`record::SourceRecord`]).
//! - [`vocabulary`] and [`mapping`]: the shared stages and the mapping files that normalize
//!   each CRM's values into them (and back, for write-back), compiled into a pure
//!   [`mapping::Mapper`].
//! - [`store`]: the warehouse and run state (SQLite by default), with versioned migrations.
//! - [`check`]: the offline validation behind `crmsync check`; [`discover`]: the live
//!   picklists and pipelines against the mappings (`crmsync discover`).
//! - [`emulator`]: HubSpot and Salesforce stand-ins for tests, the demo and benchmarks.
//! - [`diagnostics`] and [`tomldoc`]: `file:line:col` problems for hand-edited files.
#![deny(unsafe_code)]

pub mod check;
pub mod config;
pub mod demo;
pub mod diagnostics;
pub mod discover;
pub mod emulator;
pub mod engine;
pub mod http;
pub mod hubspot;
pub mod mapping;
pub mod record;
pub mod salesforce;
pub mod secret;
pub mod serve;
pub mod store;
pub mod tomldoc;
pub mod vocabulary;
