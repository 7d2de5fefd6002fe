//! The daemon's side of `[[source.dicom]]`: config → listener options, bind
//! a DICOM listener, spawn it. Kept out of `daemon.rs` so that each
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

/// The stored MPPS steps of a source, through the partial index
/// `messages_mpps` (schema version 4): it holds only MPPS rows, so this
/// reads those and nothing else. Without it this ran before `READY=1` as a
/// full scan of `messages` (seconds on a store of 10 million messages, per
/// DICOM source). The literal `'mpps'` must stay: it is what lets SQLite use
/// the partial index.
pub(crate) const MPPS_KNOWN_SQL: &str = "SELECT control_id, trigger_event FROM messages
     WHERE kind = 'mpps' AND source = ?1 ORDER BY id";

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
        let mut stmt = conn.prepare(MPPS_KNOWN_SQL)?;
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

/// Binds one `[[source.dicom]]` listener. Nothing is accepted until
/// [`spawn`]; connections wait in the backlog meanwhile.
///
/// # Errors
/// The listener cannot bind, or its `keep_files` spool cannot be opened;
/// the error names the source.
pub async fn bind(config: &Config, source: &DicomSource) -> anyhow::Result<DicomListener> {
    let mut o = options(source);
    o.mpps_known = mpps_known(config, &source.name);
    let l = DicomListener::bind(o)
        .await
        .with_context(|| format!("source.dicom `{}`", source.name))?;
    tracing::info!(source = %source.name, addr = %l.local_addr(), ae_title = %source.ae_title, "dicom listener bound");
    Ok(l)
}

/// The runtime file's entry for a bound listener.
pub fn info(listener: &DicomListener, source: &DicomSource) -> ListenerInfo {
    ListenerInfo {
        source: source.name.clone(),
        kind: "dicom".into(),
        addr: listener.local_addr().to_string(),
    }
}

/// Starts serving a bound listener on `tasks`.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    listener: DicomListener,
    submitter: &Submitter,
    shutdown: &CancellationToken,
) {
    tasks.spawn(listener.run(submitter.clone(), shutdown.clone()));
}
