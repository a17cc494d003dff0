//! From a scenario to a [`Setup`]: node specs, the seeded start-up graph,
//! the latency matrix, the fault plan and the fluid lower bound.

use shoal_proto::swarm::{Geometry, SwarmConfig};

use crate::faults::{Cut, Plan};
use crate::rng::SplitMix;
use crate::scenario::{DiscoveryMode, NodeSpec, Scenario};
use crate::{fluid_lower_bound, Capacities};

/// Everything needed to build a simulation, independent of TOML.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Torrent shape.
    pub geometry: Geometry,
    /// Swarm configuration every node runs.
    pub config: SwarmConfig,
    /// Nodes; seeders hold every piece at start.
    pub nodes: Vec<NodeSpec>,
    /// Undirected links made at start; the first of each pair dials.
    pub links: Vec<(u32, u32)>,
    /// One-way latency between regions, µs.
    pub latency_us: Vec<Vec<u64>>,
    /// Seed of the swarms' and the network's randomness.
    pub seed: u64,
    /// Simulated time limit, µs.
    pub limit_us: u64,
    /// Leecher neighbours a leecher keeps (it redials below this).
    pub degree: usize,
    /// Leechers a seeder keeps.
    pub seed_degree: usize,
    /// Scheduled faults.
    pub plan: Plan,
    /// Loss on paths between different regions.
    pub inter_region_loss: f64,
    /// Capacity of each inter-region link, each way, bytes/s.
    pub inter_region_bytes: Option<f64>,
    /// Nodes find each other through peer books, a tracker and PEX
    /// (`links` is then empty).
    pub books: bool,
    /// The scenario's tracker replicas: with `books`, the nodes announce
    /// to them (else to one tracker that never fails).
    pub tracker: Option<crate::scenario::TrackerSpec>,
}

impl Setup {
    /// Builds the setup a scenario describes.
    pub fn from_scenario(s: &Scenario) -> anyhow::Result<Setup> {
        let (f, p) = s.geometry_bytes()?;
        let geometry = Geometry::new(f, p)?;
        let mut rng = SplitMix::new(s.seed ^ 0x005e_ed0f_9aab);
        let nodes = s.node_specs(&mut rng);
        let seeders = s.seeders.count;
        let seed_degree = s.seed_degree.unwrap_or(s.degree);
        let books = s.discovery == DiscoveryMode::Tracker;
        let links = if books {
            Vec::new()
        } else {
            random_graph(nodes.len(), seeders, s.degree, seed_degree, &mut rng)
        };
        let regions = s.regions.as_ref().map_or(1, Vec::len);
        let latency_us = (0..regions)
            .map(|a| (0..regions).map(|b| s.latency_us(a, b)).collect())
            .collect();
        let secs = |v: f64| (v * 1e6) as u64;
        let plan = Plan {
            seed_leaves_after_copy: s.faults.seed_leaves_after_copy,
            detect_us: secs(s.faults.detect_secs),
            redial_us: secs(s.faults.redial_secs),
            cuts: s
                .faults
                .partition
                .iter()
                .map(|p| Cut {
                    side: (0..regions).map(|r| p.regions.contains(&r)).collect(),
                    at_us: secs(p.at_secs),
                    heal_us: secs(p.heal_secs),
                })
                .collect(),
        };
        let mut setup = Setup {
            geometry,
            config: s.swarm_config(),
            nodes,
            links,
            latency_us,
            seed: s.seed,
            limit_us: 0,
            degree: s.degree,
            seed_degree,
            plan,
            inter_region_loss: s.inter_region_loss,
            inter_region_bytes: s.inter_region_mbps.map(|v| v * 1e6 / 8.0),
            books,
            tracker: s.tracker.clone(),
        };
        let t_min = setup.t_min();
        setup.limit_us = (s.max_sim_secs.unwrap_or(50.0 * t_min) * 1e6) as u64;
        Ok(setup)
    }

    /// The fluid lower bound for these nodes, seconds: seeders' uploads
    /// summed as one seed, over the honest leechers that stay (leavers,
    /// late joins and corrupt peers are not in it).
    pub fn t_min(&self) -> f64 {
        let leechers = self
            .nodes
            .iter()
            .filter(|n| !n.seed && !n.corrupt && n.leave.is_none());
        let c = Capacities {
            seed_up: self.nodes.iter().filter(|n| n.seed).map(|n| n.up).sum(),
            uploads: leechers.clone().map(|n| n.up).collect(),
            downloads: leechers.map(|n| n.down).collect(),
        };
        fluid_lower_bound(self.geometry.total_length() as f64, &c)
    }
}

/// A random graph over `n` nodes, the first `seeders` of them seeders: each
/// seeder dials `seed_degree` random leechers, then each leecher, in a
/// random order, dials random other leechers until it has `degree` leecher
/// neighbours (when enough exist). Leechers never dial seeders, so a
/// seeder's neighbour count is exactly `seed_degree`.
///
/// The order is random because nodes are laid out class by class: dialing
/// in index order, the last class's nodes gathered links from every earlier
/// class before dialing their own few, so a class's neighbourhoods depended
/// on its place in the file. In `inter-dc` at 1,000 nodes a region-1 node
/// had 7.4 neighbours in its own region on average against region 0's
/// 12.5, and 20 of them had 3 or fewer.
pub fn random_graph(
    n: usize,
    seeders: usize,
    degree: usize,
    seed_degree: usize,
    rng: &mut SplitMix,
) -> Vec<(u32, u32)> {
    let leechers = n - seeders;
    // Sorted neighbour lists: small, and cheaper than tree sets at scale.
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut leecher_deg = vec![0usize; n];
    let mut links = Vec::new();
    let add = |adj: &mut Vec<Vec<u32>>, a: usize, b: usize| -> bool {
        match adj[a].binary_search(&(b as u32)) {
            Ok(_) => false,
            Err(pos) => {
                adj[a].insert(pos, b as u32);
                let pb = adj[b].binary_search(&(a as u32)).unwrap_err();
                adj[b].insert(pb, a as u32);
                true
            }
        }
    };
    for s in 0..seeders {
        let want = seed_degree.min(leechers);
        let mut got = 0;
        while got < want {
            let j = seeders + rng.below(leechers as u64) as usize;
            if add(&mut adj, s, j) {
                links.push((s as u32, j as u32));
                got += 1;
            }
        }
    }
    let want = degree.min(leechers.saturating_sub(1));
    let mut order: Vec<usize> = (seeders..n).collect();
    crate::rng::shuffle(rng, &mut order);
    for i in order {
        let mut tries = 0;
        while leecher_deg[i] < want && tries < 64 * want {
            tries += 1;
            let j = seeders + rng.below(leechers as u64) as usize;
            if j != i && add(&mut adj, i, j) {
                leecher_deg[i] += 1;
                leecher_deg[j] += 1;
                links.push((i as u32, j as u32));
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leechers laid out in two halves, as two classes are, get the same
    /// share of neighbours in the other half, whichever half they are in.
    /// Dialing in index order gave the first half 45% and the second 58%.
    #[test]
    fn neighbourhoods_do_not_depend_on_a_nodes_place() {
        let (n, half) = (2_001u32, 1_000u32);
        let links = random_graph(n as usize, 1, 16, 16, &mut SplitMix::new(7));
        let side = |i: u32| usize::from(i > half);
        let (mut other, mut all) = ([0u32; 2], [0u32; 2]);
        for (a, b) in links.into_iter().filter(|&(a, b)| a != 0 && b != 0) {
            for (x, y) in [(a, b), (b, a)] {
                all[side(x)] += 1;
                other[side(x)] += u32::from(side(x) != side(y));
            }
        }
        let share = |s: usize| f64::from(other[s]) / f64::from(all[s]);
        assert!(
            (share(0) - share(1)).abs() < 0.03,
            "{:.3} against {:.3}",
            share(0),
            share(1)
        );
    }
}
