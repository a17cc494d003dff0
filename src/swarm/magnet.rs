//! Resolving a magnet link: find peers of the torrent (the link's `tr`
//! trackers, then tracker nodes learned by gossip, and its `x.pe`
//! addresses), dial them by address, fetch the info dictionary in
//! metadata pieces (`PROTOCOL.md` section 6) and hand back a [`Metainfo`]
//! whose infohash is the link's.
//!
//! Each peer is asked for the whole dictionary on its own, with its own
//! [`MetadataAssembler`], so a dictionary that fails its SHA-1 check
//! blames exactly the peer that sent it: that peer is not asked again.
//! A few peers are asked at once; the first good answer wins.
//!
//! Invariants this module keeps:
//! - The result's `info_bytes` hash to the magnet's infohash and parse as a
//!   checked info dictionary (proto's assembler refuses anything else).
//! - Everything is bounded by the caller's timeout, each peer by
//!   [`PEER_TIMEOUT`], and memory by proto's metadata limits.
//! - Every connection opened here is closed (or dropped, which closes it)
//!   before this returns.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::tracker::client::{AnnounceParams, Tiers};
use shoal_proto::tracker::Event;
use shoal_proto::wire::{
    CloseCode, FetchedMetadata, HandshakeError, Message, MetadataAssembler, MetadataError,
};
use shoal_proto::{InfoHash, Magnet, Metainfo};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Mesh;
use crate::transport::{ConnectError, Endpoint, Session, TransportEvent};

/// Longest a single peer may take to deliver the whole dictionary.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// Peers asked at once.
const PARALLEL: usize = 4;
/// Wait between announces while no peer has answered.
const REANNOUNCE: Duration = Duration::from_secs(3);
/// Bound on one tracker exchange.
const TRACKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a magnet link could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MagnetError {
    /// No peer delivered a dictionary matching the infohash in time.
    #[error(
        "no peer delivered the metadata of {info_hash} within {timeout:?} \
         ({peers} peers tried, {bad} sent metadata that failed its check){last}"
    )]
    Timeout {
        /// The magnet's infohash.
        info_hash: InfoHash,
        /// The caller's limit.
        timeout: Duration,
        /// Peers dialled.
        peers: usize,
        /// Peers whose metadata did not hash to the infohash.
        bad: usize,
        /// The last thing that went wrong, for the message.
        last: String,
    },
    /// The dictionary hashes to the infohash but shoal refuses it (a path
    /// escaping the download directory, say). No peer can fix this.
    #[error("the torrent's metadata is not acceptable: {0}")]
    Refused(String),
}

/// How one peer's attempt ended.
enum PeerOutcome {
    Got(FetchedMetadata),
    /// Its dictionary failed the check: never asked again.
    Lied(String),
    /// Could not connect, refused, closed or too slow.
    Failed(String),
    /// The dictionary is genuine and unacceptable.
    Refused(String),
    /// The address is our own (a tracker lists us too).
    Itself,
}

/// Resolves `magnet` into a [`Metainfo`] through `mesh`'s endpoint, within
/// `timeout`. Trackers: the magnet's `tr` (one tier each, in order), then
/// `gossip_trackers`. The result lists the magnet's trackers as its
/// announce tiers.
pub async fn resolve_magnet(
    mesh: &Mesh,
    magnet: &Magnet,
    gossip_trackers: &[String],
    timeout: Duration,
) -> Result<Metainfo, MagnetError> {
    let endpoint = mesh.endpoint().clone();
    let deadline = Instant::now() + timeout;
    let ih = magnet.info_hash;
    let mut candidates: Vec<SocketAddr> = Vec::new();
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    for p in &magnet.peers {
        for a in resolve_host(p).await {
            if seen.insert(a) {
                candidates.push(a);
            }
        }
    }
    let trackers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    let mut tiers = Tiers::new(trackers.clone());
    let has_trackers = !tiers.is_empty() || !gossip_trackers.is_empty();
    let mut next_announce = Instant::now();
    let mut tasks: JoinSet<(SocketAddr, PeerOutcome)> = JoinSet::new();
    let mut liars: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut own: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut tried = 0usize;
    let mut last = String::new();
    loop {
        if has_trackers && Instant::now() >= next_announce && candidates.is_empty() {
            next_announce = Instant::now() + REANNOUNCE;
            let params = announce_params(&endpoint, magnet);
            let announce = crate::announce::announce_tiers(
                &mut tiers,
                gossip_trackers,
                &params,
                TRACKER_TIMEOUT,
            );
            match tokio::time::timeout_at(deadline, announce).await {
                Ok(Ok(reply)) => {
                    for a in reply.peers {
                        // An address is asked again on a later announce
                        // unless its peer lied.
                        if !liars.contains(&a) && !own.contains(&a) && !candidates.contains(&a) {
                            candidates.push(a);
                        }
                    }
                }
                Ok(Err(e)) => last = format!("; last error: {e}"),
                Err(_) => {}
            }
        }
        while tasks.len() < PARALLEL && !candidates.is_empty() {
            let addr = candidates.remove(0);
            tried += 1;
            let ep = endpoint.clone();
            tasks.spawn(async move { (addr, fetch_from(&ep, addr, ih).await) });
        }
        let wake = if has_trackers {
            next_announce.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                return Err(MagnetError::Timeout {
                    info_hash: ih,
                    timeout,
                    peers: tried,
                    bad: liars.len(),
                    last,
                });
            }
            () = tokio::time::sleep_until(wake), if tasks.is_empty() => {}
            Some(joined) = tasks.join_next() => {
                let Ok((addr, outcome)) = joined else { continue };
                match outcome {
                    PeerOutcome::Got(m) => return Ok(metainfo(m, ih, trackers)),
                    PeerOutcome::Refused(why) => return Err(MagnetError::Refused(why)),
                    PeerOutcome::Lied(why) => {
                        tracing::warn!(%addr, %why, "peer sent bad metadata; not asking it again");
                        liars.insert(addr);
                        last = format!("; last error: {addr}: {why}");
                    }
                    PeerOutcome::Itself => {
                        tried = tried.saturating_sub(1);
                        own.insert(addr);
                    }
                    PeerOutcome::Failed(why) => {
                        tracing::debug!(%addr, %why, "metadata fetch failed");
                        last = format!("; last error: {addr}: {why}");
                    }
                }
            }
        }
    }
}

/// What a magnet client announces: nothing downloaded, everything left.
fn announce_params(endpoint: &Endpoint, magnet: &Magnet) -> AnnounceParams {
    AnnounceParams {
        info_hash: magnet.info_hash,
        peer_id: crate::announce::peer_id(&endpoint.node_id()),
        port: endpoint.local_addr().map_or(0, |a| a.port()),
        uploaded: 0,
        downloaded: 0,
        // The size is unknown until the metadata arrives; any non-zero
        // value makes us a leecher in the tracker's eyes.
        left: magnet.length.filter(|l| *l > 0).unwrap_or(1 << 30),
        event: Event::None,
        numwant: Some(50),
    }
}

/// `host:port` from an `x.pe` parameter, looked up if it is a name.
async fn resolve_host(peer: &str) -> Vec<SocketAddr> {
    if let Ok(a) = peer.parse::<SocketAddr>() {
        return vec![a];
    }
    match tokio::time::timeout(TRACKER_TIMEOUT, tokio::net::lookup_host(peer)).await {
        Ok(Ok(addrs)) => addrs.take(4).collect(),
        _ => {
            tracing::debug!(%peer, "cannot resolve x.pe peer");
            Vec::new()
        }
    }
}

/// The whole metainfo around fetched metadata, its bytes kept exactly.
fn metainfo(m: FetchedMetadata, ih: InfoHash, trackers: Vec<Vec<String>>) -> Metainfo {
    let mut meta = Metainfo::new(m.info, trackers);
    meta.info_bytes = m.info_bytes;
    meta.info_hash = ih;
    meta
}

/// Asks the peer at `addr` for the whole dictionary.
async fn fetch_from(endpoint: &Endpoint, addr: SocketAddr, ih: InfoHash) -> PeerOutcome {
    match tokio::time::timeout(PEER_TIMEOUT, fetch_inner(endpoint, addr, ih)).await {
        Ok(o) => o,
        Err(_) => PeerOutcome::Failed(format!("no metadata within {PEER_TIMEOUT:?}")),
    }
}

async fn fetch_inner(endpoint: &Endpoint, addr: SocketAddr, ih: InfoHash) -> PeerOutcome {
    let failed = |e: ConnectError| PeerOutcome::Failed(e.to_string());
    let out = match endpoint.connect(addr, None).await {
        Ok(o) => o,
        Err(ConnectError::Handshake(HandshakeError::SelfConnection)) => return PeerOutcome::Itself,
        Err(e) => return failed(e),
    };
    let (events, mut rx) = mpsc::channel(64);
    let session = Session {
        opening: Message::HaveNone,
        geometry: None,
        events,
    };
    let conn = match out.handshake(ih, session).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let mut asm = MetadataAssembler::new(ih);
    let mut asked: BTreeSet<u32> = BTreeSet::new();
    let outcome = loop {
        // Ask for every piece still missing that is not asked yet: piece 0
        // first, the rest once piece 0 has said the size.
        let missing: Vec<u32> = asm.missing().filter(|p| !asked.contains(p)).collect();
        for piece in missing {
            if conn.send(Message::MetadataRequest { piece }).await.is_err() {
                break;
            }
            asked.insert(piece);
        }
        let Some(ev) = rx.recv().await else {
            break PeerOutcome::Failed("connection gone".into());
        };
        match ev {
            TransportEvent::Message {
                message:
                    Message::MetadataData {
                        piece,
                        total_size,
                        data,
                    },
                ..
            } => match asm.add(piece, total_size, &data) {
                Ok(Some(m)) => break PeerOutcome::Got(m),
                Ok(None) => {}
                Err(MetadataError::Info(e)) => break PeerOutcome::Refused(e.to_string()),
                Err(e) => break PeerOutcome::Lied(e.to_string()),
            },
            TransportEvent::Message {
                message: Message::MetadataReject { piece },
                ..
            } => break PeerOutcome::Failed(format!("refused metadata piece {piece}")),
            TransportEvent::Message { .. } | TransportEvent::Block { .. } => {}
            TransportEvent::Closed { reason, .. } => {
                break PeerOutcome::Failed(format!("closed: {reason:?}"));
            }
        }
    };
    conn.close(CloseCode::Done);
    outcome
}
