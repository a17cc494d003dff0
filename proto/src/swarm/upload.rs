//! The upload side's inputs: requests and cancels from peers, and the
//! bytes the caller reports sent.
//!
//! Invariants this module keeps:
//! - We serve only stored pieces, only to peers we unchoke, only ranges
//!   inside a piece and at most `max_request_len` long.
//! - A peer's served-but-unsent bytes never exceed `max_serving_bytes`;
//!   requests beyond are rejected, so a peer cannot queue unbounded work.
//! - Every request is answered by exactly one of `ServeBlock` or `Reject`
//!   (or ends the connection, when malformed).

use super::types::{Action, BlockRef, Message, PeerKey, SwarmError, Time, Violation};
use super::Swarm;

impl Swarm {
    /// `peer` asks for `block`.
    pub fn handle_request(
        &mut self,
        now: Time,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        self.peer_mut(peer)?;
        let size = self.geo.piece_size(block.piece);
        let valid = block.piece < self.geo.piece_count()
            && block.len > 0
            && block.len <= self.cfg.max_request_len
            && u64::from(block.offset) + u64::from(block.len) <= u64::from(size);
        if !valid {
            self.protocol_violation(peer, Violation::BadRequest)?;
            self.flush(now);
            return Ok(());
        }
        let len = u64::from(block.len);
        let have = self.have.contains(block.piece);
        let max = self.cfg.max_serving_bytes;
        let p = self.peer_mut(peer)?;
        p.last_asked = Some(now);
        p.inert = false;
        p.slot_stalled = false;
        if p.am_choking || !have || p.serving_bytes + len > max {
            self.send(peer, Message::Reject(block));
            return Ok(());
        }
        p.serving_bytes += len;
        p.up.start(now);
        self.actions.push_back(Action::ServeBlock { peer, block });
        self.spread_requested(peer, block.piece, len);
        self.spread_top_up(peer);
        self.flush(now);
        Ok(())
    }

    /// `peer` no longer wants `block`.
    pub fn handle_cancel(
        &mut self,
        now: Time,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<(), SwarmError> {
        self.touch(now);
        let p = self.peer_mut(peer)?;
        p.serving_bytes = p.serving_bytes.saturating_sub(u64::from(block.len));
        self.actions.push_back(Action::AbortServe { peer, block });
        Ok(())
    }

    /// Payload bytes of served blocks that went out to `peer`, for its
    /// upload rate and the serving budget. Report them as they are sent.
    pub fn handle_bytes_sent(&mut self, now: Time, peer: PeerKey, bytes: u64) {
        self.touch(now);
        let tau = self.cfg.rate_window;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.up.add(now, bytes, tau);
            p.serving_bytes = p.serving_bytes.saturating_sub(bytes);
            p.served_at = Some(now);
        }
        self.stats.uploaded += bytes;
    }
}
