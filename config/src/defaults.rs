//! The default of every key, defined once.
//!
//! The raw schema's default functions (what an absent key means) and the
//! validated types' `Default` impls both read these constants, and a test
//! checks that `default.toml` says the same.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::{DatePolicyConfig, LogLevel, PseudonymScope};

/// `gateway.state_dir`: relative to the daemon's working directory.
pub const STATE_DIR: &str = "./wardlink-data";
/// `log.level`.
pub const LOG_LEVEL: LogLevel = LogLevel::Info;
/// `store.raw_retention`: 7 days.
pub const RAW_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// `store.group_commit_max`.
pub const GROUP_COMMIT_MAX: usize = 512;
/// `store.max_bytes`: `None` (written `0` in the file) = no limit but the disk.
pub const MAX_BYTES: Option<u64> = None;
/// `deid.date_shift_max_days`.
pub const DEID_DATE_SHIFT_MAX_DAYS: u32 = 180;
/// `deid.date_policy` (with `deid.date_shift_max_days`): shift, ±180 days.
pub const DEID_DATE_POLICY: DatePolicyConfig = DatePolicyConfig::Shift {
    max_days: DEID_DATE_SHIFT_MAX_DAYS,
};
/// `deid.pseudonym_scope`.
pub const DEID_PSEUDONYM_SCOPE: PseudonymScope = PseudonymScope::Site;
/// `deid.network_key_file`: `None` (written `""` in the file) = no network secret.
pub const DEID_NETWORK_KEY_FILE: Option<&str> = None;
/// `validate.max_future_skew`: 5 minutes.
pub const VALIDATE_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
/// `validate.max_age`: 30 days.
pub const VALIDATE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// `sync.collector_url`: `None` (written `""` in the file) = sync off.
pub const SYNC_COLLECTOR_URL: Option<&str> = None;
/// `sync.batch_max_events`.
pub const SYNC_BATCH_MAX_EVENTS: usize = 5000;
/// `sync.batch_max_age`: 5 seconds.
pub const SYNC_BATCH_MAX_AGE: Duration = Duration::from_secs(5);
/// `sync.outbox_max_bytes`: 1 GiB.
pub const SYNC_OUTBOX_MAX_BYTES: Option<u64> = Some(1 << 30);
/// `sync.retry_backoff_min`: 1 second.
pub const SYNC_RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// `sync.retry_backoff_max`: 5 minutes.
pub const SYNC_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// `source.mllp[].name`.
pub const MLLP_NAME: &str = "mllp";
/// `source.mllp[].listen`: loopback only, the HL7 v2 port.
pub const MLLP_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2575));
/// `source.mllp[].max_connections`.
pub const MLLP_MAX_CONNECTIONS: usize = 64;
/// `source.mllp[].max_message_bytes`: 16 MiB.
pub const MLLP_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// `source.mllp[].idle_timeout`: 10 minutes.
pub const MLLP_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `source.mllp[].duplicate_window`: 24 hours.
pub const MLLP_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// `source.mllp[].commit_blocks`.
pub const MLLP_COMMIT_BLOCKS: bool = false;

/// `source.mqtt[].name`.
pub const MQTT_NAME: &str = "mqtt";
/// `source.mqtt[].keep_alive`: 30 seconds.
pub const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// `source.mqtt[].max_payload_bytes`: 256 KiB.
pub const MQTT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// `admin.listen`'s port (on 127.0.0.1).
pub const ADMIN_PORT: u16 = 9425;
