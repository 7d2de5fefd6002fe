//! A MEDIBUS ventilator (pure): bytes from the requester in, the device's
//! bytes out. Used by `wardlink simulate medibus`, the tests and the benchmark.
//!
//! It answers ICC, identification, measured data (codepage 1 and 2), alarms,
//! settings, date/time, NOP and stop like an Evita-class ventilator, with
//! plausible values that drift from cycle to cycle (deterministic per seed),
//! and NAKs a command with a bad checksum. Being a master too, it sends its
//! own NOP now and then, which the requester must echo.
//!
//! Faults for tests ([`SimFaults`]): corrupt the checksum of every Nth
//! response, cut every Nth response off half-way, write answers in pieces,
//! or go silent (read and answer nothing) until told otherwise.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::medibus::frame::{self, cmd, Decoded, FrameDecoder, FrameKind, NAK};

/// What to do wrong, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimFaults {
    /// Corrupt the checksum of every Nth response (0 = never).
    pub corrupt_every: u32,
    /// Send only the first half of every Nth response (0 = never).
    pub truncate_every: u32,
    /// Answer nothing at all.
    pub silent: bool,
    /// Write each answer in two pieces a few milliseconds apart, so frames
    /// arrive split across reads (applied by the PTY server).
    pub split_writes: bool,
}

/// Counters of what the simulated device saw and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Commands received with a good checksum.
    pub commands: u64,
    /// Echo responses received (to the device's own commands).
    pub echoes: u64,
    /// Frames received with a bad checksum or cut off.
    pub bad_frames: u64,
    /// Responses sent.
    pub responses: u64,
    /// Responses corrupted or truncated on purpose.
    pub faults_injected: u64,
    /// Measured-data requests answered.
    pub measured: u64,
}

/// The simulated ventilator.
#[derive(Debug)]
pub struct MedibusSim {
    decoder: FrameDecoder,
    buf: BytesMut,
    /// The device name sent in the identification.
    name: String,
    /// Pseudo-random state (an LCG; deterministic per seed).
    rng: u32,
    /// Faults to inject; may be changed while running.
    pub faults: SimFaults,
    stats: SimStats,
    /// The device sends its own NOP every this many measured-data requests.
    nop_every: u64,
}

impl MedibusSim {
    /// A ventilator called `name` whose values follow `seed`.
    pub fn new(name: &str, seed: u32) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            buf: BytesMut::new(),
            name: name.to_owned(),
            rng: seed.wrapping_mul(2_654_435_761).wrapping_add(1),
            faults: SimFaults::default(),
            stats: SimStats::default(),
            nop_every: 7,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Feed bytes from the requester; returns what the device writes back.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.faults.silent {
            // A device that is off or hung: its input is lost.
            self.buf.clear();
            self.decoder = FrameDecoder::new();
            return out;
        }
        self.buf.extend_from_slice(bytes);
        while let Ok(Some(decoded)) = self.decoder.decode(&mut self.buf) {
            match decoded {
                Decoded::Frame(f) if f.kind == FrameKind::Command => {
                    self.stats.commands += 1;
                    self.answer(f.code, &mut out);
                }
                Decoded::Frame(_) => self.stats.echoes += 1,
                Decoded::BadChecksum { raw, .. } => {
                    self.stats.bad_frames += 1;
                    if raw.first() == Some(&frame::ESC) {
                        out.extend_from_slice(&frame::response(NAK, &[]));
                    }
                }
                Decoded::Truncated { .. } => self.stats.bad_frames += 1,
                Decoded::Garbage { .. } | Decoded::TooLong { .. } => {}
            }
        }
        out
    }

    fn answer(&mut self, code: u8, out: &mut Vec<u8>) {
        let data: Vec<u8> = match code {
            cmd::DEVICE_ID => format!("0161'{}'01.03:06.00", self.name).into_bytes(),
            cmd::MEASURED_CP1 => {
                self.stats.measured += 1;
                if self.stats.measured.checked_rem(self.nop_every) == Some(0) {
                    out.extend_from_slice(&frame::command(cmd::NOP, &[]));
                }
                self.measured()
            }
            cmd::ALARMS_CP1 => self.alarms(),
            cmd::SETTINGS => settings(),
            cmd::DATE_TIME => b"12:00:0023-NOV-26".to_vec(),
            // ICC, NOP, stop, codepage 2, text messages and anything else:
            // an echo without data.
            _ => Vec::new(),
        };
        self.respond(code, &data, out);
    }

    fn respond(&mut self, code: u8, data: &[u8], out: &mut Vec<u8>) {
        let mut frame = frame::response(code, data);
        self.stats.responses += 1;
        let n = self.stats.responses;
        let every = |k: u32| k != 0 && n.checked_rem(u64::from(k)) == Some(0);
        if every(self.faults.corrupt_every) {
            let at = frame.len() - 2;
            frame[at] = if frame[at] == b'0' { b'1' } else { b'0' };
            self.stats.faults_injected += 1;
        } else if every(self.faults.truncate_every) {
            frame.truncate(frame.len() / 2);
            self.stats.faults_injected += 1;
        }
        out.extend_from_slice(&frame);
    }

    /// A number in `lo..=hi` (uniform enough for drifting values).
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng = self.rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let unit = f64::from((self.rng >> 8) & 0xFFFF) / 65_535.0;
        lo + (hi - lo) * unit
    }

    fn measured(&mut self) -> Vec<u8> {
        let peep = 5.0;
        let pip = self.between(20.0, 26.0).round();
        let plat = (pip - self.between(3.0, 5.0)).round();
        let vt = self.between(450.0, 510.0).round();
        let rr = self.between(14.0, 16.0).round();
        let records: [(u8, String); 14] = [
            (0x78, format!("{peep:.1}")),
            (0x7D, format!("{pip:.0}")),
            (0x74, format!("{plat:.0}")),
            (0x73, format!("{:.1}", (peep + pip) / 2.2)),
            (0x88, format!("{vt:.0}")),
            (0xB8, format!("{:.1}", vt * rr / 1000.0)),
            (0xD6, format!("{rr:.0}")),
            (0xB5, "0".to_owned()),
            (0x07, format!("{:.0}", vt / (plat - peep).max(1.0))),
            (0x08, format!("{:.0}", self.between(8.0, 14.0))),
            (0xF0, "40".to_owned()),
            (0xE6, format!("{:.0}", self.between(35.0, 42.0))),
            (0xEB, format!("{:.0}", self.between(95.0, 99.0))),
            // Not measured right now: sent as blanks.
            (0x79, "---".to_owned()),
        ];
        let mut data = Vec::with_capacity(records.len() * 6);
        for (code, value) in records {
            data.extend_from_slice(format!("{code:02X}{value:>4.4}").as_bytes());
        }
        data
    }

    fn alarms(&mut self) -> Vec<u8> {
        // Now and then a high airway pressure alarm.
        if self.between(0.0, 1.0) < 0.1 {
            b"922PAW HIGH    ".to_vec()
        } else {
            Vec::new()
        }
    }
}

fn settings() -> Vec<u8> {
    let records: [(u8, &str); 5] = [
        (0x01, "40"),
        (0x0B, "5.0"),
        (0x0A, "15"),
        (0x40, "480"),
        (0x45, "20"),
    ];
    let mut data = Vec::new();
    for (code, value) in records {
        data.extend_from_slice(format!("{code:02X}{value:>5}").as_bytes());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medibus::poller::{Action, Poller, PollerOptions};
    use crate::reading::Value;
    use std::time::{Duration, Instant};

    /// The poller against the simulator, bytes passed by hand.
    fn run(sim: &mut MedibusSim, cycles_wanted: usize) -> (Poller, Vec<crate::medibus::Cycle>) {
        let t0 = Instant::now();
        let mut p = Poller::new(
            PollerOptions {
                poll_interval: Duration::from_secs(1),
                silent_timeout: Duration::from_secs(5),
            },
            t0,
        );
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut cycles = Vec::new();
        let mut actions = p.start(t0);
        let mut now = t0;
        for _ in 0..10_000 {
            if cycles.len() >= cycles_wanted {
                break;
            }
            let mut to_device = Vec::new();
            for a in actions.drain(..) {
                match a {
                    Action::Send(b) => to_device.extend(b),
                    Action::Deliver(c) => cycles.push(c),
                    _ => {}
                }
            }
            let reply = sim.feed(&to_device);
            buf.extend_from_slice(&reply);
            while let Ok(Some(d)) = decoder.decode(&mut buf) {
                actions.extend(p.on_decoded(d, now));
            }
            if actions.is_empty() {
                now = p.next_deadline().max(now);
                actions = p.on_tick(now);
            }
        }
        (p, cycles)
    }

    #[test]
    fn the_poller_reads_the_simulator() {
        let mut sim = MedibusSim::new("Evita 4", 1);
        let (p, cycles) = run(&mut sim, 20);
        assert_eq!(cycles.len(), 20);
        assert_eq!(p.stats().bad_checksums, 0);
        assert!(p.stats().device_commands >= 2, "{:?}", p.stats());
        assert!(sim.stats().echoes >= 2);
        let c = &cycles[0];
        let peep = c.values.iter().find(|v| v.label.as_deref() == Some("PEEP"));
        assert_eq!(peep.map(|v| v.value.clone()), Some(Value::Number(5.0)));
        let vt = c
            .values
            .iter()
            .find(|v| v.code == "MDC_VOL_AWAY_TIDAL" && v.channel.is_none());
        match vt.map(|v| &v.value) {
            Some(Value::Number(n)) => assert!((450.0..=510.0).contains(n)),
            other => panic!("no VT: {other:?}"),
        }
        // 13 measured (PEEPi is blank) + 5 settings.
        assert_eq!(c.values.len(), 18, "{:?}", c.values);
        assert!(c.values.iter().all(|v| !v.code.starts_with("MEDIBUS-")));
        assert_eq!(p.identity().map(|i| i.name.as_str()), Some("Evita 4"));
    }

    #[test]
    fn corrupt_and_truncated_responses_are_skipped() {
        let mut sim = MedibusSim::new("Evita 4", 2);
        sim.faults.corrupt_every = 5;
        sim.faults.truncate_every = 7;
        let (p, cycles) = run(&mut sim, 30);
        assert_eq!(cycles.len(), 30);
        let s = p.stats();
        assert!(s.bad_checksums > 0 && s.truncated > 0, "{s:?}");
        // Every delivered cycle is complete and checksum-clean.
        for c in &cycles {
            assert_eq!(c.values.len(), 18);
        }
    }

    #[test]
    fn a_bad_command_gets_a_nak() {
        let mut sim = MedibusSim::new("X", 3);
        let mut bad = frame::command(cmd::MEASURED_CP1, &[]);
        bad[2] = b'0';
        assert_eq!(sim.feed(&bad), frame::response(NAK, &[]));
        sim.faults.silent = true;
        assert!(sim.feed(&frame::command(cmd::ICC, &[])).is_empty());
    }
}
