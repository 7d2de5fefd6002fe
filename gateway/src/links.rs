//! Link state of connected sources (MQTT brokers, serial ports) for
//! `wardlink status`: "connected since …" / "disconnected since … (error)".
//!
//! The daemon keeps the latest state of each source in a [`LinkBoard`] and
//! rewrites [`LINKS_FILE`] in the state directory (write, rename) on every
//! change; `status` reads it while the daemon runs. Changes are rare
//! (connects, drops), so one small file write each is cheap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wardlink_devices::link::{LinkReporter, LinkState};

use crate::store::unix_ms;

/// The file in the state directory.
pub const LINKS_FILE: &str = "links.json";

/// One source's link, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkInfo {
    /// The source's name.
    pub source: String,
    /// `connecting`, `connected` or `disconnected`.
    pub status: String,
    /// Since when (ms since the epoch).
    pub since_ms: i64,
    /// The peer, e.g. `mqtt://127.0.0.1:1883`.
    pub peer: String,
    /// The last error, when disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The daemon's collection of link states.
#[derive(Debug)]
pub struct LinkBoard {
    path: PathBuf,
    links: Mutex<BTreeMap<String, LinkInfo>>,
}

impl LinkBoard {
    /// A board writing into `state_dir`.
    pub fn new(state_dir: &Path) -> Arc<LinkBoard> {
        Arc::new(LinkBoard {
            path: state_dir.join(LINKS_FILE),
            links: Mutex::new(BTreeMap::new()),
        })
    }

    /// A reporter for sources.
    pub fn reporter(self: &Arc<Self>) -> LinkReporter {
        let board = self.clone();
        Arc::new(move |s: LinkState| board.update(&s))
    }

    fn update(&self, s: &LinkState) {
        let info = LinkInfo {
            source: s.source.to_string(),
            status: s.status.as_str().to_owned(),
            since_ms: unix_ms(s.since),
            peer: s.peer.clone(),
            error: s.error.clone(),
        };
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.insert(info.source.clone(), info);
        let all: Vec<&LinkInfo> = links.values().collect();
        if let Err(e) = write(&self.path, &all) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the link state file");
        }
    }
}

fn write(path: &Path, links: &[&LinkInfo]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(links).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// The link states the daemon last wrote (empty if none).
pub fn read(state_dir: &Path) -> Vec<LinkInfo> {
    std::fs::read(state_dir.join(LINKS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
