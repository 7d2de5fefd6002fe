//! `wardlink tap` for an MQTT source: subscribe with a separate client id and
//! a clean session, decode each message exactly as the source would, and
//! hand it to the caller. Nothing is stored, and the daemon's persistent
//! session is not touched (its queued messages stay queued for it).

use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use tokio_util::sync::CancellationToken;
use wardlink_config::MqttSource;

use super::decode::decode;
use super::options::{peer, tap_options, OptionsError};
use crate::reading::ReadingDoc;

/// What `tap` reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TapEvent {
    /// Connected (and subscribed) to the broker.
    Connected {
        /// The broker.
        peer: String,
    },
    /// The connection failed or dropped; tap retries every second.
    Disconnected {
        /// Why.
        error: String,
    },
    /// One message, decoded as the source would store it.
    Message {
        /// The topic.
        topic: String,
        /// The payload as received.
        payload: Vec<u8>,
        /// The decoded reading (with `error` when undecodable).
        reading: Box<ReadingDoc>,
    },
}

/// Tap `source` until `stop` is cancelled, calling `on_event` for each event.
///
/// # Errors
/// The source's password or TLS files cannot be read or used.
pub async fn tap(
    source: &MqttSource,
    stop: CancellationToken,
    mut on_event: impl FnMut(TapEvent),
) -> Result<(), OptionsError> {
    let options = tap_options(source)?;
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let filters: Vec<SubscribeFilter> = source
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.subscription.clone(), QoS::AtLeastOnce))
        .collect();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe_many(filters.clone());
                on_event(TapEvent::Connected { peer: peer(source) });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let reading = Box::new(decode(source, &p.topic, &p.payload, SystemTime::now()));
                on_event(TapEvent::Message {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    reading,
                });
            }
            Ok(_) => {}
            Err(e) => {
                on_event(TapEvent::Disconnected {
                    error: e.to_string(),
                });
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    Ok(())
}
