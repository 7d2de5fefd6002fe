//! Behaviour of the whole pipeline on small hand-written messages.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::time::{Duration, SystemTime};

use wardlink_sync::{AdtAction, Body, Event};

use super::*;

fn received() -> SystemTime {
    // 2024-05-31T06:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_135_200)
}

fn pipeline_with(overrides: &[(&str, &str)]) -> Pipeline {
    let overrides = overrides
        .iter()
        .map(|(k, a)| FieldOverride::parse(k, a).unwrap())
        .collect();
    Pipeline::new(
        PipelineSettings {
            overrides,
            ..PipelineSettings::default()
        },
        SiteKeys::from_secrets(&[11; 32], None),
    )
    .unwrap()
}

fn run(p: &Pipeline, bytes: &[u8]) -> Vec<Event> {
    let raw = RawMessage {
        id: 1,
        source: "unit",
        received_at: received(),
        bytes,
        charset_hint: None,
    };
    match p.process(&raw, &NoHistory) {
        Outcome::Events { events, .. } => events,
        Outcome::Quarantine { reason, .. } => panic!("{reason}"),
    }
}

const A02: &str = "MSH|^~\\&|HIS|HOSP|WL|EDGE|20240531100000+0530||ADT^A02^ADT_A02|T1|P|2.5.1\r\
EVN|A02|20240531100500+0530||||20240531100000+0530\r\
PID|1||555^^^HOSP^MR||RAO^LAKSHMI||19300115|F|||7 Temple St^^Chennai^TN^600004^IND\r\
PV1|1|I|ICU2^R4^B9^HOSP||||||||MED\r";

fn adt_of(e: &Event) -> &AdtBody {
    match &e.body {
        Body::Adt(a) => a,
        other => panic!("not adt: {other:?}"),
    }
}

use wardlink_sync::AdtBody;

#[test]
fn a02_transfer_with_locations_age_and_postal_prefix() {
    let text = A02.replace(
        "PV1|1|I|ICU2^R4^B9^HOSP||||||||MED",
        "PV1|1|I|ICU2^R4^B9^HOSP|||WARD5^R1^B2^HOSP|||||MED",
    );
    let ev = run(&pipeline_with(&[]), text.as_bytes());
    let a = adt_of(&ev[0]);
    assert_eq!(a.action, AdtAction::Transfer);
    assert_eq!(a.location.as_ref().unwrap().ward.as_deref(), Some("ICU2"));
    assert_eq!(
        a.prior_location.as_ref().unwrap().ward.as_deref(),
        Some("WARD5")
    );
    assert!(a
        .location
        .as_ref()
        .unwrap()
        .bed
        .as_deref()
        .unwrap()
        .starts_with("L1-"));
    assert_eq!(a.age.as_deref(), Some("90+"));
    assert_eq!(a.postal_prefix.as_deref(), Some("600"));
    assert_eq!(a.state.as_deref(), Some("TN"));
    assert_eq!(a.sex.as_deref(), Some("F"));
    assert!(
        a.event_at.as_deref().unwrap().ends_with("T10:00:00+05:30"),
        "EVN-6 wins over EVN-2"
    );
    let json = serde_json::to_string(&ev).unwrap();
    for secret in [
        "RAO", "LAKSHMI", "Temple", "Chennai", "600004", "1930", "555",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn site_overrides_change_single_fields() {
    let p = pipeline_with(&[
        ("PID-11.5", "remove"),
        ("PV1-3.3", "keep"),
        ("PID-7", "remove"),
    ]);
    let ev = run(&p, A02.as_bytes());
    let a = adt_of(&ev[0]);
    assert_eq!(a.postal_prefix, None);
    assert_eq!(a.location.as_ref().unwrap().bed.as_deref(), Some("B9"));
    assert_eq!(a.age, None);
    assert!(Pipeline::new(
        PipelineSettings {
            overrides: vec![FieldOverride {
                field: "PID5".into(),
                action: Action::Keep
            }],
            ..PipelineSettings::default()
        },
        SiteKeys::from_secrets(&[1; 32], None)
    )
    .is_err());
}

#[test]
fn other_messages_are_deidentified_segment_by_segment() {
    let orm = "MSH|^~\\&|HIS|HOSP|LIS|LAB|20240531100000+0530||ORM^O01|O1|P|2.5.1\r\
PID|1||555^^^HOSP^MR~2345 6789 0124^^^UIDAI^AADHAAR~91-1234-5678-9012^^^ABDM^ABHA||RAO^LAKSHMI||19800115|F\r\
ORC|NW|PL-778899^HIS|||||||20240531100000+0530|||9999^SHARMA^ANIL\r\
OBR|1|PL-778899^HIS||2345-7^Glucose^LN|||20240531095000+0530|||||Patient fasting since night, called Lakshmi\r\
ZPI|1|555|LAKSHMI|ICU2|free text here\r";
    let ev = run(&pipeline_with(&[]), orm.as_bytes());
    assert_eq!(ev.len(), 1);
    let Body::Hl7Other(o) = &ev[0].body else {
        panic!("not other")
    };
    assert_eq!(o.message_type, "ORM^O01");
    let seg = |id: &str| o.segments.iter().find(|s| s.id == id).unwrap();
    let pid = seg("PID");
    assert!(pid.fields[2].starts_with("P1-"), "{:?}", pid.fields);
    assert_eq!(
        pid.fields[2].matches("P1-").count(),
        1,
        "national ids are not pseudonymized, they are dropped"
    );
    assert_eq!(
        pid.fields.get(4).map(String::as_str).unwrap_or(""),
        "",
        "name removed"
    );
    let orc = seg("ORC");
    assert!(orc.fields[1].starts_with("O1-"), "{:?}", orc.fields);
    assert!(
        orc.fields.len() < 12 || orc.fields[11].is_empty(),
        "ordering provider removed"
    );
    let obr = seg("OBR");
    assert_eq!(obr.fields[3], "2345-7^Glucose^LN");
    let zpi = seg("ZPI");
    assert_eq!(
        zpi.fields,
        ["1", "", "", "ICU2"],
        "codes only; MRN, name and text removed"
    );
    let json = serde_json::to_string(&ev).unwrap();
    for secret in [
        "RAO", "LAKSHMI", "Lakshmi", "SHARMA", "778899", "9999", "fasting",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
    // The same patient has the same pseudonym as in an ADT event.
    let adt = run(&pipeline_with(&[]), A02.as_bytes());
    assert_eq!(
        adt[0].patient.as_deref(),
        Some(pid.fields[2].trim_end_matches('~'))
    );
}

#[test]
fn short_text_values_are_scrubbed_and_latin1_is_decoded() {
    let mut msg = b"MSH|^~\\&|LAB|HOSP|||20240531100000+0530||ORU^R01|L1|P|2.5.1|||||8859/1\r\
PID|||77^^^HOSP^MR||N\xc1\xd1EZ^JOS\xc9\r\
OBR|1|||NOTE^Note^L\r"
        .to_vec();
    msg.extend_from_slice(b"OBX|1|ST|C^Comment^L||Jos\xe9 N\xe1\xf1ez Aadhaar 2345 6789 0124 call 9845012345||||||F\r");
    msg.extend_from_slice(b"OBX|2|NM|8867-4^Heart rate^LN||88|/min^^UCUM|||||F\r");
    let ev = run(&pipeline_with(&[]), &msg);
    assert_eq!(ev.len(), 2);
    let Body::Observation(o) = &ev[0].body else {
        panic!()
    };
    assert_eq!(
        o.value_text.as_deref(),
        Some("[NAME] [NAME] Aadhaar [AADHAAR] call [PHONE]")
    );
    assert!(ev[0].issues.iter().any(|i| i.code == "CHARSET_FALLBACK"));
    let Body::Observation(o) = &ev[1].body else {
        panic!()
    };
    assert_eq!(o.value_num, Some(88.0));
    assert_eq!(o.unit.as_deref(), Some("/min"));
}

#[test]
fn v27_truncation_character_and_lf_segments() {
    let msg = "MSH|^~\\&#|MON|ICU|||20240531100000+0530||ORU^R01^ORU_R01|X|P|2.7\n\
OBR|1\n\
OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R\n";
    let ev = run(&pipeline_with(&[]), msg.as_bytes());
    let Body::Observation(o) = &ev[0].body else {
        panic!()
    };
    assert_eq!(&*o.code.code, "150456");
    assert_eq!(o.value_num, Some(97.0));
    assert_eq!(o.unit.as_deref(), Some("%"));
    assert!(ev[0].issues.is_empty(), "{:?}", ev[0].issues);
}

#[test]
fn oru_without_values_falls_back_to_hl7_other() {
    let msg = "MSH|^~\\&|MON|ICU|||20240531100000+0530||ORU^R01^ORU_R01|X|P|2.6\r\
OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X\r";
    let ev = run(&pipeline_with(&[]), msg.as_bytes());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].type_name(), "hl7_other");
}

#[test]
fn explanation_names_the_rule_and_the_result() {
    let p = pipeline_with(&[("PID-11.5", "remove")]);
    let raw = RawMessage {
        id: 1,
        source: "unit",
        received_at: received(),
        bytes: A02.as_bytes(),
        charset_hint: None,
    };
    let ex = p.explain(&raw, &NoHistory);
    let t = ex.to_string();
    assert!(t.contains("site override PID-11.5"), "{t}");
    assert!(ex
        .all_fields
        .iter()
        .any(|f| f.field == "PID[1]-5" && f.action == Action::Remove && f.result == "(removed)"));
    assert!(!t.contains("LAKSHMI") && !t.contains("600004"));
    assert!(default_profile_text().contains("PID-3"));
}
