//! wardlink's configuration: the TOML schema, the embedded default and
//! validation that reports every problem at once, each with its line and key.
//!
//! # Layout
//!
//! Two stages, as in ripgrep's `lowargs` → `hiargs`. `raw` is the file's
//! shape in serde structs (strict: unknown keys are errors, one key casing,
//! a named default per key, self-checking leaf types); `parse` turns text
//! into it, reporting TOML syntax errors, unknown keys and wrong types.
//! `validate` turns it into the validated [`Config`] of `model` — ranges,
//! names, networks, and conflicts between sources — which is the only type the
//! daemon sees. `report` collects the problems (byte spans → lines) and
//! `error` defines what callers get back. [`defaults`] holds every key's
//! default once; `default.toml` ([`DEFAULT_TOML`]) is the commented example
//! that says the same, and a test keeps the two equal. Only [`load_file`]
//! touches the file system.
//!
//! # Messages
//!
//! Every problem is one line, `FILE:LINE: KEY: what is wrong; how to fix`,
//! where KEY is the dotted path (`source.mllp[1].listen`, array indexes
//! 0-based in file order) and LINE is 1-based:
//!
//! ```text
//! /etc/wardlink/wardlink.toml:14: source.mllp[1].max_connections: 0 is less than the minimum of 1; write a whole number from 1 to 10000, e.g. 64
//! ```
//!
//! # Extending
//!
//! A new section is a field of `RawConfig` with its raw struct, a validated
//! struct in `model`, a check in `validate`, its keys in `default.toml`, and a
//! call in `parse::remove_unknown_keys`. A new source kind is a field of
//! `RawSources` and `Sources` (its tables' keys checked in
//! `parse::remove_unknown_keys`); it registers its name and its exclusive
//! resources (a `Resource` variant) with the same `Claims`, so uniqueness and
//! conflicts hold across all kinds.

#![deny(missing_docs)]

mod admin;
pub mod defaults;
pub mod dicom;
mod error;
mod model;
mod parse;
mod raw;
mod report;
mod serial;
mod tls;
mod validate;

use std::io::Read;
use std::path::Path;

pub use admin::AdminConfig;
pub use dicom::{DicomDeidConfig, DicomSource, KeepFiles};
pub use error::{ConfigError, Problem};
pub use model::{
    ClientCert, CollectorTarget, Config, DatePolicyConfig, DeidConfig, FieldOverrideConfig,
    GatewayConfig, LogConfig, LogLevel, MllpSource, OverrideAction, PseudonymScope, Sources,
    StoreConfig, SyncConfig, ValidateConfig,
};
pub use serial::{
    DataBits, FlowControl, LinesFormat, Parity, SerialField, SerialMapping, SerialProtocol,
    SerialSource, StopBits,
};

pub use tls::MllpTls;
pub use validate::mqtt::{
    Capture, MqttBroker, MqttPayload, MqttSource, MqttTopic, MqttValue, TopicLevel,
};

/// The embedded default configuration, with a comment for every key. It is
/// also the example config: `wardlink print-default-config` prints it.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The name [`embedded_default`] uses for [`DEFAULT_TOML`] in messages.
pub const DEFAULT_ORIGIN: &str = "<embedded default.toml>";

/// Files larger than this are not config files (a wrong path, e.g. a device).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A configuration loaded from a file, with what the daemon should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Things that are allowed but probably wrong, one sentence each starting
    /// with the file name (no `warning:` prefix), e.g. a world-writable file
    /// or no sources at all.
    pub warnings: Vec<String>,
}

/// Parses and validates TOML text. `origin` names the text in messages
/// (normally the file path).
///
/// # Errors
/// [`ConfigError::Invalid`] with every problem found: TOML syntax, unknown
/// keys, wrong types, values out of range, duplicate names, conflicting
/// listen addresses.
pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut report = report::Report::new(text);
    let config = parse::parse(text, &mut report).map(|raw| validate::validate(&raw, &mut report));
    report.finish(origin, config)
}

/// The configuration of [`DEFAULT_TOML`]: one MLLP listener named `mllp` on
/// `127.0.0.1:2575`, everything else at its default.
///
/// # Errors
/// None in practice: a test proves the embedded text is valid. The `Result`
/// only avoids a panic path.
pub fn embedded_default() -> Result<Config, ConfigError> {
    from_toml_str(DEFAULT_TOML, DEFAULT_ORIGIN)
}

/// Reads, parses and validates a config file. Never falls back to defaults.
///
/// # Errors
/// [`ConfigError::Unreadable`] if the file cannot be read (missing, no
/// permission, a directory); [`ConfigError::Invalid`] for every problem in its
/// content, including content that is not UTF-8 or is implausibly large.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let origin = path.display().to_string();
    let unreadable = |error| ConfigError::Unreadable {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::Invalid {
            origin,
            problems: vec![Problem {
                line: None,
                key: String::new(),
                message: format!("the file is larger than {MAX_FILE_BYTES} bytes"),
                fix: "check the path: this is not a wardlink config file".to_owned(),
            }],
        });
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let bad = e.utf8_error().valid_up_to();
            return Err(ConfigError::Invalid {
                problems: vec![Problem {
                    line: Some(report::line_of(e.as_bytes(), bad)),
                    key: String::new(),
                    message: "the file is not UTF-8 text".to_owned(),
                    fix: "save the file as UTF-8".to_owned(),
                }],
                origin,
            });
        }
    };
    let config = from_toml_str(&text, &origin)?;
    let mut warnings = Vec::new();
    if is_world_writable(&metadata) {
        warnings.push(format!(
            "{origin}: the config file is writable by every user, who could change where wardlink \
             listens and stores data; run `chmod o-w {origin}`"
        ));
    }
    if config.sources.is_empty() {
        warnings.push(format!(
            "{origin}: no source is configured (add a [[source.mllp]] table); wardlink will receive nothing"
        ));
    }
    Ok(Loaded { config, warnings })
}

#[cfg(unix)]
fn is_world_writable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o002 != 0
}

#[cfg(not(unix))]
fn is_world_writable(_metadata: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests;
