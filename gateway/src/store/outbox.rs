//! The outbox, the sealed batches and the sync state: the SQL of steps 4
//! and 5 (seal, upload) of `architecture.md`.
//!
//! Writes here run inside the store writer's transactions (one writer, see
//! [`super::writer`]); reads run on the sealer's, uploader's and `status`'s
//! own connections.
//!
//! # The life of an event
//! 1. The pipeline's result puts it in `outbox` (`created_at` = now) and
//!    adds its JSON's length to `sync_state.outbox_bytes`.
//! 2. The sealer takes the oldest unsealed events, in id order, and the
//!    writer stores the batch ([`store_sealed`]): one `batches` row with the
//!    wire bytes and its id range, the chain advanced in `sync_state` (its
//!    `last_event_id` becomes the batch's last id), the wire bytes added to
//!    `outbox_bytes`. A sealed batch never changes.
//!
//!    Design: "sealed" is not a column of the outbox. Ids are assigned in
//!    commit order by the one writer and a batch always takes the oldest
//!    unsealed events, so the sealed events are exactly those with
//!    `id <= sync_state.last_event_id`, and each batch is a contiguous id
//!    range. Marking 5,000 rows per batch would rewrite about 5 MiB of event
//!    JSON into the WAL for nothing.
//! 3. After a verified receipt the writer marks it uploaded
//!    ([`mark_uploaded`]): its outbox rows are deleted, every message with no
//!    event left in the outbox moves `pending_upload` → `uploaded` (the
//!    counters with it), the wire bytes are dropped and `outbox_bytes`
//!    shrinks by both. Applying it twice changes nothing.
//! 4. Uploaded `batches` rows (a hundred bytes each) are pruned with the raw
//!    messages after `raw_retention`; the chain lives in `sync_state`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction};
use wardlink_sync::batch::Chain;

use super::State;

/// A batch the sealer built, for the writer to store.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    /// The gateway whose key signed it.
    pub gateway_id: String,
    /// Its sequence number.
    pub seq: u64,
    /// SHA-256 of its header.
    pub header_sha256: [u8; 32],
    /// The first and last outbox id in it (both included).
    pub first_event: i64,
    /// See `first_event`.
    pub last_event: i64,
    /// How many events.
    pub event_count: i64,
    /// Bytes of those events' JSON as stored in the outbox.
    pub events_bytes: i64,
    /// The wire form (`Batch::encode`).
    pub encoded: Vec<u8>,
    /// When it was sealed (ms).
    pub created_at: i64,
    /// The chain after it.
    pub chain_after: Chain,
}

/// What marking a batch uploaded changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Events deleted from the outbox.
    pub events: i64,
    /// Messages that moved to `uploaded`.
    pub messages: i64,
    /// Bytes `outbox_bytes` shrank by.
    pub freed_bytes: i64,
}

/// Why the writer did not store a sealed batch.
#[derive(Debug, thiserror::Error)]
pub enum SealRejected {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The batch does not continue the stored chain (a second sealer, or
    /// state changed under it).
    #[error("batch seq {got} does not continue the chain (next is {expected})")]
    Chain {
        /// The stored next sequence number.
        expected: u64,
        /// The batch's.
        got: u64,
    },
    /// Its events are not exactly the next unsealed rows.
    #[error(
        "batch seq {seq}: {found} unsealed outbox rows in {first}..={last}, expected {expected}"
    )]
    Events {
        /// The batch.
        seq: u64,
        /// Its range.
        first: i64,
        /// Its range.
        last: i64,
        /// Rows found.
        found: usize,
        /// Its event count.
        expected: i64,
    },
}

/// The one row of `sync_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// Whose chain the sealed batches form (`None` before the first batch).
    pub gateway_id: Option<String>,
    /// Where the next batch goes.
    pub chain: Chain,
    /// Bytes of the outbox's events plus the wire bytes of sealed batches not
    /// yet uploaded: what `sync.outbox_max_bytes` limits.
    pub outbox_bytes: i64,
    /// Batches uploaded since the store was created.
    pub uploaded_batches: i64,
    /// Events in them.
    pub uploaded_events: i64,
    /// When the last batch was uploaded (ms).
    pub last_upload_at: Option<i64>,
    /// The last upload failure, one line.
    pub last_error: Option<String>,
    /// When it happened (ms).
    pub last_error_at: Option<i64>,
    /// Whether it was an alarm (the collector refused; a person must act)
    /// rather than a transient failure that is being retried.
    pub last_error_alarm: bool,
}

/// Read the sync state.
///
/// # Errors
/// SQLite fails (or the store is older than schema version 3).
pub fn read_sync_state(conn: &Connection) -> rusqlite::Result<SyncState> {
    conn.query_row(
        "SELECT gateway_id, next_seq, prev_header_sha256, last_event_id, outbox_bytes,
                uploaded_batches, uploaded_events, last_upload_at, last_error, last_error_at,
                last_error_alarm
         FROM sync_state WHERE id = 1",
        [],
        |r| {
            let prev: Vec<u8> = r.get(2)?;
            let mut prev_header_sha256 = [0u8; 32];
            if prev.len() == 32 {
                prev_header_sha256.copy_from_slice(&prev);
            }
            Ok(SyncState {
                gateway_id: r.get(0)?,
                chain: Chain {
                    next_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    prev_header_sha256,
                    last_event_id: r
                        .get::<_, Option<i64>>(3)?
                        .and_then(|v| u64::try_from(v).ok()),
                },
                outbox_bytes: r.get(4)?,
                uploaded_batches: r.get(5)?,
                uploaded_events: r.get(6)?,
                last_upload_at: r.get(7)?,
                last_error: r.get(8)?,
                last_error_at: r.get(9)?,
                last_error_alarm: r.get::<_, i64>(10)? != 0,
            })
        },
    )
}

/// The unsealed part of the outbox: how many events, and when the oldest
/// was stored (ms).
///
/// # Errors
/// SQLite fails.
pub fn unsealed_summary(conn: &Connection) -> rusqlite::Result<(i64, Option<i64>)> {
    let count = conn.query_row(
        "SELECT COUNT(*) FROM outbox
         WHERE id > (SELECT COALESCE(last_event_id, 0) FROM sync_state)",
        [],
        |r| r.get(0),
    )?;
    let oldest = conn
        .query_row(
            "SELECT created_at FROM outbox
             WHERE id > (SELECT COALESCE(last_event_id, 0) FROM sync_state)
             ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok((count, oldest))
}

/// The oldest `max` events after `chain.last_event_id` (the unsealed ones),
/// `(id, JSON)`, in id order.
///
/// # Errors
/// SQLite fails.
pub fn unsealed(
    conn: &Connection,
    chain: &Chain,
    max: usize,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let after = chain
        .last_event_id
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    let mut stmt =
        conn.prepare_cached("SELECT id, event FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map((after, i64::try_from(max).unwrap_or(i64::MAX)), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

/// The first sealed batch not yet uploaded, after `after` if given (the
/// uploader's last receipt whose commit may still be pending): `(seq, wire
/// bytes)`.
///
/// # Errors
/// SQLite fails.
pub fn next_to_upload(
    conn: &Connection,
    after: Option<u64>,
) -> rusqlite::Result<Option<(u64, Vec<u8>)>> {
    let after = after.and_then(|s| i64::try_from(s).ok()).unwrap_or(0);
    conn.query_row(
        "SELECT seq, encoded FROM batches WHERE uploaded_at IS NULL AND seq > ?1
         ORDER BY seq LIMIT 1",
        [after],
        |r| {
            Ok((
                u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
            ))
        },
    )
    .optional()
}

/// How far behind the upload is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Events in the outbox not sealed yet.
    pub unsealed_events: i64,
    /// Sealed batches waiting for upload.
    pub sealed_batches: i64,
    /// Events in them.
    pub sealed_events: i64,
    /// When the oldest of them was sealed (ms).
    pub oldest_sealed_at_ms: Option<i64>,
}

/// Read the backlog.
///
/// # Errors
/// SQLite fails.
pub fn backlog(conn: &Connection) -> rusqlite::Result<Backlog> {
    let (unsealed_events, _) = unsealed_summary(conn)?;
    let (sealed_batches, sealed_events, oldest_sealed_at_ms) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(event_count), 0), MIN(created_at)
         FROM batches WHERE uploaded_at IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(Backlog {
        unsealed_events,
        sealed_batches,
        sealed_events,
        oldest_sealed_at_ms,
    })
}

/// Store a sealed batch and advance the chain, inside the writer's
/// transaction. Returns the bytes it adds to the outbox's size.
///
/// # Errors
/// SQLite fails, or the batch does not fit the stored chain or the outbox.
pub fn store_sealed(tx: &Transaction<'_>, b: &SealedBatch) -> Result<i64, SealRejected> {
    let state = read_sync_state(tx)?;
    if state.chain.next_seq != b.seq {
        return Err(SealRejected::Chain {
            expected: state.chain.next_seq,
            got: b.seq,
        });
    }
    let seq = i64::try_from(b.seq).unwrap_or(i64::MAX);
    let sealed_up_to = state
        .chain
        .last_event_id
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    let (found, skipped): (i64, i64) = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM outbox WHERE id BETWEEN ?1 AND ?2),
                (SELECT COUNT(*) FROM outbox WHERE id > ?3 AND id < ?1)",
        (b.first_event, b.last_event, sealed_up_to),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // All its rows are there, no unsealed row before it is skipped, and
    // none of them was sealed before.
    if found != b.event_count || skipped != 0 || b.first_event <= sealed_up_to {
        return Err(SealRejected::Events {
            seq: b.seq,
            first: b.first_event,
            last: b.last_event,
            found: usize::try_from(found).unwrap_or(0),
            expected: b.event_count,
        });
    }
    let encoded_bytes = i64::try_from(b.encoded.len()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO batches (seq, header_sha256, first_event, last_event, event_count,
            events_bytes, encoded, encoded_bytes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            seq,
            &b.header_sha256[..],
            b.first_event,
            b.last_event,
            b.event_count,
            b.events_bytes,
            &b.encoded,
            encoded_bytes,
            b.created_at,
        ],
    )?;
    tx.execute(
        "UPDATE sync_state SET gateway_id = ?1, next_seq = ?2, prev_header_sha256 = ?3,
            last_event_id = ?4, outbox_bytes = outbox_bytes + ?5
         WHERE id = 1",
        rusqlite::params![
            b.gateway_id,
            i64::try_from(b.chain_after.next_seq).unwrap_or(i64::MAX),
            &b.chain_after.prev_header_sha256[..],
            b.chain_after
                .last_event_id
                .and_then(|v| i64::try_from(v).ok()),
            encoded_bytes,
        ],
    )?;
    Ok(encoded_bytes)
}

/// Mark batch `seq` uploaded, inside the writer's transaction (see the
/// module doc). `None` if it is unknown or already uploaded.
///
/// # Errors
/// SQLite fails.
pub fn mark_uploaded(
    tx: &Transaction<'_>,
    seq: u64,
    stored_ms: u64,
    now: i64,
) -> rusqlite::Result<Option<Uploaded>> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let Some((first, last, events_bytes, encoded_bytes)) = tx
        .query_row(
            "SELECT first_event, last_event, events_bytes, encoded_bytes
             FROM batches WHERE seq = ?1 AND uploaded_at IS NULL",
            [seq],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let message_ids: Vec<i64> = {
        let mut stmt =
            tx.prepare_cached("SELECT DISTINCT message_id FROM outbox WHERE id BETWEEN ?1 AND ?2")?;
        let rows = stmt.query_map((first, last), |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let events = tx.execute(
        "DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2",
        (first, last),
    )?;
    let mut per_source: HashMap<String, i64> = HashMap::new();
    {
        // A message whose events span two batches moves with the second.
        let mut done = tx.prepare_cached(
            "UPDATE messages SET state = ?1, state_at = ?2
             WHERE id = ?3 AND state = ?4
               AND NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ?3)
             RETURNING source",
        )?;
        for id in &message_ids {
            let source: Option<String> = done
                .query_row(
                    (State::Uploaded as i64, now, id, State::PendingUpload as i64),
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(source) = source {
                *per_source.entry(source).or_default() += 1;
            }
        }
    }
    {
        let mut count = tx.prepare_cached(
            "UPDATE counters SET pending_upload = pending_upload - ?2, uploaded = uploaded + ?2
             WHERE source = ?1",
        )?;
        for (source, n) in &per_source {
            count.execute((source, n))?;
        }
    }
    let stored_ms = i64::try_from(stored_ms).unwrap_or(i64::MAX);
    tx.execute(
        "UPDATE batches SET encoded = NULL, uploaded_at = ?2, stored_ms = ?3 WHERE seq = ?1",
        (seq, now, stored_ms),
    )?;
    let events = i64::try_from(events).unwrap_or(i64::MAX);
    let freed_bytes = events_bytes.saturating_add(encoded_bytes);
    tx.execute(
        "UPDATE sync_state SET outbox_bytes = outbox_bytes - ?1,
            uploaded_batches = uploaded_batches + 1, uploaded_events = uploaded_events + ?2,
            last_upload_at = ?3
         WHERE id = 1",
        (freed_bytes, events, now),
    )?;
    Ok(Some(Uploaded {
        events,
        messages: per_source.values().sum(),
        freed_bytes,
    }))
}

/// Record an upload failure for `wardlink status`.
///
/// # Errors
/// SQLite fails.
pub fn record_failure(
    conn: &Connection,
    error: &str,
    alarm: bool,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sync_state SET last_error = ?1, last_error_at = ?2, last_error_alarm = ?3
         WHERE id = 1",
        (error, now, i64::from(alarm)),
    )?;
    Ok(())
}

/// Delete uploaded batches' rows older than `cutoff` (ms): they hold only
/// figures by then.
///
/// # Errors
/// SQLite fails.
pub fn prune_uploaded_batches(conn: &Connection, cutoff: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM batches WHERE uploaded_at IS NOT NULL AND uploaded_at < ?1",
        [cutoff],
    )
}
