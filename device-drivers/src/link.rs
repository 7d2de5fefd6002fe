//! Link state per source: one registry every source kind fills, read by the
//! daemon's status line, the status page and `/metrics`.
//!
//! A source publishes its state with [`Links::set`] when it changes (bound,
//! connected, port lost, broker down) and removes itself with
//! [`Links::remove`] when it is stopped for good. The registry holds no
//! message content: a state, a one-line detail written for an operator
//! (an address, a device path, the last error) and when the state began.
//!
//! Design: a mutex over a small map. Sources change state rarely (a
//! reconnect, not a message), readers copy a snapshot; nothing on the ACK
//! path touches it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The state of one source's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkState {
    /// Listening for peers (a server-side source such as MLLP or DICOM).
    Listening,
    /// Connected to its device or broker.
    Connected,
    /// Trying to (re)connect or reopen; the detail says why it is not up.
    Connecting,
    /// Down: not listening, the port is gone or the source stopped.
    Down,
}

impl LinkState {
    /// Every state, in the order of [`LinkState::as_str`]'s values.
    pub const ALL: [LinkState; 4] = [
        LinkState::Listening,
        LinkState::Connected,
        LinkState::Connecting,
        LinkState::Down,
    ];

    /// The state as a lowercase word (used as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Listening => "listening",
            LinkState::Connected => "connected",
            LinkState::Connecting => "connecting",
            LinkState::Down => "down",
        }
    }

    /// Whether the source can take data in this state.
    pub fn is_up(self) -> bool {
        matches!(self, LinkState::Listening | LinkState::Connected)
    }
}

/// One source's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The source kind (`mllp`, `serial`, `mqtt`, `dicom`).
    pub kind: &'static str,
    /// Its state.
    pub state: LinkState,
    /// One line for an operator: the bound address, the device, the last
    /// error. Never message content.
    pub detail: String,
    /// When the source entered this state.
    pub since: SystemTime,
}

/// The registry, shared by the sources and the daemon (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Links {
    inner: Arc<Mutex<BTreeMap<String, Link>>>,
}

impl Links {
    /// A new, empty registry.
    pub fn new() -> Links {
        Links::default()
    }

    /// Set a source's state. `since` only moves when the state changes.
    pub fn set(&self, source: &str, kind: &'static str, state: LinkState, detail: &str) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        let now = SystemTime::now();
        match map.get_mut(source) {
            Some(l) => {
                if l.state != state {
                    l.since = now;
                }
                l.kind = kind;
                l.state = state;
                if l.detail != detail {
                    l.detail = detail.to_string();
                }
            }
            None => {
                map.insert(
                    source.to_string(),
                    Link {
                        kind,
                        state,
                        detail: detail.to_string(),
                        since: now,
                    },
                );
            }
        }
    }

    /// Forget a source (it was removed from the configuration).
    pub fn remove(&self, source: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(source);
        }
    }

    /// A copy of every entry, by source name.
    pub fn snapshot(&self) -> BTreeMap<String, Link> {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// How many sources are up, of how many.
    pub fn up_count(&self) -> (usize, usize) {
        let snap = self.snapshot();
        let up = snap.values().filter(|l| l.state.is_up()).count();
        (up, snap.len())
    }
}

// ---- Change reports from sources that hold a connection (MQTT) --------
//
// A source calls its [`LinkReporter`] on every change; the daemon decides
// where the report goes (the `status` file and the registry above).

/// Whether a source's link is up, as the source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Trying to establish the link for the first time.
    Connecting,
    /// Up: data can flow.
    Connected,
    /// Down; the source retries with backoff.
    Disconnected,
}

impl LinkStatus {
    /// A stable lowercase name (`connecting`, `connected`, `disconnected`).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Connecting => "connecting",
            LinkStatus::Connected => "connected",
            LinkStatus::Disconnected => "disconnected",
        }
    }
}

/// One report: the new status, since when, and what the source knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport {
    /// The configured source name.
    pub source: Arc<str>,
    /// The status.
    pub status: LinkStatus,
    /// When the status began.
    pub since: SystemTime,
    /// The peer (e.g. `mqtt://127.0.0.1:1883`).
    pub peer: String,
    /// The last error, when disconnected.
    pub error: Option<String>,
}

/// Where sources send their link state.
pub type LinkReporter = Arc<dyn Fn(LinkReport) + Send + Sync>;

/// A reporter that only logs (tests, tools).
pub fn log_only() -> LinkReporter {
    Arc::new(|s: LinkReport| {
        tracing::debug!(source = %s.source, status = s.status.as_str(), peer = %s.peer, "link state");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_since_until_the_state_changes() {
        let links = Links::new();
        links.set("a", "mllp", LinkState::Listening, "127.0.0.1:1");
        let first = links.snapshot()["a"].since;
        links.set("a", "mllp", LinkState::Listening, "127.0.0.1:2");
        assert_eq!(links.snapshot()["a"].since, first);
        assert_eq!(links.snapshot()["a"].detail, "127.0.0.1:2");
        links.set("b", "serial", LinkState::Connecting, "no such device");
        assert_eq!(links.up_count(), (1, 2));
        links.remove("a");
        assert_eq!(links.up_count(), (0, 1));
    }
}
