//! The port task over real pseudo-terminal pairs against the simulator.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::lines::{FieldRef, LineFormat, LineMapping};
use crate::medibus::PollerOptions;
use crate::reading::Value;
use crate::sim::medibus::{MedibusSim, SimFaults};
use crate::sim::pty::PtyDevice;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug)]
enum Event {
    Doc(Box<ReadingDoc>),
    Link(LinkState),
    Note(String),
}

struct TestSink(mpsc::UnboundedSender<Event>);

impl PortSink for TestSink {
    async fn deliver(&mut self, doc: ReadingDoc, _at: SystemTime) -> bool {
        self.0.send(Event::Doc(Box::new(doc))).is_ok()
    }
    fn link(&mut self, state: &LinkState) {
        let _ = self.0.send(Event::Link(state.clone()));
    }
    fn note(&mut self, what: &str) {
        let _ = self.0.send(Event::Note(what.to_owned()));
    }
}

fn options(path: &Path, protocol: Protocol) -> SerialOptions {
    SerialOptions {
        name: Arc::from("vent"),
        path: path.to_owned(),
        baud: 19200,
        data_bits: DataBits::Eight,
        parity: Parity::Even,
        stop_bits: StopBits::One,
        flow_control: FlowControl::None,
        protocol,
        reopen_backoff_min: Duration::from_millis(100),
        reopen_backoff_max: Duration::from_millis(400),
        device_id: None,
        location: ReadingLocation {
            ward: Some("ICU".into()),
            room: None,
            bed: Some("7".into()),
        },
    }
}

fn medibus_fast() -> Protocol {
    Protocol::Medibus(PollerOptions {
        poll_interval: Duration::from_millis(100),
        silent_timeout: Duration::from_millis(1500),
    })
}

/// A simulated ventilator on a new PTY; returns its path, its fault
/// switch and the token that unplugs it.
type SimTask = tokio::task::JoinHandle<std::io::Result<crate::sim::medibus::SimStats>>;

fn ventilator(
    seed: u32,
) -> Result<(
    std::path::PathBuf,
    watch::Sender<SimFaults>,
    CancellationToken,
    SimTask,
)> {
    let pty = PtyDevice::open()?;
    let path = pty.path().to_owned();
    let (faults, rx) = watch::channel(SimFaults::default());
    let unplug = CancellationToken::new();
    let task =
        tokio::spawn(pty.serve_medibus(MedibusSim::new("Evita 4", seed), rx, unplug.clone()));
    Ok((path, faults, unplug, task))
}

/// Wait for the first event `want` accepts, skipping the rest.
async fn wait_for<T>(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    mut want: impl FnMut(&Event) -> Option<T>,
) -> Result<T> {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = rx.recv().await {
            if let Some(t) = want(&e) {
                return Some(t);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(format!("the port task ended before {what}").into()),
        Err(_) => Err(format!("timed out waiting for {what}").into()),
    }
}

fn doc(e: &Event) -> Option<ReadingDoc> {
    match e {
        Event::Doc(d) => Some((**d).clone()),
        _ => None,
    }
}

fn link(status: LinkStatus) -> impl FnMut(&Event) -> Option<LinkState> {
    move |e| match e {
        Event::Link(l) if l.status == status => Some(l.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn medibus_polling_delivers_complete_reading_sets() -> Result {
    let (path, _faults, unplug, sim) = ventilator(1)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let port = tokio::spawn(run_port(
        options(&path, medibus_fast()),
        TestSink(tx),
        stop.clone(),
    ));
    let up = wait_for(&mut rx, "connected", link(LinkStatus::Connected)).await?;
    assert!(up.detail.unwrap_or_default().contains("Evita 4 #0161"));
    // Eight cycles: the ventilator sends its own NOP every seventh.
    for _ in 0..8 {
        let d = wait_for(&mut rx, "a reading set", doc).await?;
        assert_eq!(d.protocol, "medibus");
        assert_eq!(d.device.as_deref(), Some("Evita 4 #0161"));
        assert_eq!(d.location.bed.as_deref(), Some("7"));
        assert_eq!(d.values.len(), 18, "{:?}", d.values);
        assert!(d.raw.starts_with("\u{1}$"), "{}", d.raw);
        let peep = d.values.iter().find(|v| v.label.as_deref() == Some("PEEP"));
        assert_eq!(peep.map(|v| &v.value), Some(&Value::Number(5.0)));
    }
    stop.cancel();
    tokio::time::timeout(WAIT, port).await??;
    unplug.cancel();
    let stats = tokio::time::timeout(WAIT, sim).await???;
    // The gateway answered the ventilator's own NOPs and said goodbye.
    assert!(stats.echoes >= 1, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn corrupt_and_cut_off_frames_are_counted_and_skipped() -> Result {
    let (path, faults, unplug, _sim) = ventilator(2)?;
    faults.send(SimFaults {
        corrupt_every: 4,
        truncate_every: 9,
        silent: false,
        // And every answer arrives split across two reads.
        split_writes: true,
    })?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let port = tokio::spawn(run_port(
        options(&path, medibus_fast()),
        TestSink(tx),
        stop.clone(),
    ));
    let (mut docs, mut bad, mut cut) = (0, 0, 0);
    tokio::time::timeout(WAIT, async {
        while docs < 8 || bad == 0 || cut == 0 {
            match rx.recv().await {
                Some(Event::Doc(d)) => {
                    // Never a partial set: every delivered cycle is whole.
                    assert_eq!(d.values.len(), 18);
                    docs += 1;
                }
                Some(Event::Note(n)) if n.contains("bad checksum") => bad += 1,
                Some(Event::Note(n)) if n.contains("cut-off") => cut += 1,
                Some(_) => {}
                None => break,
            }
        }
    })
    .await?;
    assert!(docs >= 8 && bad > 0 && cut > 0, "{docs} {bad} {cut}");
    stop.cancel();
    unplug.cancel();
    tokio::time::timeout(WAIT, port).await??;
    Ok(())
}

#[tokio::test]
async fn a_silent_device_is_reinitialised_when_it_comes_back() -> Result {
    let (path, faults, unplug, _sim) = ventilator(3)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let port = tokio::spawn(run_port(
        options(&path, medibus_fast()),
        TestSink(tx),
        stop.clone(),
    ));
    wait_for(&mut rx, "a reading set", doc).await?;
    faults.send(SimFaults {
        silent: true,
        ..SimFaults::default()
    })?;
    let lost = wait_for(&mut rx, "no answer", link(LinkStatus::NoAnswer)).await?;
    assert!(lost.detail.unwrap_or_default().contains("re-initialising"));
    faults.send(SimFaults::default())?;
    wait_for(&mut rx, "connected again", link(LinkStatus::Connected)).await?;
    wait_for(&mut rx, "a reading set after the silence", doc).await?;
    stop.cancel();
    unplug.cancel();
    tokio::time::timeout(WAIT, port).await??;
    Ok(())
}

#[tokio::test]
async fn a_vanished_port_is_reopened_when_it_returns() -> Result {
    let dir = tempfile::tempdir()?;
    let link_path = dir.path().join("ventilator");
    let (path, _faults, unplug, sim) = ventilator(4)?;
    std::os::unix::fs::symlink(&path, &link_path)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let port = tokio::spawn(run_port(
        options(&link_path, medibus_fast()),
        TestSink(tx),
        stop.clone(),
    ));
    wait_for(&mut rx, "a reading set", doc).await?;
    // Unplug: the device side closes and the by-id style link disappears.
    unplug.cancel();
    tokio::time::timeout(WAIT, sim).await???;
    std::fs::remove_file(&link_path)?;
    let down = wait_for(&mut rx, "disconnected", link(LinkStatus::Disconnected)).await?;
    assert!(down.detail.is_some());
    // Reopening fails while the link is gone (retried with backoff).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Plug back in: a new device at the same path.
    let (path2, _faults2, unplug2, _sim2) = ventilator(5)?;
    std::os::unix::fs::symlink(&path2, &link_path)?;
    wait_for(&mut rx, "connected again", link(LinkStatus::Connected)).await?;
    let d = wait_for(&mut rx, "a reading set after replugging", doc).await?;
    assert_eq!(d.values.len(), 18);
    stop.cancel();
    unplug2.cancel();
    tokio::time::timeout(WAIT, port).await??;
    Ok(())
}

#[tokio::test]
async fn line_sensor_lines_become_reading_sets() -> Result {
    let mut pty = PtyDevice::open()?;
    let path = pty.path().to_owned();
    let protocol = Protocol::Lines {
        options: crate::lines::LinesOptions {
            format: LineFormat::KeyValue,
            map: vec![LineMapping {
                field: FieldRef::Key("SPO2".into()),
                code: "MDC_PULS_OXIM_SAT_O2".into(),
                system: "MDC".into(),
                unit: Some("%".into()),
                label: None,
            }],
            max_line_bytes: 128,
        },
        silent_timeout: Duration::from_secs(30),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let port = tokio::spawn(run_port(
        options(&path, protocol),
        TestSink(tx),
        stop.clone(),
    ));
    wait_for(&mut rx, "connected", link(LinkStatus::Connected)).await?;
    // A partial first line, then good, unreadable and over-long lines,
    // written in pieces.
    for piece in [
        &b"=97 BPM=70\r\n"[..],
        b"SN=1 SPO2=9",
        b"8% BPM=71\r\nSPO2=abc\r\n",
        &[b'x'; 300][..],
        b"\r\nSPO2=96\n",
    ] {
        pty.write(piece).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = wait_for(&mut rx, "the first reading", doc).await?;
    assert_eq!(d.values[0].value, Value::Number(98.0));
    assert_eq!(d.raw, "SN=1 SPO2=98% BPM=71");
    let d = wait_for(&mut rx, "the unreadable line", doc).await?;
    assert!(d.values.is_empty());
    assert_eq!(
        d.error.as_deref(),
        Some("SPO2 = \"abc\" is not a number (optionally followed by \"%\")")
    );
    let d = wait_for(&mut rx, "the line after the long one", doc).await?;
    assert_eq!(d.values[0].value, Value::Number(96.0));
    stop.cancel();
    tokio::time::timeout(WAIT, port).await??;
    Ok(())
}
