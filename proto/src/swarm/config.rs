//! Tunables of the swarm machine, with defaults chosen for data-centre
//! links (0.1–100 ms round trips, 1–100 Gbit/s) and 256 KiB–16 MiB pieces.
//!
//! Invariants this module keeps: [`SwarmConfig::validate`] accepts only
//! configurations under which every rule of the machine is well defined
//! (non-zero block size and intervals, min ≤ max everywhere).

use std::time::Duration;

use super::types::SwarmError;

/// How a seed picks whom to unchoke (see the module comment of
/// [`crate::swarm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedChoking {
    /// The peers with the fewest pieces first: minimises when the last peer
    /// finishes.
    FurthestBehind,
    /// The peers we have sent the fewest bytes first: per-byte fairness,
    /// round-robin in effect.
    LeastServed,
}

/// How a leecher picks whom to unchoke (see the module comment of
/// [`crate::swarm`]). Spelled `"reciprocate"` and `"furthest-behind"` in
/// the daemon's config and in scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeecherChoking {
    /// The peers that upload to us fastest first (BitTorrent's
    /// tit-for-tat): a peer that never uploads gets only the optimistic
    /// share, which keeps free riders out of a swarm that stock clients
    /// can join.
    Reciprocate,
    /// The peers with the fewest pieces first, as a seed ranks them: for
    /// a fleet whose every node is the operator's own, where nobody free
    /// rides and what counts is when the *last* node finishes. A node
    /// that joined late (after a crash, say) then gets regular slots at
    /// once instead of waiting for its neighbours to complete. Where
    /// downlinks are no wider than uplinks the simulator measured no
    /// gain: the last node about as late, the median 2-3% later
    /// (`benches/RESULTS.md`, "Stop 20").
    FurthestBehind,
}

/// Every knob of a [`crate::swarm::Swarm`].
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmConfig {
    /// Bytes per request. 256 KiB: large enough that per-request overhead
    /// vanishes on fast links, small enough that endgame duplicates are
    /// cheap. Must match what the wire protocol allows.
    pub block_size: u32,
    /// Largest request we serve, in bytes (stock clients ask for 16 KiB).
    pub max_request_len: u32,
    /// Regular unchoke slots: peers we upload to at once, chosen by how
    /// fast they upload to us (or, as a seed, round-robin). Six, not
    /// BitTorrent's four: with 4 + 1, a leecher that every other leecher
    /// had filled its slots without at the start got little but the
    /// seed's share until the first choke round, 10 s later. In the
    /// benchmark's swarm (1 seed + 8 nodes, 100 Mbit/s both ways) that
    /// left the last node 0.5-2.5 s behind the median in 6 of 18 runs
    /// (none in the 6 runs since with six); in
    /// the simulator the same swarm went from 1.47-1.84x the fluid bound
    /// to 1.03x, 16 and 32 such nodes from 1.23-1.30x to 1.15-1.25x, and
    /// two-regions from 3.99x to 3.62x, for about 1% more on the
    /// flash crowd (1.152x to 1.166x at 1,000 nodes), where uploads, not
    /// downloads, are the bottleneck and fewer, faster flows win.
    pub unchoke_slots: usize,
    /// Optimistic unchoke slots on top of the regular ones. A seed uses
    /// them as extra round-robin slots.
    pub optimistic_slots: usize,
    /// How a seed ranks peers for its slots.
    pub seed_choking: SeedChoking,
    /// How a leecher ranks peers for its regular slots.
    pub leecher_choking: LeecherChoking,
    /// How often the regular unchoke set is re-evaluated. 10 s, as in
    /// BitTorrent. Rounds every 2 s cut the tail of the simulator's
    /// symmetric fleet (its last node at 1.23-1.27x the fluid bound
    /// instead of 1.36-1.50x), but the median came 2-3% later in churn
    /// and between data centres, three of eight scenarios ended later at
    /// 5,000 nodes, and the daemon's benchmark gained nothing
    /// (`benches/RESULTS.md`, "Stop 20").
    pub choke_interval: Duration,
    /// How often the optimistic unchoke rotates.
    pub optimistic_interval: Duration,
    /// How often timers (stalls, choke rounds) are checked. Everything
    /// time-driven runs on this tick, so `poll_timeout` is O(1).
    pub tick_interval: Duration,
    /// Time constant of the per-peer rate estimators.
    pub rate_window: Duration,
    /// Pipeline size as a multiple of the bandwidth-delay product.
    pub pipeline_factor: f64,
    /// Fewest blocks kept outstanding per unchoking peer.
    pub min_queue_blocks: u32,
    /// Most blocks kept outstanding per unchoking peer.
    pub max_queue_blocks: u32,
    /// While we hold fewer pieces than this, new pieces are chosen at
    /// random rather than rarest-first, so we quickly hold something common
    /// enough to trade.
    pub random_first_pieces: u32,
    /// In endgame, the most peers one block is requested from at once.
    pub endgame_max_requesters: u8,
    /// Stall timeout = this factor × (round trip + time to drain what is
    /// outstanding at the peer's rate), clamped to the bounds below.
    pub stall_factor: f64,
    /// Lower bound of the stall timeout.
    pub min_stall_timeout: Duration,
    /// Upper bound of the stall timeout (also used before any estimate).
    pub max_stall_timeout: Duration,
    /// Stalls on one connection before it is dropped.
    pub max_stalls: u32,
    /// Rejections in a row (without a block in between) before a peer is
    /// dropped as useless.
    pub max_rejects_in_row: u32,
    /// Blame (see [`crate::swarm::PeerScore::bad_pieces`]) at which a peer
    /// is disconnected.
    pub drop_bad_pieces: f32,
    /// Blame at which a peer is banned.
    pub ban_bad_pieces: f32,
    /// Misbehaviour drops (stalls, rejects) of one peer before it is banned.
    pub ban_drops: u32,
    /// Most bytes of served-but-unsent blocks per peer; requests beyond are
    /// rejected so a peer cannot queue unbounded work.
    pub max_serving_bytes: u64,
    /// As an initial seed, advertise pieces gradually so that distinct
    /// pieces go out first (see the module comment).
    pub spread_distinct: bool,
    /// While spreading, bytes of revealed-but-unrequested pieces kept ahead
    /// of each unchoked peer (at least one piece).
    pub spread_ahead_bytes: u64,
    /// While spreading, an unchoked peer that asks for nothing this long
    /// loses its unrequested reveals and its slot.
    pub spread_idle_timeout: Duration,
    /// The least time a peer we unchoke, that wants something from us,
    /// may neither ask for anything nor take any of our bytes before it
    /// loses its slot (and, while we spread, its reveals): it crashed, say.
    pub slot_stall_timeout: Duration,
    /// While spreading, peers unchoked at once. More first-hop holders
    /// means more leechers with something exclusive to trade.
    pub spread_slots: usize,
    /// Disconnect peers that hold everything once we do too.
    pub drop_seeds_when_complete: bool,
    /// A slot is *thin* when its peer has held it for a `rate_window` and
    /// takes less than `1 / thin_slot_ratio` of what our fastest such slot
    /// takes (or, once we hold everything, of what the fastest connection
    /// lately carried to us): its path or its downlink is the limit, not
    /// our uplink, which therefore has room. Each thin slot opens one
    /// more, up to `max_thin_slots`; while spreading (whose slots are
    /// planned piece by piece) the count stays, but a piece only a thin
    /// peer is fetching may be revealed once more (see the module
    /// comment). Without this, a node whose slots went to peers behind a
    /// slow long-haul path (another data centre) or with a slow downlink
    /// used a few percent of its uplink until the next choke round, and a
    /// spreading seed sat idle while its last pieces crawled across such
    /// paths.
    pub thin_slot_ratio: f64,
    /// Most extra slots opened for thin ones; 0 turns thin slots off
    /// (no extra slots, no second copies).
    pub max_thin_slots: usize,
    /// A peer whose path round trip (as the transport reports it) is at
    /// least this is *far*: it is asked only for pieces no near peer that
    /// unchokes us has (`near.rs`), so one copy crosses to another data
    /// centre and that region trades it among itself. 10 ms: within a data
    /// centre round trips are well under 1 ms, between metro sites 1-5 ms,
    /// between regions 10-100 ms. `None` treats every peer as near.
    pub far_rtt: Option<Duration>,
    /// Most pieces fetched from far peers at once (counting those with
    /// blocks still to ask for). 2: behind a shared link between data
    /// centres one or two pieces at a time kept the link busy with pieces
    /// the region lacked; more only duplicated (`near.rs`). Raise it where
    /// each connection across is slow but the link is not shared (long
    /// lossy paths).
    pub far_partials: u32,
}

impl Default for SwarmConfig {
    /// 256 KiB blocks; 6 + 1 unchoke slots re-evaluated every 10 s with
    /// the optimistic slot rotating every 30 s; a 250 ms tick; 2 s rate
    /// window; pipelines of 2 × BDP within 2–256 blocks; 4 random first
    /// pieces; 2 requesters per endgame block; stall timeout 4 × (rtt +
    /// drain time) within 5–30 s, 3 stalls per connection; 16 rejects in a
    /// row; drop at blame 1, ban at blame 2 or after 3 drops; 128 MiB
    /// serving queue (the wire protocol's 512 queued 256 KiB requests); distinct-first spreading with 4 MiB ahead;
    /// up to 6 more slots for thin ones (under a quarter of the fastest);
    /// peers 10 ms or more away are far, two pieces from them at a time.
    fn default() -> SwarmConfig {
        SwarmConfig {
            block_size: 256 * 1024,
            max_request_len: 1 << 20,
            unchoke_slots: 6,
            optimistic_slots: 1,
            seed_choking: SeedChoking::FurthestBehind,
            leecher_choking: LeecherChoking::Reciprocate,
            choke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            tick_interval: Duration::from_millis(250),
            rate_window: Duration::from_secs(2),
            pipeline_factor: 2.0,
            min_queue_blocks: 2,
            max_queue_blocks: 256,
            random_first_pieces: 4,
            endgame_max_requesters: 2,
            stall_factor: 4.0,
            min_stall_timeout: Duration::from_secs(5),
            max_stall_timeout: Duration::from_secs(30),
            max_stalls: 3,
            max_rejects_in_row: 16,
            drop_bad_pieces: 1.0,
            ban_bad_pieces: 2.0,
            ban_drops: 3,
            max_serving_bytes: 128 << 20,
            spread_distinct: true,
            spread_ahead_bytes: 4 << 20,
            spread_idle_timeout: Duration::from_secs(15),
            slot_stall_timeout: Duration::from_secs(1),
            spread_slots: 16,
            drop_seeds_when_complete: true,
            thin_slot_ratio: 4.0,
            max_thin_slots: 6,
            far_rtt: Some(Duration::from_millis(10)),
            far_partials: 2,
        }
    }
}

impl SwarmConfig {
    /// Checks that every rule is well defined under this configuration.
    pub fn validate(&self) -> Result<(), SwarmError> {
        let bad = |what| Err(SwarmError::BadConfig(what));
        if self.block_size == 0 {
            return bad("block_size is zero");
        }
        if self.max_request_len == 0 {
            return bad("max_request_len is zero");
        }
        // Either way every request would be refused (by a peer like us, or
        // by the wire), and a swarm would wait for its deadline instead
        // of saying why.
        if self.block_size > self.max_request_len {
            return bad(
                "block_size exceeds max_request_len: peers like us would refuse every request",
            );
        }
        if self.block_size > crate::wire::MAX_BLOCK {
            return bad("block_size exceeds the wire protocol's largest block (1 MiB)");
        }
        if self.tick_interval.is_zero()
            || self.choke_interval.is_zero()
            || self.optimistic_interval.is_zero()
            || self.rate_window.is_zero()
        {
            return bad("an interval is zero");
        }
        if self.min_queue_blocks == 0 || self.min_queue_blocks > self.max_queue_blocks {
            return bad("need 1 <= min_queue_blocks <= max_queue_blocks");
        }
        if !(self.pipeline_factor.is_finite() && self.pipeline_factor > 0.0) {
            return bad("pipeline_factor must be positive");
        }
        if !(self.stall_factor.is_finite() && self.stall_factor > 0.0) {
            return bad("stall_factor must be positive");
        }
        if self.min_stall_timeout > self.max_stall_timeout || self.min_stall_timeout.is_zero() {
            return bad("need 0 < min_stall_timeout <= max_stall_timeout");
        }
        if self.endgame_max_requesters == 0 {
            return bad("endgame_max_requesters is zero");
        }
        if self.max_stalls == 0 || self.max_rejects_in_row == 0 || self.ban_drops == 0 {
            return bad("stall, reject and drop limits must be at least 1");
        }
        if !(self.thin_slot_ratio.is_finite() && self.thin_slot_ratio >= 1.0) {
            return bad("thin_slot_ratio must be at least 1");
        }
        if self.far_rtt.is_some_and(|t| t.is_zero()) {
            return bad("far_rtt is zero: every peer would be far, and none near");
        }
        if self.far_partials == 0 {
            return bad("far_partials is zero: nothing only far peers have would ever be fetched");
        }
        if !(self.drop_bad_pieces > 0.0 && self.drop_bad_pieces <= self.ban_bad_pieces) {
            return bad("need 0 < drop_bad_pieces <= ban_bad_pieces");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_ones_are_refused() {
        SwarmConfig::default().validate().unwrap();
        let c = SwarmConfig {
            block_size: 0,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
        // Larger than we serve, or than the wire carries.
        let c = SwarmConfig {
            block_size: 2 << 20,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
        let c = SwarmConfig {
            block_size: 1 << 20,
            max_request_len: 256 << 10,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
        let c = SwarmConfig {
            min_queue_blocks: 9,
            max_queue_blocks: 8,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
        let c = SwarmConfig {
            ban_bad_pieces: 0.5,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
        // Every slot would count as thin.
        let c = SwarmConfig {
            thin_slot_ratio: 0.5,
            ..SwarmConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
