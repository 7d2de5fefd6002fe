//! Shared harness for the end-to-end tests: start the real `wardlink` binary
//! on a temporary state directory with listeners on 127.0.0.1:0, find the
//! bound ports in its runtime file, talk MLLP to it, read its status.
//! Every network wait has a timeout, so no test can hang.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed step is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long any single network wait may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const SB: u8 = 0x0b;
pub const EB: u8 = 0x1c;
pub const CR: u8 = 0x0d;

pub fn wardlink_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wardlink"))
}

/// A running gateway process and its private state directory.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub stderr_path: PathBuf,
}

/// The config of a test gateway: `extra` is appended (e.g. `[[source.mllp]]` tables).
pub fn config_text(state_dir: &Path, extra: &str) -> String {
    format!(
        "[gateway]\nstate_dir = \"{}\"\n\n[log]\nlevel = \"debug\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
        state_dir.display()
    )
}

/// One MLLP listener on a free port.
pub fn mllp_source(name: &str, extra: &str) -> String {
    format!("[[source.mllp]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

impl Gateway {
    /// Write a config with `sources` and start the daemon; returns once every
    /// listener is bound (the runtime file names them).
    pub fn start(sources: &str) -> Result<Gateway> {
        let mut g = Gateway::prepare(sources)?;
        g.spawn()?;
        Ok(g)
    }

    /// Write a config with `sources` (and any other tables) without starting
    /// the daemon, e.g. to run `wardlink keygen` first.
    pub fn prepare(sources: &str) -> Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("wardlink.toml");
        std::fs::write(&config, config_text(&dir.path().join("state"), sources))?;
        Ok(Gateway {
            child: None,
            stderr_path: dir.path().join("stderr.log"),
            dir,
            config,
        })
    }

    /// `wardlink keygen` for this gateway's config: its stdout.
    pub fn keygen(&self) -> Result<String> {
        let out = Command::new(wardlink_bin())
            .args(["keygen", "--config"])
            .arg(&self.config)
            .output()?;
        if !out.status.success() {
            return Err(format!("keygen failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// (Re)start the daemon on the same config and state directory.
    pub fn spawn(&mut self) -> Result {
        let _ = std::fs::remove_file(self.state_dir().join("run.json"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)?;
        let child = Command::new(wardlink_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(rt) = self.runtime() {
                if rt["pid"].as_u64() == Some(u64::from(pid)) {
                    return Ok(());
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(
                    format!("wardlink exited early with {status}:\n{}", self.stderr()).into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!("wardlink did not become ready:\n{}", self.stderr()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn runtime(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.state_dir().join("run.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The bound address of a source.
    pub fn addr(&self, source: &str) -> SocketAddr {
        let rt = self.runtime().expect("runtime file");
        let l = rt["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .find(|l| l["source"] == source)
            .unwrap_or_else(|| panic!("no listener {source} in {rt}"));
        l["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket address")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGHUP: the daemon re-reads its config file.
    pub fn hup(&self) -> Result {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -HUP failed: {status}").into());
        }
        Ok(())
    }

    /// Rewrite the config file with `sources` (as `config_text` makes it)
    /// and reload it with SIGHUP.
    pub fn reload_with(&self, sources: &str) -> Result {
        std::fs::write(&self.config, config_text(&self.state_dir(), sources))?;
        self.hup()
    }

    /// Send a signal with kill(1) and wait for the exit (at most `timeout`).
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus> {
        let pid = self.pid();
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if !ok.success() {
            return Err(format!("kill {signal} {pid} failed").into());
        }
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(
                    format!("wardlink did not exit within {timeout:?} after {signal}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `wardlink status --json` for this gateway's config (exit 0, or 1 when
    /// it reports an alarm).
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = Command::new(wardlink_bin())
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()?;
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(format!("status failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let alarms = v["alarms"].as_array().map_or(0, Vec::len);
        assert_eq!(
            out.status.code() == Some(1),
            alarms > 0,
            "status exits 1 exactly when it reports an alarm: {v}"
        );
        Ok(v)
    }

    /// Open the store read-only (for assertions on what is stored).
    pub fn open_store(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            self.state_dir().join("wardlink.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )?;
        conn.busy_timeout(IO_TIMEOUT)?;
        Ok(conn)
    }

    /// Every event in the outbox, in id order (decoded: a row holds one
    /// message's events, compressed).
    pub fn outbox_events(&self) -> Result<Vec<wardlink::store::outbox::StoredEvent>> {
        Ok(wardlink::store::outbox::stored_events(&self.open_store()?)?)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run the binary with arguments and collect its output.
pub fn wardlink(args: &[&str]) -> Output {
    Command::new(wardlink_bin())
        .args(args)
        .output()
        .expect("run wardlink")
}

/// A plain blocking MLLP client with timeouts.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> Result {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    pub fn send_frame(&mut self, msg: &[u8]) -> Result {
        let mut f = Vec::with_capacity(msg.len() + 3);
        f.push(SB);
        f.extend_from_slice(msg);
        f.extend_from_slice(&[EB, CR]);
        self.send_raw(&f)
    }

    /// Read one framed answer (the bytes between SB and EB).
    pub fn read_answer(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(start) = self.buf.iter().position(|&b| b == SB) {
                if let Some(end) = self.buf[start..].windows(2).position(|w| w == [EB, CR]) {
                    let frame = self.buf[start + 1..start + end].to_vec();
                    self.buf.drain(..start + end + 2);
                    return Ok(frame);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed before an answer".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send one message and read its answer.
    pub fn exchange(&mut self, msg: &[u8]) -> Result<Ack> {
        self.send_frame(msg)?;
        Ok(Ack::parse(&self.read_answer()?))
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(within));
        let mut b = [0u8; 64];
        let closed = matches!(self.stream.read(&mut b), Ok(0) | Err(_));
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }
}

/// The parts of an ACK the tests look at.
#[derive(Debug, Clone)]
pub struct Ack {
    pub raw: String,
    pub code: String,
    pub control_id: String,
    pub err: Option<String>,
}

impl Ack {
    pub fn parse(bytes: &[u8]) -> Ack {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let mut code = String::new();
        let mut control_id = String::new();
        let mut err = None;
        for seg in raw.split(['\r', '\n']) {
            if let Some(rest) = seg.strip_prefix("MSA|") {
                let mut f = rest.split('|');
                code = f.next().unwrap_or("").to_string();
                control_id = f.next().unwrap_or("").to_string();
            } else if seg.starts_with("ERR|") {
                err = Some(seg.to_string());
            }
        }
        Ack {
            raw,
            code,
            control_id,
            err,
        }
    }
}

/// A realistic ORU^R01 vital-signs message of about 1 KB, original
/// acknowledgement mode (MSH-15 and MSH-16 empty).
pub fn oru(control_id: &str) -> Vec<u8> {
    oru_with_ack_types(control_id, "", "")
}

/// The same message with MSH-15 (accept ack type) and MSH-16 (application ack type) set.
pub fn oru_with_ack_types(control_id: &str, msh15: &str, msh16: &str) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|MONITOR|ICU-7|WARDLINK|HOSP|20261123101500+0530||ORU^R01^ORU_R01|{control_id}|P|2.6|||{msh15}|{msh16}||UNICODE UTF-8\r\
         PID|1||MRN{control_id}^^^HOSP^MR||Sharma^Priya^K||19780412|F|||12 MG Road^^Bengaluru^KA^560001^IND\r\
         PV1|1|I|ICU^07^B^HOSP||||1234^Rao^Anil\r\
         OBR|1|||69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC|||20261123101500+0530\r"
    );
    let obs = [
        (
            "147842",
            "MDC_ECG_HEART_RATE",
            "72",
            "264864",
            "MDC_DIM_BEAT_PER_MIN",
        ),
        (
            "150456",
            "MDC_PULS_OXIM_SAT_O2",
            "97",
            "262688",
            "MDC_DIM_PERCENT",
        ),
        (
            "151562",
            "MDC_RESP_RATE",
            "16",
            "264928",
            "MDC_DIM_RESP_PER_MIN",
        ),
        (
            "150301",
            "MDC_PRESS_CUFF_SYS",
            "121",
            "266016",
            "MDC_DIM_MMHG",
        ),
        (
            "150302",
            "MDC_PRESS_CUFF_DIA",
            "79",
            "266016",
            "MDC_DIM_MMHG",
        ),
        ("150344", "MDC_TEMP", "36.8", "268192", "MDC_DIM_DEGC"),
    ];
    for (i, (code, name, value, ucode, uname)) in obs.iter().enumerate() {
        m.push_str(&format!(
            "OBX|{}|NM|{code}^{name}^MDC|1.1.1.{}|{value}|{ucode}^{uname}^MDC|||||F|||20261123101500+0530||||0123456789ABCDEF^^0123456789ABCDEF^EUI-64\r",
            i + 1,
            i + 1
        ));
    }
    m.into_bytes()
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The accounting identity every status report must satisfy.
pub fn assert_accounting(status: &serde_json::Value) {
    let get = |v: &serde_json::Value, k: &str| {
        v[k].as_i64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    };
    let check = |v: &serde_json::Value| {
        assert_eq!(
            get(v, "received"),
            get(v, "acked") + get(v, "duplicates") + get(v, "rejected"),
            "received = acked + duplicates + rejected in {v}"
        );
        assert_eq!(
            get(v, "acked"),
            get(v, "awaiting")
                + get(v, "quarantined")
                + get(v, "pending_upload")
                + get(v, "uploaded")
                + get(v, "dropped"),
            "acked = awaiting + quarantined + pending_upload + uploaded + dropped in {v}"
        );
    };
    check(status);
    for (_, s) in status["sources"].as_object().expect("sources") {
        check(s);
    }
}

// --- the collector ---------------------------------------------------------

/// `wardlink-collector`, built next to `wardlink` (`cargo build --workspace
/// --bins`, which scripts/test.sh runs first).
pub fn collector_bin() -> PathBuf {
    let bin = wardlink_bin()
        .parent()
        .expect("target directory")
        .join("wardlink-collector");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running `wardlink-collector serve` on a private directory and SQLite.
pub struct Collector {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin endpoint (status page, `/metrics`): `http://127.0.0.1:PORT`.
    pub admin_url: String,
}

impl Collector {
    /// Start a collector on a free port.
    pub fn start() -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("collector.toml");
        let mut c = Collector {
            child: None,
            dir,
            config,
            url: String::new(),
            admin_url: String::new(),
        };
        c.write_config("127.0.0.1:0")?;
        c.spawn()?;
        Ok(c)
    }

    fn write_config(&self, listen: &str) -> Result {
        std::fs::write(
            &self.config,
            format!(
                "listen = \"{listen}\"\ndatabase = \"sqlite://{0}/data/collector.db\"\nkey_file = \"{0}/data/collector.key\"\nadmin_listen = \"127.0.0.1:0\"\n",
                self.dir.path().display()
            ),
        )?;
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("collector address")
    }

    /// (Re)start on the same config; waits for the address line.
    pub fn spawn(&mut self) -> Result {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))?;
        let mut child = Command::new(collector_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                if let Some(url) = line.strip_prefix("wardlink-collector listening on ") {
                    let _ = tx.send((false, url.to_string()));
                }
                if let Some(url) = line.strip_prefix("wardlink-collector admin on ") {
                    let _ = tx.send((true, url.to_string()));
                }
            }
        });
        let mut url = String::new();
        self.admin_url.clear();
        while url.is_empty() || self.admin_url.is_empty() {
            let (admin, u) = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| format!("the collector did not start:\n{}", self.stderr()))?;
            if admin {
                self.admin_url = u;
            } else {
                url = u;
            }
        }
        // Restarts come back on the same port.
        if self.url.is_empty() {
            self.write_config(url.trim_start_matches("http://"))?;
        }
        self.url = url;
        Ok(())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// SIGTERM and wait (the collector finishes requests in flight).
    pub fn stop(&mut self) -> Result {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err("the collector did not stop on SIGTERM".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Run an admin command on this collector's database; its stdout.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(collector_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn public_key(&self) -> Result<String> {
        self.admin(&["public-key"])
    }

    /// Enrol the key that `wardlink keygen` printed (its `enroll` line).
    pub fn enroll_from_keygen(&self, keygen_output: &str) -> Result<String> {
        let line = keygen_output
            .lines()
            .find(|l| l.starts_with("wardlink-collector enroll "))
            .ok_or("keygen printed no enroll command")?;
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        self.admin(&args)
    }

    pub fn token(&self) -> Result<String> {
        let mut r = [0u8; 4];
        getrandom::fill(&mut r)?;
        self.admin(&[
            "token",
            "create",
            &format!("reader-{}", u32::from_le_bytes(r)),
        ])
    }

    /// Every event of the feed from the start, in feed order: the lines'
    /// `event` objects with the line's `gateway_id` and `seq` beside them.
    pub fn feed(&self, token: &str) -> Result<Vec<serde_json::Value>> {
        read_feed(&self.url, token)
    }

    /// The `[sync]` table and an MLLP source for a gateway uploading here.
    pub fn gateway_config(&self, sync_extra: &str, sources: &str) -> Result<String> {
        Ok(format!(
            "[sync]\ncollector_url = \"{}\"\ncollector_public_key = \"{}\"\n{sync_extra}\n\n{sources}",
            self.url,
            self.public_key()?
        ))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Read the whole event feed of the collector at `url` (pages of 500).
pub fn read_feed(url: &str, token: &str) -> Result<Vec<serde_json::Value>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = wardlink::sync::client::http_client(&wardlink_config::CollectorTarget {
            url: url.to_string(),
            public_key: String::new(),
            ca_file: None,
            client_cert: None,
        })?;
        let mut all = Vec::new();
        let mut after = 0u64;
        loop {
            let r = tokio::time::timeout(
                IO_TIMEOUT,
                client
                    .get(format!("{url}/v1/feeds/events?after={after}&limit=500"))
                    .bearer_auth(token)
                    .send(),
            )
            .await??;
            if !r.status().is_success() {
                return Err(format!("feed answered {}", r.status()).into());
            }
            let next: u64 = r
                .headers()
                .get("wardlink-next-cursor")
                .ok_or("no cursor header")?
                .to_str()?
                .parse()?;
            let text = r.text().await?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(serde_json::from_str)
                .collect::<std::result::Result<_, _>>()?;
            if lines.is_empty() {
                return Ok(all);
            }
            after = next;
            all.extend(lines);
        }
    })
}

/// `wardlink status --json` until `f` holds (or the timeout); the last status.
pub fn wait_status(
    g: &Gateway,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(timeout, || {
        last = g.status_json().unwrap_or_default();
        f(&last)
    });
    assert!(ok, "timed out waiting until {what}: {last}\n{}", g.stderr());
    last
}

/// Wait until every stored message is through the pipeline and uploaded.
pub fn wait_drained(g: &Gateway, timeout: Duration) -> serde_json::Value {
    wait_status(g, timeout, "everything is uploaded", |s| {
        s["acked"].as_i64().unwrap_or(0) > 0
            && s["awaiting"] == 0
            && s["pending_upload"] == 0
            && s["sync"]["unsealed_events"] == 0
            && s["sync"]["sealed_batches"] == 0
    })
}

/// A child process that is killed (and reaped) when this goes out of scope,
/// also when an assertion panics first: a failed test leaves no daemon
/// running.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
