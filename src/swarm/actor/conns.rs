//! The swarm actor's connections: dialing what the peer book says is due,
//! accepting inbound connections, registering peers with proto, settling
//! duplicates, closing, and peer exchange.
//!
//! A dial has two stages. `Endpoint::connect` runs QUIC and TLS and so
//! learns which node answers (a tracker gives addresses only); back in the
//! loop ([`Actor::on_tls`]) the node is refused if it is ourselves,
//! banned or already connected, and otherwise registered with proto, whose
//! opening message the second stage (`Outbound::handshake`) sends with our
//! handshake. An inbound connection is registered once its dialer's
//! handshake has named it. Either way proto knows the peer before the
//! first byte of the shoal handshake goes out.
//!
//! Invariants this module keeps:
//! - Every dial the book hands out is reported back to it exactly once
//!   (identified, refused or failed), and every connection that ends is
//!   reported as dropped, useless or banned, so its budget and backoff
//!   stay true.
//! - A `Peers` message is sent only after the opening message, at most as
//!   often as [`PexSchedule`] allows, and received ones are admitted by
//!   the connection's [`PexGate`]; extras are ignored, as the protocol
//!   says. A private torrent (BEP 27) neither sends nor reads `Peers`.

use std::sync::Arc;

use shoal_proto::discovery::{
    admitted_entries, build_peers, Dial, Ending, PexGate, PexSchedule, Refusal, Target,
};
use shoal_proto::swarm::{PeerKey, SwarmError};
use shoal_proto::wire::{self, CloseCode, HandshakeError, NodeId, PeerAddr};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{event_conn, Actor, Peer, PEER_OUTBOX};
use crate::swarm::{peer_key, PeerDial};
use crate::transport::{ConnectError, ConnectionHandle, Inbound, Outbound, Session};

impl Actor {
    fn session(&self, opening: wire::Message) -> Session {
        Session {
            opening,
            geometry: wire::Geometry::from_info(&self.info).ok(),
            events: self.events_tx.clone(),
        }
    }

    /// Registers `node` with proto and returns its opening message.
    fn register(&mut self, node: NodeId, dialed: bool) -> Result<wire::Message, SwarmError> {
        let key = peer_key(&node);
        if key == peer_key(&self.endpoint.node_id()) {
            return Err(SwarmError::DuplicatePeer(key));
        }
        if self.peers.contains_key(&key) {
            return Err(SwarmError::DuplicatePeer(key));
        }
        let now = self.now();
        self.swarm.handle_peer_connected(now, key, dialed)?;
        let (outbox, rx) = mpsc::channel(PEER_OUTBOX);
        self.nodes.insert(key, node);
        self.next_attempt += 1;
        self.peers.insert(
            key,
            Peer {
                node,
                attempt: self.next_attempt,
                dialed,
                connect: None,
                opening: None,
                outbox,
                outbox_rx: Some(rx),
                conn: None,
                early: Vec::new(),
                remote: None,
                pex: None,
                gate: None,
                up_since: None,
                _writer: None,
            },
        );
        self.drain();
        let opening = self
            .peers
            .get_mut(&key)
            .and_then(|p| p.opening.take())
            .unwrap_or(wire::Message::HaveNone);
        Ok(opening)
    }

    /// Peers someone asked to dial now: into the book, due at once (a ban
    /// still holds).
    pub(super) fn add_peers(&mut self, dials: Vec<PeerDial>) {
        let now = self.now();
        for d in dials {
            match d.node_id {
                Some(n) => self.book.add_node(now, n, &[d.addr]),
                None => self.book.add_addrs(now, &[d.addr]),
            }
            let target = d.node_id.map_or(Target::Addr(d.addr), Target::Node);
            self.book.retry_now(now, target);
        }
        self.dial_due();
    }

    /// Starts every dial the book says is due.
    pub(super) fn dial_due(&mut self) {
        let now = self.now();
        for dial in self.book.poll_dials(now, &mut self.rng) {
            let endpoint = self.endpoint.clone();
            self.tls.spawn(async move {
                let res = endpoint.connect(dial.addr, dial.node_id).await;
                (dial, res)
            });
        }
    }

    /// The periodic tick: forget stale candidates, send due PEX, dial.
    pub(super) fn on_tick(&mut self) {
        let now = self.now();
        // QUIC's floor only falls as it sees a quicker round trip; proto
        // keeps the smallest it is told.
        for (&key, p) in &self.peers {
            if let Some(c) = &p.conn {
                let _ = self.swarm.handle_path_rtt(now, key, c.min_rtt());
            }
        }
        self.book.expire(now);
        self.send_pex(now);
        self.dial_due();
    }

    /// TLS of a dial finished: go ahead with the handshake, or refuse.
    pub(super) fn on_tls(&mut self, dial: Dial, res: Result<Outbound, ConnectError>) {
        let now = self.now();
        let out = match res {
            Ok(out) => out,
            Err(ConnectError::Handshake(HandshakeError::SelfConnection)) => {
                let local = self.endpoint.node_id();
                self.book
                    .dial_refused(now, dial.target, local, dial.addr, Refusal::Itself);
                return;
            }
            Err(e) => {
                tracing::debug!(addr = %dial.addr, error = %e, "dial failed");
                self.book.dial_failed(now, dial.target, &mut self.rng);
                return;
            }
        };
        let node = out.peer();
        let banned = self.book.is_banned(&node) || self.banned.contains(&node);
        let connected = self.peers.contains_key(&peer_key(&node));
        if let Some(why) = Refusal::of_identified(banned, connected) {
            out.refuse(why.into());
            self.book
                .dial_refused(now, dial.target, node, dial.addr, why);
            return;
        }
        let named = self.book.dial_identified(now, dial.target, node, dial.addr);
        let opening = match self.register(node, true) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(addr = %dial.addr, error = %e, "not dialing");
                out.refuse(CloseCode::Done);
                let why = Refusal::of_swarm(&e);
                self.book.dial_refused(now, named, node, dial.addr, why);
                return;
            }
        };
        let session = self.session(opening);
        let ih = self.ih;
        let key = peer_key(&node);
        let attempt = self.next_attempt;
        let task = self
            .connecting
            .spawn(async move { (key, attempt, out.handshake(ih, session).await) });
        if let Some(p) = self.peers.get_mut(&key) {
            p.connect = Some(task);
        }
    }

    /// An inbound connection from a peer we are already dialing or
    /// connected to. proto decides (`on_inbound_duplicate`): a race is
    /// settled by the smaller id, so both nodes agree without talking; a
    /// redial over an established connection replaces it, as the peer has
    /// lost it. Returns whether the inbound one may go ahead.
    fn resolve_duplicate(&mut self, node: &NodeId) -> bool {
        let key = peer_key(node);
        let Some(p) = self.peers.get(&key) else {
            return true;
        };
        let local = self.endpoint.node_id();
        let up_for = p.up_since.map(|t| self.now().saturating_since(t));
        if wire::on_inbound_duplicate(&local, node, p.dialed, up_for) == wire::Duplicate::KeepOld {
            return false;
        }
        if let Some(t) = &p.connect {
            t.abort();
        }
        // The book is not told: the inbound connection takes this one's
        // place.
        self.close(key, CloseCode::Duplicate);
        let now = self.now();
        self.swarm.handle_peer_disconnected(now, key);
        true
    }

    pub(super) fn inbound(&mut self, inbound: Inbound) {
        if self.book.is_banned(&inbound.peer()) {
            return inbound.refuse(CloseCode::Banned);
        }
        // A peer we already have replaces its connection (below) and adds
        // none; anyone else needs room under the book's bound.
        let key = peer_key(&inbound.peer());
        if !self.peers.contains_key(&key) {
            let handshaking = self
                .peers
                .values()
                .filter(|p| !p.dialed && p.conn.is_none())
                .count();
            if !self.book.accepts_inbound(handshaking) {
                tracing::debug!(peer = %key, "inbound refused: at the connection bound");
                return inbound.refuse(CloseCode::Busy);
            }
        }
        if !self.resolve_duplicate(&inbound.peer()) {
            return inbound.refuse(CloseCode::Duplicate);
        }
        let opening = match self.register(inbound.peer(), false) {
            Ok(o) => o,
            Err(SwarmError::Banned(_)) => return inbound.refuse(CloseCode::Banned),
            Err(_) => return inbound.refuse(CloseCode::Duplicate),
        };
        let session = self.session(opening);
        let ih = self.ih;
        let attempt = self.next_attempt;
        let task = self
            .connecting
            .spawn(async move { (key, attempt, inbound.accept(ih, session).await) });
        if let Some(p) = self.peers.get_mut(&key) {
            p.connect = Some(task);
        }
    }

    pub(super) fn on_connected(
        &mut self,
        key: PeerKey,
        attempt: u64,
        res: Result<ConnectionHandle, ConnectError>,
    ) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(&key).filter(|p| p.attempt == attempt) else {
            // proto dropped it meanwhile, or a newer attempt replaced it;
            // the handle closes on drop.
            return;
        };
        peer.connect = None;
        match res {
            Ok(conn) if peer.conn.is_none() => {
                let conn = Arc::new(conn);
                if let Some(mut rx) = peer.outbox_rx.take() {
                    let c = conn.clone();
                    peer._writer = Some(AbortOnDropHandle::new(tokio::spawn(async move {
                        while let Some(m) = rx.recv().await {
                            if c.send(m).await.is_err() {
                                break;
                            }
                        }
                    })));
                }
                let id = conn.id();
                // The handshake gave QUIC its first round trips: proto
                // learns whether the peer is far before it asks anything.
                let rtt = conn.min_rtt();
                let node = peer.node;
                peer.remote = Some(conn.remote_addr());
                tracing::debug!(peer = %key, addr = %conn.remote_addr(), "connected");
                peer.up_since = Some(now);
                peer.pex = Some(PexSchedule::new(now));
                peer.gate = Some(PexGate::new(now, &self.pex_cfg));
                peer.conn = Some(conn);
                let early = std::mem::take(&mut peer.early);
                let _ = self.swarm.handle_path_rtt(now, key, rtt);
                for ev in early {
                    if event_conn(&ev) == id {
                        self.on_event(ev);
                    }
                }
                self.book.connected_to(now, node);
                // Our first `Peers` goes out at once: it tells a peer we
                // dialled where we listen.
                self.send_pex(now);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = %key, error = %e, "connect failed");
                let node = peer.node;
                self.peers.remove(&key);
                self.swarm.handle_peer_disconnected(now, key);
                self.book
                    .disconnected(now, node, Ending::Dropped, &mut self.rng);
                self.dial_due();
            }
        }
    }

    /// Drops the peer's connection state and aborts its serves.
    pub(super) fn forget(&mut self, key: PeerKey) -> Option<Peer> {
        self.abort_serves(key);
        self.peers.remove(&key)
    }

    pub(super) fn abort_serves(&mut self, key: PeerKey) {
        self.serve_handles.retain(|(p, _), h| {
            if *p == key {
                h.abort();
                false
            } else {
                true
            }
        });
    }

    /// Forgets the peer and closes its connection with `code`, without
    /// telling the book.
    fn close(&mut self, key: PeerKey, code: CloseCode) {
        if let Some(p) = self.forget(key) {
            if let Some(c) = &p.conn {
                c.close(code);
            }
        }
    }

    /// Forgets the peer, closes its connection with `code` (if any: a
    /// connection that closed itself needs none), and tells the book how
    /// it ended.
    pub(super) fn drop_peer(&mut self, key: PeerKey, code: Option<CloseCode>, how: Ending) {
        let Some(p) = self.forget(key) else { return };
        if let (Some(c), Some(code)) = (&p.conn, code) {
            c.close(code);
        }
        let now = self.now();
        self.book.disconnected(now, p.node, how, &mut self.rng);
    }

    /// Sends `Peers` on every connection whose schedule says so: our own
    /// entry first, then the other connected peers whose listen addresses
    /// we know.
    fn send_pex(&mut self, now: shoal_proto::swarm::Time) {
        // A private torrent (BEP 27) learns peers from its trackers only.
        if self.info.private {
            return;
        }
        let local = self.endpoint.node_id();
        let own = self
            .endpoint
            .local_addr()
            .ok()
            .filter(|a| a.port() != 0)
            .map(|a| PeerAddr {
                node_id: local,
                addrs: vec![a],
            });
        let due: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.is_some() && p.pex.is_some_and(|s| s.due(now)))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(node) = self.peers.get(&key).map(|p| p.node) else {
                continue;
            };
            let list = build_peers(own.clone(), self.book.connected_peers(&node), &mut self.rng);
            let cfg = self.pex_cfg;
            if let Some(p) = self.peers.get_mut(&key) {
                if let Some(s) = &mut p.pex {
                    s.sent(now, &cfg);
                }
                if !list.is_empty() {
                    // A full outbox only costs this one list.
                    let _ = p.outbox.try_send(wire::Message::Peers(list));
                }
            }
        }
    }

    /// A `Peers` from `key`: admitted by its gate, its sender's entry
    /// gives where it listens, the rest are candidates.
    pub(super) fn on_peers(
        &mut self,
        now: shoal_proto::swarm::Time,
        key: PeerKey,
        list: Vec<PeerAddr>,
    ) {
        let cfg = self.pex_cfg;
        if self.info.private {
            return;
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let (Some(gate), Some(remote)) = (&mut p.gate, p.remote) else {
            return;
        };
        if !gate.admit(now, &cfg) {
            tracing::debug!(peer = %key, "Peers too often; ignored");
            return;
        }
        let node = p.node;
        let local = self.endpoint.node_id();
        let got = admitted_entries(&local, &node, remote.ip(), list);
        if !got.sender_addrs.is_empty() {
            self.book.add_node(now, node, &got.sender_addrs);
        }
        self.book.add_pex(now, &got.others);
        self.dial_due();
    }
}
