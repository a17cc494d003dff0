//! The per-torrent swarm actor: owns one proto [`Swarm`], the connections
//! of its peers and the buffers of pieces being downloaded.
//!
//! One `select!` loop takes transport events, the proto timer, finished
//! connects, serves, hashes and writes, and the inbox. After every input it
//! drains [`Swarm::poll_action`] completely.
//!
//! Invariants this module keeps:
//! - The loop never awaits anything a peer controls: messages go through a
//!   per-peer writer task (bounded queue; a peer that lets it fill is
//!   dropped), blocks are served and pieces hashed and written in tasks
//!   whose results come back as inputs.
//! - A piece's bytes are written only after `check_piece` said they match;
//!   a failed piece's buffer is dropped.
//! - Every task the actor starts lives in a `JoinSet` it owns, so dropping
//!   the actor aborts them all.
//! - Events of a connection that is no longer the peer's current one are
//!   ignored; events that beat their connect result to the loop are held
//!   and replayed once the handle is in, so no opening message is lost.
//! - A peer is registered with proto before its shoal handshake, so the
//!   handshake's opening message is the one proto chose; a failed connect
//!   unregisters it. A dial by bare address registers once TLS has said
//!   which node answers (`conns.rs`). At most one connection per peer: a
//!   simultaneous dial keeps the one the smaller node id dialed, on both
//!   sides.
//! - Which peers to dial, when to retry and what PEX sends are decided by
//!   proto's [`PeerBook`] and PEX rules; the actor reports every dial,
//!   connect and disconnect to the book.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_proto::discovery::{PeerBook, PexConfig, PexGate, PexSchedule};
use shoal_proto::metainfo::Info;
use shoal_proto::rng::Rng;
use shoal_proto::swarm::{
    Action, BlockOutcome, BlockRef, Message, PeerKey, Swarm, SwarmError, Time,
};
use shoal_proto::verify::check_piece;
use shoal_proto::wire::{self, CloseCode, NodeId};
use shoal_proto::InfoHash;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::mesh::Discovery;
use super::{peer_key, TorrentMessage, TorrentStatus};
use crate::storage::StorageHandle;
use crate::transport::{
    ConnId, ConnectError, ConnectionHandle, Delivery, Endpoint, Outbound, TransportEvent,
};

mod conns;

/// Messages queued per peer before the peer counts as not keeping up.
const PEER_OUTBOX: usize = 1024;
/// Blocks read and queued for sending at once, over all peers.
const SERVE_CONCURRENCY: usize = 64;
/// How often the peer book is tidied, PEX sent and due dials started.
const DISCOVERY_TICK: Duration = Duration::from_millis(500);
/// How long a stop waits for the pieces being written (a sync of a busy
/// disk can take seconds; a dead one must not hold the stop forever).
const WRITE_SETTLE: Duration = Duration::from_secs(10);
/// Capacity of the shared transport event channel.
const EVENTS: usize = 1024;
/// Events kept for a connection whose connect result is not in yet. The
/// peer cannot have sent much: it waits for our requests.
const EARLY_EVENTS: usize = 4096;

/// Everything the actor needs to run.
pub(crate) struct ActorParts {
    pub infohash: InfoHash,
    pub info: Arc<Info>,
    /// The info dictionary's exact bytes, for metadata requests.
    pub info_bytes: Arc<Vec<u8>>,
    pub swarm: Swarm,
    pub discovery: Discovery,
    /// Seed of the actor's own random choices (which peer to dial).
    pub seed: u64,
    pub endpoint: Endpoint,
    pub storage: StorageHandle,
    pub inbox: mpsc::Receiver<TorrentMessage>,
    pub complete: watch::Sender<bool>,
    pub cancel: CancellationToken,
    pub verify_pool: Arc<Semaphore>,
}

/// One peer the swarm knows, connected or connecting.
struct Peer {
    node: NodeId,
    /// Which connect attempt this entry waits for; stale results are
    /// ignored.
    attempt: u64,
    /// We dialed it.
    dialed: bool,
    /// The connect task, until it finishes.
    connect: Option<AbortHandle>,
    /// The first message, taken from proto's actions, for the handshake.
    opening: Option<wire::Message>,
    /// Messages for the peer; the writer task drains it once connected.
    outbox: mpsc::Sender<wire::Message>,
    /// Taken by the writer task once the connection is up.
    outbox_rx: Option<mpsc::Receiver<wire::Message>>,
    conn: Option<Arc<ConnectionHandle>>,
    /// Events that raced ahead of the finished connect, replayed then.
    early: Vec<TransportEvent>,
    /// Where the connection comes from, once up.
    remote: Option<std::net::SocketAddr>,
    /// When the connection came up.
    up_since: Option<Time>,
    /// When our next `Peers` goes out, once up.
    pex: Option<PexSchedule>,
    /// Which of its `Peers` we admit.
    gate: Option<PexGate>,
    _writer: Option<AbortOnDropHandle<()>>,
}

/// How serving one block ended.
#[derive(Debug)]
enum Served {
    /// Queued on its stream; the delivery tells when it has left.
    Queued(Delivery),
    /// Storage could not read it.
    ReadFailed,
    /// The connection is closed.
    SendFailed,
}

type ConnectResult = (PeerKey, u64, Result<ConnectionHandle, ConnectError>);
type TlsResult = (shoal_proto::discovery::Dial, Result<Outbound, ConnectError>);

pub(crate) struct Actor {
    ih: InfoHash,
    info: Arc<Info>,
    info_bytes: Arc<Vec<u8>>,
    swarm: Swarm,
    book: PeerBook,
    pex_cfg: PexConfig,
    rng: Rng,
    endpoint: Endpoint,
    storage: StorageHandle,
    inbox: mpsc::Receiver<TorrentMessage>,
    complete: watch::Sender<bool>,
    cancel: CancellationToken,
    epoch: Instant,
    events_tx: mpsc::Sender<TransportEvent>,
    events: mpsc::Receiver<TransportEvent>,
    peers: BTreeMap<PeerKey, Peer>,
    /// Every node ever seen, for status and bans.
    nodes: BTreeMap<PeerKey, NodeId>,
    banned: Vec<NodeId>,
    /// Block bytes of pieces being downloaded.
    buffers: HashMap<u32, Vec<u8>>,
    /// Dials until TLS has named the peer.
    tls: JoinSet<TlsResult>,
    connecting: JoinSet<ConnectResult>,
    serving: JoinSet<(PeerKey, BlockRef, Served)>,
    /// Blocks handed to the transport, until the peer has them all.
    delivering: JoinSet<(PeerKey, BlockRef, bool)>,
    serve_handles: HashMap<(PeerKey, BlockRef), AbortHandle>,
    serve_pool: Arc<Semaphore>,
    verifying: JoinSet<(u32, Option<Vec<u8>>)>,
    verify_pool: Arc<Semaphore>,
    writing: JoinSet<(u32, bool)>,
    pieces_downloaded: u32,
    pieces_failed: u32,
    next_attempt: u64,
}

impl Actor {
    pub(crate) fn new(p: ActorParts) -> Actor {
        let (events_tx, events) = mpsc::channel(EVENTS);
        let complete = p.swarm.is_complete();
        p.complete.send_replace(complete);
        let local = p.endpoint.node_id();
        Actor {
            ih: p.infohash,
            info: p.info,
            info_bytes: p.info_bytes,
            swarm: p.swarm,
            book: {
                let mut b = PeerBook::new(p.discovery.book, local);
                b.set_complete(complete);
                b
            },
            pex_cfg: p.discovery.pex,
            // Another stream than proto's swarm draws from the same seed.
            rng: Rng::new(p.seed ^ 0x5045_4552_424f_4f4b),
            endpoint: p.endpoint,
            storage: p.storage,
            inbox: p.inbox,
            complete: p.complete,
            cancel: p.cancel,
            epoch: Instant::now(),
            events_tx,
            events,
            peers: BTreeMap::new(),
            nodes: BTreeMap::new(),
            banned: Vec::new(),
            buffers: HashMap::new(),
            tls: JoinSet::new(),
            connecting: JoinSet::new(),
            serving: JoinSet::new(),
            delivering: JoinSet::new(),
            serve_handles: HashMap::new(),
            serve_pool: Arc::new(Semaphore::new(SERVE_CONCURRENCY)),
            verifying: JoinSet::new(),
            verify_pool: p.verify_pool,
            writing: JoinSet::new(),
            pieces_downloaded: 0,
            pieces_failed: 0,
            next_attempt: 0,
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(DISCOVERY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.swarm.poll_timeout().map(|t| self.instant(t));
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.cancel.cancelled() => break,
                msg = self.inbox.recv() => {
                    let Some(m) = msg else { break };
                    if let Some(reply) = self.on_inbox(m) {
                        self.close_all();
                        self.settle_writes().await;
                        let _ = reply.send(self.status());
                        break;
                    }
                }
                Some(ev) = self.events.recv() => self.on_event(ev),
                () = timer => {
                    let now = self.now();
                    self.swarm.handle_timeout(now);
                }
                _ = tick.tick() => self.on_tick(),
                Some(Ok((dial, res))) = self.tls.join_next() => self.on_tls(dial, res),
                Some(Ok((key, attempt, res))) = self.connecting.join_next() => self.on_connected(key, attempt, res),
                Some(Ok((peer, block, served))) = self.serving.join_next() => {
                    self.on_served(peer, block, served);
                }
                Some(Ok((peer, block, delivered))) = self.delivering.join_next() => {
                    if delivered {
                        let now = self.now();
                        self.swarm.handle_bytes_sent(now, peer, u64::from(block.len));
                    }
                }
                Some(Ok((piece, data))) = self.verifying.join_next() => self.on_verified(piece, data),
                Some(Ok((piece, ok))) = self.writing.join_next() => self.on_written(piece, ok),
            }
            self.drain();
        }
        self.close_all();
    }

    /// Waits (up to [`WRITE_SETTLE`]) for the pieces handed to storage:
    /// storage finishes a write it has started even when nobody awaits it,
    /// so a stop that did not wait would report fewer pieces than storage
    /// then holds (a paused torrent's count would still move).
    async fn settle_writes(&mut self) {
        let settle = async {
            while let Some(done) = self.writing.join_next().await {
                if let Ok((piece, ok)) = done {
                    self.on_written(piece, ok);
                }
            }
        };
        if tokio::time::timeout(WRITE_SETTLE, settle).await.is_err() {
            tracing::warn!(ih = %self.ih, "stopping with piece writes still running");
        }
    }

    fn close_all(&mut self) {
        for (_, p) in std::mem::take(&mut self.peers) {
            if let Some(c) = &p.conn {
                c.close(CloseCode::Done);
            }
        }
    }

    /// Handles one inbox message; a `Shutdown` is handed back (its reply
    /// channel) for the run loop, which stops once the writes settle.
    fn on_inbox(&mut self, msg: TorrentMessage) -> Option<oneshot::Sender<TorrentStatus>> {
        match msg {
            TorrentMessage::Status { reply } => {
                let _ = reply.send(self.status());
            }
            TorrentMessage::AddPeers(dials) => self.add_peers(dials),
            TorrentMessage::Discovered(addrs) => {
                let now = self.now();
                self.book.add_addrs(now, &addrs);
                self.dial_due();
            }
            TorrentMessage::Inbound(inbound) => self.inbound(*inbound),
            TorrentMessage::Shutdown { reply } => return Some(reply),
        }
        None
    }

    fn status(&self) -> TorrentStatus {
        let now = self.now();
        // One look at each peer's info (it computes rates) for both lists.
        let (mut path_rtts, mut far) = (Vec::new(), Vec::new());
        for (k, p) in &self.peers {
            let Some(i) = self.swarm.peer_info(now, *k) else {
                continue;
            };
            if let Some(rtt) = i.path_rtt {
                path_rtts.push((p.node, rtt));
            }
            if i.far {
                far.push(p.node);
            }
        }
        TorrentStatus {
            infohash: self.ih,
            pieces: self.swarm.geometry().piece_count(),
            have: self.swarm.stats().have_pieces,
            complete: self.swarm.is_complete(),
            pieces_downloaded: self.pieces_downloaded,
            pieces_failed: self.pieces_failed,
            peers: self.peers.values().map(|p| p.node).collect(),
            peer_addrs: self
                .peers
                .values()
                .filter_map(|p| Some((p.node, p.remote?)))
                .collect(),
            path_rtts,
            far,
            known_peers: self.book.len(),
            banned: self.banned.clone(),
            scores: self
                .nodes
                .iter()
                .filter_map(|(k, n)| self.swarm.peer_score(*k).map(|s| (*n, s)))
                .collect(),
            stats: self.swarm.stats(),
        }
    }

    /// The peer's current connection is `conn`.
    fn current(&self, key: PeerKey, conn: ConnId) -> bool {
        self.peers
            .get(&key)
            .and_then(|p| p.conn.as_ref())
            .is_some_and(|c| c.id() == conn)
    }

    fn on_event(&mut self, ev: TransportEvent) {
        // A connection's first events can beat its connect task's result
        // to the loop: keep them until the handle is in.
        let key = peer_key(event_peer(&ev));
        if let Some(p) = self.peers.get_mut(&key) {
            if p.conn.is_none() {
                if p.early.len() < EARLY_EVENTS {
                    p.early.push(ev);
                }
                return;
            }
        }
        let now = self.now();
        match ev {
            TransportEvent::Message {
                conn,
                peer,
                message,
            } => {
                let key = peer_key(&peer);
                if !self.current(key, conn) {
                    return;
                }
                if let Err(e) = self.on_message(now, key, message) {
                    tracing::debug!(peer = %key, error = %e, "message refused");
                }
            }
            TransportEvent::Block {
                conn,
                peer,
                block,
                data,
            } => {
                let key = peer_key(&peer);
                if !self.current(key, conn) {
                    return;
                }
                let block = BlockRef::from(block);
                self.swarm
                    .handle_bytes_received(now, key, u64::from(block.len));
                match self.swarm.handle_block(now, key, block) {
                    Ok(BlockOutcome::Accepted) => self.buffer(block, &data),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(peer = %key, error = %e, "block refused"),
                }
            }
            TransportEvent::Closed { conn, peer, reason } => {
                let key = peer_key(&peer);
                if !self.current(key, conn) {
                    return;
                }
                tracing::debug!(peer = %key, ?reason, "connection closed");
                self.drop_peer(key, None, shoal_proto::discovery::Ending::Dropped);
                self.swarm.handle_peer_disconnected(now, key);
                self.dial_due();
            }
        }
    }

    fn on_message(&mut self, now: Time, key: PeerKey, m: wire::Message) -> Result<(), SwarmError> {
        let m = match m {
            wire::Message::Peers(list) => {
                self.on_peers(now, key, list);
                return Ok(());
            }
            wire::Message::MetadataRequest { piece } => {
                // Metadata is not piece data: answered even while choked.
                let answer = wire::metadata_response(&self.info_bytes, piece);
                if let Some(p) = self.peers.get(&key) {
                    let _ = p.outbox.try_send(answer);
                }
                return Ok(());
            }
            m => m,
        };
        // Keep-alives need nothing; with the metadata in hand, unsolicited
        // metadata answers are ignored.
        match Message::from_wire(m) {
            Some(m) => self.swarm.handle_message(now, key, m),
            None => Ok(()),
        }
    }

    /// Copies an accepted block into its piece's buffer. Blocks mostly
    /// come in order, so the buffer is reserved but not zeroed, and a block
    /// that continues it is appended; only a gap (a block overtaken by a
    /// later one) is filled with zeros until its block arrives. Zeroing
    /// every piece first cost a memset of each byte received.
    fn buffer(&mut self, block: BlockRef, data: &[u8]) {
        let size = self.swarm.geometry().piece_size(block.piece) as usize;
        let start = block.offset as usize;
        let end = start + data.len();
        if end > size {
            return; // proto checked it against the geometry; never here.
        }
        let buf = self
            .buffers
            .entry(block.piece)
            .or_insert_with(|| Vec::with_capacity(size));
        place_block(buf, start, data);
    }

    /// Carries out everything proto asked for.
    fn drain(&mut self) {
        while let Some(action) = self.swarm.poll_action() {
            match action {
                Action::Send { peer, message } => self.send(peer, message),
                Action::ServeBlock { peer, block } => self.serve(peer, block),
                Action::AbortServe { peer, block } => {
                    if let Some(h) = self.serve_handles.remove(&(peer, block)) {
                        h.abort();
                    }
                }
                Action::VerifyPiece { piece } => self.verify(piece),
                Action::Disconnect { peer, reason } => {
                    self.drop_peer(peer, Some(CloseCode::from(reason)), reason.into());
                }
                Action::Ban { peer } => {
                    if let Some(n) = self.nodes.get(&peer).copied() {
                        self.banned.push(n);
                        let now = self.now();
                        self.book.ban(now, n);
                    }
                    self.drop_peer(
                        peer,
                        Some(CloseCode::Banned),
                        shoal_proto::discovery::Ending::Banned,
                    );
                }
                Action::Completed => {
                    self.complete.send_replace(true);
                    self.book.set_complete(true);
                }
            }
        }
    }

    fn send(&mut self, key: PeerKey, message: shoal_proto::swarm::Message) {
        let choke = message == shoal_proto::swarm::Message::Choke;
        let m = wire::Message::from(message);
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if m.kind().is_availability() {
            p.opening = Some(m);
            return;
        }
        if p.outbox.try_send(m).is_err() {
            tracing::debug!(peer = %key, "peer outbox full; dropping it");
            self.drop_peer(
                key,
                Some(CloseCode::Done),
                shoal_proto::discovery::Ending::Dropped,
            );
            let now = self.now();
            self.swarm.handle_peer_disconnected(now, key);
            return;
        }
        if choke {
            self.abort_serves(key);
        }
    }

    fn serve(&mut self, key: PeerKey, block: BlockRef) {
        let Some(conn) = self.peers.get(&key).and_then(|p| p.conn.clone()) else {
            return;
        };
        let storage = self.storage.clone();
        let pool = self.serve_pool.clone();
        let ih = self.ih;
        let handle = self.serving.spawn(async move {
            let Ok(_permit) = pool.acquire_owned().await else {
                return (key, block, Served::SendFailed);
            };
            let served = match storage
                .read_block(ih, block.piece, block.offset, block.len)
                .await
            {
                Ok(data) => match conn.send_block(block.into(), Bytes::from(data)).await {
                    Ok(delivery) => Served::Queued(delivery),
                    Err(_) => Served::SendFailed,
                },
                Err(e) => {
                    tracing::warn!(piece = block.piece, error = %e, "cannot read block to serve");
                    Served::ReadFailed
                }
            };
            (key, block, served)
        });
        if let Some(old) = self.serve_handles.insert((key, block), handle) {
            old.abort();
        }
    }

    fn on_served(&mut self, peer: PeerKey, block: BlockRef, served: Served) {
        self.serve_handles.remove(&(peer, block));
        match served {
            // Counted as sent once the peer has every byte: a block queued
            // in quinn's send buffer may not leave for a second or more,
            // and the swarm's upload rates and slot-stall checks must see
            // bytes when they go, as the simulator models them.
            Served::Queued(delivery) => {
                self.delivering.spawn(async move {
                    let ok = delivery.delivered().await;
                    (peer, block, ok)
                });
            }
            // Every request is answered: a block we cannot read is
            // rejected, so the peer asks elsewhere instead of stalling.
            Served::ReadFailed => {
                if let Some(p) = self.peers.get(&peer) {
                    let _ = p.outbox.try_send(wire::Message::Reject(block.into()));
                }
            }
            // The connection is going; its `Closed` event follows.
            Served::SendFailed => {}
        }
    }

    fn verify(&mut self, piece: u32) {
        let size = self.swarm.geometry().piece_size(piece) as usize;
        // Every block is in (proto asks only then), so the buffer is whole;
        // were it short, the zeros would fail the hash, never pass it.
        let data = self.buffers.remove(&piece).map(|mut d| {
            d.resize(size, 0);
            d
        });
        let info = self.info.clone();
        let pool = self.verify_pool.clone();
        self.verifying.spawn(async move {
            let Some(data) = data else {
                return (piece, None);
            };
            let Ok(_permit) = pool.acquire_owned().await else {
                return (piece, None);
            };
            let res = tokio::task::spawn_blocking(move || {
                let ok = check_piece(&info, piece, &data);
                ok.then_some(data)
            })
            .await;
            (piece, res.ok().flatten())
        });
    }

    fn on_verified(&mut self, piece: u32, data: Option<Vec<u8>>) {
        let now = self.now();
        let ok = data.is_some();
        if !ok {
            self.pieces_failed += 1;
        }
        if let Err(e) = self.swarm.handle_piece_verified(now, piece, ok) {
            tracing::warn!(piece, error = %e, "verification report refused");
            return;
        }
        let Some(data) = data else { return };
        let storage = self.storage.clone();
        let ih = self.ih;
        self.writing.spawn(async move {
            let res = storage.write_piece(ih, piece, data).await;
            if let Err(e) = &res {
                tracing::warn!(piece, error = %e, "cannot store piece");
            }
            (piece, res.is_ok())
        });
    }

    fn on_written(&mut self, piece: u32, ok: bool) {
        let now = self.now();
        let res = if ok {
            self.pieces_downloaded += 1;
            self.swarm.handle_piece_stored(now, piece)
        } else {
            self.swarm.handle_piece_store_failed(now, piece)
        };
        if let Err(e) = res {
            tracing::warn!(piece, error = %e, "storage report refused");
        }
    }
}

/// Puts `data` at `start` of a piece buffer that holds the bytes up to
/// its length: appended when it continues them, written over the zeros of
/// a gap otherwise.
fn place_block(buf: &mut Vec<u8>, start: usize, data: &[u8]) {
    let end = start + data.len();
    if buf.len() < start {
        buf.resize(start, 0);
    }
    if buf.len() == start {
        buf.extend_from_slice(data);
        return;
    }
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

/// What a disconnect proto asked for means for redialing.
fn event_peer(ev: &TransportEvent) -> &NodeId {
    match ev {
        TransportEvent::Message { peer, .. }
        | TransportEvent::Block { peer, .. }
        | TransportEvent::Closed { peer, .. } => peer,
    }
}

fn event_conn(ev: &TransportEvent) -> ConnId {
    match ev {
        TransportEvent::Message { conn, .. }
        | TransportEvent::Block { conn, .. }
        | TransportEvent::Closed { conn, .. } => *conn,
    }
}

#[cfg(test)]
mod tests {
    use super::place_block;

    #[test]
    fn blocks_in_any_order_make_the_piece() {
        let piece: Vec<u8> = (0..40u8).collect();
        let blocks = [(0, 10), (10, 20), (20, 30), (30, 40)];
        for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 0, 3, 1], [1, 1, 3, 0]] {
            let mut buf = Vec::with_capacity(40);
            for &i in &order {
                let (a, b) = blocks[i];
                place_block(&mut buf, a, &piece[a..b]);
            }
            if order.contains(&2) {
                assert_eq!(buf, piece, "order {order:?}");
            } else {
                // Block 2 never came: its bytes stay zero, so the hash
                // check fails instead of passing stale data.
                assert_eq!(&buf[20..30], &[0; 10]);
            }
        }
    }
}
