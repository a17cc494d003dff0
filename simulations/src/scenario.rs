//! Scenario descriptions: the TOML files under `simulations/scenarios/`.
//!
//! A scenario names the torrent (size, piece size), the seeders, the
//! leechers as weighted classes of identical nodes, how nodes connect
//! (random graph of a given degree) and the latency between them (one
//! value, or a matrix between regions). Bandwidths are in Mbit/s
//! (10^6 bits), sizes in MiB / KiB (2^20 / 2^10 bytes).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use shoal_proto::metainfo::auto_piece_length;
use shoal_proto::swarm::{LeecherChoking, SwarmConfig};

/// A whole scenario, as read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A label for reports.
    #[serde(default)]
    pub name: String,
    /// Seed of every random choice (graph, swarm tie-breaks).
    #[serde(default = "one")]
    pub seed: u64,
    /// Leechers (seeders come on top).
    pub nodes: usize,
    /// Torrent size in MiB.
    pub file_mib: u64,
    /// Piece size in KiB. None: the length `shoal create` would cut the
    /// file into (proto's `auto_piece_length`: 1 MiB for 1 GiB, 4 MiB for
    /// 4 GiB), so that a scenario models the torrent an operator gets.
    #[serde(default)]
    pub piece_kib: Option<u64>,
    /// How nodes find each other: a fixed random graph (`"graph"`, the
    /// default) or the daemon's way (`"tracker"`: peer books fed by a
    /// tracker and peer exchange; `degree` and `seed_degree` are unused).
    #[serde(default)]
    pub discovery: DiscoveryMode,
    /// Peers each node dials at start (it may be dialled by more).
    #[serde(default = "sixteen")]
    pub degree: usize,
    /// Leechers each seeder dials; defaults to `degree`.
    #[serde(default)]
    pub seed_degree: Option<usize>,
    /// One-way latency between any two nodes, in ms, when there is no
    /// region matrix.
    #[serde(default = "one_f")]
    pub latency_ms: f64,
    /// One-way latency between regions, in ms: `regions[a][b]`.
    #[serde(default)]
    pub regions: Option<Vec<Vec<f64>>>,
    /// Packet loss on every path between two different regions (a slow,
    /// lossy inter-region link; see the README for what this models).
    #[serde(default)]
    pub inter_region_loss: f64,
    /// Capacity of the link between two regions, each way, Mbit/s (the
    /// same for every pair): every flow crossing it gets an equal split,
    /// recounted once per round trip across it (see the README). None:
    /// only access links are shared.
    #[serde(default)]
    pub inter_region_mbps: Option<f64>,
    /// Give up after this much simulated time (default: 50 × T_min).
    #[serde(default)]
    pub max_sim_secs: Option<f64>,
    /// Leechers join at uniformly random times in `0..join_spread_secs`.
    #[serde(default)]
    pub join_spread_secs: f64,
    /// The seeders.
    pub seeders: Seeders,
    /// Leecher classes; node counts are proportional to the weights.
    #[serde(rename = "class")]
    pub classes: Vec<Class>,
    /// Overrides of the swarm configuration.
    #[serde(default)]
    pub swarm: SwarmOverrides,
    /// Scheduled faults.
    #[serde(default)]
    pub faults: Faults,
    /// Replicated tracker tables to simulate (see `replication.rs`).
    #[serde(default)]
    pub tracker: Option<TrackerSpec>,
}

/// How nodes find each other (see [`Scenario::discovery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// Each leecher dials `degree` random leechers once and redials only
    /// to replace a lost connection; seeders dial `seed_degree`.
    #[default]
    Graph,
    /// proto's peer book and PEX, fed by a simulated tracker (see
    /// `discovery.rs`).
    Tracker,
}

/// Faults scheduled into a run. Fractions are of the leechers, chosen by
/// the scenario's seed; corrupt peers never leave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Leechers that leave gracefully (say goodbye) at a uniform time in
    /// `churn_from_secs..churn_until_secs`.
    #[serde(default)]
    pub leave_fraction: f64,
    /// Leechers that crash (vanish; peers notice after `detect_secs`) in
    /// the same window.
    #[serde(default)]
    pub crash_fraction: f64,
    /// Start of the churn window, s.
    #[serde(default)]
    pub churn_from_secs: f64,
    /// End of the churn window, s.
    #[serde(default)]
    pub churn_until_secs: f64,
    /// The seeders leave once the leechers together hold one copy.
    #[serde(default)]
    pub seed_leaves_after_copy: bool,
    /// Leechers whose every served block fails the piece hash.
    #[serde(default)]
    pub corrupt_fraction: f64,
    /// How long a peer takes to notice a crash or a cut (the transport's
    /// idle timeout), s.
    #[serde(default = "five")]
    pub detect_secs: f64,
    /// How long a node that lost a connection waits before dialling a
    /// replacement (a tracker round trip), s.
    #[serde(default = "one_f")]
    pub redial_secs: f64,
    /// Partitions between regions.
    #[serde(default)]
    pub partition: Vec<PartitionSpec>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            leave_fraction: 0.0,
            crash_fraction: 0.0,
            churn_from_secs: 0.0,
            churn_until_secs: 0.0,
            seed_leaves_after_copy: false,
            corrupt_fraction: 0.0,
            detect_secs: 5.0,
            redial_secs: 1.0,
            partition: Vec::new(),
        }
    }
}

fn five() -> f64 {
    5.0
}

/// The regions in `regions` are cut off from all others from `at_secs`
/// until `heal_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// One side of the cut.
    pub regions: Vec<usize>,
    /// When the cut starts, s.
    pub at_secs: f64,
    /// When it heals, s.
    pub heal_secs: f64,
}

/// Tracker replicas running proto's peer-table CRDT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSpec {
    /// The region of each replica.
    pub replicas: Vec<usize>,
    /// How often every live node re-announces, s.
    #[serde(default = "thirty")]
    pub announce_interval_secs: f64,
    /// How often each replica runs anti-entropy with one other, s.
    #[serde(default = "five")]
    pub anti_entropy_secs: f64,
    /// Replicas that die (stop for good) at a time.
    #[serde(default)]
    pub die: Vec<ReplicaDeath>,
}

fn thirty() -> f64 {
    30.0
}

/// A replica that dies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaDeath {
    /// Index into `replicas`.
    pub replica: usize,
    /// When, s.
    pub at_secs: f64,
}

fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn sixteen() -> usize {
    16
}

/// The initial seeders (they hold every piece at start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeders {
    /// How many.
    #[serde(default = "one_usize")]
    pub count: usize,
    /// Upload capacity, Mbit/s.
    pub up_mbps: f64,
    /// Download capacity, Mbit/s (irrelevant for seeders; defaults to up).
    #[serde(default)]
    pub down_mbps: Option<f64>,
    /// Region index into the latency matrix.
    #[serde(default)]
    pub region: usize,
    /// Access latency added to every path from or to a seeder, ms.
    #[serde(default)]
    pub latency_ms: f64,
}

fn one_usize() -> usize {
    1
}

/// A class of identical leechers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// Relative share of the leechers.
    #[serde(default = "one_f")]
    pub weight: f64,
    /// Upload capacity, Mbit/s.
    pub up_mbps: f64,
    /// Download capacity, Mbit/s.
    pub down_mbps: f64,
    /// Region index into the latency matrix.
    #[serde(default)]
    pub region: usize,
    /// Access latency added to every path from or to these nodes, ms.
    #[serde(default)]
    pub latency_ms: f64,
    /// Packet loss rate on these nodes' access links (0..1).
    #[serde(default)]
    pub loss: f64,
}

/// Optional overrides of [`SwarmConfig`] fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmOverrides {
    /// Request size, KiB.
    pub block_kib: Option<u32>,
    /// Regular unchoke slots.
    pub unchoke_slots: Option<usize>,
    /// Optimistic unchoke slots.
    pub optimistic_slots: Option<usize>,
    /// Peers a spreading seed courts at once.
    pub spread_slots: Option<usize>,
    /// Whether an initial seed spreads distinct pieces first.
    pub spread_distinct: Option<bool>,
    /// Timer tick, ms.
    pub tick_ms: Option<u64>,
    /// Choke round interval, ms.
    pub choke_interval_ms: Option<u64>,
    /// Optimistic unchoke rotation, ms.
    pub optimistic_interval_ms: Option<u64>,
    /// Random pieces before rarest-first.
    pub random_first_pieces: Option<u32>,
    /// Round trip from which a peer is far, ms; 0 treats every peer as
    /// near (no locality rules).
    pub far_rtt_ms: Option<f64>,
    /// Most pieces fetched from far peers at once.
    pub far_partials: Option<u32>,
    /// How leechers rank peers for their slots: `"reciprocate"` (the
    /// default) or `"furthest-behind"` (a fleet of trusted nodes).
    pub leecher_choking: Option<LeecherChoking>,
}

/// One node as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    /// Holds every piece at start.
    pub seed: bool,
    /// Upload capacity, bytes/s.
    pub up: f64,
    /// Download capacity, bytes/s.
    pub down: f64,
    /// Region index.
    pub region: usize,
    /// When it joins, µs.
    pub join_us: u64,
    /// Access latency, µs (added at both ends of a path).
    pub access_us: u64,
    /// Packet loss rate of its access link.
    pub loss: f64,
    /// Serves corrupt blocks.
    pub corrupt: bool,
    /// When it leaves, µs, and whether by crashing.
    pub leave: Option<(u64, bool)>,
}

fn ms_to_us(ms: f64) -> u64 {
    (ms * 1000.0).round().max(0.0) as u64
}

/// Mbit/s to bytes/s.
pub fn mbps(v: f64) -> f64 {
    v * 1e6 / 8.0
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    /// Checks consistency.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.nodes == 0 || self.seeders.count == 0 {
            bail!("need at least one leecher and one seeder");
        }
        if self.classes.is_empty() || self.classes.iter().any(|c| c.weight <= 0.0) {
            bail!("need at least one class, all weights positive");
        }
        let rates = self
            .classes
            .iter()
            .flat_map(|c| [c.up_mbps, c.down_mbps])
            .chain([self.seeders.up_mbps]);
        if rates.into_iter().any(|r| !(r.is_finite() && r > 0.0)) {
            bail!("bandwidths must be positive");
        }
        let regions = self.regions.as_ref().map_or(1, Vec::len);
        if let Some(m) = &self.regions {
            if m.iter().any(|row| row.len() != regions) {
                bail!("the region matrix must be square");
            }
            if regions > 256 {
                bail!("at most 256 regions");
            }
        }
        let used = self
            .classes
            .iter()
            .map(|c| c.region)
            .chain([self.seeders.region]);
        if used.into_iter().any(|r| r >= regions) {
            bail!("a region index is beyond the latency matrix");
        }
        if self.discovery == DiscoveryMode::Tracker
            && self.nodes + self.seeders.count > crate::discovery::MAX_NODES
        {
            bail!(
                "discovery = \"tracker\" names nodes in 198.18.0.0/15: at most {} nodes",
                crate::discovery::MAX_NODES
            );
        }
        if self.degree == 0 {
            bail!("degree must be at least 1");
        }
        let f = &self.faults;
        let fractions = [f.leave_fraction, f.crash_fraction, f.corrupt_fraction];
        if fractions.iter().any(|x| !(0.0..=1.0).contains(x)) || fractions.iter().sum::<f64>() > 1.0
        {
            bail!("fault fractions must be in 0..=1 and sum to at most 1");
        }
        let times = [
            f.churn_from_secs,
            f.churn_until_secs,
            f.detect_secs,
            f.redial_secs,
        ];
        if times.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
            bail!("fault times must be finite and non-negative");
        }
        let lat_loss = self
            .classes
            .iter()
            .flat_map(|c| [c.latency_ms, c.loss * 1000.0]);
        if lat_loss
            .chain([self.seeders.latency_ms])
            .any(|v| !(v.is_finite() && v >= 0.0))
            || self.classes.iter().any(|c| c.loss >= 1.0)
            || !(0.0..1.0).contains(&self.inter_region_loss)
        {
            bail!("latencies must be non-negative and loss in 0..1");
        }
        if self
            .inter_region_mbps
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            bail!("inter_region_mbps must be positive");
        }
        for p in &f.partition {
            let ordered =
                p.at_secs.is_finite() && p.heal_secs.is_finite() && p.heal_secs >= p.at_secs;
            if p.regions.iter().any(|&r| r >= regions) || !ordered {
                bail!("a partition names an unknown region or heals before it starts");
            }
        }
        if let Some(t) = &self.tracker {
            if t.replicas.is_empty() || t.replicas.iter().any(|&r| r >= regions) {
                bail!("tracker replicas need at least one, each in a known region");
            }
            if t.die.iter().any(|d| d.replica >= t.replicas.len())
                || !(t.announce_interval_secs > 0.0 && t.anti_entropy_secs > 0.0)
            {
                bail!("a dying replica is out of range, or an interval is not positive");
            }
        }
        if self
            .swarm
            .far_rtt_ms
            .is_some_and(|ms| !(ms.is_finite() && ms >= 0.0))
        {
            bail!("swarm.far_rtt_ms must be a number of milliseconds, 0 for off");
        }
        self.geometry_bytes()?;
        self.swarm_config().validate()?;
        Ok(())
    }

    /// (file bytes, piece bytes).
    pub fn geometry_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let f = self.file_mib << 20;
        let p = self
            .piece_kib
            .map_or_else(|| auto_piece_length(f), |k| k << 10);
        if f == 0 || p == 0 {
            bail!("file and piece sizes must be positive");
        }
        Ok((f, p))
    }

    /// The swarm configuration every node runs.
    pub fn swarm_config(&self) -> SwarmConfig {
        let o = &self.swarm;
        let d = SwarmConfig::default();
        SwarmConfig {
            block_size: o.block_kib.map_or(d.block_size, |k| k << 10),
            unchoke_slots: o.unchoke_slots.unwrap_or(d.unchoke_slots),
            optimistic_slots: o.optimistic_slots.unwrap_or(d.optimistic_slots),
            spread_slots: o.spread_slots.unwrap_or(d.spread_slots),
            spread_distinct: o.spread_distinct.unwrap_or(d.spread_distinct),
            tick_interval: o.tick_ms.map_or(d.tick_interval, Duration::from_millis),
            choke_interval: o
                .choke_interval_ms
                .map_or(d.choke_interval, Duration::from_millis),
            optimistic_interval: o
                .optimistic_interval_ms
                .map_or(d.optimistic_interval, Duration::from_millis),
            random_first_pieces: o.random_first_pieces.unwrap_or(d.random_first_pieces),
            // 0 is "off"; `validate` refuses what is not a duration.
            far_rtt: o.far_rtt_ms.map_or(d.far_rtt, |ms| {
                (ms > 0.0 && ms.is_finite()).then(|| Duration::from_secs_f64(ms / 1000.0))
            }),
            far_partials: o.far_partials.unwrap_or(d.far_partials),
            leecher_choking: o.leecher_choking.unwrap_or(d.leecher_choking),
            ..d
        }
    }

    /// One-way latency from region `a` to region `b`, µs.
    pub fn latency_us(&self, a: usize, b: usize) -> u64 {
        let ms = self.regions.as_ref().map_or(self.latency_ms, |m| m[a][b]);
        (ms * 1000.0).round().max(0.0) as u64
    }

    /// Every node: seeders first, then leechers class by class (counts by
    /// largest remainder of the weights), join times drawn from `rng`.
    pub fn node_specs(&self, rng: &mut crate::rng::SplitMix) -> Vec<NodeSpec> {
        let s = &self.seeders;
        let mut out: Vec<NodeSpec> = (0..s.count)
            .map(|_| NodeSpec {
                seed: true,
                up: mbps(s.up_mbps),
                down: mbps(s.down_mbps.unwrap_or(s.up_mbps)),
                region: s.region,
                join_us: 0,
                access_us: ms_to_us(s.latency_ms),
                loss: 0.0,
                corrupt: false,
                leave: None,
            })
            .collect();
        let total: f64 = self.classes.iter().map(|c| c.weight).sum();
        let exact: Vec<f64> = self
            .classes
            .iter()
            .map(|c| self.nodes as f64 * c.weight / total)
            .collect();
        let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        let mut left = self.nodes - counts.iter().sum::<usize>();
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            counts[i] += 1;
            left -= 1;
        }
        for (c, &n) in self.classes.iter().zip(&counts) {
            for _ in 0..n {
                let join_us = if self.join_spread_secs > 0.0 {
                    rng.below((self.join_spread_secs * 1e6) as u64 + 1)
                } else {
                    0
                };
                out.push(NodeSpec {
                    seed: false,
                    up: mbps(c.up_mbps),
                    down: mbps(c.down_mbps),
                    region: c.region,
                    join_us,
                    access_us: ms_to_us(c.latency_ms),
                    loss: c.loss,
                    corrupt: false,
                    leave: None,
                });
            }
        }
        self.assign_faults(&mut out, rng);
        out
    }

    /// Picks the corrupt, leaving and crashing leechers (disjoint sets, in
    /// that order, from one seeded shuffle) and their leave times.
    fn assign_faults(&self, nodes: &mut [NodeSpec], rng: &mut crate::rng::SplitMix) {
        let f = &self.faults;
        let first = self.seeders.count;
        let mut order: Vec<usize> = (first..nodes.len()).collect();
        crate::rng::shuffle(rng, &mut order);
        let n = order.len() as f64;
        let count = |x: f64| (x * n).round() as usize;
        let (corrupt, leave, crash) = (
            count(f.corrupt_fraction),
            count(f.leave_fraction),
            count(f.crash_fraction),
        );
        let span = ((f.churn_until_secs - f.churn_from_secs).max(0.0) * 1e6) as u64;
        let from = (f.churn_from_secs.max(0.0) * 1e6) as u64;
        for (k, &i) in order.iter().enumerate() {
            if k < corrupt {
                nodes[i].corrupt = true;
            } else if k < corrupt + leave + crash {
                let at = (from + rng.below(span + 1)).max(nodes[i].join_us);
                nodes[i].leave = Some((at, k >= corrupt + leave));
            }
        }
    }
}
