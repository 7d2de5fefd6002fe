//! MLLP ingest benchmark (issue 2): the real listener and the real store,
//! driven over loopback with window 1 (send, wait for the ACK), against two
//! baselines measured in the same run:
//!
//! - `ack-only`: the same listener with a store that answers `Stored`
//!   without storing anything (the ceiling of the network path);
//! - `fsync-per-msg`: the same listener with a plain SQLite writer that
//!   commits each message in its own transaction (WAL, synchronous=FULL),
//!   i.e. one fsync per message and no group commit;
//! - `wardlink`: the real store writer (group commit, dedup, counters);
//! - `wardlink + pipeline`: the same with the pipeline thread processing the
//!   stored messages concurrently, as in the daemon.
//!
//! TLS (issue 8): `WARDLINK_BENCH_TLS=1 cargo bench -p wardlink --bench
//! mllp_ingest` runs only the real store at 8 connections, plain MLLP and
//! MLLP over TLS (rustls, ring, TLS 1.3, a self-signed certificate) in
//! interleaved slices, and prints TLS throughput as a share of plain
//! (target >= 0.85).
//!
//! Run: `cargo bench -p wardlink --bench mllp_ingest`
//! (`WARDLINK_BENCH_SECS=6` to measure longer; default 3 s per cell;
//! `WARDLINK_BENCH_CONNS=8` or `=1,64` to run only those connection
//! counts, e.g. under `perf record`; `WARDLINK_BENCH_ONLY=wardlink` runs only
//! the real store, without the pipeline, for profiling). The
//! variants of one connection count run interleaved in short slices, so
//! they share whatever else the machine is doing; compare the ratios.
//! Client and server share the machine, as in the reference figures.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wardlink::store::{self, StoreWriter, WriterOptions};
use wardlink_devices::mllp::{MllpListener, MllpOptions};
use wardlink_devices::sim::Hl7Generator;
use wardlink_devices::{Reply, ToStore};

const CONNECTIONS: [usize; 3] = [1, 8, 64];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    AckOnly,
    FsyncPerMessage,
    Wardlink,
    WardlinkWithPipeline,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::AckOnly => "ack-only (no store)",
            Variant::FsyncPerMessage => "fsync-per-msg SQLite",
            Variant::Wardlink => "wardlink (group commit)",
            Variant::WardlinkWithPipeline => "wardlink + pipeline",
        }
    }
}

struct Cell {
    variant: Variant,
    connections: usize,
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    avg_group: f64,
}

/// What one slice of one variant measured; slices of a cell are summed.
#[derive(Default)]
struct Slice {
    latencies_us: Vec<u32>,
    elapsed_s: f64,
    group_sum: f64,
    slices: u32,
}

impl Slice {
    fn add(&mut self, other: Slice) {
        self.latencies_us.extend(other.latencies_us);
        self.elapsed_s += other.elapsed_s;
        self.group_sum += other.group_sum;
        self.slices += other.slices;
    }

    fn cell(mut self, variant: Variant, connections: usize) -> Cell {
        let lat = &mut self.latencies_us;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Cell {
            variant,
            connections,
            msgs_per_sec: lat.len() as f64 / self.elapsed_s.max(1e-9),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            avg_group: self.group_sum / f64::from(self.slices.max(1)),
        }
    }
}

/// A ~1 KB IHE PCD-01 ORU^R01 (vitals) from the shared simulator, MLLP-framed.
fn framed(generator: &mut Hl7Generator) -> Vec<u8> {
    let m = generator.oru_vitals();
    let mut f = Vec::with_capacity(m.len() + 3);
    f.push(0x0b);
    f.extend_from_slice(&m);
    f.extend_from_slice(&[0x1c, 0x0d]);
    f
}

/// Start the store side of a variant; returns the submitter and a join
/// function that waits for the store to finish, plus the average group size.
fn start_store(
    variant: Variant,
    dir: &std::path::Path,
    rt: &tokio::runtime::Handle,
) -> (wardlink_devices::Submitter, Box<dyn FnOnce() -> f64 + Send>) {
    let (submitter, mut rx) = wardlink_devices::channel(1024);
    match variant {
        Variant::AckOnly => {
            let h = rt.spawn(async move {
                let mut id = 0;
                while let Some(req) = rx.recv().await {
                    if let ToStore::Commit { reply, .. } = req {
                        id += 1;
                        let _ = reply.send(Reply::Stored { id });
                    }
                }
            });
            let rt = rt.clone();
            (
                submitter,
                Box::new(move || {
                    rt.block_on(h).ok();
                    1.0
                }),
            )
        }
        Variant::FsyncPerMessage => {
            let path = dir.join("plain.db");
            let thread = std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                conn.pragma_update(None, "synchronous", "FULL").unwrap();
                conn.execute_batch("CREATE TABLE m (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)")
                    .unwrap();
                let mut stmt = conn.prepare("INSERT INTO m (raw) VALUES (?1)").unwrap();
                while let Some(req) = rx.blocking_recv() {
                    if let ToStore::Commit { received, reply } = req {
                        // Autocommit: one transaction, one fsync per message.
                        stmt.execute([&received.bytes[..]]).unwrap();
                        let _ = reply.send(Reply::Stored {
                            id: conn.last_insert_rowid(),
                        });
                    }
                }
            });
            (
                submitter,
                Box::new(move || {
                    thread.join().ok();
                    1.0
                }),
            )
        }
        Variant::Wardlink | Variant::WardlinkWithPipeline => {
            let conn = store::open_for_writing(dir, None).unwrap();
            let checkpointer = store::checkpoint::Checkpointer::spawn(dir).unwrap();
            let writer = StoreWriter::spawn(
                conn,
                rx,
                WriterOptions {
                    group_commit_max: 512,
                    raw_retention: Duration::from_secs(7 * 86_400),
                    outbox_max_bytes: None,
                    heartbeat: None,
                },
                rt.clone(),
            )
            .unwrap();
            let stats = writer.stats();
            // Keeps the writer running after the listener has stopped, while
            // the pipeline catches up.
            let keep_open = submitter.clone();
            // The pipeline runs beside ingest, as in the daemon: it competes
            // for the same two cores and for the store's write lock.
            let processor = (variant == Variant::WardlinkWithPipeline).then(|| {
                let pipeline = wardlink::pipeline::Pipeline::new(
                    wardlink::pipeline::PipelineSettings::default(),
                    wardlink::pipeline::SiteKeys::from_secrets(&[7u8; 32], None),
                )
                .unwrap();
                wardlink::processor::Processor::spawn(
                    dir,
                    pipeline,
                    writer.jobs(),
                    writer.doorbell(),
                )
                .unwrap()
            });
            (
                submitter,
                Box::new(move || {
                    if let Some(p) = processor {
                        // The pipeline runs at idle CPU priority: under a
                        // saturating burst it falls behind. How far, and how
                        // long it takes to catch up once the burst ends.
                        let pst = p.stats();
                        let done = || {
                            pst.processed.load(Ordering::Relaxed)
                                + pst.quarantined.load(Ordering::Relaxed)
                        };
                        let stored = stats.requests.load(Ordering::Relaxed);
                        let during = done();
                        let ended = Instant::now();
                        while done() < stored && ended.elapsed() < Duration::from_secs(60) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        eprintln!(
                            "  (pipeline: {during} of {stored} processed during the run, all {} {:.0} ms after it)",
                            done(),
                            ended.elapsed().as_secs_f64() * 1e3
                        );
                        p.stop();
                    }
                    drop(keep_open);
                    writer.join();
                    checkpointer.stop();
                    let g = stats.groups.load(Ordering::Relaxed).max(1) as f64;
                    stats.requests.load(Ordering::Relaxed) as f64 / g
                }),
            )
        }
    }
}

/// A client's byte stream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Server and client TLS configurations for the TLS variant.
#[derive(Clone)]
struct TlsPair {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// A self-signed certificate for 127.0.0.1, loaded the way the daemon
/// loads it (PEM files), and a client that trusts it.
fn tls_pair(dir: &std::path::Path) -> TlsPair {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = wardlink_devices::mllp::tls::server_config(&cert, &key, None).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsPair {
        server,
        client: Arc::new(client),
    }
}

/// One client connection: send, wait for the ACK, repeat; record latencies
/// once `measuring` is set.
async fn client(
    addr: SocketAddr,
    conn: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Vec<u32> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut s: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            Box::new(
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .unwrap(),
            )
        }
    };
    let mut lat = Vec::with_capacity(1 << 16);
    let mut buf = vec![0u8; 4096];
    let mut generator = Hl7Generator::new(conn as u64 + 1);
    while !stop.load(Ordering::Relaxed) {
        let msg = framed(&mut generator);
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.flush().await.unwrap();
        // Read until the end of one framed ACK.
        let mut have = 0;
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[have..]))
                .await
                .expect("ACK within 10 s")
                .unwrap();
            assert!(n > 0, "server closed the connection");
            have += n;
            if have >= 2 && buf[have - 2] == 0x1c && buf[have - 1] == 0x0d {
                break;
            }
        }
        assert!(buf[..have].windows(4).any(|w| w == b"MSA|"), "got an ACK");
        if measuring.load(Ordering::Relaxed) {
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    lat
}

fn run_slice(variant: Variant, connections: usize, secs: f64, tls: Option<&TlsPair>) -> Slice {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (submitter, join_store) = start_store(variant, dir.path(), server_rt.handle());
    let shutdown = CancellationToken::new();
    let listener = server_rt
        .block_on(MllpListener::bind(MllpOptions {
            name: Arc::from("bench"),
            listen: "127.0.0.1:0".parse().unwrap(),
            allow: Vec::new(),
            max_connections: 1024,
            max_message_bytes: 16 << 20,
            idle_timeout: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(86_400),
            commit_blocks: false,
            tls: tls.map(|t| t.server.clone()),
        }))
        .unwrap();
    let addr = listener.local_addr();
    let serving = server_rt.spawn(listener.run(submitter, shutdown.clone()));

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            client_rt.spawn(client(
                addr,
                c,
                measuring.clone(),
                stop.clone(),
                tls.map(|t| t.client.clone()),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500)); // warm-up
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    for c in clients {
        lat.extend(client_rt.block_on(c).unwrap());
    }
    shutdown.cancel();
    server_rt.block_on(serving).ok();
    let avg_group = join_store();
    Slice {
        latencies_us: lat,
        elapsed_s: elapsed,
        group_sum: avg_group,
        slices: 1,
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    // `cargo test --benches` passes --bench-less args; only run when benchmarking.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("WARDLINK_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    if std::env::var_os("WARDLINK_BENCH_TLS").is_some() {
        tls_main(secs);
        return;
    }
    println!(
        "MLLP ingest, window 1, {} B IHE PCD-01 ORU^R01, {secs} s per cell in 3 interleaved slices, client and server on this machine",
        framed(&mut Hl7Generator::new(0)).len() - 3
    );
    println!(
        "{:<26} {:>5} {:>10} {:>8} {:>8} {:>9}",
        "variant", "conns", "msg/s", "p50 ms", "p99 ms", "avg group"
    );
    // The variants of one connection count run interleaved, in short
    // slices (W, W+P, ack-only, fsync, W, W+P, ...), so that all of them see
    // the same disk and CPU contention: on a shared machine the fsync cost
    // swings by 10x within minutes, and the ratios are what is compared.
    let variants: &[Variant] = match std::env::var("WARDLINK_BENCH_ONLY").as_deref() {
        Ok("wardlink") => &[Variant::Wardlink],
        Ok(other) => panic!("WARDLINK_BENCH_ONLY: only `wardlink` is known, not {other:?}"),
        Err(_) => &[
            Variant::Wardlink,
            Variant::WardlinkWithPipeline,
            Variant::AckOnly,
            Variant::FsyncPerMessage,
        ],
    };
    let rounds = 3;
    let conns: Vec<usize> = match std::env::var("WARDLINK_BENCH_CONNS") {
        Ok(list) => list
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .expect("WARDLINK_BENCH_CONNS: a list like 1,8,64")
            })
            .collect(),
        Err(_) => CONNECTIONS.to_vec(),
    };
    let mut cells = Vec::new();
    let mut wardlink_rss = 0.0_f64;
    for &c in &conns {
        let mut sums: Vec<Slice> = variants.iter().map(|_| Slice::default()).collect();
        for _ in 0..rounds {
            for (i, &variant) in variants.iter().enumerate() {
                sums[i].add(run_slice(variant, c, secs / f64::from(rounds), None));
                if matches!(variant, Variant::Wardlink | Variant::WardlinkWithPipeline) {
                    wardlink_rss = peak_rss_mb();
                }
            }
        }
        for (variant, sum) in variants.iter().zip(sums) {
            let cell = sum.cell(*variant, c);
            println!(
                "{:<26} {:>5} {:>10.0} {:>8.3} {:>8.3} {:>9.1}",
                variant.name(),
                c,
                cell.msgs_per_sec,
                cell.p50_ms,
                cell.p99_ms,
                cell.avg_group
            );
            cells.push(cell);
        }
    }
    if variants.len() == 1 {
        // Profiling: no baselines, so no ratios.
        return;
    }
    let get = |v: Variant, c: usize| {
        cells
            .iter()
            .find(|x| x.variant == v && x.connections == c)
            .unwrap()
    };
    println!();
    if conns.contains(&1) {
        let one =
            get(Variant::Wardlink, 1).msgs_per_sec / get(Variant::FsyncPerMessage, 1).msgs_per_sec;
        println!("1 conn: wardlink / fsync-per-msg = {one:.2} (target >= 0.70)");
    }
    for c in [8, 64].into_iter().filter(|c| conns.contains(c)) {
        let w = get(Variant::Wardlink, c);
        println!(
            "{c} conns: wardlink {:.0} msg/s (target >= 15000), {:.1}x fsync-per-msg, {:.2} of ack-only; p99 {:.3} ms",
            w.msgs_per_sec,
            w.msgs_per_sec / get(Variant::FsyncPerMessage, c).msgs_per_sec,
            w.msgs_per_sec / get(Variant::AckOnly, c).msgs_per_sec,
            w.p99_ms
        );
    }
    if conns.contains(&8) {
        println!(
            "p99 at 8 conns: {:.3} ms (target < 3 ms)",
            get(Variant::Wardlink, 8).p99_ms
        );
    }
    // Issue 3: ingest with the pipeline running stays within 80% of ingest
    // alone.
    let with_pipeline: Vec<String> = conns
        .iter()
        .map(|&c| {
            let ratio = get(Variant::WardlinkWithPipeline, c).msgs_per_sec
                / get(Variant::Wardlink, c).msgs_per_sec;
            format!("{ratio:.2} at {c}")
        })
        .collect();
    println!(
        "with the pipeline / without: {} conns (target >= 0.80)",
        with_pipeline.join(", ")
    );
    println!(
        "peak resident memory (VmHWM, client included) after the last wardlink slice: {wardlink_rss:.1} MB (target < 48 MB); after all runs: {:.1} MB",
        peak_rss_mb()
    );
}

/// `WARDLINK_BENCH_TLS=1`: plain against TLS at 8 connections, real store,
/// interleaved slices.
fn tls_main(secs: f64) {
    let certs = tempfile::tempdir().unwrap();
    let pair = tls_pair(certs.path());
    let connections = 8;
    let rounds = 4;
    println!(
        "MLLP ingest over TLS (rustls, ring) vs plain, real store, window 1, {connections} connections, {secs} s per variant in {rounds} interleaved slices"
    );
    println!(
        "{:<26} {:>5} {:>10} {:>8} {:>8} {:>9}",
        "variant", "conns", "msg/s", "p50 ms", "p99 ms", "avg group"
    );
    let mut plain = Slice::default();
    let mut tls = Slice::default();
    for _ in 0..rounds {
        plain.add(run_slice(
            Variant::Wardlink,
            connections,
            secs / f64::from(rounds),
            None,
        ));
        tls.add(run_slice(
            Variant::Wardlink,
            connections,
            secs / f64::from(rounds),
            Some(&pair),
        ));
    }
    let plain = plain.cell(Variant::Wardlink, connections);
    let tls = tls.cell(Variant::Wardlink, connections);
    for (name, c) in [("plain MLLP", &plain), ("MLLP over TLS", &tls)] {
        println!(
            "{:<26} {:>5} {:>10.0} {:>8.3} {:>8.3} {:>9.1}",
            name, c.connections, c.msgs_per_sec, c.p50_ms, c.p99_ms, c.avg_group
        );
    }
    println!(
        "TLS / plain throughput at {connections} conns = {:.2} (target >= 0.85)",
        tls.msgs_per_sec / plain.msgs_per_sec
    );
}
