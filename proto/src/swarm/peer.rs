//! Per-connection state: what the peer has, the four choke/interest flags,
//! our requests to it, its rate and round-trip estimates, and (while we
//! spread as a seed) which pieces we have revealed to it.
//!
//! Invariants this module keeps (the swarm maintains them through these
//! fields):
//! - `outstanding_bytes` is the sum of the lengths of `requests`.
//! - `interesting` is the number of pieces in `has` that we do not have.
//! - `told` is `Some` exactly while `masked`; every piece in `reveals` is
//!   in `told`.

use std::collections::VecDeque;
use std::time::Duration;

use super::bitset::Bitset;
use super::rate::{Rate, Rtt};
use super::types::Time;

/// One request of ours the peer has not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outstanding {
    pub(crate) piece: u32,
    pub(crate) block: u32,
    pub(crate) sent: Time,
}

/// A piece a spreading seed revealed to this peer that the peer has not
/// announced yet, and how many of its bytes it has requested from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reveal {
    pub(crate) piece: u32,
    pub(crate) requested: u64,
    /// Counted as a firm claim (the peer has asked us for blocks before).
    pub(crate) firm: bool,
}

/// A connected peer.
///
/// `repr(C)`, the fields the frequent inputs (blocks, bytes, haves,
/// requests, pipeline refills) read first, so that they touch few cache
/// lines of a peer that is usually cold.
#[derive(Debug, Clone)]
#[repr(C)]
pub(crate) struct Peer {
    pub(crate) down: Rate,
    pub(crate) rtt: Rtt,
    pub(crate) am_choking: bool,
    pub(crate) am_interested: bool,
    pub(crate) peer_choking: bool,
    pub(crate) peer_interested: bool,
    /// A bitfield, have-all or have-none arrived (only one may).
    pub(crate) got_bitfield: bool,
    /// Stalled recently: one request at a time until a block arrives.
    pub(crate) snubbed: bool,
    /// Queued for a pipeline refill at the end of the current input.
    pub(crate) dirty: bool,
    /// Announced everything up front: counted in `Swarm::seeds`, not in
    /// the per-piece availability.
    pub(crate) counted_as_seed: bool,
    /// Its round trip is at least `SwarmConfig::far_rtt` (`near.rs`).
    pub(crate) far: bool,
    /// Counted in `Swarm::near`: near, and unchoking us.
    pub(crate) near_counted: bool,
    /// Pieces the peer announced.
    pub(crate) has: Bitset,
    pub(crate) requests: VecDeque<Outstanding>,
    pub(crate) outstanding_bytes: u64,
    /// Last time the peer made progress on our requests (a block arrived,
    /// or requests started from none); stalls are measured from here.
    pub(crate) progress_at: Time,
    pub(crate) interesting: u32,
    pub(crate) rejects_in_row: u32,
    /// Pieces the peer rejected since it last unchoked us.
    pub(crate) refused: Vec<u32>,
    pub(crate) up: Rate,
    /// Bytes of blocks we asked the caller to serve and it has not
    /// reported sent.
    pub(crate) serving_bytes: u64,
    /// When it last asked us for a block.
    pub(crate) last_asked: Option<Time>,
    /// When served bytes last went out to it.
    pub(crate) served_at: Option<Time>,
    /// Held a seed's upload slot without asking for or taking anything
    /// (it crashed, say): no slot until it sends a request or a `Have`.
    pub(crate) slot_stalled: bool,
    /// Its slot is thin (see `SwarmConfig::thin_slot_ratio`), as of the
    /// last tick.
    pub(crate) thin: bool,
    /// Ignored our reveals (another seed, say): no more reveals, and no
    /// slot, until it asks for something.
    pub(crate) inert: bool,
    /// We advertised fewer pieces than we have (spreading seed).
    pub(crate) masked: bool,
    pub(crate) dialed: bool,
    pub(crate) stalls: u32,
    pub(crate) connected_at: Time,
    pub(crate) unchoked_at: Option<Time>,
    /// What we had uploaded to it when it took our optimistic slot.
    pub(crate) optimistic_base: u64,
    pub(crate) told: Option<Bitset>,
    pub(crate) reveals: Vec<Reveal>,
    /// The spreading epoch at which nothing was left to reveal to it.
    pub(crate) starved_at: Option<u64>,
    /// The smallest round trip the transport reported.
    pub(crate) path_rtt: Option<Duration>,
}

/// Most pieces remembered as refused per peer; older ones are forgotten.
pub(crate) const MAX_REFUSED: usize = 64;

impl Peer {
    pub(crate) fn new(pieces: u32, now: Time, dialed: bool) -> Peer {
        Peer {
            dialed,
            connected_at: now,
            has: Bitset::new(pieces),
            counted_as_seed: false,
            far: false,
            near_counted: false,
            path_rtt: None,
            got_bitfield: false,
            interesting: 0,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            requests: VecDeque::new(),
            outstanding_bytes: 0,
            progress_at: now,
            down: Rate::default(),
            up: Rate::default(),
            rtt: Rtt::default(),
            stalls: 0,
            snubbed: false,
            rejects_in_row: 0,
            refused: Vec::new(),
            serving_bytes: 0,
            unchoked_at: None,
            optimistic_base: 0,
            last_asked: None,
            served_at: None,
            slot_stalled: false,
            thin: false,
            inert: false,
            dirty: false,
            masked: false,
            told: None,
            reveals: Vec::new(),
            starved_at: None,
        }
    }

    /// Whether it should get an upload slot: it asked, or a spreading seed
    /// is courting it (it cannot ask a seed that advertised nothing).
    pub(crate) fn wants_upload(&self, spreading: bool) -> bool {
        self.peer_interested || (spreading && self.masked && !self.inert && !self.has.is_full())
    }

    /// Near, unchoking us and refusing nothing: its pieces count as ones
    /// we can get nearby (`near.rs`).
    pub(crate) fn serves_nearby(&self) -> bool {
        !self.far && !self.peer_choking && self.refused.is_empty()
    }

    pub(crate) fn refuses(&self, piece: u32) -> bool {
        self.refused.contains(&piece)
    }

    pub(crate) fn remember_refusal(&mut self, piece: u32) {
        if !self.refuses(piece) {
            if self.refused.len() >= MAX_REFUSED {
                self.refused.remove(0);
            }
            self.refused.push(piece);
        }
    }

    pub(crate) fn has_requested(&self, piece: u32, block: u32) -> bool {
        self.requests
            .iter()
            .any(|r| r.piece == piece && r.block == block)
    }

    /// Removes our request for (piece, block); returns when it was sent.
    pub(crate) fn take_request(&mut self, piece: u32, block: u32, len: u64) -> Option<Time> {
        let i = self
            .requests
            .iter()
            .position(|r| r.piece == piece && r.block == block)?;
        let r = self.requests.remove(i)?;
        self.outstanding_bytes -= len;
        Some(r.sent)
    }
}
