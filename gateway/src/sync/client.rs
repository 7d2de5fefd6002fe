//! The HTTP client the uploader talks to the collector with: reqwest over
//! rustls on the `ring` provider (the one crypto provider of the whole tree;
//! `aws-lc-rs` is never built).
//!
//! Trust: the CA certificates of `sync.ca_file`, or the system's trust store
//! when it is empty. A client certificate (`sync.client_cert_file` and
//! `sync.client_key_file`) is presented when configured. Plain `http://` is
//! only allowed to loopback (the config checks it) and uses no proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wardlink_config::CollectorTarget;

/// How long a connection to the collector may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one upload (request and receipt) may take. A 5,000-event batch
/// is a few hundred KiB; the collector stores it in well under a second.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the client could not be built: a configuration problem (exit 78).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("sync.{key} {}: {reason}", path.display())]
    File {
        /// The config key (`ca_file`, `client_cert_file`, `client_key_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No CA certificates: neither `sync.ca_file` nor the system has any.
    #[error("no CA certificates to check the collector's certificate with: the system trust store is empty or unreadable ({0}); set sync.ca_file")]
    NoRoots(String),
    /// rustls refused the settings (e.g. a key that does not fit the certificate).
    #[error("TLS settings: {0}")]
    Tls(String),
    /// reqwest could not build the client.
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Install `ring` as the process's rustls provider (reqwest is built
/// without one). Harmless when already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Build the client for `target`.
///
/// # Errors
/// A certificate or key file cannot be read or used, or there are no CA
/// certificates for an `https://` collector.
pub fn http_client(target: &CollectorTarget) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if !target.is_plain_http() {
        match &target.ca_file {
            Some(path) => {
                for cert in read_certs("ca_file", path)? {
                    roots.add(cert).map_err(|e| ClientError::File {
                        key: "ca_file",
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(ClientError::NoRoots(why));
                }
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let tls = match &target.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = read_certs("client_cert_file", &c.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| ClientError::File {
                key: "client_key_file",
                path: c.key_file.clone(),
                reason: format!("no usable PEM private key: {e}"),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(format!("client certificate and key: {e}")))?
        }
    };
    let mut http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("wardlink/", env!("CARGO_PKG_VERSION")));
    if target.is_plain_http() {
        // Loopback only: a proxy from the environment must not see it.
        http = http.no_proxy();
    }
    http.build().map_err(|e| ClientError::Http(e.to_string()))
}

/// Every certificate of a PEM file (at least one).
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let err = |reason: String| ClientError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}
