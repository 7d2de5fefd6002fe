//! The wardlink gateway: the daemon, the store, the pipeline and the command line.
//!
//! Layout:
//! - [`store`]: the SQLite store: schema migrations, the group-commit writer
//!   thread, the WAL checkpointer, and the read side used by `status`.
//! - [`pipeline`]: parse → validate → normalize → de-identify, a pure function
//!   from a stored raw message to events or a quarantine entry;
//!   [`processor`] runs it on stored messages, off the ACK path.
//! - [`sync`]: the gateway side of sync: the signing key (`wardlink
//!   keygen`), the sealer (outbox → signed batches) and the uploader
//!   (batches → collector, deleted after a verified receipt).
//! - [`demo`]: `wardlink demo`: a collector, this gateway and simulated
//!   senders on loopback, in one command.
//! - [`status`]: the accounting report of `wardlink status` (text and JSON)
//!   and the runtime file the daemon publishes its bound addresses in.
//! - [`daemon`]: the lifecycle: open the store, bind, serve, stop cleanly;
//!   [`serial`] starts the serial port tasks and [`links`] publishes each
//!   source's link state for `status`.
//!   [`dicom_source`]: its `[[source.dicom]]` listeners.
//! - [`quarantine`]: list, show, release and drop quarantined messages;
//!   [`review`]: `wardlink deid`, the de-identification review of sample files.
//! - [`settings`]: from the validated config to the pipeline's settings and keys.
//! - [`simulate`]: `wardlink simulate` (device simulators on real ports);
//!   [`tap`]: `wardlink tap`, a source's decoded readings printed live.
//! - [`admin`]: the local admin endpoint: the status page and `/metrics`.
//! - [`notify`]: the systemd notify protocol (ready, status line, watchdog);
//!   [`sources`]: the supervisor that starts, reloads and stops the sources.
//! - [`cli`]: the command-line definition; [`cli_docs`]: the manual pages
//!   and shell completions generated from it; [`logging`]: tracing to stderr.
//!
//! The binary (`src/main.rs`) is glue: it parses the command line, loads the
//! configuration and calls into these modules.

pub mod admin;
pub mod cli;
pub mod cli_docs;
pub mod cli_tools;
pub mod daemon;
pub mod demo;
pub mod dicom_source;
pub mod equipment;
pub mod links;
pub mod logging;
pub mod mqtt;
pub mod notify;
pub mod pipeline;
pub mod processor;
pub mod quarantine;
pub mod review;
pub mod serial;
pub mod settings;
pub mod simulate;
pub mod sources;
pub mod status;
pub mod store;
pub mod sync;
pub mod tap;
