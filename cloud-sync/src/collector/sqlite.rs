//! The collector's SQLite store: every enrolled gateway, every batch it
//! sent, every event of those batches, in one file.
//!
//! # Invariants and limits
//! - **Commit before receipt.** A batch, its events, its gateway's counters
//!   and gaps change in one `BEGIN IMMEDIATE … COMMIT` with
//!   `journal_mode=WAL` and `synchronous=FULL`, so the WAL is fsynced before
//!   [`CollectorStore::store_batch`] returns and the receipt goes out. `kill -9`
//!   or a power cut loses no batch that got a receipt; one that got none is
//!   re-sent by its gateway and stored then.
//! - **One writer.** A single thread owns the read-write connection and runs
//!   the write jobs one after the other; the HTTP handlers wait for their
//!   job's answer. Readers (feeds, key lookups, `/v1/gateways`) use their own
//!   connections, which WAL lets run beside the writer.
//! - **Feed positions in commit order.** `events.id` is assigned inside the
//!   writer's transactions, which SQLite serializes (across processes too),
//!   so ids become visible in increasing order: a reader that has seen id `n`
//!   never later finds a new id below `n`. That is what makes the cursor
//!   exact; no event is skipped or repeated.
//! - **Gaps are kept, not computed.** `gaps` holds the open ranges of missing
//!   sequence numbers per gateway, updated in the batch's transaction, so
//!   `/v1/gateways` costs the same after a million batches.
//!
//! # Tables (schema version 2, see [`MIGRATIONS`])
//! - `gateways`: enrolment (key, revoked) and per-gateway figures.
//! - `batches`: one row per stored (gateway, seq): the header, signature and
//!   compressed body exactly as received (for audit: they re-verify), the
//!   chain fields, and the receipt sent (replayed to a re-send).
//! - `events`: one row per event; `id` is the feed position. The event's
//!   JSON is not copied: the row keeps the byte range of its line in the
//!   batch's decompressed body, and the feed decompresses each batch it
//!   reads once (schema 2; rows from schema 1 still carry their `json`).
//!   Storing 5,000 events then writes about 40 bytes each instead of their
//!   whole JSON a second time.
//! - `gaps`: open ranges of missing sequence numbers.
//! - `alarms`: every conflicting batch refused.
//! - `tokens`: reader tokens, as SHA-256 only.
//!
//! # Open after a crash
//! WAL recovery restores exactly the committed transactions; no state lives
//! outside one. Migrations run on open (`PRAGMA user_version`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::store::{
    assemble_feed, CollectorStore, EnrollOutcome, Enrolment, FeedPage, FeedQuery, FeedRow, Gap,
    GatewayReport, StoreError, StoreOutcome,
};
use crate::batch::VerifiedBatch;
use crate::hex;
use crate::keys::{GatewayId, PublicKey};
use crate::receipt::Receipt;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append-only.
pub const MIGRATIONS: &[&str] = &[
    // 1: gateways, batches, events, gaps, alarms, tokens.
    "CREATE TABLE gateways (
        gateway_id       TEXT PRIMARY KEY,
        public_key       BLOB    NOT NULL,
        enrolled_ms      INTEGER NOT NULL,
        revoked_ms       INTEGER,            -- NULL: active
        last_seen_ms     INTEGER,
        last_seq         INTEGER NOT NULL DEFAULT 0,
        reported_backlog INTEGER,            -- from the batch with the highest seq
        batches_received INTEGER NOT NULL DEFAULT 0,
        events_received  INTEGER NOT NULL DEFAULT 0,
        conflicts        INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE batches (
        gateway_id         TEXT    NOT NULL REFERENCES gateways (gateway_id),
        seq                INTEGER NOT NULL,
        header_sha256      BLOB    NOT NULL,
        prev_header_sha256 BLOB    NOT NULL,
        first_event_id     INTEGER NOT NULL,  -- u64 stored bit for bit
        last_event_id      INTEGER NOT NULL,
        event_count        INTEGER NOT NULL,
        created_ms         INTEGER NOT NULL,
        stored_ms          INTEGER NOT NULL,
        header             BLOB    NOT NULL,  -- exactly as received
        signature          BLOB    NOT NULL,
        body               BLOB    NOT NULL,  -- compressed, as received
        receipt            TEXT    NOT NULL,  -- the JSON sent, replayed to re-sends
        PRIMARY KEY (gateway_id, seq)
     );
     CREATE TABLE events (
        id         INTEGER PRIMARY KEY,      -- the feed position
        gateway_id TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        event_id   INTEGER NOT NULL,
        type       TEXT,
        json       TEXT    NOT NULL
     );
     CREATE INDEX events_type ON events (type, id);
     CREATE INDEX events_gateway ON events (gateway_id, id);
     CREATE TABLE gaps (
        gateway_id TEXT    NOT NULL,
        first_seq  INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL,
        opened_ms  INTEGER NOT NULL,
        PRIMARY KEY (gateway_id, first_seq)
     );
     CREATE TABLE alarms (
        id            INTEGER PRIMARY KEY,
        at_ms         INTEGER NOT NULL,
        gateway_id    TEXT    NOT NULL,
        seq           INTEGER NOT NULL,
        header_sha256 BLOB    NOT NULL,
        reason        TEXT    NOT NULL
     );
     CREATE TABLE tokens (
        name         TEXT PRIMARY KEY,
        token_sha256 BLOB    NOT NULL UNIQUE,
        created_ms   INTEGER NOT NULL
     );",
    // 2: an event no longer copies its JSON out of the batch body; it keeps
    // where its line sits in the decompressed body (the body is stored once,
    // in `batches`). Rows written by schema 1 keep their `json`.
    "CREATE TABLE events_v2 (
        id         INTEGER PRIMARY KEY,      -- the feed position
        gateway_id TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        event_id   INTEGER NOT NULL,
        type       TEXT,
        json       TEXT,                     -- schema-1 rows only
        line_start INTEGER,                  -- byte offset in the decompressed body
        line_len   INTEGER
     );
     INSERT INTO events_v2 (id, gateway_id, seq, event_id, type, json)
        SELECT id, gateway_id, seq, event_id, type, json FROM events;
     DROP TABLE events;
     ALTER TABLE events_v2 RENAME TO events;
     CREATE INDEX events_type ON events (type, id);
     CREATE INDEX events_gateway ON events (gateway_id, id);",
];

/// The newest schema version this binary knows.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// How many write jobs may wait for the writer.
const WRITE_QUEUE: usize = 256;

/// u64 values (seq, event ids, times) are stored bit for bit in SQLite's
/// signed 64-bit integers and compared in Rust, never in SQL.
fn to_sql(v: u64) -> i64 {
    v as i64
}

fn from_sql(v: i64) -> u64 {
    v as u64
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// The SQLite implementation of [`CollectorStore`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file.
    path: PathBuf,
    /// Jobs for the writer thread; `None` once shut down.
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// The writer thread, joined on shutdown.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Open the database for writing, tuned for durability, and migrate it.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let open = |e: &dyn std::fmt::Display| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| open(&e))?;
    }
    let mut conn = Connection::open(path).map_err(|e| open(&e))?;
    // WAL: readers never block the writer; FULL: the WAL is fsynced at every
    // commit, which is what makes a receipt after commit a promise.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| open(&e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| open(&e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| open(&e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| open(&e))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Bring the schema up to [`LATEST`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let mut current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: current,
            known: LATEST,
        });
    }
    while current < LATEST {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
        if now == current {
            let step = MIGRATIONS.get(current as usize).copied().unwrap_or("");
            tx.execute_batch(step).map_err(db_err)?;
            tx.pragma_update(None, "user_version", current + 1)
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            tracing::info!(version = current + 1, "collector schema migrated");
        } else {
            drop(tx);
        }
        current = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database and start its writer thread.
    ///
    /// # Errors
    /// The file or its directory cannot be opened or created, the schema is
    /// newer than this binary, a migration fails, or no thread can start.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = open_writer(path)?;
        let (tx, mut rx) = mpsc::channel::<WriteJob>(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("collector-writer".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Stop the writer after the jobs already queued, and wait for it.
    pub fn shutdown(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Run `f` on the writer thread and wait for its answer.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self
            .inner
            .writer
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .ok_or(StoreError::WriterGone)?;
        let job: WriteJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        sender.send(job).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Run `f` on a read-only connection, off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut r| r.pop());
            let mut conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&mut conn);
            if let Ok(mut r) = inner.readers.lock() {
                r.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
    }
}

/// A read-only connection beside the writer.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(db_err)?;
    Ok(conn)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl CollectorStore for SqliteStore {
    async fn enroll(
        &self,
        gateway: &GatewayId,
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<EnrollOutcome, StoreError> {
        let gateway = gateway.to_string();
        let key = key.to_bytes();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let existing: Option<(Vec<u8>, Option<i64>)> = tx
                .query_row(
                    "SELECT public_key, revoked_ms FROM gateways WHERE gateway_id = ?1",
                    [&gateway],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            let outcome = match existing {
                None => {
                    tx.execute(
                        "INSERT INTO gateways (gateway_id, public_key, enrolled_ms) VALUES (?1, ?2, ?3)",
                        params![gateway, key.to_vec(), to_sql(now_ms)],
                    )
                    .map_err(db_err)?;
                    EnrollOutcome::Enrolled
                }
                Some((k, _)) if k != key => EnrollOutcome::OtherKey,
                Some((_, None)) => EnrollOutcome::AlreadyEnrolled,
                Some((_, Some(_))) => {
                    tx.execute(
                        "UPDATE gateways SET revoked_ms = NULL WHERE gateway_id = ?1",
                        [&gateway],
                    )
                    .map_err(db_err)?;
                    EnrollOutcome::Reinstated
                }
            };
            tx.commit().map_err(db_err)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke(&self, gateway: &GatewayId, now_ms: u64) -> Result<bool, StoreError> {
        let gateway = gateway.to_string();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE gateways SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE gateway_id = ?1",
                    params![gateway, to_sql(now_ms)],
                )
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn enrolment(&self, gateway: &GatewayId) -> Result<Option<Enrolment>, StoreError> {
        let gateway = gateway.to_string();
        self.read(move |conn| {
            let row: Option<(Vec<u8>, Option<i64>)> = conn
                .prepare_cached("SELECT public_key, revoked_ms FROM gateways WHERE gateway_id = ?1")
                .and_then(|mut s| {
                    s.query_row([&gateway], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db_err)?;
            let Some((key, revoked)) = row else {
                return Ok(None);
            };
            let key: [u8; 32] = key.try_into().map_err(|_| {
                StoreError::Database(format!("stored key of {gateway} is not 32 bytes"))
            })?;
            let public_key = PublicKey::from_bytes(&key)
                .map_err(|e| StoreError::Database(format!("stored key of {gateway}: {e}")))?;
            Ok(Some(Enrolment {
                public_key,
                revoked: revoked.is_some(),
            }))
        })
        .await
    }

    async fn store_batch(
        &self,
        batch: VerifiedBatch,
        receipt: Receipt,
        now_ms: u64,
    ) -> Result<StoreOutcome, StoreError> {
        self.write(move |conn| store_batch_tx(conn, &batch, &receipt, now_ms).map_err(db_err))
            .await
    }

    async fn create_token(
        &self,
        name: &str,
        token_sha256: [u8; 32],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "INSERT OR IGNORE INTO tokens (name, token_sha256, created_ms) VALUES (?1, ?2, ?3)",
                    params![name, token_sha256.to_vec(), to_sql(now_ms)],
                )
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn reader(&self, token_sha256: [u8; 32]) -> Result<Option<String>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT name FROM tokens WHERE token_sha256 = ?1")
                .and_then(|mut s| {
                    s.query_row([token_sha256.to_vec()], |r| r.get(0))
                        .optional()
                })
                .map_err(db_err)
        })
        .await
    }

    async fn feed(&self, q: FeedQuery) -> Result<FeedPage, StoreError> {
        self.read(move |conn| feed_tx(conn, &q)).await
    }

    async fn gateways(&self) -> Result<Vec<GatewayReport>, StoreError> {
        self.read(|conn| gateways_tx(conn).map_err(db_err)).await
    }
}

/// The chain fields of a stored neighbour.
struct Neighbour {
    header_sha256: Vec<u8>,
    prev_header_sha256: Vec<u8>,
    first_event_id: u64,
    last_event_id: u64,
}

fn neighbour(
    tx: &rusqlite::Transaction<'_>,
    gateway: &str,
    seq: u64,
) -> rusqlite::Result<Option<Neighbour>> {
    tx.prepare_cached(
        "SELECT header_sha256, prev_header_sha256, first_event_id, last_event_id
         FROM batches WHERE gateway_id = ?1 AND seq = ?2",
    )?
    .query_row(params![gateway, to_sql(seq)], |r| {
        Ok(Neighbour {
            header_sha256: r.get(0)?,
            prev_header_sha256: r.get(1)?,
            first_event_id: from_sql(r.get(2)?),
            last_event_id: from_sql(r.get(3)?),
        })
    })
    .optional()
}

/// The whole of storing one batch, in one transaction (see the module doc).
fn store_batch_tx(
    conn: &mut Connection,
    v: &VerifiedBatch,
    receipt: &Receipt,
    now_ms: u64,
) -> rusqlite::Result<StoreOutcome> {
    let h = v.header();
    let b = v.batch();
    let gw = h.gateway_id.as_str();
    let hash = b.header_sha256();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    // 1. This (gateway, seq) already stored?
    let stored: Option<(Vec<u8>, String)> = tx
        .prepare_cached(
            "SELECT header_sha256, receipt FROM batches WHERE gateway_id = ?1 AND seq = ?2",
        )?
        .query_row(params![gw, to_sql(h.seq)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let conflict = match stored {
        Some((stored_hash, stored_receipt)) if stored_hash == hash => {
            tx.execute(
                "UPDATE gateways SET last_seen_ms = ?2 WHERE gateway_id = ?1",
                params![gw, to_sql(now_ms)],
            )?;
            tx.commit()?;
            return Ok(match Receipt::from_json(stored_receipt.as_bytes()) {
                Ok(r) => StoreOutcome::Duplicate(r),
                Err(e) => StoreOutcome::Conflict {
                    reason: format!("the stored receipt is unreadable: {e}"),
                },
            });
        }
        Some((stored_hash, _)) => Some(format!(
            "seq {} is already stored with header {}, this batch has header {}",
            h.seq,
            hex::encode(&stored_hash),
            hex::encode(&hash)
        )),
        None => None,
    };
    // 2. The chain with the neighbours stored (docs/batch-format.md §5).
    let conflict = match conflict {
        Some(c) => Some(c),
        None => chain_conflict(&tx, gw, h, &hash)?,
    };
    if let Some(reason) = conflict {
        tx.execute(
            "INSERT INTO alarms (at_ms, gateway_id, seq, header_sha256, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![to_sql(now_ms), gw, to_sql(h.seq), hash.to_vec(), reason],
        )?;
        tx.execute(
            "UPDATE gateways SET conflicts = conflicts + 1 WHERE gateway_id = ?1",
            [gw],
        )?;
        tx.commit()?;
        return Ok(StoreOutcome::Conflict { reason });
    }

    // 3. Store the batch and its events.
    tx.prepare_cached(
        "INSERT INTO batches (gateway_id, seq, header_sha256, prev_header_sha256, first_event_id,
            last_event_id, event_count, created_ms, stored_ms, header, signature, body, receipt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        gw,
        to_sql(h.seq),
        hash.to_vec(),
        h.prev_header_sha256.to_vec(),
        to_sql(h.first_event_id),
        to_sql(h.last_event_id),
        to_sql(h.event_count),
        to_sql(h.created_ms),
        to_sql(now_ms),
        b.header_bytes(),
        b.signature().to_vec(),
        b.body(),
        receipt.to_json(),
    ])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (gateway_id, seq, event_id, type, line_start, line_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in v.events() {
            insert.execute(params![
                gw,
                to_sql(h.seq),
                to_sql(e.event_id),
                e.event_type,
                e.start as i64,
                e.json.len() as i64,
            ])?;
        }
    }

    // 4. Gaps and the gateway's figures.
    let last_seq: u64 = from_sql(tx.query_row(
        "SELECT last_seq FROM gateways WHERE gateway_id = ?1",
        [gw],
        |r| r.get(0),
    )?);
    if h.seq > last_seq.saturating_add(1) {
        tx.execute(
            "INSERT INTO gaps (gateway_id, first_seq, last_seq, opened_ms) VALUES (?1, ?2, ?3, ?4)",
            params![gw, to_sql(last_seq + 1), to_sql(h.seq - 1), to_sql(now_ms)],
        )?;
    } else if h.seq < last_seq {
        fill_gap(&tx, gw, h.seq)?;
    }
    let newest = h.seq > last_seq;
    tx.execute(
        "UPDATE gateways SET
            last_seen_ms = ?2,
            last_seq = CASE WHEN ?3 THEN ?4 ELSE last_seq END,
            reported_backlog = CASE WHEN ?3 THEN ?5 ELSE reported_backlog END,
            batches_received = batches_received + 1,
            events_received = events_received + ?6
         WHERE gateway_id = ?1",
        params![
            gw,
            to_sql(now_ms),
            newest,
            to_sql(h.seq),
            to_sql(h.backlog),
            to_sql(h.event_count)
        ],
    )?;
    tx.commit()?;
    Ok(StoreOutcome::Stored(receipt.clone()))
}

/// Whether the batch contradicts its stored neighbours (`seq ± 1`).
fn chain_conflict(
    tx: &rusqlite::Transaction<'_>,
    gw: &str,
    h: &crate::batch::Header,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<String>> {
    if h.seq > 1 {
        if let Some(prev) = neighbour(tx, gw, h.seq - 1)? {
            if prev.header_sha256 != h.prev_header_sha256 {
                return Ok(Some(format!(
                    "broken chain: prev_header_sha256 {} is not the header of stored seq {} ({})",
                    hex::encode(&h.prev_header_sha256),
                    h.seq - 1,
                    hex::encode(&prev.header_sha256)
                )));
            }
            if h.first_event_id <= prev.last_event_id {
                return Ok(Some(format!(
                    "event ids not increasing: first_event_id {} after seq {} ended at {}",
                    h.first_event_id,
                    h.seq - 1,
                    prev.last_event_id
                )));
            }
        }
    }
    if let Some(next) = neighbour(tx, gw, h.seq.saturating_add(1))? {
        if next.prev_header_sha256 != hash {
            return Ok(Some(format!(
                "broken chain: stored seq {} names previous header {}, this batch is {}",
                h.seq + 1,
                hex::encode(&next.prev_header_sha256),
                hex::encode(hash)
            )));
        }
        if h.last_event_id >= next.first_event_id {
            return Ok(Some(format!(
                "event ids not increasing: last_event_id {} before seq {} starting at {}",
                h.last_event_id,
                h.seq + 1,
                next.first_event_id
            )));
        }
    }
    Ok(None)
}

/// `seq` arrived below the highest stored: remove it from its open gap.
///
/// Worked example: gap 3..=7 open; seq 5 arrives → gaps 3..=4 and 6..=7;
/// then 3 → 4..=4; then 4 → the gap 3..=4 is closed.
fn fill_gap(tx: &rusqlite::Transaction<'_>, gw: &str, seq: u64) -> rusqlite::Result<()> {
    let gap: Option<(i64, i64, i64)> = tx
        .query_row(
            "SELECT first_seq, last_seq, opened_ms FROM gaps
             WHERE gateway_id = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
            params![gw, to_sql(seq)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((first, last, opened)) = gap else {
        return Ok(());
    };
    let (first, last) = (from_sql(first), from_sql(last));
    if seq > last {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM gaps WHERE gateway_id = ?1 AND first_seq = ?2",
        params![gw, to_sql(first)],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO gaps (gateway_id, first_seq, last_seq, opened_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    if first < seq {
        insert.execute(params![gw, to_sql(first), to_sql(seq - 1), opened])?;
    }
    if seq < last {
        insert.execute(params![gw, to_sql(seq + 1), to_sql(last), opened])?;
    }
    Ok(())
}

/// One feed page, read in one snapshot so `next_cursor` matches the rows.
fn feed_tx(conn: &mut Connection, q: &FeedQuery) -> Result<FeedPage, StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut sql = String::from(
        "SELECT id, gateway_id, seq, json, line_start, line_len FROM events WHERE id > ?1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![to_sql(q.after).into()];
    if let Some(t) = &q.event_type {
        args.push(t.clone().into());
        sql.push_str(&format!(" AND type = ?{}", args.len()));
    }
    if let Some(g) = &q.gateway {
        args.push(g.clone().into());
        sql.push_str(&format!(" AND gateway_id = ?{}", args.len()));
    }
    args.push((q.limit as i64).into());
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut statement = tx.prepare_cached(&sql).map_err(db_err)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(args), |r| {
            let start: Option<i64> = r.get(4)?;
            let len: Option<i64> = r.get(5)?;
            Ok(FeedRow {
                position: from_sql(r.get(0)?),
                gateway_id: r.get(1)?,
                seq: from_sql(r.get(2)?),
                json: r.get(3)?,
                line: start.zip(len).map(|(s, l)| (from_sql(s), from_sql(l))),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    drop(statement);
    let events = assemble_feed(rows, |gw, seq| {
        tx.prepare_cached("SELECT body FROM batches WHERE gateway_id = ?1 AND seq = ?2")
            .and_then(|mut st| st.query_row(params![gw, to_sql(seq)], |r| r.get(0)))
            .map_err(db_err)
    })?;
    let next_cursor = if events.len() >= q.limit {
        events.last().map_or(q.after, |e| e.position)
    } else {
        // Everything up to the newest position in this snapshot was scanned.
        let max: Option<i64> = tx
            .query_row("SELECT MAX(id) FROM events", [], |r| r.get(0))
            .map_err(db_err)?;
        max.map_or(q.after, |m| from_sql(m).max(q.after))
    };
    tx.commit().map_err(db_err)?;
    Ok(FeedPage {
        events,
        next_cursor,
    })
}

fn gateways_tx(conn: &mut Connection) -> rusqlite::Result<Vec<GatewayReport>> {
    let tx = conn.transaction()?;
    let mut reports = tx
        .prepare(
            "SELECT gateway_id, public_key, revoked_ms, enrolled_ms, last_seen_ms, last_seq,
                    reported_backlog, batches_received, events_received, conflicts
             FROM gateways ORDER BY gateway_id",
        )?
        .query_map([], |r| {
            let key: Vec<u8> = r.get(1)?;
            Ok(GatewayReport {
                gateway_id: r.get(0)?,
                public_key: hex::encode(&key),
                revoked: r.get::<_, Option<i64>>(2)?.is_some(),
                enrolled_ms: from_sql(r.get(3)?),
                last_seen_ms: r.get::<_, Option<i64>>(4)?.map(from_sql),
                last_seq: from_sql(r.get(5)?),
                open_gaps: Vec::new(),
                reported_backlog: r.get::<_, Option<i64>>(6)?.map(from_sql),
                batches_received: from_sql(r.get(7)?),
                events_received: from_sql(r.get(8)?),
                conflicts: from_sql(r.get(9)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    {
        let mut gaps = tx.prepare(
            "SELECT first_seq, last_seq FROM gaps WHERE gateway_id = ?1 ORDER BY first_seq",
        )?;
        for r in &mut reports {
            r.open_gaps = gaps
                .query_map([&r.gateway_id], |row| {
                    Ok(Gap {
                        first: from_sql(row.get(0)?),
                        last: from_sql(row.get(1)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
    }
    tx.commit()?;
    Ok(reports)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::batch::{seal, verify, Chain, SealMeta};
    use crate::keys::SigningKeyFile;

    fn events(first: u64, n: u64, kind: &str) -> Vec<String> {
        (first..first + n)
            .map(|id| {
                format!(r#"{{"event_id":{id},"type":"{kind}","note":"caf\u00e9 \u2192 {id}"}}"#)
            })
            .collect()
    }

    /// A store opened on a schema-1 file keeps its old rows readable, and
    /// events of new batches come back from the stored body byte for byte.
    #[tokio::test]
    async fn schema_1_rows_survive_and_new_events_read_back_from_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO events (id, gateway_id, seq, event_id, type, json)
                 VALUES (1, 'old-gw', 1, 7, 'adt', '{\"event_id\":7,\"type\":\"adt\"}')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, LATEST);

        let key = SigningKeyFile::from_seed([3; 32]);
        let collector = SigningKeyFile::from_seed([4; 32]);
        let gw = key.gateway_id();
        store.enroll(&gw, &key.public_key(), 1).await.unwrap();
        let mut chain = Chain::GENESIS;
        let mut sent = Vec::new();
        for (n, kind) in [(5u64, "observation"), (3, "adt")] {
            let lines = events(chain.last_event_id.map_or(1, |l| l + 1), n, kind);
            let meta = SealMeta {
                created_ms: 10,
                backlog: 0,
                zstd_level: 3,
            };
            let batch = seal(&lines, &chain, &key, meta).unwrap();
            chain = batch.chain_after();
            let verified = verify(&batch, &key.public_key()).unwrap();
            let receipt = Receipt::sign(
                &collector,
                &gw,
                batch.header().seq,
                &batch.header_sha256(),
                20,
            );
            let out = store.store_batch(verified, receipt, 20).await.unwrap();
            assert!(matches!(out, StoreOutcome::Stored(_)), "{out:?}");
            sent.extend(lines);
        }

        let page = store
            .feed(FeedQuery {
                after: 0,
                limit: 100,
                event_type: None,
                gateway: None,
            })
            .await
            .unwrap();
        let got: Vec<&str> = page.events.iter().map(|e| e.json.as_str()).collect();
        let mut want = vec![r#"{"event_id":7,"type":"adt"}"#];
        want.extend(sent.iter().map(String::as_str));
        assert_eq!(got, want);
        assert_eq!(page.next_cursor, 9);

        // A filtered page that starts inside a batch.
        let page = store
            .feed(FeedQuery {
                after: 3,
                limit: 2,
                event_type: Some("observation".into()),
                gateway: Some(gw.to_string()),
            })
            .await
            .unwrap();
        let got: Vec<&str> = page.events.iter().map(|e| e.json.as_str()).collect();
        assert_eq!(got, [sent[2].as_str(), sent[3].as_str()]);
        store.shutdown();
    }
}
