//! The daemon's MQTT sources: prepared before the store opens (password and
//! TLS files read, so a bad file is a start error), then run as one task
//! each beside the listeners. The daemon calls [`MqttSources::prepare`],
//! [`MqttSources::infos`] and [`MqttSources::spawn`]; everything else is in
//! `wardlink_devices::mqtt`.

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::Config;
use wardlink_devices::mqtt::MqttSourceTask;
use wardlink_devices::Submitter;

use crate::links::LinkBoard;
use crate::status::ListenerInfo;

/// Every configured `[[source.mqtt]]`, ready to run.
#[derive(Debug)]
pub struct MqttSources {
    tasks: Vec<MqttSourceTask>,
}

impl MqttSources {
    /// Prepare every MQTT source of `config`.
    ///
    /// # Errors
    /// A password, CA, certificate or key file cannot be read or used.
    pub fn prepare(config: &Config) -> anyhow::Result<MqttSources> {
        let tasks = config
            .sources
            .mqtt
            .iter()
            .map(|s| MqttSourceTask::new(s.clone()).context("cannot start an MQTT source"))
            .collect::<anyhow::Result<_>>()?;
        Ok(MqttSources { tasks })
    }

    /// What `status` lists for them: the broker each one connects to.
    pub fn infos(&self) -> Vec<ListenerInfo> {
        self.tasks
            .iter()
            .map(|t| ListenerInfo {
                source: t.name().to_owned(),
                kind: "mqtt".into(),
                addr: t.peer().to_owned(),
            })
            .collect()
    }

    /// Start them; each stops when `shutdown` is cancelled.
    pub fn spawn(
        self,
        tasks: &mut JoinSet<()>,
        submitter: &Submitter,
        board: &LinkBoard,
        shutdown: &CancellationToken,
    ) {
        for t in self.tasks {
            tracing::info!(source = %t.name(), broker = %t.peer(), "mqtt source starting");
            tasks.spawn(t.run(submitter.clone(), board.reporter(), shutdown.clone()));
        }
    }
}
