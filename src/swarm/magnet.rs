//! Resolving a magnet link: the I/O around proto's
//! [`MetadataFetch`](shoal_proto::magnet_fetch::MetadataFetch). This module
//! finds peers of the torrent (the link's `x.pe` addresses, its `tr`
//! trackers, then tracker nodes learned by gossip), opens the connections
//! and sends the metadata requests the machine asks for, and feeds back
//! what arrives and when. Which peer to ask, how many at once, how long
//! each may take, which peer is never asked again and when to give up are
//! the machine's decisions, as are the assembly and the SHA-1 check.
//!
//! Invariants this module keeps:
//! - The result's `info_bytes` hash to the magnet's infohash and parse as a
//!   checked info dictionary (proto refuses anything else).
//! - Each peer lives in one task that owns its connection; the machine's
//!   `Close` drops the task, which closes the connection. Every task ends
//!   before this returns.
//! - Everything is bounded by the caller's timeout, each peer by
//!   [`PEER_TIMEOUT`], and memory by proto's metadata limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::magnet_fetch::{FetchAction, FetchConfig, FetchError, MetadataFetch};
use shoal_proto::swarm::Time;
use shoal_proto::tracker::client::{AnnounceParams, Tiers};
use shoal_proto::tracker::Event;
use shoal_proto::wire::{FetchedMetadata, HandshakeError, Message, MAX_METADATA_PIECES};
use shoal_proto::{InfoHash, Magnet, Metainfo};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::Mesh;
use crate::transport::{ConnectError, Endpoint, Session, TransportEvent};

/// Longest a single peer may take to deliver the whole dictionary.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one tracker exchange.
const TRACKER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a peer's task reports.
enum PeerEvent {
    Connected,
    ConnectFailed(String),
    Itself,
    Data {
        piece: u32,
        total_size: u32,
        data: Vec<u8>,
    },
    Rejected(u32),
    Closed(String),
}

/// A peer's task and the way to hand it requests.
struct PeerTask {
    requests: mpsc::Sender<u32>,
    _task: AbortOnDropHandle<()>,
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
) -> Result<Metainfo, FetchError> {
    let endpoint = mesh.endpoint().clone();
    let epoch = Instant::now();
    let now = || Time::from_micros(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX));
    let ih = magnet.info_hash;
    let trackers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    let has_trackers = !trackers.is_empty() || !gossip_trackers.is_empty();
    let cfg = FetchConfig {
        peer_timeout: PEER_TIMEOUT,
        ..FetchConfig::default()
    };
    let mut fetch = MetadataFetch::new(ih, cfg, now(), timeout, has_trackers);
    let mut direct = Vec::new();
    for p in &magnet.peers {
        direct.extend(resolve_host(p).await);
    }
    fetch.add_peers(now(), &direct);

    let (events_tx, mut events) = mpsc::channel::<(SocketAddr, PeerEvent)>(256);
    let mut peers: HashMap<SocketAddr, PeerTask> = HashMap::new();
    let mut tiers = Some(Tiers::new(trackers.clone()));
    let mut announces: JoinSet<(Tiers, Result<Vec<SocketAddr>, String>)> = JoinSet::new();
    let mut bad = 0;
    loop {
        while let Some(action) = fetch.poll_action() {
            match action {
                FetchAction::Connect(addr) => {
                    let (requests, rx) = mpsc::channel(MAX_METADATA_PIECES as usize);
                    let task =
                        tokio::spawn(peer_task(endpoint.clone(), addr, ih, events_tx.clone(), rx));
                    let task = AbortOnDropHandle::new(task);
                    peers.insert(
                        addr,
                        PeerTask {
                            requests,
                            _task: task,
                        },
                    );
                }
                FetchAction::Request { peer, piece } => {
                    // The machine asks each piece of a peer at most once,
                    // and there are at most MAX_METADATA_PIECES of them.
                    if let Some(p) = peers.get(&peer) {
                        let _ = p.requests.try_send(piece);
                    }
                }
                FetchAction::Close(peer) => {
                    peers.remove(&peer);
                }
                FetchAction::Announce => {
                    let mut t = tiers.take().unwrap_or_else(|| Tiers::new(trackers.clone()));
                    let params = announce_params(&endpoint, magnet);
                    let fallback = gossip_trackers.to_vec();
                    announces.spawn(async move {
                        let r = crate::announce::announce_tiers(
                            &mut t,
                            &fallback,
                            &params,
                            TRACKER_TIMEOUT,
                        )
                        .await
                        .map(|reply| reply.peers)
                        .map_err(|e| e.to_string());
                        (t, r)
                    });
                }
            }
        }
        if let Some(out) = fetch.poll_outcome() {
            // Dropping the tasks closes every connection still open.
            peers.clear();
            announces.abort_all();
            return out.map(|m| metainfo(m, ih, trackers));
        }
        let wake = fetch
            .poll_timeout()
            .map_or(epoch + timeout, |t| epoch + t.saturating_since(Time::ZERO));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => fetch.handle_timeout(now()),
            Some((addr, ev)) = events.recv() => {
                let t = now();
                match ev {
                    PeerEvent::Connected => fetch.connected(t, addr),
                    PeerEvent::ConnectFailed(why) => {
                        tracing::debug!(%addr, %why, "metadata peer unreachable");
                        fetch.connect_failed(t, addr, &why);
                    }
                    PeerEvent::Itself => fetch.itself(t, addr),
                    PeerEvent::Data { piece, total_size, data } => {
                        fetch.data(t, addr, piece, total_size, &data);
                        if fetch.bad() > bad {
                            bad = fetch.bad();
                            tracing::warn!(%addr, "peer sent bad metadata; not asking it again");
                        }
                    }
                    PeerEvent::Rejected(piece) => fetch.rejected(t, addr, piece),
                    PeerEvent::Closed(why) => fetch.closed(t, addr, &why),
                }
            }
            Some(joined) = announces.join_next() => {
                let (t, r) = match joined {
                    Ok(done) => done,
                    Err(e) => (Tiers::new(trackers.clone()), Err(format!("announce task: {e}"))),
                };
                tiers = Some(t);
                fetch.announced(now(), r);
            }
        }
    }
}

/// One peer: connect and handshake, then send the requests it is handed
/// and report the metadata messages that come back, until its connection
/// closes or the task is dropped (which closes it).
async fn peer_task(
    endpoint: Endpoint,
    addr: SocketAddr,
    ih: InfoHash,
    report: mpsc::Sender<(SocketAddr, PeerEvent)>,
    mut requests: mpsc::Receiver<u32>,
) {
    let send = |ev: PeerEvent| {
        let report = report.clone();
        async move {
            let _ = report.send((addr, ev)).await;
        }
    };
    let out = match endpoint.connect(addr, None).await {
        Ok(o) => o,
        Err(ConnectError::Handshake(HandshakeError::SelfConnection)) => {
            return send(PeerEvent::Itself).await
        }
        Err(e) => return send(PeerEvent::ConnectFailed(e.to_string())).await,
    };
    let (events, mut rx) = mpsc::channel(64);
    let session = Session {
        opening: Message::HaveNone,
        geometry: None,
        events,
    };
    let conn = match out.handshake(ih, session).await {
        Ok(c) => c,
        Err(ConnectError::Handshake(HandshakeError::SelfConnection)) => {
            return send(PeerEvent::Itself).await
        }
        Err(e) => return send(PeerEvent::ConnectFailed(e.to_string())).await,
    };
    send(PeerEvent::Connected).await;
    loop {
        tokio::select! {
            Some(piece) = requests.recv() => {
                // A failed send shows up as the connection's Closed event.
                let _ = conn.send(Message::MetadataRequest { piece }).await;
            }
            ev = rx.recv() => match ev {
                None => return send(PeerEvent::Closed("connection gone".into())).await,
                Some(TransportEvent::Message {
                    message: Message::MetadataData { piece, total_size, data },
                    ..
                }) => send(PeerEvent::Data { piece, total_size, data }).await,
                Some(TransportEvent::Message {
                    message: Message::MetadataReject { piece },
                    ..
                }) => send(PeerEvent::Rejected(piece)).await,
                Some(TransportEvent::Message { .. } | TransportEvent::Block { .. }) => {}
                Some(TransportEvent::Closed { reason, .. }) => {
                    return send(PeerEvent::Closed(format!("{reason:?}"))).await;
                }
            },
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
