//! `wardlink status`: the accounting report, read from the store (also while
//! the daemon runs) and from the daemon's runtime file.
//!
//! The JSON form's top-level and per-source keys `received`, `acked`,
//! `rejected`, `duplicates`, `quarantined`, `pending_upload`, `uploaded` are a
//! stable interface (scripts and monitoring read them); further keys may be
//! added, never renamed. See [`crate::store::Counters`] for what each counts.
//! `sync` (the upload backlog, the last upload and the last error, the
//! outbox's size against its quota) and `alarms` (what needs a person; then
//! `wardlink status` exits 1) were added with sync (issue 4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use wardlink_config::SyncConfig;

use crate::store::{self, outbox, schema, unix_ms, Counters, StoreError};

/// The daemon's runtime file in the state directory: who runs and where it
/// listens. Written at start after every listener is bound, removed on a
/// clean stop.
pub const RUNTIME_FILE: &str = "run.json";

/// What the running daemon publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Runtime {
    /// The daemon's process id.
    pub pid: u32,
    /// wardlink's version.
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// Every bound listener.
    pub listeners: Vec<ListenerInfo>,
    /// The admin endpoint's bound address (status page, `/metrics`), if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// One bound listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The source's configured name.
    pub source: String,
    /// Its kind (`mllp`).
    pub kind: String,
    /// The address actually bound (port 0 in the config becomes the real port).
    pub addr: String,
}

impl Runtime {
    /// Write the runtime file atomically (write, fsync, rename).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let tmp = state_dir.join(format!("{RUNTIME_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, state_dir.join(RUNTIME_FILE))
    }

    /// Read the runtime file, if the daemon wrote one and it is still running.
    pub fn read(state_dir: &Path) -> Option<Runtime> {
        let bytes = std::fs::read(state_dir.join(RUNTIME_FILE)).ok()?;
        let rt: Runtime = serde_json::from_slice(&bytes).ok()?;
        // A stale file from a killed daemon names a pid that is gone.
        Path::new(&format!("/proc/{}", rt.pid))
            .exists()
            .then_some(rt)
    }

    /// Remove the runtime file (on a clean stop).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(RUNTIME_FILE));
    }
}

/// Counters of one source plus its backlog age.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceReport {
    /// The accounting counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Age in seconds of the oldest message not yet uploaded, if any.
    pub oldest_pending_age_secs: Option<u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// All sources summed.
    #[serde(flatten)]
    pub total: SourceReport,
    /// Bytes the store takes on disk (database, WAL, shared memory).
    pub store_bytes: u64,
    /// Per source, by name.
    pub sources: BTreeMap<String, SourceReport>,
    /// The database file.
    pub store_path: PathBuf,
    /// The running daemon, if any.
    pub daemon: Option<Runtime>,
    /// Sealing and uploading.
    pub sync: SyncReport,
    /// What needs a person, one sentence each (empty when all is well).
    pub alarms: Vec<String>,
    /// Link state of the sources whose peer can come and go (serial ports,
    /// MQTT brokers), by source name; empty when the daemon is not running.
    pub links: BTreeMap<String, crate::links::LinkInfo>,
    /// The `keep_files` spool of each DICOM source that has one, by source
    /// name ([`Report::with_keep_files`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub keep_files: BTreeMap<String, KeepFilesReport>,
}

/// A DICOM source's `keep_files` spool, as read from the disk.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeepFilesReport {
    /// The spool directory.
    pub dir: PathBuf,
    /// Kept objects.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The quota (`keep_files_max_bytes`).
    pub max_bytes: u64,
    /// Why the directory could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// Add the spool usage of the DICOM sources with `keep_files`, read
    /// from their directories (the daemon need not run).
    #[must_use]
    pub fn with_keep_files(mut self, dicom: &[wardlink_config::DicomSource]) -> Report {
        for source in dicom {
            let Some(keep) = &source.keep_files else {
                continue;
            };
            let (usage, error) = match wardlink_devices::dicom::spool::usage_on_disk(&keep.dir) {
                Ok(u) => (u, None),
                Err(e) => ((0, 0), Some(e.to_string())),
            };
            self.keep_files.insert(
                source.name.clone(),
                KeepFilesReport {
                    dir: keep.dir.clone(),
                    files: usage.0,
                    bytes: usage.1,
                    max_bytes: keep.max_bytes,
                    error,
                },
            );
        }
        self
    }
}

/// The sync part of the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether `sync.collector_url` is set.
    pub enabled: bool,
    /// The configured collector.
    pub collector_url: Option<String>,
    /// The gateway whose key signed the sealed batches (none before the first).
    pub gateway_id: Option<String>,
    /// Events in the outbox not sealed yet.
    pub unsealed_events: i64,
    /// Sealed batches waiting for upload.
    pub sealed_batches: i64,
    /// Events in them.
    pub sealed_events: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_sealed_age_secs: Option<u64>,
    /// The sequence number the next batch gets.
    pub next_seq: u64,
    /// Batches uploaded (receipt verified) since the store was created.
    pub uploaded_batches: i64,
    /// Events in them.
    pub uploaded_events: i64,
    /// When the last batch was uploaded (ms since the epoch).
    pub last_upload_at_ms: Option<i64>,
    /// How long ago, in seconds.
    pub last_upload_age_secs: Option<u64>,
    /// The last upload failure.
    pub last_error: Option<String>,
    /// When (ms since the epoch).
    pub last_error_at_ms: Option<i64>,
    /// The last attempt failed (the error is newer than the last upload).
    pub failing: bool,
    /// The collector refused a batch: a person must act.
    pub refused: bool,
    /// Bytes of the outbox (events plus sealed batches not uploaded).
    pub outbox_bytes: i64,
    /// Its quota (`sync.outbox_max_bytes`).
    pub outbox_max_bytes: Option<u64>,
    /// At the quota: sources refuse new data.
    pub outbox_full: bool,
}

/// Read the sync part of the report (all zero for a store from before sync).
fn sync_report(
    conn: &rusqlite::Connection,
    config: &SyncConfig,
    now: i64,
) -> rusqlite::Result<SyncReport> {
    let age = |at: i64| u64::try_from((now - at).max(0) / 1000).unwrap_or(0);
    let mut r = SyncReport {
        enabled: config.collector.is_some(),
        collector_url: config.collector.as_ref().map(|c| c.url.clone()),
        outbox_max_bytes: config.outbox_max_bytes,
        next_seq: 1,
        ..SyncReport::default()
    };
    if schema::version(conn)? < 3 {
        return Ok(r);
    }
    let st = outbox::read_sync_state(conn)?;
    let backlog = outbox::backlog(conn)?;
    r.gateway_id = st.gateway_id;
    r.unsealed_events = backlog.unsealed_events;
    r.sealed_batches = backlog.sealed_batches;
    r.sealed_events = backlog.sealed_events;
    r.oldest_sealed_age_secs = backlog.oldest_sealed_at_ms.map(age);
    r.next_seq = st.chain.next_seq;
    r.uploaded_batches = st.uploaded_batches;
    r.uploaded_events = st.uploaded_events;
    r.last_upload_at_ms = st.last_upload_at;
    r.last_upload_age_secs = st.last_upload_at.map(age);
    r.failing = match (st.last_error_at, st.last_upload_at) {
        (Some(e), Some(u)) => e > u,
        (Some(_), None) => true,
        (None, _) => false,
    };
    r.refused = r.failing && st.last_error_alarm;
    r.last_error = st.last_error;
    r.last_error_at_ms = st.last_error_at;
    r.outbox_bytes = st.outbox_bytes;
    r.outbox_full = config
        .outbox_max_bytes
        .is_some_and(|max| u64::try_from(st.outbox_bytes).unwrap_or(0) >= max);
    Ok(r)
}

impl SyncReport {
    /// The alarms of this part, one sentence each.
    fn alarms(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.outbox_full {
            out.push(format!(
                "outbox quota reached: {} of {} (sync.outbox_max_bytes); sources refuse new data \
                 (store full) until batches are uploaded",
                human_bytes(u64::try_from(self.outbox_bytes).unwrap_or(0)),
                human_bytes(self.outbox_max_bytes.unwrap_or(0))
            ));
        }
        if self.refused {
            out.push(format!(
                "the collector refused a batch: {}",
                self.last_error.as_deref().unwrap_or("(no detail)")
            ));
        }
        out
    }
}

/// Build the report for the store in `state_dir`. `configured` names the
/// sources of the config, which are listed even before they saw traffic;
/// `sync` is the config's `[sync]`.
///
/// # Errors
/// There is no store, or it cannot be read.
pub fn report(
    state_dir: &Path,
    configured: &[String],
    sync: &SyncConfig,
) -> Result<Report, StoreError> {
    let conn = store::open_for_reading(state_dir)?;
    let path = store::db_path(state_dir);
    let sql = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let now = unix_ms(SystemTime::now());
    let mut sources: BTreeMap<String, SourceReport> = configured
        .iter()
        .map(|n| (n.clone(), SourceReport::default()))
        .collect();
    for (name, c) in store::read_counters(&conn).map_err(sql)? {
        sources.entry(name).or_default().counters = c;
    }
    for (name, oldest) in store::oldest_pending(&conn).map_err(sql)? {
        let age = u64::try_from((now - oldest).max(0) / 1000).unwrap_or(0);
        sources.entry(name).or_default().oldest_pending_age_secs = Some(age);
    }
    let mut total = SourceReport::default();
    for s in sources.values() {
        total.counters.add(&s.counters);
        total.oldest_pending_age_secs =
            match (total.oldest_pending_age_secs, s.oldest_pending_age_secs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
    }
    let sync = sync_report(&conn, sync, now).map_err(sql)?;
    let daemon = Runtime::read(state_dir);
    let links = if daemon.is_some() {
        crate::links::read(state_dir)
    } else {
        BTreeMap::new()
    };
    Ok(Report {
        links,
        total,
        store_bytes: store::size_on_disk(state_dir),
        sources,
        store_path: path,
        daemon,
        alarms: sync.alarms(),
        sync,
        keep_files: BTreeMap::new(),
    })
}

impl Report {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "store: {} ({})",
            self.store_path.display(),
            human_bytes(self.store_bytes)
        );
        match &self.daemon {
            Some(d) => {
                let listeners: Vec<String> = d
                    .listeners
                    .iter()
                    .map(|l| format!("{} ({}) on {}", l.source, l.kind, l.addr))
                    .collect();
                let _ = writeln!(
                    out,
                    "daemon: running, pid {}, wardlink {}; {}",
                    d.pid,
                    d.version,
                    if listeners.is_empty() {
                        "no listeners".to_string()
                    } else {
                        listeners.join(", ")
                    }
                );
                if let Some(a) = &d.admin {
                    let _ = writeln!(
                        out,
                        "status page: http://{a}/ (metrics: http://{a}/metrics)"
                    );
                }
            }
            None => {
                let _ = writeln!(out, "daemon: not running");
            }
        }
        self.links_text(&mut out);
        for (name, k) in &self.keep_files {
            let _ = match &k.error {
                Some(e) => writeln!(
                    out,
                    "keep_files {name}: {} cannot be read: {e}",
                    k.dir.display()
                ),
                None => writeln!(
                    out,
                    "keep_files {name}: {} files, {} of {} in {}",
                    k.files,
                    human_bytes(k.bytes),
                    human_bytes(k.max_bytes),
                    k.dir.display()
                ),
            };
        }
        let _ = writeln!(out);
        let header = [
            "source",
            "received",
            "acked",
            "rejected",
            "duplicates",
            "awaiting",
            "quarantined",
            "pending_upload",
            "uploaded",
            "oldest_pending",
        ];
        let mut rows: Vec<[String; 10]> = Vec::new();
        let row = |name: &str, s: &SourceReport| {
            let c = &s.counters;
            [
                name.to_string(),
                c.received.to_string(),
                c.acked.to_string(),
                c.rejected.to_string(),
                c.duplicates.to_string(),
                c.awaiting.to_string(),
                c.quarantined.to_string(),
                c.pending_upload.to_string(),
                c.uploaded.to_string(),
                s.oldest_pending_age_secs
                    .map(human_age)
                    .unwrap_or_else(|| "-".into()),
            ]
        };
        for (name, s) in &self.sources {
            rows.push(row(name, s));
        }
        rows.push(row("TOTAL", &self.total));
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
                if i == 0 {
                    let _ = write!(l, "{c:<w$}");
                } else {
                    let _ = write!(l, "  {c:>w$}");
                }
            }
            l
        };
        let _ = writeln!(out, "{}", line(&header));
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            let _ = writeln!(out, "{}", line(&cells));
        }
        let _ = writeln!(out);
        self.sync_text(&mut out);
        for a in &self.alarms {
            let _ = writeln!(out, "ALARM: {a}");
        }
        out
    }

    /// `link: NAME STATE since TIME (AGE ago): DETAIL`, one line per source.
    fn links_text(&self, out: &mut String) {
        let now = unix_ms(SystemTime::now());
        for (name, l) in &self.links {
            let since = time::OffsetDateTime::from_unix_timestamp(l.since_ms / 1000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| l.since_ms.to_string());
            let age = human_age(u64::try_from((now - l.since_ms).max(0) / 1000).unwrap_or(0));
            let _ = writeln!(
                out,
                "link: {name} {} since {since} ({age} ago){}{}",
                l.state,
                l.peer
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
                l.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }

    fn sync_text(&self, out: &mut String) {
        let s = &self.sync;
        match &s.collector_url {
            Some(url) => {
                let _ = writeln!(
                    out,
                    "sync: on, to {url}{}",
                    s.gateway_id
                        .as_deref()
                        .map(|g| format!(" as {g}"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "sync: off (sync.collector_url is empty)");
            }
        }
        let _ = writeln!(
            out,
            "  backlog: {} events not sealed, {} batches ({} events) sealed and waiting{}",
            s.unsealed_events,
            s.sealed_batches,
            s.sealed_events,
            s.oldest_sealed_age_secs
                .map(|a| format!(", the oldest for {}", human_age(a)))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  uploaded: {} batches ({} events); last upload {}",
            s.uploaded_batches,
            s.uploaded_events,
            s.last_upload_age_secs
                .map(|a| format!("{} ago", human_age(a)))
                .unwrap_or_else(|| "never".into())
        );
        if let Some(e) = &s.last_error {
            let age = s
                .last_error_at_ms
                .map(|at| {
                    let secs = (unix_ms(SystemTime::now()) - at).max(0) / 1000;
                    human_age(u64::try_from(secs).unwrap_or(0))
                })
                .unwrap_or_default();
            let state = if s.refused {
                "refused, needs a person"
            } else if s.failing {
                "retrying"
            } else {
                "recovered since"
            };
            let _ = writeln!(out, "  last error ({age} ago, {state}): {e}");
        }
        let _ = writeln!(
            out,
            "  outbox: {}{}",
            human_bytes(u64::try_from(s.outbox_bytes).unwrap_or(0)),
            s.outbox_max_bytes
                .map(|m| format!(" of {} (sync.outbox_max_bytes)", human_bytes(m)))
                .unwrap_or_else(|| ", no quota".into())
        );
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3600), "60m");
        assert_eq!(human_age(200_000), "2d");
    }
}
