//! The download side's inputs: blocks arriving, requests rejected or
//! failed, pieces verified and stored; plus stall detection and blame.
//!
//! Invariants this module keeps:
//! - A partial piece becomes `Verifying` the moment its last block is
//!   accepted, and it remembers every distinct peer that supplied a block.
//! - When a block arrives, every other request for it is cancelled (the
//!   endgame's duplicate requests end here).
//! - A failed piece returns to the ranking with all its blocks open; if
//!   several peers supplied it, its re-fetch is single-sourced.
//! - Only a stored piece is announced (`Have`) and counted as ours.
//!
//! Endgame lag: in endgame every missing block is already requested, so
//! the download waits on its slowest requester, and a requester that died
//! silently is only caught by the stall timeout (seconds: it must not
//! punish a peer for a slow patch). A block at its requester cap cannot
//! be asked of anyone else meanwhile. So in endgame a peer that sits on
//! our requests for `stall_factor` × (round trip + one block at the best
//! rate any peer delivered at), well under the stall timeout, is snubbed (no
//! blame): its
//! requests stay, in case it was only slow, but no longer count towards
//! the cap, so peers that deliver take the blocks as well. A snubbed peer
//! takes no endgame duplicates; the stall timeout still ends its
//! requests if it never answers.

use std::time::Duration;

use super::peer::Peer;
use super::types::{
    Action, BlockOutcome, BlockRef, DisconnectReason, Message, PeerKey, SwarmError, Time,
};
use super::{BlockState, PieceState, Swarm};

impl Swarm {
    /// A block arrived from `peer`. The caller keeps the bytes only when
    /// the outcome is [`BlockOutcome::Accepted`].
    pub fn handle_block(
        &mut self,
        now: Time,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<BlockOutcome, SwarmError> {
        self.touch(now);
        if !self.peers.contains_key(&peer) {
            return Err(SwarmError::UnknownPeer(peer));
        }
        let len = u64::from(block.len);
        let Some(b) = self.block_index(block) else {
            self.stats.wasted += len;
            return Ok(BlockOutcome::Unexpected);
        };
        let piece = block.piece;
        let mut asked = false;
        if let Some(p) = self.peers.get_mut(&peer) {
            // Only an answer to a request counts as progress: unsolicited
            // blocks must not keep a stalling peer looking alive.
            if let Some(sent) = p.take_request(piece, b, len) {
                p.rtt.sample(now - sent);
                p.progress_at = now;
                p.snubbed = false;
                p.rejects_in_row = 0;
                asked = true;
            }
        }
        self.mark_dirty(peer);
        let outcome = match self.state[piece as usize] {
            PieceState::Partial(i) => self.accept_block(peer, i as usize, b, asked),
            PieceState::Missing => BlockOutcome::Unexpected,
            _ => BlockOutcome::Duplicate,
        };
        if outcome != BlockOutcome::Accepted {
            self.stats.wasted += len;
        }
        self.flush(now);
        Ok(outcome)
    }

    /// Takes block `b` of partial `i` from `peer`; `asked` says whether
    /// `peer` held one of the block's requests.
    fn accept_block(&mut self, peer: PeerKey, i: usize, b: u32, asked: bool) -> BlockOutcome {
        let pt = &mut self.partials[i];
        let piece = pt.piece;
        let before = pt.blocks[b as usize];
        match before {
            BlockState::Received(_) => return BlockOutcome::Duplicate,
            BlockState::Open => {
                // A late answer to a request we had given up on.
                pt.open -= 1;
                self.unrequested -= 1;
            }
            BlockState::Requested(_) => {}
        }
        pt.blocks[b as usize] = BlockState::Received(peer);
        pt.received += 1;
        let done = pt.received as usize == pt.blocks.len();
        // Only endgame duplicates (or a late answer from a peer we gave up
        // on) leave other requests behind; skip the scan otherwise.
        if let BlockState::Requested(n) = before {
            if n > u8::from(asked) {
                self.cancel_others(peer, piece, b);
            }
        }
        if done {
            self.finish_partial(i);
        }
        BlockOutcome::Accepted
    }

    /// Cancels the other requests for a block that just arrived.
    fn cancel_others(&mut self, from: PeerKey, piece: u32, block: u32) {
        let r = self.block_ref(piece, block);
        let mut cancelled = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            if *k != from && p.take_request(piece, block, u64::from(r.len)).is_some() {
                cancelled.push(*k);
            }
        }
        for k in cancelled {
            self.send(k, Message::Cancel(r));
            self.mark_dirty(k);
        }
    }

    /// All blocks of partial `i` are in: hand the piece to the verifier.
    fn finish_partial(&mut self, i: usize) {
        let pt = self.partials.swap_remove(i);
        if let Some(moved) = self.partials.get(i) {
            self.state[moved.piece as usize] = PieceState::Partial(i as u32);
        }
        let mut from: Vec<PeerKey> = pt
            .blocks
            .iter()
            .filter_map(|b| match b {
                BlockState::Received(k) => Some(*k),
                _ => None,
            })
            .collect();
        from.sort_unstable();
        from.dedup();
        self.state[pt.piece as usize] = PieceState::Verifying;
        self.verifying.insert(pt.piece, from);
        self.actions
            .push_back(Action::VerifyPiece { piece: pt.piece });
    }

    /// `peer` will not serve `block`. Counts towards dropping it, and the
    /// piece is not asked of it again until it unchokes us anew.
    pub fn handle_reject(
        &mut self,
        now: Time,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        self.peer_mut(peer)?;
        let Some(b) = self.block_index(block) else {
            return Ok(());
        };
        let max = self.cfg.max_rejects_in_row;
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        if p.take_request(block.piece, b, u64::from(block.len))
            .is_none()
        {
            return Ok(());
        }
        p.rejects_in_row += 1;
        p.remember_refusal(block.piece);
        let too_many = p.rejects_in_row >= max;
        self.score_mut(peer).rejects += 1;
        self.release_block(block.piece, b);
        if let PieceState::Partial(i) = self.state[block.piece as usize] {
            let pt = &mut self.partials[i as usize];
            if pt.owner == Some(peer) {
                pt.owner = None;
                pt.far_owner = false;
            }
        }
        // It no longer vouches for its pieces nearby (`near.rs`).
        self.recount_near(peer);
        self.fill_all = true;
        if too_many {
            self.drop_peer(peer, DisconnectReason::Rejecting, true);
        }
        self.flush(now);
        Ok(())
    }

    /// Our request for `block` from `peer` failed in transport (stream
    /// reset, timeout). The block returns to the pool without blame.
    pub fn handle_block_failed(
        &mut self,
        now: Time,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let idx = self.block_index(block);
        let p = self.peer_mut(peer)?;
        let Some(idx) = idx else {
            return Ok(());
        };
        if p.take_request(block.piece, idx, u64::from(block.len))
            .is_some()
        {
            self.release_block(block.piece, idx);
            self.fill_all = true;
        }
        self.flush(now);
        Ok(())
    }

    /// The caller hashed `piece`: `ok` if it matched. A failure blames the
    /// peers that supplied it (see the module comment of [`crate::swarm`]).
    pub fn handle_piece_verified(
        &mut self,
        now: Time,
        piece: u32,
        ok: bool,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        self.expect_state(piece, PieceState::Verifying, "verification")?;
        let from = self.verifying.remove(&piece).unwrap_or_default();
        if ok {
            self.state[piece as usize] = PieceState::Storing;
            self.solo.remove(piece);
        } else {
            self.stats.hash_failures += 1;
            if from.len() > 1 {
                self.solo.insert(piece);
            }
            self.reopen(piece);
            self.blame(&from);
        }
        self.flush(now);
        Ok(())
    }

    /// The caller wrote `piece` durably: it is ours now, and announced.
    pub fn handle_piece_stored(&mut self, now: Time, piece: u32) -> Result<(), SwarmError> {
        self.touch(now);
        self.expect_state(piece, PieceState::Storing, "storage")?;
        self.state[piece as usize] = PieceState::Have;
        self.have.insert(piece);
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            // Announced even to peers that have it: they need our full
            // picture to notice when both sides are complete.
            if p.has.contains(piece) {
                p.interesting -= 1;
                self.update_interest(k);
            }
            self.send(k, Message::Have(piece));
        }
        if self.have.is_full() && !self.completed {
            self.completed = true;
            self.actions.push_back(Action::Completed);
            if self.cfg.drop_seeds_when_complete {
                let seeds: Vec<PeerKey> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.has.is_full())
                    .map(|(k, _)| *k)
                    .collect();
                for k in seeds {
                    self.drop_peer(k, DisconnectReason::NotUseful, false);
                }
            }
            // Reciprocation no longer applies; re-plan slots as a seed.
            self.rechoke_needed = true;
        }
        self.flush(now);
        Ok(())
    }

    /// The caller could not write `piece`: fetch it again.
    pub fn handle_piece_store_failed(&mut self, now: Time, piece: u32) -> Result<(), SwarmError> {
        self.touch(now);
        self.expect_state(piece, PieceState::Storing, "storage")?;
        self.reopen(piece);
        self.flush(now);
        Ok(())
    }

    fn expect_state(
        &self,
        piece: u32,
        want: PieceState,
        expected: &'static str,
    ) -> Result<(), SwarmError> {
        match self.state.get(piece as usize) {
            None => Err(SwarmError::PieceOutOfRange(piece)),
            Some(s) if *s == want => Ok(()),
            Some(_) => Err(SwarmError::UnexpectedPiece { piece, expected }),
        }
    }

    /// Puts a piece back among the not-yet-started ones.
    fn reopen(&mut self, piece: u32) {
        self.state[piece as usize] = PieceState::Missing;
        self.ranking.insert(piece, self.avail[piece as usize]);
        self.unrequested += u64::from(self.blocks_in(piece));
        self.fill_all = true;
    }

    /// Blame for a failed piece supplied by `from`.
    fn blame(&mut self, from: &[PeerKey]) {
        if from.is_empty() {
            return;
        }
        let share = 1.0 / from.len() as f32;
        let (drop_at, ban_at) = (self.cfg.drop_bad_pieces, self.cfg.ban_bad_pieces);
        for &k in from {
            let s = self.score_mut(k);
            s.bad_pieces += share;
            let blame = s.bad_pieces;
            if blame >= ban_at {
                self.drop_peer(k, DisconnectReason::BadData, false);
                self.ban(k);
            } else if from.len() == 1 || blame >= drop_at {
                self.drop_peer(k, DisconnectReason::BadData, false);
            }
        }
    }

    /// In endgame, snubs the peers that lag (see the module comment),
    /// without blame, and lets the others take their blocks too.
    pub(super) fn check_endgame_lag(&mut self, now: Time) {
        if !self.in_endgame() {
            return;
        }
        let tau = self.cfg.rate_window;
        // Each rate as of its peer's last progress: in endgame most peers
        // have nothing left to send, and rates read now would decay with
        // that idleness and stretch the bound without end.
        let best = self
            .peers
            .values()
            .map(|p| p.down.get(p.progress_at, tau))
            .fold(0.0, f64::max);
        let lagging: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.requests.is_empty() && !p.snubbed)
            .filter(|(_, p)| now.saturating_since(p.progress_at) > self.endgame_lag(p, best))
            .map(|(k, _)| *k)
            .collect();
        for k in lagging {
            if let Some(p) = self.peers.get_mut(&k) {
                p.snubbed = true;
                self.fill_all = true;
            }
        }
    }

    /// How long `p` may sit on our requests in endgame: `stall_factor`
    /// times what one block takes over its round trip at the `best` rate
    /// any peer delivered at. Not its own rate: a slow peer is exactly
    /// what endgame should not wait on. Never longer than the stall
    /// timeout's floor; with no rate to judge by, that floor.
    fn endgame_lag(&self, p: &Peer, best: f64) -> Duration {
        let floor = self.cfg.min_stall_timeout;
        if best <= 0.0 {
            return floor;
        }
        let rtt = p.rtt.get().unwrap_or_default().as_secs_f64();
        let secs = self.cfg.stall_factor * (rtt + f64::from(self.cfg.block_size) / best);
        Duration::from_secs_f64(secs.min(floor.as_secs_f64()))
    }

    /// Cancels the requests of peers that sat on them past their stall
    /// timeout; snubs them, and drops repeat offenders.
    pub(super) fn check_stalls(&mut self, now: Time) {
        let stalled: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.requests.is_empty())
            .map(|(k, _)| *k)
            .filter(|k| {
                let p = &self.peers[k];
                now.saturating_since(p.progress_at) > self.stall_timeout(now, *k)
            })
            .collect();
        for k in stalled {
            self.drop_requests(k, true);
            let max = self.cfg.max_stalls;
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            p.stalls += 1;
            p.snubbed = true;
            let out = p.stalls >= max;
            self.score_mut(k).stalls += 1;
            if out {
                self.drop_peer(k, DisconnectReason::Stalled, true);
            }
        }
    }
}
