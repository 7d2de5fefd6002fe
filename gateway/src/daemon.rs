//! The daemon's lifecycle: open the store, bind every listener, serve, and
//! stop cleanly.
//!
//! Start: the config is already validated (the caller exits 78 otherwise);
//! check the `[sync]` settings and load the gateway key (a [`SetupError`]
//! otherwise, which the caller also reports as a configuration error);
//! open and migrate the store, start the writer thread, load (or create on
//! first start) the site secret and start the pipeline thread, start the
//! sealer and the uploader when sync is on, bind every listener
//! (port 0 works: the bound address goes to the log and to the runtime file
//! that `wardlink status` reads), then tell systemd `READY=1` (a no-op
//! without `NOTIFY_SOCKET`).
//!
//! Stop (`shutdown` cancelled, e.g. by SIGTERM): listeners stop accepting;
//! every connection finishes the frame whose commit is pending and sends its
//! answer; the pipeline, the uploader (an upload in flight is abandoned and
//! sent again after the next start) and the sealer stop; then the submit
//! channel closes, the writer drains and commits what is queued, and `run`
//! returns. Graceful shutdown is a courtesy: because
//! every positive answer follows its commit, `kill -9` at any moment loses
//! nothing that was acknowledged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, MllpSource};
use wardlink_devices::mllp::{MllpListener, MllpOptions};

use crate::equipment::Equipment;
use crate::processor::Processor;
use crate::status::{ListenerInfo, Runtime};
use crate::store::checkpoint::Checkpointer;
use crate::store::{self, unix_ms, StoreWriter, WriterOptions};
use crate::sync::SyncWorkers;

pub use crate::sync::SetupError;

/// How long a stop may take before the daemon exits anyway. Nothing
/// acknowledged is at risk when it does.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The listener options of a configured MLLP source.
pub fn mllp_options(s: &MllpSource) -> MllpOptions {
    MllpOptions {
        name: Arc::from(s.name.as_str()),
        listen: s.listen,
        allow: s.allow.clone(),
        max_connections: s.max_connections,
        max_message_bytes: s.max_message_bytes,
        idle_timeout: s.idle_timeout,
        duplicate_window: s.duplicate_window,
        commit_blocks: s.commit_blocks,
    }
}

/// Run the daemon until `shutdown` is cancelled.
///
/// # Errors
/// The sync settings cannot be used (a [`SetupError`] in the chain: a
/// configuration problem), the store cannot be opened, a listener cannot
/// bind, or the runtime file cannot be written. Each error says which and why.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state_dir = config.gateway.state_dir.clone();
    let sync_setup = crate::sync::prepare(&config)?;
    let conn = store::open_for_writing(&state_dir, config.store.max_bytes)
        .context("cannot open the store")?;
    tracing::info!(path = %store::db_path(&state_dir).display(), "store open");
    let checkpointer =
        Checkpointer::spawn(&state_dir).context("cannot start the WAL checkpointer")?;

    // Room for a few groups in flight: enough that the writer always finds
    // a full group waiting, small enough to bound memory (each waiting item
    // holds one message).
    let capacity = config.store.group_commit_max.saturating_mul(2).max(64);
    let (submitter, requests) = wardlink_devices::channel(capacity);
    let writer = StoreWriter::spawn(
        conn,
        requests,
        WriterOptions {
            group_commit_max: config.store.group_commit_max,
            raw_retention: config.store.raw_retention,
            outbox_max_bytes: config.sync.outbox_max_bytes,
        },
        tokio::runtime::Handle::current(),
    )
    .context("cannot start the store writer thread")?;

    let pipeline = crate::settings::gateway_pipeline(&config)?;
    let processor = Processor::spawn(&state_dir, pipeline, writer.jobs(), writer.doorbell())
        .context("cannot start the pipeline")?;
    let sync = match sync_setup {
        None => {
            tracing::info!("sync is off (sync.collector_url is empty): events stay in the outbox");
            None
        }
        Some(setup) => match SyncWorkers::start(setup, &state_dir, &writer) {
            Ok(s) => Some(s),
            Err(e) => {
                drop(submitter);
                let _ = tokio::task::spawn_blocking(move || processor.stop()).await;
                join_writer(writer).await;
                return Err(e.context("cannot start sync"));
            }
        },
    };

    let mut listeners = Vec::new();
    let mut infos = Vec::new();
    for source in &config.sources.mllp {
        match MllpListener::bind(mllp_options(source)).await {
            Ok(l) => {
                let addr = l.local_addr();
                tracing::info!(source = %source.name, %addr, "mllp listener bound");
                infos.push(ListenerInfo {
                    source: source.name.clone(),
                    kind: "mllp".into(),
                    addr: addr.to_string(),
                });
                listeners.push(l);
            }
            Err(e) => {
                drop(listeners);
                drop(submitter);
                drop(processor);
                if let Some(s) = sync {
                    s.stop().await;
                }
                join_writer(writer).await;
                return Err(anyhow::Error::new(e)
                    .context(format!("source.mllp `{}`: cannot listen", source.name)));
            }
        }
    }
    let equipment = Equipment::start(
        &config,
        submitter.clone(),
        crate::links::LinkBoard::new(&state_dir),
    )
    .await;
    let equipment = match equipment {
        Ok(e) => e,
        Err(e) => {
            drop(listeners);
            drop(submitter);
            drop(processor);
            if let Some(s) = sync {
                s.stop().await;
            }
            join_writer(writer).await;
            return Err(e);
        }
    };
    infos.extend(equipment.infos());
    Runtime {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ms: unix_ms(SystemTime::now()),
        listeners: infos,
    }
    .write(&state_dir)
    .with_context(|| format!("cannot write the runtime file in {}", state_dir.display()))?;

    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        tasks.spawn(l.run(submitter.clone(), shutdown.clone()));
    }
    // The listeners hold their own clones; the writer stops when the last
    // one is dropped.
    drop(submitter);

    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("wardlink ready");

    shutdown.cancelled().await;
    tracing::info!("stopping: no new connections; answering frames in flight");
    notify(&[sd_notify::NotifyState::Stopping]);
    let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
            "listeners did not stop in time; exiting anyway (nothing acknowledged is lost)"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    equipment.stop(SHUTDOWN_DEADLINE).await;
    let _ = tokio::task::spawn_blocking(move || processor.stop()).await;
    if let Some(s) = sync {
        s.stop().await;
    }
    join_writer(writer).await;
    checkpointer.stop();
    Runtime::remove(&state_dir);
    tracing::info!("stopped");
    Ok(())
}

async fn join_writer(writer: StoreWriter) {
    if tokio::task::spawn_blocking(move || writer.join())
        .await
        .is_err()
    {
        tracing::error!("store writer did not stop cleanly");
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}
