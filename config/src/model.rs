//! The validated configuration: the only shape the daemon sees.
//!
//! Every value here has passed validation: addresses are parsed, limits are in
//! range, names are unique and no two listeners claim the same port.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::defaults;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `[gateway]`: where wardlink keeps its data.
    pub gateway: GatewayConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[store]`: the local message store.
    pub store: StoreConfig,
    /// `[deid]`: how identifiers and dates are de-identified.
    pub deid: DeidConfig,
    /// `[validate]`: the limits of message validation.
    pub validate: ValidateConfig,
    /// `[sync]`: sealing the outbox into batches and uploading them.
    pub sync: SyncConfig,
    /// `[source.*]`: the listeners that receive data.
    pub sources: Sources,
    /// `[admin]`: the local status page and `/metrics`.
    pub admin: crate::AdminConfig,
}

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Directory of the store (SQLite), the keys and the spool, as written in
    /// the file; a relative path is relative to the daemon's working directory.
    /// Never empty.
    pub state_dir: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(defaults::STATE_DIR),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The least severe level that is logged. `RUST_LOG` overrides it.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::LOG_LEVEL,
        }
    }
}

/// A log level, as written in `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// `"error"`
    Error,
    /// `"warn"`
    Warn,
    /// `"info"`
    Info,
    /// `"debug"`
    Debug,
    /// `"trace"`
    Trace,
}

impl LogLevel {
    /// Every level, least verbose first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The name as written in the config file, which is also a valid
    /// `tracing` / `RUST_LOG` directive.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// The level with this exact (lowercase) name.
    pub fn from_name(name: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Raw messages are pruned this long after they were uploaded. At least 1 hour.
    pub raw_retention: Duration,
    /// At most this many messages share one transaction and fsync. 1..=65536.
    pub group_commit_max: usize,
    /// Size limit of the store on disk, in bytes (at least 1 MiB); `None` = no
    /// limit other than the disk. When reached, sources refuse new data and
    /// nothing stored is deleted.
    pub max_bytes: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            raw_retention: defaults::RAW_RETENTION,
            group_commit_max: defaults::GROUP_COMMIT_MAX,
            max_bytes: defaults::MAX_BYTES,
        }
    }
}

/// `[deid]`: how data is de-identified before it leaves the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeidConfig {
    /// How dates leave the box.
    pub date_policy: DatePolicyConfig,
    /// Which secret pseudonymizes ABHA numbers.
    pub pseudonym_scope: PseudonymScope,
    /// The shared network secret file, as written (not checked to exist: the
    /// daemon reads it). `Some` exactly when `pseudonym_scope` is
    /// [`PseudonymScope::Network`].
    pub network_key_file: Option<PathBuf>,
    /// `[deid.overrides]`: site overrides of single fields of the default
    /// profile, in file order. No field appears twice.
    pub overrides: Vec<FieldOverrideConfig>,
    /// `[deid.dicom]`: the PS3.15 Annex E options for DICOM.
    pub dicom: crate::dicom::DicomDeidConfig,
}

impl Default for DeidConfig {
    fn default() -> Self {
        Self {
            date_policy: defaults::DEID_DATE_POLICY,
            pseudonym_scope: defaults::DEID_PSEUDONYM_SCOPE,
            network_key_file: defaults::DEID_NETWORK_KEY_FILE.map(PathBuf::from),
            overrides: Vec::new(),
            dicom: crate::dicom::DicomDeidConfig::default(),
        }
    }
}

/// `deid.date_policy` with `deid.date_shift_max_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatePolicyConfig {
    /// `"shift"`: every date of a patient moves by the same keyed whole
    /// number of days in `-max_days..=max_days`; intervals and order are kept.
    Shift {
        /// The largest shift in days, either way: 1..=3650.
        max_days: u32,
    },
    /// `"year"`: only the year is kept (HIPAA Safe Harbor literal reading).
    YearOnly,
}

impl DatePolicyConfig {
    /// The name as written in `deid.date_policy`: `"shift"` or `"year"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DatePolicyConfig::Shift { .. } => "shift",
            DatePolicyConfig::YearOnly => "year",
        }
    }
}

impl fmt::Display for DatePolicyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deid.pseudonym_scope`: which secret pseudonymizes network-wide identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PseudonymScope {
    /// `"site"`: every pseudonym uses this gateway's own secret, so they
    /// differ between sites.
    Site,
    /// `"network"`: ABHA numbers additionally get a pseudonym from the secret
    /// shared by every site of the network (`deid.network_key_file`), equal
    /// at every hospital.
    Network,
}

impl PseudonymScope {
    /// Every scope.
    pub const ALL: [PseudonymScope; 2] = [PseudonymScope::Site, PseudonymScope::Network];

    /// The name as written in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            PseudonymScope::Site => "site",
            PseudonymScope::Network => "network",
        }
    }

    /// The scope with this exact (lowercase) name.
    pub fn from_name(name: &str) -> Option<PseudonymScope> {
        PseudonymScope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for PseudonymScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[deid.overrides]` entry: `FIELD = ACTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOverrideConfig {
    /// The field as written: `SEG-N` or `SEG-N.C`, e.g. `"PID-11.5"` or
    /// `"PV1-3"` (a segment of 3 `A-Z`/`0-9` starting with a letter, N
    /// 1..=999, C 1..=99, no leading zeros).
    pub field: String,
    /// What to do with it instead of the default profile's action.
    pub action: OverrideAction,
    /// The 1-based line of the entry in the config file, for messages about
    /// it; `None` when not read from a file.
    pub line: Option<usize>,
}

/// An action of `[deid.overrides]`, as written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverrideAction {
    /// `"remove"`
    Remove,
    /// `"pseudonymize"`
    Pseudonymize,
    /// `"generalize"`
    Generalize,
    /// `"shift_date"`
    ShiftDate,
    /// `"keep"`
    Keep,
}

impl OverrideAction {
    /// Every action, in the order the documentation lists them.
    pub const ALL: [OverrideAction; 5] = [
        OverrideAction::Remove,
        OverrideAction::Pseudonymize,
        OverrideAction::Generalize,
        OverrideAction::ShiftDate,
        OverrideAction::Keep,
    ];

    /// The name as written in the config file (snake_case).
    pub const fn as_str(self) -> &'static str {
        match self {
            OverrideAction::Remove => "remove",
            OverrideAction::Pseudonymize => "pseudonymize",
            OverrideAction::Generalize => "generalize",
            OverrideAction::ShiftDate => "shift_date",
            OverrideAction::Keep => "keep",
        }
    }

    /// The action with this exact name.
    pub fn from_name(name: &str) -> Option<OverrideAction> {
        OverrideAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for OverrideAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[validate]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateConfig {
    /// A timestamp later than the message's arrival plus this is flagged
    /// (clock skew). At least 1 second.
    pub max_future_skew: Duration,
    /// A timestamp older than the message's arrival minus this is flagged.
    /// At least 1 hour.
    pub max_age: Duration,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            max_future_skew: defaults::VALIDATE_MAX_FUTURE_SKEW,
            max_age: defaults::VALIDATE_MAX_AGE,
        }
    }
}

/// `[sync]`: the outbox's quota, sealing it into signed batches and
/// uploading them to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Where batches go; `None` (an empty `collector_url`) = sync off: the
    /// outbox keeps its events and nothing is sealed or uploaded.
    pub collector: Option<CollectorTarget>,
    /// A batch is sealed once it has this many events. 1..=100000.
    pub batch_max_events: usize,
    /// ... or once its oldest event has waited this long. At least 100 ms.
    pub batch_max_age: Duration,
    /// Disk quota of the outbox (its events plus the sealed batches not yet
    /// uploaded), in bytes (at least 1 MiB); `None` = no quota. When reached,
    /// sources refuse new data; nothing already acknowledged is deleted.
    pub outbox_max_bytes: Option<u64>,
    /// The first wait after a failed upload; it doubles per failure. At least 100 ms.
    pub retry_backoff_min: Duration,
    /// The longest wait between upload attempts; at least `retry_backoff_min`.
    pub retry_backoff_max: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            collector: None,
            batch_max_events: defaults::SYNC_BATCH_MAX_EVENTS,
            batch_max_age: defaults::SYNC_BATCH_MAX_AGE,
            outbox_max_bytes: defaults::SYNC_OUTBOX_MAX_BYTES,
            retry_backoff_min: defaults::SYNC_RETRY_BACKOFF_MIN,
            retry_backoff_max: defaults::SYNC_RETRY_BACKOFF_MAX,
        }
    }
}

/// The collector of `[sync]`, present when sync is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorTarget {
    /// The collector's base URL without a trailing `/`, e.g.
    /// `https://collector.example.org:8443`; batches go to `URL/v1/batches`.
    /// `https://`, or `http://` to a loopback address only.
    pub url: String,
    /// The collector's receipt-signing public key: 64 lowercase hex digits,
    /// as `wardlink-collector public-key` prints it (whether the digits are
    /// a valid Ed25519 point is checked by the daemon).
    pub public_key: String,
    /// PEM file of the CA certificates that may sign the collector's
    /// certificate; `None` = the system's trust store. Only with `https://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) presented to the collector, if any.
    /// Only with `https://`.
    pub client_cert: Option<ClientCert>,
}

impl CollectorTarget {
    /// True for a plain-HTTP (loopback) collector.
    pub fn is_plain_http(&self) -> bool {
        self.url.starts_with("http://")
    }
}

/// `sync.client_cert_file` and `sync.client_key_file`, set together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
}

/// `[source]`: every configured source, by kind. May be empty (the daemon
/// then warns that it receives nothing). Names are unique across all kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    /// `[[source.mllp]]`: HL7 v2 MLLP listeners, in file order.
    pub mllp: Vec<MllpSource>,
    /// `[[source.serial]]`: serial ports (MEDIBUS, `lines`), in file order.
    pub serial: Vec<crate::SerialSource>,
    /// `[[source.mqtt]]`: MQTT broker subscriptions, in file order.
    pub mqtt: Vec<crate::MqttSource>,
    /// `[[source.dicom]]`: DICOM edge listeners, in file order.
    pub dicom: Vec<crate::dicom::DicomSource>,
}

impl Sources {
    /// Every source's name, by kind (MLLP, serial, MQTT, DICOM), in file
    /// order.
    pub fn names(&self) -> Vec<String> {
        (self.mllp.iter().map(|s| s.name.clone()))
            .chain(self.serial.iter().map(|s| s.name.clone()))
            .chain(self.mqtt.iter().map(|s| s.name.clone()))
            .chain(self.dicom.iter().map(|s| s.name.clone()))
            .collect()
    }

    /// True when no source of any kind is configured.
    pub fn is_empty(&self) -> bool {
        self.mllp.is_empty()
            && self.serial.is_empty()
            && self.mqtt.is_empty()
            && self.dicom.is_empty()
    }

    /// The number of sources of all kinds.
    pub fn len(&self) -> usize {
        self.mllp.len() + self.serial.len() + self.mqtt.len() + self.dicom.len()
    }
}

/// One `[[source.mllp]]` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MllpSource {
    /// Unique across all sources: 1..=64 of `[a-z0-9_-]`, starting with a letter.
    pub name: String,
    /// Address to bind; port 0 = any free port. No other source overlaps it.
    pub listen: SocketAddr,
    /// Sender networks allowed to connect (host bits clear; a single IP is a
    /// /32 or /128). Empty = any sender.
    pub allow: Vec<IpNet>,
    /// Concurrent connections, 1..=10000.
    pub max_connections: usize,
    /// Largest accepted message in bytes, 1024..=1073741824.
    pub max_message_bytes: usize,
    /// A connection is closed after this long without a byte. At least 1 second.
    pub idle_timeout: Duration,
    /// Duplicate detection window (same MSH-3, MSH-4, MSH-10); zero = off.
    pub duplicate_window: Duration,
    /// Send MLLP release 2 commit acknowledgement blocks.
    pub commit_blocks: bool,
    /// MLLP over TLS (`tls = { cert, key, client_ca }`); `None`: plain TCP.
    pub tls: Option<crate::MllpTls>,
}

impl Default for MllpSource {
    /// The listener of an empty `[[source.mllp]]` table.
    fn default() -> Self {
        Self {
            name: defaults::MLLP_NAME.to_owned(),
            listen: defaults::MLLP_LISTEN,
            allow: Vec::new(),
            max_connections: defaults::MLLP_MAX_CONNECTIONS,
            max_message_bytes: defaults::MLLP_MAX_MESSAGE_BYTES,
            idle_timeout: defaults::MLLP_IDLE_TIMEOUT,
            duplicate_window: defaults::MLLP_DUPLICATE_WINDOW,
            commit_blocks: defaults::MLLP_COMMIT_BLOCKS,
            tls: None,
        }
    }
}
