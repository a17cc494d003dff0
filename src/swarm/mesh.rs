//! The node-level mesh: one QUIC [`Endpoint`] per node, an accept loop that
//! routes each incoming connection to the swarm actor of the torrent its
//! handshake names, and starting torrents as seed or leecher.
//!
//! Invariants this module keeps:
//! - An incoming connection for a torrent the node does not run is refused
//!   with `UnknownTorrent`; one whose actor cannot take it now with `Busy`.
//! - A torrent's swarm starts from storage's durable have-bitfield. A seed
//!   whose bitfield is not full first imports the data already on disk:
//!   each missing piece is read, checked against its hash and only then
//!   written through storage (which marks it had).
//! - Dropping the [`Mesh`] stops the accept loop; torrents stop when their
//!   last [`TorrentHandle`] drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shoal_proto::swarm::{Geometry, Swarm, SwarmConfig, SwarmError};
use shoal_proto::verify::check_piece;
use shoal_proto::wire::CloseCode;
use shoal_proto::{InfoHash, Metainfo};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::actor::{Actor, ActorParts};
use super::{PeerDial, TorrentHandle, TorrentMessage};
use crate::disk::{Layout, PieceRead, Reader};
use crate::storage::{AddTorrent, StorageError, StorageHandle, TorrentSettings, TorrentSource};
use crate::transport::{Endpoint, Incoming};

/// Capacity of a torrent actor's inbox.
const INBOX: usize = 64;

type Routes = Arc<Mutex<HashMap<InfoHash, mpsc::Sender<TorrentMessage>>>>;

/// Why a torrent could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Storage refused the torrent or its pieces.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// proto refused the torrent's shape or bitfield.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The torrent's geometry is out of range.
    #[error("bad torrent geometry: {0}")]
    Geometry(String),
    /// Reading the seed's data failed.
    #[error("importing seed data: {0}")]
    Import(String),
}

/// How a torrent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The data is already in the target directory: import what verifies.
    Seed,
    /// Download what storage does not have yet.
    Leech,
}

/// A torrent to start on the mesh.
#[derive(Debug, Clone)]
pub struct StartTorrent {
    /// The torrent.
    pub metainfo: Metainfo,
    /// The download directory (content at `<target_dir>/<name>`).
    pub target_dir: PathBuf,
    /// Seed or leecher.
    pub role: Role,
    /// Peers to dial at once (tracker and PEX come later).
    pub peers: Vec<PeerDial>,
    /// proto's tunables.
    pub config: SwarmConfig,
    /// Seed of proto's random choices.
    pub seed: u64,
}

/// One node's mesh: its endpoint, its storage and its running torrents.
#[derive(Debug, Clone)]
pub struct Mesh {
    endpoint: Endpoint,
    storage: StorageHandle,
    routes: Routes,
    verify_pool: Arc<Semaphore>,
    _accept: Arc<AbortOnDropHandle<()>>,
}

impl Mesh {
    /// Starts the accept loop on `endpoint`; torrents use `storage`.
    pub fn new(endpoint: Endpoint, storage: StorageHandle) -> Mesh {
        let routes: Routes = Arc::default();
        let accept = tokio::spawn(accept_loop(endpoint.clone(), routes.clone()));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Mesh {
            endpoint,
            storage,
            routes,
            verify_pool: Arc::new(Semaphore::new(cores)),
            _accept: Arc::new(AbortOnDropHandle::new(accept)),
        }
    }

    /// The node's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Adds the torrent to storage (if it is not there yet), imports seed
    /// data, starts its swarm actor and dials `start.peers`.
    pub async fn start(&self, start: StartTorrent) -> Result<TorrentHandle, MeshError> {
        let meta = start.metainfo;
        let ih = meta.info_hash;
        let add = AddTorrent {
            source: TorrentSource::Metainfo(meta.to_bytes()),
            target_dir: start.target_dir.clone(),
            paused: false,
            settings: TorrentSettings::default(),
        };
        match self.storage.add_torrent(add).await {
            Ok(_) | Err(StorageError::AlreadyAdded(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let info = Arc::new(meta.info);
        let mut have = self.storage.have(ih).await?;
        if start.role == Role::Seed && !have.is_full() {
            let missing: Vec<u32> = have.iter_zeros().collect();
            import(&self.storage, ih, &info, &start.target_dir, &missing).await?;
            have = self.storage.have(ih).await?;
        }
        let geo = Geometry::new(info.total_length(), info.piece_length)
            .map_err(|e| MeshError::Geometry(e.to_string()))?;
        let swarm = Swarm::new(geo, have.as_bytes(), start.config, start.seed)?;
        let (tx, inbox) = mpsc::channel(INBOX);
        let (complete, complete_rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let actor = Actor::new(ActorParts {
            infohash: ih,
            info,
            swarm,
            endpoint: self.endpoint.clone(),
            storage: self.storage.clone(),
            inbox,
            complete,
            cancel: cancel.clone(),
            verify_pool: self.verify_pool.clone(),
        });
        let task = tokio::spawn(actor.run());
        let handle = TorrentHandle {
            infohash: ih,
            tx,
            complete: complete_rx,
            cancel,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        };
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(ih, handle.sender());
        }
        for peer in start.peers {
            // The actor just started; a closed inbox means it already died.
            let _ = handle.add_peer(peer).await;
        }
        Ok(handle)
    }

    /// Stops routing incoming connections to `infohash` and stops its actor.
    pub async fn stop(&self, handle: &TorrentHandle) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&handle.infohash());
        }
        handle.shutdown().await;
    }
}

/// Reads each of `pieces` from `target_dir`, checks it and writes the good
/// ones through storage, one piece in memory at a time.
async fn import(
    storage: &StorageHandle,
    ih: InfoHash,
    info: &Arc<shoal_proto::Info>,
    target_dir: &std::path::Path,
    pieces: &[u32],
) -> Result<(), MeshError> {
    let layout = Arc::new(Layout::in_dir(info, target_dir));
    for &piece in pieces {
        let info = info.clone();
        let layout = layout.clone();
        let data = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
            let reader = Reader::open(&info, &layout).map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let mut data = Vec::new();
            match reader
                .read_piece(piece, &mut buf, |b| data.extend_from_slice(b))
                .map_err(|e| e.to_string())?
            {
                PieceRead::Complete if check_piece(&info, piece, &data) => Ok(Some(data)),
                _ => Ok(None),
            }
        })
        .await
        .map_err(|e| MeshError::Import(e.to_string()))?
        .map_err(MeshError::Import)?;
        if let Some(data) = data {
            storage.write_piece(ih, piece, data).await?;
        }
    }
    Ok(())
}

/// Accepts connections until the endpoint shuts down, each handshake in a
/// task of its own so a slow dialer holds up nobody.
async fn accept_loop(endpoint: Endpoint, routes: Routes) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => {
                    tasks.spawn(route(i, routes.clone()));
                }
                None => break,
            },
            Some(_) = tasks.join_next() => {}
        }
    }
}

async fn route(incoming: Incoming, routes: Routes) {
    let inbound = match incoming.handshake().await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "incoming handshake failed");
            return;
        }
    };
    let tx = routes
        .lock()
        .ok()
        .and_then(|r| r.get(&inbound.info_hash()).cloned());
    let Some(tx) = tx else {
        return inbound.refuse(CloseCode::UnknownTorrent);
    };
    if let Err(e) = tx.try_send(TorrentMessage::Inbound(Box::new(inbound))) {
        let code = match &e {
            mpsc::error::TrySendError::Full(_) => CloseCode::Busy,
            mpsc::error::TrySendError::Closed(_) => CloseCode::UnknownTorrent,
        };
        if let TorrentMessage::Inbound(i) = e.into_inner() {
            i.refuse(code);
        }
    }
}
