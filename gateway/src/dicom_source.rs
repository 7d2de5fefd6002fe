//! The daemon's side of `[[source.dicom]]`: config → listener options, bind
//! every DICOM listener, spawn them. Kept out of `daemon.rs` so that each
//! source kind hooks in with a line or two.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, DicomSource};
use wardlink_devices::dicom::mpps::StepState;
use wardlink_devices::dicom::{DicomListener, DicomOptions};
use wardlink_devices::Submitter;

use crate::status::ListenerInfo;

/// The MPPS steps a source already stored, oldest first (instance UID and
/// the state each left), read from the store if there is one. A store that
/// cannot be read gives none: N-SETs of older steps then get 0x0112.
fn mpps_known(config: &Config, source: &str) -> Vec<(String, StepState)> {
    let path = crate::store::db_path(&config.gateway.state_dir);
    if !path.exists() {
        return Vec::new();
    }
    let read = || -> rusqlite::Result<Vec<(String, StepState)>> {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut stmt = conn.prepare(
            "SELECT control_id, trigger_event FROM messages
             WHERE kind = 'mpps' AND source = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?;
        let mut known = Vec::new();
        for row in rows {
            if let (Some(uid), Some(state)) = row? {
                if let Some(state) = StepState::parse(&state) {
                    known.push((uid, state));
                }
            }
        }
        Ok(known)
    };
    match read() {
        Ok(known) => known,
        Err(e) => {
            tracing::warn!(source, error = %e, "cannot read the MPPS steps of the store; starting without them");
            Vec::new()
        }
    }
}

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
        mpps_known: Vec::new(),
        keep_files: s.keep_files.clone(),
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
        let mut o = options(source);
        o.mpps_known = mpps_known(config, &source.name);
        let l = DicomListener::bind(o)
            .await
            .with_context(|| format!("source.dicom `{}`", source.name))?;
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
