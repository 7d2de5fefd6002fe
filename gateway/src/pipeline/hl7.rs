//! A fast, lenient HL7 v2 (ER7) parser: bytes → [`Message`] of borrowed slices.
//!
//! Design:
//! - **Decode once, then borrow.** [`decode`] turns the stored bytes into text
//!   per MSH-18 (protocols/hl7v2-mllp.md §2, table 0211): valid UTF-8 is
//!   borrowed as is; anything else is decoded as ISO-8859-1 (declared
//!   `8859/1`), ISO-8859-15 (declared `8859/15`) or Windows-1252 (anything
//!   else), and the result records which was used. [`Message::parse`] then
//!   splits that text into segments and fields without copying.
//! - **Delimiters come from the message.** MSH-1 is the character after
//!   `MSH`; MSH-2 holds component, repetition, escape and subcomponent
//!   characters and, from v2.7, a fifth truncation character. Nothing is
//!   hard-coded, and because every delimiter must be ASCII, splitting a UTF-8
//!   string on them never cuts a multibyte character.
//! - **MSH numbering trap** (§2): MSH-1 *is* the separator, so the field list
//!   of MSH gets the separator inserted as field 1 and MSH-n is `field(n)` like
//!   every other segment.
//! - **Lenient.** Segments end at CR, LF or CRLF; blank lines are skipped; a
//!   missing field, repetition, component or subcomponent is the empty string;
//!   nothing here panics on any input (fuzz tests in `pipeline::tests`).
//! - **Unescape after splitting** (§2): [`Value::decoded`] resolves `\F\ \S\
//!   \T\ \R\ \E\ \Xhh..\` and the FT formatting escapes, borrowing when the
//!   value has no escape character.

use std::borrow::Cow;

/// Which character set the text was finally decoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (also covers plain ASCII).
    Utf8,
    /// ISO-8859-1 (Latin-1).
    Latin1,
    /// ISO-8859-15 (Latin-9).
    Latin9,
    /// Windows-1252 (a superset of Latin-1's printable range).
    Windows1252,
}

impl Charset {
    /// A short name for issues and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Latin9 => "ISO-8859-15",
            Charset::Windows1252 => "Windows-1252",
        }
    }
}

/// The declared character set (MSH-18), classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// Empty or `ASCII`.
    Ascii,
    /// `UNICODE UTF-8`, `UNICODE` (legacy, treated as UTF-8), `UTF-8`.
    Utf8,
    /// `8859/1`.
    Latin1,
    /// `8859/15`.
    Latin9,
    /// Another 8859 part, an ISO-2022 set, or anything unknown.
    Other,
}

/// Classifies an MSH-18 value.
pub fn classify_charset(value: &str) -> Declared {
    let v = value.trim_ascii();
    if v.is_empty() || v.eq_ignore_ascii_case("ASCII") {
        Declared::Ascii
    } else if v.eq_ignore_ascii_case("UNICODE UTF-8")
        || v.eq_ignore_ascii_case("UNICODE")
        || v.eq_ignore_ascii_case("UTF-8")
        || v.eq_ignore_ascii_case("UTF8")
    {
        Declared::Utf8
    } else if v == "8859/1" || v.eq_ignore_ascii_case("ISO-8859-1") {
        Declared::Latin1
    } else if v == "8859/15" || v.eq_ignore_ascii_case("ISO-8859-15") {
        Declared::Latin9
    } else {
        Declared::Other
    }
}

/// The text of a message and how it was obtained.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The message text (borrowed when the bytes were valid UTF-8).
    pub text: Cow<'a, str>,
    /// The charset actually used.
    pub used: Charset,
    /// The declared charset (MSH-18 or the source's hint).
    pub declared: Declared,
    /// True when the bytes were not valid UTF-8 and a single-byte fallback was used.
    pub fell_back: bool,
}

/// Reads MSH-18 straight from the bytes (delimiters are ASCII, so this works
/// before decoding). Returns `None` when there is no MSH line.
pub fn sniff_msh18(bytes: &[u8]) -> Option<&str> {
    let start = find_msh(bytes)?;
    let line = &bytes[start..];
    let end = line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let line = &line[..end];
    let sep = *line.get(3)?;
    // parts[0] = "MSH", parts[n-1] = MSH-n for n >= 2.
    let v = line.split(|&b| b == sep).nth(17)?;
    std::str::from_utf8(v).ok()
}

fn find_msh(bytes: &[u8]) -> Option<usize> {
    // "MSH" at the start of a line, or after leading junk (BOM, NUL, VT, blanks).
    bytes.windows(3).enumerate().find_map(|(i, w)| {
        let at_line_start = i == 0
            || matches!(
                bytes[i - 1],
                b'\r' | b'\n' | b'\0' | 0x0B | b' ' | b'\t' | 0xBF
            );
        (w == b"MSH" && at_line_start).then_some(i)
    })
}

/// Decodes raw message bytes: UTF-8 if valid, else a single-byte charset
/// chosen from the declaration. `hint` is MSH-18 as the source read it; when
/// absent, MSH-18 is read from the bytes.
pub fn decode<'a>(bytes: &'a [u8], hint: Option<&str>) -> Decoded<'a> {
    let declared = classify_charset(hint.or_else(|| sniff_msh18(bytes)).unwrap_or(""));
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(body) {
        Ok(s) => Decoded {
            text: Cow::Borrowed(s),
            used: Charset::Utf8,
            declared,
            fell_back: false,
        },
        Err(_) => {
            let used = match declared {
                Declared::Latin1 => Charset::Latin1,
                Declared::Latin9 => Charset::Latin9,
                _ => Charset::Windows1252,
            };
            Decoded {
                text: Cow::Owned(decode_single_byte(body, used)),
                used,
                declared,
                fell_back: true,
            }
        }
    }
}

/// Windows-1252's 0x80–0x9F (0 = undefined, kept as the C1 control).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

fn single_byte_char(b: u8, cs: Charset) -> char {
    let cp: u32 = match (cs, b) {
        (_, 0..=0x7F) => u32::from(b),
        (Charset::Windows1252, 0x80..=0x9F) => match CP1252_HIGH[usize::from(b - 0x80)] {
            0 => u32::from(b),
            c => u32::from(c),
        },
        (Charset::Latin9, 0xA4) => 0x20AC,
        (Charset::Latin9, 0xA6) => 0x0160,
        (Charset::Latin9, 0xA8) => 0x0161,
        (Charset::Latin9, 0xB4) => 0x017D,
        (Charset::Latin9, 0xB8) => 0x017E,
        (Charset::Latin9, 0xBC) => 0x0152,
        (Charset::Latin9, 0xBD) => 0x0153,
        (Charset::Latin9, 0xBE) => 0x0178,
        _ => u32::from(b),
    };
    char::from_u32(cp).unwrap_or('\u{FFFD}')
}

/// Decodes bytes in a single-byte charset (never fails).
pub fn decode_single_byte(bytes: &[u8], cs: Charset) -> String {
    let mut s = String::with_capacity(bytes.len() + bytes.len() / 8);
    for &b in bytes {
        s.push(single_byte_char(b, cs));
    }
    s
}

/// The delimiters of one message, from its MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: Option<u8>,
    /// Escape character, usually `\`.
    pub escape: Option<u8>,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: Option<u8>,
    /// Truncation character (v2.7+), usually `#`.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// The standard `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: b'|',
        component: b'^',
        repetition: Some(b'~'),
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
        truncation: None,
    };
}

/// Why a message could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No line starts with `MSH`.
    #[error("no MSH segment")]
    NoMsh,
    /// MSH-1/MSH-2 are missing or unusable.
    #[error("unusable delimiters in MSH-1/MSH-2: {why}")]
    BadDelimiters {
        /// What is wrong with them.
        why: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct SegSpan {
    start: u32,
    len: u32,
}

/// A parsed message: segments and fields as slices of the decoded text.
#[derive(Debug)]
pub struct Message<'a> {
    delims: Delimiters,
    segs: Vec<SegSpan>,
    /// All fields of all segments; a segment's slice starts with its id.
    fields: Vec<&'a str>,
    /// Non-empty lines before MSH that were not FHS/BHS headers.
    pub leading_junk: bool,
    /// MSH after MSH-2, and the text after MSH (for cheap whole-message
    /// byte checks).
    body: &'a str,
    rest_text: &'a str,
}

/// Non-empty lines, split at CR, LF or CRLF, with leading junk (BOM, NUL,
/// blanks, stray MLLP bytes) trimmed.
struct Lines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let b = self.rest.as_bytes();
            let end = b
                .iter()
                .position(|&c| c == b'\r' || c == b'\n')
                .unwrap_or(b.len());
            let line = self.rest.get(..end).unwrap_or("");
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            let line = line.trim_start_matches(['\u{feff}', '\0', ' ', '\t', '\u{0b}', '\u{1c}']);
            if !line.is_empty() {
                return Some(line);
            }
        }
    }
}

fn split_into<'a>(s: &'a str, sep: u8, out: &mut Vec<&'a str>) {
    let mut start = 0;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if c == sep {
            out.push(s.get(start..i).unwrap_or(""));
            start = i + 1;
        }
    }
    out.push(s.get(start..).unwrap_or(""));
}

fn delimiter_ok(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

impl<'a> Message<'a> {
    /// Parses message text.
    ///
    /// # Errors
    /// [`ParseError::NoMsh`] when no line starts with `MSH`;
    /// [`ParseError::BadDelimiters`] when MSH-1/MSH-2 are unusable.
    pub fn parse(text: &'a str) -> Result<Message<'a>, ParseError> {
        let mut lines = Lines { rest: text };
        let mut leading_junk = false;
        let msh = loop {
            match lines.next() {
                None => return Err(ParseError::NoMsh),
                Some(l) if l.starts_with("MSH") => break l,
                Some(l) => {
                    if !(l.starts_with("FHS") || l.starts_with("BHS")) {
                        leading_junk = true;
                    }
                }
            }
        };
        let bytes = msh.as_bytes();
        let Some(&field) = bytes.get(3) else {
            return Err(ParseError::BadDelimiters {
                why: "MSH-1 missing",
            });
        };
        if !delimiter_ok(field) {
            return Err(ParseError::BadDelimiters {
                why: "MSH-1 is not a punctuation character",
            });
        }
        let enc_end = bytes[4..]
            .iter()
            .position(|&b| b == field)
            .map_or(bytes.len(), |p| p + 4);
        let enc = &bytes[4..enc_end];
        if enc.is_empty() {
            return Err(ParseError::BadDelimiters {
                why: "MSH-2 is empty",
            });
        }
        if enc.len() > 5 {
            return Err(ParseError::BadDelimiters {
                why: "MSH-2 has more than 5 characters",
            });
        }
        for (i, &c) in enc.iter().enumerate() {
            if !delimiter_ok(c) || c == field || enc[..i].contains(&c) {
                return Err(ParseError::BadDelimiters {
                    why: "MSH-2 characters must be distinct punctuation",
                });
            }
        }
        let delims = Delimiters {
            field,
            component: enc[0],
            repetition: enc.get(1).copied(),
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
            truncation: enc.get(4).copied(),
        };
        let mut fields: Vec<&'a str> = Vec::with_capacity(text.len() / 5 + 16);
        let mut segs: Vec<SegSpan> = Vec::with_capacity(text.len() / 64 + 4);
        // MSH: id, MSH-1 (the separator itself), then MSH-2.. as split.
        fields.push(&msh[..3]);
        fields.push(&msh[3..4]);
        split_into(&msh[4..], field, &mut fields);
        segs.push(SegSpan {
            start: 0,
            len: fields.len() as u32,
        });
        // The rest in one pass: fields end at the separator, segments at
        // CR or LF; empty lines are skipped and leading junk trimmed.
        let rest = lines.rest;
        let rb = rest.as_bytes();
        let mut i = 0;
        while i < rb.len() {
            // Skip line ends and leading junk of the next line.
            while i < rb.len() && matches!(rb[i], b'\r' | b'\n' | 0 | b' ' | b'\t' | 0x0B | 0x1C) {
                i += 1;
            }
            if rest.get(i..).is_some_and(|r| r.starts_with('\u{feff}')) {
                i += 3;
                continue;
            }
            if i >= rb.len() {
                break;
            }
            let start = fields.len();
            let mut fstart = i;
            if rb[i..].starts_with(b"MSH") && i + 4 <= rb.len() && rest.is_char_boundary(i + 4) {
                // A second MSH (batch content): keep the numbering rule.
                fields.push(rest.get(i..i + 3).unwrap_or(""));
                fields.push(rest.get(i + 3..i + 4).unwrap_or(""));
                i += 4;
                fstart = i;
            }
            while i < rb.len() && rb[i] != b'\r' && rb[i] != b'\n' {
                if rb[i] == field {
                    fields.push(rest.get(fstart..i).unwrap_or(""));
                    fstart = i + 1;
                }
                i += 1;
            }
            fields.push(rest.get(fstart..i).unwrap_or(""));
            segs.push(SegSpan {
                start: start as u32,
                len: (fields.len() - start) as u32,
            });
        }
        Ok(Message {
            delims,
            segs,
            fields,
            leading_junk,
            body: msh.get(enc_end..).unwrap_or(""),
            rest_text: rest,
        })
    }

    /// True when `b` occurs in any field after MSH-2 (a cheap pre-check,
    /// e.g. "is there any escape sequence at all").
    pub fn uses_byte(&self, b: u8) -> bool {
        self.body.as_bytes().contains(&b) || self.rest_text.as_bytes().contains(&b)
    }

    /// The message's delimiters.
    pub fn delimiters(&self) -> Delimiters {
        self.delims
    }

    /// Number of segments (MSH included).
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// The segment at position `index` (0 = MSH).
    pub fn segment_at(&self, index: usize) -> Option<Segment<'_, 'a>> {
        (index < self.segs.len()).then_some(Segment { msg: self, index })
    }

    /// All segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        (0..self.segs.len()).map(move |index| Segment { msg: self, index })
    }

    /// The MSH segment (always present in a parsed message).
    pub fn msh(&self) -> Segment<'_, 'a> {
        Segment {
            msg: self,
            index: 0,
        }
    }

    /// The first segment with this id.
    pub fn first(&self, id: &str) -> Option<Segment<'_, 'a>> {
        self.segments().find(|s| s.id() == id)
    }
}

/// One segment of a [`Message`].
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m, 'a> {
    msg: &'m Message<'a>,
    index: usize,
}

impl<'m, 'a> Segment<'m, 'a> {
    fn slice(&self) -> &'m [&'a str] {
        let Some(span) = self.msg.segs.get(self.index) else {
            return &[];
        };
        let start = span.start as usize;
        self.msg
            .fields
            .get(start..start + span.len as usize)
            .unwrap_or(&[])
    }

    /// The segment id, e.g. `PID` (as written; may be malformed).
    pub fn id(&self) -> &'a str {
        self.slice().first().copied().unwrap_or("")
    }

    /// The position of this segment in the message (0 = MSH).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Highest field number present (0 when the segment is only its id).
    pub fn field_count(&self) -> usize {
        self.slice().len().saturating_sub(1)
    }

    /// Field `n` (1-based, so `PID-3` is `field(3)`); empty when absent.
    pub fn field(&self, n: usize) -> Value<'a> {
        let raw = if n == 0 {
            ""
        } else {
            self.slice().get(n).copied().unwrap_or("")
        };
        Value {
            raw,
            d: self.msg.delims,
        }
    }
}

/// A field, repetition, component or subcomponent: raw text plus the
/// delimiters needed to go one level down.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    raw: &'a str,
    d: Delimiters,
}

/// Splits on an optional ASCII separator without allocating (no separator:
/// the whole string once).
struct Pieces<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

impl<'a> Pieces<'a> {
    fn new(s: &'a str, sep: Option<u8>) -> Self {
        Pieces { rest: Some(s), sep }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let cut = self.sep.and_then(|sep| s.bytes().position(|b| b == sep));
        match cut {
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

fn nth_split(s: &str, sep: Option<u8>, n: usize) -> &str {
    // A plain byte loop: fields are short, so this beats a memchr-based
    // splitter, and `sep` is ASCII so every cut is a char boundary.
    let Some(sep) = sep else {
        return if n == 0 { s } else { "" };
    };
    let b = s.as_bytes();
    let mut start = 0;
    let mut idx = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == sep {
            if idx == n {
                return s.get(start..i).unwrap_or("");
            }
            idx += 1;
            start = i + 1;
        }
    }
    if idx == n {
        s.get(start..).unwrap_or("")
    } else {
        ""
    }
}

impl<'a> Value<'a> {
    /// Wraps a raw string with delimiters (for tests and callers that build values).
    pub fn new(raw: &'a str, d: Delimiters) -> Self {
        Value { raw, d }
    }

    /// The raw (still escaped) text.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True for the explicit HL7 null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// Repetition `i` (0-based).
    pub fn rep(&self, i: usize) -> Value<'a> {
        Value {
            raw: nth_split(self.raw, self.d.repetition, i),
            d: self.d,
        }
    }

    /// All repetitions (at least one, possibly empty).
    pub fn reps(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.d;
        Pieces::new(self.raw, d.repetition).map(move |raw| Value { raw, d })
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn comp(&self, n: usize) -> Value<'a> {
        // One pass: stop at the end of component n, or at the first
        // repetition separator (only the first repetition counts).
        let empty = Value { raw: "", d: self.d };
        if n == 0 {
            return empty;
        }
        let comp = self.d.component;
        let rep = self.d.repetition;
        let mut idx = 1;
        let mut start = 0;
        for (i, &c) in self.raw.as_bytes().iter().enumerate() {
            let is_rep = Some(c) == rep;
            if c == comp || is_rep {
                if idx == n {
                    return Value {
                        raw: self.raw.get(start..i).unwrap_or(""),
                        d: self.d,
                    };
                }
                if is_rep {
                    return empty;
                }
                idx += 1;
                start = i + 1;
            }
        }
        if idx == n {
            Value {
                raw: self.raw.get(start..).unwrap_or(""),
                d: self.d,
            }
        } else {
            empty
        }
    }

    /// The first `N` components of the first repetition in one pass
    /// (missing ones empty).
    pub fn comps_n<const N: usize>(&self) -> [Value<'a>; N] {
        let mut out = [Value { raw: "", d: self.d }; N];
        let comp = self.d.component;
        let rep = self.d.repetition;
        let mut idx = 0;
        let mut start = 0;
        let b = self.raw.as_bytes();
        let mut i = 0;
        while i <= b.len() && idx < N {
            let end = i == b.len();
            let c = if end { 0 } else { b[i] };
            let is_rep = !end && Some(c) == rep;
            if end || c == comp || is_rep {
                out[idx].raw = self.raw.get(start..i).unwrap_or("");
                idx += 1;
                start = i + 1;
                if end || is_rep {
                    break;
                }
            }
            i += 1;
        }
        out
    }

    /// Subcomponent `n` (1-based) of this value.
    pub fn sub(&self, n: usize) -> Value<'a> {
        if n == 0 {
            return Value { raw: "", d: self.d };
        }
        Value {
            raw: nth_split(self.raw, self.d.subcomponent, n - 1),
            d: self.d,
        }
    }

    /// The components of the first repetition.
    pub fn comps(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.d;
        let first = nth_split(self.raw, self.d.repetition, 0);
        Pieces::new(first, Some(d.component)).map(move |raw| Value { raw, d })
    }

    /// The subcomponents of this value.
    pub fn subs(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.d;
        Pieces::new(self.raw, d.subcomponent).map(move |raw| Value { raw, d })
    }

    /// The unescaped text (borrowed when there is nothing to unescape).
    pub fn decoded(&self) -> Cow<'a, str> {
        unescape(self.raw, self.d).0
    }

    /// The unescaped text, trimmed, as `None` when empty or the HL7 null.
    pub fn text(&self) -> Option<Cow<'a, str>> {
        if self.raw.is_empty() || self.is_null() {
            return None;
        }
        let d = self.decoded();
        let t = match d {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim_ascii()),
            Cow::Owned(s) => Cow::Owned(s.trim_ascii().to_owned()),
        };
        (!t.is_empty()).then_some(t)
    }
}

/// Unescapes an HL7 value. Returns the text and whether a malformed escape
/// was seen (kept literally).
pub fn unescape(raw: &str, d: Delimiters) -> (Cow<'_, str>, bool) {
    let Some(esc) = d.escape else {
        return (Cow::Borrowed(raw), false);
    };
    if !raw.as_bytes().contains(&esc) {
        return (Cow::Borrowed(raw), false);
    }
    let esc_c = char::from(esc);
    let mut out = String::with_capacity(raw.len());
    let mut bad = false;
    let mut rest = raw;
    while let Some(p) = rest.find(esc_c) {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let Some(end) = after.find(esc_c) else {
            // Unterminated: keep literally.
            bad = true;
            out.push_str(&rest[p..]);
            rest = "";
            break;
        };
        let seq = &after[..end];
        rest = &after[end + 1..];
        match seq {
            "F" => out.push(char::from(d.field)),
            "S" => out.push(char::from(d.component)),
            "T" => out.push(d.subcomponent.map_or('&', char::from)),
            "R" => out.push(d.repetition.map_or('~', char::from)),
            "E" => out.push(esc_c),
            "H" | "N" => {}
            ".br" => out.push('\n'),
            _ if seq.starts_with(".sp") => out.push('\n'),
            _ if seq.starts_with(".fi")
                || seq.starts_with(".nf")
                || seq.starts_with(".in")
                || seq.starts_with(".ti")
                || seq.starts_with(".sk")
                || seq.starts_with(".ce") => {}
            _ if seq.starts_with('X') || seq.starts_with('x') => {
                let hex = &seq[1..];
                if hex.len() & 1 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let bytes: Vec<u8> = hex
                        .as_bytes()
                        .chunks(2)
                        .map(|c| (hex_val(c[0]) << 4) | hex_val(c[1]))
                        .collect();
                    match std::str::from_utf8(&bytes) {
                        Ok(s) => out.push_str(s),
                        Err(_) => out.push_str(&decode_single_byte(&bytes, Charset::Latin1)),
                    }
                } else {
                    bad = true;
                    out.push(esc_c);
                    out.push_str(seq);
                    out.push(esc_c);
                }
            }
            _ if seq.starts_with('Z') || seq.starts_with('C') || seq.starts_with('M') => {
                // Locally defined / charset switch: pass through as written.
                out.push(esc_c);
                out.push_str(seq);
                out.push(esc_c);
            }
            _ => {
                bad = true;
                out.push(esc_c);
                out.push_str(seq);
                out.push(esc_c);
            }
        }
    }
    out.push_str(rest);
    (Cow::Owned(out), bad)
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Appends `s` escaped for the standard delimiters `|^~\&`.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '\r' => out.push_str("\\X0D\\"),
            '\n' => out.push_str("\\X0A\\"),
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------
// Timestamps (DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ])
// ---------------------------------------------------------------------------

/// How much of a timestamp was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS[.S…]`
    Second,
}

/// A parsed HL7 timestamp (civil fields as written, plus the zone offset if given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ts {
    /// Year.
    pub year: i32,
    /// Month 1–12 (1 when not given).
    pub month: u8,
    /// Day 1–31 (1 when not given).
    pub day: u8,
    /// Hour 0–23.
    pub hour: u8,
    /// Minute 0–59.
    pub minute: u8,
    /// Second 0–60.
    pub second: u8,
    /// Fraction digits as an integer (e.g. `.25` → 25 with 2 digits).
    pub frac: u16,
    /// How many fraction digits (0–4).
    pub frac_digits: u8,
    /// How much was given.
    pub precision: Precision,
    /// Zone offset in minutes east of UTC, if given.
    pub offset_min: Option<i16>,
}

fn digits(s: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// A fast 64-bit hash of a short string, 8 bytes per step (FNV-1a's
/// byte-serial multiply chain cost ~0.5 µs per observation row). Used to
/// remember keys within one message (interned values, OBX-4 paths); not
/// keyed, never exported.
pub fn hash64(s: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let b = s.as_bytes();
    let mut h = (b.len() as u64).wrapping_mul(K) ^ 0x2545_F491_4F6C_DD1D;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 31)
}

/// Days in a month of the proleptic Gregorian calendar.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl Ts {
    /// Parses an HL7 DTM/TS value (component 1 only; callers pass `TS.1`).
    pub fn parse(s: &str) -> Option<Ts> {
        let s = s.trim_ascii();
        let b = s.as_bytes();
        let (main, zone) = match b.iter().position(|&c| c == b'+' || c == b'-') {
            Some(p) => (&b[..p], Some(&b[p..])),
            None => (b, None),
        };
        let (main, frac) = match main.iter().position(|&c| c == b'.') {
            Some(p) => (&main[..p], Some(&main[p + 1..])),
            None => (main, None),
        };
        let precision = match main.len() {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            _ => return None,
        };
        let year = digits(&main[0..4])? as i32;
        let num = |r: std::ops::Range<usize>, default: u32| -> Option<u32> {
            match main.get(r) {
                Some(x) => digits(x),
                None => Some(default),
            }
        };
        let month = num(4..6, 1)? as u8;
        let day = num(6..8, 1)? as u8;
        let hour = num(8..10, 0)? as u8;
        let minute = num(10..12, 0)? as u8;
        let second = num(12..14, 0)? as u8;
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let (frac, frac_digits) = match frac {
            Some(f) if precision == Precision::Second && (1..=4).contains(&f.len()) => {
                (digits(f)? as u16, f.len() as u8)
            }
            Some(_) => return None,
            None => (0, 0),
        };
        let offset_min = match zone {
            Some(z) if z.len() == 5 => {
                let h = digits(&z[1..3])? as i16;
                let m = digits(&z[3..5])? as i16;
                if h > 14 || m > 59 {
                    return None;
                }
                let v = h * 60 + m;
                Some(if z[0] == b'-' { -v } else { v })
            }
            Some(_) => return None,
            None => None,
        };
        Some(Ts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            frac,
            frac_digits,
            precision,
            offset_min,
        })
    }

    /// Seconds since the Unix epoch, treating a missing zone as UTC.
    pub fn epoch_seconds(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_min.unwrap_or(0)) * 60
    }

    /// The same instant in UTC civil fields from epoch seconds.
    pub fn from_epoch_utc(secs: i64) -> Ts {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Ts {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: ((rem % 3600) / 60) as u8,
            second: (rem % 60) as u8,
            frac: 0,
            frac_digits: 0,
            precision: Precision::Second,
            offset_min: Some(0),
        }
    }

    /// This timestamp moved by whole days (time of day and zone unchanged).
    pub fn shift_days(&self, days: i32) -> Ts {
        let mut t = *self;
        let base_day = if self.precision == Precision::Month {
            15
        } else {
            self.day
        };
        if self.precision >= Precision::Month {
            let d = days_from_civil(self.year, self.month, base_day) + i64::from(days);
            let (y, m, dd) = civil_from_days(d);
            t.year = y;
            t.month = m;
            t.day = dd;
        }
        t
    }

    /// ISO 8601 text at the precision given.
    pub fn to_iso(&self) -> String {
        let mut s = String::with_capacity(32);
        push_num(&mut s, self.year.unsigned_abs(), 4);
        if self.precision >= Precision::Month {
            s.push('-');
            push_num(&mut s, u32::from(self.month), 2);
        }
        if self.precision >= Precision::Day {
            s.push('-');
            push_num(&mut s, u32::from(self.day), 2);
        }
        if self.precision >= Precision::Hour {
            s.push('T');
            push_num(&mut s, u32::from(self.hour), 2);
            s.push(':');
            push_num(&mut s, u32::from(self.minute), 2);
        }
        if self.precision >= Precision::Second {
            s.push(':');
            push_num(&mut s, u32::from(self.second), 2);
            if self.frac_digits > 0 {
                s.push('.');
                push_num(&mut s, u32::from(self.frac), usize::from(self.frac_digits));
            }
        }
        if self.precision >= Precision::Hour {
            if let Some(off) = self.offset_min {
                s.push(if off < 0 { '-' } else { '+' });
                let a = u32::from(off.unsigned_abs());
                push_num(&mut s, a / 60, 2);
                s.push(':');
                push_num(&mut s, a % 60, 2);
            }
        }
        s
    }
}

/// Appends `v` zero-padded to `width` digits (more if it needs them).
pub fn push_num(s: &mut String, v: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut n = v;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = buf.len() - i;
    for _ in digits..width {
        s.push('0');
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

/// Days since 1970-01-01 for a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn msh_numbering_and_v27_truncation_char() {
        let m = Message::parse(
            "MSH|^~\\&#|APP|FAC|||20240101||ADT^A01^ADT_A01|X1|P|2.7\rPID|1||42^^^H^MR",
        )
        .unwrap();
        let msh = m.msh();
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&#");
        assert_eq!(msh.field(9).comp(2).raw(), "A01");
        assert_eq!(msh.field(10).raw(), "X1");
        assert_eq!(msh.field(12).raw(), "2.7");
        assert_eq!(m.delimiters().truncation, Some(b'#'));
        let pid = m.first("PID").unwrap();
        assert_eq!(pid.field(3).comp(5).raw(), "MR");
        assert_eq!(pid.field(99).comp(7).sub(3).raw(), "");
    }

    #[test]
    fn hash64_spreads_short_keys() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            assert!(seen.insert(hash64(&format!("1.{}.{}.{}", i % 7, i / 7 % 13, i))));
        }
        assert_ne!(hash64(""), hash64("\0"));
        assert_ne!(hash64("12345678"), hash64("123456780"));
    }

    #[test]
    fn comps_n_matches_comp() {
        let d = Delimiters::STANDARD;
        for raw in [
            "",
            "a",
            "a^b",
            "a^^c^d",
            "a^b~c^d",
            "^",
            "~x",
            "a^b^c^d^e^f^g",
        ] {
            let v = Value::new(raw, d);
            let arr = v.comps_n::<5>();
            for (i, c) in arr.iter().enumerate() {
                assert_eq!(c.raw(), v.comp(i + 1).raw(), "{raw:?} {i}");
            }
        }
    }

    #[test]
    fn segment_terminators_cr_lf_crlf_and_blank_lines() {
        for sep in ["\r", "\n", "\r\n", "\r\n\r\n"] {
            let text = format!("MSH|^~\\&|A{sep}PID|1{sep}{sep}PV1|1|I{sep}");
            let m = Message::parse(&text).unwrap();
            let ids: Vec<_> = m.segments().map(|s| s.id()).collect();
            assert_eq!(ids, ["MSH", "PID", "PV1"], "{sep:?}");
        }
    }

    #[test]
    fn custom_delimiters() {
        let m = Message::parse("MSH#*!@%#A#B\rPID#1##x*y!z*w%v").unwrap();
        let f = m.first("PID").unwrap().field(3);
        assert_eq!(f.comp(2).raw(), "y");
        assert_eq!(f.rep(1).raw(), "z*w%v");
        assert_eq!(f.rep(1).comp(2).sub(2).raw(), "v");
    }

    #[test]
    fn escapes() {
        let d = Delimiters::STANDARD;
        let (s, bad) = unescape(r"a\F\b\S\c\T\d\R\e\E\f\X41C3A9\g\.br\h", d);
        assert_eq!(s, "a|b^c&d~e\\fAég\nh");
        assert!(!bad);
        let (s, bad) = unescape(r"x\Q\y\unterminated", d);
        assert!(bad);
        assert_eq!(s, r"x\Q\y\unterminated");
        let (s, _) = unescape(r"\XE9\", d);
        assert_eq!(s, "é");
    }

    #[test]
    fn charset_utf8_first_then_fallback() {
        let utf8 = "MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||8859/1\rPID|||||Şrīnivās".as_bytes();
        let d = decode(utf8, None);
        assert_eq!(d.used, Charset::Utf8);
        assert_eq!(d.declared, Declared::Latin1);
        let latin = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||8859/1\rPID|||||Ma\xf1ez\x80";
        let d = decode(latin, None);
        assert_eq!(d.used, Charset::Latin1);
        assert!(d.text.contains("Mañez\u{80}"));
        let cp = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5\rPID|||||\x93x\x94";
        let d = decode(cp, None);
        assert_eq!(d.used, Charset::Windows1252);
        assert!(d.text.contains("\u{201c}x\u{201d}"));
    }

    #[test]
    fn timestamps() {
        let t = Ts::parse("20240101115958.25+0530").unwrap();
        assert_eq!(t.to_iso(), "2024-01-01T11:59:58.25+05:30");
        assert_eq!(t.shift_days(-1).to_iso(), "2023-12-31T11:59:58.25+05:30");
        assert_eq!(
            Ts::parse("20240229").unwrap().shift_days(366).to_iso(),
            "2025-03-01"
        );
        assert!(Ts::parse("20230229").is_none());
        assert!(Ts::parse("2024013").is_none());
        assert!(Ts::parse("20240101+05").is_none());
        let e = Ts::parse("19700101000000+0100").unwrap().epoch_seconds();
        assert_eq!(e, -3600);
        let back = Ts::from_epoch_utc(1_704_067_200);
        assert_eq!(back.to_iso(), "2024-01-01T00:00:00+00:00");
        for d in [-800_000i64, -1, 0, 1, 19_000, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "M",
            "MSH",
            "MSH|",
            "MSH||",
            "MSHa^~",
            "\u{feff}MSH|^",
            "PID|1\rMSH|^~\\&|",
        ] {
            if let Ok(m) = Message::parse(s) {
                for seg in m.segments() {
                    for n in 0..30 {
                        let _ = seg.field(n).comp(3).sub(2).decoded();
                    }
                }
            }
        }
    }
}
