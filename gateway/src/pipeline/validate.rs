//! Validation rules: the catalogue ([`RULES`]) and the checks that fire them.
//!
//! Design:
//! - **One catalogue.** Every rule has a stable code, a severity and a line
//!   of meaning here; `docs/validation-rules.md` is the same list for
//!   people, and a test keeps the two in step.
//! - **Issues never carry identifying values**: a message names the field
//!   and the rule, and at most a clinical number, code or unit.
//! - **Fatal means quarantine.** Only a message the pipeline cannot act on
//!   (no MSH, unusable delimiters, no type or control id, a required segment
//!   missing) is fatal; everything else lowers the quality score
//!   ([`quality`]) and travels with the events.

use wardlink_sync::{Issue, Severity};

use super::hl7::{Message, Precision, Ts};

/// One validation rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Stable code.
    pub code: &'static str,
    /// Severity of its issues.
    pub severity: Severity,
    /// What it means.
    pub meaning: &'static str,
}

use Severity::{Error as E, Fatal as F, Info as I, Warning as W};

/// Every rule, in documentation order.
pub const RULES: &[Rule] = &[
    Rule { code: "HL7_NO_MSH", severity: F, meaning: "no MSH segment: not an HL7 v2 message" },
    Rule { code: "HL7_BAD_DELIMITERS", severity: F, meaning: "MSH-1/MSH-2 missing, not punctuation, repeated or more than 5 encoding characters" },
    Rule { code: "MSH9_MISSING", severity: F, meaning: "MSH-9 message type (code) is empty" },
    Rule { code: "MSH10_MISSING", severity: F, meaning: "MSH-10 message control id is empty" },
    Rule { code: "SEGMENT_REQUIRED_MISSING", severity: F, meaning: "a segment required by the trigger is missing (ADT: PID and PV1, A40: PID and MRG; ORU^R01: OBX)" },
    Rule { code: "MSH12_INVALID", severity: W, meaning: "MSH-12 version is empty or not 2.x" },
    Rule { code: "TRIGGER_UNKNOWN", severity: W, meaning: "MSH-9 trigger is empty or not a known event for the message code" },
    Rule { code: "SEGMENT_ORDER", severity: W, meaning: "segments out of order: PV1 before PID, OBX before any OBR, or PID after OBX" },
    Rule { code: "SEGMENT_ID_INVALID", severity: W, meaning: "a line does not start with a 3-character segment id (upper-case letter, then letters/digits)" },
    Rule { code: "CONTENT_BEFORE_MSH", severity: I, meaning: "non-empty lines before MSH that are not batch headers (FHS/BHS) were ignored" },
    Rule { code: "CHARSET_FALLBACK", severity: W, meaning: "the bytes are not valid UTF-8; decoded as ISO-8859-1/-15 or Windows-1252" },
    Rule { code: "CHARSET_UNSUPPORTED", severity: W, meaning: "MSH-18 names a character set other than ASCII, 8859/1, 8859/15 or UTF-8" },
    Rule { code: "ESCAPE_INVALID", severity: I, meaning: "a malformed or unterminated escape sequence was kept literally" },
    Rule { code: "MSH7_INVALID", severity: E, meaning: "MSH-7 message time is empty or not a valid HL7 timestamp" },
    Rule { code: "TS_INVALID", severity: E, meaning: "a timestamp field (EVN-2/6, PID-7/29, PV1-44/45, OBR-7, OBX-14) is not a valid HL7 timestamp" },
    Rule { code: "TS_FUTURE", severity: E, meaning: "a timestamp is later than the receive time plus max_future_skew" },
    Rule { code: "TS_TOO_OLD", severity: W, meaning: "a timestamp is earlier than the receive time minus max_age" },
    Rule { code: "TS_NO_ZONE", severity: I, meaning: "a timestamp has no zone offset; it is taken as sender-local and checked with 14 h slack" },
    Rule { code: "OBX_CODE_MISSING", severity: E, meaning: "OBX-3 observation identifier is empty: the row cannot become an observation" },
    Rule { code: "OBX_VALUE_TYPE_UNKNOWN", severity: W, meaning: "OBX-2 is not a value type of HL7 table 0125" },
    Rule { code: "NM_NOT_NUMERIC", severity: E, meaning: "OBX-2 is NM but OBX-5 is not a number (kept as missing, not zero)" },
    Rule { code: "UNIT_MISSING", severity: W, meaning: "a numeric value of a known code has no unit (OBX-6)" },
    Rule { code: "UNIT_UNEXPECTED", severity: W, meaning: "the unit is not one expected for the code (e.g. SpO2 not in %)" },
    Rule { code: "VALUE_IMPLAUSIBLE", severity: E, meaning: "a value is outside the physiological range for its code (e.g. SpO2 0–100 %, heart rate 0–350 /min)" },
    Rule { code: "OBX_SUB_ID_DUPLICATE", severity: W, meaning: "OBX-4 repeats within one order (OBR) group (IHE PCD requires unique sub-ids)" },
    Rule { code: "RESULT_STATUS_INVALID", severity: W, meaning: "OBX-11 is not in HL7 table 0085" },
    Rule { code: "ABNORMAL_FLAG_INVALID", severity: I, meaning: "OBX-8 has a flag not in HL7 table 0078" },
    Rule { code: "PATIENT_CLASS_INVALID", severity: W, meaning: "PV1-2 is not in HL7 table 0004" },
    Rule { code: "SEX_INVALID", severity: I, meaning: "PID-8 is not in HL7 table 0001" },
    Rule { code: "PATIENT_ID_MISSING", severity: W, meaning: "an ADT message has no usable patient identifier in PID-2/3/4: no patient pseudonym" },
    Rule { code: "ENCOUNTER_MISSING", severity: W, meaning: "an ADT message has no visit number (PV1-19) and no admit time to key the stay" },
    Rule { code: "ENCOUNTER_UNKNOWN", severity: W, meaning: "an A02 transfer refers to an encounter this gateway has never seen" },
    Rule { code: "AADHAAR_INVALID", severity: E, meaning: "an identifier typed or shaped as Aadhaar is not 12 digits starting 2–9 with a valid Verhoeff check digit" },
    Rule { code: "ABHA_INVALID", severity: E, meaning: "an identifier typed as ABHA is neither a 14-digit ABHA number (2-4-4-4) nor a valid ABHA address (handle@abdm / @sbx)" },
    Rule { code: "PIN_INVALID", severity: W, meaning: "PID-11.5 of an Indian address is not a 6-digit PIN starting 1–9" },
    Rule { code: "DOB_IN_FUTURE", severity: E, meaning: "PID-7 birth date is after the event time" },
    Rule { code: "READING_INVALID", severity: F, meaning: "a stored device reading is not a reading document (JSON of the reading contract)" },
    Rule { code: "READING_UNDECODABLE", severity: F, meaning: "the source could not decode the device payload (bad JSON, JSON pointer missing, not a number …); the reason is the driver's" },
    Rule { code: "READING_EMPTY", severity: F, meaning: "a device reading has no value with a code and no alarm" },
];

/// The rule for a code (codes are compile-time constants, so a miss is a bug
/// that the catalogue test catches; it degrades to an error-severity rule).
pub fn rule(code: &str) -> Rule {
    RULES
        .iter()
        .copied()
        .find(|r| r.code == code)
        .unwrap_or(Rule {
            code: "INTERNAL",
            severity: E,
            meaning: "unknown rule",
        })
}

/// Builds an issue for a rule.
pub fn issue(code: &'static str, field: Option<String>, message: impl Into<String>) -> Issue {
    Issue {
        code: code.to_owned(),
        severity: rule(code).severity,
        field,
        message: message.into(),
    }
}

/// Quality score: `max(0, 100 − 20·errors − 5·warnings − 1·infos)`, and 0
/// with any fatal issue.
pub fn quality<'i>(issues: impl IntoIterator<Item = &'i Issue>) -> u8 {
    let mut penalty: u32 = 0;
    for i in issues {
        penalty += match i.severity {
            Severity::Fatal => return 0,
            Severity::Error => 20,
            Severity::Warning => 5,
            Severity::Info => 1,
        };
    }
    100u32.saturating_sub(penalty) as u8
}

/// Known triggers per message code (for TRIGGER_UNKNOWN).
pub fn trigger_known(code: &str, trigger: &str) -> bool {
    match code {
        "ADT" => {
            let b = trigger.as_bytes();
            b.len() == 3
                && b[0] == b'A'
                && trigger[1..]
                    .parse::<u8>()
                    .is_ok_and(|n| (1..=62).contains(&n))
        }
        "ORU" => matches!(trigger, "R01" | "R30" | "R31" | "R32" | "R40" | "W01"),
        "ORM" => trigger == "O01",
        "OML" => matches!(trigger, "O21" | "O33" | "O35"),
        "ORL" => matches!(trigger, "O22" | "O34" | "O36"),
        "SIU" => trigger.starts_with('S'),
        "MDM" => trigger.starts_with('T'),
        "ACK" => true,
        "DFT" => matches!(trigger, "P03" | "P11"),
        "BAR" => trigger.starts_with('P'),
        "RDE" | "RDS" | "RAS" => trigger.starts_with('O'),
        "VXU" => trigger == "V04",
        "QRY" | "QBP" | "RSP" | "MFN" => !trigger.is_empty(),
        _ => !trigger.is_empty(),
    }
}

/// ADT triggers whose events this pipeline models with PID and PV1.
pub fn adt_requires_pv1(trigger: &str) -> bool {
    !matches!(
        trigger,
        "A20"
            | "A34"
            | "A35"
            | "A36"
            | "A39"
            | "A40"
            | "A41"
            | "A42"
            | "A46"
            | "A47"
            | "A48"
            | "A49"
            | "A24"
            | "A37"
            | "A31"
            | "A28"
            | "A29"
            | "A30"
            | "A43"
            | "A44"
            | "A45"
            | "A50"
            | "A51"
            | "A60"
            | "A61"
            | "A62"
    )
}

fn valid_segment_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Structure checks over the whole message (MSH fields, segment ids, order,
/// required segments). Pushes issues; the caller quarantines on a fatal one.
pub fn structure(msg: &Message<'_>, issues: &mut Vec<Issue>) {
    let msh = msg.msh();
    let code = msh.field(9).comp(1).raw().trim_ascii();
    let trigger = msh.field(9).comp(2).raw().trim_ascii();
    if code.is_empty() {
        issues.push(issue(
            "MSH9_MISSING",
            Some("MSH-9".into()),
            "message type is empty",
        ));
    }
    if msh.field(10).raw().trim_ascii().is_empty() {
        issues.push(issue(
            "MSH10_MISSING",
            Some("MSH-10".into()),
            "message control id is empty",
        ));
    }
    let version = msh.field(12).comp(1).raw().trim_ascii();
    let version_ok = version
        .strip_prefix("2.")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit() || c == b'.'));
    if !version_ok {
        issues.push(issue(
            "MSH12_INVALID",
            Some("MSH-12".into()),
            "version is empty or not 2.x",
        ));
    }
    if !code.is_empty() && !trigger_known(code, trigger) {
        issues.push(issue(
            "TRIGGER_UNKNOWN",
            Some("MSH-9.2".into()),
            format!(
                "trigger {:?} is not known for {}",
                short(trigger),
                short(code)
            ),
        ));
    }
    if msg.leading_junk {
        issues.push(issue(
            "CONTENT_BEFORE_MSH",
            None,
            "lines before MSH were ignored",
        ));
    }
    let mut seen_pid = false;
    let mut seen_pv1 = false;
    let mut seen_obr = false;
    let mut seen_obx = false;
    let mut seen_mrg = false;
    let mut order_reported = false;
    let mut bad_id_reported = false;
    for seg in msg.segments().skip(1) {
        let id = seg.id();
        if !valid_segment_id(id) && !bad_id_reported {
            bad_id_reported = true;
            issues.push(issue(
                "SEGMENT_ID_INVALID",
                Some(format!("segment {}", seg.index() + 1)),
                "line does not start with a segment id",
            ));
        }
        let out_of_order = match id {
            "PID" => {
                let bad = seen_obx && code != "ORU";
                seen_pid = true;
                bad || (seen_obx && code == "ORU" && !seen_obr)
            }
            "PV1" => {
                seen_pv1 = true;
                !seen_pid && code == "ADT"
            }
            "OBR" => {
                seen_obr = true;
                false
            }
            "OBX" => {
                seen_obx = true;
                code == "ORU" && !seen_obr
            }
            "MRG" => {
                seen_mrg = true;
                false
            }
            _ => false,
        };
        if out_of_order && !order_reported {
            order_reported = true;
            issues.push(issue(
                "SEGMENT_ORDER",
                Some(id.to_owned()),
                format!("{id} is out of order"),
            ));
        }
    }
    let missing: Option<&str> = match (code, trigger) {
        ("ADT", "A40" | "A34" | "A35" | "A36" | "A39" | "A41" | "A42") => {
            if !seen_pid {
                Some("PID")
            } else if !seen_mrg {
                Some("MRG")
            } else {
                None
            }
        }
        ("ADT", "A20") => None,
        ("ADT", t) => {
            if !seen_pid {
                Some("PID")
            } else if !seen_pv1 && adt_requires_pv1(t) {
                Some("PV1")
            } else {
                None
            }
        }
        ("ORU", "R01") if !seen_obx => Some("OBX"),
        _ => None,
    };
    if let Some(seg) = missing {
        issues.push(issue(
            "SEGMENT_REQUIRED_MISSING",
            Some(seg.to_owned()),
            format!(
                "{} {} requires a {seg} segment",
                short(code),
                short(trigger)
            ),
        ));
    }
    // Escapes: only look when the message uses its escape character at all.
    if let Some(esc) = msg.delimiters().escape.filter(|e| msg.uses_byte(*e)) {
        'outer: for seg in msg.segments() {
            for n in 3..=seg.field_count() {
                let raw = seg.field(n).raw();
                if raw.as_bytes().contains(&esc) && super::hl7::unescape(raw, msg.delimiters()).1 {
                    issues.push(issue(
                        "ESCAPE_INVALID",
                        Some(format!("{}-{n}", seg.id())),
                        "malformed escape sequence kept literally",
                    ));
                    break 'outer;
                }
            }
        }
    }
}

/// Clips a code-ish string for messages (never used on identifying fields).
pub fn short(s: &str) -> &str {
    let end = s.char_indices().nth(12).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// Settings that timestamp checks need.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    /// Receive time, epoch seconds.
    pub received: i64,
    /// Allowed future skew, seconds.
    pub future_skew: i64,
    /// Maximum age, seconds.
    pub max_age: i64,
}

/// Slack for timestamps without a zone (the widest UTC offset).
const NO_ZONE_SLACK: i64 = 14 * 3600;

/// Parses and checks one timestamp field. `code_invalid` is the rule for an
/// unparseable value (`MSH7_INVALID` or `TS_INVALID`). Returns the parsed
/// value when valid.
pub fn timestamp(
    raw: &str,
    field: impl Fn() -> String,
    code_invalid: &'static str,
    limits: &TimeLimits,
    check_age: bool,
    issues: &mut Vec<Issue>,
) -> Option<Ts> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw == "\"\"" {
        if code_invalid == "MSH7_INVALID" {
            issues.push(issue(code_invalid, Some(field()), "message time is empty"));
        }
        return None;
    }
    let Some(ts) = Ts::parse(raw) else {
        issues.push(issue(
            code_invalid,
            Some(field()),
            "not a valid HL7 timestamp",
        ));
        return None;
    };
    let slack = if ts.precision < Precision::Hour {
        // A date: its day may start or end up to a day and a zone away.
        NO_ZONE_SLACK + 86_400
    } else if ts.offset_min.is_none() {
        if !issues.iter().any(|i| i.code == "TS_NO_ZONE") {
            issues.push(issue(
                "TS_NO_ZONE",
                Some(field()),
                "timestamp without zone offset",
            ));
        }
        NO_ZONE_SLACK
    } else {
        0
    };
    let t = ts.epoch_seconds();
    if t > limits
        .received
        .saturating_add(limits.future_skew)
        .saturating_add(slack)
    {
        issues.push(issue(
            "TS_FUTURE",
            Some(field()),
            "timestamp is in the future beyond the allowed skew",
        ));
    } else if check_age
        && t < limits
            .received
            .saturating_sub(limits.max_age)
            .saturating_sub(slack)
    {
        issues.push(issue(
            "TS_TOO_OLD",
            Some(field()),
            "timestamp is older than the allowed age",
        ));
    }
    Some(ts)
}

/// HL7 table 0125 value types.
pub fn value_type_known(vt: &str) -> bool {
    matches!(
        vt,
        "AD" | "CE"
            | "CF"
            | "CK"
            | "CN"
            | "CNE"
            | "CP"
            | "CWE"
            | "CX"
            | "DR"
            | "DT"
            | "DTM"
            | "ED"
            | "FT"
            | "ID"
            | "IS"
            | "MA"
            | "MO"
            | "NA"
            | "NM"
            | "PN"
            | "RP"
            | "SN"
            | "ST"
            | "TM"
            | "TN"
            | "TS"
            | "TX"
            | "XAD"
            | "XCN"
            | "XON"
            | "XPN"
            | "XTN"
    )
}

/// HL7 table 0085 result statuses.
pub fn result_status_known(s: &str) -> bool {
    matches!(
        s,
        "C" | "D" | "F" | "I" | "N" | "O" | "P" | "R" | "S" | "U" | "W" | "X"
    )
}

/// HL7 table 0078 abnormal flags.
pub fn abnormal_flag_known(s: &str) -> bool {
    matches!(
        s,
        "L" | "H"
            | "LL"
            | "HH"
            | "<"
            | ">"
            | "N"
            | "A"
            | "AA"
            | "U"
            | "D"
            | "B"
            | "W"
            | "S"
            | "R"
            | "I"
            | "MS"
            | "VS"
            | "NEG"
            | "POS"
            | "QCF"
            | "TOX"
            | "LU"
            | "HU"
            | "NR"
            | "RR"
            | "IND"
            | "SDD"
            | "SYN-R"
            | "SYN-S"
            | "E"
            | "EX"
            | "AC"
            | "NCL"
    )
}

/// HL7 table 0004 patient classes.
pub fn patient_class_known(s: &str) -> bool {
    matches!(s, "B" | "C" | "E" | "I" | "N" | "O" | "P" | "R" | "U")
}

/// HL7 table 0001 administrative sex.
pub fn sex_known(s: &str) -> bool {
    matches!(s, "F" | "M" | "O" | "U" | "A" | "N" | "X")
}

/// Expected units and a plausible range for a known code.
#[derive(Debug, Clone, Copy)]
pub struct Vital {
    /// The code (MDC context-free or LOINC).
    pub code: &'static str,
    /// A short name for messages.
    pub name: &'static str,
    /// (UCUM unit, min, max) for each acceptable unit.
    pub units: &'static [(&'static str, f64, f64)],
}

const BPM: &[(&str, f64, f64)] = &[("/min", 0.0, 350.0)];
const PCT: &[(&str, f64, f64)] = &[("%", 0.0, 100.0)];
const MMHG: &[(&str, f64, f64)] = &[("mm[Hg]", 0.0, 300.0), ("kPa", 0.0, 40.0)];
const RESP: &[(&str, f64, f64)] = &[("/min", 0.0, 150.0)];
const TEMP: &[(&str, f64, f64)] = &[("Cel", 25.0, 45.0), ("[degF]", 77.0, 113.0)];
const CMH2O: &[(&str, f64, f64)] = &[
    ("cm[H2O]", 0.0, 120.0),
    ("mbar", 0.0, 120.0),
    ("hPa", 0.0, 120.0),
];
const TV: &[(&str, f64, f64)] = &[("mL", 0.0, 3000.0), ("L", 0.0, 3.0)];
const MV: &[(&str, f64, f64)] = &[("L/min", 0.0, 60.0), ("mL/min", 0.0, 60000.0)];
const CO2: &[(&str, f64, f64)] = &[("mm[Hg]", 0.0, 150.0), ("kPa", 0.0, 20.0), ("%", 0.0, 20.0)];
const WEIGHT: &[(&str, f64, f64)] = &[("kg", 0.0, 500.0), ("g", 0.0, 500_000.0)];
const CVP: &[(&str, f64, f64)] = &[("mm[Hg]", -10.0, 50.0), ("cm[H2O]", -15.0, 70.0)];

/// The vital-sign and ventilator codes with plausibility ranges (ihe-pcd01.md §3),
/// sorted by code (a test checks) for binary search.
pub const VITALS: &[Vital] = &[
    Vital {
        code: "147842",
        name: "heart rate (ECG)",
        units: BPM,
    },
    Vital {
        code: "149522",
        name: "pulse rate (invasive BP)",
        units: BPM,
    },
    Vital {
        code: "149530",
        name: "pulse rate (oximeter)",
        units: BPM,
    },
    Vital {
        code: "149546",
        name: "pulse rate (NIBP)",
        units: BPM,
    },
    Vital {
        code: "150021",
        name: "NIBP systolic",
        units: MMHG,
    },
    Vital {
        code: "150022",
        name: "NIBP diastolic",
        units: MMHG,
    },
    Vital {
        code: "150023",
        name: "NIBP mean",
        units: MMHG,
    },
    Vital {
        code: "150033",
        name: "arterial systolic",
        units: MMHG,
    },
    Vital {
        code: "150034",
        name: "arterial diastolic",
        units: MMHG,
    },
    Vital {
        code: "150035",
        name: "arterial mean",
        units: MMHG,
    },
    Vital {
        code: "150037",
        name: "ABP systolic",
        units: MMHG,
    },
    Vital {
        code: "150038",
        name: "ABP diastolic",
        units: MMHG,
    },
    Vital {
        code: "150039",
        name: "ABP mean",
        units: MMHG,
    },
    Vital {
        code: "150087",
        name: "CVP mean",
        units: CVP,
    },
    Vital {
        code: "150301",
        name: "cuff systolic",
        units: MMHG,
    },
    Vital {
        code: "150302",
        name: "cuff diastolic",
        units: MMHG,
    },
    Vital {
        code: "150303",
        name: "cuff mean",
        units: MMHG,
    },
    Vital {
        code: "150344",
        name: "temperature",
        units: TEMP,
    },
    Vital {
        code: "150364",
        name: "body temperature",
        units: TEMP,
    },
    Vital {
        code: "150456",
        name: "SpO2",
        units: PCT,
    },
    Vital {
        code: "150488",
        name: "perfusion index",
        units: PCT,
    },
    Vital {
        code: "151562",
        name: "respiration rate",
        units: RESP,
    },
    Vital {
        code: "151586",
        name: "ventilation rate",
        units: RESP,
    },
    Vital {
        code: "151708",
        name: "etCO2 concentration",
        units: CO2,
    },
    Vital {
        code: "151728",
        name: "etCO2",
        units: CO2,
    },
    Vital {
        code: "151784",
        name: "plateau pressure",
        units: CMH2O,
    },
    Vital {
        code: "151804",
        name: "PEEP",
        units: CMH2O,
    },
    Vital {
        code: "151808",
        name: "intrinsic PEEP",
        units: CMH2O,
    },
    Vital {
        code: "151817",
        name: "peak inspiratory pressure",
        units: CMH2O,
    },
    Vital {
        code: "151819",
        name: "mean airway pressure",
        units: CMH2O,
    },
    Vital {
        code: "151868",
        name: "tidal volume (expired)",
        units: TV,
    },
    Vital {
        code: "151880",
        name: "minute volume",
        units: MV,
    },
    Vital {
        code: "151884",
        name: "expired minute volume",
        units: MV,
    },
    Vital {
        code: "151908",
        name: "airway O2",
        units: PCT,
    },
    Vital {
        code: "151973",
        name: "peak airway pressure",
        units: CMH2O,
    },
    Vital {
        code: "151975",
        name: "mean airway pressure (vent)",
        units: CMH2O,
    },
    Vital {
        code: "151976",
        name: "PEEP (applied)",
        units: CMH2O,
    },
    Vital {
        code: "151980",
        name: "tidal volume (delivered)",
        units: TV,
    },
    Vital {
        code: "152008",
        name: "ventilator minute volume",
        units: MV,
    },
    Vital {
        code: "152196",
        name: "FiO2",
        units: PCT,
    },
    Vital {
        code: "152424",
        name: "plateau pressure (vent)",
        units: CMH2O,
    },
    Vital {
        code: "152490",
        name: "total breath rate",
        units: RESP,
    },
    Vital {
        code: "152498",
        name: "spontaneous breath rate",
        units: RESP,
    },
    Vital {
        code: "152788",
        name: "total PEEP",
        units: CMH2O,
    },
    Vital {
        code: "188496",
        name: "axillary temperature",
        units: TEMP,
    },
    Vital {
        code: "188736",
        name: "body weight",
        units: WEIGHT,
    },
    Vital {
        code: "2708-6",
        name: "SaO2",
        units: PCT,
    },
    Vital {
        code: "29463-7",
        name: "body weight",
        units: WEIGHT,
    },
    Vital {
        code: "59408-5",
        name: "SpO2",
        units: PCT,
    },
    Vital {
        code: "8310-5",
        name: "body temperature",
        units: TEMP,
    },
    Vital {
        code: "8462-4",
        name: "diastolic BP",
        units: MMHG,
    },
    Vital {
        code: "8480-6",
        name: "systolic BP",
        units: MMHG,
    },
    Vital {
        code: "8867-4",
        name: "heart rate",
        units: BPM,
    },
    Vital {
        code: "9279-1",
        name: "respiration rate",
        units: RESP,
    },
];

/// The vital entry for a code, if it is one of [`VITALS`].
pub fn vital(code: &str) -> Option<&'static Vital> {
    VITALS
        .binary_search_by(|v| v.code.cmp(code))
        .ok()
        .and_then(|i| VITALS.get(i))
}

/// Checks a numeric value of a known code against its units and range;
/// `field(n)` names OBX-n of the row (built only when an issue is raised).
pub fn check_value(
    v: &Vital,
    value: f64,
    unit: Option<&str>,
    field: impl Fn(usize) -> String,
    issues: &mut Vec<Issue>,
) {
    let Some(unit) = unit else {
        issues.push(issue(
            "UNIT_MISSING",
            Some(field(6)),
            format!("no unit for {}", v.name),
        ));
        return;
    };
    match v.units.iter().find(|(u, _, _)| *u == unit) {
        None => issues.push(issue(
            "UNIT_UNEXPECTED",
            Some(field(6)),
            format!("unit {} is not expected for {}", short(unit), v.name),
        )),
        Some((_, lo, hi)) => {
            if value < *lo || value > *hi {
                issues.push(issue(
                    "VALUE_IMPLAUSIBLE",
                    Some(field(5)),
                    format!("{} {value} {unit} is outside {lo}–{hi}", v.name),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_twenty_rules_with_unique_codes() {
        assert!(RULES.len() >= 20);
        let mut codes: Vec<_> = RULES.iter().map(|r| r.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RULES.len());
    }

    #[test]
    fn vitals_sorted_for_binary_search() {
        assert!(VITALS.windows(2).all(|w| w[0].code < w[1].code));
        assert_eq!(vital("150456").map(|v| v.name), Some("SpO2"));
        assert!(vital("999999").is_none());
    }

    #[test]
    fn quality_formula() {
        let e = issue("TS_INVALID", None, "");
        let w = issue("UNIT_MISSING", None, "");
        let i = issue("TS_NO_ZONE", None, "");
        let f = issue("MSH10_MISSING", None, "");
        assert_eq!(quality([]), 100);
        assert_eq!(quality([&e, &w, &i]), 74);
        assert_eq!(quality([&e, &e, &e, &e, &e, &e]), 0);
        assert_eq!(quality([&w, &f]), 0);
    }
}
