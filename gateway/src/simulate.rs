//! `wardlink simulate`: realistic devices on real ports, for trying the
//! wiring and the configuration without the equipment; the tests and the
//! benchmark use the same code.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardlink_devices::mllp::MllpClient;
use wardlink_devices::sim::medibus::{MedibusSim, SimFaults};
use wardlink_devices::sim::pty::PtyDevice;
use wardlink_devices::sim::{AdtEvent, Hl7Generator};

use crate::cli::{Hl7Mix, SimulateHl7, SimulateMedibus};

/// Serve simulated MEDIBUS ventilators on pseudo-terminals until
/// `shutdown` is cancelled (`wardlink simulate medibus`).
///
/// # Errors
/// A port cannot be made, or serving it failed.
pub async fn medibus(o: SimulateMedibus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let faults = SimFaults {
        corrupt_every: o.corrupt_every,
        truncate_every: o.truncate_every,
        silent: false,
        split_writes: o.split_writes,
    };
    let (switch, rx) = watch::channel(faults);
    let mut tasks = tokio::task::JoinSet::new();
    let mut stdout = std::io::stdout();
    for i in 0..o.count.max(1) {
        let pty = PtyDevice::open().context("cannot open a pseudo-terminal")?;
        writeln!(stdout, "{}", pty.path().display())?;
        if i == 0 {
            if let Some(link) = &o.link {
                let _ = std::fs::remove_file(link);
                std::os::unix::fs::symlink(pty.path(), link)
                    .with_context(|| format!("cannot make the link {}", link.display()))?;
            }
        }
        let name = if o.count > 1 {
            format!("{} {}", o.name, i + 1)
        } else {
            o.name.clone()
        };
        tasks.spawn(pty.serve_medibus(MedibusSim::new(&name, i + 1), rx.clone(), shutdown.clone()));
    }
    stdout.flush()?;
    if let Some(after) = o.silent_after {
        let for_secs = o.silent_for;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(secs(after)) => {}
            }
            switch.send_modify(|f| f.silent = true);
            eprintln!("simulate: silent now");
            if let Some(d) = for_secs {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(secs(d)) => {}
                }
                switch.send_modify(|f| f.silent = false);
                eprintln!("simulate: answering again");
            }
            stop.cancelled().await;
        });
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(stats)) => tracing::debug!(?stats, "simulated ventilator stopped"),
            Ok(Err(e)) => result = Err(anyhow::Error::new(e).context("serving the port failed")),
            Err(e) => result = Err(anyhow::Error::new(e)),
        }
    }
    if let Some(link) = &o.link {
        let _ = std::fs::remove_file(link);
    }
    result
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// What `simulate hl7` sent and what came back.
#[derive(Debug, Default)]
pub struct Hl7Tally {
    /// Messages sent.
    pub sent: u64,
    /// Answered AA or CA (or CA then AA in enhanced mode).
    pub accepted: u64,
    /// Answered AE/CE.
    pub errors: u64,
    /// Answered AR/CR.
    pub rejected: u64,
    /// No answer (timeout, connection lost) or an answer without MSA.
    pub unanswered: u64,
}

impl Hl7Tally {
    /// Every message sent was accepted.
    pub fn all_accepted(&self) -> bool {
        self.accepted == self.sent
    }
}

impl fmt::Display for Hl7Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}: {} accepted (AA/CA), {} errors (AE/CE), {} rejected (AR/CR), {} unanswered",
            self.sent, self.accepted, self.errors, self.rejected, self.unanswered
        )
    }
}

/// What HL7 senders sent and got back, shared by the senders of one run
/// (`simulate hl7`, `demo`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) accepted: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    unanswered: AtomicU64,
}

impl Counters {
    fn tally(&self) -> Hl7Tally {
        Hl7Tally {
            sent: self.sent.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            unanswered: self.unanswered.load(Ordering::Relaxed),
        }
    }
}

/// The acknowledgement code (MSA-1) of an answer.
fn ack_code(answer: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(answer).ok()?;
    text.split(['\r', '\n'])
        .find_map(|seg| seg.strip_prefix("MSA|"))
        .and_then(|rest| rest.split('|').next())
}

/// Send HL7 v2 over MLLP until `count` messages are sent (0: until
/// `shutdown`), on `connections` connections (`wardlink simulate hl7`).
/// A lost connection is counted and made again after a second.
///
/// # Errors
/// `--to` is not an address.
pub async fn hl7(o: SimulateHl7, shutdown: CancellationToken) -> anyhow::Result<Hl7Tally> {
    let addr: SocketAddr = tokio::net::lookup_host(&o.to)
        .await
        .with_context(|| format!("--to {}: not a HOST:PORT", o.to))?
        .next()
        .with_context(|| format!("--to {}: no address", o.to))?;
    let counters = Arc::new(Counters::default());
    // Shared by the senders, so --count is exact.
    let budget = (o.count > 0).then(|| Arc::new(AtomicU64::new(o.count)));
    // Control ids unique across runs: duplicate detection must not fire.
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = (!o.quiet).then(|| Arc::new(Mutex::new(std::io::stdout())));
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..o.connections.max(1) {
        let generator = Hl7Generator::new(o.seed.wrapping_add(u64::from(i)))
            .with_sender("SIMULATOR", "WARD")
            .with_prefix(&format!("SIM{run}-{i}-"));
        let sender = Hl7Sender {
            addr,
            mix: o.mix,
            rate: o.rate,
            timeout: secs(o.timeout.max(0.1)),
            budget: budget.clone(),
            counters: counters.clone(),
            out: out.clone(),
        };
        senders.spawn(sender.run(generator, shutdown.clone()));
    }
    while senders.join_next().await.is_some() {}
    Ok(counters.tally())
}

/// One simulated HL7 sender (one connection at a time, made again a
/// second after it fails), for `simulate hl7` and the demo.
pub(crate) struct Hl7Sender {
    /// The MLLP listener.
    pub(crate) addr: SocketAddr,
    /// What it sends.
    pub(crate) mix: Hl7Mix,
    /// Messages per second; 0 = as fast as the answers come.
    pub(crate) rate: f64,
    /// For each connect and each answer.
    pub(crate) timeout: Duration,
    /// Messages left to send, shared with the other senders; `None` = until stopped.
    pub(crate) budget: Option<Arc<AtomicU64>>,
    /// What was sent and answered.
    pub(crate) counters: Arc<Counters>,
    /// Where a line per message goes; `None` = quiet.
    pub(crate) out: Option<Arc<Mutex<std::io::Stdout>>>,
}

impl Hl7Sender {
    /// Take one message from the shared budget.
    fn take(&self) -> bool {
        self.budget.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// The `n`th message of this sender.
    fn message(&self, g: &mut Hl7Generator, n: u64) -> Vec<u8> {
        match self.mix {
            Hl7Mix::Vitals => g.oru_vitals(),
            Hl7Mix::Mixed => g.next_message(),
            // Admit, transfer, discharge, in turn.
            Hl7Mix::Adt => g.adt(match n % 3 {
                0 => AdtEvent::A01,
                1 => AdtEvent::A02,
                _ => AdtEvent::A03,
            }),
        }
    }

    /// Send until the budget is spent or `stop` is cancelled.
    pub(crate) async fn run(self, mut generator: Hl7Generator, stop: CancellationToken) {
        let interval = (self.rate > 0.0).then(|| secs(1.0 / self.rate));
        let mut client: Option<MllpClient> = None;
        let mut n = 0u64;
        while !stop.is_cancelled() {
            let mut c = match client.take() {
                Some(c) => c,
                None => match MllpClient::connect(self.addr).await {
                    Ok(c) => c.with_timeout(self.timeout),
                    Err(e) => {
                        eprintln!("HL7 sender: {e}; retrying");
                        pause(&stop, Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            if !self.take() {
                return;
            }
            let id = generator.next_control_id();
            let message = self.message(&mut generator, n);
            n += 1;
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let answer = c.send(&message).await;
            let code = match &answer {
                Ok(a) => ack_code(a).unwrap_or("no MSA").to_owned(),
                Err(e) => format!("no answer ({e})"),
            };
            let counter = match code.as_str() {
                "AA" | "CA" => &self.counters.accepted,
                "AE" | "CE" => &self.counters.errors,
                "AR" | "CR" => &self.counters.rejected,
                _ => &self.counters.unanswered,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(out) = &self.out {
                let kind = std::str::from_utf8(&message)
                    .ok()
                    .and_then(|m| m.split('|').nth(8))
                    .unwrap_or("?")
                    .to_owned();
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(out, "{id} {kind} {code}");
            }
            if answer.is_ok() {
                client = Some(c);
            } else {
                pause(&stop, Duration::from_secs(1)).await;
            }
            if let Some(d) = interval {
                pause(&stop, d).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::ack_code;

    #[test]
    fn the_ack_code_is_msa_1_whatever_the_segment_terminator() {
        assert_eq!(ack_code(b"MSH|^~\\&|A\rMSA|AA|C1\r"), Some("AA"));
        assert_eq!(ack_code(b"MSH|^~\\&|A\nMSA|CR|C1|full\n"), Some("CR"));
        assert_eq!(ack_code(b"MSH|^~\\&|A\r"), None);
    }
}
