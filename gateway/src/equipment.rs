//! The equipment sources (serial ports, MQTT subscriptions, DICOM nodes):
//! started together, stopped together, and on a reload restarted one
//! source at a time, only where that source's configuration changed.
//!
//! Each source runs in its own group (its tasks and its own stop token), so
//! a reload that changes one `[[source.mqtt]]` restarts only that
//! subscription: it reconnects with its persistent session and the broker
//! delivers what was not acknowledged; a changed serial port is reopened; a
//! changed DICOM node is re-bound (associations in progress on *it* end;
//! the modality sends again, and nothing that got a success status is
//! lost). Sources whose configuration is unchanged keep running untouched,
//! with their connections and associations. MLLP listeners are reloaded in
//! place by the source supervisor instead.
//!
//! Order: the fallible preparation (reading MQTT password and certificate
//! files, binding DICOM listeners) happens before a source's tasks start,
//! so `start` fails before anything runs, and a reload whose new MQTT files
//! are unusable changes nothing. A changed DICOM source is stopped before
//! it is bound again (it usually keeps its address); if the new bind
//! fails, that source stays down and the error says so; the next reload
//! tries again.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wardlink_config::{Config, DicomSource, MqttSource, SerialSource};
use wardlink_devices::Submitter;

use crate::links::LinkBoard;
use crate::status::ListenerInfo;

/// How long a stopping source may take to answer what it has in flight.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// One source's running tasks.
#[derive(Default)]
struct Group {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    info: Option<ListenerInfo>,
}

impl Group {
    async fn stop(mut self, deadline: Duration, source: &str) {
        self.stop.cancel();
        let drained = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                source,
                deadline_secs = deadline.as_secs(),
                "source did not stop in time; stopping it anyway (nothing acknowledged is lost)"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// A source's configuration, as far as the reload needs to know it.
trait Source: Clone + PartialEq {
    /// The `[[source.KIND]]` table it comes from.
    const TABLE: &'static str;
    fn name(&self) -> &str;
}

impl Source for SerialSource {
    const TABLE: &'static str = "source.serial";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Source for MqttSource {
    const TABLE: &'static str = "source.mqtt";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Source for DicomSource {
    const TABLE: &'static str = "source.dicom";
    fn name(&self) -> &str {
        &self.name
    }
}

/// The running sources of one kind, in configuration order, each with the
/// configuration it runs with.
struct Kind<C> {
    running: Vec<(C, Group)>,
}

impl<C> Default for Kind<C> {
    fn default() -> Self {
        Kind {
            running: Vec::new(),
        }
    }
}

/// What a reload does to one kind.
struct Plan<'n, C> {
    /// Running sources that were removed or changed.
    stop: Vec<String>,
    /// New configurations that were added or changed.
    start: Vec<&'n C>,
}

impl<C: Source> Kind<C> {
    fn plan<'n>(&self, new: &'n [C]) -> Plan<'n, C> {
        let stop = self
            .running
            .iter()
            .filter(|(old, _)| !new.iter().any(|n| n == old))
            .map(|(old, _)| old.name().to_owned())
            .collect();
        let start = new
            .iter()
            .filter(|n| !self.running.iter().any(|(old, _)| old == *n))
            .collect();
        Plan { stop, start }
    }

    /// Stop the named sources; one line each for the reload's report.
    async fn stop_named(
        &mut self,
        names: &[String],
        new: &[C],
        board: &LinkBoard,
        changes: &mut Vec<String>,
    ) {
        for name in names {
            let Some(at) = self.running.iter().position(|(c, _)| c.name() == name) else {
                continue;
            };
            let (_, group) = self.running.remove(at);
            group.stop(STOP_DEADLINE, name).await;
            if !new.iter().any(|n| n.name() == name) {
                board.remove(name);
                changes.push(format!("[[{}]] `{name}` removed: stopped", C::TABLE));
            }
        }
    }

    fn started(&mut self, config: &C, group: Group, was_running: bool, changes: &mut Vec<String>) {
        let what = if was_running {
            "changed: restarted"
        } else {
            "added: started"
        };
        changes.push(format!("[[{}]] `{}` {what}", C::TABLE, config.name()));
        self.running.push((config.clone(), group));
    }

    /// Back into configuration order (the order `status` lists them in).
    fn order_as(&mut self, new: &[C]) {
        self.running
            .sort_by_key(|(c, _)| new.iter().position(|n| n.name() == c.name()));
    }

    fn infos(&self) -> impl Iterator<Item = ListenerInfo> + '_ {
        self.running.iter().filter_map(|(_, g)| g.info.clone())
    }

    fn take_all(&mut self) -> Vec<(C, Group)> {
        std::mem::take(&mut self.running)
    }
}

/// What [`Equipment::prepare_reload`] read: the new and changed MQTT
/// sources, ready to run.
pub struct Prepared {
    mqtt: Vec<(String, wardlink_devices::mqtt::MqttSourceTask)>,
}

/// The equipment sources of the running configuration.
pub struct Equipment {
    submitter: Option<Submitter>,
    board: LinkBoard,
    serial: Kind<SerialSource>,
    mqtt: Kind<MqttSource>,
    dicom: Kind<DicomSource>,
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
        let mqtt = config
            .sources
            .mqtt
            .iter()
            .map(crate::mqtt::prepare)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut dicom = Vec::new();
        for s in &config.sources.dicom {
            dicom.push(crate::dicom_source::bind(config, s).await?);
        }
        let mut e = Equipment {
            submitter: Some(submitter.clone()),
            board,
            serial: Kind::default(),
            mqtt: Kind::default(),
            dicom: Kind::default(),
        };
        for (s, task) in config.sources.mqtt.iter().zip(mqtt) {
            let g = e.spawn_mqtt(task, &submitter);
            e.mqtt.running.push((s.clone(), g));
        }
        for (s, listener) in config.sources.dicom.iter().zip(dicom) {
            let g = e.spawn_dicom(s, listener, &submitter);
            e.dicom.running.push((s.clone(), g));
        }
        for s in &config.sources.serial {
            let g = e.spawn_serial(s, &submitter);
            e.serial.running.push((s.clone(), g));
        }
        Ok(e)
    }

    /// What `status` lists for them: brokers and bound DICOM addresses.
    pub fn infos(&self) -> Vec<ListenerInfo> {
        self.serial
            .infos()
            .chain(self.mqtt.infos())
            .chain(self.dicom.infos())
            .collect()
    }

    /// The fallible part of a reload, done before anything changes: the
    /// new and changed MQTT sources' files are read. Pass the result to
    /// [`Equipment::reload`].
    ///
    /// # Errors
    /// A new or changed MQTT source's files cannot be used.
    pub fn prepare_reload(&self, new: &Config) -> anyhow::Result<Prepared> {
        let mqtt = self
            .mqtt
            .plan(&new.sources.mqtt)
            .start
            .into_iter()
            .map(|c| crate::mqtt::prepare(c).map(|t| (c.name.clone(), t)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Prepared { mqtt })
    }

    /// Apply `new` (prepared by [`Equipment::prepare_reload`]): stop
    /// removed sources, restart changed ones, start added ones; leave the
    /// others running. Returns one line per change. A new or changed DICOM
    /// listener that cannot bind is logged as an error and listed; that
    /// source stays down until a reload binds it.
    pub async fn reload(&mut self, new: &Config, mut prepared: Prepared) -> Vec<String> {
        let Some(submitter) = self.submitter.clone() else {
            return vec!["the equipment sources are stopped: nothing reloaded".to_owned()];
        };
        let mut changes = Vec::new();

        let plan = self.mqtt.plan(&new.sources.mqtt);
        self.mqtt
            .stop_named(&plan.stop, &new.sources.mqtt, &self.board, &mut changes)
            .await;
        for c in plan.start {
            let Some(at) = prepared.mqtt.iter().position(|(n, _)| *n == c.name) else {
                continue; // not prepared: a different config than prepare_reload saw
            };
            let (_, task) = prepared.mqtt.swap_remove(at);
            let g = self.spawn_mqtt(task, &submitter);
            self.mqtt
                .started(c, g, plan.stop.contains(&c.name), &mut changes);
        }
        self.mqtt.order_as(&new.sources.mqtt);

        let plan = self.serial.plan(&new.sources.serial);
        self.serial
            .stop_named(&plan.stop, &new.sources.serial, &self.board, &mut changes)
            .await;
        for c in plan.start {
            let g = self.spawn_serial(c, &submitter);
            self.serial
                .started(c, g, plan.stop.contains(&c.name), &mut changes);
        }
        self.serial.order_as(&new.sources.serial);

        // DICOM: the old listener holds its address; stop it first.
        let plan = self.dicom.plan(&new.sources.dicom);
        self.dicom
            .stop_named(&plan.stop, &new.sources.dicom, &self.board, &mut changes)
            .await;
        for c in plan.start {
            match crate::dicom_source::bind(new, c).await {
                Ok(listener) => {
                    let g = self.spawn_dicom(c, listener, &submitter);
                    self.dicom
                        .started(c, g, plan.stop.contains(&c.name), &mut changes);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::error!(source = %c.name, error = %why, "DICOM source down until a reload binds it");
                    self.board.not_listening(&c.name, "dicom", &why);
                    changes.push(format!(
                        "[[source.dicom]] `{}` NOT started: {why}; down until a reload binds it",
                        c.name
                    ));
                }
            }
        }
        self.dicom.order_as(&new.sources.dicom);
        changes
    }

    /// Stop every equipment source (each answers what it has in flight)
    /// and drop the submitter, within `deadline` per source.
    pub async fn stop(mut self, deadline: Duration) {
        self.submitter.take();
        let groups = self
            .serial
            .take_all()
            .into_iter()
            .map(|(c, g)| (c.name, g))
            .chain(self.mqtt.take_all().into_iter().map(|(c, g)| (c.name, g)))
            .chain(self.dicom.take_all().into_iter().map(|(c, g)| (c.name, g)));
        // All at once: each source's stop waits for its own in-flight work.
        let mut stopping = JoinSet::new();
        for (name, group) in groups {
            stopping.spawn(async move { group.stop(deadline, &name).await });
        }
        while stopping.join_next().await.is_some() {}
    }

    fn spawn_serial(&self, s: &SerialSource, submitter: &Submitter) -> Group {
        let mut g = Group::default();
        crate::serial::spawn(
            std::slice::from_ref(s),
            submitter,
            &self.board,
            &g.stop,
            &mut g.tasks,
        );
        g
    }

    fn spawn_mqtt(
        &self,
        task: wardlink_devices::mqtt::MqttSourceTask,
        submitter: &Submitter,
    ) -> Group {
        let mut g = Group {
            info: Some(crate::mqtt::info(&task)),
            ..Group::default()
        };
        crate::mqtt::spawn(task, &mut g.tasks, submitter, &self.board, &g.stop);
        g
    }

    fn spawn_dicom(
        &self,
        s: &DicomSource,
        listener: wardlink_devices::dicom::DicomListener,
        submitter: &Submitter,
    ) -> Group {
        let info = crate::dicom_source::info(&listener, s);
        self.board.listening(&info.source, "dicom", &info.addr);
        let mut g = Group {
            info: Some(info),
            ..Group::default()
        };
        crate::dicom_source::spawn(&mut g.tasks, listener, submitter, &g.stop);
        g
    }
}
