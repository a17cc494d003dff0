//! A tiny deterministic network for driving several [`Swarm`]s against
//! each other: discrete events in simulated time, every node with an
//! upload and a download pipe of fixed rate (FIFO, store and forward),
//! a fixed one-way latency per message, control messages beside the data
//! (as on QUIC streams), and the caller duties a real driver has: buffer
//! blocks, hash pieces when asked, store them, drop queued serves on
//! choke or cancel, close connections and optionally redial.
//!
//! Invariant: no wall clock, no OS randomness, no hash-map iteration; the
//! same setup gives the same event sequence, which the trace hash records.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

use crate::swarm::{
    Action, BlockOutcome, BlockRef, Geometry, Message, PeerKey, Swarm, SwarmConfig, Time,
};

/// How one simulated node behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub seed: bool,
    /// Upload bytes per second.
    pub up: f64,
    /// Download bytes per second.
    pub down: f64,
    /// Sends garbage for every block it serves.
    pub corrupt: bool,
    /// Never sends any block it is asked for.
    pub mute: bool,
    /// When it joins the network.
    pub join: Duration,
}

impl Spec {
    pub(crate) fn seed(up: f64) -> Spec {
        Spec {
            seed: true,
            up,
            down: up,
            corrupt: false,
            mute: false,
            join: Duration::ZERO,
        }
    }

    pub(crate) fn leecher(up: f64, down: f64) -> Spec {
        Spec {
            seed: false,
            up,
            down,
            corrupt: false,
            mute: false,
            join: Duration::ZERO,
        }
    }
}

pub(crate) struct Node {
    pub swarm: Swarm,
    pub spec: Spec,
    up_free: bool,
    up_queue: VecDeque<(usize, BlockRef)>,
    down_free_at: Time,
    /// Per piece, per block: whether the accepted copy is garbage.
    buffers: BTreeMap<u32, BTreeMap<u32, bool>>,
    timer: Option<Time>,
    pub completed_at: Option<Time>,
}

#[derive(Debug, Clone)]
enum Ev {
    Msg {
        from: usize,
        to: usize,
        gen: u64,
        msg: Message,
    },
    UploadDone {
        from: usize,
        to: usize,
        gen: u64,
        block: BlockRef,
    },
    BlockWire {
        from: usize,
        to: usize,
        gen: u64,
        block: BlockRef,
        bad: bool,
    },
    BlockIn {
        from: usize,
        to: usize,
        gen: u64,
        block: BlockRef,
        bad: bool,
    },
    Timer {
        node: usize,
        at: Time,
    },
    Verified {
        node: usize,
        piece: u32,
        ok: bool,
    },
    Stored {
        node: usize,
        piece: u32,
    },
    Connect {
        a: usize,
        b: usize,
    },
    Gone {
        node: usize,
        peer: usize,
        gen: u64,
    },
}

/// Counts of what happened, for assertions.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub cancels: u64,
    pub rejects: u64,
    pub requests: u64,
    pub disconnects: Vec<(usize, usize, crate::swarm::DisconnectReason)>,
    pub bans: Vec<(usize, usize)>,
    pub hash_failures: u64,
    /// Largest number of peers each node unchoked at once.
    pub max_unchoked: BTreeMap<usize, usize>,
    /// Per piece, (time, dest) of every block node 0 finished uploading.
    pub seed_blocks: BTreeMap<u32, Vec<(Time, usize)>>,
    /// Last time node 0 sent a Have.
    pub seed_last_have: Time,
}

pub(crate) struct Net {
    pub now: Time,
    pub nodes: Vec<Node>,
    pub latency: Duration,
    pub reconnect_after: Option<Duration>,
    pub counters: Counters,
    /// FNV-1a over every action and input, for determinism checks.
    pub trace: u64,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    /// Connection generation per unordered pair; odd = up.
    conns: BTreeMap<(usize, usize), u64>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn key(i: usize) -> PeerKey {
    PeerKey(i as u64)
}

fn transfer(len: u32, rate: f64) -> Duration {
    Duration::from_micros((f64::from(len) * 1e6 / rate).ceil() as u64)
}

impl Net {
    /// Nodes built from `specs`, every pair connected once both have
    /// joined (the lower index dials).
    pub(crate) fn new(geo: Geometry, cfg: &SwarmConfig, specs: &[Spec], seed: u64) -> Net {
        let n = specs.len();
        let all: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        Net::with_links(geo, cfg, specs, seed, &all)
    }

    /// Nodes built from `specs`, connected only along `links` (the first
    /// of each pair dials).
    pub(crate) fn with_links(
        geo: Geometry,
        cfg: &SwarmConfig,
        specs: &[Spec],
        seed: u64,
        links: &[(usize, usize)],
    ) -> Net {
        let n = geo.piece_count() as usize;
        let full = {
            let mut v = vec![0u8; n.div_ceil(8)];
            for i in 0..n {
                v[i / 8] |= 0x80 >> (i % 8);
            }
            v
        };
        let empty = vec![0u8; n.div_ceil(8)];
        let nodes = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Node {
                swarm: Swarm::new(
                    geo,
                    if s.seed { &full } else { &empty },
                    cfg.clone(),
                    seed.wrapping_add(i as u64 * 7919),
                )
                .unwrap(),
                spec: *s,
                up_free: true,
                up_queue: VecDeque::new(),
                down_free_at: Time::ZERO,
                buffers: BTreeMap::new(),
                timer: None,
                completed_at: None,
            })
            .collect();
        let mut net = Net {
            now: Time::ZERO,
            nodes,
            latency: Duration::from_millis(5),
            reconnect_after: None,
            counters: Counters::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            conns: BTreeMap::new(),
        };
        for &(a, b) in links {
            let at = Time::ZERO + specs[a].join.max(specs[b].join);
            net.push(at, Ev::Connect { a, b });
        }
        net
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn mix(&mut self, s: &str) {
        for b in s.bytes() {
            self.trace ^= u64::from(b);
            self.trace = self.trace.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn gen(&self, a: usize, b: usize) -> u64 {
        self.conns.get(&pair(a, b)).copied().unwrap_or(0)
    }

    fn up(&self, a: usize, b: usize, gen: u64) -> bool {
        gen % 2 == 1 && self.gen(a, b) == gen
    }

    /// Whether every node holds every piece.
    pub(crate) fn all_complete(&self) -> bool {
        self.nodes.iter().all(|n| n.swarm.is_complete())
    }

    /// Runs until every node is complete, the queue empties or `limit`.
    pub(crate) fn run(&mut self, limit: Duration) -> bool {
        let end = Time::ZERO + limit;
        while let Some(Reverse((at, id))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            let ev = self.events.remove(&id).unwrap();
            self.step(ev);
            if self.all_complete() {
                return true;
            }
        }
        self.all_complete()
    }

    fn step(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Connect { a, b } => {
                if self.up(a, b, self.gen(a, b)) {
                    return;
                }
                let banned =
                    self.nodes[a].swarm.is_banned(key(b)) || self.nodes[b].swarm.is_banned(key(a));
                if banned {
                    return;
                }
                *self.conns.entry(pair(a, b)).or_insert(0) += 1;
                self.mix(&format!("{now:?} connect {a} {b}"));
                let ra = self.nodes[a].swarm.handle_peer_connected(now, key(b), true);
                let rb = self.nodes[b]
                    .swarm
                    .handle_peer_connected(now, key(a), false);
                if ra.is_err() || rb.is_err() {
                    // One side refused: close what the other opened.
                    *self.conns.get_mut(&pair(a, b)).unwrap() += 1;
                    self.nodes[a].swarm.handle_peer_disconnected(now, key(b));
                    self.nodes[b].swarm.handle_peer_disconnected(now, key(a));
                }
                self.drain(a);
                self.drain(b);
            }
            Ev::Msg { from, to, gen, msg } => {
                if !self.up(from, to, gen) {
                    return;
                }
                self.deliver(from, to, msg);
                self.drain(to);
            }
            Ev::UploadDone {
                from,
                to,
                gen,
                block,
            } => {
                self.nodes[from].up_free = true;
                if self.up(from, to, gen) {
                    if from == 0 {
                        self.counters
                            .seed_blocks
                            .entry(block.piece)
                            .or_default()
                            .push((now, to));
                    }
                    self.nodes[from]
                        .swarm
                        .handle_bytes_sent(now, key(to), u64::from(block.len));
                    let bad = self.nodes[from].spec.corrupt;
                    self.push(
                        now + self.latency,
                        Ev::BlockWire {
                            from,
                            to,
                            gen,
                            block,
                            bad,
                        },
                    );
                }
                self.start_upload(from);
                self.drain(from);
            }
            Ev::BlockWire {
                from,
                to,
                gen,
                block,
                bad,
            } => {
                let node = &mut self.nodes[to];
                let start = node.down_free_at.max(now);
                let done = start + transfer(block.len, node.spec.down);
                node.down_free_at = done;
                self.push(
                    done,
                    Ev::BlockIn {
                        from,
                        to,
                        gen,
                        block,
                        bad,
                    },
                );
            }
            Ev::BlockIn {
                from,
                to,
                gen,
                block,
                bad,
            } => {
                if !self.up(from, to, gen) {
                    return;
                }
                let n = &mut self.nodes[to];
                n.swarm
                    .handle_bytes_received(now, key(from), u64::from(block.len));
                let out = n.swarm.handle_block(now, key(from), block).unwrap();
                if out == BlockOutcome::Accepted {
                    n.buffers
                        .entry(block.piece)
                        .or_default()
                        .insert(block.offset, bad);
                }
                self.mix(&format!("{now:?} block {from}->{to} {block:?} {out:?}"));
                self.drain(to);
            }
            Ev::Timer { node, at } => {
                if self.nodes[node].timer != Some(at) {
                    return;
                }
                self.nodes[node].timer = None;
                self.nodes[node].swarm.handle_timeout(now);
                self.drain(node);
            }
            Ev::Verified { node, piece, ok } => {
                self.nodes[node]
                    .swarm
                    .handle_piece_verified(now, piece, ok)
                    .unwrap();
                if ok {
                    self.push(now, Ev::Stored { node, piece });
                } else {
                    self.counters.hash_failures += 1;
                }
                self.drain(node);
            }
            Ev::Stored { node, piece } => {
                self.nodes[node]
                    .swarm
                    .handle_piece_stored(now, piece)
                    .unwrap();
                self.drain(node);
            }
            Ev::Gone { node, peer, gen } => {
                if self.gen(node, peer) != gen {
                    return;
                }
                self.nodes[node]
                    .swarm
                    .handle_peer_disconnected(now, key(peer));
                self.drain(node);
            }
        }
    }

    /// Hands a control message to the receiving swarm.
    fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        let now = self.now;
        let s = &mut self.nodes[to].swarm;
        let k = key(from);
        // The receiver may have dropped the sender a moment ago.
        let _ = s.handle_message(now, k, msg);
    }

    fn start_upload(&mut self, from: usize) {
        let node = &mut self.nodes[from];
        if !node.up_free {
            return;
        }
        let Some((to, block)) = node.up_queue.pop_front() else {
            return;
        };
        node.up_free = false;
        let done = self.now + transfer(block.len, node.spec.up);
        let gen = self.gen(from, to);
        self.push(
            done,
            Ev::UploadDone {
                from,
                to,
                gen,
                block,
            },
        );
    }

    /// Carries out everything node `i` asks for, then re-arms its timer.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(a) = self.nodes[i].swarm.poll_action() {
            self.mix(&format!("{now:?} {i} {a:?}"));
            match a {
                Action::Send { peer, message } => {
                    let to = peer.0 as usize;
                    match &message {
                        Message::Cancel(_) => self.counters.cancels += 1,
                        Message::Reject(_) => self.counters.rejects += 1,
                        Message::Request(_) => self.counters.requests += 1,
                        Message::Have(_) if i == 0 => self.counters.seed_last_have = now,
                        Message::Choke => self.nodes[i].up_queue.retain(|(t, _)| *t != to),
                        _ => {}
                    }
                    let gen = self.gen(i, to);
                    self.push(
                        now + self.latency,
                        Ev::Msg {
                            from: i,
                            to,
                            gen,
                            msg: message,
                        },
                    );
                }
                Action::ServeBlock { peer, block } => {
                    if !self.nodes[i].spec.mute {
                        self.nodes[i].up_queue.push_back((peer.0 as usize, block));
                        self.start_upload(i);
                    }
                }
                Action::AbortServe { peer, block } => {
                    let to = peer.0 as usize;
                    self.nodes[i]
                        .up_queue
                        .retain(|(t, b)| !(*t == to && *b == block));
                }
                Action::VerifyPiece { piece } => {
                    let bufs = self.nodes[i].buffers.remove(&piece).unwrap_or_default();
                    let ok = !bufs.values().any(|bad| *bad);
                    self.push(now, Ev::Verified { node: i, piece, ok });
                }
                Action::Disconnect { peer, reason } => {
                    let j = peer.0 as usize;
                    self.counters.disconnects.push((i, j, reason));
                    if self.gen(i, j) % 2 == 1 {
                        *self.conns.get_mut(&pair(i, j)).unwrap() += 1;
                    }
                    let gen = self.gen(i, j);
                    self.nodes[i].up_queue.retain(|(t, _)| *t != j);
                    self.nodes[j].up_queue.retain(|(t, _)| *t != i);
                    self.push(
                        now + self.latency,
                        Ev::Gone {
                            node: j,
                            peer: i,
                            gen,
                        },
                    );
                    if let Some(after) = self.reconnect_after {
                        self.push(now + after, Ev::Connect { a: i, b: j });
                    }
                }
                Action::Ban { peer } => self.counters.bans.push((i, peer.0 as usize)),
                Action::Completed => self.nodes[i].completed_at = Some(now),
            }
        }
        let unchoked = self.nodes[i].swarm.stats().unchoked as usize;
        let m = self.counters.max_unchoked.entry(i).or_default();
        *m = (*m).max(unchoked);
        let t = self.nodes[i].swarm.poll_timeout();
        if t != self.nodes[i].timer {
            self.nodes[i].timer = t;
            if let Some(at) = t {
                self.push(at.max(now), Ev::Timer { node: i, at });
            }
        }
    }

    /// Bytes node `i` reported sent.
    pub(crate) fn uploaded(&self, i: usize) -> u64 {
        self.nodes[i].swarm.stats().uploaded
    }

    /// When the last node completed.
    pub(crate) fn finish_time(&self) -> Option<Time> {
        self.nodes
            .iter()
            .filter(|n| !n.spec.seed)
            .map(|n| n.completed_at)
            .try_fold(Time::ZERO, |acc, t| t.map(|t| acc.max(t)))
    }
}
