//! The MQTT source's I/O shell: drive rumqttc's event loop, submit every
//! publish as a reading, acknowledge it only after the store's answer, and
//! reconnect with backoff.
//!
//! Design:
//! - **Commit before PUBACK** (architecture.md invariant 1). The session
//!   uses manual acks. The poll loop never waits for the store: for each
//!   publish it starts the submit (a task awaiting [`Submitter::submit`])
//!   and queues `(generation, publish, pending reply)` to the *acker* task,
//!   which awaits the replies **in arrival order** (MQTT 3.1.1 §4.6 wants
//!   PUBACKs in the order of the PUBLISHes) and sends a PUBACK only for
//!   `Stored` or `Duplicate`. The group commit in the store writer turns
//!   many queued publishes into one fsync, so the in-flight window the
//!   broker allows is what bounds throughput, not one fsync per message.
//! - **No ack crosses a reconnect.** A packet id belongs to one connection's
//!   view of the session; after a drop the broker resends unacknowledged
//!   messages (DUP set). Each queued publish carries the connection
//!   *generation*; the poll loop bumps it and calls `EventLoop::clean`
//!   (which drops acks still queued for rumqttc) under the same lock that
//!   the acker holds while it checks the generation and hands an ack to
//!   rumqttc. So an ack for an old connection is never sent on a new one;
//!   the resent message is stored again or recognised as a duplicate and
//!   acknowledged then.
//! - **Resends are recognised**: a publish with DUP set whose topic and
//!   payload equal one stored in the last [`DUP_WINDOW`] is a duplicate (its
//!   first copy was stored but its PUBACK was lost). Messages without DUP
//!   are never deduplicated: two equal readings are two readings.
//! - **The store refusing** (disk full, shutting down) sends no PUBACK; the
//!   source drops the connection and reconnects after the backoff, so the
//!   broker keeps the message and delivers it again.
//! - **Reconnect with backoff** from [`BACKOFF_MIN`] doubling to
//!   [`BACKOFF_MAX`]; every change of link state goes to the
//!   [`LinkReporter`] (`wardlink status`: connected / disconnected since).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wardlink_config::MqttSource;

use super::decode::decode;
use super::options::{peer, session_options, OptionsError};
use crate::link::{LinkReport, LinkReporter, LinkStatus};
use crate::received::{Dedup, Header, Kind, Received, Rejection, Reply, Submitter};

/// First wait before reconnecting.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnects.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How far back a resent (DUP) publish is compared with stored ones.
pub const DUP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Publishes whose commit is pending, at most (beyond it the poll loop
/// waits: back-pressure from the store reaches the broker's flow control).
const MAX_PENDING: usize = 8192;
/// rumqttc's request channel (acks and subscribes).
const REQUEST_CAPACITY: usize = 4096;
/// On stop: how long to wait for pending commits and their PUBACKs.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A configured MQTT source, ready to run.
#[derive(Debug)]
pub struct MqttSourceTask {
    config: Arc<MqttSource>,
    options: rumqttc::MqttOptions,
    peer: String,
}

/// Shared between the poll loop and the acker.
#[derive(Debug, Default)]
struct AckGate {
    /// The connection generation; bumped (under `lock`) when a connection ends.
    generation: AtomicU64,
    /// Held while checking the generation and queuing an ack, and while
    /// bumping it and cleaning the event loop.
    lock: Mutex<()>,
    /// The store refused: drop the connection so the broker redelivers.
    refused: Notify,
}

struct Pending {
    generation: u64,
    publish: Publish,
    reply: JoinHandle<Reply>,
}

impl MqttSourceTask {
    /// Prepare a source: read its password file and TLS files.
    ///
    /// # Errors
    /// A file named in the config cannot be read or used.
    pub fn new(config: MqttSource) -> Result<MqttSourceTask, OptionsError> {
        let options = session_options(&config)?;
        let peer = peer(&config);
        Ok(MqttSourceTask {
            config: Arc::new(config),
            options,
            peer,
        })
    }

    /// The broker, as shown in logs and status (`mqtt://host:port`).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The source's configured name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Run until `shutdown` is cancelled; then wait (up to a deadline) for
    /// pending commits, send their PUBACKs and disconnect. Never returns an
    /// error: connection problems are retried and reported to `link`.
    pub async fn run(self, submitter: Submitter, link: LinkReporter, shutdown: CancellationToken) {
        let MqttSourceTask {
            config,
            options,
            peer,
        } = self;
        let name: Arc<str> = Arc::from(config.name.as_str());
        let report = |status: LinkStatus, error: Option<String>| {
            link(LinkReport {
                source: name.clone(),
                status,
                since: SystemTime::now(),
                peer: peer.clone(),
                error,
            });
        };
        report(LinkStatus::Connecting, None);
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let gate = Arc::new(AckGate::default());
        let (pending_tx, pending_rx) = mpsc::channel::<Pending>(MAX_PENDING);
        let mut acker = tokio::spawn(acker(
            pending_rx,
            client.clone(),
            gate.clone(),
            submitter.clone(),
            name.clone(),
        ));
        let filters: Vec<SubscribeFilter> = config
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.subscription.clone(), QoS::AtLeastOnce))
            .collect();
        let mut backoff = BACKOFF_MIN;
        loop {
            // Cancelling `poll` (shutdown, refusal) may lose a packet half
            // read or written; both arms end this connection anyway, and
            // whatever was not acknowledged is delivered again.
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = gate.refused.notified() => Err("the store refused a message; reconnecting so the broker delivers it again".to_owned()),
                ev = eventloop.poll() => ev.map_err(|e| e.to_string()),
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = BACKOFF_MIN;
                    tracing::info!(source = %name, broker = %peer, session_present = ack.session_present, "MQTT connected");
                    report(LinkStatus::Connected, None);
                    // Subscribing again on a resumed session is harmless,
                    // and needed when the broker lost the session.
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(source = %name, error = %e, "MQTT subscribe could not be queued");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    for (code, f) in s.return_codes.iter().zip(&filters) {
                        if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                            tracing::error!(source = %name, filter = %f.path, "the broker refused the subscription");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let received = to_received(&config, &name, &p);
                    // Queued here, in arrival order, so the store keeps the
                    // broker's order; only the wait for the answer runs apart.
                    let reply = tokio::spawn(submitter.enqueue(received).await);
                    let generation = gate.generation.load(Ordering::Acquire);
                    let item = Pending {
                        generation,
                        publish: p,
                        reply,
                    };
                    if pending_tx.send(item).await.is_err() {
                        break; // the acker ended: nothing can be acknowledged
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    {
                        // See "No ack crosses a reconnect" above.
                        let _held = gate.lock.lock().unwrap_or_else(|p| p.into_inner());
                        gate.generation.fetch_add(1, Ordering::AcqRel);
                        eventloop.clean();
                    }
                    tracing::warn!(source = %name, broker = %peer, %error, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting");
                    report(LinkStatus::Disconnected, Some(error));
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Stop: no new publishes are submitted (the broker keeps them);
        // those whose commit is pending get their PUBACK if the connection
        // still stands.
        drop(pending_tx);
        let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    ev = eventloop.poll() => if ev.is_err() {
                        // Down: the remaining acks cannot go out; the broker resends.
                        let _ = (&mut acker).await;
                        break;
                    },
                }
            }
        })
        .await;
        if drained.is_err() {
            acker.abort();
            tracing::warn!(source = %name, "MQTT source: pending commits did not finish in time; the broker will resend them");
        }
        disconnect(&client, &mut eventloop).await;
        report(LinkStatus::Disconnected, Some("stopped".into()));
        tracing::info!(source = %name, "MQTT source stopped");
    }
}

/// Send DISCONNECT (so the broker keeps the session without a will), briefly.
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// FNV-1a, 64 bits: a stable hash for the resend key.
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The unit the store receives for one publish.
fn to_received(config: &MqttSource, name: &Arc<str>, p: &Publish) -> Received {
    let received_at = SystemTime::now();
    let doc = decode(config, &p.topic, &p.payload, received_at);
    let key = format!(
        "mqtt:{name}:{:016x}",
        fnv64(&[p.topic.as_bytes(), &p.payload])
    );
    let device = doc.device.as_deref().map(Arc::from);
    Received {
        source: name.clone(),
        device,
        received_at,
        kind: Kind::Reading,
        bytes: Bytes::from(doc.to_bytes()),
        header: Header {
            message_type: Some("reading".into()),
            sender: doc.device.clone(),
            ..Header::default()
        },
        dedup: Some(Dedup {
            key,
            window: if p.dup { DUP_WINDOW } else { Duration::ZERO },
        }),
        answer: None,
    }
}

/// Await each reply in arrival order; PUBACK the stored ones.
async fn acker(
    mut pending: mpsc::Receiver<Pending>,
    client: AsyncClient,
    gate: Arc<AckGate>,
    submitter: Submitter,
    name: Arc<str>,
) {
    while let Some(item) = pending.recv().await {
        let reply = match item.reply.await {
            Ok(r) => r,
            Err(_) => Reply::Refused {
                reason: crate::RefuseReason::Dropped,
            },
        };
        match reply {
            Reply::Stored { .. } | Reply::Duplicate { .. } => {
                send_ack(&client, &gate, item.generation, &item.publish).await;
            }
            Reply::Refused { reason } => {
                tracing::warn!(source = %name, %reason, "MQTT message not stored; no PUBACK");
                submitter.rejected(name.clone(), Rejection::Refused);
                gate.refused.notify_one();
            }
            Reply::Invalid { reason } => {
                tracing::warn!(source = %name, %reason, "MQTT message not stored; no PUBACK");
                submitter.rejected(name.clone(), Rejection::BadHeader);
                gate.refused.notify_one();
            }
        }
    }
}

/// Hand the PUBACK to rumqttc, unless the connection it belongs to is gone.
async fn send_ack(client: &AsyncClient, gate: &AckGate, generation: u64, publish: &Publish) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        {
            let _held = gate.lock.lock().unwrap_or_else(|p| p.into_inner());
            if gate.generation.load(Ordering::Acquire) != generation {
                return; // stale: the broker resends it on the new connection
            }
            if client.try_ack(publish).is_ok() {
                return;
            }
        }
        // rumqttc's request channel is full (or closed at shutdown).
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
