//! What a run produced, and its summaries: completion quantiles over the
//! nodes that stayed, the ratio to the fluid bound, and the per-node CSV.
//!
//! Invariant: quantiles and ratios are taken over *staying honest*
//! leechers only (not corrupt, no planned leave or crash — the same set
//! the run waits for); leavers and corrupt
//! peers are reported apart, since no bound promises them anything.

use std::fmt::Write as _;

/// One leecher's fate.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    /// Node index (seeders come first, so leechers start at the seeder
    /// count).
    pub node: u32,
    /// Region index.
    pub region: usize,
    /// Upload capacity, bytes/s.
    pub up: f64,
    /// Download capacity, bytes/s.
    pub down: f64,
    /// When it joined, µs.
    pub join_us: u64,
    /// When it completed, µs.
    pub completed_us: Option<u64>,
    /// When it left or crashed, µs.
    pub left_us: Option<u64>,
    /// It crashed rather than left (no goodbye).
    pub crashed: bool,
    /// Its leave was planned (it counts as leaving even if the run ended
    /// first).
    pub leaves: bool,
    /// Served corrupt blocks.
    pub corrupt: bool,
    /// Every piece it stored went through a passing hash check and no
    /// accepted block of it came from a corrupt peer.
    pub clean: bool,
    /// Most connections it had up at once.
    pub peak_conns: u32,
}

impl NodeResult {
    /// An honest leecher with no planned leave: the bound applies to it.
    pub fn stays(&self) -> bool {
        !self.corrupt && !self.leaves
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every leecher, in node order.
    pub nodes: Vec<NodeResult>,
    /// Bytes the seeders reported uploaded.
    pub seed_uploaded: u64,
    /// Torrent size, bytes.
    pub file_bytes: u64,
    /// The fluid lower bound, seconds.
    pub t_min: f64,
    /// Events popped from the queue (stale ones included).
    pub events: u64,
    /// Most connections any seeder had up at once.
    pub seed_peak_conns: u32,
    /// Dials made by peer books (`discovery = "tracker"`), and how many
    /// of them were refused or failed.
    pub dials: (u64, u64),
    /// Of those, superseded flow completions and timers.
    pub stale_events: u64,
    /// Bytes of served blocks that crossed from one region to another
    /// (`None` with one region).
    pub cross_region_bytes: Option<u64>,
    /// Simulated time at the end, µs.
    pub end_us: u64,
    /// Pieces that failed their hash check, over all nodes.
    pub failed_pieces: u64,
    /// (banning node, banned node) pairs, in the order they happened.
    pub bans: Vec<(u32, u32)>,
    /// When the seeders left, µs, if they did.
    pub seeds_left_us: Option<u64>,
    /// The tracker replicas the nodes announced to, when they found each
    /// other through them (`discovery = "tracker"` with a `[tracker]`
    /// section).
    pub replication: Option<crate::replication::Replication>,
}

impl Outcome {
    /// Completion times of the staying honest leechers, µs (`None` for
    /// those that did not complete).
    pub fn completions_us(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .filter(|n| n.stays())
            .map(|n| n.completed_us)
            .collect()
    }

    /// Whether every staying honest leecher completed.
    pub fn all_completed(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| !n.stays() || n.completed_us.is_some())
    }

    /// The completion time at quantile `q` (0..=1) in seconds, nearest
    /// rank over the staying honest leechers; `None` unless they all
    /// completed.
    pub fn quantile_secs(&self, q: f64) -> Option<f64> {
        let mut v: Vec<u64> = self.completions_us().into_iter().collect::<Option<_>>()?;
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1] as f64 / 1e6)
    }

    /// Last completion / T_min.
    pub fn ratio(&self) -> Option<f64> {
        self.quantile_secs(1.0).map(|t| t / self.t_min)
    }

    /// Completed nodes that hold a piece that did not pass a clean check.
    pub fn dirty_completions(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.completed_us.is_some() && !n.clean)
            .count()
    }

    /// Per-node CSV: one header line, then one line per leecher.
    pub fn csv(&self) -> String {
        let mut s =
            String::from("node,region,up_bps,down_bps,join_s,completed_s,left_s,corrupt,clean\n");
        let secs = |v: Option<u64>| v.map_or(String::new(), |t| format!("{:.6}", t as f64 / 1e6));
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "{},{},{},{},{:.6},{},{},{},{}",
                n.node,
                n.region,
                n.up * 8.0,
                n.down * 8.0,
                n.join_us as f64 / 1e6,
                secs(n.completed_us),
                secs(n.left_us),
                n.corrupt,
                n.clean
            );
        }
        s
    }
}
