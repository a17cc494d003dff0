//! Scheduled faults: nodes leaving or crashing, the seeders leaving once
//! one copy exists, partitions between regions and their healing, and the
//! redials that replace lost connections.
//!
//! - **Leave** (graceful): the node closes every connection; each peer
//!   learns it one latency later.
//! - **Crash**: the node vanishes; its peers learn it only after
//!   `detect_us` (the transport's idle timeout). Meanwhile what they send
//!   it is lost.
//! - **Cut**: every message and flow across the cut is lost from `at_us`;
//!   both ends of each crossing connection drop it `detect_us` later; no
//!   connection crosses until `heal_us`, when nodes short of neighbours
//!   redial.
//! - **Redial**: a node that is not complete (or a seeder) and lost a
//!   connection waits `redial_us` (a tracker round trip) and then dials
//!   random live nodes it is not connected to, has not banned and can
//!   reach, until it is back at its degree. Leechers dial leechers;
//!   seeders dial incomplete leechers.
//!
//! Invariant: every choice here draws from the simulator's own seeded
//! generator, in event order, so faults keep the run deterministic.

use crate::net::{Ev, Life, Sim};

/// A partition: regions with `side[r]` true are cut off from the rest.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Which side of the cut each region is on.
    pub side: Vec<bool>,
    /// When it starts, µs.
    pub at_us: u64,
    /// When it heals, µs.
    pub heal_us: u64,
}

/// The fault schedule of a run (per-node leaves and corruption live in
/// the node specs).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Seeders leave once the leechers together hold every piece.
    pub seed_leaves_after_copy: bool,
    /// How long peers take to notice a crash or a cut, µs.
    pub detect_us: u64,
    /// Delay before redialling after a lost connection, µs.
    pub redial_us: u64,
    /// Partitions.
    pub cuts: Vec<Cut>,
}

/// Tries per missing neighbour when picking a random peer to dial.
const DIAL_TRIES: usize = 8;

impl Sim {
    pub(crate) fn schedule_faults(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some((at, crash)) = self.nodes[i].spec.leave {
                self.push(
                    at,
                    Ev::Leave {
                        node: i as u32,
                        crash,
                    },
                );
            }
        }
        for index in 0..self.plan.cuts.len() {
            let (at, heal) = (self.plan.cuts[index].at_us, self.plan.cuts[index].heal_us);
            self.push(at, Ev::Partition { index, heal: false });
            self.push(heal, Ev::Partition { index, heal: true });
        }
    }

    /// Whether a cut in force separates `a` and `b`.
    pub(crate) fn cut(&self, a: u32, b: u32) -> bool {
        if self.plan.cuts.is_empty() {
            return false;
        }
        let (ra, rb) = (
            self.nodes[a as usize].spec.region,
            self.nodes[b as usize].spec.region,
        );
        self.plan
            .cuts
            .iter()
            .any(|c| self.now >= c.at_us && self.now < c.heal_us && c.side[ra] != c.side[rb])
    }

    /// Node `i` leaves (closing every connection) or crashes.
    pub(crate) fn leave(&mut self, i: u32, crash: bool) {
        if self.nodes[i as usize].life != Life::Alive {
            return;
        }
        let halves = self.nodes[i as usize].halves.clone();
        for c in halves {
            if !self.conns[c as usize].up {
                continue;
            }
            self.close(c);
            let j = self.conns[c as usize].peer;
            let delay = if crash || self.cut(i, j) {
                self.plan.detect_us
            } else {
                self.lat(i, j)
            };
            self.push(self.now + delay, Ev::Gone { conn: c ^ 1 });
        }
        let n = &mut self.nodes[i as usize];
        n.life = if crash { Life::Crashed } else { Life::Left };
        n.left_at = Some(self.now);
        n.timer = None;
        // Its swarm is gone with it: drop what it had queued.
        while n.swarm.poll_action().is_some() {}
    }

    /// The leechers hold every piece between them.
    pub(crate) fn one_copy_exists(&mut self) {
        if !self.plan.seed_leaves_after_copy || self.seeds_left.is_some() {
            return;
        }
        self.seeds_left = Some(self.now);
        for i in 0..self.nodes.len() {
            if self.nodes[i].spec.seed {
                self.push(
                    self.now,
                    Ev::Leave {
                        node: i as u32,
                        crash: false,
                    },
                );
            }
        }
    }

    /// A cut starts (every crossing connection goes silent, both ends drop
    /// it after `detect_us`) or heals (everyone short of neighbours
    /// redials).
    pub(crate) fn partition(&mut self, index: usize, heal: bool) {
        if heal {
            for i in 0..self.nodes.len() as u32 {
                self.want_redial(i);
            }
            return;
        }
        let side = self.plan.cuts[index].side.clone();
        for c in 0..self.conns.len() as u32 {
            let conn = &self.conns[c as usize];
            let (ra, rb) = (
                self.nodes[conn.node as usize].spec.region,
                self.nodes[conn.peer as usize].spec.region,
            );
            if !conn.up || side[ra] == side[rb] {
                continue;
            }
            // What is queued or in flight across the cut is lost.
            if let Some(f) = self.conns[c as usize].flow.take() {
                self.end_flow(f);
            }
            self.conns[c as usize].queue.clear();
            let at = self.now + self.plan.detect_us;
            self.push(at, Ev::Gone { conn: c });
        }
    }

    /// Schedules a redial for `i` if it may need one.
    pub(crate) fn want_redial(&mut self, i: u32) {
        let n = &self.nodes[i as usize];
        if n.life != Life::Alive
            || n.redial_pending
            || (!n.spec.seed && n.swarm.is_complete())
            || (n.live as usize) >= self.target_degree(i)
        {
            return;
        }
        self.nodes[i as usize].redial_pending = true;
        let at = self.now + self.plan.redial_us;
        self.push(at, Ev::Redial { node: i });
    }

    fn target_degree(&self, i: u32) -> usize {
        if self.nodes[i as usize].spec.seed {
            self.seed_degree
        } else {
            self.degree
        }
    }

    /// Dials random reachable peers until `i` is back at its degree.
    pub(crate) fn redial(&mut self, i: u32) {
        self.nodes[i as usize].redial_pending = false;
        let n = &self.nodes[i as usize];
        if n.life != Life::Alive || (!n.spec.seed && n.swarm.is_complete()) {
            return;
        }
        let seed = n.spec.seed;
        let missing = self.target_degree(i).saturating_sub(n.live as usize);
        let total = self.nodes.len() as u64;
        let mut dialed = 0;
        for _ in 0..missing * DIAL_TRIES {
            if dialed >= missing {
                break;
            }
            let j = self.rng.below(total) as u32;
            let m = &self.nodes[j as usize];
            let fit = j != i
                && m.life == Life::Alive
                && !m.spec.seed
                && m.spec.join_us <= self.now
                && !(seed && m.swarm.is_complete())
                && !self.nodes[i as usize].banned.contains(&j)
                && !self.cut(i, j)
                && !self.connected(i, j);
            if fit {
                let link = self.link(i, j);
                // The dial and the handshake: one round trip.
                let at = self.now + 2 * self.lat(i, j);
                self.push(at, Ev::Connect { link });
                dialed += 1;
            }
        }
    }

    /// Whether `i` and `j` share an up connection.
    fn connected(&self, i: u32, j: u32) -> bool {
        self.link_of
            .get(&(i.min(j), i.max(j)))
            .is_some_and(|&l| self.conns[2 * l as usize].up)
    }
}
