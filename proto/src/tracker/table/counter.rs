//! The per-torrent `downloaded` count: a grow-only counter (G-counter)
//! with one shard per tracker node.
//!
//! Each node only ever increments its own shard, so "max per node" merges
//! replicas without double counting, and the total is the sum of shards.
//!
//! Invariants this module keeps:
//! - A shard's `count` and `stamp` only grow; merging takes the maximum of
//!   each independently, which is a join (commutative, associative,
//!   idempotent) even for shards no honest node would produce.
//! - At most [`MAX_SHARDS`] shards per torrent, so gossip that invents node
//!   ids cannot grow a torrent's memory without bound.
//! - Shards stay sorted by node id, so equal counters are equal values.

use serde::{Deserialize, Serialize};

use crate::tracker::hlc::Timestamp;

/// Most node shards one torrent's counter keeps. A cluster has a handful of
/// tracker nodes; anything near this is a bug or an attack.
pub const MAX_SHARDS: usize = 1024;

/// One node's share of a torrent's `downloaded` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// The node that counted these completions.
    pub node: u64,
    /// How many `completed` announces it has seen.
    pub count: u64,
    /// When it last counted one; lets an abandoned torrent's counter age
    /// out consistently on every replica.
    pub stamp: Timestamp,
}

/// A torrent's grow-only completion counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Downloads {
    shards: Vec<Shard>,
}

impl Downloads {
    /// The cluster-wide total.
    pub(crate) fn total(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.count))
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Counts one completion on `node`'s shard. Returns the shard before
    /// (if any) and after, so the caller can update fingerprints; `None`
    /// only when the counter is full of other nodes' shards.
    pub(crate) fn increment(
        &mut self,
        node: u64,
        stamp: Timestamp,
    ) -> Option<(Option<Shard>, Shard)> {
        let add = Shard {
            node,
            count: self.get(node).map_or(0, |s| s.count).saturating_add(1),
            stamp,
        };
        self.merge(add)
    }

    fn get(&self, node: u64) -> Option<Shard> {
        self.shards
            .binary_search_by_key(&node, |s| s.node)
            .ok()
            .map(|i| self.shards[i])
    }

    /// Joins a remote shard. Returns `(before, after)` when anything
    /// changed, `None` when the shard added nothing (or the counter is full).
    pub(crate) fn merge(&mut self, remote: Shard) -> Option<(Option<Shard>, Shard)> {
        match self.shards.binary_search_by_key(&remote.node, |s| s.node) {
            Ok(i) => {
                let old = self.shards[i];
                let new = Shard {
                    node: old.node,
                    count: old.count.max(remote.count),
                    stamp: old.stamp.max(remote.stamp),
                };
                if new == old {
                    return None;
                }
                self.shards[i] = new;
                Some((Some(old), new))
            }
            Err(i) => {
                if self.shards.len() >= MAX_SHARDS {
                    return None;
                }
                self.shards.insert(i, remote);
                Some((None, remote))
            }
        }
    }

    /// Whether every shard's stamp has outlived the ttl.
    pub(crate) fn all_dead(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.shards
            .iter()
            .all(|s| s.stamp.wall_ms.saturating_add(ttl_ms) < now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(wall: u64, node: u64) -> Timestamp {
        Timestamp {
            wall_ms: wall,
            counter: 0,
            node,
        }
    }

    #[test]
    fn increments_and_sums() {
        let mut d = Downloads::default();
        d.increment(2, ts(1, 2));
        d.increment(1, ts(2, 1));
        let (before, after) = d.increment(2, ts(3, 2)).unwrap();
        assert_eq!(before.map(|s| s.count), Some(1));
        assert_eq!(after.count, 2);
        assert_eq!(d.total(), 3);
        assert_eq!(
            d.shards().iter().map(|s| s.node).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(d.all_dead(100, 10) && !d.all_dead(12, 10));
    }

    #[test]
    fn merge_takes_the_max_per_node() {
        let mut d = Downloads::default();
        d.increment(1, ts(5, 1));
        assert!(d
            .merge(Shard {
                node: 1,
                count: 0,
                stamp: ts(1, 1)
            })
            .is_none());
        d.merge(Shard {
            node: 1,
            count: 7,
            stamp: ts(2, 1),
        });
        assert_eq!(d.shards()[0].count, 7);
        assert_eq!(d.shards()[0].stamp, ts(5, 1));
    }

    #[test]
    fn shard_count_is_capped() {
        let mut d = Downloads::default();
        for n in 0..(MAX_SHARDS as u64 + 10) {
            d.merge(Shard {
                node: n,
                count: 1,
                stamp: ts(1, n),
            });
        }
        assert_eq!(d.shards().len(), MAX_SHARDS);
    }

    fn shard() -> impl Strategy<Value = Shard> {
        (0u64..4, 0u64..5, 0u64..5).prop_map(|(node, count, wall)| Shard {
            node,
            count,
            stamp: ts(wall, node),
        })
    }

    proptest! {
        #[test]
        fn merge_is_order_independent(
            a in proptest::collection::vec(shard(), 0..12),
            seed in any::<u64>(),
        ) {
            let mut x = Downloads::default();
            for s in &a { x.merge(*s); }
            let mut shuffled = a.clone();
            // A cheap deterministic shuffle driven by the seed.
            let mut r = seed;
            for i in (1..shuffled.len()).rev() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (r >> 33) as usize % (i + 1));
            }
            let mut y = Downloads::default();
            for s in shuffled.iter().chain(&a) { y.merge(*s); }
            prop_assert_eq!(x, y);
        }
    }
}
