//! The command line: one definition per subcommand and flag.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// wardlink: a hospital edge gateway. It takes HL7 v2 over MLLP, stores every
/// message durably in SQLite before acknowledging it, and reports what it holds.
#[derive(Debug, Parser)]
#[command(name = "wardlink", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon (the embedded default config without --config:
    /// an MLLP listener on 127.0.0.1:2575, state in ./wardlink-data).
    Run {
        /// The configuration file (e.g. /etc/wardlink/wardlink.toml).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and list every problem with its line and key.
    /// Exits 0 when it is valid, 1 when it is not.
    CheckConfig {
        /// The configuration file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the commented default configuration (a starting point for
    /// /etc/wardlink/wardlink.toml).
    PrintDefaultConfig,
    /// Show what the store holds, in total and per source: received,
    /// acknowledged, rejected, duplicates, quarantined, pending upload,
    /// uploaded, the oldest pending message's age and the store's size.
    /// Works while the daemon runs.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The configuration file whose state directory to read
        /// (default: the embedded default, ./wardlink-data).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
