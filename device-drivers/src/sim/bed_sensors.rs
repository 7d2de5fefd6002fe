//! Bed sensors publishing to MQTT: occupancy mats, bed scales and bedside
//! vital-sign sensors of one ward, for tests, benchmarks and
//! `wardlink simulate bed-sensors`.
//!
//! The generator ([`BedSensors`]) is pure and deterministic for a seed and
//! start time. Topics follow `hospital/<ward>/bed/<bed>/<kind>`:
//! - `occupancy`: `true` / `false` (plain flag; a bed changes now and then);
//! - `weight`: the patient's weight in kg as a plain number (`81.4`);
//! - `vitals`: JSON `{"sensor":"BS-ICU-03","seq":17,"ts":"2026-…Z","hr":72,
//!   "spo2":97,"rr":16}`; `seq` counts every message of the run, so tests
//!   can account for each one.
//!
//! [`source_config`] is the matching `[[source.mqtt]]` (printed by
//! `wardlink simulate bed-sensors --print-config`). [`publish`] sends them at
//! QoS 1 with rumqttc and counts the broker's PUBACKs.

use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::mqtt::decode::rfc3339;

/// What one message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// Bed occupancy mat.
    Occupancy,
    /// Bed scale.
    Weight,
    /// Vital-sign sensor (JSON).
    Vitals,
}

/// The generator: every call to [`BedSensors::next_message`] gives the next
/// bed's next reading, round-robin over beds and kinds.
#[derive(Debug, Clone)]
pub struct BedSensors {
    ward: String,
    beds: u32,
    rng: u64,
    seq: u64,
    start: SystemTime,
    occupied: Vec<bool>,
    kinds: Vec<SensorKind>,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorMessage {
    /// Topic, e.g. `hospital/ICU/bed/3/vitals`.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// The run's sequence number (1-based).
    pub seq: u64,
}

impl BedSensors {
    /// `beds` beds (at least 1) of `ward`, seeded with `seed`, starting now.
    pub fn new(ward: &str, beds: u32, seed: u64) -> BedSensors {
        let beds = beds.max(1);
        BedSensors {
            ward: ward.to_owned(),
            beds,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            seq: 0,
            start: SystemTime::now(),
            occupied: (0..beds).map(|b| b % 5 != 4).collect(),
            kinds: vec![
                SensorKind::Vitals,
                SensorKind::Occupancy,
                SensorKind::Vitals,
                SensorKind::Weight,
            ],
        }
    }

    /// Only these kinds (e.g. only `Vitals`, whose `seq` tests can count).
    pub fn with_kinds(mut self, kinds: &[SensorKind]) -> BedSensors {
        if !kinds.is_empty() {
            self.kinds = kinds.to_vec();
        }
        self
    }

    /// Start the simulated clock at `start` (deterministic output).
    pub fn with_start(mut self, start: SystemTime) -> BedSensors {
        self.start = start;
        self
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn around(&mut self, mid: f64, spread: f64) -> f64 {
        let r = (self.rand() % 10_000) as f64 / 10_000.0;
        mid + (r * 2.0 - 1.0) * spread
    }

    /// The next message.
    pub fn next_message(&mut self) -> SensorMessage {
        self.seq += 1;
        let n = self.seq - 1;
        let bed = (n % u64::from(self.beds)) as u32 + 1;
        let kind_i = ((n / u64::from(self.beds)) % self.kinds.len() as u64) as usize;
        let kind = self
            .kinds
            .get(kind_i)
            .copied()
            .unwrap_or(SensorKind::Vitals);
        let idx = (bed - 1) as usize;
        // One reading per bed per simulated second.
        let at = self.start + Duration::from_millis(n * 1000 / u64::from(self.beds));
        let (name, payload) = match kind {
            SensorKind::Occupancy => {
                if self.rand().is_multiple_of(20) {
                    if let Some(o) = self.occupied.get_mut(idx) {
                        *o = !*o;
                    }
                }
                let occ = self.occupied.get(idx).copied().unwrap_or(true);
                ("occupancy", occ.to_string().into_bytes())
            }
            SensorKind::Weight => {
                let w = 55.0 + f64::from(bed % 7) * 6.5 + self.around(0.0, 0.3);
                ("weight", format!("{w:.1}").into_bytes())
            }
            SensorKind::Vitals => {
                let hr = self.around(78.0, 14.0).round();
                let spo2 = self.around(96.5, 2.5).round().min(100.0);
                let rr = self.around(16.0, 4.0).round();
                let json = format!(
                    r#"{{"sensor":"BS-{}-{:02}","seq":{},"ts":"{}","hr":{hr},"spo2":{spo2},"rr":{rr}}}"#,
                    self.ward,
                    bed,
                    self.seq,
                    rfc3339(at)
                );
                ("vitals", json.into_bytes())
            }
        };
        SensorMessage {
            topic: format!("hospital/{}/bed/{bed}/{name}", self.ward),
            payload,
            seq: self.seq,
        }
    }
}

/// The `[[source.mqtt]]` that decodes these sensors (TOML).
pub fn source_config(name: &str, url: &str) -> String {
    format!(
        r#"[[source.mqtt]]
name = "{name}"
url = "{url}"

[[source.mqtt.topic]]
filter = "hospital/{{ward}}/bed/{{bed}}/occupancy"
payload = "boolean"
code = "bed-occupied"
label = "bed occupied"

[[source.mqtt.topic]]
filter = "hospital/{{ward}}/bed/{{bed}}/weight"
payload = "number"
code = "29463-7"
system = "LOINC"
unit = "kg"
label = "body weight"

[[source.mqtt.topic]]
filter = "hospital/{{ward}}/bed/{{bed}}/vitals"
payload = "json"
device_pointer = "/sensor"
observed_at_pointer = "/ts"
[[source.mqtt.topic.value]]
pointer = "/hr"
code = "MDC_PULS_RATE_NON_INV"
system = "MDC"
unit = "/min"
label = "HR"
[[source.mqtt.topic.value]]
pointer = "/spo2"
code = "MDC_PULS_OXIM_SAT_O2"
system = "MDC"
unit = "%"
label = "SpO2"
[[source.mqtt.topic.value]]
pointer = "/rr"
code = "MDC_RESP_RATE"
system = "MDC"
unit = "/min"
label = "RR"
[[source.mqtt.topic.value]]
pointer = "/seq"
code = "sim-seq"
label = "simulator sequence number"
"#
    )
}

/// Why publishing stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker could not be reached or dropped the connection.
    #[error("broker {peer}: {reason}")]
    Broker {
        /// `host:port`.
        peer: String,
        /// What happened.
        reason: String,
    },
}

/// Publish `count` messages (0 = until `stop`) from `sensors` to the broker
/// at `host:port`, at most `rate` per second (0 = as fast as the broker
/// acknowledges), QoS 1. Returns how many the broker acknowledged.
/// `on_message` sees each message as it is handed to the client.
///
/// # Errors
/// The broker cannot be reached, or the connection drops.
pub async fn publish(
    host: &str,
    port: u16,
    sensors: &mut BedSensors,
    count: u64,
    rate: f64,
    stop: CancellationToken,
    mut on_message: impl FnMut(&SensorMessage),
) -> Result<u64, PublishError> {
    let peer = format!("{host}:{port}");
    let broker = |reason: String| PublishError::Broker {
        peer: peer.clone(),
        reason,
    };
    // At most WINDOW messages are unacknowledged, so the request channel
    // (larger than WINDOW) never fills and `publish` below never waits
    // while this task is the one that must poll the event loop.
    const WINDOW: u64 = 200;
    let mut options = MqttOptions::new(
        format!("wardlink-sim-{}", std::process::id()),
        host.to_owned(),
        port,
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(WINDOW as u16);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let mut next_at = tokio::time::Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut stopping = false;
    loop {
        if (count > 0 && acked >= count) || (stopping && acked >= sent) {
            break;
        }
        let may_send = !stopping && (count == 0 || sent < count) && sent - acked < WINDOW;
        let wait = tokio::time::sleep_until(next_at);
        tokio::select! {
            () = stop.cancelled(), if !stopping => stopping = true,
            () = wait, if may_send => {
                let m = sensors.next_message();
                on_message(&m);
                client
                    .publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                    .await
                    .map_err(|e| broker(e.to_string()))?;
                sent += 1;
                if let Some(i) = interval {
                    next_at += i;
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => return Err(broker(e.to_string())),
            },
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    Ok(acked)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::mqtt::decode::decode;

    #[test]
    fn every_message_decodes_with_the_matching_config() {
        let cfg =
            wardlink_config::from_toml_str(&source_config("beds", "mqtt://127.0.0.1:1883"), "t")
                .unwrap()
                .sources
                .mqtt
                .remove(0);
        let mut s = BedSensors::new("ICU", 6, 1);
        let mut kinds = std::collections::HashSet::new();
        for i in 1..=48 {
            let m = s.next_message();
            assert_eq!(m.seq, i);
            let d = decode(&cfg, &m.topic, &m.payload, SystemTime::now());
            assert_eq!(d.error, None, "{m:?}");
            assert_eq!(d.location.ward.as_deref(), Some("ICU"));
            kinds.insert(m.topic.rsplit('/').next().unwrap().to_owned());
        }
        assert_eq!(kinds.len(), 3);
        let mut v = BedSensors::new("W2", 2, 1).with_kinds(&[SensorKind::Vitals]);
        assert!(v.next_message().topic.ends_with("/vitals"));
        assert!(v.next_message().topic.ends_with("/vitals"));
    }
}
