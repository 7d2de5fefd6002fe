//! Pseudonyms and date shifts (issue 3): stable across a restart from the
//! same key file, different under another site key, equal across sites in
//! network scope; dates of one patient move together.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use wardlink::pipeline::{
    DatePolicy, NoHistory, Outcome, Pipeline, PipelineError, PipelineSettings, RawMessage, Scope,
    SiteKeys,
};
use wardlink_sync::{Body, Event};

fn received() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_135_200)
}

fn adt(trigger: &str, mrn: &str, abha: &str, visit: &str, admit: &str, discharge: &str) -> String {
    let mut pv1 = vec![""; 46];
    pv1[0] = "PV1";
    pv1[1] = "1";
    pv1[2] = "I";
    pv1[3] = "W1^R1^B1^HOSP";
    let v = format!("{visit}^^^HOSP^VN");
    pv1[19] = &v;
    pv1[44] = admit;
    pv1[45] = discharge;
    format!(
        "MSH|^~\\&|HIS|HOSP|WL|EDGE|20240531100000+0530||ADT^{trigger}^ADT_A01|C-{trigger}-{mrn}|P|2.5.1\r\
         EVN|{trigger}|20240531100000+0530\r\
         PID|1||{mrn}^^^HOSP^MR~{abha}^^^ABDM^ABHA||DOE^JOHN||19800101|M\r{}\r",
        pv1.join("|")
    )
}

fn events(p: &Pipeline, text: &str) -> Vec<Event> {
    let raw = RawMessage {
        id: 1,
        source: "ps",
        received_at: received(),
        bytes: text.as_bytes(),
        charset_hint: None,
    };
    match p.process(&raw, &NoHistory) {
        Outcome::Events { events, .. } => events,
        Outcome::Quarantine { reason, .. } => panic!("{reason}"),
    }
}

fn site(dir: &Path, network: Option<&Path>, scope: Scope) -> Pipeline {
    let mut keys = SiteKeys::load_or_create(dir).unwrap();
    if let Some(n) = network {
        keys = keys.with_network_key_file(n).unwrap();
    }
    Pipeline::new(
        PipelineSettings {
            pseudonym_scope: scope,
            ..PipelineSettings::default()
        },
        keys,
    )
    .unwrap()
}

fn write_key(path: &Path, hex: &str) {
    fs::write(path, hex).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

const MSG_ARGS: (&str, &str, &str) = ("MRN0042", "91-1234-5678-9012", "V77");

#[test]
fn stable_across_restart_from_the_same_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = adt(
        "A01",
        MSG_ARGS.0,
        MSG_ARGS.1,
        MSG_ARGS.2,
        "20240530080000+0530",
        "",
    );
    let first = events(&site(dir.path(), None, Scope::Site), &text);
    // "Restart": a new pipeline from the key file on disk.
    let second = events(&site(dir.path(), None, Scope::Site), &text);
    assert_eq!(first, second);
    assert!(first[0].patient.as_deref().unwrap().starts_with("P1-"));
    assert!(first[0].encounter.as_deref().unwrap().starts_with("E1-"));
    assert!(dir.path().join("site.key").exists());
}

#[test]
fn different_for_another_site_key() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let text = adt(
        "A01",
        MSG_ARGS.0,
        MSG_ARGS.1,
        MSG_ARGS.2,
        "20240530080000+0530",
        "",
    );
    let ea = events(&site(a.path(), None, Scope::Site), &text);
    let eb = events(&site(b.path(), None, Scope::Site), &text);
    assert_ne!(ea[0].patient, eb[0].patient);
    assert_ne!(ea[0].encounter, eb[0].encounter);
    assert_ne!(ea[0].control_id_hash, eb[0].control_id_hash);
    assert!(
        ea[0].patient_network.is_none(),
        "site scope exports no network pseudonym"
    );
}

#[test]
fn equal_across_sites_in_network_scope() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let net = tempfile::tempdir().unwrap();
    let net_key = net.path().join("network.key");
    write_key(&net_key, &"5a".repeat(32));
    // Two hospitals, each with its own MRN for the patient, both see the ABHA number.
    let ta = adt(
        "A01",
        "HOSPA-1",
        "91-1234-5678-9012",
        "VA",
        "20240530080000+0530",
        "",
    );
    let tb = adt(
        "A01",
        "HOSPB-99",
        "91 1234 5678 9012",
        "VB",
        "20240530090000+0530",
        "",
    );
    let ea = events(&site(a.path(), Some(&net_key), Scope::Network), &ta);
    let eb = events(&site(b.path(), Some(&net_key), Scope::Network), &tb);
    let na = ea[0].patient_network.clone().unwrap();
    assert!(na.starts_with("N1-"));
    assert_eq!(Some(na), eb[0].patient_network);
    assert_ne!(
        ea[0].patient, eb[0].patient,
        "local pseudonyms stay per site"
    );
    // Another ABHA number → another network pseudonym.
    let tc = adt(
        "A01",
        "HOSPB-98",
        "91-1234-5678-9013",
        "VC",
        "20240530090000+0530",
        "",
    );
    let ec = events(&site(b.path(), Some(&net_key), Scope::Network), &tc);
    assert_ne!(ec[0].patient_network, eb[0].patient_network);
}

#[test]
fn network_scope_without_a_network_key_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let r = Pipeline::new(
        PipelineSettings {
            pseudonym_scope: Scope::Network,
            ..PipelineSettings::default()
        },
        SiteKeys::load_or_create(a.path()).unwrap(),
    );
    assert!(matches!(r, Err(PipelineError::NetworkKeyMissing)));
}

fn day(s: &str) -> i64 {
    // "YYYY-MM-DDT…" → a day number good enough for differences within a year.
    let y: i64 = s[0..4].parse().unwrap();
    let m: i64 = s[5..7].parse().unwrap();
    let d: i64 = s[8..10].parse().unwrap();
    y * 372 + m * 31 + d
}

fn adt_body(e: &Event) -> &wardlink_sync::AdtBody {
    match &e.body {
        Body::Adt(a) => a,
        _ => panic!("not adt"),
    }
}

#[test]
fn one_patient_one_shift_across_messages() {
    let p = Pipeline::new(
        PipelineSettings::default(),
        SiteKeys::from_secrets(&[3; 32], None),
    )
    .unwrap();
    let admit = events(&p, &adt("A01", "M1", "", "V1", "20240510080000+0530", ""));
    let discharge = events(
        &p,
        &adt(
            "A03",
            "M1",
            "",
            "V1",
            "20240510080000+0530",
            "20240520170000+0530",
        ),
    );
    let a = adt_body(&admit[0]);
    let d = adt_body(&discharge[0]);
    assert_eq!(a.admit_at, d.admit_at, "same real date, same shifted date");
    let los = day(d.discharge_at.as_deref().unwrap()) - day(d.admit_at.as_deref().unwrap());
    assert_eq!(los, 10, "intervals survive the shift");
    assert!(
        a.admit_at.as_deref().unwrap().ends_with("T08:00:00+05:30"),
        "time of day kept"
    );
    // The shift is not zero for most patients and differs between patients.
    let mut shifted = 0;
    let mut dates = std::collections::HashSet::new();
    for i in 0..40 {
        let e = events(
            &p,
            &adt("A01", &format!("M{i}"), "", "V", "20240510080000+0530", ""),
        );
        let at = adt_body(&e[0]).admit_at.clone().unwrap();
        if !at.starts_with("2024-05-10") {
            shifted += 1;
        }
        dates.insert(at);
    }
    assert!(
        shifted > 30 && dates.len() > 20,
        "{shifted} {}",
        dates.len()
    );
}

#[test]
fn year_only_policy_keeps_only_years() {
    let p = Pipeline::new(
        PipelineSettings {
            date_policy: DatePolicy::YearOnly,
            ..PipelineSettings::default()
        },
        SiteKeys::from_secrets(&[3; 32], None),
    )
    .unwrap();
    let e = events(
        &p,
        &adt(
            "A03",
            "M1",
            "",
            "V1",
            "20240510080000+0530",
            "20240520170000+0530",
        ),
    );
    let a = adt_body(&e[0]);
    assert_eq!(a.admit_at.as_deref(), Some("2024"));
    assert_eq!(a.discharge_at.as_deref(), Some("2024"));
    assert_eq!(&*e[0].received_at, "2024");
    assert_eq!(a.age.as_deref(), Some("44"));
}
