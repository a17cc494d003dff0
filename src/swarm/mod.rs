//! The download path: one swarm actor per torrent around proto's sans-IO
//! [`shoal_proto::swarm::Swarm`], and the node-level [`Mesh`] that owns the
//! QUIC endpoint and routes incoming connections to their torrent.
//!
//! proto decides; this module carries bytes and time. The actor
//! (`actor.rs`) feeds transport events, timers, verification and storage
//! results into the state machine, then drains its actions: sends mapped
//! to the wire protocol, block serving off the loop, piece hashing on a
//! bounded blocking pool, durable writes through storage. Its connections
//! (`actor/conns.rs`) follow proto's peer book: dials by address or node
//! id, retries with backoff, peer exchange. `magnet.rs` turns a magnet
//! link into a metainfo by fetching the info dictionary from peers.
//!
//! Invariants this module keeps:
//! - A piece is written to storage only after it matched its hash; a piece
//!   that fails is dropped, never written (proto re-requests and blames).
//! - A torrent starts from storage's durable have-bitfield, so pieces
//!   stored before a crash or restart are never fetched again.
//! - A [`PeerKey`] is derived from the peer's node id alone
//!   ([`peer_key`]), so scores and bans survive reconnects.
//! - Nothing a peer sends panics: swarm errors on peer input are logged and
//!   the input is dropped.
//! - Dropping the last [`TorrentHandle`] aborts the actor and with it every
//!   connection, serve, hash and write task it owns.
//! - Which peers to dial, when to retry and what PEX says are proto's
//!   decisions ([`shoal_proto::discovery`]); the actor only carries them
//!   out. A banned node is never dialled again.

mod actor;
mod magnet;
mod mesh;

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_proto::swarm::{PeerKey, PeerScore, SwarmStats};
use shoal_proto::wire::NodeId;
use shoal_proto::InfoHash;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use magnet::{resolve_magnet, PEER_TIMEOUT as MAGNET_PEER_TIMEOUT};
pub use mesh::{Discovery, Mesh, MeshError, Role, StartTorrent};

/// The stable swarm key of a node: the first 8 bytes of its id.
pub fn peer_key(node: &NodeId) -> PeerKey {
    let mut b = [0u8; 8];
    b.copy_from_slice(&node[..8]);
    PeerKey(u64::from_be_bytes(b))
}

/// A peer to dial: where it listens and, if known, the node id its TLS key
/// must match. Without an id the dial accepts whichever node TLS
/// authenticates there (other than ourselves, a banned node or one already
/// connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDial {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its node id, if known.
    pub node_id: Option<NodeId>,
}

impl PeerDial {
    /// A dial to `addr`, whoever answers there.
    pub fn addr(addr: SocketAddr) -> PeerDial {
        PeerDial {
            addr,
            node_id: None,
        }
    }

    /// A dial to `node` at `addr`.
    pub fn node(addr: SocketAddr, node: NodeId) -> PeerDial {
        PeerDial {
            addr,
            node_id: Some(node),
        }
    }
}

/// A snapshot of one torrent's swarm, for tests, the API and metrics.
#[derive(Debug, Clone)]
pub struct TorrentStatus {
    /// The torrent.
    pub infohash: InfoHash,
    /// Number of pieces.
    pub pieces: u32,
    /// Pieces stored.
    pub have: u32,
    /// Every piece is stored.
    pub complete: bool,
    /// Pieces this run downloaded, verified and stored.
    pub pieces_downloaded: u32,
    /// Pieces this run hashed and found bad (and dropped).
    pub pieces_failed: u32,
    /// Connected (or connecting) peers.
    pub peers: Vec<NodeId>,
    /// Where each connected peer's connection comes from.
    pub peer_addrs: Vec<(NodeId, SocketAddr)>,
    /// Each connected peer's smallest round trip QUIC reported.
    pub path_rtts: Vec<(NodeId, std::time::Duration)>,
    /// Connected peers proto counts as far (another site: see
    /// `SwarmConfig::far_rtt`).
    pub far: Vec<NodeId>,
    /// Peers the peer book knows of (connected, candidates, given up,
    /// banned).
    pub known_peers: usize,
    /// Peers proto banned.
    pub banned: Vec<NodeId>,
    /// Every peer seen with its trust record.
    pub scores: Vec<(NodeId, PeerScore)>,
    /// proto's counters.
    pub stats: SwarmStats,
}

/// What the actor's inbox takes.
#[derive(Debug)]
pub(crate) enum TorrentMessage {
    /// Report a [`TorrentStatus`].
    Status {
        reply: oneshot::Sender<TorrentStatus>,
    },
    /// Dial these peers now (retries then follow the peer book).
    AddPeers(Vec<PeerDial>),
    /// Addresses a tracker listed: candidates for the peer book.
    Discovered(Vec<SocketAddr>),
    /// An incoming connection for this torrent, routed by the mesh.
    Inbound(Box<crate::transport::Inbound>),
    /// Stop: close every connection, let the pieces being written land,
    /// and exit; replies with the final status.
    Shutdown {
        reply: oneshot::Sender<TorrentStatus>,
    },
}

/// Errors of the torrent handle.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    /// The actor has exited.
    #[error("the torrent's swarm actor has stopped")]
    Closed,
}

/// The way to talk to one torrent's swarm actor. Clones share it; dropping
/// the last clone aborts the actor.
#[derive(Debug, Clone)]
pub struct TorrentHandle {
    infohash: InfoHash,
    tx: mpsc::Sender<TorrentMessage>,
    complete: watch::Receiver<bool>,
    cancel: CancellationToken,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl TorrentHandle {
    /// The torrent.
    pub fn infohash(&self) -> InfoHash {
        self.infohash
    }

    pub(crate) fn sender(&self) -> mpsc::Sender<TorrentMessage> {
        self.tx.clone()
    }

    /// A snapshot of the swarm.
    pub async fn status(&self) -> Result<TorrentStatus, TorrentError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(TorrentMessage::Status { reply })
            .await
            .map_err(|_| TorrentError::Closed)?;
        rx.await.map_err(|_| TorrentError::Closed)
    }

    /// Dials `peer` for this torrent now, unless it is banned, ourselves or
    /// already connected; a failure or drop is retried with backoff.
    pub async fn add_peer(&self, peer: PeerDial) -> Result<(), TorrentError> {
        self.add_peers(vec![peer]).await
    }

    /// [`TorrentHandle::add_peer`] for several peers in one message.
    pub async fn add_peers(&self, peers: Vec<PeerDial>) -> Result<(), TorrentError> {
        self.tx
            .send(TorrentMessage::AddPeers(peers))
            .await
            .map_err(|_| TorrentError::Closed)
    }

    /// Hands the peer book addresses a tracker listed. They are dialled
    /// within the torrent's peer budget, those already known keep their
    /// backoff, and whatever no tracker or peer lists any more is
    /// eventually forgotten.
    pub async fn discovered(&self, addrs: Vec<SocketAddr>) -> Result<(), TorrentError> {
        self.tx
            .send(TorrentMessage::Discovered(addrs))
            .await
            .map_err(|_| TorrentError::Closed)
    }

    /// Waits until every piece is stored.
    pub async fn wait_complete(&self) -> Result<(), TorrentError> {
        let mut rx = self.complete.clone();
        rx.wait_for(|c| *c)
            .await
            .map(|_| ())
            .map_err(|_| TorrentError::Closed)
    }

    /// Whether every piece is stored.
    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// Closes every connection and stops the actor; returns once it has,
    /// with its last status (`None` if it had already exited). Pieces that
    /// were being written when it was asked have landed or failed by then,
    /// so the status's `have` is what storage holds, and stays so.
    pub async fn shutdown(&self) -> Option<TorrentStatus> {
        let (reply, rx) = oneshot::channel();
        let last = match self.tx.send(TorrentMessage::Shutdown { reply }).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        self.cancel.cancel();
        last
    }

    /// Whether `other` is a handle to the same actor (not a later run of
    /// the same torrent).
    pub fn same_actor(&self, other: &TorrentHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }
}
