//! The systemd notify protocol (`sd_notify(3)`): `READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`. Every call is a no-op without `NOTIFY_SOCKET`.
//!
//! Design: the watchdog pings prove that the store still commits, not merely
//! that a thread is scheduled. The store writer commits a tiny heartbeat
//! row whenever nothing else was committed for a quarter of the watchdog
//! interval (`WATCHDOG_USEC`) and stamps
//! [`WriterStats::committed_at_ms`] after every durable commit. The
//! [`Notifier`] task looks at that stamp every quarter interval and sends
//! `WATCHDOG=1` only while the last commit is at most half an interval
//! old. Worked example with `WatchdogSec=20s`: heartbeat and check every
//! 5 s; a store that stops committing (disk gone, a lock held by another
//! process, the writer stuck in an fsync) stops the pings after at most
//! 10 s, and systemd restarts the service 20 s after the last ping.
//! The writer commits its first heartbeat as soon as it starts, so the
//! pings begin right after `READY=1`; until that first commit the notifier
//! neither pings nor, for half an interval, raises the alarm (before this,
//! every start logged the alarm and the first ping came a quarter interval
//! late).
//!
//! `STATUS=` is a one-line summary (sources up, backlog) sent with
//! `READY=1` and then every [`STATUS_EVERY`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::store::unix_ms;
use crate::store::writer::WriterStats;

/// How often `STATUS=` is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, and
/// `WATCHDOG_PID` naming this process if set), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// How often the store writer commits a heartbeat for a watchdog interval.
pub fn heartbeat_for(watchdog: Duration) -> Duration {
    (watchdog / 4).max(Duration::from_millis(10))
}

/// Send notify states; a failure is logged, never fatal.
pub fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// Produces the `STATUS=` line (it may read the store: it runs on a
/// blocking thread).
pub type StatusLine = Arc<dyn Fn() -> String + Send + Sync>;

/// The task that sends `WATCHDOG=1` and `STATUS=` while the daemon runs.
pub struct Notifier {
    /// The writer's figures: `committed_at_ms` is what the pings follow.
    pub stats: Arc<WriterStats>,
    /// `WATCHDOG_USEC`; `None`: no pings.
    pub watchdog: Option<Duration>,
    /// The status line.
    pub status: StatusLine,
}

impl Notifier {
    /// Send `READY=1` with the first status line, then run until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let line = self.status_line().await;
        send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&line),
        ]);
        let tick = self.watchdog.map_or(STATUS_EVERY, heartbeat_for);
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = tokio::time::Instant::now();
        let started_ms = unix_ms(SystemTime::now());
        let mut pinging = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Some(w) = self.watchdog {
                let now = unix_ms(SystemTime::now());
                let committed = self.stats.committed_at_ms.load(Ordering::Relaxed);
                let within_half =
                    |ms: i64| u128::try_from(ms.max(0)).unwrap_or(0) <= (w / 2).as_millis();
                let age_ms = now - committed;
                let fresh = within_half(age_ms);
                // Before the first commit (the writer commits a heartbeat as
                // soon as it starts) there is nothing to ping for yet, and
                // for half an interval nothing to alarm about either.
                let starting = committed == 0 && within_half(now - started_ms);
                if fresh {
                    send(&[sd_notify::NotifyState::Watchdog]);
                    if !pinging {
                        tracing::info!("The store commits again; watchdog pings resumed");
                    }
                    pinging = true;
                } else if !starting {
                    if pinging {
                        tracing::error!(
                            last_commit_ms_ago = age_ms,
                            "ALARM: the store has not committed for half the watchdog interval; \
                             watchdog pings stop (systemd restarts the service if this persists)"
                        );
                    }
                    pinging = false;
                }
            }
            if last_status.elapsed() >= STATUS_EVERY {
                last_status = tokio::time::Instant::now();
                let line = self.status_line().await;
                send(&[sd_notify::NotifyState::Status(&line)]);
            }
        }
    }

    async fn status_line(&self) -> String {
        let f = self.status.clone();
        tokio::task::spawn_blocking(move || f())
            .await
            .unwrap_or_else(|_| "status unavailable".into())
    }
}
