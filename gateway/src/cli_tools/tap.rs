//! `wardlink tap SOURCE [--raw]`: what a configured source decodes, live,
//! without storing anything — for checking wiring and mappings before
//! go-live. Dispatches on the source's kind (MQTT here; serial sources are
//! another arm).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wardlink_devices::mqtt::{self, TapEvent};
use wardlink_devices::reading::{ReadingDoc, Value};

use super::{on_runtime, EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_RUNTIME};

/// `tap` options.
#[derive(Debug, Args)]
pub struct TapArgs {
    /// The configured source's name.
    pub source: String,
    /// Also print each unit's raw bytes (hex, and the text when it is UTF-8).
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many messages (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// The configuration that defines the source (default: the embedded default).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Tap a source.
pub fn tap(a: TapArgs) -> ExitCode {
    let config = match &a.config {
        None => wardlink_config::embedded_default().map_err(|e| e.to_string()),
        Some(p) => wardlink_config::load_file(p)
            .map(|l| l.config)
            .map_err(|e| e.to_string()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wardlink: configuration error:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(source) = config.sources.mqtt.iter().find(|s| s.name == a.source) {
        return tap_mqtt(source.clone(), a.raw, a.count);
    }
    if config.sources.serial.iter().any(|s| s.name == a.source) {
        return on_runtime(|stop| async move {
            match crate::tap::run(&config, &a.source, a.raw, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wardlink tap: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        });
    }
    let known: Vec<String> = (config
        .sources
        .mllp
        .iter()
        .map(|s| format!("{} (mllp)", s.name)))
    .chain(
        config
            .sources
            .mqtt
            .iter()
            .map(|s| format!("{} (mqtt)", s.name)),
    )
    .chain(
        config
            .sources
            .serial
            .iter()
            .map(|s| format!("{} (serial)", s.name)),
    )
    .collect();
    if config.sources.mllp.iter().any(|s| s.name == a.source) {
        eprintln!(
            "wardlink tap: {} is an MLLP listener; tap shows equipment sources (mqtt, serial)",
            a.source
        );
    } else {
        eprintln!(
            "wardlink tap: no source named {:?}; configured: {}",
            a.source,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    // The configuration is fine; the name asked for is not in it.
    ExitCode::from(EXIT_CHECK_FAILED)
}

fn tap_mqtt(source: wardlink_config::MqttSource, raw: bool, count: u64) -> ExitCode {
    on_runtime(|stop| async move {
        let mut seen = 0u64;
        let filters: Vec<String> = source.topics.iter().map(|t| t.template.clone()).collect();
        let stopper = stop.clone();
        let result = mqtt::tap(&source, stop, |ev| {
            let mut out = std::io::stdout().lock();
            match ev {
                TapEvent::Connected { peer } => {
                    eprintln!(
                        "tap {}: connected to {peer}; subscribed to {} (nothing is stored)",
                        source.name,
                        filters.join(", ")
                    );
                }
                TapEvent::Disconnected { error } => {
                    eprintln!("tap {}: disconnected: {error}; retrying", source.name);
                }
                TapEvent::Message {
                    topic,
                    payload,
                    reading,
                } => {
                    let _ = write!(out, "{}", render(&topic, &payload, &reading, raw));
                    let _ = out.flush();
                    seen += 1;
                    if count > 0 && seen >= count {
                        stopper.cancel();
                    }
                }
            }
        })
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wardlink tap: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

/// One message as tap prints it.
fn render(topic: &str, payload: &[u8], r: &ReadingDoc, raw: bool) -> String {
    let mut s = topic.to_string();
    if let Some(d) = &r.device {
        s.push_str(&format!("  device={d}"));
    }
    for (k, v) in [
        ("ward", &r.location.ward),
        ("room", &r.location.room),
        ("bed", &r.location.bed),
    ] {
        if let Some(v) = v {
            s.push_str(&format!("  {k}={v}"));
        }
    }
    if let Some(t) = &r.observed_at {
        s.push_str(&format!("  at={t}"));
    }
    s.push('\n');
    for v in &r.values {
        let value = match &v.value {
            Value::Number(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Text(t) => format!("{t:?}"),
        };
        s.push_str(&format!(
            "  {} [{}] = {value}{}{}\n",
            v.code,
            v.system,
            v.unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default(),
            v.label
                .as_deref()
                .map(|l| format!("  ({l})"))
                .unwrap_or_default()
        ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(
            "  UNDECODABLE: {e} (the gateway stores and quarantines it)\n"
        ));
    }
    if raw {
        s.push_str(&format!(
            "  raw ({} bytes): {}\n",
            payload.len(),
            wardlink_devices::reading::hex(payload)
        ));
        if let Ok(t) = std::str::from_utf8(payload) {
            s.push_str(&format!("  text: {t}\n"));
        }
    }
    s
}
