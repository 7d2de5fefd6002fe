//! The equipment sources (serial ports, MQTT subscriptions, DICOM nodes):
//! started together, stopped together, and on a reload restarted one kind
//! at a time when that kind's configuration changed.
//!
//! Each kind runs in its own group (its tasks and its own stop token), so a
//! reload that changes `[[source.mqtt]]` restarts only the MQTT sources:
//! they reconnect with their persistent session and the broker delivers
//! what was not acknowledged; a serial port is reopened; a DICOM node is
//! re-bound (associations in progress on it end; the modality sends again,
//! and nothing that got a success status is lost). MLLP listeners are
//! reloaded in place by the source supervisor instead.
//!
//! Start order: the fallible preparation of a kind (reading MQTT password
//! and certificate files, binding DICOM listeners) happens before its tasks
//! start, so `start` fails before anything runs.

use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::Config;
use wardlink_devices::Submitter;

use crate::links::LinkBoard;
use crate::status::ListenerInfo;

/// One kind's running sources.
#[derive(Default)]
struct Group {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    infos: Vec<ListenerInfo>,
}

impl Group {
    async fn stop(mut self, deadline: Duration, kind: &str) {
        self.stop.cancel();
        let drained = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                kind,
                deadline_secs = deadline.as_secs(),
                "sources did not stop in time; stopping them anyway (nothing acknowledged is lost)"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// The equipment sources of the running configuration.
pub struct Equipment {
    submitter: Option<Submitter>,
    board: LinkBoard,
    config: Config,
    serial: Group,
    mqtt: Group,
    dicom: Group,
}

impl Equipment {
    /// Prepare and start every serial, MQTT and DICOM source of `config`.
    ///
    /// # Errors
    /// An MQTT source's files cannot be read or used, or a DICOM listener
    /// cannot bind (nothing has started then).
    pub async fn start(
        config: &Config,
        submitter: Submitter,
        board: LinkBoard,
    ) -> anyhow::Result<Equipment> {
        let mqtt = start_mqtt(config, &submitter, &board)?;
        let dicom = start_dicom(config, &submitter, &board).await?;
        let serial = start_serial(config, &submitter, &board);
        Ok(Equipment {
            submitter: Some(submitter),
            board,
            config: config.clone(),
            serial,
            mqtt,
            dicom,
        })
    }

    /// What `status` lists for them: brokers and bound DICOM addresses.
    pub fn infos(&self) -> Vec<ListenerInfo> {
        [&self.serial, &self.mqtt, &self.dicom]
            .into_iter()
            .flat_map(|g| g.infos.iter().cloned())
            .collect()
    }

    /// Apply `new`: restart each kind whose sources changed. Returns one
    /// line per change.
    ///
    /// # Errors
    /// The new MQTT files cannot be used (the running MQTT sources stay), or
    /// a new DICOM listener cannot bind (the DICOM sources are then down;
    /// the error says so).
    pub async fn reload(&mut self, new: &Config) -> anyhow::Result<Vec<String>> {
        let Some(submitter) = self.submitter.clone() else {
            anyhow::bail!("the equipment sources are stopped");
        };
        let mut changes = Vec::new();
        if new.sources.mqtt != self.config.sources.mqtt {
            // Prepared first: bad files leave the running sources alone.
            let fresh = start_mqtt(new, &submitter, &self.board)?;
            std::mem::replace(&mut self.mqtt, fresh)
                .stop(Duration::from_secs(5), "mqtt")
                .await;
            self.config.sources.mqtt = new.sources.mqtt.clone();
            changes.push("[[source.mqtt]] changed: MQTT sources restarted".to_owned());
        }
        if new.sources.serial != self.config.sources.serial {
            std::mem::take(&mut self.serial)
                .stop(Duration::from_secs(5), "serial")
                .await;
            self.serial = start_serial(new, &submitter, &self.board);
            self.config.sources.serial = new.sources.serial.clone();
            changes.push("[[source.serial]] changed: serial ports reopened".to_owned());
        }
        if new.sources.dicom != self.config.sources.dicom {
            // The old listeners hold their addresses: stop them first.
            std::mem::take(&mut self.dicom)
                .stop(Duration::from_secs(5), "dicom")
                .await;
            self.config.sources.dicom = new.sources.dicom.clone();
            self.dicom = start_dicom(new, &submitter, &self.board)
                .await
                .context("the DICOM sources are stopped until the next good reload")?;
            changes.push("[[source.dicom]] changed: DICOM listeners re-bound".to_owned());
        }
        Ok(changes)
    }

    /// Stop every equipment source (each answers what it has in flight)
    /// and drop the submitter, within `deadline` per kind.
    pub async fn stop(mut self, deadline: Duration) {
        self.submitter.take();
        for (group, kind) in [
            (std::mem::take(&mut self.serial), "serial"),
            (std::mem::take(&mut self.mqtt), "mqtt"),
            (std::mem::take(&mut self.dicom), "dicom"),
        ] {
            group.stop(deadline, kind).await;
        }
    }
}

fn start_serial(config: &Config, submitter: &Submitter, board: &LinkBoard) -> Group {
    let mut g = Group::default();
    crate::serial::spawn(
        &config.sources.serial,
        submitter,
        board,
        &g.stop,
        &mut g.tasks,
    );
    g
}

fn start_mqtt(config: &Config, submitter: &Submitter, board: &LinkBoard) -> anyhow::Result<Group> {
    let mqtt = crate::mqtt::MqttSources::prepare(config)?;
    let mut g = Group {
        infos: mqtt.infos(),
        ..Group::default()
    };
    mqtt.spawn(&mut g.tasks, submitter, board, &g.stop);
    Ok(g)
}

async fn start_dicom(
    config: &Config,
    submitter: &Submitter,
    board: &LinkBoard,
) -> anyhow::Result<Group> {
    let bound = crate::dicom_source::bind(config).await?;
    let mut g = Group {
        infos: crate::dicom_source::infos(&bound, config),
        ..Group::default()
    };
    for info in &g.infos {
        board.listening(&info.source, "dicom", &info.addr);
    }
    crate::dicom_source::spawn(&mut g.tasks, bound, submitter, &g.stop);
    Ok(g)
}
