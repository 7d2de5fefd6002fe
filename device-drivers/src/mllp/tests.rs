//! The listener over real sockets on 127.0.0.1, against an in-process store
//! that answers as each test scripts it. Every network wait is bounded.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on a wrong shape"
)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::codec::{Decoded, END_BLOCK, START_BLOCK};
use super::{ClientError, MllpClient, MllpListener, MllpOptions};
use crate::hl7::read_header;
use crate::received::{channel, Received, RefuseReason, Rejection, Reply, ToStore};
use crate::sim::Hl7Generator;

/// Longest any single test may take.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// Longest a client waits for one answer.
const WAIT: Duration = Duration::from_secs(5);

/// What the fake store does with the next commit request.
enum Script {
    /// Answer `Refused` with this reason.
    Refuse(RefuseReason),
    /// Answer `Invalid`.
    Invalid(String),
    /// Drop the reply handle unanswered.
    Drop,
    /// Wait for the signal, then store.
    Hold(oneshot::Receiver<()>),
}

/// What the fake store saw.
#[derive(Default)]
struct Seen {
    stored: Vec<Received>,
    rejected: Vec<Rejection>,
}

struct Harness {
    addr: SocketAddr,
    shutdown: CancellationToken,
    listener: JoinHandle<()>,
    script: Arc<Mutex<VecDeque<Script>>>,
    seen: Arc<Mutex<Seen>>,
    /// Commit requests received so far (stored or not).
    requests: watch::Receiver<usize>,
}

fn options() -> MllpOptions {
    MllpOptions {
        name: Arc::from("mllp-test"),
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: Vec::new(),
        max_connections: 8,
        max_message_bytes: 64 * 1024,
        idle_timeout: Duration::from_secs(10),
        duplicate_window: Duration::from_secs(60),
        commit_blocks: false,
        tls: None,
    }
}

/// Bind a listener with `options`, start a fake store behind it.
async fn start(options: MllpOptions) -> Harness {
    let (submitter, mut rx) = channel(16);
    let script: Arc<Mutex<VecDeque<Script>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (count_tx, requests) = watch::channel(0usize);
    {
        let script = script.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut answers: HashMap<String, (i64, Option<Bytes>)> = HashMap::new();
            let mut next_id = 0;
            while let Some(req) = rx.recv().await {
                let (received, reply) = match req {
                    ToStore::Commit { received, reply } => (received, reply),
                    ToStore::Rejected { why, .. } => {
                        seen.lock().unwrap().rejected.push(why);
                        continue;
                    }
                    // MLLP never stages.
                    ToStore::Stage { .. } | ToStore::Finish { .. } | ToStore::Retract { .. } => {
                        continue
                    }
                };
                count_tx.send_modify(|n| *n += 1);
                let step = script.lock().unwrap().pop_front();
                match step {
                    Some(Script::Refuse(reason)) => {
                        let _ = reply.send(Reply::Refused { reason });
                        continue;
                    }
                    Some(Script::Invalid(reason)) => {
                        let _ = reply.send(Reply::Invalid { reason });
                        continue;
                    }
                    Some(Script::Drop) => {
                        drop(reply);
                        continue;
                    }
                    Some(Script::Hold(gate)) => {
                        let _ = gate.await;
                    }
                    None => {}
                }
                if let Some(key) = received.dedup.as_ref().map(|d| d.key.clone()) {
                    if let Some((original_id, original_answer)) = answers.get(&key) {
                        let _ = reply.send(Reply::Duplicate {
                            original_id: *original_id,
                            original_answer: original_answer.clone(),
                        });
                        continue;
                    }
                    next_id += 1;
                    answers.insert(key, (next_id, received.answer.clone()));
                } else {
                    next_id += 1;
                }
                seen.lock().unwrap().stored.push(received);
                let _ = reply.send(Reply::Stored { id: next_id });
            }
        });
    }
    let listener = MllpListener::bind(options).await.unwrap();
    let addr = listener.local_addr();
    let shutdown = CancellationToken::new();
    let listener = tokio::spawn(listener.run(submitter, shutdown.clone()));
    Harness {
        addr,
        shutdown,
        listener,
        script,
        seen,
        requests,
    }
}

impl Harness {
    async fn client(&self) -> MllpClient {
        MllpClient::connect(self.addr)
            .await
            .unwrap()
            .with_timeout(WAIT)
    }

    fn push(&self, step: Script) {
        self.script.lock().unwrap().push_back(step);
    }

    fn stored(&self) -> usize {
        self.seen.lock().unwrap().stored.len()
    }

    fn rejected(&self) -> Vec<Rejection> {
        self.seen.lock().unwrap().rejected.clone()
    }

    /// Rejections are counted without waiting for an answer; give the
    /// store task a moment to take them in.
    async fn wait_rejected(&self, n: usize) -> Vec<Rejection> {
        for _ in 0..500 {
            let r = self.rejected();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.rejected()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.listener)
            .await
            .expect("listener stops")
            .unwrap();
    }
}

async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test finished in time");
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![START_BLOCK];
    v.extend_from_slice(payload);
    v.extend_from_slice(&[END_BLOCK, b'\r']);
    v
}

/// The fields of segment `seg` (0 = MSH) of an answer.
fn fields(answer: &[u8], seg: usize) -> Vec<Vec<u8>> {
    answer
        .split(|&b| b == b'\r')
        .nth(seg)
        .unwrap_or(&[])
        .split(|&b| b == b'|')
        .map(<[u8]>::to_vec)
        .collect()
}

/// MSA-1 and MSA-2 of an answer.
fn msa(answer: &[u8]) -> (String, String) {
    let f = fields(answer, 1);
    assert_eq!(f[0], b"MSA", "{}", answer.escape_ascii());
    (
        String::from_utf8(f[1].clone()).unwrap(),
        String::from_utf8(f.get(2).cloned().unwrap_or_default()).unwrap(),
    )
}

fn err_text(answer: &[u8]) -> String {
    let f = fields(answer, 2);
    assert_eq!(f[0], b"ERR", "{}", answer.escape_ascii());
    String::from_utf8_lossy(&f[8]).into_owned()
}

fn adt(id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|HIS|HOSP|WL|WARD|20240101120000||ADT^A01^ADT_A01|{id}|P|2.5.1\rPID|1||42^^^H^MR\r")
        .into_bytes()
}

#[tokio::test]
async fn stores_then_answers_with_the_control_id() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let mut g = Hl7Generator::new(1);
        let message = g.oru_vitals();
        let answer = c.send(&message).await.unwrap();
        assert_eq!(msa(&answer), ("AA".into(), "SIM1-1".into()));
        assert_eq!(fields(&answer, 0)[8], b"ACK^R01^ACK");
        {
            let seen = h.seen.lock().unwrap();
            let r = &seen.stored[0];
            assert_eq!(&r.bytes[..], &message[..], "the exact payload is stored");
            assert_eq!(&*r.source, "mllp-test");
            assert_eq!(
                r.device.as_deref(),
                Some(&*c.local_addr().unwrap().to_string())
            );
            assert_eq!(r.header.control_id.as_deref(), Some("SIM1-1"));
            assert_eq!(r.header.message_type.as_deref(), Some("ORU"));
            assert_eq!(r.header.sender.as_deref(), Some("MONITOR^WARD7"));
            let dedup = r.dedup.as_ref().unwrap();
            assert_eq!(dedup.key, "MONITOR|WARD7|SIM1-1");
            assert_eq!(dedup.window, Duration::from_secs(60));
            // The stored answer is the HL7 ACK itself, un-framed.
            assert_eq!(r.answer.as_deref(), Some(&answer[..]));
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn zero_duplicate_window_means_no_dedup_key() {
    within(async {
        let h = start(MllpOptions {
            duplicate_window: Duration::ZERO,
            ..options()
        })
        .await;
        let mut c = h.client().await;
        c.send(&adt("N1")).await.unwrap();
        c.send(&adt("N1")).await.unwrap();
        assert_eq!(h.stored(), 2);
        assert!(h.seen.lock().unwrap().stored[0].dedup.is_none());
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn frame_split_one_byte_at_a_time() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let message = adt("SPLIT1");
        for b in framed(&message) {
            c.send_raw(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let answer = c.read_answer().await.unwrap();
        assert_eq!(msa(&answer), ("AA".into(), "SPLIT1".into()));
        assert_eq!(&h.seen.lock().unwrap().stored[0].bytes[..], &message[..]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn coalesced_frames_are_answered_in_order() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let mut burst = Vec::new();
        for i in 0..20 {
            burst.extend(framed(&adt(&format!("P{i}"))));
        }
        c.send_raw(&burst).await.unwrap();
        for i in 0..20 {
            let answer = c.read_answer().await.unwrap();
            assert_eq!(msa(&answer), ("AA".into(), format!("P{i}")));
        }
        assert_eq!(h.stored(), 20);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn leading_junk_nuls_and_lf_terminators() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let mut bytes = b"Connected to interface engine v1.2\r\n\0\0".to_vec();
        let lf_message =
            b"MSH|^~\\&|LIS|LAB|WL|W|20240101||ORU^R01|LF1|P|2.4\nPID|1\nOBX|1|NM|x||5\n".to_vec();
        bytes.extend(framed(&lf_message));
        bytes.extend_from_slice(b"\n\0");
        bytes.extend(framed(
            &adt("CRLF1")
                .iter()
                .flat_map(|&b| {
                    if b == b'\r' {
                        vec![b'\r', b'\n']
                    } else {
                        vec![b]
                    }
                })
                .collect::<Vec<_>>(),
        ));
        c.send_raw(&bytes).await.unwrap();
        assert_eq!(
            msa(&c.read_answer().await.unwrap()),
            ("AA".into(), "LF1".into())
        );
        assert_eq!(
            msa(&c.read_answer().await.unwrap()),
            ("AA".into(), "CRLF1".into())
        );
        assert_eq!(&h.seen.lock().unwrap().stored[0].bytes[..], &lf_message[..]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversize_frame_gets_a_reject_and_the_connection_closes() {
    within(async {
        let h = start(MllpOptions {
            max_message_bytes: 4096,
            ..options()
        })
        .await;
        let mut c = h.client().await;
        let mut big = adt("BIG1");
        big.extend(std::iter::repeat_n(b'x', 20_000));
        c.send_message(&big).await.unwrap();
        let answer = c.read_answer().await.unwrap();
        assert_eq!(msa(&answer).0, "AR");
        assert!(
            err_text(&answer).contains("too large"),
            "{}",
            err_text(&answer)
        );
        let rest = c.wait_closed().await.unwrap();
        assert!(rest.is_empty(), "nothing after the reject: {rest:?}");
        assert_eq!(h.stored(), 0);
        assert_eq!(h.wait_rejected(1).await, vec![Rejection::TooLarge]);

        // Without a complete MSH in the head the reject still goes out,
        // with an empty MSA-2.
        let mut c = h.client().await;
        c.send_message(&vec![b'y'; 10_000]).await.unwrap();
        let answer = c.read_answer().await.unwrap();
        assert_eq!(msa(&answer), ("AR".into(), String::new()));
        assert!(c.wait_closed().await.unwrap().is_empty());
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn missing_end_block_drops_the_partial_frame() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let mut bytes = vec![START_BLOCK];
        bytes.extend_from_slice(&adt("CUT1")[..30]);
        bytes.extend(framed(&adt("OK1")));
        c.send_raw(&bytes).await.unwrap();
        assert_eq!(
            msa(&c.read_answer().await.unwrap()),
            ("AA".into(), "OK1".into())
        );
        // Exactly one answer for that: the next answer is for the next frame.
        assert_eq!(
            msa(&c.send(&adt("OK2")).await.unwrap()),
            ("AA".into(), "OK2".into())
        );
        assert_eq!(h.stored(), 2);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unusable_headers_get_an_error_and_the_connection_keeps_serving() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;

        let answer = c.send(b"this is not HL7 at all").await.unwrap();
        assert_eq!(msa(&answer), ("AE".into(), String::new()));
        assert_eq!(fields(&answer, 2)[2], b"MSH^1");
        assert_eq!(fields(&answer, 2)[3], b"100^Segment sequence error^HL70357");

        let no_id = b"MSH|^~\\&|HIS|HOSP|WL|WARD|20240101||ADT^A01||P|2.5\r";
        let answer = c.send(no_id).await.unwrap();
        assert_eq!(msa(&answer), ("AE".into(), String::new()));
        assert_eq!(
            fields(&answer, 0)[2],
            b"WL",
            "the answer still swaps MSH-3/5"
        );
        assert_eq!(fields(&answer, 2)[2], b"MSH^1^10");
        assert_eq!(fields(&answer, 2)[3], b"101^Required field missing^HL70357");

        let no_type = b"MSH|^~\\&|HIS|HOSP|WL|WARD|20240101|||T9|P|2.5|||AL\r";
        let answer = c.send(no_type).await.unwrap();
        assert_eq!(msa(&answer), ("CE".into(), "T9".into()));
        assert_eq!(fields(&answer, 2)[2], b"MSH^1^9");

        // Still serving.
        assert_eq!(
            msa(&c.send(&adt("GOOD1")).await.unwrap()),
            ("AA".into(), "GOOD1".into())
        );
        assert_eq!(h.stored(), 1);
        assert_eq!(h.wait_rejected(3).await, vec![Rejection::BadHeader; 3]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn peer_outside_the_allowlist_is_refused_and_closed() {
    within(async {
        let h = start(MllpOptions {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..options()
        })
        .await;
        let mut c = h.client().await;
        let answer = c.send(&adt("NA1")).await.unwrap();
        assert_eq!(msa(&answer), ("AR".into(), "NA1".into()));
        assert!(err_text(&answer).contains("sender not allowed"));
        assert!(c.wait_closed().await.unwrap().is_empty());
        assert_eq!(h.stored(), 0);
        assert_eq!(h.wait_rejected(1).await, vec![Rejection::NotAllowed]);
        h.stop().await;

        // 127.0.0.1 inside the allowlist is served.
        let h = start(MllpOptions {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..options()
        })
        .await;
        let mut c = h.client().await;
        assert_eq!(msa(&c.send(&adt("OK")).await.unwrap()).0, "AA");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    within(async {
        let h = start(MllpOptions {
            idle_timeout: Duration::from_millis(300),
            ..options()
        })
        .await;
        let mut c = h.client().await;
        // A connection in use is not idle, though it outlives the timeout.
        for i in 0..6 {
            let answer = c.send(&adt(&format!("I{i}"))).await.unwrap();
            assert_eq!(msa(&answer).0, "AA");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        // Then, from the last activity on, the idle timeout closes it.
        assert!(c.wait_closed().await.unwrap().is_empty());
        // A half-sent frame does not keep a connection alive either.
        let mut c = h.client().await;
        c.send_raw(&framed(&adt("HALF"))[..20]).await.unwrap();
        assert!(c.wait_closed().await.unwrap().is_empty());
        assert_eq!(h.stored(), 6);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn max_connections_makes_the_extra_peer_wait() {
    within(async {
        let h = start(MllpOptions {
            max_connections: 1,
            ..options()
        })
        .await;
        let mut first = h.client().await;
        assert_eq!(msa(&first.send(&adt("C1")).await.unwrap()).0, "AA");

        // The second connection completes in the backlog but is not served.
        let mut second = h.client().await.with_timeout(Duration::from_millis(300));
        second.send_message(&adt("C2")).await.unwrap();
        match second.read_answer().await {
            Err(ClientError::TimedOut(_)) => {}
            other => panic!("the second peer was served early: {other:?}"),
        }
        assert_eq!(h.stored(), 1);

        // Once the first closes, the second is accepted and answered.
        drop(first);
        let mut second = second.with_timeout(WAIT);
        assert_eq!(
            msa(&second.read_answer().await.unwrap()),
            ("AA".into(), "C2".into())
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn store_refusal_gets_a_reject_and_the_connection_stays_usable() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        h.push(Script::Refuse(RefuseReason::StoreFull));
        let answer = c.send(&adt("R1")).await.unwrap();
        assert_eq!(msa(&answer), ("AR".into(), "R1".into()));
        assert_eq!(
            fields(&answer, 2)[3],
            b"207^Application internal error^HL70357"
        );
        let text = err_text(&answer);
        assert!(
            text.contains("store full") && text.contains("retry"),
            "{text}"
        );

        // Enhanced mode: the commit-level reject.
        h.push(Script::Refuse(RefuseReason::StoreFailed(
            "disk I/O error".into(),
        )));
        let enhanced = b"MSH|^~\\&|HIS|HOSP|WL|WARD|20240101||ADT^A01|R2|P|2.5|||AL|NE\r";
        let answer = c.send(enhanced).await.unwrap();
        assert_eq!(msa(&answer), ("CR".into(), "R2".into()));
        assert!(err_text(&answer).contains("disk I/O error"));

        // A dropped reply handle is a refusal, counted by the source.
        h.push(Script::Drop);
        let answer = c.send(&adt("R3")).await.unwrap();
        assert_eq!(msa(&answer), ("AR".into(), "R3".into()));

        // The store's own verdict on a header.
        h.push(Script::Invalid("bad sender".into()));
        let answer = c.send(&adt("R4")).await.unwrap();
        assert_eq!(msa(&answer), ("AE".into(), "R4".into()));

        // Still usable; the message is stored on the retry.
        assert_eq!(
            msa(&c.send(&adt("R1")).await.unwrap()),
            ("AA".into(), "R1".into())
        );
        assert_eq!(h.stored(), 1);
        // Store-answered refusals are the store's to count; only the
        // dropped handle is counted here.
        assert_eq!(h.wait_rejected(1).await, vec![Rejection::Refused]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn duplicate_is_answered_with_the_original_bytes() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let first = c.send(&adt("D1")).await.unwrap();
        // The resend, on another connection, later.
        let mut other = h.client().await;
        let again = other.send(&adt("D1")).await.unwrap();
        assert_eq!(again, first, "the original answer, byte for byte");
        assert_eq!(h.stored(), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn enhanced_mode_sends_the_commit_then_the_application_ack() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let m = b"MSH|^~\\&|HIS|HOSP|WL|WARD|20240101||ADT^A01^ADT_A01|E1|P|2.5|||AL|AL\r";
        let commit = c.send(m).await.unwrap();
        assert_eq!(msa(&commit), ("CA".into(), "E1".into()));
        let application = c.read_answer().await.unwrap();
        assert_eq!(msa(&application), ("AA".into(), "E1".into()));
        // The stored answer is the commit ack only.
        assert_eq!(
            h.seen.lock().unwrap().stored[0].answer.as_deref(),
            Some(&commit[..])
        );
        // A resend gets the original commit ack and again an application ack.
        assert_eq!(c.send(m).await.unwrap(), commit);
        assert_eq!(
            msa(&c.read_answer().await.unwrap()),
            ("AA".into(), "E1".into())
        );
        // IHE PCD-01 (MSH-15 NE, MSH-16 AL): one immediate AA.
        let pcd = b"MSH|^~\\&|PCD|ICU|WL|WARD|20240101||ORU^R01|E2|P|2.6|||NE|AL\r";
        assert_eq!(msa(&c.send(pcd).await.unwrap()), ("AA".into(), "E2".into()));
        assert_eq!(
            msa(&c.send(&adt("E3")).await.unwrap()),
            ("AA".into(), "E3".into())
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn commit_blocks_precede_answers_in_r2_mode() {
    within(async {
        let h = start(MllpOptions {
            commit_blocks: true,
            ..options()
        })
        .await;
        let mut c = h.client().await;
        c.send_message(&adt("B1")).await.unwrap();
        assert_eq!(c.read_decoded().await.unwrap(), Some(Decoded::CommitAck));
        let Some(Decoded::Frame(answer)) = c.read_decoded().await.unwrap() else {
            panic!("no answer after the commit block");
        };
        assert_eq!(msa(&answer), ("AA".into(), "B1".into()));
        // The stored answer carries no commit block.
        assert_eq!(
            h.seen.lock().unwrap().stored[0].answer.as_deref(),
            Some(&answer[..])
        );

        h.push(Script::Refuse(RefuseReason::StoreFull));
        c.send_message(&adt("B2")).await.unwrap();
        assert_eq!(c.read_decoded().await.unwrap(), Some(Decoded::CommitNak));
        assert_eq!(msa(&c.read_answer().await.unwrap()).0, "AR");

        // The peer's own commit blocks (for our answers) are accepted silently.
        c.send_raw(&super::ack::COMMIT_ACK_BLOCK).await.unwrap();
        c.send_message(&adt("B3")).await.unwrap();
        assert_eq!(c.read_decoded().await.unwrap(), Some(Decoded::CommitAck));
        assert_eq!(msa(&c.read_answer().await.unwrap()).1, "B3");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_answers_the_pending_commit_then_closes() {
    within(async {
        let h = start(options()).await;
        let mut c = h.client().await;
        let (release, gate) = oneshot::channel();
        h.push(Script::Hold(gate));
        // One frame whose commit will be pending, one queued behind it.
        let mut burst = framed(&adt("S1"));
        burst.extend(framed(&adt("S2")));
        c.send_raw(&burst).await.unwrap();
        let mut requests = h.requests.clone();
        requests.wait_for(|n| *n >= 1).await.unwrap();

        // An idle connection closes at once on shutdown.
        let mut idle = h.client().await;
        tokio::task::yield_now().await;

        h.shutdown.cancel();
        assert!(idle.wait_closed().await.unwrap().is_empty());
        // New connections are refused once the listener has stopped
        // accepting (or at least never served).
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).unwrap();

        let a1 = c.read_answer().await.unwrap();
        assert_eq!(msa(&a1), ("AA".into(), "S1".into()));
        let a2 = c.read_answer().await.unwrap();
        assert_eq!(msa(&a2), ("AR".into(), "S2".into()));
        assert!(err_text(&a2).contains("shutting down"));
        assert!(c.wait_closed().await.unwrap().is_empty());

        tokio::time::timeout(WAIT, h.listener)
            .await
            .expect("run returns once connections are done")
            .unwrap();
        assert_eq!(h.seen.lock().unwrap().stored.len(), 1);
        let rejected = h.seen.lock().unwrap().rejected.clone();
        assert!(rejected.is_empty() || rejected == vec![Rejection::Refused]);
        assert!(
            MllpClient::connect(h.addr).await.is_err(),
            "no longer listening"
        );
    })
    .await;
}

#[tokio::test]
async fn many_connections_every_frame_answered_once() {
    within(async {
        let h = start(options()).await;
        let mut tasks = Vec::new();
        for conn in 0..6u64 {
            let addr = h.addr;
            tasks.push(tokio::spawn(async move {
                let mut c = MllpClient::connect(addr).await.unwrap().with_timeout(WAIT);
                let mut g = Hl7Generator::new(conn).with_prefix(&format!("K{conn}-"));
                for _ in 0..50 {
                    let id = g.next_control_id();
                    let m = g.next_message();
                    let answer = c.send(&m).await.unwrap();
                    assert_eq!(msa(&answer), ("AA".into(), id));
                    let back = read_header(&answer).unwrap();
                    assert_eq!(back.message_code(), b"ACK");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(h.stored(), 300);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bind_error_names_the_address() {
    within(async {
        let h = start(options()).await;
        let err = MllpListener::bind(MllpOptions {
            listen: h.addr,
            ..options()
        })
        .await
        .unwrap_err();
        assert_eq!(err.addr, h.addr);
        assert!(err.to_string().contains(&h.addr.to_string()), "{err}");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_by_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    within(async {
        let h = start(MllpOptions {
            idle_timeout: Duration::from_millis(300),
            ..options()
        })
        .await;
        // Pipeline frames and never read an answer: once the socket
        // buffers fill, the listener's writes block, time out, and the
        // connection is closed (the writes here then fail).
        let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut burst = Vec::new();
        for i in 0..200 {
            burst.extend(framed(&adt(&format!("W{i}"))));
        }
        let mut writes = 0u64;
        let closed = loop {
            match tokio::time::timeout(WAIT, stream.write_all(&burst)).await {
                Ok(Ok(())) => writes += 1,
                Ok(Err(_)) => break true,
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "the listener kept the stuck connection open ({writes} bursts)"
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn zero_idle_timeout_means_no_idle_limit() {
    within(async {
        let h = start(MllpOptions {
            idle_timeout: Duration::ZERO,
            ..options()
        })
        .await;
        let mut c = h.client().await;
        assert_eq!(msa(&c.send(&adt("Z1")).await.unwrap()).0, "AA");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(msa(&c.send(&adt("Z2")).await.unwrap()).0, "AA");
        h.stop().await;
    })
    .await;
}
