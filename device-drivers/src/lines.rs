//! `lines`: ASCII line sensors (pure) — bounded line decoding, then
//! `KEY=value` or CSV fields mapped to codes and units (device-serial.md §4).
//!
//! [`LineDecoder`] splits a byte stream at CR, LF or CR LF. Like tokio-util's
//! `LinesCodec` it remembers how far it scanned, enforces the maximum while
//! scanning, and reports an over-long line once ([`Line::TooLong`]) before
//! discarding up to the next line end. Empty lines are skipped.
//!
//! [`parse_line`] reads one line with the configured [`LinesOptions`]. A line
//! it cannot read is an `Err` with the reason: the caller still stores it
//! (custody), with the reason, and the pipeline quarantines it.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::reading::{ReadingValue, Value};

/// How a line's fields are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFormat {
    /// `KEY=value` tokens separated by whitespace, `,` or `;`.
    KeyValue,
    /// Fields separated by `separator`, addressed by 1-based column.
    Csv {
        /// The field separator.
        separator: char,
    },
}

/// Where a mapped value is in the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    /// A key of a `KEY=value` line (matched case-insensitively).
    Key(String),
    /// A 1-based CSV column.
    Column(usize),
}

/// One configured value of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMapping {
    /// Where the value is.
    pub field: FieldRef,
    /// The observation code it becomes.
    pub code: String,
    /// `MDC`, `LOINC` or `LOCAL`.
    pub system: String,
    /// UCUM unit, if any. A value may carry it as a suffix (`97%`).
    pub unit: Option<String>,
    /// Short label for people.
    pub label: Option<String>,
}

/// How to read lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesOptions {
    /// The layout.
    pub format: LineFormat,
    /// The values to take, in order.
    pub map: Vec<LineMapping>,
    /// Longest line accepted, in bytes, without its end.
    pub max_line_bytes: usize,
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// One line, without its end.
    Line(Bytes),
    /// A line longer than the maximum, discarded up to its end.
    TooLong {
        /// Bytes discarded so far when it was reported.
        len: usize,
    },
}

/// The bounded line decoder.
#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    /// Bytes at the front of the buffer already scanned for a line end.
    scanned: usize,
    /// Discarding an over-long line up to its end.
    discarding: bool,
}

impl LineDecoder {
    /// A decoder for lines of at most `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            scanned: 0,
            discarding: false,
        }
    }
}

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

impl Decoder for LineDecoder {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        if self.discarding {
            match buf.iter().position(|b| is_eol(*b)) {
                Some(i) => {
                    buf.advance(i + 1);
                    self.discarding = false;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        // Skip line ends (the LF of CR LF, empty lines).
        let skip = buf.iter().take_while(|b| is_eol(**b)).count();
        if skip > 0 {
            buf.advance(skip);
            self.scanned = 0;
        }
        let limit = buf.len().min(self.max + 1);
        match buf[self.scanned.min(limit)..limit]
            .iter()
            .position(|b| is_eol(*b))
        {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                let line = buf.split_to(end).freeze();
                buf.advance(1);
                Ok(Some(Line::Line(line)))
            }
            None if buf.len() > self.max => {
                // `limit` bytes hold no line end: drop them, and the rest
                // of the line as it arrives.
                buf.advance(limit);
                self.scanned = 0;
                self.discarding = true;
                Ok(Some(Line::TooLong { len: limit }))
            }
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }
}

/// Text marking "no value" rather than a value.
fn is_missing(v: &str) -> bool {
    v.is_empty() || v.chars().all(|c| c == '-') || v.eq_ignore_ascii_case("nan")
}

/// Read one line into values.
///
/// # Errors
/// The reason the line cannot be read: not UTF-8, a mapped value that is
/// not a number, a mapped column missing, or no mapped field at all.
pub fn parse_line(options: &LinesOptions, line: &[u8]) -> Result<Vec<ReadingValue>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8 text".to_owned())?;
    let fields: Vec<(&str, &str)> = match &options.format {
        LineFormat::KeyValue => text
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect(),
        LineFormat::Csv { .. } => Vec::new(),
    };
    let columns: Vec<&str> = match &options.format {
        LineFormat::Csv { separator } => text.split(*separator).map(str::trim).collect(),
        LineFormat::KeyValue => Vec::new(),
    };
    let mut values = Vec::new();
    let mut found = 0;
    for m in &options.map {
        let raw = match &m.field {
            FieldRef::Key(key) => fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v),
            FieldRef::Column(n) => match columns.get(n.saturating_sub(1)) {
                Some(v) => Some(*v),
                None => {
                    return Err(format!(
                        "column {n} ({}) is missing: the line has {} columns",
                        m.code,
                        columns.len()
                    ))
                }
            },
        };
        let Some(raw) = raw else { continue };
        found += 1;
        if is_missing(raw) {
            continue;
        }
        let value = read_value(raw, m.unit.as_deref()).ok_or_else(|| {
            format!(
                "{} = {raw:?} is not a number{}",
                field_name(&m.field),
                m.unit
                    .as_deref()
                    .map(|u| format!(" (optionally followed by {u:?})"))
                    .unwrap_or_default()
            )
        })?;
        values.push(ReadingValue {
            code: m.code.clone(),
            system: m.system.clone(),
            value,
            unit: m.unit.clone(),
            label: m.label.clone(),
            channel: None,
        });
    }
    if found == 0 {
        return Err("no configured key or column is in the line".to_owned());
    }
    Ok(values)
}

fn field_name(f: &FieldRef) -> String {
    match f {
        FieldRef::Key(k) => k.clone(),
        FieldRef::Column(n) => format!("column {n}"),
    }
}

fn read_value(raw: &str, unit: Option<&str>) -> Option<Value> {
    if raw.eq_ignore_ascii_case("true") {
        return Some(Value::Bool(true));
    }
    if raw.eq_ignore_ascii_case("false") {
        return Some(Value::Bool(false));
    }
    let number = match unit {
        Some(u)
            if raw.len() > u.len()
                && raw.to_ascii_lowercase().ends_with(&u.to_ascii_lowercase()) =>
        {
            raw[..raw.len() - u.len()].trim_end()
        }
        _ => raw,
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() => Some(Value::Number(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> LinesOptions {
        LinesOptions {
            format: LineFormat::KeyValue,
            map: vec![
                LineMapping {
                    field: FieldRef::Key("SPO2".into()),
                    code: "MDC_PULS_OXIM_SAT_O2".into(),
                    system: "MDC".into(),
                    unit: Some("%".into()),
                    label: Some("SpO2".into()),
                },
                LineMapping {
                    field: FieldRef::Key("bpm".into()),
                    code: "MDC_PULS_OXIM_PULS_RATE".into(),
                    system: "MDC".into(),
                    unit: Some("/min".into()),
                    label: None,
                },
            ],
            max_line_bytes: 64,
        }
    }

    fn decode_all(d: &mut LineDecoder, buf: &mut BytesMut) -> Vec<Line> {
        let mut out = Vec::new();
        while let Ok(Some(l)) = d.decode(buf) {
            out.push(l);
        }
        out
    }

    fn line(s: &str) -> Line {
        Line::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_at_any_line_end_under_every_split() {
        let wire = b"a=1\r\nb=2\rc=3\n\n\nd=4\r\n";
        let want = vec![line("a=1"), line("b=2"), line("c=3"), line("d=4")];
        for split in 0..=wire.len() {
            let mut d = LineDecoder::new(64);
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = decode_all(&mut d, &mut buf);
            buf.extend_from_slice(&wire[split..]);
            got.extend(decode_all(&mut d, &mut buf));
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        let mut d = LineDecoder::new(8);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [&b"0123456"[..], b"789abcdef", b"ghij", b"\nok=1\n"] {
            buf.extend_from_slice(chunk);
            got.extend(decode_all(&mut d, &mut buf));
            assert!(buf.len() <= 16);
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0], Line::TooLong { .. }));
        assert_eq!(got[1], line("ok=1"));
        // Exactly the maximum is fine.
        let mut buf = BytesMut::from(&b"12345678\n"[..]);
        assert_eq!(
            decode_all(&mut LineDecoder::new(8), &mut buf),
            vec![line("12345678")]
        );
        // One more and the line end right after: the next line survives.
        let mut buf = BytesMut::from(&b"123456789\nok=2\n"[..]);
        let got = decode_all(&mut LineDecoder::new(8), &mut buf);
        assert_eq!(got, vec![Line::TooLong { len: 9 }, line("ok=2")]);
    }

    #[test]
    fn key_value_lines() {
        let o = kv();
        let v = parse_line(&o, b"SN=0001 SPO2=97% BPM=072 PI=3.1 ALARM=0000").unwrap_or_default();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].value, Value::Number(97.0));
        assert_eq!(v[0].unit.as_deref(), Some("%"));
        assert_eq!(v[1].value, Value::Number(72.0));
        assert_eq!(v[1].code, "MDC_PULS_OXIM_PULS_RATE");
        // Not available is not an error and not a zero.
        let v = parse_line(&o, b"spo2=---;bpm=--").unwrap_or_default();
        assert!(v.is_empty());
        let e = parse_line(&o, b"SPO2=abc BPM=70");
        assert_eq!(
            e,
            Err("SPO2 = \"abc\" is not a number (optionally followed by \"%\")".to_owned())
        );
        assert_eq!(
            parse_line(&o, b"TEMP=36.5"),
            Err("no configured key or column is in the line".to_owned())
        );
        assert!(parse_line(&o, b"SPO2=\xff").is_err());
    }

    #[test]
    fn csv_lines() {
        let o = LinesOptions {
            format: LineFormat::Csv { separator: ',' },
            map: vec![
                LineMapping {
                    field: FieldRef::Column(2),
                    code: "MDC_ATTR_PT_WEIGHT".into(),
                    system: "MDC".into(),
                    unit: Some("kg".into()),
                    label: None,
                },
                LineMapping {
                    field: FieldRef::Column(3),
                    code: "BED-OCCUPIED".into(),
                    system: "LOCAL".into(),
                    unit: None,
                    label: None,
                },
            ],
            max_line_bytes: 64,
        };
        let v = parse_line(&o, b"2026-11-23 17:00, 72.4 kg ,true").unwrap_or_default();
        assert_eq!(v[0].value, Value::Number(72.4));
        assert_eq!(v[1].value, Value::Bool(true));
        assert_eq!(
            parse_line(&o, b"only,5"),
            Err("column 3 (BED-OCCUPIED) is missing: the line has 2 columns".to_owned())
        );
    }
}
