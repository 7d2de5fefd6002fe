//! A configured `[[source.mqtt]]` → rumqttc's options: broker, client id,
//! credentials (the password file is read here, at start), TLS on rustls
//! with the tree's one provider (ring), keep-alive, a persistent session
//! and manual acknowledgements.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wardlink_config::MqttSource;

/// Why a source's options could not be built (reported at start, with the key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A file named in the config cannot be read or used.
    #[error("source.mqtt `{source_name}`: {key} {path}: {reason}")]
    File {
        /// The source.
        source_name: String,
        /// The config key (`password_file`, `ca_file`, ...).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the TLS settings.
    #[error("source.mqtt `{source_name}`: TLS settings: {reason}")]
    Tls {
        /// The source.
        source_name: String,
        /// What rustls said.
        reason: String,
    },
}

/// How the broker is named in logs and status, e.g. `mqtts://broker:8883`.
pub fn peer(source: &MqttSource) -> String {
    let b = &source.broker;
    let scheme = if b.tls { "mqtts" } else { "mqtt" };
    if b.host.contains(':') {
        format!("{scheme}://[{}]:{}", b.host, b.port)
    } else {
        format!("{scheme}://{}:{}", b.host, b.port)
    }
}

/// Options for the daemon's persistent, manually acknowledged session.
///
/// # Errors
/// The password, CA, certificate or key file cannot be read or used.
pub fn session_options(source: &MqttSource) -> Result<MqttOptions, OptionsError> {
    let mut o = base_options(source, &source.client_id)?;
    o.set_clean_session(source.clean_session)
        // Commit before PUBACK: the source acknowledges each publish itself,
        // after the store answered (architecture.md invariant 1).
        .set_manual_acks(true);
    Ok(o)
}

/// Options for `wardlink tap`: its own client id and a clean session, so it
/// never steals or disturbs the daemon's session; acknowledged at once (it
/// stores nothing).
///
/// # Errors
/// As [`session_options`].
pub fn tap_options(source: &MqttSource) -> Result<MqttOptions, OptionsError> {
    let mut id = format!("tap-{}-{}", std::process::id(), source.client_id);
    id.truncate(23);
    let mut o = base_options(source, &id)?;
    o.set_clean_session(true);
    Ok(o)
}

fn base_options(source: &MqttSource, client_id: &str) -> Result<MqttOptions, OptionsError> {
    let b = &source.broker;
    let mut o = MqttOptions::new(client_id, b.host.clone(), b.port);
    // The config guarantees 5 s ..= 65535 s, which rumqttc accepts.
    o.set_keep_alive(source.keep_alive)
        // Incoming: the configured limit (plus topic and header); outgoing:
        // only subscribes, acks and pings.
        .set_max_packet_size(source.max_payload_bytes.saturating_add(1024), 64 * 1024);
    if let Some(user) = &source.username {
        let password = match &source.password_file {
            None => String::new(),
            Some(path) => read_password(source, path)?,
        };
        o.set_credentials(user.clone(), password);
    }
    if b.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(source)?),
        )));
    }
    Ok(o)
}

fn file_err(source: &MqttSource, key: &'static str, path: &Path, reason: String) -> OptionsError {
    OptionsError::File {
        source_name: source.name.clone(),
        key,
        path: path.to_path_buf(),
        reason,
    }
}

fn read_password(source: &MqttSource, path: &Path) -> Result<String, OptionsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_err(source, "password_file", path, e.to_string()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

fn read_certs(
    source: &MqttSource,
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, OptionsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(source, key, path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(source, key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            source,
            key,
            path,
            "no PEM certificate in the file".into(),
        ));
    }
    Ok(certs)
}

fn tls_config(source: &MqttSource) -> Result<rustls::ClientConfig, OptionsError> {
    let tls_err = |reason: String| OptionsError::Tls {
        source_name: source.name.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &source.ca_file {
        Some(path) => {
            for cert in read_certs(source, "ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_err(source, "ca_file", path, e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(tls_err(
                    "no CA certificates: set ca_file or install the system's CA bundle".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_root_certificates(roots);
    match &source.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let chain = read_certs(source, "client_cert_file", &c.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| {
                file_err(
                    source,
                    "client_key_file",
                    &c.key_file,
                    format!("no usable PEM private key: {e}"),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(format!("client certificate and key: {e}")))
        }
    }
}
