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
    let conn = g.open_store().unwrap();
    let mut stmt = conn
        .prepare("SELECT type, event FROM outbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
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
