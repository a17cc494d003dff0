//! The gossip actor: one libp2p swarm per node (TCP, noise, yamux) with
//! gossipsub for membership and peer-table deltas, identify, and a
//! request-response protocol for anti-entropy.
//!
//! What it carries, and when:
//! - every `batch_ms`, the tracker's outbox as one or more deltas on
//!   [`TRACKER_TOPIC`];
//! - every few seconds, a [`Member`] record on [`MEMBERS_TOPIC`]; a node that
//!   hears of a member it is not connected to dials it, so joining through
//!   any one node connects a node to the whole cluster;
//! - every `anti_entropy_secs`, a digest exchange with one random tracker
//!   node: we send our digest, it answers with its entries in the buckets
//!   that differ and the list of those buckets, and we push ours back. Both
//!   sides then hold the union, whatever gossip lost.
//!
//! Invariants: the actor owns the swarm; nothing else touches it. Malformed
//! or oversized payloads are logged and dropped, never fatal. Replication
//! state for `/stats` is published through a shared snapshot, so readers
//! never wait on the swarm.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use serde::{Deserialize, Serialize};
use shoal_proto::gossip::{Member, MEMBERS_TOPIC, TRACKER_TOPIC};
use shoal_proto::tracker::table::{diff_buckets, Delta, Digest, MAX_WIRE_BYTES};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::GossipConfig;
use crate::tracker::Tracker;

/// Most entries in one gossip message: about 70 bytes each, so a message
/// stays well under the 1 MiB delta limit.
const MAX_ENTRIES_PER_MESSAGE: usize = 10_000;
/// Most entries in one anti-entropy answer; a larger difference takes more
/// rounds.
const MAX_ENTRIES_PER_SYNC: usize = 200_000;
/// Largest anti-entropy message, encoded.
const MAX_SYNC_BYTES: usize = 32 << 20;
/// How often a node announces itself and re-dials its join addresses.
const MEMBER_INTERVAL: Duration = Duration::from_secs(2);
/// How long an anti-entropy request may take. A peer that does not answer
/// in time is disconnected: the exchange doubles as a liveness check, so a
/// connection that died silently (a partition) is noticed in seconds and
/// redialled when the network heals, instead of waiting on TCP's retries.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// The anti-entropy protocol.
const SYNC_PROTOCOL: &str = "/shoal/tracker-sync/1";

/// Why the gossip actor could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Building the transport or a behaviour failed.
    #[error("gossip set-up: {0}")]
    Setup(String),
    /// The listen address could not be bound.
    #[error("gossip cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A join address is neither `host:port` nor a multiaddr.
    #[error("bad join address {0:?}: expected host:port or a multiaddr")]
    BadJoin(String),
}

/// Anti-entropy requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "Here is my digest": answered with [`SyncResponse::Diff`].
    Digest(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// "Here are my entries in the buckets you lacked."
    Push(#[serde(with = "serde_bytes_compat")] Vec<u8>),
}

/// Anti-entropy responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Our entries in the differing buckets, and which buckets differ.
    Diff {
        /// A postcard [`Delta`].
        #[serde(with = "serde_bytes_compat")]
        entries: Vec<u8>,
        /// Buckets whose entries the requester should push back.
        want: Vec<u8>,
    },
    /// A push was merged.
    Ack,
    /// The request was refused.
    Refused(String),
}

/// Byte strings as CBOR byte strings rather than arrays of integers.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

/// What `/stats` shows about replication with one other node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// Its gossip address, as we reached it.
    pub addr: Option<String>,
    /// Whether it carries the tracker role.
    pub tracker: bool,
    /// Its HTTP address.
    pub http: Option<String>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// When (ms since epoch, our clock) its last delta arrived.
    pub last_gossip_ms: Option<u64>,
    /// When our last anti-entropy exchange with it finished.
    pub last_sync_ms: Option<u64>,
    /// Entries that exchange repaired, both ways.
    pub last_sync_repaired: u64,
    /// When an exchange last found both replicas identical.
    pub last_in_sync_ms: Option<u64>,
}

/// Replication state, published for `/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationStatus {
    /// This node's peer id.
    pub peer_id: String,
    /// Where this node listens for gossip.
    pub listen: Vec<String>,
    /// Other nodes, by peer id.
    pub peers: BTreeMap<String, PeerStatus>,
    /// Delta messages published and received.
    pub deltas_sent: u64,
    /// Delta messages received.
    pub deltas_received: u64,
}

/// Shared, cheaply readable replication status.
pub type SharedStatus = Arc<Mutex<ReplicationStatus>>;

/// Messages the actor accepts.
#[derive(Debug)]
pub enum GossipCommand {
    /// Run an anti-entropy round now with every tracker peer; replies when
    /// the requests are sent.
    SyncNow {
        /// Signalled once the requests are sent.
        reply: oneshot::Sender<usize>,
    },
}

/// Settings the actor needs besides the config file's.
#[derive(Debug, Clone)]
pub struct GossipSetup {
    /// The `[gossip]` config.
    pub cfg: GossipConfig,
    /// The node's key.
    pub key: identity::Keypair,
    /// Whether this node carries the tracker role.
    pub tracker_role: bool,
    /// The node's HTTP address, to advertise.
    pub http: Option<SocketAddr>,
}

/// Checks a join address: a multiaddr, or `host:port` with a numeric port.
/// Names are resolved at each dial, so a node may start before the nodes it
/// joins are resolvable (containers starting together).
pub fn check_join(s: &str) -> Result<(), GossipError> {
    let ok = if s.starts_with('/') {
        s.parse::<Multiaddr>().is_ok()
    } else {
        s.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    ok.then_some(())
        .ok_or_else(|| GossipError::BadJoin(s.to_owned()))
}

/// Resolves a checked join address to a dialable multiaddr, if it resolves
/// now.
fn resolve_join(s: &str) -> Option<Multiaddr> {
    if s.starts_with('/') {
        return s.parse().ok();
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs().ok()?.next().map(socket_multiaddr)
}

fn socket_multiaddr(a: SocketAddr) -> Multiaddr {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(a.port()))
}

fn build_swarm(key: &identity::Keypair) -> Result<Swarm<Behaviour>, GossipError> {
    let setup = |e: &dyn std::fmt::Display| GossipError::Setup(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| {
            let gs_cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(MAX_WIRE_BYTES.max(1 << 20))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub =
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gs_cfg)?;
            let identify =
                identify::Behaviour::new(identify::Config::new("/shoal/1".into(), key.public()));
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_SYNC_BYTES as u64)
                .set_response_size_maximum(MAX_SYNC_BYTES as u64);
            let sync = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(SYNC_TIMEOUT),
            );
            Ok(Behaviour {
                gossipsub,
                identify,
                sync,
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// A running gossip actor. Dropping the handle aborts it.
#[derive(Debug)]
pub struct GossipHandle {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Replication state for `/stats`.
    pub status: SharedStatus,
    /// The actor's inbox.
    pub tx: tokio::sync::mpsc::Sender<GossipCommand>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GossipHandle {
    /// Waits for the actor to finish after its shutdown token fired.
    pub async fn join(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Starts the actor: binds the listen address, dials the join addresses,
/// and runs until `shutdown` fires. The first listen address is printed
/// on stdout (tests and operators read it).
pub async fn spawn(
    setup: GossipSetup,
    tracker: Option<Arc<Tracker>>,
    shutdown: CancellationToken,
) -> Result<GossipHandle, GossipError> {
    for j in &setup.cfg.join {
        check_join(j)?;
    }
    let joins = setup.cfg.join.clone();
    let mut swarm = build_swarm(&setup.key)?;
    let peer_id = *swarm.local_peer_id();
    swarm
        .listen_on(socket_multiaddr(setup.cfg.listen))
        .map_err(|e| GossipError::Listen {
            addr: setup.cfg.listen,
            reason: e.to_string(),
        })?;
    // Wait for the listener so the address we print is real.
    let listen = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(GossipError::Listen {
                    addr: setup.cfg.listen,
                    reason: error.to_string(),
                })
            }
            _ => {}
        }
    };
    crate::logging::stdout_line(format_args!("gossip listening on {listen}/p2p/{peer_id}"));
    let members_topic = IdentTopic::new(MEMBERS_TOPIC);
    let tracker_topic = IdentTopic::new(TRACKER_TOPIC);
    let gs = &mut swarm.behaviour_mut().gossipsub;
    gs.subscribe(&members_topic)
        .map_err(|e| GossipError::Setup(e.to_string()))?;
    if tracker.is_some() {
        gs.subscribe(&tracker_topic)
            .map_err(|e| GossipError::Setup(e.to_string()))?;
    }
    let status = Arc::new(Mutex::new(ReplicationStatus {
        peer_id: peer_id.to_string(),
        listen: vec![listen.to_string()],
        ..Default::default()
    }));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let actor = Actor {
        swarm,
        setup,
        tracker,
        status: status.clone(),
        joins,
        listen: vec![listen],
        members_topic,
        tracker_topic,
        connected: HashMap::new(),
        trackers: HashSet::new(),
        rng: rand_seed(&peer_id),
    };
    let task = tokio::spawn(actor.run(rx, shutdown));
    Ok(GossipHandle {
        peer_id,
        status,
        tx,
        task: Some(task),
    })
}

fn rand_seed(p: &PeerId) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(p)
}

struct Actor {
    swarm: Swarm<Behaviour>,
    setup: GossipSetup,
    tracker: Option<Arc<Tracker>>,
    status: SharedStatus,
    joins: Vec<String>,
    listen: Vec<Multiaddr>,
    members_topic: IdentTopic,
    tracker_topic: IdentTopic,
    /// Open connections: peer -> remote address of one of them.
    connected: HashMap<PeerId, Multiaddr>,
    /// Peers known to carry the tracker role.
    trackers: HashSet<PeerId>,
    rng: u64,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: tokio::sync::mpsc::Receiver<GossipCommand>,
        shutdown: CancellationToken,
    ) {
        let mut batch = tokio::time::interval(Duration::from_millis(self.setup.cfg.batch_ms));
        let mut members = tokio::time::interval(MEMBER_INTERVAL);
        let mut anti_entropy =
            tokio::time::interval(Duration::from_secs(self.setup.cfg.anti_entropy_secs));
        for t in [&mut batch, &mut members, &mut anti_entropy] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        self.dial_joins();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = batch.tick() => self.flush_outbox(),
                _ = members.tick() => {
                    self.announce_self();
                    self.dial_joins();
                }
                _ = anti_entropy.tick() => {
                    if let Some(t) = &self.tracker {
                        t.expire();
                    }
                    self.sync_with_random_tracker();
                }
                Some(cmd) = rx.recv() => match cmd {
                    GossipCommand::SyncNow { reply } => {
                        let peers: Vec<PeerId> = self.tracker_peers();
                        for p in &peers {
                            self.send_digest(*p);
                        }
                        let _ = reply.send(peers.len());
                    }
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
        // Hand whatever is queued to the network before going quiet.
        self.flush_outbox();
        debug!("gossip actor stopped");
    }

    fn now(&self) -> u64 {
        crate::tracker::WallClock::new(self.setup.cfg.clock_offset_ms).now_ms()
    }

    fn with_status(&self, f: impl FnOnce(&mut ReplicationStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    fn with_peer(&self, p: &PeerId, f: impl FnOnce(&mut PeerStatus)) {
        self.with_status(|s| f(s.peers.entry(p.to_string()).or_default()));
    }

    fn dial_joins(&mut self) {
        let connected: HashSet<Multiaddr> = self.connected.values().cloned().collect();
        for j in self
            .joins
            .iter()
            .filter_map(|j| resolve_join(j))
            .collect::<Vec<_>>()
        {
            if !connected.contains(&j) && !self.listen.contains(&j) {
                if let Err(e) = self.swarm.dial(j.clone()) {
                    debug!(addr = %j, error = %e, "dial failed");
                }
            }
        }
    }

    fn flush_outbox(&mut self) {
        let Some(t) = &self.tracker else { return };
        let delta = t.take_outbox();
        if delta.is_empty() {
            return;
        }
        for part in delta.split(MAX_ENTRIES_PER_MESSAGE) {
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.tracker_topic.clone(), part.to_bytes())
            {
                Ok(_) => self.with_status(|s| s.deltas_sent += 1),
                // Nobody to tell (yet): anti-entropy brings them up to date
                // when they connect.
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(e) => debug!(error = %e, "publish failed"),
            }
        }
    }

    fn announce_self(&mut self) {
        let m = Member {
            gossip_addrs: self.listen.iter().map(|a| a.to_string()).collect(),
            tracker: self.tracker.is_some(),
            http: self.setup.http.map(|h| h.to_string()),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.members_topic.clone(), m.to_bytes());
    }

    fn tracker_peers(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .trackers
            .iter()
            .filter(|p| self.connected.contains_key(p))
            .copied()
            .collect();
        v.sort();
        v
    }

    fn sync_with_random_tracker(&mut self) {
        if self.tracker.is_none() {
            return;
        }
        let peers = self.tracker_peers();
        if peers.is_empty() {
            return;
        }
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = peers[(self.rng >> 33) as usize % peers.len()];
        self.send_digest(p);
    }

    fn send_digest(&mut self, p: PeerId) {
        let Some(t) = &self.tracker else { return };
        let digest = t.digest().to_bytes();
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&p, SyncRequest::Digest(digest));
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } if !self.listen.contains(&address) => {
                self.listen.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                info!(peer = %peer_id, %addr, "gossip peer connected");
                self.connected.insert(peer_id, addr.clone());
                self.with_peer(&peer_id, |p| {
                    p.connected = true;
                    p.addr = Some(addr.to_string());
                });
                // Introduce ourselves at once rather than at the next tick.
                self.announce_self();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                info!(peer = %peer_id, "gossip peer disconnected");
                self.connected.remove(&peer_id);
                self.with_peer(&peer_id, |p| p.connected = false);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                self.on_message(message);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => {
                self.on_sync(peer, message);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => {
                debug!(%peer, %error, "anti-entropy request failed");
                if matches!(error, request_response::OutboundFailure::Timeout) {
                    warn!(%peer, "gossip peer unresponsive; disconnecting to redial");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, message: gossipsub::Message) {
        let Some(source) = message.source else { return };
        if source == *self.swarm.local_peer_id() {
            return;
        }
        if message.topic == self.members_topic.hash() {
            match Member::from_bytes(&message.data) {
                Ok(m) => self.on_member(source, m),
                Err(e) => warn!(peer = %source, error = %e, "bad membership message"),
            }
        } else if message.topic == self.tracker_topic.hash() {
            let Some(t) = &self.tracker else { return };
            match Delta::from_bytes(&message.data) {
                Ok(d) => {
                    t.merge(&d);
                    let now = self.now();
                    self.with_status(|s| s.deltas_received += 1);
                    self.with_peer(&source, |p| p.last_gossip_ms = Some(now));
                }
                Err(e) => warn!(peer = %source, error = %e, "bad peer-table delta"),
            }
        }
    }

    fn on_member(&mut self, source: PeerId, m: Member) {
        if m.tracker {
            self.trackers.insert(source);
        }
        self.with_peer(&source, |p| {
            p.tracker = m.tracker;
            p.http = m.http.clone();
        });
        if self.connected.contains_key(&source) {
            return;
        }
        for a in &m.gossip_addrs {
            if let Ok(addr) = a.parse::<Multiaddr>() {
                let addr = addr.with_p2p(source).unwrap_or_else(|a| a);
                if self.swarm.dial(addr).is_ok() {
                    break;
                }
            }
        }
    }

    fn on_sync(
        &mut self,
        peer: PeerId,
        message: request_response::Message<SyncRequest, SyncResponse>,
    ) {
        let Some(t) = self.tracker.clone() else {
            if let request_response::Message::Request { channel, .. } = message {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse::Refused("not a tracker node".into()));
            }
            return;
        };
        let now = self.now();
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                let response = match request {
                    SyncRequest::Digest(bytes) => match Digest::from_bytes(&bytes) {
                        Ok(remote) => {
                            let want = diff_buckets(&t.digest(), &remote);
                            let mut entries = t.entries_in_buckets(&want);
                            if entries.len() > MAX_ENTRIES_PER_SYNC {
                                // Too much for one answer: send part now;
                                // the next round sends the rest.
                                entries = entries.split(MAX_ENTRIES_PER_SYNC).swap_remove(0);
                            }
                            SyncResponse::Diff {
                                entries: entries.to_bytes(),
                                want,
                            }
                        }
                        Err(e) => SyncResponse::Refused(e.to_string()),
                    },
                    SyncRequest::Push(bytes) => {
                        match Delta::from_bytes_with_limit(&bytes, MAX_SYNC_BYTES) {
                            Ok(d) => {
                                let n = t.merge(&d);
                                self.with_peer(&peer, |p| {
                                    p.last_sync_ms = Some(now);
                                    p.last_sync_repaired = n as u64;
                                });
                                SyncResponse::Ack
                            }
                            Err(e) => SyncResponse::Refused(e.to_string()),
                        }
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            request_response::Message::Response { response, .. } => match response {
                SyncResponse::Diff { entries, want } => {
                    let merged = match Delta::from_bytes_with_limit(&entries, MAX_SYNC_BYTES) {
                        Ok(d) => t.merge(&d),
                        Err(e) => {
                            warn!(%peer, error = %e, "bad anti-entropy answer");
                            return;
                        }
                    };
                    let in_sync = want.is_empty();
                    if !in_sync {
                        let mut ours = t.entries_in_buckets(&want);
                        if ours.len() > MAX_ENTRIES_PER_SYNC {
                            ours = ours.split(MAX_ENTRIES_PER_SYNC).swap_remove(0);
                        }
                        self.swarm
                            .behaviour_mut()
                            .sync
                            .send_request(&peer, SyncRequest::Push(ours.to_bytes()));
                    }
                    self.with_peer(&peer, |p| {
                        p.last_sync_ms = Some(now);
                        p.last_sync_repaired = merged as u64;
                        if in_sync {
                            p.last_in_sync_ms = Some(now);
                        }
                    });
                }
                SyncResponse::Ack => {}
                SyncResponse::Refused(why) => debug!(%peer, %why, "anti-entropy refused"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_addresses_are_checked_but_resolved_late() {
        assert!(check_join("127.0.0.1:7881").is_ok());
        assert!(check_join("tracker-1.example.internal:7881").is_ok());
        assert!(check_join("/ip4/198.18.0.1/tcp/7881").is_ok());
        assert!(check_join("[::1]:7881").is_ok());
        for bad in [
            "",
            "host",
            "host:",
            ":7881",
            "host:99999",
            "/not/a/multiaddr",
        ] {
            assert!(check_join(bad).is_err(), "{bad}");
        }
        assert_eq!(
            resolve_join("127.0.0.1:7881").map(|m| m.to_string()),
            Some("/ip4/127.0.0.1/tcp/7881".to_owned())
        );
    }
}
