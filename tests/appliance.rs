//! End-to-end: the appliance's runtime parts with the real binary (issue 8):
//! the systemd notify protocol (READY, STATUS, WATCHDOG, STOPPING).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The datagram socket a test owns as `NOTIFY_SOCKET`.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> Result<NotifySocket> {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path)?;
        Ok(NotifySocket { sock, path })
    }

    /// The next datagram within `within`, if any.
    fn recv(&self, within: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(within)).ok()?;
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Every datagram arriving during `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            if let Some(d) = self.recv(left) {
                out.push(d);
            }
        }
        out
    }
}

fn pings(datagrams: &[String]) -> usize {
    datagrams
        .iter()
        .filter(|d| d.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

/// READY=1 comes once the listener answers (an ORU sent right then gets
/// AA), with a STATUS= line; WATCHDOG=1 arrives every quarter interval;
/// while another connection holds an exclusive lock on the database the
/// store cannot commit and the pings stop; they resume when it is released;
/// SIGTERM sends STOPPING=1.
#[test]
fn notify_ready_status_and_watchdog_follow_the_store() -> Result {
    let mut g = Gateway::prepare(&mllp_source("lab", ""))?;
    let notify = NotifySocket::bind(g.dir.path())?;
    let stderr = std::fs::File::create(&g.stderr_path)?;
    let watchdog = Duration::from_millis(400);
    g.child = Some(
        Command::new(wardlink_bin())
            .args(["run", "--config"])
            .arg(&g.config)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?,
    );

    // READY=1 (and STATUS=) in the first datagram; at that moment the
    // listener is bound and the store takes a message.
    let first = notify
        .recv(Duration::from_secs(30))
        .ok_or_else(|| format!("no notification:\n{}", g.stderr()))?;
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    let mut client = Client::connect(g.addr("lab"))?;
    let ack = client.exchange(&oru("NOTIFY1"))?;
    assert_eq!(ack.code, "AA", "{}", ack.raw);
    let status = first
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .ok_or("no STATUS= with READY=1")?;
    assert!(status.contains("1 of 1 sources up"), "{status}");
    assert!(status.contains("backlog"), "{status}");

    let before = notify.collect(Duration::from_secs(2));
    assert!(
        pings(&before) >= 4,
        "expected a ping every 100 ms, got {before:?}"
    );
    // A healthy start raises no alarm (the writer's first heartbeat commits
    // at once; the notifier does not alarm before the first commit).
    let log = g.stderr();
    assert!(
        !log.contains("watchdog pings stop"),
        "an alarm before anything was locked:\n{log}"
    );

    // Lock the database as another process would; the heartbeat cannot
    // commit, so the pings stop within half the interval.
    let mut lock_conn = g.open_store()?;
    let lock = lock_conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    let _grace = notify.collect(watchdog);
    let locked = notify.collect(Duration::from_millis(1500));
    assert_eq!(
        pings(&locked),
        0,
        "pinged while the store was locked: {locked:?}"
    );
    lock.rollback()?;
    drop(lock_conn);

    let mut after = Vec::new();
    let end = Instant::now() + Duration::from_secs(8);
    while pings(&after) == 0 && Instant::now() < end {
        after.extend(notify.recv(Duration::from_millis(200)));
    }
    assert!(pings(&after) >= 1, "pings did not resume: {after:?}");
    let log = g.stderr();
    assert!(
        log.contains("watchdog pings stop"),
        "no alarm in the log:\n{log}"
    );

    let status = g.signal_and_wait("-TERM", Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    let rest = notify.collect(Duration::from_millis(200));
    let all: Vec<&String> = after.iter().chain(rest.iter()).collect();
    assert!(
        all.iter().any(|d| d.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1: {all:?}"
    );
    Ok(())
}

/// Upgrading an existing store: before a migration runs, systemd is asked
/// for more start time (`EXTEND_TIMEOUT_USEC=`, with a `STATUS=` saying
/// why), so that a migration reading a big store is not killed by the start
/// timeout and rolled back at every restart; then READY=1, with the
/// migration done and the stored message kept. A new store gets no
/// extension (its first datagram is READY=1, see the test above).
#[test]
fn upgrading_a_store_asks_systemd_for_time_before_migrating_and_keeps_its_events() -> Result {
    let mut g = Gateway::start(&mllp_source("lab", ""))?;
    let mut client = Client::connect(g.addr("lab"))?;
    assert_eq!(client.exchange(&oru("UPGRADE1"))?.code, "AA");
    drop(client);
    assert!(g
        .signal_and_wait("-TERM", Duration::from_secs(20))?
        .success());
    // Back to schema version 3, as an older wardlink left it: version 4
    // only added the MPPS index; version 5 made the outbox a row per
    // message; version 6 added the DICOM staging table; version 7 moved the
    // duplicate index off `messages` into `dedup`. The old outbox gets
    // two events of its own, and AUTOINCREMENT's high-water mark above them
    // (ids never come back).
    {
        let conn = g.open_store()?;
        conn.execute_batch(
            r#"DROP INDEX messages_mpps;
               DROP TABLE staged;
               DROP TABLE dedup;
               CREATE INDEX messages_dedup ON messages (dedup_key, received_at)
                  WHERE dedup_key IS NOT NULL;
               DROP TABLE outbox;
               CREATE TABLE outbox (
                  id          INTEGER PRIMARY KEY AUTOINCREMENT,
                  message_id  INTEGER NOT NULL,
                  source      TEXT    NOT NULL,
                  type        TEXT    NOT NULL,
                  event       TEXT    NOT NULL,
                  created_at  INTEGER NOT NULL DEFAULT 0);
               CREATE INDEX outbox_message ON outbox (message_id);
               INSERT INTO outbox (id, message_id, source, type, event, created_at) VALUES
                  (41, 1, 'lab', 'observation', '{"type":"observation","v":1}', 5),
                  (42, 1, 'lab', 'adt', '{"type":"adt","v":2}', 5);
               UPDATE sqlite_sequence SET seq = 90 WHERE name = 'outbox';
               DELETE FROM meta WHERE key = 'event_id_floor';
               PRAGMA user_version = 3;"#,
        )?;
    }

    let notify = NotifySocket::bind(g.dir.path())?;
    let stderr = std::fs::File::create(&g.stderr_path)?;
    g.child = Some(
        Command::new(wardlink_bin())
            .args(["run", "--config"])
            .arg(&g.config)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?,
    );
    let mut datagrams = Vec::new();
    while !datagrams
        .iter()
        .any(|d: &String| d.lines().any(|l| l == "READY=1"))
    {
        let d = notify
            .recv(Duration::from_secs(30))
            .ok_or_else(|| format!("no READY=1 after {datagrams:?}:\n{}", g.stderr()))?;
        datagrams.push(d);
    }
    let first = &datagrams[0];
    assert!(
        first.lines().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
        "no start-timeout extension before the migration: {datagrams:?}"
    );
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("schema version 4")),
        "{first:?}"
    );
    assert!(!first.lines().any(|l| l == "READY=1"), "{first:?}");

    let conn = g.open_store()?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(version, wardlink::store::schema::LATEST);
    // The old events are still there, with their ids, and the next id is
    // above every id ever given.
    let events: Vec<(i64, String, String)> = wardlink::store::outbox::stored_events(&conn)?
        .into_iter()
        .map(|e| (e.event_id, e.kind, e.json))
        .collect();
    assert_eq!(
        events,
        vec![
            (
                41,
                "observation".into(),
                r#"{"type":"observation","v":1}"#.into()
            ),
            (42, "adt".into(), r#"{"type":"adt","v":2}"#.into()),
        ]
    );
    assert_eq!(wardlink::store::outbox::next_event_id(&conn)?, 91);
    let index: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'messages_mpps'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(index, 1);
    let kept: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE control_id = 'UPGRADE1'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(kept, 1);
    drop(conn);
    // The message stored before the upgrade is still known as a duplicate:
    // its key moved into the new index.
    let mut client = Client::connect(g.addr("lab"))?;
    assert_eq!(client.exchange(&oru("UPGRADE1"))?.code, "AA");
    drop(client);
    assert!(g
        .signal_and_wait("-TERM", Duration::from_secs(20))?
        .success());
    let conn = g.open_store()?;
    let (stored, duplicates): (i64, i64) = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM messages WHERE control_id = 'UPGRADE1'),
                (SELECT SUM(duplicates) FROM counters)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!((stored, duplicates), (1, 1));
    Ok(())
}

/// A plain HTTP/1.1 GET with timeouts: (status code, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    Ok((code, body.to_string()))
}

/// Run `cmd`, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<std::process::Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Ok(out?),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            Err(format!("{cmd:?} did not finish within {timeout:?}").into())
        }
    }
}

/// The external tool `name`, or `None` (then the test is skipped, unless
/// WARDLINK_REQUIRE_EXTERNAL is set: then it fails).
fn external(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("WARDLINK_REQUIRE_EXTERNAL").is_none(),
            "{name} is not installed but external tools are required (scripts/install-test-deps.sh)"
        );
        eprintln!("SKIPPED part: {name} not installed; run scripts/test.sh to include it");
    }
    found
}

/// A message whose header is fine (so it is stored and ACKed) but with no
/// OBX: the pipeline quarantines it (SEGMENT_REQUIRED_MISSING).
fn oru_without_obx(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|MONITOR|ICU-7|WARDLINK|HOSP|20261123101500+0530||ORU^R01^ORU_R01|{control_id}|P|2.6\r\
         PID|1||MRN{control_id}^^^HOSP^MR||Sharma^Priya^K||19780412|F\r"
    )
    .into_bytes()
}

/// The identifiers the test messages carry; none may appear on the page or
/// in the metrics.
const IDENTIFIERS: [&str; 7] = [
    "Sharma",
    "Priya",
    "MRN",
    "19780412",
    "Bengaluru",
    "MG Road",
    "Rao",
];

/// After a load on two sources (one message quarantined): `/metrics` passes
/// `promtool check metrics` and has the per-source counters; the status page
/// loaded in headless Chromium shows both sources with their counters and
/// the quarantine reason, and a screenshot is taken; neither contains any
/// identifier that was sent.
#[test]
fn admin_metrics_and_status_page_show_counts_never_phi() -> Result {
    let g = Gateway::start(&format!(
        "{}{}",
        mllp_source("icu", ""),
        mllp_source("lab", "")
    ))?;
    let admin: std::net::SocketAddr = g
        .runtime()
        .and_then(|rt| rt["admin"].as_str().map(str::to_string))
        .ok_or("no admin address in run.json")?
        .parse()?;
    let mut icu = Client::connect(g.addr("icu"))?;
    for i in 0..20 {
        assert_eq!(icu.exchange(&oru(&format!("ICU{i:03}")))?.code, "AA");
    }
    assert_eq!(icu.exchange(&oru("ICU000"))?.code, "AA"); // a resend: duplicate
    assert_eq!(icu.exchange(&oru_without_obx("ICUQ1"))?.code, "AA");
    let mut lab = Client::connect(g.addr("lab"))?;
    for i in 0..7 {
        assert_eq!(lab.exchange(&oru(&format!("LAB{i:03}")))?.code, "AA");
    }
    assert!(
        wait_until(Duration::from_secs(20), || g
            .status_json()
            .is_ok_and(|s| s["awaiting"] == 0 && s["quarantined"] == 1)),
        "the pipeline did not finish: {:?}",
        g.status_json()
    );
    assert_accounting(&g.status_json()?);

    let (code, metrics) = http_get(admin, "/metrics")?;
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "wardlink_messages_received_total{source=\"icu\"} 22",
        "wardlink_messages_acked_total{source=\"icu\"} 21",
        "wardlink_messages_duplicates_total{source=\"icu\"} 1",
        "wardlink_messages_acked_total{source=\"lab\"} 7",
        "wardlink_messages_quarantined{source=\"icu\"} 1",
        "wardlink_quarantine_messages{reason=\"SEGMENT_REQUIRED_MISSING\"} 1",
        "wardlink_source_up{source=\"lab\",kind=\"mllp\"} 1",
        "wardlink_source_link_state{source=\"icu\",kind=\"mllp\",state=\"listening\"} 1",
        "wardlink_commit_duration_seconds_count ",
        "wardlink_store_bytes ",
        "wardlink_upload_errors_total 0",
    ] {
        assert!(metrics.contains(line), "{line:?} missing in:\n{metrics}");
    }
    let metrics_file = g.dir.path().join("metrics.txt");
    std::fs::write(&metrics_file, &metrics)?;
    if let Some(promtool) = external("promtool") {
        let mut cmd = Command::new(promtool);
        cmd.args(["check", "metrics"])
            .stdin(std::fs::File::open(&metrics_file)?);
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
        assert!(
            child.status.success(),
            "promtool check metrics failed: {}{}",
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
    }

    let (code, page) = http_get(admin, "/")?;
    assert_eq!(code, 200);
    for external_ref in ["src=", "<link", "<script", "url(", "@import"] {
        assert!(
            !page.contains(external_ref),
            "the page must be self-contained ({external_ref}):\n{page}"
        );
    }
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    for text in [&metrics, &page] {
        for id in IDENTIFIERS {
            assert!(!text.contains(id), "{id:?} appears in:\n{text}");
        }
    }

    if let Some(chromium) = external("chromium") {
        let profile = g.dir.path().join("chromium-profile");
        let shot = g.dir.path().join("status.png");
        let flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ];
        let url = format!("http://{admin}/");
        let mut dump = Command::new(&chromium);
        dump.args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(&url);
        let out = run_with_timeout(dump, Duration::from_secs(90))?;
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && dom.contains("<table id=\"sources\""),
            "chromium --dump-dom: {}\n{dom}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The rows as the browser parsed them: name, kind, state, detail,
        // received, acked, ...
        let row = |name: &str| -> Vec<String> {
            let start = dom
                .find(&format!("<tr data-source=\"{name}\">"))
                .unwrap_or_else(|| panic!("no row for {name} in {dom}"));
            let end = start + dom[start..].find("</tr>").expect("row end");
            dom[start..end]
                .split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = &cell[cell.find('>').expect("cell") + 1..];
                    inner.split("</td>").next().unwrap_or("").to_string()
                })
                .collect()
        };
        let icu_row = row("icu");
        assert_eq!(&icu_row[..3], ["icu", "mllp", "listening"], "{icu_row:?}");
        assert_eq!(&icu_row[4..8], ["22", "21", "0", "1"], "{icu_row:?}");
        let lab_row = row("lab");
        assert_eq!(&lab_row[4..6], ["7", "7"], "{lab_row:?}");
        assert!(dom.contains("SEGMENT_REQUIRED_MISSING"), "{dom}");
        for id in IDENTIFIERS {
            assert!(!dom.contains(id), "{id:?} appears in the DOM");
        }

        let mut snap = Command::new(&chromium);
        snap.args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url);
        let out = run_with_timeout(snap, Duration::from_secs(90))?;
        let png = std::fs::read(&shot).unwrap_or_default();
        assert!(
            out.status.success() && png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "no screenshot ({} bytes): {}",
            png.len(),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(keep) = std::env::var_os("WARDLINK_KEEP_SCREENSHOT") {
            std::fs::copy(&shot, keep)?;
        }
    }
    Ok(())
}

/// The collector's admin endpoint after a gateway uploaded: `/metrics`
/// passes promtool and counts the gateway's batches and events; the page
/// lists the gateway with its last seen time and no gaps.
#[test]
fn collector_metrics_and_page_list_gateways() -> Result {
    let c = Collector::start()?;
    let fast = "batch_max_events = 25\nbatch_max_age = \"200ms\"\nretry_backoff_min = \"100ms\"\nretry_backoff_max = \"500ms\"";
    let mut g = Gateway::prepare(&c.gateway_config(fast, &mllp_source("ward", ""))?)?;
    let keygen = g.keygen()?;
    c.enroll_from_keygen(&keygen)?;
    let id = keygen
        .lines()
        .find_map(|l| l.strip_prefix("gateway id: "))
        .ok_or("no gateway id")?
        .to_string();
    g.spawn()?;
    let mut client = Client::connect(g.addr("ward"))?;
    for i in 0..10 {
        assert_eq!(client.exchange(&oru(&format!("C{i}")))?.code, "AA");
    }
    assert!(
        wait_until(Duration::from_secs(60), || g
            .status_json()
            .is_ok_and(|s| s["uploaded"] == 10)),
        "not uploaded: {:?}",
        g.status_json()
    );
    let admin: std::net::SocketAddr = c.admin_url.trim_start_matches("http://").parse()?;
    let (code, metrics) = http_get(admin, "/metrics")?;
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("wardlink_collector_gateways 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "wardlink_collector_gateway_events_total{{gateway=\"{id}\"}} 60"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "wardlink_collector_gateway_missing_batches{{gateway=\"{id}\"}} 0"
        )),
        "{metrics}"
    );
    if let Some(promtool) = external("promtool") {
        let file = c.dir.path().join("metrics.txt");
        std::fs::write(&file, &metrics)?;
        let out = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file)?)
            .output()?;
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, page) = http_get(admin, "/")?;
    assert_eq!(code, 200);
    let row_start = page
        .find(&format!("<tr data-gateway=\"{id}\">"))
        .ok_or_else(|| format!("no row for {id}: {page}"))?;
    let row = &page[row_start..row_start + page[row_start..].find("</tr>").unwrap_or(0)];
    assert!(
        row.contains("enrolled") && row.contains("s ago") && row.contains("none"),
        "{row}"
    );
    for id in IDENTIFIERS {
        assert!(
            !page.contains(id) && !metrics.contains(id),
            "{id:?} at the collector"
        );
    }
    Ok(())
}

// --- MLLP over TLS ----------------------------------------------------------

/// A test PKI: a CA, a server certificate for 127.0.0.1 and a client
/// certificate signed by the CA, and a client certificate from another CA.
struct Pki {
    dir: std::path::PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    client: (String, String),
    stranger: (String, String),
}

impl Pki {
    fn new(dir: &std::path::Path) -> Result<Pki> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wardlink test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let leaf = |names: Vec<String>,
                    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>|
         -> Result<(String, String)> {
            let key = rcgen::KeyPair::generate()?;
            let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let server = leaf(vec!["127.0.0.1".into(), "localhost".into()], &ca)?;
        let client = leaf(vec!["monitor-gw".into()], &ca)?;
        let other_key = rcgen::KeyPair::generate()?;
        let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other = rcgen::CertifiedIssuer::self_signed(other_params, other_key)?;
        let stranger = leaf(vec!["monitor-gw".into()], &other)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("server.pem"), &server.0)?;
        std::fs::write(dir.join("server.key"), &server.1)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_der: ca.der().clone(),
            client,
            stranger,
        })
    }

    /// The `tls = {...}` line of a listener.
    fn tls_line(&self, client_ca: bool) -> String {
        format!(
            "tls = {{ cert = \"{0}/server.pem\", key = \"{0}/server.key\", client_ca = \"{1}\" }}",
            self.dir.display(),
            if client_ca {
                format!("{}/ca.pem", self.dir.display())
            } else {
                String::new()
            }
        )
    }

    /// A client configuration trusting the CA, with a client certificate.
    fn client_config(&self, cert: Option<&(String, String)>) -> Result<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        Ok(Arc::new(match cert {
            None => builder.with_no_client_auth(),
            Some((c, k)) => builder.with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(
                    c.as_bytes(),
                )?],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes())?,
            )?,
        }))
    }
}

use std::sync::Arc;

/// A blocking MLLP-over-TLS client.
struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<TlsClient> {
        let tcp = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        let conn = rustls::ClientConnection::new(config, name)?;
        Ok(TlsClient {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        })
    }

    /// Send one message and read its answer.
    fn exchange(&mut self, msg: &[u8]) -> Result<Ack> {
        use std::io::{Read as _, Write as _};
        let mut f = vec![SB];
        f.extend_from_slice(msg);
        f.extend_from_slice(&[EB, CR]);
        self.tls.write_all(&f)?;
        self.tls.flush()?;
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == SB) {
                if let Some(end) = self.buf[start..].windows(2).position(|w| w == [EB, CR]) {
                    let frame = self.buf[start + 1..start + end].to_vec();
                    self.buf.drain(..start + end + 2);
                    return Ok(Ack::parse(&frame));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed before an answer".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A sender with a certificate from the listener's client CA gets AA; one
/// without a certificate or with one from another CA gets no answer (the
/// handshake fails); a plain-TCP sender is closed without a byte and
/// logged. Only the good sender's messages are counted.
#[test]
fn mllp_over_tls_accepts_only_clients_of_the_ca() -> Result {
    let pki_dir = tempfile::tempdir()?;
    let pki = Pki::new(pki_dir.path())?;
    let g = Gateway::start(&mllp_source("secure", &pki.tls_line(true)))?;
    let addr = g.addr("secure");

    let mut good = TlsClient::connect(addr, pki.client_config(Some(&pki.client))?)?;
    for i in 0..5 {
        let ack = good.exchange(&oru(&format!("TLS{i}")))?;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", format!("TLS{i}").as_str())
        );
    }

    for (what, cert) in [
        ("no certificate", None),
        ("another CA", Some(&pki.stranger)),
    ] {
        let refused = TlsClient::connect(addr, pki.client_config(cert)?)
            .and_then(|mut c| c.exchange(&oru("NOPE")));
        assert!(
            refused.is_err(),
            "{what}: got an answer {:?}",
            refused.map(|a| a.raw)
        );
    }

    let mut plain = Client::connect(addr)?;
    plain.send_frame(&oru("PLAIN"))?;
    let mut got = Vec::new();
    let read = {
        use std::io::Read as _;
        plain.stream.read_to_end(&mut got)
    };
    assert!(
        got.is_empty(),
        "a plain sender got bytes: {got:?} ({read:?})"
    );
    assert!(
        wait_until(Duration::from_secs(5), || g.stderr().contains("not TLS")),
        "no log line for the plain sender:\n{}",
        g.stderr()
    );

    // Renewed certificates under the same paths (here from a new CA), then
    // SIGHUP: new connections get the new server certificate; the
    // connection established before keeps working.
    let renewed_dir = tempfile::tempdir()?;
    let renewed = Pki::new(renewed_dir.path())?;
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(renewed_dir.path().join(f), pki_dir.path().join(f))?;
    }
    g.hup()?;
    assert!(
        wait_until(Duration::from_secs(10), || g
            .stderr()
            .contains("TLS certificates re-read")),
        "no reload:\n{}",
        g.stderr()
    );
    let mut fresh = TlsClient::connect(addr, renewed.client_config(Some(&renewed.client))?)?;
    assert_eq!(fresh.exchange(&oru("TLS-NEW"))?.code, "AA");
    let stale = TlsClient::connect(addr, pki.client_config(Some(&pki.client))?)
        .and_then(|mut c| c.exchange(&oru("TLS-OLD")));
    assert!(stale.is_err(), "the old certificate is still served");
    assert_eq!(good.exchange(&oru("TLS5"))?.code, "AA");

    let st = g.status_json()?;
    assert_accounting(&st);
    assert_eq!(st["sources"]["secure"]["acked"], 7, "{st}");
    assert_eq!(st["sources"]["secure"]["received"], 7, "{st}");
    Ok(())
}

// --- SIGHUP reload -------------------------------------------------------------

/// Under load on four long-lived connections: a reload with a changed
/// config (a new listener, a changed limit) applies (the new listener
/// answers), an invalid config is rejected with the reason in the log and
/// the old config keeps running, a reload that removes the new listener
/// closes it; no connection is dropped and every message sent got AA and is
/// counted once.
#[test]
fn sighup_reload_under_load_loses_no_ack() -> Result {
    let mut g = Gateway::start(&mllp_source("main", ""))?;
    let addr = g.addr("main");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || -> std::result::Result<usize, String> {
                let mut c = Client::connect(addr).map_err(|e| e.to_string())?;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("L{t}-{n}");
                    let ack = c.exchange(&oru(&id)).map_err(|e| format!("{id}: {e}"))?;
                    if ack.code != "AA" || ack.control_id != id {
                        return Err(format!("{id}: {}", ack.raw));
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // 1. A changed config: a new listener, and a changed limit on the old.
    std::fs::write(
        &g.config,
        config_text(
            &g.state_dir(),
            &format!(
                "{}{}",
                mllp_source("main", "max_connections = 32"),
                mllp_source("added", "")
            ),
        ),
    )?;
    g.hup()?;
    assert!(
        wait_until(Duration::from_secs(10), || g
            .runtime()
            .is_some_and(|rt| rt.to_string().contains("\"added\""))),
        "the new listener did not appear:\n{}",
        g.stderr()
    );
    let mut added = Client::connect(g.addr("added"))?;
    assert_eq!(added.exchange(&oru("NEW1"))?.code, "AA");

    // 2. An invalid config: rejected with the reason, the old one runs on.
    std::fs::write(
        &g.config,
        config_text(
            &g.state_dir(),
            &format!("{}max_connections = 0\n", mllp_source("main", "")),
        ),
    )?;
    g.hup()?;
    assert!(
        wait_until(Duration::from_secs(10), || g
            .stderr()
            .contains("Reload rejected")),
        "no rejection in the log:\n{}",
        g.stderr()
    );
    let log = g.stderr();
    assert!(
        log.contains("source.mllp[0].max_connections"),
        "the reason is not in the log:\n{log}"
    );
    assert_eq!(added.exchange(&oru("NEW2"))?.code, "AA");

    // 3. Remove the added listener again: it closes, main runs on.
    g.reload_with(&mllp_source("main", ""))?;
    assert!(
        wait_until(Duration::from_secs(10), || g
            .runtime()
            .is_some_and(|rt| !rt.to_string().contains("\"added\""))),
        "the removed listener is still listed"
    );
    assert!(
        added.is_closed(Duration::from_secs(5)),
        "the removed listener's connection stayed open"
    );

    // 4. A de-identification override: the pipeline takes it from its
    //    next batch on.
    std::fs::write(
        &g.config,
        config_text(
            &g.state_dir(),
            &format!(
                "[deid.overrides]\n\"PV1-3\" = \"remove\"\n\n{}",
                mllp_source("main", "")
            ),
        ),
    )?;
    g.hup()?;
    assert!(
        wait_until(Duration::from_secs(10), || g.stderr().contains(
            "the pipeline now uses the reloaded de-identification settings"
        )),
        "the override did not reach the pipeline:\n{}",
        g.stderr()
    );

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for s in senders {
        sent += s.join().map_err(|_| "sender panicked")??;
    }
    assert!(sent > 50, "too little load: {sent}");
    let st = g.status_json()?;
    assert_accounting(&st);
    assert_eq!(st["sources"]["main"]["acked"], sent as i64, "{st}");
    assert_eq!(st["sources"]["main"]["received"], sent as i64, "{st}");
    assert_eq!(st["sources"]["added"]["acked"], 2, "{st}");
    let status = g.signal_and_wait("-TERM", Duration::from_secs(20))?;
    assert!(status.success());
    Ok(())
}

// --- journald -----------------------------------------------------------------

/// Under systemd (JOURNAL_STREAM names stderr) the daemon logs natively to
/// the journal socket with structured fields. The test owns the socket: the
/// daemon runs in a private mount namespace (`unshare`) where the test's
/// directory is mounted on /run/systemd/journal. A duplicate and a
/// quarantined message produce info lines with SOURCE, DEVICE, a hashed
/// CONTROL_ID and PRIORITY; no control id, name or MRN appears in clear.
#[test]
fn logs_go_to_journald_with_structured_fields_and_no_phi() -> Result {
    use std::os::unix::fs::MetadataExt as _;
    if !Command::new("unshare")
        .args(["-rm", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: no unprivileged mount namespace (unshare -rm) on this machine");
        return Ok(());
    }
    let mut g = Gateway::prepare(&mllp_source("ward", ""))?;
    let journal_dir = g.dir.path().join("journal");
    std::fs::create_dir(&journal_dir)?;
    let journal = UnixDatagram::bind(journal_dir.join("socket"))?;
    journal.set_read_timeout(Some(Duration::from_millis(200)))?;
    // Read the journal from the start, as journald does: a unix datagram
    // socket queues only net.unix.max_dgram_qlen datagrams (10 here), and
    // once they are queued the daemon's logging blocks, and with it
    // whatever thread logs (the start-up lines alone may be that many).
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (received, reading) = (received.clone(), reading.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = journal.recv(&mut buf) {
                    received.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        })
    };
    let stderr = std::fs::File::create(&g.stderr_path)?;
    let meta = stderr.metadata()?;
    let script = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal \
                  && mount --bind \"$JOURNAL_DIR\" /run/systemd/journal && exec \"$@\"";
    g.child = Some(
        Command::new("unshare")
            .args(["-rm", "sh", "-c", script, "sh"])
            .arg(wardlink_bin())
            .args(["run", "--config"])
            .arg(&g.config)
            .env("JOURNAL_DIR", &journal_dir)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?,
    );
    assert!(
        wait_until(Duration::from_secs(30), || g.runtime().is_some()),
        "did not start:\n{}",
        g.stderr()
    );
    let mut c = Client::connect(g.addr("ward"))?;
    assert_eq!(c.exchange(&oru("JRN00042"))?.code, "AA");
    assert_eq!(c.exchange(&oru("JRN00042"))?.code, "AA"); // duplicate: an info line
    assert_eq!(c.exchange(&oru_without_obx("JRNQ7"))?.code, "AA"); // quarantined: an info line

    // Each datagram is one entry in journald's native protocol; rendered
    // here as KEY=value lines.
    let render = || -> Vec<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|d| {
                parse_journal_entry(d)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect()
            })
            .collect()
    };
    let mut entries: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        entries = render();
        let seen = |needle: &str| entries.iter().any(|e| e.contains(needle));
        if seen("Duplicate of a stored message") && seen("message quarantined") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    reader.join().map_err(|_| "the journal reader panicked")?;
    let field = |e: &str, k: &str| {
        e.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let dup = entries
        .iter()
        .find(|e| e.contains("Duplicate of a stored message"))
        .ok_or_else(|| format!("no duplicate line in {entries:?}\nstderr:\n{}", g.stderr()))?;
    assert_eq!(field(dup, "SOURCE").as_deref(), Some("ward"), "{dup}");
    assert_eq!(field(dup, "PRIORITY").as_deref(), Some("5"), "{dup}");
    assert_eq!(
        field(dup, "SYSLOG_IDENTIFIER").as_deref(),
        Some("wardlink"),
        "{dup}"
    );
    assert!(
        field(dup, "DEVICE").is_some_and(|d| d.starts_with("127.0.0.1:")),
        "{dup}"
    );
    let hashed = field(dup, "CONTROL_ID").ok_or("no CONTROL_ID")?;
    assert!(
        hashed.len() == 12 && hashed.chars().all(|c| c.is_ascii_hexdigit()),
        "{hashed}"
    );
    let q = entries
        .iter()
        .find(|e| e.contains("message quarantined"))
        .ok_or("no quarantine line")?;
    assert_eq!(
        field(q, "RULE").as_deref(),
        Some("SEGMENT_REQUIRED_MISSING"),
        "{q}"
    );
    let all = entries.join("\n");
    for secret in ["JRN00042", "JRNQ7", "Sharma", "Priya", "MRN", "19780412"] {
        assert!(!all.contains(secret), "{secret} in the journal:\n{all}");
    }
    // Nothing went to stderr meanwhile: the journal took it.
    assert!(
        !g.stderr().contains("Duplicate of a stored message"),
        "{}",
        g.stderr()
    );
    Ok(())
}

/// Parse one datagram of journald's native protocol (`systemd.journal-fields`
/// transport): `KEY=value\n`, or `KEY\n` + 64-bit little-endian length +
/// value + `\n` for values that may hold newlines.
fn parse_journal_entry(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(nl) = b.iter().position(|&c| c == b'\n') else {
            break;
        };
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&rest[..8]);
            let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            out.push((key, String::from_utf8_lossy(value).into_owned()));
            b = rest.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    out
}

/// `[log] level` from the file applies at start and again on reload (when
/// `RUST_LOG` is not set): at `warn`, the info lines of a reload are gone,
/// and the error of a rejected reload still shows.
#[test]
fn the_log_level_comes_from_the_config_and_follows_a_reload() -> Result {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let config = dir.path().join("wardlink.toml");
    let at_with = |level: &str, sources: &str| {
        config_text(&state, sources).replace("level = \"debug\"", &format!("level = \"{level}\""))
    };
    let at = |level: &str| at_with(level, &mllp_source("main", ""));
    std::fs::write(&config, at("info"))?;
    let log = dir.path().join("stderr");
    let child = KillOnDrop(
        Command::new(wardlink_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("WARDLINK_LOG", "stderr")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    {
        assert!(
            wait_until(Duration::from_secs(15), || text()
                .contains("wardlink ready")),
            "no info line at level info:\n{}",
            text()
        );
        assert!(
            !text().contains("DEBUG"),
            "debug lines at level info:\n{}",
            text()
        );
        let hup = || {
            Command::new("kill")
                .args(["-HUP", &child.0.id().to_string()])
                .status()
        };
        // The reload to warn also adds a listener, so that the test can see
        // it applied (run.json lists it) without an info line; only then is
        // the file changed again (before, a second write could overtake
        // the daemon's read of the first and reject that reload).
        let two = format!("{}{}", mllp_source("main", ""), mllp_source("extra", ""));
        std::fs::write(&config, at_with("warn", &two))?;
        hup()?;
        assert!(
            wait_until(Duration::from_secs(10), || {
                wardlink::status::Runtime::read(&state)
                    .is_some_and(|r| r.listeners.iter().any(|l| l.source == "extra"))
            }),
            "the reload to warn was not applied:\n{}",
            text()
        );
        std::fs::write(&config, "[source.nope]\n")?;
        hup()?;
        assert!(
            wait_until(Duration::from_secs(10), || text()
                .contains("Reload rejected")),
            "the error of a rejected reload shows at warn:\n{}",
            text()
        );
        assert_eq!(
            text().matches("reloading the configuration").count(),
            1,
            "the second reload's info line is filtered at warn:\n{}",
            text()
        );
    }
    drop(child);
    Ok(())
}
