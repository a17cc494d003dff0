//! One replicated peer-table entry and the last-writer-wins rule that
//! merges two versions of it.
//!
//! Invariants this module keeps:
//! - [`Entry::supersedes`] is a strict total order over entries (stamp
//!   first, then the remaining fields as tie-breakers), so "keep the
//!   greater" is commutative, associative and idempotent even for two
//!   entries that carry the same stamp — which honest nodes never produce,
//!   but a buggy or hostile one could, and replicas must still agree.
//! - Addresses are normalised ([`normalize_addr`]) before they are stored
//!   or compared: IPv4-mapped IPv6 becomes IPv4, and IPv6 flow info and
//!   scope id are dropped. serde does not carry those two fields, so
//!   without this a replica and its copy could hold "different" entries
//!   that no exchange can ever reconcile.
//! - Death is a pure function of the stamp, the ttl and `now`, so every
//!   replica agrees on which entries are dead without talking.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::tracker::hlc::Timestamp;

/// A BitTorrent peer id.
pub type PeerId = [u8; 20];

/// What the table knows about one peer in one swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Where the peer can be reached.
    pub addr: SocketAddr,
    /// Whether it announced `left=0`.
    pub seeder: bool,
    /// When it last announced, in cluster order.
    pub stamp: Timestamp,
    /// Set by a `stopped` announce: the peer left, and this record exists
    /// only so the departure outvotes older copies on other replicas.
    pub tombstone: bool,
}

/// The form every stored address takes; see the module comment.
pub fn normalize_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Entry {
    /// The entry with its address normalised.
    pub fn normalized(mut self) -> Entry {
        self.addr = normalize_addr(self.addr);
        self
    }

    /// Whether this version wins over `other` under last-writer-wins.
    pub fn supersedes(&self, other: &Entry) -> bool {
        self.order_key() > other.order_key()
    }

    /// Whether the entry has outlived the ttl. Dead entries are invisible
    /// to readers and dropped by expiry and by merges.
    pub fn is_dead(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.stamp.wall_ms.saturating_add(ttl_ms) < now_ms
    }

    /// Whether a reader at `now_ms` should see this entry as a peer.
    pub fn is_live_peer(&self, now_ms: u64, ttl_ms: u64) -> bool {
        !self.tombstone && !self.is_dead(now_ms, ttl_ms)
    }

    /// The stamp decides; the rest only breaks ties between equal stamps.
    /// A tombstone wins such a tie, so a confused duplicate errs towards
    /// "gone".
    fn order_key(&self) -> (Timestamp, bool, bool, SocketAddr) {
        (self.stamp, self.tombstone, self.seeder, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(wall: u64, tombstone: bool, addr: &str) -> Entry {
        Entry {
            addr: addr.parse().unwrap(),
            seeder: false,
            stamp: Timestamp {
                wall_ms: wall,
                counter: 0,
                node: 1,
            },
            tombstone,
        }
    }

    #[test]
    fn newer_stamp_wins_then_tombstone_then_fields() {
        let old = e(1, false, "198.18.0.1:1");
        let new = e(2, false, "198.18.0.1:1");
        assert!(new.supersedes(&old) && !old.supersedes(&new));
        let dead = e(1, true, "198.18.0.1:1");
        assert!(dead.supersedes(&old));
        let other = e(1, false, "198.18.0.2:1");
        assert!(other.supersedes(&old) && !old.supersedes(&other));
        assert!(!old.supersedes(&old));
    }

    #[test]
    fn death_is_strictly_after_the_ttl() {
        let x = e(1000, false, "198.18.0.1:1");
        assert!(!x.is_dead(1500, 500));
        assert!(x.is_dead(1501, 500));
        assert!(!e(u64::MAX, false, "198.18.0.1:1").is_dead(u64::MAX, 10));
        assert!(!e(1000, true, "198.18.0.1:1").is_live_peer(1000, 500));
    }

    #[test]
    fn normalises_addresses() {
        let a: SocketAddr = "[::ffff:198.18.0.1]:80".parse().unwrap();
        assert_eq!(normalize_addr(a).to_string(), "198.18.0.1:80");
        let b: SocketAddr = "[fe80::1%3]:80".parse().unwrap();
        assert_eq!(normalize_addr(b).to_string(), "[fe80::1]:80");
    }
}
