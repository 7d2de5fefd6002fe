//! `/`: the status page. One HTML document with its style inline, no script,
//! no external asset (it must work on a box without internet access), and
//! `<meta http-equiv="refresh">` to reload itself every
//! [`REFRESH_SECS`] seconds. Every text from outside the code is escaped.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::Snapshot;

/// The page reloads itself this often.
pub const REFRESH_SECS: u32 = 5;

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#eee}\
.ok{color:#176b2c;font-weight:bold}.bad{color:#a40000;font-weight:bold}\
.alarm{background:#fde8e8;border:1px solid #a40000;padding:.4em .8em;margin:.3em 0}\
.calm{background:#e8f5e9;border:1px solid #176b2c;padding:.4em .8em}.muted{color:#666}";

/// Render the page.
pub fn render(s: &Snapshot) -> String {
    let r = &s.report;
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>wardlink status</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>wardlink {}</h1><p class=\"muted\">running since {}; this page at {} \
         (reloads every {REFRESH_SECS}s); store {} on disk</p>",
        esc(env!("CARGO_PKG_VERSION")),
        utc(s.started_at_ms),
        utc(s.taken_at_ms),
        human_bytes(r.store_bytes)
    );

    h.push_str("<h2>Alarms</h2><div id=\"alarms\">");
    if s.alarms.is_empty() {
        h.push_str("<div class=\"calm\">No alarms.</div>");
    } else {
        for a in &s.alarms {
            let _ = write!(h, "<div class=\"alarm\">{}</div>", esc(a));
        }
    }
    h.push_str("</div>");

    h.push_str(
        "<h2>Sources</h2><table id=\"sources\"><tr><th>source</th><th>kind</th><th>state</th>\
         <th>detail</th><th>received</th><th>acked</th><th>rejected</th><th>duplicates</th>\
         <th>awaiting</th><th>quarantined</th><th>pending upload</th><th>uploaded</th>\
         <th>oldest pending</th></tr>",
    );
    for (name, sr) in &r.sources {
        let link = s.links.get(name);
        let (kind, state, class, detail) = match link {
            Some(l) => (
                l.kind,
                l.state.as_str(),
                if l.state.is_up() { "ok" } else { "bad" },
                l.detail.as_str(),
            ),
            None => ("-", "not running", "muted", ""),
        };
        let c = &sr.counters;
        let _ =
            write!(
            h,
            "<tr data-source=\"{n}\"><td>{n}</td><td>{kind}</td><td class=\"{class}\">{state}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(detail),
            c.received,
            c.acked,
            c.rejected,
            c.duplicates,
            c.awaiting,
            c.quarantined,
            c.pending_upload,
            c.uploaded,
            sr.oldest_pending_age_secs.map(age).unwrap_or_else(|| "-".into()),
            n = esc(name),
        );
    }
    let t = &r.total.counters;
    let _ = write!(
        h,
        "<tr><th>total</th><th></th><th></th><th></th><th>{}</th><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></table>",
        t.received,
        t.acked,
        t.rejected,
        t.duplicates,
        t.awaiting,
        t.quarantined,
        t.pending_upload,
        t.uploaded,
        r.total
            .oldest_pending_age_secs
            .map(age)
            .unwrap_or_else(|| "-".into())
    );

    let sy = &r.sync;
    h.push_str("<h2>Upload</h2><table id=\"upload\">");
    let row = |h: &mut String, k: &str, v: String| {
        let _ = write!(h, "<tr><td>{k}</td><td>{v}</td></tr>");
    };
    row(
        &mut h,
        "sync",
        if sy.enabled {
            format!("on, to {}", esc(sy.collector_url.as_deref().unwrap_or("")))
        } else {
            "off (sync.collector_url is empty)".into()
        },
    );
    row(
        &mut h,
        "backlog",
        format!(
            "{} events not sealed; {} batches ({} events) sealed and waiting{}",
            sy.unsealed_events,
            sy.sealed_batches,
            sy.sealed_events,
            sy.oldest_sealed_age_secs
                .map(|a| format!(", the oldest for {}", age(a)))
                .unwrap_or_default()
        ),
    );
    row(
        &mut h,
        "last upload",
        sy.last_upload_at_ms
            .map(|at| {
                format!(
                    "{} ({} batches, {} events uploaded in all)",
                    utc(at),
                    sy.uploaded_batches,
                    sy.uploaded_events
                )
            })
            .unwrap_or_else(|| "never".into()),
    );
    row(
        &mut h,
        "last error",
        match (&sy.last_error, sy.last_error_at_ms) {
            (Some(e), Some(at)) => format!(
                "{}: {} ({})",
                utc(at),
                esc(e),
                if sy.refused {
                    "refused, needs a person"
                } else if sy.failing {
                    "retrying"
                } else {
                    "recovered since"
                }
            ),
            _ => "none".into(),
        },
    );
    row(
        &mut h,
        "upload errors since start",
        s.upload_failures.to_string(),
    );
    row(
        &mut h,
        "outbox",
        format!(
            "{}{}",
            human_bytes(u64::try_from(sy.outbox_bytes).unwrap_or(0)),
            sy.outbox_max_bytes
                .map(|m| format!(" of {}", human_bytes(m)))
                .unwrap_or_default()
        ),
    );
    h.push_str("</table>");

    h.push_str(
        "<h2>Quarantine</h2><table id=\"quarantine\"><tr><th>reason (rule)</th><th>messages</th></tr>",
    );
    if s.quarantine_by_code.is_empty() {
        h.push_str("<tr><td colspan=\"2\" class=\"muted\">empty</td></tr>");
    }
    for (code, n) in &s.quarantine_by_code {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(code));
    }
    h.push_str(
        "</table><p class=\"muted\">Review with <code>wardlink quarantine list</code> on the \
         gateway. Rule codes are explained in docs/validation-rules.md.</p>",
    );

    let lat = &s.commit_latency;
    let _ = write!(
        h,
        "<h2>Store</h2><table id=\"store\"><tr><td>commits</td><td>{}</td></tr>\
         <tr><td>mean commit time</td><td>{}</td></tr>\
         <tr><td>failed commits since start</td><td>{}</td></tr>\
         <tr><td>last commit</td><td>{}</td></tr></table>",
        lat.count,
        if lat.count > 0 {
            format!("{:.2} ms", lat.sum_secs * 1000.0 / lat.count as f64)
        } else {
            "-".into()
        },
        s.failed_commits,
        s.last_commit_age_secs
            .map(|a| format!("{a:.1}s ago"))
            .unwrap_or_else(|| "-".into()),
    );
    h.push_str(
        "<p class=\"muted\">Metrics for Prometheus: <a href=\"/metrics\">/metrics</a>. \
                This page shows counts only, never message content.</p></body></html>\n",
    );
    h
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }
}
