//! The command line: one definition per subcommand and flag.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// wardlink: a hospital edge gateway. It takes HL7 v2 over MLLP, stores every
/// message durably in SQLite before acknowledging it, de-identifies it into
/// events and uploads them in signed batches to a collector.
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
    /// Try the whole flow on this machine, loopback only: start a collector
    /// (`wardlink-collector`, next to this executable), a gateway enrolled at
    /// it and simulated HL7 senders (ADT and ORU vitals); print where to look;
    /// stop everything on Ctrl-C.
    Demo {
        /// Keep the demo's files (configs, stores, keys) in this directory
        /// (created if missing) instead of a temporary one removed at exit.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Messages per second the simulated senders send, in total.
        #[arg(long, value_name = "N", default_value_t = 4.0)]
        rate: f64,
    },
    /// Create the gateway's signing key (<state_dir>/gateway.key, mode 0600)
    /// unless it exists, and print its public key, its gateway id and the
    /// `wardlink-collector enroll ...` command that enrols it at the collector.
    Keygen {
        /// The configuration whose state directory to use (default: the
        /// embedded default, ./wardlink-data).
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
    /// uploaded, the oldest pending message's age and the store's size; and
    /// the upload backlog, the last upload and the last error. Works while
    /// the daemon runs. Exits 1 when an alarm is raised (outbox quota
    /// reached, batches refused by the collector).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The configuration file whose state directory to read
        /// (default: the embedded default, ./wardlink-data).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Review de-identification before go-live: for each message in FILE...
    /// (MLLP-framed or plain HL7 files) print the events that would be
    /// uploaded and, per field, which rule acted on it. Prints no removed value.
    Deid {
        /// Print the de-identification profile (the per-field actions)
        /// instead: `hl7` (the default) or `dicom` (PS3.15 Annex E).
        #[arg(long, value_name = "KIND", num_args = 0..=1, default_missing_value = "hl7")]
        print_profile: Option<String>,
        /// The configuration whose site secret to use, so pseudonyms match the
        /// gateway's (default: the embedded default's state directory; a
        /// temporary key if there is none yet).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Files of HL7 v2 messages or DICOM Part 10 files (`.dcm`).
        #[arg(value_name = "FILE", required_unless_present = "print_profile")]
        files: Vec<PathBuf>,
    },
    /// Review messages held back by validation: list, show, release (run the
    /// pipeline again) or drop.
    Quarantine {
        /// What to do.
        #[command(subcommand)]
        action: QuarantineAction,
        /// The configuration whose store to use (default: the embedded default).
        #[arg(long, short, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Simulate equipment for tests and demos (see `simulate --help`).
    #[command(subcommand)]
    Simulate(crate::cli_tools::SimulateCommand),
    /// Show live what a configured equipment source decodes (MQTT: with a
    /// separate client and session), without storing anything; --raw adds
    /// the raw bytes in hex.
    Tap(crate::cli_tools::TapArgs),
    /// Hidden: write the manual pages or shell completions (for packaging).
    #[command(flatten)]
    CliDocs(crate::cli_docs::CliDocs),
}

/// Options of `wardlink simulate medibus`.
#[derive(Debug, clap::Args)]
pub struct SimulateMedibus {
    /// Serve on a new pseudo-terminal pair (the only transport).
    #[arg(long, required = true)]
    pub pty: bool,
    /// How many ventilators, each on its own pseudo-terminal.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u32,
    /// Also make a symbolic link at PATH to the (first) port, like a
    /// /dev/serial/by-id link; replaced if it exists, removed at exit.
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    /// The device name sent in the identification.
    #[arg(long, value_name = "NAME", default_value = "Evita 4")]
    pub name: String,
    /// Corrupt the checksum of every Nth answer (0 = never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub corrupt_every: u32,
    /// Cut every Nth answer off half-way (0 = never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub truncate_every: u32,
    /// Write each answer in two pieces 5 ms apart (frames split across reads).
    #[arg(long)]
    pub split_writes: bool,
    /// Stop answering after this many seconds ...
    #[arg(long, value_name = "SECS")]
    pub silent_after: Option<f64>,
    /// ... for this many seconds (default: for good).
    #[arg(long, value_name = "SECS", requires = "silent_after")]
    pub silent_for: Option<f64>,
}

/// Options of `wardlink simulate hl7`.
#[derive(Debug, clap::Args)]
pub struct SimulateHl7 {
    /// The MLLP listener to send to, e.g. 127.0.0.1:2575.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// What to send: vital signs (ORU^R01 from a monitor), admissions,
    /// transfers and discharges (ADT^A01/A02/A03), or a realistic mix.
    #[arg(long, value_enum, default_value_t = Hl7Mix::Mixed)]
    pub mix: Hl7Mix,
    /// Messages per second on each connection; 0 = as fast as the ACKs come.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Concurrent connections, each one sender.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,
    /// Stop after this many messages in total (0 = until Ctrl-C).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds to wait for each connect and each answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Do not print a line per message (the summary still goes to stderr).
    #[arg(long, short)]
    pub quiet: bool,
}

/// The messages `simulate hl7` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hl7Mix {
    /// ORU^R01 vital signs only.
    Vitals,
    /// ADT^A01/A02/A03 only.
    Adt,
    /// Mostly vitals, now and then an admission, transfer or discharge.
    Mixed,
}

/// `wardlink quarantine` actions.
#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// List quarantined messages with their reason.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one quarantined message: its reason and every issue.
    Show {
        /// The id from `list`.
        id: i64,
        /// Also print the raw message (it contains patient data).
        #[arg(long)]
        raw: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a quarantined message through the pipeline again (e.g. after a
    /// configuration change). If its issue is still fatal it returns here.
    Release {
        /// The id from `list`.
        id: i64,
    },
    /// Drop a quarantined message for good: its raw bytes are deleted; the
    /// counters keep it as `dropped`.
    Drop {
        /// The id from `list`.
        id: i64,
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
