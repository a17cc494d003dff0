//! The announcer: one task per running torrent that tells the torrent's
//! HTTP trackers about us and feeds the peers they return to the swarm.
//!
//! proto builds the query and reads the answer
//! ([`shoal_proto::tracker::client`]); this module moves the bytes with a
//! tiny HTTP/1.1 GET over a tokio `TcpStream` (`http://` only).
//!
//! Trackers come in BEP 12 tiers: tried tier by tier, URL by URL; a dead
//! tracker fails over to the next URL, and a tracker that answers moves to
//! the front of its tier. The first announce says `started`, the one after
//! the torrent completes says `completed`, and [`AnnouncerHandle::stop`]
//! says `stopped`.
//!
//! When every tracker of the torrent fails, or it names none, the tracker
//! nodes learned by gossip ([`AnnounceConfig::gossip_trackers`]) are tried
//! as one last tier (proto's `Tiers::attempts_with_fallback`).
//!
//! A tracker's peers are bare addresses. They go straight to the torrent
//! ([`TorrentHandle::discovered`]), whose peer book dials them by address:
//! TLS then says which node answers, and the book keeps the retries.
//!
//! Invariants this module keeps:
//! - Every network wait is bounded (connect, request, answer), and an
//!   answer is read up to [`MAX_ANSWER`] bytes only.
//! - The interval between announces is the tracker's, clamped to
//!   [`AnnounceConfig::min_interval`]..[`AnnounceConfig::max_interval`]
//!   (and at most [`AnnounceConfig::leech_interval`] while incomplete).
//! - Nothing a tracker sends panics; failures are logged.
//! - Dropping the [`AnnouncerHandle`] aborts the task (no `stopped`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use shoal_proto::tracker::client::{
    announce_query, announce_url, parse_announce_reply, AnnounceParams, AnnounceReply, Tiers,
};
use shoal_proto::tracker::Event;
use shoal_proto::wire::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::http::client::{parse_response, Response, Url};
use crate::swarm::TorrentHandle;
use crate::transport::TransportConfig;

/// Largest tracker answer read.
pub const MAX_ANSWER: usize = 1 << 20;

/// Peers taken from one answer (we ask for 50).
const MAX_PEERS_PER_ANNOUNCE: usize = 200;

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The URL is not `http://host[:port]/path`.
    #[error("{0}: unsupported tracker URL (only http:// is)")]
    BadUrl(String),
    /// Connecting, writing or reading failed.
    #[error("{url}: {source}")]
    Io {
        /// The tracker.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The tracker took too long.
    #[error("{0}: timed out")]
    Timeout(String),
    /// The HTTP answer is not one we can read.
    #[error("{url}: bad HTTP answer: {why}")]
    Http {
        /// The tracker.
        url: String,
        /// Why.
        why: String,
    },
    /// The tracker answered, but with a failure or garbage.
    #[error("{url}: {source}")]
    Reply {
        /// The tracker.
        url: String,
        /// What proto made of it.
        source: shoal_proto::tracker::client::ReplyError,
    },
    /// The torrent has no tracker, and no tracker node is known by gossip.
    #[error("the torrent names no tracker")]
    NoTrackers,
}

/// How the announcer runs.
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    /// Tracker tiers, in order (BEP 12).
    pub trackers: Vec<Vec<String>>,
    /// Our QUIC port, announced as `port`.
    pub port: u16,
    /// Our node id; the peer id is derived from it.
    pub node_id: NodeId,
    /// The torrent's total length, for `left`.
    pub total_length: u64,
    /// Its piece length, for `left`.
    pub piece_length: u64,
    /// Shortest wait between announces, whatever the tracker says.
    pub min_interval: Duration,
    /// Longest wait between announces, whatever the tracker says.
    pub max_interval: Duration,
    /// Longest wait while the torrent is incomplete, so a leecher that
    /// started before any seed finds one soon.
    pub leech_interval: Duration,
    /// Wait after every tracker failed.
    pub retry: Duration,
    /// Bound on one HTTP exchange (connect, send, answer).
    pub timeout: Duration,
    /// Announce URLs of tracker nodes learned by gossip: the last tier,
    /// tried when every tracker of the torrent failed or it names none.
    pub gossip_trackers: Option<watch::Receiver<Vec<String>>>,
}

impl AnnounceConfig {
    /// Defaults for `trackers`, `port`, `node_id` and the torrent's shape.
    pub fn new(
        trackers: Vec<Vec<String>>,
        port: u16,
        node_id: NodeId,
        total_length: u64,
        piece_length: u64,
    ) -> AnnounceConfig {
        AnnounceConfig {
            trackers,
            port,
            node_id,
            total_length,
            piece_length,
            min_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(300),
            leech_interval: Duration::from_secs(30),
            retry: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            gossip_trackers: None,
        }
    }
}

/// The peer id we announce: `-SH0100-` and 12 hex digits of the node id.
pub fn peer_id(node: &NodeId) -> [u8; 20] {
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(b"-SH0100-");
    let hex = shoal_proto::infohash::hex(&node[..6]);
    id[8..].copy_from_slice(&hex.as_bytes()[..12]);
    id
}

/// The running announcer.
#[derive(Debug)]
pub struct AnnouncerHandle {
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: AbortOnDropHandle<()>,
}

impl AnnouncerHandle {
    /// Announces `stopped` (bounded by the config's timeout per tracker)
    /// and ends the task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let (done, rx) = oneshot::channel();
            if tx.send(done).is_ok() {
                let _ = rx.await;
            }
        }
        self.task.abort();
    }
}

/// Starts announcing `torrent`. It needs a tracker: one in
/// `cfg.trackers`, or a gossip watch that may name some later.
pub fn start(
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
) -> Result<AnnouncerHandle, AnnounceError> {
    if cfg.trackers.iter().all(|t| t.is_empty()) && cfg.gossip_trackers.is_none() {
        return Err(AnnounceError::NoTrackers);
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(torrent, cfg, stop_rx));
    Ok(AnnouncerHandle {
        stop: Some(stop_tx),
        task: AbortOnDropHandle::new(task),
    })
}

/// [`start`] with the arguments the announcer took when it probed peers
/// itself; the key and transport config are no longer needed (the swarm
/// dials tracker addresses by address) and are ignored. Kept so callers
/// written against it compile; prefer [`start`].
pub fn spawn(
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    _keypair: &Keypair,
    _transport: &TransportConfig,
) -> Result<AnnouncerHandle, AnnounceError> {
    start(torrent, cfg)
}

async fn run(
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut st = State {
        tiers: Tiers::new(cfg.trackers.clone()),
        torrent,
        cfg,
    };
    let mut event = Event::Started;
    let mut completed_sent = st.torrent.is_complete();
    loop {
        let wait = match st.announce(event).await {
            Ok(reply) => {
                event = Event::None;
                let secs = reply
                    .interval
                    .unwrap_or(0)
                    .max(reply.min_interval.unwrap_or(0));
                let mut wait = Duration::from_secs(secs.into())
                    .clamp(st.cfg.min_interval, st.cfg.max_interval);
                if !st.torrent.is_complete() {
                    wait = wait.min(st.cfg.leech_interval.max(st.cfg.min_interval));
                }
                let peers: Vec<SocketAddr> = reply
                    .peers
                    .into_iter()
                    .take(MAX_PEERS_PER_ANNOUNCE)
                    .collect();
                tracing::debug!(peers = peers.len(), "announce answered");
                if st.torrent.discovered(peers).await.is_err() {
                    return;
                }
                wait
            }
            Err(e) => {
                tracing::warn!(error = %e, "announce failed");
                st.cfg.retry
            }
        };
        let torrent = st.torrent.clone();
        let just_completed = async {
            if completed_sent {
                std::future::pending::<()>().await;
            }
            let _ = torrent.wait_complete().await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = just_completed => {
                completed_sent = true;
                event = Event::Completed;
            }
            done = &mut stop => {
                if let Ok(done) = done {
                    if let Err(e) = st.announce(Event::Stopped).await {
                        tracing::debug!(error = %e, "stopped announce failed");
                    }
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

struct State {
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    tiers: Tiers,
}

impl State {
    /// One announce with the torrent's current counts.
    async fn announce(&mut self, event: Event) -> Result<AnnounceReply, AnnounceError> {
        let (left, downloaded) = match self.torrent.status().await {
            Ok(s) if s.complete => (0, u64::from(s.pieces_downloaded) * self.cfg.piece_length),
            Ok(s) => {
                let have = u64::from(s.have).saturating_mul(self.cfg.piece_length);
                (
                    self.cfg.total_length.saturating_sub(have).max(1),
                    u64::from(s.pieces_downloaded) * self.cfg.piece_length,
                )
            }
            Err(_) => (self.cfg.total_length, 0),
        };
        let params = AnnounceParams {
            info_hash: self.torrent.infohash(),
            peer_id: peer_id(&self.cfg.node_id),
            port: self.cfg.port,
            uploaded: 0,
            downloaded,
            left,
            event,
            numwant: Some(50),
        };
        let gossip = self
            .cfg
            .gossip_trackers
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default();
        announce_tiers(&mut self.tiers, &gossip, &params, self.cfg.timeout).await
    }
}

/// One announce of `params`, tier by tier with fail-over and `fallback`
/// (gossip-learned trackers) as the last tier; the tracker that answers
/// moves to the front of its tier. Also what resolving a magnet link uses
/// to find peers.
pub(crate) async fn announce_tiers(
    tiers: &mut Tiers,
    fallback: &[String],
    params: &AnnounceParams,
    timeout: Duration,
) -> Result<AnnounceReply, AnnounceError> {
    let query = announce_query(params);
    let mut last = AnnounceError::NoTrackers;
    // proto's `Tiers` decides the order (BEP 12); this only talks HTTP.
    for (tier, index, tracker) in tiers.attempts_with_fallback(fallback) {
        let url = announce_url(&tracker, &query);
        match http_get(&url, timeout).await {
            Ok(body) => match parse_announce_reply(&body) {
                Ok(reply) => {
                    tiers.answered(tier, index);
                    if let Some(w) = &reply.warning {
                        tracing::warn!(%tracker, warning = %w, "tracker warning");
                    }
                    return Ok(reply);
                }
                Err(source) => {
                    last = AnnounceError::Reply {
                        url: tracker,
                        source,
                    }
                }
            },
            Err(e) => last = e,
        }
        tracing::debug!(error = %last, "tracker failed, trying the next");
    }
    Err(last)
}

/// GETs `url` over HTTP/1.1 and returns the body of a 200 answer.
async fn http_get(url: &str, timeout: Duration) -> Result<Vec<u8>, AnnounceError> {
    let u = Url::parse(url).ok_or_else(|| AnnounceError::BadUrl(url.into()))?;
    let short: Arc<str> = url.split('?').next().unwrap_or(url).into();
    let io = |source| AnnounceError::Io {
        url: short.to_string(),
        source,
    };
    let exchange = async {
        let mut s = TcpStream::connect((u.host.as_str(), u.port))
            .await
            .map_err(io)?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shoal/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            u.path,
            u.authority(),
            env!("CARGO_PKG_VERSION")
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(io)?;
        Ok(buf)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AnnounceError::Timeout(short.to_string()))??;
    let http = |why: &str| AnnounceError::Http {
        url: short.to_string(),
        why: why.into(),
    };
    if raw.len() > MAX_ANSWER {
        return Err(http("answer too large"));
    }
    match parse_response(&raw).map_err(http)? {
        Response { status: 200, body } => Ok(body),
        _ => Err(http("status is not 200")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AnnounceParams {
        AnnounceParams {
            info_hash: shoal_proto::InfoHash([1; 20]),
            peer_id: peer_id(&[2; 32]),
            port: 7882,
            uploaded: 0,
            downloaded: 0,
            left: 1,
            event: Event::None,
            numwant: Some(50),
        }
    }

    #[tokio::test]
    async fn gossip_trackers_answer_when_the_torrents_own_fail() {
        // A port nobody listens on: the torrent's only tracker is dead.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = live.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = b"d8:intervali60e5:peers6:\x7f\x00\x00\x01\x1e\xd2e";
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body).await.unwrap();
            request
        });
        let mut tiers = Tiers::new(vec![vec![format!("http://{dead}/announce")]]);
        let timeout = Duration::from_secs(5);
        assert!(
            announce_tiers(&mut tiers, &[], &params(), timeout)
                .await
                .is_err(),
            "no fallback: the dead tracker is all there is"
        );
        let gossip = vec![format!("http://{live_addr}/announce")];
        let reply = announce_tiers(&mut tiers, &gossip, &params(), timeout)
            .await
            .unwrap();
        assert_eq!(reply.peers, vec!["127.0.0.1:7890".parse().unwrap()]);
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /announce?info_hash="), "{request}");
        // The torrent's own tier is unchanged: it is tried first next time.
        assert_eq!(tiers.as_slice(), &[vec![format!("http://{dead}/announce")]]);
    }

    #[test]
    fn peer_ids_come_from_node_ids() {
        let id = peer_id(&[0xAB; 32]);
        assert_eq!(&id, b"-SH0100-abababababab");
    }
}
