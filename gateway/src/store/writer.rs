//! The store writer: the one thread that owns the read-write connection.
//!
//! Design: group commit. The loop waits for the first request, drains what
//! else is already queued (up to `group_commit_max`), writes all of it in one
//! `BEGIN IMMEDIATE … COMMIT` and only then answers every request of the
//! group. Nothing is acknowledged on a timer: an answer is sent after the
//! commit (and its WAL fsync) that contains its message returned.
//!
//! Worked example: eight connections each send one message and wait for
//! the ACK. The first request wakes the writer; by the time it has begun the
//! transaction the other seven are queued, so one fsync serves eight ACKs.
//! With one connection the group is a single message and the cost is one
//! insert plus one fsync, the same as a plain per-message writer.
//!
//! If the commit fails, every request of the group is answered
//! `Refused` (`StoreFull` for `SQLITE_FULL`, else `StoreFailed`), and the
//! refusals are counted in the next transaction that does commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use wardlink_devices::{Received, RefuseReason, Reply, ToStore};

use super::{unix_ms, State};

/// How often the writer wakes up when idle, for housekeeping (pruning)
/// and to prove it is alive.
const IDLE_WAKEUP: Duration = Duration::from_secs(1);
/// How often expired raw messages are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Settings of the writer, from `[store]` in the config.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// At most this many requests share one transaction.
    pub group_commit_max: usize,
    /// Uploaded raw messages are deleted this long after their upload.
    pub raw_retention: Duration,
}

/// Live figures of the writer, shared with the daemon (status, watchdog)
/// and the benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub groups: AtomicU64,
    /// Requests answered (stored, duplicate, refused or counted).
    pub requests: AtomicU64,
    /// Commits that failed.
    pub failed_groups: AtomicU64,
    /// When the loop last completed a turn (ms since the epoch): a wedged
    /// store stops this clock, which is what the watchdog watches.
    pub alive_at_ms: AtomicI64,
}

/// The pipeline's result for one raw message, applied by the writer.
#[derive(Debug)]
pub struct Processed {
    /// The raw message's row id.
    pub message_id: i64,
    /// Its source (for the counters).
    pub source: Arc<str>,
    /// What became of it.
    pub result: ProcessedResult,
}

/// Events for the outbox, or a quarantine entry.
#[derive(Debug)]
pub enum ProcessedResult {
    /// De-identified events, as `(type, JSON)`, in message order.
    Events {
        /// The events.
        events: Vec<(&'static str, String)>,
        /// Encounter pseudonyms this message established.
        new_encounters: Vec<String>,
    },
    /// Held back.
    Quarantine {
        /// One line: why.
        reason: String,
        /// Every issue, as a JSON array.
        issues_json: String,
    },
}

/// A batch of pipeline results and where to say that it is committed.
#[derive(Debug)]
pub struct Job {
    /// The results, applied in one transaction.
    pub processed: Vec<Processed>,
    /// The pipeline's new cursor (the highest id it has now processed in
    /// order), persisted in the same transaction.
    pub cursor: Option<i64>,
    /// Answered after the commit (`Err` with the reason if it failed).
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Rung by the writer after it stored new messages; the pipeline runner
/// waits on it when it has caught up.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    /// Wake the waiter.
    pub fn ring(&self) {
        if let Ok(mut r) = self.rung.lock() {
            *r = true;
            self.cv.notify_all();
        }
    }

    /// Wait until rung or `timeout`; clears the bell.
    pub fn wait(&self, timeout: Duration) {
        let Ok(guard) = self.rung.lock() else { return };
        if let Ok((mut r, _)) = self.cv.wait_timeout_while(guard, timeout, |rung| !*rung) {
            *r = false;
        }
    }
}

/// The running writer thread.
#[derive(Debug)]
pub struct StoreWriter {
    thread: JoinHandle<()>,
    stats: Arc<WriterStats>,
    jobs: mpsc::Sender<Job>,
    doorbell: Arc<Doorbell>,
}

impl StoreWriter {
    /// Start the writer thread on `conn`, serving `requests` until every
    /// sender of the channel is dropped. `runtime` is the tokio runtime the
    /// sources run on (the writer waits on the channel through it).
    ///
    /// # Errors
    /// The OS cannot start a thread.
    pub fn spawn(
        conn: Connection,
        requests: mpsc::Receiver<ToStore>,
        options: WriterOptions,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<StoreWriter> {
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let doorbell = Arc::new(Doorbell::default());
        let bell = doorbell.clone();
        let (jobs, job_rx) = mpsc::channel(4);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut w = Writer {
                    conn,
                    options,
                    stats: thread_stats,
                    carry: HashMap::new(),
                    last_prune: Instant::now(),
                    doorbell: bell,
                    not_durable: None,
                };
                w.run(requests, job_rx, &runtime);
            })?;
        Ok(StoreWriter {
            thread,
            stats,
            jobs,
            doorbell,
        })
    }

    /// Where the pipeline runner sends its results.
    pub fn jobs(&self) -> mpsc::Sender<Job> {
        self.jobs.clone()
    }

    /// Rung whenever new messages were stored.
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.doorbell.clone()
    }

    /// The writer's live figures.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Wait for the writer to finish: it does once every sender is dropped
    /// and the queue is drained and committed.
    pub fn join(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// Counter changes of one source within one transaction.
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    received: i64,
    acked: i64,
    rejected: i64,
    duplicates: i64,
}

struct Writer {
    conn: Connection,
    options: WriterOptions,
    stats: Arc<WriterStats>,
    /// Refusals answered after a failed commit, to be counted by the next
    /// commit that succeeds (counters only change inside a transaction).
    carry: HashMap<Arc<str>, Delta>,
    last_prune: Instant,
    doorbell: Arc<Doorbell>,
    /// Set if the connection could not be put back to `synchronous=FULL`:
    /// every commit is then refused rather than acknowledged without fsync.
    not_durable: Option<String>,
}

/// What woke the writer.
#[expect(
    clippy::large_enum_variant,
    reason = "one value on the writer's stack per turn; boxing would allocate per request"
)]
enum Next {
    Request(Option<ToStore>),
    Job(Job),
}

impl Writer {
    fn run(
        &mut self,
        mut requests: mpsc::Receiver<ToStore>,
        mut jobs: mpsc::Receiver<Job>,
        runtime: &tokio::runtime::Handle,
    ) {
        let max = self.options.group_commit_max.max(1);
        let mut group: Vec<ToStore> = Vec::with_capacity(max);
        loop {
            self.stats
                .alive_at_ms
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
            let next = runtime.block_on(async {
                tokio::time::timeout(IDLE_WAKEUP, async {
                    // Biased: sources (whose senders wait for an ACK) go
                    // before pipeline results (which nobody waits on).
                    tokio::select! {
                        biased;
                        r = requests.recv() => Next::Request(r),
                        Some(j) = jobs.recv() => Next::Job(j),
                    }
                })
                .await
            });
            match next {
                Ok(Next::Request(Some(req))) => group.push(req),
                Ok(Next::Request(None)) => break,
                Ok(Next::Job(job)) => {
                    self.apply_job(job);
                    continue;
                }
                Err(_idle) => {
                    self.housekeeping();
                    continue;
                }
            }
            while group.len() < max {
                match requests.try_recv() {
                    Ok(req) => group.push(req),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group, &mut requests);
            if self.last_prune.elapsed() >= PRUNE_EVERY {
                self.housekeeping();
            }
        }
        // Every sender is gone: flush counts still carried from a failed commit.
        if !self.carry.is_empty() {
            self.commit_group(&mut group, &mut requests);
        }
        tracing::debug!("store writer stopped");
    }

    /// Write one group in one transaction, then answer each request.
    fn commit_group(&mut self, group: &mut Vec<ToStore>, requests: &mut mpsc::Receiver<ToStore>) {
        let max = self.options.group_commit_max.max(1);
        let mut late = || requests.try_recv().ok();
        let written = match &self.not_durable {
            Some(why) => Err(rusqlite::Error::InvalidParameterName(format!(
                "the store cannot guarantee durability ({why})"
            ))),
            None => write_group(&mut self.conn, group, &self.carry, &mut late, max),
        };
        let count = group.len() as u64;
        match written {
            Ok(replies) => {
                self.carry.clear();
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                if replies
                    .iter()
                    .any(|r| matches!(r, Some(Reply::Stored { .. })))
                {
                    self.doorbell.ring();
                }
                for (req, reply) in group.drain(..).zip(replies) {
                    if let (ToStore::Commit { reply: tx, .. }, Some(r)) = (req, reply) {
                        // The source may have gone away (connection closed);
                        // the message is stored either way.
                        let _ = tx.send(r);
                    }
                }
            }
            Err(e) => {
                self.stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                let reason = refuse_reason(&e);
                tracing::error!(error = %e, requests = count, "store commit failed; answering the group with a refusal");
                // A refused commit and a source's own rejection count alike:
                // one unit received, answered negatively.
                for req in group.drain(..) {
                    let source = match req {
                        ToStore::Commit { received, reply } => {
                            let _ = reply.send(Reply::Refused {
                                reason: reason.clone(),
                            });
                            received.source
                        }
                        ToStore::Rejected { source, .. } => source,
                    };
                    let d = self.carry.entry(source).or_default();
                    d.received += 1;
                    d.rejected += 1;
                }
            }
        }
        self.stats.requests.fetch_add(count, Ordering::Relaxed);
    }

    /// Apply a batch of pipeline results in one transaction.
    ///
    /// Committed with `synchronous=NORMAL`: no fsync of its own. That is
    /// safe because a pipeline result can always be made again from the raw
    /// message, which is already durable; a crash that loses this commit
    /// only means the pipeline runs again, with the same result. The WAL is
    /// sequential, so the next FULL commit (a source's) makes this one
    /// durable too, before anything built on it (a sealed batch) can be.
    fn apply_job(&mut self, job: Job) {
        let n = job.processed.len();
        let _ = self.conn.pragma_update(None, "synchronous", "NORMAL");
        let result = apply_processed(&mut self.conn, &job.processed, job.cursor);
        if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
            // Never commit a message that will be ACKed without FULL: from
            // now on every commit is refused (senders retry later).
            tracing::error!(error = %e, "cannot restore synchronous=FULL; refusing every new message");
            self.not_durable = Some(e.to_string());
        }
        let result = result.map_err(|e| {
            tracing::error!(error = %e, results = n, "storing pipeline results failed; the messages stay awaiting and are processed again");
            e.to_string()
        });
        let _ = job.done.send(result);
    }

    fn housekeeping(&mut self) {
        self.last_prune = Instant::now();
        let retention_ms =
            i64::try_from(self.options.raw_retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = unix_ms(SystemTime::now()).saturating_sub(retention_ms);
        match self.conn.execute(
            "DELETE FROM messages WHERE state = ?1 AND state_at < ?2",
            (State::Uploaded as i64, cutoff),
        ) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "pruned uploaded raw messages past raw_retention"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning uploaded raw messages failed"),
        }
    }
}

/// Map a failed commit to the refusal the sources pass on.
fn refuse_reason(e: &rusqlite::Error) -> RefuseReason {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => RefuseReason::StoreFull,
        _ => RefuseReason::StoreFailed(e.to_string()),
    }
}

/// Write a group in one transaction. Returns, per request, the reply to send
/// once the transaction is durable (`None` for count-only requests).
/// Write a group in one transaction. Requests that arrive while the group
/// is being written (`late`) join it, up to `max`, before the commit: they
/// cost no extra fsync and no waiting (with eight senders each waiting for
/// its ACK, those freed by the previous commit arrive during this one's
/// inserts).
fn write_group(
    conn: &mut Connection,
    group: &mut Vec<ToStore>,
    carry: &HashMap<Arc<str>, Delta>,
    late: &mut dyn FnMut() -> Option<ToStore>,
    max: usize,
) -> rusqlite::Result<Vec<Option<Reply>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut deltas: HashMap<Arc<str>, Delta> = HashMap::new();
    for (source, d) in carry {
        let e = deltas.entry(source.clone()).or_default();
        e.received += d.received;
        e.rejected += d.rejected;
    }
    let mut replies = Vec::with_capacity(group.len());
    {
        let mut find_dup = tx.prepare_cached(
            "SELECT id, answer FROM messages
             WHERE dedup_key = ?1 AND received_at >= ?2
             ORDER BY id DESC LIMIT 1",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages (source, device, received_at, kind, message_type,
                trigger_event, version, control_id, sender, charset, dedup_key, answer, raw,
                state, state_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?3)",
        )?;
        let mut next = 0;
        loop {
            if next == group.len() {
                match (group.len() < max).then(&mut *late).flatten() {
                    Some(req) => group.push(req),
                    None => break,
                }
            }
            let req = &group[next];
            next += 1;
            match req {
                ToStore::Commit { received, .. } => {
                    let d = deltas.entry(received.source.clone()).or_default();
                    d.received += 1;
                    let at = unix_ms(received.received_at);
                    if let Some(dup) = find_duplicate(&mut find_dup, received, at)? {
                        d.duplicates += 1;
                        replies.push(Some(dup));
                        continue;
                    }
                    let h = &received.header;
                    insert.execute(rusqlite::params![
                        &*received.source,
                        received.device.as_deref(),
                        at,
                        received.kind.as_str(),
                        h.message_type,
                        h.trigger,
                        h.version,
                        h.control_id,
                        h.sender,
                        h.charset,
                        received.dedup.as_ref().map(|d| &d.key),
                        received.answer.as_deref(),
                        &received.bytes[..],
                        State::Awaiting as i64,
                    ])?;
                    d.acked += 1;
                    replies.push(Some(Reply::Stored {
                        id: tx.last_insert_rowid(),
                    }));
                }
                ToStore::Rejected { source, .. } => {
                    let d = deltas.entry(source.clone()).or_default();
                    d.received += 1;
                    d.rejected += 1;
                    replies.push(None);
                }
            }
        }
        let mut bump = tx.prepare_cached(
            "INSERT INTO counters (source, received, acked, rejected, duplicates, awaiting)
             VALUES (?1, ?2, ?3, ?4, ?5, ?3)
             ON CONFLICT (source) DO UPDATE SET
                received = received + excluded.received,
                acked = acked + excluded.acked,
                rejected = rejected + excluded.rejected,
                duplicates = duplicates + excluded.duplicates,
                awaiting = awaiting + excluded.awaiting",
        )?;
        for (source, d) in &deltas {
            bump.execute((&**source, d.received, d.acked, d.rejected, d.duplicates))?;
        }
    }
    tx.commit()?;
    Ok(replies)
}

/// Write pipeline results: each message leaves `awaiting` for
/// `pending_upload` (its events in the outbox) or `quarantined`, with the
/// counters, in one transaction. A message no longer awaiting (dropped or
/// processed meanwhile) is skipped, so applying a result twice is harmless.
fn apply_processed(
    conn: &mut Connection,
    processed: &[Processed],
    cursor: Option<i64>,
) -> rusqlite::Result<()> {
    let now = unix_ms(SystemTime::now());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut mark = tx.prepare_cached(
            "UPDATE messages SET state = ?1, state_at = ?2 WHERE id = ?3 AND state = ?4",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO outbox (message_id, source, type, event) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut encounter =
            tx.prepare_cached("INSERT OR IGNORE INTO encounters (pseudonym) VALUES (?1)")?;
        let mut quarantine = tx.prepare_cached(
            "INSERT OR REPLACE INTO quarantine (message_id, source, reason, issues, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut unrelease = tx.prepare_cached("DELETE FROM released WHERE message_id = ?1")?;
        let mut count = tx.prepare_cached(
            "UPDATE counters SET awaiting = awaiting - 1,
                pending_upload = pending_upload + ?2, quarantined = quarantined + ?3
             WHERE source = ?1",
        )?;
        for p in processed {
            let (state, to_outbox, to_quarantine) = match p.result {
                ProcessedResult::Events { .. } => (State::PendingUpload, 1, 0),
                ProcessedResult::Quarantine { .. } => (State::Quarantined, 0, 1),
            };
            let changed =
                mark.execute((state as i64, now, p.message_id, State::Awaiting as i64))?;
            unrelease.execute([p.message_id])?;
            if changed == 0 {
                continue;
            }
            match &p.result {
                ProcessedResult::Events {
                    events,
                    new_encounters,
                } => {
                    for (kind, json) in events {
                        event.execute((p.message_id, &*p.source, kind, json))?;
                    }
                    for e in new_encounters {
                        encounter.execute([e])?;
                    }
                }
                ProcessedResult::Quarantine {
                    reason,
                    issues_json,
                } => {
                    quarantine.execute((p.message_id, &*p.source, reason, issues_json, now))?;
                }
            }
            count.execute((&*p.source, to_outbox, to_quarantine))?;
        }
        if let Some(c) = cursor {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            )?
            .execute((super::PIPELINE_CURSOR, c))?;
        }
    }
    tx.commit()
}

/// Look for a stored message with the same duplicate key inside the window.
fn find_duplicate(
    stmt: &mut rusqlite::CachedStatement<'_>,
    received: &Received,
    at_ms: i64,
) -> rusqlite::Result<Option<Reply>> {
    let Some(dedup) = &received.dedup else {
        return Ok(None);
    };
    if dedup.window.is_zero() {
        return Ok(None);
    }
    let window_ms = i64::try_from(dedup.window.as_millis()).unwrap_or(i64::MAX);
    let cutoff = at_ms.saturating_sub(window_ms);
    stmt.query_row((&dedup.key, cutoff), |r| {
        Ok(Reply::Duplicate {
            original_id: r.get(0)?,
            original_answer: r.get::<_, Option<Vec<u8>>>(1)?.map(bytes::Bytes::from),
        })
    })
    .optional()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::store::{open_for_reading, open_for_writing, read_counters};
    use bytes::Bytes;
    use wardlink_devices::{channel, Dedup, Header, Kind, Rejection};

    fn msg(control_id: &str) -> Received {
        Received {
            source: Arc::from("mllp"),
            device: Some(Arc::from("127.0.0.1:9")),
            received_at: SystemTime::now(),
            kind: Kind::Hl7v2,
            bytes: Bytes::from(format!(
                "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|{control_id}|P|2.5\r"
            )),
            header: Header {
                control_id: Some(control_id.into()),
                ..Header::default()
            },
            dedup: Some(Dedup {
                key: format!("A|B|{control_id}"),
                window: Duration::from_secs(3600),
            }),
            answer: Some(Bytes::from(format!("ACK for {control_id}"))),
        }
    }

    fn start(
        dir: &std::path::Path,
        max_bytes: Option<u64>,
    ) -> (wardlink_devices::Submitter, StoreWriter) {
        let conn = open_for_writing(dir, max_bytes).unwrap();
        let (submitter, rx) = channel(1024);
        let w = StoreWriter::spawn(
            conn,
            rx,
            WriterOptions {
                group_commit_max: 512,
                raw_retention: Duration::from_secs(3600),
            },
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        (submitter, w)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_dedups_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (submitter, writer) = start(dir.path(), None);
        let first = submitter.submit(msg("1")).await;
        assert!(matches!(first, Reply::Stored { .. }), "{first:?}");
        let again = submitter.submit(msg("1")).await;
        match again {
            Reply::Duplicate {
                original_answer, ..
            } => assert_eq!(original_answer.as_deref(), Some(&b"ACK for 1"[..])),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        submitter.rejected(Arc::from("mllp"), Rejection::TooLarge);
        assert!(matches!(
            submitter.submit(msg("2")).await,
            Reply::Stored { .. }
        ));
        drop(submitter);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();

        let conn = open_for_reading(dir.path()).unwrap();
        let c = read_counters(&conn).unwrap();
        assert_eq!(c.len(), 1);
        let c = c[0].1;
        assert_eq!(
            (c.received, c.acked, c.duplicates, c.rejected, c.awaiting),
            (4, 2, 1, 1, 2)
        );
        assert_eq!(c.received, c.acked + c.duplicates + c.rejected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_submits_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (submitter, writer) = start(dir.path(), None);
        let stats = writer.stats();
        let mut tasks = Vec::new();
        for c in 0..16 {
            let s = submitter.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let r = s.submit(msg(&format!("{c}-{i}"))).await;
                    assert!(matches!(r, Reply::Stored { .. }), "{r:?}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(submitter);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();
        let groups = stats.groups.load(Ordering::Relaxed);
        assert!(
            groups < 800,
            "16 concurrent senders should share commits, got {groups} groups for 800 messages"
        );
        let conn = open_for_reading(dir.path()).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 800);
    }

    #[test]
    fn housekeeping_prunes_only_uploaded_raw_messages_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_for_writing(dir.path(), None).unwrap();
        let now = unix_ms(SystemTime::now());
        let day = 86_400_000;
        // (state, state_at): uploaded 8 days ago, uploaded 1 day ago, awaiting 30 days.
        for (state, at) in [
            (State::Uploaded, now - 8 * day),
            (State::Uploaded, now - day),
            (State::Awaiting, now - 30 * day),
        ] {
            conn.execute(
                "INSERT INTO messages (source, received_at, kind, raw, state, state_at) VALUES ('s', ?1, 'hl7v2', x'00', ?2, ?1)",
                (at, state as i64),
            )
            .unwrap();
        }
        let mut w = Writer {
            conn,
            options: WriterOptions {
                group_commit_max: 8,
                raw_retention: Duration::from_secs(7 * 86_400),
            },
            stats: Arc::default(),
            carry: HashMap::new(),
            last_prune: Instant::now(),
            doorbell: Arc::default(),
            not_durable: None,
        };
        w.housekeeping();
        let left: Vec<(i64, i64)> = w
            .conn
            .prepare("SELECT state, state_at FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            left,
            vec![
                (State::Uploaded as i64, now - day),
                (State::Awaiting as i64, now - 30 * day)
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_store_refuses_and_counts_the_refusals() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB limit, 64 KiB messages: the store fills after about 15.
        let (submitter, writer) = start(dir.path(), Some(1 << 20));
        let mut stored = 0;
        let mut refused = 0;
        for i in 0..40 {
            let mut m = msg(&i.to_string());
            m.bytes = Bytes::from(vec![b'x'; 64 * 1024]);
            match submitter.submit(m).await {
                Reply::Stored { .. } => stored += 1,
                Reply::Refused {
                    reason: RefuseReason::StoreFull,
                } => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            stored > 5 && refused > 5,
            "stored {stored}, refused {refused}"
        );
        // A small message may still fit or not; either way the store keeps answering.
        let r = submitter.submit(msg("small")).await;
        assert!(matches!(r, Reply::Stored { .. } | Reply::Refused { .. }));
        drop(submitter);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();
        let conn = open_for_reading(dir.path()).unwrap();
        let c = read_counters(&conn).unwrap()[0].1;
        assert_eq!(c.received, c.acked + c.duplicates + c.rejected, "{c:?}");
        assert!(c.rejected >= refused, "{c:?}");
    }
}
