//! `[[source.dicom]]`: the DICOM edge node (C-ECHO, C-STORE, MPPS) — its raw
//! shape, its validation and its validated model, kept together in one file.
//!
//! Hooked into the rest of the crate by one field of `RawSources` and
//! `Sources`, one call in `validate::validate` and one key check in
//! `parse::remove_unknown_keys`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::raw::{self, Field, Integer, ListenAddr, Net};
use crate::report::Report;
use crate::validate::{
    source_name, Claims, Resource, Scope, FIX_ALLOW, FIX_IDLE_TIMEOUT, FIX_LISTEN, FIX_NET,
};

/// `source.dicom[].name`.
pub const DICOM_NAME: &str = "dicom";
/// `source.dicom[].ae_title`: the called AE title wardlink answers to.
pub const DICOM_AE_TITLE: &str = "WARDLINK";
/// `source.dicom[].listen`: loopback only, the registered DICOM port 11112
/// (104 needs `CAP_NET_BIND_SERVICE`, which the package grants).
pub const DICOM_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 11112));
/// `source.dicom[].max_associations`.
pub const DICOM_MAX_ASSOCIATIONS: usize = 16;
/// `source.dicom[].max_pdu`: the largest P-DATA-TF PDU wardlink receives.
pub const DICOM_MAX_PDU: u32 = 65536;
/// `source.dicom[].max_header_bytes`: 4 MiB of attributes before Pixel Data.
pub const DICOM_MAX_HEADER_BYTES: usize = 4 * 1024 * 1024;
/// `source.dicom[].idle_timeout`: 10 minutes.
pub const DICOM_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `source.dicom[].artim_timeout`: 30 seconds.
pub const DICOM_ARTIM_TIMEOUT: Duration = Duration::from_secs(30);
/// `source.dicom[].keep_files_dir`: `""` = whole objects are not kept.
pub const DICOM_KEEP_FILES_DIR: &str = "";
/// `source.dicom[].keep_files_max_bytes`: 20 GiB.
pub const DICOM_KEEP_FILES_MAX_BYTES: u64 = 20 << 30;
/// `source.dicom[].keep_files_retention`: 7 days.
pub const DICOM_KEEP_FILES_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The smallest `keep_files_max_bytes`: 1 MiB, as for the store's quotas.
pub const DICOM_KEEP_FILES_MIN_BYTES: u64 = 1 << 20;

const FIX_LIST: &str =
    "write each DICOM listener as its own [[source.dicom]] table (double brackets)";
const FIX_AE_TITLE: &str = "write 1 to 16 characters in quotes: letters, digits, space and \
     printable punctuation except the backslash, e.g. \"WARDLINK\"";
const FIX_ALLOW_AE: &str =
    "write a list of calling AE titles, e.g. [\"CT_ROOM3\", \"MR1\"], or [] to allow any caller";
const FIX_MAX_ASSOCIATIONS: &str = "write a whole number from 1 to 1000, e.g. 16";
const FIX_MAX_PDU: &str = "write a size in bytes from 4096 to 16777216, e.g. 65536";
const FIX_MAX_HEADER_BYTES: &str =
    "write a size in bytes from 65536 to 268435456 (256 MiB), e.g. 4194304 for 4 MiB";
const FIX_ARTIM_TIMEOUT: &str = "write a duration of at least 1s in quotes, e.g. \"30s\"";
const FIX_KEEP_FILES_DIR: &str = "write a directory in quotes, absolute or relative to \
     gateway.state_dir, e.g. \"/var/lib/wardlink/dicom-spool\" or \"dicom-spool\", or \"\" to keep no files";
const FIX_KEEP_FILES_MAX_BYTES: &str = "write a size in bytes of at least 1048576 (1 MiB), \
     e.g. 21474836480 for 20 GiB";
const FIX_KEEP_FILES_RETENTION: &str = "write a duration of at least 1s in quotes, e.g. \"7d\"";
const FIX_KEEP_FILES_OFF: &str = "set keep_files_dir to a directory, e.g. \"dicom-spool\", \
     or remove this key";
const FIX_LOCATION: &str = "write the text in quotes, at most 64 characters, e.g. \"radiology\"";
const FIX_DEVICES: &str = "write a table of calling AE title = device id, e.g. \
     devices = { CT_ROOM3 = \"ct-room3\" }, the device id 1 to 64 characters of a-z, 0-9, _ and -";

/// `[[source.dicom]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [[source.dicom]] table"
)]
pub(crate) struct RawDicom {
    #[serde(default = "default_name")]
    pub(crate) name: Field<String>,
    #[serde(default = "default_ae_title")]
    pub(crate) ae_title: Field<String>,
    #[serde(default = "default_listen")]
    pub(crate) listen: Field<ListenAddr>,
    #[serde(default = "empty_list")]
    pub(crate) allow_ae: Field<Vec<Field<String>>>,
    #[serde(default = "empty_list")]
    pub(crate) allow: Field<Vec<Field<Net>>>,
    #[serde(default = "default_max_associations")]
    pub(crate) max_associations: Field<Integer>,
    #[serde(default = "default_max_pdu")]
    pub(crate) max_pdu: Field<Integer>,
    #[serde(default = "default_max_header_bytes")]
    pub(crate) max_header_bytes: Field<Integer>,
    #[serde(default = "default_idle_timeout")]
    pub(crate) idle_timeout: Field<raw::Duration>,
    #[serde(default = "default_artim_timeout")]
    pub(crate) artim_timeout: Field<raw::Duration>,
    #[serde(default = "empty_string")]
    pub(crate) ward: Field<String>,
    #[serde(default = "empty_string")]
    pub(crate) room: Field<String>,
    #[serde(default)]
    pub(crate) devices: Field<BTreeMap<String, Field<String>>>,
    #[serde(default = "default_keep_files_dir")]
    pub(crate) keep_files_dir: Field<String>,
    #[serde(default = "default_keep_files_max_bytes")]
    pub(crate) keep_files_max_bytes: Field<Integer>,
    #[serde(default = "default_keep_files_retention")]
    pub(crate) keep_files_retention: Field<raw::Duration>,
}

fn default_name() -> Field<String> {
    Field::absent(DICOM_NAME.to_owned())
}
fn default_ae_title() -> Field<String> {
    Field::absent(DICOM_AE_TITLE.to_owned())
}
fn default_listen() -> Field<ListenAddr> {
    Field::absent(ListenAddr(DICOM_LISTEN))
}
fn empty_list<T>() -> Field<Vec<T>> {
    Field::absent(Vec::new())
}
fn default_max_associations() -> Field<Integer> {
    Field::absent(Integer(DICOM_MAX_ASSOCIATIONS as i64))
}
fn default_max_pdu() -> Field<Integer> {
    Field::absent(Integer(i64::from(DICOM_MAX_PDU)))
}
fn default_max_header_bytes() -> Field<Integer> {
    Field::absent(Integer(DICOM_MAX_HEADER_BYTES as i64))
}
fn default_idle_timeout() -> Field<raw::Duration> {
    Field::absent(raw::Duration(DICOM_IDLE_TIMEOUT))
}
fn default_artim_timeout() -> Field<raw::Duration> {
    Field::absent(raw::Duration(DICOM_ARTIM_TIMEOUT))
}
fn empty_string() -> Field<String> {
    Field::absent(String::new())
}
fn default_keep_files_dir() -> Field<String> {
    Field::absent(DICOM_KEEP_FILES_DIR.to_owned())
}
fn default_keep_files_max_bytes() -> Field<Integer> {
    Field::absent(Integer(
        i64::try_from(DICOM_KEEP_FILES_MAX_BYTES).unwrap_or(i64::MAX),
    ))
}
fn default_keep_files_retention() -> Field<raw::Duration> {
    Field::absent(raw::Duration(DICOM_KEEP_FILES_RETENTION))
}

/// One `[[source.dicom]]` listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomSource {
    /// Unique across all sources: 1..=64 of `[a-z0-9_-]`, starting with a letter.
    pub name: String,
    /// The called AE title wardlink answers to (1..=16 characters, no
    /// backslash, compared without padding spaces).
    pub ae_title: String,
    /// Address to bind; port 0 = any free port.
    pub listen: SocketAddr,
    /// Calling AE titles allowed to associate; empty = any.
    pub allow_ae: Vec<String>,
    /// Sender networks allowed to connect; empty = any.
    pub allow: Vec<IpNet>,
    /// Associations open at the same time, 1..=1000.
    pub max_associations: usize,
    /// Largest P-DATA-TF PDU wardlink receives (its Maximum Length item),
    /// 4096..=16777216.
    pub max_pdu: u32,
    /// Largest data set header (everything before Pixel Data) kept from one
    /// C-STORE; a larger one is refused (0xA700) and counted, not buffered.
    pub max_header_bytes: usize,
    /// An association is aborted after this long without a PDU. At least 1 s.
    pub idle_timeout: Duration,
    /// ARTIM: time allowed for the A-ASSOCIATE-RQ after connect and for the
    /// peer to close after a release or reject. At least 1 s.
    pub artim_timeout: Duration,
    /// Ward of the equipment, copied onto its events ("" = not set).
    pub ward: String,
    /// Room of the equipment ("" = not set).
    pub room: String,
    /// Device id per calling AE title; a caller not listed is the device
    /// named by its AE title.
    pub devices: BTreeMap<String, String>,
    /// Whole objects written to a bounded local spool (`keep_files_*`);
    /// `None` (the default) = only the header is kept, pixels are counted.
    pub keep_files: Option<KeepFiles>,
}

/// `keep_files_dir`, `keep_files_max_bytes`, `keep_files_retention`: every
/// C-STORE object is also written whole, as a DICOM Part 10 file, to a local
/// spool for a later forward. The files hold PHI: they never leave the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepFiles {
    /// The spool directory, resolved: a relative `keep_files_dir` is
    /// relative to `gateway.state_dir`. Never the state directory itself or
    /// one of its parents, nor shared with another source's spool.
    pub dir: PathBuf,
    /// Quota of the spool in bytes (at least 1 MiB): when a new object
    /// needs room, the oldest files are deleted; an object larger than the
    /// whole quota is refused (0xA700).
    pub max_bytes: u64,
    /// Files older than this are deleted (at least 1 s).
    pub retention: Duration,
}

impl Default for DicomSource {
    /// The listener of an empty `[[source.dicom]]` table.
    fn default() -> Self {
        Self {
            name: DICOM_NAME.to_owned(),
            ae_title: DICOM_AE_TITLE.to_owned(),
            listen: DICOM_LISTEN,
            allow_ae: Vec::new(),
            allow: Vec::new(),
            max_associations: DICOM_MAX_ASSOCIATIONS,
            max_pdu: DICOM_MAX_PDU,
            max_header_bytes: DICOM_MAX_HEADER_BYTES,
            idle_timeout: DICOM_IDLE_TIMEOUT,
            artim_timeout: DICOM_ARTIM_TIMEOUT,
            ward: String::new(),
            room: String::new(),
            devices: BTreeMap::new(),
            keep_files: None,
        }
    }
}

/// Why a text is not an AE title (PS3.5 6.2: 16 characters of the default
/// repertoire, no backslash, no control characters; padding spaces are not
/// significant).
pub fn ae_title_problem(title: &str) -> Option<String> {
    let trimmed = title.trim_matches(' ');
    if trimmed.is_empty() {
        return Some(format!("{title:?} is empty"));
    }
    if title.chars().count() > 16 {
        return Some(format!("{title:?} is longer than 16 characters"));
    }
    if let Some(bad) = title
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || *c == '\\')
    {
        return Some(format!("{title:?} contains {bad:?}"));
    }
    None
}

fn device_id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    (!ok).then(|| format!("{id:?} is not a device id"))
}

pub(crate) fn dicom_list(
    report: &mut Report<'_>,
    scope: &Scope,
    field: &Field<Vec<Field<RawDicom>>>,
    state_dir: &Path,
    claims: &mut Claims,
) -> Vec<DicomSource> {
    let Some(list) = scope.get(report, "dicom", field, FIX_LIST) else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    for (i, element) in list.iter().enumerate() {
        let key = format!("dicom[{i}]");
        if let Some(raw) = scope.get(report, &key, element, FIX_LIST) {
            let listener = Scope {
                path: scope.key(&key),
                span: element.span.clone(),
            };
            sources.push(dicom(report, &listener, raw, state_dir, claims));
        }
    }
    sources
}

fn dicom(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawDicom,
    state_dir: &Path,
    claims: &mut Claims,
) -> DicomSource {
    let defaults = DicomSource::default();
    let name = source_name(report, scope, &raw.name, claims);
    let ae_title = check_ae_title(report, scope, "ae_title", &raw.ae_title);
    let listen = scope
        .get(report, "listen", &raw.listen, FIX_LISTEN)
        .map(|ListenAddr(addr)| *addr);
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
        let list_scope = Scope {
            path: scope.path.clone(),
            span: scope.span_of(&raw.allow).cloned(),
        };
        for (i, net) in nets.iter().enumerate() {
            if let Some(Net(net)) = list_scope.get(report, &format!("allow[{i}]"), net, FIX_NET) {
                allow.push(*net);
            }
        }
    }
    let mut allow_ae = Vec::new();
    if let Some(titles) = scope.get(report, "allow_ae", &raw.allow_ae, FIX_ALLOW_AE) {
        let list_scope = Scope {
            path: scope.path.clone(),
            span: scope.span_of(&raw.allow_ae).cloned(),
        };
        for (i, title) in titles.iter().enumerate() {
            if let Some(t) = check_ae_title(report, &list_scope, &format!("allow_ae[{i}]"), title) {
                allow_ae.push(t);
            }
        }
    }
    let mut devices = BTreeMap::new();
    if let Some(map) = scope.get(report, "devices", &raw.devices, FIX_DEVICES) {
        let map_scope = Scope {
            path: scope.key("devices"),
            span: scope.span_of(&raw.devices).cloned(),
        };
        for (title, id) in map {
            let key = format!("{title:?}");
            if let Some(problem) = ae_title_problem(title) {
                report.push(
                    map_scope.span_of(id),
                    map_scope.key(&key),
                    problem,
                    FIX_DEVICES,
                );
                continue;
            }
            let Some(id) = map_scope.get(report, &key, id, FIX_DEVICES) else {
                continue;
            };
            if let Some(problem) = device_id_problem(id) {
                report.push(
                    map_scope.span_of(&raw.devices),
                    map_scope.key(&key),
                    problem,
                    FIX_DEVICES,
                );
                continue;
            }
            devices.insert(title.trim_matches(' ').to_owned(), id.clone());
        }
    }
    DicomSource {
        name: name.unwrap_or(defaults.name),
        ae_title: ae_title.unwrap_or(defaults.ae_title),
        listen: listen.unwrap_or(defaults.listen),
        allow_ae,
        allow,
        max_associations: scope
            .usize(
                report,
                "max_associations",
                &raw.max_associations,
                1..=1000,
                FIX_MAX_ASSOCIATIONS,
            )
            .unwrap_or(defaults.max_associations),
        max_pdu: scope
            .usize(
                report,
                "max_pdu",
                &raw.max_pdu,
                4096..=16_777_216,
                FIX_MAX_PDU,
            )
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.max_pdu),
        max_header_bytes: scope
            .usize(
                report,
                "max_header_bytes",
                &raw.max_header_bytes,
                65536..=268_435_456,
                FIX_MAX_HEADER_BYTES,
            )
            .unwrap_or(defaults.max_header_bytes),
        idle_timeout: scope
            .duration(
                report,
                "idle_timeout",
                &raw.idle_timeout,
                Duration::from_secs(1),
                FIX_IDLE_TIMEOUT,
            )
            .unwrap_or(defaults.idle_timeout),
        artim_timeout: scope
            .duration(
                report,
                "artim_timeout",
                &raw.artim_timeout,
                Duration::from_secs(1),
                FIX_ARTIM_TIMEOUT,
            )
            .unwrap_or(defaults.artim_timeout),
        ward: location(report, scope, "ward", &raw.ward),
        room: location(report, scope, "room", &raw.room),
        devices,
        keep_files: keep_files(report, scope, raw, state_dir, claims),
    }
}

/// The `keep_files_*` keys: `None` when `keep_files_dir` is empty (then the
/// other two may not be written: they would do nothing) or wrong.
fn keep_files(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawDicom,
    state_dir: &Path,
    claims: &mut Claims,
) -> Option<KeepFiles> {
    let dir = scope.get(
        report,
        "keep_files_dir",
        &raw.keep_files_dir,
        FIX_KEEP_FILES_DIR,
    );
    let max_bytes = scope
        .int(
            report,
            "keep_files_max_bytes",
            &raw.keep_files_max_bytes,
            i64::try_from(DICOM_KEEP_FILES_MIN_BYTES).unwrap_or(i64::MAX)..=i64::MAX,
            FIX_KEEP_FILES_MAX_BYTES,
        )
        .and_then(|n| u64::try_from(n).ok());
    let retention = scope.duration(
        report,
        "keep_files_retention",
        &raw.keep_files_retention,
        Duration::from_secs(1),
        FIX_KEEP_FILES_RETENTION,
    );
    let dir = dir?;
    if dir.trim().is_empty() {
        for (key, span) in [
            ("keep_files_max_bytes", &raw.keep_files_max_bytes.span),
            ("keep_files_retention", &raw.keep_files_retention.span),
        ] {
            if span.is_some() {
                report.push(
                    span.as_ref(),
                    scope.key(key),
                    "set while keep_files_dir is empty, where it does nothing",
                    FIX_KEEP_FILES_OFF,
                );
            }
        }
        return None;
    }
    let resolved = lexical(&state_dir.join(dir));
    let state = lexical(state_dir);
    if state.starts_with(&resolved) {
        report.push(
            scope.span_of(&raw.keep_files_dir),
            scope.key("keep_files_dir"),
            format!(
                "{dir:?} is the state directory {} or one of its parents; the spool needs a directory of its own",
                state_dir.display()
            ),
            FIX_KEEP_FILES_DIR,
        );
        return None;
    }
    claims.claim(
        report,
        Resource::SpoolDir(resolved.clone()),
        scope.key("keep_files_dir"),
        scope.span_of(&raw.keep_files_dir).cloned(),
    );
    Some(KeepFiles {
        dir: resolved,
        max_bytes: max_bytes?,
        retention: retention?,
    })
}

/// `path` without `.` components and with `..` applied where it can be
/// (no I/O: symbolic links are not followed), for comparing spool
/// directories.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn check_ae_title(
    report: &mut Report<'_>,
    scope: &Scope,
    key: &str,
    field: &Field<String>,
) -> Option<String> {
    let title = scope.get(report, key, field, FIX_AE_TITLE)?;
    if let Some(problem) = ae_title_problem(title) {
        report.push(scope.span_of(field), scope.key(key), problem, FIX_AE_TITLE);
        return None;
    }
    Some(title.trim_matches(' ').to_owned())
}

fn location(report: &mut Report<'_>, scope: &Scope, key: &str, field: &Field<String>) -> String {
    let Some(text) = scope.get(report, key, field, FIX_LOCATION) else {
        return String::new();
    };
    if text.chars().count() > 64 || text.chars().any(char::is_control) {
        report.push(
            scope.span_of(field),
            scope.key(key),
            format!("{text:?} is longer than 64 characters or has control characters"),
            FIX_LOCATION,
        );
        return String::new();
    }
    text.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_toml_str;

    #[test]
    fn a_full_table_validates() -> Result<(), String> {
        let config = from_toml_str(
            r#"
[[source.dicom]]
name = "imaging"
ae_title = "EDGE1"
listen = "127.0.0.1:0"
allow_ae = ["CT_ROOM3", "MR1"]
allow = ["10.1.0.0/16"]
max_associations = 8
max_pdu = 16384
idle_timeout = "1m"
artim_timeout = "5s"
ward = "radiology"
room = "CT 3"
devices = { CT_ROOM3 = "ct-room3" }
keep_files_dir = "spool/../dicom-spool"
keep_files_max_bytes = 1048576
keep_files_retention = "2h"

[[source.dicom]]
name = "mr"
listen = "127.0.0.1:0"
keep_files_dir = "/srv/spool/mr"

[gateway]
state_dir = "/var/lib/wardlink"
"#,
            "t.toml",
        )
        .map_err(|e| e.to_string())?;
        let d = &config.sources.dicom[0];
        assert_eq!(
            d.keep_files,
            Some(KeepFiles {
                dir: PathBuf::from("/var/lib/wardlink/dicom-spool"),
                max_bytes: 1 << 20,
                retention: Duration::from_secs(2 * 60 * 60),
            }),
            "relative to the state directory"
        );
        assert_eq!(
            config.sources.dicom[1].keep_files,
            Some(KeepFiles {
                dir: PathBuf::from("/srv/spool/mr"),
                max_bytes: DICOM_KEEP_FILES_MAX_BYTES,
                retention: DICOM_KEEP_FILES_RETENTION,
            }),
            "absolute, with the defaults"
        );
        assert_eq!(d.ae_title, "EDGE1");
        assert_eq!(d.allow_ae, vec!["CT_ROOM3".to_owned(), "MR1".to_owned()]);
        assert_eq!(d.max_pdu, 16384);
        assert_eq!(
            d.devices.get("CT_ROOM3").map(String::as_str),
            Some("ct-room3")
        );
        assert_eq!(d.room, "CT 3");
        Ok(())
    }

    #[test]
    fn every_bad_key_is_reported_with_its_line() {
        let text = r#"
[[source.dicom]]
ae_title = "THIS TITLE IS FAR TOO LONG"
allow_ae = ["BAD\\AE"]
max_pdu = 100
artim_timeout = "0s"
devices = { CT1 = "Not An Id" }
colour = "red"
"#;
        let err = match from_toml_str(text, "t.toml") {
            Ok(_) => panic!("should not validate"),
            Err(e) => e.to_string(),
        };
        for needle in [
            "t.toml:3: source.dicom[0].ae_title",
            "t.toml:4: source.dicom[0].allow_ae[0]",
            "t.toml:5: source.dicom[0].max_pdu",
            "t.toml:6: source.dicom[0].artim_timeout",
            "source.dicom[0].devices.\"CT1\"",
            "t.toml:8: source.dicom[0].colour: unknown key",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
    }

    #[test]
    fn keep_files_keys_are_checked() {
        let text = r#"
[gateway]
state_dir = "/var/lib/wardlink"

[[source.dicom]]
listen = "127.0.0.1:0"
keep_files_dir = "spool"
keep_files_max_bytes = 1000
keep_files_retention = "0s"

[[source.dicom]]
name = "b"
listen = "127.0.0.1:0"
keep_files_retention = "1d"

[[source.dicom]]
name = "c"
listen = "127.0.0.1:0"
keep_files_dir = "/var/lib/wardlink/spool/c"

[[source.dicom]]
name = "d"
listen = "127.0.0.1:0"
keep_files_dir = "."
"#;
        let err = match from_toml_str(text, "t.toml") {
            Ok(_) => panic!("should not validate"),
            Err(e) => e.to_string(),
        };
        for needle in [
            "t.toml:8: source.dicom[0].keep_files_max_bytes: 1000 is less than the minimum of 1048576",
            "t.toml:9: source.dicom[0].keep_files_retention: \"0s\" is shorter than the minimum of 1s",
            "t.toml:14: source.dicom[1].keep_files_retention: set while keep_files_dir is empty",
            "t.toml:19: source.dicom[2].keep_files_dir: \"/var/lib/wardlink/spool/c\" is, or is nested with, \"/var/lib/wardlink/spool\" of source.dicom[0].keep_files_dir (line 7); two sources cannot share a spool",
            "t.toml:24: source.dicom[3].keep_files_dir: \".\" is the state directory /var/lib/wardlink",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
    }

    #[test]
    fn keep_files_is_off_by_default_and_with_an_empty_dir() -> Result<(), String> {
        let config = from_toml_str(
            "[[source.dicom]]\nkeep_files_dir = \"\"\n[[source.dicom]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n",
            "t.toml",
        )
        .map_err(|e| e.to_string())?;
        assert!(config.sources.dicom.iter().all(|d| d.keep_files.is_none()));
        assert_eq!(DicomSource::default().keep_files, None);
        Ok(())
    }

    #[test]
    fn lexical_paths() {
        for (path, expected) in [
            ("/a/./b/../c", "/a/c"),
            ("./data/spool", "data/spool"),
            ("../../x", "../../x"),
            ("a/../../x", "../x"),
        ] {
            assert_eq!(lexical(Path::new(path)), PathBuf::from(expected), "{path}");
        }
    }

    #[test]
    fn dicom_and_mllp_cannot_share_a_port() {
        let text = r#"
[[source.mllp]]
listen = "127.0.0.1:4000"
[[source.dicom]]
listen = "127.0.0.1:4000"
"#;
        let err = match from_toml_str(text, "t.toml") {
            Ok(_) => panic!("should not validate"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("source.dicom[0].listen"), "{err}");
    }

    #[test]
    fn the_commented_out_example_in_default_toml_is_valid() -> Result<(), String> {
        let mut text = String::new();
        let mut in_example = false;
        for line in crate::DEFAULT_TOML.lines() {
            in_example |= line == "# [[source.dicom]]";
            in_example &= !line.is_empty();
            let line = if in_example {
                line.strip_prefix("# ").unwrap_or(line)
            } else {
                line
            };
            text.push_str(line);
            text.push('\n');
        }
        let config = from_toml_str(&text, "example").map_err(|e| e.to_string())?;
        let d = config
            .sources
            .dicom
            .first()
            .ok_or("no [[source.dicom]] example")?;
        assert_eq!(d.listen, DICOM_LISTEN);
        assert_eq!(d.ae_title, DICOM_AE_TITLE);
        assert_eq!(d.max_associations, DICOM_MAX_ASSOCIATIONS);
        assert_eq!(d.devices.len(), 2);
        let keep = d.keep_files.as_ref().ok_or("the example keeps files")?;
        assert_eq!(
            keep.dir,
            lexical(&config.gateway.state_dir.join("dicom-spool"))
        );
        assert_eq!(keep.max_bytes, DICOM_KEEP_FILES_MAX_BYTES);
        assert_eq!(keep.retention, DICOM_KEEP_FILES_RETENTION);
        Ok(())
    }
}

/// `[deid.dicom]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "a [deid.dicom] table"
)]
pub(crate) struct RawDeidDicom {
    #[serde(default = "yes")]
    pub(crate) retain_longitudinal_modified_dates: Field<bool>,
    #[serde(default = "yes")]
    pub(crate) retain_device_identity: Field<bool>,
    #[serde(default = "no")]
    pub(crate) retain_patient_characteristics: Field<bool>,
    #[serde(default = "yes")]
    pub(crate) clean_descriptors: Field<bool>,
}

impl Default for RawDeidDicom {
    fn default() -> Self {
        Self {
            retain_longitudinal_modified_dates: yes(),
            retain_device_identity: yes(),
            retain_patient_characteristics: no(),
            clean_descriptors: yes(),
        }
    }
}

fn yes() -> Field<bool> {
    Field::absent(true)
}
fn no() -> Field<bool> {
    Field::absent(false)
}

/// `[deid.dicom]`: the PS3.15 Annex E options applied to DICOM objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DicomDeidConfig {
    /// Retain Longitudinal Temporal Information with Modified Dates (113107).
    pub retain_longitudinal_modified_dates: bool,
    /// Retain Device Identity (113109).
    pub retain_device_identity: bool,
    /// Retain Patient Characteristics (113108).
    pub retain_patient_characteristics: bool,
    /// Clean Descriptors (113105).
    pub clean_descriptors: bool,
}

impl Default for DicomDeidConfig {
    fn default() -> Self {
        Self {
            retain_longitudinal_modified_dates: true,
            retain_device_identity: true,
            retain_patient_characteristics: false,
            clean_descriptors: true,
        }
    }
}

const FIX_BOOL: &str = "write true or false, without quotes";

pub(crate) fn deid_dicom(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawDeidDicom,
) -> DicomDeidConfig {
    let d = DicomDeidConfig::default();
    let mut get = |key: &str, field: &Field<bool>, default: bool| {
        scope
            .get(report, key, field, FIX_BOOL)
            .copied()
            .unwrap_or(default)
    };
    DicomDeidConfig {
        retain_longitudinal_modified_dates: get(
            "retain_longitudinal_modified_dates",
            &raw.retain_longitudinal_modified_dates,
            d.retain_longitudinal_modified_dates,
        ),
        retain_device_identity: get(
            "retain_device_identity",
            &raw.retain_device_identity,
            d.retain_device_identity,
        ),
        retain_patient_characteristics: get(
            "retain_patient_characteristics",
            &raw.retain_patient_characteristics,
            d.retain_patient_characteristics,
        ),
        clean_descriptors: get(
            "clean_descriptors",
            &raw.clean_descriptors,
            d.clean_descriptors,
        ),
    }
}
