//! Logging: `tracing` events with structured fields, to the systemd journal
//! when the service runs under systemd, to stderr otherwise.
//!
//! The journal is used when systemd connected stderr to it (`JOURNAL_STREAM`
//! names stderr's device and inode, `systemd.exec(5)`) and the journal's
//! socket accepts the connection; `WARDLINK_LOG=journal` forces it and
//! `WARDLINK_LOG=stderr` turns it off. In the journal every field is its own
//! journal field, uppercase and without prefix: `SOURCE`, `DEVICE` (the
//! peer or port), `CONTROL_ID` (hashed, see `wardlink_devices::logid`),
//! `ERROR`, ...; the level becomes `PRIORITY` (error 3, warn 4, info 5,
//! debug 6, trace 7) and `SYSLOG_IDENTIFIER` is `wardlink`. So
//! `journalctl -u wardlink SOURCE=lab PRIORITY=4` finds one source's
//! warnings.
//!
//! The level comes from `log.level` in the config; `RUST_LOG` overrides it
//! (e.g. `RUST_LOG=wardlink_devices=debug`). Colours only on a terminal.
//! No PHI at info level or above: message content, quarantine reasons'
//! text and control ids in clear appear at debug level at most.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Where the logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The systemd journal, with structured fields.
    Journal,
    /// stderr, as text.
    Stderr,
}

/// Swaps the level filter of the installed subscriber.
type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// The installed subscriber's filter, when `init` installed one.
static FILTER: OnceLock<FilterHandle> = OnceLock::new();
/// Where the installed subscriber writes.
static TARGET: OnceLock<Target> = OnceLock::new();

/// Install the global subscriber at `level`; a later call changes the level
/// (the daemon logs at info until its config is read, then at `log.level`;
/// a reload applies a changed `log.level`). `RUST_LOG`, when set, wins over
/// every `level`. Returns where the logs go.
pub fn init(level: &str) -> Target {
    if let Some(target) = TARGET.get() {
        set_level(level);
        return *target;
    }
    // Made once: each `layer()` probes the journal's socket with a datagram.
    let journal = if journal_wanted() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let (target, installed) = match journal {
        Some(layer) => (
            Target::Journal,
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    layer
                        .with_field_prefix(None)
                        .with_syslog_identifier("wardlink".into()),
                )
                .try_init(),
        ),
        None => (
            Target::Stderr,
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_target(false),
                )
                .try_init(),
        ),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
        let _ = TARGET.set(target);
    }
    target
}

/// Change the level of the installed subscriber (no-op when `RUST_LOG` is
/// set, or when no subscriber was installed here).
pub fn set_level(level: &str) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        let _ = handle.modify(|f| *f = filter_for(level));
    }
}

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level))
}

/// Whether to log to the journal: forced by `WARDLINK_LOG`, else when
/// stderr is the journal stream systemd set up.
fn journal_wanted() -> bool {
    match std::env::var("WARDLINK_LOG").as_deref() {
        Ok("journal") => return true,
        Ok("stderr") => return false,
        _ => {}
    }
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    stderr_is(&stream)
}

/// Does `dev:inode` (the `JOURNAL_STREAM` format) name stderr?
fn stderr_is(stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .map(|m| m.dev() == dev && m.ino() == ino)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is("nonsense"));
        assert!(!stderr_is("0:0"));
    }
}
