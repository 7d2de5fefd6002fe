//! The source supervisor: starts every configured source, knows what runs,
//! publishes each one's link state, and stops them.
//!
//! Every source kind is started here (one `start_*` per kind), so the
//! daemon's lifecycle code does not change when a kind is added, and a
//! reload (SIGHUP) compares the running set with the new configuration in
//! one place.
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
use wardlink_devices::mllp::{MllpListener, MllpOptions};
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

/// One running source.
struct Running {
    /// Its kind (`mllp`).
    kind: &'static str,
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
        let Some(submitter) = self.submitter.clone() else {
            anyhow::bail!("the sources are stopping");
        };
        let listener = MllpListener::bind(mllp_options(source)?)
            .await
            .map_err(|e| {
                anyhow::Error::new(e)
                    .context(format!("source.mllp `{}`: cannot listen", source.name))
            })?;
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
        let task = tokio::spawn(async move {
            listener.run(submitter, token).await;
            links.set(&name, "mllp", LinkState::Down, "stopped");
        });
        self.running.insert(
            source.name.clone(),
            Running {
                kind: "mllp",
                addr,
                stop,
                task,
            },
        );
        Ok(())
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
