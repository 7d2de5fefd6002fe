//! wardlink's wire contract with the central collector.
//!
//! Layout:
//! - [`event`]: the normalized, de-identified [`Event`] the gateway's pipeline
//!   produces and the sealer, uploader and collector consume (JSON via serde;
//!   every field is documented in `docs/data-dictionary.md`).
//!
//! A later change adds the batch format (seal, sign, verify) and the
//! uploader here. This crate never depends on `gateway`: the producer of an
//! interface is `gateway`'s pipeline, but the schema is the contract, so it
//! lives with the side that ships it off the box.
#![deny(missing_docs)]

pub mod event;

pub use event::{
    AdtAction, AdtBody, Body, Code, Event, Hl7OtherBody, Issue, Location, ObservationBody,
    OtherSegment, Severity, Text, SCHEMA_VERSION,
};
