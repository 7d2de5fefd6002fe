//! The contract between a source and the store.
//!
//! A source turns wire bytes into a [`Received`] item, hands it to the store
//! through a [`Submitter`] and waits for the [`Reply`] before it answers the
//! sender on the wire. The store side (in the `gateway` crate) receives
//! [`ToStore`] requests from the bounded channel made by [`channel`].
//!
//! Design:
//! - **Custody, not content.** `Stored` means the raw bytes are durably
//!   committed (fsync); only then may a source send a positive answer
//!   (HL7 AA/CA, MQTT PUBACK, DICOM success).
//! - **A reply handle dropped without an answer means `Refused`**, never
//!   "delivered": [`Submitter::submit`] maps a closed channel or a dropped
//!   handle to [`Reply::Refused`] with [`RefuseReason::ShuttingDown`] or
//!   [`RefuseReason::Dropped`].
//! - **Back-pressure comes only from the store.** The channel is bounded; a
//!   source that cannot submit waits (and so stops reading its socket).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// What kind of unit a source delivered; stored beside the raw bytes so the
/// pipeline knows how to parse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One HL7 v2 message (ER7, as framed by MLLP).
    Hl7v2,
    /// One device reading (serial MEDIBUS or `lines`, MQTT): a
    /// [`crate::reading::ReadingDoc`] as UTF-8 JSON, written by the driver.
    Reading,
    /// The header of one DICOM C-STORE object (everything before Pixel
    /// Data) as a Part 10 stream; see `dicom::stored`.
    Dicom,
    /// One MPPS N-CREATE or N-SET data set as a Part 10 stream; see
    /// `dicom::stored`.
    Mpps,
}

impl Kind {
    /// The stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hl7v2 => "hl7v2",
            Kind::Reading => "reading",
            Kind::Dicom => "dicom",
            Kind::Mpps => "mpps",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "hl7v2" => Some(Kind::Hl7v2),
            "reading" => Some(Kind::Reading),
            "dicom" => Some(Kind::Dicom),
            "mpps" => Some(Kind::Mpps),
            _ => None,
        }
    }
}

/// The part of a message's header a source reads before the commit: just
/// enough to answer it and to recognise a resend. Every field is optional
/// because sources of other kinds fill only what applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Message code, e.g. `ORU` (HL7 MSH-9.1).
    pub message_type: Option<String>,
    /// Trigger event, e.g. `R01` (HL7 MSH-9.2).
    pub trigger: Option<String>,
    /// Protocol version, e.g. `2.5.1` (HL7 MSH-12).
    pub version: Option<String>,
    /// The sender's id for this message (HL7 MSH-10).
    pub control_id: Option<String>,
    /// The sender, e.g. `MONITOR^ICU` (HL7 MSH-3 and MSH-4).
    pub sender: Option<String>,
    /// Declared character set (HL7 MSH-18), as written.
    pub charset: Option<String>,
}

/// How to recognise a resend of an earlier message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// The duplicate key (for HL7: MSH-3, MSH-4 and MSH-10).
    pub key: String,
    /// A message with the same key stored less than this long ago is a
    /// duplicate: it is answered with the original answer and not stored again.
    pub window: Duration,
}

/// One complete unit of data from a source, as it came off the wire.
#[derive(Debug, Clone)]
pub struct Received {
    /// The configured name of the source (e.g. `mllp-main`).
    pub source: Arc<str>,
    /// The device or peer it came from, when known (e.g. `10.1.2.3:40112`).
    pub device: Option<Arc<str>>,
    /// When the unit was complete on the wire.
    pub received_at: SystemTime,
    /// What the bytes are.
    pub kind: Kind,
    /// The bytes exactly as received (for HL7: between the MLLP start and end blocks).
    pub bytes: Bytes,
    /// What the source read of the header before the commit.
    pub header: Header,
    /// Duplicate detection, when the protocol has a resend key.
    pub dedup: Option<Dedup>,
    /// The positive answer the source will send once this unit is stored,
    /// kept with it so a later duplicate can be answered with exactly the
    /// same bytes.
    pub answer: Option<Bytes>,
}

/// Why the store did not take custody. None of these is about content:
/// a sender should retry later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// The store is at its size limit or the disk is full.
    StoreFull,
    /// The commit failed (I/O error or similar); the text says what happened.
    StoreFailed(String),
    /// The daemon is stopping.
    ShuttingDown,
    /// The store dropped the request without an answer; treated as a refusal.
    Dropped,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::StoreFull => {
                f.write_str("store full: the message was not stored, retry later")
            }
            RefuseReason::StoreFailed(why) => {
                write!(
                    f,
                    "store failed: {why}; the message was not stored, retry later"
                )
            }
            RefuseReason::ShuttingDown => {
                f.write_str("gateway shutting down: the message was not stored, retry later")
            }
            RefuseReason::Dropped => {
                f.write_str("store did not answer: the message was not stored, retry later")
            }
        }
    }
}

/// The store's answer to a submitted [`Received`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Durably committed under this store id. Answer positively.
    Stored {
        /// The row id of the stored message.
        id: i64,
    },
    /// A resend of a message already stored: nothing new was stored.
    /// Answer with `original_answer` when present.
    Duplicate {
        /// The row id of the original message.
        original_id: i64,
        /// The answer that was prepared for the original (see [`Received::answer`]).
        original_answer: Option<Bytes>,
    },
    /// Not stored, for a reason unrelated to content: answer with a
    /// reject that asks the sender to retry (HL7 AR/CR).
    Refused {
        /// Why.
        reason: RefuseReason,
    },
    /// The header itself is unusable: answer with an error (HL7 AE/CE).
    Invalid {
        /// Why, for the sender and the log.
        reason: String,
    },
}

/// Why a source rejected a unit without submitting it; counted by the store
/// under `rejected` so that every frame is accounted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Larger than the source's maximum.
    TooLarge,
    /// The header could not be used (no MSH, no control id, ...).
    BadHeader,
    /// The peer is not in the source's allowlist.
    NotAllowed,
    /// The store refused it (full, failing, shutting down).
    Refused,
}

impl Rejection {
    /// A short stable name, for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::BadHeader => "bad_header",
            Rejection::NotAllowed => "not_allowed",
            Rejection::Refused => "refused",
        }
    }
}

/// A request on the store's channel.
#[derive(Debug)]
pub enum ToStore {
    /// Commit this unit, then answer on `reply`.
    Commit {
        /// What arrived.
        received: Received,
        /// Where the answer goes. Dropping it unanswered means `Refused`.
        reply: oneshot::Sender<Reply>,
    },
    /// Stage a unit whose body is still arriving (a DICOM object's header
    /// before its pixel data): commit it durably outside the messages the
    /// pipeline reads, then answer on `reply` as for `Commit` (`Stored`
    /// carries the staging id). A [`ToStore::Finish`] or a
    /// [`ToStore::Retract`] follows; a staged unit left by a crash becomes a
    /// message at the next start. Counted when it leaves staging.
    Stage {
        /// What arrived so far.
        received: Received,
        /// Where the answer goes. Dropping it unanswered means `Refused`.
        reply: oneshot::Sender<Reply>,
    },
    /// The staged unit `id` arrived whole: it becomes a message with these
    /// final bytes, in the next commit. Nobody waits for that commit: the
    /// staged row is already durable.
    Finish {
        /// The staging id from the `Stored` answer to `Stage`.
        id: i64,
        /// The unit's final bytes (replacing the staged ones).
        bytes: Bytes,
    },
    /// The staged unit `id` will never arrive whole (the transfer was
    /// aborted): forget it.
    Retract {
        /// The staging id from the `Stored` answer to `Stage`.
        id: i64,
    },
    /// Count a unit the source answered negatively without submitting it.
    Rejected {
        /// The configured source name.
        source: Arc<str>,
        /// Why it was rejected.
        why: Rejection,
    },
}

/// The sending half of the store's channel, cloned into every source task.
#[derive(Debug, Clone)]
pub struct Submitter {
    tx: mpsc::Sender<ToStore>,
}

/// Make the bounded channel between the sources and the store.
/// `capacity` bounds how many requests may wait for the store writer.
pub fn channel(capacity: usize) -> (Submitter, mpsc::Receiver<ToStore>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Submitter { tx }, rx)
}

impl Submitter {
    /// Submit a unit and wait for the store's answer.
    ///
    /// Waits while the channel is full (back-pressure). Never fails: a
    /// closed channel or a dropped reply handle comes back as
    /// [`Reply::Refused`].
    pub async fn submit(&self, received: Received) -> Reply {
        self.enqueue(received).await.await
    }

    /// Queue a unit for the store now (waiting only while the channel is
    /// full) and return the wait for its answer. Units queued one after the
    /// other are stored in that order, while their answers are awaited
    /// elsewhere (MQTT: many messages in flight, acknowledged in order).
    /// The answer maps a closed channel or a dropped reply as
    /// [`Submitter::submit`] does.
    pub async fn enqueue(
        &self,
        received: Received,
    ) -> impl std::future::Future<Output = Reply> + Send + 'static {
        answered(
            self.request(|reply| ToStore::Commit { received, reply })
                .await,
        )
    }

    /// Stage a unit whose body is still arriving (see [`ToStore::Stage`]):
    /// queue it now and return the [`Staging`] that waits for the store's
    /// answer while the rest arrives. Dropping the `Staging` without
    /// [`Staging::finish`] retracts the unit.
    pub async fn stage(&self, received: Received) -> Staging {
        Staging {
            tx: self.tx.clone(),
            answer: self
                .request(|reply| ToStore::Stage { received, reply })
                .await,
            reply: None,
            finished: false,
        }
    }

    /// Queue the request `make` builds around a reply handle; `None` if the
    /// store no longer takes requests.
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Reply>) -> ToStore,
    ) -> Option<oneshot::Receiver<Reply>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.is_ok().then_some(answer)
    }

    /// Count a rejection. Best effort: if the store is gone or its queue is
    /// full the count is lost, never the caller's time.
    pub fn rejected(&self, source: Arc<str>, why: Rejection) {
        let _ = self.tx.try_send(ToStore::Rejected { source, why });
    }
}

/// The store's answer: `None` (the request could not be queued) means
/// shutting down; a reply handle dropped unanswered means `Dropped`.
async fn answered(answer: Option<oneshot::Receiver<Reply>>) -> Reply {
    match answer {
        Some(answer) => answer.await.unwrap_or(Reply::Refused {
            reason: RefuseReason::Dropped,
        }),
        None => Reply::Refused {
            reason: RefuseReason::ShuttingDown,
        },
    }
}

/// A unit staged in the store while its body arrives (see
/// [`Submitter::stage`]).
#[derive(Debug)]
pub struct Staging {
    tx: mpsc::Sender<ToStore>,
    /// The store's answer, until it is read.
    answer: Option<oneshot::Receiver<Reply>>,
    /// The answer once read.
    reply: Option<Reply>,
    finished: bool,
}

impl Staging {
    /// The store's answer to the staging (waits for its commit). `Stored`
    /// means the unit is durable; a `Duplicate` or a refusal is answered to
    /// the sender as for [`Submitter::submit`].
    pub async fn reply(&mut self) -> Reply {
        if let Some(reply) = &self.reply {
            return reply.clone();
        }
        let reply = answered(self.answer.take()).await;
        self.reply = Some(reply.clone());
        reply
    }

    /// The unit arrived whole: waits for the staging's answer and, if it
    /// was staged, queues its final `bytes` (without waiting for their
    /// commit). Returns the answer for the sender.
    pub async fn finish(mut self, bytes: Bytes) -> Reply {
        let reply = self.reply().await;
        self.finished = true;
        if let Reply::Stored { id } = reply {
            if self.tx.send(ToStore::Finish { id, bytes }).await.is_err() {
                // The store stopped between the two: the staged unit becomes
                // a message at the next start, as after a crash.
                tracing::warn!(
                    id,
                    "the store stopped before a staged unit was finished; it is kept at the next start"
                );
            }
        }
        reply
    }
}

impl Drop for Staging {
    /// Not finished: the transfer was cut. Retract the unit once the store
    /// has answered (from a task, since that may take a commit).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let tx = self.tx.clone();
        let answer = self.answer.take();
        let known = self.reply.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: it is kept at the next start
        };
        runtime.spawn(async move {
            let reply = match (known, answer) {
                (Some(reply), _) => Some(reply),
                (None, Some(answer)) => answer.await.ok(),
                (None, None) => None,
            };
            if let Some(Reply::Stored { id }) = reply {
                let _ = tx.send(ToStore::Retract { id }).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Received {
        Received {
            source: Arc::from("t"),
            device: None,
            received_at: SystemTime::now(),
            kind: Kind::Hl7v2,
            bytes: Bytes::from_static(b"MSH|^~\\&|"),
            header: Header::default(),
            dedup: None,
            answer: None,
        }
    }

    #[tokio::test]
    async fn dropped_reply_handle_means_refused() {
        let (submitter, mut rx) = channel(4);
        let store = tokio::spawn(async move {
            // Take the request and drop its reply handle unanswered.
            let req = rx.recv().await;
            drop(req);
        });
        let reply = submitter.submit(sample()).await;
        assert_eq!(
            reply,
            Reply::Refused {
                reason: RefuseReason::Dropped
            }
        );
        store.await.ok();
    }

    #[tokio::test]
    async fn closed_store_means_refused_shutting_down() {
        let (submitter, rx) = channel(4);
        drop(rx);
        let reply = submitter.submit(sample()).await;
        assert_eq!(
            reply,
            Reply::Refused {
                reason: RefuseReason::ShuttingDown
            }
        );
    }
}
