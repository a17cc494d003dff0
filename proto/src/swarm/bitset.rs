//! A minimal fixed-size bitset for piece sets, private to the swarm.
//!
//! Stopgap: `crate::bitfield::Bitfield` (being written alongside) should
//! replace it; only the BitTorrent byte conversions cross the API.
//!
//! Invariants this module keeps: bits at or beyond `len` are always zero,
//! and `ones` always equals the number of set bits, so `count` is O(1).

/// A set of piece indices below `len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitset {
    /// The empty set over `len` pieces.
    pub(crate) fn new(len: u32) -> Bitset {
        Bitset {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// The full set over `len` pieces.
    pub(crate) fn full(len: u32) -> Bitset {
        let mut b = Bitset::new(len);
        for w in &mut b.words {
            *w = u64::MAX;
        }
        if !len.is_multiple_of(64) {
            if let Some(last) = b.words.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        b.ones = len;
        b
    }

    /// Parses BitTorrent bit order (piece 0 is the high bit of byte 0).
    /// `None` if the length is wrong or a spare bit is set.
    pub(crate) fn from_bt_bytes(len: u32, bytes: &[u8]) -> Option<Bitset> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let mut b = Bitset::new(len);
        for (i, &byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let idx = (i * 8 + bit) as u32;
                    if idx >= len {
                        return None;
                    }
                    b.insert(idx);
                }
            }
        }
        Some(b)
    }

    /// BitTorrent bit order bytes.
    pub(crate) fn to_bt_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; (self.len as usize).div_ceil(8)];
        for i in self.iter() {
            out[i as usize / 8] |= 0x80 >> (i % 8);
        }
        out
    }

    /// Number of members.
    pub(crate) fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every index is a member.
    pub(crate) fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether `i` is a member (false when out of range).
    pub(crate) fn contains(&self, i: u32) -> bool {
        i < self.len && self.words[i as usize / 64] & (1 << (i % 64)) != 0
    }

    /// Adds `i`; returns whether it was new. `i` must be in range.
    ///
    /// Branchy on purpose: the branch-free form (`ones += u32::from(new)`)
    /// was miscompiled by rustc 1.95.0 at opt-level 3 once inlined into
    /// `Swarm::handle_have` (`ones` stayed 0 while the bit was set), which
    /// made release and debug builds pick different pieces. The release
    /// test `simulations/tests/sim.rs::peer_piece_counts_follow_haves`
    /// guards it.
    pub(crate) fn insert(&mut self, i: u32) -> bool {
        let w = &mut self.words[i as usize / 64];
        let m = 1u64 << (i % 64);
        if *w & m != 0 {
            return false;
        }
        *w |= m;
        self.ones += 1;
        true
    }

    /// Removes `i`; returns whether it was present. `i` must be in range.
    pub(crate) fn remove(&mut self, i: u32) -> bool {
        let w = &mut self.words[i as usize / 64];
        let m = 1u64 << (i % 64);
        if *w & m == 0 {
            return false;
        }
        *w &= !m;
        self.ones -= 1;
        true
    }

    /// Members in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(wi as u32 * 64 + b)
            })
        })
    }

    /// Number of members of `self` that are not in `other` (same length).
    pub(crate) fn count_minus(&self, other: &Bitset) -> u32 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a & !b).count_ones())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_bt_order() {
        let mut b = Bitset::new(70);
        assert!(b.insert(0) && b.insert(69) && b.insert(8));
        assert!(!b.insert(8));
        assert_eq!(b.count(), 3);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 8, 69]);
        let bytes = b.to_bt_bytes();
        assert_eq!(bytes.len(), 9);
        assert_eq!(bytes[0], 0x80);
        assert_eq!(bytes[1], 0x80);
        assert_eq!(bytes[8], 0x04);
        assert_eq!(Bitset::from_bt_bytes(70, &bytes), Some(b.clone()));
        // A spare bit set, or the wrong length, is refused.
        let mut bad = bytes.clone();
        bad[8] |= 0x01;
        assert_eq!(Bitset::from_bt_bytes(70, &bad), None);
        assert_eq!(Bitset::from_bt_bytes(70, &bytes[..8]), None);
        let full = Bitset::full(70);
        assert!(full.is_full());
        assert_eq!(full.count_minus(&b), 67);
        assert!(b.remove(69) && !b.remove(69));
        assert_eq!(b.count(), 2);
        assert_eq!(Bitset::full(64).count(), 64);
        assert_eq!(Bitset::full(64).iter().count(), 64);
    }
}
