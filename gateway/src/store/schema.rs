//! Versioned schema migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`. Each entry of
//! [`MIGRATIONS`] takes the store from version `i` to `i + 1` and runs in its
//! own transaction together with the version bump, so a crash mid-migration
//! leaves the store at the old version, and the next start runs it again.
//! Migrations are append-only: a released one is never edited.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: raw messages and the accounting counters.
    "CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        source        TEXT    NOT NULL,
        device        TEXT,
        received_at   INTEGER NOT NULL,   -- ms since the Unix epoch
        kind          TEXT    NOT NULL,   -- e.g. hl7v2
        message_type  TEXT,               -- MSH-9.1
        trigger_event TEXT,               -- MSH-9.2
        version       TEXT,               -- MSH-12
        control_id    TEXT,               -- MSH-10
        sender        TEXT,               -- MSH-3^MSH-4
        charset       TEXT,               -- MSH-18 as declared
        dedup_key     TEXT,
        answer        BLOB,               -- the positive answer sent, replayed to resends
        raw           BLOB    NOT NULL,   -- exactly the bytes received
        state         INTEGER NOT NULL DEFAULT 0,
        state_at      INTEGER NOT NULL    -- when it entered its state (ms)
     );
     CREATE INDEX messages_dedup ON messages (dedup_key, received_at)
        WHERE dedup_key IS NOT NULL;
     -- Partial: only uploaded rows are in it, so storing a new message (the
     -- ACK path) never touches it; it serves the raw_retention pruning.
     CREATE INDEX messages_uploaded ON messages (state_at) WHERE state = 3;
     CREATE TABLE counters (
        source         TEXT PRIMARY KEY,
        received       INTEGER NOT NULL DEFAULT 0,
        acked          INTEGER NOT NULL DEFAULT 0,
        rejected       INTEGER NOT NULL DEFAULT 0,
        duplicates     INTEGER NOT NULL DEFAULT 0,
        awaiting       INTEGER NOT NULL DEFAULT 0,
        quarantined    INTEGER NOT NULL DEFAULT 0,
        pending_upload INTEGER NOT NULL DEFAULT 0,
        uploaded       INTEGER NOT NULL DEFAULT 0
     );",
    // 2: the pipeline's results: the outbox of de-identified events, the
    // quarantine, the encounters seen (for the "transfer of an unknown
    // encounter" rule), the pipeline's cursor and the released messages.
    "CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the event id: never reused, batch order
        message_id  INTEGER NOT NULL,     -- the raw message it came from
        source      TEXT    NOT NULL,
        type        TEXT    NOT NULL,     -- observation | adt | hl7_other | ...
        event       TEXT    NOT NULL      -- the de-identified event, JSON
     );
     CREATE INDEX outbox_message ON outbox (message_id);
     CREATE TABLE quarantine (
        message_id  INTEGER PRIMARY KEY,  -- the raw message held back
        source      TEXT    NOT NULL,
        reason      TEXT    NOT NULL,     -- one line: the first fatal issue
        issues      TEXT    NOT NULL,     -- every issue found, JSON array
        at          INTEGER NOT NULL      -- when it was quarantined (ms)
     );
     CREATE TABLE encounters (
        pseudonym   TEXT PRIMARY KEY
     ) WITHOUT ROWID;
     -- The pipeline processes messages in id order; everything at or below
     -- the cursor is processed (no index on the state is needed, which
     -- keeps one B-tree out of every ACK's commit).
     CREATE TABLE meta (
        key         TEXT PRIMARY KEY,
        value       INTEGER NOT NULL
     ) WITHOUT ROWID;
     -- Messages an operator released from quarantine, below the cursor.
     CREATE TABLE released (
        message_id  INTEGER PRIMARY KEY
     );
     ALTER TABLE counters ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0;",
    // 3: sync: when each outbox event was stored, the sealed batches
    // (immutable once written), and one row of sync state: the hash chain
    // (whose last_event_id also says which outbox events are sealed: those
    // up to it), the outbox's size for its quota, and the uploader's last
    // success and error for `wardlink status`.
    "ALTER TABLE outbox ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;  -- ms; 0 before v3
     CREATE TABLE batches (
        seq           INTEGER PRIMARY KEY,   -- position in the gateway's chain, from 1
        header_sha256 BLOB    NOT NULL,      -- 32 bytes: names the batch
        first_event   INTEGER NOT NULL,      -- outbox ids (= event_id), both included
        last_event    INTEGER NOT NULL,
        event_count   INTEGER NOT NULL,
        events_bytes  INTEGER NOT NULL,      -- bytes of its events' JSON in the outbox
        encoded       BLOB,                  -- the wire form; NULL once uploaded
        encoded_bytes INTEGER NOT NULL,      -- its length
        created_at    INTEGER NOT NULL,      -- sealed (ms)
        uploaded_at   INTEGER,               -- receipt verified and committed (ms)
        stored_ms     INTEGER                -- the collector's time from the receipt
     );
     CREATE INDEX batches_pending ON batches (seq) WHERE uploaded_at IS NULL;
     CREATE TABLE sync_state (
        id                 INTEGER PRIMARY KEY CHECK (id = 1),
        gateway_id         TEXT,             -- whose chain; NULL before the first batch
        next_seq           INTEGER NOT NULL DEFAULT 1,
        prev_header_sha256 BLOB    NOT NULL DEFAULT (zeroblob(32)),
        last_event_id      INTEGER,          -- the last sealed outbox id; NULL before the first batch
        outbox_bytes       INTEGER NOT NULL DEFAULT 0, -- outbox JSON + batches not uploaded
        uploaded_batches   INTEGER NOT NULL DEFAULT 0,
        uploaded_events    INTEGER NOT NULL DEFAULT 0,
        last_upload_at     INTEGER,          -- ms
        last_error         TEXT,
        last_error_at      INTEGER,          -- ms
        last_error_alarm   INTEGER NOT NULL DEFAULT 0  -- 1: the collector refused; needs a person
     );
     INSERT INTO sync_state (id, outbox_bytes)
        SELECT 1, COALESCE(SUM(length(CAST(event AS BLOB))), 0) FROM outbox;",
    // 4: the MPPS steps a DICOM source reads at start, without scanning
    // every message. Partial: only MPPS rows enter it, so storing an HL7
    // message or a reading (the ACK path) never touches it. Building it
    // reads the table once, at the first start after the upgrade.
    "CREATE INDEX messages_mpps ON messages (source, id) WHERE kind = 'mpps';",
    // 5: one outbox row per processed message instead of one per event: its
    // events as NDJSON, zstd-compressed (about a tenth of the JSON). The
    // pipeline's commit then writes one small row per message, not four to
    // eight rows of about 1 KB each: the WAL volume of those rows had cut
    // ingest with the pipeline running to 0.6 of ingest alone. The events of
    // a row have the ids first_event, first_event + 1, ...; a batch takes
    // whole rows. Rows of older versions become rows of one event, their
    // JSON kept as it was (plain, not compressed), their ids unchanged; the
    // highest id AUTOINCREMENT ever gave stays in `meta` so no id is reused.
    "CREATE TABLE outbox_rows (
        first_event INTEGER PRIMARY KEY,  -- the event_id of its first event
        event_count INTEGER NOT NULL,     -- its events have ids first_event .. + event_count - 1
        message_id  INTEGER NOT NULL,     -- the raw message they came from
        source      TEXT    NOT NULL,
        events      BLOB    NOT NULL,     -- NDJSON (a line per event, no event_id), zstd frame or plain
        created_at  INTEGER NOT NULL      -- ms
     );
     INSERT INTO outbox_rows (first_event, event_count, message_id, source, events, created_at)
        SELECT id, 1, message_id, source, CAST(event AS BLOB), created_at FROM outbox;
     INSERT OR REPLACE INTO meta (key, value)
        SELECT 'event_id_floor', seq FROM sqlite_sequence WHERE name = 'outbox';
     DROP TABLE outbox;
     ALTER TABLE outbox_rows RENAME TO outbox;
     CREATE INDEX outbox_message ON outbox (message_id);",
    // 6: units staged while their body arrives: a DICOM object's header is
    // committed (durably) when its Pixel Data begins, so the fsync overlaps
    // the pixels' transfer; the pipeline never reads this table. When the
    // object is whole its row moves into `messages`; an aborted transfer
    // deletes it; rows left by a crash are moved at the next start.
    "CREATE TABLE staged (
        id            INTEGER PRIMARY KEY,
        source        TEXT    NOT NULL,
        device        TEXT,
        received_at   INTEGER NOT NULL,
        kind          TEXT    NOT NULL,
        message_type  TEXT,
        trigger_event TEXT,
        version       TEXT,
        control_id    TEXT,
        sender        TEXT,
        charset       TEXT,
        dedup_key     TEXT,
        answer        BLOB,
        raw           BLOB    NOT NULL
     );",
    // 7: the duplicate index leaves `messages`: an index on it was written
    // in every commit an ACK waits for, one random B-tree page per message.
    // The `dedup` table is written behind the ACK path, in batches
    // (store::dedup); the key stays in the message's row, so a crash loses
    // nothing (the next start indexes what the table lacks). Building it
    // reads the old index once, at the first start after the upgrade.
    "CREATE TABLE dedup (
        message_id  INTEGER PRIMARY KEY,  -- messages.id
        key         TEXT    NOT NULL,     -- messages.dedup_key
        received_at INTEGER NOT NULL      -- messages.received_at
     );
     INSERT INTO dedup (message_id, key, received_at)
        SELECT id, dedup_key, received_at FROM messages WHERE dedup_key IS NOT NULL;
     DROP INDEX messages_dedup;
     CREATE INDEX dedup_key ON dedup (key, received_at);",
];

/// How long systemd is asked to wait for one migration of an existing store
/// (`EXTEND_TIMEOUT_USEC`): 30 minutes.
pub const MIGRATION_TIMEOUT_USEC: u32 = 1_800_000_000;

/// The newest schema version this binary knows.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// The store's current schema version.
///
/// # Errors
/// SQLite fails.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Bring the schema up to [`LATEST`].
///
/// # Errors
/// The store is newer than this binary, or a migration fails.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut current = version(conn).map_err(sql)?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known: LATEST,
        });
    }
    // 0: a new store (its migrations are instant); otherwise an upgrade.
    let found = current;
    while current < LATEST {
        let step = MIGRATIONS[current as usize];
        if found > 0 {
            // Upgrading an existing store: a step may read the whole store
            // (building an index reads every message: 6 s for 10 million on
            // this machine's disk, minutes on slow flash). systemd's start
            // timeout (90 s by default) must not kill it: a killed migration
            // rolls back and would start over at every restart. Without
            // NOTIFY_SOCKET this is a no-op.
            let status = format!(
                "Migrating the store to schema version {} (once, after an upgrade)",
                current + 1
            );
            crate::notify::send(&[
                sd_notify::NotifyState::ExtendTimeoutUsec(MIGRATION_TIMEOUT_USEC),
                sd_notify::NotifyState::Status(&status),
            ]);
            tracing::info!(version = current + 1, "{status}");
        }
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(step).map_err(sql)?;
        tx.pragma_update(None, "user_version", current + 1)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        current += 1;
        tracing::info!(version = current, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_store_and_is_idempotent() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path)?;
        migrate(&mut conn, &path)?;
        assert_eq!(version(&conn)?, LATEST);
        migrate(&mut conn, &path)?;
        assert_eq!(version(&conn)?, LATEST);
        Ok(())
    }

    #[test]
    fn refuses_a_store_from_the_future() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "user_version", LATEST + 1)?;
        let err = migrate(&mut conn, &path).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("newer")),
            "{err:?}"
        );
        Ok(())
    }
}
