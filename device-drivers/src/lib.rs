//! wardlink's sources: wire bytes in, [`Received`] items out.
//!
//! Layout:
//! - [`received`]: the contract with the store: [`Received`], the [`Reply`] a
//!   source waits for before it answers the sender, and the bounded submit
//!   channel ([`channel`], [`Submitter`]).
//! - [`hl7`]: the cheap MSH reader used before the commit (delimiters,
//!   the fields needed to answer and to recognise a resend).
//! - [`mllp`]: HL7 v2 over MLLP — frame decoder, ACK builder (pure) and the
//!   listener, connection and client (I/O).
//! - [`link`]: the per-source link-state registry every source kind fills
//!   (listening, connected, connecting, down), read by status and metrics.
//! - [`logid`]: identifiers as logged (hashed control ids).
//! - [`sim`]: message generators for tests, benchmarks and `wardlink simulate`.
//!
//! Every source follows the same shape: a pure protocol core (frame decoder,
//! answer builder) that tests, simulators and fuzzers use alone, and a thin
//! I/O shell (listener, port task) that drives it. A source never blocks on
//! the network upstream; back-pressure comes only from the store.
#![deny(missing_docs)]

pub mod hl7;
pub mod link;
pub mod logid;
pub mod mllp;
pub mod received;
pub mod sim;

pub use received::{
    channel, Dedup, Header, Kind, Received, RefuseReason, Rejection, Reply, Submitter, ToStore,
};
