//! `[[source.serial]]`: serial ports running MEDIBUS or `lines` — the raw
//! shape, its validation and the validated [`SerialSource`], kept together
//! so the section is one file (the rest of the crate only hooks it in).
//!
//! A `[[source.serial.map]]` table inside a `[[source.serial]]` adds one
//! mapped value of a `lines` device (TOML appends it to the last
//! `[[source.serial]]` above it).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::raw::{self, integer, keys_of, Field, Integer};
use crate::report::Report;
use crate::validate::{source_name, Claims, Resource, Scope};

/// `source.serial[].name`.
pub const SERIAL_NAME: &str = "serial";
/// `source.serial[].protocol`.
pub const SERIAL_PROTOCOL: SerialProtocol = SerialProtocol::Medibus;
/// `source.serial[].baud`.
pub const SERIAL_BAUD: u32 = 9600;
/// `source.serial[].poll_interval`.
pub const SERIAL_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// `source.serial[].silent_timeout`.
pub const SERIAL_SILENT_TIMEOUT: Duration = Duration::from_secs(10);
/// `source.serial[].reopen_backoff_min`.
pub const SERIAL_REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// `source.serial[].reopen_backoff_max`.
pub const SERIAL_REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// `source.serial[].max_line_bytes`.
pub const SERIAL_MAX_LINE_BYTES: usize = 4096;

/// The shortest `silent_timeout`: a NOP goes out every 2 s and a request
/// may take 1 s, so less would declare a healthy link lost.
const MIN_SILENT_TIMEOUT: Duration = Duration::from_secs(3);

const FIX_LIST: &str =
    "write each serial port as its own [[source.serial]] table (double brackets)";
const FIX_PATH: &str = "write the device path in quotes, preferably the stable link, \
     e.g. \"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K3XYZ-if00-port0\" or \"/dev/ttyS0\"";
const FIX_PROTOCOL: &str =
    "write \"medibus\" (Dräger ventilators) or \"lines\" (ASCII line sensors)";
const FIX_BAUD: &str =
    "write the device's baud rate as a whole number from 50 to 4000000, e.g. 19200";
const FIX_DATA_BITS: &str = "write 5, 6, 7 or 8";
const FIX_PARITY: &str = "write \"none\", \"even\" or \"odd\"";
const FIX_STOP_BITS: &str = "write 1 or 2";
const FIX_FLOW: &str = "write \"none\", \"software\" (XON/XOFF) or \"hardware\" (RTS/CTS)";
const FIX_POLL: &str = "write a duration of at least 100ms in quotes, e.g. \"5s\"";
const FIX_SILENT: &str = "write a duration of at least 3s in quotes, e.g. \"10s\"";
const FIX_BACKOFF_MIN: &str = "write a duration of at least 100ms in quotes, e.g. \"1s\"";
const FIX_BACKOFF_MAX: &str =
    "write a duration in quotes that is at least reopen_backoff_min, e.g. \"60s\"";
const FIX_TEXT: &str = "write a text in quotes, or \"\" for none";
const FIX_FORMAT: &str = "write \"kv\" (KEY=value pairs) or \"csv\" (fields by column)";
const FIX_SEPARATOR: &str = "write one character in quotes, e.g. \",\" or \";\"";
const FIX_MAX_LINE: &str = "write a size in bytes from 16 to 1048576, e.g. 4096";
const FIX_MAP_LIST: &str =
    "write each mapped value as its own [[source.serial.map]] table below its [[source.serial]]";
const FIX_CODE: &str = "write the observation code in quotes, e.g. \"MDC_PULS_OXIM_SAT_O2\"";
const FIX_SYSTEM: &str = "write \"MDC\", \"LOINC\" or \"LOCAL\"";
const FIX_COLUMN: &str = "write the 1-based column number, e.g. 2";

// ---------------------------------------------------------------------------
// The validated shape.

/// The protocol spoken on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SerialProtocol {
    /// `"medibus"`: Dräger MEDIBUS, polled.
    Medibus,
    /// `"lines"`: ASCII lines the device prints by itself.
    Lines,
}

/// `data_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataBits {
    /// 5
    Five,
    /// 6
    Six,
    /// 7
    Seven,
    /// 8
    Eight,
}

/// `parity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    /// `"none"`
    None,
    /// `"even"`
    Even,
    /// `"odd"`
    Odd,
}

/// `stop_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopBits {
    /// 1
    One,
    /// 2
    Two,
}

/// `flow_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowControl {
    /// `"none"`
    None,
    /// `"software"`: XON/XOFF.
    Software,
    /// `"hardware"`: RTS/CTS.
    Hardware,
}

/// `format` of a `lines` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinesFormat {
    /// `"kv"`: `KEY=value` tokens.
    KeyValue,
    /// `"csv"`: fields separated by `separator`.
    Csv,
}

/// Where a mapped value is in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialField {
    /// `key`: a key of a `KEY=value` line (case-insensitive).
    Key(String),
    /// `column`: a 1-based CSV column.
    Column(usize),
}

/// One `[[source.serial.map]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialMapping {
    /// Where the value is.
    pub field: SerialField,
    /// The observation code, never empty.
    pub code: String,
    /// `MDC`, `LOINC` or `LOCAL`.
    pub system: String,
    /// UCUM unit; `None` when written `""`.
    pub unit: Option<String>,
    /// Label for people; `None` when written `""`.
    pub label: Option<String>,
}

/// One `[[source.serial]]` port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSource {
    /// Unique across all sources (the rules of every source name).
    pub name: String,
    /// The device, as written; never empty. No other source uses it.
    pub path: PathBuf,
    /// MEDIBUS or lines.
    pub protocol: SerialProtocol,
    /// Baud rate, 50..=4000000.
    pub baud: u32,
    /// Data bits.
    pub data_bits: DataBits,
    /// Parity.
    pub parity: Parity,
    /// Stop bits.
    pub stop_bits: StopBits,
    /// Flow control.
    pub flow_control: FlowControl,
    /// MEDIBUS: a poll cycle starts this often. At least 100 ms.
    pub poll_interval: Duration,
    /// MEDIBUS: no valid frame for this long → re-initialise; lines: the
    /// link is shown as silent. At least 3 s.
    pub silent_timeout: Duration,
    /// First wait before reopening a port that failed; doubles per failure.
    pub reopen_backoff_min: Duration,
    /// Longest wait between reopen attempts; at least `reopen_backoff_min`.
    pub reopen_backoff_max: Duration,
    /// The device id stored with readings; `None` = MEDIBUS: from the
    /// device's identification, lines: none.
    pub device_id: Option<String>,
    /// Ward, room and bed the device belongs to (each optional).
    pub ward: Option<String>,
    /// Room.
    pub room: Option<String>,
    /// Bed.
    pub bed: Option<String>,
    /// lines: the layout.
    pub format: LinesFormat,
    /// lines, csv: the field separator.
    pub separator: char,
    /// lines: longest line in bytes, 16..=1048576.
    pub max_line_bytes: usize,
    /// lines: the values to take (at least one); empty for MEDIBUS.
    pub map: Vec<SerialMapping>,
}

impl Default for SerialSource {
    /// The port of a `[[source.serial]]` table with only a `path`.
    fn default() -> Self {
        Self {
            name: SERIAL_NAME.to_owned(),
            path: PathBuf::new(),
            protocol: SERIAL_PROTOCOL,
            baud: SERIAL_BAUD,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            flow_control: FlowControl::None,
            poll_interval: SERIAL_POLL_INTERVAL,
            silent_timeout: SERIAL_SILENT_TIMEOUT,
            reopen_backoff_min: SERIAL_REOPEN_BACKOFF_MIN,
            reopen_backoff_max: SERIAL_REOPEN_BACKOFF_MAX,
            device_id: None,
            ward: None,
            room: None,
            bed: None,
            format: LinesFormat::KeyValue,
            separator: ',',
            max_line_bytes: SERIAL_MAX_LINE_BYTES,
            map: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// The raw shape.

/// `[[source.serial]]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.serial]] table"
)]
pub(crate) struct RawSerial {
    #[serde(default = "default_name")]
    name: Field<String>,
    #[serde(default = "empty")]
    path: Field<String>,
    #[serde(default = "default_protocol")]
    protocol: Field<String>,
    #[serde(default = "default_baud")]
    baud: Field<Integer>,
    #[serde(default = "default_data_bits")]
    data_bits: Field<Integer>,
    #[serde(default = "default_parity")]
    parity: Field<String>,
    #[serde(default = "default_stop_bits")]
    stop_bits: Field<Integer>,
    #[serde(default = "default_flow_control")]
    flow_control: Field<String>,
    #[serde(default = "default_poll_interval")]
    poll_interval: Field<raw::Duration>,
    #[serde(default = "default_silent_timeout")]
    silent_timeout: Field<raw::Duration>,
    #[serde(default = "default_reopen_backoff_min")]
    reopen_backoff_min: Field<raw::Duration>,
    #[serde(default = "default_reopen_backoff_max")]
    reopen_backoff_max: Field<raw::Duration>,
    #[serde(default = "empty")]
    device_id: Field<String>,
    #[serde(default = "empty")]
    ward: Field<String>,
    #[serde(default = "empty")]
    room: Field<String>,
    #[serde(default = "empty")]
    bed: Field<String>,
    #[serde(default = "default_format")]
    format: Field<String>,
    #[serde(default = "default_separator")]
    separator: Field<String>,
    #[serde(default = "default_max_line_bytes")]
    max_line_bytes: Field<Integer>,
    #[serde(default)]
    map: Field<Vec<Field<RawSerialMap>>>,
}

/// `[[source.serial.map]]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.serial.map]] table"
)]
pub(crate) struct RawSerialMap {
    #[serde(default = "empty")]
    key: Field<String>,
    #[serde(default = "zero")]
    column: Field<Integer>,
    #[serde(default = "empty")]
    code: Field<String>,
    #[serde(default = "default_system")]
    system: Field<String>,
    #[serde(default = "empty")]
    unit: Field<String>,
    #[serde(default = "empty")]
    label: Field<String>,
}

fn text(s: &str) -> Field<String> {
    Field::absent(s.to_owned())
}
fn empty() -> Field<String> {
    text("")
}
fn zero() -> Field<Integer> {
    integer(0)
}
fn default_name() -> Field<String> {
    text(SERIAL_NAME)
}
fn default_protocol() -> Field<String> {
    text("medibus")
}
fn default_baud() -> Field<Integer> {
    integer(SERIAL_BAUD)
}
fn default_data_bits() -> Field<Integer> {
    integer(8)
}
fn default_parity() -> Field<String> {
    text("none")
}
fn default_stop_bits() -> Field<Integer> {
    integer(1)
}
fn default_flow_control() -> Field<String> {
    text("none")
}
fn default_poll_interval() -> Field<raw::Duration> {
    Field::absent(raw::Duration(SERIAL_POLL_INTERVAL))
}
fn default_silent_timeout() -> Field<raw::Duration> {
    Field::absent(raw::Duration(SERIAL_SILENT_TIMEOUT))
}
fn default_reopen_backoff_min() -> Field<raw::Duration> {
    Field::absent(raw::Duration(SERIAL_REOPEN_BACKOFF_MIN))
}
fn default_reopen_backoff_max() -> Field<raw::Duration> {
    Field::absent(raw::Duration(SERIAL_REOPEN_BACKOFF_MAX))
}
fn default_format() -> Field<String> {
    text("kv")
}
fn default_separator() -> Field<String> {
    text(",")
}
fn default_max_line_bytes() -> Field<Integer> {
    integer(SERIAL_MAX_LINE_BYTES)
}
fn default_system() -> Field<String> {
    text("MDC")
}

/// The keys of `[[source.serial]]` and of `[[source.serial.map]]`.
pub(crate) fn keys() -> (&'static [&'static str], &'static [&'static str]) {
    (keys_of::<RawSerial>(), keys_of::<RawSerialMap>())
}

/// Reports and removes unknown keys of every `[[source.serial]]` table and
/// its `map` tables (the hook of `parse::remove_unknown_keys`).
pub(crate) fn remove_unknown_keys(source: &mut DeTable<'_>, report: &mut Report<'_>) {
    let (port_keys, map_keys) = keys();
    let Some(DeValue::Array(ports)) = source.get_mut("serial").map(Spanned::get_mut) else {
        return;
    };
    for (i, port) in ports.iter_mut().enumerate() {
        let DeValue::Table(table) = port.get_mut() else {
            continue;
        };
        let path = format!("source.serial[{i}]");
        crate::parse::check_keys(table, &path, port_keys, report);
        if let Some(DeValue::Array(maps)) = table.get_mut("map").map(Spanned::get_mut) {
            for (j, map) in maps.iter_mut().enumerate() {
                if let DeValue::Table(t) = map.get_mut() {
                    crate::parse::check_keys(t, &format!("{path}.map[{j}]"), map_keys, report);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Validation.

/// Validates every `[[source.serial]]` (the hook of `validate`).
pub(crate) fn serial_list(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<Vec<Field<RawSerial>>>,
    claims: &mut Claims,
) -> Vec<SerialSource> {
    let Some(list) = scope.get(report, "serial", field, FIX_LIST) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, element) in list.iter().enumerate() {
        let key = format!("serial[{i}]");
        if let Some(raw) = scope.get(report, &key, element, FIX_LIST) {
            let port = Scope {
                path: scope.key(&key),
                span: element.span.clone(),
            };
            out.push(serial(report, &port, raw, claims));
        }
    }
    out
}

/// A text from a fixed list of names.
fn choice<T: Copy>(
    report: &mut Report<'_>,
    scope: &Scope,
    key: &str,
    field: &Field<String>,
    names: &[(&str, T)],
    what: &str,
    fix: &str,
) -> Option<T> {
    let name = scope.get(report, key, field, fix)?;
    let found = names.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    if found.is_none() {
        report.push(
            scope.span_of(field),
            scope.key(key),
            format!("{name:?} is not {what}"),
            fix,
        );
    }
    found
}

/// An optional text: `None` for `""`.
fn optional(
    report: &mut Report<'_>,
    scope: &Scope,
    key: &str,
    field: &Field<String>,
) -> Option<String> {
    scope
        .get(report, key, field, FIX_TEXT)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn serial(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawSerial,
    claims: &mut Claims,
) -> SerialSource {
    let d = SerialSource::default();
    let name = source_name(report, scope, &raw.name, claims);
    let mut path = None;
    if let Some(p) = scope.get(report, "path", &raw.path, FIX_PATH) {
        if p.trim().is_empty() {
            let message = if raw.path.span.is_some() {
                "the path is empty"
            } else {
                "the path is not set: every serial port needs one"
            };
            report.push(
                scope.span_of(&raw.path),
                scope.key("path"),
                message,
                FIX_PATH,
            );
        } else {
            claims.claim(
                report,
                Resource::SerialDevice(p.clone()),
                scope.key("path"),
                scope.span_of(&raw.path).cloned(),
            );
            path = Some(PathBuf::from(p));
        }
    }
    let protocol = choice(
        report,
        scope,
        "protocol",
        &raw.protocol,
        &[
            ("medibus", SerialProtocol::Medibus),
            ("lines", SerialProtocol::Lines),
        ],
        "a serial protocol",
        FIX_PROTOCOL,
    );
    let baud = scope
        .int(report, "baud", &raw.baud, 50..=4_000_000, FIX_BAUD)
        .and_then(|b| u32::try_from(b).ok());
    let data_bits = scope
        .int(report, "data_bits", &raw.data_bits, 5..=8, FIX_DATA_BITS)
        .map(|b| match b {
            5 => DataBits::Five,
            6 => DataBits::Six,
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        });
    let parity = choice(
        report,
        scope,
        "parity",
        &raw.parity,
        &[
            ("none", Parity::None),
            ("even", Parity::Even),
            ("odd", Parity::Odd),
        ],
        "a parity",
        FIX_PARITY,
    );
    let stop_bits = scope
        .int(report, "stop_bits", &raw.stop_bits, 1..=2, FIX_STOP_BITS)
        .map(|b| if b == 2 { StopBits::Two } else { StopBits::One });
    let flow_control = choice(
        report,
        scope,
        "flow_control",
        &raw.flow_control,
        &[
            ("none", FlowControl::None),
            ("software", FlowControl::Software),
            ("hardware", FlowControl::Hardware),
        ],
        "a flow control",
        FIX_FLOW,
    );
    let ms100 = Duration::from_millis(100);
    let poll_interval =
        scope.duration(report, "poll_interval", &raw.poll_interval, ms100, FIX_POLL);
    let silent_timeout = scope.duration(
        report,
        "silent_timeout",
        &raw.silent_timeout,
        MIN_SILENT_TIMEOUT,
        FIX_SILENT,
    );
    let backoff_min = scope.duration(
        report,
        "reopen_backoff_min",
        &raw.reopen_backoff_min,
        ms100,
        FIX_BACKOFF_MIN,
    );
    let backoff_max = scope.duration(
        report,
        "reopen_backoff_max",
        &raw.reopen_backoff_max,
        backoff_min.unwrap_or(ms100),
        FIX_BACKOFF_MAX,
    );
    let format = choice(
        report,
        scope,
        "format",
        &raw.format,
        &[("kv", LinesFormat::KeyValue), ("csv", LinesFormat::Csv)],
        "a line format",
        FIX_FORMAT,
    );
    let separator = scope
        .get(report, "separator", &raw.separator, FIX_SEPARATOR)
        .and_then(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c != '\r' && c != '\n' => Some(c),
                _ => {
                    report.push(
                        scope.span_of(&raw.separator),
                        scope.key("separator"),
                        format!("{s:?} is not one character"),
                        FIX_SEPARATOR,
                    );
                    None
                }
            }
        });
    let max_line_bytes = scope.usize(
        report,
        "max_line_bytes",
        &raw.max_line_bytes,
        16..=1_048_576,
        FIX_MAX_LINE,
    );
    let format_or_default = format.unwrap_or(d.format);
    let map = maps(report, scope, &raw.map, format_or_default);
    match protocol {
        Some(SerialProtocol::Medibus) if !map.is_empty() => report.push(
            scope.span_of(&raw.map),
            scope.key("map"),
            "[[source.serial.map]] applies only to protocol = \"lines\"; MEDIBUS codes are built in",
            "remove the map tables, or write protocol = \"lines\"",
        ),
        Some(SerialProtocol::Lines) if map.is_empty() && raw.map.value.is_ok() => report.push(
            scope.span_of(&raw.map),
            scope.key("map"),
            "a \"lines\" port needs at least one [[source.serial.map]] table",
            "add a [[source.serial.map]] table with key (or column), code and unit below this [[source.serial]]",
        ),
        _ => {}
    }
    SerialSource {
        name: name.unwrap_or(d.name),
        path: path.unwrap_or(d.path),
        protocol: protocol.unwrap_or(d.protocol),
        baud: baud.unwrap_or(d.baud),
        data_bits: data_bits.unwrap_or(d.data_bits),
        parity: parity.unwrap_or(d.parity),
        stop_bits: stop_bits.unwrap_or(d.stop_bits),
        flow_control: flow_control.unwrap_or(d.flow_control),
        poll_interval: poll_interval.unwrap_or(d.poll_interval),
        silent_timeout: silent_timeout.unwrap_or(d.silent_timeout),
        reopen_backoff_min: backoff_min.unwrap_or(d.reopen_backoff_min),
        reopen_backoff_max: backoff_max.unwrap_or(d.reopen_backoff_max),
        device_id: optional(report, scope, "device_id", &raw.device_id),
        ward: optional(report, scope, "ward", &raw.ward),
        room: optional(report, scope, "room", &raw.room),
        bed: optional(report, scope, "bed", &raw.bed),
        format: format_or_default,
        separator: separator.unwrap_or(d.separator),
        max_line_bytes: max_line_bytes.unwrap_or(d.max_line_bytes),
        map,
    }
}

fn maps(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<Vec<Field<RawSerialMap>>>,
    format: LinesFormat,
) -> Vec<SerialMapping> {
    let Some(list) = scope.get(report, "map", field, FIX_MAP_LIST) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, element) in list.iter().enumerate() {
        let key = format!("map[{i}]");
        let Some(raw) = scope.get(report, &key, element, FIX_MAP_LIST) else {
            continue;
        };
        let s = Scope {
            path: scope.key(&key),
            span: element.span.clone(),
        };
        if let Some(m) = mapping(report, &s, raw, format) {
            out.push(m);
        }
    }
    out
}

fn mapping(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawSerialMap,
    format: LinesFormat,
) -> Option<SerialMapping> {
    let key = optional(report, scope, "key", &raw.key);
    let column = scope.int(report, "column", &raw.column, 0..=10_000, FIX_COLUMN);
    let field = match format {
        LinesFormat::KeyValue => {
            if matches!(column, Some(n) if n != 0) {
                report.push(
                    scope.span_of(&raw.column),
                    scope.key("column"),
                    "column applies only to format = \"csv\"",
                    "write key = \"NAME\" for a KEY=value line, or format = \"csv\" on the port",
                );
            }
            match key {
                Some(k) => Some(SerialField::Key(k)),
                None => {
                    report.push(
                        scope.span_of(&raw.key),
                        scope.key("key"),
                        "the key is not set",
                        "write the key as the device prints it, e.g. key = \"SPO2\"",
                    );
                    None
                }
            }
        }
        LinesFormat::Csv => {
            if key.is_some() {
                report.push(
                    scope.span_of(&raw.key),
                    scope.key("key"),
                    "key applies only to format = \"kv\"",
                    "write column = N (1-based) for a CSV line, or format = \"kv\" on the port",
                );
            }
            match column {
                Some(n) if n >= 1 => usize::try_from(n).ok().map(SerialField::Column),
                Some(_) => {
                    report.push(
                        scope.span_of(&raw.column),
                        scope.key("column"),
                        "the column is not set (columns count from 1)",
                        FIX_COLUMN,
                    );
                    None
                }
                None => None,
            }
        }
    };
    let code = scope
        .get(report, "code", &raw.code, FIX_CODE)
        .and_then(|c| {
            let c = c.trim();
            if c.is_empty() {
                report.push(
                    scope.span_of(&raw.code),
                    scope.key("code"),
                    "the code is not set",
                    FIX_CODE,
                );
                None
            } else {
                Some(c.to_owned())
            }
        });
    let system = choice(
        report,
        scope,
        "system",
        &raw.system,
        &[("MDC", "MDC"), ("LOINC", "LOINC"), ("LOCAL", "LOCAL")],
        "a code system",
        FIX_SYSTEM,
    );
    let unit = optional(report, scope, "unit", &raw.unit);
    let label = optional(report, scope, "label", &raw.label);
    Some(SerialMapping {
        field: field?,
        code: code?,
        system: system?.to_owned(),
        unit,
        label,
    })
}

#[cfg(test)]
mod tests {
    use crate::{from_toml_str, DEFAULT_TOML};

    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match from_toml_str(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn a_medibus_port_with_only_a_path_takes_the_defaults() -> Result<(), String> {
        let c = from_toml_str("[[source.serial]]\npath = \"/dev/ttyS0\"\n", "t")
            .map_err(|e| e.to_string())?;
        assert_eq!(
            c.sources.serial,
            vec![SerialSource {
                path: PathBuf::from("/dev/ttyS0"),
                ..SerialSource::default()
            }]
        );
        Ok(())
    }

    #[test]
    fn a_lines_port_with_a_map() -> Result<(), String> {
        let text = r#"
[[source.serial]]
name = "scale"
path = "/dev/serial/by-id/usb-x"
protocol = "lines"
format = "csv"
separator = ";"
baud = 19200
parity = "even"
data_bits = 7
stop_bits = 2
flow_control = "hardware"
bed = "7"

[[source.serial.map]]
column = 2
code = "MDC_ATTR_PT_WEIGHT"
unit = "kg"
"#;
        let c = from_toml_str(text, "t").map_err(|e| e.to_string())?;
        let s = &c.sources.serial[0];
        assert_eq!(s.protocol, SerialProtocol::Lines);
        assert_eq!(s.separator, ';');
        assert_eq!(s.parity, Parity::Even);
        assert_eq!(s.data_bits, DataBits::Seven);
        assert_eq!(s.stop_bits, StopBits::Two);
        assert_eq!(s.flow_control, FlowControl::Hardware);
        assert_eq!(s.bed.as_deref(), Some("7"));
        assert_eq!(s.ward, None);
        assert_eq!(
            s.map,
            vec![SerialMapping {
                field: SerialField::Column(2),
                code: "MDC_ATTR_PT_WEIGHT".into(),
                system: "MDC".into(),
                unit: Some("kg".into()),
                label: None,
            }]
        );
        Ok(())
    }

    #[test]
    fn every_problem_with_line_and_key() {
        let text = r#"[[source.serial]]
name = "a"
path = "/dev/ttyUSB0"
protocol = "modbus"
baud = 0
parity = "mark"
silent_timeout = "1s"
speed = 9600

[[source.serial]]
name = "a"
path = "/dev/ttyUSB0"
protocol = "lines"

[[source.serial.map]]
column = 3
code = ""
"#;
        let p = problems(text);
        let want = [
            "t.toml:4: source.serial[0].protocol: \"modbus\" is not a serial protocol",
            "t.toml:5: source.serial[0].baud: 0 is less than the minimum of 50",
            "t.toml:6: source.serial[0].parity: \"mark\" is not a parity",
            "t.toml:7: source.serial[0].silent_timeout: \"1s\" is shorter than the minimum of 3s",
            "t.toml:8: source.serial[0].speed: unknown key",
            "t.toml:11: source.serial[1].name: \"a\" is already used by source.serial[0].name (line 2)",
            "t.toml:12: source.serial[1].path: \"/dev/ttyUSB0\" is already used by source.serial[0].path (line 3); two sources cannot share a serial device",
            "t.toml:16: source.serial[1].map[0].column: column applies only to format = \"csv\"",
            "t.toml:17: source.serial[1].map[0].code: the code is not set",
        ];
        for w in want {
            assert!(
                p.iter().any(|l| l.starts_with(w)),
                "missing {w:?} in\n{}",
                p.join("\n")
            );
        }
        // And the key of the kv map is missing (reported at the table).
        assert!(
            p.iter()
                .any(|l| l.contains("source.serial[1].map[0].key: the key is not set")),
            "{}",
            p.join("\n")
        );
    }

    #[test]
    fn path_is_required_and_map_fits_the_protocol() {
        let p = problems("[[source.serial]]\nname = \"v\"\n");
        assert!(
            p[0].starts_with("t.toml:1: source.serial[0].path: the path is not set"),
            "{p:?}"
        );
        let p = problems(
            "[[source.serial]]\npath = \"/dev/x\"\n[[source.serial.map]]\nkey = \"A\"\ncode = \"C\"\n",
        );
        assert!(
            p.iter()
                .any(|l| l.contains("applies only to protocol = \"lines\"")),
            "{p:?}"
        );
        let p = problems("[[source.serial]]\npath = \"/dev/x\"\nprotocol = \"lines\"\n");
        assert!(p.iter().any(|l| l.contains("needs at least one")), "{p:?}");
    }

    /// The commented-out example in default.toml is valid once uncommented,
    /// and every key of the section is in it with a comment above.
    #[test]
    fn the_commented_out_serial_example_is_valid() -> Result<(), String> {
        let start = "# [[source.serial]]";
        let end = "# (end of the serial example)";
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        let a = lines
            .iter()
            .position(|l| *l == start)
            .ok_or("no serial example")?;
        let b = lines
            .iter()
            .position(|l| *l == end)
            .ok_or("no end marker")?;
        let mut text = String::new();
        for l in &lines[a..b] {
            if !l.starts_with("# ") && *l != "#" {
                return Err(format!("the example line {l:?} is not commented out"));
            }
            // "# # ..." are comments of the example; "# key = ..." settings.
            text.push_str(l.strip_prefix("# ").unwrap_or(l));
            text.push('\n');
        }
        let c = from_toml_str(&text, "example").map_err(|e| e.to_string())?;
        assert_eq!(c.sources.serial.len(), 2);
        let (port_keys, map_keys) = keys();
        assert!(lines[a..b].contains(&"# [[source.serial.map]]"));
        for key in port_keys.iter().chain(map_keys).filter(|k| **k != "map") {
            let at = lines[a..b]
                .iter()
                .position(|l| l.starts_with(&format!("# {key} = ")))
                .ok_or(format!("the serial example does not set {key}"))?;
            assert!(
                lines[a + at - 1].starts_with("# # "),
                "{key} has no comment above"
            );
        }
        Ok(())
    }
}
