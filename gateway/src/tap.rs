//! `wardlink tap SOURCE [--raw]`: run a configured source's port and
//! protocol exactly as the daemon does, but print what it decodes instead
//! of storing it.

use std::io::Write;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use wardlink_config::Config;
use wardlink_devices::reading::{rfc3339, ReadingDoc, Value};
use wardlink_devices::serial::{self, Direction, LinkState, PortSink};

/// Tap the source called `source` until `shutdown` is cancelled.
///
/// # Errors
/// No source has that name, or it is of a kind tap does not read.
pub async fn run(
    config: &Config,
    source: &str,
    raw: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(s) = config.sources.serial.iter().find(|s| s.name == source) {
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "tapping {source}: {} on {} at {} baud; nothing is stored; Ctrl-C stops",
            s.path.display(),
            match s.protocol {
                wardlink_config::SerialProtocol::Medibus => "medibus",
                wardlink_config::SerialProtocol::Lines => "lines",
            },
            s.baud
        );
        let _ = out.flush();
        let sink = TapSink { out, raw };
        serial::run_port(crate::serial::options(s), sink, shutdown).await;
        return Ok(());
    }
    if config.sources.mllp.iter().any(|s| s.name == source) {
        anyhow::bail!(
            "{source} is an MLLP listener; tap reads serial sources (for HL7 use the store: wardlink status, wardlink quarantine)"
        );
    }
    let names: Vec<&str> = config
        .sources
        .serial
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    anyhow::bail!(
        "no source is called {source:?}; serial sources in this configuration: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

/// Prints everything to stdout, flushed line by line.
struct TapSink<W> {
    out: W,
    raw: bool,
}

fn clock(at: SystemTime) -> String {
    // HH:MM:SS.mmm of the RFC 3339 text.
    rfc3339(at).get(11..23).unwrap_or_default().to_owned()
}

impl<W: Write + Send> PortSink for TapSink<W> {
    async fn deliver(&mut self, doc: ReadingDoc, at: SystemTime) -> bool {
        let _ = writeln!(self.out, "{}", render(&doc, at));
        let _ = self.out.flush();
        true
    }

    fn link(&mut self, state: &LinkState) {
        let _ = writeln!(
            self.out,
            "{} link {}{}",
            clock(state.since),
            state.status.as_str(),
            state
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        let _ = self.out.flush();
    }

    fn wire(&mut self, direction: Direction, bytes: &[u8]) {
        if !self.raw {
            return;
        }
        let arrow = match direction {
            Direction::Out => '>',
            Direction::In => '<',
        };
        for chunk in bytes.chunks(16) {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = chunk
                .iter()
                .map(|b| {
                    if b.is_ascii_graphic() || *b == b' ' {
                        char::from(*b)
                    } else {
                        '.'
                    }
                })
                .collect();
            let _ = writeln!(
                self.out,
                "{} {arrow} {:<47}  |{text}|",
                clock(SystemTime::now()),
                hex.join(" ")
            );
        }
        let _ = self.out.flush();
    }

    fn note(&mut self, what: &str) {
        let _ = writeln!(self.out, "{} note: {what}", clock(SystemTime::now()));
        let _ = self.out.flush();
    }
}

/// One reading set as text: a header line, one line per value and alarm.
fn render(doc: &ReadingDoc, at: SystemTime) -> String {
    let mut where_ = Vec::new();
    for (k, v) in [
        ("ward", &doc.location.ward),
        ("room", &doc.location.room),
        ("bed", &doc.location.bed),
    ] {
        if let Some(v) = v {
            where_.push(format!("{k} {v}"));
        }
    }
    let mut s = format!(
        "{} reading set from {}{}: {} values, {} alarms",
        clock(at),
        doc.device.as_deref().unwrap_or("(no device id)"),
        if where_.is_empty() {
            String::new()
        } else {
            format!(" ({})", where_.join(", "))
        },
        doc.values.len(),
        doc.alarms.len()
    );
    for v in &doc.values {
        let value = match &v.value {
            Value::Number(n) => format!("{n}"),
            Value::Text(t) => t.clone(),
            Value::Bool(b) => b.to_string(),
        };
        s.push_str(&format!(
            "\n  {:<12} {:>8} {:<10} {} {}{}",
            v.label.as_deref().unwrap_or("-"),
            value,
            v.unit.as_deref().unwrap_or(""),
            v.system,
            v.code,
            v.channel
                .as_deref()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default()
        ));
    }
    for a in &doc.alarms {
        s.push_str(&format!(
            "\n  ALARM {} {} {}",
            a.priority.as_deref().unwrap_or("-"),
            a.code,
            a.text.as_deref().unwrap_or("")
        ));
    }
    if let Some(e) = &doc.error {
        s.push_str(&format!(
            "\n  NOT READABLE (would be stored and quarantined): {e}\n  line: {}",
            doc.raw
        ));
    }
    s
}
