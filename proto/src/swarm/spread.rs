//! Distinct-first spreading by an initial seed (the rule is stated in the
//! module comment of [`crate::swarm`]): which piece to reveal to whom, and
//! when to stop masking.
//!
//! A reveal is a *claim* on a piece. It is *firm* once the peer holding it
//! has asked us for any block (it fetches what it is told), *soft* before:
//! another seed that masks too never fetches, so its claims must not hold
//! pieces back from leechers.
//!
//! A firm claim is only as good as its holder. A peer that crashed (or
//! whose path died) keeps its claims until the transport notices, which
//! can take longer than the whole distribution; meanwhile nobody else is
//! given those pieces and the swarm waits on them. So a courted peer that
//! stalls holding its slot (see `choke.rs`) loses every claim, started or
//! not. Were it only slow, the cost is a second copy of its pieces from
//! us; waiting costs the whole swarm.
//!
//! Invariants this module keeps while spreading:
//! - `firm[p]` / `soft[p]` count the connected peers holding a firm / soft
//!   reveal of `p` (revealed, not yet announced back).
//! - `unseen` is the number of pieces no connected peer has announced
//!   (`avail[p] == 0`).
//! - A masked peer's `told` holds every piece we announced to it.
//! - Spreading ends for good when no piece is unseen; every masked peer is
//!   then told the rest, so no peer is left with a partial view.

use super::peer::Reveal;
use super::types::{Message, PeerKey, Time};
use super::Swarm;

/// Per-piece spreading counters of a seed.
#[derive(Debug, Clone)]
pub(crate) struct Spread {
    firm: Vec<u16>,
    soft: Vec<u16>,
    revealed: Vec<u32>,
    unseen: u32,
    /// Bumped whenever a piece may have become revealable again, so a
    /// peer found starved is not rescanned until then.
    epoch: u64,
    /// The epoch `wake_starved` last looked at.
    woken: u64,
}

impl Spread {
    pub(crate) fn new(pieces: u32) -> Spread {
        Spread {
            firm: vec![0; pieces as usize],
            soft: vec![0; pieces as usize],
            revealed: vec![0; pieces as usize],
            unseen: pieces,
            epoch: 0,
            woken: 0,
        }
    }

    /// Keeps `unseen` in step with an availability change.
    pub(crate) fn avail_changed(&mut self, old: u32, new: u32) {
        match (old == 0, new == 0) {
            (true, false) => self.unseen -= 1,
            (false, true) => {
                self.unseen += 1;
                self.epoch += 1;
            }
            _ => {}
        }
    }

    /// Which peers are thin changed: a starved peer may find a piece now.
    pub(crate) fn thin_changed(&mut self) {
        self.epoch += 1;
    }

    fn claims(&mut self, firm: bool) -> &mut Vec<u16> {
        if firm {
            &mut self.firm
        } else {
            &mut self.soft
        }
    }

    fn add(&mut self, r: &Reveal) {
        self.claims(r.firm)[r.piece as usize] += 1;
    }

    fn sub(&mut self, r: &Reveal) {
        self.claims(r.firm)[r.piece as usize] -= 1;
        self.epoch += 1;
    }
}

/// What a spreading seed can reveal to one peer next.
enum Next {
    Piece(u32),
    NothingForPeer,
    Exhausted,
}

impl Swarm {
    /// Whether `peer` is a candidate for an upload slot: it asked, or we
    /// are a spreading seed it cannot ask yet.
    pub(super) fn wants_upload(&self, peer: PeerKey) -> bool {
        let spreading = self.spread.is_some();
        self.peers
            .get(&peer)
            .is_some_and(|p| p.wants_upload(spreading) && !p.slot_stalled)
    }

    /// Offers again to the peers found starved before the last epoch bump
    /// (a claim released, a piece unseen again). Nothing else would: such
    /// a peer may have nothing left to announce, and waits on us for the
    /// one piece that only we now hold.
    pub(super) fn wake_starved(&mut self) {
        // Every input of a spreading seed ends here: look at the peers only
        // when the epoch moved since the last look.
        let Some(sp) = self.spread.as_deref_mut() else {
            return;
        };
        if sp.woken == sp.epoch {
            return;
        }
        sp.woken = sp.epoch;
        let epoch = sp.epoch;
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.starved_at.is_some_and(|e| e != epoch))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(p) = self.peers.get_mut(&k) {
                p.starved_at = None;
            }
            self.spread_top_up(k);
        }
    }

    /// Takes back the unrequested reveals of unchoked peers that have asked
    /// for nothing for `spread_idle_timeout`, and stops courting them: a
    /// peer that never fetches (another seed, say) must not keep a slot,
    /// and one that stopped fetching must not hold firm claims the seed
    /// waits on before unmasking.
    pub(super) fn spread_check_idle(&mut self, now: Time) {
        if self.spread.is_none() {
            return;
        }
        let timeout = self.cfg.spread_idle_timeout;
        let idle: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let since = p.last_asked.max(p.unchoked_at);
                p.masked
                    && !p.am_choking
                    && !p.inert
                    && p.reveals.iter().any(|r| r.requested == 0)
                    && since.is_some_and(|t| now.saturating_since(t) > timeout)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.spread_release(k, false);
            if let Some(p) = self.peers.get_mut(&k) {
                p.inert = true;
            }
            if !self.wants_upload(k) {
                self.set_choke(now, k, true);
                self.unchoke_needed = true;
            }
        }
    }

    /// Reveals pieces to an unchoked masked peer until it has
    /// `spread_ahead_bytes` revealed and unrequested.
    pub(super) fn spread_top_up(&mut self, peer: PeerKey) {
        while self.spread.is_some() {
            let Some(p) = self.peers.get(&peer) else {
                return;
            };
            if !p.masked || p.am_choking || p.inert {
                return;
            }
            let ahead: u64 = p
                .reveals
                .iter()
                .map(|r| u64::from(self.geo.piece_size(r.piece)).saturating_sub(r.requested))
                .sum();
            if ahead >= self.cfg.spread_ahead_bytes.max(1) {
                return;
            }
            match self.next_reveal(peer) {
                Next::Piece(piece) => self.reveal(peer, piece),
                Next::NothingForPeer => return,
                Next::Exhausted => {
                    self.end_spread();
                    return;
                }
            }
        }
    }

    /// The piece with the fewest copies in the swarm (announced or firmly
    /// on their way), then the fewest soft claims, then the fewest reveals,
    /// ties at random, among those `peer` lacks and does not hold already.
    fn next_reveal(&mut self, peer: PeerKey) -> Next {
        let (Some(sp), Some(p)) = (&self.spread, self.peers.get(&peer)) else {
            return Next::NothingForPeer;
        };
        if sp.unseen == 0 {
            return Next::Exhausted;
        }
        if p.starved_at == Some(sp.epoch) {
            return Next::NothingForPeer;
        }
        let mut best: Option<((u32, u16, u32), u32)> = None;
        let mut ties = 0u64;
        for piece in 0..self.geo.piece_count() {
            if p.has.contains(piece) {
                continue;
            }
            let i = piece as usize;
            let key = (
                self.avail[i] + u32::from(sp.firm[i]),
                sp.soft[i],
                sp.revealed[i],
            );
            if best.is_some_and(|(k, _)| key > k) || p.reveals.iter().any(|r| r.piece == piece) {
                continue;
            }
            if best.is_some_and(|(k, _)| key == k) {
                ties += 1;
                if self.rng.below(ties) != 0 {
                    continue;
                }
            } else {
                ties = 1;
            }
            best = Some((key, piece));
        }
        match best {
            Some((k, piece)) if k.0 == 0 => Next::Piece(piece),
            // Every piece has landed or is firmly on its way: a second copy
            // now would slow the first ones down, unless the first is held
            // up by its own path. Otherwise wait for them to land.
            _ if !p.thin => match self.second_copy(peer) {
                Some(piece) => Next::Piece(piece),
                None => self.starve(peer),
            },
            _ => self.starve(peer),
        }
    }

    /// A piece for `peer` (not thin itself) whose one copy on its way goes
    /// to a thin peer: that copy is held up by its path, not by our uplink,
    /// so a second one slows nobody down, and the swarm need not wait on
    /// the slow path for it. At most two copies: the thin claim and this.
    /// Ties at random.
    fn second_copy(&mut self, peer: PeerKey) -> Option<u32> {
        let (sp, p) = (self.spread.as_deref()?, self.peers.get(&peer)?);
        let mut ties = 0u64;
        let mut pick = None;
        for q in self.peers.values().filter(|q| q.thin) {
            for r in q.reveals.iter().filter(|r| r.firm) {
                let i = r.piece as usize;
                if self.avail[i] != 0
                    || sp.firm[i] != 1
                    || sp.soft[i] != 0
                    || p.has.contains(r.piece)
                    || p.reveals.iter().any(|m| m.piece == r.piece)
                {
                    continue;
                }
                ties += 1;
                if self.rng.below(ties) == 0 {
                    pick = Some(r.piece);
                }
            }
        }
        pick
    }

    /// Nothing to reveal to `peer` until something changes.
    fn starve(&mut self, peer: PeerKey) -> Next {
        let epoch = self.spread.as_ref().map_or(0, |sp| sp.epoch);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.starved_at = Some(epoch);
        }
        Next::NothingForPeer
    }

    fn reveal(&mut self, peer: PeerKey, piece: u32) {
        let (Some(sp), Some(p)) = (&mut self.spread, self.peers.get_mut(&peer)) else {
            return;
        };
        let r = Reveal {
            piece,
            requested: 0,
            firm: p.last_asked.is_some(),
        };
        sp.add(&r);
        sp.revealed[piece as usize] += 1;
        p.reveals.push(r);
        // A piece taken back at a choke was told already: re-adopt quietly.
        if p.told.as_mut().is_some_and(|t| t.insert(piece)) {
            self.send(peer, Message::Have(piece));
        }
    }

    /// `peer` announced `piece`: a reveal of it has landed.
    pub(super) fn spread_peer_has(&mut self, peer: PeerKey, piece: u32) {
        let (Some(sp), Some(p)) = (&mut self.spread, self.peers.get_mut(&peer)) else {
            return;
        };
        if let Some(i) = p.reveals.iter().position(|r| r.piece == piece) {
            sp.sub(&p.reveals.swap_remove(i));
        }
    }

    /// Ends spreading once every piece has been announced by some peer.
    pub(super) fn spread_check_done(&mut self) {
        if self.spread.as_ref().is_some_and(|sp| sp.unseen == 0) {
            self.end_spread();
        }
    }

    /// While spreading, a seed keeps the peers it unchokes: choking one
    /// halfway through a revealed piece would strand that piece.
    pub(super) fn spreading(&self) -> bool {
        self.spread.is_some()
    }

    /// `peer` asked us for `len` bytes of `piece`. Its first request makes
    /// all its claims firm.
    pub(super) fn spread_requested(&mut self, peer: PeerKey, piece: u32, len: u64) {
        let (Some(sp), Some(p)) = (&mut self.spread, self.peers.get_mut(&peer)) else {
            return;
        };
        for r in &mut p.reveals {
            if !r.firm {
                sp.sub(r);
                r.firm = true;
                sp.add(r);
            }
            if r.piece == piece {
                r.requested += len;
            }
        }
    }

    /// Takes back reveals `peer` has not started (it was choked), or all of
    /// them (it left).
    pub(super) fn spread_release(&mut self, peer: PeerKey, all: bool) {
        let (Some(sp), Some(p)) = (&mut self.spread, self.peers.get_mut(&peer)) else {
            return;
        };
        let before = p.reveals.len();
        p.reveals.retain(|r| {
            let keep = !all && r.requested > 0;
            if !keep {
                sp.sub(r);
            }
            keep
        });
        if p.reveals.len() < before {
            self.reveal_all = true;
        }
    }

    /// Releases everything `peer` held, before it is removed.
    pub(super) fn spread_forget(&mut self, peer: PeerKey) {
        self.spread_release(peer, true);
    }

    /// Every piece is in the swarm: stop masking and tell every masked peer
    /// the rest.
    fn end_spread(&mut self) {
        if self.spread.take().is_none() {
            return;
        }
        let n = self.geo.piece_count();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            p.masked = false;
            p.reveals.clear();
            let Some(told) = p.told.take() else {
                continue;
            };
            let missing: Vec<u32> = (0..n).filter(|&i| !told.contains(i)).collect();
            for i in missing {
                self.send(k, Message::Have(i));
            }
            self.mark_dirty(k);
        }
        // Back to the normal slot count, and peers courted while masked
        // may not want anything now.
        self.rechoke_needed = true;
    }
}
