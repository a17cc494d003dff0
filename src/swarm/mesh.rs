//! The node-level mesh: one QUIC [`Endpoint`] per node, an accept loop that
//! routes each incoming connection to the swarm actor of the torrent its
//! handshake names, and starting torrents as seed or leecher.
//!
//! Invariants this module keeps:
//! - An incoming connection for a torrent the node does not run is refused
//!   with `UnknownTorrent`; one whose actor cannot take it now with `Busy`.
//! - A torrent's swarm starts from storage's durable have-bitfield. A seed
//!   whose bitfield is not full first imports the data already on disk:
//!   the pieces storage lacks are checked in place on every core, and the
//!   good ones are marked had through storage (which syncs their files
//!   first) without being read into memory or written again. Bad and
//!   missing pieces stay not had; the swarm fetches them like a leecher.
//! - Import runs before the torrent's swarm actor exists, so nothing else
//!   writes its pieces meanwhile; a torrent already running on this mesh
//!   is not imported again.
//! - Dropping the [`Mesh`] stops the accept loop; torrents stop when their
//!   last [`TorrentHandle`] drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::discovery::{BookConfig, PexConfig};
use shoal_proto::swarm::{Geometry, Swarm, SwarmConfig, SwarmError};
use shoal_proto::wire::CloseCode;
use shoal_proto::{InfoHash, Metainfo};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::actor::{Actor, ActorParts};
use super::{PeerDial, TorrentHandle, TorrentMessage, TorrentStatus};
use crate::check::{check_pieces, PieceState, Progress};
use crate::disk::{default_threads, Layout};
use crate::storage::{AddTorrent, StorageError, StorageHandle, TorrentSettings, TorrentSource};
use crate::transport::{Endpoint, Incoming};

/// Capacity of a torrent actor's inbox.
const INBOX: usize = 64;

/// How often a seed's import logs how far it got.
const IMPORT_PROGRESS_EVERY: Duration = Duration::from_secs(3);

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
    /// Peers to dial at once; the announcer and PEX add more.
    pub peers: Vec<PeerDial>,
    /// proto's tunables.
    pub config: SwarmConfig,
    /// Seed of proto's random choices.
    pub seed: u64,
}

/// How every torrent of a mesh finds and keeps its peers: proto's peer
/// book and PEX tunables.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Peer budget, retry backoff, forgetting.
    pub book: BookConfig,
    /// When `Peers` messages go out and are admitted.
    pub pex: PexConfig,
}

/// One node's mesh: its endpoint, its storage and its running torrents.
#[derive(Debug, Clone)]
pub struct Mesh {
    endpoint: Endpoint,
    storage: StorageHandle,
    routes: Routes,
    verify_pool: Arc<Semaphore>,
    discovery: Discovery,
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
            discovery: Discovery::default(),
            _accept: Arc::new(AbortOnDropHandle::new(accept)),
        }
    }

    /// The mesh with other discovery tunables for the torrents it starts
    /// from now on.
    pub fn with_discovery(mut self, discovery: Discovery) -> Mesh {
        self.discovery = discovery;
        self
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
        let info_bytes = Arc::new(meta.info_bytes);
        let info = Arc::new(meta.info);
        let mut have = self.storage.have(ih).await?;
        if start.role == Role::Seed && !have.is_full() {
            let running = self.routes.lock().is_ok_and(|r| r.contains_key(&ih));
            if running {
                return Err(MeshError::Import(format!(
                    "torrent {ih} is already running on this node"
                )));
            }
            let missing: Vec<u32> = have.iter_zeros().collect();
            import(&self.storage, ih, &info, &start.target_dir, missing).await?;
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
            info_bytes,
            swarm,
            discovery: self.discovery.clone(),
            seed: start.seed,
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
        if !start.peers.is_empty() {
            // The actor just started; a closed inbox means it already died.
            let _ = handle.add_peers(start.peers).await;
        }
        Ok(handle)
    }

    /// Stops routing incoming connections to `infohash` and stops its
    /// actor; returns its last status (see [`TorrentHandle::shutdown`]).
    pub async fn stop(&self, handle: &TorrentHandle) -> Option<TorrentStatus> {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&handle.infohash());
        }
        handle.shutdown().await
    }
}

/// Checks `pieces` in place under `target_dir` on every core, logging
/// progress, and has storage mark the good ones had without rewriting
/// them. Returns how many were good, bad and missing.
async fn import(
    storage: &StorageHandle,
    ih: InfoHash,
    info: &Arc<shoal_proto::Info>,
    target_dir: &std::path::Path,
    pieces: Vec<u32>,
) -> Result<ImportCounts, MeshError> {
    let total = pieces.len();
    let total_bytes: u64 = pieces.iter().map(|&p| info.piece_size(p)).sum();
    let progress = Arc::new(Progress::default());
    // Stops the checker if this future is dropped (the start abandoned).
    struct StopOnDrop(Arc<Progress>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let _stop = StopOnDrop(progress.clone());
    let started = Instant::now();
    tracing::info!(%ih, pieces = total, bytes = total_bytes, "checking seed data in place");
    let mut job = tokio::task::spawn_blocking({
        let (info, progress) = (info.clone(), progress.clone());
        let layout = Layout::in_dir(&info, target_dir);
        move || {
            let states = check_pieces(&info, &layout, &pieces, default_threads(), &progress)?;
            Ok::<_, crate::disk::DiskError>((pieces, states))
        }
    });
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + IMPORT_PROGRESS_EVERY,
        IMPORT_PROGRESS_EVERY,
    );
    let (pieces, states) = loop {
        tokio::select! {
            done = &mut job => break done
                .map_err(|e| MeshError::Import(e.to_string()))?
                .map_err(|e| MeshError::Import(e.to_string()))?,
            _ = tick.tick() => {
                let bytes = progress.bytes.load(Ordering::Relaxed);
                tracing::info!(
                    %ih,
                    verified = progress.pieces.load(Ordering::Relaxed),
                    of = total,
                    mib_per_s = mib_per_s(bytes, started.elapsed()),
                    "checking seed data"
                );
            }
        }
    };
    let mut counts = ImportCounts::default();
    let mut good = Vec::new();
    for (p, state) in pieces.into_iter().zip(states) {
        match state {
            PieceState::Good => {
                counts.good += 1;
                good.push(p);
            }
            PieceState::Bad => counts.bad += 1,
            PieceState::Missing => counts.missing += 1,
        }
    }
    let checked = started.elapsed();
    storage.mark_had(ih, target_dir.to_path_buf(), good).await?;
    tracing::info!(
        %ih,
        good = counts.good,
        bad = counts.bad,
        missing = counts.missing,
        check_s = checked.as_secs_f64(),
        mib_per_s = mib_per_s(total_bytes, checked),
        total_s = started.elapsed().as_secs_f64(),
        "seed data imported; bad and missing pieces will be fetched from peers"
    );
    Ok(counts)
}

/// What a seed's import found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ImportCounts {
    good: u32,
    bad: u32,
    missing: u32,
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64().max(1e-9)
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
