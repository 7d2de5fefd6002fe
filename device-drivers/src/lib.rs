//! wardlink's sources: wire bytes in, [`Received`] items out.
//!
//! Layout:
//! - [`received`]: the contract with the store: [`Received`], the [`Reply`] a
//!   source waits for before it answers the sender, and the bounded submit
//!   channel ([`channel`], [`Submitter`]).
//! - [`dicom`]: the DICOM edge node — association negotiation, DIMSE
//!   command sets, the streaming C-STORE header scanner, MPPS, the Part 10
//!   header (pure), the listener and the spool of whole objects for
//!   `keep_files` (I/O).
//! - [`hl7`]: the cheap MSH reader used before the commit (delimiters,
//!   the fields needed to answer and to recognise a resend).
//! - [`mllp`]: HL7 v2 over MLLP — frame decoder, ACK builder (pure) and the
//!   listener, connection and client (I/O).
//! - [`medibus`]: Dräger MEDIBUS (pure): frames, the polling state machine,
//!   the data-code table.
//! - [`lines`]: ASCII line sensors (pure): bounded line decoding, key=value
//!   and CSV parsing to readings.
//! - [`serial`]: the serial port task (I/O): open, run a protocol, submit
//!   readings, reopen a vanished port with backoff, report link state.
//! - [`reading`]: the device-reading document ([`reading::ReadingDoc`]) that
//!   equipment sources (serial, MQTT) store as `Kind::Reading`.
//! - [`mqtt`]: MQTT subscriptions — payload decoder (pure), the source with
//!   commit-before-PUBACK and reconnect, and `tap`.
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

pub mod dicom;
pub mod hl7;
pub mod lines;
pub mod link;
pub mod logid;
pub mod medibus;
pub mod mllp;
pub mod mqtt;
pub mod reading;
pub mod received;
pub mod serial;
pub mod sim;

pub use received::{
    channel, Dedup, Header, Kind, Received, RefuseReason, Rejection, Reply, Staging, Submitter,
    ToStore,
};
