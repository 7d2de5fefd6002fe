//! Realistic HL7 v2 messages for tests, benchmarks and `wardlink simulate
//! hl7`.
//!
//! [`Hl7Generator`] makes ORU^R01 vital-sign messages (about 1 KB: PID,
//! PV1, OBR and one OBX per vital, coded with IEEE 11073 MDC terms as IHE
//! PCD-01 devices send them) and ADT^A01/A02/A03 (EVN, PID, PV1). It is
//! pure and deterministic for a given seed and start time; every message
//! gets a control id unique within the generator (`<prefix><counter>`).
//! All data is invented.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An ADT trigger the generator can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtEvent {
    /// Admit: the patient occupies PV1-3.
    A01,
    /// Transfer: from PV1-6 to PV1-3.
    A02,
    /// Discharge: PV1-3 is vacated at PV1-45.
    A03,
}

impl AdtEvent {
    fn code(self) -> &'static str {
        match self {
            AdtEvent::A01 => "A01",
            AdtEvent::A02 => "A02",
            AdtEvent::A03 => "A03",
        }
    }
}

const FAMILY: &[&str] = &[
    "SHARMA", "OKAFOR", "MUELLER", "NAKAMURA", "GARCIA", "NOVAK", "SILVA", "HANSEN", "KOWALSKI",
    "DUBOIS",
];
const GIVEN: &[&str] = &[
    "ASHA", "CHIDI", "LENA", "HIRO", "MARIA", "PETR", "JOAO", "INGRID", "EWA", "LUC",
];
const WARDS: &[&str] = &["ICU", "CCU", "MED3", "SURG2", "NICU"];

/// One vital sign: MDC code and name, unit code and name, value range.
struct Vital {
    code: &'static str,
    name: &'static str,
    unit_code: &'static str,
    unit: &'static str,
    low: u32,
    high: u32,
}

/// The vitals of one ORU, in the order a bedside monitor sends them.
const VITALS: &[Vital] = &[
    Vital {
        code: "147842",
        name: "MDC_ECG_HEART_RATE",
        unit_code: "264864",
        unit: "MDC_DIM_BEAT_PER_MIN",
        low: 55,
        high: 120,
    },
    Vital {
        code: "150456",
        name: "MDC_PULS_OXIM_SAT_O2",
        unit_code: "262688",
        unit: "MDC_DIM_PERCENT",
        low: 88,
        high: 100,
    },
    Vital {
        code: "149530",
        name: "MDC_PULS_OXIM_PULS_RATE",
        unit_code: "264864",
        unit: "MDC_DIM_BEAT_PER_MIN",
        low: 55,
        high: 120,
    },
    Vital {
        code: "151562",
        name: "MDC_RESP_RATE",
        unit_code: "264928",
        unit: "MDC_DIM_RESP_PER_MIN",
        low: 10,
        high: 28,
    },
    Vital {
        code: "150021",
        name: "MDC_PRESS_BLD_NONINV_SYS",
        unit_code: "266016",
        unit: "MDC_DIM_MMHG",
        low: 95,
        high: 165,
    },
    Vital {
        code: "150022",
        name: "MDC_PRESS_BLD_NONINV_DIA",
        unit_code: "266016",
        unit: "MDC_DIM_MMHG",
        low: 50,
        high: 95,
    },
    Vital {
        code: "150023",
        name: "MDC_PRESS_BLD_NONINV_MEAN",
        unit_code: "266016",
        unit: "MDC_DIM_MMHG",
        low: 65,
        high: 115,
    },
];

/// Makes HL7 v2 messages. See the module doc.
#[derive(Debug, Clone)]
pub struct Hl7Generator {
    /// xorshift64* state.
    rng: u64,
    /// Messages made so far; the control id's counter.
    counter: u64,
    /// Control id prefix.
    prefix: String,
    /// MSH-3 of every message.
    sending_application: String,
    /// MSH-4 of every message.
    sending_facility: String,
    /// Time of the first message; each later one is a second after.
    start: SystemTime,
}

impl Hl7Generator {
    /// A generator seeded with `seed`, starting now. The control id prefix
    /// is `SIM<seed>-`.
    pub fn new(seed: u64) -> Hl7Generator {
        Hl7Generator {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            counter: 0,
            prefix: format!("SIM{seed}-"),
            sending_application: "MONITOR".into(),
            sending_facility: "WARD7".into(),
            start: SystemTime::now(),
        }
    }

    /// Use `application` and `facility` as MSH-3 and MSH-4.
    pub fn with_sender(mut self, application: &str, facility: &str) -> Hl7Generator {
        self.sending_application = application.into();
        self.sending_facility = facility.into();
        self
    }

    /// Use `prefix` before the counter in control ids.
    pub fn with_prefix(mut self, prefix: &str) -> Hl7Generator {
        self.prefix = prefix.into();
        self
    }

    /// Stamp the first message at `start` (for reproducible output).
    pub fn with_start(mut self, start: SystemTime) -> Hl7Generator {
        self.start = start;
        self
    }

    /// The control id the next message will carry.
    pub fn next_control_id(&self) -> String {
        format!("{}{}", self.prefix, self.counter + 1)
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: tiny, fast and good enough for invented data.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, low: u32, high: u32) -> u32 {
        low + (self.next_u64() % u64::from(high - low + 1)) as u32
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next_u64() % from.len() as u64) as usize]
    }

    /// MSH for the next message; advances the counter.
    fn msh(&mut self, out: &mut String, message_type: &str, version: &str, ack_types: &str) {
        self.counter += 1;
        let at = timestamp(self.start + Duration::from_secs(self.counter));
        let _ = write!(
            out,
            "MSH|^~\\&|{}|{}|WARDLINK|HOSP|{at}||{message_type}|{}{}|P|{version}{ack_types}\r",
            self.sending_application, self.sending_facility, self.prefix, self.counter,
        );
    }

    /// A patient: PID and PV1 for a bed.
    fn patient(&mut self, out: &mut String, class: &str, prior: bool) {
        let mrn = self.between(100_000, 999_999);
        let family = self.pick(FAMILY);
        let given = self.pick(GIVEN);
        let year = self.between(1935, 2005);
        let month = self.between(1, 12);
        let day = self.between(1, 28);
        let sex = if self.next_u64().is_multiple_of(2) {
            "F"
        } else {
            "M"
        };
        let ward = self.pick(WARDS);
        let room = self.between(1, 40);
        let bed = ["A", "B"][(self.next_u64() % 2) as usize];
        let visit = self.between(1_000_000, 9_999_999);
        let _ = write!(
            out,
            "PID|1||{mrn}^^^HOSP^MR||{family}^{given}^^^^^L||{year}{month:02}{day:02}|{sex}|||{}  MAIN ST^^SPRINGFIELD^^{}^^H||555{:07}\r",
            self.between(1, 999),
            self.between(10_000, 99_999),
            self.between(0, 9_999_999),
        );
        let _ = write!(out, "PV1|1|{class}|{ward}^{room:03}^{bed}^HOSP");
        if prior {
            let from = self.pick(WARDS);
            let _ = write!(out, "|||{from}^{:03}^A^HOSP", self.between(1, 40));
        } else {
            out.push_str("|||");
        }
        let _ = write!(out, "|||||||||||||{visit}\r");
    }

    /// An ORU^R01 with vital signs, about 1 KB, IHE PCD-01 style (MSH-15
    /// `NE`, MSH-16 `AL`: one immediate `AA` expected).
    pub fn oru_vitals(&mut self) -> Vec<u8> {
        let mut m = String::with_capacity(1280);
        self.msh(&mut m, "ORU^R01^ORU_R01", "2.6", "|||NE|AL||UNICODE UTF-8");
        self.patient(&mut m, "I", false);
        let at = timestamp(self.start + Duration::from_secs(self.counter));
        let order = self.between(10_000, 99_999);
        let _ = write!(
            m,
            "OBR|1|{order}^MONITOR|{order}^WARDLINK|182777000^monitoring of patient^SCT|||{at}\r"
        );
        for (i, v) in VITALS.iter().enumerate() {
            let value = self.between(v.low, v.high);
            let _ = write!(
                m,
                "OBX|{}|NM|{}^{}^MDC|1.1.1.{}|{value}|{}^{}^MDC|||||R|||{at}||||0123456789ABCDEF^EUI-64\r",
                i + 1,
                v.code,
                v.name,
                i + 1,
                v.unit_code,
                v.unit,
            );
        }
        m.into_bytes()
    }

    /// An ADT^A01/A02/A03 (v2.5.1, original acknowledgement mode).
    pub fn adt(&mut self, event: AdtEvent) -> Vec<u8> {
        let mut m = String::with_capacity(512);
        let code = event.code();
        self.msh(&mut m, &format!("ADT^{code}^ADT_A01"), "2.5.1", "");
        let at = timestamp(self.start + Duration::from_secs(self.counter));
        let _ = write!(m, "EVN|{code}|{at}||||{at}\r");
        self.patient(&mut m, "I", event == AdtEvent::A02);
        m.into_bytes()
    }

    /// The next message of a realistic mix: mostly vitals, now and then an
    /// admission, transfer or discharge.
    pub fn next_message(&mut self) -> Vec<u8> {
        match self.next_u64() % 20 {
            0 => self.adt(AdtEvent::A01),
            1 => self.adt(AdtEvent::A02),
            2 => self.adt(AdtEvent::A03),
            _ => self.oru_vitals(),
        }
    }
}

/// `at` as an HL7 timestamp, `YYYYMMDDHHMMSS+0000`.
pub fn timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    //! Generated messages are well-formed, unique and about the right size.
    #![expect(clippy::unwrap_used, reason = "tests fail loudly on a wrong shape")]

    use super::*;
    use crate::hl7::read_header;

    #[test]
    fn oru_is_about_a_kilobyte_and_readable() {
        let mut g = Hl7Generator::new(7);
        let m = g.oru_vitals();
        assert!((900..=1400).contains(&m.len()), "{} bytes", m.len());
        let msh = read_header(&m).unwrap();
        assert_eq!(msh.message_code(), b"ORU");
        assert_eq!(msh.trigger(), b"R01");
        assert_eq!(msh.control_id(), b"SIM7-1");
        let text = String::from_utf8(m).unwrap();
        assert_eq!(text.matches("\rOBX|").count(), VITALS.len());
        assert!(text.contains("MDC_ECG_HEART_RATE"));
        assert!(text.split('\r').all(|s| !s.contains('\n')));
    }

    #[test]
    fn adt_events() {
        let mut g = Hl7Generator::new(1).with_sender("ADT", "HIS");
        for (event, code) in [
            (AdtEvent::A01, "A01"),
            (AdtEvent::A02, "A02"),
            (AdtEvent::A03, "A03"),
        ] {
            let m = g.adt(event);
            let msh = read_header(&m).unwrap();
            assert_eq!(msh.message_code(), b"ADT");
            assert_eq!(msh.trigger(), code.as_bytes());
            assert_eq!(msh.field(3), b"ADT");
            let text = String::from_utf8(m).unwrap();
            assert!(text.contains("\rPID|1||"));
            assert!(text.contains("\rPV1|1|I|"));
        }
    }

    #[test]
    fn control_ids_are_unique() {
        let mut g = Hl7Generator::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let expected = g.next_control_id();
            let m = g.next_message();
            let id = read_header(&m).unwrap().control_id().to_vec();
            assert_eq!(id, expected.as_bytes());
            assert!(seen.insert(id));
        }
    }
}
