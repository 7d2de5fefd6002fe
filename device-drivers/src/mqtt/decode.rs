//! MQTT payload → [`ReadingDoc`] (pure): the topic's mapping, its
//! placeholders, and the payload read as JSON (by pointer), a number or a
//! flag.
//!
//! Never fails: a payload that cannot be decoded gives a document with no
//! values and `error` set, which is stored (custody) and quarantined by the
//! pipeline with that reason (reading contract).

use std::time::SystemTime;

use time::OffsetDateTime;
use wardlink_config::{Capture, MqttPayload, MqttSource, MqttTopic, MqttValue};

use crate::reading::{ReadingDoc, ReadingValue, Value};

/// The protocol name written into documents.
pub const PROTOCOL: &str = "mqtt";

pub use crate::reading::rfc3339;

/// The first topic mapping of `source` that matches `topic`.
pub fn find_topic<'s>(source: &'s MqttSource, topic: &str) -> Option<&'s MqttTopic> {
    source.topics.iter().find(|t| t.matches(topic).is_some())
}

/// Decode one message of `source` published on `topic`.
pub fn decode(
    source: &MqttSource,
    topic: &str,
    payload: &[u8],
    received_at: SystemTime,
) -> ReadingDoc {
    let mut doc = ReadingDoc::new(PROTOCOL);
    doc.topic = Some(topic.to_owned());
    doc.set_raw(payload);
    let Some(mapping) = find_topic(source, topic) else {
        doc.error = Some(format!(
            "topic {topic:?} matches no [[source.mqtt.topic]] of source {:?}",
            source.name
        ));
        return doc;
    };
    for (capture, level) in mapping.matches(topic).unwrap_or_default() {
        let v = Some(level.to_owned());
        match capture {
            Capture::Ward => doc.location.ward = v,
            Capture::Room => doc.location.room = v,
            Capture::Bed => doc.location.bed = v,
            Capture::Device => doc.device = v,
        }
    }
    let result = match mapping.payload {
        MqttPayload::Number => plain_number(payload).map(|x| vec![value(&mapping.values, x)]),
        MqttPayload::Boolean => plain_bool(payload).map(|b| vec![value(&mapping.values, b)]),
        MqttPayload::Json => json(mapping, payload, &mut doc),
    };
    match result {
        Ok(values) => doc.values = values.into_iter().flatten().collect(),
        Err(e) => doc.error = Some(e),
    }
    if doc.observed_at.is_none() {
        doc.observed_at = Some(rfc3339(received_at));
    }
    doc
}

fn value(values: &[MqttValue], v: impl Into<Value>) -> Option<ReadingValue> {
    let m = values.first()?;
    Some(reading_value(m, v.into()))
}

fn reading_value(m: &MqttValue, value: Value) -> ReadingValue {
    ReadingValue {
        code: m.code.clone(),
        system: m.system.clone(),
        value,
        unit: m.unit.clone(),
        label: m.label.clone(),
        channel: None,
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Number(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

fn text(payload: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(payload)
        .map(str::trim)
        .map_err(|_| format!("payload of {} bytes is not UTF-8 text", payload.len()))
}

fn plain_number(payload: &[u8]) -> Result<f64, String> {
    let t = text(payload)?;
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("payload {:?} is not a number", clip(t))),
    }
}

fn parse_flag(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

fn plain_bool(payload: &[u8]) -> Result<bool, String> {
    let t = text(payload)?;
    parse_flag(t).ok_or_else(|| {
        format!(
            "payload {:?} is not a flag (true/false, 1/0, on/off, yes/no)",
            clip(t)
        )
    })
}

/// At most 32 characters of a payload for an error message.
fn clip(t: &str) -> String {
    let mut s: String = t.chars().take(32).collect();
    if t.chars().count() > 32 {
        s.push('…');
    }
    s
}

fn json(
    mapping: &MqttTopic,
    payload: &[u8],
    doc: &mut ReadingDoc,
) -> Result<Vec<Option<ReadingValue>>, String> {
    let root: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    if let Some(p) = &mapping.device_pointer {
        match root.pointer(p) {
            Some(serde_json::Value::String(s)) => doc.device = Some(s.clone()),
            Some(serde_json::Value::Number(n)) => doc.device = Some(n.to_string()),
            Some(_) => return Err(format!("device at {p} is not a string or number")),
            None => return Err(format!("JSON pointer {p} (device) not found")),
        }
    }
    if let Some(p) = &mapping.observed_at_pointer {
        doc.observed_at = Some(match root.pointer(p) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => {
                let ms = n
                    .as_i64()
                    .ok_or_else(|| format!("time at {p} is not whole milliseconds"))?;
                let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|_| format!("time at {p} is out of range"))?;
                rfc3339(t.into())
            }
            Some(_) => return Err(format!("time at {p} is not a string or number")),
            None => return Err(format!("JSON pointer {p} (time) not found")),
        });
    }
    let mut out = Vec::with_capacity(mapping.values.len());
    for m in &mapping.values {
        let p = m.pointer.as_deref().unwrap_or("");
        let v = match root.pointer(p) {
            None => return Err(format!("JSON pointer {p} not found")),
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() => Value::Number(x),
                _ => return Err(format!("value at {p} is not a finite number")),
            },
            Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
            Some(serde_json::Value::String(s)) => {
                // Many sensors send numbers as strings.
                match s.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => Value::Number(x),
                    _ => Value::Text(s.clone()),
                }
            }
            Some(serde_json::Value::Null) => {
                return Err(format!("value at {p} is null"));
            }
            Some(_) => return Err(format!("value at {p} is an object or array, not a value")),
        };
        out.push(Some(reading_value(m, v)));
    }
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const CONFIG: &str = r#"
[[source.mqtt]]
name = "beds"
url = "mqtt://127.0.0.1:1883"
[[source.mqtt.topic]]
filter = "hospital/{ward}/bed/{bed}/occupancy"
payload = "boolean"
code = "bed-occupied"
[[source.mqtt.topic]]
filter = "hospital/{ward}/bed/{bed}/weight"
payload = "number"
code = "29463-7"
system = "LOINC"
unit = "kg"
[[source.mqtt.topic]]
filter = "hospital/{ward}/bed/{bed}/vitals"
payload = "json"
device_pointer = "/sensor"
observed_at_pointer = "/ts"
[[source.mqtt.topic.value]]
pointer = "/hr"
code = "MDC_PULS_OXIM_PULS_RATE"
system = "MDC"
unit = "/min"
[[source.mqtt.topic.value]]
pointer = "/mode"
code = "mode"
"#;

    fn source() -> MqttSource {
        wardlink_config::from_toml_str(CONFIG, "t")
            .unwrap()
            .sources
            .mqtt
            .remove(0)
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_454_700_123)
    }

    #[test]
    fn plain_flag_and_number_with_location_from_the_topic() {
        let s = source();
        let d = decode(&s, "hospital/ICU/bed/7/occupancy", b"true", at());
        assert_eq!(d.error, None);
        assert_eq!(d.values[0].value, Value::Bool(true));
        assert_eq!(d.values[0].code, "bed-occupied");
        assert_eq!(d.location.ward.as_deref(), Some("ICU"));
        assert_eq!(d.location.bed.as_deref(), Some("7"));
        assert_eq!(d.observed_at.as_deref(), Some("2026-11-23T17:25:00.123Z"));
        let d = decode(&s, "hospital/ICU/bed/7/weight", b" 81.5\n", at());
        assert_eq!(d.values[0].value, Value::Number(81.5));
        assert_eq!(d.values[0].unit.as_deref(), Some("kg"));
    }

    #[test]
    fn json_by_pointer_with_device_and_time() {
        let s = source();
        let d = decode(
            &s,
            "hospital/W2/bed/12/vitals",
            br#"{"sensor":"BS-0042","ts":1795454600000,"hr":"72","mode":"resting"}"#,
            at(),
        );
        assert_eq!(d.error, None, "{d:?}");
        assert_eq!(d.device.as_deref(), Some("BS-0042"));
        assert_eq!(d.observed_at.as_deref(), Some("2026-11-23T17:23:20.000Z"));
        assert_eq!(d.values[0].value, Value::Number(72.0));
        assert_eq!(d.values[1].value, Value::Text("resting".into()));
        assert!(d.raw.contains("BS-0042"));
    }

    #[test]
    fn undecodable_payloads_carry_the_reason() {
        let s = source();
        let cases: [(&str, &[u8], &str); 6] = [
            ("hospital/ICU/bed/7/occupancy", b"maybe", "not a flag"),
            ("hospital/ICU/bed/7/weight", b"heavy", "not a number"),
            ("hospital/ICU/bed/7/vitals", b"{not json", "not JSON"),
            (
                "hospital/ICU/bed/7/vitals",
                br#"{"sensor":"x","ts":1,"mode":"a"}"#,
                "/hr not found",
            ),
            ("hospital/ICU/bed/7/vitals", b"\xff\xfe", "not JSON"),
            ("somewhere/else", b"1", "matches no"),
        ];
        for (topic, payload, want) in cases {
            let d = decode(&s, topic, payload, at());
            let e = d.error.clone().unwrap_or_default();
            assert!(e.contains(want), "{topic} {payload:?}: {e}");
            assert!(d.values.is_empty());
            assert_eq!(d.raw_bytes().as_deref(), Some(payload));
            // The stored form parses back.
            assert_eq!(ReadingDoc::from_slice(&d.to_bytes()).unwrap(), d);
        }
    }
}
