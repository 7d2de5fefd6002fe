//! The uploader: sealed batches to the collector, strictly in sequence
//! order, and deleted only after the collector's verified receipt.
//!
//! One tokio task. Each turn it reads the first sealed batch without
//! `uploaded_at` (on its own read-only connection), posts its wire bytes to
//! `POST /v1/batches` and sorts the answer into an [`Outcome`]
//! ([`classify`], pure):
//!
//! - **Stored** (200, `wardlink-batch-status: stored` or `duplicate`, and a
//!   receipt that verifies against `sync.collector_public_key` and names this
//!   batch): the store writer marks the batch uploaded in one transaction
//!   ([`SyncJob::Uploaded`]); the next batch follows at once. `duplicate` is
//!   normal after a crash between the collector's commit and ours.
//! - **Retry** (no connection, timeout, 5xx, 408, 429; a 400 for a damaged
//!   body the first time): wait with exponential backoff and jitter
//!   ([`Backoff`]), then send the same bytes again.
//! - **Alarm** (400, 401, 403, 409, 413, another 4xx, or a receipt that does
//!   not verify): the collector refused the batch and a person must act
//!   (enrol the gateway, fix the collector key...). Logged as `ALARM`,
//!   shown by `wardlink status`, and tried again only every
//!   `sync.retry_backoff_max`, so that it recovers by itself once fixed.
//!
//! A batch is never skipped: batch n+1 waits until batch n has its receipt.
//! Because nothing but the store holds state, a restart (or `kill -9`)
//! resumes with the first batch not marked uploaded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use wardlink_sync::batch::Batch;
use wardlink_sync::keys::PublicKey;
use wardlink_sync::receipt::Receipt;

use crate::store::outbox;
use crate::store::writer::SyncJob;

/// The content type of a batch on the wire (`docs/collector.md`).
pub const CONTENT_TYPE: &str = "application/vnd.wardlink.batch.v1";
/// How long the uploader waits with nothing to send unless notified.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Where and how to upload.
#[derive(Debug, Clone)]
pub struct UploaderOptions {
    /// `…/v1/batches` of the collector.
    pub batches_url: String,
    /// The collector's receipt key.
    pub collector_key: PublicKey,
    /// First wait after a failure.
    pub backoff_min: Duration,
    /// Longest wait; also the pace of retries after an alarm.
    pub backoff_max: Duration,
}

/// What became of one upload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The collector stored the batch (now or before) and its receipt verifies.
    Stored {
        /// The receipt's `stored_ms`.
        stored_ms: u64,
        /// `wardlink-batch-status: duplicate`.
        duplicate: bool,
    },
    /// A transient failure: try again after a backoff.
    Retry(String),
    /// The collector refused the batch: alarm, try again rarely.
    Alarm(String),
}

/// Sort a collector's answer to `batch` into an [`Outcome`]. `attempt` is
/// how many times this batch failed before (0 for the first try).
pub fn classify(
    status: u16,
    batch_status: Option<&str>,
    body: &[u8],
    batch: &Batch,
    collector_key: &PublicKey,
    attempt: u32,
) -> Outcome {
    let seq = batch.header().seq;
    let error_kind = || -> String {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    match status {
        200 => {
            let receipt = match Receipt::from_json(body) {
                Ok(r) => r,
                Err(e) => return Outcome::Alarm(format!("batch {seq}: {e}")),
            };
            match receipt.verify_for(collector_key, batch) {
                Ok(()) => Outcome::Stored {
                    stored_ms: receipt.stored_ms,
                    duplicate: batch_status == Some("duplicate"),
                },
                Err(e) => Outcome::Alarm(format!(
                    "batch {seq}: {e} (is sync.collector_public_key the key `wardlink-collector public-key` prints?)"
                )),
            }
        }
        400 => {
            let kind = error_kind();
            let transport_damage = kind == "body_hash_mismatch" || kind == "bad_body";
            if transport_damage && attempt == 0 {
                Outcome::Retry(format!(
                    "batch {seq}: the collector says {kind} (damaged on the way?); sending it again"
                ))
            } else {
                Outcome::Alarm(format!(
                    "batch {seq}: the collector refused it as malformed ({kind}): a sealer bug, please report it"
                ))
            }
        }
        401 => Outcome::Alarm(format!(
            "batch {seq}: the collector does not know gateway {}: enrol it there (`wardlink keygen` prints the command)",
            batch.header().gateway_id
        )),
        403 => {
            let kind = error_kind();
            if kind == "revoked" {
                Outcome::Alarm(format!(
                    "batch {seq}: the collector has revoked gateway {}",
                    batch.header().gateway_id
                ))
            } else {
                Outcome::Alarm(format!(
                    "batch {seq}: the collector rejects this gateway's signature ({kind}): is it enrolled with another key?"
                ))
            }
        }
        409 => Outcome::Alarm(format!(
            "batch {seq}: conflict: the collector holds another batch at this place in the chain (a restored backup or a cloned disk?)"
        )),
        413 => Outcome::Alarm(format!(
            "batch {seq}: {} bytes is more than the collector accepts (its max_batch_bytes); lower sync.batch_max_events",
            batch.encode().len()
        )),
        408 | 429 | 500..=599 => Outcome::Retry(format!(
            "batch {seq}: the collector answered {status} {}",
            error_kind()
        )),
        other => Outcome::Alarm(format!(
            "batch {seq}: the collector answered {other} {}",
            error_kind()
        )),
    }
}

/// Exponential backoff with jitter.
///
/// Design: the n-th consecutive failure waits a random time in
/// `[d/2, d]` with `d = min(max, min × 2^(n-1))` ("equal jitter"), so many
/// gateways that lost the collector at the same moment do not come back in
/// step. With the defaults (1 s, 5 min): about 0.5–1 s, 1–2 s, 2–4 s, …,
/// then 2.5–5 min from the tenth failure on.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The wait after one more failure; `random` is any random number.
    pub fn next(&mut self, random: u64) -> Duration {
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let d = self.min.saturating_mul(1 << exp).min(self.max);
        jitter(d, random)
    }

    /// The wait after an alarm: `max`, jittered.
    pub fn alarm(&mut self, random: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(self.max, random)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A time in `[d/2, d]`.
fn jitter(d: Duration, random: u64) -> Duration {
    let half = d / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) })
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Without randomness the jitter is 0: still a correct backoff.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// A receipt handed to the store writer whose commit is not confirmed yet.
struct Pending {
    seq: u64,
    duplicate: bool,
    post_ms: u64,
    committed: oneshot::Receiver<Result<Option<outbox::Uploaded>, String>>,
}

/// Wait for the commit of `pending`. `false` if it failed (or the writer is
/// gone): the batch is then still not uploaded in the store and must be
/// looked up again (and sent again: the collector answers `duplicate`).
async fn settle(pending: Pending) -> bool {
    let started = std::time::Instant::now();
    match pending.committed.await {
        Ok(Ok(marked)) => {
            tracing::debug!(
                seq = pending.seq,
                duplicate = pending.duplicate,
                post_ms = pending.post_ms,
                commit_wait_ms = started.elapsed().as_millis() as u64,
                events = marked.map(|m| m.events),
                messages_uploaded = marked.map(|m| m.messages),
                "Batch uploaded"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!(seq = pending.seq, error = %e, "Recording the upload failed; the batch is sent again");
            false
        }
        Err(_) => false,
    }
}

/// Run the uploader until `shutdown` is cancelled. `conn` is a read-only
/// connection to the store; `bell` is the writer's sealed bell.
///
/// Design: batch n+1 is posted only after batch n's receipt verified, but
/// while the store writer is still committing n's receipt: the local commit
/// (deleting n's events, moving its messages to `uploaded`) overlaps the next
/// upload instead of adding to it. At most one such commit is outstanding:
/// it is awaited before the next receipt is handed over, before idling and
/// before stopping. If it fails, the uploader forgets where it was and asks
/// the store again, so batch n goes up a second time (`duplicate`, same
/// receipt) and nothing is lost.
pub async fn run(
    conn: Connection,
    client: reqwest::Client,
    options: UploaderOptions,
    jobs: mpsc::Sender<SyncJob>,
    bell: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let conn = Arc::new(Mutex::new(conn));
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    // Failures of the batch in hand (for "retry a damaged body once").
    let mut attempt: (u64, u32) = (0, 0);
    // The last batch whose receipt verified (its commit may be pending).
    let mut receipted: Option<u64> = None;
    let mut pending: Option<Pending> = None;
    tracing::info!(url = %options.batches_url, "Uploader started");
    while !shutdown.is_cancelled() {
        let next = {
            let conn = conn.clone();
            tokio::task::spawn_blocking(move || {
                let c = conn
                    .lock()
                    .map_err(|_| "connection lock poisoned".to_string())?;
                outbox::next_to_upload(&c, receipted).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        let (seq, wire) = match next {
            Ok(Some(next)) => next,
            Ok(None) => {
                if let Some(p) = pending.take() {
                    if !settle(p).await {
                        receipted = None;
                    }
                    continue;
                }
                tokio::select! {
                    () = bell.notified() => {}
                    () = tokio::time::sleep(IDLE_WAIT) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "Reading the next sealed batch failed");
                wait(&shutdown, backoff.next(random_u64())).await;
                continue;
            }
        };
        if attempt.0 != seq {
            attempt = (seq, 0);
        }
        let batch = match Batch::decode(&wire) {
            Ok(b) => b,
            Err(e) => {
                // Stored by our own sealer after encode(): only disk damage gets here.
                let error = format!("sealed batch {seq} in the store does not decode: {e}");
                tracing::error!(seq, error = %error, "ALARM: a stored batch is damaged");
                let _ = jobs.try_send(SyncJob::Failed { error, alarm: true });
                wait(&shutdown, backoff.alarm(random_u64())).await;
                continue;
            }
        };
        let posted = std::time::Instant::now();
        let outcome = tokio::select! {
            o = post(&client, &options, wire, &batch, attempt.1) => o,
            () = shutdown.cancelled() => break,
        };
        let post_ms = u64::try_from(posted.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Stored {
                stored_ms,
                duplicate,
            } => {
                if let Some(p) = pending.take() {
                    if !settle(p).await {
                        receipted = None;
                        continue;
                    }
                }
                let (done, committed) = oneshot::channel();
                if jobs
                    .send(SyncJob::Uploaded {
                        seq,
                        stored_ms,
                        done,
                    })
                    .await
                    .is_err()
                {
                    break; // the writer has stopped
                }
                if backoff.failures() > 0 {
                    tracing::info!(seq, failures = backoff.failures(), "Upload works again");
                }
                backoff.reset();
                receipted = Some(seq);
                pending = Some(Pending {
                    seq,
                    duplicate,
                    post_ms,
                    committed,
                });
            }
            Outcome::Retry(error) => {
                attempt.1 = attempt.1.saturating_add(1);
                let delay = backoff.next(random_u64());
                tracing::warn!(seq, attempt = attempt.1, retry_in_ms = delay.as_millis() as u64, error = %error, "Upload failed; retrying");
                let _ = jobs.try_send(SyncJob::Failed {
                    error,
                    alarm: false,
                });
                wait(&shutdown, delay).await;
            }
            Outcome::Alarm(error) => {
                attempt.1 = attempt.1.saturating_add(1);
                let delay = backoff.alarm(random_u64());
                tracing::error!(seq, retry_in_ms = delay.as_millis() as u64, error = %error, "ALARM: the collector refused a batch");
                let _ = jobs.try_send(SyncJob::Failed { error, alarm: true });
                wait(&shutdown, delay).await;
            }
        }
    }
    // The writer is still running (the daemon joins it after this task):
    // let the last receipt be recorded rather than re-sent after the restart.
    if let Some(p) = pending.take() {
        settle(p).await;
    }
    tracing::debug!("Uploader stopped");
}

/// Sleep, or less if shutdown comes first.
async fn wait(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

/// One attempt: post the batch, read the answer, classify it.
async fn post(
    client: &reqwest::Client,
    options: &UploaderOptions,
    wire: Vec<u8>,
    batch: &Batch,
    attempt: u32,
) -> Outcome {
    let seq = batch.header().seq;
    let response = match client
        .post(&options.batches_url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(wire)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry(format!(
                "batch {seq}: cannot reach the collector: {}",
                error_chain(&e)
            ))
        }
    };
    let status = response.status().as_u16();
    let batch_status = response
        .headers()
        .get("wardlink-batch-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Retry(format!(
                "batch {seq}: the collector's answer broke off: {}",
                error_chain(&e)
            ))
        }
    };
    classify(
        status,
        batch_status.as_deref(),
        &body,
        batch,
        &options.collector_key,
        attempt,
    )
}

/// An error with its sources, on one line (reqwest's own text is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use wardlink_sync::batch::{seal, Chain, SealMeta};
    use wardlink_sync::keys::SigningKeyFile;

    fn batch() -> (Batch, SigningKeyFile) {
        let gw = SigningKeyFile::from_seed([1; 32]);
        let meta = SealMeta {
            created_ms: 1,
            backlog: 0,
            zstd_level: 3,
        };
        let b = seal(&[r#"{"event_id":1}"#], &Chain::GENESIS, &gw, meta).unwrap();
        (b, SigningKeyFile::from_seed([9; 32]))
    }

    #[test]
    fn answers_are_sorted_into_stored_retry_and_alarm() {
        let (b, collector) = batch();
        let key = collector.public_key();
        let receipt = Receipt::sign(
            &collector,
            &b.header().gateway_id,
            1,
            &b.header_sha256(),
            42,
        );
        let json = receipt.to_json();
        assert_eq!(
            classify(200, Some("duplicate"), json.as_bytes(), &b, &key, 0),
            Outcome::Stored {
                stored_ms: 42,
                duplicate: true
            }
        );
        // A receipt signed by someone else, or for another batch: not stored.
        let other = SigningKeyFile::from_seed([5; 32]);
        let forged = Receipt::sign(&other, &b.header().gateway_id, 1, &b.header_sha256(), 42);
        assert!(matches!(
            classify(200, None, forged.to_json().as_bytes(), &b, &key, 0),
            Outcome::Alarm(_)
        ));
        let wrong = Receipt::sign(
            &collector,
            &b.header().gateway_id,
            2,
            &b.header_sha256(),
            42,
        );
        assert!(matches!(
            classify(200, None, wrong.to_json().as_bytes(), &b, &key, 0),
            Outcome::Alarm(_)
        ));
        assert!(matches!(
            classify(200, None, b"{}", &b, &key, 0),
            Outcome::Alarm(_)
        ));
        let damaged = br#"{"error":"body_hash_mismatch","message":"x"}"#;
        assert!(matches!(
            classify(400, None, damaged, &b, &key, 0),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(400, None, damaged, &b, &key, 1),
            Outcome::Alarm(_)
        ));
        for status in [401, 403, 409, 413, 404] {
            assert!(
                matches!(classify(status, None, b"", &b, &key, 0), Outcome::Alarm(_)),
                "{status}"
            );
        }
        for status in [503, 500, 429, 408] {
            assert!(
                matches!(classify(status, None, b"", &b, &key, 0), Outcome::Retry(_)),
                "{status}"
            );
        }
        let Outcome::Alarm(text) = classify(401, None, b"", &b, &key, 0) else {
            panic!()
        };
        assert!(text.contains("enrol"), "{text}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        // The n-th failure waits within [d/2, d], d = 1 s, 2 s, 4 s, 8 s, 10 s, 10 s.
        for d in [1000, 2000, 4000, 8000, 10_000, 10_000] {
            for random in [0, 1, 12_345_678_901, u64::MAX] {
                let wait = b.clone().next(random).as_millis();
                assert!(
                    (d / 2..=d).contains(&wait),
                    "{wait} ms outside [{}, {d}]",
                    d / 2
                );
            }
            assert_eq!(b.next(0).as_millis(), d / 2);
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.next(u64::MAX) <= Duration::from_secs(1));
        let alarm = b.alarm(u64::MAX);
        assert!(alarm >= Duration::from_secs(5) && alarm <= Duration::from_secs(10));
    }
}
