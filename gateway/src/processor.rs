//! The pipeline runner: stored raw messages in, events or quarantine out,
//! off the ACK path.
//!
//! One thread reads `awaiting` messages (in id order, up to [`BATCH`] at a
//! time: first any an operator released, then those above the persisted
//! cursor) on its own read-only connection, runs [`Pipeline::process`] on
//! each, and sends the results to the store writer as one [`Job`]; the
//! writer applies a job in one transaction (events or quarantine entry, the
//! message's new state if it leaves `Received`, the counters, the cursor).
//! The runner waits for that commit before it reads the next batch, so it
//! never processes a message twice.
//!
//! Because the pipeline is deterministic (keyed pseudonyms, per-patient
//! date shifts), a crash between the raw commit and this one only means the
//! message is processed again after restart, with the same result. A panic
//! inside the pipeline on one message is caught and quarantines that message
//! ("internal error"); it never takes the daemon down or loops.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use wardlink_devices::Kind;

use crate::pipeline::{Outcome, Pipeline, PipelineContext, RawMessage};
use crate::store::writer::{Doorbell, EncodedEvents, Job, Processed, ProcessedResult};
use crate::store::{self, outbox, State, StoreError};

/// At most this many messages are processed and committed together.
pub const BATCH: usize = 256;
/// How long the runner sleeps when caught up, unless the doorbell rings.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// After a batch that was not full, wait this long before the next one so
/// that results are committed in batches, not one transaction per message
/// (at one connection that halved ingest: every stored message rang the
/// doorbell and got its own pipeline commit). Events appear at most this
/// much later; nothing waits on them.
const GATHER: Duration = Duration::from_millis(250);
/// Pause after a failed commit of results before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Live figures of the runner.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    /// Messages that produced events.
    pub processed: AtomicU64,
    /// Messages quarantined.
    pub quarantined: AtomicU64,
    /// Of those, because the pipeline panicked.
    pub internal_errors: AtomicU64,
}

/// The running pipeline thread.
#[derive(Debug)]
pub struct Processor {
    stop: Arc<AtomicBool>,
    /// A pipeline to use from the next batch on (a reload).
    next: Arc<std::sync::Mutex<Option<Pipeline>>>,
    doorbell: Arc<Doorbell>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ProcessorStats>,
}

impl Processor {
    /// Start processing the store in `state_dir`.
    ///
    /// # Errors
    /// The store cannot be opened for reading or the thread cannot start.
    pub fn spawn(
        state_dir: &Path,
        pipeline: Pipeline,
        jobs: mpsc::Sender<Job>,
        doorbell: Arc<Doorbell>,
    ) -> Result<Processor, StoreError> {
        let conn = store::open_for_reading(state_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProcessorStats::default());
        let (flag, bell, st) = (stop.clone(), doorbell.clone(), stats.clone());
        let next = Arc::new(std::sync::Mutex::new(None));
        let slot = next.clone();
        let thread = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                run_when_the_cpu_is_idle();
                run(&conn, pipeline, &slot, &jobs, &bell, &flag, &st);
            })
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        Ok(Processor {
            stop,
            next,
            doorbell,
            thread: Some(thread),
            stats,
        })
    }

    /// Use `pipeline` (e.g. changed de-identification overrides after a
    /// reload) from the next batch on; the batch in hand finishes with the
    /// old one. Messages already processed are not processed again.
    pub fn replace_pipeline(&self, pipeline: Pipeline) {
        if let Ok(mut slot) = self.next.lock() {
            *slot = Some(pipeline);
        }
        self.doorbell.ring();
    }

    /// The runner's figures.
    pub fn stats(&self) -> Arc<ProcessorStats> {
        self.stats.clone()
    }

    /// Stop after the batch in hand is committed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.doorbell.ring();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("pipeline thread panicked");
            }
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Put the calling thread (the pipeline's) in Linux's `SCHED_IDLE` class:
/// it runs on a core nobody else wants, and yields it at once to the
/// threads that answer senders.
///
/// Nothing waits on the pipeline (the ACK was sent at the raw commit), but
/// on a saturated box its CPU came straight out of ingest: at 64
/// connections on two cores, ingest with the pipeline at normal priority
/// ran at 0.5 of ingest alone, at idle priority 0.8. Under such a burst the
/// pipeline falls behind and catches up when the burst ends (`wardlink
/// status` shows the backlog as `awaiting`, and its age); when the box is
/// not saturated, which is its normal state, nothing changes. The class
/// still gets a small share of a busy CPU, so the pipeline never stops.
///
/// The thread cannot leave the class again without `CAP_SYS_NICE`, so this
/// is for the pipeline's own thread only. Failing to change class (a
/// seccomp filter, another OS) is logged and harmless.
fn run_when_the_cpu_is_idle() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        #[expect(
            unsafe_code,
            reason = "sched_setscheduler has no safe wrapper in std or libc"
        )]
        // SAFETY: `param` is a valid, initialized `sched_param` that lives
        // for the whole call, which only reads it; pid 0 is this thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "the pipeline thread could not take idle CPU priority; it competes with ingest"
            );
        }
    }
}

/// One awaiting message as read from the store.
struct Pending {
    id: i64,
    source: Arc<str>,
    received_at_ms: i64,
    charset: Option<String>,
    raw: Vec<u8>,
    /// What the bytes are (`Kind::as_str`): chooses the pipeline path.
    kind: String,
}

fn run(
    conn: &Connection,
    mut pipeline: Pipeline,
    next: &std::sync::Mutex<Option<Pipeline>>,
    jobs: &mpsc::Sender<Job>,
    doorbell: &Doorbell,
    stop: &AtomicBool,
    stats: &ProcessorStats,
) {
    let mut cursor: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [store::PIPELINE_CURSOR],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten()
        .unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = next.lock().ok().and_then(|mut slot| slot.take()) {
            pipeline = p;
            tracing::info!("the pipeline now uses the reloaded de-identification settings");
        }
        let batch = match load_awaiting(conn, cursor) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading awaiting messages failed");
                doorbell.wait(RETRY_AFTER);
                continue;
            }
        };
        if batch.is_empty() {
            doorbell.wait(IDLE_WAIT);
            continue;
        }
        let full = batch.len() >= BATCH;
        let mut seen = HashSet::new();
        let next_cursor = batch.iter().map(|m| m.id).filter(|&id| id > cursor).max();
        let processed: Vec<Processed> = batch
            .into_iter()
            .map(|m| process_one(&pipeline, conn, &mut seen, m, stats))
            .collect();
        let (done, committed) = oneshot::channel();
        let job = Job {
            processed,
            cursor: next_cursor,
            done,
        };
        if jobs.blocking_send(job).is_err() {
            return; // the writer has stopped
        }
        match committed.blocking_recv() {
            Ok(Ok(())) => {
                cursor = next_cursor.unwrap_or(cursor);
                if !full && !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(GATHER);
                }
            }
            Ok(Err(_)) => doorbell.wait(RETRY_AFTER),
            Err(_) => return,
        }
    }
}

/// Released messages still awaiting the pipeline, in id order.
///
/// `CROSS JOIN` makes `released` (a handful of rows) the outer loop: with a
/// plain `JOIN` and no statistics SQLite chose to scan all of `messages` in
/// id order (for the `ORDER BY`) and probe `released`, i.e. a full scan of
/// the store every time the runner looks for work (every second when idle:
/// one core busy and about 3 s per look on a store of 10 million messages).
pub(crate) const RELEASED_SQL: &str =
    "SELECT m.id, m.source, m.received_at, m.charset, m.raw, m.kind
     FROM released r CROSS JOIN messages m ON m.id = r.message_id
     WHERE m.state = ?1 ORDER BY r.message_id LIMIT ?2";

/// Messages above the cursor (a range of the rowid), in id order.
pub(crate) const TAIL_SQL: &str = "SELECT id, source, received_at, charset, raw, kind FROM messages
     WHERE id > ?1 AND state = ?2 ORDER BY id LIMIT ?3";

/// The next messages to process: released ones first, then those above the
/// cursor, in id order, at most [`BATCH`].
fn load_awaiting(conn: &Connection, cursor: i64) -> rusqlite::Result<Vec<Pending>> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(Pending {
            id: r.get(0)?,
            source: Arc::from(r.get::<_, String>(1)?),
            received_at_ms: r.get(2)?,
            charset: r.get(3)?,
            raw: r.get(4)?,
            kind: r.get(5)?,
        })
    };
    let mut batch: Vec<Pending> = conn
        .prepare_cached(RELEASED_SQL)?
        .query_map((State::Received as i64, BATCH as i64), row)?
        .collect::<Result<_, _>>()?;
    let room = BATCH.saturating_sub(batch.len());
    if room > 0 {
        let tail = conn
            .prepare_cached(TAIL_SQL)?
            .query_map((cursor, State::Received as i64, room as i64), row)?
            .collect::<Result<Vec<_>, _>>()?;
        batch.extend(tail);
    }
    Ok(batch)
}

/// Encounter history: what the store knows plus what this batch added.
struct History<'a> {
    conn: &'a Connection,
    added: &'a HashSet<String>,
}

impl PipelineContext for History<'_> {
    fn encounter_known(&self, pseudonym: &str) -> bool {
        if self.added.contains(pseudonym) {
            return true;
        }
        self.conn
            .prepare_cached("SELECT 1 FROM encounters WHERE pseudonym = ?1")
            .and_then(|mut s| s.query_row([pseudonym], |_| Ok(())).optional())
            .map(|o| o.is_some())
            .unwrap_or(false)
    }
}

fn process_one(
    pipeline: &Pipeline,
    conn: &Connection,
    seen: &mut HashSet<String>,
    m: Pending,
    stats: &ProcessorStats,
) -> Processed {
    let raw = RawMessage {
        id: m.id,
        source: &m.source,
        received_at: UNIX_EPOCH
            + Duration::from_millis(u64::try_from(m.received_at_ms).unwrap_or(0)),
        bytes: &m.raw,
        charset_hint: m.charset.as_deref(),
    };
    let history = History { conn, added: seen };
    // Dispatch by stored kind: device readings have their own path; HL7 v2
    // (and anything unknown, which the HL7 path quarantines) the other.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if Kind::parse(&m.kind) == Some(Kind::Reading) {
            pipeline.process_reading(&raw)
        } else {
            pipeline.process(&raw, &history)
        }
    }));
    let result = match outcome {
        Ok(Outcome::Events {
            events,
            new_encounters,
        }) => {
            // Serialized and compressed here, in the pipeline thread: the
            // writer, which the ACKs wait for, only inserts the row.
            let encoded = events
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
                .and_then(|lines| {
                    Ok(EncodedEvents {
                        count: i64::try_from(lines.len()).unwrap_or(i64::MAX),
                        stored: if lines.is_empty() {
                            Vec::new()
                        } else {
                            outbox::encode_events(&lines)?
                        },
                    })
                });
            match encoded {
                Ok(events) => {
                    seen.extend(new_encounters.iter().cloned());
                    stats.processed.fetch_add(1, Ordering::Relaxed);
                    ProcessedResult::Events {
                        events,
                        new_encounters,
                    }
                }
                Err(err) => internal_error(stats, &format!("event serialization failed: {err}")),
            }
        }
        Ok(Outcome::Quarantine { reason, issues }) => {
            stats.quarantined.fetch_add(1, Ordering::Relaxed);
            // The reason's text may quote a field's value: only its rule
            // code goes out at info level.
            tracing::info!(source = %m.source, message_id = m.id, rule = crate::admin::reason_code(&reason), "message quarantined");
            tracing::debug!(source = %m.source, message_id = m.id, %reason, "quarantine reason");
            ProcessedResult::Quarantine {
                reason,
                issues_json: serde_json::to_string(&issues).unwrap_or_else(|_| "[]".into()),
            }
        }
        Err(_panic) => {
            tracing::error!(source = %m.source, message_id = m.id, "the pipeline panicked on a message; quarantined as an internal error");
            internal_error(stats, "internal error: the pipeline failed on this message")
        }
    };
    Processed {
        message_id: m.id,
        source: m.source,
        result,
    }
}

fn internal_error(stats: &ProcessorStats, reason: &str) -> ProcessedResult {
    stats.quarantined.fetch_add(1, Ordering::Relaxed);
    stats.internal_errors.fetch_add(1, Ordering::Relaxed);
    ProcessedResult::Quarantine {
        reason: reason.to_string(),
        issues_json: "[]".into(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The scheduling policy (`/proc/<pid>/task/<tid>/stat`, field 41) of
    /// this process's threads named `name`.
    #[cfg(target_os = "linux")]
    fn policies_of(name: &str) -> Vec<u32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Fields after the `(comm)`, which may contain spaces, start at 3.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if let Some(policy) = after.split_whitespace().nth(41 - 3) {
                policies.push(policy.parse().unwrap());
            }
        }
        policies
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipeline_thread_runs_at_idle_cpu_priority() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open_for_writing(dir.path(), None).unwrap();
        let (submitter, requests) = wardlink_devices::channel(16);
        let writer = crate::store::StoreWriter::spawn(
            conn,
            requests,
            crate::store::WriterOptions {
                group_commit_max: 16,
                raw_retention: Duration::from_secs(86_400),
                outbox_max_bytes: None,
                heartbeat: None,
            },
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        let pipeline = Pipeline::new(
            crate::pipeline::PipelineSettings::default(),
            crate::pipeline::SiteKeys::from_secrets(&[7u8; 32], None),
        )
        .unwrap();
        let processor =
            Processor::spawn(dir.path(), pipeline, writer.jobs(), writer.doorbell()).unwrap();
        let mut policies = Vec::new();
        for _ in 0..100 {
            policies = policies_of("pipeline");
            if !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_IDLE as u32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        processor.stop();
        drop(submitter);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();
        assert!(!policies.is_empty(), "no thread named pipeline");
        // Other tests' pipeline threads may run at the same time: all of
        // them must be idle-class.
        assert!(
            policies.iter().all(|&p| p == libc::SCHED_IDLE as u32),
            "{policies:?}"
        );
    }
}
