//! Every validation rule (docs/validation-rules.md) has a test that fires it
//! and one that does not (issue 3).
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, SystemTime};

use wardlink::pipeline::validate::RULES;
use wardlink::pipeline::{
    NoHistory, Outcome, Pipeline, PipelineContext, PipelineSettings, RawMessage, SiteKeys,
};

/// 2024-05-31T06:00:00Z = 11:30 in India, 90 minutes after the messages' times.
fn received() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_135_200)
}

const ADT: &str = "MSH|^~\\&|HIS|HOSP|WL|EDGE|20240531100000+0530||ADT^A01^ADT_A01|C1|P|2.5.1|||AL|NE||UNICODE UTF-8\r\
EVN|A01|20240531100000+0530|||||20240531095500+0530\r\
PID|1||12345^^^HOSP^MR~91-1234-5678-9012^^^ABDM^ABHA~2345 6789 0124^^^UIDAI^AADHAAR||DOE^JOHN||19800101|M|||1 Main Road^^Bengaluru^KA^560034^IND\r\
PV1|1|I|W1^R1^B1^HOSP|||||||MED|||||||||V1^^^HOSP^VN|||||||||||||||||||||||||20240531095500+0530\r";

const ORU: &str = "MSH|^~\\&|MON^0012AB0000000001^EUI-64|ICU|||20240531100000+0530||ORU^R01^ORU_R01|M1|P|2.6|||NE|AL||UNICODE UTF-8\r\
PID|||12345^^^HOSP^MR||DOE^JANE|||F\r\
PV1||I|ICU3^R1^B2^HOSP||||||||||||||||V9^^^HOSP^VN\r\
OBR|1|1^MON||182777000^monitoring of patient^SCT|||20240531100000+0530\r\
OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||0012AB0000000001^^0012AB0000000001^EUI-64\r\
OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|N|||R|||20240531100000+0530\r\
OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|97|262688^MDC_DIM_PERCENT^MDC|||||R|||20240531100000+0530\r";

struct Knows(Vec<String>);

impl PipelineContext for Knows {
    fn encounter_known(&self, e: &str) -> bool {
        self.0.iter().any(|k| k == e)
    }
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        PipelineSettings::default(),
        SiteKeys::from_secrets(&[9; 32], None),
    )
    .unwrap()
}

fn codes_with(bytes: &[u8], ctx: &dyn PipelineContext) -> Vec<String> {
    let raw = RawMessage {
        id: 1,
        source: "rules",
        received_at: received(),
        bytes,
        charset_hint: None,
    };
    match pipeline().process(&raw, ctx) {
        Outcome::Quarantine { issues, .. } => issues.into_iter().map(|i| i.code).collect(),
        Outcome::Events { events, .. } => events
            .into_iter()
            .flat_map(|e| e.issues)
            .map(|i| i.code)
            .collect(),
    }
}

fn codes(text: &str) -> Vec<String> {
    codes_with(text.as_bytes(), &NoHistory)
}

/// Replaces exactly one occurrence (so a typo in a test fails loudly).
fn edit(base: &str, from: &str, to: &str) -> String {
    assert_eq!(base.matches(from).count(), 1, "{from:?} must occur once");
    base.replacen(from, to, 1)
}

macro_rules! rule {
    ($name:ident, $code:literal, fires: $fire:expr, clean: $clean:expr $(,)?) => {
        mod $name {
            use super::*;

            #[test]
            fn fires() {
                let c: Vec<String> = $fire;
                assert!(
                    c.iter().any(|x| x == $code),
                    "{} did not fire: {c:?}",
                    $code
                );
            }

            #[test]
            fn does_not_fire() {
                let c: Vec<String> = $clean;
                assert!(!c.iter().any(|x| x == $code), "{} fired: {c:?}", $code);
            }
        }
    };
}

#[test]
fn base_messages_are_clean() {
    let raw = |t: &'static str| RawMessage {
        id: 1,
        source: "rules",
        received_at: received(),
        bytes: t.as_bytes(),
        charset_hint: None,
    };
    for t in [ADT, ORU] {
        match pipeline().process(&raw(t), &Knows(vec![])) {
            Outcome::Events { events, .. } => {
                for e in events {
                    assert!(e.issues.is_empty(), "{:?}", e.issues);
                    assert_eq!(e.quality, 100);
                }
            }
            Outcome::Quarantine { reason, .. } => panic!("{reason}"),
        }
    }
}

#[test]
fn every_rule_has_a_test_here() {
    let me = include_str!("pipeline_rules.rs");
    for r in RULES {
        assert!(
            me.contains(&format!(", \"{}\",", r.code)),
            "no test for {}",
            r.code
        );
    }
}

rule!(no_msh, "HL7_NO_MSH", fires: codes("PID|1||x\rPV1|1|I"), clean: codes(ADT));
rule!(bad_delimiters, "HL7_BAD_DELIMITERS", fires: codes(&edit(ADT, "MSH|^~\\&|", "MSH|^^\\&|")), clean: codes(ADT));
rule!(msh9_missing, "MSH9_MISSING", fires: codes(&edit(ADT, "ADT^A01^ADT_A01", "")), clean: codes(ADT));
rule!(msh10_missing, "MSH10_MISSING", fires: codes(&edit(ADT, "|C1|", "||")), clean: codes(ADT));
rule!(segment_required_missing, "SEGMENT_REQUIRED_MISSING",
    fires: codes(&ADT[..ADT.find("PV1").unwrap()]),
    clean: codes(ADT));
rule!(msh12_invalid, "MSH12_INVALID", fires: codes(&edit(ADT, "|2.5.1|", "|3.0|")), clean: codes(ADT));
rule!(trigger_unknown, "TRIGGER_UNKNOWN", fires: codes(&edit(ADT, "ADT^A01^", "ADT^Z99^")), clean: codes(ADT));
rule!(segment_order, "SEGMENT_ORDER",
    fires: {
        let pid = &ADT[ADT.find("PID").unwrap()..ADT.find("PV1").unwrap()];
        let pv1 = &ADT[ADT.find("PV1").unwrap()..];
        codes(&format!("{}{pv1}{pid}", &ADT[..ADT.find("PID").unwrap()]))
    },
    clean: codes(ADT));
rule!(segment_id_invalid, "SEGMENT_ID_INVALID", fires: codes(&format!("{ADT}hello world\r")), clean: codes(ADT));
rule!(content_before_msh, "CONTENT_BEFORE_MSH", fires: codes(&format!("garbage line\r{ADT}")), clean: codes(&format!("FHS|^~\\&\rBHS|^~\\&\r{ADT}")));
rule!(charset_fallback, "CHARSET_FALLBACK",
    fires: codes_with(&[ADT.as_bytes(), b"NTE|1||x\xE9\r"].concat(), &NoHistory),
    clean: codes(&format!("{ADT}NTE|1||x\u{e9}\r")));
rule!(charset_unsupported, "CHARSET_UNSUPPORTED", fires: codes(&edit(ADT, "UNICODE UTF-8", "ISO IR87")), clean: codes(&edit(ADT, "UNICODE UTF-8", "8859/1")));
rule!(escape_invalid, "ESCAPE_INVALID", fires: codes(&edit(ADT, "DOE^JOHN", "DO\\Q\\E^JOHN")), clean: codes(&edit(ADT, "DOE^JOHN", "DO\\T\\E^JOHN")));
rule!(msh7_invalid, "MSH7_INVALID", fires: codes(&edit(ADT, "|20240531100000+0530||ADT", "|2024-05-31||ADT")), clean: codes(ADT));
rule!(ts_invalid, "TS_INVALID", fires: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|notatime|")), clean: codes(ADT));
rule!(ts_future, "TS_FUTURE", fires: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|20250101000000+0530|")),
    clean: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|20240531113200+0530|")));
rule!(ts_too_old, "TS_TOO_OLD", fires: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|20200101000000+0530|")), clean: codes(ADT));
rule!(ts_no_zone, "TS_NO_ZONE", fires: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|20240531100000|")),
    clean: codes(&edit(ADT, "EVN|A01|20240531100000+0530|", "EVN|A01|20240531|")));
rule!(obx_code_missing, "OBX_CODE_MISSING", fires: codes(&format!("{ORU}OBX|4|NM||1.1.1.3|5|%|||||R\r")), clean: codes(ORU));
rule!(obx_value_type_unknown, "OBX_VALUE_TYPE_UNKNOWN", fires: codes(&edit(ORU, "OBX|3|NM|", "OBX|3|QQ|")), clean: codes(ORU));
rule!(nm_not_numeric, "NM_NOT_NUMERIC", fires: codes(&edit(ORU, "|1.1.1.2|97|", "|1.1.1.2|abc|")), clean: codes(&edit(ORU, "|1.1.1.2|97|", "|1.1.1.2||")));
rule!(unit_missing, "UNIT_MISSING", fires: codes(&edit(ORU, "|97|262688^MDC_DIM_PERCENT^MDC|", "|97||")), clean: codes(ORU));
rule!(unit_unexpected, "UNIT_UNEXPECTED", fires: codes(&edit(ORU, "|97|262688^MDC_DIM_PERCENT^MDC|", "|97|266016^MDC_DIM_MMHG^MDC|")),
    clean: codes(&edit(ORU, "|97|262688^MDC_DIM_PERCENT^MDC|", "|97|%^percent^UCUM|")));
rule!(value_implausible, "VALUE_IMPLAUSIBLE", fires: codes(&edit(ORU, "|1.1.1.2|97|", "|1.1.1.2|150|")), clean: codes(&edit(ORU, "|1.1.1.2|97|", "|1.1.1.2|100|")));
rule!(obx_sub_id_duplicate, "OBX_SUB_ID_DUPLICATE", fires: codes(&edit(ORU, "|1.1.1.2|97|", "|1.1.1.1|97|")),
    clean: codes(&format!("{ORU}OBR|2|2^MON||182777000^monitoring of patient^SCT|||20240531100000+0530\rOBX|4|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|70|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r")));
rule!(result_status_invalid, "RESULT_STATUS_INVALID", fires: codes(&edit(ORU, "|50-120|N|||R|", "|50-120|N|||Q|")), clean: codes(ORU));
rule!(abnormal_flag_invalid, "ABNORMAL_FLAG_INVALID", fires: codes(&edit(ORU, "|50-120|N|||R|", "|50-120|ZZ|||R|")), clean: codes(&edit(ORU, "|50-120|N|||R|", "|50-120|H~HH|||R|")));
rule!(patient_class_invalid, "PATIENT_CLASS_INVALID", fires: codes(&edit(ADT, "PV1|1|I|", "PV1|1|Q|")), clean: codes(&edit(ADT, "PV1|1|I|", "PV1|1|E|")));
rule!(sex_invalid, "SEX_INVALID", fires: codes(&edit(ADT, "|19800101|M|", "|19800101|Q|")), clean: codes(&edit(ADT, "|19800101|M|", "|19800101|F|")));
rule!(patient_id_missing, "PATIENT_ID_MISSING",
    fires: codes(&edit(ADT, "12345^^^HOSP^MR~91-1234-5678-9012^^^ABDM^ABHA~2345 6789 0124^^^UIDAI^AADHAAR", "")),
    clean: codes(&edit(ADT, "12345^^^HOSP^MR~", "")));
rule!(encounter_missing, "ENCOUNTER_MISSING",
    fires: codes(&edit(&edit(ADT, "^VN|||||||||||||||||||||||||20240531095500+0530\r", "^VN\r"), "V1^^^HOSP^VN", "")),
    clean: codes(&edit(ADT, "V1^^^HOSP^VN", "")));
rule!(encounter_unknown, "ENCOUNTER_UNKNOWN",
fires: codes(&edit(&edit(ADT, "ADT^A01^", "ADT^A02^"), "EVN|A01|", "EVN|A02|")),
clean: {
    // The same transfer after an admit of that encounter: the A01's new
    // encounter is what the store remembers.
    let raw = RawMessage { id: 1, source: "rules", received_at: received(), bytes: ADT.as_bytes(), charset_hint: None };
    let Outcome::Events { new_encounters, .. } = pipeline().process(&raw, &NoHistory) else { panic!("quarantined") };
    assert_eq!(new_encounters.len(), 1);
    let a02 = edit(&edit(ADT, "ADT^A01^", "ADT^A02^"), "EVN|A01|", "EVN|A02|");
    codes_with(a02.as_bytes(), &Knows(new_encounters))
});
rule!(aadhaar_invalid, "AADHAAR_INVALID", fires: codes(&edit(ADT, "2345 6789 0124^", "2345 6789 0125^")), clean: codes(ADT));
rule!(abha_invalid, "ABHA_INVALID", fires: codes(&edit(ADT, "91-1234-5678-9012^", "12-34^")), clean: codes(&edit(ADT, "91-1234-5678-9012^", "ravi.kumar@abdm^")));
rule!(pin_invalid, "PIN_INVALID", fires: codes(&edit(ADT, "^560034^IND", "^56003^IND")), clean: codes(&edit(ADT, "^560034^IND", "^56003^USA")));
rule!(dob_in_future, "DOB_IN_FUTURE", fires: codes(&edit(ADT, "|19800101|", "|20240601|")), clean: codes(ADT));

#[test]
fn fatal_issues_quarantine_with_a_reason() {
    let bad = edit(ADT, "|C1|", "||");
    let raw = RawMessage {
        id: 7,
        source: "rules",
        received_at: received(),
        bytes: bad.as_bytes(),
        charset_hint: None,
    };
    match pipeline().process(&raw, &NoHistory) {
        Outcome::Quarantine { reason, issues } => {
            assert!(reason.starts_with("MSH10_MISSING"), "{reason}");
            assert!(!issues.is_empty());
        }
        other => panic!("not quarantined: {other:?}"),
    }
}

#[test]
fn quality_follows_the_formula() {
    // One error (VALUE_IMPLAUSIBLE) on the SpO2 row only: 80 there, 100 elsewhere.
    let text = edit(ORU, "|1.1.1.2|97|", "|1.1.1.2|150|");
    let raw = RawMessage {
        id: 1,
        source: "rules",
        received_at: received(),
        bytes: text.as_bytes(),
        charset_hint: None,
    };
    let Outcome::Events { events, .. } = pipeline().process(&raw, &NoHistory) else {
        panic!("quarantined")
    };
    let q: Vec<u8> = events.iter().map(|e| e.quality).collect();
    assert_eq!(q, [100, 80]);
}

#[test]
fn validation_rules_doc_lists_every_rule_with_its_severity() {
    let doc = include_str!("../../docs/validation-rules.md");
    for r in RULES {
        let row = format!("| `{}` | {} |", r.code, r.severity.as_str());
        assert!(doc.contains(&row), "docs/validation-rules.md lacks {row}");
    }
}

fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                keys(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        _ => {}
    }
}

#[test]
fn data_dictionary_documents_every_exported_field() {
    let doc = include_str!("../../docs/data-dictionary.md");
    let a03 = edit(
        &edit(&edit(ADT, "ADT^A01^", "ADT^A03^"), "EVN|A01|", "EVN|A03|"),
        "PV1|1|I|W1^R1^B1^HOSP|||",
        "PV1|1|I|W1^R1^B1^HOSP|||W2^R2^B2^HOSP",
    );
    let a40 = format!(
        "{}MRG|999^^^HOSP^MR\r",
        edit(&edit(ADT, "ADT^A01^", "ADT^A40^"), "EVN|A01|", "EVN|A40|")
    );
    let orm = "MSH|^~\\&|HIS|HOSP|LIS|LAB|20240531100000+0530||ORM^O01|O1|P|2.5.1\rORC|NW|1^HIS\r";
    let oru = format!("{ORU}OBX|4|CWE|8517-7^Finding^LN|1.1.1.3|POS^Positive^L||||||F\rOBX|5|ST|X^Mode^L|1.1.1.4|VC\r");
    let mut all = Vec::new();
    for t in [a03.as_str(), a40.as_str(), orm, oru.as_str()] {
        let raw = RawMessage {
            id: 1,
            source: "doc",
            received_at: received(),
            bytes: t.as_bytes(),
            charset_hint: None,
        };
        let Outcome::Events { events, .. } = pipeline().process(&raw, &NoHistory) else {
            panic!("quarantined")
        };
        let v = serde_json::to_value(&events).unwrap();
        keys(&v, &mut all);
    }
    all.sort();
    all.dedup();
    for k in &all {
        assert!(
            doc.contains(&format!("`{k}`")),
            "docs/data-dictionary.md lacks `{k}`"
        );
    }
    assert!(all.len() > 40, "{all:?}");
}

/// Device readings (`Kind::Reading`, issue 5): the issue codes of one
/// reading document run through the reading path.
fn reading_codes(doc: &str) -> Vec<String> {
    let raw = RawMessage {
        id: 1,
        source: "rules",
        received_at: received(),
        bytes: doc.as_bytes(),
        charset_hint: None,
    };
    match pipeline().process_reading(&raw) {
        Outcome::Quarantine { issues, .. } => issues.into_iter().map(|i| i.code).collect(),
        Outcome::Events { events, .. } => events
            .into_iter()
            .flat_map(|e| e.issues)
            .map(|i| i.code)
            .collect(),
    }
}

const READING: &str = r#"{"v":1,"protocol":"mqtt","device":"BED-1","observed_at":"2024-05-31T05:59:00Z","values":[{"code":"MDC_PULS_OXIM_SAT_O2","system":"MDC","value":97,"unit":"%"}],"raw":"97","raw_encoding":"utf8"}"#;

rule!(reading_invalid, "READING_INVALID", fires: reading_codes("{not json"), clean: reading_codes(READING));
rule!(reading_undecodable, "READING_UNDECODABLE", fires: reading_codes(&edit(READING, r#""raw":"97""#, r#""raw":"x","error":"not a number""#)), clean: reading_codes(READING));
rule!(reading_empty, "READING_EMPTY", fires: reading_codes(&edit(READING, r#"{"code":"MDC_PULS_OXIM_SAT_O2","system":"MDC","value":97,"unit":"%"}"#, "")), clean: reading_codes(READING));

#[test]
fn a_clean_reading_has_no_issues() {
    assert!(reading_codes(READING).is_empty());
}
