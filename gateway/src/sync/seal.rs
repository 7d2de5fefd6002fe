//! The sealer: outbox events in, signed batches stored before upload.
//!
//! One thread, shaped like the pipeline runner ([`crate::processor`]): it
//! reads the outbox on its own read-only connection, builds a batch off the
//! writer, and sends it to the store writer as a [`SyncJob::Seal`], which
//! stores the batch and advances the chain in one transaction. It waits for
//! that commit before it looks again, so it never seals an event twice.
//!
//! When: a batch is closed as soon as `sync.batch_max_events` events are
//! unsealed, or when the oldest unsealed event is `sync.batch_max_age` old,
//! whichever comes first. Worked example with the defaults (5,000, 5 s): at
//! 20 vitals messages/s (about 140 events/s) a batch closes every 5 s with
//! about 700 events; at 2,000 messages/s one closes about every 0.36 s with
//! 5,000.
//!
//! What: each event line is the stored JSON with `event_id` = its outbox id
//! as the first member (added here: the pipeline's JSON has no id). The
//! header's `backlog` is the unsealed events left after this batch.
//!
//! After a crash nothing needs repair: an unsealed event is still unsealed,
//! and the chain is the one last committed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use wardlink_sync::batch::{self, SealMeta};
use wardlink_sync::keys::SigningKeyFile;

use crate::store::outbox::{self, SealedBatch};
use crate::store::writer::{Doorbell, SyncJob};
use crate::store::{self, unix_ms, StoreError};

/// How long the sealer sleeps with an empty outbox unless the bell rings.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failure before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// zstd level of batch bodies (`docs/batch-format.md` §3: wardlink uses 3).
const ZSTD_LEVEL: i32 = 3;

/// When batches are closed.
#[derive(Debug, Clone, Copy)]
pub struct SealerOptions {
    /// At most this many events per batch.
    pub max_events: usize,
    /// Seal once the oldest unsealed event is this old.
    pub max_age: Duration,
}

/// Live figures of the sealer.
#[derive(Debug, Default)]
pub struct SealerStats {
    /// Batches sealed and stored.
    pub batches: AtomicU64,
    /// Events in them.
    pub events: AtomicU64,
}

/// The running sealer thread.
#[derive(Debug)]
pub struct Sealer {
    stop: Arc<AtomicBool>,
    bell: Arc<Doorbell>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SealerStats>,
}

impl Sealer {
    /// Start sealing the outbox of the store in `state_dir` with `key`.
    /// `bell` is the writer's outbox bell ([`crate::store::StoreWriter::outbox_bell`]).
    ///
    /// # Errors
    /// The store cannot be opened for reading or the thread cannot start.
    pub fn spawn(
        state_dir: &Path,
        key: Arc<SigningKeyFile>,
        options: SealerOptions,
        jobs: mpsc::Sender<SyncJob>,
        bell: Arc<Doorbell>,
    ) -> Result<Sealer, StoreError> {
        let conn = store::open_for_reading(state_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SealerStats::default());
        let (flag, b, st) = (stop.clone(), bell.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("sealer".into())
            .spawn(move || run(&conn, &key, options, &jobs, &b, &flag, &st))
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        Ok(Sealer {
            stop,
            bell,
            thread: Some(thread),
            stats,
        })
    }

    /// The sealer's figures.
    pub fn stats(&self) -> Arc<SealerStats> {
        self.stats.clone()
    }

    /// Stop after the batch in hand is committed (or refused).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bell.ring();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("sealer thread panicked");
            }
        }
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What one look at the outbox led to.
enum Step {
    /// A batch was sealed and stored: look again at once.
    Sealed,
    /// Nothing to seal yet: wait this long (or for the bell).
    Wait(Duration),
    /// The writer has stopped.
    Stopped,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("reading the outbox: {0}")]
    Read(#[from] rusqlite::Error),
    #[error("sealing: {0}")]
    Seal(#[from] batch::SealError),
    #[error("outbox event {id}: {reason}")]
    Event { id: i64, reason: String },
    #[error("storing the sealed batch: {0}")]
    Store(String),
}

fn run(
    conn: &Connection,
    key: &SigningKeyFile,
    options: SealerOptions,
    jobs: &mpsc::Sender<SyncJob>,
    bell: &Doorbell,
    stop: &AtomicBool,
    stats: &SealerStats,
) {
    while !stop.load(Ordering::Relaxed) {
        match step(conn, key, options, jobs, stats) {
            Ok(Step::Sealed) => {}
            Ok(Step::Wait(d)) => bell.wait(d),
            Ok(Step::Stopped) => return,
            Err(e) => {
                tracing::error!(error = %e, "Sealing a batch failed; trying again");
                let _ = jobs.try_send(SyncJob::Failed {
                    error: format!("sealer: {e}"),
                    alarm: false,
                });
                bell.wait(RETRY_AFTER);
            }
        }
    }
}

fn step(
    conn: &Connection,
    key: &SigningKeyFile,
    options: SealerOptions,
    jobs: &mpsc::Sender<SyncJob>,
    stats: &SealerStats,
) -> Result<Step, StepError> {
    let (count, oldest) = outbox::unsealed_summary(conn)?;
    let Some(oldest) = oldest.filter(|_| count > 0) else {
        return Ok(Step::Wait(IDLE_WAIT));
    };
    let now = unix_ms(SystemTime::now());
    let age = Duration::from_millis(u64::try_from(now.saturating_sub(oldest)).unwrap_or(0));
    let full = usize::try_from(count).unwrap_or(usize::MAX) >= options.max_events;
    if !full && age < options.max_age {
        return Ok(Step::Wait(options.max_age - age));
    }
    let started = std::time::Instant::now();
    let state = outbox::read_sync_state(conn)?;
    let rows = outbox::unsealed(conn, &state.chain, options.max_events)?;
    let read_ms = started.elapsed().as_millis() as u64;
    let (Some(first_row), Some(last_row)) = (rows.first(), rows.last()) else {
        return Ok(Step::Wait(IDLE_WAIT));
    };
    let first_event = first_row.first_event;
    let last_event = last_row.first_event + last_row.event_count - 1;
    let mut lines = Vec::with_capacity(
        rows.iter()
            .map(|r| usize::try_from(r.event_count).unwrap_or(0))
            .sum(),
    );
    let mut events_bytes: i64 = 0;
    for row in &rows {
        events_bytes += i64::try_from(row.events.len()).unwrap_or(i64::MAX);
        let id = row.first_event;
        let events =
            outbox::decode_events(&row.events).map_err(|reason| StepError::Event { id, reason })?;
        if i64::try_from(events.len()).ok() != Some(row.event_count) {
            return Err(StepError::Event {
                id,
                reason: format!(
                    "the row holds {} events, not {}",
                    events.len(),
                    row.event_count
                ),
            });
        }
        for (i, json) in (id..).zip(&events) {
            lines.push(event_line(i, json).map_err(|reason| StepError::Event { id: i, reason })?);
        }
    }
    let lines_ms = started.elapsed().as_millis() as u64 - read_ms;
    let event_count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
    let backlog = u64::try_from(count.saturating_sub(event_count)).unwrap_or(0);
    let sealed = batch::seal(
        &lines,
        &state.chain,
        key,
        SealMeta {
            created_ms: u64::try_from(now).unwrap_or(0),
            backlog,
            zstd_level: ZSTD_LEVEL,
        },
    )?;
    let encoded = sealed.encode();
    let seal_ms = started.elapsed().as_millis() as u64 - read_ms - lines_ms;
    tracing::debug!(
        read_ms,
        lines_ms,
        seal_ms,
        seq = sealed.header().seq,
        events = event_count,
        first_event,
        last_event,
        json_bytes = events_bytes,
        wire_bytes = encoded.len(),
        backlog,
        "Batch sealed"
    );
    let job = SealedBatch {
        gateway_id: key.gateway_id().to_string(),
        seq: sealed.header().seq,
        header_sha256: sealed.header_sha256(),
        first_event,
        last_event,
        event_count,
        events_bytes,
        encoded,
        created_at: now,
        chain_after: sealed.chain_after(),
    };
    let (done, committed) = oneshot::channel();
    if jobs
        .blocking_send(SyncJob::Seal {
            batch: Box::new(job),
            done,
        })
        .is_err()
    {
        return Ok(Step::Stopped);
    }
    match committed.blocking_recv() {
        Ok(Ok(())) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .events
                .fetch_add(u64::try_from(event_count).unwrap_or(0), Ordering::Relaxed);
            Ok(Step::Sealed)
        }
        Ok(Err(e)) => Err(StepError::Store(e)),
        Err(_) => Ok(Step::Stopped),
    }
}

/// The batch line of outbox event `id`: its JSON with `event_id` = `id`.
///
/// The pipeline's JSON has no `event_id`, so the common case splices
/// `"event_id":ID` in as the first member without parsing. JSON that already
/// has one (a member called `event_id` anywhere) is parsed and the
/// top-level member set to `id`.
///
/// # Errors
/// The stored JSON is not an object.
pub fn event_line(id: i64, json: &str) -> Result<String, String> {
    let trimmed = json.trim();
    let Some(rest) = trimmed.strip_prefix('{') else {
        return Err("the stored event is not a JSON object".into());
    };
    if !trimmed.contains("\"event_id\"") {
        let sep = if rest.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        return Ok(format!("{{\"event_id\":{id}{sep}{rest}"));
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(trimmed).map_err(|e| format!("the stored event is not JSON: {e}"))?;
    map.insert("event_id".into(), serde_json::Value::from(id));
    serde_json::to_string(&map).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::event_line;

    #[test]
    fn event_ids_are_spliced_in_or_set() {
        assert_eq!(
            event_line(7, r#"{"type":"adt","x":1}"#).as_deref(),
            Ok(r#"{"event_id":7,"type":"adt","x":1}"#)
        );
        assert_eq!(event_line(1, "{}").as_deref(), Ok(r#"{"event_id":1}"#));
        assert_eq!(event_line(1, " { } ").as_deref(), Ok(r#"{"event_id":1 }"#));
        // Already there (top level): set to the outbox id.
        let line = event_line(9, r#"{"type":"a","event_id":3}"#).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["event_id"], 9);
        // Only in a string value: spliced in, the string left alone.
        let line = event_line(4, r#"{"note":"\"event_id\" is a word"}"#).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["event_id"], 4);
        assert_eq!(v["note"], "\"event_id\" is a word");
        assert!(event_line(1, "[1]").is_err());
    }
}
