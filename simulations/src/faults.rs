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
//! Faults touch many nodes at once, so they run between windows, with
//! both parts at hand.
//!
//! Invariant: every choice here draws from the simulator's own seeded
//! generator, in event order, so faults keep the run deterministic.

use crate::net::{Ev, Gev, Life, Sim};

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
        for i in 0..self.world.specs.len() {
            if let Some((at, crash)) = self.world.specs[i].leave {
                self.push_global(
                    at,
                    Gev::Leave {
                        node: i as u32,
                        crash,
                    },
                );
            }
        }
        for index in 0..self.world.plan.cuts.len() {
            let c = &self.world.plan.cuts[index];
            let (at, heal) = (c.at_us, c.heal_us);
            self.push_global(at, Gev::Partition { index, heal: false });
            self.push_global(heal, Gev::Partition { index, heal: true });
        }
    }

    /// Node `i` leaves (closing every connection) or crashes.
    pub(crate) fn leave(&mut self, i: u32, crash: bool) {
        if self.world.life[i as usize] != Life::Alive {
            return;
        }
        let (now, detect) = (self.now, self.world.plan.detect_us);
        let halves = self.node(i).halves.clone();
        for c in halves {
            if !self.conn(c).up {
                continue;
            }
            let j = self.world.halves[c as usize].peer;
            let (part, world) = self.at(i);
            part.close(world, c);
            // What the peer had on its way to us is lost too.
            let (part, world) = self.at(j);
            part.kill_flow(world, c ^ 1);
            let delay = if crash || world.cut(now, i, j) {
                detect
            } else {
                world.lat(i, j)
            };
            part.push(now + delay, Ev::Gone { conn: c ^ 1 });
        }
        if !crash {
            // The daemon says goodbye to its tracker too.
            self.announce_event(now, i, shoal_proto::tracker::Event::Stopped);
        }
        let life = if crash { Life::Crashed } else { Life::Left };
        self.world_mut().life[i as usize] = life;
        let n = self.node_mut(i);
        n.left_at = Some(now);
        n.timer = None;
        // Its swarm is gone with it: drop what it had queued.
        while n.swarm.poll_action().is_some() {}
    }

    /// The leechers hold every piece between them.
    pub(crate) fn one_copy_exists(&mut self) {
        if !self.world.plan.seed_leaves_after_copy || self.seeds_left.is_some() {
            return;
        }
        self.seeds_left = Some(self.now);
        for i in 0..self.world.specs.len() {
            if self.world.specs[i].seed {
                self.push_global(
                    self.now,
                    Gev::Leave {
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
        if heal && self.world.books {
            // The books' own retries find the other side again.
            return;
        }
        if heal {
            for i in 0..self.world.specs.len() as u32 {
                let (part, world) = self.at(i);
                part.want_redial(world, i);
            }
            return;
        }
        let side = self.world.plan.cuts[index].side.clone();
        let at = self.now + self.world.plan.detect_us;
        for c in 0..self.world.halves.len() as u32 {
            let h = &self.world.halves[c as usize];
            let (ra, rb) = (
                self.world.specs[h.node as usize].region,
                self.world.specs[h.peer as usize].region,
            );
            if !self.conn(c).up || side[ra] == side[rb] {
                continue;
            }
            // What is queued or in flight across the cut is lost.
            let (part, world) = self.at(h.node);
            part.kill_flow(world, c);
            part.push(at, Ev::Gone { conn: c });
        }
    }

    /// Dials random reachable peers until `i` is back at its degree.
    pub(crate) fn redial(&mut self, i: u32) {
        self.node_mut(i).redial_pending = false;
        let n = self.node(i);
        if self.world.life[i as usize] != Life::Alive || (!n.spec.seed && n.swarm.is_complete()) {
            return;
        }
        let seed = n.spec.seed;
        let missing = self.world.target_degree(i).saturating_sub(n.live as usize);
        let total = self.world.specs.len() as u64;
        let mut dialed = 0;
        for _ in 0..missing * DIAL_TRIES {
            if dialed >= missing {
                break;
            }
            let j = self.rng.below(total) as u32;
            let m = self.node(j);
            let fit = j != i
                && self.world.life[j as usize] == Life::Alive
                && !m.spec.seed
                && m.spec.join_us <= self.now
                && !(seed && m.swarm.is_complete())
                && !self.node(i).banned.contains(&j)
                && !self.world.cut(self.now, i, j)
                && !self.connected(i, j);
            if fit {
                let link = self.link(i, j);
                // The dial and the handshake: one round trip.
                let at = self.now + 2 * self.world.lat(i, j);
                self.push_global(at, Gev::Connect { link });
                dialed += 1;
            }
        }
    }

    /// Whether `i` and `j` share an up connection.
    pub(crate) fn connected(&self, i: u32, j: u32) -> bool {
        self.link_of
            .get(&(i.min(j), i.max(j)))
            .is_some_and(|&l| self.conn(2 * l).up)
    }
}
