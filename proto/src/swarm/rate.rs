//! Per-peer transfer rate and round-trip estimates.
//!
//! [`Rate`] is an exponentially decaying byte counter: bytes count with
//! weight `e^(-age/τ)`, and the rate is the decayed sum over τ. Dividing
//! by `1 - e^(-elapsed/τ)` (the weight a constant stream would have built
//! up since the first byte) removes the start-up bias, so a new peer's
//! estimate is right after one block instead of after several τ; without
//! that, pipelines sized from the estimate would open slowly.
//!
//! [`Rtt`] keeps the smallest request-to-block latency seen on the
//! connection. Latency samples include queueing behind our own earlier
//! requests; if those fed the pipeline size, a deeper pipeline would
//! measure a longer round trip and deepen itself again until it hit the
//! maximum (bufferbloat). The minimum is the propagation delay plus one
//! block's serialization, which is what the bandwidth-delay product needs.
//!
//! Invariants: estimates are finite and non-negative; time only moves
//! forward inside an estimator (an earlier `now` counts as no time passed).

use std::time::Duration;

use super::types::Time;

/// Floor on the bias-correction age: below it one block would read as an
/// absurd rate.
const MIN_AGE_SECS: f64 = 0.05;

/// An exponentially decaying rate estimate in bytes per second.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rate {
    /// Decayed byte sum as of `last`.
    sum: f64,
    last: Time,
    start: Option<Time>,
    total: u64,
}

impl Rate {
    /// Starts the clock (first request or serve) if it has not started, so
    /// idle time before the first transfer does not dilute the estimate.
    pub(crate) fn start(&mut self, now: Time) {
        if self.start.is_none() {
            self.start = Some(now);
            self.last = now;
        }
    }

    /// Records `bytes` at `now`.
    pub(crate) fn add(&mut self, now: Time, bytes: u64, tau: Duration) {
        self.start(now);
        self.decay(now, tau);
        self.sum += bytes as f64;
        self.total = self.total.saturating_add(bytes);
    }

    fn decay(&mut self, now: Time, tau: Duration) {
        if now > self.last {
            let dt = now.secs_since(self.last);
            self.sum *= (-dt / tau.as_secs_f64()).exp();
            self.last = now;
        }
    }

    /// Bytes per second as of `now`.
    pub(crate) fn get(&self, now: Time, tau: Duration) -> f64 {
        let Some(start) = self.start else {
            return 0.0;
        };
        let tau = tau.as_secs_f64();
        let dt = now.secs_since(self.last);
        // Read at the moment of the last `add` more often than not: no
        // decay then, and no `exp` (e^0 is exactly 1, so the value is the
        // same).
        let sum = if dt > 0.0 {
            self.sum * (-dt / tau).exp()
        } else {
            self.sum
        };
        let age = now.secs_since(start).max(MIN_AGE_SECS);
        let weight = 1.0 - (-age / tau).exp();
        sum / tau / weight
    }

    /// Every byte ever recorded.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// The smallest request-to-block latency seen on one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rtt {
    min: Option<Duration>,
}

impl Rtt {
    pub(crate) fn sample(&mut self, latency: Duration) {
        if self.min.is_none_or(|m| latency < m) {
            self.min = Some(latency);
        }
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_stream_reads_its_rate_at_once_and_later() {
        let tau = Duration::from_secs(2);
        let mut r = Rate::default();
        r.start(Time::ZERO);
        // 1 MB every 100 ms = 10 MB/s.
        for i in 1..=5 {
            r.add(Time::from_millis(100 * i), 1_000_000, tau);
        }
        let early = r.get(Time::from_millis(500), tau);
        assert!((early - 10e6).abs() / 10e6 < 0.15, "early {early}");
        for i in 6..=200 {
            r.add(Time::from_millis(100 * i), 1_000_000, tau);
        }
        let late = r.get(Time::from_millis(20_000), tau);
        assert!((late - 10e6).abs() / 10e6 < 0.1, "late {late}");
        // Silence decays it.
        let idle = r.get(Time::from_millis(30_000), tau);
        assert!(idle < late / 100.0);
        assert_eq!(r.total(), 200_000_000);
        assert_eq!(Rate::default().get(Time::from_millis(5), tau), 0.0);
    }

    #[test]
    fn rtt_keeps_the_minimum() {
        let mut r = Rtt::default();
        assert_eq!(r.get(), None);
        r.sample(Duration::from_millis(30));
        r.sample(Duration::from_millis(10));
        r.sample(Duration::from_millis(50));
        assert_eq!(r.get(), Some(Duration::from_millis(10)));
    }
}
