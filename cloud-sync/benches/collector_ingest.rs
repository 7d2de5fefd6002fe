//! `cargo bench -p wardlink-sync --bench collector_ingest`
//!
//! Seals batches of realistic de-identified observation events (about 450
//! bytes of JSON each) and uploads them, one request at a time, to the real
//! `wardlink-collector` binary (release build, SQLite, WAL, synchronous=FULL)
//! on 127.0.0.1. Prints: seal rate, compression ratio, in-process verify cost
//! per batch, end-to-end upload → verify → store → receipt latency per batch
//! and sustained events/s, and the collector's peak resident memory.
//! Set `BENCH_BATCHES` and `BENCH_EVENTS` to change the load (defaults 60 and
//! 5,000: the gateway's default batch_max_events). With
//! `BENCH_POSTGRES_URL=postgres://…/postgres` (e.g. from
//! `scripts/test-postgres.sh`) the collector stores into a new database on
//! that server instead of SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wardlink_sync::batch::{seal, verify_owned, Chain, SealMeta, DEFAULT_MAX_BODY_BYTES};
use wardlink_sync::keys::SigningKeyFile;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(id: u64) -> String {
    let codes = [
        (
            "147842",
            "MDC_ECG_HEART_RATE",
            "264864",
            "MDC_DIM_BEAT_PER_MIN",
        ),
        (
            "150456",
            "MDC_PULS_OXIM_SAT_O2",
            "262688",
            "MDC_DIM_PERCENT",
        ),
        ("151562", "MDC_RESP_RATE", "264928", "MDC_DIM_RESP_PER_MIN"),
    ];
    let (code, name, ucode, uname) = codes[(id % 3) as usize];
    format!(
        concat!(
            r#"{{"event_id":{id},"schema":1,"type":"observation","source":"icu-monitors","#,
            r#""control_id_hash":"C1-{h:032x}","received_at":"2026-11-23T10:15:{s:02}+05:30","#,
            r#""quality":100,"issues":[],"patient":"P1-{p:032x}","encounter":"E1-{p:032x}","#,
            r#""code":{{"system":"MDC","code":"{code}","display":"{name}"}},"#,
            r#""value":{v},"unit":{{"system":"MDC","code":"{ucode}","display":"{uname}"}},"#,
            r#""observed_at":"2026-11-23T10:15:{s:02}+05:30","status":"F"}}"#
        ),
        id = id,
        h = id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        s = id % 60,
        p = (id / 600).wrapping_mul(0x2545_f491_4f6c_dd1d),
        code = code,
        name = name,
        v = 60 + id % 40,
        ucode = ucode,
        uname = uname,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let batches = env_or("BENCH_BATCHES", 60);
    let per_batch = env_or("BENCH_EVENTS", 5000);
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyFile::from_seed([42; 32]);

    // Seal.
    let mut chain = Chain::GENESIS;
    let mut sealed = Vec::with_capacity(batches);
    let mut raw_bytes = 0usize;
    let mut next = 1u64;
    let t = Instant::now();
    for _ in 0..batches {
        let events: Vec<String> = (next..next + per_batch as u64).map(event).collect();
        next += per_batch as u64;
        raw_bytes += events.iter().map(|e| e.len() + 1).sum::<usize>();
        let meta = SealMeta {
            created_ms: 1_795_000_000_000,
            backlog: 0,
            zstd_level: 3,
        };
        let b = seal(&events, &chain, &key, meta).unwrap();
        chain = b.chain_after();
        sealed.push(b);
    }
    let seal_time = t.elapsed();
    let total_events = (batches * per_batch) as f64;
    let wire_bytes: usize = sealed.iter().map(|b| b.encode().len()).sum();
    println!(
        "seal: {batches} batches x {per_batch} events, {:.0} events/s ({:.2} ms/batch); body {:.1} MiB -> {:.2} MiB, compression ratio {:.1}",
        total_events / seal_time.as_secs_f64(),
        seal_time.as_secs_f64() * 1000.0 / batches as f64,
        raw_bytes as f64 / 1048576.0,
        wire_bytes as f64 / 1048576.0,
        raw_bytes as f64 / wire_bytes as f64
    );

    // Verify alone, in process.
    let t = Instant::now();
    for b in sealed.iter().take(10) {
        verify_owned(b.clone(), &key.public_key(), DEFAULT_MAX_BODY_BYTES).unwrap();
    }
    let n = sealed.len().min(10);
    println!(
        "verify (signature, body hash, decompress, check every event line): {:.2} ms/batch",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The real collector.
    let database = match std::env::var("BENCH_POSTGRES_URL") {
        Err(_) => format!("sqlite://{}/collector.db", dir.path().display()),
        Ok(server) => rt.block_on(async {
            let name = format!("wl_bench_{}", std::process::id());
            let (client, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            // One statement per call: DROP/CREATE DATABASE refuse a transaction block.
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            format!("{}/{name}", server.rsplit_once('/').unwrap().0)
        }),
    };
    println!(
        "collector database: {}",
        database.split("://").next().unwrap_or("?")
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wardlink-collector"));
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\nkey_file = \"{}/collector.key\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let admin = |args: &[&str]| {
        let ok = Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
    };
    admin(&[
        "enroll",
        "--gateway-id",
        key.gateway_id().as_str(),
        "--public-key",
        &key.public_key().to_string(),
    ]);
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("wardlink-collector listening on ")
        .unwrap()
        .to_string();

    // reqwest is built without a provider of its own (ring only in the tree).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (elapsed, mut latencies) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let wires: Vec<Vec<u8>> = sealed.iter().map(|b| b.encode()).collect();
        let mut latencies = Vec::with_capacity(wires.len());
        let t = Instant::now();
        for w in wires {
            let s = Instant::now();
            let r = client
                .post(format!("{base}/v1/batches"))
                .body(w)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            latencies.push(s.elapsed());
        }
        (t.elapsed(), latencies)
    });
    latencies.sort();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "upload -> verify -> store (one transaction, fsync) -> receipt, one request at a time: {:.0} events/s; per batch p50 {:.1} ms, p99 {:.1} ms",
        total_events / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "collector peak resident memory: {}",
        hwm.trim_start_matches("VmHWM:").trim()
    );
}
