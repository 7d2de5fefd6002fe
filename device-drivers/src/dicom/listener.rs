//! The DICOM listener: accept associations, answer C-ECHO, C-STORE and MPPS
//! after the store's reply.
//!
//! The I/O shell around the pure parts ([`super::negotiate`],
//! [`super::command`], [`super::dataset`], [`super::mpps`],
//! [`super::stored`]). One task per association; the association is a loop
//! that reads one PDU (PS3.8 §9.3, header checked before the body is read),
//! turns it into an [`Event`] and handles it after the `select!`.
//!
//! Invariants:
//! - **Success only after `Reply::Stored` (or `Duplicate`)** (architecture.md
//!   invariant 1): a C-STORE or MPPS data set is submitted only when its last
//!   fragment has arrived, and the response is sent after the reply. An
//!   A-ABORT, a closed socket or a malformed PDU before that stores nothing.
//! - **Bounded memory**: one PDU of at most `max_pdu` bytes at a time, the
//!   header of one object (at most `max_header_bytes`); Pixel Data is only
//!   counted — or, with `keep_files`, streamed fragment by fragment into the
//!   object's file in the [`super::spool`]. Associations are limited to
//!   `max_associations`; one more is rejected (transient, "local limit
//!   exceeded") so the modality retries.
//! - **With `keep_files`, success also means the whole object's file is
//!   durable**: it is kept (fsync'd and renamed) before the header is
//!   submitted, and deleted again if the store refuses the header. A spool
//!   that cannot keep it (disk full, permissions, quota) gets 0xA700 and
//!   nothing is submitted.
//! - **Every request gets a response**: a data set that cannot be parsed
//!   gets 0xC000, a full store 0xA700, and the association goes on.
//! - **Timeouts everywhere**: ARTIM for the A-ASSOCIATE-RQ and for the peer
//!   to close after a reject or release, `idle_timeout` between PDUs and for
//!   every write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::pdu::{
    read_pdu, write_pdu, AbortRQServiceProviderReason, AbortRQSource, AssociationRJ,
    AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    MAXIMUM_PDU_SIZE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::{self, field, status, Command, Response};
use super::dataset::{Finished, HeaderScanner};
use super::mpps::{Book, StepState};
use super::negotiate::{negotiate, user_reject, Accepted, Negotiated, Policy};
use super::part10::FileMeta;
use super::spool::{self, Spool, SpoolError, SpoolFile};
use super::stored::Envelope;
use super::uids;
use crate::logid::Hashed;
use crate::mllp::listener::{
    accept_error_class, is_allowed, AcceptError, ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN,
    FD_EXHAUSTED_PAUSE,
};
use crate::received::{
    Dedup, Header, Kind, Received, RefuseReason, Rejection, Reply, Staging, Submitter,
};

/// How a DICOM source listens and what it accepts.
#[derive(Debug, Clone)]
pub struct DicomOptions {
    /// The source's configured name.
    pub name: Arc<str>,
    /// The called AE title answered.
    pub ae_title: String,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Sender networks allowed; empty = any.
    pub allow: Vec<ipnet::IpNet>,
    /// Calling AE titles allowed; empty = any.
    pub allow_ae: Vec<String>,
    /// Associations served at once.
    pub max_associations: usize,
    /// Largest PDU read (announced as Maximum Length).
    pub max_pdu: u32,
    /// Largest header (attributes before Pixel Data) kept from one object.
    pub max_header_bytes: usize,
    /// An association without a PDU for this long is aborted.
    pub idle_timeout: Duration,
    /// ARTIM timer (PS3.8 §9.1.5).
    pub artim_timeout: Duration,
    /// Ward and room of the equipment (copied into the envelope).
    pub ward: String,
    /// See `ward`.
    pub room: String,
    /// Device id per calling AE title.
    pub devices: BTreeMap<String, String>,
    /// MPPS steps already stored (instance UID, state after it), oldest
    /// first, so that N-SETs after a restart find their N-CREATE.
    pub mpps_known: Vec<(String, StepState)>,
    /// Keep every C-STORE object whole in this spool (`None`: header only).
    pub keep_files: Option<wardlink_config::KeepFiles>,
}

/// A resend of the same SOP instance within this window is answered
/// success without being stored twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest non-P-DATA PDU read (an A-ASSOCIATE-RQ with many contexts).
const MAX_CONTROL_PDU: u32 = 256 * 1024;
/// Largest command set assembled.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Rejecting tasks beyond the association limit, at most this many at once
/// (more connections are closed without an answer).
const MAX_REJECTING: usize = 16;

/// The listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spool of `keep_files` could not be opened.
    #[error("cannot open the spool of keep_files_dir")]
    Spool(#[source] SpoolError),
}

/// A bound DICOM listener, ready to [`run`](DicomListener::run).
#[derive(Debug)]
pub struct DicomListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    options: DicomOptions,
    spool: Option<Arc<Spool>>,
}

impl DicomListener {
    /// Open the spool (with `keep_files`) and bind the listening socket.
    ///
    /// # Errors
    /// [`BindError::Spool`] when the spool directory cannot be created,
    /// secured or read; [`BindError::Listen`] with the address and the OS
    /// error.
    pub async fn bind(options: DicomOptions) -> Result<DicomListener, BindError> {
        let spool = match options.keep_files.clone() {
            None => None,
            Some(keep) => {
                let opened = tokio::task::spawn_blocking(move || Spool::open(&keep))
                    .await
                    .map_err(|e| {
                        BindError::Spool(SpoolError::Dir {
                            path: PathBuf::new(),
                            error: std::io::Error::other(e.to_string()),
                        })
                    })?
                    .map_err(BindError::Spool)?;
                let (files, used, _) = opened.usage();
                tracing::info!(source = %options.name, dir = %opened.dir().display(), files, bytes = used, "Keeping whole DICOM objects in the spool");
                Some(Arc::new(opened))
            }
        };
        let addr = options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Listen { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError::Listen { addr, source })?;
        Ok(DicomListener {
            listener,
            local_addr,
            options,
            spool,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting; an
    /// association waiting for its next PDU is aborted, one whose commit is
    /// pending sends its response first. Returns when every association
    /// task is done.
    pub async fn run(self, submitter: Submitter, shutdown: CancellationToken) {
        let DicomListener {
            listener,
            local_addr,
            options,
            spool,
        } = self;
        let options = Arc::new(options);
        let source = options.name.clone();
        let permits = Arc::new(Semaphore::new(options.max_associations.max(1)));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        let book = Arc::new(Mutex::new(Book::seeded(&options.mpps_known)));
        let tracker = TaskTracker::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        if let Some(spool) = spool.clone() {
            tracker.spawn(sweep_spool(spool, source.clone(), shutdown.clone()));
        }
        tracing::debug!(%source, addr = %local_addr, "Accepting DICOM associations");
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    let pause = match accept_error_class(&e) {
                        AcceptError::PeerGone => continue,
                        AcceptError::OutOfDescriptors => {
                            tracing::error!(%source, error = %e, "Out of file descriptors; pausing accept");
                            FD_EXHAUSTED_PAUSE
                        }
                        AcceptError::Other => {
                            tracing::error!(%source, error = %e, "Accept failed; backing off");
                            let pause = backoff;
                            backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                            pause
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            // Nagle plus the peer's delayed ACK cost ~40 ms per response.
            let _ = stream.set_nodelay(true);
            let refusal = if !is_allowed(&options.allow, &peer) {
                Some((
                    user_reject(AssociationRJServiceUserReason::NoReasonGiven),
                    "sender network not allowed",
                ))
            } else {
                None
            };
            let permit = match refusal {
                None => permits.clone().try_acquire_owned().ok(),
                Some(_) => None,
            };
            let Some(permit) = permit else {
                let (rj, why) = refusal.unwrap_or((
                    AssociationRJ {
                        result: AssociationRJResult::Transient,
                        source: AssociationRJSource::ServiceProviderPresentation(
                            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                        ),
                    },
                    "too many associations",
                ));
                let Ok(slot) = rejecting.clone().try_acquire_owned() else {
                    tracing::warn!(%source, %peer, why, "Association closed unanswered: too many rejections at once");
                    continue;
                };
                let options = options.clone();
                tracker.spawn(async move {
                    reject_connection(stream, peer, &options, rj, why).await;
                    drop(slot);
                });
                continue;
            };
            let association = Association::new(
                options.clone(),
                submitter.clone(),
                shutdown.clone(),
                book.clone(),
                spool.clone(),
                stream,
                peer,
            );
            tracker.spawn(async move {
                association.run().await;
                drop(permit);
            });
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
        tracing::debug!(%source, "DICOM listener stopped");
    }
}

/// Applies the spool's retention until `shutdown`: the files older than
/// `keep_files_retention` go even when nothing is being received.
async fn sweep_spool(spool: Arc<Spool>, source: Arc<str>, shutdown: CancellationToken) {
    let every = spool::sweep_interval(spool.retention());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.sweep()).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::debug!(%source, deleted, "Deleted kept DICOM files older than keep_files_retention");
            }
            Err(e) => tracing::warn!(%source, error = %e, "The spool's retention sweep failed"),
        }
    }
}

/// Why reading a PDU failed.
#[derive(Debug)]
enum ReadFail {
    /// The socket closed or failed (a truncated PDU included).
    Closed(std::io::Error),
    /// No PDU within the time limit.
    Timeout,
    /// Larger than allowed: abort.
    TooLarge(u32),
    /// Not a PDU dicom-ul can read: abort.
    Malformed(String),
}

/// Reads one PDU: the 6-byte header, the length checked against `max`,
/// then the body (PS3.8 §9.3.1).
async fn read_one<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_pdata: u32,
    limit: Duration,
) -> Result<Pdu, ReadFail> {
    let read = async {
        buf.clear();
        buf.resize(6, 0);
        reader
            .read_exact(&mut buf[..6])
            .await
            .map_err(ReadFail::Closed)?;
        let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
        let max = if buf[0] == 0x04 {
            max_pdata
        } else {
            MAX_CONTROL_PDU
        };
        if len > max {
            return Err(ReadFail::TooLarge(len));
        }
        buf.resize(6 + len as usize, 0);
        reader
            .read_exact(&mut buf[6..])
            .await
            .map_err(ReadFail::Closed)?;
        match read_pdu(&buf[..], MAXIMUM_PDU_SIZE, false) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(ReadFail::Malformed("incomplete PDU".into())),
            Err(e) => Err(ReadFail::Malformed(e.to_string())),
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(ReadFail::Timeout))
}

fn encode(pdu: &Pdu) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing to a Vec fails only for values dicom-ul cannot encode
    // (e.g. an over-long AE title), which the peer sent us: send nothing.
    if write_pdu(&mut out, pdu).is_err() {
        out.clear();
    }
    out
}

/// Reads the A-ASSOCIATE-RQ (within ARTIM), answers `rj`, waits for the
/// peer to close (ARTIM), closes.
async fn reject_connection(
    stream: TcpStream,
    peer: SocketAddr,
    options: &DicomOptions,
    rj: AssociationRJ,
    why: &'static str,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let calling = match read_one(&mut reader, &mut buf, 0, options.artim_timeout).await {
        Ok(Pdu::AssociationRQ(rq)) => rq.calling_ae_title.trim().to_owned(),
        _ => return,
    };
    tracing::warn!(source = %options.name, %peer, calling_ae = %calling, why, "Association rejected");
    let bytes = encode(&Pdu::AssociationRJ(rj));
    if tokio::time::timeout(options.artim_timeout, write.write_all(&bytes))
        .await
        .is_ok()
    {
        wait_for_close(&mut reader, options.artim_timeout).await;
    }
}

/// After a reject or release: give the peer ARTIM to close first.
async fn wait_for_close<R: AsyncRead + Unpin>(reader: &mut R, artim: Duration) {
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(artim, async {
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The data set of the message being received.
enum Sink {
    /// A C-STORE: header kept, pixels counted; with `keep_files` the whole
    /// data set also streams into its file.
    Store {
        scanner: HeaderScanner,
        file: Option<SpoolFile>,
        /// The header, staged in the store while the pixels arrive.
        staged: Option<Box<Staged>>,
        /// Staging was tried (it is tried once, when Pixel Data begins).
        stage_tried: bool,
    },
    /// An N-CREATE or N-SET: small, kept whole up to the limit.
    Small { bytes: Vec<u8>, over: bool },
}

/// What a C-STORE's header gives, ready to submit.
struct Prepared {
    /// The envelope, without the byte counts.
    envelope: Envelope,
    header: Header,
    instance: String,
}

/// Why a C-STORE's header cannot be used.
enum NotPrepared {
    Unparsable(String),
    NoInstance,
}

/// A C-STORE whose header is staged in the store while its pixels arrive.
/// Dropping it (an abort, a closed connection) retracts the header.
struct Staged {
    staging: Staging,
    envelope: Envelope,
    instance: String,
}

/// Where the message being received is.
#[expect(
    clippy::large_enum_variant,
    reason = "one per association, moved in and out per fragment; boxing Data would allocate per message"
)]
enum Message {
    /// Between messages.
    Idle,
    /// Command fragments of context `pc`.
    Command { pc: u8, bytes: Vec<u8> },
    /// Data set fragments of context `pc` after `command`.
    Data {
        pc: u8,
        command: Command,
        sink: Sink,
    },
}

/// What a complete message needs from the association.
enum Done {
    /// Keep serving.
    Continue,
    /// Abort the association (provider), with the reason for the log.
    Abort(AbortRQServiceProviderReason, String),
}

/// One association.
struct Association {
    options: Arc<DicomOptions>,
    submitter: Submitter,
    shutdown: CancellationToken,
    book: Arc<Mutex<Book>>,
    /// The source's spool, with `keep_files`.
    spool: Option<Arc<Spool>>,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    buf: Vec<u8>,
    contexts: Vec<Accepted>,
    peer_max_pdu: u32,
    calling_ae: String,
    called_ae: String,
    device: Arc<str>,
    message: Message,
}

/// What woke the association while it waited for a PDU.
enum Event {
    Pdu(Result<Pdu, ReadFail>),
    Shutdown,
}

impl Association {
    fn new(
        options: Arc<DicomOptions>,
        submitter: Submitter,
        shutdown: CancellationToken,
        book: Arc<Mutex<Book>>,
        spool: Option<Arc<Spool>>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Self {
        let (read, writer) = stream.into_split();
        let capacity = (options.max_pdu as usize + 6).min(1 << 20);
        Association {
            reader: BufReader::with_capacity(capacity, read),
            writer,
            options,
            submitter,
            shutdown,
            book,
            spool,
            peer,
            buf: Vec::new(),
            contexts: Vec::new(),
            peer_max_pdu: 0,
            calling_ae: String::new(),
            called_ae: String::new(),
            device: Arc::from(""),
            message: Message::Idle,
        }
    }

    async fn run(mut self) {
        let source = self.options.name.clone();
        let peer = self.peer;
        // ARTIM runs from the connection to the A-ASSOCIATE-RQ.
        let rq = match read_one(
            &mut self.reader,
            &mut self.buf,
            0,
            self.options.artim_timeout,
        )
        .await
        {
            Ok(Pdu::AssociationRQ(rq)) => rq,
            Ok(other) => {
                tracing::warn!(%source, %peer, pdu = ?pdu_name(&other), "Expected A-ASSOCIATE-RQ; aborting");
                self.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(%source, %peer, error = ?e, "No A-ASSOCIATE-RQ; closing");
                if matches!(e, ReadFail::Malformed(_) | ReadFail::TooLarge(_)) {
                    self.abort(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                }
                return;
            }
        };
        let policy = Policy {
            ae_title: self.options.ae_title.clone(),
            allow_ae: self.options.allow_ae.clone(),
            max_pdu: self.options.max_pdu,
        };
        self.calling_ae = rq.calling_ae_title.trim().to_owned();
        self.called_ae = rq.called_ae_title.trim().to_owned();
        let ac = match negotiate(&rq, &policy) {
            Negotiated::Reject(rj, why) => {
                tracing::warn!(%source, %peer, calling_ae = %self.calling_ae, called_ae = %self.called_ae, why, "Association rejected");
                let bytes = encode(&Pdu::AssociationRJ(rj));
                if self.write(&bytes).await {
                    wait_for_close(&mut self.reader, self.options.artim_timeout).await;
                }
                return;
            }
            Negotiated::Accept {
                ac,
                contexts,
                peer_max_pdu,
            } => {
                self.contexts = contexts;
                self.peer_max_pdu = peer_max_pdu;
                ac
            }
        };
        let device = self
            .options
            .devices
            .get(&self.calling_ae)
            .cloned()
            .unwrap_or_else(|| self.calling_ae.clone());
        self.device = Arc::from(device.as_str());
        if !self.write(&encode(&Pdu::AssociationAC(ac))).await {
            return;
        }
        tracing::info!(%source, %peer, calling_ae = %self.calling_ae, accepted = self.contexts.len(), "Association accepted");

        loop {
            let max_pdata = self.options.max_pdu;
            let idle = self.options.idle_timeout;
            let event = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Event::Shutdown,
                pdu = read_one(&mut self.reader, &mut self.buf, max_pdata, idle) => Event::Pdu(pdu),
            };
            match event {
                Event::Shutdown => {
                    tracing::info!(%source, %peer, "Stopping: aborting the association");
                    self.abort_user().await;
                    return;
                }
                Event::Pdu(Ok(Pdu::PData { data })) => {
                    for pdv in data {
                        if let Done::Abort(reason, why) = self.on_pdv(pdv).await {
                            tracing::warn!(%source, %peer, why, "Aborting the association");
                            self.abort(reason).await;
                            return;
                        }
                    }
                }
                Event::Pdu(Ok(Pdu::ReleaseRQ)) => {
                    if !matches!(self.message, Message::Idle) {
                        tracing::warn!(%source, %peer, "Release in the middle of a message; nothing of it was stored");
                    }
                    if self.write(&encode(&Pdu::ReleaseRP)).await {
                        wait_for_close(&mut self.reader, self.options.artim_timeout).await;
                    }
                    tracing::info!(%source, %peer, calling_ae = %self.calling_ae, "Association released");
                    return;
                }
                Event::Pdu(Ok(Pdu::AbortRQ { source: from })) => {
                    let partial = !matches!(self.message, Message::Idle);
                    tracing::warn!(%source, %peer, from = ?from, partial, "Association aborted by the peer; a message in progress is not stored");
                    return;
                }
                Event::Pdu(Ok(other)) => {
                    tracing::warn!(%source, %peer, pdu = ?pdu_name(&other), "Unexpected PDU; aborting");
                    self.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                        .await;
                    return;
                }
                Event::Pdu(Err(ReadFail::Closed(e))) => {
                    let partial = !matches!(self.message, Message::Idle);
                    tracing::warn!(%source, %peer, error = %e, partial, "Connection closed without release; a message in progress is not stored");
                    return;
                }
                Event::Pdu(Err(ReadFail::Timeout)) => {
                    tracing::warn!(%source, %peer, "Association idle too long; aborting");
                    self.abort(AbortRQServiceProviderReason::ReasonNotSpecified)
                        .await;
                    return;
                }
                Event::Pdu(Err(ReadFail::TooLarge(len))) => {
                    tracing::warn!(%source, %peer, len, max = max_pdata, "PDU larger than announced; aborting");
                    self.abort(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                    return;
                }
                Event::Pdu(Err(ReadFail::Malformed(why))) => {
                    tracing::warn!(%source, %peer, why, "Malformed PDU; aborting");
                    self.abort(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                    return;
                }
            }
        }
    }

    /// Writes bytes in one call, within the idle limit. False if it failed.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        matches!(
            tokio::time::timeout(self.options.idle_timeout, self.writer.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    async fn abort(&mut self, reason: AbortRQServiceProviderReason) {
        let bytes = encode(&Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        });
        self.write(&bytes).await;
    }

    async fn abort_user(&mut self) {
        let bytes = encode(&Pdu::AbortRQ {
            source: AbortRQSource::ServiceUser,
        });
        self.write(&bytes).await;
    }

    fn context(&self, pc: u8) -> Option<&Accepted> {
        self.contexts.iter().find(|c| c.id == pc)
    }

    async fn on_pdv(&mut self, pdv: PDataValue) -> Done {
        let pc = pdv.presentation_context_id;
        let Some(context) = self.context(pc).cloned() else {
            return Done::Abort(
                AbortRQServiceProviderReason::UnexpectedPduParameter,
                format!("data on presentation context {pc}, which was not accepted"),
            );
        };
        let message = std::mem::replace(&mut self.message, Message::Idle);
        match (pdv.value_type, message) {
            (PDataValueType::Command, Message::Idle) => {
                self.message = Message::Command {
                    pc,
                    bytes: Vec::new(),
                };
                self.on_command_fragment(pc, &context, pdv.data, pdv.is_last)
                    .await
            }
            (PDataValueType::Command, Message::Command { pc: at, bytes }) if at == pc => {
                self.message = Message::Command { pc, bytes };
                self.on_command_fragment(pc, &context, pdv.data, pdv.is_last)
                    .await
            }
            (
                PDataValueType::Data,
                Message::Data {
                    pc: at,
                    command,
                    mut sink,
                },
            ) if at == pc => {
                let last = pdv.is_last;
                match &mut sink {
                    Sink::Store {
                        scanner,
                        file,
                        staged,
                        stage_tried,
                    } => {
                        scanner.feed(&pdv.data);
                        if let Some(file) = file {
                            file.append(pdv.data).await;
                        } else if !last && !*stage_tried {
                            if let Some(header) = scanner.header_done() {
                                *stage_tried = true;
                                *staged = self
                                    .stage(&context, &command, header, scanner)
                                    .await
                                    .map(Box::new);
                            }
                        }
                    }
                    Sink::Small { bytes, over } => {
                        if bytes.len() + pdv.data.len() > self.options.max_header_bytes {
                            *over = true;
                            bytes.clear();
                        } else if !*over {
                            bytes.extend_from_slice(&pdv.data);
                        }
                    }
                }
                if last {
                    self.complete(&context, command, Some(sink)).await
                } else {
                    self.message = Message::Data { pc, command, sink };
                    Done::Continue
                }
            }
            (kind, _) => Done::Abort(
                AbortRQServiceProviderReason::UnexpectedPduParameter,
                format!("unexpected {kind:?} fragment on presentation context {pc}"),
            ),
        }
    }

    async fn on_command_fragment(
        &mut self,
        pc: u8,
        context: &Accepted,
        data: Vec<u8>,
        last: bool,
    ) -> Done {
        let Message::Command { bytes, .. } = &mut self.message else {
            return Done::Continue;
        };
        if bytes.len() + data.len() > MAX_COMMAND_BYTES {
            return Done::Abort(
                AbortRQServiceProviderReason::InvalidPduParameter,
                "command set too large".into(),
            );
        }
        bytes.extend_from_slice(&data);
        if !last {
            return Done::Continue;
        }
        let command = match command::parse(bytes) {
            Ok(c) => c,
            Err(e) => {
                return Done::Abort(
                    AbortRQServiceProviderReason::InvalidPduParameter,
                    format!("unreadable command set: {e}"),
                )
            }
        };
        if !command.has_data_set() {
            self.message = Message::Idle;
            return self.complete(context, command, None).await;
        }
        let sink = if command.field == field::C_STORE_RQ {
            let file = match &self.spool {
                Some(spool) => {
                    let meta = FileMeta {
                        sop_class: command
                            .affected_sop_class
                            .as_deref()
                            .unwrap_or(&context.abstract_syntax),
                        sop_instance: command.affected_sop_instance.as_deref().unwrap_or(""),
                        transfer_syntax: &context.transfer_syntax,
                        calling_ae: &self.calling_ae,
                        private: None,
                    };
                    Some(spool.begin(&meta).await)
                }
                None => None,
            };
            Sink::Store {
                scanner: HeaderScanner::new(context.explicit_vr(), self.options.max_header_bytes),
                file,
                staged: None,
                stage_tried: false,
            }
        } else {
            Sink::Small {
                bytes: Vec::new(),
                over: false,
            }
        };
        self.message = Message::Data { pc, command, sink };
        Done::Continue
    }

    /// A complete message: act on it and send the response.
    async fn complete(&mut self, context: &Accepted, command: Command, sink: Option<Sink>) -> Done {
        self.message = Message::Idle;
        let sop_class = command
            .affected_sop_class
            .clone()
            .or_else(|| command.requested_sop_class.clone())
            .unwrap_or_else(|| context.abstract_syntax.clone());
        let mut rsp = Response {
            field: command.field | 0x8000,
            responding_to: command.message_id,
            affected_sop_class: Some(sop_class),
            affected_sop_instance: command.affected_sop_instance.clone(),
            status: status::SUCCESS,
            error_comment: None,
        };
        match (command.field, sink) {
            (field::C_ECHO_RQ, _) => {}
            (
                field::C_STORE_RQ,
                Some(Sink::Store {
                    scanner,
                    file,
                    staged,
                    ..
                }),
            ) => {
                let (status, comment) = match staged {
                    Some(staged) => self.finish_staged(scanner, *staged).await,
                    None => self.store(context, &command, scanner, file).await,
                };
                rsp.status = status;
                rsp.error_comment = comment;
            }
            (field::N_CREATE_RQ | field::N_SET_RQ, Some(Sink::Small { bytes, over }))
                if context.abstract_syntax == uids::MPPS =>
            {
                let instance = if command.field == field::N_CREATE_RQ {
                    command
                        .affected_sop_instance
                        .clone()
                        .unwrap_or_else(new_uid)
                } else {
                    command.requested_sop_instance.clone().unwrap_or_default()
                };
                rsp.affected_sop_instance = Some(instance.clone());
                let (status, comment) = self.mpps(context, &command, &instance, bytes, over).await;
                rsp.status = status;
                rsp.error_comment = comment;
            }
            (field::C_CANCEL_RQ, _) => return Done::Continue,
            (field::C_STORE_RQ, None) => {
                rsp.status = status::CANNOT_UNDERSTAND;
                rsp.error_comment = Some("C-STORE without a data set".into());
            }
            _ => {
                rsp.status = status::UNRECOGNIZED_OPERATION;
                rsp.error_comment = Some("operation not supported on this context".into());
            }
        }
        if !self.send_command(context.id, &rsp.encode()).await {
            return Done::Abort(
                AbortRQServiceProviderReason::ReasonNotSpecified,
                "cannot send the response".into(),
            );
        }
        Done::Continue
    }

    /// Sends a command set in P-DATA PDUs no larger than the peer's maximum.
    async fn send_command(&mut self, pc: u8, bytes: &[u8]) -> bool {
        // PDU = 6-byte header + PDV items (4-byte length, id, control, data).
        let room = match self.peer_max_pdu {
            0 => bytes.len().max(1),
            max => (max as usize).saturating_sub(6).max(1),
        };
        let chunks: Vec<&[u8]> = bytes.chunks(room).collect();
        let mut out = Vec::with_capacity(bytes.len() + 12 * chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend(encode(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last: i + 1 == chunks.len(),
                    data: chunk.to_vec(),
                }],
            }));
        }
        self.write(&out).await
    }

    /// Read a C-STORE's header (the data set up to Pixel Data): the
    /// object's identity, its envelope (without byte counts) and the
    /// store's header fields.
    fn prepare(
        &self,
        context: &Accepted,
        command: &Command,
        header_bytes: &[u8],
    ) -> Result<Prepared, NotPrepared> {
        let ts = if context.explicit_vr() {
            EXPLICIT_VR_LITTLE_ENDIAN.erased()
        } else {
            IMPLICIT_VR_LITTLE_ENDIAN.erased()
        };
        let obj = InMemDicomObject::read_dataset_with_ts(header_bytes, &ts)
            .map_err(|e| NotPrepared::Unparsable(e.to_string()))?;
        let from_data = |tag| {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_matches([' ', '\0']).to_owned())
        };
        let instance = command
            .affected_sop_instance
            .clone()
            .or_else(|| from_data(dicom_core::Tag(0x0008, 0x0018)))
            .unwrap_or_default();
        let sop_class = command
            .affected_sop_class
            .clone()
            .unwrap_or_else(|| context.abstract_syntax.clone());
        if instance.is_empty() {
            return Err(NotPrepared::NoInstance);
        }
        let envelope = self.envelope("C-STORE", context, &sop_class, &instance);
        let header = Header {
            message_type: Some("C-STORE".into()),
            trigger: Some(sop_class),
            version: Some(context.transfer_syntax.clone()),
            control_id: Some(instance.clone()),
            sender: Some(self.calling_ae.clone()),
            charset: from_data(dicom_core::Tag(0x0008, 0x0005)),
        };
        Ok(Prepared {
            envelope,
            header,
            instance,
        })
    }

    fn envelope(&self, op: &str, context: &Accepted, sop_class: &str, instance: &str) -> Envelope {
        Envelope {
            op: op.to_owned(),
            sop_class: sop_class.to_owned(),
            sop_instance: instance.to_owned(),
            transfer_syntax: context.transfer_syntax.clone(),
            calling_ae: self.calling_ae.clone(),
            called_ae: self.called_ae.clone(),
            device: self.device.to_string(),
            ward: self.options.ward.clone(),
            room: self.options.room.clone(),
            ..Envelope::default()
        }
    }

    fn received(
        &self,
        kind: Kind,
        bytes: Vec<u8>,
        header: Header,
        dedup: Option<String>,
    ) -> Received {
        Received {
            source: self.options.name.clone(),
            device: Some(self.device.clone()),
            received_at: SystemTime::now(),
            kind,
            bytes: Bytes::from(bytes),
            header,
            dedup: dedup.map(|key| Dedup {
                key,
                window: DUPLICATE_WINDOW,
            }),
            answer: None,
        }
    }

    /// A C-STORE object for the store: its duplicate key is its SOP
    /// Instance UID.
    fn object(&self, bytes: Vec<u8>, header: Header, instance: &str) -> Received {
        self.received(
            Kind::Dicom,
            bytes,
            header,
            Some(format!("dicom:{instance}")),
        )
    }

    /// A complete C-STORE data set: check, keep its file (with
    /// `keep_files`), submit, and the status to answer. Every early return
    /// drops `file`, which deletes the partial file.
    async fn store(
        &mut self,
        context: &Accepted,
        command: &Command,
        scanner: HeaderScanner,
        file: Option<SpoolFile>,
    ) -> (u16, Option<String>) {
        let source = self.options.name.clone();
        let peer = self.peer;
        let total = scanner.total();
        let scanned = match scanner.finish() {
            Finished::Header(h) => h,
            Finished::TooLarge { total } => {
                tracing::warn!(%source, %peer, total, "C-STORE header larger than max_header_bytes; refused");
                self.submitter.rejected(source, Rejection::TooLarge);
                return (
                    status::OUT_OF_RESOURCES,
                    Some("header larger than this node accepts".into()),
                );
            }
            Finished::Malformed(e) => {
                tracing::warn!(%source, %peer, error = %e, "C-STORE data set cannot be parsed");
                self.submitter.rejected(source, Rejection::BadHeader);
                return (status::CANNOT_UNDERSTAND, Some(format!("data set: {e}")));
            }
        };
        let Prepared {
            mut envelope,
            header,
            instance,
        } = match self.prepare(context, command, &scanned.header) {
            Ok(p) => p,
            Err(NotPrepared::Unparsable(e)) => {
                tracing::warn!(%source, %peer, error = %e, "C-STORE header cannot be parsed");
                self.submitter.rejected(source, Rejection::BadHeader);
                return (
                    status::CANNOT_UNDERSTAND,
                    Some("data set header cannot be parsed".into()),
                );
            }
            Err(NotPrepared::NoInstance) => {
                self.submitter.rejected(source, Rejection::BadHeader);
                return (
                    status::CANNOT_UNDERSTAND,
                    Some("no SOP Instance UID".into()),
                );
            }
        };
        envelope.dataset_bytes = total;
        envelope.pixel_bytes = scanned.pixel_bytes;
        let kept = match file {
            None => None,
            Some(file) => match file.keep(&instance).await {
                Ok(kept) => Some(kept),
                Err(e) => {
                    match &e {
                        SpoolError::OverQuota { .. } => {
                            tracing::warn!(%source, %peer, instance = %Hashed(&instance), error = %e, "C-STORE refused (0xA700): the object does not fit keep_files_max_bytes")
                        }
                        _ => {
                            tracing::error!(%source, %peer, instance = %Hashed(&instance), error = %e, "C-STORE refused (0xA700): cannot write the object to the spool (keep_files_dir)")
                        }
                    }
                    self.submitter.rejected(source, Rejection::Refused);
                    return (
                        status::OUT_OF_RESOURCES,
                        Some("cannot keep the object's file, retry later".into()),
                    );
                }
            },
        };
        let received = self.object(envelope.to_part10(&scanned.header), header, &instance);
        let reply = self.submitter.submit(received).await;
        tracing::debug!(%source, %peer, instance = %Hashed(&instance), pixel_bytes = scanned.pixel_bytes, kept_file = ?kept.as_ref().map(|k| k.path()), reply = ?reply, "C-STORE");
        if let Some(kept) = kept {
            if !matches!(reply, Reply::Stored { .. } | Reply::Duplicate { .. }) {
                kept.discard().await;
            }
        }
        answer_for(reply)
    }

    /// Stage a C-STORE's header in the store as soon as its Pixel Data
    /// begins (without `keep_files`), so that the commit and its fsync run
    /// while the pixels arrive instead of after them: on one association
    /// that fsync was the whole gap to dcmtk's storescp, which does not
    /// sync. `None` if the header cannot be used: the object then takes the
    /// ordinary path at its end, which refuses it with the right status.
    async fn stage(
        &self,
        context: &Accepted,
        command: &Command,
        header_bytes: &[u8],
        scanner: &HeaderScanner,
    ) -> Option<Staged> {
        let Prepared {
            mut envelope,
            header,
            instance,
        } = self.prepare(context, command, header_bytes).ok()?;
        // The byte counts so far: what a crash before the object's end
        // leaves (they are replaced when it is whole).
        envelope.dataset_bytes = scanner.total();
        envelope.pixel_bytes = scanner.pixel_bytes();
        let received = self.object(envelope.to_part10(header_bytes), header, &instance);
        let staging = self.submitter.stage(received).await;
        Some(Staged {
            staging,
            envelope,
            instance,
        })
    }

    /// The last fragment of a staged C-STORE: its final bytes go to the
    /// store (without waiting for that commit: the staged header is already
    /// durable) and the answer is the staging's.
    async fn finish_staged(
        &mut self,
        scanner: HeaderScanner,
        staged: Staged,
    ) -> (u16, Option<String>) {
        let total = scanner.total();
        let Finished::Header(scanned) = scanner.finish() else {
            // Past Pixel Data the scanner only counts, so this cannot
            // happen; dropping `staged` retracts the header.
            return (
                status::CANNOT_UNDERSTAND,
                Some("data set cannot be parsed".into()),
            );
        };
        let Staged {
            staging,
            mut envelope,
            instance,
        } = staged;
        envelope.dataset_bytes = total;
        envelope.pixel_bytes = scanned.pixel_bytes;
        let bytes = envelope.to_part10(&scanned.header);
        let reply = staging.finish(Bytes::from(bytes)).await;
        tracing::debug!(source = %self.options.name, peer = %self.peer, instance = %Hashed(&instance), pixel_bytes = scanned.pixel_bytes, reply = ?reply, "C-STORE (header staged while the pixels arrived)");
        answer_for(reply)
    }

    /// A complete N-CREATE or N-SET: check, submit, record, and the status.
    async fn mpps(
        &mut self,
        context: &Accepted,
        command: &Command,
        instance: &str,
        bytes: Vec<u8>,
        over: bool,
    ) -> (u16, Option<String>) {
        let source = self.options.name.clone();
        let peer = self.peer;
        let create = command.field == field::N_CREATE_RQ;
        let op = if create { "N-CREATE" } else { "N-SET" };
        if over {
            self.submitter.rejected(source, Rejection::TooLarge);
            return (
                status::PROCESSING_FAILURE,
                Some("data set larger than this node accepts".into()),
            );
        }
        if instance.is_empty() {
            self.submitter.rejected(source, Rejection::BadHeader);
            return (
                status::NO_SUCH_INSTANCE,
                Some("no Requested SOP Instance UID".into()),
            );
        }
        let ts = if context.explicit_vr() {
            EXPLICIT_VR_LITTLE_ENDIAN.erased()
        } else {
            IMPLICIT_VR_LITTLE_ENDIAN.erased()
        };
        let obj = match InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts) {
            Ok(obj) => obj,
            Err(e) => {
                tracing::warn!(%source, %peer, op, error = %e, "MPPS data set cannot be parsed");
                self.submitter.rejected(source, Rejection::BadHeader);
                return (
                    status::PROCESSING_FAILURE,
                    Some("data set cannot be parsed".into()),
                );
            }
        };
        let checked = {
            let book = match self.book.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            if create {
                book.check_create(instance, &obj)
            } else {
                book.check_set(instance, &obj)
            }
        };
        let next = match checked {
            Ok(next) => next,
            Err(refusal) => {
                tracing::warn!(%source, %peer, op, instance, status = refusal.status, why = %refusal.comment, "MPPS refused");
                self.submitter.rejected(source, Rejection::BadHeader);
                return (refusal.status, Some(refusal.comment));
            }
        };
        let mut envelope = self.envelope(op, context, uids::MPPS, instance);
        envelope.dataset_bytes = bytes.len() as u64;
        envelope.mpps_state = next.as_str().to_owned();
        let header = Header {
            message_type: Some(op.to_owned()),
            // The state the step is in after this operation: the daemon
            // reads it back at start (`mpps::Book::seeded`).
            trigger: Some(next.as_str().to_owned()),
            version: Some(context.transfer_syntax.clone()),
            control_id: Some(instance.to_owned()),
            sender: Some(self.calling_ae.clone()),
            charset: None,
        };
        let dedup = create.then(|| format!("mpps-create:{instance}"));
        let stored = envelope.to_part10(&bytes);
        let received = self.received(Kind::Mpps, stored, header, dedup);
        let reply = self.submitter.submit(received).await;
        if matches!(reply, Reply::Stored { .. } | Reply::Duplicate { .. }) {
            let mut book = match self.book.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            book.record(instance, next);
        }
        tracing::debug!(%source, %peer, op, instance, reply = ?reply, "MPPS");
        let (status, comment) = answer_for(reply);
        if status == status::OUT_OF_RESOURCES {
            // N-CREATE/N-SET have no "out of resources": processing failure.
            return (status::PROCESSING_FAILURE, comment);
        }
        (status, comment)
    }
}

/// The DIMSE status for the store's reply.
fn answer_for(reply: Reply) -> (u16, Option<String>) {
    match reply {
        Reply::Stored { .. } | Reply::Duplicate { .. } => (status::SUCCESS, None),
        Reply::Refused { reason } => {
            let comment = match reason {
                RefuseReason::StoreFull => "store full, retry later",
                RefuseReason::ShuttingDown => "shutting down, retry later",
                RefuseReason::StoreFailed(_) | RefuseReason::Dropped => "store failed, retry later",
            };
            (status::OUT_OF_RESOURCES, Some(comment.into()))
        }
        Reply::Invalid { reason } => (status::CANNOT_UNDERSTAND, Some(reason)),
    }
}

/// A new UID for an MPPS instance the modality did not name: `2.25.` and a
/// 128-bit number from the clock and a counter (unique on this node).
fn new_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = (nanos << 24) ^ u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("2.25.{}", n & ((1u128 << 127) - 1))
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}
