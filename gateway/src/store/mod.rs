//! The store: every message wardlink takes custody of, in one SQLite file.
//!
//! # Invariants and limits
//! - **Commit before answer.** A source's positive answer (HL7 AA/CA) goes out
//!   only after the transaction holding its raw bytes has committed with
//!   `journal_mode=WAL` and `synchronous=FULL`, i.e. after the WAL fsync. So
//!   `kill -9` or a power cut at any moment loses nothing acknowledged.
//! - **One writer.** A single thread ([`writer`]) owns the read-write
//!   connection. Sources reach it through the bounded channel of
//!   `wardlink_devices::channel`; readers (`wardlink status`) open their own
//!   connections, which WAL lets run beside the writer.
//! - **Group commit.** The writer waits for the first request, takes whatever
//!   else is already queued (at most `store.group_commit_max`, default 512),
//!   writes them in one transaction and pays one fsync for all of them. At 145 µs
//!   per fsync on this machine's disk (and milliseconds on an edge box's flash)
//!   that is the only way to many thousands of durable messages per second.
//! - **A full store pushes back, never drops.** With `store.max_bytes` set the
//!   database may not grow past it (`PRAGMA max_page_count`); a commit that
//!   does not fit fails with `SQLITE_FULL`, and every request of that group is
//!   answered `Refused(StoreFull)` (HL7 AR/CR). Nothing stored is deleted to
//!   make room. A full disk behaves the same way.
//! - **Every message is accounted for.** The `counters` table changes in the
//!   same transaction as the rows it counts (see [`Counters`] for the identity).
//! - **The outbox has a quota.** `sync.outbox_max_bytes` (default 1 GiB)
//!   bounds the outbox's events plus the sealed batches not yet uploaded
//!   (`sync_state.outbox_bytes`, changed in the same transactions as those
//!   rows). At the quota, new messages are refused with `StoreFull` (AR/CR)
//!   and an alarm is logged; nothing acknowledged is deleted to make room.
//! - **Sealed batches are immutable and deleted only after a receipt.** A
//!   batch's wire bytes are stored, with the chain, before its first upload;
//!   its events leave the outbox only in the transaction that records the
//!   collector's verified receipt ([`outbox`]).
//!
//! # Tables (see [`schema`] for the migrations)
//! - `messages`: one row per stored unit: raw bytes exactly as received, the
//!   header read before the commit (type, trigger, version, control id,
//!   sender, charset), arrival time, the duplicate key, the answer that was
//!   prepared for it (replayed to a resend), and its state.
//! - `counters`: one row per source name with the accounting counters.
//! - `outbox` (v2): the de-identified events, by event id (never reused).
//! - `quarantine` (v2): messages held back, with the reason and every issue.
//! - `encounters` (v2): encounter pseudonyms seen, for the pipeline's rules.
//! - `meta` (v2): small named values, e.g. the pipeline's cursor.
//! - `released` (v2): quarantined messages an operator released.
//! - v3: `outbox.created_at`, `batches` (sealed batches by sequence number:
//!   header hash, event id range, wire bytes until uploaded) and `sync_state`
//!   (one row: the hash chain, whose `last_event_id` is also the line
//!   between sealed and unsealed outbox events, the outbox's size, the last
//!   upload and the last upload error).
//! - v4: `messages_mpps`, a partial index of the MPPS rows (a DICOM source
//!   reads its stored MPPS steps at start).
//!
//! # States a stored message passes through
//! `awaiting` (0, stored, not yet through the pipeline) → `quarantined` (1) or
//! `pending_upload` (2: its events in the outbox, unsealed or in sealed
//! batches) → `uploaded` (3: the collector's receipt for the batch holding
//! its last event was verified and committed). Raw rows in `uploaded` are deleted
//! `store.raw_retention` after they got there; their counters stay. An
//! operator may release a quarantined message (back to `awaiting`, the
//! pipeline runs again) or drop it (`dropped`, 4, its raw bytes deleted).
//!
//! The pipeline ([`crate::processor`]) reads `awaiting` rows on its own
//! connection and sends its results to the writer, which applies them in
//! one transaction per batch: the outbox events (or the quarantine entry),
//! the new state, the counters and the pipeline's cursor together.
//!
//! Which messages await the pipeline is known without an index on the
//! state: messages are processed in id order, so the ones above the
//! persisted cursor (`meta.pipeline_cursor`) await it, plus the ones an
//! operator released (the `released` table). Every index on `messages` is
//! one more B-tree page in the WAL on every commit an ACK waits for
//! (measured here: about 50 µs each on a single-message commit of about
//! 300 µs), so `messages` has only partial indexes that new HL7 messages
//! and readings never enter: over uploaded rows (for pruning) and over MPPS
//! rows (for the DICOM source). The duplicate index is a table of its own,
//! written behind the ACK path in batches ([`dedup`]).
//!
//! # No full scans
//! The store holds millions of rows (a week of a busy site), so nothing
//! that runs at start, while idle or per status request may scan
//! `messages`. SQLite has no statistics here (no `ANALYZE`), and with a
//! plain `JOIN` of a small table (`released`, `quarantine`) to `messages`
//! it chose to scan `messages` in id order and probe the small table; every
//! such join is written `small CROSS JOIN messages`, which fixes the order.
//! A test checks the query plan of each statement on those paths.
//!
//! # Open after a crash
//! SQLite's WAL recovery restores exactly the committed transactions; nothing
//! else needs repairing because no state lives outside a transaction: a group
//! that did not commit was never answered positively, and its senders resend.
//! Migrations run on open (`PRAGMA user_version`), so a newer binary upgrades
//! an older store in place. The sealer and the uploader keep no state outside
//! the store either: after a crash the sealer continues the chain stored in
//! `sync_state`, and the uploader sends the first sealed batch without an
//! `uploaded_at` again (if the collector had stored it, it answers with the
//! same receipt, marked `duplicate`).
//!
//! # Checkpoints
//! A separate thread ([`checkpoint`]) runs passive checkpoints on its own
//! connection, which do not block the writer. The writer's connection
//! also checkpoints when a commit takes the WAL past
//! [`checkpoint::WRITER_AUTOCHECKPOINT`] pages (so the WAL restarts and is
//! overwritten rather than grown); [`checkpoint`] says why, and why that
//! threshold.

pub mod checkpoint;
pub(crate) mod dedup;
pub mod latency;
pub mod outbox;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

pub use writer::{StoreWriter, WriterOptions};

/// The file name of the database inside the state directory.
pub const DB_FILE: &str = "wardlink.db";

/// A stored message's state (the `messages.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Stored. Above the pipeline's cursor (or in `released`) it awaits the
    /// pipeline; at or below it, its events are in the outbox or in a
    /// sealed batch, awaiting upload. The pipeline does not rewrite the row
    /// to say so (see `writer::apply_processed`).
    Received = 0,
    /// The pipeline found a fatal issue; kept for review.
    Quarantined = 1,
    /// Its events await upload: written by schema versions up to 5 (the
    /// pipeline now leaves such a message `Received`). Such rows upload
    /// like `Received` ones.
    PendingUpload = 2,
    /// The collector acknowledged its batch.
    Uploaded = 3,
    /// Quarantined, then dropped by an operator (`wardlink quarantine drop`).
    Dropped = 4,
}

/// Errors opening or reading the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or used.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// There is no store yet at this path.
    #[error("no store at {0} (has `wardlink run` been started with this state directory?)")]
    Missing(PathBuf),
    /// The store was written by a newer wardlink.
    #[error("the store at {path} has schema version {found}, newer than this wardlink understands ({known}); upgrade wardlink")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// SQLite said no.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// The path of the database in a state directory.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

/// Milliseconds since the Unix epoch, the time unit of every stored time.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Open (creating if needed) the store for writing, tuned for durability,
/// and bring its schema up to date.
///
/// # Errors
/// The state directory cannot be created, the file cannot be opened, the
/// schema is newer than this binary, or a migration fails.
pub fn open_for_writing(
    state_dir: &Path,
    max_bytes: Option<u64>,
) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = db_path(state_dir);
    let sql = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let mut conn = Connection::open(&path).map_err(sql)?;
    // WAL: readers never block the writer; FULL: the WAL is fsynced at every
    // commit, which is what makes an ACK after commit a promise.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        checkpoint::WRITER_AUTOCHECKPOINT,
    )
    .map_err(sql)?;
    schema::migrate(&mut conn, &path)?;
    if let Some(max) = max_bytes {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(sql)?;
        let pages = (max / page_size.max(512) as u64).max(1);
        conn.pragma_update(None, "max_page_count", pages as i64)
            .map_err(sql)?;
    }
    Ok(conn)
}

/// Open an existing store for reading while the daemon may be writing.
///
/// # Errors
/// There is no store, or SQLite cannot open it.
pub fn open_for_reading(state_dir: &Path) -> Result<Connection, StoreError> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Err(StoreError::Missing(path));
    }
    let sql = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    // Read-write flags without CREATE: a WAL reader may need to create the
    // -shm file; `query_only` makes sure this connection never writes.
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    conn.pragma_update(None, "query_only", true).map_err(sql)?;
    let version = schema::version(&conn).map_err(sql)?;
    if version > schema::LATEST {
        return Err(StoreError::TooNew {
            path,
            found: version,
            known: schema::LATEST,
        });
    }
    Ok(conn)
}

/// The accounting counters of one source, or of all of them summed.
///
/// The identity that always holds (and that the tests check):
/// `received = acked + duplicates + rejected` and
/// `acked = awaiting + quarantined + pending_upload + uploaded + dropped`.
/// `acked` counts messages stored and positively answered; a duplicate was
/// answered with the original's answer but stored no second time, so it is
/// counted apart; `rejected` counts negative answers (AR/AE, CR/CE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Units that arrived and were answered.
    pub received: i64,
    /// Stored and acknowledged.
    pub acked: i64,
    /// Answered negatively, nothing stored.
    pub rejected: i64,
    /// Resends of a stored message, answered with the original answer.
    pub duplicates: i64,
    /// Stored, waiting for the pipeline.
    pub awaiting: i64,
    /// Held back by validation, see `wardlink quarantine`.
    pub quarantined: i64,
    /// Through the pipeline, waiting to be uploaded.
    pub pending_upload: i64,
    /// Acknowledged by the collector.
    pub uploaded: i64,
    /// Quarantined, then dropped by an operator.
    pub dropped: i64,
}

impl Counters {
    /// Add another set of counters to this one.
    pub fn add(&mut self, o: &Counters) {
        self.received += o.received;
        self.acked += o.acked;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        self.awaiting += o.awaiting;
        self.quarantined += o.quarantined;
        self.pending_upload += o.pending_upload;
        self.uploaded += o.uploaded;
        self.dropped += o.dropped;
    }
}

/// Read every source's counters, by source name.
///
/// # Errors
/// SQLite fails.
pub fn read_counters(conn: &Connection) -> rusqlite::Result<Vec<(String, Counters)>> {
    let mut stmt = conn.prepare(
        "SELECT source, received, acked, rejected, duplicates, awaiting, quarantined,
                pending_upload, uploaded, dropped
         FROM counters ORDER BY source",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Counters {
                received: r.get(1)?,
                acked: r.get(2)?,
                rejected: r.get(3)?,
                duplicates: r.get(4)?,
                awaiting: r.get(5)?,
                quarantined: r.get(6)?,
                pending_upload: r.get(7)?,
                uploaded: r.get(8)?,
                dropped: r.get(9)?,
            },
        ))
    })?;
    rows.collect()
}

/// The pipeline's cursor: every message with an id at or below it has been
/// through the pipeline (or was released again, see the `released` table).
pub const PIPELINE_CURSOR: &str = "pipeline_cursor";

/// See [`oldest_pending`]. `CROSS JOIN` keeps `released` the outer loop
/// (a plain `JOIN` scanned all of `messages`; see `processor::RELEASED_SQL`).
pub(crate) const OLDEST_PENDING_SQL: &str = "SELECT source, MIN(received_at) FROM (
        SELECT source, received_at FROM messages
         WHERE id > COALESCE((SELECT value FROM meta WHERE key = 'pipeline_cursor'), 0)
           AND state = 0
        UNION ALL
        SELECT m.source, m.received_at FROM released r CROSS JOIN messages m
            ON m.id = r.message_id
         WHERE m.state = 0
        UNION ALL
        SELECT source, received_at FROM messages
         WHERE id IN (SELECT message_id FROM outbox)
     ) GROUP BY source";

/// Arrival time (ms since the epoch) of the oldest message not yet uploaded
/// (awaiting the pipeline or pending upload), per source.
///
/// Reads only the unprocessed tail (above the pipeline cursor), the released
/// messages and the messages with events in the outbox, never the whole table.
///
/// # Errors
/// SQLite fails.
pub fn oldest_pending(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare(OLDEST_PENDING_SQL)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Bytes the store takes on disk: the database, its WAL and shared-memory file.
pub fn size_on_disk(state_dir: &Path) -> u64 {
    let db = db_path(state_dir);
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        if let Ok(m) = std::fs::metadata(PathBuf::from(p)) {
            total += m.len();
        }
    }
    total
}

/// Every row of `sql`, mapped (for the store's unit tests).
#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(crate) fn rows<T>(
    conn: &Connection,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], map)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The plan lines of `sql` with `params` bound (a partial index is
    /// matched against bound values, so they must be real ones).
    fn plan(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// The writer's own checkpoints come at the threshold that keeps them
    /// out of the ACK p99 (see [`checkpoint`]).
    #[test]
    fn the_writer_checkpoints_at_its_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_for_writing(dir.path(), None).unwrap();
        let pages: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(pages, checkpoint::WRITER_AUTOCHECKPOINT);
    }

    /// Every statement that runs at start, while idle, per message or per
    /// status request reads `messages` (and `dedup`, as large) through its
    /// rowid or an index, never by scanning it: on a store of 10 million messages a scan takes
    /// seconds (benches/startup.rs).
    #[test]
    fn no_statement_on_a_hot_path_scans_messages() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_for_writing(dir.path(), None).unwrap();
        let (awaiting, quarantined, uploaded) = (
            State::Received as i64,
            State::Quarantined as i64,
            State::Uploaded as i64,
        );
        let statements: Vec<(&str, &str, Vec<&dyn rusqlite::ToSql>)> = vec![
            (
                "pipeline: released",
                crate::processor::RELEASED_SQL,
                vec![&awaiting, &256],
            ),
            (
                "pipeline: tail",
                crate::processor::TAIL_SQL,
                vec![&5, &awaiting, &256],
            ),
            ("status: oldest pending", OLDEST_PENDING_SQL, vec![]),
            (
                "admin: quarantine by code",
                crate::admin::QUARANTINE_BY_CODE_SQL,
                vec![&quarantined],
            ),
            ("quarantine list", crate::quarantine::LIST_SQL, vec![]),
            ("quarantine show", crate::quarantine::SHOW_SQL, vec![&7]),
            (
                "dicom start: MPPS steps",
                crate::dicom_source::MPPS_KNOWN_SQL,
                vec![&"imaging"],
            ),
            ("writer: duplicate", dedup::FIND_SQL, vec![&"A|B|1", &0]),
            (
                "writer start: duplicate index catch-up",
                dedup::CATCH_UP_SQL,
                vec![],
            ),
            (
                "writer: pruning the duplicate index",
                dedup::PRUNE_SQL,
                vec![&uploaded, &0],
            ),
            (
                "writer: pruning",
                "DELETE FROM messages WHERE state = ?1 AND state_at < ?2",
                vec![&uploaded, &0],
            ),
        ];
        for (name, sql, params) in statements {
            let lines = plan(&conn, sql, &params);
            let scans: Vec<&String> = lines
                .iter()
                .filter(|l| {
                    ["m", "messages", "dedup"]
                        .iter()
                        .any(|t| **l == format!("SCAN {t}") || l.starts_with(&format!("SCAN {t} ")))
                })
                .collect();
            assert!(scans.is_empty(), "{name} scans messages: {lines:?}");
            assert!(!lines.is_empty(), "{name}: no plan");
        }
    }
}
