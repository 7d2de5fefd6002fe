//! The device-reading document: what serial (MEDIBUS, `lines`) and MQTT
//! sources store for one decoded unit (`Kind::Reading`).
//!
//! Design:
//! - **One stored shape for every equipment source**, so the pipeline has
//!   one path for readings (`gateway/src/pipeline/reading.rs`). The driver
//!   does only cheap decoding (frame, checksum, JSON pointer) before the
//!   commit and writes the result here, together with the wire bytes
//!   (`raw`), so a later re-run or an operator can see what came in.
//! - **Undecodable is still stored.** A payload the driver cannot decode is
//!   submitted with no values and `error` set: custody first (the broker
//!   message is PUBACKed after the commit), then the pipeline quarantines it
//!   with that reason.
//! - **Stable wire form.** Field names and value shapes follow the shared
//!   contract (`v: 1`); optional fields are omitted when empty and default
//!   when absent, so older stored documents keep parsing.

use serde::{Deserialize, Serialize};

/// The version written into every document.
pub const READING_VERSION: u32 = 1;

/// One device reading, stored as UTF-8 JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingDoc {
    /// Document version ([`READING_VERSION`]).
    pub v: u32,
    /// The wire protocol: `medibus`, `lines` or `mqtt`.
    pub protocol: String,
    /// The configured or identified device id (an equipment serial, not a patient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where the device is (from the config or an MQTT topic template).
    #[serde(default, skip_serializing_if = "ReadingLocation::is_empty")]
    pub location: ReadingLocation,
    /// RFC 3339 UTC time of the observation: the device's when the protocol
    /// has one, else the receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// The MQTT topic the payload was published on (MQTT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The decoded values (empty when `error` is set).
    #[serde(default)]
    pub values: Vec<ReadingValue>,
    /// Alarms the device reported, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<ReadingAlarm>,
    /// The wire bytes of this unit: as text when valid UTF-8, else lowercase hex.
    #[serde(default)]
    pub raw: String,
    /// How `raw` is written.
    #[serde(default)]
    pub raw_encoding: RawEncoding,
    /// Why the payload could not be decoded; present only when decoding failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a device is. Each part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingLocation {
    /// Ward / point of care, e.g. `ICU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Bed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
}

impl ReadingLocation {
    /// True when no part is known.
    pub fn is_empty(&self) -> bool {
        self.ward.is_none() && self.room.is_none() && self.bed.is_none()
    }
}

/// One measured or reported value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingValue {
    /// The code, e.g. `MDC_PRESS_AWAY_INSP_MAX`, `151817` or `29463-7`.
    pub code: String,
    /// The coding system: `MDC`, `LOINC` or `LOCAL`.
    pub system: String,
    /// The value.
    pub value: Value,
    /// The unit as configured or implied by the protocol (UCUM preferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A short display label, e.g. `PIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A sub-device or channel, when the device has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// A reading's value: a number, a flag or a short text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A flag (e.g. bed occupied).
    Bool(bool),
    /// A finite number.
    Number(f64),
    /// A text value (e.g. a ventilation mode).
    Text(String),
}

/// One alarm a device reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingAlarm {
    /// The alarm's code.
    pub code: String,
    /// Its text as the device sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `high`, `medium` or `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// How [`ReadingDoc::raw`] is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEncoding {
    /// The bytes were valid UTF-8 and are stored as text.
    #[default]
    Utf8,
    /// Lowercase hex digits, two per byte.
    Hex,
}

/// Why stored bytes are not a reading document.
#[derive(Debug, thiserror::Error)]
#[error("not a reading document: {0}")]
pub struct ReadingDocError(#[from] serde_json::Error);

impl ReadingDoc {
    /// An empty document of `protocol` (no values yet).
    pub fn new(protocol: &str) -> ReadingDoc {
        ReadingDoc {
            v: READING_VERSION,
            protocol: protocol.to_owned(),
            device: None,
            location: ReadingLocation::default(),
            observed_at: None,
            topic: None,
            values: Vec::new(),
            alarms: Vec::new(),
            raw: String::new(),
            raw_encoding: RawEncoding::Utf8,
            error: None,
        }
    }

    /// Keep the wire bytes: as text when they are UTF-8, else as hex.
    pub fn set_raw(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.raw = s.to_owned();
                self.raw_encoding = RawEncoding::Utf8;
            }
            Err(_) => {
                self.raw = hex(bytes);
                self.raw_encoding = RawEncoding::Hex;
            }
        }
    }

    /// The wire bytes back from `raw` (`None` when the hex is malformed).
    pub fn raw_bytes(&self) -> Option<Vec<u8>> {
        match self.raw_encoding {
            RawEncoding::Utf8 => Some(self.raw.as_bytes().to_vec()),
            RawEncoding::Hex => unhex(&self.raw),
        }
    }

    /// The stored form: one UTF-8 JSON object.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing this type cannot fail: every map key is a string and
        // non-finite numbers become `null`. Were it ever to fail, the empty
        // result is stored and quarantined as "not a reading document",
        // never lost.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse a stored document.
    ///
    /// # Errors
    /// The bytes are not a JSON object of this shape.
    pub fn from_slice(bytes: &[u8]) -> Result<ReadingDoc, ReadingDocError> {
        Ok(serde_json::from_slice(bytes)?)
    }
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

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| char::from(c).to_digit(16);
            Some(u8::try_from(d(p[0])? * 16 + d(p[1])?).unwrap_or(0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_contract_example() -> Result<(), ReadingDocError> {
        let example = br#"{ "v": 1, "protocol": "mqtt", "device": "EVITA-ICU3-07",
            "location": {"ward": "ICU", "room": "3", "bed": "7"},
            "observed_at": "2026-11-23T17:25:00.123Z", "topic": "hospital/ICU/bed/7/occupancy",
            "values": [ {"code": "MDC_PRESS_AWAY_INSP_MAX", "system": "MDC", "value": 23.5,
                         "unit": "cm[H2O]", "label": "PIP"},
                        {"code": "occupied", "system": "LOCAL", "value": true},
                        {"code": "mode", "system": "LOCAL", "value": "SIMV"} ],
            "alarms": [ {"code": "A1", "text": "apnea", "priority": "high"} ],
            "raw": "{}", "raw_encoding": "utf8" }"#;
        let doc = ReadingDoc::from_slice(example)?;
        assert_eq!(doc.values.len(), 3);
        assert_eq!(doc.values[0].value, Value::Number(23.5));
        assert_eq!(doc.values[1].value, Value::Bool(true));
        assert_eq!(doc.values[2].value, Value::Text("SIMV".into()));
        assert_eq!(doc.location.bed.as_deref(), Some("7"));
        let back = ReadingDoc::from_slice(&doc.to_bytes())?;
        assert_eq!(back, doc);
        Ok(())
    }

    #[test]
    fn raw_is_text_or_hex() {
        let mut d = ReadingDoc::new("lines");
        d.set_raw(b"SPO2=97");
        assert_eq!(d.raw_encoding, RawEncoding::Utf8);
        assert_eq!(d.raw_bytes().as_deref(), Some(&b"SPO2=97"[..]));
        d.set_raw(&[0x01, 0x24, 0xff]);
        assert_eq!(d.raw, "0124ff");
        assert_eq!(d.raw_encoding, RawEncoding::Hex);
        assert_eq!(d.raw_bytes().as_deref(), Some(&[0x01, 0x24, 0xff][..]));
        let json = String::from_utf8(d.to_bytes()).unwrap_or_default();
        assert!(json.contains(r#""raw_encoding":"hex""#), "{json}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(ReadingDoc::from_slice(b"not json").is_err());
        assert!(ReadingDoc::from_slice(b"[1,2]").is_err());
        assert!(ReadingDoc::from_slice(b"").is_err());
    }
}
