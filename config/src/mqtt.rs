//! `[[source.mqtt]]`: MQTT broker subscriptions (bed sensors and other
//! equipment that publishes readings) — the raw shape, its validation and
//! the validated model, kept together in one file.
//!
//! A child of `validate` so it uses the same [`Scope`] helpers and name
//! claims; `raw::RawSources` and `model::Sources` hold its lists.
//!
//! Shape:
//! ```toml
//! [[source.mqtt]]
//! name = "beds"
//! url = "mqtts://broker.ward.local:8883"
//! [[source.mqtt.topic]]
//! filter = "hospital/{ward}/bed/{bed}/occupancy"
//! payload = "boolean"
//! code = "bed-occupied"
//! [[source.mqtt.topic]]
//! filter = "hospital/{ward}/bed/{bed}/vitals"
//! payload = "json"
//! [[source.mqtt.topic.value]]
//! pointer = "/hr"
//! code = "MDC_PULS_OXIM_PULS_RATE"
//! unit = "/min"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{source_name, Claims, Scope};
use crate::raw::{Field, Integer};
use crate::report::Report;
use crate::{defaults, ClientCert};

const FIX_LIST: &str = "write each broker subscription as its own [[source.mqtt]] table";
const FIX_TOPIC_LIST: &str =
    "write each topic as its own [[source.mqtt.topic]] table under its [[source.mqtt]]";
const FIX_VALUE_LIST: &str =
    "write each JSON value as its own [[source.mqtt.topic.value]] table under its topic";
const FIX_URL: &str = "write the broker's URL in quotes, e.g. \"mqtt://10.1.2.3:1883\" or \
     \"mqtts://broker.ward.local:8883\" (scheme, host and optional port only)";
const FIX_CLIENT_ID: &str = "write 1 to 23 characters of A-Z, a-z, 0-9, _ and - in quotes, \
     e.g. \"wardlink-beds\"; every source needs its own client id on a broker";
const FIX_TEXT: &str = "write a string in quotes";
const FIX_FILE: &str = "write the path of the file in quotes, e.g. \"/etc/wardlink/mqtt.pass\", \
     or \"\" for none";
const FIX_KEEP_ALIVE: &str = "write a duration from \"5s\" to \"18h\" in quotes, e.g. \"30s\"";
const FIX_BOOL: &str = "write true or false, without quotes";
const FIX_MAX_PAYLOAD: &str = "write a size in bytes from 64 to 268435455, e.g. 65536";
const FIX_FILTER: &str = "write an MQTT topic filter in quotes whose levels are names, `+`, a \
     final `#`, or whole-level placeholders {ward}, {room}, {bed} or {device}, e.g. \
     \"hospital/{ward}/bed/{bed}/occupancy\"";
const FIX_PAYLOAD: &str = "write \"json\", \"number\" or \"boolean\" (lowercase)";
const FIX_POINTER: &str = "write a JSON pointer in quotes, e.g. \"/vitals/hr\" (RFC 6901: \
     starts with /; ~0 for ~ and ~1 for /)";
const FIX_CODE: &str = "write the observation code in quotes, e.g. \"MDC_PULS_OXIM_SAT_O2\", \
     \"29463-7\" or a local code such as \"bed-occupied\" (no spaces, at most 64 characters)";
const FIX_SYSTEM: &str = "write \"MDC\", \"LOINC\" or \"LOCAL\"";

/// `[[source.mqtt]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.mqtt]] table"
)]
pub(crate) struct RawMqtt {
    #[serde(default = "default_name")]
    pub(crate) name: Field<String>,
    #[serde(default)]
    pub(crate) url: Field<String>,
    #[serde(default)]
    pub(crate) client_id: Field<String>,
    #[serde(default)]
    pub(crate) username: Field<String>,
    #[serde(default)]
    pub(crate) password_file: Field<String>,
    #[serde(default)]
    pub(crate) ca_file: Field<String>,
    #[serde(default)]
    pub(crate) client_cert_file: Field<String>,
    #[serde(default)]
    pub(crate) client_key_file: Field<String>,
    #[serde(default = "default_keep_alive")]
    pub(crate) keep_alive: Field<crate::raw::Duration>,
    #[serde(default = "default_clean_session")]
    pub(crate) clean_session: Field<bool>,
    #[serde(default = "default_max_payload_bytes")]
    pub(crate) max_payload_bytes: Field<Integer>,
    #[serde(default)]
    pub(crate) topic: Field<Vec<Field<RawTopic>>>,
}

/// `[[source.mqtt.topic]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.mqtt.topic]] table"
)]
pub(crate) struct RawTopic {
    #[serde(default)]
    pub(crate) filter: Field<String>,
    #[serde(default = "default_payload")]
    pub(crate) payload: Field<String>,
    #[serde(default)]
    pub(crate) code: Field<String>,
    #[serde(default = "default_system")]
    pub(crate) system: Field<String>,
    #[serde(default)]
    pub(crate) unit: Field<String>,
    #[serde(default)]
    pub(crate) label: Field<String>,
    #[serde(default)]
    pub(crate) device_pointer: Field<String>,
    #[serde(default)]
    pub(crate) observed_at_pointer: Field<String>,
    #[serde(default)]
    pub(crate) value: Field<Vec<Field<RawValue>>>,
}

/// `[[source.mqtt.topic.value]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.mqtt.topic.value]] table"
)]
pub(crate) struct RawValue {
    #[serde(default)]
    pub(crate) pointer: Field<String>,
    #[serde(default)]
    pub(crate) code: Field<String>,
    #[serde(default = "default_system")]
    pub(crate) system: Field<String>,
    #[serde(default)]
    pub(crate) unit: Field<String>,
    #[serde(default)]
    pub(crate) label: Field<String>,
}

fn default_name() -> Field<String> {
    Field::absent(defaults::MQTT_NAME.to_owned())
}
fn default_keep_alive() -> Field<crate::raw::Duration> {
    Field::absent(crate::raw::Duration(defaults::MQTT_KEEP_ALIVE))
}
fn default_clean_session() -> Field<bool> {
    Field::absent(false)
}
fn default_max_payload_bytes() -> Field<Integer> {
    Field::absent(Integer(
        i64::try_from(defaults::MQTT_MAX_PAYLOAD_BYTES).unwrap_or(i64::MAX),
    ))
}
fn default_payload() -> Field<String> {
    Field::absent("json".to_owned())
}
fn default_system() -> Field<String> {
    Field::absent("LOCAL".to_owned())
}

/// The broker to connect to, from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttBroker {
    /// `mqtts://`: TLS (rustls), verified against `ca_file` or the system roots.
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port (default 1883, or 8883 with TLS).
    pub port: u16,
}

/// One validated `[[source.mqtt]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSource {
    /// Unique across all sources.
    pub name: String,
    /// The broker.
    pub broker: MqttBroker,
    /// The MQTT client id: it names the persistent session on the broker,
    /// so it must stay the same across restarts and differ between sources.
    /// Default `wardlink-<name>`.
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// File holding the password (read at start; its first line, without
    /// the newline).
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) to verify the broker with; system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for TLS client authentication.
    pub client_cert: Option<ClientCert>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// Start a new session on every connect (loses what the broker held
    /// while wardlink was away). Default false: a persistent session.
    pub clean_session: bool,
    /// Largest accepted packet (payload and topic), in bytes.
    pub max_payload_bytes: usize,
    /// Topic mappings, in file order; a message takes the first that matches.
    pub topics: Vec<MqttTopic>,
}

/// How a topic's payloads are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttPayload {
    /// A JSON document; values picked by JSON pointer.
    Json,
    /// A plain number (text such as `72.5`).
    Number,
    /// A plain flag: `true`/`false`, `1`/`0`, `on`/`off`, `yes`/`no`.
    Boolean,
}

/// One part of a topic filter template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicLevel {
    /// A level that must be exactly this.
    Exact(String),
    /// `+`: any one level.
    Any,
    /// `#`: any number of levels (last only).
    Rest,
    /// `{ward}`, `{room}`, `{bed}` or `{device}`: any one level, kept.
    Capture(Capture),
}

/// What a placeholder level fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// `{ward}`
    Ward,
    /// `{room}`
    Room,
    /// `{bed}`
    Bed,
    /// `{device}`
    Device,
}

/// One `[[source.mqtt.topic]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTopic {
    /// The template as written, e.g. `hospital/{ward}/bed/{bed}/occupancy`.
    pub template: String,
    /// The subscription filter (placeholders as `+`).
    pub subscription: String,
    /// The template's levels.
    pub levels: Vec<TopicLevel>,
    /// How payloads are read.
    pub payload: MqttPayload,
    /// The values: for `number`/`boolean` exactly one (no pointer); for
    /// `json` one or more, each with a pointer.
    pub values: Vec<MqttValue>,
    /// JSON only: where the device id is, if in the payload.
    pub device_pointer: Option<String>,
    /// JSON only: where the observation time (RFC 3339 or epoch ms) is.
    pub observed_at_pointer: Option<String>,
}

/// One value of a topic's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttValue {
    /// JSON pointer (json payloads only).
    pub pointer: Option<String>,
    /// Observation code.
    pub code: String,
    /// `MDC`, `LOINC` or `LOCAL`.
    pub system: String,
    /// Unit (UCUM preferred).
    pub unit: Option<String>,
    /// Display label.
    pub label: Option<String>,
}

impl MqttTopic {
    /// Matches a topic name against the template: `None` when it does not
    /// match, else the captured levels in template order.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<(Capture, &'t str)>> {
        let mut caps = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                TopicLevel::Rest => return Some(caps),
                TopicLevel::Any => {
                    parts.next()?;
                }
                TopicLevel::Exact(e) => {
                    if parts.next()? != e {
                        return None;
                    }
                }
                TopicLevel::Capture(c) => caps.push((*c, parts.next()?)),
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

pub(super) fn mqtt_list(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<Vec<Field<RawMqtt>>>,
    claims: &mut Claims,
) -> Vec<MqttSource> {
    let Some(list) = scope.get(report, "mqtt", field, FIX_LIST) else {
        return Vec::new();
    };
    let mut sources: Vec<MqttSource> = Vec::new();
    for (i, element) in list.iter().enumerate() {
        let key = format!("mqtt[{i}]");
        let Some(raw) = scope.get(report, &key, element, FIX_LIST) else {
            continue;
        };
        let s = Scope {
            path: scope.key(&key),
            span: element.span.clone(),
        };
        if let Some(source) = mqtt(report, &s, raw, claims) {
            if let Some(first) = sources
                .iter()
                .find(|o| o.broker == source.broker && o.client_id == source.client_id)
            {
                report.push(
                    s.span_of(&raw.client_id),
                    s.key("client_id"),
                    format!(
                        "client id {:?} is already used by source {:?} on the same broker; \
                         the broker would disconnect one session for the other",
                        source.client_id, first.name
                    ),
                    FIX_CLIENT_ID,
                );
            }
            sources.push(source);
        }
    }
    sources
}

fn text(report: &mut Report<'_>, scope: &Scope, key: &str, f: &Field<String>) -> Option<String> {
    scope
        .get(report, key, f, FIX_TEXT)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn mqtt(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawMqtt,
    claims: &mut Claims,
) -> Option<MqttSource> {
    let name = source_name(report, scope, &raw.name, claims);
    let url = scope.get(report, "url", &raw.url, FIX_URL);
    let broker = match url.map(|u| parse_url(u.trim())) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(message)) => {
            report.push(scope.span_of(&raw.url), scope.key("url"), message, FIX_URL);
            None
        }
    };
    let client_id = match text(report, scope, "client_id", &raw.client_id) {
        None => name.as_ref().map(|n| {
            let mut id = format!("wardlink-{n}");
            id.truncate(23);
            id
        }),
        Some(id) => {
            let ok = id.len() <= 23
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if ok {
                Some(id)
            } else {
                report.push(
                    scope.span_of(&raw.client_id),
                    scope.key("client_id"),
                    format!("{id:?} is not 1 to 23 characters of A-Z, a-z, 0-9, _ and -"),
                    FIX_CLIENT_ID,
                );
                None
            }
        }
    };
    let username = text(report, scope, "username", &raw.username);
    let file = |report: &mut Report<'_>, key: &str, f: &Field<String>| {
        scope
            .get(report, key, f, FIX_FILE)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let password_file = file(report, "password_file", &raw.password_file);
    if password_file.is_some() && username.is_none() {
        report.push(
            scope.span_of(&raw.password_file),
            scope.key("password_file"),
            "password_file is set but username is not",
            "set username too, or remove password_file",
        );
    }
    let ca_file = file(report, "ca_file", &raw.ca_file);
    let cert = file(report, "client_cert_file", &raw.client_cert_file);
    let key = file(report, "client_key_file", &raw.client_key_file);
    let client_cert = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (c, _) => {
            let (set, unset, f) = if c.is_some() {
                ("client_cert_file", "client_key_file", &raw.client_cert_file)
            } else {
                ("client_key_file", "client_cert_file", &raw.client_key_file)
            };
            report.push(
                scope.span_of(f),
                scope.key(set),
                format!("{set} is set but {unset} is not"),
                "set both client_cert_file and client_key_file, or neither",
            );
            None
        }
    };
    if let Some(b) = &broker {
        if !b.tls && (ca_file.is_some() || client_cert.is_some()) {
            report.push(
                scope.span_of(&raw.url),
                scope.key("url"),
                "ca_file or a client certificate is set but the url is plain mqtt://",
                "use an mqtts:// url, or remove ca_file, client_cert_file and client_key_file",
            );
        }
    }
    let keep_alive = scope.duration(
        report,
        "keep_alive",
        &raw.keep_alive,
        Duration::from_secs(5),
        FIX_KEEP_ALIVE,
    );
    let keep_alive = match keep_alive {
        Some(k) if k > Duration::from_secs(65_535) => {
            report.push(
                scope.span_of(&raw.keep_alive),
                scope.key("keep_alive"),
                format!("{}s is more than MQTT's maximum of 65535s", k.as_secs()),
                FIX_KEEP_ALIVE,
            );
            None
        }
        k => k,
    };
    let clean_session = scope
        .get(report, "clean_session", &raw.clean_session, FIX_BOOL)
        .copied();
    let max_payload_bytes = scope.usize(
        report,
        "max_payload_bytes",
        &raw.max_payload_bytes,
        64..=268_435_455,
        FIX_MAX_PAYLOAD,
    );
    let mut topics = Vec::new();
    if let Some(list) = scope.get(report, "topic", &raw.topic, FIX_TOPIC_LIST) {
        if list.is_empty() {
            report.push(
                scope.span.as_ref(),
                scope.key("topic"),
                "no [[source.mqtt.topic]] is configured: the source would receive nothing",
                "add at least one [[source.mqtt.topic]] table with a filter and a payload",
            );
        }
        for (i, element) in list.iter().enumerate() {
            let key = format!("topic[{i}]");
            if let Some(raw_topic) = scope.get(report, &key, element, FIX_TOPIC_LIST) {
                let s = Scope {
                    path: scope.key(&key),
                    span: element.span.clone(),
                };
                if let Some(t) = topic(report, &s, raw_topic) {
                    topics.push(t);
                }
            }
        }
    }
    Some(MqttSource {
        name: name?,
        broker: broker?,
        client_id: client_id?,
        username,
        password_file,
        ca_file,
        client_cert,
        keep_alive: keep_alive?,
        clean_session: clean_session?,
        max_payload_bytes: max_payload_bytes?,
        topics,
    })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
fn parse_url(url: &str) -> Result<MqttBroker, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!("{url:?} does not start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '?', '#', '@', ' ', '\\']) {
        return Err(format!(
            "{url:?} has a path, query, user name or space; only scheme, host and port are allowed \
             (the user name is its own key)"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return Err(format!("{url:?}: the IPv6 address has no closing ]"));
        };
        (ip, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return Err(format!("{url:?} has no valid host name or address"));
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?}: {p:?} is not a port from 1 to 65535")),
        },
    };
    Ok(MqttBroker {
        tls,
        host: host.to_owned(),
        port,
    })
}

fn parse_filter(template: &str) -> Result<Vec<TopicLevel>, String> {
    if template.is_empty() {
        return Err("the filter is empty".to_owned());
    }
    let parts: Vec<&str> = template.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len());
    let mut seen: Vec<Capture> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let level = match *p {
            "+" => TopicLevel::Any,
            "#" if i + 1 == parts.len() => TopicLevel::Rest,
            "#" => return Err(format!("{template:?}: # must be the last level")),
            "{ward}" => TopicLevel::Capture(Capture::Ward),
            "{room}" => TopicLevel::Capture(Capture::Room),
            "{bed}" => TopicLevel::Capture(Capture::Bed),
            "{device}" => TopicLevel::Capture(Capture::Device),
            p if p.contains(['+', '#', '{', '}']) => {
                return Err(format!(
                    "{template:?}: level {p:?} mixes a wildcard or placeholder with text; \
                     they must fill a whole level, and the placeholders are {{ward}}, {{room}}, \
                     {{bed}} and {{device}}"
                ))
            }
            p => TopicLevel::Exact(p.to_owned()),
        };
        if let TopicLevel::Capture(c) = level {
            if seen.contains(&c) {
                return Err(format!("{template:?}: placeholder {p} appears twice"));
            }
            seen.push(c);
        }
        levels.push(level);
    }
    Ok(levels)
}

fn pointer_ok(p: &str) -> bool {
    p.is_empty()
        || (p.starts_with('/') && {
            // `~` must be followed by 0 or 1.
            let b = p.as_bytes();
            b.iter()
                .enumerate()
                .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
        })
}

fn pointer(report: &mut Report<'_>, scope: &Scope, key: &str, f: &Field<String>) -> Option<String> {
    let p = text(report, scope, key, f)?;
    if pointer_ok(&p) {
        Some(p)
    } else {
        report.push(
            scope.span_of(f),
            scope.key(key),
            format!("{p:?} is not a JSON pointer"),
            FIX_POINTER,
        );
        None
    }
}

fn code(report: &mut Report<'_>, scope: &Scope, f: &Field<String>) -> Option<String> {
    match text(report, scope, "code", f) {
        None => {
            report.push(
                scope.span_of(f),
                scope.key("code"),
                "no code is set",
                FIX_CODE,
            );
            None
        }
        Some(c) if c.len() > 64 || c.contains(char::is_whitespace) => {
            report.push(
                scope.span_of(f),
                scope.key("code"),
                format!("{c:?} has spaces or is longer than 64 characters"),
                FIX_CODE,
            );
            None
        }
        Some(c) => Some(c),
    }
}

fn system(report: &mut Report<'_>, scope: &Scope, f: &Field<String>) -> Option<String> {
    let s = text(report, scope, "system", f)?;
    if matches!(s.as_str(), "MDC" | "LOINC" | "LOCAL") {
        Some(s)
    } else {
        report.push(
            scope.span_of(f),
            scope.key("system"),
            format!("{s:?} is not a known coding system"),
            FIX_SYSTEM,
        );
        None
    }
}

fn topic(report: &mut Report<'_>, scope: &Scope, raw: &RawTopic) -> Option<MqttTopic> {
    let template = match text(report, scope, "filter", &raw.filter) {
        None => {
            report.push(
                scope.span_of(&raw.filter),
                scope.key("filter"),
                "no filter is set",
                FIX_FILTER,
            );
            None
        }
        Some(t) => Some(t),
    };
    let levels = template.as_deref().and_then(|t| match parse_filter(t) {
        Ok(l) => Some(l),
        Err(message) => {
            report.push(
                scope.span_of(&raw.filter),
                scope.key("filter"),
                message,
                FIX_FILTER,
            );
            None
        }
    });
    let payload = match scope.get(report, "payload", &raw.payload, FIX_PAYLOAD) {
        None => None,
        Some(p) => match p.as_str() {
            "json" => Some(MqttPayload::Json),
            "number" => Some(MqttPayload::Number),
            "boolean" => Some(MqttPayload::Boolean),
            other => {
                report.push(
                    scope.span_of(&raw.payload),
                    scope.key("payload"),
                    format!("{other:?} is not a payload format"),
                    FIX_PAYLOAD,
                );
                None
            }
        },
    };
    let device_pointer = pointer(report, scope, "device_pointer", &raw.device_pointer);
    let observed_at_pointer = pointer(
        report,
        scope,
        "observed_at_pointer",
        &raw.observed_at_pointer,
    );
    let raw_values = scope
        .get(report, "value", &raw.value, FIX_VALUE_LIST)
        .map_or(&[][..], Vec::as_slice);
    let mut values = Vec::new();
    match payload {
        Some(MqttPayload::Json) => {
            for key in ["code", "unit", "label"] {
                let f = match key {
                    "code" => &raw.code,
                    "unit" => &raw.unit,
                    _ => &raw.label,
                };
                if f.span.is_some() {
                    report.push(
                        f.span.as_ref(),
                        scope.key(key),
                        format!("{key} is set on a json topic"),
                        "put code, system, unit and label in each [[source.mqtt.topic.value]] \
                         with its pointer",
                    );
                }
            }
            if raw_values.is_empty() {
                report.push(
                    scope.span.as_ref(),
                    scope.key("value"),
                    "a json topic has no [[source.mqtt.topic.value]]",
                    "add one [[source.mqtt.topic.value]] per value, with pointer and code",
                );
            }
            for (i, element) in raw_values.iter().enumerate() {
                let key = format!("value[{i}]");
                let Some(rv) = scope.get(report, &key, element, FIX_VALUE_LIST) else {
                    continue;
                };
                let s = Scope {
                    path: scope.key(&key),
                    span: element.span.clone(),
                };
                let p = pointer(report, &s, "pointer", &rv.pointer);
                if p.is_none() && rv.pointer.value.as_ref().is_ok_and(|v| v.trim().is_empty()) {
                    report.push(
                        s.span_of(&rv.pointer),
                        s.key("pointer"),
                        "no pointer is set",
                        FIX_POINTER,
                    );
                }
                let c = code(report, &s, &rv.code);
                let sys = system(report, &s, &rv.system);
                if let (Some(pointer), Some(code), Some(system)) = (p, c, sys) {
                    values.push(MqttValue {
                        pointer: Some(pointer),
                        code,
                        system,
                        unit: text(report, &s, "unit", &rv.unit),
                        label: text(report, &s, "label", &rv.label),
                    });
                }
            }
        }
        Some(MqttPayload::Number | MqttPayload::Boolean) => {
            if !raw_values.is_empty() {
                report.push(
                    raw.value.span.as_ref(),
                    scope.key("value"),
                    "a number or boolean topic has [[source.mqtt.topic.value]] tables",
                    "set code, system, unit and label on the topic itself, or use payload = \"json\"",
                );
            }
            for (key, f) in [
                ("device_pointer", &raw.device_pointer),
                ("observed_at_pointer", &raw.observed_at_pointer),
            ] {
                if f.span.is_some() {
                    report.push(
                        f.span.as_ref(),
                        scope.key(key),
                        format!("{key} is set on a plain (not json) topic"),
                        "remove it: a plain payload has no fields to point at",
                    );
                }
            }
            let c = code(report, scope, &raw.code);
            let sys = system(report, scope, &raw.system);
            if let (Some(code), Some(system)) = (c, sys) {
                values.push(MqttValue {
                    pointer: None,
                    code,
                    system,
                    unit: text(report, scope, "unit", &raw.unit),
                    label: text(report, scope, "label", &raw.label),
                });
            }
        }
        None => {}
    }
    let levels = levels?;
    let subscription = levels
        .iter()
        .map(|l| match l {
            TopicLevel::Exact(e) => e.as_str(),
            TopicLevel::Any | TopicLevel::Capture(_) => "+",
            TopicLevel::Rest => "#",
        })
        .collect::<Vec<_>>()
        .join("/");
    let payload = payload?;
    if values.is_empty() {
        return None;
    }
    Some(MqttTopic {
        template: template?,
        subscription,
        levels,
        payload,
        values,
        device_pointer,
        observed_at_pointer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_toml_str;

    const GOOD: &str = r#"
[[source.mqtt]]
name = "beds"
url = "mqtt://127.0.0.1:1883"
username = "edge"
password_file = "/etc/wardlink/mqtt.pass"
[[source.mqtt.topic]]
filter = "hospital/{ward}/bed/{bed}/occupancy"
payload = "boolean"
code = "bed-occupied"
[[source.mqtt.topic]]
filter = "hospital/{ward}/bed/{bed}/vitals"
payload = "json"
device_pointer = "/sensor"
observed_at_pointer = "/ts"
[[source.mqtt.topic.value]]
pointer = "/hr"
code = "MDC_PULS_OXIM_PULS_RATE"
system = "MDC"
unit = "/min"
[[source.mqtt.topic.value]]
pointer = "/weight_kg"
code = "29463-7"
system = "LOINC"
unit = "kg"
"#;

    #[test]
    fn a_full_source_validates() -> Result<(), String> {
        let c = from_toml_str(GOOD, "t").map_err(|e| e.to_string())?;
        let m = &c.sources.mqtt[0];
        assert_eq!(m.client_id, "wardlink-beds");
        assert_eq!(m.broker.port, 1883);
        assert!(!m.clean_session);
        assert_eq!(m.topics.len(), 2);
        assert_eq!(m.topics[0].subscription, "hospital/+/bed/+/occupancy");
        assert_eq!(m.topics[1].values.len(), 2);
        let caps = m.topics[0].matches("hospital/ICU/bed/7/occupancy");
        assert_eq!(
            caps,
            Some(vec![(Capture::Ward, "ICU"), (Capture::Bed, "7")])
        );
        assert_eq!(m.topics[0].matches("hospital/ICU/bed/7/weight"), None);
        assert_eq!(m.topics[0].matches("hospital/ICU/bed/7/occupancy/x"), None);
        Ok(())
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = GOOD
            .replace("mqtt://127.0.0.1:1883", "http://x")
            .replace("payload = \"boolean\"", "payload = \"bool\"")
            .replace("pointer = \"/hr\"", "pointer = \"hr\"")
            .replace("system = \"LOINC\"", "system = \"SNOMED\"");
        let e = match from_toml_str(&bad, "f.toml") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        for want in [
            "f.toml:4: source.mqtt[0].url:",
            "f.toml:9: source.mqtt[0].topic[0].payload:",
            "f.toml:17: source.mqtt[0].topic[1].value[0].pointer:",
            "f.toml:24: source.mqtt[0].topic[1].value[1].system:",
        ] {
            assert!(e.contains(want), "{want} not in\n{e}");
        }
    }

    #[test]
    fn unknown_keys_and_filter_mistakes() {
        let bad = GOOD
            .replace("username = \"edge\"", "usernme = \"edge\"")
            .replace("{ward}/bed/{bed}/occupancy", "{ward}/bed{bed}/occupancy");
        let e = match from_toml_str(&bad, "f.toml") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("source.mqtt[0].usernme: unknown key"), "{e}");
        assert!(e.contains("source.mqtt[0].topic[0].filter:"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtts://broker.local"),
            Ok(MqttBroker {
                tls: true,
                host: "broker.local".into(),
                port: 8883
            })
        );
        assert_eq!(parse_url("mqtt://[::1]:1884").map(|b| b.port), Ok(1884));
        assert!(parse_url("mqtt://u:p@host").is_err());
        assert!(parse_url("mqtt://host:0").is_err());
        assert!(parse_url("tcp://host").is_err());
    }

    #[test]
    fn the_commented_out_example_is_valid() -> Result<(), String> {
        let mut text = String::new();
        let mut inside = false;
        for line in crate::DEFAULT_TOML.lines() {
            if line == "# [[source.mqtt]]" {
                inside = true;
            }
            if inside && line.is_empty() {
                inside = false;
            }
            let key_like = line.strip_prefix("# ").is_some_and(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            });
            if inside && key_like {
                text.push_str(line.trim_start_matches("# "));
            } else if inside {
                text.push_str(line);
            }
            text.push('\n');
        }
        let c = from_toml_str(&text, "example").map_err(|e| e.to_string())?;
        assert_eq!(c.sources.mqtt.len(), 1);
        assert!(c.sources.mqtt[0].topics.len() >= 2);
        Ok(())
    }
}
