//! MEDIBUS polling benchmark (issue 5): the real `wardlink run` daemon
//! polling 32 simulated ventilators at 1 Hz over real pseudo-terminals,
//! each poll cycle (measured data, alarms, settings) stored as a reading,
//! with the pipeline running on the stored readings as in the daemon.
//!
//! Measured: the CPU time (user + system, from /proc/PID/stat) the gateway
//! process uses over the window, as a share of one core; the target is
//! under 5 %. Baseline in the same run: the simulator process
//! (`wardlink simulate medibus --pty --count 32`), which does the device
//! side of the same exchanges.
//!
//! Run: `cargo bench -p wardlink --bench medibus_poll`
//! (`WARDLINK_BENCH_SECS=20` by default; `WARDLINK_BENCH_PORTS=32`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

#[path = "support/proc_cpu.rs"]
mod proc_cpu;

use proc_cpu::{clock_ticks_per_sec, cpu_ticks};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn readings(db: &std::path::Path) -> i64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    conn.query_row(
        "SELECT count(*) FROM messages WHERE kind = 'reading'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn main() {
    let secs = env_or("WARDLINK_BENCH_SECS", 20);
    let ports = env_or("WARDLINK_BENCH_PORTS", 32);
    let bin = env!("CARGO_BIN_EXE_wardlink");
    let dir = tempfile::tempdir().unwrap();

    // The ventilators.
    let mut sim = Command::new(bin)
        .args([
            "simulate",
            "medibus",
            "--pty",
            "--count",
            &ports.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(sim.stdout.take().unwrap());
    let sim = Killed(sim);
    let mut paths = Vec::new();
    for _ in 0..ports {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        paths.push(line.trim().to_owned());
    }

    // The gateway.
    let state = dir.path().join("state");
    let mut config = format!(
        "[gateway]\nstate_dir = \"{}\"\n[log]\nlevel = \"warn\"\n",
        state.display()
    );
    for (i, p) in paths.iter().enumerate() {
        config.push_str(&format!(
            "[[source.serial]]\nname = \"vent{i:02}\"\npath = \"{p}\"\nbaud = 19200\nparity = \"even\"\npoll_interval = \"1s\"\nbed = \"{i}\"\n"
        ));
    }
    let config_path = dir.path().join("wardlink.toml");
    std::fs::write(&config_path, config).unwrap();
    let gw = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw = Killed(gw);
    let db = state.join("wardlink.db");

    // Warm up: every port polled at least once.
    let warm = Instant::now();
    while readings(&db) < 2 * ports as i64 {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "the gateway does not poll"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let hz = clock_ticks_per_sec();
    let (gw0, sim0, n0, t0) = (
        cpu_ticks(gw.0.id()),
        cpu_ticks(sim.0.id()),
        readings(&db),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (gw1, sim1, n1, elapsed) = (
        cpu_ticks(gw.0.id()),
        cpu_ticks(sim.0.id()),
        readings(&db),
        t0.elapsed(),
    );

    let wall = elapsed.as_secs_f64();
    let share = |ticks: u64| ticks as f64 / hz / wall * 100.0;
    let stored = n1 - n0;
    println!("medibus_poll: {ports} ventilators at 1 Hz for {wall:.1} s");
    println!(
        "  readings stored      {stored} ({:.1}/s; expected {ports}/s)",
        stored as f64 / wall
    );
    println!(
        "  gateway CPU          {:.2} % of one core ({} ticks at {hz} Hz)",
        share(gw1 - gw0),
        gw1 - gw0
    );
    println!(
        "  simulators (baseline) {:.2} % of one core",
        share(sim1 - sim0)
    );
    println!(
        "  target: gateway under 5 % of one core: {}",
        if share(gw1 - gw0) < 5.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
