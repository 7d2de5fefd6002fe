//! Link state of sources that keep a connection to a peer (an MQTT broker,
//! a serial port): what `wardlink status` shows as "connected since" or
//! "disconnected since".
//!
//! A source reports every change through a [`LinkReporter`]; the gateway
//! decides where it goes (a file next to the runtime file that `status`
//! reads). Reporting never blocks and never fails the source.

use std::sync::Arc;
use std::time::SystemTime;

/// Whether a source's link is up.
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
pub struct LinkState {
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
pub type LinkReporter = Arc<dyn Fn(LinkState) + Send + Sync>;

/// A reporter that only logs (tests, tools).
pub fn log_only() -> LinkReporter {
    Arc::new(|s: LinkState| {
        tracing::debug!(source = %s.source, status = s.status.as_str(), peer = %s.peer, "link state");
    })
}
