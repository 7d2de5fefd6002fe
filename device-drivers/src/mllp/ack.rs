//! HL7 v2 acknowledgements: building the answer a sender waits for.
//!
//! This module owns the bytes of every answer wardlink sends on an MLLP
//! connection: the HL7 ACK message (MSH, MSA, optional ERR) and the MLLP R2
//! commit blocks. It is pure: it appends to a `BytesMut` and never does I/O.
//!
//! Rules (hl7v2-mllp.md §3, "Building a correct ACK"):
//! - The ACK uses the received message's delimiters (MSH-1, MSH-2 copied as
//!   received, including v2.7's 5th character).
//! - MSH-3/4 ← received MSH-5/6 and MSH-5/6 ← received MSH-3/4, copied raw.
//! - MSH-7 is now, in UTC (`YYYYMMDDHHMMSS+0000`).
//! - MSH-9 is `ACK^<trigger>^ACK` from v2.3.1 on (`ACK` before, or when the
//!   received message has no trigger).
//! - MSH-10 is a new id: a per-process prefix and a counter
//!   ([`next_control_id`]), alphanumeric only so it never collides with a
//!   sender's custom delimiters, at most 20 characters (the ST length of
//!   MSH-10 before v2.7).
//! - MSH-11, MSH-12 and MSH-18 are copied.
//! - **MSA-2 is exactly the received MSH-10, raw**: escape sequences in it
//!   stay as the sender wrote them, so the sender's correlation always
//!   matches.
//! - Errors go in ERR in the v2.5 layout (ERR-2 location, ERR-3 table 0357
//!   code, ERR-4 severity, ERR-7/8 text); before v2.5 the location and code
//!   go in ERR-1 and the text in MSA-3. Text we write is escaped (`\F\`,
//!   `\S\`, ...) against the message's delimiters.
//!
//! Which codes: [`AckPlan`] reads MSH-15/16. wardlink's rule (architecture.md
//! "Commit") picks accept, error or reject: accept once custody is taken,
//! error for a header wardlink cannot act on, reject for anything unrelated
//! to content (store full, too large, shutting down, sender not allowed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::hl7::{Delimiters, ErrorCode, ErrorLocation, Msh, Version};
use crate::mllp::codec::{CARRIAGE_RETURN, COMMIT_ACK, COMMIT_NAK, END_BLOCK, START_BLOCK};

/// MLLP R2 positive commit acknowledgement block (`SB ACK EB CR`).
pub const COMMIT_ACK_BLOCK: [u8; 4] = [START_BLOCK, COMMIT_ACK, END_BLOCK, CARRIAGE_RETURN];
/// MLLP R2 negative commit acknowledgement block (`SB NAK EB CR`).
pub const COMMIT_NAK_BLOCK: [u8; 4] = [START_BLOCK, COMMIT_NAK, END_BLOCK, CARRIAGE_RETURN];

/// HL7 segment terminator.
const SEGMENT_END: u8 = b'\r';

/// The first version whose ACK names the trigger in MSH-9 (`ACK^A01^ACK`).
const V2_3_1: Version = Version::new(2, 3, 1);
/// The first version with the ERR-2..ERR-8 layout.
const V2_5: Version = Version::new(2, 5, 0);

/// The outcome an ACK reports, independent of the acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Custody taken: `AA` / `CA`.
    Accept,
    /// The message (its header) cannot be acted on: `AE` / `CE`.
    Error,
    /// Refused for a reason unrelated to content; retry later: `AR` / `CR`.
    Reject,
}

/// Which acknowledgement an answer is (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Original mode, or the application ack of enhanced mode: `AA`/`AE`/`AR`.
    Application,
    /// Enhanced mode's accept (commit) ack: `CA`/`CE`/`CR`.
    Commit,
}

impl AckCode {
    /// MSA-1 for this code at `level`.
    pub fn msa1(self, level: AckLevel) -> &'static [u8; 2] {
        match (level, self) {
            (AckLevel::Application, AckCode::Accept) => b"AA",
            (AckLevel::Application, AckCode::Error) => b"AE",
            (AckLevel::Application, AckCode::Reject) => b"AR",
            (AckLevel::Commit, AckCode::Accept) => b"CA",
            (AckLevel::Commit, AckCode::Error) => b"CE",
            (AckLevel::Commit, AckCode::Reject) => b"CR",
        }
    }
}

/// What a message's MSH-15/16 ask for (hl7v2-mllp.md §3).
///
/// Design — one answer per frame, always:
/// - MSH-15 and MSH-16 both empty: original mode, one `AA`/`AE`/`AR`.
/// - MSH-15 `AL`, `ER`, `SU` (or any value but `NE`): enhanced mode, the
///   answer is the accept ack `CA`/`CE`/`CR`. We send it whatever the
///   condition, so a sender is never left waiting; one that asked only for
///   errors (`ER`) correlates by MSA-2 and drops it. If MSH-16 is `AL` or
///   `SU`, an application ack `AA` follows on the same connection once the
///   message is stored (wardlink's application processing of a stored
///   message cannot fail it back to the sender: the ACK means custody).
/// - MSH-15 `NE` or empty with MSH-16 set: the sender wants no accept ack,
///   only the application ack, and IHE PCD-01 senders (MSH-15 `NE`, MSH-16
///   `AL`) expect an immediate `AA` (§3): one `AA`/`AE`/`AR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPlan {
    /// The level of the one answer every frame gets.
    pub level: AckLevel,
    /// Whether an application ack (`AA`) follows a positive commit ack.
    pub application_ack_after: bool,
}

impl AckPlan {
    /// Original mode: one `AA`/`AE`/`AR`.
    pub const ORIGINAL: AckPlan = AckPlan {
        level: AckLevel::Application,
        application_ack_after: false,
    };

    /// The plan for a received message.
    pub fn for_message(msh: &Msh<'_>) -> AckPlan {
        let accept = trim(msh.accept_ack_type());
        let application = trim(msh.application_ack_type());
        if accept.is_empty() || accept == b"NE" {
            return AckPlan::ORIGINAL;
        }
        AckPlan {
            level: AckLevel::Commit,
            application_ack_after: matches!(application, b"AL" | b"SU"),
        }
    }
}

fn trim(raw: &[u8]) -> &[u8] {
    raw.trim_ascii()
}

/// Severity in ERR-4 (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `E`: error; the message was not taken.
    Error,
    /// `W`: warning.
    Warning,
    /// `I`: information.
    Information,
}

impl Severity {
    fn as_byte(self) -> u8 {
        match self {
            Severity::Error => b'E',
            Severity::Warning => b'W',
            Severity::Information => b'I',
        }
    }
}

/// The content of an ERR segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrDetail<'t> {
    /// Table 0357 code (ERR-3, or ERR-1.4 before v2.5).
    pub code: ErrorCode,
    /// Where (ERR-2, or ERR-1.1..3 before v2.5).
    pub location: ErrorLocation,
    /// ERR-4.
    pub severity: Severity,
    /// What happened and what the sender should do, in plain words
    /// (ERR-7 and ERR-8; MSA-3 before v2.5). Escaped when written.
    pub text: &'t str,
}

impl<'t> ErrDetail<'t> {
    /// A refusal unrelated to content (store full or failing, too large,
    /// shutting down, sender not allowed): code 207 at `MSH^1`.
    pub fn refusal(text: &'t str) -> ErrDetail<'t> {
        ErrDetail {
            code: ErrorCode::ApplicationInternal,
            location: ErrorLocation::msh(None),
            severity: Severity::Error,
            text,
        }
    }

    /// An unusable header, located where [`crate::hl7::HeaderError`] says.
    pub fn header(error: &crate::hl7::HeaderError, text: &'t str) -> ErrDetail<'t> {
        ErrDetail {
            code: error.code(),
            location: error.location(),
            severity: Severity::Error,
            text,
        }
    }
}

/// Append an HL7 ACK answering `received` to `out` (no MLLP framing).
///
/// `received` is `None` when the message has no usable MSH: the answer then
/// has a minimal MSH with the standard delimiters, version 2.5, and an
/// empty MSA-2, so the sender is not left waiting.
pub fn write_ack(
    out: &mut BytesMut,
    received: Option<&Msh<'_>>,
    level: AckLevel,
    code: AckCode,
    err: Option<&ErrDetail<'_>>,
) {
    let text_len = err.map_or(0, |e| e.text.len());
    match received {
        Some(msh) => {
            out.reserve(
                160 + msh.field(3).len()
                    + msh.field(4).len()
                    + msh.field(5).len()
                    + msh.field(6).len()
                    + msh.trigger().len()
                    + msh.control_id().len()
                    + msh.field(18).len()
                    + 3 * 2 * text_len,
            );
            let d = msh.delimiters();
            // Unknown or missing version: answer in the current layout.
            let version = msh.version().unwrap_or(V2_5);
            let fs = d.field;
            out.put_slice(b"MSH");
            out.put_u8(fs);
            out.put_slice(msh.encoding_characters());
            for n in [5, 6, 3, 4] {
                out.put_u8(fs);
                out.put_slice(msh.field(n));
            }
            out.put_u8(fs);
            put_timestamp(out, SystemTime::now());
            out.put_u8(fs); // MSH-8 security
            out.put_u8(fs);
            out.put_slice(b"ACK");
            let trigger = msh.trigger();
            if version >= V2_3_1 && !trigger.is_empty() {
                out.put_u8(d.component);
                out.put_slice(trigger);
                out.put_u8(d.component);
                out.put_slice(b"ACK");
            }
            out.put_u8(fs);
            next_control_id(out);
            out.put_u8(fs);
            out.put_slice(or(msh.field(11), b"P"));
            out.put_u8(fs);
            out.put_slice(or(msh.field(12), b"2.5"));
            let charset = msh.field(18);
            if !charset.is_empty() {
                out.put_slice(&[fs; 6]); // MSH-13..MSH-17 empty, then MSH-18
                out.put_slice(charset);
            }
            out.put_u8(SEGMENT_END);
            put_msa_err(out, &d, version, level, code, msh.control_id(), err);
        }
        None => {
            out.reserve(96 + 3 * 2 * text_len);
            let d = Delimiters::default();
            out.put_slice(b"MSH|^~\\&|||||");
            put_timestamp(out, SystemTime::now());
            out.put_slice(b"||ACK|");
            next_control_id(out);
            out.put_slice(b"|P|2.5");
            out.put_u8(SEGMENT_END);
            put_msa_err(out, &d, V2_5, level, code, b"", err);
        }
    }
}

/// A convenience around [`write_ack`]: the ACK as its own buffer.
pub fn ack(
    received: Option<&Msh<'_>>,
    level: AckLevel,
    code: AckCode,
    err: Option<&ErrDetail<'_>>,
) -> Bytes {
    let mut out = BytesMut::new();
    write_ack(&mut out, received, level, code, err);
    out.freeze()
}

fn or<'a>(value: &'a [u8], default: &'a [u8]) -> &'a [u8] {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// MSA and, when there is an error, ERR.
fn put_msa_err(
    out: &mut BytesMut,
    d: &Delimiters,
    version: Version,
    level: AckLevel,
    code: AckCode,
    control_id: &[u8],
    err: Option<&ErrDetail<'_>>,
) {
    let fs = d.field;
    out.put_slice(b"MSA");
    out.put_u8(fs);
    out.put_slice(code.msa1(level));
    out.put_u8(fs);
    // MSA-2: the received MSH-10, raw — never unescaped or re-escaped.
    out.put_slice(control_id);
    let Some(err) = err else {
        out.put_u8(SEGMENT_END);
        return;
    };
    if version < V2_5 {
        // v2.3/2.4: MSA-3 text, ERR-1 = segment^sequence^field^code&text&HL70357.
        out.put_u8(fs);
        put_escaped(out, err.text, d);
        out.put_u8(SEGMENT_END);
        out.put_slice(b"ERR");
        out.put_u8(fs);
        put_location(out, &err.location, d);
        if err.location.field.is_none() {
            out.put_u8(d.component); // keep ERR-1.4 in place
        }
        out.put_u8(d.component);
        put_code(out, err.code, d.subcomponent, d);
        out.put_u8(SEGMENT_END);
        return;
    }
    out.put_u8(SEGMENT_END);
    // v2.5+: ERR||location|code^text^HL70357|severity|||text|text
    out.put_slice(b"ERR");
    out.put_u8(fs);
    out.put_u8(fs);
    put_location(out, &err.location, d);
    out.put_u8(fs);
    put_code(out, err.code, d.component, d);
    out.put_u8(fs);
    out.put_u8(err.severity.as_byte());
    out.put_slice(&[fs, fs, fs]); // ERR-5, ERR-6 empty
    put_escaped(out, err.text, d); // ERR-7 diagnostic information
    out.put_u8(fs);
    put_escaped(out, err.text, d); // ERR-8 user message
    out.put_u8(SEGMENT_END);
}

fn put_location(out: &mut BytesMut, at: &ErrorLocation, d: &Delimiters) {
    put_escaped(out, at.segment, d);
    out.put_u8(d.component);
    put_number(out, u64::from(at.sequence));
    if let Some(field) = at.field {
        out.put_u8(d.component);
        put_number(out, u64::from(field));
    }
}

/// `code<sep>text<sep>HL70357` (a CWE, or the CE inside ERR-1 before v2.5).
fn put_code(out: &mut BytesMut, code: ErrorCode, sep: u8, d: &Delimiters) {
    put_number(out, u64::from(code.code()));
    out.put_u8(sep);
    put_escaped(out, code.text(), d);
    out.put_u8(sep);
    out.put_slice(b"HL70357");
}

fn put_number(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Append `text` escaped for an HL7 text field (hl7v2-mllp.md §2): each
/// delimiter becomes its escape sequence; CR and LF (segment ends) and other
/// control bytes become spaces; non-ASCII becomes `?`, because the
/// message's charset (MSH-18) may not be UTF-8.
pub fn put_escaped(out: &mut BytesMut, text: &str, d: &Delimiters) {
    for &b in text.as_bytes() {
        let escape = if b == d.field {
            Some(b'F')
        } else if b == d.component {
            Some(b'S')
        } else if b == d.subcomponent {
            Some(b'T')
        } else if b == d.repetition {
            Some(b'R')
        } else if b == d.escape {
            Some(b'E')
        } else if Some(b) == d.truncation {
            Some(b'P')
        } else {
            None
        };
        match escape {
            Some(letter) => out.put_slice(&[d.escape, letter, d.escape]),
            None if b.is_ascii_control() => out.put_u8(b' '),
            None if !b.is_ascii() => {
                // One `?` per char, not per byte: skip continuation bytes.
                if b & 0xC0 != 0x80 {
                    out.put_u8(b'?');
                }
            }
            None => out.put_u8(b),
        }
    }
}

/// Append `at` as `YYYYMMDDHHMMSS+0000` (UTC).
fn put_timestamp(out: &mut BytesMut, at: SystemTime) {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let year = u16::try_from(t.year()).unwrap_or(0);
    let mut s = [0u8; 19];
    put_digits(&mut s[0..4], u32::from(year));
    put_digits(&mut s[4..6], u32::from(u8::from(t.month())));
    put_digits(&mut s[6..8], u32::from(t.day()));
    put_digits(&mut s[8..10], u32::from(t.hour()));
    put_digits(&mut s[10..12], u32::from(t.minute()));
    put_digits(&mut s[12..14], u32::from(t.second()));
    s[14..].copy_from_slice(b"+0000");
    out.put_slice(&s);
}

fn put_digits(slot: &mut [u8], mut n: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The per-process part of our control ids: the start time in milliseconds,
/// 8 base-36 digits (wraps every 89 years), so ids of two runs differ.
fn process_prefix() -> &'static [u8; 8] {
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut n = (ms % 36u128.pow(8)) as u64 ^ u64::from(std::process::id() % 36);
        let mut p = [b'0'; 8];
        for b in p.iter_mut().rev() {
            *b = BASE36[(n % 36) as usize];
            n /= 36;
        }
        p
    })
}

/// Append a new, process-unique control id for an answer's MSH-10: `W`,
/// the process prefix, and a counter in base 36. At most 20 characters
/// until the counter passes 36^11.
pub fn next_control_id(out: &mut BytesMut) {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    out.put_u8(b'W');
    out.put_slice(process_prefix());
    let mut digits = [0u8; 13];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = BASE36[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    //! ACK bytes: correlation, swaps, versions, modes and ERR layouts.
    #![expect(clippy::unwrap_used, reason = "tests fail loudly on a wrong shape")]

    use super::*;
    use crate::hl7::{read_header, HeaderError};

    fn segments(ack: &[u8]) -> Vec<Vec<&[u8]>> {
        assert_eq!(ack.last(), Some(&b'\r'), "every segment ends with CR");
        let fs = ack[3];
        ack[..ack.len() - 1]
            .split(|&b| b == b'\r')
            .map(|seg| seg.split(|&b| b == fs).collect())
            .collect()
    }

    const ADT: &[u8] =
        b"MSH|^~\\&|ADTSRC|HOSP|EDGEGW|WARD7|20240101120000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\rPID|1\r";

    #[test]
    fn positive_ack_swaps_and_copies() {
        let msh = read_header(ADT).unwrap();
        let a = ack(Some(&msh), AckLevel::Application, AckCode::Accept, None);
        let s = segments(&a);
        assert_eq!(s.len(), 2);
        let m = &s[0];
        assert_eq!(m[0], b"MSH");
        assert_eq!(m[1], b"^~\\&");
        assert_eq!(m[2], b"EDGEGW"); // MSH-3 ← MSH-5
        assert_eq!(m[3], b"WARD7"); // MSH-4 ← MSH-6
        assert_eq!(m[4], b"ADTSRC"); // MSH-5 ← MSH-3
        assert_eq!(m[5], b"HOSP"); // MSH-6 ← MSH-4
        assert_eq!(m[6].len(), 19);
        assert!(m[6].ends_with(b"+0000"));
        assert!(m[6][..14].iter().all(u8::is_ascii_digit));
        assert_eq!(m[8], b"ACK^A01^ACK");
        assert!(m[9].len() <= 20 && m[9].iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(m[10], b"P");
        assert_eq!(m[11], b"2.5.1");
        assert_eq!(m.len(), 12);
        assert_eq!(s[1], vec![&b"MSA"[..], b"AA", b"MSG00001"]);
        // The answer is itself a readable HL7 message.
        let back = read_header(&a).unwrap();
        assert_eq!(back.message_code(), b"ACK");
    }

    #[test]
    fn msa2_is_the_raw_control_id_even_when_escaped() {
        let m = b"MSH|^~\\&|A|B|C|D|x||ORU^R01|ID\\F\\7^X|P|2.5\r";
        let msh = read_header(m).unwrap();
        let a = ack(Some(&msh), AckLevel::Application, AckCode::Accept, None);
        assert_eq!(segments(&a)[1], vec![&b"MSA"[..], b"AA", b"ID\\F\\7^X"]);
        // Latin-1 bytes are copied, not re-encoded.
        let m = b"MSH|^~\\&|A|B|C|D|x||ORU^R01|\xE91|P|2.5\r";
        let a = ack(
            Some(&read_header(m).unwrap()),
            AckLevel::Application,
            AckCode::Accept,
            None,
        );
        assert_eq!(segments(&a)[1][2], b"\xE91");
    }

    #[test]
    fn ids_are_unique() {
        let msh = read_header(ADT).unwrap();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..1000 {
            let a = ack(Some(&msh), AckLevel::Application, AckCode::Accept, None);
            assert!(ids.insert(segments(&a)[0][9].to_vec()));
        }
    }

    #[test]
    fn version_and_charset_echo() {
        let m = b"MSH|^~\\&|A|B|C|D|x||ADT^A01|1|T|2.3||||||8859/1\r";
        let a = ack(
            Some(&read_header(m).unwrap()),
            AckLevel::Application,
            AckCode::Accept,
            None,
        );
        let s = segments(&a);
        assert_eq!(s[0][8], b"ACK"); // before 2.3.1: no trigger
        assert_eq!(s[0][10], b"T");
        assert_eq!(s[0][11], b"2.3");
        assert_eq!(s[0][17], b"8859/1");
        let m = b"MSH|^~\\&|A|B|C|D|x||ADT^A01|1|P|2.3.1\r";
        let a = ack(
            Some(&read_header(m).unwrap()),
            AckLevel::Application,
            AckCode::Accept,
            None,
        );
        assert_eq!(segments(&a)[0][8], b"ACK^A01^ACK");
    }

    #[test]
    fn custom_and_v27_delimiters_are_kept() {
        let m = b"MSH#$%*@!#A#B#C#D#x##ADT$A02#ID9#P#2.7\r";
        let msh = read_header(m).unwrap();
        let err = ErrDetail::refusal("store full: 50% | retry $later# now!");
        let a = ack(Some(&msh), AckLevel::Commit, AckCode::Reject, Some(&err));
        let s = segments(&a);
        assert_eq!(s[0][1], b"$%*@!");
        assert_eq!(s[0][8], b"ACK$A02$ACK");
        assert_eq!(s[1], vec![&b"MSA"[..], b"CR", b"ID9"]);
        assert_eq!(s[2][2], b"MSH$1");
        assert_eq!(s[2][3], b"207$Application internal error$HL70357");
        // `%` repetition, `$` component, `#` field, `!` truncation escaped.
        assert_eq!(s[2][7], b"store full: 50*R* | retry *S*later*F* now*P*");
    }

    #[test]
    fn enhanced_and_original_modes() {
        let plan = |m15: &str, m16: &str| {
            let m = format!("MSH|^~\\&|A|B|C|D|x||ORU^R01|1|P|2.6|||{m15}|{m16}\r");
            AckPlan::for_message(&read_header(m.as_bytes()).unwrap())
        };
        assert_eq!(plan("", ""), AckPlan::ORIGINAL);
        assert_eq!(
            plan("AL", "NE"),
            AckPlan {
                level: AckLevel::Commit,
                application_ack_after: false
            }
        );
        assert_eq!(
            plan("AL", "AL"),
            AckPlan {
                level: AckLevel::Commit,
                application_ack_after: true
            }
        );
        assert_eq!(plan("ER", "SU").level, AckLevel::Commit);
        assert!(plan("ER", "SU").application_ack_after);
        // IHE PCD-01: MSH-15 NE, MSH-16 AL expects one immediate AA.
        assert_eq!(plan("NE", "AL"), AckPlan::ORIGINAL);
        assert_eq!(plan("", "AL"), AckPlan::ORIGINAL);

        let msh = read_header(ADT).unwrap();
        for (level, code, msa1) in [
            (AckLevel::Application, AckCode::Accept, &b"AA"[..]),
            (AckLevel::Application, AckCode::Error, b"AE"),
            (AckLevel::Application, AckCode::Reject, b"AR"),
            (AckLevel::Commit, AckCode::Accept, b"CA"),
            (AckLevel::Commit, AckCode::Error, b"CE"),
            (AckLevel::Commit, AckCode::Reject, b"CR"),
        ] {
            assert_eq!(segments(&ack(Some(&msh), level, code, None))[1][1], msa1);
        }
    }

    #[test]
    fn err_layout_v25() {
        let m = b"MSH|^~\\&|A|B|C|D|x||ORU^R01||P|2.5.1\r";
        let e = read_header(m).unwrap_err();
        assert_eq!(e, HeaderError::MissingControlId);
        let msh = crate::hl7::Msh::read(m).unwrap();
        let text = e.to_string();
        let a = ack(
            Some(&msh),
            AckLevel::Application,
            AckCode::Error,
            Some(&ErrDetail::header(&e, &text)),
        );
        let s = segments(&a);
        assert_eq!(s[1], vec![&b"MSA"[..], b"AE", b""]);
        assert_eq!(
            s[2],
            vec![
                &b"ERR"[..],
                b"",
                b"MSH^1^10",
                b"101^Required field missing^HL70357",
                b"E",
                b"",
                b"",
                b"MSH-10 (message control id) is empty",
                b"MSH-10 (message control id) is empty",
            ]
        );
    }

    #[test]
    fn err_layout_before_v25() {
        let m = b"MSH|^~\\&|A|B|C|D|x|||ID5|P|2.3\r";
        let e = read_header(m).unwrap_err();
        let msh = crate::hl7::Msh::read(m).unwrap();
        let a = ack(
            Some(&msh),
            AckLevel::Application,
            AckCode::Error,
            Some(&ErrDetail::header(&e, "MSH-9 empty")),
        );
        let s = segments(&a);
        assert_eq!(s[1], vec![&b"MSA"[..], b"AE", b"ID5", b"MSH-9 empty"]);
        assert_eq!(
            s[2],
            vec![&b"ERR"[..], b"MSH^1^9^101&Required field missing&HL70357"]
        );
        // A segment-level location keeps the code in component 4.
        let a = ack(
            Some(&msh),
            AckLevel::Application,
            AckCode::Reject,
            Some(&ErrDetail::refusal("full")),
        );
        assert_eq!(
            segments(&a)[2][1],
            b"MSH^1^^207&Application internal error&HL70357"
        );
    }

    #[test]
    fn answer_without_msh() {
        let e = read_header(b"hello").unwrap_err();
        let text = e.to_string();
        let a = ack(
            None,
            AckLevel::Application,
            AckCode::Error,
            Some(&ErrDetail::header(&e, &text)),
        );
        let s = segments(&a);
        assert_eq!(s[0][1], b"^~\\&");
        assert_eq!(s[0][8], b"ACK");
        assert_eq!(s[0][11], b"2.5");
        assert_eq!(s[1], vec![&b"MSA"[..], b"AE", b""]);
        assert_eq!(s[2][2], b"MSH^1");
        assert_eq!(s[2][3], b"100^Segment sequence error^HL70357");
        assert_eq!(
            s[2][7],
            b"no MSH segment at the start of the message (found \"hel\")"
        );
    }

    #[test]
    fn escaping_text() {
        let mut out = BytesMut::new();
        put_escaped(&mut out, "a|b^c~d\\e&f\rg\nh é", &Delimiters::default());
        assert_eq!(&out[..], b"a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f g h ?");
    }

    #[test]
    fn commit_blocks() {
        assert_eq!(COMMIT_ACK_BLOCK, [0x0B, 0x06, 0x1C, 0x0D]);
        assert_eq!(COMMIT_NAK_BLOCK, [0x0B, 0x15, 0x1C, 0x0D]);
    }

    #[test]
    fn timestamps() {
        let mut out = BytesMut::new();
        put_timestamp(
            &mut out,
            UNIX_EPOCH + std::time::Duration::from_secs(1_704_110_405),
        );
        assert_eq!(&out[..], b"20240101120005+0000");
    }
}
