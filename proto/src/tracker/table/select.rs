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
//! - Randomness comes only from the caller's seed through [`SplitMix64`]:
//!   the same table and seed give the same answer.
//! - No allocation beyond the output vector; [`PeerTable::select_peers_into`]
//!   lets the caller reuse even that.

use crate::infohash::InfoHash;
use crate::tracker::response::PeerInfo;

use super::entry::PeerId;
use super::PeerTable;

/// A tiny, fast, well-mixed PRNG (Steele, Lea and Flood's SplitMix64). It
/// only spreads load across peers; nothing secret depends on it.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0): the multiply-shift reduction's
    /// bias is below 2^-32 for any swarm size we allow.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A random step in `1..n` coprime to `n`, so stepping by it from any start
/// visits every slot exactly once.
fn coprime_step(n: usize, rng: &mut SplitMix64) -> usize {
    if n <= 2 {
        return 1;
    }
    let mut step = 1 + rng.below(n - 1);
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
        let mut rng = SplitMix64::new(rng_seed);
        let step = coprime_step(n, &mut rng);
        let mut i = rng.below(n);
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
        let mut rng = SplitMix64::new(3);
        for n in 1..200 {
            for _ in 0..5 {
                let step = coprime_step(n, &mut rng);
                let mut seen = vec![false; n];
                let mut i = rng.below(n);
                for _ in 0..n {
                    assert!(!seen[i]);
                    seen[i] = true;
                    i = (i + step) % n;
                }
            }
        }
    }

    #[test]
    fn splitmix_matches_the_reference() {
        // First outputs of SplitMix64 seeded with 1234567 (from the
        // reference implementation by Vigna).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        let mut r = SplitMix64::new(0);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
