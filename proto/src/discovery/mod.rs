//! Discovery inside one swarm, sans-IO: which known peers to dial next,
//! when to retry one that failed or dropped, and what peer exchange (PEX,
//! `PROTOCOL.md` section 7) sends and accepts.
//!
//! - [`PeerBook`] (`book.rs`) is every peer a torrent has heard of (from
//!   trackers, magnet links, PEX or an explicit dial), keyed by node id
//!   once known and by address before. It decides which to dial within a
//!   max-peers budget, backs off exponentially (capped, jittered) after a
//!   failure, gives up after a bounded number of attempts, never redials a
//!   banned node, and forgets what no source lists any more.
//! - `pex.rs` decides when a connection sends its next `Peers` message,
//!   which `Peers` a receiver admits (a token bucket per connection), and
//!   what a received list means (the sender's own entry carries its listen
//!   addresses; everything else is a candidate).
//!
//! Invariants: pure functions of their arguments; time is a [`Time`] and
//! randomness a caller-seeded [`Rng`](crate::rng::Rng); every collection
//! is bounded ([`BookConfig::max_known`], [`MAX_PEX_PEERS`],
//! [`MAX_PEER_ADDRS`]), whatever peers send.

mod book;
mod pex;

pub use book::{BookConfig, Dial, Ending, PeerBook, Refusal, Target};
pub use pex::{
    admitted_entries, build_peers, PexConfig, PexGate, PexList, PexSchedule, MAX_PEX_OTHERS,
};

pub use crate::swarm::Time;
pub use crate::wire::{MAX_PEER_ADDRS, MAX_PEX_PEERS};
