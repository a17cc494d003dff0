//! shoal: the daemon and command-line shell around `shoal-proto`.
//!
//! proto decides; this crate carries bytes and time. Today it holds the
//! disk side of `shoal create` and `shoal verify`; the node's actors
//! (swarm, storage, verification, transport, gossip, http) join it here.

pub mod check;
pub mod create;
pub mod disk;
pub mod progress;
