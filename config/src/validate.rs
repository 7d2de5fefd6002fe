//! Stage two: [`RawConfig`] → [`Config`], reporting every problem.
//!
//! Each check knows the dotted key path, so its problem names the key and the
//! line. A value that is wrong is replaced by its default to keep checking the
//! rest; the result is only used when nothing at all was wrong.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::time::Duration;

use crate::raw::{self, Field, Integer, OverrideValue, RawConfig, RawMllp};
use crate::report::Report;
use crate::{
    defaults, ClientCert, CollectorTarget, Config, DatePolicyConfig, DeidConfig,
    FieldOverrideConfig, GatewayConfig, LogConfig, LogLevel, MllpSource, OverrideAction,
    PseudonymScope, Sources, StoreConfig, SyncConfig, ValidateConfig,
};

// `[[source.mqtt]]` lives in its own file; a child module so it shares `Scope`.
#[path = "mqtt.rs"]
pub(crate) mod mqtt;

const STORE_MIN_MAX_BYTES: i64 = 1024 * 1024;
const NAME_MAX_CHARS: usize = 64;

const FIX_STATE_DIR: &str = "write a directory path in quotes, e.g. \"/var/lib/wardlink\"";
const FIX_LEVEL: &str =
    "write one of \"error\", \"warn\", \"info\", \"debug\", \"trace\" (lowercase)";
const FIX_RAW_RETENTION: &str = "write a duration of at least 1h in quotes, e.g. \"7d\"";
const FIX_GROUP_COMMIT_MAX: &str = "write a whole number from 1 to 65536, e.g. 512";
const FIX_MAX_BYTES: &str =
    "write 0 for no limit, or a size in bytes of at least 1048576 (1 MiB), \
     e.g. 10737418240 for 10 GiB";
const FIX_MLLP_LIST: &str =
    "write each MLLP listener as its own [[source.mllp]] table (double brackets)";
pub(crate) const FIX_NAME: &str =
    "use 1 to 64 characters of a-z, 0-9, _ and -, starting with a letter, e.g. \"lab_adt\"";
pub(crate) const FIX_LISTEN: &str =
    "write an IP address and port in quotes, e.g. \"0.0.0.0:2575\" or \"[::1]:2575\"; \
     host names are not resolved, use an IP address";
pub(crate) const FIX_ALLOW: &str =
    "write a list of networks, e.g. [\"10.1.0.0/16\", \"192.168.4.7\"], or [] to allow any sender";
pub(crate) const FIX_NET: &str = "write a CIDR network or a single IP address in quotes, e.g. \"10.1.0.0/16\" or \"192.168.4.7\"";
const FIX_MAX_CONNECTIONS: &str = "write a whole number from 1 to 10000, e.g. 64";
const FIX_MAX_MESSAGE_BYTES: &str = "write a size in bytes from 1024 to 1073741824 (1 GiB), \
     e.g. 16777216 for 16 MiB";
pub(crate) const FIX_IDLE_TIMEOUT: &str = "write a duration of at least 1s in quotes, e.g. \"10m\"";
const FIX_DUPLICATE_WINDOW: &str =
    "write a duration in quotes, e.g. \"24h\", or \"0s\" to turn duplicate detection off";
const FIX_COMMIT_BLOCKS: &str = "write true or false, without quotes";
const FIX_DATE_POLICY: &str = "write \"shift\" (every date of a patient moves by the same number \
     of days) or \"year\" (only the year is kept), lowercase";
const FIX_DATE_SHIFT_MAX_DAYS: &str = "write a whole number of days from 1 to 3650, e.g. 180";
const FIX_PSEUDONYM_SCOPE: &str = "write \"site\" (this gateway's own secret) or \"network\" \
     (ABHA numbers also with the secret shared by the network), lowercase";
const FIX_NETWORK_KEY_FILE: &str = "write the path of the shared network secret file in quotes, \
     e.g. \"/etc/wardlink/network.key\", or \"\" for none";
const FIX_OVERRIDE_FIELD: &str =
    "write the field in quotes as \"SEG-N\" or \"SEG-N.C\": a segment \
     of 3 characters A-Z and 0-9 starting with a letter, a field number from 1 to 999 and an \
     optional component from 1 to 99, without leading zeros, e.g. \"PID-11.5\" or \"PV1-3\"";
const FIX_OVERRIDE_ACTION: &str = "write one of \"remove\", \"pseudonymize\", \"generalize\", \
     \"shift_date\", \"keep\" in quotes";
const FIX_MAX_FUTURE_SKEW: &str = "write a duration of at least 1s in quotes, e.g. \"5m\"";
const FIX_MAX_AGE: &str = "write a duration of at least 1h in quotes, e.g. \"30d\"";
const FIX_COLLECTOR_URL: &str = "write the collector's base URL in quotes, e.g. \
     \"https://collector.example.org:8443\" (http:// only to a loopback address such as \
     \"http://127.0.0.1:8443\"), or \"\" to turn sync off";
const FIX_COLLECTOR_PUBLIC_KEY: &str = "write the 64 lowercase hex digits that \
     `wardlink-collector public-key` prints on the collector, in quotes";
const FIX_SYNC_FILE: &str =
    "write the path of a PEM file in quotes, e.g. \"/etc/wardlink/collector-ca.pem\", or \"\" for none";
const FIX_BATCH_MAX_EVENTS: &str = "write a whole number from 1 to 100000, e.g. 5000";
const FIX_BATCH_MAX_AGE: &str = "write a duration of at least 100ms in quotes, e.g. \"5s\"";
const FIX_OUTBOX_MAX_BYTES: &str =
    "write 0 for no quota, or a size in bytes of at least 1048576 (1 MiB), \
     e.g. 1073741824 for 1 GiB";
const FIX_RETRY_BACKOFF_MIN: &str = "write a duration of at least 100ms in quotes, e.g. \"1s\"";
const FIX_RETRY_BACKOFF_MAX: &str =
    "write a duration in quotes that is at least retry_backoff_min, e.g. \"5m\"";

/// Validates everything; the result is meaningful only if `report` stayed empty.
pub(crate) fn validate(raw: &RawConfig, report: &mut Report<'_>) -> Config {
    let root = Scope::root();
    let mut claims = Claims::default();
    // First: a DICOM spool directory may be relative to the state directory.
    let gateway = section(report, &root, "gateway", &raw.gateway, gateway).unwrap_or_default();
    let sources = section(report, &root, "source", &raw.source, |r, s, raw| Sources {
        mllp: mllp_list(r, s, &raw.mllp, &mut claims),
        serial: crate::serial::serial_list(r, s, &raw.serial, &mut claims),
        mqtt: mqtt::mqtt_list(r, s, &raw.mqtt, &mut claims),
        dicom: crate::dicom::dicom_list(r, s, &raw.dicom, &gateway.state_dir, &mut claims),
    })
    .unwrap_or_default();
    let admin = section(report, &root, "admin", &raw.admin, |r, s, raw| {
        crate::admin::validate(r, s, raw, &mut claims)
    })
    .unwrap_or_default();
    Config {
        gateway,
        log: section(report, &root, "log", &raw.log, log).unwrap_or_default(),
        store: section(report, &root, "store", &raw.store, store).unwrap_or_default(),
        deid: section(report, &root, "deid", &raw.deid, deid).unwrap_or_default(),
        validate: section(report, &root, "validate", &raw.validate, limits).unwrap_or_default(),
        sync: section(report, &root, "sync", &raw.sync, sync).unwrap_or_default(),
        sources,
        admin,
    }
}

/// Where in the file a table is: its dotted path and the span of its header.
pub(crate) struct Scope {
    pub(crate) path: String,
    pub(crate) span: Option<Range<usize>>,
}

impl Scope {
    fn root() -> Self {
        Self {
            path: String::new(),
            span: None,
        }
    }

    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The span of a field, or of this table when the key is absent.
    pub(crate) fn span_of<'a, T>(&'a self, field: &'a Field<T>) -> Option<&'a Range<usize>> {
        field.span.as_ref().or(self.span.as_ref())
    }

    /// The value of a field; reports it and returns `None` if it did not deserialize.
    pub(crate) fn get<'f, T>(
        &self,
        report: &mut Report<'_>,
        key: &str,
        field: &'f Field<T>,
        fix: &str,
    ) -> Option<&'f T> {
        match &field.value {
            Ok(value) => Some(value),
            Err(message) => {
                report.push(self.span_of(field), self.key(key), message.as_str(), fix);
                None
            }
        }
    }

    /// A whole number in `range`.
    /// A size limit in bytes where 0 means "no limit" and anything else
    /// must be at least [`STORE_MIN_MAX_BYTES`]. `None` when the key is
    /// absent or wrong (the caller keeps the default); `Some(None)` for 0.
    fn size_limit(
        &self,
        report: &mut Report<'_>,
        key: &str,
        field: &Field<Integer>,
        fix: &str,
    ) -> Option<Option<u64>> {
        let bytes = self.int(report, key, field, 0..=i64::MAX, fix)?;
        if bytes == 0 {
            return Some(None);
        }
        if bytes < STORE_MIN_MAX_BYTES {
            report.push(
                self.span_of(field),
                self.key(key),
                format!("{bytes} is less than the minimum of {STORE_MIN_MAX_BYTES} (1 MiB)"),
                fix,
            );
            return None;
        }
        Some(u64::try_from(bytes).ok())
    }

    pub(crate) fn int(
        &self,
        report: &mut Report<'_>,
        key: &str,
        field: &Field<Integer>,
        range: RangeInclusive<i64>,
        fix: &str,
    ) -> Option<i64> {
        let Integer(value) = *self.get(report, key, field, fix)?;
        if range.contains(&value) {
            return Some(value);
        }
        let message = if value < *range.start() {
            format!("{value} is less than the minimum of {}", range.start())
        } else {
            format!("{value} is more than the maximum of {}", range.end())
        };
        report.push(self.span_of(field), self.key(key), message, fix);
        None
    }

    /// A whole number in `range` as a `usize` (the ranges fit any `usize` of 32 bits or more).
    pub(crate) fn usize(
        &self,
        report: &mut Report<'_>,
        key: &str,
        field: &Field<Integer>,
        range: RangeInclusive<i64>,
        fix: &str,
    ) -> Option<usize> {
        let value = self.int(report, key, field, range, fix)?;
        match usize::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                report.push(
                    self.span_of(field),
                    self.key(key),
                    format!("{value} is too large for this machine"),
                    fix,
                );
                None
            }
        }
    }

    /// A duration of at least `min`.
    pub(crate) fn duration(
        &self,
        report: &mut Report<'_>,
        key: &str,
        field: &Field<raw::Duration>,
        min: Duration,
        fix: &str,
    ) -> Option<Duration> {
        let raw::Duration(value) = *self.get(report, key, field, fix)?;
        if value >= min {
            return Some(value);
        }
        report.push(
            self.span_of(field),
            self.key(key),
            format!(
                "\"{}\" is shorter than the minimum of {}",
                humantime::format_duration(value),
                humantime::format_duration(min)
            ),
            fix,
        );
        None
    }
}

/// A section table: reports it if it is not a table, else validates it.
fn section<R, T>(
    report: &mut Report<'_>,
    parent: &Scope,
    key: &str,
    field: &Field<R>,
    check: impl FnOnce(&mut Report<'_>, &Scope, &R) -> T,
) -> Option<T> {
    let fix = format!("write it as a [{}] table", parent.key(key));
    let raw = parent.get(report, key, field, &fix)?;
    let scope = Scope {
        path: parent.key(key),
        span: field.span.clone(),
    };
    Some(check(report, &scope, raw))
}

fn gateway(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawGateway) -> GatewayConfig {
    let mut state_dir = PathBuf::from(defaults::STATE_DIR);
    if let Some(dir) = scope.get(report, "state_dir", &raw.state_dir, FIX_STATE_DIR) {
        if dir.trim().is_empty() {
            report.push(
                scope.span_of(&raw.state_dir),
                scope.key("state_dir"),
                "the path is empty",
                FIX_STATE_DIR,
            );
        } else {
            state_dir = PathBuf::from(dir);
        }
    }
    GatewayConfig { state_dir }
}

fn log(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawLog) -> LogConfig {
    let mut level = defaults::LOG_LEVEL;
    if let Some(name) = scope.get(report, "level", &raw.level, FIX_LEVEL) {
        match LogLevel::from_name(name) {
            Some(l) => level = l,
            None => report.push(
                scope.span_of(&raw.level),
                scope.key("level"),
                format!("{name:?} is not a log level"),
                FIX_LEVEL,
            ),
        }
    }
    LogConfig { level }
}

fn store(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawStore) -> StoreConfig {
    let defaults = StoreConfig::default();
    let raw_retention = scope.duration(
        report,
        "raw_retention",
        &raw.raw_retention,
        Duration::from_secs(60 * 60),
        FIX_RAW_RETENTION,
    );
    let group_commit_max = scope.usize(
        report,
        "group_commit_max",
        &raw.group_commit_max,
        1..=65_536,
        FIX_GROUP_COMMIT_MAX,
    );
    let max_bytes = scope
        .size_limit(report, "max_bytes", &raw.max_bytes, FIX_MAX_BYTES)
        .unwrap_or(defaults.max_bytes);
    StoreConfig {
        raw_retention: raw_retention.unwrap_or(defaults.raw_retention),
        group_commit_max: group_commit_max.unwrap_or(defaults.group_commit_max),
        max_bytes,
    }
}

fn deid(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawDeid) -> DeidConfig {
    // `None` for a wrong value (already reported): checks that depend on it are skipped.
    let year_only = match scope.get(report, "date_policy", &raw.date_policy, FIX_DATE_POLICY) {
        None => None,
        Some(name) => match name.as_str() {
            "shift" => Some(false),
            "year" => Some(true),
            _ => {
                report.push(
                    scope.span_of(&raw.date_policy),
                    scope.key("date_policy"),
                    format!("{name:?} is not a date policy"),
                    FIX_DATE_POLICY,
                );
                None
            }
        },
    };
    let date_policy = if year_only == Some(true) {
        // The number of days does not apply, so its range is not checked; its type still is.
        let _ = scope.get(
            report,
            "date_shift_max_days",
            &raw.date_shift_max_days,
            FIX_DATE_SHIFT_MAX_DAYS,
        );
        DatePolicyConfig::YearOnly
    } else {
        let max_days = scope
            .int(
                report,
                "date_shift_max_days",
                &raw.date_shift_max_days,
                1..=3650,
                FIX_DATE_SHIFT_MAX_DAYS,
            )
            .and_then(|days| u32::try_from(days).ok());
        DatePolicyConfig::Shift {
            max_days: max_days.unwrap_or(defaults::DEID_DATE_SHIFT_MAX_DAYS),
        }
    };

    let pseudonym_scope = scope
        .get(
            report,
            "pseudonym_scope",
            &raw.pseudonym_scope,
            FIX_PSEUDONYM_SCOPE,
        )
        .and_then(|name| {
            let found = PseudonymScope::from_name(name);
            if found.is_none() {
                report.push(
                    scope.span_of(&raw.pseudonym_scope),
                    scope.key("pseudonym_scope"),
                    format!("{name:?} is not a pseudonym scope"),
                    FIX_PSEUDONYM_SCOPE,
                );
            }
            found
        });
    // `Some(None)`: written empty (or absent); `None`: wrong type, reported.
    let network_key_file = scope
        .get(
            report,
            "network_key_file",
            &raw.network_key_file,
            FIX_NETWORK_KEY_FILE,
        )
        .map(|path| (!path.trim().is_empty()).then(|| PathBuf::from(path)));
    match (pseudonym_scope, &network_key_file) {
        (Some(PseudonymScope::Network), Some(None)) => {
            let state = match &raw.network_key_file.span {
                Some(span) => format!("is empty{}", at_line(report, Some(span))),
                None => "is not set".to_owned(),
            };
            report.push(
                scope.span_of(&raw.pseudonym_scope),
                scope.key("pseudonym_scope"),
                format!(
                    "\"network\" needs the secret shared by the network, but {} {state}",
                    scope.key("network_key_file")
                ),
                "set network_key_file to the shared secret file, e.g. \
                 network_key_file = \"/etc/wardlink/network.key\", or write pseudonym_scope = \"site\"",
            );
        }
        (Some(PseudonymScope::Site), Some(Some(_))) => {
            let state = match &raw.pseudonym_scope.span {
                Some(span) => at_line(report, Some(span)),
                None => " (the default)".to_owned(),
            };
            report.push(
                scope.span_of(&raw.network_key_file),
                scope.key("network_key_file"),
                format!(
                    "a network key file is set, but {} is \"site\"{state}, which uses no network secret",
                    scope.key("pseudonym_scope")
                ),
                "write pseudonym_scope = \"network\" to use it, or network_key_file = \"\" \
                 for site pseudonyms only",
            );
        }
        _ => {}
    }

    DeidConfig {
        date_policy,
        pseudonym_scope: pseudonym_scope.unwrap_or(defaults::DEID_PSEUDONYM_SCOPE),
        network_key_file: network_key_file.flatten(),
        overrides: section(report, scope, "overrides", &raw.overrides, overrides)
            .unwrap_or_default(),
        dicom: section(report, scope, "dicom", &raw.dicom, crate::dicom::deid_dicom)
            .unwrap_or_default(),
    }
}

fn overrides(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &raw::RawOverrides,
) -> Vec<FieldOverrideConfig> {
    let mut overrides = Vec::new();
    for entry in &raw.0 {
        let key = toml_key(&entry.field);
        if let Ok(OverrideValue::Table(first)) = &entry.action.value {
            let (key, message, fix) = match first {
                // `PID-11.5 = ...` without quotes: the key `PID-11` holding `{ 5 = ... }`.
                Some(sub) if !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit()) => {
                    let written = format!("{}.{sub}", entry.field);
                    (
                        format!("{key}.{sub}"),
                        format!(
                            "the value is a table: without quotes, {written} is read as the \
                             key {} holding a table with the key {sub}",
                            entry.field
                        ),
                        format!("write the field in quotes, e.g. \"{written}\" = \"generalize\""),
                    )
                }
                _ => (
                    key,
                    "the value is a table, not an action".to_owned(),
                    FIX_OVERRIDE_ACTION.to_owned(),
                ),
            };
            report.push(Some(&entry.field_span), scope.key(&key), message, fix);
            continue;
        }
        let field_problem = override_field_problem(&entry.field);
        if let Some(message) = &field_problem {
            report.push(
                Some(&entry.field_span),
                scope.key(&key),
                message.as_str(),
                FIX_OVERRIDE_FIELD,
            );
        }
        let action = match scope.get(report, &key, &entry.action, FIX_OVERRIDE_ACTION) {
            Some(OverrideValue::Action(name)) => {
                let found = OverrideAction::from_name(name);
                if found.is_none() {
                    report.push(
                        scope.span_of(&entry.action),
                        scope.key(&key),
                        format!("{name:?} is not an action"),
                        FIX_OVERRIDE_ACTION,
                    );
                }
                found
            }
            // A table was reported above.
            Some(OverrideValue::Table(_)) | None => None,
        };
        if let (None, Some(action)) = (field_problem, action) {
            overrides.push(FieldOverrideConfig {
                field: entry.field.clone(),
                action,
                line: Some(report.line_of(entry.field_span.start)),
            });
        }
    }
    overrides
}

/// What is wrong with an override's field, which must be `SEG-N` or
/// `SEG-N.C` (one spelling per field: uppercase, no leading zeros).
fn override_field_problem(field: &str) -> Option<String> {
    if field.is_empty() {
        return Some("the field is empty".to_owned());
    }
    let Some((segment, rest)) = field.split_once('-') else {
        return Some(format!("{field:?} has no field number (\"SEG-N\")"));
    };
    let segment_ok = segment.len() == 3
        && segment.starts_with(|c: char| c.is_ascii_uppercase())
        && segment
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !segment_ok {
        return Some(format!("{segment:?} is not a segment name"));
    }
    let (number, component) = match rest.split_once('.') {
        Some((number, component)) => (number, Some(component)),
        None => (rest, None),
    };
    if !number_from_1_to(number, 999) {
        return Some(format!("{number:?} is not a field number from 1 to 999"));
    }
    match component {
        Some(component) if !number_from_1_to(component, 99) => Some(format!(
            "{component:?} is not a component number from 1 to 99"
        )),
        _ => None,
    }
}

/// Decimal digits without a leading zero, from 1 to `max`.
fn number_from_1_to(digits: &str, max: u32) -> bool {
    !digits.starts_with('0')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u32>().is_ok_and(|n| n <= max)
}

/// A key as it is written in a dotted path: bare if TOML allows, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// `[validate]`.
fn limits(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawValidate) -> ValidateConfig {
    let defaults = ValidateConfig::default();
    ValidateConfig {
        max_future_skew: scope
            .duration(
                report,
                "max_future_skew",
                &raw.max_future_skew,
                Duration::from_secs(1),
                FIX_MAX_FUTURE_SKEW,
            )
            .unwrap_or(defaults.max_future_skew),
        max_age: scope
            .duration(
                report,
                "max_age",
                &raw.max_age,
                Duration::from_secs(60 * 60),
                FIX_MAX_AGE,
            )
            .unwrap_or(defaults.max_age),
    }
}

/// `[sync]`.
fn sync(report: &mut Report<'_>, scope: &Scope, raw: &raw::RawSync) -> SyncConfig {
    let defaults = SyncConfig::default();
    let batch_max_events = scope.usize(
        report,
        "batch_max_events",
        &raw.batch_max_events,
        1..=100_000,
        FIX_BATCH_MAX_EVENTS,
    );
    let batch_max_age = scope.duration(
        report,
        "batch_max_age",
        &raw.batch_max_age,
        Duration::from_millis(100),
        FIX_BATCH_MAX_AGE,
    );
    let outbox_max_bytes = scope
        .size_limit(
            report,
            "outbox_max_bytes",
            &raw.outbox_max_bytes,
            FIX_OUTBOX_MAX_BYTES,
        )
        .unwrap_or(defaults.outbox_max_bytes);
    let backoff_min = scope.duration(
        report,
        "retry_backoff_min",
        &raw.retry_backoff_min,
        Duration::from_millis(100),
        FIX_RETRY_BACKOFF_MIN,
    );
    let backoff_max = scope.duration(
        report,
        "retry_backoff_max",
        &raw.retry_backoff_max,
        Duration::from_millis(100),
        FIX_RETRY_BACKOFF_MAX,
    );
    if let (Some(min), Some(max)) = (backoff_min, backoff_max) {
        if max < min {
            report.push(
                scope.span_of(&raw.retry_backoff_max),
                scope.key("retry_backoff_max"),
                format!(
                    "\"{}\" is shorter than {} \"{}\"",
                    humantime::format_duration(max),
                    scope.key("retry_backoff_min"),
                    humantime::format_duration(min)
                ),
                FIX_RETRY_BACKOFF_MAX,
            );
        }
    }
    SyncConfig {
        collector: collector_target(report, scope, raw),
        batch_max_events: batch_max_events.unwrap_or(defaults.batch_max_events),
        batch_max_age: batch_max_age.unwrap_or(defaults.batch_max_age),
        outbox_max_bytes,
        retry_backoff_min: backoff_min.unwrap_or(defaults.retry_backoff_min),
        retry_backoff_max: backoff_max.unwrap_or(defaults.retry_backoff_max),
    }
}

/// The collector keys of `[sync]`: `None` when `collector_url` is empty
/// (sync off; the other keys are then only type-checked).
fn collector_target(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &raw::RawSync,
) -> Option<CollectorTarget> {
    let url = scope.get(
        report,
        "collector_url",
        &raw.collector_url,
        FIX_COLLECTOR_URL,
    );
    let public_key = scope.get(
        report,
        "collector_public_key",
        &raw.collector_public_key,
        FIX_COLLECTOR_PUBLIC_KEY,
    );
    let ca_file = scope.get(report, "ca_file", &raw.ca_file, FIX_SYNC_FILE);
    let cert_file = scope.get(
        report,
        "client_cert_file",
        &raw.client_cert_file,
        FIX_SYNC_FILE,
    );
    let key_file = scope.get(
        report,
        "client_key_file",
        &raw.client_key_file,
        FIX_SYNC_FILE,
    );
    let url = url?.trim();
    if url.is_empty() {
        return None;
    }
    let url = match collector_url(url) {
        Ok(url) => Some(url),
        Err(message) => {
            report.push(
                scope.span_of(&raw.collector_url),
                scope.key("collector_url"),
                message,
                FIX_COLLECTOR_URL,
            );
            None
        }
    };
    let public_key = public_key.and_then(|key| {
        let problem = if key.is_empty() {
            Some(format!(
                "sync is on ({} is set) but the collector's public key is not set",
                scope.key("collector_url")
            ))
        } else if key.len() != 64 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Some(format!("{key:?} is not 64 lowercase hex digits"))
        } else {
            None
        };
        match problem {
            None => Some(key.clone()),
            Some(message) => {
                report.push(
                    scope.span_of(&raw.collector_public_key),
                    scope.key("collector_public_key"),
                    message,
                    FIX_COLLECTOR_PUBLIC_KEY,
                );
                None
            }
        }
    });
    let path = |p: Option<&String>| {
        p.map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let (ca_file, cert_file, key_file) = (path(ca_file), path(cert_file), path(key_file));
    let client_cert = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            let (set, unset, field) = if raw
                .client_key_file
                .value
                .as_ref()
                .is_ok_and(|k| k.trim().is_empty())
            {
                ("client_cert_file", "client_key_file", &raw.client_cert_file)
            } else {
                ("client_key_file", "client_cert_file", &raw.client_key_file)
            };
            report.push(
                scope.span_of(field),
                scope.key(set),
                format!("{} is set but {} is not", scope.key(set), scope.key(unset)),
                "set both client_cert_file and client_key_file (a client certificate and its \
                 key), or neither",
            );
            None
        }
    };
    let url = url?;
    if url.starts_with("http://") {
        for (key, set, field) in [
            ("ca_file", ca_file.is_some(), &raw.ca_file),
            (
                "client_cert_file",
                client_cert.is_some(),
                &raw.client_cert_file,
            ),
        ] {
            if set {
                report.push(
                    scope.span_of(field),
                    scope.key(key),
                    format!(
                        "{} is plain http://, which uses no certificates",
                        scope.key("collector_url")
                    ),
                    "use an https:// collector_url, or write \"\" here",
                );
            }
        }
    }
    Some(CollectorTarget {
        url,
        public_key: public_key?,
        ca_file,
        client_cert,
    })
}

/// Check a collector URL and return it without a trailing `/`:
/// `https://HOST[:PORT][/PATH]`, or `http://` with a loopback HOST.
fn collector_url(url: &str) -> Result<String, String> {
    let (plain, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else {
        return Err(format!("{url:?} does not start with https://"));
    };
    if rest.contains(['?', '#', '@', ' ', '\\']) {
        return Err(format!(
            "{url:?} has a query, fragment, user name or space; only scheme, host, port and path are allowed"
        ));
    }
    let (authority, _path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return Err(format!("{url:?}: the IPv6 address has no closing ]"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: {ip:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("{url:?}: unexpected {after:?} after the address")),
            },
        };
        (ip, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    if !host_ok {
        return Err(format!("{url:?} has no valid host name or address"));
    }
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) || !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("{url:?}: {port:?} is not a port from 1 to 65535"));
        }
    }
    if plain {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "{url:?} is plain http:// to a host that is not loopback; batches cross the \
                 network only over https://"
            ));
        }
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn mllp_list(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<Vec<Field<RawMllp>>>,
    claims: &mut Claims,
) -> Vec<MllpSource> {
    let Some(list) = scope.get(report, "mllp", field, FIX_MLLP_LIST) else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    for (i, element) in list.iter().enumerate() {
        let key = format!("mllp[{i}]");
        if let Some(raw) = scope.get(report, &key, element, FIX_MLLP_LIST) {
            let listener = Scope {
                path: scope.key(&key),
                span: element.span.clone(),
            };
            sources.push(mllp(report, &listener, raw, claims));
        }
    }
    sources
}

fn mllp(report: &mut Report<'_>, scope: &Scope, raw: &RawMllp, claims: &mut Claims) -> MllpSource {
    let defaults = MllpSource::default();
    let name = source_name(report, scope, &raw.name, claims);
    let listen = scope
        .get(report, "listen", &raw.listen, FIX_LISTEN)
        .map(|raw::ListenAddr(addr)| *addr);
    if let Some(addr) = listen {
        claims.claim(
            report,
            Resource::TcpListen(addr),
            scope.key("listen"),
            scope.span_of(&raw.listen).cloned(),
        );
    }
    let mut allow = Vec::new();
    if let Some(nets) = scope.get(report, "allow", &raw.allow, FIX_ALLOW) {
        for (i, net) in nets.iter().enumerate() {
            let key = format!("allow[{i}]");
            let net_scope = Scope {
                path: scope.path.clone(),
                span: scope.span_of(&raw.allow).cloned(),
            };
            if let Some(raw::Net(net)) = net_scope.get(report, &key, net, FIX_NET) {
                allow.push(*net);
            }
        }
    }
    MllpSource {
        name: name.unwrap_or(defaults.name),
        listen: listen.unwrap_or(defaults.listen),
        allow,
        max_connections: scope
            .usize(
                report,
                "max_connections",
                &raw.max_connections,
                1..=10_000,
                FIX_MAX_CONNECTIONS,
            )
            .unwrap_or(defaults.max_connections),
        max_message_bytes: scope
            .usize(
                report,
                "max_message_bytes",
                &raw.max_message_bytes,
                1024..=1_073_741_824,
                FIX_MAX_MESSAGE_BYTES,
            )
            .unwrap_or(defaults.max_message_bytes),
        idle_timeout: scope
            .duration(
                report,
                "idle_timeout",
                &raw.idle_timeout,
                Duration::from_secs(1),
                FIX_IDLE_TIMEOUT,
            )
            .unwrap_or(defaults.idle_timeout),
        duplicate_window: scope
            .duration(
                report,
                "duplicate_window",
                &raw.duplicate_window,
                Duration::ZERO,
                FIX_DUPLICATE_WINDOW,
            )
            .unwrap_or(defaults.duplicate_window),
        commit_blocks: scope
            .get(
                report,
                "commit_blocks",
                &raw.commit_blocks,
                FIX_COMMIT_BLOCKS,
            )
            .copied()
            .unwrap_or(defaults.commit_blocks),
        tls: section(report, scope, "tls", &raw.tls, crate::tls::validate).flatten(),
    }
}

/// A source's `name`: checked for its form, then for uniqueness across all sources.
pub(crate) fn source_name(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<String>,
    claims: &mut Claims,
) -> Option<String> {
    let name = scope.get(report, "name", field, FIX_NAME)?;
    let span = scope.span_of(field).cloned();
    let key = scope.key("name");
    if let Some(message) = name_problem(name) {
        report.push(span.as_ref(), key, message, FIX_NAME);
        return None;
    }
    claims.name(report, name, key, span);
    Some(name.clone())
}

fn name_problem(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Some("the name is empty".to_owned());
    }
    if chars > NAME_MAX_CHARS {
        return Some(format!(
            "{name:?} is {chars} characters long, more than the maximum of {NAME_MAX_CHARS}"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!("{name:?} does not start with a lowercase letter"));
    }
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))?;
    Some(format!(
        "{name:?} contains {bad:?}, which is not allowed in a name"
    ))
}

/// Something only one source can have: a listening port (later: a serial
/// device, an MQTT client id, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    TcpListen(SocketAddr),
    /// A serial device path, as written (aliases such as a by-id link and
    /// its ttyUSB name are not resolved: that would need I/O).
    SerialDevice(String),
    /// A DICOM spool directory (`keep_files_dir`), resolved lexically: two
    /// sources would count and evict each other's files.
    SpoolDir(PathBuf),
}

impl Resource {
    /// Would binding both fail? Port 0 never conflicts. A wildcard address
    /// overlaps every address of its family, and `[::]` (dual-stack on Linux)
    /// overlaps IPv4 too.
    fn conflicts_with(&self, other: &Resource) -> bool {
        match (self, other) {
            (Resource::TcpListen(a), Resource::TcpListen(b)) => {
                a.port() != 0 && a.port() == b.port() && ips_overlap(a.ip(), b.ip())
            }
            (Resource::SerialDevice(a), Resource::SerialDevice(b)) => a == b,
            (Resource::SpoolDir(a), Resource::SpoolDir(b)) => a.starts_with(b) || b.starts_with(a),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Resource::TcpListen(addr) => format!("\"{addr}\""),
            Resource::SerialDevice(path) => format!("{path:?}"),
            Resource::SpoolDir(path) => format!("{:?}", path.display().to_string()),
        }
    }
}

fn ips_overlap(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    let wildcard_for = |w: IpAddr, other: IpAddr| match w {
        IpAddr::V6(v6) => v6.is_unspecified(),
        IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
    };
    a == b || wildcard_for(a, b) || wildcard_for(b, a)
}

/// Names and resources claimed so far, with the key and span that claimed them.
#[derive(Default)]
pub(crate) struct Claims {
    names: Vec<(String, String, Option<Range<usize>>)>,
    resources: Vec<(Resource, String, Option<Range<usize>>)>,
}

impl Claims {
    fn name(
        &mut self,
        report: &mut Report<'_>,
        name: &str,
        key: String,
        span: Option<Range<usize>>,
    ) {
        if let Some((_, first_key, first_span)) = self.names.iter().find(|(n, _, _)| n == name) {
            let message = format!(
                "{name:?} is already used by {first_key}{}; names must be unique across all sources",
                at_line(report, first_span.as_ref())
            );
            report.push(
                span.as_ref(),
                key.as_str(),
                message,
                "give every source its own name",
            );
        }
        self.names.push((name.to_owned(), key, span));
    }

    pub(crate) fn claim(
        &mut self,
        report: &mut Report<'_>,
        resource: Resource,
        key: String,
        span: Option<Range<usize>>,
    ) {
        for (first, first_key, first_span) in &self.resources {
            if resource.conflicts_with(first) {
                let line = at_line(report, first_span.as_ref());
                if let Resource::SpoolDir(_) = resource {
                    report.push(
                        span.as_ref(),
                        key.as_str(),
                        format!(
                            "{} is, or is nested with, {} of {first_key}{line}; two sources cannot share a spool",
                            resource.describe(),
                            first.describe()
                        ),
                        "give each [[source.dicom]] its own keep_files_dir, side by side, e.g. \"dicom-spool/ct\" and \"dicom-spool/mr\"",
                    );
                    continue;
                }
                if let Resource::SerialDevice(_) = resource {
                    report.push(
                        span.as_ref(),
                        key.as_str(),
                        format!(
                            "{} is already used by {first_key}{line}; two sources cannot share a serial device",
                            resource.describe()
                        ),
                        "give each device its own [[source.serial]] table, or remove one of them",
                    );
                    continue;
                }
                let message = if resource == *first {
                    format!(
                        "{} is already used by {first_key}{line}; two sources cannot listen on the same port",
                        resource.describe()
                    )
                } else {
                    format!(
                        "{} overlaps {} of {first_key}{line}; two sources cannot listen on the same port",
                        resource.describe(),
                        first.describe()
                    )
                };
                report.push(
                    span.as_ref(),
                    key.as_str(),
                    message,
                    "give one of them another port or a different, specific IP address",
                );
            }
        }
        self.resources.push((resource, key, span));
    }
}

fn at_line(report: &Report<'_>, span: Option<&Range<usize>>) -> String {
    span.map(|s| format!(" (line {})", report.line_of(s.start)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> Resource {
        match s.parse() {
            Ok(addr) => Resource::TcpListen(addr),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn listen_conflicts() {
        let conflicts =
            |a, b| listen(a).conflicts_with(&listen(b)) && listen(b).conflicts_with(&listen(a));
        assert!(conflicts("127.0.0.1:2575", "127.0.0.1:2575"));
        assert!(conflicts("0.0.0.0:2575", "127.0.0.1:2575"));
        assert!(conflicts("[::]:2575", "127.0.0.1:2575"));
        assert!(conflicts("[::]:2575", "[::1]:2575"));
        assert!(conflicts("[::ffff:127.0.0.1]:2575", "127.0.0.1:2575"));
        assert!(!conflicts("0.0.0.0:2575", "[::1]:2575"));
        assert!(!conflicts("127.0.0.1:2575", "127.0.0.2:2575"));
        assert!(!conflicts("127.0.0.1:2575", "127.0.0.1:2576"));
        assert!(!conflicts("127.0.0.1:0", "127.0.0.1:0"));
        assert!(!conflicts("0.0.0.0:0", "127.0.0.1:0"));
    }

    #[test]
    fn name_rules() {
        assert_eq!(name_problem("lab_adt-2"), None);
        assert_eq!(name_problem("a"), None);
        assert_eq!(name_problem(&"a".repeat(64)), None);
        assert!(name_problem("").is_some());
        assert!(name_problem(&"a".repeat(65)).is_some());
        assert!(name_problem("2lab").is_some());
        assert!(name_problem("_lab").is_some());
        assert!(name_problem("Lab").is_some());
        assert!(name_problem("lab adt").is_some());
        assert!(name_problem("läb").is_some());
    }

    #[test]
    fn override_field_rules() {
        for good in ["PID-11.5", "PV1-3", "ZZ9-999.99", "OBX-5", "IN1-1.1"] {
            assert_eq!(override_field_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "PID",
            "PID-",
            "PID-0",
            "PID-011",
            "PID-1000",
            "PID-11.",
            "PID-11.0",
            "PID-11.05",
            "PID-11.100",
            "PID-11.5.1",
            "pid-11",
            "Pid-11",
            "1ID-11",
            "PI-11",
            "PIDX-11",
            "PÍD-11",
            "PID-+1",
            "PID-11:TX",
            " PID-11",
            "PID-1 ",
        ] {
            assert!(
                override_field_problem(bad).is_some(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn collector_urls() {
        for (good, normalized) in [
            (
                "https://collector.example.org",
                "https://collector.example.org",
            ),
            (
                "https://collector.example.org:8443/",
                "https://collector.example.org:8443",
            ),
            (
                "https://10.0.0.5:8443/wardlink/",
                "https://10.0.0.5:8443/wardlink",
            ),
            ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
            ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
            ("http://127.0.0.2:1", "http://127.0.0.2:1"),
            ("http://[::1]:8443", "http://[::1]:8443"),
            ("http://localhost:8443", "http://localhost:8443"),
        ] {
            assert_eq!(collector_url(good).as_deref(), Ok(normalized), "{good}");
        }
        for bad in [
            "collector.example.org",
            "ftp://collector",
            "http://10.0.0.5:8443",
            "http://collector.example.org",
            "https://",
            "https://host:0",
            "https://host:99999",
            "https://host:port",
            "https://user@host",
            "https://host/?q=1",
            "https://[::1",
            "https://[zz]:1",
        ] {
            assert!(collector_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn keys_are_quoted_only_when_toml_needs_it() {
        assert_eq!(toml_key("PV1-3"), "PV1-3");
        assert_eq!(toml_key("PID-11.5"), "\"PID-11.5\"");
        assert_eq!(toml_key(""), "\"\"");
    }
}
