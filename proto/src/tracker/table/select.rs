//! Choosing which peers to hand to an announcing client.
//!
//! The walk visits a torrent's dense slot array along a random arithmetic
//! progression (random start, random step coprime to the length), which is
//! a permutation of all slots. It stops as soon as `numwant` peers are
//! found, so a typical announce costs O(numwant), not O(swarm), and every
//! peer is equally likely to be chosen.
//!
//! Invariants this module keeps:
//! - The requester never receives itself, a tombstone or a dead entry, and
//!   a seeder never receives seeders (they have nothing to trade).
//! - Randomness comes only from the caller's seed through [`crate::rng::Rng`]:
//!   the same table and seed give the same answer.
//! - No allocation beyond the output vector; [`PeerTable::select_peers_into`]
//!   lets the caller reuse even that.

use crate::infohash::InfoHash;
use crate::rng::Rng;
use crate::tracker::response::PeerInfo;

use super::entry::PeerId;
use super::PeerTable;

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A random step in `1..n` coprime to `n`, so stepping by it from any start
/// visits every slot exactly once.
fn coprime_step(n: usize, rng: &mut Rng) -> usize {
    if n <= 2 {
        return 1;
    }
    let mut step = 1 + rng.below(n as u64 - 1) as usize;
    // Coprimes are dense (at least ~1/(2 ln ln n) of all numbers), so this
    // ends after a few steps; 1 is always coprime, which bounds the loop.
    while gcd(step, n) != 1 {
        step = if step + 1 == n { 1 } else { step + 1 };
    }
    step
}

impl PeerTable {
    /// Up to `numwant` random live peers of `info_hash` for the peer
    /// `requester`; see the module comment for the rules.
    pub fn select_peers(
        &self,
        now_ms: u64,
        info_hash: &InfoHash,
        requester: &PeerId,
        numwant: usize,
        requester_is_seeder: bool,
        rng_seed: u64,
    ) -> Vec<PeerInfo> {
        let mut out = Vec::new();
        self.select_peers_into(
            now_ms,
            info_hash,
            requester,
            numwant,
            requester_is_seeder,
            rng_seed,
            &mut out,
        );
        out
    }

    /// [`PeerTable::select_peers`], appending to a caller-owned vector.
    #[allow(clippy::too_many_arguments)]
    pub fn select_peers_into(
        &self,
        now_ms: u64,
        info_hash: &InfoHash,
        requester: &PeerId,
        numwant: usize,
        requester_is_seeder: bool,
        rng_seed: u64,
        out: &mut Vec<PeerInfo>,
    ) {
        let Some(t) = self.torrents.get(info_hash) else {
            return;
        };
        let slots = t.slots();
        let n = slots.len();
        if n == 0 || numwant == 0 {
            return;
        }
        let ttl = self.cfg.ttl_ms;
        let (seeders, leechers) = t.live_counts(now_ms, ttl);
        let eligible = if requester_is_seeder {
            leechers
        } else {
            seeders + leechers
        } as usize;
        let want = numwant.min(eligible);
        if want == 0 {
            return;
        }
        out.reserve(want);
        let start_len = out.len();
        let mut rng = Rng::new(rng_seed);
        let step = coprime_step(n, &mut rng);
        let mut i = rng.below(n as u64) as usize;
        for _ in 0..n {
            let (peer, e) = &slots[i];
            if e.is_live_peer(now_ms, ttl)
                && !(requester_is_seeder && e.seeder)
                && peer != requester
            {
                out.push(PeerInfo {
                    peer_id: *peer,
                    addr: e.addr,
                    seeder: e.seeder,
                });
                if out.len() - start_len == want {
                    return;
                }
            }
            i += step;
            if i >= n {
                i -= n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_visit_every_slot_once() {
        let mut rng = Rng::new(3);
        for n in 1..200 {
            for _ in 0..5 {
                let step = coprime_step(n, &mut rng);
                let mut seen = vec![false; n];
                let mut i = rng.below(n as u64) as usize;
                for _ in 0..n {
                    assert!(!seen[i]);
                    seen[i] = true;
                    i = (i + step) % n;
                }
            }
        }
    }
}
