//! [`Delta`]: the unit of peer-table replication, carried by gossip (one
//! announce's worth) and by anti-entropy (whole buckets), encoded with
//! postcard.
//!
//! Invariants this module keeps:
//! - Decoding never panics and never allocates much more than the input:
//!   the byte length is checked against a limit before postcard runs, and
//!   serde caps what a hostile length prefix can preallocate.
//! - Decoding is strict: trailing bytes are an error, so one message is
//!   one delta and nothing can be smuggled after it.
//! - A delta is plain data; whether its contents are believable (stamps
//!   from the far future, dead entries) is decided by the table on merge,
//!   with the receiver's own clock and limits.
//! - Within a delta, entries are applied before counters, and [`Delta::split`]
//!   keeps that order across chunks, because a counter for a long-finished
//!   torrent is only accepted once the torrent's entries are known.

use serde::{Deserialize, Serialize};

use crate::infohash::InfoHash;
use crate::tracker::hlc::Timestamp;

use super::counter::Shard;
use super::entry::{Entry, PeerId};

/// Default upper bound on an encoded delta or digest accepted by
/// [`Delta::from_bytes`] and [`super::Digest::from_bytes`].
pub const MAX_WIRE_BYTES: usize = 1 << 20;

/// serde for [`InfoHash`], which lives outside this module and carries no
/// serde derive: 20 raw bytes.
mod info_hash_serde {
    use super::InfoHash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(ih: &InfoHash, s: S) -> Result<S::Ok, S::Error> {
        ih.0.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<InfoHash, D::Error> {
        <[u8; 20]>::deserialize(d).map(InfoHash)
    }
}

/// One entry of the table, with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// The swarm.
    #[serde(with = "info_hash_serde")]
    pub info_hash: InfoHash,
    /// The peer.
    pub peer_id: PeerId,
    /// Its state.
    pub entry: Entry,
}

/// One node's shard of a torrent's `downloaded` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeltaCounter {
    /// The swarm.
    #[serde(with = "info_hash_serde")]
    pub info_hash: InfoHash,
    /// The shard.
    pub shard: Shard,
}

/// A set of table entries and counter shards to merge into another replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Peer entries, applied first.
    pub entries: Vec<DeltaEntry>,
    /// Counter shards, applied after the entries.
    pub counters: Vec<DeltaCounter>,
}

/// Why bytes from the wire are not a delta or digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is larger than the receiver accepts.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// postcard could not decode it.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes were left after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A digest without exactly one fingerprint per bucket.
    #[error("digest has {0} buckets, expected 256")]
    BadBucketCount(usize),
}

/// Encodes any of our wire types. Serialising plain structs into a growable
/// Vec has no failure mode, so the error branch is unreachable in practice;
/// it yields an empty message, which every receiver refuses.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// Decodes one of our wire types: size limit, strict postcard, no trailing
/// bytes.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (v, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(v)
}

impl Delta {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.counters.is_empty()
    }

    /// Entries plus counter shards.
    pub fn len(&self) -> usize {
        self.entries.len() + self.counters.len()
    }

    /// The postcard encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a delta of at most [`MAX_WIRE_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Delta, WireError> {
        Delta::from_bytes_with_limit(bytes, MAX_WIRE_BYTES)
    }

    /// Decodes a delta of at most `max` bytes.
    pub fn from_bytes_with_limit(bytes: &[u8], max: usize) -> Result<Delta, WireError> {
        decode(bytes, max)
    }

    /// The greatest stamp inside, for [`crate::tracker::Clock::observe`]:
    /// observing what we merge keeps our next local write ordered after
    /// it, even if our wall clock is behind the sender's.
    pub fn max_stamp(&self) -> Option<Timestamp> {
        let e = self.entries.iter().map(|e| e.entry.stamp);
        let c = self.counters.iter().map(|c| c.shard.stamp);
        e.chain(c).max()
    }

    /// Appends another delta's contents.
    pub fn extend(&mut self, other: Delta) {
        self.entries.extend(other.entries);
        self.counters.extend(other.counters);
    }

    /// Cuts the delta into chunks of at most `max_items` entries and
    /// counters together (at least one per chunk), entries first, so each
    /// chunk fits a transport's message limit. About 70 bytes per item
    /// when encoded.
    pub fn split(self, max_items: usize) -> Vec<Delta> {
        let max_items = max_items.max(1);
        let mut out = Vec::new();
        let mut cur = Delta::default();
        for e in self.entries {
            if cur.len() == max_items {
                out.push(std::mem::take(&mut cur));
            }
            cur.entries.push(e);
        }
        for c in self.counters {
            if cur.len() == max_items {
                out.push(std::mem::take(&mut cur));
            }
            cur.counters.push(c);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// Sorts entries and counters by key, giving equal sets equal values.
    pub fn sort(&mut self) {
        self.entries
            .sort_unstable_by_key(|e| (e.info_hash, e.peer_id));
        self.counters
            .sort_unstable_by_key(|c| (c.info_hash, c.shard.node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Delta {
        let stamp = Timestamp {
            wall_ms: 1_700_000_000_000,
            counter: 3,
            node: 9,
        };
        Delta {
            entries: vec![
                DeltaEntry {
                    info_hash: InfoHash([1; 20]),
                    peer_id: [2; 20],
                    entry: Entry {
                        addr: "198.18.0.1:6881".parse().unwrap(),
                        seeder: true,
                        stamp,
                        tombstone: false,
                    },
                },
                DeltaEntry {
                    info_hash: InfoHash([1; 20]),
                    peer_id: [3; 20],
                    entry: Entry {
                        addr: "[2001:db8::1]:1".parse().unwrap(),
                        seeder: false,
                        stamp,
                        tombstone: true,
                    },
                },
            ],
            counters: vec![DeltaCounter {
                info_hash: InfoHash([1; 20]),
                shard: Shard {
                    node: 9,
                    count: 12,
                    stamp,
                },
            }],
        }
    }

    #[test]
    fn round_trips() {
        let d = sample();
        let bytes = d.to_bytes();
        assert_eq!(Delta::from_bytes(&bytes), Ok(d.clone()));
        assert_eq!(d.max_stamp().map(|s| s.counter), Some(3));
        assert_eq!(Delta::default().max_stamp(), None);
        // Small enough for gossip: well under 100 bytes per item.
        assert!(bytes.len() < 3 * 100, "{} bytes", bytes.len());
    }

    #[test]
    fn refuses_oversized_truncated_and_trailing_input() {
        let bytes = sample().to_bytes();
        assert_eq!(
            Delta::from_bytes_with_limit(&bytes, 10),
            Err(WireError::TooLarge {
                len: bytes.len(),
                max: 10
            })
        );
        assert!(matches!(
            Delta::from_bytes(&bytes[..bytes.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Delta::from_bytes(&long), Err(WireError::TrailingBytes(1)));
        // A length prefix claiming billions of entries must not allocate
        // them: it fails on the missing bytes instead.
        assert!(Delta::from_bytes(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn split_keeps_order_and_bounds() {
        let d = sample();
        let chunks = d.clone().split(1);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() == 1));
        assert_eq!(chunks[2].counters.len(), 1);
        let mut joined = Delta::default();
        for c in chunks {
            joined.extend(c);
        }
        assert_eq!(joined, d);
        assert_eq!(d.clone().split(0).len(), 3);
        assert_eq!(d.split(100).len(), 1);
        assert!(Delta::default().split(5).is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(d) = Delta::from_bytes(&bytes) {
                // Whatever decoded re-encodes to something that decodes the same.
                prop_assert_eq!(Delta::from_bytes(&d.to_bytes()), Ok(d));
            }
        }

        #[test]
        fn mutated_valid_bytes_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        ) {
            let mut bytes = sample().to_bytes();
            let n = bytes.len();
            for (i, b) in flips {
                bytes[i % n] = b;
            }
            let _ = Delta::from_bytes(&bytes);
        }
    }
}
