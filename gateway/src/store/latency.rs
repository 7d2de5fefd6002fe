//! A fixed-bucket histogram of commit latencies, filled by the store writer
//! and read by `/metrics` (Prometheus histogram semantics: cumulative
//! buckets, a sum and a count). Lock-free: one relaxed atomic add per bucket
//! hit, so it costs nothing measurable on the commit path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds. From a fast SSD's fsync (about
/// 150 µs here) to a slow SD card's (tens of milliseconds) and a stalled disk.
pub const BOUNDS_SECS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative; see [`Self::snapshot`]).
    buckets: [AtomicU64; BOUNDS_SECS.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    /// Sum of all observations, in microseconds.
    sum_micros: AtomicU64,
}

/// A copy for rendering: cumulative counts per bound, then the total.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(bound in seconds, observations <= bound)`, cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations in seconds.
    pub sum_secs: f64,
}

impl LatencyHistogram {
    /// Record one commit's duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BOUNDS_SECS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The cumulative view.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS_SECS.len());
        for (bound, n) in BOUNDS_SECS.iter().zip(self.buckets.iter()) {
            running += n.load(Ordering::Relaxed);
            buckets.push((*bound, running));
        }
        HistogramSnapshot {
            buckets,
            count: running + self.over.load(Ordering::Relaxed),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.005, 2));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(2));
        assert_eq!(s.count, 3);
        assert!((s.sum_secs - 10.0032).abs() < 1e-6);
    }
}
