//! The collector: receives gateways' batches, verifies and stores them once,
//! and serves their events to the central team (`docs/collector.md`).
//!
//! Layout:
//! - [`config`]: the TOML configuration and its built-in default.
//! - [`store`]: what the collector needs from a database, as a trait
//!   ([`CollectorStore`]), with the contract every implementation keeps.
//! - [`sqlite`]: the SQLite implementation (one writer thread, WAL,
//!   `synchronous=FULL`).
//! - [`http`]: the axum routes: upload, feed, gateways.
//!
//! The binary `wardlink-collector` (`src/bin/wardlink-collector.rs`) is glue
//! around [`serve`] and the admin commands here.

pub mod config;
pub mod http;
pub mod sqlite;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use store::CollectorStore;

use crate::keys::SigningKeyFile;

/// The prefix of reader tokens (`wlr_` + 64 hex digits), so that a token in a
/// log or a config file is recognisable.
pub const READER_TOKEN_PREFIX: &str = "wlr_";

/// Serve the API on `listener` until `shutdown` completes, then finish the
/// requests in flight.
///
/// # Errors
/// The server fails to accept connections.
pub async fn serve<S: CollectorStore>(
    store: S,
    key: SigningKeyFile,
    listener: tokio::net::TcpListener,
    max_batch_bytes: usize,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(http::App {
        store,
        key,
        max_body_bytes,
    });
    axum::serve(listener, http::router(app, max_batch_bytes))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A new random reader token and the SHA-256 the store keeps of it.
///
/// # Errors
/// No randomness is available.
pub fn new_reader_token() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let token = format!("{READER_TOKEN_PREFIX}{}", crate::hex::encode(&raw));
    let digest = Sha256::digest(token.as_bytes()).into();
    Ok((token, digest))
}
