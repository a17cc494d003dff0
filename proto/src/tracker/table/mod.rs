//! The replicated peer table: a state-based CRDT of announce records.
//!
//! Each tracker node holds a full replica. A local announce is applied here
//! and returns a [`Delta`] for the caller to gossip; a delta from another
//! node is folded in with [`PeerTable::merge_delta`]; anti-entropy
//! ([`PeerTable::digest`], [`diff_buckets`], [`PeerTable::entries_in_buckets`])
//! repairs whatever gossip lost.
//!
//! Invariants this module keeps:
//! - Merge is last-writer-wins per (infohash, peer id) on the total order of
//!   [`Entry::supersedes`], and max-per-node for download counters. Both are
//!   joins, so replicas that have seen the same writes hold the same state
//!   whatever order, grouping or repetition the writes arrived in.
//! - Death (stamp older than the ttl) is decided from the stamp alone.
//!   Readers skip dead entries at once; [`PeerTable::expire`] frees them
//!   later; merges drop dead incoming entries. A late copy of an old write
//!   is therefore dead whenever the tombstone that beat it has expired.
//! - Limits bound memory. Local announces obey `max_torrents` and
//!   `max_peers_per_torrent` exactly. Merges accept up to `merge_headroom`
//!   times those limits, since replicas that raced during a partition can
//!   together exceed them, and refusing remote writes below that would stop
//!   the replicas from converging.
//! - `buckets` always equals the XOR fingerprint of what the table holds
//!   (see [`Digest`]): every insert, replacement and removal of an entry or
//!   counter shard XORs the old version out and the new one in.
//! - Nothing here reads the clock or OS randomness: `now_ms`, the HLC and
//!   the random seeds are all arguments.

mod counter;
mod delta;
mod digest;
mod entry;
mod select;
mod torrent;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::infohash::InfoHash;
use crate::tracker::announce::{AnnounceRequest, Event};
use crate::tracker::hlc::{Clock, DEFAULT_MAX_DRIFT_MS};
use crate::tracker::response::ScrapeCounts;

pub use counter::{Shard, MAX_SHARDS};
pub use delta::{Delta, DeltaCounter, DeltaEntry, WireError, MAX_WIRE_BYTES};
pub use digest::{diff_buckets, Digest, BUCKETS};
pub use entry::{normalize_addr, Entry, PeerId};

use digest::{counter_bucket, counter_fingerprint, entry_bucket, entry_fingerprint};
use torrent::{SeededState, Torrent};

/// Limits and timings of a [`PeerTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// How long an entry lives after its last announce. About twice the
    /// announce interval, so one lost announce does not drop a peer.
    pub ttl_ms: u64,
    /// Most torrents a local announce may create.
    pub max_torrents: usize,
    /// Most entries (tombstones included) a local announce may grow a
    /// torrent to.
    pub max_peers_per_torrent: usize,
    /// Merges accept up to this multiple of both limits; see the module
    /// comment.
    pub merge_headroom: usize,
    /// Merged entries stamped further than this ahead of `now_ms` are
    /// refused: they would outlive every honest entry and win every merge.
    pub max_clock_drift_ms: u64,
    /// Seeds the table's hash maps. Use a random value in production (it
    /// defends against hash flooding) and a fixed one in simulations.
    pub hash_seed: u64,
}

impl TableConfig {
    /// Defaults for a given announce interval: ttl of twice the interval.
    pub fn for_interval(interval_ms: u64) -> TableConfig {
        TableConfig {
            ttl_ms: interval_ms.saturating_mul(2),
            ..TableConfig::default()
        }
    }
}

impl Default for TableConfig {
    /// A 30-minute announce interval (ttl one hour), 100 000 torrents, 20 000
    /// peers per torrent, headroom 2, drift 60 s, hash seed 0.
    fn default() -> TableConfig {
        TableConfig {
            ttl_ms: 2 * 30 * 60 * 1000,
            max_torrents: 100_000,
            max_peers_per_torrent: 20_000,
            merge_headroom: 2,
            max_clock_drift_ms: DEFAULT_MAX_DRIFT_MS,
            hash_seed: 0,
        }
    }
}

/// Why a local announce was not recorded. `Display` is the `failure
/// reason` sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The tracker already tracks as many torrents as it may.
    #[error("tracker is full: it tracks the maximum of {max} torrents")]
    TooManyTorrents {
        /// The limit.
        max: usize,
    },
    /// The swarm already has as many peers as it may.
    #[error("swarm is full: it has the maximum of {max} peers")]
    TooManyPeers {
        /// The limit.
        max: usize,
    },
}

/// Sizes of the table, for metrics. Dead entries not yet removed by
/// [`PeerTable::expire`] are still counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    /// Torrents held (including ones with only tombstones or counters).
    pub torrents: usize,
    /// Seeders plus leechers.
    pub peers: u64,
    /// Entries with `left = 0`.
    pub seeders: u64,
    /// Entries still downloading.
    pub leechers: u64,
    /// Entries recording a `stopped`.
    pub tombstones: u64,
}

/// A replica of the cluster's peer table.
#[derive(Debug, Clone)]
pub struct PeerTable {
    cfg: TableConfig,
    torrents: HashMap<InfoHash, Torrent, SeededState>,
    buckets: Box<[u64; BUCKETS]>,
}

/// Keeps the digest in step with a write: the old version out, the new in.
fn refingerprint(
    buckets: &mut [u64; BUCKETS],
    ih: &InfoHash,
    peer: &PeerId,
    old: Option<&Entry>,
    new: Option<&Entry>,
) {
    let b = &mut buckets[usize::from(entry_bucket(ih, peer))];
    for e in old.into_iter().chain(new) {
        *b ^= entry_fingerprint(ih, peer, e);
    }
}

fn refingerprint_counter(
    buckets: &mut [u64; BUCKETS],
    ih: &InfoHash,
    old: Option<&Shard>,
    new: &Shard,
) {
    let b = &mut buckets[usize::from(counter_bucket(ih, new.node))];
    for s in old.into_iter().chain(Some(new)) {
        *b ^= counter_fingerprint(ih, s);
    }
}

impl PeerTable {
    /// An empty table.
    pub fn new(cfg: TableConfig) -> PeerTable {
        PeerTable {
            torrents: HashMap::with_hasher(SeededState(cfg.hash_seed)),
            cfg,
            buckets: Box::new([0; BUCKETS]),
        }
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// The entry for one peer, dead or alive, if the table holds one.
    pub fn get(&self, info_hash: &InfoHash, peer_id: &PeerId) -> Option<&Entry> {
        self.torrents.get(info_hash)?.get(peer_id)
    }

    /// Every torrent held, for a "scrape everything" request.
    pub fn torrents(&self) -> impl Iterator<Item = InfoHash> + '_ {
        self.torrents.keys().copied()
    }

    /// Records a local announce and returns what to gossip.
    ///
    /// `peer_addr` is the address to hand to other peers, normally
    /// [`AnnounceRequest::advertised_addr`]. A `stopped` leaves a tombstone;
    /// a `completed` from a peer not already seeding adds one to this
    /// node's share of the torrent's `downloaded` count.
    pub fn apply_announce(
        &mut self,
        now_ms: u64,
        clock: &mut Clock,
        req: &AnnounceRequest,
        peer_addr: SocketAddr,
    ) -> Result<Delta, LimitError> {
        let cfg = &self.cfg;
        let ih = req.info_hash;
        if !self.torrents.contains_key(&ih) && self.torrents.len() >= cfg.max_torrents {
            return Err(LimitError::TooManyTorrents {
                max: cfg.max_torrents,
            });
        }
        let buckets = &mut *self.buckets;
        let t = self
            .torrents
            .entry(ih)
            .or_insert_with(|| Torrent::new(cfg.hash_seed));
        let existing = t.get(&req.peer_id).copied();
        if existing.is_none() && t.len() >= cfg.max_peers_per_torrent {
            // Reclaim dead entries before refusing; `remove_dead` resets the
            // torrent's age bound, so a full swarm under a flood of new peer
            // ids does not rescan on every announce.
            if t.may_have_dead(now_ms, cfg.ttl_ms) {
                t.remove_dead(now_ms, cfg.ttl_ms, |p, e| {
                    refingerprint(buckets, &ih, p, Some(e), None)
                });
            }
            if t.len() >= cfg.max_peers_per_torrent {
                if t.is_empty() && t.downloads.shards().is_empty() {
                    self.torrents.remove(&ih);
                }
                return Err(LimitError::TooManyPeers {
                    max: cfg.max_peers_per_torrent,
                });
            }
        }
        if let Some(old) = existing {
            // Our write must beat the one it replaces even if that came from
            // a node whose clock runs ahead; a refusal only means that entry
            // was stamped absurdly far ahead, and merges never admit those.
            let _ = clock.observe(old.stamp, now_ms);
        }
        let stamp = clock.tick(now_ms);
        let entry = Entry {
            addr: normalize_addr(peer_addr),
            seeder: req.is_seeder(),
            stamp,
            tombstone: req.event == Event::Stopped,
        };
        let old = t.upsert(req.peer_id, entry);
        refingerprint(buckets, &ih, &req.peer_id, old.as_ref(), Some(&entry));
        let mut delta = Delta {
            entries: vec![DeltaEntry {
                info_hash: ih,
                peer_id: req.peer_id,
                entry,
            }],
            counters: Vec::new(),
        };
        let was_seeding = existing.is_some_and(|e| e.seeder && e.is_live_peer(now_ms, cfg.ttl_ms));
        if req.event == Event::Completed && !was_seeding {
            if let Some((before, after)) = t.downloads.increment(clock.node(), stamp) {
                refingerprint_counter(buckets, &ih, before.as_ref(), &after);
                delta.counters.push(DeltaCounter {
                    info_hash: ih,
                    shard: after,
                });
            }
        }
        Ok(delta)
    }

    /// Folds in a delta from another replica and returns how many entries
    /// and counter shards changed. Dead entries, entries stamped too far in
    /// the future, and entries beyond the merge limits are skipped.
    ///
    /// Call [`Clock::observe`] with [`Delta::max_stamp`] as well, so local
    /// writes keep ordering after what was merged.
    pub fn merge_delta(&mut self, delta: &Delta, now_ms: u64) -> usize {
        let cfg = &self.cfg;
        let horizon = now_ms.saturating_add(cfg.max_clock_drift_ms);
        let max_torrents = cfg.max_torrents.saturating_mul(cfg.merge_headroom);
        let max_peers = cfg.max_peers_per_torrent.saturating_mul(cfg.merge_headroom);
        let buckets = &mut *self.buckets;
        let mut changed = 0;
        for d in &delta.entries {
            let e = d.entry.normalized();
            if e.is_dead(now_ms, cfg.ttl_ms) || e.stamp.wall_ms > horizon {
                continue;
            }
            if !self.torrents.contains_key(&d.info_hash) && self.torrents.len() >= max_torrents {
                continue;
            }
            let t = self
                .torrents
                .entry(d.info_hash)
                .or_insert_with(|| Torrent::new(cfg.hash_seed));
            match t.get(&d.peer_id) {
                Some(old) if !e.supersedes(old) => continue,
                None if t.len() >= max_peers => continue,
                _ => {}
            }
            let old = t.upsert(d.peer_id, e);
            refingerprint(buckets, &d.info_hash, &d.peer_id, old.as_ref(), Some(&e));
            changed += 1;
        }
        for c in &delta.counters {
            let s = c.shard;
            let dead = s.stamp.wall_ms.saturating_add(cfg.ttl_ms) < now_ms;
            if s.stamp.wall_ms > horizon {
                continue;
            }
            // A dead shard for a torrent we do not hold belongs to a swarm
            // that has ended; accepting it would resurrect a torrent that
            // `expire` drops again at once.
            if !self.torrents.contains_key(&c.info_hash)
                && (dead || self.torrents.len() >= max_torrents)
            {
                continue;
            }
            let t = self
                .torrents
                .entry(c.info_hash)
                .or_insert_with(|| Torrent::new(cfg.hash_seed));
            if let Some((before, after)) = t.downloads.merge(s) {
                refingerprint_counter(buckets, &c.info_hash, before.as_ref(), &after);
                changed += 1;
            }
        }
        changed
    }

    /// Removes dead entries, and torrents left with no entries and only
    /// dead counters. Returns how many entries were removed. Run it every
    /// few seconds, and before [`PeerTable::digest`].
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ttl = self.cfg.ttl_ms;
        let buckets = &mut *self.buckets;
        let mut removed = 0;
        self.torrents.retain(|ih, t| {
            if t.may_have_dead(now_ms, ttl) {
                removed += t.remove_dead(now_ms, ttl, |p, e| {
                    refingerprint(buckets, ih, p, Some(e), None)
                });
            }
            if !t.is_empty() || !t.downloads.all_dead(now_ms, ttl) {
                return true;
            }
            for s in t.downloads.shards() {
                buckets[usize::from(counter_bucket(ih, s.node))] ^= counter_fingerprint(ih, s);
            }
            false
        });
        removed
    }

    /// Live seeders, live leechers and the `downloaded` total of a torrent;
    /// all zero for one the table does not hold. O(1) unless the torrent
    /// holds dead entries that [`PeerTable::expire`] has not removed yet.
    pub fn scrape(&self, info_hash: &InfoHash, now_ms: u64) -> ScrapeCounts {
        let Some(t) = self.torrents.get(info_hash) else {
            return ScrapeCounts::default();
        };
        let (complete, incomplete) = t.live_counts(now_ms, self.cfg.ttl_ms);
        ScrapeCounts {
            complete,
            incomplete,
            downloaded: t.downloads.total(),
        }
    }

    /// Sizes for metrics, in O(torrents).
    pub fn stats(&self) -> TableStats {
        let mut st = TableStats {
            torrents: self.torrents.len(),
            ..TableStats::default()
        };
        for t in self.torrents.values() {
            let (s, l, d) = t.raw_counts();
            st.seeders += u64::from(s);
            st.leechers += u64::from(l);
            st.tombstones += u64::from(d);
        }
        st.peers = st.seeders + st.leechers;
        st
    }

    /// The anti-entropy summary of this replica. Free: it is maintained on
    /// every write. Call [`PeerTable::expire`] first, or dead entries that
    /// the other side already dropped show up as differences.
    pub fn digest(&self) -> Digest {
        Digest::from_buckets(&self.buckets)
    }

    /// Every entry and counter shard that falls in one of `buckets`, sorted
    /// by key: what to send a replica whose digest differs there. Costs a
    /// scan of the whole table; split the result with [`Delta::split`].
    pub fn entries_in_buckets(&self, buckets: &[u8]) -> Delta {
        let mut wanted = [false; BUCKETS];
        for &b in buckets {
            wanted[usize::from(b)] = true;
        }
        let mut out = Delta::default();
        for (ih, t) in &self.torrents {
            for (peer, e) in t.slots() {
                if wanted[usize::from(entry_bucket(ih, peer))] {
                    out.entries.push(DeltaEntry {
                        info_hash: *ih,
                        peer_id: *peer,
                        entry: *e,
                    });
                }
            }
            for s in t.downloads.shards() {
                if wanted[usize::from(counter_bucket(ih, s.node))] {
                    out.counters.push(DeltaCounter {
                        info_hash: *ih,
                        shard: *s,
                    });
                }
            }
        }
        out.sort();
        out
    }

    /// The whole table as one sorted delta: a full state transfer for a new
    /// replica, and a canonical form to compare replicas by.
    pub fn snapshot(&self) -> Delta {
        let all: Vec<u8> = (0..=u8::MAX).collect();
        self.entries_in_buckets(&all)
    }
}
