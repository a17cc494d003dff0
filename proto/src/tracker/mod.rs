//! The BitTorrent tracker facade's pure logic: announce and scrape parsing,
//! bencoded responses, the hybrid logical clock, and the replicated peer
//! table (a CRDT) behind it.
//!
//! The daemon's HTTP server and gossip layer only move bytes: a request
//! goes through [`AnnounceRequest::parse`], [`PeerTable::apply_announce`]
//! (whose [`Delta`] is gossiped), [`PeerTable::select_peers`] and
//! [`AnnounceResponse::encode`]; gossip from other nodes goes through
//! [`Delta::from_bytes`] and [`PeerTable::merge_delta`]; anti-entropy swaps
//! [`Digest`]s and the entries of the buckets [`diff_buckets`] names.
//!
//! Invariants this module keeps: everything here is deterministic in its
//! arguments (time, clock, seeds), never panics on outside input, and
//! allocates in proportion to that input or to the caller's limits.

pub mod allow;
pub mod announce;
pub mod client;
pub mod hlc;
mod query;
pub mod response;
pub mod scrape;
pub mod table;

pub use announce::{AnnounceError, AnnounceRequest, Event};
pub use hlc::{Clock, ClockError, Timestamp};
pub use response::{encode_failure, encode_scrape, AnnounceResponse, PeerInfo, ScrapeCounts};
pub use scrape::{ScrapeError, ScrapeRequest};
pub use table::{
    diff_buckets, Delta, DeltaCounter, DeltaEntry, Digest, Entry, LimitError, PeerId, PeerTable,
    Shard, TableConfig, TableStats, WireError,
};
