//! Connection-level inputs: peers arriving and leaving, what they announce
//! (bitfield, have-all, have-none, have), their interest and choking, and
//! the bookkeeping those drive: availability, our interest, drops and bans.
//!
//! Invariants this module keeps:
//! - Availability changes only through `add_avail` / `sub_avail`, which
//!   keep the ranking bucket and the spreading seed's unseen count in step.
//! - A removed peer leaves nothing behind but its score: its availability,
//!   requests, owned pieces, reveals and unchoke slot are all released.
//! - Our `Interested` state toggles exactly when the count of pieces the
//!   peer has and we lack crosses zero.

use super::peer::Peer;
use super::types::{DisconnectReason, Message, PeerKey, SwarmError, Time, Violation};
use super::{Action, Bitset, Swarm};

impl Swarm {
    /// A connection to `peer` is up; `dialed` says whether we opened it.
    /// Sends our bitfield (or have-all / have-none). Refuses banned peers.
    pub fn handle_peer_connected(
        &mut self,
        now: Time,
        peer: PeerKey,
        dialed: bool,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        if self.is_banned(peer) {
            return Err(SwarmError::Banned(peer));
        }
        if self.peers.contains_key(&peer) {
            return Err(SwarmError::DuplicatePeer(peer));
        }
        let n = self.geo.piece_count();
        let mut p = Peer::new(n, now, dialed);
        let first = if self.spread.is_some() {
            p.masked = true;
            p.told = Some(Bitset::new(n));
            Message::HaveNone
        } else if self.have.is_full() {
            Message::HaveAll
        } else if self.have.count() == 0 {
            Message::HaveNone
        } else {
            Message::Bitfield(self.have.to_bt_bytes())
        };
        self.peers.insert(peer, p);
        self.scores.entry(peer).or_default();
        self.send(peer, first);
        // A spreading seed courts peers that have not asked yet: they
        // cannot be interested in a seed that advertised nothing.
        if self.spread.is_some() {
            self.unchoke_needed = true;
        }
        self.flush(now);
        Ok(())
    }

    /// The connection to `peer` is gone. Unknown peers are ignored, so this
    /// may follow an [`super::Action::Disconnect`] of ours.
    pub fn handle_peer_disconnected(&mut self, now: Time, peer: PeerKey) {
        self.touch(now);
        self.remove_peer(peer);
        self.flush(now);
    }

    /// The peer's bitfield (BitTorrent bit order).
    pub fn handle_bitfield(
        &mut self,
        now: Time,
        peer: PeerKey,
        bits: &[u8],
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let n = self.geo.piece_count();
        let Some(set) = Bitset::from_bt_bytes(n, bits) else {
            self.protocol_violation(peer, Violation::BadBitfield)?;
            self.flush(now);
            return Ok(());
        };
        if set.is_full() {
            return self.handle_have_all(now, peer);
        }
        if !self.first_availability(peer)? {
            self.flush(now);
            return Ok(());
        }
        for i in set.iter() {
            self.add_avail(i);
        }
        let interesting = set.count_minus(&self.have);
        if self.peers.get(&peer).is_some_and(|p| p.near_counted) {
            for i in set.iter() {
                self.near.add(i);
            }
        }
        let p = self.peer_mut(peer)?;
        p.has = set;
        p.interesting = interesting;
        self.peer_announced(now, peer, true);
        Ok(())
    }

    /// The peer has every piece.
    pub fn handle_have_all(&mut self, now: Time, peer: PeerKey) -> Result<(), SwarmError> {
        self.touch(now);
        if !self.first_availability(peer)? {
            self.flush(now);
            return Ok(());
        }
        let n = self.geo.piece_count();
        let interesting = n - self.have.count();
        let p = self.peer_mut(peer)?;
        p.has = Bitset::full(n);
        p.counted_as_seed = true;
        p.interesting = interesting;
        let near = p.near_counted;
        self.seeds += 1;
        if near {
            // Counted while it had nothing: now as a seed instead.
            self.near.add_seed();
        }
        self.peer_announced(now, peer, true);
        Ok(())
    }

    /// The peer has no piece.
    pub fn handle_have_none(&mut self, now: Time, peer: PeerKey) -> Result<(), SwarmError> {
        self.touch(now);
        self.first_availability(peer)?;
        self.flush(now);
        Ok(())
    }

    /// The peer now has `piece`.
    pub fn handle_have(&mut self, now: Time, peer: PeerKey, piece: u32) -> Result<(), SwarmError> {
        self.touch(now);
        if piece >= self.geo.piece_count() {
            self.protocol_violation(peer, Violation::PieceOutOfRange)?;
            self.flush(now);
            return Ok(());
        }
        let lack = !self.have.contains(piece);
        let p = self.peer_mut(peer)?;
        p.got_bitfield = true;
        // A sign of life: it may hold a slot again.
        p.slot_stalled = false;
        if !p.has.insert(piece) {
            return Ok(());
        }
        if lack {
            p.interesting += 1;
        }
        if p.near_counted {
            self.near.add(piece);
        }
        self.add_avail(piece);
        self.spread_peer_has(peer, piece);
        // A piece we hold already cannot be asked of it: no refill (the
        // common case in a large swarm, where most `Have`s are for pieces
        // the receiver has).
        self.peer_announced(now, peer, lack);
        Ok(())
    }

    /// Hands a control message from `peer` to the handler for its kind:
    /// for callers that carry [`Message`]s as values (the simulator, the
    /// test network) rather than the wire's own type.
    pub fn handle_message(
        &mut self,
        now: Time,
        peer: PeerKey,
        message: Message,
    ) -> Result<(), SwarmError> {
        match message {
            Message::Interested => self.handle_interested(now, peer, true),
            Message::NotInterested => self.handle_interested(now, peer, false),
            Message::Choke => self.handle_choked(now, peer, true),
            Message::Unchoke => self.handle_choked(now, peer, false),
            Message::Request(b) => self.handle_request(now, peer, b),
            Message::Cancel(b) => self.handle_cancel(now, peer, b),
            Message::Reject(b) => self.handle_reject(now, peer, b),
            Message::Have(p) => self.handle_have(now, peer, p),
            Message::Bitfield(bytes) => self.handle_bitfield(now, peer, &bytes),
            Message::HaveAll => self.handle_have_all(now, peer),
            Message::HaveNone => self.handle_have_none(now, peer),
        }
    }

    /// The peer is (or is no longer) interested in our pieces.
    pub fn handle_interested(
        &mut self,
        now: Time,
        peer: PeerKey,
        interested: bool,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let p = self.peer_mut(peer)?;
        p.peer_interested = interested;
        let unchoked = !p.am_choking;
        if interested && !unchoked {
            self.unchoke_needed = true;
        } else if !interested && unchoked && !self.wants_upload(peer) {
            // Its slot is better used by someone who wants data.
            self.set_choke(now, peer, true);
            self.unchoke_needed = true;
        }
        self.flush(now);
        Ok(())
    }

    /// The peer choked us (`true`) or unchoked us (`false`). Choking
    /// drops our outstanding requests to it; their blocks go back to the
    /// pool and may be re-requested anywhere.
    pub fn handle_choked(
        &mut self,
        now: Time,
        peer: PeerKey,
        choked: bool,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let p = self.peer_mut(peer)?;
        if p.peer_choking == choked {
            return Ok(());
        }
        p.peer_choking = choked;
        if choked {
            self.drop_requests(peer, false);
        } else {
            p.refused.clear();
            self.mark_dirty(peer);
        }
        self.recount_near(peer);
        self.flush(now);
        Ok(())
    }

    /// Payload bytes received from `peer`, for its rate estimate. Report
    /// them as they arrive; the block itself goes to [`Swarm::handle_block`].
    pub fn handle_bytes_received(&mut self, now: Time, peer: PeerKey, bytes: u64) {
        self.touch(now);
        let tau = self.cfg.rate_window;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.down.add(now, bytes, tau);
        }
        self.stats.downloaded += bytes;
    }

    pub(super) fn peer_mut(&mut self, peer: PeerKey) -> Result<&mut Peer, SwarmError> {
        self.peers
            .get_mut(&peer)
            .ok_or(SwarmError::UnknownPeer(peer))
    }

    /// Marks the peer's one bitfield / have-all / have-none as received.
    /// `Ok(false)` if it had already sent one (the peer is then dropped).
    fn first_availability(&mut self, peer: PeerKey) -> Result<bool, SwarmError> {
        let p = self.peer_mut(peer)?;
        if p.got_bitfield {
            self.protocol_violation(peer, Violation::DuplicateBitfield)?;
            return Ok(false);
        }
        p.got_bitfield = true;
        Ok(true)
    }

    /// Follow-up to any announcement: interest, pipelines, seeds.
    fn peer_announced(&mut self, now: Time, peer: PeerKey, refill: bool) {
        self.update_interest(peer);
        if self.have.is_full()
            && self.cfg.drop_seeds_when_complete
            && self.peers.get(&peer).is_some_and(|p| p.has.is_full())
        {
            self.drop_peer(peer, DisconnectReason::NotUseful, false);
        } else {
            if refill {
                self.mark_dirty(peer);
            }
            self.spread_top_up(peer);
        }
        self.spread_check_done();
        self.flush(now);
    }

    /// Sends Interested / NotInterested when our want for the peer changed.
    pub(super) fn update_interest(&mut self, peer: PeerKey) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let want = p.interesting > 0;
        if want != p.am_interested {
            p.am_interested = want;
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(peer, m);
            if want {
                self.mark_dirty(peer);
            }
        }
    }

    pub(super) fn add_avail(&mut self, piece: u32) {
        let i = piece as usize;
        let level = self.avail[i];
        self.ranking.raise(piece, level);
        self.avail[i] = level + 1;
        if let Some(sp) = &mut self.spread {
            sp.avail_changed(level, level + 1);
        }
    }

    pub(super) fn sub_avail(&mut self, piece: u32) {
        let i = piece as usize;
        let level = self.avail[i];
        self.ranking.lower(piece, level);
        self.avail[i] = level - 1;
        if let Some(sp) = &mut self.spread {
            sp.avail_changed(level, level - 1);
        }
    }

    /// Forgets a connection: releases its availability, requests, owned
    /// pieces, reveals and unchoke slot. Its score stays.
    pub(super) fn remove_peer(&mut self, peer: PeerKey) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.drop_requests(peer, false);
        self.spread_forget(peer);
        self.forget_near(peer);
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if p.counted_as_seed {
            self.seeds -= 1;
        } else {
            for i in p.has.iter() {
                self.sub_avail(i);
            }
        }
        if !p.far {
            self.near_peer_left();
        }
        if !p.am_choking {
            self.unchoke_needed = true;
        }
        self.optimistic.retain(|&k| k != peer);
    }

    /// Closes a connection for `reason`. `misbehaved` counts it towards
    /// the peer's ban threshold.
    pub(super) fn drop_peer(&mut self, peer: PeerKey, reason: DisconnectReason, misbehaved: bool) {
        if self.peers.contains_key(&peer) {
            self.remove_peer(peer);
            self.actions.push_back(Action::Disconnect { peer, reason });
        }
        if misbehaved {
            let ban_drops = self.cfg.ban_drops;
            let s = self.score_mut(peer);
            s.drops += 1;
            if s.drops >= ban_drops {
                self.ban(peer);
            }
        }
    }

    /// Bans `peer` for the rest of the swarm, disconnecting it first.
    pub(super) fn ban(&mut self, peer: PeerKey) {
        if self.is_banned(peer) {
            return;
        }
        self.score_mut(peer).banned = true;
        self.drop_peer(peer, DisconnectReason::Banned, false);
        self.actions.push_back(Action::Ban { peer });
    }

    /// Drops a peer that broke the protocol; `Err` if it is not connected.
    pub(super) fn protocol_violation(
        &mut self,
        peer: PeerKey,
        v: Violation,
    ) -> Result<(), SwarmError> {
        if !self.peers.contains_key(&peer) {
            return Err(SwarmError::UnknownPeer(peer));
        }
        self.drop_peer(peer, DisconnectReason::Protocol(v), true);
        Ok(())
    }
}
