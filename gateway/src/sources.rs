//! The source supervisor: starts every configured source, knows what runs,
//! publishes each one's link state, and stops them.
//!
//! Every source kind is started here (one `start_*` per kind), so the
//! daemon's lifecycle code does not change when a kind is added, and a
//! reload (SIGHUP) compares the running set with the new configuration in
//! one place.
//!
//! Reload ([`Sources::reload`], on SIGHUP): everything that can fail is
//! done before anything changes (TLS files read, new listeners bound), so
//! a reload that fails leaves every source as it was. Then: a source whose
//! `listen` is unchanged keeps its socket and connections and gets its new
//! options (allowlist, limits, duplicate window, TLS certificates) for the
//! connections it accepts from then on; a removed source stops accepting,
//! answers the frames whose commit is pending and closes; a source whose
//! address changed is removed and added. A frame in flight is always
//! answered (the submitter outlives every connection).
//!
//! Invariants:
//! - A source is in [`Sources::running`] from the moment it is bound until
//!   its task has returned; its link state is in the shared [`Links`].
//! - The supervisor holds a [`Submitter`] clone; the store writer stops only
//!   after [`Sources::stop`] dropped it and every source task returned.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, MllpSource};
use wardlink_devices::link::{LinkState, Links};
use wardlink_devices::mllp::{MllpListener, MllpOptions, MllpUpdater};
use wardlink_devices::Submitter;

use crate::status::ListenerInfo;

/// The listener options of a configured MLLP source, with its TLS
/// certificates read from their files.
///
/// # Errors
/// A TLS file cannot be read or used.
pub fn mllp_options(s: &MllpSource) -> anyhow::Result<MllpOptions> {
    let tls = match &s.tls {
        None => None,
        Some(t) => Some(
            wardlink_devices::mllp::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
                .map_err(|e| anyhow::anyhow!("source.mllp `{}`: {e}", s.name))?,
        ),
    };
    Ok(MllpOptions {
        name: Arc::from(s.name.as_str()),
        listen: s.listen,
        allow: s.allow.clone(),
        max_connections: s.max_connections,
        max_message_bytes: s.max_message_bytes,
        idle_timeout: s.idle_timeout,
        duplicate_window: s.duplicate_window,
        commit_blocks: s.commit_blocks,
        tls,
    })
}

/// Bind an MLLP source's listener (its TLS files read).
async fn bind_mllp(source: &MllpSource) -> anyhow::Result<MllpListener> {
    let options = mllp_options(source)?;
    MllpListener::bind(options).await.map_err(|e| {
        anyhow::Error::new(e).context(format!("source.mllp `{}`: cannot listen", source.name))
    })
}

/// One running source.
struct Running {
    /// Its kind (`mllp`).
    kind: &'static str,
    /// Its configuration, to compare with a reloaded one.
    config: MllpSource,
    /// Changes its options in place.
    updater: MllpUpdater,
    /// The address it is bound to.
    addr: SocketAddr,
    /// Cancelled to stop this source alone.
    stop: CancellationToken,
    /// Its task.
    task: JoinHandle<()>,
}

/// Every running source.
pub struct Sources {
    /// Where the sources submit (the supervisor keeps a clone for sources
    /// started later).
    submitter: Option<Submitter>,
    /// The shared link-state registry.
    links: Links,
    /// By source name.
    running: BTreeMap<String, Running>,
}

impl Sources {
    /// Bind and start every source of `config`.
    ///
    /// # Errors
    /// A listener cannot bind (the sources already started are stopped).
    pub async fn start(
        config: &Config,
        submitter: Submitter,
        links: Links,
    ) -> anyhow::Result<Sources> {
        let mut sources = Sources {
            submitter: Some(submitter),
            links,
            running: BTreeMap::new(),
        };
        for source in &config.sources.mllp {
            if let Err(e) = sources.start_mllp(source).await {
                sources.stop(Duration::from_secs(1)).await;
                return Err(e);
            }
        }
        Ok(sources)
    }

    /// The shared link-state registry.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Every bound listener, for the runtime file and `status`.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.running
            .iter()
            .map(|(name, r)| ListenerInfo {
                source: name.clone(),
                kind: r.kind.into(),
                addr: r.addr.to_string(),
            })
            .collect()
    }

    async fn start_mllp(&mut self, source: &MllpSource) -> anyhow::Result<()> {
        let listener = bind_mllp(source).await?;
        self.run_mllp(source, listener)
    }

    /// Start serving a bound listener.
    fn run_mllp(&mut self, source: &MllpSource, listener: MllpListener) -> anyhow::Result<()> {
        let Some(submitter) = self.submitter.clone() else {
            anyhow::bail!("the sources are stopping");
        };
        let addr = listener.local_addr();
        tracing::info!(source = %source.name, %addr, tls = source.tls.is_some(), "mllp listener bound");
        self.links.set(
            &source.name,
            "mllp",
            LinkState::Listening,
            &addr.to_string(),
        );
        let stop = CancellationToken::new();
        let links = self.links.clone();
        let name = source.name.clone();
        let token = stop.clone();
        let updater = listener.updater();
        let task = tokio::spawn(async move {
            listener.run(submitter, token).await;
            links.set(&name, "mllp", LinkState::Down, "stopped");
        });
        self.running.insert(
            source.name.clone(),
            Running {
                kind: "mllp",
                config: source.clone(),
                updater,
                addr,
                stop,
                task,
            },
        );
        Ok(())
    }

    /// Apply the sources of a reloaded configuration (see the module doc).
    /// Returns one line per change, for the log.
    ///
    /// # Errors
    /// A new source cannot bind or a TLS file cannot be used: nothing was
    /// changed.
    pub async fn reload(&mut self, config: &Config) -> anyhow::Result<Vec<String>> {
        let wanted: BTreeMap<&str, &MllpSource> = config
            .sources
            .mllp
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        // 1. Everything that can fail, before anything changes.
        let mut updates = Vec::new();
        let mut moved = Vec::new();
        let mut added = Vec::new();
        for (name, source) in &wanted {
            match self.running.get(*name) {
                Some(r) if r.config.listen == source.listen => {
                    // TLS files are re-read on every reload: renewed
                    // certificates keep their paths.
                    if r.config != **source || source.tls.is_some() {
                        updates.push((source, mllp_options(source)?));
                    }
                }
                Some(r) => {
                    // A new address: bind it now if it is free; if it is
                    // the same port (only the IP changed), the old socket
                    // must close first.
                    let same_port = r.config.listen.port() == source.listen.port();
                    match bind_mllp(source).await {
                        Ok(l) => moved.push((*source, Some(l))),
                        Err(_) if same_port => {
                            mllp_options(source)?;
                            moved.push((*source, None));
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => added.push(*source),
            }
        }
        let mut bound = Vec::new();
        for source in added {
            bound.push((source, bind_mllp(source).await?));
        }
        // 2. Apply.
        let mut changes = Vec::new();
        for (source, options) in updates {
            if let Some(r) = self.running.get_mut(&source.name) {
                r.updater.update(options);
                let what = if r.config == **source {
                    "TLS certificates re-read"
                } else {
                    "changed"
                };
                r.config = (*source).clone();
                changes.push(format!(
                    "source {}: {what} (new connections use it)",
                    source.name
                ));
            }
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.stop_one(&name).await;
            self.links.remove(&name);
            changes.push(format!("source {name} removed"));
        }
        for (source, listener) in bound {
            self.run_mllp(source, listener)?;
            changes.push(format!("source {} added", source.name));
        }
        for (source, listener) in moved {
            self.stop_one(&source.name).await;
            // The old socket is closed once its task has returned.
            let listener = match listener {
                Some(l) => l,
                None => bind_mllp(source).await?,
            };
            self.run_mllp(source, listener)?;
            changes.push(format!("source {} moved to {}", source.name, source.listen));
        }
        Ok(changes)
    }

    /// Stop one source and wait for its connections (a frame in flight is
    /// answered), at most [`crate::daemon::SHUTDOWN_DEADLINE`].
    async fn stop_one(&mut self, name: &str) {
        let Some(mut r) = self.running.remove(name) else {
            return;
        };
        r.stop.cancel();
        if tokio::time::timeout(crate::daemon::SHUTDOWN_DEADLINE, &mut r.task)
            .await
            .is_err()
        {
            tracing::warn!(source = name, "source did not stop in time; aborting it");
            r.task.abort();
        }
    }

    /// Stop every source: no new connections; frames whose commit is pending
    /// are answered. Sources still running after `deadline` are aborted
    /// (nothing acknowledged is at risk). Drops the supervisor's submitter.
    pub async fn stop(&mut self, deadline: Duration) {
        self.submitter = None;
        let running = std::mem::take(&mut self.running);
        for r in running.values() {
            r.stop.cancel();
        }
        let mut late = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        for (name, mut r) in running {
            if tokio::time::timeout_at(until, &mut r.task).await.is_err() {
                late.push(name);
                r.task.abort();
                let _ = r.task.await;
            }
        }
        if !late.is_empty() {
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                sources = ?late,
                "sources did not stop in time; exiting anyway (nothing acknowledged is lost)"
            );
        }
    }
}
