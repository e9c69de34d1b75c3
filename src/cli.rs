//! The command line: every subcommand and its flags (clap definitions only; `main.rs` runs
//! them).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// crmsync keeps HubSpot and Salesforce speaking one language about where every lead stands.
#[derive(Debug, Parser)]
#[command(name = "crmsync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and mapping files offline; print every problem as file:line:col.
    ///
    /// Exit status 0 when everything is valid, 1 when any problem was found.
    Check {
        /// The config file (default: $CRMSYNC_CONFIG, else ./crmsync.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}
