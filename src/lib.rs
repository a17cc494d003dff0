//! shoal: the daemon and command-line shell around `shoal-proto`.
//!
//! proto decides; this crate carries bytes and time. Today it holds the
//! disk side of `shoal create` and `shoal verify`, and the node: its
//! config and identity, the tracker role, gossip, the HTTP server (tracker
//! facade, REST API, metrics), and the torrent manager (`torrents`) over
//! the swarm, storage, verification and transport actors.

pub mod announce;
pub mod check;
pub mod config;
pub mod create;
pub mod disk;
pub mod gossip;
pub mod hook;
pub mod http;
pub mod identity;
pub mod logging;
pub mod node;
pub mod progress;
pub mod ratelimit;
pub mod storage;
pub mod swarm;
pub mod torrents;
pub mod tracker;
pub mod transport;
