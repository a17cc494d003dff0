//! A fixed-size set of piece indices: which pieces a node has.
//!
//! The byte layout is BitTorrent's: piece 0 is the most significant bit of
//! byte 0, and the last byte is padded with zero bits. The mesh wire sends
//! exactly these bytes, and storage persists them, so the layout is part of
//! the protocol, not an implementation detail.
//!
//! Invariants this type keeps:
//! - `bytes.len() == ceil(len / 8)` and the spare bits of the last byte are
//!   zero. [`Bitfield::from_bytes`] refuses anything else, so two equal sets
//!   always have equal bytes and byte-wise set operations need no masking.
//! - The count of set bits is cached and always exact, so "do I have
//!   everything" is O(1) however large the torrent.
//! - An index at or past `len` behaves as a bit that is clear and cannot be
//!   set: nothing panics on an index that came from the network.

use std::fmt;

/// Why bytes do not form a bitfield of the expected size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// The byte count is not `ceil(bits / 8)`.
    #[error("bitfield of {got} bytes for {bits} pieces, expected {expected} bytes")]
    WrongLength {
        /// Bits (pieces) the bitfield should hold.
        bits: u32,
        /// Bytes it has.
        got: usize,
        /// Bytes it should have.
        expected: usize,
    },
    /// A padding bit after the last piece is set. BitTorrent says peers
    /// should drop the connection; it also tells us the sender has the
    /// torrent's size wrong.
    #[error("bitfield for {bits} pieces has a spare bit set")]
    SpareBits {
        /// Bits (pieces) the bitfield should hold.
        bits: u32,
    },
}

/// A set of piece indices `0..len`, stored MSB-first.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// Bytes needed for `bits` bits.
    pub fn byte_len(bits: u32) -> usize {
        (bits as usize).div_ceil(8)
    }

    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bytes: vec![0; Bitfield::byte_len(len)],
            len,
            ones: 0,
        }
    }

    /// The full set over `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut bytes = vec![0xff; Bitfield::byte_len(len)];
        if let Some(last) = bytes.last_mut() {
            *last &= last_byte_mask(len);
        }
        Bitfield {
            bytes,
            len,
            ones: len,
        }
    }

    /// Checks bytes received for a torrent of `len` pieces without
    /// copying them: the right byte count, and no spare bit set.
    pub fn check_bytes(bytes: &[u8], len: u32) -> Result<(), BitfieldError> {
        let expected = Bitfield::byte_len(len);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                bits: len,
                got: bytes.len(),
                expected,
            });
        }
        match bytes.last() {
            Some(&last) if last & !last_byte_mask(len) != 0 => {
                Err(BitfieldError::SpareBits { bits: len })
            }
            _ => Ok(()),
        }
    }

    /// Checks and adopts bytes received for a torrent of `len` pieces.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Bitfield, BitfieldError> {
        Bitfield::check_bytes(bytes, len)?;
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// Number of pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `index` is in the set; false past the end.
    pub fn get(&self, index: u32) -> bool {
        index < self.len && self.bytes[(index / 8) as usize] & mask(index) != 0
    }

    /// Adds piece `index`. Returns true if it was not there before; an
    /// index past the end changes nothing and returns false.
    pub fn set(&mut self, index: u32) -> bool {
        if index >= self.len || self.get(index) {
            return false;
        }
        self.bytes[(index / 8) as usize] |= mask(index);
        self.ones += 1;
        true
    }

    /// Removes piece `index`. Returns true if it was there.
    pub fn unset(&mut self, index: u32) -> bool {
        if !self.get(index) {
            return false;
        }
        self.bytes[(index / 8) as usize] &= !mask(index);
        self.ones -= 1;
        true
    }

    /// How many pieces are in the set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether no piece is in the set.
    pub fn is_clear(&self) -> bool {
        self.ones == 0
    }

    /// Whether every piece in `other` is also in `self`. A peer is worth
    /// being interested in exactly when `!ours.is_superset_of(&theirs)`.
    /// Pieces past the shorter length count as absent.
    pub fn is_superset_of(&self, other: &Bitfield) -> bool {
        let common = self.bytes.len().min(other.bytes.len());
        other.bytes[..common]
            .iter()
            .zip(&self.bytes[..common])
            .all(|(theirs, ours)| theirs & !ours == 0)
            && other.bytes[common..].iter().all(|&b| b == 0)
    }

    /// The wire and storage form: `ceil(len / 8)` bytes, MSB-first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Pieces in the set, ascending.
    pub fn iter_ones(&self) -> Bits<'_> {
        Bits::new(self, false)
    }

    /// Pieces not in the set, ascending.
    pub fn iter_zeros(&self) -> Bits<'_> {
        Bits::new(self, true)
    }
}

impl fmt::Debug for Bitfield {
    // A torrent can have a million pieces; printing every byte into a log
    // line helps nobody.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

fn mask(index: u32) -> u8 {
    0x80 >> (index % 8)
}

/// The bits of the last byte that hold pieces (the rest are padding).
fn last_byte_mask(len: u32) -> u8 {
    match len % 8 {
        0 => 0xff,
        r => 0xff << (8 - r),
    }
}

/// Iterator over the set (or clear) bits of a [`Bitfield`]. It skips a
/// whole byte at a time, so walking a sparse million-piece set is cheap.
#[derive(Debug, Clone)]
pub struct Bits<'a> {
    bytes: &'a [u8],
    len: u32,
    invert: bool,
    /// Index of the byte after the one loaded into `current`.
    next_byte: usize,
    /// The remaining wanted bits of the current byte.
    current: u8,
}

impl<'a> Bits<'a> {
    fn new(field: &'a Bitfield, invert: bool) -> Bits<'a> {
        Bits {
            bytes: &field.bytes,
            len: field.len,
            invert,
            next_byte: 0,
            current: 0,
        }
    }
}

impl Iterator for Bits<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.current == 0 {
            let &b = self.bytes.get(self.next_byte)?;
            self.next_byte += 1;
            let mut v = if self.invert { !b } else { b };
            if self.next_byte == self.bytes.len() {
                v &= last_byte_mask(self.len);
            }
            self.current = v;
        }
        let bit = self.current.leading_zeros();
        self.current &= !(0x80u8 >> bit);
        Some((self.next_byte as u32 - 1) * 8 + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_msb_first() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes(), &[0, 0]);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9), "second set reports no change");
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert!(b.get(0) && b.get(9) && !b.get(1));
        assert!(b.unset(0));
        assert!(!b.unset(0));
        assert_eq!(b.as_bytes(), &[0x00, 0x40]);
        assert_eq!(b.count(), 1);
    }

    #[test]
    fn out_of_range_is_clear_and_unsettable() {
        let mut b = Bitfield::new(3);
        assert!(!b.get(3));
        assert!(!b.set(3));
        assert!(!b.set(u32::MAX));
        assert!(!b.unset(u32::MAX));
        assert_eq!(b.as_bytes(), &[0]);
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn full_masks_spare_bits() {
        let b = Bitfield::full(10);
        assert_eq!(b.as_bytes(), &[0xff, 0xc0]);
        assert!(b.is_full());
        assert_eq!(b.count(), 10);
        assert_eq!(Bitfield::full(16).as_bytes(), &[0xff, 0xff]);
        assert!(Bitfield::full(0).is_full() && Bitfield::full(0).is_clear());
        assert_eq!(Bitfield::from_bytes(b.as_bytes(), 10), Ok(b));
    }

    #[test]
    fn from_bytes_refuses_bad_input() {
        assert_eq!(
            Bitfield::from_bytes(&[0], 9),
            Err(BitfieldError::WrongLength {
                bits: 9,
                got: 1,
                expected: 2
            })
        );
        assert_eq!(
            Bitfield::from_bytes(&[0, 0, 0], 9),
            Err(BitfieldError::WrongLength {
                bits: 9,
                got: 3,
                expected: 2
            })
        );
        assert_eq!(
            Bitfield::from_bytes(&[0, 0x40], 9),
            Err(BitfieldError::SpareBits { bits: 9 })
        );
        assert_eq!(
            Bitfield::from_bytes(&[0x01], 7),
            Err(BitfieldError::SpareBits { bits: 7 })
        );
        assert!(Bitfield::from_bytes(&[], 0).is_ok());
        assert!(Bitfield::from_bytes(&[0xff, 0x80], 9).is_ok());
    }

    #[test]
    fn iterators() {
        let b = Bitfield::from_bytes(&[0b1010_0000, 0b0100_0000], 10).unwrap();
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 2, 9]);
        assert_eq!(
            b.iter_zeros().collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(Bitfield::new(0).iter_zeros().count(), 0);
        assert_eq!(Bitfield::new(17).iter_zeros().count(), 17);
    }

    #[test]
    fn superset() {
        let mut ours = Bitfield::new(20);
        let mut theirs = Bitfield::new(20);
        assert!(ours.is_superset_of(&theirs));
        theirs.set(13);
        assert!(!ours.is_superset_of(&theirs));
        ours.set(13);
        ours.set(2);
        assert!(ours.is_superset_of(&theirs));
        assert!(!theirs.is_superset_of(&ours));
        assert!(Bitfield::full(20).is_superset_of(&Bitfield::full(20)));
    }

    fn model() -> impl Strategy<Value = (u32, Vec<u32>)> {
        (0u32..200).prop_flat_map(|len| {
            let idx = if len == 0 { 0..1 } else { 0..len + 5 };
            (Just(len), proptest::collection::vec(idx, 0..64))
        })
    }

    proptest! {
        #[test]
        fn matches_a_set_model((len, idx) in model()) {
            let mut b = Bitfield::new(len);
            let mut model = std::collections::BTreeSet::new();
            for i in idx {
                let fresh = i < len && model.insert(i);
                prop_assert_eq!(b.set(i), fresh);
            }
            prop_assert_eq!(b.count() as usize, model.len());
            prop_assert_eq!(b.iter_ones().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            let zeros: Vec<u32> = (0..len).filter(|i| !model.contains(i)).collect();
            prop_assert_eq!(b.iter_zeros().collect::<Vec<_>>(), zeros);
            prop_assert_eq!(Bitfield::from_bytes(b.as_bytes(), len), Ok(b.clone()));
            prop_assert_eq!(b.is_full(), model.len() as u32 == len);
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), len in 0u32..400) {
            if let Ok(b) = Bitfield::from_bytes(&bytes, len) {
                prop_assert_eq!(b.as_bytes(), &bytes[..]);
                prop_assert_eq!(b.iter_ones().count() as u32, b.count());
            }
        }
    }
}
