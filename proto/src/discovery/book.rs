//! The peer book of one torrent: every peer it has heard of, and the
//! decisions about dialing them.
//!
//! A tracker gives bare addresses; PEX and gossip give node ids with
//! addresses. An address entry ([`Target::Addr`]) becomes a node entry
//! ([`Target::Node`]) once a dial has shown, by TLS, which node answers
//! there, so one node is never dialled twice under two names.
//!
//! Invariants this module keeps:
//! - At most [`BookConfig::max_peers`] peers are connected or being dialled
//!   because of [`PeerBook::poll_dials`], and at most
//!   [`BookConfig::max_dialing`] dials run at once.
//! - While the torrent is complete ([`PeerBook::set_complete`]) the book
//!   dials only bare addresses listed since it completed (what trackers
//!   list, and a tracker lists only leechers to a seeder; what they
//!   listed before may be seeds, since a leecher is told of seeds too)
//!   and entries it was explicitly asked to
//!   dial ([`PeerBook::retry_now`]), not nodes learnt by PEX, which are as
//!   likely complete too: dials between complete nodes only find each
//!   other useless. Without this rule every node of a finished flash
//!   crowd dialled its way through its book, one useless handshake per
//!   entry (in the simulator, 174 dials per node at 1,000 nodes instead of
//!   36), and again each time `forget_after` made the given-up entries
//!   due. A seed that dialled nobody at all would wait for leechers to
//!   pick it among their many entries: in a simulated flash crowd of
//!   1,000, 5 did.
//! - [`PeerBook::accepts_inbound`] is false once connections, dials and
//!   inbound handshakes together reach [`BookConfig::max_connections`]:
//!   without a bound, a node every tracker answer lists early in a flash
//!   crowd is dialled by nearly the whole swarm (the simulator showed one
//!   leecher with 1,000 connections in a swarm of 1,000).
//! - A banned node is never returned by [`PeerBook::poll_dials`] again, nor
//!   is an address that turned out to be ourselves.
//! - After `n` failed attempts in a row the next is no sooner than
//!   `min(backoff_max, backoff_base * 2^(n-1)) / 2` later; after
//!   `max_retries` failures the peer is given up until some source lists
//!   it again `forget_after` later.
//! - The book holds at most [`BookConfig::max_known`] entries and at most
//!   [`MAX_PEER_ADDRS`] addresses per entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::rng::Rng;
use crate::swarm::{SwarmError, Time};
use crate::wire::{CloseCode, NodeId, PeerAddr, MAX_PEER_ADDRS};

/// The book's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookConfig {
    /// Peers connected or being dialled at which dialing stops. Inbound
    /// connections count too.
    pub max_peers: usize,
    /// Connections either way (with dials and inbound handshakes) at which
    /// inbound ones are refused as busy. Above `max_peers`, so that a
    /// node that has dialled its fill still lets newcomers in.
    pub max_connections: usize,
    /// Dials in flight at once.
    pub max_dialing: usize,
    /// Wait after the first failure; doubles with each further one.
    pub backoff_base: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// Failures in a row after which the peer is given up.
    pub max_retries: u32,
    /// A peer that no source listed for this long is forgotten, and a
    /// given-up peer still listed is tried afresh after it.
    pub forget_after: Duration,
    /// A connection that lasted this long clears the failure count when
    /// it drops, so a long-lived peer that restarts is retried promptly.
    pub stable_after: Duration,
    /// Entries kept at most; new candidates beyond it are ignored.
    pub max_known: usize,
}

impl Default for BookConfig {
    fn default() -> Self {
        BookConfig {
            max_peers: 40,
            max_connections: 60,
            max_dialing: 8,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            max_retries: 8,
            forget_after: Duration::from_secs(900),
            stable_after: Duration::from_secs(60),
            max_known: 1000,
        }
    }
}

/// What an entry is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A node whose id we know (PEX, gossip, a dial that identified it).
    Node(NodeId),
    /// An address whose node we do not know yet (a tracker, a magnet link).
    Addr(SocketAddr),
}

/// A dial to make: where, and the node id TLS must prove if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// The entry it is for; report the outcome under it.
    pub target: Target,
    /// The address to dial.
    pub addr: SocketAddr,
    /// The id the peer's certificate must carry, if known.
    pub node_id: Option<NodeId>,
}

/// How a connection ended, as far as redialing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Lost, closed or refused: retried with backoff.
    Dropped,
    /// The swarm found the peer useless (both seeds, say): not redialled
    /// until listed again after `forget_after`.
    NotUseful,
    /// The swarm banned it: never redialled.
    Banned,
}

/// Why a dial that reached a node is not going ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is this node's own.
    Itself,
    /// The node is already connected or being connected.
    Duplicate,
    /// The node is banned.
    Banned,
}

impl Refusal {
    /// What becomes of a dial once it is known which node answered: a
    /// banned node is refused before anything else (a ban outlives its
    /// connections), then one already connected or being connected; else
    /// the dial goes ahead. The daemon's actor and the simulator both ask
    /// here, so they refuse in the same order.
    pub fn of_identified(banned: bool, connected: bool) -> Option<Refusal> {
        if banned {
            Some(Refusal::Banned)
        } else if connected {
            Some(Refusal::Duplicate)
        } else {
            None
        }
    }

    /// What the dialer's book hears when its own swarm refuses the node a
    /// dial reached ([`crate::swarm::Swarm::handle_peer_connected`]): a
    /// ban there is a ban; anything else means the node is connected
    /// already. The daemon's actor and the simulator both ask here.
    pub fn of_swarm(e: &SwarmError) -> Refusal {
        if matches!(e, SwarmError::Banned(_)) {
            Refusal::Banned
        } else {
            Refusal::Duplicate
        }
    }
}

/// The close code a dialer refuses the connection with, so the far end
/// learns why.
impl From<Refusal> for CloseCode {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Itself => CloseCode::SelfConnection,
            Refusal::Duplicate => CloseCode::Duplicate,
            Refusal::Banned => CloseCode::Banned,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Dialing,
    Connected { since: Time },
    GaveUp { at: Time },
    Banned,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    state: State,
    failures: u32,
    retry_at: Time,
    listed_at: Time,
    /// Someone asked for a dial now ([`PeerBook::retry_now`]); cleared
    /// when the dial starts.
    asked: bool,
    /// Listed as a bare address while the torrent was complete: a
    /// tracker's answer to a seeder, so a leecher.
    listed_complete: bool,
}

impl Entry {
    fn new(now: Time) -> Entry {
        Entry {
            addrs: Vec::new(),
            next_addr: 0,
            state: State::Idle,
            failures: 0,
            retry_at: now,
            listed_at: now,
            asked: false,
            listed_complete: false,
        }
    }

    /// Adds `addr` to the front (it is the freshest), keeping the bound.
    fn learn(&mut self, addr: SocketAddr) {
        self.addrs.retain(|a| *a != addr);
        self.addrs.insert(0, addr);
        self.addrs.truncate(MAX_PEER_ADDRS);
        self.next_addr = 0;
    }
}

/// Every peer one torrent knows of. See the module documentation.
#[derive(Debug, Clone)]
pub struct PeerBook {
    cfg: BookConfig,
    local: NodeId,
    entries: BTreeMap<Target, Entry>,
    own_addrs: BTreeSet<SocketAddr>,
    complete: bool,
}

impl PeerBook {
    /// An empty book for the node `local`.
    pub fn new(cfg: BookConfig, local: NodeId) -> PeerBook {
        PeerBook {
            cfg,
            local,
            entries: BTreeMap::new(),
            own_addrs: BTreeSet::new(),
            complete: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BookConfig {
        &self.cfg
    }

    /// The node entry holding `addr`, or the address entry for it.
    fn find_addr(&self, addr: SocketAddr) -> Option<Target> {
        if self.entries.contains_key(&Target::Addr(addr)) {
            return Some(Target::Addr(addr));
        }
        self.entries
            .iter()
            .find(|(t, e)| matches!(t, Target::Node(_)) && e.addrs.contains(&addr))
            .map(|(t, _)| *t)
    }

    /// Bare addresses from a tracker or magnet link: each becomes a
    /// candidate, or refreshes the entry that already holds it.
    pub fn add_addrs(&mut self, now: Time, addrs: &[SocketAddr]) {
        for &addr in addrs {
            if addr.port() == 0 || addr.ip().is_unspecified() || self.own_addrs.contains(&addr) {
                continue;
            }
            match self.find_addr(addr) {
                Some(t) => {
                    if let Some(e) = self.entries.get_mut(&t) {
                        e.listed_at = now;
                        e.listed_complete |= self.complete;
                    }
                }
                None if self.entries.len() < self.cfg.max_known => {
                    let mut e = Entry::new(now);
                    e.addrs.push(addr);
                    e.listed_complete = self.complete;
                    self.entries.insert(Target::Addr(addr), e);
                }
                None => {}
            }
        }
    }

    /// A node with its listen addresses (a PEX entry, gossip, or a peer's
    /// own announcement). Our own id is ignored.
    pub fn add_node(&mut self, now: Time, node: NodeId, addrs: &[SocketAddr]) {
        if node == self.local {
            return;
        }
        let target = Target::Node(node);
        if !self.entries.contains_key(&target) {
            if self.entries.len() >= self.cfg.max_known {
                return;
            }
            self.entries.insert(target, Entry::new(now));
        }
        // An address entry for one of these addresses is the same peer.
        for a in addrs {
            if let Some(old) = self.entries.remove(&Target::Addr(*a)) {
                if old.state == State::Dialing {
                    // Its dial is in flight; it reports under its own
                    // name, so keep it until then.
                    self.entries.insert(Target::Addr(*a), old);
                }
            }
        }
        let Some(e) = self.entries.get_mut(&target) else {
            return;
        };
        e.listed_at = now;
        let usable: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
            .take(MAX_PEER_ADDRS)
            .collect();
        for a in usable.into_iter().rev() {
            e.learn(a);
        }
    }

    /// Every known node (not a bare address) with its listen addresses.
    pub fn add_pex(&mut self, now: Time, entries: &[PeerAddr]) {
        for p in entries {
            self.add_node(now, p.node_id, &p.addrs);
        }
    }

    fn counts(&self) -> (usize, usize) {
        let mut connected = 0;
        let mut dialing = 0;
        for e in self.entries.values() {
            match e.state {
                State::Connected { .. } => connected += 1,
                State::Dialing => dialing += 1,
                _ => {}
            }
        }
        (connected, dialing)
    }

    /// Whether entry `e` may be dialled when due: it has an address, and
    /// while we are complete only if someone asked for it or a tracker
    /// listed it as a bare address since (see the module comment).
    fn may_dial(&self, t: &Target, e: &Entry) -> bool {
        !e.addrs.is_empty()
            && (e.asked || !self.complete || (matches!(t, Target::Addr(_)) && e.listed_complete))
    }

    /// Our torrent is complete (a seed), or incomplete again: a complete
    /// node dials only what it is asked to and the bare addresses trackers
    /// list from then on (see the module comment).
    pub fn set_complete(&mut self, complete: bool) {
        self.complete = complete;
    }

    /// Whether an inbound connection may go ahead, with `handshaking`
    /// inbound connections accepted but not yet reported connected.
    pub fn accepts_inbound(&self, handshaking: usize) -> bool {
        let (connected, dialing) = self.counts();
        connected + dialing + handshaking < self.cfg.max_connections
    }

    /// Peers connected (as far as the book was told).
    pub fn connected(&self) -> usize {
        self.counts().0
    }

    /// Dials in flight.
    pub fn dialing(&self) -> usize {
        self.counts().1
    }

    /// The dials to start now, chosen at random among the peers due,
    /// within the budget. Each is marked as dialing until its outcome is
    /// reported.
    pub fn poll_dials(&mut self, now: Time, rng: &mut Rng) -> Vec<Dial> {
        let (connected, dialing) = self.counts();
        let budget = self
            .cfg
            .max_peers
            .saturating_sub(connected + dialing)
            .min(self.cfg.max_dialing.saturating_sub(dialing));
        if budget == 0 {
            return Vec::new();
        }
        let mut due: Vec<Target> = self
            .entries
            .iter()
            .filter(|(t, e)| e.state == State::Idle && e.retry_at <= now && self.may_dial(t, e))
            .map(|(t, _)| *t)
            .collect();
        let mut out = Vec::new();
        while out.len() < budget && !due.is_empty() {
            let i = rng.below(due.len() as u64) as usize;
            let target = due.swap_remove(i);
            let Some(e) = self.entries.get_mut(&target) else {
                continue;
            };
            e.state = State::Dialing;
            e.asked = false;
            let addr = e.addrs[e.next_addr % e.addrs.len()];
            out.push(Dial {
                target,
                addr,
                node_id: match target {
                    Target::Node(n) => Some(n),
                    Target::Addr(_) => None,
                },
            });
        }
        out
    }

    /// When [`PeerBook::poll_dials`] may next return something, if the
    /// budget allows a dial at all.
    pub fn poll_timeout(&self) -> Option<Time> {
        let (connected, dialing) = self.counts();
        if connected + dialing >= self.cfg.max_peers || dialing >= self.cfg.max_dialing {
            return None;
        }
        self.entries
            .iter()
            .filter(|(t, e)| e.state == State::Idle && self.may_dial(t, e))
            .map(|(_, e)| e.retry_at)
            .min()
    }

    fn backoff(&self, failures: u32, rng: &mut Rng) -> Duration {
        let shift = failures.saturating_sub(1).min(30);
        let full = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << shift)
            .min(self.cfg.backoff_max);
        let half = full / 2;
        let jitter = rng.below(u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1));
        half + Duration::from_micros(jitter)
    }

    /// One more failure for the entry: back off, or give up.
    fn failed(&mut self, now: Time, target: Target, rng: &mut Rng) {
        let max_retries = self.cfg.max_retries;
        let Some(failures) = self.entries.get_mut(&target).map(|e| {
            e.failures += 1;
            e.next_addr += 1;
            e.failures
        }) else {
            return;
        };
        let delay = self.backoff(failures, rng);
        if let Some(e) = self.entries.get_mut(&target) {
            if failures > max_retries {
                e.state = State::GaveUp { at: now };
            } else {
                e.state = State::Idle;
                e.retry_at = now + delay;
            }
        }
    }

    /// The dial of `target` failed before any node was identified (no
    /// answer, TLS refused, the wrong node id), or its handshake failed.
    pub fn dial_failed(&mut self, now: Time, target: Target, rng: &mut Rng) {
        if self
            .entries
            .get(&target)
            .is_some_and(|e| e.state == State::Dialing)
        {
            self.failed(now, target, rng);
        }
    }

    /// The dial of `target` at `addr` reached `node` (TLS proved it) and
    /// goes ahead with the handshake. Returns the entry's name from now on:
    /// an address entry merges into the node's entry.
    pub fn dial_identified(
        &mut self,
        now: Time,
        target: Target,
        node: NodeId,
        addr: SocketAddr,
    ) -> Target {
        let merged = self.merge(now, target, node, addr);
        if let Some(e) = self.entries.get_mut(&merged) {
            e.state = State::Dialing;
        }
        merged
    }

    /// The dial of `target` at `addr` reached `node` but does not go
    /// ahead.
    pub fn dial_refused(
        &mut self,
        now: Time,
        target: Target,
        node: NodeId,
        addr: SocketAddr,
        why: Refusal,
    ) {
        if why == Refusal::Itself {
            self.entries.remove(&target);
            self.own_addrs.insert(addr);
            return;
        }
        let was_dialing = target == Target::Node(node)
            && self
                .entries
                .get(&target)
                .is_some_and(|e| e.state == State::Dialing);
        let merged = self.merge(now, target, node, addr);
        if let Some(e) = self.entries.get_mut(&merged) {
            match why {
                Refusal::Banned => e.state = State::Banned,
                // The node's own entry stays as the other connection left
                // it, unless this dial was all it had.
                Refusal::Duplicate if was_dialing => e.state = State::Idle,
                Refusal::Duplicate | Refusal::Itself => {}
            }
        }
    }

    /// Moves an address entry into `node`'s entry (made if missing) and
    /// returns the node's name.
    fn merge(&mut self, now: Time, target: Target, node: NodeId, addr: SocketAddr) -> Target {
        let named = Target::Node(node);
        let old = if target == named {
            None
        } else {
            self.entries.remove(&target)
        };
        let e = self.entries.entry(named).or_insert_with(|| Entry::new(now));
        e.learn(addr);
        if let Some(old) = old {
            e.listed_at = e.listed_at.max(old.listed_at);
            e.failures = e.failures.max(old.failures);
        }
        named
    }

    /// `node` is connected (a dial's handshake passed, or an inbound
    /// connection was accepted).
    pub fn connected_to(&mut self, now: Time, node: NodeId) {
        if node == self.local {
            return;
        }
        let e = self
            .entries
            .entry(Target::Node(node))
            .or_insert_with(|| Entry::new(now));
        e.state = State::Connected { since: now };
        e.listed_at = now;
    }

    /// `node`'s connection ended.
    pub fn disconnected(&mut self, now: Time, node: NodeId, how: Ending, rng: &mut Rng) {
        let target = Target::Node(node);
        let stable = self.cfg.stable_after;
        let Some(e) = self.entries.get_mut(&target) else {
            return;
        };
        match how {
            Ending::Banned => e.state = State::Banned,
            Ending::NotUseful => e.state = State::GaveUp { at: now },
            Ending::Dropped => {
                if let State::Connected { since } = e.state {
                    if now.saturating_since(since) >= stable {
                        e.failures = 0;
                    }
                }
                e.listed_at = now;
                e.state = State::Dialing;
                self.failed(now, target, rng);
            }
        }
    }

    /// Someone asked to dial `target` now: an idle or given-up entry is
    /// due at once. A ban, a connection or a dial in flight is left alone.
    pub fn retry_now(&mut self, now: Time, target: Target) {
        if let Some(e) = self.entries.get_mut(&target) {
            match e.state {
                State::Idle => {
                    e.retry_at = now;
                    e.asked = true;
                }
                State::GaveUp { .. } => {
                    e.state = State::Idle;
                    e.failures = 0;
                    e.retry_at = now;
                    e.asked = true;
                }
                State::Dialing | State::Connected { .. } | State::Banned => {}
            }
        }
    }

    /// Whether `node` is banned.
    pub fn is_banned(&self, node: &NodeId) -> bool {
        self.entries
            .get(&Target::Node(*node))
            .is_some_and(|e| e.state == State::Banned)
    }

    /// Bans `node` for the rest of the swarm.
    pub fn ban(&mut self, now: Time, node: NodeId) {
        let e = self
            .entries
            .entry(Target::Node(node))
            .or_insert_with(|| Entry::new(now));
        e.state = State::Banned;
    }

    /// The listen addresses known for `node`.
    pub fn addrs(&self, node: &NodeId) -> &[SocketAddr] {
        self.entries
            .get(&Target::Node(*node))
            .map_or(&[], |e| e.addrs.as_slice())
    }

    /// Connected nodes with their listen addresses, except `except` (the
    /// peer the list is for): what PEX tells others.
    pub fn connected_peers(&self, except: &NodeId) -> Vec<PeerAddr> {
        self.entries
            .iter()
            .filter_map(|(t, e)| match (t, e.state) {
                (Target::Node(n), State::Connected { .. })
                    if n != except && !e.addrs.is_empty() =>
                {
                    Some(PeerAddr {
                        node_id: *n,
                        addrs: e.addrs.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Forgets what no source has listed for `forget_after`, and makes
    /// given-up peers that are still listed eligible again after it.
    pub fn expire(&mut self, now: Time) {
        let forget = self.cfg.forget_after;
        self.entries.retain(|_, e| match e.state {
            State::Connected { .. } | State::Dialing | State::Banned => true,
            State::Idle => now.saturating_since(e.listed_at) < forget,
            State::GaveUp { .. } => now.saturating_since(e.listed_at) < 2 * forget,
        });
        for e in self.entries.values_mut() {
            if let State::GaveUp { at } = e.state {
                if now.saturating_since(at) >= forget && e.listed_at > at {
                    e.state = State::Idle;
                    e.failures = 0;
                    e.retry_at = now;
                }
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
