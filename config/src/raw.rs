//! Stage one: the TOML exactly as written, in serde structs.
//!
//! Shaped like the file: `deny_unknown_fields`, snake_case keys and one named
//! default function per key. Every value is wrapped in a [`Field`], which
//! remembers where it was written and keeps a value that does not deserialize
//! as an error instead of aborting, so that one wrong value does not hide the
//! next (all problems are reported at once). Leaf newtypes ([`Duration`],
//! [`ListenAddr`], [`Net`], [`Integer`]) check themselves while deserializing,
//! so their errors carry the value's position. Nothing here does I/O.
//!
//! Unknown keys would still abort a serde struct, so the parser removes (and
//! reports) them before deserializing, using the key lists of these structs
//! ([`keys_of`]): the structs below are the one definition of the schema.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::defaults;

/// A value from the file and where it was (`span` is `None` for a default).
#[derive(Debug)]
pub(crate) struct Field<T> {
    /// Byte range of the value in the text.
    pub(crate) span: Option<Range<usize>>,
    /// The value, or why it did not deserialize (the message only).
    pub(crate) value: Result<T, String>,
}

impl<T> Field<T> {
    /// The value of a key that is not in the file.
    pub(crate) fn absent(value: T) -> Self {
        Self {
            span: None,
            value: Ok(value),
        }
    }
}

impl<T: Default> Default for Field<T> {
    fn default() -> Self {
        Self::absent(T::default())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Caught<T>>::deserialize(deserializer)?;
        let span = spanned.span();
        Ok(Self {
            span: Some(span),
            value: spanned.into_inner().0,
        })
    }
}

/// A deserialization that cannot fail: the error is kept as the value.
///
/// Sound for `toml`, whose deserializer works on an already parsed tree: a
/// failed value leaves nothing half-read behind.
struct Caught<T>(Result<T, String>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Caught<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(T::deserialize(deserializer).map_err(|e| {
            // toml's message is the first line; later lines repeat the key path.
            e.to_string().lines().next().unwrap_or_default().to_owned()
        })))
    }
}

// ---------------------------------------------------------------------------
// Leaf types that check themselves while deserializing.

/// A whole number as written (TOML integers are 64-bit signed); ranges are
/// checked in the validation pass, which knows the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Integer(pub(crate) i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Integer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number without quotes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Integer, E> {
                Ok(Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Integer, E> {
                i64::try_from(v)
                    .map(Integer)
                    .map_err(|_| E::custom(format_args!("{v} is too large")))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Integer, E> {
                i64::try_from(v)
                    .map(Integer)
                    .map_err(|_| E::custom(format_args!("{v} is too large")))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Integer, E> {
                i64::try_from(v)
                    .map(Integer)
                    .map_err(|_| E::custom(format_args!("{v} is too large")))
            }
        }
        deserializer.deserialize_i64(V)
    }
}

/// A duration string parsed with `humantime` ("30s", "10m", "7d", "1h 30m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duration(pub(crate) std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration in quotes such as \"30s\", \"10m\" or \"7d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v)
                    .map(Duration)
                    .map_err(|e| E::custom(format_args!("{v:?} is not a duration ({e})")))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// An `IP:port` to listen on. Host names are refused: they are not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub(crate) SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ListenAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address and port in quotes such as \"0.0.0.0:2575\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddr, E> {
                if let Ok(addr) = v.parse::<SocketAddr>() {
                    return Ok(ListenAddr(addr));
                }
                if v.parse::<IpAddr>().is_ok() {
                    return Err(E::custom(format_args!("{v:?} has no port")));
                }
                let host_and_port = v
                    .rsplit_once(':')
                    .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                match host_and_port {
                    Some((host, _)) => Err(E::custom(format_args!(
                        "{v:?}: {host:?} is a host name, not an IP address"
                    ))),
                    None => Err(E::custom(format_args!(
                        "{v:?} is not an IP address and port"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A sender network: CIDR with no host bits set, or a single IP (/32, /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net(pub(crate) IpNet);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Net;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a network or IP address in quotes such as \"10.1.0.0/16\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Net, E> {
                if let Ok(ip) = v.parse::<IpAddr>() {
                    return Ok(Net(IpNet::from(ip)));
                }
                match v.parse::<IpNet>() {
                    Ok(net) if net.trunc() == net => Ok(Net(net)),
                    Ok(net) => Err(E::custom(format_args!(
                        "{v:?} has host bits set (the network is \"{}\")",
                        net.trunc()
                    ))),
                    Err(_) => Err(E::custom(format_args!(
                        "{v:?} is not a CIDR network or IP address"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------
// The file's shape. Each struct is one TOML table.

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) gateway: Field<RawGateway>,
    #[serde(default)]
    pub(crate) log: Field<RawLog>,
    #[serde(default)]
    pub(crate) store: Field<RawStore>,
    #[serde(default)]
    pub(crate) deid: Field<RawDeid>,
    #[serde(default)]
    pub(crate) validate: Field<RawValidate>,
    #[serde(default)]
    pub(crate) sync: Field<RawSync>,
    #[serde(default)]
    pub(crate) source: Field<RawSources>,
    #[serde(default)]
    pub(crate) admin: Field<crate::admin::RawAdmin>,
}

/// `[gateway]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [gateway] table"
)]
pub(crate) struct RawGateway {
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: Field<String>,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
        }
    }
}

fn default_state_dir() -> Field<String> {
    Field::absent(defaults::STATE_DIR.to_owned())
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [log] table"
)]
pub(crate) struct RawLog {
    #[serde(default = "default_log_level")]
    pub(crate) level: Field<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> Field<String> {
    Field::absent(defaults::LOG_LEVEL.as_str().to_owned())
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [store] table"
)]
pub(crate) struct RawStore {
    #[serde(default = "default_raw_retention")]
    pub(crate) raw_retention: Field<Duration>,
    #[serde(default = "default_group_commit_max")]
    pub(crate) group_commit_max: Field<Integer>,
    #[serde(default = "default_max_bytes")]
    pub(crate) max_bytes: Field<Integer>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            raw_retention: default_raw_retention(),
            group_commit_max: default_group_commit_max(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_raw_retention() -> Field<Duration> {
    Field::absent(Duration(defaults::RAW_RETENTION))
}

fn default_group_commit_max() -> Field<Integer> {
    integer(defaults::GROUP_COMMIT_MAX)
}

fn default_max_bytes() -> Field<Integer> {
    // The file says "no limit" with 0.
    integer(defaults::MAX_BYTES.unwrap_or(0))
}

/// `[deid]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [deid] table"
)]
pub(crate) struct RawDeid {
    #[serde(default = "default_deid_date_policy")]
    pub(crate) date_policy: Field<String>,
    #[serde(default = "default_deid_date_shift_max_days")]
    pub(crate) date_shift_max_days: Field<Integer>,
    #[serde(default = "default_deid_pseudonym_scope")]
    pub(crate) pseudonym_scope: Field<String>,
    #[serde(default = "default_deid_network_key_file")]
    pub(crate) network_key_file: Field<String>,
    #[serde(default)]
    pub(crate) overrides: Field<RawOverrides>,
    #[serde(default)]
    pub(crate) dicom: Field<crate::dicom::RawDeidDicom>,
}

impl Default for RawDeid {
    fn default() -> Self {
        Self {
            date_policy: default_deid_date_policy(),
            date_shift_max_days: default_deid_date_shift_max_days(),
            pseudonym_scope: default_deid_pseudonym_scope(),
            network_key_file: default_deid_network_key_file(),
            overrides: Field::default(),
            dicom: Field::default(),
        }
    }
}

fn default_deid_date_policy() -> Field<String> {
    Field::absent(defaults::DEID_DATE_POLICY.as_str().to_owned())
}

fn default_deid_date_shift_max_days() -> Field<Integer> {
    integer(defaults::DEID_DATE_SHIFT_MAX_DAYS)
}

fn default_deid_pseudonym_scope() -> Field<String> {
    Field::absent(defaults::DEID_PSEUDONYM_SCOPE.as_str().to_owned())
}

fn default_deid_network_key_file() -> Field<String> {
    // The file says "none" with "".
    Field::absent(defaults::DEID_NETWORK_KEY_FILE.unwrap_or("").to_owned())
}

/// `[deid.overrides]`: `FIELD = ACTION` entries. Its keys are data (field
/// names), not schema, so it is a map rather than a struct: the parser does
/// not check its keys, and validation checks their form.
#[derive(Debug, Default)]
pub(crate) struct RawOverrides(pub(crate) Vec<RawOverride>);

/// One `FIELD = ACTION` entry of `[deid.overrides]`.
#[derive(Debug)]
pub(crate) struct RawOverride {
    /// The key as written (unquoted).
    pub(crate) field: String,
    /// Byte range of the key in the text.
    pub(crate) field_span: Range<usize>,
    /// The value.
    pub(crate) action: Field<OverrideValue>,
}

impl<'de> Deserialize<'de> for RawOverrides {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOverrides;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [deid.overrides] table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawOverrides, A::Error> {
                let mut entries = Vec::new();
                while let Some((field, action)) =
                    map.next_entry::<Spanned<String>, Field<OverrideValue>>()?
                {
                    entries.push(RawOverride {
                        field_span: field.span(),
                        field: field.into_inner(),
                        action,
                    });
                }
                // The parsed table is sorted by key; the file's order is nicer.
                entries.sort_by_key(|e| e.field_span.start);
                Ok(RawOverrides(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The value of a `[deid.overrides]` entry: an action name, or a table when
/// the field was written without quotes (`PID-11.5 = ...` is the key `PID-11`
/// holding the table `{ 5 = ... }`), which validation explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OverrideValue {
    /// A string, checked as an action name in validation.
    Action(String),
    /// A table; its first key, if any.
    Table(Option<String>),
}

impl<'de> Deserialize<'de> for OverrideValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OverrideValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action in quotes such as \"remove\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OverrideValue, E> {
                Ok(OverrideValue::Action(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OverrideValue, A::Error> {
                let first = map.next_key::<String>()?;
                if first.is_some() {
                    map.next_value::<de::IgnoredAny>()?;
                    while map
                        .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                        .is_some()
                    {}
                }
                Ok(OverrideValue::Table(first))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `[validate]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [validate] table"
)]
pub(crate) struct RawValidate {
    #[serde(default = "default_validate_max_future_skew")]
    pub(crate) max_future_skew: Field<Duration>,
    #[serde(default = "default_validate_max_age")]
    pub(crate) max_age: Field<Duration>,
}

impl Default for RawValidate {
    fn default() -> Self {
        Self {
            max_future_skew: default_validate_max_future_skew(),
            max_age: default_validate_max_age(),
        }
    }
}

fn default_validate_max_future_skew() -> Field<Duration> {
    Field::absent(Duration(defaults::VALIDATE_MAX_FUTURE_SKEW))
}

fn default_validate_max_age() -> Field<Duration> {
    Field::absent(Duration(defaults::VALIDATE_MAX_AGE))
}

/// `[sync]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [sync] table"
)]
pub(crate) struct RawSync {
    #[serde(default = "default_sync_collector_url")]
    pub(crate) collector_url: Field<String>,
    #[serde(default = "empty_string")]
    pub(crate) collector_public_key: Field<String>,
    #[serde(default = "empty_string")]
    pub(crate) ca_file: Field<String>,
    #[serde(default = "empty_string")]
    pub(crate) client_cert_file: Field<String>,
    #[serde(default = "empty_string")]
    pub(crate) client_key_file: Field<String>,
    #[serde(default = "default_sync_batch_max_events")]
    pub(crate) batch_max_events: Field<Integer>,
    #[serde(default = "default_sync_batch_max_age")]
    pub(crate) batch_max_age: Field<Duration>,
    #[serde(default = "default_sync_outbox_max_bytes")]
    pub(crate) outbox_max_bytes: Field<Integer>,
    #[serde(default = "default_sync_retry_backoff_min")]
    pub(crate) retry_backoff_min: Field<Duration>,
    #[serde(default = "default_sync_retry_backoff_max")]
    pub(crate) retry_backoff_max: Field<Duration>,
}

impl Default for RawSync {
    fn default() -> Self {
        Self {
            collector_url: default_sync_collector_url(),
            collector_public_key: empty_string(),
            ca_file: empty_string(),
            client_cert_file: empty_string(),
            client_key_file: empty_string(),
            batch_max_events: default_sync_batch_max_events(),
            batch_max_age: default_sync_batch_max_age(),
            outbox_max_bytes: default_sync_outbox_max_bytes(),
            retry_backoff_min: default_sync_retry_backoff_min(),
            retry_backoff_max: default_sync_retry_backoff_max(),
        }
    }
}

fn default_sync_collector_url() -> Field<String> {
    // The file says "sync off" with "".
    Field::absent(defaults::SYNC_COLLECTOR_URL.unwrap_or("").to_owned())
}

/// The default of the optional text keys of `[sync]`: "" = not set.
fn empty_string() -> Field<String> {
    Field::absent(String::new())
}

fn default_sync_batch_max_events() -> Field<Integer> {
    integer(defaults::SYNC_BATCH_MAX_EVENTS)
}

fn default_sync_batch_max_age() -> Field<Duration> {
    Field::absent(Duration(defaults::SYNC_BATCH_MAX_AGE))
}

fn default_sync_outbox_max_bytes() -> Field<Integer> {
    // The file says "no quota" with 0.
    integer(defaults::SYNC_OUTBOX_MAX_BYTES.unwrap_or(0))
}

fn default_sync_retry_backoff_min() -> Field<Duration> {
    Field::absent(Duration(defaults::SYNC_RETRY_BACKOFF_MIN))
}

fn default_sync_retry_backoff_max() -> Field<Duration> {
    Field::absent(Duration(defaults::SYNC_RETRY_BACKOFF_MAX))
}

/// `[source]`: one key per source kind, each an array of tables.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [source] table"
)]
pub(crate) struct RawSources {
    #[serde(default)]
    pub(crate) mllp: Field<Vec<Field<RawMllp>>>,
    #[serde(default)]
    pub(crate) serial: Field<Vec<Field<crate::serial::RawSerial>>>,
    #[serde(default)]
    pub(crate) mqtt: Field<Vec<Field<crate::validate::mqtt::RawMqtt>>>,
    #[serde(default)]
    pub(crate) dicom: Field<Vec<Field<crate::dicom::RawDicom>>>,
}

/// `[[source.mllp]]`
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.mllp]] table"
)]
pub(crate) struct RawMllp {
    #[serde(default = "default_mllp_name")]
    pub(crate) name: Field<String>,
    #[serde(default = "default_mllp_listen")]
    pub(crate) listen: Field<ListenAddr>,
    #[serde(default = "default_mllp_allow")]
    pub(crate) allow: Field<Vec<Field<Net>>>,
    #[serde(default = "default_mllp_max_connections")]
    pub(crate) max_connections: Field<Integer>,
    #[serde(default = "default_mllp_max_message_bytes")]
    pub(crate) max_message_bytes: Field<Integer>,
    #[serde(default = "default_mllp_idle_timeout")]
    pub(crate) idle_timeout: Field<Duration>,
    #[serde(default = "default_mllp_duplicate_window")]
    pub(crate) duplicate_window: Field<Duration>,
    #[serde(default = "default_mllp_commit_blocks")]
    pub(crate) commit_blocks: Field<bool>,
    #[serde(default)]
    pub(crate) tls: Field<crate::tls::RawTls>,
}

impl Default for RawMllp {
    fn default() -> Self {
        Self {
            name: default_mllp_name(),
            listen: default_mllp_listen(),
            allow: default_mllp_allow(),
            max_connections: default_mllp_max_connections(),
            max_message_bytes: default_mllp_max_message_bytes(),
            idle_timeout: default_mllp_idle_timeout(),
            duplicate_window: default_mllp_duplicate_window(),
            commit_blocks: default_mllp_commit_blocks(),
            tls: Field::default(),
        }
    }
}

fn default_mllp_name() -> Field<String> {
    Field::absent(defaults::MLLP_NAME.to_owned())
}

fn default_mllp_listen() -> Field<ListenAddr> {
    Field::absent(ListenAddr(defaults::MLLP_LISTEN))
}

fn default_mllp_allow() -> Field<Vec<Field<Net>>> {
    Field::absent(Vec::new())
}

fn default_mllp_max_connections() -> Field<Integer> {
    integer(defaults::MLLP_MAX_CONNECTIONS)
}

fn default_mllp_max_message_bytes() -> Field<Integer> {
    integer(defaults::MLLP_MAX_MESSAGE_BYTES)
}

fn default_mllp_idle_timeout() -> Field<Duration> {
    Field::absent(Duration(defaults::MLLP_IDLE_TIMEOUT))
}

fn default_mllp_duplicate_window() -> Field<Duration> {
    Field::absent(Duration(defaults::MLLP_DUPLICATE_WINDOW))
}

fn default_mllp_commit_blocks() -> Field<bool> {
    Field::absent(defaults::MLLP_COMMIT_BLOCKS)
}

/// A default number as the file would write it. The defaults are small
/// constants; one that did not fit would become `i64::MAX` and fail
/// validation visibly rather than panic.
pub(crate) fn integer(value: impl TryInto<i64>) -> Field<Integer> {
    Field::absent(Integer(value.try_into().unwrap_or(i64::MAX)))
}

// ---------------------------------------------------------------------------
// The key list of a struct, from its own `Deserialize` impl.

/// The keys a derived `Deserialize` struct accepts, in declaration order.
///
/// Asks the derive for them: its `deserialize_struct` call passes the field
/// list, which this probe records before giving up.
pub(crate) fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The probe always fails after recording; the error carries nothing.
    let _ = T::deserialize(KeyProbe { keys: &mut keys });
    keys
}

struct KeyProbe<'a> {
    keys: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for KeyProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.keys = fields;
        Err(de::Error::custom("keys recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
