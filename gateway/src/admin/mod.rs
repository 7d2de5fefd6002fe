//! The local admin endpoint (`[admin]`, default `127.0.0.1:9425`):
//! `GET /metrics` in the Prometheus text format ([`metrics`]) and `GET /`, a
//! self-contained status page that refreshes itself ([`page`]).
//!
//! Both render one [`Snapshot`], read fresh for every request from the store
//! (the same report as `wardlink status`), the writer's live figures and
//! the sources' link states.
//!
//! Invariant: **no PHI**. Everything shown is a source name, a state, a
//! count, a time, a size, a rule code or an upload error (batches hold no
//! PHI). Quarantine reasons are reduced to their rule code (`PID3_MISSING`),
//! because the free text after the code may quote a field's value.

pub mod metrics;
pub mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, SyncConfig};
use wardlink_devices::link::{Link, LinkState, Links};

use crate::status::{self, Report};
use crate::store::latency::HistogramSnapshot;
use crate::store::writer::WriterStats;
use crate::store::{self, unix_ms, State as MessageState};

/// The store is "nearly full" from this share of `store.max_bytes` on.
const STORE_ALARM_SHARE: f64 = 0.9;

/// What the endpoint reads from.
pub struct AdminState {
    /// The store's directory.
    pub state_dir: PathBuf,
    /// The configured source names (listed before their first message).
    pub sources: Vec<String>,
    /// `[sync]`, for the report.
    pub sync: SyncConfig,
    /// `store.max_bytes`, for the disk alarm.
    pub store_max_bytes: Option<u64>,
    /// The writer's live figures.
    pub writer: Arc<WriterStats>,
    /// The sources' link states.
    pub links: Links,
    /// When the daemon started (ms since the epoch).
    pub started_at_ms: i64,
}

/// Everything the page and the metrics show, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The accounting report (`wardlink status`).
    pub report: Report,
    /// Messages in quarantine now, by rule code.
    pub quarantine_by_code: BTreeMap<String, i64>,
    /// Link state per source.
    pub links: BTreeMap<String, Link>,
    /// Commit latencies since the start.
    pub commit_latency: HistogramSnapshot,
    /// Commits that failed since the start.
    pub failed_commits: u64,
    /// Upload failures since the start.
    pub upload_failures: u64,
    /// Seconds since the last durable commit (`None` before the first).
    pub last_commit_age_secs: Option<f64>,
    /// `store.max_bytes`.
    pub store_max_bytes: Option<u64>,
    /// What needs a person, one sentence each.
    pub alarms: Vec<String>,
    /// When the daemon started (ms since the epoch).
    pub started_at_ms: i64,
    /// When this snapshot was taken (ms since the epoch).
    pub taken_at_ms: i64,
}

impl AdminState {
    /// Read a snapshot (blocking: it reads the store).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn snapshot(&self) -> Result<Snapshot, store::StoreError> {
        let links = self.links.snapshot();
        // Sources added by a reload are in the link registry.
        let mut names = self.sources.clone();
        names.extend(links.keys().filter(|n| !self.sources.contains(n)).cloned());
        let report = status::report(&self.state_dir, &names, &self.sync)?;
        let quarantine_by_code = quarantine_by_code(&self.state_dir)?;
        let now = unix_ms(SystemTime::now());
        let committed = self.writer.committed_at_ms.load(Ordering::Relaxed);
        let mut alarms = report.alarms.clone();
        if report.sync.failing && !report.sync.refused {
            alarms.push(format!(
                "collector unreachable: the last upload attempt failed ({})",
                report.sync.last_error.as_deref().unwrap_or("no detail")
            ));
        }
        if let Some(max) = self.store_max_bytes {
            if report.store_bytes as f64 >= max as f64 * STORE_ALARM_SHARE {
                alarms.push(format!(
                    "disk quota: the store takes {} of its {} limit (store.max_bytes); at the \
                     limit, senders are refused",
                    report.store_bytes, max
                ));
            }
        }
        for (name, l) in &links {
            if !l.state.is_up() {
                alarms.push(format!(
                    "source {name} ({}) is {}: {}",
                    l.kind,
                    l.state.as_str(),
                    l.detail
                ));
            }
        }
        Ok(Snapshot {
            report,
            quarantine_by_code,
            links,
            commit_latency: self.writer.commit_latency.snapshot(),
            failed_commits: self.writer.failed_groups.load(Ordering::Relaxed),
            upload_failures: self.writer.upload_failures.load(Ordering::Relaxed),
            last_commit_age_secs: (committed > 0).then(|| (now - committed).max(0) as f64 / 1000.0),
            store_max_bytes: self.store_max_bytes,
            alarms,
            started_at_ms: self.started_at_ms,
            taken_at_ms: now,
        })
    }
}

/// Build the state from the config.
pub fn state(config: &Config, writer: Arc<WriterStats>, links: Links) -> AdminState {
    AdminState {
        state_dir: config.gateway.state_dir.clone(),
        sources: config.sources.names(),
        sync: config.sync.clone(),
        store_max_bytes: config.store.max_bytes,
        writer,
        links,
        started_at_ms: unix_ms(SystemTime::now()),
    }
}

/// The rule code of a quarantine reason (`"CODE: text"`), or `other` when it
/// does not start with one. The text is never returned.
pub fn reason_code(reason: &str) -> &str {
    let code = reason.split(':').next().unwrap_or("").trim();
    let ok = !code.is_empty()
        && code.len() <= 48
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        code
    } else if reason.starts_with("internal error") || reason.starts_with("event serialization") {
        "INTERNAL_ERROR"
    } else {
        "OTHER"
    }
}

/// Quarantine reasons of the messages still quarantined. `CROSS JOIN`
/// keeps the quarantine the outer loop: a plain `JOIN` scanned all of
/// `messages` on every status page and `/metrics` scrape.
pub(crate) const QUARANTINE_BY_CODE_SQL: &str =
    "SELECT q.reason, COUNT(*) FROM quarantine q CROSS JOIN messages m ON m.id = q.message_id
     WHERE m.state = ?1 GROUP BY q.reason";

fn quarantine_by_code(
    state_dir: &std::path::Path,
) -> Result<BTreeMap<String, i64>, store::StoreError> {
    let conn = store::open_for_reading(state_dir)?;
    let sql = |source| store::StoreError::Sqlite {
        path: store::db_path(state_dir),
        source,
    };
    let mut out = BTreeMap::new();
    if store::schema::version(&conn).map_err(sql)? < 2 {
        return Ok(out);
    }
    let mut stmt = conn.prepare(QUARANTINE_BY_CODE_SQL).map_err(sql)?;
    let rows = stmt
        .query_map([MessageState::Quarantined as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(sql)?;
    for row in rows {
        let (reason, n) = row.map_err(sql)?;
        *out.entry(reason_code(&reason).to_string()).or_default() += n;
    }
    Ok(out)
}

/// The router: `/` and `/metrics`.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn read(state: &Arc<AdminState>) -> Result<Snapshot, Response> {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.snapshot()).await {
        Ok(Ok(snap)) => Ok(snap),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Admin endpoint cannot read the store");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read\n",
            )
                .into_response())
        }
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()),
    }
}

async fn index(State(state): State<Arc<AdminState>>) -> Response {
    match read(&state).await {
        Ok(snap) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page::render(&snap),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn metrics_handler(State(state): State<Arc<AdminState>>) -> Response {
    match read(&state).await {
        Ok(snap) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&snap),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// The bound admin endpoint.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl AdminServer {
    /// Bind `addr`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("admin.listen {addr}: cannot listen: {e}"))?;
        let addr = listener.local_addr()?;
        Ok(AdminServer { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown`.
    pub async fn run(self, state: Arc<AdminState>, shutdown: CancellationToken) {
        let app = router(state);
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "Admin endpoint failed");
        }
    }
}

/// Whether a link state counts as up (for the renderers).
pub(crate) fn up(state: LinkState) -> bool {
    state.is_up()
}
