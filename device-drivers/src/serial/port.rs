//! The port task: open, run a session, reopen with backoff.

use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::{Direction, LinkState, LinkStatus, PortSink, Protocol, SerialOptions};
use crate::lines::{self, Line, LineDecoder, LinesOptions};
use crate::medibus::frame::{self, cmd};
use crate::medibus::{Action, Decoded, FrameDecoder, Identity, Poller, PollerOptions};
use crate::reading::{rfc3339, ReadingDoc};

/// A write that takes longer than this (flow control holding it, a hung
/// adapter) fails the session; the port is reopened.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a session ended.
enum End {
    /// Shutdown was requested.
    Shutdown,
    /// The port failed (read/write error, end of file): reopen it.
    Failed(String),
}

/// Reports a link state only when it changes.
struct Link {
    last: Option<LinkStatus>,
}

impl Link {
    fn set<S: PortSink>(&mut self, sink: &mut S, status: LinkStatus, detail: Option<String>) {
        if self.last == Some(status) {
            return;
        }
        self.last = Some(status);
        sink.link(&LinkState {
            status,
            since: SystemTime::now(),
            detail,
        });
    }
}

/// Run one serial port until `shutdown` is cancelled: open it, run its
/// protocol, and when it cannot be opened or fails, report it
/// `disconnected` and try again after a wait that doubles from
/// `reopen_backoff_min` up to `reopen_backoff_max` (reset after a
/// successful open). Never returns an error: a port problem is a state,
/// logged and shown in status, and the other sources keep running.
pub async fn run_port<S: PortSink>(
    options: SerialOptions,
    mut sink: S,
    shutdown: CancellationToken,
) {
    let name = options.name.clone();
    let path = options.path.display().to_string();
    let mut link = Link { last: None };
    let mut backoff = options.reopen_backoff_min;
    while !shutdown.is_cancelled() {
        match open(&options) {
            Ok(port) => {
                tracing::info!(source = %name, %path, protocol = options.protocol.name(), "Serial port open");
                backoff = options.reopen_backoff_min;
                let end = match &options.protocol {
                    Protocol::Medibus(p) => {
                        medibus(&options, *p, port, &mut sink, &mut link, &shutdown).await
                    }
                    Protocol::Lines {
                        options: lines,
                        silent_timeout,
                    } => {
                        lines_session(
                            &options,
                            lines,
                            *silent_timeout,
                            port,
                            &mut sink,
                            &mut link,
                            &shutdown,
                        )
                        .await
                    }
                };
                match end {
                    End::Shutdown => break,
                    End::Failed(why) => {
                        tracing::warn!(source = %name, %path, error = %why, "Serial port lost; reopening with backoff");
                        link.set(&mut sink, LinkStatus::Disconnected, Some(why));
                    }
                }
            }
            Err(e) => {
                let why = format!("cannot open {path}: {e}");
                if link.last != Some(LinkStatus::Disconnected) {
                    tracing::warn!(source = %name, error = %why, "Serial port unavailable; retrying with backoff");
                } else {
                    tracing::debug!(source = %name, error = %why, "Serial port still unavailable");
                }
                link.set(&mut sink, LinkStatus::Disconnected, Some(why));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(options.reopen_backoff_max);
    }
    tracing::info!(source = %name, "Serial port closed");
}

fn open(o: &SerialOptions) -> tokio_serial::Result<SerialStream> {
    tokio_serial::new(o.path.to_string_lossy(), o.baud)
        .data_bits(o.data_bits)
        .parity(o.parity)
        .stop_bits(o.stop_bits)
        .flow_control(o.flow_control)
        .open_native_async()
}

async fn write<S: PortSink>(
    port: &mut SerialStream,
    sink: &mut S,
    bytes: &[u8],
) -> Result<(), String> {
    sink.wire(Direction::Out, bytes);
    match tokio::time::timeout(WRITE_TIMEOUT, port.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!(
            "write did not finish within {}s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

/// Read once. `Err` when the port is gone: an error or the end of file
/// (a pseudo-terminal whose other side closed, an adapter unplugged).
async fn read_some<S: PortSink>(
    port: &mut SerialStream,
    sink: &mut S,
    buf: &mut BytesMut,
) -> Result<(), String> {
    buf.reserve(1024);
    match port.read_buf(buf).await {
        Ok(0) => Err("the port closed (end of file)".to_owned()),
        Ok(n) => {
            sink.wire(Direction::In, &buf[buf.len() - n..]);
            Ok(())
        }
        Err(e) => Err(format!("read failed: {e}")),
    }
}

async fn medibus<S: PortSink>(
    options: &SerialOptions,
    poller_options: PollerOptions,
    mut port: SerialStream,
    sink: &mut S,
    link: &mut Link,
    shutdown: &CancellationToken,
) -> End {
    let source = &options.name;
    link.set(
        sink,
        LinkStatus::NoAnswer,
        Some("port open; initialising".to_owned()),
    );
    let mut poller = Poller::new(poller_options, Instant::now());
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut identity: Option<Identity> = None;
    let mut actions = poller.start(Instant::now());
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send(bytes) => {
                    if let Err(e) = write(&mut port, sink, &bytes).await {
                        return End::Failed(e);
                    }
                }
                Action::Deliver(cycle) => {
                    let at = SystemTime::now();
                    let mut doc = ReadingDoc::new("medibus");
                    doc.observed_at = Some(rfc3339(at));
                    doc.set_raw(&cycle.raw);
                    doc.device = options
                        .device_id
                        .clone()
                        .or_else(|| identity.as_ref().map(Identity::device_id));
                    doc.location = options.location.clone();
                    doc.values = cycle.values;
                    doc.alarms = cycle.alarms;
                    sink.deliver(doc, at).await;
                }
                Action::LinkUp(id) => {
                    tracing::info!(
                        source = %source,
                        device = %id.device_id(),
                        revision = %id.revision,
                        medibus = %id.medibus_version,
                        "MEDIBUS device identified; polling"
                    );
                    let detail = format!(
                        "{} (revision {}, MEDIBUS {})",
                        id.device_id(),
                        id.revision,
                        id.medibus_version
                    );
                    identity = Some(id);
                    link.set(sink, LinkStatus::Connected, Some(detail));
                }
                Action::LinkLost { silent_for } => {
                    let s = poller.stats();
                    tracing::warn!(
                        source = %source,
                        silent_ms = silent_for.as_millis() as u64,
                        bad_checksums = s.bad_checksums,
                        timeouts = s.timeouts,
                        "MEDIBUS device silent; re-initialising"
                    );
                    link.set(
                        sink,
                        LinkStatus::NoAnswer,
                        Some(format!(
                            "no valid frame for {:.1}s; re-initialising",
                            silent_for.as_secs_f64()
                        )),
                    );
                }
            }
        }
        let deadline = tokio::time::Instant::from_std(poller.next_deadline());
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Courtesy: tell the device we stop (§1.6 step 7).
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    port.write_all(&frame::command(cmd::STOP, &[])),
                ).await;
                return End::Shutdown;
            }
            r = read_some(&mut port, sink, &mut buf) => {
                if let Err(e) = r {
                    return End::Failed(e);
                }
                let now = Instant::now();
                loop {
                    let decoded = match decoder.decode(&mut buf) {
                        Ok(Some(d)) => d,
                        Ok(None) => break,
                        Err(e) => return End::Failed(format!("decode failed: {e}")),
                    };
                    note_frame(source, sink, &decoded);
                    actions.extend(poller.on_decoded(decoded, now));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                actions = poller.on_tick(Instant::now());
            }
        }
    }
}

/// Log (debug) and tell the sink about what is dropped below a frame.
fn note_frame<S: PortSink>(source: &str, sink: &mut S, d: &Decoded) {
    let what = match d {
        Decoded::Frame(_) => return,
        Decoded::BadChecksum { raw, expected } => format!(
            "frame with a bad checksum dropped ({} bytes, checksum should be {expected:02X})",
            raw.len()
        ),
        Decoded::Truncated { raw } => format!("cut-off frame dropped ({} bytes)", raw.len()),
        Decoded::Garbage { len } => format!("{len} bytes outside any frame skipped"),
        Decoded::TooLong { len } => format!("over-long frame dropped ({len} bytes)"),
    };
    tracing::debug!(source = %source, "{what}");
    sink.note(&what);
}

async fn lines_session<S: PortSink>(
    options: &SerialOptions,
    lines: &LinesOptions,
    silent_timeout: Duration,
    mut port: SerialStream,
    sink: &mut S,
    link: &mut Link,
    shutdown: &CancellationToken,
) -> End {
    let source = &options.name;
    link.set(sink, LinkStatus::Connected, Some("port open".to_owned()));
    let mut decoder = LineDecoder::new(lines.max_line_bytes);
    let mut buf = BytesMut::with_capacity(lines.max_line_bytes.min(64 * 1024));
    // The first line after opening is probably partial (device-serial.md §4).
    let mut first = true;
    let mut last_rx = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            r = read_some(&mut port, sink, &mut buf) => {
                if let Err(e) = r {
                    return End::Failed(e);
                }
                last_rx = tokio::time::Instant::now();
                link.set(sink, LinkStatus::Connected, Some("receiving".to_owned()));
                loop {
                    let line = match decoder.decode(&mut buf) {
                        Ok(Some(l)) => l,
                        Ok(None) => break,
                        Err(e) => return End::Failed(format!("decode failed: {e}")),
                    };
                    match line {
                        Line::TooLong { len } => {
                            tracing::warn!(source = %source, len, max = lines.max_line_bytes, "Over-long line dropped");
                            sink.note(&format!("over-long line dropped ({len} bytes so far)"));
                            first = false;
                        }
                        Line::Line(_) if first => {
                            first = false;
                            sink.note("first line after opening the port skipped (probably partial)");
                        }
                        Line::Line(text) => {
                            let at = SystemTime::now();
                            let mut doc = ReadingDoc::new("lines");
                            doc.observed_at = Some(rfc3339(at));
                            doc.set_raw(&text);
                            doc.device = options.device_id.clone();
                            doc.location = options.location.clone();
                            match lines::parse_line(lines, &text) {
                                Ok(values) => doc.values = values,
                                Err(why) => {
                                    tracing::debug!(source = %source, error = %why, "Line not readable; stored for quarantine");
                                    doc.error = Some(why);
                                }
                            }
                            sink.deliver(doc, at).await;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(last_rx + silent_timeout), if link.last != Some(super::LinkStatus::NoAnswer) => {
                tracing::warn!(source = %source, silent_secs = silent_timeout.as_secs(), "Line device silent");
                link.set(sink, LinkStatus::NoAnswer, Some(format!("no byte for {}s", silent_timeout.as_secs())));
            }
        }
    }
}
