//! Tools for the people wiring equipment: `wardlink simulate <device>` and
//! `wardlink tap SOURCE`. The subcommand definitions live here (clap's
//! `Subcommand`/`Args`), so `cli.rs` only names them and `main.rs` only
//! dispatches.
//!
//! - `simulate bed-sensors --mqtt URL`: see [`simulate`]. Other simulators
//!   (`medibus`, `hl7`) are further variants of [`SimulateCommand`].
//! - `tap SOURCE [--raw]`: see [`tap`]; dispatches on the source's kind.

mod simulate;
mod tap;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

pub use simulate::{simulate, BedSensorsArgs, SimulateCommand};
pub use tap::{tap, TapArgs};

/// Exit code for a runtime failure (as `main`).
const EXIT_RUNTIME: u8 = 2;
/// Exit code for a check that failed, e.g. no such source (as `main`).
const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code for a configuration problem (as `main`).
const EXIT_CONFIG: u8 = 78;

/// Run `task` on a small runtime; SIGINT/SIGTERM cancel its token.
fn on_runtime<F, Fut>(task: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wardlink: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                s.cancel();
            }
        });
        task(stop).await
    })
}

/// `mqtt://host[:port]` → (host, port).
fn mqtt_host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("{url:?}: the simulator speaks plain mqtt://HOST[:PORT]"))?
        .trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: no closing ]"))?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port"))?,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_owned(), port))
}
