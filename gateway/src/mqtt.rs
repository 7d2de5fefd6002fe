//! The daemon's MQTT sources: each prepared first (password and TLS files
//! read, so a bad file is an error before anything changes), then run as
//! one task. The daemon calls [`prepare`], [`info`] and [`spawn`];
//! everything else is in `wardlink_devices::mqtt`.

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::MqttSource;
use wardlink_devices::mqtt::MqttSourceTask;
use wardlink_devices::Submitter;

use crate::links::LinkBoard;
use crate::status::ListenerInfo;

/// Prepare one configured `[[source.mqtt]]`.
///
/// # Errors
/// A password, CA, certificate or key file cannot be read or used.
pub fn prepare(source: &MqttSource) -> anyhow::Result<MqttSourceTask> {
    MqttSourceTask::new(source.clone())
        .with_context(|| format!("cannot start MQTT source `{}`", source.name))
}

/// What `status` lists for it: the broker it connects to.
pub fn info(task: &MqttSourceTask) -> ListenerInfo {
    ListenerInfo {
        source: task.name().to_owned(),
        kind: "mqtt".into(),
        addr: task.peer().to_owned(),
    }
}

/// Start it on `tasks`; it stops when `shutdown` is cancelled.
pub fn spawn(
    task: MqttSourceTask,
    tasks: &mut JoinSet<()>,
    submitter: &Submitter,
    board: &LinkBoard,
    shutdown: &CancellationToken,
) {
    tracing::info!(source = %task.name(), broker = %task.peer(), "mqtt source starting");
    tasks.spawn(task.run(submitter.clone(), board.reporter(), shutdown.clone()));
}
