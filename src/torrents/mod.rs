//! The torrent manager: everything `shoal node` downloads and seeds. It
//! owns the node's storage, its QUIC endpoint and mesh, and per running
//! torrent a swarm actor, an announcer and a completion watcher.
//!
//! Operations: add (a `.torrent`'s bytes or a magnet link, into a target
//! directory, optionally paused), list, get, pause, resume, remove
//! (optionally deleting the data) and rate limits per torrent and per
//! node. The REST API, `/metrics` and `shoal demo` drive it.
//!
//! Each torrent's states and their order (resolving, starting,
//! downloading, verifying, seeding, paused, failed) are decided by proto's
//! [`Lifecycle`]; `life.rs` carries out what it answers.
//!
//! Invariants this module keeps:
//! - What survives a restart is what storage holds: every torrent record,
//!   its paused flag, limits and import intent, and the durable
//!   have-bitfield. At start every stored torrent that is not paused is
//!   started again from that bitfield, so verified pieces are never
//!   fetched twice.
//! - Content already in the target directory when a torrent is added is
//!   imported (each piece checked against its hash) and seeded, at its
//!   first start even if that comes after a restart.
//! - A torrent that completes in this run is reported `seeding` only after
//!   the whole content passed a re-check (when `verify_on_complete`); one
//!   that fails it is `failed` with its bad pieces and stops serving. The
//!   `on_complete` hook runs once the data is verified.
//! - Control operations (add, pause, resume, remove, limits) run one at a
//!   time; the entry lock is never held across an await, so listing never
//!   waits on a starting torrent or a slow disk.
//! - Every task is owned: a torrent's start, run and watcher end with its
//!   entry; dropping the manager aborts them; [`Torrents::stop`] announces
//!   `stopped`, closes connections and flushes storage.

mod life;
mod magnet;
mod run;
mod view;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libp2p::identity::Keypair;
use shoal_proto::lifecycle::{Event, Lifecycle};
use shoal_proto::metainfo::Info;
use shoal_proto::wire::{CloseCode, NodeId};
use shoal_proto::{InfoHash, Metainfo};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::MeshConfig;
use crate::storage::{
    AddTorrent, Storage, StorageConfig, StorageError, StorageHandle, TorrentSettings, TorrentSource,
};
use crate::swarm::{Discovery, Mesh, MeshError};
use crate::transport::{install_crypto_provider, Endpoint, TransportConfig, TransportError};

pub use view::{Counters, Limits, PeerView, State, TorrentDetail, TorrentView};

/// Bound on announcing `stopped` and closing connections at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why an operation on the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum TorrentsError {
    /// The bytes are not a valid `.torrent`.
    #[error("not a valid torrent: {0}")]
    BadTorrent(String),
    /// The magnet link does not parse.
    #[error("not a valid magnet link: {0}")]
    BadMagnet(String),
    /// The magnet's metadata could not be fetched from peers.
    #[error("cannot add the magnet link: {0}")]
    Magnet(String),
    /// A torrent with this infohash is already added.
    #[error("torrent {0} is already added")]
    AlreadyAdded(InfoHash),
    /// No torrent with this infohash.
    #[error("no torrent {0}")]
    Unknown(InfoHash),
    /// The operation does not fit the torrent's state.
    #[error("{0}")]
    Conflict(String),
    /// The target directory cannot be made or used.
    #[error("{}: {source}", path.display())]
    TargetDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Storage refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The mesh refused the torrent.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The QUIC address could not be bound.
    #[error("cannot listen for QUIC on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What a torrent is added from.
#[derive(Debug, Clone)]
pub enum AddSource {
    /// A `.torrent` file's bytes.
    Metainfo(Vec<u8>),
    /// A magnet link.
    Magnet(String),
}

/// How `Torrents::add_meta` came by the metainfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Given whole (a `.torrent`).
    Metainfo,
    /// Fetched for a magnet: the torrent takes the place of the magnet's
    /// placeholder, which must still be there (see `magnet.rs`).
    Magnet,
}

/// A torrent to add.
#[derive(Debug, Clone)]
pub struct AddRequest {
    /// Its bytes or magnet link.
    pub source: AddSource,
    /// The download directory (content at `<dir>/<name>`); the config's
    /// `download_dir` when `None`.
    pub target_dir: Option<PathBuf>,
    /// Add it without starting it.
    pub paused: bool,
}

/// What the manager needs to start.
#[derive(Debug)]
pub struct TorrentsSetup {
    /// The node's data directory (storage lives in `<data_dir>/db`).
    pub data_dir: PathBuf,
    /// The `[mesh]` config.
    pub cfg: MeshConfig,
    /// The node's identity key.
    pub keypair: Keypair,
    /// Announce URLs of tracker nodes learned by gossip, when the node
    /// gossips.
    pub gossip_trackers: Option<watch::Receiver<Vec<String>>>,
}

/// The torrent manager. Clones share it.
#[derive(Clone)]
pub struct Torrents {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Torrents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torrents")
            .field("listen", &self.inner.listen)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    cfg: MeshConfig,
    mesh: Mesh,
    storage: StorageHandle,
    listen: SocketAddr,
    node_id: NodeId,
    gossip_trackers: Option<watch::Receiver<Vec<String>>>,
    entries: Mutex<HashMap<InfoHash, Entry>>,
    control: tokio::sync::Mutex<()>,
    /// Counters of runs that have ended.
    totals: Mutex<Counters>,
    limits: Mutex<Limits>,
    storage_stop: CancellationToken,
    endpoint_stop: CancellationToken,
    sampler: Mutex<Option<AbortOnDropHandle<()>>>,
    /// Magnets whose metadata is being fetched, or could not be.
    resolving: Mutex<HashMap<InfoHash, magnet::Resolving>>,
}

/// One torrent the manager knows.
pub(crate) struct Entry {
    meta: Arc<Metainfo>,
    target_dir: PathBuf,
    added_unix_ms: u64,
    /// Rate limits. Its import flag is not read: the lifecycle holds the
    /// intent, and [`life::stored_settings`] puts it in what is stored.
    settings: TorrentSettings,
    /// Its state, paused flag, import intent, current run, error, bad
    /// pieces and pieces stored.
    life: Lifecycle,
    starting: Option<AbortOnDropHandle<()>>,
    running: Option<run::Running>,
    /// Bytes and failures of earlier runs in this process.
    prior: Counters,
    rates: run::Rates,
}

impl Entry {
    fn view(&self, ih: InfoHash, live: Option<&crate::swarm::TorrentStatus>) -> TorrentView {
        let info = &self.meta.info;
        let have = live.map_or(self.life.have(), |s| s.have);
        let state = self.life.phase();
        TorrentView {
            infohash: ih.to_hex(),
            name: info.name.clone(),
            target_dir: self.target_dir.clone(),
            total_bytes: info.total_length(),
            pieces: info.piece_count(),
            have,
            have_bytes: have_bytes(info, have),
            state,
            complete: state == State::Seeding,
            download_rate: self.rates.down,
            upload_rate: self.rates.up,
            peers: live.map_or(0, |s| s.peers.len()),
            far_peers: live.map_or(0, |s| s.far.len()),
            download_limit: self.settings.download_limit,
            upload_limit: self.settings.upload_limit,
            added_unix_ms: self.added_unix_ms,
            error: self.life.error().map(str::to_owned),
        }
    }
}

/// Bytes in `have` pieces; the last piece may be short, so count it as
/// full only when every piece is had.
fn have_bytes(info: &Info, have: u32) -> u64 {
    if have >= info.piece_count() {
        info.total_length()
    } else {
        u64::from(have) * info.piece_length
    }
}

impl Torrents {
    /// Opens storage, binds the QUIC endpoint and starts again every
    /// stored torrent that is not paused.
    pub async fn start(setup: TorrentsSetup) -> Result<Torrents, TorrentsError> {
        install_crypto_provider();
        let TorrentsSetup {
            data_dir,
            cfg,
            keypair,
            gossip_trackers,
        } = setup;
        let storage_stop = CancellationToken::new();
        let storage =
            Storage::spawn(&data_dir, StorageConfig::default(), storage_stop.clone()).await?;
        let socket = UdpSocket::bind(cfg.listen).map_err(|source| TorrentsError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let listen = socket.local_addr().map_err(|source| TorrentsError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let endpoint_stop = CancellationToken::new();
        let endpoint = Endpoint::from_socket(
            &keypair,
            socket,
            TransportConfig::default(),
            endpoint_stop.clone(),
        )?;
        let node_id = endpoint.node_id();
        let mesh = Mesh::new(endpoint, storage.clone()).with_discovery(Discovery {
            book: cfg.book(),
            ..Discovery::default()
        });
        let limits = Limits {
            upload: (cfg.upload_limit > 0).then_some(cfg.upload_limit),
            download: (cfg.download_limit > 0).then_some(cfg.download_limit),
        };
        let inner = Arc::new(Inner {
            cfg,
            mesh,
            storage,
            listen,
            node_id,
            gossip_trackers,
            entries: Mutex::new(HashMap::new()),
            control: tokio::sync::Mutex::new(()),
            totals: Mutex::new(Counters::default()),
            limits: Mutex::new(limits),
            storage_stop,
            endpoint_stop,
            sampler: Mutex::new(None),
            resolving: Mutex::new(HashMap::new()),
        });
        run::apply_node_limits(&inner.mesh, limits);
        let sampler = tokio::spawn(run::sample(Arc::downgrade(&inner)));
        *lock(&inner.sampler) = Some(AbortOnDropHandle::new(sampler));
        let torrents = Torrents { inner };
        torrents.resume_stored().await?;
        Ok(torrents)
    }

    /// Reads every stored torrent and starts the ones not paused.
    async fn resume_stored(&self) -> Result<(), TorrentsError> {
        let inner = &self.inner;
        for summary in inner.storage.list_torrents().await? {
            let ih = summary.infohash;
            // One unreadable record must not keep the others from starting.
            let record = match inner.storage.record(ih).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%ih, error = %e, "stored torrent skipped");
                    continue;
                }
            };
            let meta = match meta_of(ih, &record.source) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%ih, error = %e, "stored torrent skipped");
                    continue;
                }
            };
            run::apply_torrent_limits(&inner.mesh, ih, &record.settings);
            let (life, cmds) = life::restored(
                inner,
                record.paused,
                &record.settings,
                summary.have,
                summary.unavailable,
            );
            let mut entry = new_entry(meta, record.target_dir, record.settings, life);
            entry.added_unix_ms = record.added_unix_ms;
            lock(&inner.entries).insert(ih, entry);
            if !cmds.is_empty() {
                tracing::info!(%ih, have = summary.have, pieces = summary.pieces, "resuming stored torrent");
            }
            life::execute(inner, ih, cmds, false).await?;
        }
        Ok(())
    }

    /// The bound QUIC address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// This node's id on the mesh (the key in its certificate).
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Announce URLs of the tracker nodes gossip has named so far.
    pub fn gossip_trackers(&self) -> Vec<String> {
        self.inner
            .gossip_trackers
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default()
    }

    /// The mesh, for tests and tools that need the endpoint.
    pub fn mesh(&self) -> &Mesh {
        &self.inner.mesh
    }

    /// Adds a torrent and, unless paused, starts it in the background.
    /// Content already at `<target_dir>/<name>` is imported and seeded.
    /// A magnet link is answered at once with a `resolving` placeholder;
    /// the torrent is added when its metadata has come from peers.
    pub async fn add(&self, req: AddRequest) -> Result<TorrentView, TorrentsError> {
        let dir = req
            .target_dir
            .unwrap_or_else(|| self.inner.cfg.download_dir.clone());
        let target_dir = prepare_dir(&dir)?;
        match req.source {
            AddSource::Metainfo(bytes) => {
                let meta = Metainfo::from_bytes(&bytes)
                    .map_err(|e| TorrentsError::BadTorrent(e.to_string()))?;
                let life = Lifecycle::new(req.paused, self.inner.cfg.verify_on_complete);
                self.add_meta(meta, target_dir, life, Via::Metainfo).await
            }
            AddSource::Magnet(link) => self.add_magnet(&link, target_dir, req.paused).await,
        }
    }

    /// Adds a torrent whose metainfo is known, into an existing absolute
    /// directory; `life` is its lifecycle while the metadata was resolved.
    async fn add_meta(
        &self,
        meta: Metainfo,
        target_dir: PathBuf,
        mut life: Lifecycle,
        via: Via,
    ) -> Result<TorrentView, TorrentsError> {
        let inner = &self.inner;
        let ih = meta.info_hash;
        let _control = inner.control.lock().await;
        let handover = via == Via::Magnet;
        if handover && !lock(&inner.resolving).contains_key(&ih) {
            return Err(TorrentsError::Unknown(ih));
        }
        if lock(&inner.entries).contains_key(&ih) {
            return Err(TorrentsError::AlreadyAdded(ih));
        }
        let import = target_dir.join(&meta.info.name).exists();
        let cmds = life
            .handle(Event::MetadataResolved { import })
            .map_err(|e| TorrentsError::Conflict(format!("{ih}: {e}")))?;
        let entry = new_entry(meta, target_dir, TorrentSettings::default(), life);
        let add = AddTorrent {
            source: TorrentSource::Metainfo(entry.meta.to_bytes()),
            target_dir: entry.target_dir.clone(),
            paused: entry.life.paused(),
            settings: life::stored_settings(&entry),
        };
        match inner.storage.add_torrent(add).await {
            Ok(_) => {}
            Err(StorageError::AlreadyAdded(_)) => return Err(TorrentsError::AlreadyAdded(ih)),
            Err(e) => return Err(e.into()),
        }
        let view = entry.view(ih, None);
        let paused = entry.life.paused();
        lock(&inner.entries).insert(ih, entry);
        if handover {
            lock(&inner.resolving).remove(&ih);
        }
        tracing::info!(%ih, name = %view.name, import, paused, "torrent added");
        life::execute(inner, ih, cmds, false).await?;
        Ok(view)
    }

    /// Every torrent (magnets still resolving included), in infohash
    /// order.
    pub async fn list(&self) -> Vec<TorrentView> {
        let mut ihs: Vec<InfoHash> = lock(&self.inner.entries).keys().copied().collect();
        ihs.extend(lock(&self.inner.resolving).keys().copied());
        ihs.sort();
        ihs.dedup();
        let mut out = Vec::with_capacity(ihs.len());
        for ih in ihs {
            if let Ok(d) = self.get(ih).await {
                out.push(d.torrent);
            }
        }
        out
    }

    /// One torrent in detail.
    pub async fn get(&self, ih: InfoHash) -> Result<TorrentDetail, TorrentsError> {
        let handle = {
            let entries = lock(&self.inner.entries);
            let Some(e) = entries.get(&ih) else {
                drop(entries);
                return self.resolving_detail(ih).ok_or(TorrentsError::Unknown(ih));
            };
            e.running.as_ref().map(|r| r.handle.clone())
        };
        let status = match handle {
            Some(h) => h.status().await.ok(),
            None => None,
        };
        let entries = lock(&self.inner.entries);
        let e = entries.get(&ih).ok_or(TorrentsError::Unknown(ih))?;
        Ok(run::detail(ih, e, status.as_ref()))
    }

    /// Stops a torrent and remembers that it is paused.
    pub async fn pause(&self, ih: InfoHash) -> Result<TorrentView, TorrentsError> {
        let _control = self.inner.control.lock().await;
        self.operate(ih, Event::Pause, false).await?;
        tracing::info!(%ih, "torrent paused");
        self.view(ih)
    }

    /// Starts a paused torrent again from its stored pieces.
    pub async fn resume(&self, ih: InfoHash) -> Result<TorrentView, TorrentsError> {
        let _control = self.inner.control.lock().await;
        self.operate(ih, Event::Resume, false).await?;
        tracing::info!(%ih, "torrent resumed");
        self.view(ih)
    }

    /// Stops a torrent and forgets it; with `delete_data` its files go too.
    pub async fn remove(&self, ih: InfoHash, delete_data: bool) -> Result<(), TorrentsError> {
        let _control = self.inner.control.lock().await;
        if self.forget_resolving(ih) {
            return Ok(());
        }
        self.operate(ih, Event::Remove, delete_data).await
    }

    /// Feeds an operator's `event` to the torrent's lifecycle and carries
    /// out the answer; a refusal is a [`TorrentsError::Conflict`].
    async fn operate(
        &self,
        ih: InfoHash,
        event: Event,
        delete_data: bool,
    ) -> Result<(), TorrentsError> {
        let pausing = matches!(event, Event::Pause);
        let cmds = {
            let mut entries = lock(&self.inner.entries);
            let e = entries.get_mut(&ih).ok_or_else(|| self.missing(ih))?;
            let cmds = e
                .life
                .handle(event)
                .map_err(|err| TorrentsError::Conflict(format!("{ih}: {err}")))?;
            if pausing {
                e.rates = run::Rates::default();
            }
            cmds
        };
        life::execute(&self.inner, ih, cmds, delete_data).await
    }

    /// Sets a torrent's rate limits (bytes/s, `None` for none), durably.
    pub async fn set_limits(
        &self,
        ih: InfoHash,
        upload: Option<u64>,
        download: Option<u64>,
    ) -> Result<TorrentView, TorrentsError> {
        let inner = &self.inner;
        let _control = inner.control.lock().await;
        let settings = {
            let mut entries = lock(&inner.entries);
            let e = entries.get_mut(&ih).ok_or_else(|| self.missing(ih))?;
            e.settings.upload_limit = upload;
            e.settings.download_limit = download;
            e.settings.clone()
        };
        life::save(inner, ih).await?;
        run::apply_torrent_limits(&inner.mesh, ih, &settings);
        self.view(ih)
    }

    /// The node-wide rate limits.
    pub fn limits(&self) -> Limits {
        *lock(&self.inner.limits)
    }

    /// Sets the node-wide rate limits until the node stops (the config
    /// file holds the ones it starts with).
    pub fn set_limits_node(&self, limits: Limits) {
        *lock(&self.inner.limits) = limits;
        run::apply_node_limits(&self.inner.mesh, limits);
    }

    /// Node-wide counters: earlier runs plus the running swarms.
    pub async fn counters(&self) -> Counters {
        let mut c = *lock(&self.inner.totals);
        let handles: Vec<_> = lock(&self.inner.entries)
            .values()
            .filter_map(|e| e.running.as_ref().map(|r| r.handle.clone()))
            .collect();
        for h in handles {
            if let Ok(s) = h.status().await {
                c.downloaded_bytes += s.stats.downloaded;
                c.uploaded_bytes += s.stats.uploaded;
                c.pieces_verified += u64::from(s.pieces_downloaded);
                c.pieces_failed += u64::from(s.pieces_failed);
                c.peers += s.peers.len() as u64;
            }
        }
        c
    }

    fn view(&self, ih: InfoHash) -> Result<TorrentView, TorrentsError> {
        let entries = lock(&self.inner.entries);
        let e = entries.get(&ih).ok_or(TorrentsError::Unknown(ih))?;
        Ok(e.view(ih, None))
    }

    /// Stops every torrent (announcing `stopped`), closes connections and
    /// flushes storage.
    pub async fn stop(self) {
        let inner = self.inner;
        lock(&inner.sampler).take();
        lock(&inner.resolving).clear();
        let runs: Vec<_> = {
            let mut entries = lock(&inner.entries);
            entries
                .iter_mut()
                .filter_map(|(ih, e)| {
                    e.starting.take();
                    e.running.take().map(|r| (*ih, r))
                })
                .collect()
        };
        let stops = runs
            .into_iter()
            .map(|(ih, r)| run::stop_running(&inner, ih, r));
        futures::future::join_all(stops).await;
        inner.mesh.endpoint().close(CloseCode::Done);
        let _ = tokio::time::timeout(STOP_GRACE, inner.mesh.endpoint().wait_idle()).await;
        inner.endpoint_stop.cancel();
        inner.storage_stop.cancel();
        let storage = inner.storage.clone();
        drop(inner);
        storage.stopped().await;
    }
}

fn new_entry(
    meta: Metainfo,
    target_dir: PathBuf,
    settings: TorrentSettings,
    life: Lifecycle,
) -> Entry {
    Entry {
        meta: Arc::new(meta),
        target_dir,
        added_unix_ms: now_ms(),
        settings,
        life,
        starting: None,
        running: None,
        prior: Counters::default(),
        rates: run::Rates::default(),
    }
}

/// The metainfo of a stored record. A magnet's record holds only the info
/// dictionary; its infohash is over exactly those bytes.
fn meta_of(ih: InfoHash, source: &TorrentSource) -> Result<Metainfo, TorrentsError> {
    let bad = |e: String| TorrentsError::BadTorrent(e);
    let meta = match source {
        TorrentSource::Metainfo(b) => Metainfo::from_bytes(b).map_err(|e| bad(e.to_string()))?,
        TorrentSource::Info(b) => Metainfo {
            announce: None,
            announce_list: Vec::new(),
            url_list: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
            info: Info::from_bytes(b).map_err(|e| bad(e.to_string()))?,
            info_hash: InfoHash::of_info_bytes(b),
            info_bytes: b.clone(),
        },
    };
    if meta.info_hash != ih {
        return Err(bad(format!("stored under {ih} but is {}", meta.info_hash)));
    }
    Ok(meta)
}

/// Creates the target directory and returns its absolute form.
fn prepare_dir(dir: &Path) -> Result<PathBuf, TorrentsError> {
    let err = |source| TorrentsError::TargetDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    dir.canonicalize().map_err(err)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks a std mutex, recovering from poisoning: the data behind these
/// locks stays consistent at every unlock, so a panic elsewhere must not
/// take the node down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
