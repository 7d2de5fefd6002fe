//! Serial ports (I/O shell): open the port, run its protocol, hand each
//! decoded reading set on, and keep trying when the port goes away.
//!
//! Layout:
//! - this file: [`SerialOptions`], the link state ([`LinkState`]) and the
//!   [`PortSink`] a port delivers into — [`StoreSink`] (the daemon: submit to
//!   the store and wait for the reply) or the `tap` printer in the gateway.
//! - `port`: [`run_port`] — open with the configured settings, run a
//!   session, reopen with exponential backoff after an open, read or write
//!   error (a USB adapter unplugged), stop on shutdown.
//!
//! Design:
//! - One task per port. Within a session exactly one thing happens at a
//!   time: read, feed the pure protocol core ([`crate::medibus::Poller`] or
//!   [`crate::lines`]), write its answers, deliver. Delivery waits for the
//!   store's reply before the session reads on, so a slow store slows
//!   polling (back-pressure) and never grows a queue.
//! - A MEDIBUS frame with a bad checksum is not a unit of data: it is
//!   counted, logged and dropped, and the device is polled again. A `lines`
//!   line that cannot be read is still delivered, with the reason.
//! - The link state (`connected`, `no_answer`, `disconnected`, each with
//!   its "since") goes to the sink on every change, for `wardlink status`.

mod port;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::lines::LinesOptions;
use crate::medibus::PollerOptions;
use crate::reading::{ReadingDoc, ReadingLocation};
use crate::{Header, Kind, Received, Reply, Submitter};

pub use port::run_port;

#[cfg(test)]
mod tests;
pub use tokio_serial::{DataBits, FlowControl, Parity, StopBits};

/// The protocol spoken on a port, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// Dräger MEDIBUS: wardlink polls.
    Medibus(PollerOptions),
    /// ASCII lines the device prints by itself.
    Lines {
        /// How to read them.
        options: LinesOptions,
        /// No byte for this long: the link shows `no_answer`.
        silent_timeout: Duration,
    },
}

impl Protocol {
    /// `medibus` or `lines`, as in the reading document.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Medibus(_) => "medibus",
            Protocol::Lines { .. } => "lines",
        }
    }
}

/// Everything a port task needs.
#[derive(Debug, Clone)]
pub struct SerialOptions {
    /// The configured source name.
    pub name: Arc<str>,
    /// The device path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Data bits.
    pub data_bits: DataBits,
    /// Parity.
    pub parity: Parity,
    /// Stop bits.
    pub stop_bits: StopBits,
    /// Flow control.
    pub flow_control: FlowControl,
    /// The protocol.
    pub protocol: Protocol,
    /// First wait before reopening; doubles per failure.
    pub reopen_backoff_min: Duration,
    /// Longest wait before reopening.
    pub reopen_backoff_max: Duration,
    /// The configured device id (overrides what MEDIBUS identification says).
    pub device_id: Option<String>,
    /// Where the device is.
    pub location: ReadingLocation,
}

/// The state of a port's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// The port is open and the device talks.
    Connected,
    /// The port is open but the device has been silent (MEDIBUS:
    /// re-initialising with ICC).
    NoAnswer,
    /// The port cannot be opened or failed; reopening with backoff.
    Disconnected,
}

impl LinkStatus {
    /// `connected`, `no_answer` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Connected => "connected",
            LinkStatus::NoAnswer => "no_answer",
            LinkStatus::Disconnected => "disconnected",
        }
    }
}

/// A link state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The new state.
    pub status: LinkStatus,
    /// Since when.
    pub since: SystemTime,
    /// Why (the open or read error; the device identification when connected).
    pub detail: Option<String>,
}

/// Which way bytes went, for [`PortSink::wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the device.
    Out,
    /// Read from the device.
    In,
}

/// Where a port delivers. The daemon's is [`StoreSink`]; `wardlink tap`
/// prints instead.
pub trait PortSink: Send {
    /// Deliver one reading set and wait until it is taken care of. `false`
    /// when it was not stored (logged by the sink); the session goes on.
    fn deliver(
        &mut self,
        doc: ReadingDoc,
        received_at: SystemTime,
    ) -> impl Future<Output = bool> + Send;

    /// The link changed.
    fn link(&mut self, state: &LinkState);

    /// Bytes on the wire (for `tap --raw`); the default ignores them.
    fn wire(&mut self, _direction: Direction, _bytes: &[u8]) {}

    /// Something was dropped or went wrong below the level of a reading
    /// (a bad checksum, garbage, an over-long line); the default ignores it.
    fn note(&mut self, _what: &str) {}
}

/// The daemon's sink: each reading set becomes a [`Received`] of kind
/// [`Kind::Reading`], submitted to the store; the link state goes to
/// `on_link`.
pub struct StoreSink<F> {
    source: Arc<str>,
    submitter: Submitter,
    on_link: F,
}

impl<F: FnMut(&str, &LinkState) + Send> StoreSink<F> {
    /// A sink for source `source` that calls `on_link(source, state)` on
    /// every link change.
    pub fn new(source: Arc<str>, submitter: Submitter, on_link: F) -> Self {
        Self {
            source,
            submitter,
            on_link,
        }
    }
}

impl<F: FnMut(&str, &LinkState) + Send> PortSink for StoreSink<F> {
    async fn deliver(&mut self, doc: ReadingDoc, received_at: SystemTime) -> bool {
        let device: Option<Arc<str>> = doc.device.as_deref().map(Arc::from);
        let received = Received {
            source: self.source.clone(),
            device: device.clone(),
            received_at,
            kind: Kind::Reading,
            bytes: Bytes::from(doc.to_bytes()),
            header: Header {
                message_type: Some("reading".to_owned()),
                sender: doc.device.clone(),
                ..Header::default()
            },
            dedup: None,
            answer: None,
        };
        match self.submitter.submit(received).await {
            Reply::Stored { .. } | Reply::Duplicate { .. } => true,
            Reply::Refused { reason } => {
                tracing::warn!(source = %self.source, %reason, "Reading set not stored; the device is polled again");
                false
            }
            Reply::Invalid { reason } => {
                tracing::warn!(source = %self.source, %reason, "Reading set refused as invalid");
                false
            }
        }
    }

    fn link(&mut self, state: &LinkState) {
        (self.on_link)(&self.source, state);
    }
}
