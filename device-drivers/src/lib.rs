//! wardlink's sources: wire bytes in, [`Received`] items out.
//!
//! Layout:
//! - [`received`]: the contract with the store: [`Received`], the [`Reply`] a
//!   source waits for before it answers the sender, and the bounded submit
//!   channel ([`channel`], [`Submitter`]).
//!
//! Every source follows the same shape: a pure protocol core (frame decoder,
//! answer builder) that tests, simulators and fuzzers use alone, and a thin
//! I/O shell (listener, port task) that drives it. A source never blocks on
//! the network upstream; back-pressure comes only from the store.
#![deny(missing_docs)]

pub mod received;

pub use received::{
    channel, Dedup, Header, Kind, Received, RefuseReason, Rejection, Reply, Submitter, ToStore,
};
