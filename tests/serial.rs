//! Serial sources end to end: the real `wardlink` daemon polling
//! `wardlink simulate medibus --pty` over a real pseudo-terminal, and
//! `wardlink tap` against the same simulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "end-to-end test: a failed step is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_accounting, wait_until, wardlink_bin, Gateway, Result};

const WAIT: Duration = Duration::from_secs(20);

/// `wardlink simulate medibus --pty --link PATH ARGS...`, stopped with
/// SIGTERM on drop (which closes the PTY and removes the link: an unplug).
struct Ventilator {
    child: Option<Child>,
}

impl Ventilator {
    fn start(link: &Path, args: &[&str]) -> Result<Ventilator> {
        let mut child = Command::new(wardlink_bin())
            .args(["simulate", "medibus", "--pty", "--link"])
            .arg(link)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let path = lines.recv_timeout(WAIT)?;
        assert!(path.starts_with("/dev/pts/"), "{path}");
        assert!(
            wait_until(WAIT, || link.exists()),
            "no link {}",
            link.display()
        );
        Ok(Ventilator { child: Some(child) })
    }

    /// Unplug: SIGTERM, and wait until it has exited.
    fn unplug(&mut self) -> Result {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()?;
            let done = wait_until(WAIT, || matches!(c.try_wait(), Ok(Some(_))));
            if !done {
                let _ = c.kill();
                let _ = c.wait();
                return Err("the simulator did not stop on SIGTERM".into());
            }
        }
        Ok(())
    }
}

impl Drop for Ventilator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a child's stdout, read on a thread so waits can time out.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn serial_source(link: &Path, extra: &str) -> String {
    format!(
        "[[source.serial]]\nname = \"vent\"\npath = \"{}\"\nbaud = 19200\nparity = \"even\"\n\
         poll_interval = \"200ms\"\nward = \"ICU\"\nbed = \"7\"\n{extra}\n",
        link.display()
    )
}

/// The stored reading documents, oldest first.
fn readings(g: &Gateway) -> Vec<serde_json::Value> {
    let Ok(conn) = g.open_store() else {
        return Vec::new();
    };
    let Ok(mut st) = conn.prepare("SELECT raw FROM messages WHERE kind = 'reading' ORDER BY id")
    else {
        return Vec::new();
    };
    let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0));
    rows.map(|rows| {
        rows.filter_map(|r| r.ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    })
    .unwrap_or_default()
}

fn link_state(g: &Gateway) -> Option<String> {
    let s = g.status_json().ok()?;
    s["links"]["vent"]["state"].as_str().map(str::to_owned)
}

fn temp_link(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ventilator")
}

#[test]
fn medibus_readings_reach_the_store_and_status_shows_the_link() -> Result {
    let dir = tempfile::tempdir()?;
    let link = temp_link(&dir);
    let _vent = Ventilator::start(&link, &[])?;
    let g = Gateway::start(&serial_source(&link, ""))?;
    assert!(
        wait_until(WAIT, || readings(&g).len() >= 3),
        "no readings stored:\n{}",
        g.stderr()
    );
    let doc = &readings(&g)[0];
    assert_eq!(doc["v"], 1);
    assert_eq!(doc["protocol"], "medibus");
    assert_eq!(doc["device"], "Evita 4 #0161");
    assert_eq!(doc["location"]["ward"], "ICU");
    assert_eq!(doc["values"].as_array().map(Vec::len), Some(18), "{doc}");
    let peep = doc["values"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["label"] == "PEEP"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(peep["code"], "MDC_PRESS_AWAY_END_EXP_POS");
    assert_eq!(peep["value"], 5.0);
    assert_eq!(peep["unit"], "mbar");
    // The pipeline turns each value into an observation event with the
    // device and location, like HL7 data.
    let peep_event = || -> Option<serde_json::Value> {
        g.outbox_events()
            .ok()?
            .iter()
            .filter(|e| e.kind == "observation" && e.source == "vent")
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.json).ok())
            .find(|e| e["code"]["code"] == "MDC_PRESS_AWAY_END_EXP_POS")
    };
    assert!(
        wait_until(WAIT, || peep_event().is_some()),
        "no observation event from the ventilator:\n{}",
        g.stderr()
    );
    let e = peep_event().unwrap_or_default();
    assert_eq!(e["value_num"], 5.0, "{e}");
    assert_eq!(e["location"]["ward"], "ICU", "{e}");
    assert!(e["device"].is_string(), "{e}");
    let status = g.status_json()?;
    assert_eq!(status["links"]["vent"]["state"], "connected", "{status}");
    assert!(status["sources"]["vent"]["received"].as_i64() >= Some(3));
    assert_accounting(&status);
    // The text form shows the link too.
    let out = Command::new(wardlink_bin())
        .args(["status", "--config"])
        .arg(&g.config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("link: vent connected since"), "{text}");
    Ok(())
}

#[test]
fn corrupt_cut_off_and_split_frames_leave_only_whole_sets_stored() -> Result {
    let dir = tempfile::tempdir()?;
    let link = temp_link(&dir);
    let _vent = Ventilator::start(
        &link,
        &[
            "--corrupt-every",
            "5",
            "--truncate-every",
            "11",
            "--split-writes",
        ],
    )?;
    let g = Gateway::start(&serial_source(&link, ""))?;
    assert!(
        wait_until(WAIT, || readings(&g).len() >= 5),
        "no readings stored:\n{}",
        g.stderr()
    );
    for doc in readings(&g) {
        assert_eq!(doc["values"].as_array().map(Vec::len), Some(18), "{doc}");
    }
    let log = g.stderr();
    assert!(log.contains("bad checksum dropped"), "{log}");
    assert!(log.contains("cut-off frame dropped"), "{log}");
    assert_accounting(&g.status_json()?);
    Ok(())
}

#[test]
fn a_silent_device_is_reinitialised_and_polled_again() -> Result {
    let dir = tempfile::tempdir()?;
    let link = temp_link(&dir);
    let _vent = Ventilator::start(&link, &["--silent-after", "1", "--silent-for", "4.5"])?;
    let g = Gateway::start(&serial_source(&link, "silent_timeout = \"3s\""))?;
    assert!(
        wait_until(WAIT, || link_state(&g).as_deref() == Some("no_answer")
            && !readings(&g).is_empty()),
        "never silent:\n{}",
        g.stderr()
    );
    let before = readings(&g).len();
    assert!(
        wait_until(WAIT, || link_state(&g).as_deref() == Some("connected")),
        "never back:\n{}",
        g.stderr()
    );
    assert!(
        wait_until(WAIT, || readings(&g).len() > before + 2),
        "no readings after the silence"
    );
    assert!(g
        .stderr()
        .contains("MEDIBUS device silent; re-initialising"));
    Ok(())
}

#[test]
fn a_vanished_port_shows_disconnected_and_polling_resumes() -> Result {
    let dir = tempfile::tempdir()?;
    let link = temp_link(&dir);
    let mut vent = Ventilator::start(&link, &[])?;
    let g = Gateway::start(&serial_source(
        &link,
        "reopen_backoff_min = \"100ms\"\nreopen_backoff_max = \"500ms\"",
    ))?;
    assert!(
        wait_until(WAIT, || !readings(&g).is_empty()),
        "{}",
        g.stderr()
    );
    // Unplug: the PTY closes and the link disappears.
    vent.unplug()?;
    assert!(!link.exists());
    assert!(
        wait_until(WAIT, || link_state(&g).as_deref() == Some("disconnected")),
        "never disconnected:\n{}",
        g.stderr()
    );
    let status = g.status_json()?;
    let detail = status["links"]["vent"]["detail"].as_str().unwrap_or("");
    assert!(!detail.is_empty(), "{status}");
    let before = readings(&g).len();
    // Plug back in: a ventilator at the same path.
    let _vent2 = Ventilator::start(&link, &[])?;
    assert!(
        wait_until(WAIT, || link_state(&g).as_deref() == Some("connected")
            && readings(&g).len() > before),
        "polling did not resume:\n{}",
        g.stderr()
    );
    assert_accounting(&g.status_json()?);
    Ok(())
}

#[test]
fn tap_prints_decoded_readings_and_stores_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let link = temp_link(&dir);
    let _vent = Ventilator::start(&link, &[])?;
    let state = dir.path().join("state");
    let config = dir.path().join("wardlink.toml");
    std::fs::write(
        &config,
        common::config_text(&state, &serial_source(&link, "")),
    )?;
    let mut tap = Command::new(wardlink_bin())
        .args(["tap", "vent", "--raw", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let lines = lines_of(tap.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    let want = [
        "link connected: Evita 4 #0161",
        "> 1b 51 36 43 0d",
        "reading set from Evita 4 #0161 (ward ICU, bed 7): 18 values",
        "MDC_PRESS_AWAY_END_EXP_POS",
    ];
    let deadline = std::time::Instant::now() + WAIT;
    while !want
        .iter()
        .all(|w| seen.iter().any(|l: &String| l.contains(w)))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    Command::new("kill")
        .args(["-INT", &tap.id().to_string()])
        .status()?;
    let stopped = wait_until(WAIT, || matches!(tap.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = tap.kill();
    }
    let status = tap.wait()?;
    for w in want {
        assert!(
            seen.iter().any(|l| l.contains(w)),
            "tap did not print {w:?}:\n{}",
            seen.join("\n")
        );
    }
    assert!(stopped && status.success(), "tap exit: {status:?}");
    assert!(
        !state.join("wardlink.db").exists(),
        "tap must not create a store"
    );
    Ok(())
}

#[test]
fn tap_names_the_problem_with_an_unknown_source() -> Result {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wardlink.toml");
    std::fs::write(
        &config,
        common::config_text(
            &dir.path().join("state"),
            &serial_source(Path::new("/dev/x"), ""),
        ),
    )?;
    let out = Command::new(wardlink_bin())
        .args(["tap", "ventt", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no source named \"ventt\"; configured: vent (serial)"),
        "{err}"
    );
    Ok(())
}

/// SIGHUP with a changed `[[source.serial]]` (the port moved to another
/// device): the serial source is restarted on the new path and its readings
/// come from the new device; an MLLP-free config keeps answering status.
#[test]
fn a_reload_moves_a_serial_source_to_a_new_port() -> Result {
    let dir = tempfile::tempdir()?;
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let _a = Ventilator::start(&first, &[])?;
    let _b = Ventilator::start(&second, &["--name", "Savina 300"])?;
    let g = Gateway::start(&serial_source(&first, ""))?;
    let from = |prefix: &str| {
        readings(&g)
            .iter()
            .filter(|d| d["device"].as_str().is_some_and(|s| s.starts_with(prefix)))
            .count()
    };
    assert!(
        wait_until(WAIT, || from("Evita 4") >= 2),
        "no readings from the first port:\n{}",
        g.stderr()
    );
    assert_eq!(from("Savina 300"), 0);
    g.reload_with(&serial_source(&second, ""))?;
    assert!(
        wait_until(WAIT, || from("Savina 300") >= 2),
        "no readings from the new port after the reload:\n{}",
        g.stderr()
    );
    assert!(
        g.stderr()
            .contains("[[source.serial]] `vent` changed: restarted"),
        "{}",
        g.stderr()
    );
    assert_eq!(link_state(&g).as_deref(), Some("connected"));
    assert_accounting(&g.status_json()?);
    Ok(())
}
