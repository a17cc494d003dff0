//! In-process mesh nodes for tests: each [`MeshNode`] has its own QUIC
//! endpoint on 127.0.0.1 (port 0), its own storage under a data directory
//! and a [`Mesh`] on top, like `shoal seed`/`shoal fetch` without the CLI.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use libp2p::identity::Keypair;
use shoal::create::{create, CreateOptions, Source};
use shoal::storage::{Storage, StorageConfig, StorageHandle};
use shoal::swarm::{Mesh, PeerDial, Role, StartTorrent, TorrentHandle, TorrentStatus};
use shoal::transport::{install_crypto_provider, Endpoint, TransportConfig};
use shoal_proto::swarm::SwarmConfig;
use shoal_proto::Metainfo;
use tokio_util::sync::CancellationToken;

/// Makes the torrent of `src` (blake3 included, no trackers unless given)
/// with `piece_length`, or the adaptive default.
pub fn make_torrent(src: &Path, piece_length: Option<u64>, trackers: Vec<Vec<String>>) -> Metainfo {
    let opts = CreateOptions {
        trackers,
        piece_length,
        private: false,
        comment: None,
        blake3: true,
        threads: 2,
        creation_date: None,
    };
    create(&Source::scan(src).unwrap(), &opts, &AtomicU64::new(0)).unwrap()
}

/// A [`StartTorrent`] with proto's default tunables.
pub fn start(meta: &Metainfo, target: &Path, role: Role, peers: Vec<PeerDial>) -> StartTorrent {
    StartTorrent {
        metainfo: meta.clone(),
        target_dir: target.to_path_buf(),
        role,
        peers,
        config: SwarmConfig::default(),
        seed: 7,
    }
}

/// One node: endpoint, storage and mesh.
pub struct MeshNode {
    pub mesh: Mesh,
    pub storage: StorageHandle,
    storage_stop: CancellationToken,
    endpoint_stop: CancellationToken,
}

impl MeshNode {
    /// A node with its storage in `data_dir` and a fresh key.
    pub async fn new(data_dir: &Path) -> MeshNode {
        install_crypto_provider();
        let storage_stop = CancellationToken::new();
        let storage = Storage::spawn(data_dir, StorageConfig::default(), storage_stop.clone())
            .await
            .unwrap();
        let endpoint_stop = CancellationToken::new();
        let endpoint = Endpoint::from_socket(
            &Keypair::generate_ed25519(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            TransportConfig::default(),
            endpoint_stop.clone(),
        )
        .unwrap();
        MeshNode {
            mesh: Mesh::new(endpoint, storage.clone()),
            storage,
            storage_stop,
            endpoint_stop,
        }
    }

    /// How other nodes reach this one.
    pub fn dial(&self) -> PeerDial {
        let ep = self.mesh.endpoint();
        PeerDial {
            addr: ep.local_addr().unwrap(),
            node_id: Some(ep.node_id()),
        }
    }

    /// Stops the torrent and everything else, and waits until storage has
    /// closed its database.
    pub async fn stop(self, torrent: TorrentHandle) {
        self.mesh.stop(&torrent).await;
        drop(torrent);
        self.endpoint_stop.cancel();
        drop(self.mesh);
        self.storage_stop.cancel();
        self.storage.stopped().await;
    }
}

/// Polls `t`'s status every 20 ms until `ok` holds; panics with `what` and
/// the last status after `limit`.
pub async fn wait_status(
    what: &str,
    limit: Duration,
    t: &TorrentHandle,
    mut ok: impl FnMut(&TorrentStatus) -> bool,
) -> TorrentStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = t.status().await.unwrap();
        if ok(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?}: {what}; last status: have {} of {}, downloaded {}, failed {}",
            s.have,
            s.pieces,
            s.pieces_downloaded,
            s.pieces_failed
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
