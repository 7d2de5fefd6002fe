//! What the collector needs from its database, as a trait, so that
//! PostgreSQL can follow SQLite ([`super::sqlite`]) without touching the
//! HTTP layer.
//!
//! # The contract every implementation keeps
//! - **Commit before receipt.** [`CollectorStore::store_batch`] returns
//!   [`StoreOutcome::Stored`] only after the batch, all its events, the
//!   gateway's counters and its gaps are durably committed in one
//!   transaction. The HTTP layer sends the receipt only then.
//! - **Once per (gateway, seq).** A second batch with the same header hash
//!   gets the stored receipt back ([`StoreOutcome::Duplicate`]); one with
//!   another hash is a [`StoreOutcome::Conflict`], recorded as an alarm and
//!   never stored. The chain is checked against the neighbours stored
//!   (`seq − 1` and `seq + 1`, see `docs/batch-format.md` §5).
//! - **The feed never skips or repeats.** Events get their feed position in
//!   commit order, and a reader sees only committed positions: a page after
//!   cursor `c` holds the next positions after `c`, and a later page can never
//!   reveal a position at or before one already shown.

use std::future::Future;

use crate::batch::VerifiedBatch;
use crate::keys::{GatewayId, PublicKey};
use crate::receipt::Receipt;

/// Errors of the storage layer (the database failed; not a verdict on a batch).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database or its directory could not be opened.
    #[error("database {path}: {message}")]
    Open {
        /// The database file or URL.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer collector.
    #[error("database {path} has schema version {found}, newer than this collector understands ({known}); upgrade wardlink-collector")]
    TooNew {
        /// The database.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// A query or commit failed.
    #[error("database: {0}")]
    Database(String),
    /// The writer thread is gone (the collector is shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
}

/// A gateway's enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// Its public key.
    pub public_key: PublicKey,
    /// Whether it was revoked (its batches are refused with 403).
    pub revoked: bool,
}

/// What [`CollectorStore::enroll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// A new gateway.
    Enrolled,
    /// Already enrolled with this key (and not revoked): nothing changed.
    AlreadyEnrolled,
    /// Enrolled before with this key and revoked: enrolled again.
    Reinstated,
    /// Enrolled with another key: refused (revoke is not a key rotation).
    OtherKey,
}

/// What happened to a verified batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now; send this receipt.
    Stored(Receipt),
    /// Stored before with the same header hash; send the stored receipt.
    Duplicate(Receipt),
    /// The batch contradicts what is stored (another batch at this `seq`,
    /// or a broken hash chain / event-id order with a neighbour). Not stored;
    /// recorded as an alarm.
    Conflict {
        /// Why, for the log and the 409 body.
        reason: String,
    },
}

/// One page of the event feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedQuery {
    /// Return events after this position (0: from the start).
    pub after: u64,
    /// At most this many events.
    pub limit: usize,
    /// Only events whose `type` is this.
    pub event_type: Option<String>,
    /// Only events of this gateway.
    pub gateway: Option<String>,
}

/// One event in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// Its feed position (the cursor to resume after it).
    pub position: u64,
    /// The gateway that sent it.
    pub gateway_id: String,
    /// The batch it came in.
    pub seq: u64,
    /// The event's JSON object, as sealed.
    pub json: String,
}

/// One row of the `events` table as a store reads it for the feed: either
/// the event's JSON (rows written by schema 1) or where its line sits in its
/// batch's decompressed body (every row since).
#[derive(Debug, Clone)]
pub(crate) struct FeedRow {
    pub position: u64,
    pub gateway_id: String,
    pub seq: u64,
    pub json: Option<String>,
    pub line: Option<(u64, u64)>,
}

/// The largest decompressed body the feed reads back. Bodies were checked
/// against the collector's `max_body_bytes` when they were stored; this only
/// bounds what a damaged database could make the reader allocate.
const FEED_BODY_LIMIT: usize = 4 << 30;

/// Turn feed rows into events: each batch a row points into is
/// decompressed once (`body_of` returns its stored, compressed body).
pub(crate) fn assemble_feed(
    rows: Vec<FeedRow>,
    mut body_of: impl FnMut(&str, u64) -> Result<Vec<u8>, StoreError>,
) -> Result<Vec<FeedEvent>, StoreError> {
    let mut current: Option<(String, u64, String)> = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let json = match (row.json, row.line) {
            (Some(json), _) => json,
            (None, Some((start, len))) => {
                let fresh =
                    matches!(&current, Some((g, s, _)) if *g == row.gateway_id && *s == row.seq);
                if !fresh {
                    let body = body_of(&row.gateway_id, row.seq)?;
                    let ndjson =
                        crate::batch::decompress_body(&body, FEED_BODY_LIMIT).map_err(|e| {
                            StoreError::Database(format!(
                                "stored body of {} seq {}: {e}",
                                row.gateway_id, row.seq
                            ))
                        })?;
                    current = Some((row.gateway_id.clone(), row.seq, ndjson));
                }
                let ndjson = current.as_ref().map_or("", |c| c.2.as_str());
                let range = usize::try_from(start)
                    .ok()
                    .and_then(|s| Some(s..s.checked_add(usize::try_from(len).ok()?)?));
                range
                    .and_then(|r| ndjson.get(r))
                    .ok_or_else(|| {
                        StoreError::Database(format!(
                            "event at position {} points outside the body of {} seq {}",
                            row.position, row.gateway_id, row.seq
                        ))
                    })?
                    .to_string()
            }
            (None, None) => {
                return Err(StoreError::Database(format!(
                    "event at position {} has neither JSON nor a body line",
                    row.position
                )))
            }
        };
        events.push(FeedEvent {
            position: row.position,
            gateway_id: row.gateway_id,
            seq: row.seq,
            json,
        });
    }
    Ok(events)
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// The events, in feed order.
    pub events: Vec<FeedEvent>,
    /// Where to resume: the last event's position, or, when the page is not
    /// full, the highest position scanned (so filtered readers move on too).
    pub next_cursor: u64,
}

/// A range of missing sequence numbers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The first missing `seq`.
    pub first: u64,
    /// The last missing `seq`.
    pub last: u64,
}

/// What `GET /v1/gateways` reports per gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayReport {
    /// The gateway id.
    pub gateway_id: String,
    /// Its public key (hex).
    pub public_key: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was enrolled (ms since the epoch).
    pub enrolled_ms: u64,
    /// When a valid batch from it last arrived (ms), new or re-sent.
    pub last_seen_ms: Option<u64>,
    /// The highest `seq` stored (0: none yet).
    pub last_seq: u64,
    /// Sequence numbers skipped and not yet received.
    pub open_gaps: Vec<Gap>,
    /// The backlog reported in the batch with the highest `seq`.
    pub reported_backlog: Option<u64>,
    /// Batches stored.
    pub batches_received: u64,
    /// Events stored.
    pub events_received: u64,
    /// Conflicting batches refused (each logged as an alarm).
    pub conflicts: u64,
}

/// The collector's database. Every method may block on I/O inside its
/// future; implementations keep the blocking off the async workers.
pub trait CollectorStore: Send + Sync + 'static {
    /// Enrol a gateway's key.
    fn enroll(
        &self,
        gateway: &GatewayId,
        key: &PublicKey,
        now_ms: u64,
    ) -> impl Future<Output = Result<EnrollOutcome, StoreError>> + Send;

    /// Revoke a gateway; `false` if it is not enrolled.
    fn revoke(
        &self,
        gateway: &GatewayId,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The enrolment of a gateway, if any.
    fn enrolment(
        &self,
        gateway: &GatewayId,
    ) -> impl Future<Output = Result<Option<Enrolment>, StoreError>> + Send;

    /// Store a verified batch (see the module doc). `receipt` is the one to
    /// keep if the batch is new.
    fn store_batch(
        &self,
        batch: VerifiedBatch,
        receipt: Receipt,
        now_ms: u64,
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send;

    /// Record a reader token (only its SHA-256 is kept); `false` if the name
    /// is taken.
    fn create_token(
        &self,
        name: &str,
        token_sha256: [u8; 32],
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The reader name of a token's SHA-256, if it is a live token.
    fn reader(
        &self,
        token_sha256: [u8; 32],
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// A page of the event feed.
    fn feed(&self, query: FeedQuery) -> impl Future<Output = Result<FeedPage, StoreError>> + Send;

    /// Every gateway's report.
    fn gateways(&self) -> impl Future<Output = Result<Vec<GatewayReport>, StoreError>> + Send;
}
