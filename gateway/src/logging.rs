//! Logging: `tracing` events with structured fields, to stderr.
//!
//! The level comes from `log.level` in the config; `RUST_LOG` overrides it
//! (e.g. `RUST_LOG=wardlink_devices=debug`). Colours only on a terminal.
//! Message content (PHI) is never logged at info level or above.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call more than once (later calls
/// are ignored).
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
