//! What the torrent manager reports: serialisable snapshots of a torrent
//! (for the REST API, the client commands and `/metrics`) and the node's
//! counters.
//!
//! Invariants: a view is a copy; holding one never holds a lock or keeps a
//! swarm alive. Counters only grow while the process lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a torrent is in its life: proto's lifecycle phase, reported as
/// is (`"removed"` is only seen while its record is being deleted).
pub use shoal_proto::lifecycle::Phase as State;

/// One torrent in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorrentView {
    /// The infohash, 40 hex digits.
    pub infohash: String,
    /// The content's name.
    pub name: String,
    /// Where the content lives: `<target_dir>/<name>`.
    pub target_dir: PathBuf,
    /// Total bytes of content.
    pub total_bytes: u64,
    /// Number of pieces.
    pub pieces: u32,
    /// Pieces stored and verified.
    pub have: u32,
    /// Bytes of the pieces stored.
    pub have_bytes: u64,
    /// Where it is in its life.
    pub state: State,
    /// Every piece is stored (and, when configured, re-checked).
    pub complete: bool,
    /// Payload download rate over the last second, bytes/s.
    pub download_rate: u64,
    /// Payload upload rate over the last second, bytes/s.
    pub upload_rate: u64,
    /// Connected peers.
    pub peers: usize,
    /// Connected peers in another site (round trip of at least
    /// `[mesh] far_rtt_ms`): asked only for what nearby peers lack.
    pub far_peers: usize,
    /// Per-torrent download limit, bytes/s (`None`: none).
    pub download_limit: Option<u64>,
    /// Per-torrent upload limit, bytes/s (`None`: none).
    pub upload_limit: Option<u64>,
    /// When it was added, ms since the Unix epoch.
    pub added_unix_ms: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A peer of a running torrent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its node id, hex.
    pub node_id: String,
    /// Its address, when known.
    pub addr: Option<String>,
    /// Blame for pieces that failed their hash.
    pub bad_pieces: f32,
    /// Whether it is banned from this swarm.
    pub banned: bool,
}

/// One torrent in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorrentDetail {
    /// The summary.
    #[serde(flatten)]
    pub torrent: TorrentView,
    /// Pieces stored when this run of the swarm started (after a restart,
    /// what the durable bitfield held).
    pub have_at_start: u32,
    /// Pieces this run downloaded, verified and stored.
    pub pieces_downloaded: u32,
    /// Pieces this run received and dropped because they failed their hash.
    pub pieces_failed: u32,
    /// Payload bytes received, over every run in this process.
    pub downloaded_bytes: u64,
    /// Payload bytes sent, over every run in this process.
    pub uploaded_bytes: u64,
    /// Connected peers.
    pub peer_list: Vec<PeerView>,
    /// Peers banned from this swarm, node ids in hex.
    pub banned: Vec<String>,
    /// Pieces the completion re-check found bad or missing.
    pub bad_pieces: Vec<u32>,
    /// Tracker tiers the torrent announces to.
    pub trackers: Vec<Vec<String>>,
}

/// Node-wide counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Payload bytes received.
    pub downloaded_bytes: u64,
    /// Payload bytes sent.
    pub uploaded_bytes: u64,
    /// Pieces downloaded, verified and stored.
    pub pieces_verified: u64,
    /// Pieces received that failed their hash.
    pub pieces_failed: u64,
    /// Connected peers, over every torrent.
    pub peers: u64,
}

/// Node-wide rate limits, bytes/s (`None`: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Upload limit.
    pub upload: Option<u64>,
    /// Download limit.
    pub download: Option<u64>,
}
