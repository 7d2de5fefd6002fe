//! Device readings (`Kind::Reading`: serial MEDIBUS and `lines`, MQTT) →
//! `observation` events, or quarantine.
//!
//! Design:
//! - **One event per value.** A stored [`ReadingDoc`] becomes one
//!   `observation` per entry of `values` (and one per alarm), sharing the
//!   envelope (source, hashed id, receive time). The mapping to event fields
//!   is documented in `docs/data-dictionary.md` ("Device readings").
//! - **The same rules as HL7.** Plausibility ranges by code and unit
//!   (`validate::VITALS`; MDC reference ids such as `MDC_PULS_OXIM_SAT_O2`
//!   are looked up by their numeric code), unit mapping to UCUM, and the
//!   timestamp checks (`TS_FUTURE`, `TS_TOO_OLD`) on `observed_at`.
//! - **The same de-identification as HL7**, through the profile's OBX and
//!   PV1 rows: the device id is treated like OBX-18 (a `D1-` pseudonym by
//!   default), ward/room/bed like PV1-3.1/.2/.3 (ward kept as a code, room
//!   and bed `L1-` pseudonyms keyed exactly like HL7 locations, so a bed
//!   seen in ADT and on MQTT gets the same pseudonym when ward, room and bed
//!   are spelled alike), text values like OBX-5 of type ST (scrubbed), the
//!   time like OBX-14 (date policy). Readings carry no patient identifiers,
//!   and `raw` (the wire bytes) is never copied into an event.
//! - **Quarantine** when the stored bytes are not a reading document
//!   (`READING_INVALID`), when the driver could not decode the payload
//!   (`READING_UNDECODABLE`, with the driver's `error` as the reason), or
//!   when there is nothing to report (`READING_EMPTY`).

use wardlink_devices::reading::{ReadingDoc, Value};
use wardlink_sync::{Body, Code, Event, Issue, Location, ObservationBody, Text, SCHEMA_VERSION};

use super::deidentify::{normalize_device_id, shared_text, Deid, Loc};
use super::hl7::{hash64, Message, Ts};
use super::normalize::ucum;
use super::pseudonym::IdKind;
use super::validate::{self, issue, TimeLimits};
use super::{epoch_secs, quarantine, Outcome, Pipeline, RawMessage};

/// MDC reference ids → context-free codes for the codes that have
/// plausibility ranges (`protocols/ihe-pcd01.md` §3), sorted by reference id
/// (a test checks) for binary search.
const REF_IDS: &[(&str, &str)] = &[
    ("MDC_AWAY_CO2_ET", "151728"),
    ("MDC_BLD_PERF_INDEX", "150488"),
    ("MDC_BLD_PULS_RATE_INV", "149522"),
    ("MDC_CONC_AWAY_CO2_ET", "151708"),
    ("MDC_CONC_AWAY_O2", "151908"),
    ("MDC_CONC_AWAY_O2_INSP", "152196"),
    ("MDC_ECG_HEART_RATE", "147842"),
    ("MDC_MASS_BODY_ACTUAL", "188736"),
    ("MDC_PRESS_AWAY_END_EXP_POS", "151804"),
    ("MDC_PRESS_AWAY_END_EXP_POS_INTRINSIC", "151808"),
    ("MDC_PRESS_AWAY_END_EXP_POS_TOTAL", "152788"),
    ("MDC_PRESS_AWAY_INSP_MAX", "151817"),
    ("MDC_PRESS_AWAY_INSP_MEAN", "151819"),
    ("MDC_PRESS_BLD_ART_ABP_DIA", "150038"),
    ("MDC_PRESS_BLD_ART_ABP_MEAN", "150039"),
    ("MDC_PRESS_BLD_ART_ABP_SYS", "150037"),
    ("MDC_PRESS_BLD_ART_DIA", "150034"),
    ("MDC_PRESS_BLD_ART_MEAN", "150035"),
    ("MDC_PRESS_BLD_ART_SYS", "150033"),
    ("MDC_PRESS_BLD_NONINV_DIA", "150022"),
    ("MDC_PRESS_BLD_NONINV_MEAN", "150023"),
    ("MDC_PRESS_BLD_NONINV_SYS", "150021"),
    ("MDC_PRESS_BLD_VEN_CENT_MEAN", "150087"),
    ("MDC_PRESS_CUFF_DIA", "150302"),
    ("MDC_PRESS_CUFF_MEAN", "150303"),
    ("MDC_PRESS_CUFF_SYS", "150301"),
    ("MDC_PRESS_RESP_PLAT", "151784"),
    ("MDC_PULS_OXIM_PULS_RATE", "149530"),
    ("MDC_PULS_OXIM_SAT_O2", "150456"),
    ("MDC_PULS_RATE_NON_INV", "149546"),
    ("MDC_RESP_RATE", "151562"),
    ("MDC_TEMP", "150344"),
    ("MDC_TEMP_AXIL", "188496"),
    ("MDC_TEMP_BODY", "150364"),
    ("MDC_VENT_PRESS_AWAY_END_EXP_POS", "151976"),
    ("MDC_VENT_PRESS_AWAY_MAX", "151973"),
    ("MDC_VENT_PRESS_AWAY_MEAN", "151975"),
    ("MDC_VENT_PRESS_RESP_PLAT", "152424"),
    ("MDC_VENT_RESP_BTSD_PSAZC_RATE", "152490"),
    ("MDC_VENT_RESP_BTSD_P_RATE", "152498"),
    ("MDC_VENT_RESP_RATE", "151586"),
    ("MDC_VENT_VOL_MINUTE_AWAY", "152008"),
    ("MDC_VENT_VOL_TIDAL", "151980"),
    ("MDC_VOL_AWAY_TIDAL", "151868"),
    ("MDC_VOL_MINUTE_AWAY", "151880"),
    ("MDC_VOL_MINUTE_AWAY_EXP", "151884"),
];

/// The plausibility entry for a reading's code: numeric MDC or LOINC codes
/// directly, MDC reference ids through [`REF_IDS`].
fn vital_of(code: &str) -> Option<&'static validate::Vital> {
    validate::vital(code).or_else(|| {
        REF_IDS
            .binary_search_by(|(r, _)| (*r).cmp(code))
            .ok()
            .and_then(|i| REF_IDS.get(i))
            .and_then(|(_, n)| validate::vital(n))
    })
}

/// An RFC 3339 time as an HL7 timestamp in UTC (millisecond precision).
fn rfc3339_to_hl7(s: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?
        .to_offset(time::UtcOffset::UTC);
    let hl7 = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}.{:03}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    Some(hl7)
}

/// An empty HL7 message: [`Deid`] wants one for its per-message dictionary,
/// and a reading has no HL7 fields whose values could leak into free text.
const NO_MESSAGE: &str = "MSH|^~\\&|";

impl Pipeline {
    /// Turns one stored reading into `observation` events, or quarantine.
    /// Deterministic for the same keys; never panics.
    pub fn process_reading(&self, raw: &RawMessage<'_>) -> Outcome {
        let doc = match ReadingDoc::from_slice(raw.bytes) {
            Ok(d) => d,
            Err(e) => {
                return quarantine(vec![issue("READING_INVALID", None, e.to_string())]);
            }
        };
        if let Some(err) = &doc.error {
            return quarantine(vec![issue(
                "READING_UNDECODABLE",
                doc.topic.clone(),
                format!("{} payload could not be decoded: {err}", doc.protocol),
            )]);
        }
        if doc.values.is_empty() && doc.alarms.is_empty() {
            return quarantine(vec![issue(
                "READING_EMPTY",
                doc.topic.clone(),
                format!("{} reading has no values and no alarms", doc.protocol),
            )]);
        }
        let Ok(msg) = Message::parse(NO_MESSAGE) else {
            return quarantine(vec![issue(
                "READING_INVALID",
                None,
                "internal: empty message did not parse",
            )]);
        };
        let mut deid = Deid::new(
            &self.profile,
            &self.keys,
            self.settings.date_policy,
            &msg,
            false,
        );
        let device_raw = doc
            .device
            .as_deref()
            .map(normalize_device_id)
            .filter(|d| !d.is_empty());
        // The date subject: the device when known, else the source (as for
        // HL7 messages without a patient).
        let subject = match &device_raw {
            Some(d) => self.keys.pseudonym(IdKind::Device, &[d]),
            None => format!("source:{}", raw.source),
        };
        deid.set_subject(&subject);

        let received = epoch_secs(raw.received_at);
        let limits = TimeLimits {
            received,
            future_skew: i64::try_from(self.settings.max_future_skew.as_secs())
                .unwrap_or(i64::MAX / 4),
            max_age: i64::try_from(self.settings.max_age.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let mut issues: Vec<Issue> = Vec::new();
        let observed = match doc.observed_at.as_deref() {
            None => None,
            Some(s) => match rfc3339_to_hl7(s) {
                None => {
                    issues.push(issue(
                        "TS_INVALID",
                        Some("observed_at".into()),
                        "observed_at is not an RFC 3339 time",
                    ));
                    None
                }
                Some(hl7) => validate::timestamp(
                    &hl7,
                    || "observed_at".to_owned(),
                    "TS_INVALID",
                    &limits,
                    true,
                    &mut issues,
                ),
            },
        };
        let observed_at = deid.date(Loc::field("OBX", 14), observed.as_ref());
        let device = device_raw
            .as_deref()
            .and_then(|d| deid.ident(Loc::field("OBX", 18), IdKind::Device, &[d], d));
        let location = {
            let l = &doc.location;
            let ward = l.ward.as_deref().unwrap_or("");
            let room = l.room.as_deref().unwrap_or("");
            let bed = l.bed.as_deref().unwrap_or("");
            let pl = Loc::field("PV1", 3);
            let loc = Location {
                facility: None,
                ward: deid.text_str(pl.comp(1), ward).filter(|s| !s.is_empty()),
                room: deid.ident(pl.comp(2), IdKind::Location, &["", ward, room], room),
                bed: deid.ident(pl.comp(3), IdKind::Location, &["", ward, room, bed], bed),
            };
            (!loc.is_empty()).then(|| std::sync::Arc::new(loc))
        };
        let source = Text::from(raw.source);
        let received_ms = raw
            .received_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let control_id_hash = Text::from(self.keys.pseudonym(
            IdKind::Control,
            &[
                "reading",
                raw.source,
                &received_ms.to_string(),
                &format!("{:016x}", hash64(&String::from_utf8_lossy(raw.bytes))),
            ],
        ));
        let received_at = Text::from(deid.received(&Ts::from_epoch_utc(received)));
        let blank = |code: Code| ObservationBody {
            code,
            value_type: None,
            value_num: None,
            value_code: None,
            value_text: None,
            unit: None,
            unit_sent: None,
            reference_range: None,
            abnormal_flags: Vec::new(),
            result_status: None,
            observed_at: observed_at.clone(),
            sub_id: None,
            device: device.clone(),
            device_mds: None,
            device_vmd: None,
            device_channel: None,
            location: location.clone(),
            panel: None,
        };
        let mut bodies: Vec<(ObservationBody, Vec<Issue>)> = Vec::new();
        for (i, v) in doc.values.iter().enumerate() {
            let mut own = Vec::new();
            let label = |n: usize| match n {
                6 => format!("values[{i}].unit"),
                _ => format!("values[{i}].value"),
            };
            let code = v.code.trim();
            if code.is_empty() {
                issues.push(issue(
                    "OBX_CODE_MISSING",
                    Some(format!("values[{i}].code")),
                    "reading value has no code",
                ));
                continue;
            }
            let mut body = blank(Code {
                code: shared_text(code),
                system: Some(shared_text(v.system.trim())).filter(|s| !s.is_empty()),
                display: v
                    .label
                    .as_deref()
                    .and_then(|l| deid.text_str(Loc::field("OBX", 3).comp(2), l)),
            });
            let unit = v.unit.as_deref().map(str::trim).filter(|u| !u.is_empty());
            body.unit = unit
                .and_then(|u| ucum(u, "", "UCUM"))
                .map(|u| shared_text(&u));
            body.unit_sent = unit.and_then(|u| deid.text_str(Loc::field("OBX", 6), u));
            body.sub_id = v
                .channel
                .as_deref()
                .and_then(|c| deid.text_str(Loc::field("OBX", 4), c));
            match &v.value {
                Value::Number(x) if x.is_finite() => {
                    body.value_type = Some(shared_text("NM"));
                    let base = Loc::field("OBX", 5).vt("NM");
                    if deid.action(&base).0 == super::Action::Keep {
                        body.value_num = Some(*x);
                    } else {
                        body.value_text = deid.text_str(base, &x.to_string());
                    }
                    if let Some(vital) = vital_of(code) {
                        validate::check_value(vital, *x, body.unit.as_deref(), label, &mut own);
                    }
                }
                Value::Number(_) => {
                    own.push(issue(
                        "NM_NOT_NUMERIC",
                        Some(label(5)),
                        "numeric value is not finite; kept as missing",
                    ));
                    body.value_type = Some(shared_text("NM"));
                }
                Value::Bool(b) => {
                    body.value_type = Some(shared_text("BOOL"));
                    body.value_num = Some(if *b { 1.0 } else { 0.0 });
                }
                Value::Text(t) => {
                    body.value_type = Some(shared_text("ST"));
                    body.value_text = deid.text_str(Loc::field("OBX", 5).vt("ST"), t);
                }
            }
            bodies.push((body, own));
        }
        for a in &doc.alarms {
            let code = a.code.trim();
            if code.is_empty() {
                continue;
            }
            let mut body = blank(Code {
                code: shared_text(code),
                system: Some(shared_text("ALARM")),
                display: None,
            });
            body.value_type = Some(shared_text("ST"));
            body.value_text = a
                .text
                .as_deref()
                .and_then(|t| deid.text_str(Loc::field("OBX", 5).vt("ST"), t));
            if let Some(p) = a.priority.as_deref().map(str::trim) {
                if matches!(p, "high" | "medium" | "low") {
                    body.abnormal_flags.push(shared_text(p));
                }
            }
            bodies.push((body, Vec::new()));
        }
        if bodies.is_empty() {
            issues.push(issue(
                "READING_EMPTY",
                doc.topic.clone(),
                "no value of the reading has a code",
            ));
            return quarantine(issues);
        }
        let events = bodies
            .into_iter()
            .map(|(body, own)| {
                let mut all = issues.clone();
                all.extend(own);
                Event {
                    schema: SCHEMA_VERSION,
                    source: source.clone(),
                    control_id_hash: control_id_hash.clone(),
                    received_at: received_at.clone(),
                    quality: validate::quality(&all),
                    issues: all,
                    patient: None,
                    patient_network: None,
                    encounter: None,
                    body: Body::Observation(body),
                }
            })
            .collect();
        Outcome::Events {
            events,
            new_encounters: Vec::new(),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use wardlink_devices::reading::{ReadingAlarm, ReadingLocation, ReadingValue};
    use wardlink_sync::Severity;

    use super::*;
    use crate::pipeline::{PipelineSettings, SiteKeys};

    fn pipeline() -> Pipeline {
        Pipeline::new(
            PipelineSettings::default(),
            SiteKeys::from_secrets(&[7; 32], None),
        )
        .unwrap()
    }

    /// 2026-11-23T17:25:00Z
    fn received() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_454_700)
    }

    fn value(code: &str, system: &str, v: Value, unit: Option<&str>) -> ReadingValue {
        ReadingValue {
            code: code.into(),
            system: system.into(),
            value: v,
            unit: unit.map(Into::into),
            label: None,
            channel: None,
        }
    }

    fn doc() -> ReadingDoc {
        let mut d = ReadingDoc::new("mqtt");
        d.device = Some("BEDSENSE-0042".into());
        d.location = ReadingLocation {
            ward: Some("ICU".into()),
            room: None,
            bed: Some("7".into()),
        };
        d.observed_at = Some("2026-11-23T17:24:59.500Z".into());
        d.topic = Some("hospital/ICU/bed/7/vitals".into());
        d.values = vec![
            value(
                "MDC_PULS_OXIM_SAT_O2",
                "MDC",
                Value::Number(97.0),
                Some("%"),
            ),
            value("occupied", "LOCAL", Value::Bool(true), None),
            value("29463-7", "LOINC", Value::Number(72.5), Some("kg")),
        ];
        d.set_raw(br#"{"spo2":97}"#);
        d
    }

    fn run(d: &ReadingDoc) -> Outcome {
        let bytes = d.to_bytes();
        pipeline().process_reading(&RawMessage {
            id: 1,
            source: "beds",
            received_at: received(),
            bytes: &bytes,
            charset_hint: None,
        })
    }

    fn events(o: Outcome) -> Vec<Event> {
        match o {
            Outcome::Events { events, .. } => events,
            Outcome::Quarantine { reason, .. } => panic!("quarantined: {reason}"),
        }
    }

    fn obs(e: &Event) -> &ObservationBody {
        match &e.body {
            Body::Observation(o) => o,
            other => panic!("not an observation: {other:?}"),
        }
    }

    #[test]
    fn ref_ids_sorted_for_binary_search() {
        assert!(REF_IDS.windows(2).all(|w| w[0].0 < w[1].0));
        for (_, n) in REF_IDS {
            assert!(validate::vital(n).is_some(), "{n} has no range");
        }
    }

    #[test]
    fn one_observation_per_value_with_device_and_location_deidentified() {
        let ev = events(run(&doc()));
        assert_eq!(ev.len(), 3);
        let spo2 = obs(&ev[0]);
        assert_eq!(&*spo2.code.code, "MDC_PULS_OXIM_SAT_O2");
        assert_eq!(spo2.value_num, Some(97.0));
        assert_eq!(spo2.unit.as_deref(), Some("%"));
        assert!(spo2.device.as_deref().unwrap().starts_with("D1-"));
        let loc = spo2.location.as_deref().unwrap();
        assert_eq!(loc.ward.as_deref(), Some("ICU"));
        assert!(loc.bed.as_deref().unwrap().starts_with("L1-"));
        assert!(spo2.observed_at.is_some());
        assert_eq!(ev[0].quality, 100);
        let occ = obs(&ev[1]);
        assert_eq!(occ.value_type.as_deref(), Some("BOOL"));
        assert_eq!(occ.value_num, Some(1.0));
        assert_eq!(obs(&ev[2]).value_num, Some(72.5));
        // Nothing of the wire bytes or the device serial travels.
        let json = serde_json::to_string(&ev).unwrap();
        assert!(!json.contains("BEDSENSE"), "{json}");
        assert!(!json.contains("spo2"), "{json}");
        // Deterministic.
        assert_eq!(events(run(&doc())), ev);
    }

    #[test]
    fn implausible_value_and_wrong_unit_lower_quality() {
        let mut d = doc();
        d.values[0].value = Value::Number(140.0);
        d.values[2].unit = Some("furlong".into());
        let ev = events(run(&d));
        assert_eq!(ev[0].issues[0].code, "VALUE_IMPLAUSIBLE");
        assert_eq!(ev[0].quality, 80);
        assert_eq!(ev[1].quality, 100);
        assert_eq!(ev[2].issues[0].code, "UNIT_UNEXPECTED");
    }

    #[test]
    fn future_time_is_flagged_on_every_event() {
        let mut d = doc();
        d.observed_at = Some("2026-11-23T19:00:00Z".into());
        let ev = events(run(&d));
        assert!(ev
            .iter()
            .all(|e| e.issues.iter().any(|i| i.code == "TS_FUTURE")));
        d.observed_at = Some("yesterday".into());
        let ev = events(run(&d));
        assert!(ev
            .iter()
            .all(|e| e.issues.iter().any(|i| i.code == "TS_INVALID")));
    }

    #[test]
    fn undecodable_empty_and_garbage_are_quarantined_with_reason() {
        let mut d = ReadingDoc::new("mqtt");
        d.error = Some("JSON pointer /hr not found".into());
        match run(&d) {
            Outcome::Quarantine { reason, issues } => {
                assert!(reason.starts_with("READING_UNDECODABLE"), "{reason}");
                assert!(reason.contains("/hr not found"), "{reason}");
                assert_eq!(issues[0].severity, Severity::Fatal);
            }
            other => panic!("{other:?}"),
        }
        let d = ReadingDoc::new("lines");
        match run(&d) {
            Outcome::Quarantine { reason, .. } => assert!(reason.starts_with("READING_EMPTY")),
            other => panic!("{other:?}"),
        }
        let o = pipeline().process_reading(&RawMessage {
            id: 1,
            source: "beds",
            received_at: received(),
            bytes: b"\xff\x00garbage",
            charset_hint: None,
        });
        match o {
            Outcome::Quarantine { reason, .. } => assert!(reason.starts_with("READING_INVALID")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_values_and_alarms_are_scrubbed() {
        let mut d = doc();
        d.values = vec![value(
            "mode",
            "LOCAL",
            Value::Text("call 9876543210".into()),
            None,
        )];
        d.alarms = vec![ReadingAlarm {
            code: "APNEA".into(),
            text: Some("apnea".into()),
            priority: Some("high".into()),
        }];
        let ev = events(run(&d));
        assert_eq!(ev.len(), 2);
        let json = serde_json::to_string(&ev).unwrap();
        assert!(!json.contains("9876543210"), "{json}");
        assert_eq!(obs(&ev[1]).abnormal_flags, vec![Text::from("high")]);
    }

    #[test]
    fn never_panics_on_truncations() {
        let bytes = doc().to_bytes();
        let p = pipeline();
        for n in 0..bytes.len() {
            let _ = p.process_reading(&RawMessage {
                id: 1,
                source: "beds",
                received_at: received(),
                bytes: &bytes[..n],
                charset_hint: None,
            });
        }
    }
}
