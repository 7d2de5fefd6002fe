//! Sync benchmark (issue 4): sustained gateway → collector on loopback.
//!
//! 1. Fill (untimed): a fresh store gets `BENCH_MESSAGES` (default 25,000)
//!    simulated ORU^R01 vitals messages, and the real pipeline turns them into
//!    outbox events, as the daemon would.
//! 2. Drain (timed): the release-built `wardlink-collector` (SQLite) and the
//!    real `wardlink run` daemon, each its own process, with `[sync]`
//!    pointing at the collector (`batch_max_events` 5,000). The daemon's
//!    sealer and uploader send the whole backlog; the time is from the first
//!    batch sealed to the last receipt committed, as the store records them.
//!
//! It prints events/s sealed, uploaded, verified and stored; the compression
//! ratio (event JSON → wire bytes); the time per batch (upload, collector
//! verify and store, receipt, local commit, one at a time); and the peak
//! resident memory of both processes.
//!
//! Run: `cargo build --release --workspace && cargo bench --profile release -p wardlink --bench sync_upload`
//! (the collector binary must be built next to the benchmark's `wardlink`;
//! `--profile release` reuses that build; `BENCH_MESSAGES=N` for another size,
//! `BENCH_GATEWAY_LOG=wardlink=debug` for per-batch timings on stderr).
//!
//! Figures on the 2-core development machine (2026-12-04; both processes and
//! the benchmark share the two cores; 25,000 messages, 175,000 events of
//! about 1.1 KB of JSON each, 36 batches), four runs: 114,500–126,700
//! events/s (target 50,000); compression 35.8 (185.9 MiB of event JSON →
//! 5.2 MiB on the wire; 19.1 MiB in the outbox, whose rows are compressed per
//! message); 38–42 ms per batch on the wall clock; CPU per batch 43–48 ms in
//! the gateway (read and decompress the rows, seal, sign, commit the receipt)
//! and 16–17 ms in the collector (verify, store); peak RSS 34 MiB (gateway)
//! and 24–33 MiB (collector). On 2026-11-23 the same benchmark gave
//! 30,500–35,900 events/s, before the collector's store got cheaper and the
//! outbox became a compressed row per message.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use wardlink::store::{self, unix_ms, StoreWriter, WriterOptions};
use wardlink_devices::sim::Hl7Generator;

fn main() {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("gateway");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // 1. Fill the outbox through the real pipeline.
    let t = Instant::now();
    let config = gateway_config(&state, None);
    let (events, json) = rt.block_on(fill(&config, messages));
    println!(
        "fill: {messages} ORU^R01 messages → {events} outbox events in {:.1} s (untimed)",
        t.elapsed().as_secs_f64()
    );

    // 2. Drain to a collector.
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_wardlink"))
        .parent()
        .unwrap()
        .to_path_buf();
    let collector_bin = bin_dir.join("wardlink-collector");
    assert!(
        collector_bin.is_file(),
        "{} missing: cargo build --release -p wardlink-sync",
        collector_bin.display()
    );
    let (mut collector, url, collector_config) = start_collector(&collector_bin, dir.path());
    let admin = |args: &[&str]| -> String {
        let out = Command::new(&collector_bin)
            .args(args)
            .arg("--config")
            .arg(&collector_config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let key = wardlink::sync::keygen(&state).unwrap();
    admin(&[
        "enroll",
        "--gateway-id",
        &key.gateway_id,
        "--public-key",
        &key.public_key,
    ]);
    let collector_key = admin(&["public-key"]);
    let config_file = dir.path().join("gateway.toml");
    std::fs::write(
        &config_file,
        gateway_config(&state, Some((&url, &collector_key))),
    )
    .unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_wardlink"))
        .args(["run", "--config"])
        .arg(&config_file)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let conn = store::open_for_reading(&state).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = conn
            .query_row("SELECT uploaded_events FROM sync_state", [], |r| r.get(0))
            .unwrap();
        if done >= events {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {done} of {events}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let gateway_rss = peak_rss_mib(gateway.id());
    let collector_rss = peak_rss_mib(collector.id());
    let gateway_cpu = cpu_secs(gateway.id());
    let collector_cpu = cpu_secs(collector.id());
    let (batches, first_sealed, last_uploaded, stored, wire): (i64, i64, i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), MIN(created_at), MAX(uploaded_at), SUM(events_bytes), SUM(encoded_bytes)
             FROM batches",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    stop(&mut gateway);
    stop(&mut collector);

    let secs = (last_uploaded - first_sealed) as f64 / 1000.0;
    println!("drain: {events} events in {batches} batches, {secs:.2} s (first seal → last receipt committed)");
    println!(
        "  throughput            {:>10.0} events/s sealed, uploaded, verified and stored",
        events as f64 / secs
    );
    println!(
        "  compression           {:>10.1} (event JSON {:.1} MiB → wire {:.1} MiB; in the outbox {:.1} MiB)",
        json as f64 / wire as f64,
        json as f64 / 1048576.0,
        wire as f64 / 1048576.0,
        stored as f64 / 1048576.0
    );
    println!(
        "  per batch             {:>10.1} ms (wall; sealing and the local commit overlap the uploads)",
        secs * 1000.0 / batches as f64
    );
    println!(
        "  CPU per batch         {:>10.1} ms gateway (seal, commit), {:.1} ms collector (verify, store); 2 cores shared",
        gateway_cpu * 1000.0 / batches as f64,
        collector_cpu * 1000.0 / batches as f64
    );
    println!("  peak RSS gateway      {gateway_rss:>10.1} MiB (wardlink run)");
    println!(
        "  peak RSS collector    {collector_rss:>10.1} MiB (wardlink-collector serve, SQLite)"
    );
    drop(dir);
}

/// The gateway's config: sync off (`None`) or to a collector.
fn gateway_config(state: &Path, collector: Option<(&str, &str)>) -> String {
    let sync = match collector {
        None => String::new(),
        Some((url, key)) => format!(
            "[sync]\ncollector_url = \"{url}\"\ncollector_public_key = \"{key}\"\nbatch_max_events = 5000\nbatch_max_age = \"200ms\"\noutbox_max_bytes = 0\n\n"
        ),
    };
    format!(
        "[gateway]\nstate_dir = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{sync}[[source.mllp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n",
        state.display()
    )
}

/// Insert `n` raw messages and let the real pipeline process them; the
/// number of outbox events.
/// Returns the events in the outbox and the bytes of their JSON.
async fn fill(config_text: &str, n: usize) -> (i64, i64) {
    let config = wardlink_config::from_toml_str(config_text, "bench").unwrap();
    let state = config.gateway.state_dir.clone();
    let mut conn = store::open_for_writing(&state, None).unwrap();
    {
        let now = unix_ms(SystemTime::now());
        let tx = conn.transaction().unwrap();
        let mut generator = Hl7Generator::new(11);
        for _ in 0..n {
            tx.execute(
                "INSERT INTO messages (source, received_at, kind, raw, state, state_at)
                 VALUES ('bench', ?1, 'hl7v2', ?2, 0, ?1)",
                (now, generator.oru_vitals()),
            )
            .unwrap();
        }
        tx.execute(
            "INSERT INTO counters (source, received, acked, awaiting) VALUES ('bench', ?1, ?1, ?1)",
            [n as i64],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let (submitter, requests) = wardlink_devices::channel(64);
    let writer = StoreWriter::spawn(
        conn,
        requests,
        WriterOptions {
            group_commit_max: 512,
            raw_retention: Duration::from_secs(7 * 86_400),
            outbox_max_bytes: None,
            heartbeat: None,
        },
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let pipeline = wardlink::settings::gateway_pipeline(&config).unwrap();
    let processor =
        wardlink::processor::Processor::spawn(&state, pipeline, writer.jobs(), writer.doorbell())
            .unwrap();
    writer.doorbell().ring();
    let read = store::open_for_reading(&state).unwrap();
    loop {
        let awaiting: i64 = read
            .query_row("SELECT awaiting FROM counters", [], |r| r.get(0))
            .unwrap();
        if awaiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::spawn_blocking(move || processor.stop())
        .await
        .unwrap();
    drop(submitter);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
    let events = store::outbox::stored_events(&read).unwrap();
    let json: usize = events.iter().map(|e| e.json.len()).sum();
    (events.len() as i64, json as i64)
}

fn start_collector(bin: &Path, dir: &Path) -> (Child, String, PathBuf) {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{0}/collector/c.db\"\nkey_file = \"{0}/collector/c.key\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("wardlink-collector listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (child, url, config)
}

/// VmHWM of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User plus system CPU time of a process so far, in seconds (100 ticks/s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
