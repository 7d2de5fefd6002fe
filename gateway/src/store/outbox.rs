//! The outbox, the sealed batches and the sync state: the SQL of steps 4
//! and 5 (seal, upload) of `architecture.md`.
//!
//! Writes here run inside the store writer's transactions (one writer, see
//! [`super::writer`]); reads run on the sealer's, uploader's and `status`'s
//! own connections.
//!
//! # The life of an event
//! 1. The pipeline's result for one message becomes one `outbox` row
//!    (`created_at` = now): its events as NDJSON, compressed in the pipeline
//!    thread ([`encode_events`]), with the event ids `first_event`,
//!    `first_event + 1`, ... ([`next_event_id`]). The row's stored size is
//!    added to `sync_state.outbox_bytes`.
//!
//!    Design: a row per message, not per event. At about 1 KB of JSON per
//!    event and four to eight events per vital-signs message, rows per
//!    event made the pipeline's commits write four times the WAL of the raw
//!    messages themselves, in the one writer that the ACKs wait for;
//!    compressed together, a message's events take about a tenth.
//! 2. The sealer takes the oldest unsealed rows, whole, in id order, and the
//!    writer stores the batch ([`store_sealed`]): one `batches` row with the
//!    wire bytes and its event id range, the chain advanced in `sync_state`
//!    (its `last_event_id` becomes the batch's last id), the wire bytes
//!    added to `outbox_bytes`. A sealed batch never changes.
//!
//!    Design: "sealed" is not a column of the outbox. Ids are assigned in
//!    commit order by the one writer and a batch always takes the oldest
//!    unsealed rows, so the sealed events are exactly those with
//!    `id <= sync_state.last_event_id`, and each batch is a contiguous range
//!    of rows. Marking rows would rewrite them into the WAL for nothing.
//! 3. After a verified receipt the writer marks it uploaded
//!    ([`mark_uploaded`]): its outbox rows are deleted, every message with no
//!    row left in the outbox moves `pending_upload` → `uploaded` (the
//!    counters with it), the wire bytes are dropped and `outbox_bytes`
//!    shrinks by both. Applying it twice changes nothing.
//! 4. Uploaded `batches` rows (a hundred bytes each) are pruned with the raw
//!    messages after `raw_retention`; the chain lives in `sync_state`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction};
use wardlink_sync::batch::Chain;

use super::State;

/// The zstd level of outbox rows: level 1 already takes a vital-signs
/// message's events to about a tenth (7.8 KB of JSON to 0.8 KB), at a cost
/// the pipeline thread hardly notices; higher levels gain a few percent.
const ZSTD_LEVEL: i32 = 1;
/// The first bytes of a zstd frame (RFC 8878); a plain row starts with `{`.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

thread_local! {
    /// The compression context, made once per thread: making one per
    /// message (`zstd::bulk::compress`) cost a quarter of the pipeline
    /// thread's CPU, most of it clearing the context's tables.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One message's events as an outbox row's `events` value: NDJSON (each
/// event one line of JSON, no `event_id`), zstd-compressed unless that
/// would not be smaller. Runs in the pipeline thread, off the writer.
///
/// # Errors
/// An event's JSON spans several lines (`serde_json::to_string` never
/// writes one), or compression fails.
pub fn encode_events<S: AsRef<str>>(events: &[S]) -> Result<Vec<u8>, String> {
    let mut ndjson = Vec::with_capacity(events.iter().map(|e| e.as_ref().len() + 1).sum());
    for (i, e) in events.iter().enumerate() {
        let e = e.as_ref();
        if e.contains('\n') || !e.starts_with('{') {
            return Err(format!("event {i} is not a one-line JSON object"));
        }
        if i > 0 {
            ndjson.push(b'\n');
        }
        ndjson.extend_from_slice(e.as_bytes());
    }
    let packed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        compressor.compress(&ndjson)
    });
    let packed = packed.map_err(|e| e.to_string())?;
    Ok(if packed.len() < ndjson.len() {
        packed
    } else {
        ndjson
    })
}

/// The events of an outbox row's `events` value, in order: the inverse of
/// [`encode_events`] (rows from before schema version 5 hold one plain
/// event).
///
/// # Errors
/// The value is neither a zstd frame nor plain JSON text, or does not
/// decompress to UTF-8.
pub fn decode_events(stored: &[u8]) -> Result<Vec<String>, String> {
    let text = if stored.starts_with(&ZSTD_MAGIC) {
        let plain = zstd::stream::decode_all(stored).map_err(|e| format!("zstd: {e}"))?;
        String::from_utf8(plain).map_err(|_| "the events are not UTF-8".to_string())?
    } else {
        std::str::from_utf8(stored)
            .map_err(|_| "the events are not UTF-8".to_string())?
            .to_string()
    };
    Ok(text.lines().map(str::to_string).collect())
}

/// The id the next outbox row's first event gets: above every id given so
/// far (the outbox's rows, the sealed ones up to `last_event_id` whose rows
/// may be gone, and what `AUTOINCREMENT` gave before schema version 5).
///
/// # Errors
/// SQLite fails.
pub fn next_event_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT MAX(
            COALESCE((SELECT first_event + event_count FROM outbox
                      ORDER BY first_event DESC LIMIT 1), 1),
            COALESCE((SELECT last_event_id + 1 FROM sync_state WHERE id = 1), 1),
            COALESCE((SELECT value + 1 FROM meta WHERE key = 'event_id_floor'), 1))",
    )?
    .query_row([], |r| r.get(0))
}

/// One event as the outbox holds it (for tests, tools and `status`-like
/// readers; the sealer reads whole rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its `event_id`.
    pub event_id: i64,
    /// The raw message it came from.
    pub message_id: i64,
    /// The source that received that message.
    pub source: String,
    /// Its `type` member (`observation`, `adt`, ...).
    pub kind: String,
    /// The event, one line of JSON, without `event_id`.
    pub json: String,
}

/// Every event in the outbox, in id order.
///
/// # Errors
/// SQLite fails or a row cannot be decoded.
pub fn stored_events(conn: &Connection) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare(
        "SELECT first_event, message_id, source, events FROM outbox ORDER BY first_event",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let first: i64 = r.get(0)?;
        let message_id: i64 = r.get(1)?;
        let source: String = r.get(2)?;
        let blob: Vec<u8> = r.get(3)?;
        let events = decode_events(&blob).map_err(|e| undecodable(3, e))?;
        for (i, json) in events.into_iter().enumerate() {
            let kind = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.get("type")?.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push(StoredEvent {
                event_id: first + i64::try_from(i).unwrap_or(i64::MAX),
                message_id,
                source: source.clone(),
                kind,
                json,
            });
        }
    }
    Ok(out)
}

fn undecodable(column: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Blob, reason.into())
}

/// Unsealed outbox rows, as the sealer reads them.
#[derive(Debug, Clone)]
pub struct UnsealedRow {
    /// The id of its first event.
    pub first_event: i64,
    /// How many events (ids `first_event ..`).
    pub event_count: i64,
    /// The stored `events` value ([`decode_events`]).
    pub events: Vec<u8>,
}

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
        "SELECT COALESCE(SUM(event_count), 0) FROM outbox
         WHERE first_event > (SELECT COALESCE(last_event_id, 0) FROM sync_state)",
        [],
        |r| r.get(0),
    )?;
    let oldest = conn
        .query_row(
            "SELECT created_at FROM outbox
             WHERE first_event > (SELECT COALESCE(last_event_id, 0) FROM sync_state)
             ORDER BY first_event LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok((count, oldest))
}

/// The oldest unsealed rows (after `chain.last_event_id`), in id order,
/// whole, holding at most `max_events` events together, but always at
/// least one row (a message with more events than `max_events` makes a
/// batch of its own).
///
/// # Errors
/// SQLite fails.
pub fn unsealed(
    conn: &Connection,
    chain: &Chain,
    max_events: usize,
) -> rusqlite::Result<Vec<UnsealedRow>> {
    let after = chain
        .last_event_id
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    let max = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT first_event, event_count, events FROM outbox
         WHERE first_event > ?1 ORDER BY first_event LIMIT ?2",
    )?;
    // Every row holds at least one event, so `max` rows are always enough.
    let mut rows = stmt.query((after, max))?;
    let mut out = Vec::new();
    let mut events = 0_i64;
    while let Some(r) = rows.next()? {
        let row = UnsealedRow {
            first_event: r.get(0)?,
            event_count: r.get(1)?,
            events: r.get(2)?,
        };
        if !out.is_empty() && events.saturating_add(row.event_count) > max {
            break;
        }
        events = events.saturating_add(row.event_count);
        out.push(row);
    }
    Ok(out)
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
    let (found, starts, ends, skipped): (i64, i64, i64, i64) = tx.query_row(
        "SELECT (SELECT COALESCE(SUM(event_count), 0) FROM outbox
                  WHERE first_event BETWEEN ?1 AND ?2),
                (SELECT COUNT(*) FROM outbox WHERE first_event = ?1),
                (SELECT COALESCE(MAX(first_event + event_count - 1), 0) FROM outbox
                  WHERE first_event BETWEEN ?1 AND ?2),
                (SELECT COUNT(*) FROM outbox WHERE first_event > ?3 AND first_event < ?1)",
        (b.first_event, b.last_event, sealed_up_to),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    // It is exactly whole rows (its first id starts one, its last ends
    // one, the events in between are all there), no unsealed row before it
    // is skipped, and none of them was sealed before.
    if found != b.event_count
        || starts != 1
        || ends != b.last_event
        || skipped != 0
        || b.first_event <= sealed_up_to
    {
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
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT message_id FROM outbox WHERE first_event BETWEEN ?1 AND ?2",
        )?;
        let rows = stmt.query_map((first, last), |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let events: i64 = {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM outbox WHERE first_event BETWEEN ?1 AND ?2 RETURNING event_count",
        )?;
        let counts = stmt.query_map((first, last), |r| r.get::<_, i64>(0))?;
        counts.sum::<rusqlite::Result<i64>>()?
    };
    let mut per_source: HashMap<String, i64> = HashMap::new();
    {
        // A message has one row, so it moves with its batch; stores from
        // before schema version 5 have a row per event, and a message whose
        // events span two batches moves with the second. Its row is
        // `Received` (or `PendingUpload`, written by schema versions up to 5).
        let mut done = tx.prepare_cached(
            "UPDATE messages SET state = ?1, state_at = ?2
             WHERE id = ?3 AND state IN (?4, ?5)
               AND NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ?3)
             RETURNING source",
        )?;
        for id in &message_ids {
            let source: Option<String> = done
                .query_row(
                    (
                        State::Uploaded as i64,
                        now,
                        id,
                        State::Received as i64,
                        State::PendingUpload as i64,
                    ),
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_compressed_and_plain() {
        let events: Vec<String> = (0..7)
            .map(|i| {
                format!(
                    r#"{{"schema":1,"type":"observation","code":{{"code":"1478{i}","system":"MDC"}},"value_num":{i}.5,"patient":"P1-fcc2e5549a5b77241877315e58f50dbb"}}"#
                )
            })
            .collect();
        let stored = encode_events(&events).unwrap();
        assert!(
            stored.starts_with(&ZSTD_MAGIC),
            "repetitive JSON compresses"
        );
        let plain_len: usize = events.iter().map(|e| e.len() + 1).sum();
        assert!(
            stored.len() * 3 < plain_len,
            "{} of {plain_len}",
            stored.len()
        );
        assert_eq!(decode_events(&stored).unwrap(), events);
        // Too short to gain: kept plain, and still read back.
        let tiny = encode_events(&["{}"]).unwrap();
        assert_eq!(tiny, b"{}");
        assert_eq!(decode_events(&tiny).unwrap(), vec!["{}".to_string()]);
        // A row from before schema version 5: one plain event.
        assert_eq!(
            decode_events(br#"{"type":"adt"}"#).unwrap(),
            vec![r#"{"type":"adt"}"#.to_string()]
        );
    }

    #[test]
    fn bad_events_and_bad_rows_are_errors_not_panics() {
        assert!(encode_events(&["{\"a\":1}\n{\"b\":2}"]).is_err());
        assert!(encode_events(&["not json"]).is_err());
        let mut broken = ZSTD_MAGIC.to_vec();
        broken.extend_from_slice(b"garbage");
        assert!(decode_events(&broken).is_err());
        assert!(decode_events(&[0xff, 0xfe, b'{']).is_err());
    }

    #[test]
    fn the_sealer_takes_whole_rows_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(dir.path(), None).unwrap();
        // Rows of 3, 4 and 2 events: ids 1..=3, 4..=7, 8..=9.
        for (message, n) in [(1_i64, 3_i64), (2, 4), (3, 2)] {
            let first = next_event_id(&conn).unwrap();
            let lines = vec!["{}"; n as usize];
            conn.execute(
                "INSERT INTO outbox (first_event, event_count, message_id, source, events,
                    created_at) VALUES (?1, ?2, ?3, 'x', ?4, 0)",
                (first, n, message, encode_events(&lines).unwrap()),
            )
            .unwrap();
        }
        assert_eq!(next_event_id(&conn).unwrap(), 10);
        let firsts = |max, last: Option<u64>| -> Vec<(i64, i64)> {
            let chain = Chain {
                last_event_id: last,
                ..Chain::GENESIS
            };
            unsealed(&conn, &chain, max)
                .unwrap()
                .iter()
                .map(|r| (r.first_event, r.event_count))
                .collect()
        };
        assert_eq!(firsts(7, None), vec![(1, 3), (4, 4)]);
        assert_eq!(firsts(6, None), vec![(1, 3)]);
        // A row bigger than the limit still goes, alone.
        assert_eq!(firsts(2, None), vec![(1, 3)]);
        assert_eq!(firsts(100, Some(3)), vec![(4, 4), (8, 2)]);
        assert_eq!(unsealed_summary(&conn).unwrap().0, 9);
        assert_eq!(stored_events(&conn).unwrap().len(), 9);
    }
}
