//! The daemon's lifecycle: open the store, bind every listener, serve, and
//! stop cleanly.
//!
//! Start: the config is already validated (the caller exits 78 otherwise);
//! check the `[sync]` settings and load the gateway key (a [`SetupError`]
//! otherwise, which the caller also reports as a configuration error);
//! open and migrate the store, start the writer thread, load (or create on
//! first start) the site secret and start the pipeline thread, start the
//! sealer and the uploader when sync is on, start every source through the
//! [`Sources`] supervisor (port 0 works: the bound address goes to the log
//! and to the runtime file that `wardlink status` reads), then tell systemd
//! `READY=1` and keep `STATUS=` and the watchdog pings going ([`notify`]; a
//! no-op without `NOTIFY_SOCKET`).
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

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use wardlink_config::Config;
use wardlink_devices::link::Links;

use crate::admin::AdminServer;
use crate::equipment::Equipment;
use crate::notify::{self, Notifier};
use crate::processor::Processor;
use crate::sources::Sources;
use crate::status::Runtime;
use crate::store::checkpoint::Checkpointer;
use crate::store::{self, unix_ms, StoreWriter, WriterOptions};
use crate::sync::SyncWorkers;

pub use crate::sync::SetupError;

/// How long a stop may take before the daemon exits anyway. Nothing
/// acknowledged is at risk when it does.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Run the daemon until `shutdown` is cancelled.
///
/// # Errors
/// The sync settings cannot be used (a [`SetupError`] in the chain: a
/// configuration problem), the store cannot be opened, a listener cannot
/// bind, or the runtime file cannot be written. Each error says which and why.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_reload(config, None, shutdown).await
}

/// [`run`], and on SIGHUP re-read `config_path` and apply it ([`reload`]).
///
/// # Errors
/// As [`run`].
pub async fn run_with_reload(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
    let watchdog = notify::watchdog_interval();
    let writer = StoreWriter::spawn(
        conn,
        requests,
        WriterOptions {
            group_commit_max: config.store.group_commit_max,
            raw_retention: config.store.raw_retention,
            outbox_max_bytes: config.sync.outbox_max_bytes,
            heartbeat: watchdog.map(notify::heartbeat_for),
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

    let links = Links::new();
    // The admin endpoint binds first: if its port is taken, nothing has
    // started to listen yet. The block owns the submitter, so an error
    // drops it and the writer can stop.
    let started = async {
        let admin = match config.admin.enabled {
            true => Some(AdminServer::bind(config.admin.listen).await?),
            false => None,
        };
        let equipment_submitter = submitter.clone();
        let mut sources = Sources::start(&config, submitter, links.clone()).await?;
        let board = crate::links::LinkBoard::new(&state_dir, links.clone());
        let equipment = match Equipment::start(&config, equipment_submitter, board).await {
            Ok(e) => e,
            Err(e) => {
                sources.stop(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        anyhow::Ok((admin, sources, equipment))
    };
    let (admin, mut sources, mut equipment) = match started.await {
        Ok(s) => s,
        Err(e) => {
            drop(processor);
            if let Some(s) = sync {
                s.stop().await;
            }
            join_writer(writer).await;
            return Err(e);
        }
    };
    let runtime_admin = admin.as_ref().map(|a| a.local_addr().to_string());
    Runtime {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ms: unix_ms(SystemTime::now()),
        listeners: sources
            .listeners()
            .into_iter()
            .chain(equipment.infos())
            .collect(),
        admin: runtime_admin.clone(),
    }
    .write(&state_dir)
    .with_context(|| format!("cannot write the runtime file in {}", state_dir.display()))?;

    // Installed before READY=1: systemd may send SIGHUP (reload) as soon as
    // the service is ready, and SIGHUP's default action ends the process.
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP; reload needs a restart"))
        .ok();
    // READY=1 (with the first STATUS=) is sent by the notifier: the config
    // is valid, the store open and every listener bound by now.
    let notifier = Notifier {
        stats: writer.stats(),
        watchdog,
        status: status_line(state_dir.clone(), links.clone()),
    };
    let notifier = tokio::spawn(notifier.run(shutdown.clone()));
    let admin = admin.map(|server| {
        tracing::info!(addr = %server.local_addr(), "admin endpoint (status page, /metrics) bound");
        let state = Arc::new(crate::admin::state(&config, writer.stats(), links.clone()));
        tokio::spawn(server.run(state, shutdown.clone()))
    });
    tracing::info!("wardlink ready");

    let mut config = config;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let mut running = Running {
            config: &mut config,
            sources: &mut sources,
            equipment: &mut equipment,
            processor: &processor,
            admin: runtime_admin.clone(),
        };
        reload(config_path.as_deref(), &mut running).await;
    }
    tracing::info!("stopping: no new connections; answering frames in flight");
    notify::send(&[sd_notify::NotifyState::Stopping]);
    let _ = notifier.await;
    sources.stop(SHUTDOWN_DEADLINE).await;
    equipment.stop(SHUTDOWN_DEADLINE).await;
    if let Some(mut task) = admin {
        // A browser's keep-alive connection must not hold up the stop.
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
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

/// What a reload may change.
struct Running<'a> {
    /// The configuration in effect.
    config: &'a mut Config,
    /// The sources.
    sources: &'a mut Sources,
    /// The serial, MQTT and DICOM sources.
    equipment: &'a mut Equipment,
    /// The pipeline runner (de-identification and validation settings).
    processor: &'a Processor,
    /// The admin endpoint's address, for the runtime file.
    admin: Option<String>,
}

/// SIGHUP: re-read the configuration file and apply what can change while
/// running: the sources (added, removed, changed: allowlists, limits, TLS
/// certificates) and the pipeline's de-identification and validation
/// settings. An invalid file, or a change that cannot be applied (a port
/// taken, a TLS file unusable, a key missing), is rejected with the reason
/// in the log and changes nothing. Other sections (`[gateway]`, `[store]`,
/// `[sync]`, `[admin]`, `[log]`) take effect at the next restart; a change
/// there is logged as such. Established connections are never dropped by a
/// reload, and a frame in flight is always answered.
async fn reload(path: Option<&std::path::Path>, running: &mut Running<'_>) {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify::send(&states);
    let outcome = apply_reload(path, running).await;
    match &outcome {
        Ok(changes) if changes.is_empty() => {
            tracing::info!("Configuration reloaded; nothing to change");
        }
        Ok(changes) => {
            for c in changes {
                tracing::info!(change = %c, "Configuration reloaded");
            }
        }
        Err(e) => {
            tracing::error!("Reload rejected; the running configuration stays unchanged: {e:#}")
        }
    }
    notify::send(&[sd_notify::NotifyState::Ready]);
}

async fn apply_reload(
    path: Option<&std::path::Path>,
    running: &mut Running<'_>,
) -> anyhow::Result<Vec<String>> {
    let Some(path) = path else {
        anyhow::bail!("started without --config: there is no file to re-read");
    };
    tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
    let file = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || wardlink_config::load_file(&file))
        .await
        .context("reading the configuration")?
        .map_err(|e| anyhow::anyhow!("the configuration is invalid:\n{e}"))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let new = loaded.config;
    let old = &*running.config;
    let mut changes = Vec::new();
    for (section, changed) in [
        ("[gateway]", new.gateway != old.gateway),
        ("[store]", new.store != old.store),
        ("[sync]", new.sync != old.sync),
        ("[admin]", new.admin != old.admin),
    ] {
        if changed {
            tracing::warn!(
                section,
                "Changed in the file; takes effect at the next restart"
            );
        }
    }
    // The pipeline first: building it can fail (a key file), and nothing
    // has changed yet.
    let pipeline = if new.deid != old.deid || new.validate != old.validate {
        let cfg = new.clone();
        Some(
            tokio::task::spawn_blocking(move || crate::settings::gateway_pipeline(&cfg))
                .await
                .context("building the pipeline")??,
        )
    } else {
        None
    };
    let equipment = running.equipment.prepare_reload(&new)?;
    changes.extend(running.sources.reload(&new).await?);
    changes.extend(running.equipment.reload(&new, equipment).await);
    if let Some(p) = pipeline {
        running.processor.replace_pipeline(p);
        changes.push("de-identification and validation settings changed".into());
    }
    let state_dir = &running.config.gateway.state_dir;
    if let Some(mut rt) = Runtime::read(state_dir) {
        rt.listeners = running
            .sources
            .listeners()
            .into_iter()
            .chain(running.equipment.infos())
            .collect();
        rt.admin = running.admin.clone();
        if let Err(e) = rt.write(state_dir) {
            tracing::warn!(error = %e, "cannot update the runtime file");
        }
    }
    if new.log != running.config.log {
        crate::logging::set_level(new.log.level.as_str());
        changes.push(format!("[log] level is now {}", new.log.level.as_str()));
    }
    running.config.sources = new.sources;
    running.config.log = new.log;
    running.config.deid = new.deid;
    running.config.validate = new.validate;
    Ok(changes)
}

async fn join_writer(writer: StoreWriter) {
    if tokio::task::spawn_blocking(move || writer.join())
        .await
        .is_err()
    {
        tracing::error!("store writer did not stop cleanly");
    }
}

/// The `STATUS=` line: sources up and the backlog, from the store's
/// counters (no PHI: names and numbers only).
fn status_line(state_dir: std::path::PathBuf, links: Links) -> notify::StatusLine {
    Arc::new(move || {
        let (up, total) = links.up_count();
        let backlog = store::open_for_reading(&state_dir)
            .ok()
            .and_then(|conn| store::read_counters(&conn).ok())
            .map(|rows| {
                let mut t = store::Counters::default();
                for (_, c) in &rows {
                    t.add(c);
                }
                format!(
                    "backlog: {} awaiting the pipeline, {} pending upload; {} quarantined",
                    t.awaiting, t.pending_upload, t.quarantined
                )
            })
            .unwrap_or_else(|| "backlog: unknown (the store cannot be read)".into());
        format!("{up} of {total} sources up; {backlog}")
    })
}
