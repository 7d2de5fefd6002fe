//! The command line as hospital IT uses it: check-config, print-default-config,
//! exit codes, and `wardlink run` on the embedded default. Issue 2.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn the_printed_default_config_is_valid() -> Result {
    let out = wardlink(&["print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains("[[source.mllp]]") && text.contains("127.0.0.1:2575"),
        "{text}"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wardlink.toml");
    std::fs::write(&path, &text)?;
    let out = wardlink(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    Ok(())
}

#[test]
fn check_config_names_the_line_and_key_of_every_error() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nstate_dir = \"/tmp/x\"\n\n[[source.mllp]]\nname = \"a\"\nlisten = \"127.0.0.1:2575\"\nmax_connections = 0\n\n[[source.mllp]]\nname = \"a\"\nlisten = \"127.0.0.1:2576\"\nidle_timeout = \"soon\"\n",
    )?;
    let out = wardlink(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a failed check exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    // idle_timeout is a deserialize-time error; it must name line 12 and the key.
    assert!(
        err.contains(&format!("{file}:12")) && err.contains("idle_timeout"),
        "{err}"
    );
    Ok(())
}

#[test]
fn check_config_reports_validation_errors_with_lines() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[source.mllp]]\nname = \"a\"\nlisten = \"127.0.0.1:2575\"\nmax_connections = 0\n\n[[source.mllp]]\nname = \"a\"\nlisten = \"127.0.0.1:2576\"\n",
    )?;
    let out = wardlink(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:4")) && err.contains("max_connections"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:7")) && err.contains("name"),
        "duplicate name reported: {err}"
    );
    Ok(())
}

#[test]
fn run_refuses_a_bad_config_with_exit_78() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gateway]\nstate_dir = \"x\"\nno_such_key = 1\n")?;
    let out = Command::new(wardlink_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3") && err.contains("no_such_key"), "{err}");
    assert!(!dir.path().join("x").exists(), "nothing was started");
    Ok(())
}

#[test]
fn run_refuses_an_unreadable_config_file() -> Result {
    let out = wardlink(&["run", "--config", "/nonexistent/wardlink.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/wardlink.toml"));
    Ok(())
}

#[test]
fn status_without_a_store_says_so() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n",
            dir.path().join("none").display()
        ),
    )?;
    let out = wardlink(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store"));
    Ok(())
}

/// The README's first command: `wardlink run` with no file, on the embedded
/// default (127.0.0.1:2575, ./wardlink-data).
#[test]
fn run_without_a_config_uses_the_embedded_default() -> Result {
    if std::net::TcpListener::bind("127.0.0.1:2575").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:2575 is in use on this machine");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut child = KillOnDrop(
        Command::new(wardlink_bin())
            .arg("run")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let state = dir.path().join("wardlink-data");
    let ready = wait_until(Duration::from_secs(20), || state.join("run.json").exists());
    let result = (|| -> Result {
        assert!(ready, "the default daemon did not start");
        let mut c = Client::connect("127.0.0.1:2575".parse()?)?;
        let ack = c.exchange(&oru("DEFAULT1"))?;
        assert_eq!(
            (ack.code.as_str(), ack.control_id.as_str()),
            ("AA", "DEFAULT1")
        );
        let out = Command::new(wardlink_bin())
            .args(["status", "--json"])
            .current_dir(dir.path())
            .output()?;
        let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(st["sources"]["mllp"]["acked"], 1, "{st}");
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = wait_until(Duration::from_secs(15), || {
        child.0.try_wait().ok().flatten().is_some()
    });
    drop(child);
    result
}

/// `wardlink deid FILE | head` ends quietly when `head` has read enough:
/// no panic ("failed printing to stdout: Broken pipe", exit 101).
#[test]
fn output_into_a_closed_pipe_ends_quietly() -> Result {
    use std::io::Read as _;
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("many.hl7");
    let msg = "MSH|^~\\&|LAB|H|WL|H|20250101120000||ORU^R01|C1|P|2.5\rPID|1||MRN1^^^H||DOE^JOHN\rOBX|1|NM|8867-4^HR^LN||72|/min\r";
    std::fs::write(&file, msg.repeat(5000))?;
    let mut child = std::process::Command::new(wardlink_bin())
        .arg("deid")
        .arg(&file)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut first = [0u8; 64];
    child
        .stdout
        .take()
        .ok_or("stdout")?
        .read_exact(&mut first)?; // then closed
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    Ok(())
}

/// `wardlink simulate hl7 --to ADDR` sends realistic HL7 over MLLP on
/// several connections, prints each control id, type and ACK code, and
/// exits 0 only when every message was accepted.
#[test]
fn simulate_hl7_sends_to_a_listener_and_reports_the_acks() -> Result {
    let g = Gateway::start(&mllp_source("main", ""))?;
    let addr = g.addr("main").to_string();
    let out = Command::new(wardlink_bin())
        .args(["simulate", "hl7", "--to", &addr, "--count", "30"])
        .args(["--connections", "3", "--rate", "0", "--mix", "mixed"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("sent 30: 30 accepted (AA/CA)"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 30, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with(" AA") && (l.contains(" ORU^R01") || l.contains(" ADT^A0"))),
        "{stdout}"
    );
    let status = g.status_json()?;
    assert_eq!(status["sources"]["main"]["acked"], 30, "{status}");
    assert_eq!(status["duplicates"], 0, "control ids are unique: {status}");

    // A listener that does not accept this sender: exit 1, counted.
    let closed = Gateway::start(&mllp_source("main", "allow = [\"10.9.9.0/24\"]"))?;
    let out = Command::new(wardlink_bin())
        .args(["simulate", "hl7", "--to", &closed.addr("main").to_string()])
        .args(["--count", "2", "--rate", "0", "--timeout", "2", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sent 2: 0 accepted"), "{stderr}");
    Ok(())
}
