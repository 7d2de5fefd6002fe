//! End-to-end: the real `wardlink` binary as a DICOM node, driven by real
//! clients — dcmtk's `echoscu`/`storescu` (Debian package dcmtk), pynetdicom
//! and pydicom (tests/dicom/client.py, in target/test-venv) and a raw PDU
//! client built on dicom-ul for what no client does on purpose (abort in
//! the middle, truncate a PDU, send a malformed data set). Issue 7.
//!
//! The third-party tools are installed by scripts/install-test-deps.sh;
//! with `WARDLINK_REQUIRE_EXTERNAL=1` (scripts/test.sh) a missing tool fails
//! the test instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dicom_ul::pdu::{
    read_pdu, write_pdu, AssociationRQ, PDataValue, PDataValueType, Pdu,
    PresentationContextProposed, UserVariableItem,
};
use wardlink_devices::dicom::spool::kept_path;
use wardlink_devices::dicom::stored::Envelope;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// One DICOM listener on a free port, with `extra` keys.
fn dicom_source(name: &str, extra: &str) -> String {
    format!("[[source.dicom]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// The tools, or `None` (skip) when they are missing and not required.
struct Tools {
    python: PathBuf,
    echoscu: PathBuf,
    storescu: PathBuf,
}

fn tools() -> Option<Tools> {
    let python = std::env::var_os("WARDLINK_TEST_PYTHON").map(PathBuf::from);
    // Call dcmtk's by full path: pynetdicom's own `storescu` may come first on PATH.
    let echoscu = PathBuf::from("/usr/bin/echoscu");
    let storescu = PathBuf::from("/usr/bin/storescu");
    let ok =
        python.as_ref().is_some_and(|p| p.is_file()) && echoscu.is_file() && storescu.is_file();
    if !ok {
        assert!(
            std::env::var_os("WARDLINK_REQUIRE_EXTERNAL").is_none(),
            "dcmtk (/usr/bin/echoscu, /usr/bin/storescu) or WARDLINK_TEST_PYTHON with \
             pynetdicom is missing but external clients are required"
        );
        eprintln!("SKIPPED: dcmtk or pynetdicom not installed; run scripts/test.sh");
        return None;
    }
    Some(Tools {
        python: python?,
        echoscu,
        storescu,
    })
}

/// Runs a command with a deadline; kills it when the deadline passes.
fn run(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(format!(
                "{cmd:?} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn client_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dicom/client.py")
}

/// Runs tests/dicom/client.py and parses the JSON line it prints.
fn py(t: &Tools, args: &[&str]) -> Result<serde_json::Value> {
    let out = run(
        Command::new(&t.python).arg(client_py()).args(args),
        Duration::from_secs(60),
    )?;
    assert!(
        out.status.success(),
        "client.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let line = stdout.lines().last().ok_or("client.py printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

fn port(addr: SocketAddr) -> String {
    addr.port().to_string()
}

/// dcmtk's storescu sending `files` (or a directory with `+sd`).
fn storescu(t: &Tools, addr: SocketAddr, calling: &str, files: &[&Path]) -> Result<Output> {
    let mut cmd = Command::new(&t.storescu);
    cmd.env("TCP_NODELAY", "1")
        .args([
            "-aet", calling, "-aec", "WARDLINK", "-to", "10", "-ta", "10", "-td", "30",
        ])
        .arg(addr.ip().to_string())
        .arg(port(addr))
        .args(files);
    run(&mut cmd, Duration::from_secs(60))
}

/// Send `files` with storescu as `calling`; storescu must succeed.
fn store_all(t: &Tools, addr: SocketAddr, calling: &str, files: &[PathBuf]) -> Result {
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = storescu(t, addr, calling, &refs)?;
    assert!(
        out.status.success(),
        "storescu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `client.py gen DIR ARGS...`: what it printed, and the paths of the
/// files it wrote, in order.
fn generate(t: &Tools, dir: &Path, args: &[&str]) -> Result<(serde_json::Value, Vec<PathBuf>)> {
    let dir = dir.to_str().ok_or("a non-UTF-8 path")?;
    let generated = py(t, &[&["gen", dir][..], args].concat())?;
    let paths = generated["files"]
        .as_array()
        .ok_or("gen printed no files")?
        .iter()
        .map(|f| PathBuf::from(f["path"].as_str().unwrap_or_default()))
        .collect();
    Ok((generated, paths))
}

/// A row of the store: (kind, message_type, control_id, device, raw).
type Row = (String, String, String, String, Vec<u8>);

/// Wait until no object is staged: a C-STORE is answered once its header
/// is durable (staged while the pixels arrived) and moves into `messages`
/// with the writer's next commit, about a millisecond later.
fn settled(g: &Gateway) -> Result<()> {
    let conn = g.open_store()?;
    let empty = wait_until(Duration::from_secs(10), || {
        conn.query_row("SELECT COUNT(*) FROM staged", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 0)
    });
    if !empty {
        return Err("objects are still staged after 10 s".into());
    }
    Ok(())
}

/// `wardlink status --json` once every answered object is in `messages`.
fn status(g: &Gateway) -> Result<serde_json::Value> {
    settled(g)?;
    g.status_json()
}

fn stored(g: &Gateway) -> Result<Vec<Row>> {
    settled(g)?;
    let conn = g.open_store()?;
    let mut stmt = conn
        .prepare("SELECT kind, message_type, control_id, device, raw FROM messages ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The outbox once every stored message has been processed: (type, event JSON).
fn outbox_when_processed(
    g: &Gateway,
    expected_messages: usize,
) -> Result<Vec<(String, serde_json::Value)>> {
    let conn = g.open_store()?;
    let done = wait_until(Duration::from_secs(20), || {
        // Through the pipeline: at or below its cursor.
        conn.query_row(
            "SELECT COUNT(*) FROM messages
              WHERE id <= (SELECT value FROM meta WHERE key = 'pipeline_cursor')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n as usize >= expected_messages)
    });
    assert!(
        done,
        "the pipeline did not process {expected_messages} messages in time"
    );
    let quarantined: i64 = conn.query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))?;
    assert_eq!(quarantined, 0, "nothing is quarantined");
    wardlink::store::outbox::stored_events(&conn)?
        .into_iter()
        .map(|e| Ok((e.kind, serde_json::from_str(&e.json)?)))
        .collect()
}

fn echo_ok(t: &Tools, addr: SocketAddr, calling: &str) -> Result<bool> {
    let out = run(
        Command::new(&t.echoscu)
            .env("TCP_NODELAY", "1")
            .args(["-aet", calling, "-aec", "WARDLINK", "-to", "10"])
            .arg(addr.ip().to_string())
            .arg(port(addr)),
        Duration::from_secs(30),
    )?;
    Ok(out.status.success())
}

#[test]
fn echoscu_and_storescu_send_a_study_of_several_series() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source(
        "imaging",
        "allow_ae = [\"CT1\"]\nward = \"radiology\"\nroom = \"CT 3\"\ndevices = { CT1 = \"ct-room3\" }",
    ))?;
    let addr = g.addr("imaging");
    assert!(echo_ok(&t, addr, "CT1")?, "echoscu got no success");

    let (generated, files) = generate(
        &t,
        &g.dir.path().join("study"),
        &["--series", "3", "--images", "4"],
    )?;
    assert_eq!(files.len(), 12);
    store_all(&t, addr, "CT1", &files)?;

    let rows = stored(&g)?;
    assert_eq!(rows.len(), 12, "one stored header per image");
    for ((kind, op, instance, device, raw), file) in
        rows.iter().zip(&generated["files"].as_array().unwrap()[..])
    {
        assert_eq!((kind.as_str(), op.as_str()), ("dicom", "C-STORE"));
        assert_eq!(instance, file["sop_instance"].as_str().unwrap());
        assert_eq!(device, "ct-room3");
        let (env, at) = Envelope::parse(raw).ok_or("stored bytes are not a Part 10 envelope")?;
        assert_eq!(env.sop_instance, *instance);
        assert_eq!(env.sop_class, CT);
        assert_eq!(
            (env.ward.as_str(), env.room.as_str()),
            ("radiology", "CT 3")
        );
        // 64x64x16-bit pixels: counted (with their 12-byte element header), not kept.
        assert_eq!(env.pixel_bytes, 64 * 64 * 2 + 12);
        assert_eq!(env.dataset_bytes, (raw.len() - at) as u64 + env.pixel_bytes);
        let file_len = std::fs::metadata(file["path"].as_str().unwrap())?.len();
        assert!(
            (raw.len() as u64) < file_len - 7000,
            "pixels were not stored"
        );
    }
    let events = outbox_when_processed(&g, 12)?;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "imaging_instance").count(),
        12
    );
    assert_eq!(
        types.iter().filter(|t| **t == "imaging_study").count(),
        1,
        "one study"
    );
    let series: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, e)| e["series_uid"].as_str())
        .collect();
    assert_eq!(series.len(), 3, "three series, remapped consistently");
    for (_, e) in &events {
        assert!(e["study_uid"].as_str().unwrap().starts_with("2.25."), "{e}");
        assert_eq!(e["equipment"]["ward"], "radiology");
    }
    let status = status(&g)?;
    assert_accounting(&status);
    Ok(())
}

#[test]
fn mpps_n_create_then_n_set_and_the_refusals() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let addr = g.addr("imaging");
    let r = py(&t, &["mpps", "127.0.0.1", &port(addr), "CT1", "WARDLINK"])?;
    assert_eq!(r["create"], 0, "{r}");
    assert_eq!(r["set_completed"], 0, "{r}");
    assert_eq!(
        r["set_after_final"], 0x0110,
        "a final step may no longer be updated: {r}"
    );
    assert_eq!(r["set_unknown"], 0x0112, "no such instance: {r}");
    assert_eq!(r["create_missing_status"], 0x0120, "missing attribute: {r}");
    assert_eq!(
        r["create_after_refusals"], 0,
        "the association goes on: {r}"
    );
    let rows = stored(&g)?;
    let ops: Vec<(&str, &str)> = rows
        .iter()
        .map(|(k, op, ..)| (k.as_str(), op.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("mpps", "N-CREATE"),
            ("mpps", "N-SET"),
            ("mpps", "N-CREATE")
        ],
        "only the accepted operations are stored"
    );
    let (env, _) = Envelope::parse(&rows[1].4).ok_or("no envelope")?;
    assert_eq!(env.mpps_state, "COMPLETED");
    assert_eq!(env.sop_instance, r["uid"].as_str().unwrap());
    let events = outbox_when_processed(&g, 3)?;
    let steps: Vec<&serde_json::Value> = events
        .iter()
        .filter(|(t, _)| t == "procedure_step")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        (&steps[0]["operation"], &steps[0]["status"]),
        (
            &serde_json::json!("n_create"),
            &serde_json::json!("IN PROGRESS")
        )
    );
    assert_eq!(
        (&steps[1]["operation"], &steps[1]["status"]),
        (&serde_json::json!("n_set"), &serde_json::json!("COMPLETED"))
    );
    assert_eq!(
        steps[0]["step_uid"], steps[1]["step_uid"],
        "N-CREATE and N-SET join"
    );
    assert!(steps[0]["started_at"].is_string() && steps[1]["ended_at"].is_string());
    assert_eq!(steps[0]["protocol_codes"][0]["code"], "P1");
    assert_eq!(steps[0]["equipment"]["station"], "CTROOM3");
    let all = serde_json::to_string(&steps)?;
    assert!(
        !all.contains("SECRET")
            && !all.contains("MRN424242")
            && !all.contains(r["uid"].as_str().unwrap())
    );
    assert_accounting(&status(&g)?);
    Ok(())
}

#[test]
fn unknown_callers_are_rejected_with_the_right_source_and_reason() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&format!(
        "{}{}",
        dicom_source("imaging", "allow_ae = [\"CT1\"]"),
        dicom_source("remote", "allow = [\"10.99.0.0/16\"]")
    ))?;
    let addr = g.addr("imaging");
    let p = port(addr);
    let calling = py(&t, &["assoc", "127.0.0.1", &p, "INTRUDER", "WARDLINK"])?;
    assert_eq!(
        (
            &calling["rejected"],
            &calling["result"],
            &calling["source"],
            &calling["reason"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(3)
        ),
        "permanent, service user, calling AE title not recognized: {calling}"
    );
    let called = py(&t, &["assoc", "127.0.0.1", &p, "CT1", "SOMEONE"])?;
    assert_eq!(
        called["reason"], 7,
        "called AE title not recognized: {called}"
    );
    let remote = g.addr("remote");
    let network = py(
        &t,
        &["assoc", "127.0.0.1", &port(remote), "CT1", "WARDLINK"],
    )?;
    assert_eq!(
        (&network["rejected"], &network["result"], &network["source"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "sender network not allowed: {network}"
    );
    assert!(
        !echo_ok(&t, addr, "INTRUDER")?,
        "echoscu from an unknown AE must fail"
    );
    // The listener keeps serving the allowed caller.
    let ok = py(&t, &["assoc", "127.0.0.1", &p, "CT1", "WARDLINK"])?;
    assert_eq!(
        (&ok["accepted"], &ok["echo"]),
        (&serde_json::json!(true), &serde_json::json!(0))
    );
    assert!(g.stderr().contains("calling AE title not recognized"));
    Ok(())
}

#[test]
fn an_unsupported_sop_class_is_refused_and_the_association_goes_on() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let addr = g.addr("imaging");
    let dir = g.dir.path().join("one");
    let generated = py(&t, &["gen", dir.to_str().unwrap()])?;
    let file = generated["files"][0]["path"].as_str().unwrap().to_owned();
    let r = py(
        &t,
        &["mixed", "127.0.0.1", &port(addr), "CT1", "WARDLINK", &file],
    )?;
    assert_eq!(
        r["contexts"]["1.2.840.10008.5.1.4.31"], 3,
        "abstract syntax not supported: {r}"
    );
    assert_eq!(r["contexts"][CT], 0, "CT accepted: {r}");
    assert_eq!(r["store"], 0, "{r}");
    assert_eq!(stored(&g)?.len(), 1);
    Ok(())
}

// --- a raw client, for what real clients do not do on purpose -------------

/// The runtime file lists `source` (a reload that adds it has bound it).
fn has_listener(g: &Gateway, source: &str) -> bool {
    g.runtime().is_some_and(|rt| {
        rt["listeners"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["source"] == source))
    })
}

/// SIGHUP restarts only the DICOM sources whose configuration changed: an
/// association open on an unchanged node keeps working while another node
/// is added, changed and removed, and the added node answers.
#[test]
fn a_reload_keeps_associations_on_unchanged_dicom_nodes() -> Result {
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let mut held = Raw::associate(g.addr("imaging"))?;
    assert_eq!(held.echo(1)?, 0x0000);

    // Added.
    let both = format!(
        "{}{}",
        dicom_source("imaging", ""),
        dicom_source("second", "")
    );
    g.reload_with(&both)?;
    assert!(
        wait_until(Duration::from_secs(10), || has_listener(&g, "second")),
        "the added node was not bound:\n{}",
        g.stderr()
    );
    let mut fresh = Raw::associate(g.addr("second"))?;
    assert_eq!(fresh.echo(1)?, 0x0000, "the added node answers");
    assert_eq!(
        held.echo(2)?,
        0x0000,
        "the held association survived an add"
    );

    // Changed (its allowlist of callers), then removed.
    let changed = format!(
        "{}{}",
        dicom_source("imaging", ""),
        dicom_source("second", "allow_ae = [\"RAW\", \"OTHER\"]")
    );
    g.reload_with(&changed)?;
    assert!(
        wait_until(Duration::from_secs(10), || g
            .stderr()
            .contains("`second` changed: restarted")),
        "no restart of the changed node:\n{}",
        g.stderr()
    );
    assert_eq!(
        held.echo(3)?,
        0x0000,
        "the held association survived a change"
    );
    g.reload_with(&dicom_source("imaging", ""))?;
    assert!(
        wait_until(Duration::from_secs(10), || !has_listener(&g, "second")),
        "the removed node is still listed:\n{}",
        g.stderr()
    );
    assert_eq!(
        held.echo(4)?,
        0x0000,
        "the held association survived a removal"
    );
    let log = g.stderr();
    assert!(
        !log.contains("`imaging` changed") && !log.contains("`imaging` added"),
        "the unchanged node was restarted:\n{log}"
    );
    Ok(())
}

struct Raw {
    s: TcpStream,
}

fn element(group: u16, elem: u16, value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(&v);
    out
}

/// A command set (Implicit VR LE, group length first).
fn command(
    sop_class: &str,
    field: u16,
    id: u16,
    with_data: bool,
    instance: Option<&str>,
) -> Vec<u8> {
    let mut body = element(0, 0x0002, sop_class.as_bytes());
    body.extend(element(0, 0x0100, &field.to_le_bytes()));
    body.extend(element(0, 0x0110, &id.to_le_bytes()));
    if field == 0x0001 {
        body.extend(element(0, 0x0700, &0u16.to_le_bytes()));
    }
    let ds_type: u16 = if with_data { 0x0000 } else { 0x0101 };
    body.extend(element(0, 0x0800, &ds_type.to_le_bytes()));
    if let Some(i) = instance {
        body.extend(element(0, 0x1000, i.as_bytes()));
    }
    let mut out = element(0, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn pdata(pc: u8, kind: PDataValueType, last: bool, data: &[u8]) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: kind,
            is_last: last,
            data: data.to_vec(),
        }],
    }
}

impl Raw {
    /// Associates with context 1 = CT (explicit VR LE) and 3 = Verification.
    fn associate(addr: SocketAddr) -> Result<Raw> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut raw = Raw { s };
        raw.send(&Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "RAW".into(),
            called_ae_title: "WARDLINK".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![
                PresentationContextProposed {
                    id: 1,
                    abstract_syntax: CT.into(),
                    transfer_syntaxes: vec![EXPLICIT.into()],
                },
                PresentationContextProposed {
                    id: 3,
                    abstract_syntax: VERIFICATION.into(),
                    transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
                },
            ],
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }))?;
        match raw.recv()? {
            Pdu::AssociationAC(_) => Ok(raw),
            other => Err(format!("expected A-ASSOCIATE-AC, got {other:?}").into()),
        }
    }

    fn send(&mut self, pdu: &Pdu) -> Result {
        let mut bytes = Vec::new();
        write_pdu(&mut bytes, pdu)?;
        self.s.write_all(&bytes)?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Pdu> {
        let mut head = [0u8; 6];
        self.s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut bytes = head.to_vec();
        bytes.resize(6 + len, 0);
        self.s.read_exact(&mut bytes[6..])?;
        Ok(read_pdu(&bytes[..], 1 << 20, false)?.ok_or("incomplete PDU")?)
    }

    /// The status of the next response.
    /// A-ABORT from the calling side, then close the socket.
    fn abort(mut self) -> Result {
        self.send(&Pdu::AbortRQ {
            source: dicom_ul::pdu::AbortRQSource::ServiceUser,
        })
    }

    fn status(&mut self) -> Result<u16> {
        let Pdu::PData { data } = self.recv()? else {
            return Err("expected P-DATA".into());
        };
        let cmd =
            wardlink_devices::dicom::command::parse(&data[0].data).map_err(|e| e.to_string())?;
        let bytes = &data[0].data;
        // Status (0000,0900) is not in `Command`; find it by tag.
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let elem = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into()?) as usize;
            if elem == 0x0900 {
                return Ok(u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]));
            }
            at += 8 + len;
        }
        Err(format!("no status in response {cmd:?}").into())
    }

    fn echo(&mut self, id: u16) -> Result<u16> {
        self.send(&pdata(
            3,
            PDataValueType::Command,
            true,
            &command(VERIFICATION, 0x0030, id, false, None),
        ))?;
        self.status()
    }
}

/// A small explicit VR LE header with a SOP Instance UID and Pixel Data of `pixels` bytes.
fn dataset(instance: &str, pixels: usize) -> Vec<u8> {
    let explicit = |g: u16, e: u16, vr: &[u8; 2], v: &[u8]| {
        let mut v = v.to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OW" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend(v);
        out
    };
    let mut ds = explicit(0x0008, 0x0016, b"UI", CT.as_bytes());
    ds.extend(explicit(0x0008, 0x0018, b"UI", instance.as_bytes()));
    ds.extend(explicit(0x0008, 0x0060, b"CS", b"CT"));
    ds.extend(explicit(0x7FE0, 0x0010, b"OW", &vec![0x55; pixels]));
    ds
}

#[test]
fn abort_or_truncation_mid_transfer_stores_nothing_and_malformed_data_gets_c000() -> Result {
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let addr = g.addr("imaging");

    // 1. A-ABORT after half the data set: nothing stored.
    let mut raw = Raw::associate(addr)?;
    let ds = dataset("1.2.3.100", 40_000);
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 1, true, Some("1.2.3.100")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, false, &ds[..16_000]))?;
    raw.abort()?;

    // 2. A P-DATA PDU cut short, then the socket closes: nothing stored.
    let mut raw = Raw::associate(addr)?;
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 1, true, Some("1.2.3.101")),
    ))?;
    let mut bytes = Vec::new();
    write_pdu(
        &mut bytes,
        &pdata(1, PDataValueType::Data, true, &dataset("1.2.3.101", 1000)),
    )?;
    raw.s.write_all(&bytes[..bytes.len() / 2])?;
    drop(raw);

    // 3. Malformed data set: 0xC000, and the same association goes on.
    let mut raw = Raw::associate(addr)?;
    let mut bad = dataset("1.2.3.102", 10);
    bad[4] = b'u'; // a VR must be upper case
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 5, true, Some("1.2.3.102")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, true, &bad))?;
    assert_eq!(raw.status()?, 0xC000);
    assert_eq!(raw.echo(6)?, 0x0000, "the association keeps serving");
    // A data set that ends inside an element: 0xC000 as well.
    let good = dataset("1.2.3.103", 100);
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 7, true, Some("1.2.3.103")),
    ))?;
    raw.send(&pdata(
        1,
        PDataValueType::Data,
        true,
        &good[..good.len() - 150],
    ))?;
    assert_eq!(raw.status()?, 0xC000);
    // And a good one in several fragments: success.
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 8, true, Some("1.2.3.103")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, false, &good[..20]))?;
    raw.send(&pdata(1, PDataValueType::Data, true, &good[20..]))?;
    assert_eq!(raw.status()?, 0x0000);
    raw.send(&Pdu::ReleaseRQ)?;
    assert!(matches!(raw.recv()?, Pdu::ReleaseRP));

    let rows = stored(&g)?;
    let instances: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        instances,
        ["1.2.3.103"],
        "only the complete, well-formed object is stored"
    );
    let status = status(&g)?;
    assert_accounting(&status);
    assert!(g.stderr().contains("aborted by the peer"));
    Ok(())
}

/// Rows in the store's staging table (headers of objects still arriving).
fn staged_count(g: &Gateway) -> i64 {
    g.open_store()
        .and_then(|c| Ok(c.query_row("SELECT COUNT(*) FROM staged", [], |r| r.get(0))?))
        .unwrap_or(-1)
}

/// A C-STORE's header is committed when its Pixel Data begins, while the
/// pixels still arrive: an abort after that retracts it, a crash keeps it
/// (the next start moves it into the store, counted), and the sender's
/// resend is then answered as a duplicate and stored once.
#[test]
fn a_header_staged_mid_transfer_is_retracted_on_abort_and_kept_after_a_crash() -> Result {
    let mut g = Gateway::start(&dicom_source("imaging", ""))?;
    let ds = dataset("1.2.3.200", 40_000);
    let begin = |raw: &mut Raw| -> Result {
        raw.send(&pdata(
            1,
            PDataValueType::Command,
            true,
            &command(CT, 0x0001, 1, true, Some("1.2.3.200")),
        ))?;
        // The header and the first pixels, not the last fragment.
        raw.send(&pdata(1, PDataValueType::Data, false, &ds[..16_000]))
    };

    // 1. Staged, then the sender aborts: retracted, nothing stored or counted.
    let mut raw = Raw::associate(g.addr("imaging"))?;
    begin(&mut raw)?;
    assert!(
        wait_until(Duration::from_secs(10), || staged_count(&g) == 1),
        "the header is staged while the pixels arrive"
    );
    raw.abort()?;
    assert!(stored(&g)?.is_empty(), "an aborted transfer stores nothing");
    let s = status(&g)?;
    assert_eq!(s["received"], 0, "{s}");
    assert_accounting(&s);

    // 2. Staged, then the gateway dies: the next start keeps the header.
    let mut raw = Raw::associate(g.addr("imaging"))?;
    begin(&mut raw)?;
    assert!(wait_until(Duration::from_secs(10), || staged_count(&g) == 1));
    g.signal_and_wait("-KILL", Duration::from_secs(10))?;
    drop(raw);
    g.spawn()?;
    let rows = stored(&g)?;
    assert_eq!(rows.len(), 1, "the staged header is kept");
    assert_eq!(rows[0].2, "1.2.3.200");
    // With the byte counts seen before the crash.
    let (env, _) = Envelope::parse(&rows[0].4).ok_or("no envelope")?;
    assert_eq!(env.dataset_bytes, 16_000, "{env:?}");
    assert!(env.pixel_bytes > 0 && env.pixel_bytes < 16_000, "{env:?}");
    let s = status(&g)?;
    assert_eq!(
        (s["received"].as_u64(), s["acked"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_accounting(&s);
    assert!(
        g.stderr().contains("kept units whose transfer"),
        "{}",
        g.stderr()
    );

    // 3. The modality sends it again, whole: success, stored once.
    let mut raw = Raw::associate(g.addr("imaging"))?;
    begin(&mut raw)?;
    raw.send(&pdata(1, PDataValueType::Data, true, &ds[16_000..]))?;
    assert_eq!(raw.status()?, 0x0000);
    raw.send(&Pdu::ReleaseRQ)?;
    assert!(matches!(raw.recv()?, Pdu::ReleaseRP));
    assert_eq!(stored(&g)?.len(), 1, "the resend is a duplicate");
    let s = status(&g)?;
    assert_eq!(s["duplicates"].as_u64(), Some(1), "{s}");
    assert_accounting(&s);
    Ok(())
}

/// VmHWM (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
}

#[test]
fn a_300_mb_multi_frame_object_streams_in_bounded_memory() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    send_300_mb(&t, &g, |_, _| Ok(()))?;
    let rows = stored(&g)?;
    assert_eq!(rows.len(), 1);
    let (env, _) = Envelope::parse(&rows[0].4).ok_or("no envelope")?;
    assert!(env.pixel_bytes > 300_000_000, "{env:?}");
    assert!(rows[0].4.len() < 64 * 1024, "only the header is stored");
    assert!(!spool_dir(&g).exists(), "no spool without keep_files");
    Ok(())
}

/// Sends a generated object of 300 MB with storescu, calls `check` with its
/// path and SOP Instance UID before deleting it, and asserts that the peak
/// RSS of wardlink stayed under 64 MiB. Returns the object's size.
fn send_300_mb(t: &Tools, g: &Gateway, check: impl FnOnce(&Path, &str) -> Result) -> Result<u64> {
    let addr = g.addr("imaging");
    let path = g.dir.path().join("big.dcm");
    let big = py(t, &["big", path.to_str().unwrap(), "--mb", "300"])?;
    let size = big["bytes"].as_u64().unwrap();
    assert!(size > 300_000_000, "{big}");
    let before = vm_hwm_kib(g.pid())?;
    let out = storescu(t, addr, "US1", &[&path])?;
    assert!(
        out.status.success(),
        "storescu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = vm_hwm_kib(g.pid())?;
    eprintln!("wardlink VmHWM: {before} KiB before, {after} KiB after a {size}-byte object");
    let checked = check(&path, big["sop_instance"].as_str().unwrap());
    std::fs::remove_file(&path)?;
    checked?;
    assert!(
        after < 64 * 1024,
        "peak RSS {after} KiB (before the object: {before} KiB) must stay under 64 MiB"
    );
    Ok(size)
}

/// pydicom objects with random names, IDs, dates, addresses, phones,
/// Aadhaar and ABHA numbers in standard attributes, Patient Comments and
/// private tags: none of it reaches the outbox, and what the profile keeps
/// is all there.
#[test]
fn nothing_identifying_reaches_the_outbox() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let addr = g.addr("imaging");
    let mut secrets: Vec<String> = Vec::new();
    let mut files = Vec::new();
    for seed in 1..=3 {
        let dir = g.dir.path().join(format!("phi{seed}"));
        let generated = py(
            &t,
            &[
                "gen",
                dir.to_str().unwrap(),
                "--series",
                "1",
                "--images",
                "2",
                "--seed",
                &seed.to_string(),
                "--phi",
            ],
        )?;
        let study = &generated["study"];
        for key in [
            "name",
            "mrn",
            "birth",
            "address",
            "phone",
            "institution",
            "physician",
            "operator",
            "aadhaar",
            "abha",
            "accession",
            "study_id",
            "uid",
            "frame",
        ] {
            let v = study[key].as_str().unwrap();
            secrets.push(v.to_owned());
            // Parts of names and numbers, as they could appear reformatted.
            for part in v.split(['^', ' ', '-']) {
                // Digit groups shorter than 8 occur by chance in the 2.25 UIDs.
                let long_enough = if part.bytes().all(|b| b.is_ascii_digit()) {
                    part.len() >= 8
                } else {
                    part.len() >= 4
                };
                if long_enough && !["Street,", "Pune", "Hospital"].contains(&part) {
                    secrets.push(part.to_owned());
                }
            }
        }
        secrets.push(study["aadhaar"].as_str().unwrap().replace(' ', ""));
        secrets.push(study["abha"].as_str().unwrap().replace('-', ""));
        for f in generated["files"].as_array().unwrap() {
            secrets.push(f["sop_instance"].as_str().unwrap().to_owned());
            secrets.push(f["series"].as_str().unwrap().to_owned());
            files.push(PathBuf::from(f["path"].as_str().unwrap()));
        }
    }
    store_all(&t, addr, "CT1", &files)?;
    let events = outbox_when_processed(&g, files.len())?;
    assert_eq!(
        events.len(),
        files.len() + 3,
        "an instance each and a study each"
    );
    let text = serde_json::to_string(&events.iter().map(|(_, e)| e).collect::<Vec<_>>())?;
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{s:?} leaked into the outbox: {text}"
        );
    }
    // What the profile keeps is there.
    for (ty, e) in &events {
        if ty != "imaging_instance" {
            continue;
        }
        assert_eq!(e["modality"], "CT");
        assert_eq!(e["sop_class"], CT);
        assert_eq!(e["body_part"], "CHEST");
        assert_eq!(e["protocol"], "CHEST ROUTINE");
        assert_eq!(e["series_description"], "AXIAL 5MM");
        assert_eq!(e["equipment"]["station"], "CTROOM3");
        assert!(e["equipment"]["serial"]
            .as_str()
            .unwrap()
            .starts_with("SN-"));
        assert_eq!(e["equipment"]["manufacturer"], "ACME Medical");
        assert_eq!(e["ctdi_vol"], 7.5);
        assert_eq!(e["kvp"], 120.0);
        assert_eq!(e["frames"], 1);
        assert!(e["acquired_at"].is_string() && e["patient"].as_str().unwrap().starts_with("P1-"));
        assert_eq!(e["pixel_bytes"], 64 * 64 * 2 + 12);
    }
    Ok(())
}

/// `wardlink deid FILE.dcm` shows per attribute what is uploaded and which
/// rule acted, never a removed value; `--print-profile dicom` prints the table.
#[test]
fn deid_reviews_a_dicom_file_and_prints_the_annex_e_profile() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let generated = py(&t, &["gen", dir.path().to_str().unwrap(), "--phi"])?;
    let file = generated["files"][0]["path"].as_str().unwrap();
    let name = generated["study"]["name"].as_str().unwrap();
    let mrn = generated["study"]["mrn"].as_str().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(&config, config_text(&dir.path().join("state"), ""))?;
    let out = wardlink(&["deid", "--config", config.to_str().unwrap(), file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("\"type\":\"imaging_instance\""), "{text}");
    assert!(
        text.contains("(0010,0010)") && text.contains("PatientName: basic Z"),
        "{text}"
    );
    assert!(
        text.contains("(0011,1001)") && text.contains("private attribute (X)"),
        "{text}"
    );
    assert!(
        text.contains("StationName: K with retain_device_identity"),
        "{text}"
    );
    for part in name.split('^').chain([mrn]) {
        assert!(!text.contains(part), "{part} printed by deid:\n{text}");
    }
    let out = wardlink(&["deid", "--print-profile", "dicom"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout)?;
    assert!(table.contains("(0010,0010)   PatientName"), "{table}");
    assert!(table.contains("(0020,000D)   StudyInstanceUID"), "{table}");
    assert!(!wardlink(&["deid", "--print-profile", "pdf"])
        .status
        .success());
    Ok(())
}

/// The MPPS state survives a restart: an N-SET after it finds its N-CREATE,
/// and a step completed before it may still not be updated.
#[test]
fn mpps_steps_survive_a_restart() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let mut g = Gateway::start(&dicom_source("imaging", ""))?;
    let p = port(g.addr("imaging"));
    let (open, done) = ("1.2.826.0.1.3680043.9.7.1", "1.2.826.0.1.3680043.9.7.2");
    for uid in [open, done] {
        let r = py(
            &t,
            &["step", "127.0.0.1", &p, "MR1", "WARDLINK", "create", uid],
        )?;
        assert_eq!(r["status"], 0, "{r}");
    }
    let r = py(
        &t,
        &[
            "step",
            "127.0.0.1",
            &p,
            "MR1",
            "WARDLINK",
            "set",
            done,
            "COMPLETED",
        ],
    )?;
    assert_eq!(r["status"], 0, "{r}");
    let status = g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    assert!(status.success(), "{status:?}");
    g.spawn()?;
    let p = port(g.addr("imaging"));
    let r = py(
        &t,
        &[
            "step",
            "127.0.0.1",
            &p,
            "MR1",
            "WARDLINK",
            "set",
            open,
            "DISCONTINUED",
        ],
    )?;
    assert_eq!(
        r["status"], 0,
        "the step created before the restart is known: {r}"
    );
    let r = py(
        &t,
        &[
            "step",
            "127.0.0.1",
            &p,
            "MR1",
            "WARDLINK",
            "set",
            done,
            "IN PROGRESS",
        ],
    )?;
    assert_eq!(
        r["status"], 0x0110,
        "a step completed before the restart stays final: {r}"
    );
    let r = py(
        &t,
        &[
            "step",
            "127.0.0.1",
            &p,
            "MR1",
            "WARDLINK",
            "set",
            "1.2.3.999",
            "COMPLETED",
        ],
    )?;
    assert_eq!(r["status"], 0x0112, "{r}");
    Ok(())
}

// --- keep_files: whole objects in a local spool (issue 7) ------------------

/// `keep_files_dir` of the tests, relative to the state directory.
const SPOOL: &str = "keep_files_dir = \"dicom-spool\"";

fn spool_dir(g: &Gateway) -> PathBuf {
    g.state_dir().join("dicom-spool")
}

/// Every kept file under a spool directory (`hh/h.dcm`).
fn kept_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for fan in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if fan.file_name() == ".partial" {
            continue;
        }
        for f in std::fs::read_dir(fan.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(f.path());
        }
    }
    files.sort();
    files
}

/// Objects in progress (partial files) in a spool directory.
fn partial_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".partial")).map_or(0, |d| d.count())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

/// The meta group and the offset of the data set of a Part 10 file.
fn part10(bytes: &[u8]) -> Result<(Envelope, usize)> {
    Ok(Envelope::parse(bytes).ok_or("not a Part 10 file")?)
}

/// dcmtk's dcmdump reads the file (exit 0); its output.
fn dcmdump(path: &Path) -> Result<String> {
    let out = run(
        Command::new("/usr/bin/dcmdump").arg("-q").arg(path),
        Duration::from_secs(30),
    )?;
    assert!(
        out.status.success(),
        "dcmdump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A C-STORE of `ds` (explicit VR LE, context 1) in fragments of `chunk` bytes.
fn raw_store(raw: &mut Raw, id: u16, instance: &str, ds: &[u8], chunk: usize) -> Result<u16> {
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, id, true, Some(instance)),
    ))?;
    let pieces: Vec<&[u8]> = ds.chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        raw.send(&pdata(
            1,
            PDataValueType::Data,
            i + 1 == pieces.len(),
            piece,
        ))?;
    }
    raw.status()
}

/// storescu's objects are kept whole: the data set byte for byte as sent
/// behind a meta group with the negotiated transfer syntax, the command's
/// SOP class and instance and the calling AE; named by a hash, mode 0600 in
/// 0700 directories; dcmdump reads them. The store still holds only headers.
#[test]
fn keep_files_keeps_each_object_whole_and_byte_for_byte() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source("imaging", SPOOL))?;
    let addr = g.addr("imaging");
    let (generated, paths) = generate(
        &t,
        &g.dir.path().join("study"),
        &["--series", "1", "--images", "3", "--phi"],
    )?;
    let files = generated["files"].as_array().unwrap();
    store_all(&t, addr, "CT1", &paths)?;
    let spool = spool_dir(&g);
    assert_eq!(kept_files(&spool).len(), 3, "one file per object");
    assert_eq!(partial_files(&spool), 0);
    assert_eq!(mode(&spool), 0o700);
    let name = generated["study"]["name"].as_str().unwrap();
    for (f, original) in files.iter().zip(&paths) {
        let instance = f["sop_instance"].as_str().unwrap();
        let kept = kept_path(&spool, instance);
        assert!(kept.is_file(), "{} missing", kept.display());
        let file_name = kept.to_string_lossy().into_owned();
        assert!(!file_name.contains(instance) && !file_name.contains(name));
        assert_eq!(mode(&kept), 0o600);
        assert_eq!(mode(kept.parent().unwrap()), 0o700);
        let bytes = std::fs::read(&kept)?;
        let sent = std::fs::read(original)?;
        let (meta, at) = part10(&bytes)?;
        let (_, sent_at) = part10(&sent)?;
        assert_eq!(meta.sop_instance, instance);
        assert_eq!(meta.sop_class, CT);
        assert_eq!(meta.transfer_syntax, EXPLICIT, "the negotiated syntax");
        assert_eq!(meta.calling_ae, "CT1");
        assert!(
            bytes[at..] == sent[sent_at..],
            "the data set of {} differs from what storescu sent ({} vs {} bytes)",
            kept.display(),
            bytes.len() - at,
            sent.len() - sent_at
        );
        let dump = dcmdump(&kept)?;
        assert!(dump.contains(instance), "{dump}");
        assert!(dump.contains("(7fe0,0010)"), "pixels kept: {dump}");
    }
    let rows = stored(&g)?;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r.4.len() < 8000),
        "the store keeps only headers"
    );
    let status = status(&g)?;
    assert_accounting(&status);
    // `wardlink status` shows the spool's use, read from the disk.
    let on_disk: u64 = kept_files(&spool)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let keep = &status["keep_files"]["imaging"];
    assert_eq!(keep["files"], 3, "{status}");
    assert_eq!(keep["bytes"], on_disk, "{status}");
    assert!(
        keep["max_bytes"].as_u64().unwrap_or(0) > on_disk,
        "{status}"
    );
    assert_eq!(status["sources"]["imaging"]["acked"], 3, "{status}");
    Ok(())
}

/// Over keep_files_max_bytes the oldest kept files are deleted and every
/// object is still answered success (the spool is a convenience copy; the
/// headers are in the store).
#[test]
fn keep_files_over_its_quota_deletes_the_oldest_files() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source(
        "imaging",
        &format!("{SPOOL}\nkeep_files_max_bytes = 1048576"),
    ))?;
    let addr = g.addr("imaging");
    // 384 x 384 x 16 bits: about 295 kB each, so three fit in 1 MiB.
    let (generated, paths) = generate(
        &t,
        &g.dir.path().join("study"),
        &["--images", "5", "--rows", "384"],
    )?;
    let files = generated["files"].as_array().unwrap();
    store_all(&t, addr, "CT1", &paths)?;
    let spool = spool_dir(&g);
    let kept: Vec<bool> = files
        .iter()
        .map(|f| kept_path(&spool, f["sop_instance"].as_str().unwrap()).is_file())
        .collect();
    assert_eq!(
        kept,
        [false, false, true, true, true],
        "the newest three are kept"
    );
    let total: u64 = kept_files(&spool)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    assert!(total <= 1_048_576, "{total} bytes kept");
    assert_eq!(stored(&g)?.len(), 5, "every header is stored");
    assert!(g.stderr().contains("deleted the oldest kept files"));
    Ok(())
}

/// An object larger than the whole quota, and a spool that cannot be
/// written, get 0xA700 with nothing stored; the association goes on, and a
/// repaired spool is used again without a restart.
#[test]
fn keep_files_failures_answer_a700_and_the_association_keeps_serving() -> Result {
    let g = Gateway::start(&dicom_source(
        "imaging",
        &format!("{SPOOL}\nkeep_files_max_bytes = 1048576"),
    ))?;
    let addr = g.addr("imaging");
    let spool = spool_dir(&g);
    let mut raw = Raw::associate(addr)?;
    assert_eq!(
        raw_store(
            &mut raw,
            1,
            "1.2.3.200",
            &dataset("1.2.3.200", 1000),
            60_000
        )?,
        0
    );
    assert!(kept_path(&spool, "1.2.3.200").is_file());

    // 1. Larger than the quota: refused as it streams past it.
    let big = dataset("1.2.3.201", 1_100_000);
    assert_eq!(raw_store(&mut raw, 2, "1.2.3.201", &big, 60_000)?, 0xA700);
    assert!(!kept_path(&spool, "1.2.3.201").exists());
    assert_eq!(partial_files(&spool), 0, "its partial file is gone");
    assert_eq!(raw.echo(3)?, 0);
    assert_eq!(
        raw_store(
            &mut raw,
            4,
            "1.2.3.202",
            &dataset("1.2.3.202", 1000),
            60_000
        )?,
        0
    );

    // 2. The spool directory replaced by a file (root ignores permissions,
    // so a directory made read-only would still be writable here).
    let aside = g.state_dir().join("spool-aside");
    std::fs::rename(&spool, &aside)?;
    std::fs::write(&spool, b"not a directory")?;
    assert_eq!(
        raw_store(
            &mut raw,
            5,
            "1.2.3.203",
            &dataset("1.2.3.203", 1000),
            60_000
        )?,
        0xA700
    );
    assert_eq!(raw.echo(6)?, 0, "the association keeps serving");

    // 3. Repaired: used again, in the same association.
    std::fs::remove_file(&spool)?;
    std::fs::rename(&aside, &spool)?;
    assert_eq!(
        raw_store(
            &mut raw,
            7,
            "1.2.3.204",
            &dataset("1.2.3.204", 1000),
            60_000
        )?,
        0
    );
    assert!(kept_path(&spool, "1.2.3.204").is_file());
    raw.send(&Pdu::ReleaseRQ)?;
    assert!(matches!(raw.recv()?, Pdu::ReleaseRP));

    let instances: Vec<String> = stored(&g)?.into_iter().map(|r| r.2).collect();
    assert_eq!(
        instances,
        ["1.2.3.200", "1.2.3.202", "1.2.3.204"],
        "refused objects are not stored"
    );
    let log = g.stderr();
    assert!(log.contains("does not fit keep_files_max_bytes"), "{log}");
    // Even at debug level, UIDs go into the log only hashed.
    assert!(
        !log.contains("1.2.3.20"),
        "a SOP Instance UID in the log:\n{log}"
    );
    assert!(
        log.contains("cannot write the object to the spool"),
        "{log}"
    );
    let status = status(&g)?;
    assert_accounting(&status);
    assert_eq!(status["sources"]["imaging"]["rejected"], 2, "{status}");
    Ok(())
}

/// An A-ABORT or a truncated PDU in the middle of an object leaves no file:
/// the partial file that was being written is removed; one left by
/// `kill -9` is removed at the next start.
#[test]
fn keep_files_abort_or_truncation_mid_transfer_leaves_no_file() -> Result {
    let mut g = Gateway::start(&dicom_source("imaging", SPOOL))?;
    let addr = g.addr("imaging");
    let spool = spool_dir(&g);
    let ds = dataset("1.2.3.300", 200_000);

    let mut raw = Raw::associate(addr)?;
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 1, true, Some("1.2.3.300")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, false, &ds[..60_000]))?;
    assert!(
        wait_until(Duration::from_secs(10), || partial_files(&spool) == 1),
        "the object is being written"
    );
    raw.abort()?;
    assert!(
        wait_until(Duration::from_secs(10), || partial_files(&spool) == 0),
        "the aborted object's partial file is removed"
    );

    let mut raw = Raw::associate(addr)?;
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 1, true, Some("1.2.3.301")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, false, &ds[..60_000]))?;
    let mut bytes = Vec::new();
    write_pdu(
        &mut bytes,
        &pdata(1, PDataValueType::Data, true, &ds[60_000..120_000]),
    )?;
    raw.s.write_all(&bytes[..bytes.len() / 2])?;
    assert!(wait_until(Duration::from_secs(10), || partial_files(
        &spool
    ) == 1));
    drop(raw);
    assert!(
        wait_until(Duration::from_secs(10), || partial_files(&spool) == 0),
        "the truncated object's partial file is removed"
    );
    assert_eq!(kept_files(&spool), Vec::<PathBuf>::new());
    assert!(stored(&g)?.is_empty());

    let mut raw = Raw::associate(addr)?;
    raw.send(&pdata(
        1,
        PDataValueType::Command,
        true,
        &command(CT, 0x0001, 1, true, Some("1.2.3.302")),
    ))?;
    raw.send(&pdata(1, PDataValueType::Data, false, &ds[..60_000]))?;
    assert!(wait_until(Duration::from_secs(10), || partial_files(
        &spool
    ) == 1));
    g.signal_and_wait("-KILL", Duration::from_secs(10))?;
    drop(raw);
    assert_eq!(partial_files(&spool), 1, "left behind by kill -9");
    g.spawn()?;
    assert_eq!(partial_files(&spool), 0, "removed at start");
    assert_eq!(kept_files(&spool), Vec::<PathBuf>::new());
    Ok(())
}

/// Files older than keep_files_retention are deleted by the source's timer,
/// with nothing else arriving; the stored header stays.
#[test]
fn keep_files_retention_deletes_old_files() -> Result {
    let g = Gateway::start(&dicom_source(
        "imaging",
        &format!("{SPOOL}\nkeep_files_retention = \"2s\""),
    ))?;
    let spool = spool_dir(&g);
    let mut raw = Raw::associate(g.addr("imaging"))?;
    assert_eq!(
        raw_store(
            &mut raw,
            1,
            "1.2.3.400",
            &dataset("1.2.3.400", 1000),
            60_000
        )?,
        0
    );
    let kept = kept_path(&spool, "1.2.3.400");
    assert!(kept.is_file(), "kept when the success status went out");
    raw.send(&Pdu::ReleaseRQ)?;
    assert!(matches!(raw.recv()?, Pdu::ReleaseRP));
    assert!(
        wait_until(Duration::from_secs(15), || !kept.exists()),
        "{} outlived its retention",
        kept.display()
    );
    assert_eq!(stored(&g)?.len(), 1);
    Ok(())
}

/// keep_files follows a reload: SIGHUP with keep_files_dir added restarts
/// the DICOM source, which then keeps whole objects.
#[test]
fn keep_files_is_turned_on_by_a_reload() -> Result {
    let g = Gateway::start(&dicom_source("imaging", ""))?;
    let mut raw = Raw::associate(g.addr("imaging"))?;
    assert_eq!(
        raw_store(
            &mut raw,
            1,
            "1.2.3.500",
            &dataset("1.2.3.500", 1000),
            60_000
        )?,
        0
    );
    raw.send(&Pdu::ReleaseRQ)?;
    assert!(matches!(raw.recv()?, Pdu::ReleaseRP));
    drop(raw);
    assert!(!spool_dir(&g).exists());

    g.reload_with(&dicom_source("imaging", SPOOL))?;
    assert!(
        wait_until(Duration::from_secs(15), || g
            .stderr()
            .contains("[[source.dicom]] `imaging` changed: restarted")),
        "no reload:\n{}",
        g.stderr()
    );
    let mut raw = Raw::associate(g.addr("imaging"))?;
    assert_eq!(
        raw_store(
            &mut raw,
            1,
            "1.2.3.501",
            &dataset("1.2.3.501", 1000),
            60_000
        )?,
        0
    );
    let spool = spool_dir(&g);
    assert!(kept_path(&spool, "1.2.3.501").is_file());
    assert!(!kept_path(&spool, "1.2.3.500").exists());
    Ok(())
}

/// The bounded-memory test with keep_files on: the 300 MB object streams
/// into its file (never into memory), and the file's data set is the sent
/// one, compared in chunks.
#[test]
fn a_300_mb_object_kept_whole_streams_in_bounded_memory() -> Result {
    let Some(t) = tools() else { return Ok(()) };
    let g = Gateway::start(&dicom_source(
        "imaging",
        &format!("{SPOOL}\nkeep_files_max_bytes = 1073741824"),
    ))?;
    let spool = spool_dir(&g);
    send_300_mb(&t, &g, |sent, instance| {
        let kept = kept_path(&spool, instance);
        let mut a = std::fs::File::open(&kept)?;
        let mut b = std::fs::File::open(sent)?;
        let mut head = vec![0; 4096];
        a.read_exact(&mut head)?;
        let (_, at) = part10(&head)?;
        let mut sent_head = vec![0; 4096];
        b.read_exact(&mut sent_head)?;
        let (_, sent_at) = part10(&sent_head)?;
        assert_eq!(
            std::fs::metadata(&kept)?.len() - at as u64,
            std::fs::metadata(sent)?.len() - sent_at as u64,
            "data set lengths"
        );
        use std::io::{Seek as _, SeekFrom};
        a.seek(SeekFrom::Start(at as u64))?;
        b.seek(SeekFrom::Start(sent_at as u64))?;
        let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
        loop {
            let n = a.read(&mut x)?;
            if n == 0 {
                break;
            }
            b.read_exact(&mut y[..n])?;
            assert!(x[..n] == y[..n], "the kept data set differs");
        }
        Ok(())
    })?;
    assert_eq!(stored(&g)?.len(), 1);
    Ok(())
}
