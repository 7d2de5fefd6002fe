//! Device simulators: the pure generators behind tests, benchmarks and
//! `wardlink simulate`.
//!
//! Layout:
//! - [`hl7`]: HL7 v2 messages (ORU^R01 vitals, ADT^A01/A02/A03). Send them
//!   with [`crate::mllp::MllpClient`].
//! - [`medibus`]: a MEDIBUS ventilator answering a requester, with faults
//!   to inject.
//! - [`pty`]: a simulated device on a real pseudo-terminal pair (I/O).
//! - [`bed_sensors`]: bed occupancy, weight and vital-sign sensors
//!   publishing to MQTT, and the `[[source.mqtt]]` that reads them.

pub mod bed_sensors;
pub mod hl7;
pub mod medibus;
pub mod pty;

pub use hl7::{AdtEvent, Hl7Generator};
pub use medibus::{MedibusSim, SimFaults};
