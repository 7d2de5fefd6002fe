//! `wardlink simulate`: realistic devices on real ports, for trying the
//! wiring and the configuration without the equipment; the tests and the
//! benchmark use the same code.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wardlink_devices::sim::medibus::{MedibusSim, SimFaults};
use wardlink_devices::sim::pty::PtyDevice;

use crate::cli::SimulateMedibus;

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
