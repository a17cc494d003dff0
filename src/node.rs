//! Starting and stopping a node: identity, the tracker role, gossip, the
//! torrent manager (storage, QUIC mesh, swarms and announcers), the HTTP
//! server (tracker facade, REST API, metrics) and the allow-list watcher,
//! all owned by one [`Node`] and stopped by one cancellation token.
//!
//! Invariants: every task is owned here and aborted if the node is dropped;
//! `shutdown` stops the torrents first (announcing `stopped` while our own
//! tracker still answers), then stops accepting work, lets open requests
//! finish, flushes the gossip outbox, and returns within a bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::gossip::{self, GossipHandle, GossipSetup};
use crate::http::{self, AppState};
use crate::identity;
use crate::torrents::{Torrents, TorrentsSetup};
use crate::tracker::{read_allow_list, Tracker};

/// How often the announce URLs of tracker nodes are re-read from gossip.
const TRACKER_URLS_EVERY: Duration = Duration::from_secs(2);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The identity key could not be loaded or made.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The HTTP address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpListen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Gossip could not start.
    #[error(transparent)]
    Gossip(#[from] gossip::GossipError),
    /// The allow-list file is unreadable or malformed.
    #[error("allow-list: {0}")]
    AllowList(#[from] crate::tracker::AllowListError),
    /// The torrent manager (storage, QUIC) could not start.
    #[error(transparent)]
    Torrents(#[from] crate::torrents::TorrentsError),
    /// The API token file is unreadable or holds no usable token.
    #[error("{0:#}")]
    ApiToken(anyhow::Error),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// The tracker role's state, when enabled.
    pub tracker: Option<Arc<Tracker>>,
    /// Replication status from the gossip actor.
    pub replication: gossip::SharedStatus,
    /// The gossip actor's inbox.
    pub gossip_tx: tokio::sync::mpsc::Sender<gossip::GossipCommand>,
    /// The torrent manager, when the mesh is enabled.
    pub torrents: Option<Torrents>,
    gossip: Option<GossipHandle>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A 64-bit id for this node's writes in the hybrid logical clock, taken
/// from its stable peer id so restarts keep it.
fn node_id(peer: &libp2p::PeerId) -> u64 {
    let b = peer.to_bytes();
    let d = blake3::hash(&b);
    u64::from_le_bytes(d.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

impl Node {
    /// Starts a node. `http` is an already-bound listener when the caller
    /// has one (tests), otherwise the config's address is bound.
    pub async fn start(cfg: Config, http: Option<TcpListener>) -> Result<Node, NodeError> {
        // First, so that a bad token file stops the node before anything
        // is bound or started.
        let api_token = match &cfg.http.api_token_file {
            Some(p) => Some(http::token::ApiToken::read(p).map_err(NodeError::ApiToken)?),
            None => None,
        };
        let key = identity::load_or_create(&cfg.data_dir)?;
        let peer = key.public().to_peer_id();
        let listener = match http {
            Some(l) => l,
            None => TcpListener::bind(cfg.http.listen).await.map_err(|source| {
                NodeError::HttpListen {
                    addr: cfg.http.listen,
                    source,
                }
            })?,
        };
        let http_addr = listener
            .local_addr()
            .map_err(|source| NodeError::HttpListen {
                addr: cfg.http.listen,
                source,
            })?;
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let tracker = cfg.tracker.enabled.then(|| {
            let random = rand_u64();
            Arc::new(Tracker::new(
                &cfg.tracker,
                &cfg.gossip,
                node_id(&peer),
                random,
            ))
        });
        if let (Some(t), Some(path)) = (&tracker, &cfg.tracker.allow_list) {
            t.set_allow_list(Some(read_allow_list(path)?));
            tasks.push(tokio::spawn(watch_allow_list(
                t.clone(),
                path.clone(),
                Duration::from_secs(cfg.tracker.allow_list_reload_secs.max(1)),
                shutdown.clone(),
            )));
        }

        let gossip = gossip::spawn(
            GossipSetup {
                cfg: cfg.gossip.clone(),
                key: key.clone(),
                tracker_role: tracker.is_some(),
                http: Some(http_addr),
            },
            tracker.clone(),
            shutdown.clone(),
        )
        .await?;

        let torrents = if cfg.mesh.enabled {
            let (urls_tx, urls_rx) = tokio::sync::watch::channel(Vec::new());
            tasks.push(tokio::spawn(watch_tracker_urls(
                gossip.status.clone(),
                tracker.is_some().then_some(http_addr),
                urls_tx,
                shutdown.clone(),
            )));
            let t = Torrents::start(TorrentsSetup {
                data_dir: cfg.data_dir.clone(),
                cfg: cfg.mesh.clone(),
                keypair: key,
                gossip_trackers: Some(urls_rx),
            })
            .await?;
            crate::logging::stdout_line(format_args!("quic listening on {}", t.listen_addr()));
            Some(t)
        } else {
            None
        };

        if api_token.is_none() && !http_addr.ip().is_loopback() {
            warn!(%http_addr, "the REST API is open to anyone who can reach this address: set http.api_token_file");
        }
        let state = AppState {
            api_token,
            tracker: tracker.clone(),
            replication: gossip.status.clone(),
            started_ms: crate::tracker::WallClock::new(cfg.gossip.clock_offset_ms).now_ms(),
            wall: crate::tracker::WallClock::new(cfg.gossip.clock_offset_ms),
            torrents: torrents.clone(),
            http_addr,
        };
        tasks.push(tokio::spawn(http::serve(
            listener,
            state,
            cfg.http.clone(),
            shutdown.clone(),
        )));
        crate::logging::stdout_line(format_args!("http listening on {http_addr}"));
        info!(%peer, %http_addr, tracker = tracker.is_some(), "node started");
        Ok(Node {
            http_addr,
            tracker,
            replication: gossip.status.clone(),
            gossip_tx: gossip.tx.clone(),
            torrents,
            gossip: Some(gossip),
            shutdown,
            tasks,
        })
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the node and waits, at most `grace`, for its tasks.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(t) = self.torrents.take() {
            if tokio::time::timeout(grace, t.stop()).await.is_err() {
                warn!("torrents took longer than {grace:?} to stop");
            }
        }
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let gossip = self.gossip.take();
        let all = async move {
            for t in tasks {
                let _ = t.await;
            }
            if let Some(g) = gossip {
                g.join().await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("shutdown took longer than {grace:?}; stopping anyway");
        }
    }
}

async fn watch_allow_list(
    t: Arc<Tracker>,
    path: std::path::PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = mtime(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = mtime(&path);
        if now == last {
            continue;
        }
        last = now;
        match read_allow_list(&path) {
            Ok(set) => {
                info!(entries = set.len(), "allow-list reloaded");
                t.set_allow_list(Some(set));
            }
            // Keep the old list: a half-edited file must not open or close
            // the tracker by accident.
            Err(e) => warn!(error = %e, "allow-list not reloaded"),
        }
    }
}

/// Keeps `tx` holding the announce URLs of the tracker nodes gossip knows
/// (and our own, when we carry the role), sorted, changed only when they
/// change. A member advertising an unspecified HTTP address (`0.0.0.0`)
/// is reached at the host its gossip connection came from.
async fn watch_tracker_urls(
    status: gossip::SharedStatus,
    own: Option<SocketAddr>,
    tx: tokio::sync::watch::Sender<Vec<String>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TRACKER_URLS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut urls: Vec<String> = own.map(|a| announce_url(a, None)).into_iter().collect();
        {
            let s = status.lock().unwrap_or_else(|p| p.into_inner());
            for p in s.peers.values().filter(|p| p.tracker) {
                let Some(http) = p.http.as_deref().and_then(|h| h.parse::<SocketAddr>().ok())
                else {
                    continue;
                };
                urls.push(announce_url(http, p.addr.as_deref()));
            }
        }
        urls.sort();
        urls.dedup();
        tx.send_if_modified(|cur| {
            if *cur == urls {
                false
            } else {
                *cur = urls;
                true
            }
        });
    }
}

/// `http://ADDR/announce`; an unspecified IP becomes the host of
/// `gossip_addr` (a multiaddr), or loopback for ourselves.
fn announce_url(http: SocketAddr, gossip_addr: Option<&str>) -> String {
    let mut addr = http;
    if http.ip().is_unspecified() {
        let host = gossip_addr
            .and_then(|m| m.split('/').nth(2))
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        addr.set_ip(host.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])));
    }
    format!("http://{addr}/announce")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::announce_url;

    #[test]
    fn tracker_urls_use_the_gossip_host_for_unspecified_addresses() {
        let a = "10.1.2.3:7880".parse().unwrap();
        assert_eq!(announce_url(a, None), "http://10.1.2.3:7880/announce");
        let any = "0.0.0.0:7880".parse().unwrap();
        assert_eq!(
            announce_url(any, Some("/ip4/198.18.0.7/tcp/7881")),
            "http://198.18.0.7:7880/announce"
        );
        assert_eq!(announce_url(any, None), "http://127.0.0.1:7880/announce");
    }
}
