//! Token-bucket arithmetic for transfer rate limits: how many bytes a
//! limit allows at `now`, and how long to wait for more. The daemon
//! (`src/ratelimit.rs`) holds one bucket per direction, node-wide and per
//! torrent, and only sleeps for the times computed here.
//!
//! The bucket fills at `rate` bytes per second up to `burst` bytes. A
//! charge is let through whenever the balance is not negative, and the
//! whole charge is taken even if that leaves the balance below zero (a
//! debt). A charge of any size therefore waits at most for the debt of the
//! one before it, large charges never starve behind small ones, and after
//! `t` seconds at most `rate·t + burst + largest charge` bytes went
//! through. Changing the rate keeps the balance (and any debt) in bytes,
//! so a waiter re-asking after the change waits at the new rate.
//!
//! Invariants: `0 < rate`, `1 ≤ burst`, the balance never exceeds `burst`;
//! refill is exact integer arithmetic (no drift over hours); time only
//! moves forward (an earlier `now` adds nothing); nothing overflows for
//! any `u64` input.

use std::time::Duration;

use crate::swarm::Time;

/// Smallest burst: below it a limited transfer would stop and start for
/// every packet.
pub const MIN_BURST: u64 = 16 * 1024;

/// The burst that goes with `rate`: a tenth of a second of traffic (at
/// least [`MIN_BURST`]), so a limit holds over windows of about a second
/// while a fast limited transfer is not woken a thousand times a second.
pub fn burst_for(rate: u64) -> u64 {
    (rate / 10).max(MIN_BURST)
}

const MICROS: u128 = 1_000_000;

/// A token bucket: `rate` bytes per second, at most `burst` saved up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Whole bytes available; negative is a debt.
    tokens: i128,
    /// Refill not yet worth a whole byte, in byte·µs per second units
    /// (`0 ≤ frac < 1_000_000`).
    frac: u128,
    last: Time,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (a rate of 0 counts as 1:
    /// "nothing ever" is not a limit this module expresses).
    pub fn new(now: Time, rate: u64) -> TokenBucket {
        let rate = rate.max(1);
        let burst = burst_for(rate);
        TokenBucket {
            rate,
            burst,
            tokens: i128::from(burst),
            frac: 0,
            last: now,
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Most bytes let through at once after an idle spell.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The balance as of the last call, in bytes; negative is a debt.
    pub fn balance(&self) -> i128 {
        self.tokens
    }

    /// Switches to `rate` from `now` on: time until `now` is paid at the
    /// old rate, the balance is kept (capped at the new burst), and a debt
    /// is paid off at the new rate.
    pub fn set_rate(&mut self, now: Time, rate: u64) {
        self.refill(now);
        self.rate = rate.max(1);
        self.burst = burst_for(self.rate);
        self.tokens = self.tokens.min(i128::from(self.burst));
    }

    /// Charges `n` bytes at `now`: `Ok` if they may go now (the balance may
    /// go negative), or `Err(wait)` where `wait` is the time until the
    /// balance is back to zero, after which the caller asks again.
    pub fn take(&mut self, now: Time, n: u64) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 0 {
            self.tokens -= i128::from(n);
            return Ok(());
        }
        Err(self.wait_for_zero())
    }

    /// Time until the balance is at least zero; zero if it already is.
    pub fn wait_for_zero(&self) -> Duration {
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        // Need `-tokens` whole bytes, of which `frac` byte·µs/s are
        // already accrued: µs = ceil((debt·1e6 − frac) / rate).
        let need = self.tokens.unsigned_abs() * MICROS - self.frac;
        let micros = need.div_ceil(u128::from(self.rate));
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Adds what `rate` earned since `last`, capped at `burst`.
    fn refill(&mut self, now: Time) {
        if now <= self.last {
            return;
        }
        let elapsed = u128::from(now.as_micros() - self.last.as_micros());
        self.last = now;
        let earned = elapsed * u128::from(self.rate) + self.frac;
        let whole = earned / MICROS;
        self.frac = earned % MICROS;
        let burst = i128::from(self.burst);
        // `whole` can exceed i128 only after ~10^19 years at u64::MAX/s.
        let whole = i128::try_from(whole).unwrap_or(i128::MAX);
        self.tokens = self.tokens.saturating_add(whole).min(burst);
        if self.tokens == burst {
            // A full bucket keeps no fractional credit, or it would hold
            // more than `burst`.
            self.frac = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: u64) -> Time {
        Time::from_millis(t)
    }

    /// Sends `chunk`-byte charges as fast as the bucket allows from `from`
    /// until `until`, sleeping exactly the waits it returns; returns bytes
    /// sent.
    fn drive(b: &mut TokenBucket, from: Time, until: Time, chunk: u64) -> u64 {
        let mut now = from;
        let mut sent = 0;
        while now < until {
            match b.take(now, chunk) {
                Ok(()) => sent += chunk,
                Err(wait) => {
                    assert!(wait > Duration::ZERO, "a wait is never zero");
                    now = now + wait;
                }
            }
        }
        sent
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_at_once() {
        let rate = 4 << 20;
        let mut b = TokenBucket::new(ms(0), rate);
        assert_eq!(b.burst(), rate / 10);
        assert_eq!(b.take(ms(0), b.burst()), Ok(()));
        assert_eq!(b.balance(), 0);
        // Zero is not a debt: one more charge goes, then it waits.
        assert_eq!(b.take(ms(0), 1000), Ok(()));
        let wait = b.take(ms(0), 1).unwrap_err();
        // 1000 bytes at 4 MiB/s: 238.4 µs, rounded up.
        assert_eq!(wait, Duration::from_micros(239));
        assert_eq!(b.take(ms(0) + wait, 1), Ok(()));
    }

    #[test]
    fn long_runs_hold_the_rate_within_one_burst() {
        for (rate, chunk) in [
            (4u64 << 20, 64 * 1024u64),
            (10_000, 16 * 1024),
            (1 << 30, 256 * 1024),
            (3, 1),
        ] {
            let mut b = TokenBucket::new(ms(0), rate);
            let secs = 10;
            let sent = drive(&mut b, ms(0), ms(secs * 1000), chunk);
            let allowed = rate * secs + b.burst() + chunk;
            let floor = rate * secs - chunk;
            assert!(
                sent <= allowed && sent >= floor,
                "rate {rate} chunk {chunk}: sent {sent}, bounds {floor}..={allowed}"
            );
        }
    }

    #[test]
    fn any_one_second_window_stays_near_the_rate() {
        let rate = 4u64 << 20;
        let chunk = 64 * 1024;
        let mut b = TokenBucket::new(ms(0), rate);
        // Idle start, so the first window carries the full burst.
        let mut now = ms(0);
        let mut sends = Vec::new();
        while now < ms(5000) {
            match b.take(now, chunk) {
                Ok(()) => sends.push(now),
                Err(wait) => now = now + wait,
            }
        }
        for start in (0..4000).step_by(50) {
            let in_window = sends
                .iter()
                .filter(|t| **t >= ms(start) && **t < ms(start + 1000))
                .count() as u64;
            assert!(
                in_window * chunk <= rate + b.burst() + chunk,
                "window at {start} ms: {} bytes",
                in_window * chunk
            );
        }
    }

    #[test]
    fn a_debt_is_repaid_at_the_new_rate() {
        let mut b = TokenBucket::new(ms(0), 1000);
        assert_eq!(b.burst(), MIN_BURST);
        b.take(ms(0), MIN_BURST + 64 * 1024).unwrap();
        // 64 KiB of debt at 1000 B/s is over a minute.
        assert!(b.take(ms(0), 1).unwrap_err() > Duration::from_secs(60));
        b.set_rate(ms(100), 64 * 1024 * 10);
        // 100 ms at the old rate paid 100 bytes; the rest goes at 640 KiB/s.
        let wait = b.take(ms(100), 1).unwrap_err();
        assert!(
            wait > Duration::from_millis(99) && wait < Duration::from_millis(101),
            "{wait:?}"
        );
        assert_eq!(b.take(ms(100) + wait, 1), Ok(()));
    }

    #[test]
    fn lowering_the_rate_caps_the_saved_burst() {
        let mut b = TokenBucket::new(ms(0), 100 << 20);
        assert_eq!(b.balance(), i128::from(10u64 << 20));
        b.set_rate(ms(0), 1 << 20);
        assert_eq!(b.balance(), i128::from(burst_for(1 << 20)));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(ms(1000), 1000);
        b.take(ms(1000), MIN_BURST + 500).unwrap();
        let wait = b.take(ms(500), 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(b.take(ms(1200), 1).unwrap_err(), Duration::from_millis(300));
    }

    #[test]
    fn refill_is_exact_over_many_small_steps() {
        // 3 bytes/s in 1 µs steps: fractions must add up, not round away.
        let mut b = TokenBucket::new(ms(0), 3);
        b.take(ms(0), b.burst()).unwrap();
        assert_eq!(b.balance(), 0);
        b.take(ms(0), 3).unwrap();
        let mut now = ms(0);
        for _ in 0..1_000_000 {
            now = now + Duration::from_micros(1);
            let _ = b.take(now, 0);
        }
        assert_eq!(b.balance(), 0, "exactly 3 bytes earned in one second");
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        let mut b = TokenBucket::new(Time::ZERO, u64::MAX);
        b.take(Time::ZERO, u64::MAX).unwrap();
        assert!(b.take(Time::ZERO, u64::MAX).is_err());
        let _ = b.take(Time::from_micros(u64::MAX), u64::MAX);
        let mut slow = TokenBucket::new(Time::ZERO, 0);
        assert_eq!(slow.rate(), 1);
        slow.take(Time::ZERO, u64::MAX).unwrap();
        let wait = slow.take(Time::ZERO, 1).unwrap_err();
        assert_eq!(wait, Duration::from_micros(u64::MAX));
        slow.set_rate(Time::from_micros(u64::MAX), u64::MAX);
        assert!(slow.wait_for_zero() <= Duration::from_secs(2));
    }
}
