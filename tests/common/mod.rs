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
        "[gateway]\nstate_dir = \"{}\"\n\n[log]\nlevel = \"debug\"\n\n{extra}\n",
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
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("wardlink.toml");
        std::fs::write(&config, config_text(&dir.path().join("state"), sources))?;
        let mut g = Gateway {
            child: None,
            stderr_path: dir.path().join("stderr.log"),
            dir,
            config,
        };
        g.spawn()?;
        Ok(g)
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

    /// `wardlink status --json` for this gateway's config.
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = Command::new(wardlink_bin())
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()?;
        if !out.status.success() {
            return Err(format!("status failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
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
