//! Dräger MEDIBUS over RS-232: ventilators and anaesthesia machines.
//!
//! Layout (a pure core; the port task in [`crate::serial`] is the I/O shell):
//! - [`frame`]: commands and responses, checksums, the resynchronising
//!   frame decoder (device-serial.md §1.2–1.3).
//! - [`poller`]: the requester's session as a state machine — ICC,
//!   identification, polling, keep-alive, echoes, re-initialisation after
//!   silence (§1.6).
//! - [`codes`]: data codes → MDC codes, UCUM units and labels (§1.5).
//!
//! The link is read-only data export: this driver never sends a command
//! that changes a device setting.

pub mod codes;
pub mod frame;
pub mod poller;

pub use frame::{Decoded, Frame, FrameDecoder, FrameKind};
pub use poller::{Action, Cycle, Identity, Poller, PollerOptions, Stats};
