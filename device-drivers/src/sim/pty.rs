//! Simulated devices on a real pseudo-terminal pair (I/O): the device side
//! is the PTY master, and the slave's path (`/dev/pts/N`) is what a
//! `[[source.serial]]` `path` names. Used by `wardlink simulate medibus
//! --pty`, the PTY tests and the benchmark.

use std::io;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

use super::medibus::{MedibusSim, SimFaults, SimStats};

/// A pseudo-terminal pair: the device's end and the path of the other.
pub struct PtyDevice {
    master: SerialStream,
    /// Kept open so the master never sees "no slave" (EIO) while the
    /// gateway closes and reopens the path.
    _slave: SerialStream,
    path: PathBuf,
}

impl PtyDevice {
    /// Open a new pair.
    ///
    /// # Errors
    /// No pseudo-terminal could be allocated.
    pub fn open() -> io::Result<Self> {
        let (master, slave) = SerialStream::pair().map_err(io::Error::other)?;
        let path = slave
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("the pseudo-terminal has no path"))?;
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    /// The path to open as the serial port, e.g. `/dev/pts/5`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Serve a MEDIBUS ventilator on this pair until `shutdown` is cancelled
    /// (then the pair closes, as if the device were unplugged). `faults`
    /// may change while it runs.
    ///
    /// # Errors
    /// Reading or writing the master failed.
    pub async fn serve_medibus(
        mut self,
        mut sim: MedibusSim,
        mut faults: watch::Receiver<SimFaults>,
        shutdown: CancellationToken,
    ) -> io::Result<SimStats> {
        let mut buf = vec![0u8; 4096];
        sim.faults = *faults.borrow_and_update();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(sim.stats()),
                changed = faults.changed() => {
                    if changed.is_ok() {
                        sim.faults = *faults.borrow_and_update();
                    }
                }
                n = self.master.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(sim.stats());
                    }
                    let out = sim.feed(&buf[..n]);
                    if sim.faults.split_writes && out.len() > 1 {
                        // Frames arrive in two reads on the other side.
                        let (a, b) = out.split_at(out.len() / 2);
                        self.master.write_all(a).await?;
                        self.master.flush().await?;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        self.master.write_all(b).await?;
                    } else if !out.is_empty() {
                        self.master.write_all(&out).await?;
                    }
                }
            }
        }
    }

    /// Write `bytes` as the device (for line devices and tests).
    ///
    /// # Errors
    /// Writing the master failed.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.master.write_all(bytes).await
    }
}
