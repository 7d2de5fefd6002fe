//! A real MQTT broker for tests and benchmarks: Debian's `mosquitto`, run
//! in the foreground on 127.0.0.1 on a free port with a generated config
//! (persistence on, in a temporary directory), stopped with SIGTERM (it
//! saves its sessions and queues then) and started again on the same port
//! and directory for restart tests. Installed by scripts/install-test-deps.sh.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed step is a failed test"
)]

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The mosquitto binary, if installed (Debian puts it in /usr/sbin).
pub fn mosquitto_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// True when the MQTT tests can run; otherwise explains why and, when
/// `WARDLINK_REQUIRE_EXTERNAL=1` (scripts/test.sh, CI), fails the test.
pub fn broker_available() -> bool {
    let pubc = Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if mosquitto_bin().is_some() && pubc {
        return true;
    }
    let msg = "mosquitto and mosquitto-clients are not installed (scripts/install-test-deps.sh installs them)";
    if std::env::var("WARDLINK_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    false
}

/// A running (or stopped) mosquitto.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Start a broker on a free port.
    pub fn start() -> Result<Broker> {
        Broker::start_with(|_| String::new())
    }

    /// Start a broker whose listener gets the config lines `extra(dir)`
    /// (e.g. TLS files written into the broker's directory).
    pub fn start_with(extra: impl FnOnce(&std::path::Path) -> String) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        // mosquitto started as root drops to the `mosquitto` user, which must
        // be able to write its persistence file here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let extra = extra(dir.path());
        let conf = format!(
            "listener {port} 127.0.0.1\n{extra}\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {}/\n\
             max_queued_messages 0\n\
             max_inflight_messages 1000\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut b = Broker {
            dir,
            port,
            child: None,
        };
        b.spawn()?;
        Ok(b)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result {
        let bin = mosquitto_bin().ok_or("mosquitto is not installed")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen:\n{}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// SIGTERM (the broker saves its sessions and queues) and wait.
    pub fn stop(&mut self) -> Result {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("mosquitto did not stop within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stop and start again on the same port and persistence directory.
    pub fn restart(&mut self) -> Result {
        self.stop()?;
        self.spawn()
    }

    /// Publish each line as one QoS 1 message on `topic` with mosquitto_pub
    /// (a third-party client); returns once it exited (all acknowledged).
    pub fn publish_lines(&self, topic: &str, lines: &[String]) -> Result {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            for l in lines {
                writeln!(stdin, "{l}")?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read as _;
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!("mosquitto_pub failed ({status}): {err}").into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("mosquitto_pub did not finish within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Publish one message (QoS 1).
    pub fn publish(&self, topic: &str, payload: &str) -> Result {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic, "-m", payload])
            .status()?;
        if !status.success() {
            return Err(format!("mosquitto_pub failed: {status}").into());
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
