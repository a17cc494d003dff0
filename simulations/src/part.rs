//! One part of the nodes and what happens at them: message delivery, the
//! caller's duties, and the part's own queue.
//!
//! A part changes only its own nodes, their connection halves and their
//! flows; it reads the [`World`] and nothing of the other part. Whatever
//! it would do to another node becomes an event (queued here when the
//! node is ours, in `out` when it is not), a flow delta (`deltas`, for
//! `Sim::settle`) or a request to the simulator (`redials`). Events for
//! other nodes are never due inside the current window: they take at
//! least one latency.
//!
//! # Duties
//! Done as a daemon would, but instantly: a piece verifies good unless one
//! of its accepted blocks came from a corrupt peer (the simulator tracks
//! provenance); `Choke` drops queued serves to that peer, `AbortServe`
//! one; `Disconnect` closes our half now and the other half one latency
//! later (until then its flow towards us still runs, and what arrives is
//! dropped); `Ban` is remembered so the node never redials that peer.
//!
//! # Speed
//! At thousands of nodes nearly every event lands on a node whose memory
//! is not in cache, and the run's time is the sum of those misses. Events
//! therefore carry their target node (and a flow completion its half), so
//! that `warm` can start fetching the node's hot lines, the connection and
//! the flow together instead of one after the other; a `Haves` event
//! fetches all its receivers before handling any. Warming only reads, so
//! it cannot change a result.

use shoal_proto::discovery::{Ending, PexGate, PexSchedule, Target};
use shoal_proto::swarm::{Action, BlockOutcome, Message, PeerKey, Time};

use crate::flows::Flow;
use crate::net::{ConnState, Ev, Life, Node, World};
use crate::queue::Queue;
use crate::rng::SplitMix;

/// A flow into `to` from half `half` started (`start`) or ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delta {
    pub(crate) to: u32,
    pub(crate) half: u32,
    pub(crate) start: bool,
}

/// One part of the nodes.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) index: usize,
    /// The first node's index; the nodes are `base..base + nodes.len()`.
    pub(crate) base: u32,
    pub(crate) now: u64,
    /// Time of the last event handled.
    pub(crate) last_at: u64,
    queue: Queue<Ev>,
    pub(crate) nodes: Vec<Node>,
    /// Indexed by half; only our own halves' entries are used.
    pub(crate) conns: Vec<ConnState>,
    pub(crate) flows: Vec<Flow>,
    pub(crate) free_flows: Vec<u32>,
    /// Loss draws for our nodes' messages.
    rng: SplitMix,
    /// Our honest leechers holding each piece.
    holders: Vec<u32>,
    // For the simulator, collected at the window's end:
    /// Events for the other part's nodes.
    pub(crate) out: Vec<(u64, Ev)>,
    pub(crate) deltas: Vec<Delta>,
    /// Receivers whose caps may have moved with a flow's rate
    /// (`flows::InLink`), for `Sim::settle`; repeats allowed.
    pub(crate) reshare: Vec<u32>,
    /// Per receiver (any part's), what flows we started into it in this
    /// window took of its `InLink::entry` (see `Part::take_entry`), and
    /// the receivers to reset at the window's end (repeats allowed).
    pub(crate) entry_taken: Vec<f64>,
    pub(crate) entered: Vec<u32>,
    /// `(when, node)`: nodes that want to redial.
    pub(crate) redials: Vec<(u64, u32)>,
    /// Pieces our honest leechers now hold for the first time.
    pub(crate) newly_held: Vec<u32>,
    /// Staying honest leechers completed.
    pub(crate) done: usize,
    pub(crate) bans: Vec<(u32, u32)>,
    pub(crate) events: u64,
    pub(crate) stale: u64,
    /// Bytes our nodes served across regions.
    pub(crate) crossed: u64,
    pub(crate) failed: u64,
    pub(crate) scratch_caps: Vec<(f64, u32)>,
    /// `Have`s being collected: (delay, receiving node, its half).
    haves: Vec<(u64, u32, u32)>,
    /// Per half (with books only): its `Peers` schedule and gate.
    pub(crate) pex: Vec<Option<(PexSchedule, PexGate)>>,
    /// `(when, from, to, book entry)`: dials to start between windows.
    pub(crate) dials: Vec<(u64, u32, u32, Target)>,
    /// `(when, node)`: `completed` announces to make between windows.
    pub(crate) announces: Vec<(u64, u32)>,
}

/// How many events ahead `prefetch` looks (6 beat 3 in paired runs; 10
/// was no better: `benches/RESULTS.md`, "Stop 13").
const PREFETCH_AHEAD: usize = 6;

impl Part {
    pub(crate) fn new(index: usize, base: u32, nodes: Vec<Node>, pieces: u32, seed: u64) -> Part {
        Part {
            index,
            base,
            now: 0,
            last_at: 0,
            queue: Queue::default(),
            nodes,
            conns: Vec::new(),
            flows: Vec::new(),
            free_flows: Vec::new(),
            // Not the simulator's own seed (part 0 would replay the
            // redials' draws), and one stream per part.
            rng: SplitMix::new(
                seed ^ 0x6c6f_7373_0000_0000
                    ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            holders: vec![0; pieces as usize],
            out: Vec::new(),
            deltas: Vec::new(),
            reshare: Vec::new(),
            entry_taken: Vec::new(),
            entered: Vec::new(),
            redials: Vec::new(),
            newly_held: Vec::new(),
            done: 0,
            bans: Vec::new(),
            events: 0,
            stale: 0,
            crossed: 0,
            failed: 0,
            scratch_caps: Vec::new(),
            haves: Vec::new(),
            pex: Vec::new(),
            dials: Vec::new(),
            announces: Vec::new(),
        }
    }

    pub(crate) fn node(&mut self, i: u32) -> &mut Node {
        &mut self.nodes[(i - self.base) as usize]
    }

    fn node_ref(&self, i: u32) -> &Node {
        &self.nodes[(i - self.base) as usize]
    }

    /// No later than our next event (see `Queue::lower_bound`).
    pub(crate) fn next_at(&self) -> Option<u64> {
        self.queue.lower_bound()
    }

    /// Queues an event for one of our nodes.
    pub(crate) fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    /// Queues an event for node `to`, ours or the other part's.
    pub(crate) fn route(&mut self, world: &World, at: u64, to: u32, ev: Ev) {
        if world.part_of(to) == self.index {
            self.queue.push(at, ev);
        } else {
            self.out.push((at, ev));
        }
    }

    /// Handles every event before `end`.
    pub(crate) fn run_until(&mut self, end: u64, world: &World) {
        while let Some((at, ev)) = self.queue.pop_before(end) {
            if let Some(next) = self.queue.ahead(PREFETCH_AHEAD) {
                self.prefetch(next);
            }
            self.now = at;
            self.last_at = at;
            self.events += 1;
            self.step(world, ev);
        }
    }

    /// Asks for the lines an upcoming event reads first (its node's
    /// header, its connection, its flow) without waiting for them: unlike
    /// `warm`'s loads, a prefetch holds nothing up, so these misses
    /// overlap the events before it.
    fn prefetch(&self, ev: &Ev) {
        let node = |i: u32| {
            if let Some(n) = self.nodes.get(i.wrapping_sub(self.base) as usize) {
                safe_arch::prefetch_t0(n);
                // The geometry sits among the swarm's hot fields, a line or
                // two past the node's start; it is the one reference into
                // them that proto hands out.
                safe_arch::prefetch_t0(n.swarm.geometry());
            }
        };
        let conn = |c: u32| {
            if let Some(h) = self.conns.get(c as usize) {
                safe_arch::prefetch_t0(h);
            }
        };
        match *ev {
            Ev::Msg { conn: c, to, .. } | Ev::BlockIn { conn: c, to, .. } => {
                node(to);
                conn(c);
            }
            Ev::FlowDone {
                flow,
                from,
                conn: c,
                ..
            } => {
                if let Some(f) = self.flows.get(flow as usize) {
                    safe_arch::prefetch_t0(f);
                }
                node(from);
                conn(c);
            }
            Ev::Haves { ref conns, .. } => {
                for &(c, to) in conns.iter().take(4) {
                    node(to);
                    conn(c);
                }
            }
            Ev::Timer { node: i, .. } => node(i),
            _ => {}
        }
    }

    fn step(&mut self, world: &World, ev: Ev) {
        let now = Time::from_micros(self.now);
        match ev {
            Ev::Msg { conn, to, msg } => {
                self.warm(to);
                if !self.conns[conn as usize].up {
                    return;
                }
                let s = &mut self.node(to).swarm;
                let k = PeerKey(u64::from(conn));
                // An error means the receiver refused the input (it dropped
                // the sender a moment ago, say); it has said so in actions.
                let _ = s.handle_message(now, k, msg);
                self.drain(to, world);
            }
            Ev::Haves { piece, conns } => {
                // Fetch every receiver's connection, then every receiver's
                // node, before handling any: independent loads overlap.
                for &(conn, _) in &conns {
                    std::hint::black_box(self.conns[conn as usize].up);
                }
                for &(_, to) in &conns {
                    self.warm(to);
                }
                // Then, the headers being on their way, each receiver's
                // own pieces and its entry for the sender.
                for &(conn, to) in &conns {
                    let n = self.node_ref(to);
                    std::hint::black_box((
                        n.swarm.has_piece(piece),
                        n.swarm.is_unchoked(PeerKey(u64::from(conn))),
                    ));
                }
                for (conn, to) in conns {
                    if !self.conns[conn as usize].up {
                        continue;
                    }
                    let k = PeerKey(u64::from(conn));
                    let _ = self.node(to).swarm.handle_have(now, k, piece);
                    self.drain(to, world);
                }
            }
            Ev::FlowDone {
                flow,
                version,
                from,
                conn,
            } => {
                self.warm(from);
                std::hint::black_box(self.conns[conn as usize].up);
                if !self.flow_done(world, flow, version) {
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
                let n = self.node(to);
                let k = PeerKey(u64::from(conn));
                n.swarm.handle_bytes_received(now, k, u64::from(block.len));
                let accepted = n.swarm.handle_block(now, k, block) == Ok(BlockOutcome::Accepted);
                if accepted && corrupt && !n.tainted.contains(&block.piece) {
                    n.tainted.push(block.piece);
                }
                self.drain(to, world);
            }
            Ev::Timer { node, at } => {
                let n = self.node(node);
                if n.timer != Some(at) || world.life[node as usize] != Life::Alive {
                    self.stale += 1;
                    return;
                }
                n.timer = None;
                n.swarm.handle_timeout(now);
                self.drain(node, world);
            }
            Ev::Gone { conn } => {
                if !self.conns[conn as usize].up {
                    return;
                }
                let node = self.conns[conn as usize].node;
                self.close(world, conn);
                self.node(node)
                    .swarm
                    .handle_peer_disconnected(now, PeerKey(u64::from(conn)));
                self.drain(node, world);
                if world.books {
                    self.book_lost(node, conn, Ending::Dropped);
                } else {
                    self.want_redial(world, node);
                }
            }
            Ev::BookTick { node } => self.book_tick(world, node),
            Ev::Pex { conn, to, list } => self.on_pex(conn, to, list),
        }
    }

    /// Carries out everything node `i` asks for, then re-arms its timer.
    pub(crate) fn drain(&mut self, i: u32, world: &World) {
        if world.life[i as usize] != Life::Alive {
            return;
        }
        let mut have_piece = None;
        while let Some(a) = self.node(i).swarm.poll_action() {
            if let Action::Send {
                peer,
                message: Message::Have(p),
            } = a
            {
                if have_piece != Some(p) {
                    self.flush_haves(world, have_piece);
                    have_piece = Some(p);
                }
                let c = peer.0 as u32;
                if self.sendable(world, c) {
                    let d = self.msg_delay(c);
                    // Our half names the receiver: its own half's record
                    // would be one more cold line per receiver.
                    let to = self.conns[c as usize].peer;
                    self.haves.push((d, to, c ^ 1));
                }
                continue;
            }
            self.flush_haves(world, have_piece.take());
            match a {
                Action::Send { peer, message } => {
                    let c = peer.0 as u32;
                    if !self.sendable(world, c) {
                        continue;
                    }
                    if message == Message::Choke {
                        self.conns[c as usize].queue.clear();
                    }
                    let at = self.now + self.msg_delay(c);
                    let to = self.conns[c as usize].peer;
                    let ev = Ev::Msg {
                        conn: c ^ 1,
                        to,
                        msg: message,
                    };
                    self.route(world, at, to, ev);
                }
                Action::ServeBlock { peer, block } => self.serve(world, peer.0 as u32, block),
                Action::AbortServe { peer, block } => {
                    let q = &mut self.conns[peer.0 as usize].queue;
                    if let Some(pos) = q.iter().position(|b| *b == block) {
                        q.remove(pos);
                    }
                }
                Action::VerifyPiece { piece } => self.verify(i, piece),
                Action::Disconnect { peer, reason } => {
                    let c = peer.0 as u32;
                    if self.conns[c as usize].up {
                        self.close(world, c);
                        let h = &self.conns[c as usize];
                        if !world.cut(self.now, i, h.peer) {
                            let (at, to) = (self.now + u64::from(h.lat), h.peer);
                            self.route(world, at, to, Ev::Gone { conn: c ^ 1 });
                        }
                        if world.books {
                            self.book_lost(i, c, reason.into());
                        } else {
                            self.want_redial(world, i);
                        }
                    }
                }
                Action::Ban { peer } => {
                    let j = self.conns[peer.0 as usize].peer;
                    self.node(i).banned.push(j);
                    self.bans.push((i, j));
                    self.book_ban(i, j);
                }
                Action::Completed => self.completed(i),
            }
        }
        self.flush_haves(world, have_piece);
        let n = self.node(i);
        let t = n.swarm.poll_timeout().map(Time::as_micros);
        if t != n.timer {
            n.timer = t;
            if let Some(at) = t {
                let now = self.now;
                self.push(at.max(now), Ev::Timer { node: i, at });
            }
        }
    }

    /// Starts fetching the memory an input to node `i` reads first (the
    /// node's header and its swarm's hot fields, through read-only calls)
    /// without waiting for it, so that those cache misses overlap each
    /// other and the connection's instead of following one another.
    /// Reads only: it changes nothing.
    fn warm(&self, i: u32) {
        let n = self.node_ref(i);
        std::hint::black_box((
            n.timer,
            n.swarm.poll_timeout(),
            n.swarm.is_complete(),
            n.swarm.is_spreading(),
        ));
    }

    /// Whether a message may leave on our half `c`: it is up and the path
    /// is not cut (a cut drops everything until the ends notice).
    pub(crate) fn sendable(&self, world: &World, c: u32) -> bool {
        let h = &self.conns[c as usize];
        h.up && !world.cut(self.now, h.node, h.peer)
    }

    /// Delay of one control message on half `c`'s path: latency, plus one
    /// retransmission timeout (2 × RTT, at least 1 ms) per loss.
    pub(crate) fn msg_delay(&mut self, c: u32) -> u64 {
        let h = &self.conns[c as usize];
        let (lat, loss) = (u64::from(h.lat), h.loss);
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

    /// Sends the collected `Have(piece)`s, one event per distinct delay
    /// and receiving part.
    fn flush_haves(&mut self, world: &World, piece: Option<u32>) {
        let Some(piece) = piece else { return };
        if self.haves.is_empty() {
            return;
        }
        let mut haves = std::mem::take(&mut self.haves);
        // Stable: equal keys keep send order.
        haves.sort_by_key(|&(d, to, _)| (d, world.part_of(to)));
        let mut k = 0;
        while k < haves.len() {
            let (d, to, _) = haves[k];
            let part = world.part_of(to);
            let conns: Vec<(u32, u32)> = haves[k..]
                .iter()
                .take_while(|h| h.0 == d && world.part_of(h.1) == part)
                .map(|h| (h.2, h.1))
                .collect();
            k += conns.len();
            let at = self.now + d;
            self.route(world, at, to, Ev::Haves { piece, conns });
        }
        haves.clear();
        self.haves = haves;
    }

    /// Hashes `piece` for node `i`: good unless a corrupt peer supplied an
    /// accepted block of it.
    fn verify(&mut self, i: u32, piece: u32) {
        let now = Time::from_micros(self.now);
        let n = &mut self.nodes[(i - self.base) as usize];
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
                self.newly_held.push(piece);
            }
        }
    }

    fn completed(&mut self, i: u32) {
        let now = self.now;
        let n = self.node(i);
        if n.completed_at.is_some() || n.spec.seed {
            return;
        }
        n.completed_at = Some(now);
        let counts = !n.spec.corrupt && n.spec.leave.is_none();
        if let Some(b) = n.book.as_mut() {
            b.book.set_complete(true);
            self.announces.push((now, i));
        }
        if counts {
            self.done += 1;
        }
    }

    /// Closes our half `c`: drops its queue and flow. The other end's flow
    /// towards us runs on until it learns of the close.
    pub(crate) fn close(&mut self, world: &World, c: u32) {
        let conn = &mut self.conns[c as usize];
        if !conn.up {
            return;
        }
        conn.up = false;
        conn.queue.clear();
        let flow = conn.flow.take();
        let node = conn.node;
        self.node(node).live -= 1;
        if let Some(f) = flow {
            self.end_flow(world, f);
        }
    }

    /// Drops our half `c`'s queue and flow, leaving it up: what was on
    /// its way to the other end is lost.
    pub(crate) fn kill_flow(&mut self, world: &World, c: u32) {
        self.conns[c as usize].queue.clear();
        if let Some(f) = self.conns[c as usize].flow.take() {
            self.end_flow(world, f);
        }
    }

    /// Asks for a redial for `i` if it may need one.
    pub(crate) fn want_redial(&mut self, world: &World, i: u32) {
        let now = self.now;
        let n = self.node(i);
        let degree = world.target_degree(i);
        if world.books
            || world.life[i as usize] != Life::Alive
            || n.redial_pending
            || (!n.spec.seed && n.swarm.is_complete())
            || (n.live as usize) >= degree
        {
            return;
        }
        n.redial_pending = true;
        self.redials.push((now + world.plan.redial_us, i));
    }
}
