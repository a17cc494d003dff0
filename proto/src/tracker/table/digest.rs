//! Anti-entropy digests: a 256-bucket summary of a replica, small enough
//! (about 2.5 KiB) to exchange often, that tells two replicas which
//! buckets they disagree on.
//!
//! Every peer entry and every counter shard falls into one bucket by a hash
//! of its key. A bucket's fingerprint is the XOR of a 64-bit hash of each
//! item in it (key, stamp, and every other field), so:
//! - it can be kept up to date incrementally — XOR the old version out and
//!   the new one in on every write — and [`super::PeerTable::digest`] costs
//!   nothing to produce;
//! - it does not depend on insertion order, so equal contents give equal
//!   fingerprints on every replica;
//! - two replicas whose contents differ in a bucket have different
//!   fingerprints there, except with probability about 2^-64.
//!
//! Invariants this module keeps:
//! - The hashes are stable across machines, builds and Rust versions (our
//!   own mixing function over little-endian words, never `std`'s hasher),
//!   since they are compared between nodes.
//! - A decoded digest always has exactly 256 fingerprints.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::infohash::InfoHash;

use super::counter::Shard;
use super::delta::{decode, encode, WireError, MAX_WIRE_BYTES};
use super::entry::{Entry, PeerId};

/// How many buckets a digest has; bucket numbers are exactly the `u8`s.
pub const BUCKETS: usize = 256;

/// A replica's summary: one fingerprint per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Fingerprint of bucket `i` at index `i`; always [`BUCKETS`] long.
    buckets: Vec<u64>,
}

impl Digest {
    pub(crate) fn from_buckets(buckets: &[u64; BUCKETS]) -> Digest {
        Digest {
            buckets: buckets.to_vec(),
        }
    }

    /// The fingerprint of every bucket, indexed by bucket number.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// The postcard encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a digest, refusing more than [`MAX_WIRE_BYTES`] or anything
    /// but exactly [`BUCKETS`] fingerprints.
    pub fn from_bytes(bytes: &[u8]) -> Result<Digest, WireError> {
        let d: Digest = decode(bytes, MAX_WIRE_BYTES)?;
        if d.buckets.len() != BUCKETS {
            return Err(WireError::BadBucketCount(d.buckets.len()));
        }
        Ok(d)
    }
}

/// The buckets whose fingerprints differ: what the two replicas must send
/// each other (see [`super::PeerTable::entries_in_buckets`]).
pub fn diff_buckets(a: &Digest, b: &Digest) -> Vec<u8> {
    (0..BUCKETS)
        .filter(|&i| a.buckets.get(i) != b.buckets.get(i))
        .filter_map(|i| u8::try_from(i).ok())
        .collect()
}

/// A small stable 64-bit hash: multiply-xorshift per word, splitmix64
/// finaliser. Not collision resistant against an adversary — a node that
/// wants to hide entries can simply not send them — but well mixed, which
/// is all XOR fingerprints need.
struct StableHasher(u64);

impl StableHasher {
    fn new(tag: u64) -> StableHasher {
        StableHasher(0x243f_6a88_85a3_08d3 ^ tag)
    }

    fn u64(&mut self, w: u64) -> &mut Self {
        self.0 = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for chunk in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.u64(u64::from_le_bytes(w));
        }
        self.u64(b.len() as u64)
    }

    fn addr(&mut self, a: &SocketAddr) -> &mut Self {
        match a.ip() {
            IpAddr::V4(ip) => self.u64(4).bytes(&ip.octets()),
            IpAddr::V6(ip) => self.u64(6).bytes(&ip.octets()),
        };
        self.u64(a.port().into())
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const TAG_ENTRY: u64 = 1;
const TAG_COUNTER: u64 = 2;

fn top_byte(h: u64) -> u8 {
    h.to_be_bytes()[0]
}

/// The bucket of a peer entry's key.
pub(crate) fn entry_bucket(ih: &InfoHash, peer: &PeerId) -> u8 {
    top_byte(
        StableHasher::new(TAG_ENTRY)
            .bytes(&ih.0)
            .bytes(peer)
            .finish(),
    )
}

/// The fingerprint of a peer entry: every field, so any difference shows.
pub(crate) fn entry_fingerprint(ih: &InfoHash, peer: &PeerId, e: &Entry) -> u64 {
    StableHasher::new(TAG_ENTRY)
        .bytes(&ih.0)
        .bytes(peer)
        .u64(e.stamp.wall_ms)
        .u64(e.stamp.counter.into())
        .u64(e.stamp.node)
        .u64(u64::from(e.tombstone) | u64::from(e.seeder) << 1)
        .addr(&e.addr)
        .finish()
}

/// The bucket of a counter shard's key (torrent, node).
pub(crate) fn counter_bucket(ih: &InfoHash, node: u64) -> u8 {
    top_byte(
        StableHasher::new(TAG_COUNTER)
            .bytes(&ih.0)
            .u64(node)
            .finish(),
    )
}

/// The fingerprint of a counter shard.
pub(crate) fn counter_fingerprint(ih: &InfoHash, s: &Shard) -> u64 {
    StableHasher::new(TAG_COUNTER)
        .bytes(&ih.0)
        .u64(s.node)
        .u64(s.count)
        .u64(s.stamp.wall_ms)
        .u64(s.stamp.counter.into())
        .u64(s.stamp.node)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::hlc::Timestamp;
    use proptest::prelude::*;

    fn entry(wall: u64) -> Entry {
        Entry {
            addr: "198.18.0.1:6881".parse().unwrap(),
            seeder: false,
            stamp: Timestamp {
                wall_ms: wall,
                counter: 0,
                node: 1,
            },
            tombstone: false,
        }
    }

    /// Pinned values: if these change, nodes of different versions would
    /// see every bucket as different and resend everything, forever.
    #[test]
    fn hashes_are_stable() {
        let ih = InfoHash([7; 20]);
        let p = [9; 20];
        assert_eq!(
            entry_bucket(&ih, &p),
            entry_bucket(&InfoHash([7; 20]), &[9; 20])
        );
        let pinned = (
            entry_bucket(&ih, &p),
            entry_fingerprint(&ih, &p, &entry(5)),
            counter_bucket(&ih, 3),
        );
        assert_eq!(pinned, PINNED);
    }

    const PINNED: (u8, u64, u8) = (135, 3_468_252_685_306_805_069, 19);

    #[test]
    fn every_field_changes_the_fingerprint() {
        let ih = InfoHash([7; 20]);
        let p = [9; 20];
        let base = entry(5);
        let fp = entry_fingerprint(&ih, &p, &base);
        let variants = [
            Entry {
                seeder: true,
                ..base
            },
            Entry {
                tombstone: true,
                ..base
            },
            Entry {
                addr: "198.18.0.1:6882".parse().unwrap(),
                ..base
            },
            Entry {
                addr: "[::1]:6881".parse().unwrap(),
                ..base
            },
            entry(6),
        ];
        for v in variants {
            assert_ne!(entry_fingerprint(&ih, &p, &v), fp, "{v:?}");
        }
        assert_ne!(entry_fingerprint(&ih, &[8; 20], &base), fp);
    }

    #[test]
    fn digest_wire_and_diff() {
        let mut a = [0u64; BUCKETS];
        let mut b = [0u64; BUCKETS];
        a[3] = 1;
        b[200] = 2;
        let (da, db) = (Digest::from_buckets(&a), Digest::from_buckets(&b));
        assert_eq!(diff_buckets(&da, &db), vec![3, 200]);
        assert!(diff_buckets(&da, &da).is_empty());
        assert_eq!(Digest::from_bytes(&da.to_bytes()), Ok(da));
        let short = encode(&Digest {
            buckets: vec![0; 3],
        });
        assert_eq!(
            Digest::from_bytes(&short),
            Err(WireError::BadBucketCount(3))
        );
    }

    /// Buckets are used roughly evenly, so a diff names a small share of
    /// the table. The inputs are fixed: with random ones a fair hash still
    /// leaves some bucket empty about once in 150 runs (4096 entries over
    /// 256 buckets), and a test that fails by chance teaches nothing. The
    /// chi-square bound is six standard deviations above its mean, so only
    /// a skewed bucket function breaks it.
    #[test]
    fn buckets_spread() {
        let mut total = [0u32; BUCKETS];
        for seed in 0..64u64 {
            let mut counts = [0u32; BUCKETS];
            for i in 0..4096u64 {
                let mut p = [0u8; 20];
                p[..8]
                    .copy_from_slice(&(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i).to_le_bytes());
                counts[usize::from(entry_bucket(&InfoHash([1; 20]), &p))] += 1;
            }
            let chi2: f64 = counts
                .iter()
                .map(|&c| (f64::from(c) - 16.0).powi(2) / 16.0)
                .sum();
            assert!(
                chi2 < 255.0 + 6.0 * (2.0f64 * 255.0).sqrt(),
                "seed {seed}: chi2 {chi2} {counts:?}"
            );
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
        }
        // 1024 expected per bucket over all seeds.
        assert!(total.iter().all(|&c| (900..1150).contains(&c)), "{total:?}");
    }

    proptest! {
        #[test]
        fn digest_from_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Digest::from_bytes(&bytes);
        }

    }
}
