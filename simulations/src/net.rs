//! The discrete-event network that drives real [`Swarm`]s: the event loop,
//! message delivery and the caller's duties. Bandwidth sharing is in
//! `flows.rs`, churn, partitions and redials in `faults.rs`.
//!
//! # Model
//! - **Events** pop in (time in µs, push order) order from [`Queue`]; ties
//!   are FIFO, nothing reads a clock or iterates a hash map, so a run is a
//!   pure function of the scenario and its seed.
//! - **Connections** are directed halves: link `l` has half `2l` (owned by
//!   its dialer) and `2l + 1`; a half's index is the [`PeerKey`] its owner's
//!   swarm uses for the other end, and `c ^ 1` is the other end's half. A
//!   pair of nodes always reuses its link, so bans and scores (kept per key
//!   for a swarm's life) survive reconnects.
//! - **Control messages** take the path's one-way latency (region matrix
//!   plus both ends' access latency) and nothing else. With loss, each
//!   message is lost with the path's loss rate and resent one RTO later
//!   (geometric). A node's `Have`s for one piece to peers at the same
//!   latency travel as one event (delivered in send order).
//! - **Blocks** travel as fluid flows (see `flows.rs`); a block that has
//!   left the sender lands one latency later.
//! - **The caller's duties** are done as a daemon would, but instantly:
//!   a piece verifies good unless one of its accepted blocks came from a
//!   corrupt peer (the simulator tracks provenance); `Choke` drops queued
//!   serves to that peer, `AbortServe` one; `Disconnect` closes our half
//!   now and the other half one latency later; `Ban` is remembered so the
//!   node never redials that peer.
//!
//! # Speed
//! At thousands of nodes nearly every event lands on a node whose memory
//! is not in cache, and the run's time is the sum of those misses. Events
//! therefore carry their target node (and a flow completion its half), so
//! that `warm` can start fetching the node's hot lines, the connection and
//! the flow together instead of one after the other; a `Haves` event
//! fetches all its receivers before handling any. Warming only reads, so
//! it cannot change a result.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use shoal_proto::swarm::{Action, BlockOutcome, BlockRef, Message, PeerKey, Swarm, Time};

use crate::faults::Plan;
use crate::outcome::{NodeResult, Outcome};
use crate::queue::Queue;
use crate::rng::SplitMix;
pub use crate::setup::Setup;

#[derive(Debug)]
pub(crate) enum Ev {
    Connect {
        link: u32,
    },
    /// `conn` is the receiver's half, `to` its node (carried so that the
    /// node's memory can be fetched alongside the connection's).
    Msg {
        conn: u32,
        to: u32,
        msg: Message,
    },
    /// One `Have` to each receiver half in `conns`.
    Haves {
        piece: u32,
        conns: Vec<u32>,
    },
    /// `from` is the sending node, `conn` its half.
    FlowDone {
        flow: u32,
        version: u32,
        from: u32,
        conn: u32,
    },
    /// `conn` is the receiver's half, `to` its node.
    BlockIn {
        conn: u32,
        to: u32,
        block: BlockRef,
        corrupt: bool,
    },
    Timer {
        node: u32,
        at: u64,
    },
    /// The other end closed: `conn` (the receiver's half) learns it.
    Gone {
        conn: u32,
    },
    Leave {
        node: u32,
        crash: bool,
    },
    Redial {
        node: u32,
    },
    Partition {
        index: usize,
        heal: bool,
    },
}

/// One half of a connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) node: u32,
    pub(crate) peer: u32,
    pub(crate) up: bool,
    /// Served blocks waiting behind the active flow.
    pub(crate) queue: VecDeque<BlockRef>,
    pub(crate) flow: Option<u32>,
    /// The transport's throughput ceiling on this path (loss), bytes/s.
    pub(crate) cap: f64,
    /// One-way latency of the path, µs, and its loss rate: kept here so
    /// that sending does not touch the receiving node's memory.
    pub(crate) lat: u64,
    pub(crate) loss: f64,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Alive,
    Left,
    Crashed,
}

/// `repr(C)`, what every event reads first (life, timer, then the swarm
/// whose hot fields lead its own layout): events land on random nodes, so
/// each distinct cache line read here is a miss.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Node {
    pub(crate) life: Life,
    pub(crate) timer: Option<u64>,
    pub(crate) swarm: Swarm,
    pub(crate) out_flows: Vec<u32>,
    pub(crate) in_flows: Vec<u32>,
    pub(crate) spec: crate::scenario::NodeSpec,
    /// Pieces with an accepted block from a corrupt peer, not yet checked.
    pub(crate) tainted: Vec<u32>,
    /// Every half this node ever owned (up or not).
    pub(crate) halves: Vec<u32>,
    pub(crate) live: u32,
    pub(crate) completed_at: Option<u64>,
    pub(crate) left_at: Option<u64>,
    pub(crate) banned: Vec<u32>,
    /// Pieces stored after a clean check.
    pub(crate) clean: u32,
    pub(crate) redial_pending: bool,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    pub(crate) now: u64,
    queue: Queue<Ev>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) conns: Vec<Conn>,
    pub(crate) link_of: BTreeMap<(u32, u32), u32>,
    pub(crate) flows: Vec<crate::flows::Flow>,
    /// Per node: download capacity and live flows into it (mirrors
    /// `in_flows.len()`), packed so that water-filling a sender's uplink
    /// does not read every receiver's `Node`.
    pub(crate) in_count: Vec<(f64, u32)>,
    pub(crate) free_flows: Vec<u32>,
    latency_us: Vec<Vec<u64>>,
    pub(crate) rng: SplitMix,
    pub(crate) plan: Plan,
    pub(crate) degree: usize,
    pub(crate) seed_degree: usize,
    inter_region_loss: f64,
    pieces: u32,
    /// Honest leechers holding each piece, and pieces with at least one.
    holders: Vec<u32>,
    covered: u32,
    /// Staying honest leechers not yet complete.
    pub(crate) waiting: usize,
    events: u64,
    stale: u64,
    limit_us: u64,
    file_bytes: u64,
    t_min: f64,
    failed: u64,
    pub(crate) bans: Vec<(u32, u32)>,
    pub(crate) seeds_left: Option<u64>,
    pub(crate) scratch: Vec<u32>,
    pub(crate) scratch_caps: Vec<(f64, u32)>,
    haves: Vec<(u64, u32)>,
    progress: bool,
}

impl Sim {
    /// Builds the nodes and schedules the connections and faults.
    pub fn new(setup: &Setup) -> Sim {
        let n = setup.geometry.piece_count() as usize;
        let mut full = vec![0u8; n.div_ceil(8)];
        for i in 0..n {
            full[i / 8] |= 0x80 >> (i % 8);
        }
        let empty = vec![0u8; n.div_ceil(8)];
        let nodes: Vec<Node> = setup
            .nodes
            .iter()
            .enumerate()
            .map(|(i, s)| Node {
                swarm: Swarm::new(
                    setup.geometry,
                    if s.seed { &full } else { &empty },
                    setup.config.clone(),
                    setup
                        .seed
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .wrapping_add(i as u64),
                )
                .expect("a checked configuration"),
                spec: *s,
                life: Life::Alive,
                halves: Vec::new(),
                live: 0,
                out_flows: Vec::new(),
                in_flows: Vec::new(),
                timer: None,
                completed_at: None,
                left_at: None,
                banned: Vec::new(),
                tainted: Vec::new(),
                clean: 0,
                redial_pending: false,
            })
            .collect();
        let waiting = setup
            .nodes
            .iter()
            .filter(|s| !s.seed && !s.corrupt && s.leave.is_none())
            .count();
        let mut sim = Sim {
            now: 0,
            queue: Queue::default(),
            nodes,
            conns: Vec::new(),
            link_of: BTreeMap::new(),
            flows: Vec::new(),
            in_count: setup.nodes.iter().map(|s| (s.down, 0)).collect(),
            free_flows: Vec::new(),
            latency_us: setup.latency_us.clone(),
            rng: SplitMix::new(setup.seed ^ 0x6e65_7477_6f72_6b00),
            plan: setup.plan.clone(),
            degree: setup.degree,
            seed_degree: setup.seed_degree,
            inter_region_loss: setup.inter_region_loss,
            pieces: n as u32,
            holders: vec![0; n],
            covered: 0,
            waiting,
            events: 0,
            stale: 0,
            limit_us: setup.limit_us,
            file_bytes: setup.geometry.total_length(),
            t_min: setup.t_min(),
            failed: 0,
            bans: Vec::new(),
            seeds_left: None,
            scratch: Vec::new(),
            scratch_caps: Vec::new(),
            haves: Vec::new(),
            progress: false,
        };
        for &(a, b) in &setup.links {
            let link = sim.link(a, b);
            let join = setup.nodes[a as usize]
                .join_us
                .max(setup.nodes[b as usize].join_us);
            let at = join + sim.lat(a, b);
            sim.push(at, Ev::Connect { link });
        }
        sim.schedule_faults();
        sim
    }

    /// Prints a progress line to stderr every 2^22 events.
    pub fn with_progress(mut self, on: bool) -> Sim {
        self.progress = on;
        self
    }

    /// Runs until every staying leecher completes, the queue empties or
    /// the time limit passes.
    pub fn run(mut self) -> Outcome {
        let start = Instant::now();
        while self.advance() {
            if self.progress && self.events.is_multiple_of(1 << 22) {
                eprintln!(
                    "  {:.3} s simulated, {} waiting, {} events, {:.1} s wall",
                    self.now as f64 / 1e6,
                    self.waiting,
                    self.events,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        self.outcome()
    }

    /// Handles the next event; false once the run is over.
    pub(crate) fn advance(&mut self) -> bool {
        let Some((at, ev)) = self.queue.pop() else {
            return false;
        };
        if at > self.limit_us {
            return false;
        }
        self.now = at;
        self.events += 1;
        self.step(ev);
        self.waiting != 0
    }

    fn outcome(self) -> Outcome {
        let seed_uploaded = self
            .nodes
            .iter()
            .filter(|n| n.spec.seed)
            .map(|n| n.swarm.stats().uploaded)
            .sum();
        let pieces = self.pieces;
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.spec.seed)
            .map(|(i, n)| NodeResult {
                node: i as u32,
                region: n.spec.region,
                up: n.spec.up,
                down: n.spec.down,
                join_us: n.spec.join_us,
                completed_us: n.completed_at,
                left_us: n.left_at,
                crashed: n.life == Life::Crashed,
                leaves: n.spec.leave.is_some(),
                corrupt: n.spec.corrupt,
                clean: n.clean == pieces,
            })
            .collect();
        Outcome {
            nodes,
            seed_uploaded,
            file_bytes: self.file_bytes,
            t_min: self.t_min,
            events: self.events,
            stale_events: self.stale,
            end_us: self.now,
            failed_pieces: self.failed,
            bans: self.bans,
            seeds_left_us: self.seeds_left,
        }
    }

    /// The link between `a` and `b`, made on first use; `a` owns half
    /// `2l`.
    pub(crate) fn link(&mut self, a: u32, b: u32) -> u32 {
        let pair = (a.min(b), a.max(b));
        if let Some(&l) = self.link_of.get(&pair) {
            return l;
        }
        let l = (self.conns.len() / 2) as u32;
        let cap = self.path_cap(a, b);
        let (lat, loss) = (self.lat(a, b), self.path_loss(a, b));
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x as usize].halves.push(self.conns.len() as u32);
            self.conns.push(Conn {
                node: x,
                peer: y,
                up: false,
                queue: VecDeque::new(),
                flow: None,
                cap,
                lat,
                loss,
            });
        }
        self.link_of.insert(pair, l);
        l
    }

    /// One-way latency from `a` to `b`, µs.
    pub(crate) fn lat(&self, a: u32, b: u32) -> u64 {
        let (na, nb) = (&self.nodes[a as usize].spec, &self.nodes[b as usize].spec);
        self.latency_us[na.region][nb.region] + na.access_us + nb.access_us
    }

    /// The loss rate of the path between `a` and `b`.
    pub(crate) fn path_loss(&self, a: u32, b: u32) -> f64 {
        let (na, nb) = (&self.nodes[a as usize].spec, &self.nodes[b as usize].spec);
        let core = if na.region == nb.region {
            0.0
        } else {
            self.inter_region_loss
        };
        1.0 - (1.0 - na.loss) * (1.0 - nb.loss) * (1.0 - core)
    }

    /// Delay of one control message on half `c`'s path: latency, plus one
    /// retransmission timeout (2 × RTT, at least 1 ms) per loss.
    fn msg_delay(&mut self, c: u32) -> u64 {
        let (lat, loss) = (self.conns[c as usize].lat, self.conns[c as usize].loss);
        let mut d = lat;
        if loss > 0.0 {
            let rto = (4 * lat).max(1000);
            // Bounded: a message is never lost more than 16 times.
            for _ in 0..16 {
                if (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= loss {
                    break;
                }
                d += rto;
            }
        }
        d
    }

    pub(crate) fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn step(&mut self, ev: Ev) {
        let now = Time::from_micros(self.now);
        match ev {
            Ev::Connect { link } => self.connect(link),
            Ev::Msg { conn, to, msg } => {
                self.warm(to);
                if !self.conns[conn as usize].up {
                    return;
                }
                let s = &mut self.nodes[to as usize].swarm;
                let k = PeerKey(u64::from(conn));
                // An error means the receiver refused the input (it dropped
                // the sender a moment ago, say); it has said so in actions.
                let _ = match msg {
                    Message::Interested => s.handle_interested(now, k, true),
                    Message::NotInterested => s.handle_interested(now, k, false),
                    Message::Choke => s.handle_choked(now, k, true),
                    Message::Unchoke => s.handle_choked(now, k, false),
                    Message::Request(b) => s.handle_request(now, k, b),
                    Message::Cancel(b) => s.handle_cancel(now, k, b),
                    Message::Reject(b) => s.handle_reject(now, k, b),
                    Message::Have(p) => s.handle_have(now, k, p),
                    Message::Bitfield(bytes) => s.handle_bitfield(now, k, &bytes),
                    Message::HaveAll => s.handle_have_all(now, k),
                    Message::HaveNone => s.handle_have_none(now, k),
                };
                self.drain(to);
            }
            Ev::Haves { piece, conns } => {
                // Fetch every receiver's connection, then every receiver's
                // node, before handling any: independent loads overlap.
                for &conn in &conns {
                    std::hint::black_box(self.conns[conn as usize].up);
                }
                for &conn in &conns {
                    self.warm(self.conns[conn as usize].node);
                }
                // Then, the headers being on their way, each receiver's
                // own pieces and its entry for the sender.
                for &conn in &conns {
                    let n = &self.nodes[self.conns[conn as usize].node as usize];
                    std::hint::black_box((
                        n.swarm.has_piece(piece),
                        n.swarm.is_unchoked(PeerKey(u64::from(conn))),
                    ));
                }
                for conn in conns {
                    if !self.conns[conn as usize].up {
                        continue;
                    }
                    let to = self.conns[conn as usize].node;
                    let k = PeerKey(u64::from(conn));
                    let _ = self.nodes[to as usize].swarm.handle_have(now, k, piece);
                    self.drain(to);
                }
            }
            Ev::FlowDone {
                flow,
                version,
                from,
                conn,
            } => {
                self.warm(from);
                std::hint::black_box(self.conns[conn as usize].lat);
                if !self.flow_done(flow, version) {
                    self.stale += 1;
                }
            }
            Ev::BlockIn {
                conn,
                to,
                block,
                corrupt,
            } => {
                self.warm(to);
                if !self.conns[conn as usize].up {
                    return;
                }
                let n = &mut self.nodes[to as usize];
                let k = PeerKey(u64::from(conn));
                n.swarm.handle_bytes_received(now, k, u64::from(block.len));
                let accepted = n.swarm.handle_block(now, k, block) == Ok(BlockOutcome::Accepted);
                if accepted && corrupt && !n.tainted.contains(&block.piece) {
                    n.tainted.push(block.piece);
                }
                self.drain(to);
            }
            Ev::Timer { node, at } => {
                let n = &mut self.nodes[node as usize];
                if n.timer != Some(at) || n.life != Life::Alive {
                    self.stale += 1;
                    return;
                }
                n.timer = None;
                n.swarm.handle_timeout(now);
                self.drain(node);
            }
            Ev::Gone { conn } => {
                if !self.conns[conn as usize].up {
                    return;
                }
                let node = self.conns[conn as usize].node;
                self.close(conn);
                self.nodes[node as usize]
                    .swarm
                    .handle_peer_disconnected(now, PeerKey(u64::from(conn)));
                self.drain(node);
                self.want_redial(node);
            }
            Ev::Leave { node, crash } => self.leave(node, crash),
            Ev::Redial { node } => self.redial(node),
            Ev::Partition { index, heal } => self.partition(index, heal),
        }
    }

    /// Both ends of `link` learn of the connection (the handshake is
    /// done), unless either is gone, cut off, or refuses the other.
    fn connect(&mut self, link: u32) {
        let (c0, c1) = (2 * link, 2 * link + 1);
        let (a, b) = (self.conns[c0 as usize].node, self.conns[c1 as usize].node);
        let alive = |s: &Sim, i: u32| s.nodes[i as usize].life == Life::Alive;
        // Both halves must be down: a half still up is a connection whose
        // end has not yet learnt that the other end closed it.
        let busy = self.conns[c0 as usize].up || self.conns[c1 as usize].up;
        if busy || !alive(self, a) || !alive(self, b) || self.cut(a, b) {
            return;
        }
        let now = Time::from_micros(self.now);
        let ra =
            self.nodes[a as usize]
                .swarm
                .handle_peer_connected(now, PeerKey(u64::from(c0)), true);
        let rb =
            self.nodes[b as usize]
                .swarm
                .handle_peer_connected(now, PeerKey(u64::from(c1)), false);
        if ra.is_ok() && rb.is_ok() {
            for c in [c0, c1] {
                self.conns[c as usize].up = true;
                let n = self.conns[c as usize].node;
                self.nodes[n as usize].live += 1;
            }
        } else {
            self.nodes[a as usize]
                .swarm
                .handle_peer_disconnected(now, PeerKey(u64::from(c0)));
            self.nodes[b as usize]
                .swarm
                .handle_peer_disconnected(now, PeerKey(u64::from(c1)));
        }
        self.drain(a);
        self.drain(b);
    }

    /// Carries out everything node `i` asks for, then re-arms its timer.
    pub(crate) fn drain(&mut self, i: u32) {
        if self.nodes[i as usize].life != Life::Alive {
            return;
        }
        let mut have_piece = None;
        while let Some(a) = self.nodes[i as usize].swarm.poll_action() {
            if let Action::Send {
                peer,
                message: Message::Have(p),
            } = a
            {
                if have_piece != Some(p) {
                    self.flush_haves(have_piece);
                    have_piece = Some(p);
                }
                let c = peer.0 as u32;
                if self.sendable(c) {
                    let d = self.msg_delay(c);
                    self.haves.push((d, c ^ 1));
                }
                continue;
            }
            self.flush_haves(have_piece.take());
            match a {
                Action::Send { peer, message } => {
                    let c = peer.0 as u32;
                    if !self.sendable(c) {
                        continue;
                    }
                    if message == Message::Choke {
                        self.conns[c as usize].queue.clear();
                    }
                    let at = self.now + self.msg_delay(c);
                    let to = self.conns[c as usize].peer;
                    self.push(
                        at,
                        Ev::Msg {
                            conn: c ^ 1,
                            to,
                            msg: message,
                        },
                    );
                }
                Action::ServeBlock { peer, block } => self.serve(peer.0 as u32, block),
                Action::AbortServe { peer, block } => {
                    let q = &mut self.conns[peer.0 as usize].queue;
                    if let Some(pos) = q.iter().position(|b| *b == block) {
                        q.remove(pos);
                    }
                }
                Action::VerifyPiece { piece } => self.verify(i, piece),
                Action::Disconnect { peer, .. } => {
                    let c = peer.0 as u32;
                    if self.conns[c as usize].up {
                        self.close(c);
                        let j = self.conns[c as usize].peer;
                        if !self.cut(i, j) {
                            let at = self.now + self.conns[c as usize].lat;
                            self.push(at, Ev::Gone { conn: c ^ 1 });
                        }
                        self.want_redial(i);
                    }
                }
                Action::Ban { peer } => {
                    let j = self.conns[peer.0 as usize].peer;
                    self.nodes[i as usize].banned.push(j);
                    self.bans.push((i, j));
                }
                Action::Completed => self.completed(i),
            }
        }
        self.flush_haves(have_piece);
        let t = self.nodes[i as usize]
            .swarm
            .poll_timeout()
            .map(Time::as_micros);
        if t != self.nodes[i as usize].timer {
            self.nodes[i as usize].timer = t;
            if let Some(at) = t {
                self.push(at.max(self.now), Ev::Timer { node: i, at });
            }
        }
    }

    /// Starts fetching the memory an input to node `i` reads first (the
    /// node's header and its swarm's hot fields, through read-only calls)
    /// without waiting for it, so that those cache misses overlap each
    /// other and the connection's instead of following one another.
    /// Reads only: it changes nothing.
    fn warm(&self, i: u32) {
        let n = &self.nodes[i as usize];
        std::hint::black_box((
            n.timer,
            n.swarm.poll_timeout(),
            n.swarm.is_complete(),
            n.swarm.is_spreading(),
        ));
    }

    /// Whether a message may leave on half `c`: it is up and the path is
    /// not cut (a cut drops everything until the ends notice).
    fn sendable(&self, c: u32) -> bool {
        let conn = &self.conns[c as usize];
        conn.up && !self.cut(conn.node, conn.peer)
    }

    /// Sends the collected `Have(piece)`s, one event per distinct delay.
    fn flush_haves(&mut self, piece: Option<u32>) {
        let Some(piece) = piece else { return };
        if self.haves.is_empty() {
            return;
        }
        let mut haves = std::mem::take(&mut self.haves);
        // Stable: equal delays keep send order.
        haves.sort_by_key(|&(d, _)| d);
        let mut k = 0;
        while k < haves.len() {
            let d = haves[k].0;
            let conns: Vec<u32> = haves[k..]
                .iter()
                .take_while(|h| h.0 == d)
                .map(|h| h.1)
                .collect();
            k += conns.len();
            self.push(self.now + d, Ev::Haves { piece, conns });
        }
        haves.clear();
        self.haves = haves;
    }

    /// Hashes `piece` for node `i`: good unless a corrupt peer supplied an
    /// accepted block of it.
    fn verify(&mut self, i: u32, piece: u32) {
        let now = Time::from_micros(self.now);
        let n = &mut self.nodes[i as usize];
        let bad = n.tainted.iter().position(|&p| p == piece);
        if let Some(pos) = bad {
            n.tainted.swap_remove(pos);
            self.failed += 1;
            n.swarm
                .handle_piece_verified(now, piece, false)
                .expect("the swarm asked for this verification");
            return;
        }
        n.swarm
            .handle_piece_verified(now, piece, true)
            .expect("the swarm asked for this verification");
        n.swarm
            .handle_piece_stored(now, piece)
            .expect("a verified piece is awaiting storage");
        n.clean += 1;
        // Copies on corrupt peers do not count: nobody can fetch them.
        if !n.spec.seed && !n.spec.corrupt {
            let h = &mut self.holders[piece as usize];
            *h += 1;
            if *h == 1 {
                self.covered += 1;
                if self.covered == self.pieces {
                    self.one_copy_exists();
                }
            }
        }
    }

    fn completed(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        if n.completed_at.is_some() || n.spec.seed {
            return;
        }
        n.completed_at = Some(self.now);
        if !n.spec.corrupt && n.spec.leave.is_none() {
            self.waiting -= 1;
        }
    }

    /// Closes half `c` (our side only): drops its queue and flow.
    pub(crate) fn close(&mut self, c: u32) {
        let conn = &mut self.conns[c as usize];
        if !conn.up {
            return;
        }
        conn.up = false;
        conn.queue.clear();
        let node = conn.node;
        let flow = conn.flow.take();
        self.nodes[node as usize].live -= 1;
        if let Some(f) = flow {
            self.end_flow(f);
        }
        // Data flowing towards us on this link is lost too.
        if let Some(f) = self.conns[(c ^ 1) as usize].flow.take() {
            self.conns[(c ^ 1) as usize].queue.clear();
            self.end_flow(f);
        }
    }
}
