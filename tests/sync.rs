//! End to end with both real binaries on 127.0.0.1: HL7 into `wardlink`,
//! de-identified events out of `wardlink-collector`'s feed, exactly once and
//! in order, across a collector outage and a gateway `kill -9`; keygen and
//! enrolment; the outbox quota; `wardlink demo`. Issue 4.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How long the whole flow may take to drain in a test.
const DRAIN: Duration = Duration::from_secs(90);

/// Fast batches and retries, so tests see many batches and quick recovery.
const FAST: &str = "batch_max_events = 25\nbatch_max_age = \"200ms\"\nretry_backoff_min = \"100ms\"\nretry_backoff_max = \"500ms\"";

/// A gateway with a key enrolled at `c`, uploading there, not started.
fn enrolled_gateway(c: &Collector, sync_extra: &str) -> Result<Gateway> {
    let g = Gateway::prepare(&c.gateway_config(sync_extra, &mllp_source("ward", ""))?)?;
    let out = g.keygen()?;
    c.enroll_from_keygen(&out)?;
    Ok(g)
}

fn adt(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|HIS|HOSP|WARDLINK|HOSP|20261123090000||ADT^A01^ADT_A01|{control_id}|P|2.5\r\
         EVN|A01|20261123090000\r\
         PID|1||MRN{control_id}^^^HOSP^MR||Iyer^Meena||19600101|F\r\
         PV1|1|I|ICU^07^B^HOSP||||||||||||||||V{control_id}^^^HOSP^VN\r"
    )
    .into_bytes()
}

/// Send `n` ORU^R01 (6 events each) with ids `{prefix}{i}`; all must get AA.
fn send_orus(g: &Gateway, prefix: &str, n: usize) -> Result {
    let mut c = Client::connect(g.addr("ward"))?;
    for i in 0..n {
        let ack = c.exchange(&oru(&format!("{prefix}{i}")))?;
        assert_eq!(ack.code, "AA", "{}", ack.raw);
    }
    Ok(())
}

/// The feed holds exactly the events 1..=n of one gateway, once each, in order.
#[track_caller]
fn assert_exactly_once_in_order(feed: &[serde_json::Value], n: u64, gateway_id: &str) {
    let ids: Vec<u64> = feed
        .iter()
        .map(|l| l["event"]["event_id"].as_u64().expect("event_id"))
        .collect();
    let expected: Vec<u64> = (1..=n).collect();
    if ids != expected {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        panic!(
            "feed has {} events ({} distinct), expected 1..={n} in order; first differences: {:?}",
            ids.len(),
            sorted.len(),
            ids.iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
    assert!(feed.iter().all(|l| l["gateway_id"] == gateway_id));
    // Batches arrive in sequence order.
    let seqs: Vec<u64> = feed.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "seq order");
}

fn gateway_id(keygen_output: &str) -> String {
    keygen_output
        .lines()
        .find_map(|l| l.strip_prefix("gateway id: "))
        .expect("a gateway id line")
        .to_string()
}

#[test]
fn hl7_in_events_out_of_the_feed_exactly_once_and_in_order() -> Result {
    let c = Collector::start()?;
    let mut g = enrolled_gateway(&c, FAST)?;
    let id = gateway_id(&g.keygen()?);
    g.spawn()?;
    let mut client = Client::connect(g.addr("ward"))?;
    for i in 0..40 {
        assert_eq!(client.exchange(&oru(&format!("O{i}")))?.code, "AA");
        if i % 8 == 0 {
            assert_eq!(client.exchange(&adt(&format!("A{i}")))?.code, "AA");
        }
    }
    let st = wait_drained(&g, DRAIN);
    assert_accounting(&st);
    assert_eq!(
        (st["acked"].as_i64(), st["uploaded"].as_i64()),
        (Some(45), Some(45)),
        "{st}"
    );
    let events = 40 * 6 + 5;
    assert_eq!(st["sync"]["uploaded_events"], events, "{st}");
    assert!(
        st["sync"]["uploaded_batches"].as_i64().unwrap() >= 10,
        "{st}"
    );
    assert!(st["sync"]["last_upload_at_ms"].is_i64(), "{st}");
    assert_eq!(st["sync"]["failing"], false, "{st}");
    assert_eq!(st["sync"]["gateway_id"], id.as_str());

    let feed = c.feed(&c.token()?)?;
    assert_exactly_once_in_order(&feed, events, &id);
    let types: Vec<&str> = feed
        .iter()
        .map(|l| l["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "adt").count(), 5);
    // Nothing identifying reached the collector (invariant 2).
    let all = serde_json::to_string(&feed)?;
    for phi in [
        "Sharma", "Priya", "MRNO1", "19780412", "Iyer", "Meena", "MRNA8",
    ] {
        assert!(!all.contains(phi), "{phi} reached the collector");
    }
    // The raw messages stay (until raw_retention), now in state uploaded.
    let conn = g.open_store()?;
    let uploaded: i64 =
        conn.query_row("SELECT COUNT(*) FROM messages WHERE state = 3", [], |r| {
            r.get(0)
        })?;
    assert_eq!(uploaded, 45);
    let outbox: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    assert_eq!(outbox, 0, "uploaded events leave the outbox");
    let text = Command::new(wardlink_bin())
        .args(["status", "--config"])
        .arg(&g.config)
        .output()?;
    let text = String::from_utf8(text.stdout)?;
    assert!(text.contains("sync: on, to http://127.0.0.1:"), "{text}");
    assert!(
        text.contains(&format!(
            "uploaded: {} batches ({events} events)",
            st["sync"]["uploaded_batches"]
        )),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_collector_outage_builds_a_backlog_that_drains_without_loss_or_doubles() -> Result {
    let mut c = Collector::start()?;
    let mut g = enrolled_gateway(&c, FAST)?;
    let id = gateway_id(&g.keygen()?);
    c.stop()?;
    g.spawn()?;
    send_orus(&g, "D", 30)?;
    let st = wait_status(&g, DRAIN, "batches wait and the failure shows", |s| {
        s["sync"]["sealed_batches"].as_i64().unwrap_or(0) >= 3 && s["sync"]["failing"] == true
    });
    assert!(
        st["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach the collector")),
        "{st}"
    );
    assert_eq!(
        st["sync"]["refused"], false,
        "an outage is not an alarm: {st}"
    );
    assert_eq!(st["uploaded"], 0, "{st}");
    assert_accounting(&st);
    // More arrives during the outage.
    send_orus(&g, "E", 10)?;

    c.spawn()?;
    let st = wait_drained(&g, DRAIN);
    assert_accounting(&st);
    assert_eq!(st["uploaded"], 40, "{st}");
    assert_eq!(st["sync"]["failing"], false, "{st}");
    assert_exactly_once_in_order(&c.feed(&c.token()?)?, 240, &id);
    Ok(())
}

#[test]
fn kill_9_during_uploads_loses_and_doubles_nothing_at_the_collector() -> Result {
    let c = Collector::start()?;
    let mut g = enrolled_gateway(
        &c,
        "batch_max_events = 7\nbatch_max_age = \"100ms\"\nretry_backoff_min = \"100ms\"\nretry_backoff_max = \"500ms\"",
    )?;
    let id = gateway_id(&g.keygen()?);
    g.spawn()?;
    let uploaded_batches = |g: &Gateway| -> i64 {
        g.open_store()
            .and_then(|c| {
                Ok(c.query_row("SELECT uploaded_batches FROM sync_state", [], |r| r.get(0))?)
            })
            .unwrap_or(0)
    };
    let mut sent = 0;
    for round in 0..3 {
        send_orus(&g, &format!("K{round}-"), 60)?;
        sent += 60;
        // Kill while batches are going up: some uploaded, more waiting.
        let before = uploaded_batches(&g);
        assert!(
            wait_until(DRAIN, || uploaded_batches(&g) >= before + 3),
            "uploads did not start:\n{}",
            g.stderr()
        );
        let status = g.signal_and_wait("-KILL", Duration::from_secs(10))?;
        assert!(!status.success());
        g.spawn()?;
    }
    let st = wait_drained(&g, DRAIN);
    assert_accounting(&st);
    assert_eq!(st["uploaded"], sent, "{st}");
    let log = g.stderr();
    eprintln!(
        "re-sent after a kill and answered duplicate: {} batches; receipts recorded: {}",
        log.matches("duplicate=true").count(),
        log.matches("Batch uploaded").count()
    );
    assert_exactly_once_in_order(&c.feed(&c.token()?)?, sent as u64 * 6, &id);
    Ok(())
}

#[test]
fn keygen_prints_what_wardlink_collector_enroll_accepts() -> Result {
    let c = Collector::start()?;
    let g = Gateway::prepare(&mllp_source("ward", ""))?;
    let first = g.keygen()?;
    assert!(first.starts_with("created the gateway key"), "{first}");
    let key = g.state_dir().join("gateway.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    let id = gateway_id(&first);
    assert!(id.starts_with("gw-") && id.len() == 27, "{id}");
    let public = first
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .ok_or("no public key line")?;
    assert_eq!(public.len(), 64);
    let enrolled = c.enroll_from_keygen(&first)?;
    assert_eq!(enrolled, format!("enrolled {id}"));
    // Run again: the same key, not a new one.
    let again = g.keygen()?;
    assert!(again.starts_with("the gateway key exists:"), "{again}");
    assert!(again.contains(&id) && again.contains(public));
    assert_eq!(
        c.enroll_from_keygen(&again)?,
        format!("{id} was already enrolled with this key")
    );
    Ok(())
}

/// `wardlink run` on `g`'s config, expected to refuse to start: its exit
/// status and stderr (an error if it is still running after `IO_TIMEOUT`).
fn run_expecting_exit(g: &Gateway) -> Result<(std::process::ExitStatus, String)> {
    let mut child = Command::new(wardlink_bin())
        .args(["run", "--config"])
        .arg(&g.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("wardlink run did not refuse to start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().ok_or("stderr")?, &mut err)?;
    Ok((status, err))
}

#[test]
fn run_refuses_to_start_with_sync_on_and_no_key() -> Result {
    let c = Collector::start()?;
    let g = Gateway::prepare(&c.gateway_config("", &mllp_source("ward", ""))?)?;
    let (status, err) = run_expecting_exit(&g)?;
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("wardlink keygen"), "{err}");
    assert!(err.contains("gateway.key"), "{err}");
    Ok(())
}

#[test]
fn a_store_chained_under_one_key_refuses_another_key() -> Result {
    let mut c = Collector::start()?;
    let mut g = enrolled_gateway(&c, FAST)?;
    let first = gateway_id(&g.keygen()?);
    c.stop()?; // batches are sealed but stay here
    g.spawn()?;
    send_orus(&g, "G", 5)?;
    wait_status(&g, DRAIN, "a batch is sealed", |s| {
        s["sync"]["sealed_batches"].as_i64().unwrap_or(0) >= 1
    });
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    // The key is lost and a new one made: the chain's batches must not be
    // uploaded under it (they are signed by the first key).
    std::fs::remove_file(g.state_dir().join("gateway.key"))?;
    let second = gateway_id(&g.keygen()?);
    assert_ne!(first, second);
    let (status, err) = run_expecting_exit(&g)?;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("signed by gateway {first}")), "{err}");
    Ok(())
}

#[test]
fn a_full_outbox_answers_ar_store_full_and_raises_an_alarm() -> Result {
    // Sync off: the outbox only grows, up to its 1 MiB quota.
    let g = Gateway::start(&format!(
        "[sync]\noutbox_max_bytes = 1048576\n\n{}",
        mllp_source("ward", "")
    ))?;
    let mut client = Client::connect(g.addr("ward"))?;
    let deadline = Instant::now() + DRAIN;
    let mut acked = Vec::new();
    let refused = loop {
        assert!(
            Instant::now() < deadline,
            "the outbox never filled:\n{}",
            g.stderr()
        );
        let id = format!("F{}", acked.len());
        let ack = client.exchange(&oru(&id))?;
        match ack.code.as_str() {
            "AA" => acked.push(id),
            "AR" => break ack,
            other => panic!("unexpected {other}: {}", ack.raw),
        }
    };
    assert!(
        refused
            .err
            .as_deref()
            .unwrap_or("")
            .to_lowercase()
            .contains("store full"),
        "{}",
        refused.raw
    );
    // The same connection keeps being answered, and a resend of a stored
    // message still gets its original ACK.
    assert_eq!(client.exchange(&oru("F0"))?.code, "AA");
    let st = wait_status(&g, DRAIN, "the pipeline caught up", |s| s["awaiting"] == 0);
    assert_accounting(&st);
    assert_eq!(st["sync"]["outbox_full"], true, "{st}");
    let alarms = st["alarms"].as_array().ok_or("alarms")?;
    assert!(
        alarms
            .iter()
            .any(|a| a.as_str().unwrap_or("").contains("outbox quota reached")),
        "{st}"
    );
    assert!(st["rejected"].as_i64().unwrap() >= 1, "{st}");
    assert!(
        g.stderr().contains("ALARM: the outbox reached its quota"),
        "{}",
        g.stderr()
    );
    // Nothing acknowledged was deleted.
    let conn = g.open_store()?;
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
    assert_eq!(stored as usize, acked.len());
    assert_eq!(g.outbox_events()?.len(), acked.len() * 6);
    let text = Command::new(wardlink_bin())
        .args(["status", "--config"])
        .arg(&g.config)
        .output()?;
    assert_eq!(text.status.code(), Some(1), "status exits 1 on an alarm");
    assert!(String::from_utf8(text.stdout)?.contains("ALARM: outbox quota reached"));
    Ok(())
}

#[test]
fn the_demo_shows_events_at_the_collector_and_stops_on_sigint() -> Result {
    collector_bin(); // the demo needs it next to wardlink
    let mut demo = Command::new(wardlink_bin())
        .args(["demo", "--rate", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = demo.stdout.take().ok_or("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let field = |lines: &[String], name: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while field(&lines, "reader token:").is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = demo.kill();
                return Err(format!("the demo printed no token: {lines:#?}").into());
            }
        }
    }
    let feed_url = field(&lines, "feed URL:").ok_or("no feed URL")?;
    let token = field(&lines, "reader token:").ok_or("no token")?;
    let files = field(&lines, "files").ok_or("no files line")?;
    let files = files.split(' ').next().unwrap_or_default().to_string();
    let base = feed_url.trim_end_matches("/v1/feeds/events").to_string();
    let mut feed = Vec::new();
    let arrived = wait_until(Duration::from_secs(30), || {
        feed = read_feed(&base, &token).unwrap_or_default();
        feed.len() >= 10
    });
    if !arrived {
        let _ = demo.kill();
    }
    assert!(
        arrived,
        "no events at the collector within 30 s: {lines:#?}"
    );
    assert!(feed.iter().any(|l| l["event"]["type"] == "observation"));

    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = demo.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            return Err("the demo did not stop on SIGINT".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut demo.stderr.take().ok_or("stderr")?, &mut err)?;
    assert!(status.success(), "{status}: {err}\n{lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("stopped"),
        "{lines:#?}"
    );
    // The collector is gone and the temporary files with it.
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the collector still listens"
    );
    assert!(
        !std::path::Path::new(&files).exists(),
        "{files} was not removed"
    );
    Ok(())
}
