//! `wardlink demo`: the whole flow on one machine, loopback only.
//!
//! Design: the demo is the daemon of `wardlink run` plus the pieces a site
//! would have around it, wired the way an operator wires them:
//!
//! 1. a collector: the `wardlink-collector` binary found next to the running
//!    `wardlink` (so `cargo build --release --workspace` must have built
//!    both), on `127.0.0.1:0` with its own SQLite database, in its own
//!    process group (so Ctrl-C reaches the demo, which stops it last);
//! 2. the gateway's key made as by `wardlink keygen`, enrolled with
//!    `wardlink-collector enroll`, and a reader token from
//!    `wardlink-collector token create`;
//! 3. the gateway daemon itself (in this process) with an MLLP listener on
//!    `127.0.0.1:0` and `[sync]` pointing at the collector;
//! 4. two simulated senders (`simulate::Hl7Sender`, as `wardlink simulate hl7`): ORU^R01
//!    vitals and ADT^A01/A02/A03, at a few messages per second in all.
//!
//! Everything lives in one directory (a temporary one, removed at exit,
//! unless `--dir` names one to keep). Output goes to the writer the caller
//! passes (stdout for the CLI): where to look, then one progress line every
//! few seconds. On `shutdown` (Ctrl-C): senders stop, the gateway stops as on
//! SIGTERM, then the collector gets SIGTERM.

use std::io::{BufRead as _, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;
use wardlink_devices::sim::Hl7Generator;

use crate::cli::Hl7Mix;
use crate::simulate::{Counters, Hl7Sender};
use crate::status::{self, Runtime};

/// How long each part may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The demo senders' limit for each connect and answer.
const SENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The name of the collector binary.
const COLLECTOR_BIN: &str = "wardlink-collector";

/// What `wardlink demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep the files here; `None` = a temporary directory removed at exit.
    pub dir: Option<PathBuf>,
    /// Messages per second, all senders together.
    pub rate: f64,
}

/// The collector child process; SIGTERM and wait on drop.
struct CollectorProcess {
    child: Child,
    config: PathBuf,
    bin: PathBuf,
}

impl CollectorProcess {
    /// Stop it as an operator would (SIGTERM), then make sure it is gone.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // Our own child: its pid cannot have been reused while we hold it un-waited.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Run an admin command of the collector on its config; its stdout.
    fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        admin(&self.bin, &self.config, args)
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn admin(bin: &Path, config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`{COLLECTOR_BIN} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The demo's directory; removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<WorkDir> {
    let (path, keep) = match dir {
        Some(d) => (d, true),
        None => {
            let mut r = [0u8; 4];
            let _ = getrandom::fill(&mut r);
            let name = format!(
                "wardlink-demo-{}-{:08x}",
                std::process::id(),
                u32::from_le_bytes(r)
            );
            (std::env::temp_dir().join(name), false)
        }
    };
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(WorkDir { path, keep })
}

/// `wardlink-collector` next to the running executable.
fn collector_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let bin = exe
        .parent()
        .map(|d| d.join(COLLECTOR_BIN))
        .unwrap_or_else(|| PathBuf::from(COLLECTOR_BIN));
    if !bin.is_file() {
        bail!(
            "{} not found: the demo runs the collector built next to wardlink; build both with \
             `cargo build --release --workspace` and run target/release/wardlink demo",
            bin.display()
        );
    }
    Ok(bin)
}

/// Start `wardlink-collector serve` and wait for its address line.
fn start_collector(bin: &Path, dir: &Path) -> anyhow::Result<(CollectorProcess, String)> {
    let data = dir.join("collector");
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "# wardlink demo: the collector, plain HTTP on loopback.\n\
             listen = \"127.0.0.1:0\"\n\
             database = \"sqlite://{0}/collector.db\"\n\
             key_file = \"{0}/collector.key\"\n",
            data.display()
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let log =
        std::fs::File::create(dir.join("collector.log")).context("cannot create collector.log")?;
    let mut command = Command::new(bin);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // Its own process group: Ctrl-C in the terminal reaches only the demo,
    // which stops the gateway first and the collector last.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take();
    let mut process = CollectorProcess {
        child,
        config,
        bin: bin.to_path_buf(),
    };
    let Some(stdout) = stdout else {
        bail!("the collector's output is not readable");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading (and discarding) so the collector never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("wardlink-collector listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => Ok((process, url)),
        Err(_) => {
            process.stop();
            bail!(
                "the collector did not start within {START_TIMEOUT:?}; see {}",
                dir.join("collector.log").display()
            )
        }
    }
}

/// Run the demo until `shutdown` is cancelled.
///
/// # Errors
/// The collector binary is missing, a part does not start, or a file cannot
/// be written. Output errors are ignored.
pub async fn run(
    options: DemoOptions,
    out: &mut (dyn Write + Send),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bin = collector_binary()?;
    let dir = work_dir(options.dir.clone())?;
    crate::sync::client::install_crypto_provider();

    let (mut collector, url) = start_collector(&bin, &dir.path)?;
    let collector_key = collector
        .admin(&["public-key"])
        .context("reading the collector's key")?;
    let state_dir = dir.path.join("gateway");
    let key = crate::sync::keygen(&state_dir).context("creating the gateway key")?;
    collector
        .admin(&[
            "enroll",
            "--gateway-id",
            &key.gateway_id,
            "--public-key",
            &key.public_key,
        ])
        .context("enrolling the gateway")?;
    let token = collector
        .admin(&["token", "create", "demo-reader"])
        .or_else(|_| {
            // A kept --dir from an earlier run has the name taken already.
            let mut r = [0u8; 4];
            let _ = getrandom::fill(&mut r);
            let name = format!("demo-reader-{:08x}", u32::from_le_bytes(r));
            collector.admin(&["token", "create", &name])
        })
        .context("creating a reader token")?;

    let gateway_config = dir.path.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "# wardlink demo: the gateway, uploading to the demo's collector.\n\
             [gateway]\nstate_dir = \"{}\"\n\n\
             [log]\nlevel = \"warn\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [sync]\ncollector_url = \"{url}\"\ncollector_public_key = \"{collector_key}\"\n\
             batch_max_age = \"1s\"\nretry_backoff_max = \"5s\"\n\n\
             [[source.mllp]]\nname = \"demo\"\nlisten = \"127.0.0.1:0\"\n",
            state_dir.display()
        ),
    )
    .with_context(|| format!("cannot write {}", gateway_config.display()))?;
    let config = wardlink_config::load_file(&gateway_config)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config;

    let gateway_stop = CancellationToken::new();
    let mut gateway = tokio::spawn(crate::daemon::run(config.clone(), gateway_stop.clone()));
    let mllp = tokio::select! {
        a = wait_for_listener(&state_dir) => a?,
        r = &mut gateway => {
            collector.stop();
            return Err(match r {
                Ok(Err(e)) => e.context("the gateway did not start"),
                _ => anyhow::anyhow!("the gateway did not start"),
            });
        }
    };

    let feed = format!("{url}/v1/feeds/events");
    let _ = writeln!(
        out,
        "wardlink demo: a collector, a gateway and two simulated senders, loopback only\n\
         \n  collector  {url}   (wardlink-collector pid {}, log {})\
         \n  gateway    {}   MLLP on {mllp}, uploading signed batches to the collector\
         \n  senders    ORU^R01 vitals and ADT^A01/A02/A03, about {} messages/s\
         \n  files      {}{}\
         \n\nWhere to look:\
         \n  gateway status:  wardlink status --config {}\
         \n  feed URL:        {feed}\
         \n  reader token:    {token}\
         \n  events:          curl -s -H 'Authorization: Bearer {token}' '{feed}?limit=5'\
         \n  gateways:        curl -s -H 'Authorization: Bearer {token}' {url}/v1/gateways\
         \n\nCtrl-C stops everything.\n",
        collector.child.id(),
        dir.path.join("collector.log").display(),
        key.gateway_id,
        options.rate,
        dir.path.display(),
        if dir.keep { "" } else { " (removed at exit)" },
        gateway_config.display(),
    );
    let _ = out.flush();

    let sent = Arc::new(Counters::default());
    let senders = CancellationToken::new();
    let rate = options.rate.max(0.1);
    let mut tasks = tokio::task::JoinSet::new();
    // Control ids unique across demo runs on a kept --dir (duplicate detection).
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (mix, share, generator) in [
        (
            Hl7Mix::Vitals,
            0.85,
            Hl7Generator::new(1).with_sender("MONITOR", "ICU"),
        ),
        (
            Hl7Mix::Adt,
            0.15,
            Hl7Generator::new(2).with_sender("HIS", "HOSP"),
        ),
    ] {
        let prefix = if mix == Hl7Mix::Adt { "A" } else { "V" };
        let sender = Hl7Sender {
            addr: mllp,
            mix,
            rate: (rate * share).max(0.05),
            timeout: SENDER_TIMEOUT,
            budget: None,
            counters: sent.clone(),
            out: None,
        };
        tasks.spawn(sender.run(
            generator.with_prefix(&format!("DEMO{prefix}{run}-")),
            senders.clone(),
        ));
    }

    let http = crate::sync::client::http_client(&wardlink_config::CollectorTarget {
        url: url.clone(),
        public_key: collector_key,
        ca_file: None,
        client_cert: None,
    })?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = &mut gateway => {
                senders.cancel();
                collector.stop();
                return Err(match r {
                    Ok(Err(e)) => e.context("the gateway stopped"),
                    _ => anyhow::anyhow!("the gateway stopped"),
                });
            }
            _ = ticker.tick() => {
                let line = progress(&state_dir, &config, &http, &url, &token, &sent, started).await;
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

    let _ = writeln!(
        out,
        "\nstopping: senders, then the gateway, then the collector"
    );
    senders.cancel();
    while tasks.join_next().await.is_some() {}
    gateway_stop.cancel();
    match tokio::time::timeout(crate::daemon::SHUTDOWN_DEADLINE * 2, gateway).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!("the gateway stopped with an error: {e:#}"),
        _ => tracing::error!("the gateway did not stop in time"),
    }
    let final_line = progress(&state_dir, &config, &http, &url, &token, &sent, started).await;
    tokio::task::spawn_blocking(move || collector.stop())
        .await
        .context("stopping the collector")?;
    let _ = writeln!(out, "{final_line}\nstopped");
    let _ = out.flush();
    Ok(())
}

/// Wait until the in-process daemon has written its runtime file; its MLLP address.
async fn wait_for_listener(state_dir: &Path) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(rt) = Runtime::read(state_dir).filter(|rt| rt.pid == std::process::id()) {
            if let Some(l) = rt.listeners.first() {
                return l
                    .addr
                    .parse()
                    .with_context(|| format!("listener address {}", l.addr));
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway did not bind its listener within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One progress line: what was sent, what the gateway holds, what the
/// collector received.
async fn progress(
    state_dir: &Path,
    config: &wardlink_config::Config,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    sent: &Counters,
    started: Instant,
) -> String {
    let (dir, names, sync) = (
        state_dir.to_path_buf(),
        vec!["demo".to_owned()],
        config.sync.clone(),
    );
    let gateway = tokio::task::spawn_blocking(move || status::report(&dir, &names, &sync))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|r| {
            format!(
                "gateway: {} stored, {} quarantined, {} uploaded, {} pending (events: {} not sealed yet, {} in {} sealed batches waiting)",
                r.total.counters.acked,
                r.total.counters.quarantined,
                r.total.counters.uploaded,
                r.total.counters.pending_upload + r.total.counters.awaiting,
                r.sync.unsealed_events,
                r.sync.sealed_events,
                r.sync.sealed_batches
            )
        })
        .unwrap_or_else(|| "gateway: status unavailable".into());
    let collector = match http
        .get(format!("{url}/v1/gateways"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => match r
            .text()
            .await
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            Some(v) => {
                let events: u64 = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g["events_received"].as_u64()).sum())
                    .unwrap_or(0);
                format!("collector: {events} events received")
            }
            None => "collector: no answer".into(),
        },
        Err(_) => "collector: not reachable".into(),
    };
    format!(
        "[{:>4}s] sent {} messages ({} acknowledged) · {gateway} · {collector}",
        started.elapsed().as_secs(),
        sent.sent.load(Ordering::Relaxed),
        sent.accepted.load(Ordering::Relaxed),
    )
}
