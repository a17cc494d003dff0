//! The pieces we still need to start, ordered by availability.
//!
//! Layout (after libtorrent's piece picker): one array holding the member
//! pieces sorted by level (how many peers have them), a position index,
//! and the start of each level's bucket. A peer's `have` moves a piece one
//! bucket up by swapping it with the last piece of its bucket and moving
//! the boundary: O(1). Insert and remove walk the boundaries: O(levels),
//! and levels are bounded by the number of connected peers. Peers holding
//! everything are counted apart and never touch this structure.
//!
//! Invariants this module keeps:
//! - `pos[p]` is `p`'s index in `order`, or `NONE` for non-members.
//! - Every member with level `l` sits in bucket `l`: at an index in
//!   `starts[l] .. starts[l+1]` (the top bucket ends at `order.len()`).
//! - `starts` is non-decreasing and starts with 0.
//!
//! The caller owns the levels (the availability array) and passes a
//! piece's current level to every call; `check` verifies agreement in tests.

use std::ops::Range;

const NONE: u32 = u32::MAX;

/// Member pieces bucketed by level.
#[derive(Debug, Clone)]
pub(crate) struct Ranking {
    order: Vec<u32>,
    pos: Vec<u32>,
    starts: Vec<u32>,
}

impl Ranking {
    /// An empty ranking over pieces `0..pieces`.
    pub(crate) fn new(pieces: u32) -> Ranking {
        Ranking {
            order: Vec::new(),
            pos: vec![NONE; pieces as usize],
            starts: vec![0],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn contains(&self, p: u32) -> bool {
        self.pos[p as usize] != NONE
    }

    /// Number of buckets (one more than the highest level ever seen).
    pub(crate) fn levels(&self) -> usize {
        self.starts.len()
    }

    /// Indices of bucket `l` in the order array.
    pub(crate) fn bucket(&self, l: usize) -> Range<usize> {
        if l >= self.starts.len() {
            return self.order.len()..self.order.len();
        }
        let end = self
            .starts
            .get(l + 1)
            .map_or(self.order.len(), |&e| e as usize);
        self.starts[l] as usize..end
    }

    /// The piece at index `i` of the order array.
    pub(crate) fn at(&self, i: usize) -> u32 {
        self.order[i]
    }

    fn ensure_level(&mut self, l: u32) {
        while self.starts.len() <= l as usize {
            self.starts.push(self.order.len() as u32);
        }
    }

    fn swap(&mut self, i: u32, j: u32) {
        if i != j {
            self.order.swap(i as usize, j as usize);
            self.pos[self.order[i as usize] as usize] = i;
            self.pos[self.order[j as usize] as usize] = j;
        }
    }

    /// Adds `p` at `level`. No-op for a member.
    pub(crate) fn insert(&mut self, p: u32, level: u32) {
        if self.contains(p) {
            return;
        }
        self.ensure_level(level);
        let mut i = self.order.len() as u32;
        self.order.push(p);
        self.pos[p as usize] = i;
        // It starts in the top bucket; sink it bucket by bucket.
        let top = self.starts.len() - 1;
        for lv in (level as usize + 1..=top).rev() {
            let first = self.starts[lv];
            self.swap(i, first);
            self.starts[lv] += 1;
            i = first;
        }
    }

    /// Removes `p`, which has `level`. No-op for a non-member.
    pub(crate) fn remove(&mut self, p: u32, level: u32) {
        if !self.contains(p) {
            return;
        }
        let mut i = self.pos[p as usize];
        let top = self.starts.len() - 1;
        // Float it to the top bucket, then off the end.
        for lv in level as usize..top {
            let last = self.starts[lv + 1] - 1;
            self.swap(i, last);
            self.starts[lv + 1] -= 1;
            i = last;
        }
        let last = self.order.len() as u32 - 1;
        self.swap(i, last);
        self.order.pop();
        self.pos[p as usize] = NONE;
    }

    /// Moves member `p` from `level` to `level + 1`.
    pub(crate) fn raise(&mut self, p: u32, level: u32) {
        if !self.contains(p) {
            return;
        }
        self.ensure_level(level + 1);
        let b = level as usize + 1;
        let last = self.starts[b] - 1;
        self.swap(self.pos[p as usize], last);
        self.starts[b] -= 1;
    }

    /// Moves member `p` from `level` (at least 1) to `level - 1`.
    pub(crate) fn lower(&mut self, p: u32, level: u32) {
        if !self.contains(p) || level == 0 {
            return;
        }
        let b = level as usize;
        let first = self.starts[b];
        self.swap(self.pos[p as usize], first);
        self.starts[b] += 1;
    }

    /// Checks every invariant against the caller's levels (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self, level: &[u32]) {
        for (i, &p) in self.order.iter().enumerate() {
            assert_eq!(self.pos[p as usize], i as u32);
            let r = self.bucket(level[p as usize] as usize);
            assert!(r.contains(&i), "piece {p} at {i} not in bucket {r:?}");
        }
        let members = self.pos.iter().filter(|&&x| x != NONE).count();
        assert_eq!(members, self.order.len());
        assert_eq!(self.starts[0], 0);
        assert!(self.starts.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn random_operations_keep_the_buckets_sorted() {
        let n = 200u32;
        let mut rng = Rng::new(7);
        let mut level = vec![0u32; n as usize];
        let mut r = Ranking::new(n);
        for step in 0..20_000 {
            let p = rng.below(u64::from(n)) as u32;
            match rng.below(5) {
                0 => r.insert(p, level[p as usize]),
                1 => r.remove(p, level[p as usize]),
                2 | 3 => {
                    r.raise(p, level[p as usize]);
                    level[p as usize] += 1;
                }
                _ => {
                    if level[p as usize] > 0 {
                        r.lower(p, level[p as usize]);
                        level[p as usize] -= 1;
                    }
                }
            }
            if step % 97 == 0 {
                r.check(&level);
            }
        }
        r.check(&level);
        // Walking the buckets in order visits members by level.
        let mut last = 0;
        for l in 0..r.levels() {
            for i in r.bucket(l) {
                let lv = level[r.at(i) as usize];
                assert!(lv >= last);
                last = lv;
            }
        }
    }
}
