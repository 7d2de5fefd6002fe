//! DICOM edge node: Verification (C-ECHO), Storage (C-STORE) and Modality
//! Performed Procedure Step (N-CREATE / N-SET) as an SCP.
//!
//! Layout, pure parts first (protocols/dicom-edge.md is the reference):
//! - [`uids`]: the SOP classes served and the transfer syntaxes read.
//! - [`negotiate`]: A-ASSOCIATE-RQ → AC or RJ (PS3.8 §9.3.2–9.3.4), every
//!   presentation context answered.
//! - [`command`]: DIMSE command sets read and written by hand (PS3.7 §9.3).
//! - [`dataset`]: the streaming header scanner: keeps what comes before
//!   Pixel Data, counts the rest (PS3.5 §7).
//! - [`mpps`]: the MPPS state machine and its statuses (PS3.4 F.7).
//! - [`part10`]: the Part 10 file header (preamble, `DICM`, group 0002).
//! - [`stored`]: the Part 10 envelope stored for each unit.
//! - [`spool`]: whole objects kept as files (`keep_files`): partial files,
//!   fsync and rename, the quota (oldest evicted) and the retention.
//! - `listener`: the I/O shell — accept, associations, responses after the
//!   store's reply. dicom-ul 0.10 supplies the PDU types and their
//!   encoding ([`dicom_ul::pdu::read_pdu`], [`dicom_ul::pdu::write_pdu`]);
//!   the association state machine is ours, so that a response is sent only
//!   after the commit and the memory stays bounded while pixels stream by.

pub mod command;
pub mod dataset;
mod listener;
pub mod mpps;
pub mod negotiate;
pub mod part10;
pub mod spool;
pub mod stored;
pub mod uids;

pub use listener::{BindError, DicomListener, DicomOptions, DUPLICATE_WINDOW};
