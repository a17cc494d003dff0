//! Hybrid logical clock (HLC): the stamps that order writes to the
//! replicated peer table.
//!
//! A stamp is wall-clock milliseconds plus a logical counter plus the
//! writer's node id. Wall time keeps stamps close to real time, so expiry
//! ("stamp older than the ttl") means roughly what it says; the counter
//! orders writes that happen within one millisecond or after observing a
//! clock that runs ahead of ours; the node id breaks the remaining ties.
//!
//! Invariants this module keeps:
//! - [`Timestamp`] is totally ordered (wall, then counter, then node), and
//!   two writes by different nodes never compare equal.
//! - [`Clock::tick`] is strictly monotonic: each stamp it returns is greater
//!   than every stamp it returned before and every stamp it accepted in
//!   [`Clock::observe`]. That is what lets a later write anywhere in the
//!   cluster beat an earlier one it has seen, even when the two nodes'
//!   wall clocks disagree by seconds.
//! - A remote stamp more than `max_drift_ms` ahead of our wall clock is
//!   refused, so one node with a broken clock cannot drag every other
//!   clock (and every entry's expiry) into the future.

use serde::{Deserialize, Serialize};

/// Default for how far ahead of our own wall clock a remote stamp may be.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;

/// One write's position in the cluster-wide order.
///
/// Field order matters: the derived `Ord` compares `wall_ms`, then
/// `counter`, then `node`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the writer's HLC saw it.
    pub wall_ms: u64,
    /// Logical counter within one `wall_ms`.
    pub counter: u32,
    /// Id of the node that made the write; breaks ties between nodes.
    pub node: u64,
}

/// Why a remote stamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote stamp is further ahead of our wall clock than the
    /// allowed drift: its sender's clock is probably wrong.
    #[error(
        "remote clock {remote_ms} ms is more than {max_drift_ms} ms ahead of ours ({now_ms} ms)"
    )]
    TooFarAhead {
        /// The remote stamp's wall time.
        remote_ms: u64,
        /// Our wall time when we saw it.
        now_ms: u64,
        /// The largest lead we accept.
        max_drift_ms: u64,
    },
}

/// A node's hybrid logical clock. It owns no time source: every call is
/// given the current wall time.
#[derive(Debug, Clone)]
pub struct Clock {
    node: u64,
    /// Highest (wall, counter) issued or observed; `node` is ours.
    last: Timestamp,
    max_drift_ms: u64,
}

impl Clock {
    /// A clock for `node` with the default maximum drift.
    pub fn new(node: u64) -> Clock {
        Clock::with_max_drift(node, DEFAULT_MAX_DRIFT_MS)
    }

    /// A clock for `node` that refuses remote stamps more than
    /// `max_drift_ms` ahead of the local wall clock.
    pub fn with_max_drift(node: u64, max_drift_ms: u64) -> Clock {
        Clock {
            node,
            last: Timestamp {
                wall_ms: 0,
                counter: 0,
                node,
            },
            max_drift_ms,
        }
    }

    /// This clock's node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The largest lead over local wall time that [`Clock::observe`] accepts.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The highest stamp issued or observed so far (with our node id).
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A fresh stamp for a local write, greater than every stamp issued or
    /// observed before.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        if now_ms > self.last.wall_ms {
            self.last.wall_ms = now_ms;
            self.last.counter = 0;
        } else if self.last.counter == u32::MAX {
            // Four billion writes in one millisecond cannot happen honestly;
            // borrowing a millisecond keeps monotonicity without panicking.
            self.last.wall_ms = self.last.wall_ms.saturating_add(1);
            self.last.counter = 0;
        } else {
            self.last.counter += 1;
        }
        self.last.node = self.node;
        self.last
    }

    /// Takes a remote stamp into account, so the next [`Clock::tick`] is
    /// greater than it. A stamp too far in the future is refused and leaves
    /// the clock unchanged.
    pub fn observe(&mut self, remote: Timestamp, now_ms: u64) -> Result<(), ClockError> {
        if remote.wall_ms > now_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockError::TooFarAhead {
                remote_ms: remote.wall_ms,
                now_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        // Only (wall, counter) matters for the next tick: the node id of
        // what we issue is always ours, so ties with the remote node are
        // resolved by the counter bump in `tick`.
        if (remote.wall_ms, remote.counter) > (self.last.wall_ms, self.last.counter) {
            self.last.wall_ms = remote.wall_ms;
            self.last.counter = remote.counter;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ticks_follow_wall_time_and_count_within_a_millisecond() {
        let mut c = Clock::new(7);
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(999); // wall clock stepped back
        let e = c.tick(2000);
        assert_eq!((a.wall_ms, a.counter, a.node), (1000, 0, 7));
        assert_eq!((b.wall_ms, b.counter), (1000, 1));
        assert_eq!((d.wall_ms, d.counter), (1000, 2));
        assert_eq!((e.wall_ms, e.counter), (2000, 0));
        assert!(a < b && b < d && d < e);
    }

    #[test]
    fn node_breaks_ties() {
        let a = Timestamp {
            wall_ms: 5,
            counter: 1,
            node: 1,
        };
        let b = Timestamp { node: 2, ..a };
        assert!(a < b);
        assert_ne!(a, b);
    }

    #[test]
    fn counter_overflow_borrows_a_millisecond() {
        let mut c = Clock::new(1);
        c.observe(
            Timestamp {
                wall_ms: 10,
                counter: u32::MAX,
                node: 2,
            },
            10,
        )
        .unwrap();
        let t = c.tick(10);
        assert_eq!((t.wall_ms, t.counter), (11, 0));
    }

    #[test]
    fn refuses_stamps_from_the_far_future() {
        let mut c = Clock::with_max_drift(1, 1000);
        let before = c.last();
        let far = Timestamp {
            wall_ms: 5_001,
            counter: 0,
            node: 2,
        };
        assert_eq!(
            c.observe(far, 4_000),
            Err(ClockError::TooFarAhead {
                remote_ms: 5_001,
                now_ms: 4_000,
                max_drift_ms: 1000
            })
        );
        assert_eq!(c.last(), before);
        // Exactly at the limit is fine.
        c.observe(
            Timestamp {
                wall_ms: 5_000,
                ..far
            },
            4_000,
        )
        .unwrap();
        assert!(c.tick(4_000).wall_ms == 5_000);
    }

    /// Node A runs 5 s fast, node B runs on time. A write on B made after
    /// B has seen A's write must win, although B's wall clock is behind.
    #[test]
    fn skewed_clocks_still_order_causally() {
        let mut a = Clock::new(1);
        let mut b = Clock::new(2);
        let real = 100_000;
        let wa = a.tick(real + 5_000);
        b.observe(wa, real + 10).unwrap();
        let wb = b.tick(real + 10);
        assert!(wb > wa);
        // And back: A sees B's write and orders after it.
        a.observe(wb, real + 5_020).unwrap();
        assert!(a.tick(real + 5_020) > wb);
    }

    proptest! {
        /// Whatever mix of ticks and observations, every tick is greater
        /// than everything before it.
        #[test]
        fn tick_is_strictly_monotonic(
            ops in proptest::collection::vec(
                (any::<bool>(), 0u64..10_000, 0u64..10_000, any::<u32>(), any::<u64>()), 1..200)
        ) {
            let mut c = Clock::with_max_drift(42, 3_000);
            let mut high = c.last();
            for (is_tick, now, rwall, rcounter, rnode) in ops {
                if is_tick {
                    let t = c.tick(now);
                    prop_assert!((t.wall_ms, t.counter) > (high.wall_ms, high.counter));
                    prop_assert_eq!(t.node, 42);
                    high = t;
                } else {
                    let r = Timestamp { wall_ms: rwall, counter: rcounter, node: rnode };
                    if c.observe(r, now).is_ok() && (r.wall_ms, r.counter) > (high.wall_ms, high.counter) {
                        high = r;
                    }
                }
            }
        }
    }
}
