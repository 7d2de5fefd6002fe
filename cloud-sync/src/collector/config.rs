//! The collector's configuration: a small TOML file, every key optional.
//!
//! ```toml
//! listen = "127.0.0.1:8443"            # where POST /v1/batches and the feeds are served
//! database = "sqlite://collector-data/collector.db"   # or postgres://user@host:5432/db
//! key_file = "collector-data/collector.key"   # signs receipts; created (0600) if missing
//! max_batch_bytes = 67108864           # largest request body accepted (64 MiB)
//! max_body_bytes = 268435456           # largest decompressed batch body (256 MiB)
//! tls_cert_file = "/etc/wardlink-collector/cert.pem"   # HTTPS: both or neither
//! tls_key_file = "/etc/wardlink-collector/key.pem"
//! tls_client_ca_file = "/etc/wardlink-collector/gateways-ca.pem"   # optional mTLS
//! admin_listen = "127.0.0.1:9426"      # status page and /metrics; "" (default) = off
//! ```
//!
//! Without `--config` the built-in default above is used: plain HTTP on
//! loopback and SQLite under `./collector-data`, enough for the demo and for
//! trying it out. Relative paths are relative to the working directory.
//! Two stages as in `wardlink-config`: a raw serde shape with
//! `deny_unknown_fields`, then [`CollectorConfig`] with parsed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in default configuration, printed by `print-default-config`.
pub const DEFAULT_TOML: &str = r#"# wardlink-collector configuration (the built-in default).
# Address and port to listen on. Without tls_cert_file/tls_key_file this is
# plain HTTP: keep it on loopback then.
listen = "127.0.0.1:8443"
# Where batches and events are stored: sqlite://PATH, or
# postgres://USER[:PASSWORD]@HOST:PORT/DATABASE for deployments with several
# collector processes on one database (plain TCP: keep it on a trusted network).
database = "sqlite://collector-data/collector.db"
# The collector's Ed25519 key that signs receipts; created (mode 0600) if
# missing. Gateways are configured with its public key
# (`wardlink-collector public-key`).
key_file = "collector-data/collector.key"
# The largest batch accepted on the wire, in bytes (413 above it).
max_batch_bytes = 67108864
# The largest decompressed batch body, in bytes (400 above it).
max_body_bytes = 268435456
# HTTPS (rustls): the server's certificate chain and private key, PEM files.
# Set both or neither; gateways are configured with the CA that issued it.
# tls_cert_file = "/etc/wardlink-collector/cert.pem"
# tls_key_file = "/etc/wardlink-collector/key.pem"
# Optional, with HTTPS only: accept only clients (gateways, feed readers)
# that present a certificate issued by this CA (PEM). Batches are still
# checked against each gateway's enrolled signing key.
# tls_client_ca_file = "/etc/wardlink-collector/gateways-ca.pem"
# The local admin endpoint: a status page at / (gateways, last seen, sequence
# gaps, backlog) and Prometheus metrics at /metrics, plain HTTP without
# authentication (ids and counts only): keep it on loopback or a management
# network. "" = off (the default), e.g. "127.0.0.1:9426".
admin_listen = ""
"#;

/// Errors in the configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (with line and column).
        message: String,
    },
    /// A value is out of range or unsupported.
    #[error("{path}: {key}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// The raw shape of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_database")]
    database: String,
    #[serde(default = "default_key_file")]
    key_file: PathBuf,
    #[serde(default = "default_max_batch_bytes")]
    max_batch_bytes: u64,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: u64,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    tls_client_ca_file: Option<PathBuf>,
    #[serde(default)]
    admin_listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_database() -> String {
    "sqlite://collector-data/collector.db".into()
}
fn default_key_file() -> PathBuf {
    "collector-data/collector.key".into()
}
fn default_max_batch_bytes() -> u64 {
    64 << 20
}
fn default_max_body_bytes() -> u64 {
    256 << 20
}

/// Where the collector keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (libpq form, e.g.
    /// `postgres://wardlink@db.internal:5432/collector`).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            // The URL may carry a password.
            Database::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The listen address (port 0: any free port; the bound one is printed).
    pub listen: SocketAddr,
    /// The admin endpoint's address (status page, `/metrics`); `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// The database.
    pub database: Database,
    /// The receipt-signing key file.
    pub key_file: PathBuf,
    /// Largest request body.
    pub max_batch_bytes: usize,
    /// Largest decompressed batch body.
    pub max_body_bytes: usize,
    /// HTTPS certificate chain and key (PEM), or plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of the HTTPS server (read when the server starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by this CA.
    pub client_ca_file: Option<PathBuf>,
}

impl CollectorConfig {
    /// The built-in default.
    ///
    /// # Errors
    /// Never in practice; the default is tested.
    pub fn builtin() -> Result<CollectorConfig, ConfigError> {
        parse(DEFAULT_TOML, Path::new("<built-in default>"))
    }

    /// Load and validate a file.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid configuration.
    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text, path)
    }
}

/// Parse and validate configuration text; `path` names it in errors.
///
/// # Errors
/// Syntax, unknown keys, wrong types or values out of range.
pub fn parse(text: &str, path: &Path) -> Result<CollectorConfig, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |key, problem: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        problem,
    };
    let listen = raw.listen.parse().map_err(|_| {
        invalid(
            "listen",
            format!("{:?} is not IP:PORT (e.g. 127.0.0.1:8443)", raw.listen),
        )
    })?;
    let database = match raw.database.split_once("://") {
        Some(("sqlite", p)) if !p.is_empty() => Database::Sqlite(PathBuf::from(p)),
        Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {
            Database::Postgres(raw.database.clone())
        }
        _ => {
            return Err(invalid(
                "database",
                "expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".into(),
            ))
        }
    };
    let size = |key, v: u64| {
        usize::try_from(v)
            .ok()
            .filter(|&n| n >= 1024)
            .ok_or_else(|| invalid(key, format!("{v} must be at least 1024 bytes")))
    };
    if raw.tls_client_ca_file.is_some() && raw.tls_cert_file.is_none() {
        return Err(invalid(
            "tls_client_ca_file",
            "needs HTTPS: set tls_cert_file and tls_key_file too, or remove it".into(),
        ));
    }
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (None, None) => None,
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
            client_ca_file: raw.tls_client_ca_file,
        }),
        (Some(_), None) => {
            return Err(invalid(
                "tls_key_file",
                "missing: tls_cert_file is set, so HTTPS needs its private key too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_cert_file",
                "missing: tls_key_file is set, so HTTPS needs its certificate too".into(),
            ))
        }
    };
    let admin_listen = match raw.admin_listen.trim() {
        "" => None,
        a => Some(a.parse().map_err(|_| {
            invalid(
                "admin_listen",
                format!(
                    "{:?} is not IP:PORT (e.g. 127.0.0.1:9426), or \"\" for off",
                    raw.admin_listen
                ),
            )
        })?),
    };
    Ok(CollectorConfig {
        tls,
        listen,
        admin_listen,
        database,
        key_file: raw.key_file,
        max_batch_bytes: size("max_batch_bytes", raw.max_batch_bytes)?,
        max_body_bytes: size("max_body_bytes", raw.max_body_bytes)?,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failed step is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_default_parses_and_names_every_key() {
        let c = CollectorConfig::builtin().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(
            c.database,
            Database::Sqlite("collector-data/collector.db".into())
        );
        for key in [
            "listen",
            "database",
            "key_file",
            "max_batch_bytes",
            "max_body_bytes",
        ] {
            assert!(DEFAULT_TOML.contains(&format!("\n{key} = ")), "{key}");
        }
        for key in ["tls_cert_file", "tls_key_file"] {
            assert!(DEFAULT_TOML.contains(&format!("\n# {key} = ")), "{key}");
        }
        assert_eq!(c.tls, None);
    }

    /// Every key is optional: an empty file and a file with one key are the
    /// default otherwise (the demo writes only listen, database, key_file).
    #[test]
    fn every_key_is_optional() {
        let p = Path::new("c.toml");
        let empty = parse("", p).unwrap();
        let builtin = CollectorConfig::builtin().unwrap();
        assert_eq!(empty.listen, builtin.listen);
        assert_eq!(empty.tls, None);
        parse("listen = \"127.0.0.1:0\"", p).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let p = Path::new("c.toml");
        let e = parse("listen = \"nowhere\"", p).unwrap_err().to_string();
        assert!(e.contains("c.toml: listen:"), "{e}");
        let e = parse("database = \"mysql://x\"", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("database"), "{e}");
        let c = parse("database = \"postgres://u@127.0.0.1:5/d\"", p).unwrap();
        assert_eq!(
            c.database,
            Database::Postgres("postgres://u@127.0.0.1:5/d".into())
        );
        let e = parse("tls_cert_file = \"c.pem\"", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_key_file: missing"), "{e}");
        let e = parse("lissten = \"x\"", p).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
