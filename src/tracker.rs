//! The tracker role's shared state: this node's replica of the peer table,
//! its hybrid logical clock, the allow-list, and the outbox of changes
//! waiting to be gossiped.
//!
//! proto decides everything about an announce (parsing, the table's merge
//! rules, peer choice, the bencoded answer); this module only supplies the
//! time, a random seed and the connection's address, and keeps the result
//! behind one lock.
//!
//! Invariants:
//! - Every local change is both applied to the table and queued for
//!   gossip under the same lock, so the outbox never holds a change the
//!   table lacks.
//! - The outbox is bounded. When gossip falls behind, new changes are
//!   dropped from the outbox (never from the table) and anti-entropy
//!   repairs the other replicas.
//! - A request is answered from this replica alone; no announce waits on
//!   the network.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use shoal_proto::tracker::table::{Delta, Digest, PeerTable, TableConfig, TableStats};
use shoal_proto::tracker::{
    encode_failure, encode_scrape, AnnounceRequest, AnnounceResponse, Clock, PeerInfo,
    ScrapeRequest,
};
use shoal_proto::InfoHash;

use crate::config::{GossipConfig, TrackerConfig};

/// Most changes waiting for the next gossip batch.
const OUTBOX_LIMIT: usize = 200_000;

/// The node's wall clock in milliseconds, shifted by the configured offset
/// (tests use the offset to make nodes disagree about the time).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ms: i64,
}

impl WallClock {
    /// A clock shifted by `offset_ms`.
    pub fn new(offset_ms: i64) -> WallClock {
        WallClock { offset_ms }
    }

    /// Milliseconds since the Unix epoch, as this node sees it.
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (real + self.offset_ms).max(0) as u64
    }
}

struct Replica {
    table: PeerTable,
    clock: Clock,
    outbox: Delta,
}

/// Counters for `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct TrackerCounters {
    /// Announces answered with peers.
    pub announces: AtomicU64,
    /// Scrapes answered.
    pub scrapes: AtomicU64,
    /// Requests answered with a `failure reason`.
    pub failures: AtomicU64,
    /// Changes dropped from a full outbox (repaired by anti-entropy).
    pub outbox_dropped: AtomicU64,
    /// Entries changed by merges from other nodes.
    pub merged: AtomicU64,
}

/// The tracker's state, shared by the HTTP handlers and the gossip actor.
pub struct Tracker {
    replica: Mutex<Replica>,
    allow: RwLock<Option<Arc<HashSet<InfoHash>>>>,
    cfg: TrackerConfig,
    wall: WallClock,
    seed: AtomicU64,
    /// Request and replication counters.
    pub counters: TrackerCounters,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker with an empty table. `node` identifies this node's writes
    /// in the HLC; `random` seeds peer selection and the table's hashing.
    pub fn new(cfg: &TrackerConfig, gossip: &GossipConfig, node: u64, random: u64) -> Tracker {
        let table = PeerTable::new(TableConfig {
            ttl_ms: cfg.peer_ttl() * 1000,
            max_torrents: cfg.max_torrents,
            max_peers_per_torrent: cfg.max_peers_per_torrent,
            max_clock_drift_ms: gossip.max_clock_drift_secs * 1000,
            hash_seed: random,
            ..TableConfig::default()
        });
        Tracker {
            replica: Mutex::new(Replica {
                table,
                clock: Clock::with_max_drift(node, gossip.max_clock_drift_secs * 1000),
                outbox: Delta::default(),
            }),
            allow: RwLock::new(None),
            cfg: cfg.clone(),
            wall: WallClock::new(gossip.clock_offset_ms),
            seed: AtomicU64::new(random),
            counters: TrackerCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Replica> {
        // A panic while holding the lock cannot leave the table half
        // written (proto's operations complete or return before mutating),
        // so a poisoned lock is still safe to use.
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's wall clock.
    pub fn wall(&self) -> WallClock {
        self.wall
    }

    /// Answers `GET /announce?<query>` from `remote`: the bencoded body.
    pub fn announce(&self, query: &[u8], remote: SocketAddr) -> Vec<u8> {
        match self.try_announce(query, remote) {
            Ok(body) => {
                self.counters.announces.fetch_add(1, Ordering::Relaxed);
                body
            }
            Err(reason) => self.failure(&reason),
        }
    }

    fn try_announce(&self, query: &[u8], remote: SocketAddr) -> Result<Vec<u8>, String> {
        let req =
            AnnounceRequest::parse(query, self.cfg.max_query_bytes).map_err(|e| e.to_string())?;
        self.check_allowed(&req.info_hash)?;
        let addr = req.advertised_addr(remote.ip(), self.cfg.trust_ip_param);
        let numwant = req
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_numwant) as usize;
        // splitmix-style increment: a distinct seed per request, cheaply.
        let seed = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let now = self.wall.now_ms();
        let mut peers: Vec<PeerInfo> = Vec::with_capacity(numwant.min(64));
        let counts = {
            let mut r = self.lock();
            let Replica {
                table,
                clock,
                outbox,
            } = &mut *r;
            let delta = table
                .apply_announce(now, clock, &req, addr)
                .map_err(|e| e.to_string())?;
            if outbox.len() < OUTBOX_LIMIT {
                outbox.extend(delta);
            } else {
                self.counters.outbox_dropped.fetch_add(1, Ordering::Relaxed);
            }
            if req.event != shoal_proto::tracker::Event::Stopped {
                table.select_peers_into(
                    now,
                    &req.info_hash,
                    &req.peer_id,
                    numwant,
                    req.is_seeder(),
                    seed,
                    &mut peers,
                );
            }
            table.scrape(&req.info_hash, now)
        };
        let resp = AnnounceResponse {
            interval_s: self.cfg.interval_secs as u32,
            min_interval_s: Some(self.cfg.min_interval_secs as u32),
            complete: counts.complete,
            incomplete: counts.incomplete,
            peers: &peers,
        };
        Ok(resp.encode(req.compact, req.no_peer_id))
    }

    /// Answers `GET /scrape?<query>`. With no infohash named, answers for
    /// every torrent only when there are few; otherwise asks for names.
    pub fn scrape(&self, query: &[u8]) -> Vec<u8> {
        let req =
            match ScrapeRequest::parse(query, self.cfg.max_query_bytes, self.cfg.max_scrape_hashes)
            {
                Ok(r) => r,
                Err(e) => return self.failure(&e.to_string()),
            };
        let now = self.wall.now_ms();
        let r = self.lock();
        let hashes: Vec<InfoHash> = if req.info_hashes.is_empty() {
            if r.table.stats().torrents > self.cfg.max_scrape_hashes {
                drop(r);
                return self
                    .failure("full scrape is disabled on a large tracker; name info_hash values");
            }
            r.table.torrents().collect()
        } else {
            req.info_hashes
        };
        let files: Vec<_> = hashes
            .into_iter()
            .filter(|h| self.check_allowed(h).is_ok())
            .map(|h| (h, r.table.scrape(&h, now)))
            .collect();
        drop(r);
        self.counters.scrapes.fetch_add(1, Ordering::Relaxed);
        encode_scrape(&files)
    }

    fn failure(&self, reason: &str) -> Vec<u8> {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        encode_failure(reason)
    }

    fn check_allowed(&self, h: &InfoHash) -> Result<(), String> {
        let allow = self.allow.read().unwrap_or_else(|p| p.into_inner());
        match &*allow {
            Some(set) if !set.contains(h) => Err("torrent not allowed on this tracker".into()),
            _ => Ok(()),
        }
    }

    /// Replaces the allow-list (`None`: every torrent is allowed).
    pub fn set_allow_list(&self, list: Option<HashSet<InfoHash>>) {
        *self.allow.write().unwrap_or_else(|p| p.into_inner()) = list.map(Arc::new);
    }

    /// Size of the allow-list, if one is in force.
    pub fn allow_list_len(&self) -> Option<usize> {
        self.allow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.len())
    }

    /// Takes the changes waiting to be gossiped.
    pub fn take_outbox(&self) -> Delta {
        std::mem::take(&mut self.lock().outbox)
    }

    /// Folds in a delta from another node. Returns entries changed.
    pub fn merge(&self, delta: &Delta) -> usize {
        let now = self.wall.now_ms();
        let mut r = self.lock();
        if let Some(stamp) = delta.max_stamp() {
            // A stamp too far ahead is refused by the table itself; the
            // clock only moves forward for stamps it accepts.
            let _ = r.clock.observe(stamp, now);
        }
        let n = r.table.merge_delta(delta, now);
        drop(r);
        self.counters.merged.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The anti-entropy digest of this replica.
    pub fn digest(&self) -> Digest {
        self.lock().table.digest()
    }

    /// Entries in the given digest buckets, to send to another node.
    pub fn entries_in_buckets(&self, buckets: &[u8]) -> Delta {
        self.lock().table.entries_in_buckets(buckets)
    }

    /// Drops expired entries; returns how many.
    pub fn expire(&self) -> usize {
        let now = self.wall.now_ms();
        self.lock().table.expire(now)
    }

    /// Table sizes.
    pub fn stats(&self) -> TableStats {
        self.lock().table.stats()
    }

    /// Per-torrent counts for `/stats`, largest swarms first, at most
    /// `limit` of them.
    pub fn torrent_counts(&self, limit: usize) -> Vec<(InfoHash, u32, u32, u64)> {
        let now = self.wall.now_ms();
        let r = self.lock();
        let mut v: Vec<_> = r
            .table
            .torrents()
            .map(|h| {
                let c = r.table.scrape(&h, now);
                (h, c.complete, c.incomplete, c.downloaded)
            })
            .collect();
        drop(r);
        v.sort_by_key(|(h, s, l, _)| (std::cmp::Reverse(s + l), *h));
        v.truncate(limit);
        v
    }
}

/// Why an allow-list file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllowListError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not an infohash.
    #[error("{}:{line}: {text:?} is not a 40-digit hex infohash", path.display())]
    BadLine {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// Reads an allow-list file; proto's `parse_allow_list` decides what it
/// holds (a bad line refuses the whole file).
pub fn read_allow_list(path: &Path) -> Result<HashSet<InfoHash>, AllowListError> {
    let text = std::fs::read_to_string(path).map_err(|source| AllowListError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    shoal_proto::tracker::allow::parse_allow_list(&text).map_err(|e| AllowListError::BadLine {
        path: path.to_path_buf(),
        line: e.line,
        text: e.text,
    })
}
