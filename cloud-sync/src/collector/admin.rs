//! The collector's local admin endpoint (`admin_listen`, off by default):
//! `GET /metrics` (Prometheus text format) and `GET /`, a self-contained
//! page listing the enrolled gateways with when each was last seen, its
//! sequence gaps and the backlog it reported. Both are read fresh from
//! [`CollectorStore::gateways`] per request.
//!
//! No authentication: it shows gateway ids, times and counts only (the
//! collector never holds PHI in any case), and is meant for loopback or a
//! management network, like the gateway's own.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::http::now_ms;
use super::store::{CollectorStore, GatewayReport};

/// The page reloads itself this often.
const REFRESH_SECS: u32 = 10;

/// The admin router over `store`.
pub fn router<S: CollectorStore + Clone>(store: S) -> Router {
    Router::new()
        .route("/", get(page::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(store)
}

async fn page<S: CollectorStore + Clone>(State(store): State<S>) -> Response {
    match store.gateways().await {
        Ok(list) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            render_page(&list, now_ms()),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")).into_response(),
    }
}

async fn metrics<S: CollectorStore + Clone>(State(store): State<S>) -> Response {
    match store.gateways().await {
        Ok(list) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render_metrics(&list),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")).into_response(),
    }
}

/// Sequence numbers missing in all open gaps.
fn missing(g: &GatewayReport) -> u64 {
    g.open_gaps
        .iter()
        .map(|gap| gap.last.saturating_sub(gap.first) + 1)
        .sum()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\\' => out.push_str("&#92;"),
            c => out.push(c),
        }
    }
    out
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text for `list`.
pub fn render_metrics(list: &[GatewayReport]) -> String {
    let mut o = String::with_capacity(4096);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "wardlink_collector_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        o,
        "wardlink_collector_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut o,
        "wardlink_collector_gateways",
        "gauge",
        "Enrolled gateways (revoked ones included).",
    );
    let _ = writeln!(o, "wardlink_collector_gateways {}", list.len());
    type Value = fn(&GatewayReport) -> Option<f64>;
    let per_gateway: [(&str, &str, &str, Value); 9] = [
        (
            "wardlink_collector_gateway_revoked",
            "gauge",
            "1 when the gateway's key was revoked.",
            |g| Some(f64::from(u8::from(g.revoked))),
        ),
        (
            "wardlink_collector_gateway_last_seen_time_seconds",
            "gauge",
            "When a valid batch from the gateway last arrived (Unix time).",
            |g| g.last_seen_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "wardlink_collector_gateway_last_seq",
            "gauge",
            "The highest batch sequence number stored.",
            |g| Some(g.last_seq as f64),
        ),
        (
            "wardlink_collector_gateway_open_gaps",
            "gauge",
            "Sequence gaps not filled yet.",
            |g| Some(g.open_gaps.len() as f64),
        ),
        (
            "wardlink_collector_gateway_missing_batches",
            "gauge",
            "Batches missing in the open gaps.",
            |g| Some(missing(g) as f64),
        ),
        (
            "wardlink_collector_gateway_reported_backlog_events",
            "gauge",
            "Events waiting at the gateway, as reported in its newest batch.",
            |g| g.reported_backlog.map(|b| b as f64),
        ),
        (
            "wardlink_collector_gateway_batches_total",
            "counter",
            "Batches stored from the gateway.",
            |g| Some(g.batches_received as f64),
        ),
        (
            "wardlink_collector_gateway_events_total",
            "counter",
            "Events stored from the gateway.",
            |g| Some(g.events_received as f64),
        ),
        (
            "wardlink_collector_gateway_conflicts_total",
            "counter",
            "Conflicting batches refused (each an alarm in the log).",
            |g| Some(g.conflicts as f64),
        ),
    ];
    for (name, kind, help, value) in per_gateway {
        family(&mut o, name, kind, help);
        for g in list {
            if let Some(v) = value(g) {
                let _ = writeln!(o, "{name}{{gateway=\"{}\"}} {v}", label(&g.gateway_id));
            }
        }
    }
    o
}

fn age(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// The status page for `list` at `now` (ms since the epoch).
pub fn render_page(list: &[GatewayReport], now: u64) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>wardlink collector</title><style>\
         body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}th{{background:#eee}}\
         .bad{{color:#a40000;font-weight:bold}}.muted{{color:#666}}</style></head><body>\
         <h1>wardlink collector {}</h1><p class=\"muted\">{} gateways enrolled; reloads every \
         {REFRESH_SECS}s; <a href=\"/metrics\">/metrics</a></p>\
         <table id=\"gateways\"><tr><th>gateway</th><th>state</th><th>last seen</th>\
         <th>last seq</th><th>sequence gaps</th><th>reported backlog</th><th>batches</th>\
         <th>events</th><th>conflicts</th></tr>",
        env!("CARGO_PKG_VERSION"),
        list.len()
    );
    for g in list {
        let gaps = if g.open_gaps.is_empty() {
            "none".to_string()
        } else {
            let ranges: Vec<String> = g
                .open_gaps
                .iter()
                .map(|gap| {
                    if gap.first == gap.last {
                        gap.first.to_string()
                    } else {
                        format!("{}–{}", gap.first, gap.last)
                    }
                })
                .collect();
            format!("<span class=\"bad\">{}</span>", ranges.join(", "))
        };
        let _ = write!(
            h,
            "<tr data-gateway=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{gaps}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if g.revoked {
                "<span class=\"bad\">revoked</span>"
            } else {
                "enrolled"
            },
            g.last_seen_ms
                .map(|ms| age(ms, now))
                .unwrap_or_else(|| "never".into()),
            g.last_seq,
            g.reported_backlog
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            g.batches_received,
            g.events_received,
            g.conflicts,
            id = esc(&g.gateway_id),
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
