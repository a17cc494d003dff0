//! Locality: what a region can get from its own peers is not fetched
//! across the link between data centres, and what must cross does so a
//! few pieces at a time.
//!
//! A fleet spans data centres, and the link between two of them is shared
//! by every connection that crosses it. Without these rules a node fetched
//! from whichever peers unchoked it, wherever they were: in the
//! simulator's `inter-dc` scenario (two regions 20 ms apart, one
//! 10 Gbit/s link) 70 copies of the file crossed the link at 1,000 nodes,
//! and 96-99% of the blocks crossing into the far region were of pieces
//! that had crossed whole before. The far region's last node finished at
//! 38 s and the near region's at 25 s, where a one-site flash crowd of
//! the same size takes 10 s (`benches/RESULTS.md`, "Stop 15").
//!
//! A peer is *far* when the transport's round trip to it (the smallest
//! reported: queueing under load must not turn a near peer far) is at
//! least [`SwarmConfig::far_rtt`]. A peer whose round trip is not known
//! yet is near, so with no round trips reported, or `far_rtt` unset, the
//! machine behaves as without these rules. The rules:
//! 1. **Near first.** A far peer is asked only for pieces that no near
//!    peer that unchokes us has announced. A near peer that chokes us, or
//!    has refused a request since it unchoked us, does not count: a node
//!    must not wait on it for a piece it will not give.
//! 2. **A few far pieces at a time.** A far peer may start (or adopt) a
//!    piece only while fewer than [`SwarmConfig::far_partials`] pieces
//!    with blocks still to ask for are owned by far peers. Behind a shared
//!    link more pieces at once only share it more thinly: each arrives
//!    later, and meanwhile the rest of the region fetches the same pieces
//!    across too. A far peer still finishes the piece it owns. A node with
//!    no near peer at all has no region to trade with and no limit: in
//!    the simulator's `two-regions` at 5,000 nodes, a node whose 16 peers
//!    were all far, each path capped by loss at 0.6 MB/s, held 117 of 256
//!    pieces when the run gave up at 429 s.
//! 3. **Hand over.** A piece a far peer is fetching for us, once a near
//!    peer that unchokes us has it, is adopted by that near peer like an
//!    orphan: its remaining blocks come over the short path.
//! 4. **Slots.** Between choke rounds a leecher with a near peer fills a
//!    free upload slot with a far peer only while no other far peer holds
//!    one; at a round far peers compete by rate like anyone (ties go to
//!    near peers), and the optimistic slot is drawn from all. Before, a
//!    slot filled at once stayed with whoever asked first until the
//!    round, 10 s later; behind a shared link those far slots carried a
//!    few Mbit/s each, and the near region's own trading fell to 3-13% of
//!    its uplinks for the first seconds.
//!
//! Invariant: `Near::avail[p]` is the number of connected peers with
//! `near_counted` that announced `p` and are not counted as seeds, and
//! `Near::seeds` the number of such peers counted as seeds;
//! `near_counted` is `!far && !peer_choking && refused.is_empty()`,
//! brought up to date by every input that changes any of them.
//!
//! [`SwarmConfig::far_rtt`]: super::SwarmConfig::far_rtt
//! [`SwarmConfig::far_partials`]: super::SwarmConfig::far_partials

use std::time::Duration;

use super::peer::Peer;
use super::types::{PeerKey, SwarmError, Time};
use super::Swarm;

/// Pieces that near peers that unchoke us hold.
#[derive(Debug, Clone)]
pub(crate) struct Near {
    avail: Vec<u32>,
    seeds: u32,
}

impl Near {
    pub(crate) fn new(pieces: u32) -> Near {
        Near {
            avail: vec![0; pieces as usize],
            seeds: 0,
        }
    }

    /// Whether a near peer that unchokes us has `piece`.
    pub(crate) fn has(&self, piece: u32) -> bool {
        self.seeds > 0 || self.avail[piece as usize] > 0
    }

    /// Whether a near peer that unchokes us has every piece.
    pub(crate) fn has_all(&self) -> bool {
        self.seeds > 0
    }

    pub(crate) fn add(&mut self, piece: u32) {
        self.avail[piece as usize] += 1;
    }

    pub(crate) fn add_seed(&mut self) {
        self.seeds += 1;
    }

    /// Counts a peer's announcements in (`add`) or out.
    fn count(&mut self, p: &Peer, add: bool) {
        let step = |n: &mut u32| *n = if add { *n + 1 } else { *n - 1 };
        if p.counted_as_seed {
            step(&mut self.seeds);
        } else {
            for i in p.has.iter() {
                step(&mut self.avail[i as usize]);
            }
        }
    }
}

impl Swarm {
    /// The transport's round-trip estimate for the path to `peer` (QUIC's,
    /// say; report it when the connection comes up and now and then
    /// after). The smallest reported decides whether the peer is far (see
    /// `near.rs`).
    pub fn handle_path_rtt(
        &mut self,
        now: Time,
        peer: PeerKey,
        rtt: Duration,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let far_rtt = self.cfg.far_rtt;
        let p = self.peer_mut(peer)?;
        if p.path_rtt.is_some_and(|m| m <= rtt) {
            return Ok(());
        }
        p.path_rtt = Some(rtt);
        let far = far_rtt.is_some_and(|t| rtt >= t);
        p.far = far;
        for pt in self.partials.iter_mut().filter(|pt| pt.owner == Some(peer)) {
            pt.far_owner = far;
        }
        self.recount_near(peer);
        self.flush(now);
        Ok(())
    }

    /// Brings `peer`'s share of the near availability in line with
    /// whether it is near and serves us.
    pub(super) fn recount_near(&mut self, peer: PeerKey) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        self.set_near_counted(peer, p.serves_nearby());
    }

    /// Whether a far peer may start or adopt a piece (rule 2).
    pub(super) fn far_budget_left(&self) -> bool {
        let held = self
            .partials
            .iter()
            .filter(|pt| pt.far_owner && pt.open > 0)
            .count();
        held < self.cfg.far_partials as usize || !self.has_known_near_peer()
    }

    /// Whether a peer known to be near (its round trip reported) is
    /// connected: the region there is to trade with. A peer still
    /// connecting has no round trip yet and does not count.
    fn has_known_near_peer(&self) -> bool {
        self.peers.values().any(|p| !p.far && p.path_rtt.is_some())
    }

    /// Leaves in `ranked` (candidates for free slots, best first) at most
    /// one far peer, and none if a far peer holds a slot already (rule 4);
    /// all of them when no near peer is connected, as nobody near could
    /// want the slots.
    pub(super) fn keep_one_far(&self, ranked: &mut Vec<PeerKey>) {
        if !self.has_known_near_peer() {
            return;
        }
        let is_far = |k: &PeerKey| self.peers.get(k).is_some_and(|p| p.far);
        let mut far = self
            .peers
            .values()
            .filter(|p| p.far && !p.am_choking)
            .count();
        ranked.retain(|k| {
            if !is_far(k) {
                return true;
            }
            far += 1;
            far <= 1
        });
    }

    /// A near peer left: if it was the last, far peers are no longer held
    /// to the budget (rule 2), so they are all asked at once.
    pub(super) fn near_peer_left(&mut self) {
        if !self.has_known_near_peer() && self.peers.values().any(|p| p.far) {
            self.fill_all = true;
        }
    }

    /// `peer` is going away: its share of the near availability goes too.
    pub(super) fn forget_near(&mut self, peer: PeerKey) {
        self.set_near_counted(peer, false);
    }

    fn set_near_counted(&mut self, peer: PeerKey, want: bool) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if want == p.near_counted {
            return;
        }
        p.near_counted = want;
        self.near.count(p, want);
        // Pieces only this peer offered nearby may now come from far
        // peers: give those a chance to ask at once. (When a near peer
        // starts counting, far peers keep what they were asked for.)
        if !want && self.peers.iter().any(|(k, q)| *k != peer && q.far) {
            self.fill_all = true;
        }
    }
}

#[cfg(test)]
impl Swarm {
    /// Recounts the near availability from the peers and checks it
    /// against the running counts (the module's invariant).
    pub(crate) fn check_near(&self) {
        let mut avail = vec![0u32; self.near.avail.len()];
        let mut seeds = 0;
        for p in self.peers.values() {
            let want = p.serves_nearby();
            assert_eq!(p.near_counted, want, "near_counted out of date");
            if !want {
                continue;
            }
            if p.counted_as_seed {
                seeds += 1;
            } else {
                for i in p.has.iter() {
                    avail[i as usize] += 1;
                }
            }
        }
        assert_eq!(self.near.seeds, seeds, "near seeds");
        assert_eq!(self.near.avail, avail, "near availability");
        for pt in &self.partials {
            let owner_far = pt
                .owner
                .and_then(|k| self.peers.get(&k))
                .is_some_and(|p| p.far);
            assert_eq!(pt.far_owner, owner_far, "far_owner of piece {}", pt.piece);
        }
    }
}
