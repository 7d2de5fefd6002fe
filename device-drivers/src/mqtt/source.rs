//! The MQTT source's I/O shell: drive rumqttc's event loop, submit every
//! publish as a reading, acknowledge it only after the store's answer, and
//! reconnect with backoff.
//!
//! Design:
//! - **Commit before PUBACK** (architecture.md invariant 1). The session
//!   uses manual acks. Three tasks, in a line:
//!   the *poll loop* drives rumqttc's event loop and hands every publish
//!   to the *feeder*, which queues it for the store in arrival order
//!   ([`Submitter::enqueue`]) and passes the pending answer to the
//!   *acker*, which awaits the answers **in arrival order** (MQTT 3.1.1
//!   §4.6 wants PUBACKs in the order of the PUBLISHes) and sends a PUBACK
//!   only for `Stored` or `Duplicate`. The group commit in the store
//!   writer turns many queued publishes into one fsync, so the in-flight
//!   window the broker allows is what bounds throughput.
//! - **The poll loop never waits** for the store or the acker. The PUBACKs
//!   reach the wire only while it polls rumqttc's event loop; a poll loop
//!   waiting for room in a full queue while the acker waits for room in
//!   rumqttc's request channel is a cycle that stalls the session (each
//!   ack then timed out and the broker resent everything). What it holds
//!   instead is bounded by the broker: at most one unacknowledged publish
//!   per packet id (65,535), and at most [`MAX_UNACKED_BYTES`] of payload;
//!   a broker that sends more than that is disconnected and redelivers.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::{mpsc, Notify};
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
/// Answers the acker may be waiting for, at most (beyond it the feeder
/// waits; the acker always progresses, because the poll loop never waits).
const MAX_PENDING: usize = 8192;
/// rumqttc's request channel (acks and subscribes).
const REQUEST_CAPACITY: usize = 4096;
/// Payload received but not yet acknowledged, at most. A broker keeps its
/// in-flight window far below this (mosquitto: 20 messages by default);
/// one that exceeds it is disconnected and redelivers what was not acked.
pub const MAX_UNACKED_BYTES: usize = 64 * 1024 * 1024;
/// How long the acker retries a PUBACK while rumqttc's request channel is
/// full before it gives the connection up (the broker then redelivers).
const ACK_STALL: Duration = Duration::from_secs(30);
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
    /// The store refused, or an ack could not be handed over: drop the
    /// connection so the broker redelivers.
    refused: Notify,
    /// Payload bytes received and not yet acknowledged (or given up).
    unacked_bytes: AtomicUsize,
}

/// A publish on its way to the store (poll loop → feeder).
struct Incoming {
    generation: u64,
    publish: Publish,
    received: Received,
}

/// A publish whose store answer is awaited (feeder → acker).
struct Pending {
    generation: u64,
    publish: Publish,
    reply: Pin<Box<dyn Future<Output = Reply> + Send>>,
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
        // Unbounded by count, bounded by the broker's window and
        // MAX_UNACKED_BYTES: see "The poll loop never waits".
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel::<Incoming>();
        let (pending_tx, pending_rx) = mpsc::channel::<Pending>(MAX_PENDING);
        let feeding = CancellationToken::new();
        let feeder = tokio::spawn(feeder(
            incoming_rx,
            pending_tx,
            submitter.clone(),
            feeding.clone(),
        ));
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
                    let size = p.payload.len();
                    let unacked = gate.unacked_bytes.fetch_add(size, Ordering::AcqRel) + size;
                    let item = Incoming {
                        generation: gate.generation.load(Ordering::Acquire),
                        received: to_received(&config, &name, &p),
                        publish: p,
                    };
                    if incoming_tx.send(item).is_err() {
                        break; // the feeder ended: nothing can be stored
                    }
                    if unacked > MAX_UNACKED_BYTES {
                        // Handled like any lost connection (below): what
                        // was not acknowledged is delivered again.
                        let error = format!("the broker sent more than {MAX_UNACKED_BYTES} bytes without waiting for acknowledgements; lower its in-flight window (mosquitto: max_inflight_messages)");
                        lost(&gate, &mut eventloop);
                        tracing::warn!(source = %name, broker = %peer, %error, retry_in_ms = backoff.as_millis() as u64, "MQTT connection dropped; reconnecting");
                        report(LinkStatus::Disconnected, Some(error));
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    lost(&gate, &mut eventloop);
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
        // The feeder ends after its current item; the acker after the
        // feeder. Both may need the event loop polled meanwhile (below).
        feeding.cancel();
        drop(incoming_tx);
        let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    ev = eventloop.poll() => if ev.is_err() {
                        // Down: the remaining acks cannot go out; the broker resends.
                        lost(&gate, &mut eventloop);
                        let _ = (&mut acker).await;
                        break;
                    },
                }
            }
        })
        .await;
        feeder.abort();
        if drained.is_err() {
            acker.abort();
            tracing::warn!(source = %name, "MQTT source: pending commits did not finish in time; the broker will resend them");
        }
        disconnect(&client, &mut eventloop).await;
        report(LinkStatus::Disconnected, Some("stopped".into()));
        tracing::info!(source = %name, "MQTT source stopped");
    }
}

/// A connection ended (or is given up): acks queued for it must not reach
/// the next one. See "No ack crosses a reconnect" above.
fn lost(gate: &AckGate, eventloop: &mut EventLoop) {
    let _held = gate.lock.lock().unwrap_or_else(|p| p.into_inner());
    gate.generation.fetch_add(1, Ordering::AcqRel);
    eventloop.clean();
    // The broker redelivers everything unacknowledged; the count restarts
    // with what it sends now. (Answers still pending for the old
    // connection subtract nothing: see `acker`.)
    gate.unacked_bytes.store(0, Ordering::Release);
}

/// Queue each publish for the store in arrival order, and pass the wait for
/// its answer to the acker. Stops taking new publishes when `stop` is
/// cancelled (the broker keeps them); what it queued goes on to the acker.
async fn feeder(
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    pending: mpsc::Sender<Pending>,
    submitter: Submitter,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            item = incoming.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let reply = Box::pin(submitter.enqueue(item.received).await);
        let pending_item = Pending {
            generation: item.generation,
            publish: item.publish,
            reply,
        };
        if pending.send(pending_item).await.is_err() {
            break;
        }
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
        let reply = item.reply.await;
        if gate.generation.load(Ordering::Acquire) == item.generation {
            // Saturating: a reconnect may have reset the count meanwhile.
            let size = item.publish.payload.len();
            let _ = gate
                .unacked_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some(b.saturating_sub(size))
                });
        }
        match reply {
            Reply::Stored { .. } | Reply::Duplicate { .. } => {
                if !send_ack(&client, &gate, item.generation, &item.publish).await {
                    tracing::warn!(source = %name, "MQTT: the PUBACK could not be handed to the client for {} s; reconnecting so the broker delivers again", ACK_STALL.as_secs());
                    gate.refused.notify_one();
                }
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
/// False when rumqttc's request channel stayed full for [`ACK_STALL`] (the
/// ack is given up; the caller drops the connection so the broker resends).
async fn send_ack(
    client: &AsyncClient,
    gate: &AckGate,
    generation: u64,
    publish: &Publish,
) -> bool {
    let deadline = tokio::time::Instant::now() + ACK_STALL;
    loop {
        {
            let _held = gate.lock.lock().unwrap_or_else(|p| p.into_inner());
            if gate.generation.load(Ordering::Acquire) != generation {
                return true; // stale: the broker resends it on the new connection
            }
            if client.try_ack(publish).is_ok() {
                return true;
            }
        }
        // rumqttc's request channel is full (the poll loop drains it) or
        // closed (stopping).
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
