//! MLLP over TLS: the server configuration from PEM files, the TLS accept
//! with its checks, and [`MllpStream`], the one stream type a connection
//! reads frames from (plain TCP or TLS).
//!
//! Design:
//! - rustls on the `ring` provider (the one provider of the whole tree).
//!   With a client CA, the handshake requires a certificate that chains to
//!   it ([`rustls::server::WebPkiClientVerifier`]); without, any sender may
//!   connect (the listener's `allow` list still applies).
//! - **A plain sender on a TLS listener is closed, with a log line, and is
//!   sent nothing.** Before the handshake the first byte is peeked: a TLS
//!   connection starts with a handshake record (content type 22, `0x16`),
//!   an MLLP sender with the start block `0x0B`. Anything but `0x16` closes
//!   the connection before rustls could answer with an alert.
//! - The handshake runs in the connection's own task, bounded by
//!   [`HANDSHAKE_TIMEOUT`], so a silent peer never holds up the listener.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a sender may take to start and complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS connection: a handshake record (RFC 8446 §5.1,
/// `ContentType.handshake = 22`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file is unreadable or holds nothing usable.
    #[error("tls.{key} {path}: {message}")]
    File {
        /// The config key (`cert`, `key`, `client_ca`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (e.g. the key does not match).
    #[error("tls: the certificate, key and client CA cannot be used together: {0}")]
    Rejected(String),
}

/// Build a listener's server configuration from its PEM files.
///
/// # Errors
/// A file is unreadable or empty, or rustls refuses the combination.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let file_error = |key: &'static str, path: &Path, message: String| TlsConfigError::File {
        key,
        path: path.to_path_buf(),
        message,
    };
    let certs = read_certs(cert).map_err(|m| file_error("cert", cert, m))?;
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rejected(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca).map_err(|m| file_error("client_ca", ca, m))? {
                roots
                    .add(c)
                    .map_err(|e| file_error("client_ca", ca, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsConfigError::Rejected(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, private_key)
        .map_err(|e| TlsConfigError::Rejected(e.to_string()))?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// Why a TLS connection was not established.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsAcceptError {
    /// The first byte was not a TLS handshake record: a plain sender.
    #[error("not TLS (first byte {0:#04x}): a plain-TCP sender on a TLS listener")]
    NotTls(u8),
    /// The peer closed before sending anything.
    #[error("closed before the TLS handshake")]
    Closed,
    /// The handshake failed (no or a wrong client certificate, bad TLS).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The handshake did not complete in time.
    #[error("TLS handshake did not complete within {0:?}")]
    TimedOut(Duration),
}

/// Check the first byte, then run the handshake, within [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn accept(
    stream: TcpStream,
    config: Arc<ServerConfig>,
) -> Result<MllpStream, TlsAcceptError> {
    let work = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(TlsAcceptError::Closed),
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                return Err(TlsAcceptError::NotTls(first[0]))
            }
            Ok(_) => {}
            Err(e) => return Err(TlsAcceptError::Handshake(e)),
        }
        TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map(|s| MllpStream::Tls(Box::new(s)))
            .map_err(TlsAcceptError::Handshake)
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(TlsAcceptError::TimedOut(HANDSHAKE_TIMEOUT)),
    }
}

/// The byte stream of one MLLP connection.
#[derive(Debug)]
pub(crate) enum MllpStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MllpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MllpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MllpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MllpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MllpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MllpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MllpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MllpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MllpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MllpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MllpStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MllpStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MllpStream::Plain(s) => s.is_write_vectored(),
            MllpStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
