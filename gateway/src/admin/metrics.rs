//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Every family has `# HELP` and `# TYPE`; counters end in `_total`; label
//! values are escaped. Names and their meaning are listed in
//! `docs/operations.md` ("Metrics"); they are a stable interface.

use std::fmt::Write as _;

use wardlink_devices::link::LinkState;

use super::Snapshot;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escape a label value (`\`, `"` and newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Render the snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    let r = &s.report;

    o.family(
        "wardlink_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    o.sample(
        "wardlink_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.family(
        "wardlink_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
    );
    o.sample(
        "wardlink_start_time_seconds",
        &[],
        s.started_at_ms as f64 / 1000.0,
    );

    type Field = fn(&crate::store::Counters) -> i64;
    let counters: [(&str, &str, &str, Field); 4] = [
        (
            "wardlink_messages_received_total",
            "counter",
            "Messages that arrived and were answered, per source.",
            |c| c.received,
        ),
        (
            "wardlink_messages_acked_total",
            "counter",
            "Messages durably stored and acknowledged, per source.",
            |c| c.acked,
        ),
        (
            "wardlink_messages_rejected_total",
            "counter",
            "Messages answered negatively (nothing stored), per source.",
            |c| c.rejected,
        ),
        (
            "wardlink_messages_duplicates_total",
            "counter",
            "Resends of a stored message answered with the original ACK, per source.",
            |c| c.duplicates,
        ),
    ];
    for (name, kind, help, get) in counters {
        o.family(name, kind, help);
        for (source, sr) in &r.sources {
            o.sample(name, &[("source", source)], get(&sr.counters));
        }
    }
    let gauges: [(&str, &str, Field); 4] = [
        (
            "wardlink_messages_awaiting",
            "Stored messages waiting for the pipeline, per source.",
            |c| c.awaiting,
        ),
        (
            "wardlink_messages_quarantined",
            "Messages held in quarantine now, per source.",
            |c| c.quarantined,
        ),
        (
            "wardlink_messages_pending_upload",
            "Processed messages whose events are not uploaded yet, per source.",
            |c| c.pending_upload,
        ),
        (
            "wardlink_messages_uploaded",
            "Messages whose events the collector acknowledged, per source.",
            |c| c.uploaded,
        ),
    ];
    for (name, help, get) in gauges {
        o.family(name, "gauge", help);
        for (source, sr) in &r.sources {
            o.sample(name, &[("source", source)], get(&sr.counters));
        }
    }
    o.family(
        "wardlink_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest message not uploaded yet, per source (0 when none).",
    );
    for (source, sr) in &r.sources {
        o.sample(
            "wardlink_oldest_pending_age_seconds",
            &[("source", source)],
            sr.oldest_pending_age_secs.unwrap_or(0),
        );
    }
    o.family(
        "wardlink_quarantine_messages",
        "gauge",
        "Messages in quarantine now, by the rule code of the reason.",
    );
    for (code, n) in &s.quarantine_by_code {
        o.sample("wardlink_quarantine_messages", &[("reason", code)], n);
    }

    o.family(
        "wardlink_source_up",
        "gauge",
        "1 when the source can take data (listening or connected), else 0.",
    );
    for (source, l) in &s.links {
        o.sample(
            "wardlink_source_up",
            &[("source", source), ("kind", l.kind)],
            u8::from(super::up(l.state)),
        );
    }
    o.family(
        "wardlink_source_link_state",
        "gauge",
        "1 for the state the source's link is in, 0 for the others.",
    );
    for (source, l) in &s.links {
        for st in LinkState::ALL {
            o.sample(
                "wardlink_source_link_state",
                &[("source", source), ("kind", l.kind), ("state", st.as_str())],
                u8::from(l.state == st),
            );
        }
    }

    let h = &s.commit_latency;
    o.family(
        "wardlink_commit_duration_seconds",
        "histogram",
        "Time of each store commit an ACK waits for (insert, commit, WAL fsync).",
    );
    for (bound, n) in &h.buckets {
        o.sample(
            "wardlink_commit_duration_seconds_bucket",
            &[("le", &bound.to_string())],
            n,
        );
    }
    o.sample(
        "wardlink_commit_duration_seconds_bucket",
        &[("le", "+Inf")],
        h.count,
    );
    o.sample("wardlink_commit_duration_seconds_sum", &[], h.sum_secs);
    o.sample("wardlink_commit_duration_seconds_count", &[], h.count);
    o.family(
        "wardlink_commit_failures_total",
        "counter",
        "Store commits that failed since the start (their senders got AR/CR).",
    );
    o.sample("wardlink_commit_failures_total", &[], s.failed_commits);
    o.family(
        "wardlink_last_commit_age_seconds",
        "gauge",
        "Seconds since the last durable commit (the watchdog follows it).",
    );
    if let Some(age) = s.last_commit_age_secs {
        o.sample("wardlink_last_commit_age_seconds", &[], age);
    }

    let sy = &r.sync;
    o.family(
        "wardlink_sync_enabled",
        "gauge",
        "1 when sync.collector_url is set.",
    );
    o.sample("wardlink_sync_enabled", &[], u8::from(sy.enabled));
    o.family(
        "wardlink_backlog_events",
        "gauge",
        "Events waiting for upload: not sealed yet, or sealed in a batch.",
    );
    o.sample(
        "wardlink_backlog_events",
        &[("stage", "unsealed")],
        sy.unsealed_events,
    );
    o.sample(
        "wardlink_backlog_events",
        &[("stage", "sealed")],
        sy.sealed_events,
    );
    o.family(
        "wardlink_backlog_batches",
        "gauge",
        "Sealed batches waiting for upload.",
    );
    o.sample("wardlink_backlog_batches", &[], sy.sealed_batches);
    o.family(
        "wardlink_backlog_oldest_batch_age_seconds",
        "gauge",
        "Age of the oldest sealed batch waiting for upload (0 when none).",
    );
    o.sample(
        "wardlink_backlog_oldest_batch_age_seconds",
        &[],
        sy.oldest_sealed_age_secs.unwrap_or(0),
    );
    o.family(
        "wardlink_uploaded_batches_total",
        "counter",
        "Batches the collector acknowledged since the store was created.",
    );
    o.sample("wardlink_uploaded_batches_total", &[], sy.uploaded_batches);
    o.family(
        "wardlink_upload_errors_total",
        "counter",
        "Upload attempts that failed since the start.",
    );
    o.sample("wardlink_upload_errors_total", &[], s.upload_failures);
    o.family(
        "wardlink_upload_failing",
        "gauge",
        "1 when the last upload attempt failed.",
    );
    o.sample("wardlink_upload_failing", &[], u8::from(sy.failing));
    o.family(
        "wardlink_last_upload_time_seconds",
        "gauge",
        "When a batch was last uploaded, in seconds since the Unix epoch.",
    );
    if let Some(at) = sy.last_upload_at_ms {
        o.sample("wardlink_last_upload_time_seconds", &[], at as f64 / 1000.0);
    }
    o.family(
        "wardlink_outbox_bytes",
        "gauge",
        "Bytes of the outbox (events plus sealed batches not uploaded).",
    );
    o.sample("wardlink_outbox_bytes", &[], sy.outbox_bytes);
    if let Some(max) = sy.outbox_max_bytes {
        o.family(
            "wardlink_outbox_max_bytes",
            "gauge",
            "The outbox's quota (sync.outbox_max_bytes).",
        );
        o.sample("wardlink_outbox_max_bytes", &[], max);
    }
    o.family(
        "wardlink_store_bytes",
        "gauge",
        "Bytes the store takes on disk (database, WAL, shared memory).",
    );
    o.sample("wardlink_store_bytes", &[], r.store_bytes);
    if let Some(max) = s.store_max_bytes {
        o.family(
            "wardlink_store_max_bytes",
            "gauge",
            "The store's size limit (store.max_bytes).",
        );
        o.sample("wardlink_store_max_bytes", &[], max);
    }
    o.family(
        "wardlink_alarms",
        "gauge",
        "Alarms active now (the status page lists them).",
    );
    o.sample("wardlink_alarms", &[], s.alarms.len());
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
