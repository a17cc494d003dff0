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
//! A tracker's peers carry no node id, but the swarm dials a node id (the
//! key its TLS must match). So each new address is probed once: a bare
//! QUIC + TLS connection from a client-only endpoint that reads the peer's
//! certificate and closes before any shoal handshake. The address is then
//! handed to [`TorrentHandle::add_peer`] with the id it proved. Addresses
//! whose node is connected are skipped; the others are probed again on
//! every announce, which also retries dials that failed.
//!
//! Invariants this module keeps:
//! - Every network wait is bounded (connect, request, answer, probe), and
//!   an answer is read up to [`MAX_ANSWER`] bytes only.
//! - The interval between announces is the tracker's, clamped to
//!   [`AnnounceConfig::min_interval`]..[`AnnounceConfig::max_interval`]
//!   (and at most [`AnnounceConfig::leech_interval`] while incomplete).
//! - Nothing a tracker or probed peer sends panics; failures are logged.
//! - Dropping the [`AnnouncerHandle`] aborts the task (no `stopped`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use shoal_proto::tracker::client::{
    announce_query, announce_url, parse_announce_reply, AnnounceParams, AnnounceReply, Tiers,
};
use shoal_proto::tracker::Event;
use shoal_proto::wire::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

use crate::swarm::{PeerDial, TorrentHandle};
use crate::transport::{client_config, NodeCert, TransportConfig};

/// Largest tracker answer read.
pub const MAX_ANSWER: usize = 1 << 20;

/// Peers taken from one answer (we ask for 50).
const MAX_PEERS_PER_ANNOUNCE: usize = 200;

/// Probes in flight at once.
const PROBES_AT_ONCE: usize = 16;

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
    /// The torrent has no tracker.
    #[error("the torrent names no tracker")]
    NoTrackers,
    /// Setting up the probe endpoint failed.
    #[error("cannot set up peer probing: {0}")]
    Probe(String),
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

/// Starts announcing `torrent`. `keypair` is the node's (the probes present
/// its certificate), `transport` its transport config.
pub fn spawn(
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    keypair: &Keypair,
    transport: &TransportConfig,
) -> Result<AnnouncerHandle, AnnounceError> {
    if cfg.trackers.iter().all(|t| t.is_empty()) {
        return Err(AnnounceError::NoTrackers);
    }
    let cert = NodeCert::self_signed(keypair).map_err(|e| AnnounceError::Probe(e.to_string()))?;
    let client =
        client_config(&cert, transport).map_err(|e| AnnounceError::Probe(e.to_string()))?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(torrent, cfg, client, stop_rx));
    Ok(AnnouncerHandle {
        stop: Some(stop_tx),
        task: AbortOnDropHandle::new(task),
    })
}

struct State {
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    tiers: Tiers,
    client: quinn::ClientConfig,
    probe_v4: Option<quinn::Endpoint>,
    probe_v6: Option<quinn::Endpoint>,
    known: HashMap<SocketAddr, NodeId>,
}

async fn run(
    torrent: TorrentHandle,
    cfg: AnnounceConfig,
    client: quinn::ClientConfig,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut st = State {
        tiers: Tiers::new(cfg.trackers.clone()),
        torrent,
        cfg,
        client,
        probe_v4: None,
        probe_v6: None,
        known: HashMap::new(),
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
                st.add_peers(&reply.peers).await;
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

impl State {
    /// One announce, tier by tier with fail-over; the tracker that answers
    /// moves to the front of its tier.
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
        let query = announce_query(&params);
        let mut last = AnnounceError::NoTrackers;
        // proto's `Tiers` decides the order (BEP 12); this only talks HTTP.
        for (tier, index, tracker) in self.tiers.attempts() {
            let url = announce_url(&tracker, &query);
            match http_get(&url, self.cfg.timeout).await {
                Ok(body) => match parse_announce_reply(&body) {
                    Ok(reply) => {
                        self.tiers.answered(tier, index);
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

    /// Probes every address whose node is not connected yet (a few at a
    /// time) and hands the swarm each node that proved its id.
    async fn add_peers(&mut self, peers: &[SocketAddr]) {
        let connected: HashSet<NodeId> = match self.torrent.status().await {
            Ok(s) => s.peers.into_iter().collect(),
            Err(_) => return,
        };
        let mut todo = Vec::new();
        for &addr in peers.iter().take(MAX_PEERS_PER_ANNOUNCE) {
            if matches!(self.known.get(&addr), Some(id) if connected.contains(id)) {
                continue;
            }
            // Re-probed each time it is not connected: a node restarted at
            // the same address has a new id, and a stale one would never
            // pass the dial's identity check.
            let ep = match self.probe_endpoint(addr) {
                Ok(ep) => ep,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cannot probe");
                    continue;
                }
            };
            todo.push(probe(ep, self.client.clone(), addr, self.cfg.timeout));
        }
        let mut results = futures::stream::iter(todo).buffer_unordered(PROBES_AT_ONCE);
        let ours = self.cfg.node_id;
        while let Some((addr, res)) = results.next().await {
            let node_id = match res {
                Ok(id) => id,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "probe failed");
                    self.known.remove(&addr);
                    continue;
                }
            };
            self.known.insert(addr, node_id);
            if node_id == ours || connected.contains(&node_id) {
                continue;
            }
            if self
                .torrent
                .add_peer(PeerDial { addr, node_id })
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The client-only endpoint probes of `addr`'s family go from.
    fn probe_endpoint(&mut self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let (slot, bind) = if addr.is_ipv4() {
            (
                &mut self.probe_v4,
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
            )
        } else {
            (
                &mut self.probe_v6,
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            )
        };
        if let Some(ep) = slot {
            return Ok(ep.clone());
        }
        let ep = quinn::Endpoint::client(bind)?;
        *slot = Some(ep.clone());
        Ok(ep)
    }
}

/// Learns the node id at `addr` from its TLS certificate, then closes the
/// connection before any shoal handshake.
async fn probe(
    ep: quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    timeout: Duration,
) -> (SocketAddr, Result<NodeId, String>) {
    let res = async {
        let connecting = ep
            .connect_with(client, addr, "shoal")
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let id = crate::transport::tls::peer_node_id(&conn).map_err(|e| e.to_string());
        conn.close(quinn::VarInt::from_u32(0), b"probe");
        id
    }
    .await;
    (addr, res)
}

/// A parsed `http://host[:port]/path?query`.
fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']')?;
        let port = match &v6[end + 1..] {
            "" => 80,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (v6[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 80),
        }
    };
    Some((host, port, path.to_string()))
}

/// GETs `url` over HTTP/1.1 and returns the body of a 200 answer.
async fn http_get(url: &str, timeout: Duration) -> Result<Vec<u8>, AnnounceError> {
    let (host, port, path) = split_url(url).ok_or_else(|| AnnounceError::BadUrl(url.into()))?;
    let short: Arc<str> = url.split('?').next().unwrap_or(url).into();
    let io = |source| AnnounceError::Io {
        url: short.to_string(),
        source,
    };
    let exchange = async {
        let mut s = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(io)?;
        let host_header = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: shoal/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
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
    parse_http(&raw).map_err(http)
}

/// The body of a complete HTTP/1.1 200 answer (`Content-Length`, chunked,
/// or to the end of the connection).
fn parse_http(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split(' ').nth(1).ok_or("no status code")?;
    if code != "200" {
        return Err("status is not 200");
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| "bad content-length")?);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    if chunked {
        return dechunk(body);
    }
    match length {
        Some(n) => body.get(..n).map(<[u8]>::to_vec).ok_or("body cut short"),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(..size).ok_or("chunk cut short")?;
        out.extend_from_slice(data);
        body = body.get(size + 2..).ok_or("chunk cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:7880/announce?x=1"),
            Some(("127.0.0.1".into(), 7880, "/announce?x=1".into()))
        );
        assert_eq!(
            split_url("http://t.example"),
            Some(("t.example".into(), 80, "/".into()))
        );
        assert_eq!(
            split_url("http://[::1]:81/a"),
            Some(("::1".into(), 81, "/a".into()))
        );
        assert_eq!(split_url("https://t/a"), None);
        assert_eq!(split_url("udp://t:1/a"), None);
        assert_eq!(split_url("http://t:x/a"), None);
    }

    #[test]
    fn http_answers_parse() {
        assert_eq!(
            parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            Ok(b"abcde".to_vec())
        );
        assert!(parse_http(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err()
        );
        assert!(parse_http(b"garbage").is_err());
    }

    #[test]
    fn peer_ids_come_from_node_ids() {
        let id = peer_id(&[0xAB; 32]);
        assert_eq!(&id, b"-SH0100-abababababab");
    }
}
