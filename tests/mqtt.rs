//! MQTT sources against a real broker (mosquitto on 127.0.0.1) and the real
//! `wardlink` binary (issue 5): a persistent session delivers what was
//! published while the gateway was down, a broker restart mid-stream loses
//! nothing, a malformed payload is quarantined with its reason while the
//! source keeps running, and `tap` shows decoded readings from the simulator.

#[path = "common/broker.rs"]
mod broker;
mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::{broker_available, Broker};
use common::{assert_accounting, wait_until, wardlink_bin, Gateway, Result};

/// A source reading JSON vitals (with the publisher's sequence number as a
/// value, so every published reading can be found in the outbox) and plain
/// weights.
fn source(broker: &Broker) -> String {
    format!(
        r#"[[source.mqtt]]
name = "beds"
url = "{}"
keep_alive = "5s"
[[source.mqtt.topic]]
filter = "hospital/{{ward}}/bed/{{bed}}/vitals"
payload = "json"
[[source.mqtt.topic.value]]
pointer = "/seq"
code = "sim-seq"
[[source.mqtt.topic.value]]
pointer = "/hr"
code = "MDC_PULS_RATE_NON_INV"
system = "MDC"
unit = "/min"
[[source.mqtt.topic]]
filter = "hospital/{{ward}}/bed/{{bed}}/weight"
payload = "number"
code = "29463-7"
system = "LOINC"
unit = "kg"
"#,
        broker.url()
    )
}

fn vitals(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range
        .map(|i| format!(r#"{{"seq":{i},"hr":{}}}"#, 60 + i % 40))
        .collect()
}

fn link_status(g: &Gateway) -> Option<String> {
    let s = g.status_json().ok()?;
    s["links"]["beds"]["state"].as_str().map(str::to_owned)
}

fn wait_connected(g: &Gateway) -> Result {
    if wait_until(Duration::from_secs(15), || {
        link_status(g).as_deref() == Some("connected")
    }) {
        Ok(())
    } else {
        Err(format!("the source did not connect:\n{}", g.stderr()).into())
    }
}

/// The `sim-seq` values of every observation in the outbox (with repeats).
fn outbox_seqs(g: &Gateway) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for row in g.outbox_events()? {
        if row.kind != "observation" {
            continue;
        }
        let e: serde_json::Value = serde_json::from_str(&row.json)?;
        if e["code"]["code"] == "sim-seq" {
            if let Some(x) = e["value_num"].as_f64() {
                seqs.push(x as u64);
            }
        }
    }
    Ok(seqs)
}

/// Wait until every seq in 1..=n is in the outbox; returns all seqs seen.
fn wait_for_all(g: &Gateway, n: u64, timeout: Duration) -> Result<Vec<u64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let seqs = outbox_seqs(g)?;
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        if distinct.len() as u64 == n && distinct.iter().all(|s| (1..=n).contains(s)) {
            return Ok(seqs);
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = (1..=n).filter(|s| !distinct.contains(s)).take(20).collect();
            return Err(format!(
                "{} of {n} readings in the outbox; first missing {missing:?}\n{}",
                distinct.len(),
                g.stderr()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn source_counter(status: &serde_json::Value, key: &str) -> i64 {
    status["sources"]["beds"][key].as_i64().unwrap_or(-1)
}

#[test]
fn messages_published_while_the_gateway_is_down_arrive_after_it_starts() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let broker = Broker::start()?;
    let mut g = Gateway::start(&source(&broker))?;
    // The first connection creates the persistent session and its subscriptions.
    wait_connected(&g)?;
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;

    broker.publish_lines("hospital/ICU/bed/3/vitals", &vitals(1..=300))?;
    g.spawn()?;
    let seqs = wait_for_all(&g, 300, Duration::from_secs(30))?;
    assert_eq!(seqs.len(), 300, "each reading once");
    let status = g.status_json()?;
    assert_eq!(source_counter(&status, "acked"), 300, "{status}");
    assert_accounting(&status);
    Ok(())
}

/// A backlog far larger than the source's internal queues (8,192 pending
/// answers, 4,096 queued acks) drains at full speed on one connection. An
/// earlier version stalled here: its poll loop waited for the full queue
/// while the acker waited for the poll loop, each PUBACK timed out after
/// 5 s, and the broker resent everything.
#[test]
fn a_backlog_larger_than_the_internal_queues_drains_without_a_stall() -> Result {
    if !broker_available() {
        return Ok(());
    }
    const N: u64 = 20_000;
    let broker = Broker::start()?;
    let mut g = Gateway::start(&source(&broker))?;
    wait_connected(&g)?;
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;

    broker.publish_lines("hospital/ICU/bed/4/vitals", &vitals(1..=N))?;
    g.spawn()?;
    // About 1 s of work on a 2-core machine; the stalled version needed
    // hours (5 s per message beyond the queues).
    let seqs = wait_for_all(&g, N, Duration::from_secs(90))?;
    assert_eq!(seqs.len() as u64, N, "each reading once");
    let status = g.status_json()?;
    assert_eq!(source_counter(&status, "acked"), N as i64, "{status}");
    assert_eq!(
        source_counter(&status, "duplicates"),
        0,
        "no redelivery: {status}"
    );
    let log = g.stderr();
    assert!(
        !log.contains("reconnecting"),
        "the connection stayed up:\n{log}"
    );
    assert_accounting(&status);
    Ok(())
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let mut broker = Broker::start()?;
    let mut g = Gateway::start(&source(&broker))?;
    wait_connected(&g)?;
    // A backlog queued at the broker while the gateway is away, so that
    // the restart below hits the gateway in the middle of draining it.
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    broker.publish_lines("hospital/ICU/bed/1/vitals", &vitals(1..=4000))?;
    g.spawn()?;
    assert!(
        wait_until(Duration::from_secs(15), || {
            g.status_json()
                .map(|s| source_counter(&s, "received") > 0)
                .unwrap_or(false)
        }),
        "nothing arrived:\n{}",
        g.stderr()
    );
    let before = g.status_json()?;
    broker.restart()?;
    eprintln!(
        "broker restarted after {} of 4000 readings were received",
        source_counter(&before, "received")
    );
    // The gateway reconnects by itself (backoff) and the link shows it.
    wait_connected(&g)?;
    broker.publish_lines("hospital/ICU/bed/2/vitals", &vitals(4001..=5000))?;
    let seqs = wait_for_all(&g, 5000, Duration::from_secs(60))?;
    let status = g.status_json()?;
    // Resends after the restart carry DUP and are recognised: each reading
    // is stored once.
    eprintln!(
        "after the restart: {} duplicates recognised",
        source_counter(&status, "duplicates")
    );
    assert_eq!(seqs.len(), 5000, "{status}");
    assert_eq!(source_counter(&status, "acked"), 5000, "{status}");
    assert_accounting(&status);
    assert!(
        g.stderr().contains("MQTT connection lost"),
        "the restart was seen"
    );
    Ok(())
}

#[test]
fn a_gateway_killed_mid_stream_loses_nothing_it_acknowledged() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let broker = Broker::start()?;
    // One fsync per message: the store is the bottleneck, so many readings
    // are always received and waiting for their commit. A PUBACK sent before
    // its commit would make the broker forget readings the store never got.
    let mut g = Gateway::start(&format!(
        "[store]\ngroup_commit_max = 1\n\n{}",
        source(&broker)
    ))?;
    wait_connected(&g)?;
    g.signal_and_wait("-TERM", Duration::from_secs(15))?;
    broker.publish_lines("hospital/ICU/bed/4/vitals", &vitals(1..=5000))?;
    g.spawn()?;
    assert!(
        wait_until(Duration::from_secs(15), || {
            g.status_json()
                .map(|s| source_counter(&s, "received") >= 800)
                .unwrap_or(false)
        }),
        "nothing arrived:\n{}",
        g.stderr()
    );
    // kill -9 while draining at full speed.
    g.signal_and_wait("-KILL", Duration::from_secs(15))?;
    let at_kill = g.status_json()?;
    eprintln!(
        "killed after {} of 5000 readings were stored",
        source_counter(&at_kill, "acked")
    );
    g.spawn()?;
    let seqs = wait_for_all(&g, 5000, Duration::from_secs(60))?;
    let status = g.status_json()?;
    assert_eq!(seqs.len(), 5000, "{status}");
    assert_accounting(&status);
    Ok(())
}

#[test]
fn a_malformed_payload_is_quarantined_with_its_reason_and_the_source_keeps_running() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let broker = Broker::start()?;
    let g = Gateway::start(&source(&broker))?;
    wait_connected(&g)?;
    broker.publish("hospital/ICU/bed/5/vitals", r#"{"seq":1,"hr":70}"#)?;
    broker.publish("hospital/ICU/bed/5/vitals", "{not json")?;
    broker.publish("hospital/ICU/bed/5/weight", "heavy")?;
    broker.publish("hospital/ICU/bed/5/vitals", r#"{"hr":70}"#)?;
    broker.publish("hospital/ICU/bed/5/vitals", r#"{"seq":2,"hr":71}"#)?;
    broker.publish("hospital/ICU/bed/5/weight", "81.5")?;
    wait_for_all(&g, 2, Duration::from_secs(20))?;
    assert!(
        wait_until(Duration::from_secs(10), || {
            g.status_json()
                .map(|s| source_counter(&s, "quarantined") == 3)
                .unwrap_or(false)
        }),
        "{:?}",
        g.status_json()
    );
    let conn = g.open_store()?;
    let reasons: Vec<String> = conn
        .prepare("SELECT reason FROM quarantine ORDER BY message_id")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(reasons.len(), 3);
    assert!(reasons[0].starts_with("READING_UNDECODABLE"), "{reasons:?}");
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(
        reasons[1].contains("\"heavy\" is not a number"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("/seq not found"), "{reasons:?}");
    let status = g.status_json()?;
    assert_eq!(source_counter(&status, "acked"), 6, "{status}");
    assert_accounting(&status);
    // The weight after the bad ones became an observation with its unit
    // (the pipeline may take it in a later batch than the bad ones).
    let weights = || -> i64 {
        g.outbox_events().map_or(-1, |events| {
            events
                .iter()
                .filter(|e| e.json.contains("\"29463-7\"") && e.json.contains("\"unit\":\"kg\""))
                .count() as i64
        })
    };
    assert!(
        wait_until(Duration::from_secs(15), || weights() == 1),
        "weight observations: {}",
        weights()
    );
    Ok(())
}

#[test]
fn tap_shows_decoded_readings_from_the_simulator() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wardlink.toml");
    // The configuration the simulator prints for itself.
    let printed = Command::new(wardlink_bin())
        .args(["simulate", "bed-sensors", "--print-config", "--mqtt"])
        .arg(broker.url())
        .output()?;
    assert!(printed.status.success());
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n\n{}",
            dir.path().join("state").display(),
            String::from_utf8(printed.stdout)?
        ),
    )?;
    let stderr_path = dir.path().join("tap.err");
    let mut tap = Command::new(wardlink_bin())
        .args(["tap", "beds", "--raw", "--count", "3", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()?;
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&stderr_path).is_ok_and(|s| s.contains("connected to"))
        }),
        "tap did not connect: {:?}",
        std::fs::read_to_string(&stderr_path)
    );
    let sim = Command::new(wardlink_bin())
        .args(["simulate", "bed-sensors", "--mqtt"])
        .arg(broker.url())
        .args(["--count", "3", "--rate", "0", "--only", "vitals", "--quiet"])
        .output()?;
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = tap.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = tap.kill();
            let _ = tap.wait();
            return Err("tap did not stop after 3 messages".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = String::new();
    if let Some(mut o) = tap.stdout.take() {
        use std::io::Read as _;
        o.read_to_string(&mut out)?;
    }
    assert!(
        out.contains("hospital/ICU/bed/1/vitals  device=BS-ICU-01  ward=ICU  bed=1"),
        "{out}"
    );
    assert!(out.contains("MDC_PULS_OXIM_SAT_O2 [MDC] = "), "{out}");
    assert!(out.contains("sim-seq [LOCAL] = 3"), "{out}");
    // --raw: the payload in hex ("{\"sensor\"" = 7b2273656e736f7222).
    assert!(
        out.contains("raw (") && out.contains(": 7b2273656e736f7222"),
        "{out}"
    );
    // Nothing was stored: tap has no store at all.
    assert!(!dir.path().join("state").join("wardlink.db").exists());
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 made with openssl(1), in a
/// directory the broker (which drops root for its own user) can read.
fn make_certs() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    let steps: [&[&str]; 5] = [
        &["genrsa", "-out", "ca.key", "2048"],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=wardlink test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
        &["genrsa", "-out", "server.key", "2048"],
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(
                format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
    }
    for f in ["ca.pem", "server.pem", "server.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(dir)
}

#[test]
fn mqtts_with_a_ca_file_verifies_the_broker_and_delivers() -> Result {
    if !broker_available() {
        return Ok(());
    }
    let certs = make_certs()?;
    let c = certs.path().to_path_buf();
    let broker = Broker::start_with(|_| {
        format!(
            "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            c.display()
        )
    })?;
    let config = source(&broker).replace("mqtt://", "mqtts://").replace(
        "keep_alive = \"5s\"",
        &format!("keep_alive = \"5s\"\nca_file = \"{}/ca.pem\"", c.display()),
    );
    let g = Gateway::start(&config)?;
    wait_connected(&g)?;
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .arg("--cafile")
        .arg(c.join("ca.pem"))
        .args(["-q", "1", "-t", "hospital/ICU/bed/1/vitals"])
        .args(["-m", r#"{"seq":1,"hr":70}"#])
        .status()?;
    assert!(status.success());
    wait_for_all(&g, 1, Duration::from_secs(20))?;
    let runtime = g.runtime().ok_or("no runtime file")?;
    assert!(
        runtime.to_string().contains("mqtts://127.0.0.1:"),
        "{runtime}"
    );
    Ok(())
}
