//! MQTT: bed sensors and other equipment publishing to a broker.
//!
//! Layout (a pure core, a thin I/O shell):
//! - [`decode`] (pure): topic template + payload (JSON by pointer, number,
//!   flag) → [`crate::reading::ReadingDoc`]; an undecodable payload becomes a
//!   document with `error` (stored, then quarantined with the reason).
//! - `options` (files at start): rumqttc options — broker, credentials,
//!   TLS on rustls/ring, keep-alive, persistent session, manual acks.
//! - `source` (I/O): [`MqttSourceTask`] — the event loop, commit before
//!   PUBACK, reconnect with backoff, link state.
//! - `tap` (I/O): [`tap()`], the live view for `wardlink tap`.
//!
//! Messages are taken at QoS 1; a PUBACK is sent only after the store
//! answered `Stored` or `Duplicate` (architecture.md invariant 1).

pub mod decode;
mod options;
mod source;
mod tap;

pub use options::{peer, OptionsError};
pub use source::{MqttSourceTask, BACKOFF_MAX, BACKOFF_MIN, DUP_WINDOW};
pub use tap::{tap, TapEvent};
