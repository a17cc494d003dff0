//! shoal-proto: the sans-IO core of shoal.
//!
//! Every decision shoal makes lives here: formats (bencode, metainfo,
//! magnet links), and later the mesh wire messages, the swarm state
//! machine, the tracker's announce handling and peer-table CRDT, and the
//! gossip merge rules. This crate does no I/O, never reads the clock and
//! never touches the OS RNG: time and randomness come in as arguments.
//! The daemon (`src/`) and the simulator (`simulations/`) both drive it.

#![deny(missing_docs)]

pub mod bencode;
pub mod bitfield;
pub mod discovery;
pub mod gossip;
pub mod infohash;
pub mod lifecycle;
pub mod magnet;
pub mod magnet_fetch;
pub mod metainfo;
pub mod paths;
pub mod ratelimit;
pub mod rng;
pub mod swarm;
pub mod tracker;
pub mod verify;
pub mod wire;

pub use infohash::InfoHash;
pub use magnet::Magnet;
pub use metainfo::{Info, Metainfo};
