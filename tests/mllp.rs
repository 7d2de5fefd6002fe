//! End-to-end: the real `wardlink` binary, real sockets, the real store, and a
//! third-party HL7 client (python-hl7's `mllp_send`). Issue 2.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

/// python-hl7's `mllp_send` (installed by scripts/install-test-deps.sh)
/// sends a file of messages; every one is answered AA with its own MSA-2.
#[test]
fn python_hl7_mllp_send_gets_aa_for_every_message() -> Result {
    let Some(python) = std::env::var_os("WARDLINK_TEST_PYTHON") else {
        assert!(
            std::env::var_os("WARDLINK_REQUIRE_EXTERNAL").is_none(),
            "WARDLINK_TEST_PYTHON is not set but external clients are required"
        );
        eprintln!("SKIPPED: python-hl7 not installed; run scripts/test.sh to include this test");
        return Ok(());
    };
    let mllp_send = std::path::Path::new(&python).with_file_name("mllp_send");
    let g = Gateway::start(&mllp_source("lab", ""))?;
    let addr = g.addr("lab");

    let ids: Vec<String> = (0..200).map(|i| format!("PY{i:05}")).collect();
    let mut file = Vec::new();
    for id in &ids {
        file.push(SB);
        file.extend_from_slice(&oru(id));
        file.extend_from_slice(&[EB, CR]);
    }
    let path = g.dir.path().join("messages.hl7");
    std::fs::write(&path, file)?;

    let out = Command::new(&mllp_send)
        .arg("--port")
        .arg(addr.port().to_string())
        .arg("--file")
        .arg(&path)
        .arg("127.0.0.1")
        .output()?;
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // mllp_send prints each ACK it receives (MLLP framing included), one per line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acks: Vec<Ack> = stdout
        .split('\n')
        .filter(|l| l.contains("MSA|"))
        .map(|l| Ack::parse(l.trim_matches(['\u{b}', '\u{1c}', '\r']).as_bytes()))
        .collect();
    assert_eq!(acks.len(), ids.len(), "one ACK per message:\n{stdout}");
    for (ack, id) in acks.iter().zip(&ids) {
        assert_eq!(ack.code, "AA", "{}", ack.raw);
        assert_eq!(&ack.control_id, id, "MSA-2 must equal MSH-10: {}", ack.raw);
        assert!(
            ack.raw.contains("|ACK^R01^ACK|"),
            "MSH-9 of the ACK: {}",
            ack.raw
        );
        assert!(
            ack.raw
                .starts_with("MSH|^~\\&|WARDLINK|HOSP|MONITOR|ICU-7|"),
            "sender/receiver swapped: {}",
            ack.raw
        );
        assert!(ack.raw.contains("|P|2.6"), "version echoed: {}", ack.raw);
    }
    let conn = g.open_store()?;
    for id in &ids {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE control_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        assert_eq!(n, 1, "{id} stored once");
    }
    let st = g.status_json()?;
    assert_eq!(st["acked"], 200, "{st}");
    assert_accounting(&st);
    Ok(())
}

/// Every framing case of the issue, against the running binary: each gets
/// its specified answer and the listener keeps serving.
#[test]
fn framing_edge_cases_each_get_their_answer() -> Result {
    let g = Gateway::start(&mllp_source("edge", "max_message_bytes = 4096"))?;
    let addr = g.addr("edge");

    // Split: one byte per write.
    let mut c = Client::connect(addr)?;
    let msg = oru("SPLIT1");
    let mut framed = vec![SB];
    framed.extend_from_slice(&msg);
    framed.extend_from_slice(&[EB, CR]);
    for b in &framed {
        c.send_raw(std::slice::from_ref(b))?;
    }
    let ack = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AA", "SPLIT1"),
        "{}",
        ack.raw
    );

    // Coalesced: five frames in one write, answered in order.
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(SB);
        all.extend_from_slice(&oru(&format!("CO{i}")));
        all.extend_from_slice(&[EB, CR]);
    }
    c.send_raw(&all)?;
    for i in 0..5 {
        let ack = Ack::parse(&c.read_answer()?);
        assert_eq!(ack.code, "AA");
        assert_eq!(ack.control_id, format!("CO{i}"), "answers in order");
    }

    // Leading junk (log text, NULs) before the start block.
    let mut junk = b"2026-11-23 junk from a sender's log\0\0\0".to_vec();
    junk.push(SB);
    junk.extend_from_slice(&oru("JUNK1"));
    junk.extend_from_slice(&[EB, CR]);
    c.send_raw(&junk)?;
    let ack = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AA", "JUNK1")
    );

    // LF and CRLF segment terminators.
    for (id, term) in [("LF1", "\n"), ("CRLF1", "\r\n")] {
        let m = String::from_utf8(oru(id))?.replace('\r', term);
        let ack = c.exchange(m.as_bytes())?;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", id),
            "{}",
            ack.raw
        );
    }

    // Missing end block: the partial frame is dropped when a new one starts.
    let mut partial = vec![SB];
    partial.extend_from_slice(&oru("LOST1")[..200]);
    partial.push(SB);
    partial.extend_from_slice(&oru("AFTER1"));
    partial.extend_from_slice(&[EB, CR]);
    c.send_raw(&partial)?;
    let ack = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AA", "AFTER1"),
        "{}",
        ack.raw
    );

    // Non-HL7 garbage in a frame: AE with an ERR segment; the connection goes on.
    let ack = c.exchange(b"this is not an HL7 message")?;
    assert_eq!(ack.code, "AE", "{}", ack.raw);
    assert!(ack.err.is_some(), "AE carries an ERR segment: {}", ack.raw);
    let ack = c.exchange(&oru("AFTERGARBAGE"))?;
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AA", "AFTERGARBAGE")
    );

    // A header without MSH-10: AE locating MSH-10.
    let ack = c.exchange(b"MSH|^~\\&|A|B|C|D|20261123||ADT^A01|||P|2.5\rPID|1\r")?;
    assert_eq!(ack.code, "AE", "{}", ack.raw);
    assert!(
        ack.err.as_deref().unwrap_or("").contains("MSH^1^10"),
        "{}",
        ack.raw
    );

    // Oversize (limit 4096): AR, then the connection is closed.
    let mut big = oru("BIG1");
    big.extend(std::iter::repeat_n(b'X', 10_000));
    let ack = c.exchange(&big)?;
    assert_eq!(ack.code, "AR", "{}", ack.raw);
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "an oversize frame closes the connection"
    );

    // The listener keeps serving new connections.
    let mut c2 = Client::connect(addr)?;
    let ack = c2.exchange(&oru("NEWCONN"))?;
    assert_eq!(
        (ack.code.as_str(), ack.control_id.as_str()),
        ("AA", "NEWCONN")
    );

    let st = g.status_json()?;
    let edge = &st["sources"]["edge"];
    // SPLIT1, CO0-4, JUNK1, LF1, CRLF1, AFTER1, AFTERGARBAGE, NEWCONN
    assert_eq!(edge["acked"], 12, "{st}");
    // garbage, missing MSH-10, oversize
    assert_eq!(edge["rejected"], 3, "{st}");
    assert_accounting(&st);
    let conn = g.open_store()?;
    let lost: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE control_id = 'LOST1'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(lost, 0, "a frame without its end block is never stored");
    Ok(())
}

/// Raw bytes are stored exactly as received, whatever the charset.
#[test]
fn raw_bytes_are_stored_exactly_as_received() -> Result {
    let g = Gateway::start(&mllp_source("raw", ""))?;
    let mut c = Client::connect(g.addr("raw"))?;
    // Latin-1 (8859/1) name bytes and LF terminators.
    let latin1: Vec<u8> = b"MSH|^~\\&|LAB|H|WL|H|20261123||ADT^A01|L1|P|2.5||||||8859/1\nPID|1||X^^^H^MR||N\xfa\xf1ez^Jos\xe9\n".to_vec();
    let utf8 = "MSH|^~\\&|LAB|H|WL|H|20261123||ADT^A01|U1|P|2.5||||||UNICODE UTF-8\rPID|1||X^^^H^MR||Şrīnivās^Ñáñez\r".as_bytes().to_vec();
    for (id, m) in [("L1", &latin1), ("U1", &utf8)] {
        let ack = c.exchange(m)?;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", id),
            "{}",
            ack.raw
        );
        let conn = g.open_store()?;
        let raw: Vec<u8> = conn.query_row(
            "SELECT raw FROM messages WHERE control_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        assert_eq!(&raw, m, "stored bytes equal received bytes");
    }
    Ok(())
}

/// A resend (same MSH-3, MSH-4, MSH-10) gets the original ACK, byte for byte,
/// and is stored once.
#[test]
fn duplicates_get_the_original_ack_and_are_stored_once() -> Result {
    let g = Gateway::start(&mllp_source("dup", "duplicate_window = \"1h\""))?;
    let mut c = Client::connect(g.addr("dup"))?;
    c.send_frame(&oru("D1"))?;
    let first = c.read_answer()?;
    std::thread::sleep(Duration::from_millis(1100)); // a fresh ACK would carry a new MSH-7
    let mut c2 = Client::connect(g.addr("dup"))?;
    c2.send_frame(&oru("D1"))?;
    let second = c2.read_answer()?;
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "the original ACK is replayed"
    );
    let conn = g.open_store()?;
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE control_id = 'D1'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(n, 1);
    let st = g.status_json()?;
    assert_eq!(st["duplicates"], 1, "{st}");
    assert_accounting(&st);
    Ok(())
}

/// Enhanced mode: MSH-15=AL gets a commit ACK (CA), MSH-16=AL then an
/// application ACK (AA); MSH-15=NE with MSH-16=AL (IHE PCD-01) gets one AA.
#[test]
fn enhanced_mode_acknowledgements() -> Result {
    let g = Gateway::start(&mllp_source("enh", ""))?;
    let mut c = Client::connect(g.addr("enh"))?;
    c.send_frame(&oru_with_ack_types("E1", "AL", "AL"))?;
    let commit = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (commit.code.as_str(), commit.control_id.as_str()),
        ("CA", "E1"),
        "{}",
        commit.raw
    );
    let app = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (app.code.as_str(), app.control_id.as_str()),
        ("AA", "E1"),
        "{}",
        app.raw
    );

    c.send_frame(&oru_with_ack_types("E2", "AL", "NE"))?;
    let commit = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (commit.code.as_str(), commit.control_id.as_str()),
        ("CA", "E2"),
        "{}",
        commit.raw
    );

    c.send_frame(&oru_with_ack_types("E3", "NE", "AL"))?;
    let only = Ack::parse(&c.read_answer()?);
    assert_eq!(
        (only.code.as_str(), only.control_id.as_str()),
        ("AA", "E3"),
        "{}",
        only.raw
    );
    // Nothing else arrives for E2 or E3: the next answer is for the next message.
    let next = c.exchange(&oru("E4"))?;
    assert_eq!(
        (next.code.as_str(), next.control_id.as_str()),
        ("AA", "E4"),
        "{}",
        next.raw
    );
    Ok(())
}

/// A full store refuses with AR and a clear ERR text; nothing is
/// acknowledged that was not stored, and the connection stays usable.
#[test]
fn a_full_store_answers_ar_and_keeps_the_connection() -> Result {
    let dir_extra = "[store]\nmax_bytes = 1048576\n\n";
    let g = Gateway::start(&format!("{dir_extra}{}", mllp_source("full", "")))?;
    let mut c = Client::connect(g.addr("full"))?;
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let id = format!("F{i}");
        let mut m = oru(&id);
        // Pad with an NTE segment to about 64 KiB.
        m.extend_from_slice(b"NTE|1||");
        m.extend(std::iter::repeat_n(b'z', 64 * 1024));
        m.push(CR);
        let ack = c.exchange(&m)?;
        match ack.code.as_str() {
            "AA" => acked.push(id),
            "AR" => {
                refused = Some(ack);
                break;
            }
            other => panic!("unexpected {other}: {}", ack.raw),
        }
    }
    let refused = refused.expect("the store fills up at 1 MiB");
    let err = refused.err.clone().unwrap_or_default();
    assert!(
        err.to_lowercase().contains("store full"),
        "ERR says why: {}",
        refused.raw
    );
    // Still answered on the same connection.
    let again = c.exchange(&oru("SMALL"))?;
    assert!(["AA", "AR"].contains(&again.code.as_str()), "{}", again.raw);
    let conn = g.open_store()?;
    for id in &acked {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE control_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        assert_eq!(n, 1, "acknowledged {id} is stored");
    }
    Ok(())
}

/// A sender outside the allowlist gets AR ("not allowed") and is disconnected.
#[test]
fn senders_outside_the_allowlist_are_refused() -> Result {
    let g = Gateway::start(&mllp_source("locked", "allow = [\"10.20.0.0/16\"]"))?;
    let mut c = Client::connect(g.addr("locked"))?;
    let ack = c.exchange(&oru("NA1"))?;
    assert_eq!(ack.code, "AR", "{}", ack.raw);
    assert!(ack.err.unwrap_or_default().contains("not allowed"));
    assert!(c.is_closed(Duration::from_secs(5)));
    let conn = g.open_store()?;
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
    assert_eq!(n, 0);
    Ok(())
}

/// Idle connections are closed after the idle timeout; others keep working.
#[test]
fn idle_connections_are_closed() -> Result {
    let g = Gateway::start(&mllp_source("idle", "idle_timeout = \"1s\""))?;
    let mut idle = Client::connect(g.addr("idle"))?;
    assert!(
        idle.is_closed(Duration::from_secs(5)),
        "closed after 1 s idle"
    );
    let mut busy = Client::connect(g.addr("idle"))?;
    let ack = busy.exchange(&oru("I1"))?;
    assert_eq!(ack.code, "AA");
    Ok(())
}

/// `wardlink status --json` has the documented keys, in total and per source.
#[test]
fn status_json_has_the_documented_keys() -> Result {
    let g = Gateway::start(&format!("{}{}", mllp_source("a", ""), mllp_source("b", "")))?;
    let mut c = Client::connect(g.addr("a"))?;
    for i in 0..3 {
        c.exchange(&oru(&format!("S{i}")))?;
    }
    let st = g.status_json()?;
    for key in [
        "received",
        "acked",
        "rejected",
        "duplicates",
        "quarantined",
        "pending_upload",
        "uploaded",
        "store_bytes",
        "sources",
    ] {
        assert!(st.get(key).is_some(), "{key} missing: {st}");
    }
    for key in [
        "received",
        "acked",
        "rejected",
        "duplicates",
        "quarantined",
        "pending_upload",
        "uploaded",
    ] {
        assert!(
            st["sources"]["a"].get(key).is_some(),
            "sources.a.{key} missing: {st}"
        );
        assert!(
            st["sources"]["b"].get(key).is_some(),
            "configured source b is listed: {st}"
        );
    }
    assert_eq!(st["sources"]["a"]["acked"], 3);
    assert_eq!(st["sources"]["b"]["acked"], 0);
    assert!(st["store_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(st["oldest_pending_age_secs"].is_u64(), "{st}");
    assert_accounting(&st);

    // The text form names every source.
    let out = Command::new(wardlink_bin())
        .args(["status", "--config"])
        .arg(&g.config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("daemon: running"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("a ")) && text.lines().any(|l| l.starts_with("b ")),
        "{text}"
    );
    Ok(())
}

/// SIGTERM: in-flight messages are answered, the daemon exits 0 and cleans up.
#[test]
fn sigterm_stops_cleanly() -> Result {
    let mut g = Gateway::start(&mllp_source("term", ""))?;
    let addr = g.addr("term");
    let mut c = Client::connect(addr)?;
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        let id = format!("T{i}");
        assert_eq!(c.exchange(&oru(&id))?.code, "AA");
        sent.insert(id);
    }
    let status = g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    assert!(status.success(), "exit status {status}\n{}", g.stderr());
    assert!(
        g.runtime().is_none(),
        "the runtime file is removed on a clean stop"
    );
    assert!(g.stderr().contains("stopped"), "{}", g.stderr());
    Ok(())
}
