//! Choosing what to request from whom, and keeping each peer's pipeline
//! at its bandwidth-delay product. The order of preference is in the
//! module comment of [`crate::swarm`].
//!
//! Invariants this module keeps:
//! - A block is `Requested(n)` exactly when `n` peers hold a request for
//!   it in their `requests` queue; `Open` when none do.
//! - `Partial::open` counts `Open` blocks and `Swarm::unrequested` moves by
//!   one with every `Open` block that becomes requested or received, and
//!   back.
//! - A peer is asked only for pieces it announced, only while it unchokes
//!   us, and never twice for the same block.

use std::time::Duration;

use super::peer::Outstanding;
use super::types::{Message, PeerKey, Time};
use super::{BlockState, Partial, PieceState, Swarm};

impl Swarm {
    /// Tops up `key`'s pipeline to its target.
    pub(super) fn fill(&mut self, now: Time, key: PeerKey) {
        // Most refills are for peers that choke us or have nothing we
        // want: settle those before the target, which costs an `exp`.
        if self
            .peers
            .get(&key)
            .is_none_or(|p| p.peer_choking || !p.am_interested)
        {
            return;
        }
        let target = self.pipeline_target(now, key);
        // Requesting changes neither choke nor interest: only the bytes
        // outstanding end the loop.
        loop {
            let Some(p) = self.peers.get(&key) else {
                return;
            };
            if p.outstanding_bytes >= target {
                return;
            }
            let Some((piece, block)) = self.pick_block(key) else {
                return;
            };
            self.send_request(now, key, piece, block);
        }
    }

    /// Bytes to keep outstanding at `key`: see the module comment.
    pub(super) fn pipeline_target(&self, now: Time, key: PeerKey) -> u64 {
        let bs = u64::from(self.cfg.block_size);
        let Some(p) = self.peers.get(&key) else {
            return 0;
        };
        if p.snubbed {
            return bs;
        }
        let rate = p.down.get(now, self.cfg.rate_window);
        let bdp = p.rtt.get().map_or(0.0, |rtt| {
            rate * rtt.as_secs_f64() * self.cfg.pipeline_factor
        });
        let lo = u64::from(self.cfg.min_queue_blocks) * bs;
        let hi = u64::from(self.cfg.max_queue_blocks) * bs;
        (bdp as u64).clamp(lo, hi)
    }

    /// How long `key` may leave our requests unanswered before it counts
    /// as stalled: a multiple of (round trip + time to drain what we have
    /// outstanding there at its rate).
    pub(super) fn stall_timeout(&self, now: Time, key: PeerKey) -> Duration {
        let (lo, hi) = (self.cfg.min_stall_timeout, self.cfg.max_stall_timeout);
        let Some(p) = self.peers.get(&key) else {
            return hi;
        };
        let rate = p.down.get(now, self.cfg.rate_window);
        if rate <= 0.0 {
            return hi;
        }
        let rtt = p.rtt.get().unwrap_or(Duration::ZERO).as_secs_f64();
        let secs = self.cfg.stall_factor * (rtt + p.outstanding_bytes as f64 / rate);
        Duration::from_secs_f64(secs.min(hi.as_secs_f64())).clamp(lo, hi)
    }

    /// The next block to request from `key`, starting or adopting a piece
    /// if that is what the preference order says.
    fn pick_block(&mut self, key: PeerKey) -> Option<(u32, u32)> {
        let peer = self.peers.get(&key)?;
        // A far peer only for what no near peer gives us (`near.rs`).
        let (far, near) = (peer.far, &self.near);
        let mut own = None;
        let mut orphan: Option<(usize, u32)> = None;
        let mut shared: Option<(usize, u32)> = None;
        for (i, pt) in self.partials.iter().enumerate() {
            if pt.open == 0 {
                continue;
            }
            if pt.owner == Some(key) {
                own = Some(i);
                break;
            }
            if !peer.has.contains(pt.piece) || peer.refuses(pt.piece) || (far && near.has(pt.piece))
            {
                continue;
            }
            let slot = match pt.owner {
                None => &mut orphan,
                // Crawling in over a far path while a near peer has it.
                Some(_) if pt.far_owner && !far && !pt.solo => &mut orphan,
                Some(_) if !pt.solo => &mut shared,
                Some(_) => continue,
            };
            // Most complete first: it is closest to being shareable.
            if slot.is_none_or(|(_, r)| pt.received > r) {
                *slot = Some((i, pt.received));
            }
        }
        if let Some(i) = own {
            return Some(self.take_open(i));
        }
        if far && !self.far_budget_left() {
            return None;
        }
        if let Some((i, _)) = orphan {
            self.partials[i].owner = Some(key);
            self.partials[i].far_owner = far;
            return Some(self.take_open(i));
        }
        if let Some(piece) = self.pick_new_piece(key) {
            let i = self.start_partial(piece, key);
            return Some(self.take_open(i));
        }
        if let Some((i, _)) = shared {
            return Some(self.take_open(i));
        }
        if self.unrequested == 0 {
            return self.pick_endgame(key);
        }
        None
    }

    /// The first open block of partial `i`.
    fn take_open(&self, i: usize) -> (u32, u32) {
        let pt = &self.partials[i];
        let b = pt
            .blocks
            .iter()
            .position(|b| *b == BlockState::Open)
            .unwrap_or(0);
        (pt.piece, b as u32)
    }

    /// A not-yet-started piece `key` has: random while we hold few pieces,
    /// otherwise the rarest, ties broken at random.
    fn pick_new_piece(&mut self, key: PeerKey) -> Option<u32> {
        let peer = self.peers.get(&key)?;
        let ranking = &self.ranking;
        let rng = &mut self.rng;
        let members = ranking.len();
        let (far, near) = (peer.far, &self.near);
        if members == 0 || (far && near.has_all()) {
            return None;
        }
        let held = self.have.count() + self.verifying.len() as u32;
        let random = held < self.cfg.random_first_pieces;
        let ok = |p: u32| peer.has.contains(p) && !peer.refuses(p) && !(far && near.has(p));
        if random && peer.has.count() as usize >= members {
            // Dense: random probes find a candidate almost at once.
            for _ in 0..16 {
                let p = ranking.at(rng.below(members as u64) as usize);
                if ok(p) {
                    return Some(p);
                }
            }
        }
        if peer.has.count() as usize <= members || random {
            // Sparse (or random after failed probes): walk the peer's pieces,
            // keeping the lowest level with reservoir-sampled ties.
            let mut best: Option<(u32, u32)> = None;
            let mut ties = 0u64;
            for p in peer.has.iter() {
                if !ranking.contains(p) || peer.refuses(p) || (far && near.has(p)) {
                    continue;
                }
                let level = if random { 0 } else { self.avail[p as usize] };
                match best {
                    Some((_, l)) if level > l => continue,
                    Some((_, l)) if level == l => {
                        ties += 1;
                        if rng.below(ties) == 0 {
                            best = Some((p, level));
                        }
                    }
                    _ => {
                        best = Some((p, level));
                        ties = 1;
                    }
                }
            }
            return best.map(|(p, _)| p);
        }
        // Dense: the first bucket holding a candidate, scanned from a random
        // offset so ties go to a random member.
        for l in 0..ranking.levels() {
            let r = ranking.bucket(l);
            if r.is_empty() {
                continue;
            }
            let len = r.len();
            let start = rng.below(len as u64) as usize;
            for k in 0..len {
                let p = ranking.at(r.start + (start + k) % len);
                if ok(p) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Moves `piece` from the ranking into a new partial owned by `owner`.
    fn start_partial(&mut self, piece: u32, owner: PeerKey) -> usize {
        self.ranking.remove(piece, self.avail[piece as usize]);
        let n = self.blocks_in(piece);
        let i = self.partials.len();
        self.partials.push(Partial {
            piece,
            blocks: vec![BlockState::Open; n as usize],
            open: n,
            received: 0,
            owner: Some(owner),
            far_owner: self.peers.get(&owner).is_some_and(|p| p.far),
            solo: self.solo.contains(piece),
        });
        self.state[piece as usize] = PieceState::Partial(i as u32);
        i
    }

    /// Endgame: a block requested elsewhere but not from `key`, fewest
    /// requesters first. Requests held by snubbed peers (they sat on
    /// requests lately) do not count towards the cap, and snubbed peers
    /// get no duplicates: see the module comment of `download.rs`.
    fn pick_endgame(&self, key: PeerKey) -> Option<(u32, u32)> {
        let peer = self.peers.get(&key)?;
        if peer.snubbed {
            return None;
        }
        let stuck: Vec<(u32, u32)> = self
            .peers
            .values()
            .filter(|p| p.snubbed)
            .flat_map(|p| p.requests.iter().map(|r| (r.piece, r.block)))
            .collect();
        let mut best: Option<(u32, u32, u8)> = None;
        for pt in &self.partials {
            if !peer.has.contains(pt.piece)
                || (pt.solo && pt.owner != Some(key))
                || (peer.far && self.near.has(pt.piece))
            {
                continue;
            }
            for (b, st) in pt.blocks.iter().enumerate() {
                let BlockState::Requested(n) = *st else {
                    continue;
                };
                let b32 = b as u32;
                let n =
                    n.saturating_sub(stuck.iter().filter(|&&r| r == (pt.piece, b32)).count() as u8);
                if n >= self.cfg.endgame_max_requesters
                    || best.is_some_and(|(_, _, m)| m <= n)
                    || peer.has_requested(pt.piece, b as u32)
                {
                    continue;
                }
                best = Some((pt.piece, b as u32, n));
            }
        }
        best.map(|(p, b, _)| (p, b))
    }

    /// Records and sends a request for (piece, block) to `key`.
    fn send_request(&mut self, now: Time, key: PeerKey, piece: u32, block: u32) {
        let PieceState::Partial(i) = self.state[piece as usize] else {
            return;
        };
        let st = &mut self.partials[i as usize].blocks[block as usize];
        match *st {
            BlockState::Open => {
                *st = BlockState::Requested(1);
                self.partials[i as usize].open -= 1;
                self.unrequested -= 1;
                if self.unrequested == 0 {
                    // Endgame starts: every peer may now help.
                    self.fill_all = true;
                }
            }
            BlockState::Requested(n) => *st = BlockState::Requested(n + 1),
            BlockState::Received(_) => return,
        }
        let r = self.block_ref(piece, block);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.requests.is_empty() {
            p.progress_at = now;
        }
        p.requests.push_back(Outstanding {
            piece,
            block,
            sent: now,
        });
        p.outstanding_bytes += u64::from(r.len);
        p.down.start(now);
        self.send(key, Message::Request(r));
    }

    /// Forgets every request outstanding at `key` (sending `Cancel`s if
    /// `cancel`), returns their blocks to the pool and orphans the pieces
    /// it owned.
    pub(super) fn drop_requests(&mut self, key: PeerKey, cancel: bool) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let reqs = std::mem::take(&mut p.requests);
        p.outstanding_bytes = 0;
        for r in &reqs {
            self.release_block(r.piece, r.block);
            if cancel {
                let b = self.block_ref(r.piece, r.block);
                self.send(key, Message::Cancel(b));
            }
        }
        for pt in &mut self.partials {
            if pt.owner == Some(key) {
                pt.owner = None;
                pt.far_owner = false;
            }
        }
        if !reqs.is_empty() {
            self.fill_all = true;
        }
    }

    /// One request for (piece, block) is gone without the block.
    pub(super) fn release_block(&mut self, piece: u32, block: u32) {
        let PieceState::Partial(i) = self.state[piece as usize] else {
            return;
        };
        let pt = &mut self.partials[i as usize];
        let st = &mut pt.blocks[block as usize];
        match *st {
            BlockState::Requested(1) => {
                *st = BlockState::Open;
                pt.open += 1;
                self.unrequested += 1;
            }
            BlockState::Requested(n) => *st = BlockState::Requested(n - 1),
            _ => {}
        }
    }
}
