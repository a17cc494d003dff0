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
use shoal_proto::swarm::SwarmConfig;

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
    /// Piece size in KiB.
    pub piece_kib: u64,
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
    /// Random pieces before rarest-first.
    pub random_first_pieces: Option<u32>,
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
        }
        let used = self
            .classes
            .iter()
            .map(|c| c.region)
            .chain([self.seeders.region]);
        if used.into_iter().any(|r| r >= regions) {
            bail!("a region index is beyond the latency matrix");
        }
        if self.degree == 0 {
            bail!("degree must be at least 1");
        }
        self.geometry_bytes()?;
        self.swarm_config().validate()?;
        Ok(())
    }

    /// (file bytes, piece bytes).
    pub fn geometry_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let f = self.file_mib << 20;
        let p = self.piece_kib << 10;
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
            random_first_pieces: o.random_first_pieces.unwrap_or(d.random_first_pieces),
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
                });
            }
        }
        out
    }
}
