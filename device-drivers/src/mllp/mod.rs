//! HL7 v2 over MLLP: the hospital systems' source.
//!
//! Layout (a pure core, a thin I/O shell):
//! - [`codec`] (pure): [`MllpCodec`], the bounded, resynchronising frame
//!   decoder (hl7v2-mllp.md §1).
//! - [`ack`] (pure): the answers — HL7 ACKs with the right codes, MSA-2 and
//!   ERR (§3), and MLLP R2 commit blocks.
//! - `connection` (I/O): one socket and its buffer; read, write, linger.
//! - `listener` (I/O): [`MllpListener`] — accept under a connection limit,
//!   one task per connection, submit each frame to the store, answer after
//!   the reply, shut down cleanly.
//! - [`tls`] (I/O): MLLP over TLS (rustls): the server configuration from
//!   PEM files, the accept that closes plain senders, the stream type.
//! - `client` (I/O): [`MllpClient`], for tests, benchmarks and the
//!   simulator.
//!
//! The header is read with [`crate::hl7`] before the commit: just enough to
//! answer and to recognise a resend. The message's bytes are stored exactly
//! as framed; [`crate::Received::answer`] holds the positive HL7 ACK, **not
//! MLLP-framed** (no `0B`/`1C 0D`), so a resend can be answered with exactly
//! the same message.

pub mod ack;
mod client;
pub mod codec;
mod connection;
pub(crate) mod listener;
pub mod tls;

pub use ack::{AckCode, AckLevel, AckPlan, ErrDetail};
pub use client::{ClientError, MllpClient, DEFAULT_TIMEOUT};
pub use codec::{Decoded, DiscardReason, MllpCodec};
pub use listener::{BindError, MllpListener, MllpOptions, MllpUpdater, WRITE_TIMEOUT_WITHOUT_IDLE};

#[cfg(test)]
mod tests;
