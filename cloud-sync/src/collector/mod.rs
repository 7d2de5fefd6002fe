//! The collector: receives gateways' batches, verifies and stores them once,
//! and serves their events to the central team (`docs/collector.md`).
//!
//! Layout:
//! - [`config`]: the TOML configuration and its built-in default.
//! - [`store`]: what the collector needs from a database, as a trait
//!   ([`CollectorStore`]), with the contract every implementation keeps.
//! - [`sqlite`]: the SQLite implementation (one writer thread, WAL,
//!   `synchronous=FULL`); the default.
//! - [`postgres`]: the PostgreSQL implementation, for several collector
//!   processes on one database; [`AnyStore`] picks one by URL.
//! - [`http`]: the axum routes: upload, feed, gateways.
//! - [`tls`]: HTTPS with rustls (ring), handshakes off the accept loop.
//! - [`cli_docs`]: manual pages and shell completions from the binary's CLI.
//! - [`admin`]: the local admin endpoint (`admin_listen`): `/metrics` and a
//!   page listing the gateways, their last seen time, gaps and backlog.
//!
//! The binary `wardlink-collector` (`src/bin/wardlink-collector.rs`) is glue
//! around [`serve`] and the admin commands here.

pub mod admin;
pub mod cli_docs;
pub mod config;
pub mod http;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use store::CollectorStore;

use crate::keys::SigningKeyFile;

/// The prefix of reader tokens (`wlr_` + 64 hex digits), so that a token in a
/// log or a config file is recognisable.
pub const READER_TOKEN_PREFIX: &str = "wlr_";

/// Serve the API on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes, then finish the requests in flight.
///
/// # Errors
/// The server fails to accept connections.
pub async fn serve<S: CollectorStore>(
    store: S,
    key: SigningKeyFile,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_batch_bytes: usize,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(http::App {
        store,
        key,
        max_body_bytes,
    });
    let router = http::router(app, max_batch_bytes);
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
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

/// Either database, chosen by the configuration's `database` URL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `sqlite://PATH`.
    Sqlite(sqlite::SqliteStore),
    /// `postgres://…`.
    Postgres(postgres::PgStore),
}

impl AnyStore {
    /// Open the configured database (and migrate it).
    ///
    /// # Errors
    /// The database cannot be opened, reached or migrated.
    pub async fn open(database: &config::Database) -> Result<AnyStore, store::StoreError> {
        match database {
            config::Database::Sqlite(path) => sqlite::SqliteStore::open(path).map(AnyStore::Sqlite),
            config::Database::Postgres(url) => {
                postgres::PgStore::open(url).await.map(AnyStore::Postgres)
            }
        }
    }

    /// Let queued writes finish (SQLite's writer thread); a no-op for PostgreSQL.
    pub fn shutdown(&self) {
        if let AnyStore::Sqlite(s) = self {
            s.shutdown();
        }
    }
}

/// Forward a [`CollectorStore`] method to whichever store is inside.
macro_rules! forward {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(s) => s.$method($($arg),*).await,
            AnyStore::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl CollectorStore for AnyStore {
    async fn enroll(
        &self,
        gateway: &crate::keys::GatewayId,
        key: &crate::keys::PublicKey,
        now_ms: u64,
    ) -> Result<store::EnrollOutcome, store::StoreError> {
        forward!(self, enroll(gateway, key, now_ms))
    }

    async fn revoke(
        &self,
        gateway: &crate::keys::GatewayId,
        now_ms: u64,
    ) -> Result<bool, store::StoreError> {
        forward!(self, revoke(gateway, now_ms))
    }

    async fn enrolment(
        &self,
        gateway: &crate::keys::GatewayId,
    ) -> Result<Option<store::Enrolment>, store::StoreError> {
        forward!(self, enrolment(gateway))
    }

    async fn store_batch(
        &self,
        batch: crate::batch::VerifiedBatch,
        receipt: crate::receipt::Receipt,
        now_ms: u64,
    ) -> Result<store::StoreOutcome, store::StoreError> {
        forward!(self, store_batch(batch, receipt, now_ms))
    }

    async fn create_token(
        &self,
        name: &str,
        token_sha256: [u8; 32],
        now_ms: u64,
    ) -> Result<bool, store::StoreError> {
        forward!(self, create_token(name, token_sha256, now_ms))
    }

    async fn reader(&self, token_sha256: [u8; 32]) -> Result<Option<String>, store::StoreError> {
        forward!(self, reader(token_sha256))
    }

    async fn feed(&self, query: store::FeedQuery) -> Result<store::FeedPage, store::StoreError> {
        forward!(self, feed(query))
    }

    async fn gateways(&self) -> Result<Vec<store::GatewayReport>, store::StoreError> {
        forward!(self, gateways())
    }
}
