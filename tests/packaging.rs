//! The .deb packages and the systemd units, end to end on this machine.
//!
//! It builds the four packages with `scripts/build-debs.sh` (amd64 from the
//! debug binaries `cargo build --workspace --bins` made, arm64 really
//! cross-built with the quick `deb-test` profile), then as root:
//! lintian on each; the arm64 binaries run `--version` and `check-config`
//! under qemu-user; `dpkg -i` of an older version, a store filled through the
//! installed binary running as the `wardlink` user, `dpkg -i` of the newer
//! version over it (every message, key and the edited conffile kept, the
//! store read and written by the new binary), `systemd-analyze verify` and
//! `security --offline=true` on the installed units, `dpkg -r` (state and
//! conffile kept), `dpkg -P` (state gone).
//!
//! It installs and purges the packages `wardlink` and `wardlink-collector`
//! on this machine, so it runs only when WARDLINK_TEST_DEBS=1 (scripts/test.sh
//! sets it; with WARDLINK_REQUIRE_EXTERNAL=1 and without it the test fails).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a failed step is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{oru, Client, Result};

const OLD: &str = "0.0.1-1";
const PACKAGES: [&str; 2] = ["wardlink", "wardlink-collector"];
const CONF: &str = "/etc/wardlink/wardlink.toml";
const STATE: &str = "/var/lib/wardlink";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run a command; fail with its output unless it exits 0.
fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8(run(cmd)?.stdout)?)
}

fn dpkg(args: &[&str]) -> Result<Output> {
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The package's status word ("installed", "config-files", or "" when unknown).
fn package_state(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Purges both packages when the test ends, whatever happened.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["-P", "wardlink", "wardlink-collector"])
            .stdin(Stdio::null())
            .output();
    }
}

/// Whether the test may run; Err when it must but cannot.
fn enabled() -> Result<bool> {
    let required = std::env::var("WARDLINK_REQUIRE_EXTERNAL").as_deref() == Ok("1");
    if std::env::var("WARDLINK_TEST_DEBS").as_deref() != Ok("1") {
        if required {
            return Err(
                "WARDLINK_REQUIRE_EXTERNAL=1 but WARDLINK_TEST_DEBS is not 1: \
                        run scripts/test.sh (the packaging test installs packages)"
                    .into(),
            );
        }
        eprintln!(
            "skipped: set WARDLINK_TEST_DEBS=1 (as root) to build, install and purge the packages"
        );
        return Ok(false);
    }
    if unsafe_free_euid() != 0 {
        return Err("WARDLINK_TEST_DEBS=1 needs root (dpkg -i)".into());
    }
    for tool in [
        "dpkg-deb",
        "lintian",
        "systemd-analyze",
        "qemu-aarch64",
        "aarch64-linux-gnu-gcc",
        "readelf",
    ] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .success()
        {
            return Err(format!("{tool} is missing: run scripts/install-test-deps.sh").into());
        }
    }
    Ok(true)
}

/// The effective user id, from `id -u` (no unsafe code in the workspace).
fn unsafe_free_euid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn ids(user: &str) -> Result<(u32, u32)> {
    let uid = stdout(Command::new("id").args(["-u", user]))?
        .trim()
        .parse()?;
    let gid = stdout(Command::new("id").args(["-g", user]))?
        .trim()
        .parse()?;
    Ok((uid, gid))
}

/// The installed `wardlink` with `args`, as the `wardlink` user.
fn as_wardlink(args: &[&str]) -> Result<Command> {
    let (uid, gid) = ids("wardlink")?;
    let mut cmd = Command::new("/usr/bin/wardlink");
    cmd.args(args).current_dir(STATE).uid(uid).gid(gid);
    Ok(cmd)
}

/// `wardlink run` of the installed package on the installed config, as the
/// `wardlink` user; returns once its MLLP listener is bound.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start() -> Result<(Daemon, SocketAddr)> {
        let _ = std::fs::remove_file(Path::new(STATE).join("run.json"));
        // Its log, kept for the error message if it fails to start.
        let log = tempfile::tempfile()?;
        let child = as_wardlink(&["run", "--config", CONF])?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone()?)
            .spawn()?;
        let mut d = Daemon { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = Self::bound() {
                return Ok((d, addr));
            }
            if let Some(status) = d.child.try_wait()? {
                use std::io::{Read as _, Seek as _};
                let mut text = String::new();
                let mut log = &log;
                log.rewind()?;
                log.read_to_string(&mut text)?;
                return Err(
                    format!("the installed wardlink exited early: {status}\n{text}").into(),
                );
            }
            if Instant::now() > deadline {
                return Err("the installed wardlink did not bind its listener".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn bound() -> Option<SocketAddr> {
        let text = std::fs::read_to_string(Path::new(STATE).join("run.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["listeners"][0]["addr"].as_str()?.parse().ok()
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) -> Result {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                assert!(status.success(), "clean stop, got {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("wardlink did not stop after SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `n` messages numbered from `first`; each must get AA.
fn send(addr: SocketAddr, first: usize, n: usize) -> Result {
    let mut client = Client::connect(addr)?;
    for i in first..first + n {
        let id = format!("PKG{i:05}");
        let ack = client.exchange(&oru(&id))?;
        assert_eq!(ack.code, "AA", "message {id}: {}", ack.raw);
        assert_eq!(ack.control_id, id);
    }
    Ok(())
}

fn received(status_json: &str) -> Result<u64> {
    let v: serde_json::Value = serde_json::from_str(status_json)?;
    v["acked"]
        .as_u64()
        .ok_or_else(|| format!("no acked in {v}").into())
}

fn status_acked() -> Result<u64> {
    let out = as_wardlink(&["status", "--json", "--config", CONF])?
        .stdin(Stdio::null())
        .output()?;
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    received(&String::from_utf8(out.stdout)?)
}

fn build(out: &Path, extra: &[&str]) -> Result {
    let bins = PathBuf::from(env!("CARGO_BIN_EXE_wardlink"));
    let bins = bins.parent().ok_or("bin dir")?;
    if !bins.join("wardlink-collector").exists() {
        return Err("wardlink-collector is not built next to wardlink: \
                    run `cargo build --workspace --bins` (scripts/test.sh does)"
            .into());
    }
    let mut cmd = Command::new(repo().join("scripts/build-debs.sh"));
    cmd.args(["--profile", "deb-test", "--fast", "--amd64-bins"])
        .arg(bins)
        .arg("--out")
        .arg(out)
        .args(extra);
    run(&mut cmd)?;
    Ok(())
}

fn deb(dir: &Path, pkg: &str, version: &str, arch: &str) -> PathBuf {
    dir.join(format!("{pkg}_{version}_{arch}.deb"))
}

/// The version the default build gets: the workspace version + "-1".
fn new_version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// lintian reports no error on any of `debs` (one run: its start-up is slow).
fn lintian_clean(debs: &[PathBuf]) -> Result {
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .args(debs)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    eprintln!(
        "lintian: no error ({} other lines)\n{text}",
        text.lines().count()
    );
    Ok(())
}

/// The arm64 package's binaries are aarch64, stripped, and run under qemu-user.
fn arm64_runs_under_qemu(dir: &Path) -> Result {
    let x = tempfile::tempdir()?;
    for pkg in PACKAGES {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb(dir, pkg, &new_version(), "arm64"))
            .arg(x.path()))?;
        let bin = x.path().join("usr/bin").join(pkg);
        let header = stdout(Command::new("readelf").arg("-h").arg(&bin))?;
        assert!(
            header.contains("AArch64"),
            "{pkg} is not aarch64:\n{header}"
        );
        let sections = stdout(Command::new("readelf").arg("-S").arg(&bin))?;
        assert!(
            !sections.contains(".symtab") && !sections.contains(".debug_info"),
            "{pkg} is not stripped"
        );
        let version = stdout(
            Command::new("qemu-aarch64")
                .args(["-L", "/usr/aarch64-linux-gnu"])
                .arg(&bin)
                .arg("--version"),
        )?;
        assert_eq!(
            version.trim(),
            format!("{pkg} {}", env!("CARGO_PKG_VERSION")),
            "{pkg} --version under qemu"
        );
        eprintln!(
            "arm64 {pkg}: {} bytes stripped",
            std::fs::metadata(&bin)?.len()
        );
    }
    let check = stdout(
        Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(x.path().join("usr/bin/wardlink"))
            .arg("check-config")
            .arg(x.path().join("etc/wardlink/wardlink.toml")),
    )?;
    assert!(check.contains("ok (1 source)"), "{check}");
    Ok(())
}

/// What the installed packages must have put in place; `conf` is what
/// /etc/wardlink/wardlink.toml must hold (the packaged one, or the edit).
fn installed_as_specified(conf: &str) -> Result {
    for f in [
        "/usr/bin/wardlink",
        CONF,
        "/lib/systemd/system/wardlink.service",
        "/usr/share/man/man1/wardlink.1.gz",
        "/usr/share/man/man1/wardlink-run.1.gz",
        "/usr/share/man/man1/wardlink-check-config.1.gz",
        "/usr/share/bash-completion/completions/wardlink",
        "/usr/share/zsh/vendor-completions/_wardlink",
        "/usr/share/doc/wardlink/copyright",
        "/usr/share/doc/wardlink/changelog.Debian.gz",
        "/usr/share/doc/wardlink/README.md",
        "/usr/share/doc/wardlink/operations.md",
        "/usr/share/doc/wardlink/examples/low-port.conf",
        "/usr/bin/wardlink-collector",
        "/etc/wardlink-collector/collector.toml",
        "/lib/systemd/system/wardlink-collector.service",
        "/usr/share/man/man1/wardlink-collector.1.gz",
        "/usr/share/bash-completion/completions/wardlink-collector",
        "/usr/share/zsh/vendor-completions/_wardlink-collector",
        "/usr/share/doc/wardlink-collector/collector.md",
    ] {
        assert!(Path::new(f).exists(), "{f} is not installed");
    }
    for bin in ["/usr/bin/wardlink", "/usr/bin/wardlink-collector"] {
        let sections = stdout(Command::new("readelf").arg("-S").arg(bin))?;
        assert!(
            !sections.contains(".symtab") && !sections.contains(".debug_info"),
            "{bin} is not stripped"
        );
    }
    // The user and group, in dialout; a system account without a shell.
    let passwd = stdout(Command::new("getent").args(["passwd", "wardlink"]))?;
    assert!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/wardlink:/usr/sbin/nologin"),
        "{passwd}"
    );
    let (uid, gid) = ids("wardlink")?;
    assert!(uid < 1000, "a system user: uid {uid}");
    let groups = stdout(Command::new("id").args(["-nG", "wardlink"]))?;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"wardlink") && groups.contains(&"dialout"),
        "{groups:?}"
    );
    // The state directory: the user's, 0750.
    let meta = std::fs::metadata(STATE)?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750, "{STATE} mode");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{STATE} owner");
    // Conffiles, as dpkg knows them.
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "wardlink"]))?;
    assert!(conffiles.contains(CONF), "{conffiles}");
    let conffiles =
        stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "wardlink-collector"]))?;
    assert!(
        conffiles.contains("/etc/wardlink-collector/collector.toml"),
        "{conffiles}"
    );
    // The installed conffile is valid and configures one loopback listener.
    let check = stdout(Command::new("/usr/bin/wardlink").args(["check-config", CONF]))?;
    assert!(check.contains("ok (1 source)"), "{check}");
    assert_eq!(std::fs::read_to_string(CONF)?, conf);
    // The collector: its own user and state directory; its config readable
    // by its group only; the config works as that user.
    let (cuid, cgid) = ids("wardlink-collector")?;
    let meta = std::fs::metadata("/var/lib/wardlink-collector")?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (cuid, cgid));
    let meta = std::fs::metadata("/etc/wardlink-collector/collector.toml")?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, cgid));
    let key = stdout(
        Command::new("/usr/bin/wardlink-collector")
            .args([
                "public-key",
                "--config",
                "/etc/wardlink-collector/collector.toml",
            ])
            .current_dir("/var/lib/wardlink-collector")
            .uid(cuid)
            .gid(cgid),
    )?;
    assert_eq!(key.trim().len(), 64, "public key: {key}");
    assert!(Path::new("/var/lib/wardlink-collector/collector.key").exists());
    Ok(())
}

/// `systemd-analyze verify` says nothing, and `security --offline=true`
/// scores the unit 2.0 or lower ("OK").
fn unit_checks(unit: &str) -> Result<f64> {
    let path = format!("/lib/systemd/system/{unit}");
    let out = Command::new("systemd-analyze")
        .args(["verify", &path])
        .stdin(Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify {unit}: {text}");
    let own: Vec<&str> = text.lines().filter(|l| l.contains(unit)).collect();
    assert!(own.is_empty(), "verify {unit} complains:\n{text}");
    let score = security_score(Path::new(&path))?;
    assert!(score <= 2.0, "{unit}: exposure {score} > 2.0");
    Ok(score)
}

/// The overall exposure level printed by `systemd-analyze security --offline=true`.
fn security_score(unit: &Path) -> Result<f64> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .ok_or_else(|| {
            format!(
                "no score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("score")?
        .parse()?;
    assert!(
        score > 2.0 || line.contains(" OK"),
        "a score of 2.0 or lower reads OK: {line}"
    );
    Ok(score)
}

#[test]
fn units_in_the_repository_score_ok_offline() -> Result {
    // Needs only systemd-analyze (no root, nothing installed).
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        if std::env::var("WARDLINK_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            return Err("systemd-analyze is missing: run scripts/install-test-deps.sh".into());
        }
        eprintln!("skipped: no systemd-analyze");
        return Ok(());
    }
    for unit in ["wardlink.service", "wardlink-collector.service"] {
        let score = security_score(&repo().join("systemd").join(unit))?;
        eprintln!("{unit}: exposure {score}");
        assert!(score <= 2.0, "{unit}: {score}");
    }
    Ok(())
}

#[test]
fn debs_build_install_upgrade_remove_purge() -> Result {
    if !enabled()? {
        return Ok(());
    }
    let _purge = Purge;
    for pkg in PACKAGES {
        if !package_state(pkg).is_empty() && package_state(pkg) != "not-installed" {
            dpkg(&["-P", pkg])?;
        }
    }
    let started = Instant::now();
    let work = tempfile::tempdir()?;
    let (old_dir, new_dir) = (work.path().join("old"), work.path().join("new"));
    build(&old_dir, &["--arch", "amd64", "--deb-version", OLD])?;
    eprintln!("built the older amd64 packages in {:?}", started.elapsed());
    let t = Instant::now();
    build(&new_dir, &[])?;
    eprintln!(
        "built the four packages (arm64 cross-built) in {:?}",
        t.elapsed()
    );
    let new = new_version();
    let mut debs = Vec::new();
    for pkg in PACKAGES {
        for arch in ["amd64", "arm64"] {
            let d = deb(&new_dir, pkg, &new, arch);
            let field = stdout(
                Command::new("dpkg-deb")
                    .args(["-f"])
                    .arg(&d)
                    .arg("Architecture"),
            )?;
            assert_eq!(field.trim(), arch, "{}", d.display());
            debs.push(d);
        }
    }
    let t = Instant::now();
    lintian_clean(&debs)?;
    eprintln!("lintian took {:?}", t.elapsed());
    arm64_runs_under_qemu(&new_dir)?;

    // Install the older version and put data in its store.
    dpkg(&[
        "-i",
        &deb(&old_dir, "wardlink", OLD, "amd64").to_string_lossy(),
        &deb(&old_dir, "wardlink-collector", OLD, "amd64").to_string_lossy(),
    ])?;
    let conf = std::fs::read_to_string(CONF)?;
    assert!(conf.contains("\nstate_dir = \"/var/lib/wardlink\"\n"));
    assert!(conf.contains("\nlisten = \"127.0.0.1:2575\"\n"));
    installed_as_specified(&conf)?;
    // The operator's edit: listen on free ports (so the test does not
    // depend on 2575 or the admin port 9425 being free); it must survive
    // the upgrade.
    assert!(conf.contains("\nlisten = \"127.0.0.1:9425\"\n"));
    let edited = conf
        .replace(
            "\nlisten = \"127.0.0.1:2575\"\n",
            "\nlisten = \"127.0.0.1:0\"\n",
        )
        .replace(
            "\nlisten = \"127.0.0.1:9425\"\n",
            "\nlisten = \"127.0.0.1:0\"\n",
        );
    std::fs::write(CONF, &edited)?;
    let keygen = stdout(&mut as_wardlink(&["keygen", "--config", CONF])?)?;
    assert!(keygen.contains("gateway id: gw-"), "{keygen}");
    let (daemon, addr) = Daemon::start()?;
    send(addr, 0, 20)?;
    daemon.stop()?;
    assert_eq!(status_acked()?, 20);
    let keys = ["gateway.key", "site.key"].map(|k| std::fs::read(Path::new(STATE).join(k)));
    let keys: Vec<Vec<u8>> = keys.into_iter().collect::<std::io::Result<_>>()?;

    // Upgrade over it.
    dpkg(&[
        "-i",
        &deb(&new_dir, "wardlink", &new, "amd64").to_string_lossy(),
        &deb(&new_dir, "wardlink-collector", &new, "amd64").to_string_lossy(),
    ])?;
    for pkg in PACKAGES {
        let v = stdout(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]))?;
        assert_eq!(v, new, "{pkg} upgraded");
    }
    assert_eq!(
        std::fs::read_to_string(CONF)?,
        edited,
        "the edited conffile is kept"
    );
    for (name, before) in ["gateway.key", "site.key"].iter().zip(&keys) {
        assert_eq!(
            &std::fs::read(Path::new(STATE).join(name))?,
            before,
            "{name} kept"
        );
    }
    installed_as_specified(&edited)?;
    assert_eq!(status_acked()?, 20, "the new binary reads the old store");
    let (daemon, addr) = Daemon::start()?;
    send(addr, 20, 5)?;
    daemon.stop()?;
    assert_eq!(status_acked()?, 25, "and writes it");

    let mut scores = Vec::new();
    for unit in ["wardlink.service", "wardlink-collector.service"] {
        let score = unit_checks(unit)?;
        scores.push(format!("{unit} {score}"));
    }
    // The documented drop-in for ports below 1024, as docs/operations.md
    // installs it: still clean, still OK, and it does grant the capability.
    for (pkg, unit) in [
        ("wardlink", "wardlink.service"),
        ("wardlink-collector", "wardlink-collector.service"),
    ] {
        let dir = PathBuf::from(format!("/etc/systemd/system/{unit}.d"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            format!("/usr/share/doc/{pkg}/examples/low-port.conf"),
            dir.join("low-port.conf"),
        )?;
        let verify = Command::new("systemd-analyze")
            .args(["verify", unit])
            .stdin(Stdio::null())
            .output();
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager", unit])
            .stdin(Stdio::null())
            .output();
        std::fs::remove_dir_all(&dir)?;
        let (verify, security) = (verify?, security?);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "verify {unit} with low-port.conf: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = String::from_utf8_lossy(&security.stdout);
        let granted = text
            .lines()
            .find(|l| l.contains("CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE"))
            .ok_or_else(|| format!("no CAP_NET_BIND_SERVICE line:\n{text}"))?;
        assert!(granted.starts_with('✗'), "the drop-in grants it: {granted}");
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .ok_or("no score")?;
        scores.push(format!("{unit} + low-port.conf: {line}"));
        assert!(line.contains(" OK"), "{line}");
    }
    eprintln!("installed units: {}", scores.join(", "));

    // Remove: binaries gone, conffiles and state kept.
    dpkg(&["-r", "wardlink", "wardlink-collector"])?;
    for pkg in PACKAGES {
        assert_eq!(package_state(pkg), "config-files", "{pkg} after remove");
    }
    assert!(!Path::new("/usr/bin/wardlink").exists());
    assert!(!Path::new("/lib/systemd/system/wardlink.service").exists());
    assert_eq!(
        std::fs::read_to_string(CONF)?,
        edited,
        "conffile kept on remove"
    );
    assert!(
        Path::new(STATE).join("wardlink.db").exists(),
        "store kept on remove"
    );
    assert!(
        Path::new(STATE).join("gateway.key").exists(),
        "key kept on remove"
    );
    assert!(Path::new("/var/lib/wardlink-collector/collector.key").exists());

    // Purge: state and conffiles gone.
    dpkg(&["-P", "wardlink", "wardlink-collector"])?;
    for gone in [
        STATE,
        CONF,
        "/var/lib/wardlink-collector",
        "/etc/wardlink-collector/collector.toml",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    eprintln!("packaging test took {:?}", started.elapsed());
    Ok(())
}
