//! The daemon's side of `[[source.dicom]]`: config → listener options, bind
//! every DICOM listener, spawn them. Kept out of `daemon.rs` so that each
//! source kind hooks in with a line or two.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, DicomSource};
use wardlink_devices::dicom::{DicomListener, DicomOptions};
use wardlink_devices::Submitter;

use crate::status::ListenerInfo;

/// The listener options of a configured DICOM source.
pub fn options(s: &DicomSource) -> DicomOptions {
    DicomOptions {
        name: Arc::from(s.name.as_str()),
        ae_title: s.ae_title.clone(),
        listen: s.listen,
        allow: s.allow.clone(),
        allow_ae: s.allow_ae.clone(),
        max_associations: s.max_associations,
        max_pdu: s.max_pdu,
        max_header_bytes: s.max_header_bytes,
        idle_timeout: s.idle_timeout,
        artim_timeout: s.artim_timeout,
        ward: s.ward.clone(),
        room: s.room.clone(),
        devices: s.devices.clone(),
    }
}

/// Bound DICOM listeners, not yet serving.
#[derive(Debug, Default)]
pub struct Bound(Vec<DicomListener>);

/// Binds every `[[source.dicom]]` listener. Nothing is accepted until
/// [`spawn`]; connections wait in the backlog meanwhile.
///
/// # Errors
/// A listener cannot bind; the error names the source.
pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let mut bound = Vec::new();
    for source in &config.sources.dicom {
        let l = DicomListener::bind(options(source))
            .await
            .with_context(|| format!("source.dicom `{}`: cannot listen", source.name))?;
        tracing::info!(source = %source.name, addr = %l.local_addr(), ae_title = %source.ae_title, "dicom listener bound");
        bound.push(l);
    }
    Ok(Bound(bound))
}

/// The runtime file's entries for the bound listeners.
pub fn infos(bound: &Bound, config: &Config) -> Vec<ListenerInfo> {
    bound
        .0
        .iter()
        .zip(&config.sources.dicom)
        .map(|(l, s)| ListenerInfo {
            source: s.name.clone(),
            kind: "dicom".into(),
            addr: l.local_addr().to_string(),
        })
        .collect()
}

/// Starts serving every bound listener on `tasks`.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    bound: Bound,
    submitter: &Submitter,
    shutdown: &CancellationToken,
) {
    for l in bound.0 {
        tasks.spawn(l.run(submitter.clone(), shutdown.clone()));
    }
}
