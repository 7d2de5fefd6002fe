//! `wardlink status`: the accounting report, read from the store (also while
//! the daemon runs) and from the daemon's runtime file.
//!
//! The JSON form's top-level and per-source keys `received`, `acked`,
//! `rejected`, `duplicates`, `quarantined`, `pending_upload`, `uploaded` are a
//! stable interface (scripts and monitoring read them); further keys may be
//! added, never renamed. See [`crate::store::Counters`] for what each counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::store::{self, unix_ms, Counters, StoreError};

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
}

/// Build the report for the store in `state_dir`. `configured` names the
/// sources of the config, which are listed even before they saw traffic.
///
/// # Errors
/// There is no store, or it cannot be read.
pub fn report(state_dir: &Path, configured: &[String]) -> Result<Report, StoreError> {
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
    Ok(Report {
        total,
        store_bytes: store::size_on_disk(state_dir),
        sources,
        store_path: path,
        daemon: Runtime::read(state_dir),
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
            }
            None => {
                let _ = writeln!(out, "daemon: not running");
            }
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
        out
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
