//! Fetching a magnet link's info dictionary from peers: the decisions,
//! without the I/O. [`MetadataFetch`] decides which peer to ask next, how
//! many at once, how long each may take, which peers are never asked again
//! and when to give up; the caller opens connections, sends the requests
//! it is told to, feeds back what arrives and when, and closes what it is
//! told to close. Time comes in as an argument ([`Time`]), like the peer
//! book's.
//!
//! Each peer is asked for the whole dictionary on its own, with its own
//! [`MetadataAssembler`], so a dictionary that fails its SHA-1 check blames
//! exactly the peer that sent it.
//!
//! Invariants this machine keeps:
//! - At most [`FetchConfig::parallel`] peers are being asked at once.
//! - A peer whose pieces broke the metadata rules or whose dictionary did
//!   not hash to the infohash ("lied"), and an address that turned out to
//!   be ourselves, are never asked again, whoever lists them.
//! - A peer that could not be reached, refused, closed or took longer than
//!   [`FetchConfig::peer_timeout`] is asked again no sooner than
//!   [`FetchConfig::retry_after`] later.
//! - The result is decided once: the first verified dictionary, the first
//!   genuine-but-unacceptable one ([`FetchError::Refused`], which no peer
//!   can fix), [`FetchError::NoneLeft`] as soon as nobody can ever be
//!   asked (no trackers, and every peer given sent bad metadata or is this
//!   node), or [`FetchError::GaveUp`] at the deadline. Every peer still
//!   being asked is told to close before the result is handed out.
//! - Only a dictionary whose bytes hash to the infohash and parse as a
//!   checked info dictionary is ever returned (the assembler's guarantee).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::infohash::InfoHash;
use crate::metainfo::MetainfoError;
use crate::swarm::Time;
use crate::wire::{FetchedMetadata, MetadataAssembler, MetadataError};

/// The fetch's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Peers asked at once.
    pub parallel: usize,
    /// Longest one peer may take, from the connect to the last piece.
    pub peer_timeout: Duration,
    /// Wait between two announces while no peer is waiting to be asked.
    pub reannounce: Duration,
    /// Wait before a peer that failed (not one that lied) is asked again.
    pub retry_after: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            parallel: 4,
            peer_timeout: Duration::from_secs(15),
            reannounce: Duration::from_secs(3),
            retry_after: Duration::from_secs(3),
        }
    }
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAction {
    /// Ask the trackers for peers; answer with [`MetadataFetch::announced`].
    Announce,
    /// Connect to the peer and handshake; answer with
    /// [`MetadataFetch::connected`], [`MetadataFetch::connect_failed`] or
    /// [`MetadataFetch::itself`].
    Connect(SocketAddr),
    /// Send `MetadataRequest { piece }` to the connected peer.
    Request {
        /// The peer.
        peer: SocketAddr,
        /// The metadata piece.
        piece: u32,
    },
    /// Close the connection to the peer, or abandon connecting to it.
    Close(SocketAddr),
}

/// Why no info dictionary came out of the fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The deadline passed before any peer delivered a dictionary matching
    /// the infohash.
    #[error(
        "no peer delivered the metadata of {info_hash} within {timeout:?} \
         ({peers} peers tried, {bad} sent metadata that failed its check){}",
        last_suffix(.last)
    )]
    GaveUp {
        /// The magnet's infohash.
        info_hash: InfoHash,
        /// The time the fetch was given.
        timeout: Duration,
        /// Distinct peers asked (ourselves not counted).
        peers: usize,
        /// Peers whose metadata broke the rules or failed its hash.
        bad: usize,
        /// The last thing that went wrong, for the message.
        last: Option<String>,
    },
    /// The dictionary hashes to the infohash but shoal refuses it (a path
    /// escaping the download directory, say). No peer can fix this.
    #[error("the torrent's metadata is not acceptable: {0}")]
    Refused(MetainfoError),
    /// There are no trackers to find anyone new, and every peer given is
    /// never to be asked again (it sent bad metadata, or it is this node),
    /// or none was given: waiting for the deadline would help no one.
    #[error(
        "no peer is left to ask for the metadata of {info_hash} and no tracker \
         to find more ({peers} peers tried, {bad} sent metadata that failed its check){}",
        last_suffix(.last)
    )]
    NoneLeft {
        /// The magnet's infohash.
        info_hash: InfoHash,
        /// Distinct peers asked (ourselves not counted).
        peers: usize,
        /// Peers whose metadata broke the rules or failed its hash.
        bad: usize,
        /// The last thing that went wrong, for the message.
        last: Option<String>,
    },
}

fn last_suffix(last: &Option<String>) -> String {
    last.as_ref()
        .map_or_else(String::new, |l| format!("; last error: {l}"))
}

/// Where one peer stands.
#[derive(Debug, Clone)]
enum Peer {
    /// Waiting in the queue to be asked.
    Queued,
    /// Being asked: connecting, or connected with its own assembler.
    Asking(Box<Asking>),
    /// Failed; may be asked again from `retry_at`.
    Failed { retry_at: Time },
    /// Sent bad metadata: never asked again.
    Lied,
    /// The address is our own: never asked.
    Itself,
}

#[derive(Debug, Clone)]
struct Asking {
    asm: MetadataAssembler,
    asked: BTreeSet<u32>,
    connected: bool,
    until: Time,
}

/// The state of one magnet's metadata fetch. Feed it peers and events
/// (`add_peers`, `announced`, `connected`, `data`, ..., `handle_timeout`),
/// then drain [`MetadataFetch::poll_action`] and check
/// [`MetadataFetch::poll_outcome`]; wake it at
/// [`MetadataFetch::poll_timeout`].
#[derive(Debug, Clone)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    cfg: FetchConfig,
    timeout: Duration,
    deadline: Time,
    has_trackers: bool,
    /// The caller has handed over its first peers (perhaps none): before
    /// that an empty book means nothing.
    fed: bool,
    announcing: bool,
    next_announce: Time,
    peers: BTreeMap<SocketAddr, Peer>,
    queue: VecDeque<SocketAddr>,
    asking: usize,
    tried: BTreeSet<SocketAddr>,
    bad: usize,
    last: Option<String>,
    actions: VecDeque<FetchAction>,
    outcome: Option<Result<FetchedMetadata, FetchError>>,
    handed_out: bool,
}

impl MetadataFetch {
    /// A fetch of `info_hash` started at `now` that gives up `timeout`
    /// later. With `has_trackers` it asks for [`FetchAction::Announce`]
    /// whenever it has nobody left to ask.
    pub fn new(
        info_hash: InfoHash,
        cfg: FetchConfig,
        now: Time,
        timeout: Duration,
        has_trackers: bool,
    ) -> MetadataFetch {
        let mut f = MetadataFetch {
            info_hash,
            cfg,
            timeout,
            deadline: now + timeout,
            has_trackers,
            fed: false,
            announcing: false,
            next_announce: now,
            peers: BTreeMap::new(),
            queue: VecDeque::new(),
            asking: 0,
            tried: BTreeSet::new(),
            bad: 0,
            last: None,
            actions: VecDeque::new(),
            outcome: None,
            handed_out: false,
        };
        f.drive(now);
        f
    }

    /// Peers being asked now.
    pub fn asking(&self) -> usize {
        self.asking
    }

    /// Peers blamed so far for bad metadata.
    pub fn bad(&self) -> usize {
        self.bad
    }

    /// Whether the result is decided.
    pub fn is_done(&self) -> bool {
        self.outcome.is_some() || self.handed_out
    }

    /// Adds peers from any source (`x.pe`, a tracker). A known peer is
    /// queued again only if it failed and its retry time has come.
    pub fn add_peers(&mut self, now: Time, addrs: &[SocketAddr]) {
        if self.is_done() {
            return;
        }
        self.fed = true;
        for &a in addrs {
            match self.peers.get(&a) {
                None => self.enqueue(a),
                Some(Peer::Failed { retry_at }) if *retry_at <= now => self.enqueue(a),
                Some(_) => {}
            }
        }
        self.drive(now);
    }

    /// The answer to [`FetchAction::Announce`]: the peers a tracker listed,
    /// or why no tracker answered.
    pub fn announced(&mut self, now: Time, result: Result<Vec<SocketAddr>, String>) {
        self.announcing = false;
        match result {
            Ok(addrs) => self.add_peers(now, &addrs),
            Err(e) => {
                self.last = Some(format!("tracker: {e}"));
                self.drive(now);
            }
        }
    }

    /// The handshake with `peer` succeeded: its requests follow.
    pub fn connected(&mut self, now: Time, peer: SocketAddr) {
        if let Some(Peer::Asking(a)) = self.peers.get_mut(&peer) {
            a.connected = true;
            Self::request_missing(&mut self.actions, peer, a);
        }
        self.drive(now);
    }

    /// Connecting to `peer` failed.
    pub fn connect_failed(&mut self, now: Time, peer: SocketAddr, why: &str) {
        self.fail(now, peer, why);
        self.drive(now);
    }

    /// `peer` is this node's own address: never asked again.
    pub fn itself(&mut self, now: Time, peer: SocketAddr) {
        if matches!(self.peers.get(&peer), Some(Peer::Asking(_))) {
            self.asking -= 1;
        }
        self.tried.remove(&peer);
        self.peers.insert(peer, Peer::Itself);
        self.drive(now);
    }

    /// `peer` sent metadata piece `piece` of a dictionary of `total_size`
    /// bytes.
    pub fn data(&mut self, now: Time, peer: SocketAddr, piece: u32, total_size: u32, data: &[u8]) {
        let Some(Peer::Asking(a)) = self.peers.get_mut(&peer) else {
            return; // Late: the peer was already given up.
        };
        match a.asm.add(piece, total_size, data) {
            Ok(Some(m)) => self.finish(Ok(m)),
            Ok(None) => Self::request_missing(&mut self.actions, peer, a),
            Err(MetadataError::Info(e)) => self.finish(Err(FetchError::Refused(e))),
            Err(e) => {
                self.asking -= 1;
                self.bad += 1;
                self.last = Some(format!("{peer}: {e}"));
                self.peers.insert(peer, Peer::Lied);
                self.actions.push_back(FetchAction::Close(peer));
            }
        }
        self.drive(now);
    }

    /// `peer` refused metadata piece `piece` (it does not have it).
    pub fn rejected(&mut self, now: Time, peer: SocketAddr, piece: u32) {
        self.fail(now, peer, &format!("refused metadata piece {piece}"));
        self.drive(now);
    }

    /// The connection to `peer` ended.
    pub fn closed(&mut self, now: Time, peer: SocketAddr, why: &str) {
        self.fail(now, peer, &format!("closed: {why}"));
        self.drive(now);
    }

    /// Time has passed: peers past their limit fail, and at the deadline
    /// the fetch gives up.
    pub fn handle_timeout(&mut self, now: Time) {
        let late: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Asking(a) if a.until <= now))
            .map(|(a, _)| *a)
            .collect();
        let limit = self.cfg.peer_timeout;
        for peer in late {
            self.fail(now, peer, &format!("no metadata within {limit:?}"));
        }
        self.drive(now);
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<FetchAction> {
        self.actions.pop_front()
    }

    /// The result, once decided and once every close it needs has been
    /// handed out by [`MetadataFetch::poll_action`]. Returned once.
    pub fn poll_outcome(&mut self) -> Option<Result<FetchedMetadata, FetchError>> {
        if !self.actions.is_empty() {
            return None;
        }
        let out = self.outcome.take();
        if out.is_some() {
            self.handed_out = true;
        }
        out
    }

    /// When to call [`MetadataFetch::handle_timeout`] next; `None` once the
    /// result is decided.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.is_done() {
            return None;
        }
        let mut t = self.deadline;
        for p in self.peers.values() {
            match p {
                Peer::Asking(a) => t = t.min(a.until),
                Peer::Failed { retry_at } => t = t.min(*retry_at),
                _ => {}
            }
        }
        if self.wants_announce() {
            t = t.min(self.next_announce);
        }
        Some(t)
    }

    fn enqueue(&mut self, a: SocketAddr) {
        self.peers.insert(a, Peer::Queued);
        self.queue.push_back(a);
    }

    fn wants_announce(&self) -> bool {
        self.has_trackers && !self.announcing && self.queue.is_empty()
    }

    /// Gives up on a peer being asked, for now.
    fn fail(&mut self, now: Time, peer: SocketAddr, why: &str) {
        if !matches!(self.peers.get(&peer), Some(Peer::Asking(_))) {
            return;
        }
        self.asking -= 1;
        self.last = Some(format!("{peer}: {why}"));
        self.peers.insert(
            peer,
            Peer::Failed {
                retry_at: now + self.cfg.retry_after,
            },
        );
        self.actions.push_back(FetchAction::Close(peer));
    }

    /// Decides the result and closes every peer still being asked.
    fn finish(&mut self, out: Result<FetchedMetadata, FetchError>) {
        for (addr, p) in &mut self.peers {
            if matches!(p, Peer::Asking(_)) {
                self.actions.push_back(FetchAction::Close(*addr));
                // The fetch is over; this only keeps the count of peers
                // being asked true.
                *p = Peer::Failed {
                    retry_at: self.deadline,
                };
            }
        }
        self.asking = 0;
        self.queue.clear();
        self.outcome = Some(out);
    }

    /// Requests every piece the peer's assembler misses that is not asked
    /// yet: piece 0 first, the rest once piece 0 has said the size.
    fn request_missing(actions: &mut VecDeque<FetchAction>, peer: SocketAddr, a: &mut Asking) {
        if !a.connected {
            return;
        }
        let missing: Vec<u32> = a.asm.missing().filter(|p| !a.asked.contains(p)).collect();
        for piece in missing {
            a.asked.insert(piece);
            actions.push_back(FetchAction::Request { peer, piece });
        }
    }

    /// Gives up at the deadline, requeues failed peers whose time has come,
    /// fills the free slots from the queue and announces when nobody is
    /// left to ask.
    fn drive(&mut self, now: Time) {
        if self.is_done() {
            return;
        }
        if now >= self.deadline {
            let err = FetchError::GaveUp {
                info_hash: self.info_hash,
                timeout: self.timeout,
                peers: self.tried.len(),
                bad: self.bad,
                last: self.last.clone(),
            };
            self.finish(Err(err));
            return;
        }
        let due: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Failed { retry_at } if *retry_at <= now))
            .map(|(a, _)| *a)
            .collect();
        for a in due {
            self.enqueue(a);
        }
        while self.asking < self.cfg.parallel {
            let Some(addr) = self.queue.pop_front() else {
                break;
            };
            self.asking += 1;
            self.tried.insert(addr);
            self.peers.insert(
                addr,
                Peer::Asking(Box::new(Asking {
                    asm: MetadataAssembler::new(self.info_hash),
                    asked: BTreeSet::new(),
                    connected: false,
                    until: now + self.cfg.peer_timeout,
                })),
            );
            self.actions.push_back(FetchAction::Connect(addr));
        }
        if !self.has_trackers
            && self.fed
            && self.asking == 0
            && self
                .peers
                .values()
                .all(|p| matches!(p, Peer::Lied | Peer::Itself))
        {
            let err = FetchError::NoneLeft {
                info_hash: self.info_hash,
                peers: self.tried.len(),
                bad: self.bad,
                last: self.last.clone(),
            };
            self.finish(Err(err));
            return;
        }
        if self.wants_announce() && now >= self.next_announce {
            self.announcing = true;
            self.next_announce = now + self.cfg.reannounce;
            self.actions.push_back(FetchAction::Announce);
        }
    }
}

#[cfg(test)]
mod tests;
