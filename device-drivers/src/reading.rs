//! The device-reading document: what serial (MEDIBUS, `lines`) and MQTT
//! sources store as the bytes of a [`crate::Kind::Reading`] item.
//!
//! One UTF-8 JSON object per wire unit (a MEDIBUS poll cycle, one text line,
//! one MQTT message), written by the driver after its cheap decoding
//! (frame, checksum, key map). The pipeline turns each value into one
//! `observation` event. A unit the driver could not decode is still stored
//! with no values and [`ReadingDoc::error`] set, so it is quarantined with
//! that reason rather than lost. `raw` is for the local store and review
//! only: the pipeline never copies it into an event.
//!
//! The shape is shared with the MQTT source (the reading contract in the
//! project notes); keep the field names and their serde form stable.

use serde::{Deserialize, Serialize};

/// The version written in `v`.
pub const READING_VERSION: u32 = 1;

/// One reading set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingDoc {
    /// Document version, [`READING_VERSION`].
    pub v: u32,
    /// `medibus`, `lines` or `mqtt`.
    pub protocol: String,
    /// The configured device id, or what the device said it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where the device is, as configured.
    #[serde(default, skip_serializing_if = "Location::is_empty")]
    pub location: Location,
    /// RFC 3339 UTC; the device's time when the protocol has one, else
    /// when the unit was complete on the wire.
    pub observed_at: String,
    /// The MQTT topic (MQTT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The decoded values (empty when `error` is set).
    #[serde(default)]
    pub values: Vec<ReadingValue>,
    /// Alarms the device reported with this unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<ReadingAlarm>,
    /// The wire bytes of this unit: text when valid UTF-8, else lowercase hex.
    pub raw: String,
    /// `utf8` or `hex`: how `raw` is written.
    pub raw_encoding: String,
    /// Why the unit could not be decoded; present only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `location`: each part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Ward, e.g. `ICU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Bed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
}

impl Location {
    /// True when no part is set.
    pub fn is_empty(&self) -> bool {
        self.ward.is_none() && self.room.is_none() && self.bed.is_none()
    }
}

/// One value of a reading set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingValue {
    /// The code, e.g. `MDC_PRESS_AWAY_INSP_PEAK`.
    pub code: String,
    /// `MDC`, `LOINC` or `LOCAL`.
    pub system: String,
    /// The value.
    pub value: Value,
    /// UCUM unit, when the quantity has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A short label for people, e.g. `PIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Sub-device or channel, e.g. `setting` for a ventilator setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// A number, a text or a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean (e.g. bed occupied).
    Bool(bool),
    /// A number.
    Number(f64),
    /// A text (e.g. a ventilation mode).
    Text(String),
}

/// One alarm reported by the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingAlarm {
    /// The device's alarm code.
    pub code: String,
    /// Its text.
    pub text: String,
    /// `high`, `medium` or `low`.
    pub priority: String,
}

impl ReadingDoc {
    /// An empty document of `protocol` observed at `observed_at`, carrying `raw`.
    pub fn new(protocol: &str, observed_at: String, raw: &[u8]) -> Self {
        let (raw, raw_encoding) = encode_raw(raw);
        Self {
            v: READING_VERSION,
            protocol: protocol.to_owned(),
            device: None,
            location: Location::default(),
            observed_at,
            topic: None,
            values: Vec::new(),
            alarms: Vec::new(),
            raw,
            raw_encoding: raw_encoding.to_owned(),
            error: None,
        }
    }

    /// The document as the bytes of a [`crate::Received`].
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail (string keys, no maps
        // of non-string keys); an empty vector would be quarantined, not lost.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse stored bytes.
    ///
    /// # Errors
    /// The bytes are not a reading document.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `raw` and `raw_encoding` for some wire bytes.
pub fn encode_raw(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (hex(bytes), "hex"),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T17:25:00.123Z`.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let mut doc = ReadingDoc::new("medibus", "2026-11-23T17:25:00.123Z".into(), b"\x01$ok");
        doc.device = Some("EVITA-1".into());
        doc.location.bed = Some("7".into());
        doc.values.push(ReadingValue {
            code: "MDC_PRESS_AWAY_END_EXP_POS".into(),
            system: "MDC".into(),
            value: Value::Number(5.0),
            unit: Some("mbar".into()),
            label: Some("PEEP".into()),
            channel: None,
        });
        let bytes = doc.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(text.contains(r#""v":1"#), "{text}");
        assert!(text.contains(r#""location":{"bed":"7"}"#), "{text}");
        assert!(text.contains(r#""value":5.0"#), "{text}");
        assert!(!text.contains("error"), "{text}");
        assert_eq!(ReadingDoc::from_slice(&bytes).ok(), Some(doc));
    }

    #[test]
    fn raw_is_hex_when_not_utf8() {
        assert_eq!(encode_raw(b"ab"), ("ab".to_owned(), "utf8"));
        assert_eq!(encode_raw(&[0xff, 0x01]), ("ff01".to_owned(), "hex"));
    }

    #[test]
    fn time_format() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(at), "2026-11-18T11:06:40.123Z");
    }
}
