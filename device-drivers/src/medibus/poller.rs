//! The MEDIBUS requester as a pure state machine: events in, actions out.
//!
//! Session (device-serial.md §1.6): send ICC until the device echoes it,
//! ask for its identification, then poll one request at a time — measured
//! data (codepage 1), alarms (codepage 1), device settings — every
//! `poll_interval`, and send NOP when nothing was sent for
//! [`KEEPALIVE`]. Every command the device sends (its own ICC, NOP, ...)
//! is answered at once with an echo, or the device drops the link.
//!
//! Timing: a request unanswered after [`RESPONSE_TIMEOUT`] (the spec's
//! "≤ 1 s") is given up; a response with a bad checksum fails the
//! request at once, so the next poll is not delayed. When no valid frame
//! has arrived for `silent_timeout` the link is declared lost and the
//! session starts again with ICC ([`Action::LinkLost`]).
//!
//! Design: no I/O and no clock. The caller feeds decoded frames
//! ([`Poller::on_decoded`]) and the time ([`Poller::on_tick`], at the
//! latest at [`Poller::next_deadline`]) and carries out the returned
//! [`Action`]s: write bytes, deliver a completed poll cycle, report the link.
//! The simulator, `wardlink tap` and the tests drive the same code.

use std::time::{Duration, Instant};

use super::codes::{self, CodeInfo};
use super::frame::{self, cmd, Decoded, Frame, FrameKind, NAK};
use crate::reading::{ReadingAlarm, ReadingValue, Value};

/// A request unanswered this long is given up.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// NOP after this long without sending anything (the reference
/// implementation's 2 s).
pub const KEEPALIVE: Duration = Duration::from_secs(2);
/// The requests of one poll cycle, in order.
pub const POLL_CYCLE: [u8; 3] = [cmd::MEASURED_CP1, cmd::ALARMS_CP1, cmd::SETTINGS];

/// Width of a measured-data record: 2 hex digits of code + 4 of value (§1.5).
const MEASURED_RECORD: usize = 6;
/// Width of a device-settings record: 2 + 5.
const SETTINGS_RECORD: usize = 7;
/// Width of an alarm record: 1 priority digit + 2 hex digits of code +
/// 12 characters of text (§1.5, marked uncertain; see docs/devices.md).
const ALARM_RECORD: usize = 15;

/// Timing of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerOptions {
    /// A poll cycle starts this often.
    pub poll_interval: Duration,
    /// No valid frame for this long: link lost, start again with ICC.
    pub silent_timeout: Duration,
}

/// What the device said it is (response to `0x52`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The 4-character device id, e.g. `0161`.
    pub id: String,
    /// The device name, e.g. `Evita 4`.
    pub name: String,
    /// Firmware revision, e.g. `01.03`.
    pub revision: String,
    /// MEDIBUS version, e.g. `06.00`.
    pub medibus_version: String,
}

impl Identity {
    /// Parse `0161'Evita 4'01.03:06.00`. Lenient: missing parts stay empty.
    pub fn parse(data: &[u8]) -> Identity {
        let text = String::from_utf8_lossy(data);
        let mut parts = text.splitn(3, '\'');
        let id = parts.next().unwrap_or_default().trim().to_owned();
        let name = parts.next().unwrap_or_default().trim().to_owned();
        let rest = parts.next().unwrap_or_default();
        let (revision, version) = rest.split_once(':').unwrap_or((rest, ""));
        Identity {
            id,
            name,
            revision: revision.trim().to_owned(),
            medibus_version: version.trim().to_owned(),
        }
    }

    /// A device id for readings: `Evita 4 #0161`.
    pub fn device_id(&self) -> String {
        match (self.name.is_empty(), self.id.is_empty()) {
            (false, false) => format!("{} #{}", self.name, self.id),
            (false, true) => self.name.clone(),
            (true, _) => format!("MEDIBUS #{}", self.id),
        }
    }
}

/// One completed poll cycle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cycle {
    /// Measured values and settings.
    pub values: Vec<ReadingValue>,
    /// Current alarms.
    pub alarms: Vec<ReadingAlarm>,
    /// The response frames of the cycle, as received, one after the other.
    pub raw: Vec<u8>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes to the port.
    Send(Vec<u8>),
    /// A poll cycle is complete: store it (and wait for the store before
    /// feeding further events, which back-pressures polling).
    Deliver(Cycle),
    /// The device answered ICC and identified itself.
    LinkUp(Identity),
    /// No valid frame for `silent_timeout`: re-initialising.
    LinkLost {
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// Counters, for logs and `tap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Valid frames received.
    pub frames: u64,
    /// Frames dropped for a bad checksum.
    pub bad_checksums: u64,
    /// Frames cut off by the next one.
    pub truncated: u64,
    /// Bytes outside frames, and over-long frames' bytes.
    pub garbage_bytes: u64,
    /// Requests unanswered within [`RESPONSE_TIMEOUT`].
    pub timeouts: u64,
    /// NAK responses (the device saw a corrupt command).
    pub naks: u64,
    /// Responses to no outstanding request (late, or unsolicited).
    pub unexpected: u64,
    /// Commands from the device, answered with an echo.
    pub device_commands: u64,
    /// Records that could not be read (bad code, short record).
    pub bad_records: u64,
    /// Cycles delivered.
    pub cycles: u64,
    /// Times the link was declared lost.
    pub link_losses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the echo of ICC.
    Init,
    /// Waiting for the identification.
    Identify,
    /// Between cycles.
    Idle,
    /// Waiting for the answer to `POLL_CYCLE[step]`.
    Polling(usize),
}

/// The requester.
#[derive(Debug)]
pub struct Poller {
    options: PollerOptions,
    phase: Phase,
    /// The request in flight: its code and when it was sent.
    pending: Option<(u8, Instant)>,
    /// When the last valid frame arrived (or the session started).
    last_rx: Instant,
    /// When something was last sent.
    last_tx: Instant,
    /// When the next cycle is due.
    next_poll: Instant,
    /// The link is up (ICC echoed and identified, not silent since).
    up: bool,
    cycle: Cycle,
    identity: Option<Identity>,
    stats: Stats,
}

impl Poller {
    /// A requester that has sent nothing yet; call [`Poller::start`].
    pub fn new(options: PollerOptions, now: Instant) -> Self {
        Self {
            options,
            phase: Phase::Init,
            pending: None,
            last_rx: now,
            last_tx: now,
            next_poll: now,
            up: false,
            cycle: Cycle::default(),
            identity: None,
            stats: Stats::default(),
        }
    }

    /// Begin the session: send ICC.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.last_rx = now;
        self.send(cmd::ICC, now, &mut out);
        out
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The device's identification, once it answered.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// True while the device answers.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The latest time [`Poller::on_tick`] must be called.
    pub fn next_deadline(&self) -> Instant {
        let silent = self.last_rx + self.options.silent_timeout;
        let mut at = silent;
        if let Some((_, sent)) = self.pending {
            at = at.min(sent + RESPONSE_TIMEOUT);
        } else if self.phase == Phase::Idle {
            at = at.min(self.next_poll).min(self.last_tx + KEEPALIVE);
        } else {
            // Init / Identify with nothing in flight: send at once.
            at = at.min(self.last_tx);
        }
        at
    }

    fn send(&mut self, code: u8, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Send(frame::command(code, &[])));
        self.pending = Some((code, now));
        self.last_tx = now;
    }

    /// The time passed: give up late requests, detect silence, start the
    /// next request.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some((_, sent)) = self.pending {
            if now.saturating_duration_since(sent) >= RESPONSE_TIMEOUT {
                self.stats.timeouts += 1;
                self.fail_request();
            }
        }
        let silent_for = now.saturating_duration_since(self.last_rx);
        if silent_for >= self.options.silent_timeout {
            if self.up || self.phase != Phase::Init {
                self.stats.link_losses += 1;
                out.push(Action::LinkLost { silent_for });
            }
            self.up = false;
            self.phase = Phase::Init;
            self.pending = None;
            self.cycle = Cycle::default();
            // Do not report the same silence again before the next ICC is due.
            self.last_rx = now;
        }
        if self.pending.is_some() {
            return out;
        }
        match self.phase {
            Phase::Init => self.send(cmd::ICC, now, &mut out),
            Phase::Identify => self.send(cmd::DEVICE_ID, now, &mut out),
            Phase::Idle => {
                if now >= self.next_poll {
                    // Keep the cadence, but no catch-up burst after a stall.
                    self.next_poll += self.options.poll_interval;
                    if self.next_poll <= now {
                        self.next_poll = now + self.options.poll_interval;
                    }
                    self.cycle = Cycle::default();
                    self.phase = Phase::Polling(0);
                    self.send(POLL_CYCLE[0], now, &mut out);
                } else if now.saturating_duration_since(self.last_tx) >= KEEPALIVE {
                    self.send(cmd::NOP, now, &mut out);
                }
            }
            Phase::Polling(_) => {}
        }
        out
    }

    /// The request in flight failed: a cycle is abandoned (polled again at
    /// the next interval); ICC or identification is sent again.
    fn fail_request(&mut self) {
        self.pending = None;
        if let Phase::Polling(_) = self.phase {
            self.phase = Phase::Idle;
            self.cycle = Cycle::default();
        }
    }

    /// Something came off the wire.
    pub fn on_decoded(&mut self, decoded: Decoded, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match decoded {
            Decoded::Frame(f) => self.on_frame(f, now, &mut out),
            Decoded::BadChecksum { raw, .. } => {
                self.stats.bad_checksums += 1;
                if raw.first() == Some(&frame::SOH) && self.pending.is_some() {
                    self.fail_request();
                }
            }
            Decoded::Truncated { .. } => {
                // Seen only when the next frame starts, which is most likely
                // the answer to the request now in flight: keep waiting for it
                // (a request whose answer was the cut-off frame times out).
                self.stats.truncated += 1;
            }
            Decoded::Garbage { len } | Decoded::TooLong { len } => {
                self.stats.garbage_bytes += len as u64;
            }
        }
        out
    }

    fn on_frame(&mut self, f: Frame, now: Instant, out: &mut Vec<Action>) {
        self.stats.frames += 1;
        self.last_rx = now;
        if f.kind == FrameKind::Command {
            // The device is a master too: echo its command at once (§1.2).
            self.stats.device_commands += 1;
            out.push(Action::Send(frame::response(f.code, &[])));
            self.last_tx = now;
            return;
        }
        if f.code == NAK {
            self.stats.naks += 1;
            if self.pending.is_some() {
                self.fail_request();
            }
            return;
        }
        match self.pending {
            Some((code, _)) if code == f.code => self.pending = None,
            _ => {
                self.stats.unexpected += 1;
                return;
            }
        }
        match self.phase {
            Phase::Init if f.code == cmd::ICC => {
                self.phase = Phase::Identify;
                self.send(cmd::DEVICE_ID, now, out);
            }
            Phase::Identify if f.code == cmd::DEVICE_ID => {
                let identity = Identity::parse(&f.data);
                self.identity = Some(identity.clone());
                self.up = true;
                self.phase = Phase::Idle;
                self.next_poll = now;
                out.push(Action::LinkUp(identity));
                // Start the first cycle at once.
                out.extend(self.on_tick(now));
            }
            Phase::Polling(step) if POLL_CYCLE.get(step) == Some(&f.code) => {
                self.cycle.raw.extend_from_slice(&f.raw);
                self.read_records(f.code, &f.data);
                if let Some(&next) = POLL_CYCLE.get(step + 1) {
                    self.phase = Phase::Polling(step + 1);
                    self.send(next, now, out);
                } else {
                    self.phase = Phase::Idle;
                    self.stats.cycles += 1;
                    out.push(Action::Deliver(std::mem::take(&mut self.cycle)));
                }
            }
            // An echo of NOP, or an answer that fits no phase: nothing to do.
            _ => {}
        }
    }

    fn read_records(&mut self, code: u8, data: &[u8]) {
        match code {
            cmd::MEASURED_CP1 => {
                self.values(data, MEASURED_RECORD, codes::MEASURED_CP1, code, None);
            }
            cmd::SETTINGS => {
                self.values(
                    data,
                    SETTINGS_RECORD,
                    codes::SETTINGS,
                    code,
                    Some("setting"),
                );
            }
            cmd::ALARMS_CP1 => self.alarms(data),
            _ => {}
        }
    }

    fn values(
        &mut self,
        data: &[u8],
        width: usize,
        table: &[CodeInfo],
        command: u8,
        channel: Option<&str>,
    ) {
        for record in data.chunks(width) {
            let Some(value) = read_value(record, width) else {
                self.stats.bad_records += 1;
                continue;
            };
            let Some((code, value)) = value else {
                // A value the device marks as not available.
                continue;
            };
            let v = match codes::lookup(table, code) {
                Some(info) => ReadingValue {
                    code: info.code.to_owned(),
                    system: info.system.to_owned(),
                    value,
                    unit: info.unit.map(str::to_owned),
                    label: Some(info.label.to_owned()),
                    channel: channel.map(str::to_owned),
                },
                None => ReadingValue {
                    code: format!("MEDIBUS-{command:02X}-{code:02X}"),
                    system: "LOCAL".to_owned(),
                    value,
                    unit: None,
                    label: None,
                    channel: channel.map(str::to_owned),
                },
            };
            self.cycle.values.push(v);
        }
    }

    fn alarms(&mut self, data: &[u8]) {
        for record in data.chunks(ALARM_RECORD) {
            let priority = record.first().and_then(|p| (*p as char).to_digit(10));
            let code = record.get(1..3).and_then(frame::parse_hex_byte);
            let (Some(priority), Some(code), true) = (priority, code, record.len() == ALARM_RECORD)
            else {
                self.stats.bad_records += 1;
                continue;
            };
            let text = String::from_utf8_lossy(&record[3..]).trim().to_owned();
            self.cycle.alarms.push(ReadingAlarm {
                code: format!("{code:02X}"),
                text: Some(text).filter(|t| !t.is_empty()),
                priority: Some(alarm_priority(priority).to_owned()),
            });
        }
    }
}

/// `high` for priority digits 7–9, `medium` for 4–6, `low` below.
pub fn alarm_priority(digit: u32) -> &'static str {
    match digit {
        7.. => "high",
        4..=6 => "medium",
        _ => "low",
    }
}

/// One fixed-width record: `None` if it cannot be read (short, bad code);
/// `Some(None)` for a value marked unavailable (blank, `---`); else the
/// code and the number (or the text, when it is not a number).
fn read_value(record: &[u8], width: usize) -> Option<Option<(u8, Value)>> {
    if record.len() != width {
        return None;
    }
    let code = frame::parse_hex_byte(&record[..2])?;
    let text = std::str::from_utf8(&record[2..]).ok()?.trim();
    if text.is_empty() || text.chars().all(|c| c == '-') {
        return Some(None);
    }
    let value = match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Value::Number(n),
        _ => Value::Text(text.to_owned()),
    };
    Some(Some((code, value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medibus::frame::{command, response};
    use bytes::Bytes;

    const OPTS: PollerOptions = PollerOptions {
        poll_interval: Duration::from_secs(1),
        silent_timeout: Duration::from_secs(5),
    };

    fn frame(bytes: Vec<u8>) -> Decoded {
        let code = bytes[1];
        let kind = if bytes[0] == frame::ESC {
            FrameKind::Command
        } else {
            FrameKind::Response
        };
        let n = bytes.len();
        Decoded::Frame(Frame {
            kind,
            code,
            data: Bytes::copy_from_slice(&bytes[2..n - 3]),
            raw: Bytes::from(bytes),
        })
    }

    fn sent(actions: &[Action]) -> Vec<Vec<u8>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// A poller that has gone through ICC and identification.
    fn connected(t0: Instant) -> (Poller, Vec<Action>) {
        let mut p = Poller::new(OPTS, t0);
        assert_eq!(sent(&p.start(t0)), vec![command(cmd::ICC, &[])]);
        let a = p.on_decoded(frame(response(cmd::ICC, &[])), t0);
        assert_eq!(sent(&a), vec![command(cmd::DEVICE_ID, &[])]);
        let a = p.on_decoded(
            frame(response(cmd::DEVICE_ID, b"0161'Evita 4'01.03:06.00")),
            t0,
        );
        assert!(p.is_up());
        (p, a)
    }

    #[test]
    fn identifies_then_polls_a_full_cycle() {
        let t0 = Instant::now();
        let (mut p, a) = connected(t0);
        assert_eq!(
            a[0],
            Action::LinkUp(Identity {
                id: "0161".into(),
                name: "Evita 4".into(),
                revision: "01.03".into(),
                medibus_version: "06.00".into(),
            })
        );
        assert_eq!(sent(&a), vec![command(cmd::MEASURED_CP1, &[])]);
        let a = p.on_decoded(
            frame(response(cmd::MEASURED_CP1, b"78 5.07D  2388 480FF12.5")),
            t0,
        );
        assert_eq!(sent(&a), vec![command(cmd::ALARMS_CP1, &[])]);
        let a = p.on_decoded(frame(response(cmd::ALARMS_CP1, b"922PAW HIGH    ")), t0);
        assert_eq!(sent(&a), vec![command(cmd::SETTINGS, &[])]);
        let a = p.on_decoded(frame(response(cmd::SETTINGS, b"0B  5.001   40")), t0);
        let Some(Action::Deliver(cycle)) = a.first() else {
            panic!("no delivery: {a:?}");
        };
        let labels: Vec<_> = cycle
            .values
            .iter()
            .map(|v| (v.code.as_str(), v.value.clone(), v.channel.as_deref()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("MDC_PRESS_AWAY_END_EXP_POS", Value::Number(5.0), None),
                ("MDC_PRESS_AWAY_INSP_PEAK", Value::Number(23.0), None),
                ("MDC_VOL_AWAY_TIDAL", Value::Number(480.0), None),
                ("MEDIBUS-24-FF", Value::Number(12.5), None),
                (
                    "MDC_PRESS_AWAY_END_EXP_POS",
                    Value::Number(5.0),
                    Some("setting")
                ),
                (
                    "MDC_CONC_AWAY_O2_INSP",
                    Value::Number(40.0),
                    Some("setting")
                ),
            ]
        );
        assert_eq!(
            cycle.alarms,
            vec![ReadingAlarm {
                code: "22".into(),
                text: Some("PAW HIGH".into()),
                priority: Some("high".into())
            }]
        );
        assert!(cycle.raw.starts_with(b"\x01$78 5.0"));
        assert_eq!(p.stats().cycles, 1);
        // Nothing until the next interval; then the next cycle.
        assert!(sent(&p.on_tick(t0 + Duration::from_millis(500))).is_empty());
        assert_eq!(
            sent(&p.on_tick(t0 + Duration::from_secs(1))),
            vec![command(cmd::MEASURED_CP1, &[])]
        );
    }

    #[test]
    fn device_commands_are_echoed() {
        let t0 = Instant::now();
        let (mut p, _) = connected(t0);
        let a = p.on_decoded(frame(command(cmd::NOP, &[])), t0);
        assert_eq!(sent(&a), vec![response(cmd::NOP, &[])]);
        let a = p.on_decoded(frame(command(cmd::ICC, &[])), t0);
        assert_eq!(sent(&a), vec![response(cmd::ICC, &[])]);
        assert_eq!(p.stats().device_commands, 2);
    }

    #[test]
    fn bad_checksum_abandons_the_cycle_and_the_next_poll_comes() {
        let t0 = Instant::now();
        let (mut p, _) = connected(t0);
        let mut bad = response(cmd::MEASURED_CP1, b"78 5.0");
        let n = bad.len();
        bad[n - 2] = b'0';
        let mut decoder = frame::FrameDecoder::new();
        let mut buf = bytes::BytesMut::from(&bad[..]);
        let decoded = tokio_util::codec::Decoder::decode(&mut decoder, &mut buf)
            .ok()
            .flatten();
        let Some(decoded) = decoded else {
            panic!("nothing decoded")
        };
        assert!(sent(&p.on_decoded(decoded, t0)).is_empty());
        assert_eq!(p.stats().bad_checksums, 1);
        // No delivery; the next interval polls again.
        let a = p.on_tick(t0 + Duration::from_secs(1));
        assert_eq!(sent(&a), vec![command(cmd::MEASURED_CP1, &[])]);
    }

    #[test]
    fn unanswered_request_times_out_and_keepalive_follows() {
        let t0 = Instant::now();
        let (mut p, _) = connected(t0);
        let a = p.on_tick(t0 + RESPONSE_TIMEOUT);
        assert_eq!(p.stats().timeouts, 1);
        // The cycle was abandoned; the next one is due at t0 + 1 s.
        assert_eq!(sent(&a), vec![command(cmd::MEASURED_CP1, &[])]);
        // A late answer to an abandoned request is ignored.
        p.on_decoded(frame(response(cmd::ALARMS_CP1, b"")), t0 + RESPONSE_TIMEOUT);
        assert_eq!(p.stats().unexpected, 1);
        // Keep-alive: a long interval with nothing else to send.
        let mut p = Poller::new(
            PollerOptions {
                poll_interval: Duration::from_secs(60),
                silent_timeout: Duration::from_secs(30),
            },
            t0,
        );
        p.start(t0);
        p.on_decoded(frame(response(cmd::ICC, &[])), t0);
        p.on_decoded(frame(response(cmd::DEVICE_ID, b"0161'X'1:1")), t0);
        for step in [cmd::MEASURED_CP1, cmd::ALARMS_CP1, cmd::SETTINGS] {
            p.on_decoded(frame(response(step, b"")), t0);
        }
        let later = t0 + KEEPALIVE;
        assert!(p.next_deadline() <= later);
        assert_eq!(sent(&p.on_tick(later)), vec![command(cmd::NOP, &[])]);
    }

    #[test]
    fn silence_reinitialises_and_recovery_resumes_polling() {
        let t0 = Instant::now();
        let (mut p, _) = connected(t0);
        // The device stops answering: every request times out.
        let mut t = t0;
        let mut lost = None;
        for _ in 0..20 {
            t = p.next_deadline().max(t);
            for a in p.on_tick(t) {
                if let Action::LinkLost { silent_for } = a {
                    lost = Some((t, silent_for));
                }
            }
            if lost.is_some() {
                break;
            }
        }
        let Some((at, silent_for)) = lost else {
            panic!("link never declared lost")
        };
        assert_eq!(at, t0 + OPTS.silent_timeout);
        assert_eq!(silent_for, OPTS.silent_timeout);
        assert!(!p.is_up());
        // It re-initialises: ICC again, and again each response timeout.
        let a = p.on_tick(at);
        assert!(sent(&a).is_empty(), "ICC already in flight");
        assert_eq!(
            sent(&p.on_tick(at + RESPONSE_TIMEOUT)),
            vec![command(cmd::ICC, &[])]
        );
        // The device comes back.
        let t2 = at + RESPONSE_TIMEOUT;
        p.on_decoded(frame(response(cmd::ICC, &[])), t2);
        let a = p.on_decoded(frame(response(cmd::DEVICE_ID, b"0161'E'1:1")), t2);
        assert!(matches!(a[0], Action::LinkUp(_)));
        assert_eq!(sent(&a), vec![command(cmd::MEASURED_CP1, &[])]);
        assert_eq!(p.stats().link_losses, 1);
    }

    #[test]
    fn records_are_read_leniently() {
        assert_eq!(
            read_value(b"78-12.5", 7),
            Some(Some((0x78, Value::Number(-12.5))))
        );
        assert_eq!(read_value(b"78 ---", 6), Some(None));
        assert_eq!(read_value(b"78    ", 6), Some(None));
        assert_eq!(read_value(b"ZZ 5.0", 6), None);
        assert_eq!(read_value(b"78 5", 6), None);
        assert_eq!(
            read_value(b"01 IPPV", 7),
            Some(Some((0x01, Value::Text("IPPV".into()))))
        );
        assert_eq!(Identity::parse(b"garbage").id, "garbage");
        assert_eq!(
            Identity::parse(b"0161'Evita 4'01.03:06.00").device_id(),
            "Evita 4 #0161"
        );
    }
}
