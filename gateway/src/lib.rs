//! The wardlink gateway daemon.

/// Parse, validate, normalize and de-identify stored messages into events.
pub mod pipeline;
