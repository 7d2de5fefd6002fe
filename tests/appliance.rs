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
