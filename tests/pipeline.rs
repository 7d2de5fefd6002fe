//! End-to-end: messages sent to the real binary go through the pipeline into
//! the outbox as de-identified events, or into quarantine; nothing
//! identifying reaches the outbox; pseudonyms survive a restart. Issue 3.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;

fn adt_a01(control_id: &str, mrn: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|HOSP|WARDLINK|HOSP|20261123090000||ADT^A01^ADT_A01|{control_id}|P|2.5\r\
         EVN|A01|20261123090000\r\
         PID|1||{mrn}^^^HOSP^MR||Venkataraman^Lakshmi^S||19520703|F|||44 Residency Road^^Bengaluru^KA^560025^IND||+91 98450 12345|||||ACC7788991\r\
         PV1|1|I|ICU^07^B^HOSP||||1234^Rao^Anil|||MED||||||||V{mrn}^^^HOSP^VN|||||||||||||||||||||||||20261123085500\r"
    )
    .into_bytes()
}

/// Wait until the pipeline has processed everything stored.
fn wait_processed(g: &Gateway) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(30), || {
        last = g.status_json().unwrap_or_default();
        last["awaiting"] == 0 && last["acked"].as_i64().unwrap_or(0) > 0
    });
    assert!(
        done,
        "the pipeline did not catch up: {last}\n{}",
        g.stderr()
    );
    last
}

fn outbox(g: &Gateway) -> Vec<(String, String)> {
    g.outbox_events()
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.json))
        .collect()
}

#[test]
fn stored_messages_become_de_identified_events_or_quarantine() -> Result {
    let mut g = Gateway::start(&mllp_source("ward", ""))?;
    let mut c = Client::connect(g.addr("ward"))?;
    for id in ["V1", "V2", "V3"] {
        assert_eq!(c.exchange(&oru(id))?.code, "AA");
    }
    assert_eq!(c.exchange(&adt_a01("A1", "MRN555123"))?.code, "AA");
    // An ADT^A01 without its PID segment: stored and acknowledged (custody),
    // then quarantined by validation.
    let bad = b"MSH|^~\\&|HIS|HOSP|WARDLINK|HOSP|20261123090000||ADT^A01^ADT_A01|BAD1|P|2.5\rEVN|A01|20261123090000\r";
    assert_eq!(
        c.exchange(bad)?.code,
        "AA",
        "the ACK means custody, not content quality"
    );

    let st = wait_processed(&g);
    assert_eq!(st["pending_upload"], 4, "{st}");
    assert_eq!(st["quarantined"], 1, "{st}");
    assert_accounting(&st);

    let events = outbox(&g);
    let observations = events.iter().filter(|(t, _)| t == "observation").count();
    let adts = events.iter().filter(|(t, _)| t == "adt").count();
    assert_eq!(observations, 18, "six OBX rows in each of three ORUs");
    assert_eq!(adts, 1);

    let all: String = events
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for phi in [
        "Sharma",
        "Priya",
        "MRNV1",
        "19780412",
        "12 MG Road",
        "560001",
        "Venkataraman",
        "Lakshmi",
        "MRN555123",
        "19520703",
        "Residency",
        "560025",
        "98450",
        "9845012345",
        "ACC7788991",
        "Anil",
    ] {
        assert!(!all.contains(phi), "{phi} leaked into the outbox");
    }
    for clinical in ["147842", "150456", "MDC_PULS_OXIM_SAT_O2", "36.8", "121"] {
        assert!(all.contains(clinical), "clinical value {clinical} is kept");
    }

    let conn = g.open_store()?;
    let reason: String = conn.query_row(
        "SELECT q.reason FROM quarantine q JOIN messages m ON m.id = q.message_id WHERE m.control_id = 'BAD1'",
        [],
        |r| r.get(0),
    )?;
    assert!(!reason.is_empty());

    // Restart: nothing is processed twice, and the same MRN gets the same pseudonym.
    let patient_before = patient_of_adt(&events);
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    g.spawn()?;
    let mut c = Client::connect(g.addr("ward"))?;
    assert_eq!(c.exchange(&adt_a01("A2", "MRN555123"))?.code, "AA");
    let st = wait_processed(&g);
    assert_eq!(st["pending_upload"], 5, "{st}");
    let events = outbox(&g);
    assert_eq!(
        events.len(),
        18 + 2,
        "nothing processed twice after a restart"
    );
    let adts: Vec<_> = events.iter().filter(|(t, _)| t == "adt").cloned().collect();
    let patient_after = patient_of_adt(&adts[1..]);
    assert_eq!(
        patient_before, patient_after,
        "pseudonyms are stable across restarts"
    );
    Ok(())
}

fn patient_of_adt(events: &[(String, String)]) -> String {
    let (_, json) = events
        .iter()
        .find(|(t, _)| t == "adt")
        .expect("an adt event");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["patient"]
        .as_str()
        .expect("a patient pseudonym")
        .to_string()
}

/// `wardlink quarantine list|show|release|drop` against a running daemon;
/// the counters follow every change.
#[test]
fn quarantine_commands_manage_held_messages() -> Result {
    let g = Gateway::start(&mllp_source("q", ""))?;
    let mut c = Client::connect(g.addr("q"))?;
    let bad = |id: &str| {
        format!("MSH|^~\\&|HIS|HOSP|WARDLINK|HOSP|20261123090000||ADT^A01^ADT_A01|{id}|P|2.5\rEVN|A01|20261123090000\r")
            .into_bytes()
    };
    assert_eq!(c.exchange(&bad("QB1"))?.code, "AA");
    assert_eq!(c.exchange(&bad("QB2"))?.code, "AA");
    let st = wait_processed(&g);
    assert_eq!(st["quarantined"], 2, "{st}");

    let cfg = g.config.to_str().unwrap().to_string();
    let out = wardlink(&["quarantine", "list", "--json", "--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(list[0]["reason"].as_str().unwrap_or("").len() > 3, "{list}");

    let out = wardlink(&["quarantine", "show", &ids[0].to_string(), "--config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("QB1") && text.contains("reason:"),
        "{text}"
    );
    assert!(
        !text.contains("raw message"),
        "the raw message only with --raw"
    );

    // Drop the first: counted as dropped, raw bytes gone.
    let out = wardlink(&["quarantine", "drop", &ids[0].to_string(), "--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Release the second: the pipeline runs again; its issue is still fatal,
    // so it comes back to the quarantine.
    let out = wardlink(&[
        "quarantine",
        "release",
        &ids[1].to_string(),
        "--config",
        &cfg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = wait_until(Duration::from_secs(20), || {
        let st = g.status_json().unwrap_or_default();
        st["quarantined"] == 1 && st["dropped"] == 1 && st["awaiting"] == 0
    });
    assert!(back, "{}", g.status_json()?);
    assert_accounting(&g.status_json()?);
    let conn = g.open_store()?;
    let raw_len: i64 = conn.query_row(
        "SELECT length(raw) FROM messages WHERE id = ?1",
        [ids[0]],
        |r| r.get(0),
    )?;
    assert_eq!(raw_len, 0, "a dropped message's raw bytes are deleted");

    // Unknown ids are a clear error with exit 1.
    let out = wardlink(&["quarantine", "release", "999999", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no quarantined message"));
    Ok(())
}

/// `wardlink deid FILE` shows the events and per-field rules without any
/// removed value; `--print-profile` prints the profile.
#[test]
fn deid_review_shows_events_and_rules_without_phi() -> Result {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("sample.hl7");
    let mut bytes = adt_a01("R1", "MRN424242");
    bytes.extend_from_slice(&oru("R2"));
    std::fs::write(&file, String::from_utf8(bytes)?.replace('\r', "\n"))?;
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )?;
    let out = wardlink(&[
        "deid",
        "--config",
        cfg.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("message 1") && text.contains("message 2"),
        "{text}"
    );
    assert!(
        text.contains("\"type\":\"adt\"") && text.contains("\"type\":\"observation\""),
        "{text}"
    );
    assert!(text.contains("PID-5"), "per-field rules are listed: {text}");
    for phi in [
        "Venkataraman",
        "Lakshmi",
        "MRN424242",
        "19520703",
        "98450",
        "Residency",
        "Sharma",
        "Priya",
    ] {
        assert!(!text.contains(phi), "{phi} printed by the review");
    }
    assert!(
        !dir.path().join("state").exists(),
        "the review creates no state"
    );

    let out = wardlink(&["deid", "--print-profile"]);
    let profile = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && profile.contains("PID") && profile.contains("NK1"),
        "{profile}"
    );
    Ok(())
}
