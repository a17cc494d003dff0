//! The swarm state machine: one per torrent, sans-IO, quinn-style.
//!
//! The daemon drives it from a tokio actor over QUIC and the simulator
//! drives the very same code over thousands of simulated nodes. Inputs are
//! `handle_*(now, ..)` calls, [`Swarm::poll_action`] yields what to do and
//! [`Swarm::poll_timeout`] when to call [`Swarm::handle_timeout`]. Inputs
//! and actions are semantic ([`Message`], [`Action`]); a mapping layer
//! translates them to the wire protocol. Block data never passes through
//! here: the caller buffers it, hashes it when asked ([`Action::VerifyPiece`])
//! and writes it; the swarm only tracks which bytes are where.
//!
//! # Policies
//!
//! **Piece choice.** Pieces we still need, not yet started, sit in a
//! ranking (`ranking.rs`) bucketed by availability (how many connected peers have
//! them; peers with everything are counted apart because they do not change
//! the order). For a peer with free pipeline room we take, in order:
//! 1. an open block of a piece this peer is already fetching for us
//!    (pieces have an owner, so one piece usually comes from one peer: it
//!    completes at that peer's pace and a bad piece has one culprit);
//! 2. an open block of an orphaned partial piece (its owner choked us,
//!    stalled or left), which the peer adopts: partial pieces are finished
//!    before new ones are started;
//! 3. a new piece: the rarest one the peer has, ties broken at random from
//!    the seed; while we hold fewer than `random_first_pieces`, a uniformly
//!    random one instead, so a newcomer soon has something to trade;
//! 4. an open block of a piece another peer owns;
//! 5. in **endgame** (every missing block is requested), a block already
//!    requested from someone else, fewest requesters first, up to
//!    `endgame_max_requesters`; when a copy arrives the others are
//!    cancelled.
//!
//! **Locality** (`near.rs`). A peer whose path round trip (reported by
//! the transport, [`Swarm::handle_path_rtt`]) is at least `far_rtt` is
//! *far*, in another data centre. A far peer is asked only for pieces no
//! near peer that serves us has, at most `far_partials` of them at a
//! time; a near peer that gets a piece a far one is fetching for us takes
//! over its remaining blocks; and between choke rounds a leecher gives a
//! free slot to one far peer at most. The link between sites then
//! carries far fewer copies of what a site could trade among itself.
//!
//! **Pipeline.** Each unchoking peer gets `pipeline_factor × rate × rtt`
//! bytes outstanding, clamped to `min_queue_blocks..=max_queue_blocks`
//! blocks: the bandwidth-delay product with headroom. The rate is an
//! exponentially decaying estimate of bytes received from the peer, the
//! round trip the smallest request-to-block latency seen (see `rate.rs` for
//! why the minimum: queueing must not feed back into the pipeline size).
//!
//! **Choking.** At most `unchoke_slots + optimistic_slots` peers are
//! unchoked, and only peers that want something from us. A leecher fills
//! the regular slots with the peers that upload to it fastest, every
//! `choke_interval`, and one random other peer (new peers weighted three
//! times) rotated every `optimistic_interval`, and between rounds, once
//! its holder has had a piece's worth from us, given to a peer we have
//! never uploaded to if one waits. A seed has nobody to
//! reciprocate with: each round it unchokes the peers furthest behind
//! (fewest pieces, ties at random). That rotates the slots as peers catch
//! up and minimises when the *last* peer finishes, which is what a fleet
//! rollout waits for; in simulation it beat least-served-first
//! round-robin ([`SeedChoking::LeastServed`], still available) by several
//! percent of the fluid bound when seeds are fast. A fleet of trusted
//! nodes can have its leechers rank the same way
//! ([`LeecherChoking::FurthestBehind`]): nobody there free rides, and a
//! late joiner, with nothing yet to reciprocate with, gets regular slots
//! instead of only the optimistic share.
//! Free slots are filled at once when a peer becomes interested, not at
//! the next round. A slot is *thin* when its peer, after holding it for a
//! rate window, takes under a quarter of what our fastest slot takes (now,
//! or lately, fading over a choke interval): its path or its downlink is
//! the limit (a far data centre, a slower machine), so our uplink has
//! room, and each thin slot opens one more (at most `max_thin_slots`; not
//! while spreading). The extra slots close at the next round once the
//! thin ones are gone.
//!
//! **Spreading distinct pieces (seed).** With one seed the fluid lower
//! bound is `F / u_seed`: it is only reached if the seed sends every piece
//! once before it sends any piece twice, and leechers trade the rest. An
//! *initial* seed with `spread_distinct` therefore advertises nothing
//! (`HaveNone`), courts up to `spread_slots` peers (unchoking them although
//! they cannot be interested yet) and reveals pieces to them one `Have` at
//! a time, keeping `spread_ahead_bytes` of revealed-but-unrequested data
//! ahead of each. The rule for each reveal:
//! 1. only a piece nobody has announced and nobody is firmly fetching from
//!    us (a reveal is *firm* once its holder has asked us for any block; a
//!    masking seed never does, so its claims stay *soft* and hold nothing
//!    back);
//! 2. among those, fewest soft claims, then fewest times revealed, ties at
//!    random;
//! 3. if no such piece is left, reveal nothing: every piece has landed or
//!    is on its way, and a second copy would only slow the first ones down;
//!    except to a peer whose slot is not thin, a piece whose one copy on
//!    its way goes to a thin peer (held up by its own path, so a second
//!    copy slows nobody, and the swarm need not wait on that path);
//! 4. once every piece has been announced by some peer, unmask (announce
//!    everything to everyone) and serve rarest-first requests like any
//!    seed.
//!
//! While spreading the seed keeps whom it unchokes (choking a peer halfway
//! through a piece would strand it); peers leave the set only by losing
//! interest, leaving, asking for nothing for `spread_idle_timeout`
//! (another seed, say), which also returns their unrequested reveals, or
//! stalling in their slot (below), which returns all of them. A node that
//! becomes a seed by downloading never masks: its peers already know what
//! it has.
//!
//! **Silent peers.** A peer that crashed stays connected until the
//! transport notices, and meanwhile must not hold anyone up. A seed takes
//! its slot back from a peer that wants something but has neither asked
//! nor taken a byte for `slot_stall_timeout` (longer at slow rates), with
//! every reveal it held, and gives it no slot until it sends a request or
//! a `Have`, or the next choke round comes (`choke.rs`). In endgame, a
//! peer sitting on our requests for `stall_factor` × (round trip + a
//! block at the best peer's rate) is snubbed and its requests stop
//! counting towards the requester cap (`download.rs`).
//!
//! **Trust.** A piece that fails its check blames the peers that supplied
//! its blocks: a sole supplier gets 1 and is disconnected; `n` suppliers
//! get `1/n` each and the piece is re-fetched from a single peer, so a
//! second failure has one culprit. Blame reaching `drop_bad_pieces`
//! disconnects, reaching `ban_bad_pieces` bans. Requests unanswered past a
//! stall timeout (a multiple of round trip plus drain time at the peer's
//! rate) are cancelled and re-requested elsewhere; the peer is snubbed (one
//! request at a time) and dropped after `max_stalls`. A peer rejecting
//! `max_rejects_in_row` requests in a row is dropped. After `ban_drops`
//! such drops (protocol violations count too) it is banned. Scores live per [`PeerKey`] for the swarm's
//! life.
//!
//! **Timers.** Stall checks, choke rounds, optimistic rotation and the
//! spreading idle check run on a fixed tick (`tick_interval`), so
//! [`Swarm::poll_timeout`] is O(1) and the schedule does not depend on
//! traffic. Keep-alives belong to the wire layer (it sends one when a
//! connection has been quiet), not here.
//!
//! # Invariants
//! - A piece is "have" (served, announced, counted) only after
//!   [`Swarm::handle_piece_stored`]; verified-but-unstored pieces are not.
//! - `unrequested` equals the blocks of unstarted pieces plus the open
//!   blocks of partial pieces; endgame is exactly `unrequested == 0`.
//! - Availability counts each connected non-seed peer once per announced
//!   piece; a piece's ranking bucket is always its availability.
//! - No clock, no OS randomness, no hash-map iteration: the same seed and
//!   inputs give the same actions.
//! - Unchoked peers never exceed `unchoke_slots + optimistic_slots +
//!   max_thin_slots` (`spread_slots` while spreading).
//!
//! # Measured
//! In the in-test network (`tests/sim.rs`, equal 12.5 MB/s uploads, 4×
//! downloads, 5 ms links) one seed and eight leechers move 1000 pieces in
//! 1.01× the fluid bound, the seed sending 1.01 copies;
//! `tests/scenarios.rs` prints more cases.

mod bitset;
mod choke;
mod config;
mod conn;
mod download;
mod near;
mod peer;
mod peermap;
mod picker;
mod ranking;
mod rate;
mod spelling;
mod spread;
mod types;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use config::{LeecherChoking, SeedChoking, SwarmConfig};
pub use types::{
    Action, BlockOutcome, BlockRef, DisconnectReason, Geometry, GeometryError, Message, PeerInfo,
    PeerKey, PeerScore, SwarmError, SwarmStats, Time, Violation,
};

use crate::rng::Rng;
use bitset::Bitset;
use near::Near;
use peermap::PeerMap;
use ranking::Ranking;
use spread::Spread;

/// Where a piece is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceState {
    /// Not started; a member of the ranking.
    Missing,
    /// Being downloaded: index into `partials`.
    Partial(u32),
    /// Every block is in; the caller is hashing it.
    Verifying,
    /// Verified; the caller is writing it.
    Storing,
    /// Stored durably.
    Have,
}

/// One block of a partial piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Open,
    /// Requested from this many peers.
    Requested(u8),
    /// Arrived from this peer (kept for blame).
    Received(PeerKey),
}

/// A piece being downloaded.
#[derive(Debug, Clone)]
struct Partial {
    piece: u32,
    blocks: Vec<BlockState>,
    open: u32,
    received: u32,
    /// The peer fetching it; `None` when orphaned.
    owner: Option<PeerKey>,
    /// The owner is far: a near peer may adopt the piece (`near.rs`).
    far_owner: bool,
    /// Re-fetch after a shared failure: only the owner may supply blocks.
    solo: bool,
}

/// Timer state, set by the first input (construction takes no `now`).
#[derive(Debug, Clone, Copy)]
struct Clocks {
    next_tick: Time,
    next_choke: Time,
    next_optimistic: Time,
}

/// The swarm state machine for one torrent. See the module comment.
///
/// `repr(C)` with the fields every input touches first: the simulator
/// (and a busy daemon) feeds each input to a swarm whose memory is cold,
/// so every distinct cache line of this struct an input reads is a miss.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Swarm {
    clocks: Option<Clocks>,
    actions: VecDeque<Action>,
    peers: PeerMap,
    geo: Geometry,
    have: Bitset,
    dirty: Vec<PeerKey>,
    unrequested: u64,
    stats: SwarmStats,
    /// Connected peers counted as holding everything.
    seeds: u32,
    fill_all: bool,
    unchoke_needed: bool,
    rechoke_needed: bool,
    /// Reveals were taken back: offer them to every courted peer.
    reveal_all: bool,
    completed: bool,
    /// Boxed: only an initial seed has one, and a pointer keeps the hot
    /// fields above within fewer cache lines.
    spread: Option<Box<Spread>>,
    state: Vec<PieceState>,
    /// Connected non-seed peers that announced each piece.
    avail: Vec<u32>,
    /// What near peers that unchoke us hold (`near.rs`).
    near: Near,
    ranking: Ranking,
    partials: Vec<Partial>,
    /// Pieces being hashed, with the distinct peers that supplied them.
    verifying: BTreeMap<u32, Vec<PeerKey>>,
    /// Pieces to re-fetch from a single peer.
    solo: Bitset,
    optimistic: Vec<PeerKey>,
    /// Extra slots opened for thin ones (`SwarmConfig::thin_slot_ratio`),
    /// as of the last tick.
    thin_slots: usize,
    /// The fastest slot lately, bytes/s, and when it was last updated
    /// (see `count_thin_slots`).
    slot_peak: (f64, Time),
    scores: BTreeMap<PeerKey, PeerScore>,
    rng: Rng,
    cfg: SwarmConfig,
}

impl Swarm {
    /// A swarm for a torrent of shape `geometry`, holding the pieces set in
    /// `have` (BitTorrent bit order, exactly `ceil(pieces / 8)` bytes),
    /// tuned by `config`, with all its random choices drawn from `seed`.
    pub fn new(
        geometry: Geometry,
        have: &[u8],
        config: SwarmConfig,
        seed: u64,
    ) -> Result<Swarm, SwarmError> {
        config.validate()?;
        let n = geometry.piece_count();
        let have = Bitset::from_bt_bytes(n, have).ok_or(SwarmError::BadBitfield { pieces: n })?;
        let mut s = Swarm {
            geo: geometry,
            rng: Rng::new(seed),
            state: vec![PieceState::Missing; n as usize],
            avail: vec![0; n as usize],
            near: Near::new(n),
            seeds: 0,
            ranking: Ranking::new(n),
            partials: Vec::new(),
            verifying: BTreeMap::new(),
            solo: Bitset::new(n),
            unrequested: 0,
            peers: PeerMap::default(),
            scores: BTreeMap::new(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            fill_all: false,
            unchoke_needed: false,
            rechoke_needed: false,
            reveal_all: false,
            optimistic: Vec::new(),
            thin_slots: 0,
            slot_peak: (0.0, Time::ZERO),
            spread: None,
            clocks: None,
            stats: SwarmStats::default(),
            completed: false,
            have,
            cfg: config,
        };
        for p in 0..n {
            if s.have.contains(p) {
                s.state[p as usize] = PieceState::Have;
            } else {
                s.ranking.insert(p, 0);
                s.unrequested += u64::from(s.blocks_in(p));
            }
        }
        if s.have.is_full() && s.cfg.spread_distinct {
            s.spread = Some(Box::new(Spread::new(n)));
        }
        s.stats.have_pieces = s.have.count();
        Ok(s)
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Swarm::handle_timeout`] next; `None` before the first
    /// input (the machine learns the time from its inputs) and while no peer
    /// is connected (nothing is time-driven then; an idle swarm costs
    /// nothing). The time may be in the past after such a pause.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.peers.is_empty() {
            return None;
        }
        self.clocks.map(|c| c.next_tick)
    }

    /// Runs whatever timers are due: stall checks, choke rounds and the
    /// optimistic rotation.
    pub fn handle_timeout(&mut self, now: Time) {
        self.touch(now);
        let Some(mut c) = self.clocks else { return };
        if now < c.next_tick {
            return;
        }
        c.next_tick = c.next_tick + self.cfg.tick_interval;
        if c.next_tick <= now {
            c.next_tick = now + self.cfg.tick_interval;
        }
        let round = now >= c.next_choke;
        if round {
            c.next_choke = now + self.cfg.choke_interval;
            if now >= c.next_optimistic {
                c.next_optimistic = now + self.cfg.optimistic_interval;
                self.optimistic.clear();
            }
        }
        self.clocks = Some(c);
        self.check_stalls(now);
        self.check_endgame_lag(now);
        self.spread_check_idle(now);
        self.check_slot_stalls(now);
        self.count_thin_slots(now);
        if round {
            self.rechoke(now);
        } else {
            self.rotate_spent_optimistic(now);
        }
        self.flush(now);
    }

    /// Whether every piece is stored.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Whether we are a seed still spreading distinct pieces (masking).
    pub fn is_spreading(&self) -> bool {
        self.spread.is_some()
    }

    /// Pieces stored, as BitTorrent bit order bytes.
    pub fn have_bitfield(&self) -> Vec<u8> {
        self.have.to_bt_bytes()
    }

    /// Whether piece `piece` is stored.
    pub fn has_piece(&self, piece: u32) -> bool {
        self.have.contains(piece)
    }

    /// The torrent's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SwarmStats {
        let mut s = self.stats;
        s.have_pieces = self.have.count();
        s.peers = self.peers.len() as u32;
        s.unchoked = self.unchoked() as u32;
        s.endgame = self.in_endgame();
        s
    }

    /// Connected peers, in key order.
    pub fn peers(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.peers.keys().copied()
    }

    /// Whether we currently unchoke `peer`.
    pub fn is_unchoked(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| !p.am_choking)
    }

    /// A snapshot of the connection to `peer` as of `now`.
    pub fn peer_info(&self, now: Time, peer: PeerKey) -> Option<PeerInfo> {
        let tau = self.cfg.rate_window;
        self.peers.get(&peer).map(|p| PeerInfo {
            dialed: p.dialed,
            am_choking: p.am_choking,
            am_interested: p.am_interested,
            peer_choking: p.peer_choking,
            peer_interested: p.peer_interested,
            pieces: p.has.count(),
            outstanding_requests: p.requests.len() as u32,
            download_rate: p.down.get(now, tau),
            upload_rate: p.up.get(now, tau),
            min_rtt: p.rtt.get(),
            path_rtt: p.path_rtt,
            far: p.far,
            downloaded: p.down.total(),
            uploaded: p.up.total(),
        })
    }

    /// The trust record of `peer`, if it ever lost any (or connected).
    pub fn peer_score(&self, peer: PeerKey) -> Option<PeerScore> {
        self.scores.get(&peer).copied()
    }

    /// Whether `peer` is banned from this swarm.
    pub fn is_banned(&self, peer: PeerKey) -> bool {
        self.scores.get(&peer).is_some_and(|s| s.banned)
    }

    /// Starts the timers on the first input.
    fn touch(&mut self, now: Time) {
        if self.clocks.is_none() {
            self.clocks = Some(Clocks {
                next_tick: now + self.cfg.tick_interval,
                next_choke: now + self.cfg.choke_interval,
                next_optimistic: now + self.cfg.optimistic_interval,
            });
        }
    }

    /// Work deferred to the end of every input: fill free unchoke slots,
    /// then refill the pipelines of peers whose situation changed. Filling
    /// can start the endgame, which makes every peer worth refilling, hence
    /// the further passes (bounded; leftovers wait for the next input).
    fn flush(&mut self, now: Time) {
        if std::mem::take(&mut self.rechoke_needed) {
            self.rechoke(now);
        }
        if self.unchoke_needed {
            self.unchoke_needed = false;
            self.fill_unchoke_slots(now);
        }
        self.wake_starved();
        if std::mem::take(&mut self.reveal_all) {
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for k in keys {
                self.spread_top_up(k);
            }
        }
        // A pass refills `dirty[start..end]`; what the pass marks is
        // appended and waits for the next one. The list is walked in place
        // rather than taken, so that its buffer is not allocated again on
        // every input.
        let mut start = 0;
        for _ in 0..3 {
            if std::mem::take(&mut self.fill_all) {
                self.dirty.clear();
                self.dirty.extend(self.peers.keys().copied());
                start = 0;
            } else if start == self.dirty.len() {
                break;
            }
            let end = self.dirty.len();
            for i in start..end {
                let k = self.dirty[i];
                if let Some(p) = self.peers.get_mut(&k) {
                    p.dirty = false;
                }
                self.fill(now, k);
            }
            start = end;
        }
        self.dirty.drain(..start);
    }

    /// Queues a pipeline refill for `key` at the end of this input.
    fn mark_dirty(&mut self, key: PeerKey) {
        if let Some(p) = self.peers.get_mut(&key) {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn send(&mut self, peer: PeerKey, message: Message) {
        self.actions.push_back(Action::Send { peer, message });
    }

    fn in_endgame(&self) -> bool {
        self.unrequested == 0 && !self.have.is_full()
    }

    fn blocks_in(&self, piece: u32) -> u32 {
        self.geo.piece_size(piece).div_ceil(self.cfg.block_size)
    }

    fn block_ref(&self, piece: u32, block: u32) -> BlockRef {
        let offset = block * self.cfg.block_size;
        BlockRef {
            piece,
            offset,
            len: (self.geo.piece_size(piece) - offset).min(self.cfg.block_size),
        }
    }

    /// The block index `r` names in our own block grid, if it is one.
    fn block_index(&self, r: BlockRef) -> Option<u32> {
        if r.piece >= self.geo.piece_count() || !r.offset.is_multiple_of(self.cfg.block_size) {
            return None;
        }
        let b = r.offset / self.cfg.block_size;
        (b < self.blocks_in(r.piece) && self.block_ref(r.piece, b) == r).then_some(b)
    }

    fn score_mut(&mut self, peer: PeerKey) -> &mut PeerScore {
        self.scores.entry(peer).or_default()
    }
}
