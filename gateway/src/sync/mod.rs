//! The gateway side of sync: steps 4 (seal) and 5 (upload) of
//! `architecture.md`.
//!
//! Layout:
//! - [`seal`]: the sealer thread: outbox events → signed, hash-chained
//!   batches (`wardlink_sync::batch`), stored before upload.
//! - [`upload`]: the uploader task: sealed batches → `POST /v1/batches`, in
//!   sequence order, with backoff; a batch is marked uploaded only after the
//!   collector's receipt verifies.
//! - [`client`]: the HTTPS client (reqwest + rustls on `ring`).
//! - here: the gateway's signing key (`<state_dir>/gateway.key`, made by
//!   `wardlink keygen`), checking the `[sync]` settings before the daemon
//!   starts ([`prepare`]), and starting and stopping both workers ([`SyncWorkers`]).
//!
//! Both workers are stateless: the outbox, the batches, the chain and the
//! last upload and error all live in the store ([`crate::store::outbox`]),
//! changed only by the store writer, each in one transaction.
//!
//! Sync is on when `sync.collector_url` is set. Then `wardlink run` needs
//! the key: without it the daemon does not start (exit 78) and says to run
//! `wardlink keygen`. The key never leaves the box; only its public half is
//! enrolled at the collector.

pub mod client;
pub mod seal;
pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, SyncConfig};
use wardlink_sync::keys::{KeyError, PublicKey, SigningKeyFile};

use crate::store::{self, outbox, StoreWriter};
use seal::{Sealer, SealerOptions};
use upload::UploaderOptions;

/// The gateway's signing key file inside the state directory.
pub const KEY_FILE: &str = "gateway.key";

/// The path of the signing key in a state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Why sync cannot start as configured. Every variant is a configuration
/// problem: `wardlink run` exits 78.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Sync is on but there is no key yet.
    #[error("sync is on (sync.collector_url = {url}) but there is no gateway key at {}; create it with `wardlink keygen --config FILE` and enrol it at the collector with the command it prints", path.display())]
    NoKey {
        /// The configured collector.
        url: String,
        /// Where the key should be.
        path: PathBuf,
    },
    /// The key file exists but cannot be used.
    #[error("gateway key: {0}")]
    Key(#[source] KeyError),
    /// `sync.collector_public_key` is not an Ed25519 public key.
    #[error("sync.collector_public_key: {0}")]
    CollectorKey(#[source] KeyError),
    /// The TLS settings cannot be used.
    #[error(transparent)]
    Client(#[from] client::ClientError),
}

/// What sync needs, checked before the daemon opens anything.
#[derive(Debug)]
pub struct SyncSetup {
    key: Arc<SigningKeyFile>,
    client: reqwest::Client,
    uploader: UploaderOptions,
    sealer: SealerOptions,
}

impl SyncSetup {
    /// The gateway id of the signing key.
    pub fn gateway_id(&self) -> String {
        self.key.gateway_id().to_string()
    }
}

/// Check the `[sync]` settings: load the key, parse the collector's key and
/// build the HTTP client. `None` when sync is off.
///
/// # Errors
/// No key file, an unusable key file, a collector key that is not a key, or
/// unusable TLS files.
pub fn prepare(config: &Config) -> Result<Option<SyncSetup>, SetupError> {
    let Some(target) = &config.sync.collector else {
        return Ok(None);
    };
    let path = key_path(&config.gateway.state_dir);
    if !path.exists() {
        return Err(SetupError::NoKey {
            url: target.url.clone(),
            path,
        });
    }
    let key = SigningKeyFile::load(&path).map_err(SetupError::Key)?;
    let collector_key: PublicKey = target
        .public_key
        .parse()
        .map_err(SetupError::CollectorKey)?;
    let client = client::http_client(target)?;
    Ok(Some(SyncSetup {
        key: Arc::new(key),
        client,
        uploader: uploader_options(&config.sync, &target.url, collector_key),
        sealer: SealerOptions {
            max_events: config.sync.batch_max_events,
            max_age: config.sync.batch_max_age,
        },
    }))
}

fn uploader_options(sync: &SyncConfig, url: &str, collector_key: PublicKey) -> UploaderOptions {
    UploaderOptions {
        batches_url: format!("{url}/v1/batches"),
        collector_key,
        backoff_min: sync.retry_backoff_min,
        backoff_max: sync.retry_backoff_max,
    }
}

/// What `wardlink keygen` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// The key file.
    pub path: PathBuf,
    /// Whether this call created it.
    pub created: bool,
    /// The gateway id derived from the key.
    pub gateway_id: String,
    /// The public key, 64 hex digits.
    pub public_key: String,
    /// The command that enrols the key at a collector.
    pub enroll_command: String,
}

/// Create the gateway's signing key in `state_dir` (mode 0600) unless it
/// exists, and describe it.
///
/// # Errors
/// The key cannot be created or read, or is readable by others.
pub fn keygen(state_dir: &Path) -> Result<KeyInfo, KeyError> {
    let path = key_path(state_dir);
    let key = SigningKeyFile::load_or_create(&path)?;
    if key.was_created() {
        tracing::info!(path = %path.display(), gateway_id = %key.gateway_id(), "Created the gateway's signing key");
    }
    Ok(KeyInfo {
        created: key.was_created(),
        gateway_id: key.gateway_id().to_string(),
        public_key: key.public_key().to_string(),
        enroll_command: key.enroll_command(),
        path,
    })
}

/// The running sealer and uploader.
#[derive(Debug)]
pub struct SyncWorkers {
    sealer: Sealer,
    uploader: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl SyncWorkers {
    /// Start both workers on the store in `state_dir`, served by `writer`.
    ///
    /// # Errors
    /// The store's chain belongs to another gateway key, or the store cannot
    /// be opened for reading.
    pub fn start(
        setup: SyncSetup,
        state_dir: &Path,
        writer: &StoreWriter,
    ) -> anyhow::Result<SyncWorkers> {
        let conn = store::open_for_reading(state_dir)?;
        let state = outbox::read_sync_state(&conn).context("reading the sync state")?;
        let gateway_id = setup.key.gateway_id().to_string();
        if let Some(chain_owner) = state.gateway_id.filter(|id| *id != gateway_id) {
            anyhow::bail!(
                "the store's batches are signed by gateway {chain_owner}, but {} is the key of {gateway_id}; \
                 put the original key file back (keep it in the backups with the store), or use a new state directory",
                key_path(state_dir).display()
            );
        }
        let sealer = Sealer::spawn(
            state_dir,
            setup.key.clone(),
            setup.sealer,
            writer.sync_jobs(),
            writer.outbox_bell(),
        )
        .context("cannot start the sealer")?;
        let stop = CancellationToken::new();
        let uploader = tokio::spawn(upload::run(
            conn,
            setup.client,
            setup.uploader,
            writer.sync_jobs(),
            writer.sealed_bell(),
            stop.clone(),
        ));
        tracing::info!(%gateway_id, next_seq = state.chain.next_seq, "Sync started");
        Ok(SyncWorkers {
            sealer,
            uploader,
            stop,
        })
    }

    /// Stop the uploader (an upload in flight is abandoned: it is sent again
    /// after the next start) and the sealer (after the batch in hand).
    pub async fn stop(self) {
        self.stop.cancel();
        if self.uploader.await.is_err() {
            tracing::error!("the uploader task panicked");
        }
        let sealer = self.sealer;
        let _ = tokio::task::spawn_blocking(move || sealer.stop()).await;
    }
}
