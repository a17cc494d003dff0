//! The swarm's table of connected peers: a map from [`PeerKey`] to
//! [`Peer`] shaped for the swarm's access pattern.
//!
//! Nearly every input looks one peer up by key; connects and disconnects
//! are rare, and iteration must follow key order (choking, flushing and
//! announcing iterate, and their order decides the actions). A `BTreeMap`
//! cost several cache misses per lookup (node header, keys, a second
//! level once a swarm has a dozen peers), which `perf` showed dominating
//! the simulator's handlers at thousands of nodes. Here the peers sit in
//! one `Vec` sorted by key, and a small open-addressing index (key, then
//! position; linear probing, at most half full) finds a key's position
//! in about one cache line.
//!
//! Invariants this module keeps:
//! - `entries` is sorted by key with no duplicates; iteration follows it.
//! - `index` is empty when `entries` is, otherwise a power of two at least
//!   twice `entries.len()` long, and holds exactly one `(key, position)`
//!   per entry, reachable from the key's home slot without crossing an
//!   empty slot. It is rebuilt on every insert and remove, never iterated.

use std::ops::Index;

use super::peer::Peer;
use super::types::PeerKey;

/// An index slot: the key and its position in `entries`, or empty.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    /// Position plus one; 0 marks an empty slot.
    pos: u32,
}

const EMPTY: Slot = Slot { key: 0, pos: 0 };

/// Connected peers by key; see the module comment.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerMap {
    entries: Vec<(PeerKey, Peer)>,
    index: Vec<Slot>,
}

/// The key's home slot in an index of `len` (a power of two) slots.
fn home(key: PeerKey, len: usize) -> usize {
    // Fibonacci hashing: keys are often small consecutive integers, which
    // the multiply spreads over the high bits.
    let h = key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - len.trailing_zeros())) as usize
}

impl PeerMap {
    /// The position of `key` in `entries`.
    fn find(&self, key: PeerKey) -> Option<usize> {
        let len = self.index.len();
        if len == 0 {
            return None;
        }
        let mask = len - 1;
        let mut i = home(key, len);
        loop {
            let s = self.index[i];
            if s.pos == 0 {
                return None;
            }
            if s.key == key.0 {
                return Some(s.pos as usize - 1);
            }
            i = (i + 1) & mask;
        }
    }

    fn rebuild(&mut self) {
        self.index.clear();
        if self.entries.is_empty() {
            return;
        }
        // At least 8 slots and at most half full: probes stay short.
        let len = (self.entries.len() * 2).next_power_of_two().max(8);
        self.index.resize(len, EMPTY);
        let mask = len - 1;
        for (pos, (key, _)) in self.entries.iter().enumerate() {
            let mut i = home(*key, len);
            while self.index[i].pos != 0 {
                i = (i + 1) & mask;
            }
            self.index[i] = Slot {
                key: key.0,
                pos: pos as u32 + 1,
            };
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn contains_key(&self, key: &PeerKey) -> bool {
        self.find(*key).is_some()
    }

    pub(crate) fn get(&self, key: &PeerKey) -> Option<&Peer> {
        self.find(*key).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &PeerKey) -> Option<&mut Peer> {
        self.find(*key).map(|i| &mut self.entries[i].1)
    }

    /// Adds or replaces the peer under `key`; returns the one replaced.
    pub(crate) fn insert(&mut self, key: PeerKey, peer: Peer) -> Option<Peer> {
        match self.entries.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, peer)),
            Err(i) => {
                self.entries.insert(i, (key, peer));
                self.rebuild();
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &PeerKey) -> Option<Peer> {
        let i = self.find(*key)?;
        let (_, p) = self.entries.remove(i);
        self.rebuild();
        Some(p)
    }

    /// Keys in increasing order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &PeerKey> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Peers in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.entries.iter().map(|(_, p)| p)
    }

    /// (key, peer) in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PeerKey, &Peer)> + '_ {
        self.entries.iter().map(|(k, p)| (k, p))
    }

    /// (key, peer) in key order, the peers mutable.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerKey, &mut Peer)> + '_ {
        self.entries.iter_mut().map(|(k, p)| (&*k, p))
    }
}

impl Index<&PeerKey> for PeerMap {
    type Output = Peer;

    /// Panics if `key` is absent: only for keys the caller just found.
    fn index(&self, key: &PeerKey) -> &Peer {
        match self.get(key) {
            Some(p) => p,
            None => panic!("peer {key:?} is not connected"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::types::Time;

    #[test]
    fn behaves_like_an_ordered_map() {
        let mut m = PeerMap::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 7u64;
        for step in 0..2000u64 {
            // A small key space, so inserts, replaces and removes all hit.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = PeerKey((x >> 33) % 97 * if step.is_multiple_of(3) { 1 << 40 } else { 1 });
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(m.remove(&key).is_some(), model.remove(&key).is_some());
            } else {
                let mut p = Peer::new(8, Time::ZERO, false);
                p.stalls = step as u32;
                assert_eq!(
                    m.insert(key, p).is_some(),
                    model.insert(key, step).is_some()
                );
            }
            assert_eq!(m.len(), model.len());
            assert_eq!(m.is_empty(), model.is_empty());
            assert!(m.keys().copied().eq(model.keys().copied()));
            for (k, v) in &model {
                assert!(m.contains_key(k));
                assert_eq!(m[k].stalls, *v as u32);
                assert_eq!(m.get(k).map(|p| p.stalls), Some(*v as u32));
            }
            assert!(!m.contains_key(&PeerKey(1 << 50)));
        }
        for (_, p) in m.iter_mut() {
            p.stalls = 0;
        }
        assert!(m.values().all(|p| p.stalls == 0));
        assert!(m.iter().map(|(k, _)| *k).eq(model.keys().copied()));
    }
}
