//! What `shoal seed` and `shoal fetch` share: one node's storage, QUIC
//! endpoint (with the node's rate limits, set once when it opens) and
//! mesh, one torrent on it, and the announcer; and stopping them in order
//! (announce `stopped`, close connections, close storage).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use libp2p::identity::Keypair;
use shoal::announce::{AnnounceConfig, AnnouncerHandle};
use shoal::storage::{Storage, StorageConfig, StorageHandle};
use shoal::swarm::{Mesh, Role, StartTorrent, TorrentHandle};
use shoal::transport::{install_crypto_provider, Endpoint, TransportConfig};
use shoal_proto::swarm::SwarmConfig;
use shoal_proto::wire::CloseCode;
use shoal_proto::Metainfo;
use tokio_util::sync::CancellationToken;

/// Default QUIC listen address of the one-shot commands.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7882";

/// Bound on the `stopped` announce and the connection close at exit.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The flags `shoal seed` and `shoal fetch` share: where the node keeps
/// its state, where it listens, and its rate limits.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Directory for the node's key and storage database.
    #[arg(
        long,
        env = "SHOAL_DATA_DIR",
        value_name = "DIR",
        default_value = "shoal-data"
    )]
    pub data_dir: PathBuf,
    /// QUIC (UDP) listen address.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Upload limit of the node in bytes per second, such as 500K or 10M
    /// (binary units: 1M is 1 MiB/s) [default: unlimited].
    #[arg(long, value_name = "RATE", value_parser = super::parse_size)]
    pub max_upload_rate: Option<u64>,
    /// Download limit of the node in bytes per second, such as 500K or 10M
    /// [default: unlimited].
    #[arg(long, value_name = "RATE", value_parser = super::parse_size)]
    pub max_download_rate: Option<u64>,
}

/// A running torrent and everything under it.
pub struct Running {
    pub mesh: Mesh,
    pub torrent: TorrentHandle,
    pub announcer: Option<AnnouncerHandle>,
    pub listen: SocketAddr,
    storage: StorageHandle,
    storage_stop: CancellationToken,
    endpoint_stop: CancellationToken,
}

/// Opens the node `node` describes (see [`open`]), starts `meta` as `role`
/// with content in `target_dir`, and starts announcing to `trackers`.
pub async fn start(
    node: &NodeArgs,
    meta: Metainfo,
    target_dir: PathBuf,
    role: Role,
    trackers: Vec<Vec<String>>,
) -> anyhow::Result<Running> {
    open(node)
        .await?
        .start(meta, target_dir, role, trackers)
        .await
}

/// A node's storage, endpoint and mesh, before any torrent runs on it (a
/// magnet link is resolved on it first).
pub struct Base {
    pub mesh: Mesh,
    pub listen: SocketAddr,
    storage: StorageHandle,
    storage_stop: CancellationToken,
    endpoint_stop: CancellationToken,
}

/// Opens storage in the node's data directory, binds its listen address
/// and applies its rate limits: the one place `shoal seed` and `shoal
/// fetch` set them.
pub async fn open(node: &NodeArgs) -> anyhow::Result<Base> {
    let (data_dir, listen) = (node.data_dir.as_path(), node.listen);
    install_crypto_provider();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("{}: cannot create", data_dir.display()))?;
    let keypair: Keypair = shoal::identity::load_or_create(data_dir)?;
    let storage_stop = CancellationToken::new();
    let storage = Storage::spawn(data_dir, StorageConfig::default(), storage_stop.clone())
        .await
        .with_context(|| format!("{}: cannot open storage", data_dir.display()))?;
    let socket = UdpSocket::bind(listen).with_context(|| format!("cannot bind {listen}"))?;
    let listen = socket.local_addr()?;
    let endpoint_stop = CancellationToken::new();
    let transport = TransportConfig::default();
    let endpoint =
        Endpoint::from_socket(&keypair, socket, transport.clone(), endpoint_stop.clone())?;
    endpoint
        .rates()
        .set_node(node.max_upload_rate, node.max_download_rate);
    let mesh = Mesh::new(endpoint, storage.clone());
    Ok(Base {
        mesh,
        listen,
        storage,
        storage_stop,
        endpoint_stop,
    })
}

impl Base {
    /// Starts `meta` as `role` with content in `target_dir` and announces
    /// to `trackers`.
    pub async fn start(
        self,
        meta: Metainfo,
        target_dir: PathBuf,
        role: Role,
        trackers: Vec<Vec<String>>,
    ) -> anyhow::Result<Running> {
        let Base {
            mesh,
            listen,
            storage,
            storage_stop,
            endpoint_stop,
        } = self;
        let node_id = mesh.endpoint().node_id();
        let total = meta.info.total_length();
        let piece_length = meta.info.piece_length;
        let torrent = mesh
            .start(StartTorrent {
                metainfo: meta,
                target_dir,
                role,
                peers: Vec::new(),
                config: SwarmConfig::default(),
                seed: u64::from_le_bytes(node_id[..8].try_into().unwrap_or([0; 8])),
            })
            .await?;
        let announcer = if trackers.iter().all(|t| t.is_empty()) {
            tracing::warn!("the torrent names no tracker; waiting for peers to dial us");
            None
        } else {
            let cfg = AnnounceConfig::new(trackers, listen.port(), node_id, total, piece_length);
            Some(shoal::announce::start(torrent.clone(), cfg)?)
        };
        Ok(Running {
            mesh,
            torrent,
            announcer,
            listen,
            storage,
            storage_stop,
            endpoint_stop,
        })
    }
}

impl Running {
    /// Announces `stopped`, closes every connection and storage.
    pub async fn stop(self) {
        let Running {
            mesh,
            torrent,
            announcer,
            storage,
            storage_stop,
            endpoint_stop,
            ..
        } = self;
        if let Some(a) = announcer {
            let _ = tokio::time::timeout(STOP_GRACE, a.stop()).await;
        }
        mesh.stop(&torrent).await;
        drop(torrent);
        mesh.endpoint().close(CloseCode::Done);
        let _ = tokio::time::timeout(STOP_GRACE, mesh.endpoint().wait_idle()).await;
        endpoint_stop.cancel();
        drop(mesh);
        storage_stop.cancel();
        storage.stopped().await;
    }
}

/// Logs warnings and errors to stderr (`RUST_LOG` overrides).
pub fn init_logging() {
    shoal::logging::init(&shoal::config::LogConfig {
        format: shoal::config::LogFormat::Human,
        filter: "warn".into(),
    });
}

/// Installs the SIGINT and SIGTERM handlers now; the returned future ends
/// when either signal arrives.
pub fn watch_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Parses a duration such as `90`, `90s`, `5m` or `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Builds the tier list from `-t` flags: each flag a tier, commas inside
/// one flag make a tier of equals.
pub fn tiers(flags: &[String]) -> Vec<Vec<String>> {
    flags
        .iter()
        .map(|t| {
            t.split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The torrent's tracker tiers: `announce-list`, or else `announce`.
pub fn torrent_tiers(meta: &Metainfo) -> Vec<Vec<String>> {
    if !meta.announce_list.is_empty() {
        meta.announce_list.clone()
    } else {
        meta.announce.iter().map(|a| vec![a.clone()]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn tracker_flags_make_tiers() {
        let t = tiers(&["a,b".into(), "c".into(), ",".into()]);
        assert_eq!(t, vec![vec!["a".to_string(), "b".into()], vec!["c".into()]]);
    }
}
