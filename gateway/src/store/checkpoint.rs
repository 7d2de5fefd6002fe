//! WAL checkpoints off the ACK path.
//!
//! The writer connection keeps SQLite's automatic checkpoint: a passive one
//! inside the commit that takes the WAL past [`WRITER_AUTOCHECKPOINT`]
//! pages, which copies the pages to the database and fsyncs it while that
//! commit's senders wait. That commit is the slow one an ACK can meet, so
//! the threshold sets the p99: at SQLite's default of 1,000 pages a commit
//! of about 2.5 ms came every 35 ms at 8 connections, and the ACK p99 was
//! 2.9–3.1 ms; at 4,000 pages those commits come a quarter as often (they
//! take longer, but under 1% of ACKs meet one) and the p99 was 1.0–1.9 ms,
//! for the same throughput (mllp_ingest, interleaved runs). Turning it off
//! and leaving all checkpoints to this thread was measured
//! (mllp_ingest, interleaved runs): 20% fewer messages/s at one connection
//! and 25% at eight, because the WAL then grows between this thread's
//! turns and the writer's fsyncs compete with this thread's large database
//! fsyncs. This thread, on its own connection, runs
//! `PRAGMA wal_checkpoint(PASSIVE)` every [`INTERVAL`]:
//! a passive checkpoint copies committed WAL frames into the database and
//! fsyncs it without taking the write lock, so commits (and the ACKs waiting
//! on them) go on meanwhile. When the WAL has grown past [`TRUNCATE_ABOVE`]
//! (a reader held it back, or a burst outran the passive checkpoints), a
//! `TRUNCATE` checkpoint is tried, which may wait briefly for the writer;
//! that bounds the WAL's size on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// WAL pages past which the writer's own commit checkpoints (about 16 MB).
pub const WRITER_AUTOCHECKPOINT: i64 = 4000;
/// How often a passive checkpoint runs.
pub const INTERVAL: Duration = Duration::from_millis(500);
/// WAL size above which a truncating checkpoint is tried.
pub const TRUNCATE_ABOVE: u64 = 64 << 20;

/// The running checkpoint thread; stops when dropped or on [`Checkpointer::stop`].
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start checkpointing the store in `state_dir`.
    ///
    /// # Errors
    /// The store cannot be opened or the thread cannot start.
    pub fn spawn(state_dir: &Path) -> Result<Checkpointer, super::StoreError> {
        let path = super::db_path(state_dir);
        let conn = Connection::open(&path).map_err(|source| super::StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let _ = conn.busy_timeout(Duration::from_millis(100));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(conn, path, &flag))
            .map_err(|e| super::StoreError::StateDir {
                path: state_dir.to_path_buf(),
                source: e,
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the thread after a last checkpoint.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(conn: Connection, path: PathBuf, stop: &AtomicBool) {
    let mut wal = path.into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let big = std::fs::metadata(&wal)
            .map(|m| m.len() > TRUNCATE_ABOVE)
            .unwrap_or(false);
        let mode = if big || stopping {
            "TRUNCATE"
        } else {
            "PASSIVE"
        };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            // Busy is normal under load; anything else is worth a line.
            if e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(INTERVAL);
    }
}
