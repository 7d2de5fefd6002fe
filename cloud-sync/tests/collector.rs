//! End-to-end: the real `wardlink-collector` binary on 127.0.0.1:0, driven
//! with a real HTTP client (reqwest) and real signed batches, once on SQLite
//! and once on a real PostgreSQL server (`scripts/test-postgres.sh`; the
//! PostgreSQL runs skip with a message when WARDLINK_TEST_POSTGRES_URL is
//! unset, unless WARDLINK_REQUIRE_EXTERNAL is set). Issue 4.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use wardlink_sync::batch::{seal, Batch, Chain, SealMeta};
use wardlink_sync::keys::{PublicKey, SigningKeyFile};
use wardlink_sync::receipt::Receipt;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long any single network wait or process start may take.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn collector_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wardlink-collector"))
}

/// Which database a collector under test uses.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    /// The server's URL (a database in it is made per collector).
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL server of `scripts/test-postgres.sh`, or `None` (skip).
    fn postgres() -> Option<Backend> {
        match std::env::var("WARDLINK_TEST_POSTGRES_URL") {
            Ok(url) => Some(Backend::Postgres(url)),
            Err(_) => {
                assert!(
                    std::env::var_os("WARDLINK_REQUIRE_EXTERNAL").is_none(),
                    "WARDLINK_TEST_POSTGRES_URL is not set but external services are required"
                );
                eprintln!(
                    "SKIPPED: no PostgreSQL; run scripts/test.sh to include the PostgreSQL runs"
                );
                None
            }
        }
    }

    /// The `database` value for a new, empty database.
    async fn fresh_database(&self, dir: &std::path::Path) -> Result<String> {
        match self {
            Backend::Sqlite => Ok(format!("sqlite://{}/data/collector.db", dir.display())),
            Backend::Postgres(server) => {
                let mut raw = [0u8; 8];
                getrandom::fill(&mut raw)?;
                let name: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                let name = format!("wl_test_{name}");
                let (client, conn) = tokio::time::timeout(
                    IO_TIMEOUT,
                    tokio_postgres::connect(server, tokio_postgres::NoTls),
                )
                .await??;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await?;
                let base = server.rsplit_once('/').ok_or("no database in the URL")?.0;
                Ok(format!("{base}/{name}"))
            }
        }
    }
}

/// Each scenario runs once per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> super::Result {
                super::$name(super::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> super::Result {
                match super::Backend::postgres() {
                    Some(b) => super::$name(b).await,
                    None => Ok(()),
                }
            }
        }
    )*};
}

on_both_backends!(
    tampered_unknown_and_revoked_batches_are_rejected,
    replay_is_idempotent_and_reuse_is_a_conflict,
    gaps_are_reported_until_filled,
    feed_cursor_never_skips_or_repeats,
    tokens_separate_readers_from_gateways,
);

/// A running collector on a private directory.
struct Collector {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    base: String,
}

impl Collector {
    async fn start(backend: &Backend) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("collector.toml");
        let database = backend.fresh_database(dir.path()).await?;
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\nkey_file = \"{0}/data/collector.key\"\n",
                dir.path().display()
            ),
        )?;
        let mut c = Collector {
            child: None,
            dir,
            config,
            base: String::new(),
        };
        c.spawn()?;
        Ok(c)
    }

    /// A second process on the same config: the same database and receipt
    /// key, as replicas behind a load balancer share them.
    fn replica(&self) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        let mut c = Collector {
            child: None,
            dir,
            config: self.config.clone(),
            base: String::new(),
        };
        c.spawn()?;
        Ok(c)
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// (Re)start the process on the same config and wait for its address line.
    fn spawn(&mut self) -> Result {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())?;
        let mut child = Command::new(collector_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Some(url) = line.strip_prefix("wardlink-collector listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(IO_TIMEOUT) {
            Ok(url) => {
                self.base = url;
                Ok(())
            }
            Err(_) => Err(format!("collector did not start:\n{}", self.stderr()).into()),
        }
    }

    /// SIGKILL, as a crash or power cut would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run an admin command against this collector's config.
    fn admin(&self, args: &[&str]) -> Result<String> {
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

    fn enroll(&self, key: &SigningKeyFile) -> Result {
        let gw = key.gateway_id().to_string();
        let pk = key.public_key().to_string();
        self.admin(&["enroll", "--gateway-id", &gw, "--public-key", &pk])?;
        Ok(())
    }

    fn token(&self, name: &str) -> Result<String> {
        self.admin(&["token", "create", name])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// reqwest is built with `rustls-no-provider` (ring only in the tree), so
/// every client, even a plain-HTTP one, needs the process-wide provider.
fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain-HTTP client. It still gets a (rootless) rustls config of its own:
/// otherwise reqwest loads the platform's roots for every client built.
fn client() -> reqwest::Client {
    install_ring();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(IO_TIMEOUT)
        .build()
        .expect("http client")
}

/// A gateway's chain of sealed batches.
struct Gateway {
    key: SigningKeyFile,
    chain: Chain,
    next_event: u64,
}

impl Gateway {
    fn new(seed: u8) -> Gateway {
        Gateway {
            key: SigningKeyFile::from_seed([seed; 32]),
            chain: Chain::GENESIS,
            next_event: 1,
        }
    }

    /// Seal the next batch of `n` events (types alternate).
    fn seal(&mut self, n: usize, backlog: u64) -> Batch {
        let events: Vec<String> = (0..n)
            .map(|i| {
                let id = self.next_event + i as u64;
                let t = if id.is_multiple_of(3) {
                    "adt"
                } else {
                    "observation"
                };
                format!(
                    r#"{{"event_id":{id},"type":"{t}","gw":"{}"}}"#,
                    self.key.gateway_id()
                )
            })
            .collect();
        let meta = SealMeta {
            created_ms: 1_795_000_000_000 + self.chain.next_seq,
            backlog,
            zstd_level: 3,
        };
        let b = seal(&events, &self.chain, &self.key, meta).unwrap();
        self.chain = b.chain_after();
        self.next_event += n as u64;
        b
    }
}

async fn post(c: &Collector, wire: Vec<u8>) -> Result<(StatusCode, Option<String>, String)> {
    let r = client()
        .post(c.url("/v1/batches"))
        .header("content-type", "application/vnd.wardlink.batch.v1")
        .body(wire)
        .send()
        .await?;
    let status = r.status();
    let batch_status = r
        .headers()
        .get("wardlink-batch-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((status, batch_status, r.text().await?))
}

async fn collector_key(c: &Collector) -> Result<PublicKey> {
    let v: Value = client()
        .get(c.url("/v1/collector"))
        .send()
        .await?
        .json_text()
        .await?;
    Ok(v["public_key"].as_str().ok_or("no key")?.parse()?)
}

/// reqwest without its `json` feature: parse the text.
trait JsonText {
    async fn json_text(self) -> Result<Value>;
}

impl JsonText for reqwest::Response {
    async fn json_text(self) -> Result<Value> {
        Ok(serde_json::from_str(&self.text().await?)?)
    }
}

async fn gateways(c: &Collector, token: &str) -> Result<Value> {
    let r = client()
        .get(c.url("/v1/gateways"))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    r.json_text().await
}

/// One feed page: the lines and the next cursor.
async fn feed_page(c: &Collector, token: &str, query: &str) -> Result<(Vec<Value>, u64)> {
    let r = client()
        .get(c.url(&format!("/v1/feeds/events?{query}")))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let next: u64 = r
        .headers()
        .get("wardlink-next-cursor")
        .ok_or("no cursor header")?
        .to_str()?
        .parse()?;
    let text = r.text().await?;
    let lines = text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<Vec<Value>, _>>()?;
    Ok((lines, next))
}

/// Read the whole feed from the start in pages of `limit`.
async fn read_all(c: &Collector, token: &str, limit: usize, filter: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (lines, next) =
            feed_page(c, token, &format!("after={after}&limit={limit}{filter}")).await?;
        if lines.is_empty() {
            return Ok(all);
        }
        after = next;
        all.extend(lines);
    }
}

fn flip(wire: &[u8], at: usize) -> Vec<u8> {
    let mut w = wire.to_vec();
    w[at] ^= 0x01;
    w
}

/// Flipped bytes in header, signature and body, unknown and revoked gateways:
/// each gets its own status, and the good batch gets a receipt that verifies.
async fn tampered_unknown_and_revoked_batches_are_rejected(backend: Backend) -> Result {
    let c = Collector::start(&backend).await?;
    let mut gw = Gateway::new(1);
    c.enroll(&gw.key)?;
    let b = gw.seal(20, 0);
    let wire = b.encode();
    let header_len = b.header_bytes().len();

    // A digit of created_ms in the header: still well-formed, signature fails.
    let text = std::str::from_utf8(b.header_bytes())?;
    let at = 4 + text.find("created_ms=").ok_or("no created_ms")? + "created_ms=".len() + 5;
    let (s, _, body) = post(&c, flip(&wire, at)).await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("bad_signature"), "{body}");
    // The signature.
    let (s, _, body) = post(&c, flip(&wire, 4 + header_len + 10)).await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // The body.
    let (s, _, body) = post(&c, flip(&wire, wire.len() - 3)).await?;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("body_hash_mismatch"), "{body}");
    // Garbage.
    let (s, _, body) = post(&c, b"hello".to_vec()).await?;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("malformed"), "{body}");

    // Not enrolled.
    let mut stranger = Gateway::new(2);
    let (s, _, body) = post(&c, stranger.seal(1, 0).encode()).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");

    // The untouched batch is stored, and its receipt verifies.
    let (s, status, body) = post(&c, wire.clone()).await?;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(status.as_deref(), Some("stored"));
    let receipt = Receipt::from_json(body.as_bytes())?;
    let ck = collector_key(&c).await?;
    assert_eq!(ck.to_string(), c.admin(&["public-key"])?);
    receipt.verify_for(&ck, &b)?;

    // Revoked: refused from now on.
    c.admin(&["revoke", "--gateway-id", gw.key.gateway_id().as_str()])?;
    let (s, _, body) = post(&c, gw.seal(1, 0).encode()).await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("revoked"), "{body}");
    Ok(())
}

/// A re-sent batch gets the same receipt and no second copy; another batch
/// with a used sequence number, or a broken chain, is a 409 and an alarm.
async fn replay_is_idempotent_and_reuse_is_a_conflict(backend: Backend) -> Result {
    let mut c = Collector::start(&backend).await?;
    let mut gw = Gateway::new(3);
    c.enroll(&gw.key)?;
    let token = c.token("analyst")?;
    let b1 = gw.seal(10, 0);
    let (s, status, first) = post(&c, b1.encode()).await?;
    assert_eq!((s, status.as_deref()), (StatusCode::OK, Some("stored")));
    let (s, status, again) = post(&c, b1.encode()).await?;
    assert_eq!((s, status.as_deref()), (StatusCode::OK, Some("duplicate")));
    assert_eq!(first, again, "the same receipt, byte for byte");

    // After a crash and restart, still the same receipt.
    c.kill();
    c.spawn()?;
    let (s, _, after_restart) = post(&c, b1.encode()).await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first, after_restart);
    assert_eq!(
        read_all(&c, &token, 100, "").await?.len(),
        10,
        "stored once"
    );

    // The same key signs another batch for seq 1: a conflict.
    let mut fork = Gateway::new(3);
    fork.next_event = 500;
    let (s, _, body) = post(&c, fork.seal(3, 0).encode()).await?;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    // And a seq 2 that does not follow seq 1's header: a broken chain.
    let (s, _, body) = post(&c, fork.seal(3, 0).encode()).await?;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("broken chain"), "{body}");
    let g = gateways(&c, &token).await?;
    assert_eq!(g[0]["conflicts"], 2);
    assert_eq!(g[0]["batches_received"], 1);
    assert_eq!(read_all(&c, &token, 100, "").await?.len(), 10);
    assert!(c.stderr().contains("ALARM"), "{}", c.stderr());

    // The real seq 2 is still welcome.
    let (s, _, body) = post(&c, gw.seal(5, 0).encode()).await?;
    assert_eq!(s, StatusCode::OK, "{body}");
    Ok(())
}

/// Gaps are accepted, shown by /v1/gateways, and closed as they fill.
async fn gaps_are_reported_until_filled(backend: Backend) -> Result {
    let c = Collector::start(&backend).await?;
    let token = c.token("ops")?;
    let mut gw = Gateway::new(4);
    c.enroll(&gw.key)?;
    let batches: Vec<Batch> = (0..6).map(|i| gw.seal(2, 50 - i)).collect();
    for i in [0, 1, 5] {
        assert_eq!(post(&c, batches[i].encode()).await?.0, StatusCode::OK);
    }
    let gaps = |g: &Value| g[0]["open_gaps"].clone();
    let g = gateways(&c, &token).await?;
    assert_eq!(gaps(&g), serde_json::json!([{"first": 3, "last": 5}]));
    assert_eq!(g[0]["last_seq"], 6);
    assert_eq!(g[0]["reported_backlog"], 45);
    assert_eq!(g[0]["events_received"], 6);
    assert!(g[0]["last_seen_ms"].as_u64().is_some());

    assert_eq!(post(&c, batches[3].encode()).await?.0, StatusCode::OK);
    let g = gateways(&c, &token).await?;
    assert_eq!(
        gaps(&g),
        serde_json::json!([{"first": 3, "last": 3}, {"first": 5, "last": 5}])
    );
    assert_eq!(
        g[0]["reported_backlog"], 45,
        "backlog is the newest batch's"
    );
    for i in [2, 4] {
        assert_eq!(post(&c, batches[i].encode()).await?.0, StatusCode::OK);
    }
    let g = gateways(&c, &token).await?;
    assert_eq!(gaps(&g), serde_json::json!([]));
    assert_eq!(g[0]["events_received"], 12);
    Ok(())
}

/// Readers page through the feed while two gateways upload: every event
/// exactly once, in order per gateway, with filters too.
async fn feed_cursor_never_skips_or_repeats(backend: Backend) -> Result {
    let c = Collector::start(&backend).await?;
    let token = c.token("feed-reader")?;
    let mut a = Gateway::new(5);
    let mut b = Gateway::new(6);
    c.enroll(&a.key)?;
    c.enroll(&b.key)?;
    let (ida, idb) = (
        a.key.gateway_id().to_string(),
        b.key.gateway_id().to_string(),
    );
    let batches: Vec<Vec<u8>> = (0..30)
        .flat_map(|i| [a.seal(1 + i % 7, 0).encode(), b.seal(1 + i % 5, 0).encode()])
        .collect();
    let total_a = a.next_event - 1;
    let total_b = b.next_event - 1;

    // Upload on two connections while reading in small pages; on
    // PostgreSQL the second uploader goes to a second collector process.
    let replica = match backend {
        Backend::Postgres(_) => Some(c.replica()?),
        Backend::Sqlite => None,
    };
    let bases = [
        c.base.clone(),
        replica.as_ref().map_or(c.base.clone(), |r| r.base.clone()),
    ];
    let upload = tokio::spawn(async move {
        let client = client();
        let mut handles = Vec::new();
        for half in [0, 1] {
            let mine: Vec<Vec<u8>> = batches.iter().skip(half).step_by(2).cloned().collect();
            let (client, base) = (client.clone(), bases[half].clone());
            handles.push(tokio::spawn(async move {
                for w in mine {
                    let r = client
                        .post(format!("{base}/v1/batches"))
                        .body(w)
                        .send()
                        .await;
                    assert_eq!(r.map(|r| r.status()).ok(), Some(StatusCode::OK));
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let mut seen: Vec<Value> = Vec::new();
    let mut after = 0u64;
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    while (seen.len() as u64) < total_a + total_b {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feed did not deliver everything"
        );
        let (lines, next) = feed_page(&c, &token, &format!("after={after}&limit=7")).await?;
        for l in &lines {
            let cur: u64 = l["cursor"].as_str().ok_or("cursor")?.parse()?;
            assert!(cur > after, "cursor went back");
            after = cur;
        }
        assert_eq!(after.max(next), next);
        after = next;
        seen.extend(lines);
    }
    upload.await?;
    let (more, _) = feed_page(&c, &token, &format!("after={after}")).await?;
    assert!(more.is_empty(), "nothing after the end");

    let mut per_gw: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in &seen {
        assert_eq!(l["event"]["gw"], l["gateway_id"]);
        per_gw
            .entry(l["gateway_id"].as_str().unwrap().to_string())
            .or_default()
            .push(l["event"]["event_id"].as_u64().unwrap());
    }
    assert_eq!(per_gw[&ida], (1..=total_a).collect::<Vec<_>>());
    assert_eq!(per_gw[&idb], (1..=total_b).collect::<Vec<_>>());

    // Filters page exactly too.
    let adt = read_all(&c, &token, 3, "&type=adt").await?;
    assert!(adt.iter().all(|l| l["event"]["type"] == "adt"));
    let expected = seen.iter().filter(|l| l["event"]["type"] == "adt").count();
    assert_eq!(adt.len(), expected);
    let only_b = read_all(&c, &token, 4, &format!("&gateway={idb}")).await?;
    assert_eq!(only_b.len() as u64, total_b);
    let none = read_all(&c, &token, 5, "&type=nothing").await?;
    assert!(none.is_empty());
    let (_, next) = feed_page(&c, &token, "type=nothing").await?;
    assert_eq!(next, after, "a filtered reader still moves its cursor on");
    Ok(())
}

/// Readers need a token and cannot upload; gateways cannot read.
async fn tokens_separate_readers_from_gateways(backend: Backend) -> Result {
    let c = Collector::start(&backend).await?;
    let token = c.token("reader-1")?;
    assert!(token.starts_with("wlr_"), "{token}");
    assert!(c.token("reader-1").is_err(), "names are unique");
    let mut gw = Gateway::new(7);
    c.enroll(&gw.key)?;
    let http = client();
    for path in ["/v1/feeds/events", "/v1/gateways"] {
        let r = http.get(c.url(path)).send().await?;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without a token"
        );
        // What a gateway has (its key material) is no token.
        for wrong in [
            gw.key.public_key().to_string(),
            format!("{token}x"),
            String::new(),
        ] {
            let r = http.get(c.url(path)).bearer_auth(&wrong).send().await?;
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{path} with {wrong:?}"
            );
        }
        let r = http.get(c.url(path)).bearer_auth(&token).send().await?;
        assert_eq!(r.status(), StatusCode::OK, "{path} with the token");
    }
    // A reader's token does not make a batch from an unenrolled key acceptable.
    let mut reader_made = Gateway::new(8);
    let r = http
        .post(c.url("/v1/batches"))
        .bearer_auth(&token)
        .body(reader_made.seal(1, 0).encode())
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Nor can a reader pass off a gateway's batch it altered.
    let b = gw.seal(2, 0);
    let mut wire = b.encode();
    let last = wire.len() - 1;
    wire[last] ^= 0x20;
    let r = http
        .post(c.url("/v1/batches"))
        .bearer_auth(&token)
        .body(wire)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

/// Two collector processes on one PostgreSQL database: the same batch
/// posted to both at once is stored once, both answer with the same
/// receipt, and the feed holds every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_store_each_batch_once() -> Result {
    let Some(backend) = Backend::postgres() else {
        return Ok(());
    };
    let c1 = Collector::start(&backend).await?;
    let c2 = c1.replica()?;
    let token = c1.token("auditor")?;
    let mut gw = Gateway::new(9);
    c1.enroll(&gw.key)?;
    let batches: Vec<Batch> = (0..20).map(|i| gw.seal(1 + i % 4, 0)).collect();
    let mut outcomes = BTreeMap::new();
    for b in &batches {
        let (r1, r2) = tokio::join!(post(&c1, b.encode()), post(&c2, b.encode()));
        let (r1, r2) = (r1?, r2?);
        assert_eq!((r1.0, r2.0), (StatusCode::OK, StatusCode::OK));
        assert_eq!(r1.2, r2.2, "both answer with the one stored receipt");
        for status in [r1.1, r2.1] {
            *outcomes.entry(status.unwrap_or_default()).or_insert(0) += 1;
        }
    }
    let expected: BTreeMap<String, i32> =
        [("duplicate".to_string(), 20), ("stored".to_string(), 20)].into();
    assert_eq!(outcomes, expected);
    let ids: Vec<u64> = read_all(&c2, &token, 9, "")
        .await?
        .iter()
        .map(|l| l["event"]["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..gw.next_event).collect::<Vec<_>>());
    let g = gateways(&c1, &token).await?;
    assert_eq!(g[0]["batches_received"], 20);
    assert_eq!(g[0]["last_seq"], 20);
    Ok(())
}

/// The CLI checks what it is given before touching the database.
#[test]
fn enroll_refuses_an_id_that_is_not_the_keys() -> Result {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("database = \"sqlite://{}/db\"\n", dir.path().display()),
    )?;
    let a = SigningKeyFile::from_seed([1; 32]);
    let b = SigningKeyFile::from_seed([2; 32]);
    let run = |args: &[&str]| {
        Command::new(collector_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let (ida, pkb) = (a.gateway_id().to_string(), b.public_key().to_string());
    let out = run(&["enroll", "--gateway-id", &ida, "--public-key", &pkb]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not belong"), "{err}");
    let out = run(&["enroll", "--gateway-id", "gw-nothex", "--public-key", &pkb]);
    assert_eq!(out.status.code(), Some(1));
    // Enrolling twice is fine; the same id with another key is not possible
    // because the id is derived from the key.
    let pka = a.public_key().to_string();
    let ok = run(&["enroll", "--gateway-id", &ida, "--public-key", &pka]);
    assert!(ok.status.success());
    let again = run(&["enroll", "--gateway-id", &ida, "--public-key", &pka]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already enrolled"));
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, "listen = \"nowhere\"\n")?;
    let out = Command::new(collector_bin())
        .args(["serve", "--config"])
        .arg(&bad_config)
        .output()?;
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
    Ok(())
}

/// HTTPS with rustls: a gateway-like client that trusts only the collector's
/// certificate uploads and gets a receipt; plain HTTP to the TLS port gets
/// nothing; a missing key file is a configuration error (exit 78).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_configured_certificate() -> Result {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let dir = tempfile::tempdir()?;
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem())?;
    std::fs::write(&key_file, cert.signing_key.serialize_pem())?;
    let config = dir.path().join("collector.toml");
    let write_config = |key: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{0}/data/c.db\"\nkey_file = \"{0}/data/c.key\"\ntls_cert_file = \"{1}\"\ntls_key_file = \"{2}\"\n",
                dir.path().display(),
                cert_file.display(),
                key.display()
            ),
        )
    };
    write_config(&dir.path().join("missing.pem"))?;
    let out = Command::new(collector_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_key_file"));

    write_config(&key_file)?;
    let mut c = Collector {
        child: None,
        dir: tempfile::tempdir()?,
        config: config.clone(),
        base: String::new(),
    };
    c.spawn()?;
    assert!(c.base.starts_with("https://127.0.0.1:"), "{}", c.base);
    let mut gw = Gateway::new(10);
    c.enroll(&gw.key)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    install_ring();
    let https = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(IO_TIMEOUT)
        .build()?;
    let b = gw.seal(5, 0);
    let r = https
        .post(c.url("/v1/batches"))
        .body(b.encode())
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let receipt = Receipt::from_json(&r.bytes().await?)?;
    let ck: Value = serde_json::from_str(
        &https
            .get(c.url("/v1/collector"))
            .send()
            .await?
            .text()
            .await?,
    )?;
    receipt.verify_for(&ck["public_key"].as_str().ok_or("key")?.parse()?, &b)?;

    // Plain HTTP to the TLS port is not served.
    let plain = c.base.replacen("https://", "http://", 1);
    let r = client().get(format!("{plain}/v1/collector")).send().await;
    assert!(r.is_err() || r.is_ok_and(|r| !r.status().is_success()));
    Ok(())
}

/// A CA (certificate and issuer) for client certificates.
fn make_ca(name: &str) -> Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ok(rcgen::CertifiedIssuer::self_signed(
        params,
        rcgen::KeyPair::generate()?,
    )?)
}

/// A client certificate (DER chain and key) issued by `ca`.
fn client_identity(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
) -> Result<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["gateway.example".into()])?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca)?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())?;
    Ok((vec![cert.der().clone()], der))
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() -> Result {
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let gateways_ca = make_ca("gateways CA")?;
    let other_ca = make_ca("some other CA")?;
    let dir = tempfile::tempdir()?;
    let (cert_file, key_file, ca_file) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("clients.pem"),
    );
    std::fs::write(&cert_file, server.cert.pem())?;
    std::fs::write(&key_file, server.signing_key.serialize_pem())?;
    std::fs::write(&ca_file, gateways_ca.pem())?;
    let config = dir.path().join("collector.toml");
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://{0}/data/c.db\"\nkey_file = \"{0}/data/c.key\"\ntls_client_ca_file = \"{1}\"\n",
        dir.path().display(),
        ca_file.display(),
    );
    // A client CA without HTTPS is a configuration error (exit 78).
    std::fs::write(&config, &text)?;
    let out = Command::new(collector_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_client_ca_file"));

    text.push_str(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    ));
    std::fs::write(&config, &text)?;
    let mut c = Collector {
        child: None,
        dir: tempfile::tempdir()?,
        config: config.clone(),
        base: String::new(),
    };
    c.spawn()?;
    let mut gw = Gateway::new(10);
    c.enroll(&gw.key)?;
    install_ring();
    let https = |identity: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>|
     -> Result<reqwest::Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.cert.der().clone())?;
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let tls = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        };
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(IO_TIMEOUT)
            .build()?)
    };
    let b = gw.seal(5, 0);
    // No certificate, or one from another CA: no request gets through.
    for (what, client) in [
        ("no client certificate", https(None)?),
        (
            "a certificate of another CA",
            https(Some(client_identity(&other_ca)?))?,
        ),
    ] {
        let r = client
            .post(c.url("/v1/batches"))
            .body(b.encode())
            .send()
            .await;
        assert!(
            r.is_err() || r.is_ok_and(|r| !r.status().is_success()),
            "{what} was served"
        );
    }
    // A certificate issued by the configured CA: stored, with a receipt.
    let r = https(Some(client_identity(&gateways_ca)?))?
        .post(c.url("/v1/batches"))
        .body(b.encode())
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    Receipt::from_json(&r.bytes().await?)?;
    Ok(())
}
