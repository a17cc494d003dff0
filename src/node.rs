//! Starting and stopping a node: identity, the tracker role, gossip, the
//! HTTP server and the allow-list watcher, all owned by one [`Node`] and
//! stopped by one cancellation token.
//!
//! Invariants: every task is owned here and aborted if the node is dropped;
//! `shutdown` stops accepting work, lets open requests finish, flushes the
//! gossip outbox, and returns within a bounded time.

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
use crate::tracker::{read_allow_list, Tracker};

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
                key,
                tracker_role: tracker.is_some(),
                http: Some(http_addr),
            },
            tracker.clone(),
            shutdown.clone(),
        )
        .await?;

        let state = AppState {
            tracker: tracker.clone(),
            replication: gossip.status.clone(),
            started_ms: crate::tracker::WallClock::new(cfg.gossip.clock_offset_ms).now_ms(),
            wall: crate::tracker::WallClock::new(cfg.gossip.clock_offset_ms),
        };
        tasks.push(tokio::spawn(http::serve(
            listener,
            state,
            cfg.http.clone(),
            shutdown.clone(),
        )));
        println!("http listening on {http_addr}");
        info!(%peer, %http_addr, tracker = tracker.is_some(), "node started");
        Ok(Node {
            http_addr,
            tracker,
            replication: gossip.status.clone(),
            gossip_tx: gossip.tx.clone(),
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
