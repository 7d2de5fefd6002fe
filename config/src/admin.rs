//! `[admin]`: the local admin endpoint (the status page and `/metrics`).
//!
//! Raw shape, validation and the validated [`AdminConfig`] of one section,
//! kept together in this file; `raw`, `validate` and `parse` only call in.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use crate::raw::{Field, ListenAddr};
use crate::report::Report;
use crate::validate::{Claims, Resource, Scope};

/// The default address: loopback only, off the hospital network.
pub const ADMIN_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
    crate::defaults::ADMIN_PORT,
);

const FIX_ENABLED: &str = "write true or false, without quotes";
const FIX_LISTEN: &str = "write an IP address and port in quotes, e.g. \"127.0.0.1:9425\"; \
     host names are not resolved, use an IP address";

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether the endpoint is served.
    pub enabled: bool,
    /// Where it listens (port 0: a free port, shown in `wardlink status`).
    /// Anyone who can reach it sees counts and source names (never message
    /// content): keep it on loopback or a management network.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: ADMIN_LISTEN,
        }
    }
}

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "snake_case",
    expecting = "an [admin] table"
)]
pub(crate) struct RawAdmin {
    #[serde(default = "default_enabled")]
    pub(crate) enabled: Field<bool>,
    #[serde(default = "default_listen")]
    pub(crate) listen: Field<ListenAddr>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            enabled: default_enabled(),
            listen: default_listen(),
        }
    }
}

fn default_enabled() -> Field<bool> {
    Field::absent(true)
}

fn default_listen() -> Field<ListenAddr> {
    Field::absent(ListenAddr(ADMIN_LISTEN))
}

/// Validate `[admin]`; its address is claimed like a source's, so a
/// listener on the same port is a configuration error naming both keys.
pub(crate) fn validate(
    report: &mut Report<'_>,
    scope: &Scope,
    raw: &RawAdmin,
    claims: &mut Claims,
) -> AdminConfig {
    let defaults = AdminConfig::default();
    let enabled = scope
        .get(report, "enabled", &raw.enabled, FIX_ENABLED)
        .copied()
        .unwrap_or(defaults.enabled);
    let listen = scope
        .get(report, "listen", &raw.listen, FIX_LISTEN)
        .map(|ListenAddr(a)| *a);
    if let (true, Some(addr)) = (enabled, listen) {
        claims.claim(
            report,
            Resource::TcpListen(addr),
            scope.key("listen"),
            scope.span_of(&raw.listen).cloned(),
        );
    }
    AdminConfig {
        enabled,
        listen: listen.unwrap_or(defaults.listen),
    }
}
