//! Who we upload to: reciprocation plus an optimistic slot while we
//! download, furthest-behind-first while we seed, a stable courted set
//! while we spread (rules in the module comment of [`crate::swarm`]).
//!
//! Invariants this module keeps:
//! - At most `unchoke_slots + optimistic_slots` peers are unchoked, plus
//!   one per thin slot (`spread_slots` while spreading), and only peers
//!   that want something from us ([`Swarm::wants_upload`]). Thin slots are
//!   recounted every tick; when they fall, the extra slots close at the
//!   next choke round, not at once, so no peer is choked mid-piece for it.
//! - Ties between equally ranked peers are broken by the seeded RNG, never
//!   by key order, so no peer is favoured by the caller's numbering.
//! - Choking a peer forgets what it has queued at us (the caller drops
//!   unsent blocks) and takes back its unstarted reveals and its share of
//!   the optimistic slots: only peers we unchoke hold that share.
//! - A seed's slot is kept only by a peer that uses it. One it unchokes
//!   that wants something (interested, or courted while it spreads) but has
//!   neither asked for anything nor taken any of our bytes for its *slot
//!   stall timeout* (`stall_factor` blocks at its upload rate, at least
//!   `slot_stall_timeout`) has crashed or lost its path, as far as we can
//!   tell before the transport does: it is choked, loses every reveal
//!   (started or not), and gets no slot until it sends us a request or a
//!   `Have`, or the next choke round comes. Without this, a seed choosing
//!   the peers furthest behind would give its slots to the dead, which
//!   never catch up. A leecher ranking furthest behind first
//!   ([`LeecherChoking::FurthestBehind`]) keeps the same rule for the same
//!   reason. (A reciprocating leecher needs none: the dead upload
//!   nothing, so reciprocation drops them at the next round.)

use std::cmp::Ordering;
use std::time::Duration;

use super::config::{LeecherChoking, SeedChoking};
use super::peer::Peer;
use super::types::{Message, PeerKey, Time};
use super::Swarm;

impl Swarm {
    /// Peers we may unchoke at once.
    fn slots(&self) -> usize {
        if self.spreading() {
            self.cfg.spread_slots
        } else {
            self.cfg.unchoke_slots + self.cfg.optimistic_slots + self.thin_slots
        }
    }

    /// Marks the thin slots (see [`SwarmConfig::thin_slot_ratio`]) and,
    /// unless we spread, opens one more slot per thin one, filled at once.
    /// A slot counts, as thin or as the reference, only once its peer has
    /// held it for a rate window, so its rate reflects the slot and not
    /// the time before it. While we spread the slot count stays, but a
    /// starved peer may get a second copy of a piece only a thin peer is
    /// fetching (`spread.rs`).
    ///
    /// [`SwarmConfig::thin_slot_ratio`]: super::SwarmConfig::thin_slot_ratio
    pub(super) fn count_thin_slots(&mut self, now: Time) {
        let before = self.thin_slots;
        self.thin_slots = 0;
        let tau = self.cfg.rate_window;
        let held = |p: &Peer| {
            !p.am_choking
                && p.unchoked_at
                    .is_some_and(|t| now.saturating_since(t) >= tau)
        };
        // Fresh slots are left out of the reference too: one block over
        // a few milliseconds reads as a burst no steady slot matches.
        let fastest = self
            .peers
            .values()
            .filter(|p| held(p))
            .map(|p| p.up.get(now, tau))
            .fold(0.0, f64::max);
        // What a slot carried lately counts too: when every slot has gone
        // to peers behind slow paths, none of them shows what one could
        // carry. It fades over a choke interval, so a link that got
        // slower stops calling every slot thin.
        let fade =
            (-now.secs_since(self.slot_peak.1) / self.cfg.choke_interval.as_secs_f64()).exp();
        // Once we hold everything, so does what one connection carried to
        // us: a seed ranks the peers furthest behind first, in a mixed
        // fleet the slowest, and with no fast slot to compare them with it
        // uploaded at a few percent of its uplink until they finished
        // (heterogeneous at 5,000 nodes: a 10 Gbit/s node at 67 Mbit/s for
        // seconds while its fast neighbours waited). Not while we fetch: a
        // leecher's downlink is often wider than its uplink, and what it
        // receives would call every slot thin.
        let fastest_in = if self.have.is_full() {
            self.peers
                .values()
                .map(|p| p.down.get(now, tau))
                .fold(0.0, f64::max)
        } else {
            0.0
        };
        let fastest = fastest.max(self.slot_peak.0 * fade).max(fastest_in);
        self.slot_peak = (fastest, now);
        let on = self.cfg.max_thin_slots > 0;
        let (mut thin, mut changed) = (0, false);
        for (_, p) in self.peers.iter_mut() {
            let t = on && held(p) && p.up.get(now, tau) * self.cfg.thin_slot_ratio < fastest;
            changed |= t != p.thin;
            p.thin = t;
            thin += usize::from(t);
        }
        if let Some(sp) = self.spread.as_deref_mut() {
            if changed {
                sp.thin_changed();
                self.reveal_all = true;
            }
            return;
        }
        self.thin_slots = thin.min(self.cfg.max_thin_slots);
        if self.thin_slots > before {
            self.unchoke_needed = true;
        }
    }

    /// Chokes or unchokes `peer`, sending the message on a change.
    pub(super) fn set_choke(&mut self, now: Time, peer: PeerKey, choke: bool) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.am_choking == choke {
            return;
        }
        p.am_choking = choke;
        if choke {
            p.serving_bytes = 0;
            // Its slot is given back now: a choked holder of the
            // optimistic share would keep `pick_optimistic` from filling
            // it, and a rotation away from it would open one slot too many.
            self.optimistic.retain(|&k| k != peer);
            self.send(peer, Message::Choke);
            self.spread_release(peer, false);
        } else {
            p.unchoked_at = Some(now);
            self.send(peer, Message::Unchoke);
            self.spread_top_up(peer);
        }
    }

    /// Candidates for an upload slot, best first: for a seed by
    /// `seed_choking`, for a leecher by `leecher_choking`.
    fn ranked_candidates(&mut self, now: Time, only_choked: bool) -> Vec<PeerKey> {
        let seed = self.have.is_full();
        let tau = self.cfg.rate_window;
        let mut c: Vec<(f64, bool, u64, PeerKey)> = Vec::new();
        for (&k, p) in self.peers.iter() {
            if only_choked && !p.am_choking {
                continue;
            }
            if !p.wants_upload(self.spread.is_some()) || p.slot_stalled {
                continue;
            }
            let score = if seed {
                match self.cfg.seed_choking {
                    SeedChoking::FurthestBehind => -f64::from(p.has.count()),
                    SeedChoking::LeastServed => -(p.up.total() as f64),
                }
            } else {
                match self.cfg.leecher_choking {
                    LeecherChoking::Reciprocate => p.down.get(now, tau),
                    LeecherChoking::FurthestBehind => -f64::from(p.has.count()),
                }
            };
            c.push((score, p.far, self.rng.next_u64(), k));
        }
        c.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        c.into_iter().map(|(_, _, _, k)| k).collect()
    }

    /// A full choke round: re-plan every slot.
    pub(super) fn rechoke(&mut self, now: Time) {
        // Each round gives the peers taken for stalled another chance. A
        // live peer may have had reason to ask us nothing (a near peer
        // served it everything: `near.rs`) and nothing left to announce
        // when it needs us again; waiting for its request or `Have` would
        // shut it out for good. A crashed one costs a slot for one slot
        // stall timeout per round.
        for (_, p) in self.peers.iter_mut() {
            p.slot_stalled = false;
        }
        let mut ranked = self.ranked_candidates(now, false);
        if self.spreading() {
            // Keep whom we serve (see `spreading`); newcomers fill gaps.
            let (kept, rest): (Vec<PeerKey>, Vec<PeerKey>) =
                ranked.into_iter().partition(|k| self.is_unchoked(*k));
            ranked = kept;
            ranked.extend(rest);
        }
        let chosen: Vec<PeerKey> = if self.have.is_full() {
            self.optimistic.clear();
            let extra = if self.spreading() { 0 } else { self.thin_slots };
            self.regular_then_extra(now, ranked, self.slots() - extra, extra)
        } else {
            self.optimistic.retain(|k| ranked.contains(k));
            let mut chosen: Vec<PeerKey> = ranked
                .iter()
                .filter(|k| !self.optimistic.contains(k))
                .take(self.cfg.unchoke_slots + self.thin_slots)
                .copied()
                .collect();
            let rest: Vec<PeerKey> = ranked
                .iter()
                .filter(|k| !chosen.contains(k) && !self.optimistic.contains(k))
                .copied()
                .collect();
            self.pick_optimistic(now, rest);
            chosen.extend(self.optimistic.iter().copied());
            chosen
        };
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        // Choke first so a slot is never briefly over-subscribed.
        for &k in &keys {
            if !chosen.contains(&k) {
                self.set_choke(now, k, true);
            }
        }
        for k in chosen {
            self.set_choke(now, k, false);
        }
    }

    /// Between rounds, while downloading: gives the optimistic share of the
    /// slots to a peer we have not uploaded to for a rate window (or
    /// never), once whoever holds it has had a piece's worth from us
    /// (enough to trade with).
    ///
    /// The optimistic slot is there to give a peer with nothing to offer a
    /// start. But free slots are filled by rank as peers become interested,
    /// and nothing picks an optimistic peer before the first round, a choke
    /// interval after the first input; so the ranking takes the optimistic
    /// share as well, and a peer that comes later waits for a round with
    /// every neighbour choking it: in the simulator's churn
    /// scenario the last node to finish joined at 2.0 s and held nothing
    /// for 2.5 s, choked by all 16 of its neighbours, though each held
    /// pieces it lacked (`benches/RESULTS.md`, "Stop 17").
    ///
    /// "Never served" alone was not enough: a peer served once at the
    /// start and choked since by every neighbour has nothing they lack,
    /// so reciprocation gives it nothing, and it waited for the next
    /// optimistic round. In the slow-uplinks test a 1 Gbit/s node held 5-6
    /// pieces from 1 s to 6 s that way (`benches/RESULTS.md`, "Stop 20").
    /// So when no peer waits that we never served, the share goes to one
    /// we have not served for a rate window. The holder must have had a
    /// piece's worth first, so the share moves at most once per piece it
    /// carries.
    pub(super) fn rotate_spent_optimistic(&mut self, now: Time) {
        if self.have.is_full() {
            return;
        }
        let tau = self.cfg.rate_window;
        let (mut never, mut starved) = (Vec::new(), Vec::new());
        for (&k, p) in self.peers.iter() {
            if !p.am_choking || p.slot_stalled || !p.wants_upload(false) {
                continue;
            }
            match p.served_at {
                None => never.push(k),
                Some(t) if now.saturating_since(t) >= tau => starved.push(k),
                Some(_) => {}
            }
        }
        let mut pool = if never.is_empty() { starved } else { never };
        // Locality's slot rule holds here too: a far newcomer only when no
        // far peer holds a slot (at 5,000 nodes, inter-dc sent 36.6 copies
        // across its shared link without this, against 30.3).
        self.keep_one_far(&mut pool);
        if pool.is_empty() {
            return;
        }
        let piece = u64::from(self.geo.piece_length());
        let spent: Option<PeerKey> = if self.optimistic.is_empty() {
            // The ranking holds the optimistic share: take it back from
            // the lowest-ranked peer we unchoke that has had a piece.
            if self.unchoked() < self.slots() {
                return;
            }
            self.ranked_candidates(now, false)
                .into_iter()
                .rev()
                .find(|k| !self.peers[k].am_choking && self.peers[k].up.total() >= piece)
        } else {
            self.optimistic.iter().copied().find(|k| {
                let p = &self.peers[k];
                p.up.total().saturating_sub(p.optimistic_base) >= piece
            })
        };
        let Some(spent) = spent else { return };
        // Choking gives its share back (`set_choke`), so the pick below
        // fills that share and no slot is briefly over-subscribed.
        self.set_choke(now, spent, true);
        self.pick_optimistic(now, pool);
        for k in self.optimistic.clone() {
            self.set_choke(now, k, false);
        }
    }

    /// Peers we upload to now.
    pub(super) fn unchoked(&self) -> usize {
        self.peers.values().filter(|p| !p.am_choking).count()
    }

    /// Fills empty optimistic slots from `pool` at random; peers connected
    /// for less than one optimistic interval count three times, since they
    /// have nothing to reciprocate with yet.
    fn pick_optimistic(&mut self, now: Time, mut pool: Vec<PeerKey>) {
        let fresh_for = self.cfg.optimistic_interval;
        while self.optimistic.len() < self.cfg.optimistic_slots && !pool.is_empty() {
            let weight = |k: &PeerKey| {
                let p = &self.peers[k];
                if now.saturating_since(p.connected_at) < fresh_for {
                    3
                } else {
                    1
                }
            };
            let total: u64 = pool.iter().map(weight).sum();
            let mut r = self.rng.below(total);
            let mut idx = 0;
            for (i, k) in pool.iter().enumerate() {
                let w = weight(k);
                if r < w {
                    idx = i;
                    break;
                }
                r -= w;
            }
            let k = pool.swap_remove(idx);
            if let Some(p) = self.peers.get_mut(&k) {
                p.optimistic_base = p.up.total();
            }
            self.optimistic.push(k);
        }
    }

    /// Chokes the peers that hold a slot without using it (see the module
    /// comment) and gives their slots to others.
    pub(super) fn check_slot_stalls(&mut self, now: Time) {
        if !self.have.is_full() && self.cfg.leecher_choking == LeecherChoking::Reciprocate {
            return;
        }
        // The rule frees slots and pieces for others. With nobody else
        // to give them to, a false alarm (a live peer reading slowly, its
        // blocks acknowledged only once whole) would only shut out the
        // one peer we serve until the next round.
        let spreading = self.spreading();
        if self
            .peers
            .values()
            .filter(|p| p.wants_upload(spreading))
            .count()
            < 2
        {
            return;
        }
        let stalled: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let courted = spreading && p.masked && p.reveals.iter().any(|r| r.firm);
                !p.am_choking && (p.peer_interested || courted)
            })
            .filter(|(_, p)| {
                let alive = [p.last_asked, p.unchoked_at, p.served_at]
                    .into_iter()
                    .flatten()
                    .max();
                alive.is_some_and(|t| {
                    self.slot_stall_timeout(t, p)
                        .is_some_and(|limit| now.saturating_since(t) > limit)
                })
            })
            .map(|(k, _)| *k)
            .collect();
        for k in stalled {
            self.spread_release(k, true);
            if let Some(p) = self.peers.get_mut(&k) {
                p.slot_stalled = true;
            }
            self.set_choke(now, k, true);
            self.unchoke_needed = true;
        }
    }

    /// How long `p` may hold a slot without a sign of life: with nothing
    /// of its queued at us, `slot_stall_timeout` (it could have asked);
    /// else the time `stall_factor` blocks take at its upload rate as of
    /// its last sign of life (`alive`; read later, the rate decays with
    /// the silence and the bound would recede faster than time passes),
    /// at least that. `None` (never) if we have queued blocks for it but
    /// never sent it a byte: our own side may be what is stuck, and the
    /// transport will tell.
    fn slot_stall_timeout(&self, alive: Time, p: &Peer) -> Option<Duration> {
        let floor = self.cfg.slot_stall_timeout;
        if p.serving_bytes == 0 {
            return Some(floor);
        }
        let rate = p.up.get(alive, self.cfg.rate_window);
        if rate <= 0.0 {
            return None;
        }
        let secs = self.cfg.stall_factor * f64::from(self.cfg.block_size) / rate;
        let secs = secs.min(self.cfg.max_stall_timeout.as_secs_f64());
        Some(Duration::from_secs_f64(secs).max(floor))
    }

    /// Unchokes the best choked candidates while slots are free, without
    /// waiting for the next round. A seed done spreading fills its extra
    /// (thin) slots as in [`Swarm::rechoke`].
    pub(super) fn fill_unchoke_slots(&mut self, now: Time) {
        let unchoked = self.unchoked();
        let free = self.slots().saturating_sub(unchoked);
        if free == 0 {
            return;
        }
        let mut ranked = self.ranked_candidates(now, true);
        if !self.have.is_full() {
            self.keep_one_far(&mut ranked);
        }
        let extra = if self.have.is_full() && !self.spreading() {
            let base = self.slots() - self.thin_slots;
            free.saturating_sub(base.saturating_sub(unchoked))
        } else {
            0
        };
        for k in self.regular_then_extra(now, ranked, free - extra, extra) {
            self.set_choke(now, k, false);
        }
    }

    /// The first `regular` of `ranked`, then the `extra` of the rest we
    /// have uploaded to fastest lately (ties in `ranked`'s order). A
    /// seed's extra slots go to those rather than to the peers furthest
    /// behind: the slots are extra because the ones it has carry little,
    /// and the peers furthest behind are often the slow ones (in the
    /// simulator's heterogeneous fleet with the daemon's discovery, all 13
    /// of a seed's slots went to 100 Mbit/s nodes taking about 1 MB/s each,
    /// and its 10 Gbit/s uplink idled).
    fn regular_then_extra(
        &self,
        now: Time,
        mut ranked: Vec<PeerKey>,
        regular: usize,
        extra: usize,
    ) -> Vec<PeerKey> {
        let rest = ranked.split_off(regular.min(ranked.len()));
        if extra == 0 {
            return ranked;
        }
        let tau = self.cfg.rate_window;
        let mut rated: Vec<(f64, usize, PeerKey)> = rest
            .into_iter()
            .enumerate()
            .map(|(i, k)| (self.peers.get(&k).map_or(0.0, |p| p.up.get(now, tau)), i, k))
            .collect();
        // Stable on ties: no rate yet keeps the ranking's order.
        rated.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
        ranked.extend(rated.into_iter().take(extra).map(|(_, _, k)| k));
        ranked
    }
}
