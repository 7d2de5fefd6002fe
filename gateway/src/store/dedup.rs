//! The duplicate index, written behind the ACK path.
//!
//! A message's duplicate key (HL7: `MSH-3|MSH-4|MSH-10`; DICOM: the SOP
//! Instance UID) is stored in its `messages` row, in the commit its ACK
//! waits for. The index that finds it again is the `dedup` table, and that
//! is written later, in batches, by [`DedupIndex::flush`]: an index entry
//! lands on a random leaf of a B-tree, so in the group commit every message
//! added one more 4 KB page to the WAL and to the fsync the senders wait
//! on (about 4 of the 10 pages of a commit at 8 connections). An A/B with
//! `mllp_ingest` that dropped the index gave 13–21% more messages per
//! second at 8 connections and 52–67% at 64; this design, measured against
//! the previous binary, 1.15–1.22× at 8 and 1.57–1.75× at 64.
//!
//! Until a flush, the keys of committed messages are held here, in memory
//! ([`DedupIndex::find`] looks in both). Nothing is lost in a crash: the
//! rows are durable, and at the next start the first [`DedupIndex::flush`] indexes
//! every message newer than the newest entry of `dedup` (flushes go in id
//! order, so the indexed messages are always a prefix). So a duplicate is
//! recognised exactly as before, whether its original was committed a
//! moment ago in the same group, before the last flush, or before a crash.
//!
//! An entry lives as long as its message: the writer's pruning deletes
//! both in one transaction.

use std::collections::HashMap;

use rusqlite::{CachedStatement, Connection, TransactionBehavior};

/// Flush once this many keys wait: at 15,000 messages/s about every
/// 270 ms, a few milliseconds of writing (no fsync of its own) that
/// delays one group.
pub(crate) const FLUSH_AT: usize = 4096;

/// The stored messages with a key (`?1`) received at or after `?2`, from
/// the index alone. No `ORDER BY`: the newest is picked in
/// [`DedupIndex::find`] (a key has at most a few rows in its window).
pub(crate) const FIND_SQL: &str =
    "SELECT message_id FROM dedup WHERE key = ?1 AND received_at >= ?2";

/// One entry (`OR REPLACE`: indexing a message twice is harmless).
const INSERT_SQL: &str =
    "INSERT OR REPLACE INTO dedup (message_id, key, received_at) VALUES (?1, ?2, ?3)";

/// Index every message newer than the newest indexed one.
pub(crate) const CATCH_UP_SQL: &str = "INSERT OR REPLACE INTO dedup (message_id, key, received_at)
     SELECT id, dedup_key, received_at FROM messages
     WHERE id > (SELECT COALESCE(MAX(message_id), 0) FROM dedup)
       AND dedup_key IS NOT NULL";

/// The entries of the messages that the writer's pruning deletes (the
/// same condition, `?1` = uploaded, `?2` = the cutoff).
pub(crate) const PRUNE_SQL: &str = "DELETE FROM dedup WHERE message_id IN
     (SELECT id FROM messages WHERE state = ?1 AND state_at < ?2)";

/// Where a stored message's key points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: i64,
    received_at: i64,
}

/// Keys of committed messages that are not yet in the `dedup` table, and
/// those of the group being written.
///
/// A new index has not caught up: its first [`DedupIndex::flush`] (at the
/// writer's start) indexes every message newer than the table's newest
/// entry, which is what a crash left unindexed.
#[derive(Debug, Default)]
pub(crate) struct DedupIndex {
    /// Committed, not yet flushed: each key's entries (usually one).
    pending: HashMap<String, Vec<Entry>>,
    /// How many entries `pending` holds.
    pending_count: usize,
    /// Stored by the transaction being written; pending once it commits.
    group: Vec<(String, Entry)>,
    /// Every message stored before the pending ones is in the table.
    caught_up: bool,
    /// Pending keys at which the next flush is due (further out after a
    /// failed one, so that a failing store is not retried at every group).
    flush_at: usize,
}

impl DedupIndex {
    /// The newest stored message with `key` received at or after `cutoff`
    /// (ms), in this group, pending, or in the table (`find`: [`FIND_SQL`]).
    ///
    /// # Errors
    /// SQLite fails.
    pub(crate) fn find(
        &self,
        find: &mut CachedStatement<'_>,
        key: &str,
        cutoff: i64,
    ) -> rusqlite::Result<Option<i64>> {
        let fresh = |e: &Entry| (e.received_at >= cutoff).then_some(e.id);
        let in_group = self
            .group
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, e)| fresh(e))
            .max();
        if in_group.is_some() {
            // Newer than anything committed before this group.
            return Ok(in_group);
        }
        let pending = self
            .pending
            .get(key)
            .and_then(|entries| entries.iter().filter_map(fresh).max());
        if pending.is_some() {
            // Newer than anything in the table.
            return Ok(pending);
        }
        let mut newest = None;
        let mut rows = find.query((key, cutoff))?;
        while let Some(row) = rows.next()? {
            newest = newest.max(Some(row.get::<_, i64>(0)?));
        }
        Ok(newest)
    }

    /// The transaction being written stored message `id` with `key`.
    pub(crate) fn stored(&mut self, id: i64, key: &str, received_at: i64) {
        self.group.push((key.to_owned(), Entry { id, received_at }));
    }

    /// The transaction committed: its keys are pending.
    pub(crate) fn committed(&mut self) {
        self.pending_count += self.group.len();
        for (key, entry) in self.group.drain(..) {
            self.pending.entry(key).or_default().push(entry);
        }
    }

    /// The transaction rolled back: its keys were never stored.
    pub(crate) fn rolled_back(&mut self) {
        self.group.clear();
    }

    /// Enough keys wait for a flush.
    pub(crate) fn due(&self) -> bool {
        self.pending_count >= self.flush_at.max(FLUSH_AT)
    }

    /// Keys waiting for a flush.
    pub(crate) fn pending(&self) -> usize {
        self.pending_count
    }

    /// A flush would write something (keys wait, or it has to catch up).
    pub(crate) fn dirty(&self) -> bool {
        self.pending_count > 0 || !self.caught_up
    }

    /// Write the pending keys into the `dedup` table in one transaction
    /// (the caller chooses its `synchronous`), after indexing what the
    /// table lacks if it has not caught up yet. Returns how many entries
    /// were written. On failure the keys stay pending, and the next flush
    /// is due [`FLUSH_AT`] keys later.
    ///
    /// # Errors
    /// SQLite fails.
    pub(crate) fn flush(&mut self, conn: &mut Connection) -> rusqlite::Result<usize> {
        if !self.dirty() {
            return Ok(0);
        }
        match Self::write(conn, &self.pending, !self.caught_up) {
            Ok(n) => {
                self.caught_up = true;
                self.flush_at = FLUSH_AT;
                self.pending.clear();
                self.pending_count = 0;
                Ok(n)
            }
            Err(e) => {
                self.flush_at = self.pending_count + FLUSH_AT;
                Err(e)
            }
        }
    }

    fn write(
        conn: &mut Connection,
        pending: &HashMap<String, Vec<Entry>>,
        catch_up: bool,
    ) -> rusqlite::Result<usize> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        if catch_up {
            // Every pending key is a message newer than the table's newest
            // entry (nothing was flushed since), so this indexes them too.
            n = tx.execute(CATCH_UP_SQL, [])?;
        } else {
            let mut insert = tx.prepare_cached(INSERT_SQL)?;
            for (key, entries) in pending {
                for e in entries {
                    n += insert.execute((e.id, key, e.received_at))?;
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::store::{open_for_writing, rows};

    /// Store a message row with `key` the way the writer does (the row in
    /// one transaction, the key noted for the index).
    fn store(conn: &mut Connection, index: &mut DedupIndex, key: &str, at: i64) -> i64 {
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO messages (source, received_at, kind, dedup_key, raw, state, state_at)
             VALUES ('s', ?1, 'hl7v2', ?2, x'00', 0, ?1)",
            (at, key),
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        index.stored(id, key, at);
        tx.commit().unwrap();
        index.committed();
        id
    }

    fn find(conn: &Connection, index: &DedupIndex, key: &str, cutoff: i64) -> Option<i64> {
        let mut stmt = conn.prepare_cached(FIND_SQL).unwrap();
        index.find(&mut stmt, key, cutoff).unwrap()
    }

    fn table(conn: &Connection) -> Vec<(i64, String, i64)> {
        rows(
            conn,
            "SELECT message_id, key, received_at FROM dedup ORDER BY message_id",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    #[test]
    fn a_key_is_found_in_its_group_pending_flushed_and_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_for_writing(dir.path(), None).unwrap();
        // The start's catch-up: nothing to index in a new store.
        let mut index = DedupIndex::default();
        assert_eq!(index.flush(&mut conn).unwrap(), 0);

        // In the group being written (not committed yet).
        index.stored(99, "g", 1_000);
        assert_eq!(find(&conn, &index, "g", 0), Some(99));
        index.rolled_back();
        assert_eq!(find(&conn, &index, "g", 0), None, "rolled back");

        // Pending, then flushed: found either way, and the window counts.
        let a = store(&mut conn, &mut index, "a", 1_000);
        assert_eq!(find(&conn, &index, "a", 1_000), Some(a));
        assert_eq!(find(&conn, &index, "a", 1_001), None, "outside the window");
        assert_eq!(index.pending(), 1);
        assert_eq!(index.flush(&mut conn).unwrap(), 1);
        assert_eq!(index.pending(), 0);
        assert_eq!(find(&conn, &index, "a", 1_000), Some(a));
        assert_eq!(find(&conn, &index, "a", 1_001), None);

        // Out of its window, the key is stored again: the newest answers,
        // wherever each of the two is.
        let a2 = store(&mut conn, &mut index, "a", 5_000);
        assert_eq!(find(&conn, &index, "a", 0), Some(a2));

        // A crash before the flush: the next start indexes what was
        // committed after the newest entry of the table.
        let b = store(&mut conn, &mut index, "b", 6_000);
        drop(index);
        let mut index = DedupIndex::default();
        assert_eq!(index.flush(&mut conn).unwrap(), 2, "a2 and b");
        assert_eq!(index.pending(), 0);
        assert_eq!(find(&conn, &index, "b", 0), Some(b));
        assert_eq!(find(&conn, &index, "a", 0), Some(a2));
        assert_eq!(
            table(&conn),
            vec![
                (a, "a".into(), 1_000),
                (a2, "a".into(), 5_000),
                (b, "b".into(), 6_000)
            ]
        );
    }

    /// If the start's catch-up failed, the next flush catches up, so the
    /// indexed messages stay a prefix and a later start does not skip them.
    #[test]
    fn a_failed_start_is_made_good_by_the_first_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_for_writing(dir.path(), None).unwrap();
        let mut before = DedupIndex::default();
        let lost = store(&mut conn, &mut before, "lost", 1_000);
        // A new start whose catch-up failed: only later keys are pending.
        let mut index = DedupIndex::default();
        let later = store(&mut conn, &mut index, "later", 2_000);
        assert_eq!(index.flush(&mut conn).unwrap(), 2, "lost and later");
        assert_eq!(
            table(&conn),
            vec![(lost, "lost".into(), 1_000), (later, "later".into(), 2_000)]
        );
        assert_eq!(find(&conn, &index, "lost", 0), Some(lost));
    }

    #[test]
    fn flushing_is_due_at_its_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_for_writing(dir.path(), None).unwrap();
        let mut index = DedupIndex::default();
        index.flush(&mut conn).unwrap();
        for i in 0..FLUSH_AT {
            assert!(!index.due());
            index.stored(i as i64 + 1, &format!("k{i}"), 1);
        }
        assert!(!index.due(), "uncommitted keys are not pending");
        index.committed();
        assert!(index.due());
    }
}
