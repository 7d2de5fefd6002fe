//! wardlink's wire contract with the central collector.
//!
//! Layout:
//! - [`event`]: the normalized, de-identified [`Event`] the gateway's pipeline
//!   produces and the sealer, uploader and collector consume (JSON via serde;
//!   every field is documented in `docs/data-dictionary.md`).
//! - [`batch`]: the batch format (`docs/batch-format.md`): sealing events
//!   into a signed, hash-chained batch, its wire encoding, and verification.
//! - [`keys`]: Ed25519 key files (mode 0600), printable public keys and the
//!   gateway id derived from a key.
//! - [`receipt`]: the collector's signed receipt for a stored batch, which
//!   the gateway checks before it deletes anything.
//! - `collector` (feature `collector`, on by default): the collector's
//!   config, storage trait, SQLite store and HTTP API; the binary
//!   `wardlink-collector` is glue around it.
//!
//! This crate never depends on `gateway`: the schema and the batch format are
//! the contract between the box and the collector, so they live with the side
//! that ships data off the box. Batch bodies carry events as opaque JSON
//! objects; the only fields the batch layer reads are `event_id` (and `type`,
//! for feeds).
#![deny(missing_docs)]

pub mod batch;
#[cfg(feature = "collector")]
pub mod collector;
pub mod event;
mod hex;
pub mod keys;
pub mod receipt;

pub use event::{
    AdtAction, AdtBody, Body, Code, Equipment, Event, Hl7OtherBody, ImagingInstanceBody,
    ImagingStudyBody, Issue, Location, ObservationBody, OtherSegment, ProcedureStepBody, Severity,
    Text, SCHEMA_VERSION,
};
