//! One swarm's slice of the peer table: its entries, kept dense for fast
//! random sampling, its cached counts, and its `downloaded` counter.
//!
//! Invariants this module keeps:
//! - `slots` and `index` describe the same set: `index[peer] == i` exactly
//!   when `slots[i].0 == peer`. Removal is swap-remove plus one index fix,
//!   so every operation is O(1) except the expiry scan.
//! - `seeders`, `leechers` and `tombstones` count the slots by kind,
//!   ignoring death. They are exact for readers whenever no slot can be
//!   dead yet, which `oldest_ms` (a lower bound on every slot's wall time)
//!   tells in O(1); only when it cannot tell does a reader scan.
//! - Hash maps use [`SeededState`]: keyed by a seed the caller supplies, so
//!   iteration order (and thus every output) is reproducible in the
//!   simulator, and unpredictable to clients choosing hostile infohashes
//!   in production.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::counter::Downloads;
use super::entry::{Entry, PeerId};

/// A `BuildHasher` keyed by a caller-supplied seed instead of OS
/// randomness (which this crate never touches).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededState(pub(crate) u64);

impl BuildHasher for SeededState {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        // `DefaultHasher::new` is SipHash with fixed keys; absorbing the
        // secret seed first makes the rest of the state unknown to anyone
        // who does not know the seed.
        let mut h = DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// One swarm.
#[derive(Debug, Clone)]
pub(crate) struct Torrent {
    index: HashMap<PeerId, u32, SeededState>,
    slots: Vec<(PeerId, Entry)>,
    seeders: u32,
    leechers: u32,
    tombstones: u32,
    /// No slot's `stamp.wall_ms` is below this.
    oldest_ms: u64,
    pub(crate) downloads: Downloads,
}

impl Torrent {
    pub(crate) fn new(seed: u64) -> Torrent {
        Torrent {
            index: HashMap::with_hasher(SeededState(seed)),
            slots: Vec::new(),
            seeders: 0,
            leechers: 0,
            tombstones: 0,
            oldest_ms: u64::MAX,
            downloads: Downloads::default(),
        }
    }

    /// Number of entries, tombstones and not-yet-expired dead ones included.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(crate) fn slots(&self) -> &[(PeerId, Entry)] {
        &self.slots
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Entry> {
        self.index.get(peer).map(|&i| &self.slots[i as usize].1)
    }

    /// (seeders, leechers, tombstones), dead entries included.
    pub(crate) fn raw_counts(&self) -> (u32, u32, u32) {
        (self.seeders, self.leechers, self.tombstones)
    }

    fn tally(&mut self, e: &Entry, add: bool) {
        let c = if e.tombstone {
            &mut self.tombstones
        } else if e.seeder {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        if add {
            *c += 1;
        } else {
            *c -= 1;
        }
    }

    /// Whether some entry might be dead at `now_ms`.
    pub(crate) fn may_have_dead(&self, now_ms: u64, ttl_ms: u64) -> bool {
        !self.slots.is_empty() && self.oldest_ms.saturating_add(ttl_ms) < now_ms
    }

    /// Live (seeders, leechers): O(1) unless some entry may be dead.
    pub(crate) fn live_counts(&self, now_ms: u64, ttl_ms: u64) -> (u32, u32) {
        if !self.may_have_dead(now_ms, ttl_ms) {
            return (self.seeders, self.leechers);
        }
        let mut s = 0;
        let mut l = 0;
        for (_, e) in &self.slots {
            if e.is_live_peer(now_ms, ttl_ms) {
                if e.seeder {
                    s += 1;
                } else {
                    l += 1;
                }
            }
        }
        (s, l)
    }

    /// Inserts or replaces `peer`'s entry, returning the previous one.
    /// The caller has already decided the new entry wins and fits.
    pub(crate) fn upsert(&mut self, peer: PeerId, e: Entry) -> Option<Entry> {
        self.oldest_ms = self.oldest_ms.min(e.stamp.wall_ms);
        self.tally(&e, true);
        match self.index.get(&peer) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.slots[i as usize].1, e);
                self.tally(&old, false);
                Some(old)
            }
            None => {
                // u32 indices halve the index's memory; no swarm gets near
                // four billion peers, and the table's limits forbid it.
                let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.index.insert(peer, i);
                self.slots.push((peer, e));
                None
            }
        }
    }

    /// Removes every dead entry, calling `removed` for each, and recomputes
    /// `oldest_ms` exactly. Returns how many were removed.
    pub(crate) fn remove_dead(
        &mut self,
        now_ms: u64,
        ttl_ms: u64,
        mut removed: impl FnMut(&PeerId, &Entry),
    ) -> usize {
        let mut n = 0;
        let mut i = 0;
        let mut oldest = u64::MAX;
        while i < self.slots.len() {
            let (peer, e) = self.slots[i];
            if e.is_dead(now_ms, ttl_ms) {
                removed(&peer, &e);
                self.tally(&e, false);
                self.index.remove(&peer);
                self.slots.swap_remove(i);
                if let Some((moved, _)) = self.slots.get(i) {
                    if let Some(slot) = self.index.get_mut(moved) {
                        *slot = i as u32;
                    }
                }
                n += 1;
            } else {
                oldest = oldest.min(e.stamp.wall_ms);
                i += 1;
            }
        }
        self.oldest_ms = oldest;
        if self.slots.capacity() > 4 * self.slots.len().max(8) {
            self.slots.shrink_to_fit();
            self.index.shrink_to_fit();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::hlc::Timestamp;

    fn e(wall: u64, seeder: bool, tombstone: bool) -> Entry {
        Entry {
            addr: "198.18.0.1:1".parse().unwrap(),
            seeder,
            stamp: Timestamp {
                wall_ms: wall,
                counter: 0,
                node: 0,
            },
            tombstone,
        }
    }

    fn check(t: &Torrent) {
        assert_eq!(t.index.len(), t.slots.len());
        for (i, (p, _)) in t.slots.iter().enumerate() {
            assert_eq!(t.index[p] as usize, i);
        }
        let (s, l, d) = t.raw_counts();
        assert_eq!((s + l + d) as usize, t.len());
    }

    #[test]
    fn counts_follow_upserts_and_expiry() {
        let mut t = Torrent::new(1);
        t.upsert([1; 20], e(100, true, false));
        t.upsert([2; 20], e(100, false, false));
        t.upsert([3; 20], e(200, false, true));
        check(&t);
        assert_eq!(t.raw_counts(), (1, 1, 1));
        assert_eq!(t.live_counts(150, 100), (1, 1));
        // Peer 2 becomes a seeder.
        assert_eq!(
            t.upsert([2; 20], e(300, true, false)).map(|o| o.seeder),
            Some(false)
        );
        assert_eq!(t.raw_counts(), (2, 0, 1));
        // At 250 peer 1 is dead but still stored: readers must not count it.
        assert!(t.may_have_dead(250, 100));
        assert_eq!(t.live_counts(250, 100), (1, 0));
        let mut gone = Vec::new();
        assert_eq!(t.remove_dead(250, 100, |p, _| gone.push(*p)), 1);
        assert_eq!(gone, vec![[1; 20]]);
        check(&t);
        assert!(!t.may_have_dead(250, 100));
        assert_eq!(t.live_counts(250, 100), (1, 0));
        assert_eq!(t.remove_dead(10_000, 100, |_, _| {}), 2);
        assert!(t.is_empty());
        check(&t);
    }

    #[test]
    fn seeded_hashing_is_reproducible() {
        let order = |seed| {
            let mut m = HashMap::with_hasher(SeededState(seed));
            for i in 0..50u8 {
                m.insert([i; 20], ());
            }
            m.keys().copied().collect::<Vec<_>>()
        };
        assert_eq!(order(7), order(7));
    }
}
