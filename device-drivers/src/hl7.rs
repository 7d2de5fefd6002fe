//! A cheap, byte-level reader for the HL7 v2 MSH segment.
//!
//! This module owns the part of HL7 v2 a source reads *before* the commit:
//! the delimiters and the few MSH fields needed to answer the sender (MSA-2,
//! the ACK's MSH), to recognise a resend (MSH-3, MSH-4, MSH-10) and to label
//! the stored row ([`Header`]). Full parsing and validation happen later, in
//! the gateway's pipeline, on the committed raw bytes.
//!
//! Invariants:
//! - **The raw bytes are never modified or copied.** [`Msh`] borrows the
//!   message; fields are sub-slices of it, escape sequences unresolved.
//! - **Delimiters come from the message itself** (hl7v2-mllp.md §2): MSH-1 is
//!   the byte after `MSH`, MSH-2 holds 4 encoding characters, or 5 from v2.7
//!   on (the 5th is the truncation character, commonly `#`). A reader that
//!   assumes 4 shifts every later field by one on a v2.7 message.
//! - **No UTF-8 requirement.** Fields are bytes; [`decode_text`] turns the few
//!   header strings into text as UTF-8 when valid, else as Latin-1 (one byte,
//!   one char), which never fails.
//! - **Any segment terminator**: CR, LF or CRLF ends the MSH segment
//!   (hl7v2-mllp.md §4, Mirth #53). Leading whitespace, NULs and a UTF-8 BOM
//!   before `MSH` are skipped.
//! - Numbering follows the standard: MSH-1 is the field separator, so MSH-n
//!   is the (n-1)th element after splitting the segment on it (§2, "numbering
//!   trap"); [`Msh::field`] takes the standard number.
//!
//! An unusable header is a [`HeaderError`] that says what is wrong and where
//! ([`HeaderError::location`], [`HeaderError::code`]), ready for an ERR
//! segment.

use std::borrow::Cow;
use std::fmt;

use crate::received::Header;

/// Segment terminator as the standard writes it.
const CR: u8 = b'\r';
/// Segment terminator some senders use instead (hl7v2-mllp.md §4).
const LF: u8 = b'\n';

/// The highest MSH field this reader keeps (MSH-21, message profile id).
const LAST_FIELD: usize = 21;
/// Fields kept: MSH-3 ..= MSH-21 (MSH-1 and MSH-2 are the delimiters).
const KEPT_FIELDS: usize = LAST_FIELD - 2;

/// The delimiters of one message, read from its MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: u8,
    /// MSH-2 position 1, usually `^`.
    pub component: u8,
    /// MSH-2 position 2, usually `~`.
    pub repetition: u8,
    /// MSH-2 position 3, usually `\`.
    pub escape: u8,
    /// MSH-2 position 4, usually `&`.
    pub subcomponent: u8,
    /// MSH-2 position 5 (v2.7 and later), usually `#`; `None` when MSH-2
    /// holds only 4 characters.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// The standard `|^~\&` set, used when a message has no usable MSH.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

/// An HL7 version from MSH-12 (`2.5.1` → 2, 5, 1), comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Always 2 for HL7 v2.
    pub major: u16,
    /// E.g. 5 in `2.5.1`.
    pub minor: u16,
    /// E.g. 1 in `2.5.1`; 0 when absent.
    pub patch: u16,
}

impl Version {
    /// Build a version from its parts.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parse `2`, `2.5` or `2.5.1` (surrounding spaces allowed). `None` for
    /// anything else.
    pub fn parse(raw: &[u8]) -> Option<Version> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// HL7 table 0357 (message error condition codes) — the subset wardlink
/// sends in ERR-3 (hl7v2-mllp.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 100: segment sequence error (e.g. the message does not start with MSH).
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (e.g. unusable encoding characters).
    DataType,
    /// 207: application internal error (store full or failing, too large,
    /// shutting down, sender not allowed: nothing the sender's content caused).
    ApplicationInternal,
}

impl ErrorCode {
    /// The numeric code of table 0357.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::ApplicationInternal => 207,
        }
    }

    /// The table's text for the code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::ApplicationInternal => "Application internal error",
        }
    }
}

/// Where an error is, as ERR-2 (v2.5+) or ERR-1 (before v2.5) write it:
/// `segment^sequence^field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLocation {
    /// Segment id, e.g. `MSH`.
    pub segment: &'static str,
    /// Which occurrence of the segment, from 1.
    pub sequence: u16,
    /// Field number, when the error is about one field.
    pub field: Option<u16>,
}

impl ErrorLocation {
    /// A location in the (first) MSH segment.
    pub const fn msh(field: Option<u16>) -> ErrorLocation {
        ErrorLocation {
            segment: "MSH",
            sequence: 1,
            field,
        }
    }
}

impl fmt::Display for ErrorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}^{}", self.segment, self.sequence)?;
        if let Some(field) = self.field {
            write!(f, "^{field}")?;
        }
        Ok(())
    }
}

/// Why a message's header cannot be used to take custody of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The message does not start with an MSH segment.
    #[error("no MSH segment at the start of the message (found {found:?})")]
    NoMsh {
        /// Up to the first 3 bytes found instead, escaped for display.
        found: String,
    },
    /// MSH-1 or MSH-2 does not hold usable delimiters.
    #[error("unusable encoding characters in MSH-{field}: {why}")]
    BadEncodingCharacters {
        /// 1 (field separator) or 2 (encoding characters).
        field: u16,
        /// What is wrong with them.
        why: &'static str,
    },
    /// MSH-9 (message type) is empty or has no message code.
    #[error("MSH-9 (message type) is empty")]
    MissingMessageType,
    /// MSH-10 (message control id) is empty: the sender could not correlate
    /// an answer, and a resend could not be recognised.
    #[error("MSH-10 (message control id) is empty")]
    MissingControlId,
}

impl HeaderError {
    /// Where the problem is, for ERR-2 (or ERR-1 before v2.5).
    pub fn location(&self) -> ErrorLocation {
        match self {
            HeaderError::NoMsh { .. } => ErrorLocation::msh(None),
            HeaderError::BadEncodingCharacters { field, .. } => ErrorLocation::msh(Some(*field)),
            HeaderError::MissingMessageType => ErrorLocation::msh(Some(9)),
            HeaderError::MissingControlId => ErrorLocation::msh(Some(10)),
        }
    }

    /// The table 0357 code for ERR-3.
    pub fn code(&self) -> ErrorCode {
        match self {
            HeaderError::NoMsh { .. } => ErrorCode::SegmentSequence,
            HeaderError::BadEncodingCharacters { .. } => ErrorCode::DataType,
            HeaderError::MissingMessageType | HeaderError::MissingControlId => {
                ErrorCode::RequiredFieldMissing
            }
        }
    }
}

/// The MSH segment of one message, borrowed from the raw bytes.
///
/// Built by [`Msh::read`], which checks only the structure (MSH present,
/// delimiters usable); [`Msh::require_usable`] checks the fields wardlink
/// needs to take custody (MSH-9, MSH-10). [`read_header`] does both.
#[derive(Debug, Clone, Copy)]
pub struct Msh<'a> {
    /// The delimiters read from MSH-1 and MSH-2.
    delimiters: Delimiters,
    /// MSH-2 exactly as received (4 or 5 bytes).
    encoding: &'a [u8],
    /// MSH-3 ..= MSH-21, raw; empty when absent.
    fields: [&'a [u8]; KEPT_FIELDS],
}

/// Read the MSH of `message` and check that it names a message type and a
/// control id: [`Msh::read`] then [`Msh::require_usable`].
///
/// # Errors
/// A [`HeaderError`] saying what is unusable and where.
pub fn read_header(message: &[u8]) -> Result<Msh<'_>, HeaderError> {
    let msh = Msh::read(message)?;
    msh.require_usable()?;
    Ok(msh)
}

/// Is `b` allowed as a delimiter? HL7 leaves the choice to the sender; we
/// accept any printable, non-alphanumeric ASCII byte. Letters and digits
/// would make field contents ambiguous, and control bytes collide with
/// segment terminators and MLLP framing.
fn is_delimiter(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

/// Skip what some senders put before `MSH`: whitespace (including stray CR
/// and LF, Mirth #510), NUL padding and a UTF-8 byte order mark.
fn skip_leading(message: &[u8]) -> &[u8] {
    let mut rest = message;
    loop {
        match rest {
            [0xEF, 0xBB, 0xBF, tail @ ..] => rest = tail,
            [b, tail @ ..] if b.is_ascii_whitespace() || *b == 0 => rest = tail,
            _ => return rest,
        }
    }
}

impl<'a> Msh<'a> {
    /// Read the MSH segment at the start of `message`.
    ///
    /// Checks the structure only: the segment is there and MSH-1/MSH-2 hold
    /// usable delimiters (4 characters, or 5 from v2.7). Required fields are
    /// checked by [`Msh::require_usable`], so that an answer to a message
    /// with, say, no MSH-9 can still echo its MSH-10 and sender.
    ///
    /// # Errors
    /// [`HeaderError::NoMsh`] or [`HeaderError::BadEncodingCharacters`].
    pub fn read(message: &'a [u8]) -> Result<Msh<'a>, HeaderError> {
        let rest = skip_leading(message);
        if !rest.starts_with(b"MSH") {
            let found = rest.get(..3).unwrap_or(rest);
            return Err(HeaderError::NoMsh {
                found: found.escape_ascii().to_string(),
            });
        }
        let end = memchr::memchr2(CR, LF, rest).unwrap_or(rest.len());
        let segment = &rest[..end];

        // MSH-1: the byte right after "MSH".
        let Some(&field_sep) = segment.get(3) else {
            return Err(HeaderError::BadEncodingCharacters {
                field: 1,
                why: "the segment ends before the field separator",
            });
        };
        if !is_delimiter(field_sep) {
            return Err(HeaderError::BadEncodingCharacters {
                field: 1,
                why: "the field separator is not a printable, non-alphanumeric character",
            });
        }

        // MSH-2: up to the next field separator. 4 characters, or 5 from
        // v2.7 on (the truncation character; hl7v2-mllp.md §2).
        let after = &segment[4..];
        let enc_len = memchr::memchr(field_sep, after).unwrap_or(after.len());
        let encoding = &after[..enc_len];
        if !(4..=5).contains(&encoding.len()) {
            return Err(HeaderError::BadEncodingCharacters {
                field: 2,
                why: "expected 4 encoding characters (5 from v2.7)",
            });
        }
        for (i, &b) in encoding.iter().enumerate() {
            if !is_delimiter(b) {
                return Err(HeaderError::BadEncodingCharacters {
                    field: 2,
                    why: "an encoding character is not a printable, non-alphanumeric character",
                });
            }
            if encoding[..i].contains(&b) {
                return Err(HeaderError::BadEncodingCharacters {
                    field: 2,
                    why: "the same character is used for two delimiters",
                });
            }
        }
        let delimiters = Delimiters {
            field: field_sep,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding[2],
            subcomponent: encoding[3],
            truncation: encoding.get(4).copied(),
        };

        // MSH-3 onwards. A missing trailing field is simply empty (§4:
        // "missing index = empty; never index-panic").
        let mut fields: [&'a [u8]; KEPT_FIELDS] = [&[]; KEPT_FIELDS];
        if enc_len < after.len() {
            let tail = &after[enc_len + 1..];
            for (slot, value) in fields.iter_mut().zip(tail.split(|&b| b == field_sep)) {
                *slot = value;
            }
        }
        Ok(Msh {
            delimiters,
            encoding,
            fields,
        })
    }

    /// Check the fields wardlink needs to take custody: MSH-9 with a message
    /// code and MSH-10.
    ///
    /// # Errors
    /// [`HeaderError::MissingMessageType`] or [`HeaderError::MissingControlId`].
    pub fn require_usable(&self) -> Result<(), HeaderError> {
        if is_blank(self.message_code()) {
            return Err(HeaderError::MissingMessageType);
        }
        if is_blank(self.control_id()) {
            return Err(HeaderError::MissingControlId);
        }
        Ok(())
    }

    /// The delimiters this message uses.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// MSH-2 exactly as received (4 or 5 bytes).
    pub fn encoding_characters(&self) -> &'a [u8] {
        self.encoding
    }

    /// MSH-`n` raw (escape sequences unresolved), empty when absent.
    /// `n` follows the standard numbering: 1 is the field separator, 2 the
    /// encoding characters, 3 the sending application, and so on up to 21.
    /// Fields past 21 are not kept and read as empty.
    pub fn field(&self, n: usize) -> &'a [u8] {
        match n {
            0 => &[],
            1 => &[],
            2 => self.encoding,
            _ => self.fields.get(n - 3).copied().unwrap_or(&[]),
        }
    }

    /// Component `c` (from 1) of MSH-`n`, raw; empty when absent.
    pub fn component(&self, n: usize, c: usize) -> &'a [u8] {
        if c == 0 {
            return &[];
        }
        self.field(n)
            .split(|&b| b == self.delimiters.component)
            .nth(c - 1)
            .unwrap_or(&[])
    }

    /// MSH-9.1, the message code (e.g. `ORU`).
    pub fn message_code(&self) -> &'a [u8] {
        self.component(9, 1)
    }

    /// MSH-9.2, the trigger event (e.g. `R01`).
    pub fn trigger(&self) -> &'a [u8] {
        self.component(9, 2)
    }

    /// MSH-9.3, the message structure (e.g. `ORU_R01`).
    pub fn structure(&self) -> &'a [u8] {
        self.component(9, 3)
    }

    /// MSH-10, the sender's message control id, raw. MSA-2 of every answer
    /// is exactly these bytes.
    pub fn control_id(&self) -> &'a [u8] {
        self.field(10)
    }

    /// MSH-12.1 parsed, when it is a version number.
    pub fn version(&self) -> Option<Version> {
        Version::parse(self.component(12, 1))
    }

    /// MSH-15, accept acknowledgment type (table 0155), raw.
    pub fn accept_ack_type(&self) -> &'a [u8] {
        self.field(15)
    }

    /// MSH-16, application acknowledgment type (table 0155), raw.
    pub fn application_ack_type(&self) -> &'a [u8] {
        self.field(16)
    }

    /// MSH-`n` as text (see [`decode_text`]).
    pub fn text(&self, n: usize) -> Cow<'a, str> {
        decode_text(self.field(n))
    }

    /// What the store keeps beside the raw bytes. Strings are the raw
    /// fields as text (escape sequences unresolved); empty fields are `None`.
    pub fn to_header(&self) -> Header {
        let sender = match (self.field(3), self.field(4)) {
            (&[], &[]) => None,
            (app, facility) => {
                let mut s = String::with_capacity(app.len() + facility.len() + 1);
                s.push_str(&decode_text(app));
                s.push('^');
                s.push_str(&decode_text(facility));
                Some(s)
            }
        };
        Header {
            message_type: non_empty(self.message_code()),
            trigger: non_empty(self.trigger()),
            version: non_empty(self.component(12, 1)),
            control_id: non_empty(self.control_id()),
            sender,
            charset: non_empty(self.field(18)),
        }
    }

    /// The duplicate key: `MSH-3|MSH-4|MSH-10` (hl7v2-mllp.md §1 step 7),
    /// from the raw fields.
    pub fn dedup_key(&self) -> String {
        let (app, facility, id) = (self.field(3), self.field(4), self.control_id());
        let mut key = String::with_capacity(app.len() + facility.len() + id.len() + 2);
        key.push_str(&decode_text(app));
        key.push('|');
        key.push_str(&decode_text(facility));
        key.push('|');
        key.push_str(&decode_text(id));
        key
    }
}

/// Empty or only spaces: HL7 pads nothing, but some senders send `| |`.
fn is_blank(raw: &[u8]) -> bool {
    raw.iter().all(|&b| b == b' ')
}

fn non_empty(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        None
    } else {
        Some(decode_text(raw).into_owned())
    }
}

/// Bytes of a header field as text: UTF-8 when valid, else Latin-1 (each
/// byte is the char of the same number). hl7v2-mllp.md §2: declared and
/// actual charsets disagree in practice, so we never fail here.
pub fn decode_text(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(raw.iter().map(|&b| char::from(b)).collect()),
    }
}

#[cfg(test)]
mod tests {
    //! The MSH reader against terminators, delimiters, versions and bad headers.
    #![expect(clippy::unwrap_used, reason = "tests fail loudly on a wrong shape")]

    use super::*;

    const ORU: &[u8] = b"MSH|^~\\&|MON|ICU|WL|HOSP|20240101120000||ORU^R01^ORU_R01|MSG001|P|2.5.1|||AL|NE||UNICODE UTF-8\rPID|1||123\r";

    #[test]
    fn reads_the_usual_fields() {
        let msh = read_header(ORU).unwrap();
        assert_eq!(msh.delimiters(), Delimiters::default());
        assert_eq!(msh.field(3), b"MON");
        assert_eq!(msh.field(4), b"ICU");
        assert_eq!(msh.field(5), b"WL");
        assert_eq!(msh.field(6), b"HOSP");
        assert_eq!(msh.field(7), b"20240101120000");
        assert_eq!(msh.message_code(), b"ORU");
        assert_eq!(msh.trigger(), b"R01");
        assert_eq!(msh.structure(), b"ORU_R01");
        assert_eq!(msh.control_id(), b"MSG001");
        assert_eq!(msh.field(11), b"P");
        assert_eq!(msh.version(), Some(Version::new(2, 5, 1)));
        assert_eq!(msh.accept_ack_type(), b"AL");
        assert_eq!(msh.application_ack_type(), b"NE");
        assert_eq!(msh.field(18), b"UNICODE UTF-8");
        assert_eq!(msh.field(19), b"");
        assert_eq!(msh.field(40), b"");
        let h = msh.to_header();
        assert_eq!(h.message_type.as_deref(), Some("ORU"));
        assert_eq!(h.trigger.as_deref(), Some("R01"));
        assert_eq!(h.version.as_deref(), Some("2.5.1"));
        assert_eq!(h.control_id.as_deref(), Some("MSG001"));
        assert_eq!(h.sender.as_deref(), Some("MON^ICU"));
        assert_eq!(h.charset.as_deref(), Some("UNICODE UTF-8"));
        assert_eq!(msh.dedup_key(), "MON|ICU|MSG001");
    }

    #[test]
    fn any_segment_terminator_ends_msh() {
        for term in [&b"\r"[..], b"\n", b"\r\n"] {
            let mut m = b"MSH|^~\\&|A|B|C|D|x||ADT^A01|ID7|P|2.3".to_vec();
            m.extend_from_slice(term);
            m.extend_from_slice(b"EVN|A01");
            m.extend_from_slice(term);
            let msh = read_header(&m).unwrap();
            assert_eq!(msh.field(12), b"2.3", "terminator {term:?}");
            assert_eq!(msh.field(13), b"", "terminator {term:?}");
            assert_eq!(msh.control_id(), b"ID7");
        }
        // No terminator at all (a one-segment message).
        let msh = read_header(b"MSH|^~\\&|A|B|C|D|x||ADT^A01|ID7|P|2.3").unwrap();
        assert_eq!(msh.field(12), b"2.3");
    }

    #[test]
    fn custom_delimiters_are_read_from_the_message() {
        let m = b"MSH#$%*@#APP$X#FAC#R#F#2024##ADT$A02$ADT_A02#ID|9#P#2.4\rPID#1\r";
        let msh = read_header(m).unwrap();
        let d = msh.delimiters();
        assert_eq!(
            (d.field, d.component, d.repetition, d.escape, d.subcomponent),
            (b'#', b'$', b'%', b'*', b'@')
        );
        assert_eq!(d.truncation, None);
        assert_eq!(msh.field(3), b"APP$X");
        assert_eq!(msh.trigger(), b"A02");
        // `|` is ordinary data when it is not the field separator.
        assert_eq!(msh.control_id(), b"ID|9");
        assert_eq!(msh.version(), Some(Version::new(2, 4, 0)));
    }

    #[test]
    fn v27_truncation_character_does_not_shift_fields() {
        let m = b"MSH|^~\\&#|APP|FAC|R|F|20240101||ORU^R01^ORU_R01|X1|P|2.7\r";
        let msh = read_header(m).unwrap();
        assert_eq!(msh.delimiters().truncation, Some(b'#'));
        assert_eq!(msh.encoding_characters(), b"^~\\&#");
        assert_eq!(msh.field(3), b"APP");
        assert_eq!(msh.control_id(), b"X1");
        assert_eq!(msh.version(), Some(Version::new(2, 7, 0)));
    }

    #[test]
    fn leading_whitespace_and_bom_are_skipped() {
        let mut m = b"\r\n  \t\0".to_vec();
        m.extend_from_slice(ORU);
        assert_eq!(read_header(&m).unwrap().control_id(), b"MSG001");
        let mut m = vec![0xEF, 0xBB, 0xBF];
        m.extend_from_slice(ORU);
        assert_eq!(read_header(&m).unwrap().control_id(), b"MSG001");
    }

    #[test]
    fn latin1_bytes_decode_without_failing() {
        // 0xE9 is é in Latin-1 and invalid alone in UTF-8.
        let m = b"MSH|^~\\&|CAF\xE9|H\xF4P|R|F|x||ADT^A01|\xE9-1|P|2.5||||||8859/1\r";
        let msh = read_header(m).unwrap();
        assert_eq!(msh.control_id(), b"\xE9-1");
        let h = msh.to_header();
        assert_eq!(h.sender.as_deref(), Some("CAFé^HôP"));
        assert_eq!(h.control_id.as_deref(), Some("é-1"));
        assert_eq!(h.charset.as_deref(), Some("8859/1"));
        // UTF-8 stays UTF-8.
        assert_eq!(decode_text("Zürich".as_bytes()), "Zürich");
    }

    #[test]
    fn missing_msh9_and_msh10_are_located() {
        let e = read_header(b"MSH|^~\\&|A|B|C|D|x|||ID1|P|2.5\r").unwrap_err();
        assert_eq!(e, HeaderError::MissingMessageType);
        assert_eq!(e.location().to_string(), "MSH^1^9");
        assert_eq!(e.code().code(), 101);
        // A component but no message code is still missing.
        let e = read_header(b"MSH|^~\\&|A|B|C|D|x||^A01|ID1|P|2.5\r").unwrap_err();
        assert_eq!(e, HeaderError::MissingMessageType);

        let e = read_header(b"MSH|^~\\&|A|B|C|D|x||ADT^A01||P|2.5\r").unwrap_err();
        assert_eq!(e, HeaderError::MissingControlId);
        assert_eq!(e.location().to_string(), "MSH^1^10");
        // Truncated MSH: everything after MSH-2 is missing.
        let e = read_header(b"MSH|^~\\&\r").unwrap_err();
        assert_eq!(e, HeaderError::MissingMessageType);
        // The structural read still succeeds, so an answer can echo fields.
        let msh = Msh::read(b"MSH|^~\\&|A|B|C|D|x||ADT^A01||P|2.5\r").unwrap();
        assert_eq!(msh.field(3), b"A");
    }

    #[test]
    fn no_msh_and_bad_encoding_characters() {
        let e = read_header(b"PID|1||123\r").unwrap_err();
        assert_eq!(
            e,
            HeaderError::NoMsh {
                found: "PID".into()
            }
        );
        assert_eq!(e.location().to_string(), "MSH^1");
        assert_eq!(e.code().code(), 100);
        assert!(matches!(
            read_header(b"").unwrap_err(),
            HeaderError::NoMsh { .. }
        ));
        assert!(matches!(
            read_header(b"hello world").unwrap_err(),
            HeaderError::NoMsh { .. }
        ));
        for (m, field) in [
            (&b"MSH"[..], 1),
            (b"MSH\r", 1),
            (b"MSHA^~\\&|x", 1),
            (b"MSH|^~|A|B", 2),
            (b"MSH|^~\\&#!|A|B", 2),
            (b"MSH|^^\\&|A|B", 2),
            (b"MSH|^~a&|A|B", 2),
            (b"MSH|^~ &|A|B", 2),
        ] {
            match read_header(m) {
                Err(HeaderError::BadEncodingCharacters { field: f, .. }) => {
                    assert_eq!(f, field, "{}", m.escape_ascii());
                }
                other => panic!("{}: {other:?}", m.escape_ascii()),
            }
        }
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(Version::parse(b"2.3.1"), Some(Version::new(2, 3, 1)));
        assert_eq!(Version::parse(b"2.4"), Some(Version::new(2, 4, 0)));
        assert!(Version::parse(b"2.3").unwrap() < Version::new(2, 3, 1));
        assert_eq!(Version::parse(b"abc"), None);
        assert_eq!(Version::parse(b""), None);
        // MSH-12 is a VID: the version is its first component.
        let msh = read_header(b"MSH|^~\\&|A|B|C|D|x||ADT^A01|1|P|2.5^DEU\r").unwrap();
        assert_eq!(msh.version(), Some(Version::new(2, 5, 0)));
    }
}
