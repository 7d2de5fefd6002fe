//! The MLLP listener: accept connections, turn frames into [`Received`]
//! items, answer each after the store's reply.
//!
//! This is the I/O shell around the pure parts ([`super::codec`],
//! [`super::ack`], [`crate::hl7`]). It owns the sockets, the per-connection
//! tasks, their limits and shutdown.
//!
//! Invariants:
//! - **A positive answer only after `Reply::Stored` (or `Duplicate`)**:
//!   custody first (architecture.md, invariant 1).
//! - **Every complete frame gets exactly one answer**, in the order the
//!   frames came (plus the application ack enhanced mode asks for):
//!   frames are handled one at a time per connection, so pipelined frames
//!   are answered in order.
//! - **Bounded everything**: at most `max_connections` connections (the
//!   permit is taken *before* `accept`, as mini-redis `server.rs` does, so
//!   an extra peer waits in the kernel backlog); per connection at most one
//!   frame plus one read buffered; reads idle out after `idle_timeout`,
//!   writes time out after it too. Back-pressure comes only from the store:
//!   while a submit waits, the connection does not read.
//! - **A slow connection never blocks the others**: one task each.
//! - **Shutdown**: stop accepting; a connection waiting for bytes closes; a
//!   connection whose frame is being committed finishes the commit, sends
//!   the answer, answers any frames already complete in its buffer with a
//!   reject (`AR`/`CR` "shutting down, retry") and closes. `run` returns when
//!   every connection task is done.
//!
//! Counting (`Submitter::rejected`): a frame answered negatively without
//! being submitted is counted here (`TooLarge`, `BadHeader`, `NotAllowed`,
//! and `Refused` for frames refused during shutdown or when the store
//! dropped the reply handle). A refusal the store itself answered is
//! counted by the store, not here.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::{
    write_ack, AckCode, AckLevel, AckPlan, ErrDetail, COMMIT_ACK_BLOCK, COMMIT_NAK_BLOCK,
};
use super::codec::{Decoded, DiscardReason, CARRIAGE_RETURN, END_BLOCK, START_BLOCK};
use super::connection::{MllpConnection, WriteError};
use super::tls::MllpStream;
use crate::hl7::{decode_text, ErrorCode, ErrorLocation, Msh};
use crate::logid::Hashed;
use crate::received::{Dedup, Kind, Received, RefuseReason, Rejection, Reply, Submitter};

/// How an MLLP source listens and what it accepts.
#[derive(Debug, Clone)]
pub struct MllpOptions {
    /// The source's configured name, used in logs, counters and every
    /// [`Received`].
    pub name: Arc<str>,
    /// Where to listen. Port 0 picks a free port ([`MllpListener::local_addr`]).
    pub listen: SocketAddr,
    /// Peers allowed to send. Empty: any peer. A peer outside gets its
    /// first frame answered `AR` ("sender not allowed") and is closed.
    pub allow: Vec<ipnet::IpNet>,
    /// Most connections served at once; more wait in the kernel's backlog
    /// until one closes. 0 is treated as 1.
    pub max_connections: usize,
    /// Largest message (the bytes between the MLLP blocks) accepted. A larger
    /// frame is answered `AR` and the connection closed.
    pub max_message_bytes: usize,
    /// A connection with no byte from the peer for this long is closed. Also
    /// the limit for writing one answer to a peer that stopped reading.
    /// `Duration::ZERO` means no idle limit (writes are then limited to
    /// [`WRITE_TIMEOUT_WITHOUT_IDLE`]).
    pub idle_timeout: Duration,
    /// Resends of the same MSH-3, MSH-4 and MSH-10 within this window are
    /// answered with the original answer and not stored again.
    /// `Duration::ZERO` turns duplicate detection off.
    pub duplicate_window: Duration,
    /// Speak MLLP release 2: precede each answer with a commit
    /// acknowledgement block (`0B 06 1C 0D` when stored, `0B 15 1C 0D` when
    /// not). Only for peers configured for it: a release 1 peer takes the
    /// block for a garbage message.
    pub commit_blocks: bool,
    /// MLLP over TLS with this server configuration ([`super::tls`]);
    /// `None`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The listening socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// A bound MLLP listener, ready to [`run`](MllpListener::run).
#[derive(Debug)]
pub struct MllpListener {
    /// The bound socket.
    listener: TcpListener,
    /// The address actually bound (port 0 resolved).
    local_addr: SocketAddr,
    /// What to accept and how; replaced by [`MllpUpdater::update`].
    options: Arc<watch::Sender<Arc<MllpOptions>>>,
}

/// Changes a running listener's options (a reload): connections accepted
/// from then on get the new ones (allowlist, limits, TLS certificates);
/// established connections keep theirs and are not dropped. `name` and
/// `listen` cannot change this way: a changed address is a new listener.
#[derive(Debug, Clone)]
pub struct MllpUpdater {
    options: Arc<watch::Sender<Arc<MllpOptions>>>,
}

impl MllpUpdater {
    /// Use `options` for the connections accepted from now on.
    pub fn update(&self, options: MllpOptions) {
        self.options.send_replace(Arc::new(options));
    }

    /// The options in use now.
    pub fn current(&self) -> Arc<MllpOptions> {
        self.options.borrow().clone()
    }
}

/// The write limit when `idle_timeout` is zero (no idle limit): a peer that
/// stops reading must still not pin a connection forever.
pub const WRITE_TIMEOUT_WITHOUT_IDLE: Duration = Duration::from_secs(60);

/// `now + after`, or a far-off instant if that overflows (a huge or zero
/// `idle_timeout` means "no limit").
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    if after.is_zero() {
        return far_future(now);
    }
    now.checked_add(after).unwrap_or_else(|| far_future(now))
}

fn far_future(now: Instant) -> Instant {
    // About 30 years, as tokio does for its own far-future timers.
    now + Duration::from_secs(86_400 * 365 * 30)
}

/// How long to pause after the process or system ran out of file
/// descriptors (EMFILE/ENFILE) before accepting again.
pub(crate) const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);
/// Backoff bounds after other accept errors.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest first frame read from a peer outside the allowlist: it is only
/// read to answer it, so there is no reason to take a big one.
const NOT_ALLOWED_MAX_FRAME: usize = 64 * 1024;

impl MllpListener {
    /// Bind the listening socket.
    ///
    /// # Errors
    /// [`BindError`] with the address and the OS error (address in use,
    /// permission denied, no such address).
    pub async fn bind(options: MllpOptions) -> Result<MllpListener, BindError> {
        let addr = options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError { addr, source })?;
        Ok(MllpListener {
            listener,
            local_addr,
            options: Arc::new(watch::Sender::new(Arc::new(options))),
        })
    }

    /// A handle to change the options while the listener runs.
    pub fn updater(&self) -> MllpUpdater {
        MllpUpdater {
            options: self.options.clone(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// every connection finish the frame whose commit is pending and send
    /// its answer, and returns when all connection tasks are done.
    pub async fn run(self, submitter: Submitter, shutdown: CancellationToken) {
        let MllpListener {
            listener,
            local_addr,
            options: updates,
        } = self;
        let mut updates = updates.subscribe();
        let mut options = updates.borrow_and_update().clone();
        let source = options.name.clone();
        let mut max_connections = options.max_connections.max(1);
        let permits = Arc::new(Semaphore::new(max_connections));
        let tracker = TaskTracker::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        tracing::debug!(%source, addr = %local_addr, "Accepting MLLP connections");

        loop {
            // The permit is taken before accept: with all permits out, new
            // peers wait in the backlog instead of being accepted and starved.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // The semaphore is never closed; treat it as a stop.
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(e) => {
                    let pause = match accept_error_class(&e) {
                        AcceptError::PeerGone => {
                            tracing::debug!(%source, error = %e, "Connection failed before accept");
                            continue;
                        }
                        AcceptError::OutOfDescriptors => {
                            tracing::error!(%source, error = %e, "Out of file descriptors; pausing accept");
                            FD_EXHAUSTED_PAUSE
                        }
                        AcceptError::Other => {
                            tracing::error!(%source, error = %e, backoff_ms = backoff.as_millis() as u64, "Accept failed; backing off");
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
            // Nagle plus the peer's delayed ACK cost ~40 ms per answer.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%source, device = %peer, error = %e, "Cannot set TCP_NODELAY");
            }
            // A reload may have changed the options: new connections get
            // the new ones, and the connection limit follows.
            if updates.has_changed().unwrap_or(false) {
                options = updates.borrow_and_update().clone();
                let new_max = options.max_connections.max(1);
                resize(&permits, max_connections, new_max);
                max_connections = new_max;
                tracing::info!(%source, "MLLP listener options changed; new connections use them");
            }
            let options = options.clone();
            let submitter = submitter.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let stream = match &options.tls {
                    None => MllpStream::Plain(stream),
                    Some(config) => match super::tls::accept(stream, config.clone()).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(source = %options.name, device = %peer, error = %e, "TLS connection refused; closing it");
                            drop(permit);
                            return;
                        }
                    },
                };
                let handler = Handler::new(options, submitter, shutdown, stream, peer);
                handler.run().await;
                drop(permit);
            });
        }
        // Stop accepting: close the listening socket before waiting, so new
        // peers are refused rather than left in the backlog.
        drop(listener);
        tracker.close();
        tracing::debug!(%source, connections = tracker.len(), "MLLP listener stopping; waiting for connections");
        tracker.wait().await;
        tracing::debug!(%source, "MLLP listener stopped");
    }
}

/// Change the number of connection permits from `old` to `new`. Growing adds
/// permits at once; shrinking takes the difference out as connections end
/// (established connections are never cut).
fn resize(permits: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        permits.add_permits(new - old);
    } else if new < old {
        let permits = permits.clone();
        let n = u32::try_from(old - new).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(p) = permits.acquire_many_owned(n).await {
                p.forget();
            }
        });
    }
}

/// What an accept error means for the loop (ntpd-rs `observer.rs` idea).
pub(crate) enum AcceptError {
    /// The peer went away between SYN and accept, or a firewall rule
    /// refused it: only that connection is affected.
    PeerGone,
    /// EMFILE/ENFILE (and memory shortage): pause and retry.
    OutOfDescriptors,
    /// Anything else: back off.
    Other,
}

pub(crate) fn accept_error_class(e: &std::io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptError::OutOfDescriptors
        }
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            AcceptError::PeerGone
        }
        _ => AcceptError::Other,
    }
}

/// Is `peer` allowed by `allow` (empty = any)? IPv4 peers on a dual-stack
/// socket show up as `::ffff:a.b.c.d`; they are matched as IPv4.
pub(crate) fn is_allowed(allow: &[ipnet::IpNet], peer: &SocketAddr) -> bool {
    if allow.is_empty() {
        return true;
    }
    let ip = peer.ip().to_canonical();
    allow.iter().any(|net| net.contains(&ip))
}

/// Why a connection stopped being served.
enum Flow {
    /// Keep serving.
    Continue,
    /// Send nothing more; close with a linger so the last answer arrives.
    CloseAfterAnswer,
}

/// What woke the handler while it waited for bytes.
enum Wake {
    /// Bytes arrived, or EOF.
    Read,
    /// The read failed.
    ReadFailed(std::io::Error),
    /// No byte for `idle_timeout`.
    Idle,
    /// The listener is stopping.
    Shutdown,
}

/// One connection: reads frames, submits them, answers.
struct Handler {
    /// The listener's options (shared).
    options: Arc<MllpOptions>,
    /// Where frames go.
    submitter: Submitter,
    /// Cancelled when the listener stops.
    shutdown: CancellationToken,
    /// The socket and its buffer.
    conn: MllpConnection,
    /// The peer's address, for logs.
    peer: SocketAddr,
    /// The peer's address as text, shared by every [`Received`] of this
    /// connection.
    device: Arc<str>,
}

impl Handler {
    fn new(
        options: Arc<MllpOptions>,
        submitter: Submitter,
        shutdown: CancellationToken,
        stream: MllpStream,
        peer: SocketAddr,
    ) -> Handler {
        let max = if is_allowed(&options.allow, &peer) {
            options.max_message_bytes
        } else {
            options.max_message_bytes.min(NOT_ALLOWED_MAX_FRAME)
        };
        Handler {
            conn: MllpConnection::new(stream, max),
            device: Arc::from(peer.to_string()),
            peer,
            options,
            submitter,
            shutdown,
        }
    }

    fn source(&self) -> &Arc<str> {
        &self.options.name
    }

    async fn run(mut self) {
        tracing::debug!(source = %self.source(), device = %self.peer, "MLLP connection accepted");
        if !is_allowed(&self.options.allow, &self.peer) {
            self.refuse_not_allowed().await;
            return;
        }
        let idle = self.options.idle_timeout;
        // Design: the idle timer is re-armed lazily. Activity only records
        // `last_activity` (a clock read); when the timer fires early because
        // of later activity, it is pushed to `last_activity + idle`. Resetting
        // it on every frame would take the timer driver's lock per frame.
        let mut last_activity = Instant::now();
        let mut idle_timer = pin!(tokio::time::sleep_until(deadline_after(idle)));
        loop {
            // Frames already buffered go first, in order (pipelining).
            if let Some(decoded) = self.conn.next_buffered() {
                let flow = if self.shutdown.is_cancelled() {
                    self.refuse_during_shutdown(decoded).await
                } else {
                    self.handle(decoded).await
                };
                match flow {
                    Ok(Flow::Continue) => {
                        last_activity = Instant::now();
                        continue;
                    }
                    Ok(Flow::CloseAfterAnswer) => {
                        self.conn.close_gracefully().await;
                        return;
                    }
                    Err(e) => {
                        tracing::info!(source = %self.source(), device = %self.peer, error = %e, "Cannot answer; closing the connection");
                        return;
                    }
                }
            }
            if self.conn.is_eof() {
                tracing::debug!(source = %self.source(), device = %self.peer, "Peer closed the connection");
                return;
            }
            if self.shutdown.is_cancelled() {
                tracing::debug!(source = %self.source(), device = %self.peer, "Closing the connection: shutting down");
                return;
            }
            // Wait for bytes. Only the choice happens inside `select!`; the
            // work happens outside it, so a frame being committed is never
            // abandoned by a shutdown (mini-redis `Handler::run`).
            // `fill` is cancel safe.
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Wake::Shutdown,
                read = self.conn.fill() => match read {
                    Ok(_) => Wake::Read,
                    Err(e) => Wake::ReadFailed(e),
                },
                _ = idle_timer.as_mut() => Wake::Idle,
            };
            match wake {
                Wake::Read => last_activity = Instant::now(),
                Wake::ReadFailed(e) => {
                    tracing::info!(source = %self.source(), device = %self.peer, error = %e, "Read failed; closing the connection");
                    return;
                }
                Wake::Idle if Instant::now().duration_since(last_activity) < idle => {
                    let due = last_activity
                        .checked_add(idle)
                        .unwrap_or_else(|| deadline_after(idle));
                    idle_timer.as_mut().reset(due);
                }
                Wake::Idle => {
                    tracing::info!(source = %self.source(), device = %self.peer, idle_secs = idle.as_secs_f64(), "Connection idle; closing it");
                    return;
                }
                Wake::Shutdown => {}
            }
        }
    }

    /// Handle one decoded item of a served connection.
    async fn handle(&mut self, decoded: Decoded) -> Result<Flow, WriteError> {
        match decoded {
            Decoded::Frame(payload) => self.frame(payload).await,
            Decoded::CommitAck | Decoded::CommitNak => {
                // MLLP R2: the peer commits (or not) an answer we sent. We
                // never resend answers, so this is informational.
                tracing::debug!(source = %self.source(), device = %self.peer, positive = matches!(decoded, Decoded::CommitAck), "Commit block from peer");
                Ok(Flow::Continue)
            }
            Decoded::Discarded {
                why: DiscardReason::EmptyFrame,
                ..
            } => {
                // Some senders send empty frames as keep-alives.
                tracing::debug!(source = %self.source(), device = %self.peer, "Empty MLLP frame ignored");
                Ok(Flow::Continue)
            }
            Decoded::Discarded { bytes, why } => {
                tracing::warn!(source = %self.source(), device = %self.peer, bytes, why = why.as_str(), "Discarded bytes that were not a complete MLLP frame");
                Ok(Flow::Continue)
            }
            Decoded::Oversize { max, head } => {
                // The head lets the reject carry MSA-2 = MSH-10 (and the
                // right level), if the MSH segment fits in it whole.
                let msh = complete_msh(&head);
                let control_id = msh.as_ref().map(|m| decode_text(m.control_id()));
                tracing::warn!(source = %self.source(), device = %self.peer, control_id = %Hashed(control_id.as_deref().unwrap_or("")), max_bytes = max, "Frame larger than max_message_bytes; refusing it and closing the connection");
                self.submitter
                    .rejected(self.source().clone(), Rejection::TooLarge);
                let text = format!(
                    "message too large: more than {max} bytes; not stored, the connection is closed"
                );
                let plan = msh.as_ref().map_or(AckPlan::ORIGINAL, AckPlan::for_message);
                let answer = self.negative(
                    msh.as_ref(),
                    AckCode::Reject,
                    &ErrDetail::refusal(&text),
                    plan,
                );
                self.write(&answer).await?;
                Ok(Flow::CloseAfterAnswer)
            }
        }
    }

    /// One complete message: read its header, submit it, answer.
    async fn frame(&mut self, payload: Bytes) -> Result<Flow, WriteError> {
        let received_at = SystemTime::now();
        let msh = match Msh::read(&payload) {
            Ok(msh) => msh,
            Err(e) => return self.bad_header(None, &e).await,
        };
        if let Err(e) = msh.require_usable() {
            return self.bad_header(Some(&msh), &e).await;
        }
        let plan = AckPlan::for_message(&msh);
        let control_id = decode_text(msh.control_id());

        // The positive answer is built before the commit so the store can
        // keep it for replaying to a resend (`Received::answer`): the HL7
        // ACK alone, un-framed. `positive` is what goes on the wire.
        let (positive, stored_answer) = self.positive(&msh, plan);
        let received = Received {
            source: self.source().clone(),
            device: Some(self.device.clone()),
            received_at,
            kind: Kind::Hl7v2,
            bytes: payload.clone(),
            header: msh.to_header(),
            dedup: (!self.options.duplicate_window.is_zero()).then(|| Dedup {
                key: msh.dedup_key(),
                window: self.options.duplicate_window,
            }),
            answer: Some(stored_answer),
        };

        // Not inside a select: once submitted, the frame is answered, even
        // while the listener is stopping.
        match self.submitter.submit(received).await {
            Reply::Stored { id } => {
                tracing::debug!(source = %self.source(), device = %self.peer, control_id = %Hashed(&control_id), id, "Stored");
                self.write(&positive).await?;
            }
            Reply::Duplicate {
                original_id,
                original_answer,
            } => {
                tracing::info!(source = %self.source(), device = %self.peer, control_id = %Hashed(&control_id), original_id, "Duplicate of a stored message; answering with the original answer");
                match original_answer {
                    Some(original) => {
                        let replay = self.replay(&msh, plan, &original);
                        self.write(&replay).await?;
                    }
                    None => self.write(&positive).await?,
                }
            }
            Reply::Refused { reason } => {
                tracing::warn!(source = %self.source(), device = %self.peer, control_id = %Hashed(&control_id), %reason, "Store refused the message; answering with a reject");
                if reason == RefuseReason::Dropped {
                    // The store never saw it through; nobody else counts it.
                    self.submitter
                        .rejected(self.source().clone(), Rejection::Refused);
                }
                let text = reason.to_string();
                let answer = self.negative(
                    Some(&msh),
                    AckCode::Reject,
                    &ErrDetail::refusal(&text),
                    plan,
                );
                self.write(&answer).await?;
            }
            Reply::Invalid { reason } => {
                tracing::warn!(source = %self.source(), device = %self.peer, control_id = %Hashed(&control_id), %reason, "Store found the message invalid; answering with an error");
                let err = ErrDetail {
                    code: ErrorCode::ApplicationInternal,
                    location: ErrorLocation::msh(None),
                    severity: super::ack::Severity::Error,
                    text: &reason,
                };
                let answer = self.negative(Some(&msh), AckCode::Error, &err, plan);
                self.write(&answer).await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// AE/CE for a header we cannot act on; the connection stays open.
    async fn bad_header(
        &mut self,
        msh: Option<&Msh<'_>>,
        error: &crate::hl7::HeaderError,
    ) -> Result<Flow, WriteError> {
        tracing::warn!(source = %self.source(), device = %self.peer, error = %error, location = %error.location(), "Unusable message header; answering with an error");
        self.submitter
            .rejected(self.source().clone(), Rejection::BadHeader);
        let text = format!("{error}; the message was not stored");
        let plan = msh.map_or(AckPlan::ORIGINAL, AckPlan::for_message);
        let answer = self.negative(msh, AckCode::Error, &ErrDetail::header(error, &text), plan);
        self.write(&answer).await?;
        Ok(Flow::Continue)
    }

    /// After shutdown began, complete frames still buffered are not
    /// submitted: each gets `AR`/`CR` so the sender retries elsewhere or
    /// later, instead of waiting for an answer that never comes.
    async fn refuse_during_shutdown(&mut self, decoded: Decoded) -> Result<Flow, WriteError> {
        let Decoded::Frame(payload) = decoded else {
            return self.handle(decoded).await;
        };
        let msh = Msh::read(&payload).ok();
        let plan = msh.as_ref().map_or(AckPlan::ORIGINAL, AckPlan::for_message);
        tracing::info!(source = %self.source(), device = %self.peer, "Refusing a buffered frame: shutting down");
        self.submitter
            .rejected(self.source().clone(), Rejection::Refused);
        let text = RefuseReason::ShuttingDown.to_string();
        let answer = self.negative(
            msh.as_ref(),
            AckCode::Reject,
            &ErrDetail::refusal(&text),
            plan,
        );
        self.write(&answer).await?;
        Ok(Flow::Continue)
    }

    /// A peer outside the allowlist: read its first frame (bounded, within
    /// the idle timeout), answer it `AR`, close.
    async fn refuse_not_allowed(mut self) {
        tracing::warn!(source = %self.source(), device = %self.peer, "Peer not in the allowlist; refusing it");
        self.submitter
            .rejected(self.source().clone(), Rejection::NotAllowed);
        let deadline = deadline_after(self.options.idle_timeout);
        let first = loop {
            match self.conn.next_buffered() {
                Some(Decoded::Frame(payload)) => break Some(payload),
                Some(Decoded::Oversize { .. }) => break None,
                Some(_) => continue,
                None if self.conn.is_eof() => break None,
                None => {}
            }
            let read = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break None,
                read = tokio::time::timeout_at(deadline, self.conn.fill()) => read,
            };
            if !matches!(read, Ok(Ok(_))) {
                break None;
            }
        };
        let Some(payload) = first else {
            return;
        };
        let msh = Msh::read(&payload).ok();
        let plan = msh.as_ref().map_or(AckPlan::ORIGINAL, AckPlan::for_message);
        let answer = self.negative(
            msh.as_ref(),
            AckCode::Reject,
            &ErrDetail::refusal("sender not allowed: this peer's address is not in the gateway's allowlist; the message was not stored"),
            plan,
        );
        if self.write(&answer).await.is_ok() {
            self.conn.close_gracefully().await;
        }
    }

    /// The positive answer: the bytes to write, and the un-framed HL7 ACK to
    /// keep with the message. One buffer: `[commit block] SB ack EB CR
    /// [SB app-ack EB CR]`; the kept ACK is a slice of it (no copy).
    fn positive(&self, msh: &Msh<'_>, plan: AckPlan) -> (Bytes, Bytes) {
        let mut out = BytesMut::with_capacity(512);
        if self.options.commit_blocks {
            out.put_slice(&COMMIT_ACK_BLOCK);
        }
        out.put_u8(START_BLOCK);
        let start = out.len();
        write_ack(&mut out, Some(msh), plan.level, AckCode::Accept, None);
        let end = out.len();
        out.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        if plan.application_ack_after {
            put_application_ack(&mut out, msh);
        }
        let out = out.freeze();
        let ack = out.slice(start..end);
        (out, ack)
    }

    /// A stored answer replayed to a resend, framed (plus the application
    /// ack, which is a message of its own, when enhanced mode asks).
    fn replay(&self, msh: &Msh<'_>, plan: AckPlan, original: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(original.len() + 256);
        if self.options.commit_blocks {
            out.put_slice(&COMMIT_ACK_BLOCK);
        }
        super::codec::put_frame(&mut out, original);
        if plan.application_ack_after {
            put_application_ack(&mut out, msh);
        }
        out.freeze()
    }

    /// A negative answer, framed (preceded by the R2 NAK block when on).
    fn negative(
        &self,
        msh: Option<&Msh<'_>>,
        code: AckCode,
        err: &ErrDetail<'_>,
        plan: AckPlan,
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(384 + 2 * err.text.len());
        if self.options.commit_blocks {
            out.put_slice(&COMMIT_NAK_BLOCK);
        }
        out.put_u8(START_BLOCK);
        write_ack(&mut out, msh, plan.level, code, Some(err));
        out.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        out.freeze()
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let limit = match self.options.idle_timeout {
            Duration::ZERO => WRITE_TIMEOUT_WITHOUT_IDLE,
            idle => idle,
        };
        self.conn.write_all(bytes, limit).await
    }
}

/// The MSH of an oversize frame's head, only if the segment ended inside the
/// head: a cut MSH-10 would put a wrong id in MSA-2.
fn complete_msh(head: &[u8]) -> Option<Msh<'_>> {
    let msh = Msh::read(head).ok()?;
    // `read` succeeded, so the first `M` starts the segment (what precedes
    // it is whitespace, NULs or a BOM).
    let start = memchr::memchr(b'M', head)?;
    memchr::memchr2(b'\r', b'\n', &head[start..]).map(|_| msh)
}

/// Append the framed application ack (`AA`) of enhanced mode.
fn put_application_ack(out: &mut BytesMut, msh: &Msh<'_>) {
    out.put_u8(START_BLOCK);
    write_ack(out, Some(msh), AckLevel::Application, AckCode::Accept, None);
    out.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
}
