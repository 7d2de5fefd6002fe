//! Per-source link state (`connecting`, `connected`, `no_answer`,
//! `disconnected`, each with its "since"), published by the daemon in
//! `<state_dir>/links.json` for `wardlink status`. Generic: any source kind
//! whose peer can come and go (a serial port, a broker connection) reports
//! through the one [`LinkBoard`] of the daemon, which also keeps the
//! in-process registry ([`Links`]) that the status page, `/metrics` and the
//! systemd status line read up to date.
//!
//! Changes are rare (connects, drops), so each rewrites the small file
//! (write, rename); `status` reads it while the daemon runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wardlink_devices::link::{LinkReport, LinkReporter, LinkState, Links};

use crate::store::unix_ms;

/// The file in the state directory.
pub const LINKS_FILE: &str = "links.json";

/// One source's link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkInfo {
    /// `connecting`, `connected`, `no_answer` or `disconnected`.
    pub state: String,
    /// Since when (ms since the epoch).
    pub since_ms: i64,
    /// The peer, e.g. `mqtt://127.0.0.1:1883` or a serial port's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Why (the last error), or what is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The daemon's board of link states; cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkBoard {
    path: PathBuf,
    links: Arc<Mutex<BTreeMap<String, LinkInfo>>>,
    registry: Links,
}

impl LinkBoard {
    /// A board that publishes to `<state_dir>/links.json` (an old file is
    /// removed now, so `status` never shows a previous run's links).
    pub fn new(state_dir: &Path, registry: Links) -> Self {
        let board = Self {
            path: state_dir.join(LINKS_FILE),
            links: Arc::default(),
            registry,
        };
        let _ = std::fs::remove_file(&board.path);
        board
    }

    /// Record a source's state and publish the board (write, rename).
    /// A failed write is logged: status then shows an older state.
    pub fn set(&self, source: &str, kind: &'static str, info: LinkInfo) {
        let state = match info.state.as_str() {
            "connected" => LinkState::Connected,
            "connecting" | "no_answer" => LinkState::Connecting,
            _ => LinkState::Down,
        };
        let detail = match (&info.peer, &info.detail) {
            (Some(p), Some(d)) => format!("{p}: {d}"),
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => info.state.clone(),
        };
        self.registry.set(source, kind, state, &detail);
        self.publish(|links| {
            links.insert(source.to_owned(), info);
        });
    }

    /// Forget a source that the configuration no longer has.
    pub fn remove(&self, source: &str) {
        self.registry.remove(source);
        self.publish(|links| {
            links.remove(source);
        });
    }

    /// Change the board and write it out (write, rename). A failed write is
    /// logged: status then shows an older state.
    fn publish(&self, change: impl FnOnce(&mut BTreeMap<String, LinkInfo>)) {
        let json = {
            let mut links = match self.links.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            change(&mut links);
            serde_json::to_vec_pretty(&*links)
        };
        let written = json.map_err(std::io::Error::other).and_then(|json| {
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &self.path)
        });
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "Cannot publish link states");
        }
    }

    /// Record a serial port's state.
    pub fn set_serial(&self, source: &str, state: &wardlink_devices::serial::LinkState) {
        self.set(
            source,
            "serial",
            LinkInfo {
                state: state.status.as_str().to_owned(),
                since_ms: unix_ms(state.since),
                peer: None,
                detail: state.detail.clone(),
            },
        );
    }

    /// A reporter for sources that report through
    /// [`wardlink_devices::link`] (MQTT).
    pub fn reporter(&self) -> LinkReporter {
        let board = self.clone();
        Arc::new(move |s: LinkReport| {
            board.set(
                &s.source,
                "mqtt",
                LinkInfo {
                    state: s.status.as_str().to_owned(),
                    since_ms: unix_ms(s.since),
                    peer: Some(s.peer),
                    detail: s.error,
                },
            );
        })
    }
}

impl LinkBoard {
    /// Record a listening source (a DICOM node) in the registry only:
    /// `status` lists listeners from the runtime file already.
    pub fn listening(&self, source: &str, kind: &'static str, addr: &str) {
        self.registry.set(source, kind, LinkState::Listening, addr);
    }

    /// Record a listening source that could not bind (`detail` says why).
    pub fn not_listening(&self, source: &str, kind: &'static str, detail: &str) {
        self.registry.set(source, kind, LinkState::Down, detail);
    }
}

/// The published link states, if the file is there and readable.
pub fn read(state_dir: &Path) -> BTreeMap<String, LinkInfo> {
    std::fs::read(state_dir.join(LINKS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
