//! `wardlink quarantine`: list, show, release and drop quarantined messages.
//!
//! These run in the operator's process, beside a running daemon: each change
//! is one short SQLite transaction (the daemon's writer waits for it through
//! SQLite's lock, at most a few milliseconds). A change moves the message's
//! state and the counters together, so the accounting identity holds:
//! - **release**: back to `awaiting`; the daemon's pipeline processes it
//!   again (after a configuration change, say). A message whose issue is
//!   still fatal returns to the quarantine with its reason.
//! - **drop**: to `dropped`; its raw bytes are deleted, its counters stay.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::{self, unix_ms, State, StoreError};

/// One quarantined message, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// The message's store id (what `show`, `release` and `drop` take).
    pub id: i64,
    /// The source it came from.
    pub source: String,
    /// When it was received (ms since the epoch).
    pub received_at_ms: i64,
    /// MSH-9 as `code^trigger`, when known.
    pub message_type: Option<String>,
    /// Why it is held.
    pub reason: String,
}

/// A quarantined message in detail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Detail {
    /// What `list` shows.
    #[serde(flatten)]
    pub entry: Entry,
    /// The sender's message control id (MSH-10).
    pub control_id: Option<String>,
    /// Every issue found, as stored (JSON).
    pub issues: serde_json::Value,
    /// The raw message, only when asked for (it holds PHI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Errors of the quarantine commands.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No quarantined message has this id.
    #[error("no quarantined message with id {0} (see `wardlink quarantine list`)")]
    NotFound(i64),
}

fn open_rw(state_dir: &Path) -> Result<Connection, QuarantineError> {
    let path = store::db_path(state_dir);
    if !path.exists() {
        return Err(StoreError::Missing(path).into());
    }
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A quarantined message's entry, with `$tail` (an order or a filter).
/// `CROSS JOIN` keeps the quarantine the outer loop: a plain `JOIN` made
/// SQLite scan all of `messages` (no statistics; it preferred `messages`'
/// id order) for every `list` and `show`.
macro_rules! entry_sql {
    ($tail:literal) => {
        concat!(
            "SELECT m.id, m.source, m.received_at,
                CASE WHEN m.message_type IS NULL THEN NULL
                     ELSE m.message_type || COALESCE('^' || m.trigger_event, '') END,
                q.reason, m.control_id, q.issues, m.raw
             FROM quarantine q CROSS JOIN messages m ON m.id = q.message_id",
            $tail
        )
    };
}

/// `wardlink quarantine list`: in id order.
pub(crate) const LIST_SQL: &str = entry_sql!(" ORDER BY q.message_id");

/// `wardlink quarantine show`.
pub(crate) const SHOW_SQL: &str = entry_sql!(" WHERE q.message_id = ?1");

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: r.get(0)?,
        source: r.get(1)?,
        received_at_ms: r.get(2)?,
        message_type: r.get(3)?,
        reason: r.get(4)?,
    })
}

/// Every quarantined message, oldest first.
///
/// # Errors
/// No store, or SQLite fails.
pub fn list(state_dir: &Path) -> Result<Vec<Entry>, QuarantineError> {
    let conn = store::open_for_reading(state_dir)?;
    let mut stmt = conn.prepare(LIST_SQL)?;
    let rows = stmt.query_map([], entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One quarantined message; its raw bytes only with `with_raw`.
///
/// # Errors
/// No such quarantined message, no store, or SQLite fails.
pub fn show(state_dir: &Path, id: i64, with_raw: bool) -> Result<Detail, QuarantineError> {
    let conn = store::open_for_reading(state_dir)?;
    conn.query_row(SHOW_SQL, [id], |r| {
        let issues: String = r.get(6)?;
        let raw: Vec<u8> = r.get(7)?;
        Ok(Detail {
            entry: entry(r)?,
            control_id: r.get(5)?,
            issues: serde_json::from_str(&issues).unwrap_or(serde_json::Value::Null),
            raw: with_raw.then(|| String::from_utf8_lossy(&raw).replace('\r', "\n")),
        })
    })
    .optional()?
    .ok_or(QuarantineError::NotFound(id))
}

/// Send a quarantined message back through the pipeline.
///
/// # Errors
/// No such quarantined message, no store, or SQLite fails.
pub fn release(state_dir: &Path, id: i64) -> Result<(), QuarantineError> {
    change(state_dir, id, State::Received)
}

/// Drop a quarantined message: its raw bytes are deleted, its counters stay.
///
/// # Errors
/// No such quarantined message, no store, or SQLite fails.
pub fn drop_message(state_dir: &Path, id: i64) -> Result<(), QuarantineError> {
    change(state_dir, id, State::Dropped)
}

fn change(state_dir: &Path, id: i64, to: State) -> Result<(), QuarantineError> {
    let mut conn = open_rw(state_dir)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let source: Option<String> = tx
        .query_row(
            "SELECT source FROM messages WHERE id = ?1 AND state = ?2",
            (id, State::Quarantined as i64),
            |r| r.get(0),
        )
        .optional()?;
    let Some(source) = source else {
        return Err(QuarantineError::NotFound(id));
    };
    let now = unix_ms(SystemTime::now());
    match to {
        State::Dropped => {
            tx.execute(
                "UPDATE messages SET state = ?1, state_at = ?2, raw = x'' WHERE id = ?3",
                (to as i64, now, id),
            )?;
            tx.execute(
                "UPDATE counters SET quarantined = quarantined - 1, dropped = dropped + 1 WHERE source = ?1",
                [&source],
            )?;
        }
        _ => {
            tx.execute(
                "UPDATE messages SET state = ?1, state_at = ?2 WHERE id = ?3",
                (to as i64, now, id),
            )?;
            tx.execute(
                "UPDATE counters SET quarantined = quarantined - 1, awaiting = awaiting + 1 WHERE source = ?1",
                [&source],
            )?;
            // Below the pipeline's cursor: tell the pipeline explicitly.
            tx.execute(
                "INSERT OR IGNORE INTO released (message_id) VALUES (?1)",
                [id],
            )?;
        }
    }
    tx.execute("DELETE FROM quarantine WHERE message_id = ?1", [id])?;
    tx.commit()?;
    Ok(())
}
