//! The leak test (issue 3): thousands of ADT and ORU messages with random,
//! unique identifiers in every PHI-bearing field and in free text; nothing
//! of them may appear in the exported events, and the clinical values must.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::{Duration, SystemTime};

use support::{phi_adt, phi_oru, Planted, Rng};
use wardlink::pipeline::{
    Action, DatePolicy, FieldOverride, NoHistory, Outcome, Pipeline, PipelineSettings, RawMessage,
    Scope, SiteKeys,
};
use wardlink_sync::{Body, Event};

const MESSAGES: usize = 3000;

fn received() -> SystemTime {
    // 2024-06-01T00:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_200_000)
}

fn pipeline(settings: PipelineSettings) -> Pipeline {
    Pipeline::new(
        settings,
        SiteKeys::from_secrets(
            b"leak-test-site-key-0123456789abc",
            Some(b"network-key-0123456789abcdefghij"),
        ),
    )
    .unwrap()
}

/// Pseudonyms are HMAC outputs (32 hex digits after a kind prefix); a short
/// planted number (a PIN) can occur inside one by chance, so they are masked
/// before searching. Anything else in the JSON is searched as is.
fn mask_pseudonyms(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    while i < b.len() {
        let is_ps = i + 35 <= b.len()
            && b[i].is_ascii_uppercase()
            && b[i + 1] == b'1'
            && b[i + 2] == b'-'
            && b[i + 3..i + 35]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if is_ps {
            out.push_str("<ps>");
            i += 35;
        } else {
            let ch = json[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn events(p: &Pipeline, text: &str) -> Vec<Event> {
    let raw = RawMessage {
        id: 1,
        source: "leak",
        received_at: received(),
        bytes: text.as_bytes(),
        charset_hint: None,
    };
    match p.process(&raw, &NoHistory) {
        Outcome::Events { events, .. } => events,
        Outcome::Quarantine { reason, issues } => {
            panic!("quarantined: {reason} {issues:?}\n{text}")
        }
    }
}

fn assert_no_leak(i: usize, json: &str, planted: &Planted) {
    let masked = mask_pseudonyms(json);
    for s in &planted.secrets {
        assert!(s.len() >= 4, "weak secret {s:?}");
        assert!(
            !masked.contains(s.as_str()),
            "message {i}: {s:?} leaked in\n{masked}"
        );
    }
}

fn run(settings: PipelineSettings, check_free_text: bool) {
    let p = pipeline(settings);
    let mut rng = Rng::new(0x5eed_1ea4);
    let mut scrubbed_seen = 0;
    for i in 0..MESSAGES {
        // ADT
        let (text, planted) = phi_adt(&mut rng, i);
        let evs = events(&p, &text);
        let json = serde_json::to_string(&evs).unwrap();
        assert_no_leak(i, &json, &planted);
        assert_eq!(evs.len(), 1);
        let Body::Adt(adt) = &evs[0].body else {
            panic!("not adt: {json}")
        };
        assert_eq!(&*adt.trigger, planted.codes[0].as_str());
        assert_eq!(
            adt.location.as_ref().and_then(|l| l.ward.as_deref()),
            Some(planted.codes[1].as_str())
        );
        assert_eq!(
            adt.patient_class.as_deref(),
            Some(planted.codes[2].as_str())
        );
        assert_eq!(adt.sex.as_deref(), Some("M"));
        assert!(
            adt.age.is_some() && adt.postal_prefix.as_ref().is_some_and(|p| p.len() == 3),
            "{json}"
        );
        assert!(evs[0].patient.is_some() && evs[0].encounter.is_some());

        // ORU
        let (text, planted) = phi_oru(&mut rng, i);
        let evs = events(&p, &text);
        let json = serde_json::to_string(&evs).unwrap();
        assert_no_leak(i, &json, &planted);
        for (code, value, unit) in &planted.clinical {
            let found = evs.iter().any(|e| match &e.body {
                Body::Observation(o) => {
                    &*o.code.code == code.as_str()
                        && o.value_num == Some(*value)
                        && o.unit.as_deref() == Some(unit.as_str())
                }
                _ => false,
            });
            assert!(
                found,
                "message {i}: {code} = {value} {unit} missing in\n{json}"
            );
        }
        assert!(evs.iter().all(|e| e.patient.is_some()));
        if check_free_text
            && json.contains("[AADHAAR]")
            && json.contains("[NAME]")
            && json.contains("[PHONE]")
        {
            scrubbed_seen += 1;
        }
    }
    if check_free_text {
        assert_eq!(
            scrubbed_seen, MESSAGES,
            "free text was not kept-and-scrubbed"
        );
    }
}

#[test]
fn default_profile_leaks_nothing() {
    run(PipelineSettings::default(), false);
}

#[test]
fn scrubbed_free_text_leaks_nothing() {
    let overrides = ["NTE-3", "OBX-5:TX", "OBX-5:FT", "PV2-12", "OBR-13"]
        .iter()
        .map(|k| FieldOverride {
            field: (*k).to_owned(),
            action: Action::Scrub,
        })
        .collect();
    run(
        PipelineSettings {
            overrides,
            ..PipelineSettings::default()
        },
        true,
    );
}

#[test]
fn year_only_network_scope_leaks_nothing() {
    run(
        PipelineSettings {
            date_policy: DatePolicy::YearOnly,
            pseudonym_scope: Scope::Network,
            ..PipelineSettings::default()
        },
        false,
    );
}

#[test]
fn explanation_shows_rules_not_values() {
    let p = pipeline(PipelineSettings::default());
    let mut rng = Rng::new(77);
    for i in 0..50 {
        for (text, planted) in [phi_adt(&mut rng, i), phi_oru(&mut rng, i)] {
            let raw = RawMessage {
                id: 1,
                source: "leak",
                received_at: received(),
                bytes: text.as_bytes(),
                charset_hint: None,
            };
            let ex = p.explain(&raw, &NoHistory);
            let shown = ex.to_string();
            assert_no_leak(i, &shown, &planted);
            assert!(
                shown.contains("PID-5") && shown.contains("remove"),
                "{shown}"
            );
            assert!(ex.all_fields.iter().any(|t| t.field.starts_with("PID")
                && t.field.ends_with("-3")
                && t.action == Action::Pseudonymize));
            assert_eq!(ex.outcome, p.process(&raw, &NoHistory));
        }
    }
}
