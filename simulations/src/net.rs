//! The discrete-event network that drives real [`Swarm`]s.
//!
//! # Model
//! - **Events** sit in one binary heap ordered by (time in µs, sequence
//!   number); the sequence number makes ties FIFO, so the run is a pure
//!   function of the scenario and the seed.
//! - **Control messages** (everything but block payloads) take the one-way
//!   latency between the two nodes' regions and nothing else: they neither
//!   consume nor wait for bandwidth (they ride beside the data, as QUIC
//!   streams do).
//! - **Blocks** travel as *flows*. Each connection sends its served blocks
//!   one after the other (FIFO per connection); the block at the head of a
//!   connection's queue is that connection's one active flow. A node's
//!   uplink is shared among its active flows by water-filling (max-min
//!   fair) where each flow is also capped by its receiver's downlink
//!   divided equally among the flows into it. Rates are recomputed only
//!   when a flow starts or ends (a connection's queue turns non-empty or
//!   empty), for the sender's uplink and for every uplink that feeds the
//!   receiver. A block that finishes leaving the sender reaches the
//!   receiver one latency later (the pipe is fluid; the latency is pure
//!   propagation).
//! - **The caller's duties** are done the way a daemon would, but
//!   instantly: pieces verify (always good) and store at the moment the
//!   swarm asks, `handle_bytes_sent` is reported when a block has left,
//!   `handle_bytes_received` + `handle_block` when it lands; a `Choke`
//!   drops the queued (not yet started) serves to that peer, `AbortServe`
//!   drops one, `Disconnect` closes the link at once on our side and one
//!   latency later on the other side.
//! - **Connections** are made once, at the later join time of the two
//!   ends plus one latency (the handshake); there is no redial.
//!
//! See `simulations/README.md` for the limits of this model.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Instant;

use shoal_proto::swarm::{Action, BlockRef, Geometry, Message, PeerKey, Swarm, SwarmConfig, Time};

use crate::rng::SplitMix;
use crate::scenario::{NodeSpec, Scenario};
use crate::{fluid_lower_bound, Capacities};

/// Everything needed to build a simulation, independent of TOML.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Torrent shape.
    pub geometry: Geometry,
    /// Swarm configuration every node runs.
    pub config: SwarmConfig,
    /// Nodes; seeders hold every piece at start.
    pub nodes: Vec<NodeSpec>,
    /// Undirected links; the first of each pair dials.
    pub links: Vec<(u32, u32)>,
    /// One-way latency between regions, µs.
    pub latency_us: Vec<Vec<u64>>,
    /// Seed of the swarms' randomness.
    pub seed: u64,
    /// Simulated time limit, µs.
    pub limit_us: u64,
}

impl Setup {
    /// Builds the setup a scenario describes.
    pub fn from_scenario(s: &Scenario) -> anyhow::Result<Setup> {
        let (f, p) = s.geometry_bytes()?;
        let geometry = Geometry::new(f, p)?;
        let mut rng = SplitMix::new(s.seed ^ 0x005e_ed0f_9aab);
        let nodes = s.node_specs(&mut rng);
        let seeders = s.seeders.count;
        let links = random_graph(
            nodes.len(),
            seeders,
            s.degree,
            s.seed_degree.unwrap_or(s.degree),
            &mut rng,
        );
        let regions = s.regions.as_ref().map_or(1, Vec::len);
        let latency_us = (0..regions)
            .map(|a| (0..regions).map(|b| s.latency_us(a, b)).collect())
            .collect();
        let mut setup = Setup {
            geometry,
            config: s.swarm_config(),
            nodes,
            links,
            latency_us,
            seed: s.seed,
            limit_us: 0,
        };
        let t_min = setup.t_min();
        setup.limit_us = (s.max_sim_secs.unwrap_or(50.0 * t_min) * 1e6) as u64;
        Ok(setup)
    }

    /// The fluid lower bound for these nodes, seconds (seeders' uploads
    /// summed as one seed).
    pub fn t_min(&self) -> f64 {
        let leechers = self.nodes.iter().filter(|n| !n.seed);
        let c = Capacities {
            seed_up: self.nodes.iter().filter(|n| n.seed).map(|n| n.up).sum(),
            uploads: leechers.clone().map(|n| n.up).collect(),
            downloads: leechers.map(|n| n.down).collect(),
        };
        fluid_lower_bound(self.geometry.total_length() as f64, &c)
    }
}

/// A random graph over `n` nodes, the first `seeders` of them seeders: each
/// seeder dials `seed_degree` random leechers, then each leecher (in index
/// order) dials random other leechers until it has `degree` leecher
/// neighbours (when enough exist). Leechers never dial seeders, so a
/// seeder's neighbour count is exactly `seed_degree`.
pub fn random_graph(
    n: usize,
    seeders: usize,
    degree: usize,
    seed_degree: usize,
    rng: &mut SplitMix,
) -> Vec<(u32, u32)> {
    let leechers = n - seeders;
    let mut adj: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n];
    let mut links = Vec::new();
    for s in 0..seeders {
        let want = seed_degree.min(leechers);
        while adj[s].len() < want {
            let j = seeders + rng.below(leechers as u64) as usize;
            if adj[s].insert(j as u32) {
                adj[j].insert(s as u32);
                links.push((s as u32, j as u32));
            }
        }
    }
    let want = degree.min(leechers.saturating_sub(1));
    for i in seeders..n {
        let mut tries = 0;
        while adj[i].iter().filter(|&&j| j as usize >= seeders).count() < want && tries < 64 * want
        {
            tries += 1;
            let j = seeders + rng.below(leechers as u64) as usize;
            if j != i && adj[i].insert(j as u32) {
                adj[j].insert(i as u32);
                links.push((i as u32, j as u32));
            }
        }
    }
    links
}

#[derive(Debug)]
enum Ev {
    Connect { a: u32, b: u32 },
    Msg { from: u32, to: u32, msg: Message },
    FlowDone { flow: u32, version: u32 },
    BlockIn { from: u32, to: u32, block: BlockRef },
    Timer { node: u32, at: u64 },
    Gone { node: u32, peer: u32 },
}

#[derive(Debug)]
struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Default)]
struct Conn {
    up: bool,
    /// Served blocks waiting behind the active flow.
    queue: VecDeque<BlockRef>,
    flow: Option<u32>,
}

#[derive(Debug)]
struct Flow {
    from: u32,
    to: u32,
    block: BlockRef,
    /// Bytes of `block` still to send as of `last`.
    remaining: f64,
    /// Bytes per second.
    rate: f64,
    last: u64,
    version: u32,
    live: bool,
}

#[derive(Debug)]
struct Node {
    swarm: Swarm,
    spec: NodeSpec,
    conns: BTreeMap<u32, Conn>,
    out_flows: Vec<u32>,
    in_flows: Vec<u32>,
    timer: Option<u64>,
    completed_at: Option<u64>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Per leecher, in node order: completion time in µs, if it completed.
    pub completions_us: Vec<Option<u64>>,
    /// Bytes the seeders reported uploaded.
    pub seed_uploaded: u64,
    /// Torrent size, bytes.
    pub file_bytes: u64,
    /// The fluid lower bound, seconds.
    pub t_min: f64,
    /// Events popped from the queue (stale ones included).
    pub events: u64,
    /// Of those, stale flow completions and timers (superseded).
    pub stale_events: u64,
    /// Simulated time at the end, µs.
    pub end_us: u64,
}

impl Outcome {
    /// Whether every leecher completed.
    pub fn all_completed(&self) -> bool {
        self.completions_us.iter().all(Option::is_some)
    }

    /// The completion time at quantile `q` (0..=1) in seconds, nearest
    /// rank; `None` unless everyone completed.
    pub fn quantile_secs(&self, q: f64) -> Option<f64> {
        let mut v: Vec<u64> = self.completions_us.iter().copied().collect::<Option<_>>()?;
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1] as f64 / 1e6)
    }

    /// Last completion / T_min.
    pub fn ratio(&self) -> Option<f64> {
        self.quantile_secs(1.0).map(|t| t / self.t_min)
    }
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    now: u64,
    seq: u64,
    heap: BinaryHeap<Entry>,
    nodes: Vec<Node>,
    flows: Vec<Flow>,
    free_flows: Vec<u32>,
    latency_us: Vec<Vec<u64>>,
    leechers: usize,
    completed: usize,
    events: u64,
    stale: u64,
    limit_us: u64,
    file_bytes: u64,
    t_min: f64,
    scratch: Vec<u32>,
    scratch_caps: Vec<(f64, u32)>,
    progress: bool,
}

fn key(i: u32) -> PeerKey {
    PeerKey(u64::from(i))
}

impl Sim {
    /// Builds the nodes and schedules the connections.
    pub fn new(setup: &Setup) -> Sim {
        let n = setup.geometry.piece_count() as usize;
        let mut full = vec![0u8; n.div_ceil(8)];
        for i in 0..n {
            full[i / 8] |= 0x80 >> (i % 8);
        }
        let empty = vec![0u8; n.div_ceil(8)];
        let nodes = setup
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
                conns: BTreeMap::new(),
                out_flows: Vec::new(),
                in_flows: Vec::new(),
                timer: None,
                completed_at: None,
            })
            .collect();
        let mut sim = Sim {
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            nodes,
            flows: Vec::new(),
            free_flows: Vec::new(),
            latency_us: setup.latency_us.clone(),
            leechers: setup.nodes.iter().filter(|n| !n.seed).count(),
            completed: 0,
            events: 0,
            stale: 0,
            limit_us: setup.limit_us,
            file_bytes: setup.geometry.total_length(),
            t_min: setup.t_min(),
            scratch: Vec::new(),
            scratch_caps: Vec::new(),
            progress: false,
        };
        for &(a, b) in &setup.links {
            let join = setup.nodes[a as usize]
                .join_us
                .max(setup.nodes[b as usize].join_us);
            let at = join + sim.lat(a, b);
            sim.push(at, Ev::Connect { a, b });
        }
        sim
    }

    /// Prints a progress line to stderr every 2^22 events.
    pub fn with_progress(mut self, on: bool) -> Sim {
        self.progress = on;
        self
    }

    /// Runs until every leecher completes, the queue empties or the time
    /// limit passes.
    pub fn run(mut self) -> Outcome {
        let start = Instant::now();
        while let Some(e) = self.heap.pop() {
            if e.at > self.limit_us {
                break;
            }
            self.now = e.at;
            self.events += 1;
            if self.progress && self.events.is_multiple_of(1 << 22) {
                eprintln!(
                    "  {:.3} s simulated, {}/{} complete, {} events, {:.1} s wall",
                    self.now as f64 / 1e6,
                    self.completed,
                    self.leechers,
                    self.events,
                    start.elapsed().as_secs_f64()
                );
            }
            self.step(e.ev);
            if self.completed == self.leechers {
                break;
            }
        }
        let seed_uploaded = self
            .nodes
            .iter()
            .filter(|n| n.spec.seed)
            .map(|n| n.swarm.stats().uploaded)
            .sum();
        Outcome {
            completions_us: self
                .nodes
                .iter()
                .filter(|n| !n.spec.seed)
                .map(|n| n.completed_at)
                .collect(),
            seed_uploaded,
            file_bytes: self.file_bytes,
            t_min: self.t_min,
            events: self.events,
            stale_events: self.stale,
            end_us: self.now,
        }
    }

    fn lat(&self, a: u32, b: u32) -> u64 {
        let ra = self.nodes_region(a);
        let rb = self.nodes_region(b);
        self.latency_us[ra][rb]
    }

    fn nodes_region(&self, i: u32) -> usize {
        self.nodes.get(i as usize).map_or(0, |n| n.spec.region)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn conn_up(&self, i: u32, j: u32) -> bool {
        self.nodes[i as usize].conns.get(&j).is_some_and(|c| c.up)
    }

    fn step(&mut self, ev: Ev) {
        let now = Time::from_micros(self.now);
        match ev {
            Ev::Connect { a, b } => {
                let ra = self.nodes[a as usize]
                    .swarm
                    .handle_peer_connected(now, key(b), true);
                let rb = self.nodes[b as usize]
                    .swarm
                    .handle_peer_connected(now, key(a), false);
                if ra.is_ok() && rb.is_ok() {
                    for (x, y) in [(a, b), (b, a)] {
                        self.nodes[x as usize].conns.insert(
                            y,
                            Conn {
                                up: true,
                                ..Conn::default()
                            },
                        );
                    }
                } else {
                    self.nodes[a as usize]
                        .swarm
                        .handle_peer_disconnected(now, key(b));
                    self.nodes[b as usize]
                        .swarm
                        .handle_peer_disconnected(now, key(a));
                }
                self.drain(a);
                self.drain(b);
            }
            Ev::Msg { from, to, msg } => {
                if !self.conn_up(to, from) {
                    return;
                }
                let s = &mut self.nodes[to as usize].swarm;
                let k = key(from);
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
            Ev::FlowDone { flow, version } => self.flow_done(flow, version),
            Ev::BlockIn { from, to, block } => {
                if !self.conn_up(to, from) {
                    return;
                }
                let s = &mut self.nodes[to as usize].swarm;
                s.handle_bytes_received(now, key(from), u64::from(block.len));
                let _ = s.handle_block(now, key(from), block);
                self.drain(to);
            }
            Ev::Timer { node, at } => {
                let n = &mut self.nodes[node as usize];
                if n.timer != Some(at) {
                    self.stale += 1;
                    return;
                }
                n.timer = None;
                n.swarm.handle_timeout(now);
                self.drain(node);
            }
            Ev::Gone { node, peer } => {
                self.nodes[node as usize]
                    .swarm
                    .handle_peer_disconnected(now, key(peer));
                self.close(node, peer);
                self.drain(node);
            }
        }
    }

    /// Carries out everything node `i` asks for, then re-arms its timer.
    fn drain(&mut self, i: u32) {
        let now = Time::from_micros(self.now);
        while let Some(a) = self.nodes[i as usize].swarm.poll_action() {
            match a {
                Action::Send { peer, message } => {
                    let j = peer.0 as u32;
                    let Some(c) = self.nodes[i as usize].conns.get_mut(&j) else {
                        continue;
                    };
                    if !c.up {
                        continue;
                    }
                    if message == Message::Choke {
                        c.queue.clear();
                    }
                    let at = self.now + self.lat(i, j);
                    self.push(
                        at,
                        Ev::Msg {
                            from: i,
                            to: j,
                            msg: message,
                        },
                    );
                }
                Action::ServeBlock { peer, block } => self.serve(i, peer.0 as u32, block),
                Action::AbortServe { peer, block } => {
                    if let Some(c) = self.nodes[i as usize].conns.get_mut(&(peer.0 as u32)) {
                        if let Some(pos) = c.queue.iter().position(|b| *b == block) {
                            c.queue.remove(pos);
                        }
                    }
                }
                Action::VerifyPiece { piece } => {
                    let s = &mut self.nodes[i as usize].swarm;
                    s.handle_piece_verified(now, piece, true)
                        .expect("the swarm asked for this verification");
                    s.handle_piece_stored(now, piece)
                        .expect("a verified piece is awaiting storage");
                }
                Action::Disconnect { peer, .. } => {
                    let j = peer.0 as u32;
                    if self.conn_up(i, j) {
                        self.close(i, j);
                        let at = self.now + self.lat(i, j);
                        self.push(at, Ev::Gone { node: j, peer: i });
                    }
                }
                Action::Ban { .. } => {}
                Action::Completed => {
                    let n = &mut self.nodes[i as usize];
                    if n.completed_at.is_none() && !n.spec.seed {
                        n.completed_at = Some(self.now);
                        self.completed += 1;
                    }
                }
            }
        }
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

    /// Node `i` serves `block` to `j`: queue it, or start a flow.
    fn serve(&mut self, i: u32, j: u32, block: BlockRef) {
        let Some(c) = self.nodes[i as usize].conns.get_mut(&j) else {
            return;
        };
        if !c.up {
            return;
        }
        if c.flow.is_some() {
            c.queue.push_back(block);
            return;
        }
        let f = Flow {
            from: i,
            to: j,
            block,
            remaining: f64::from(block.len),
            rate: 0.0,
            last: self.now,
            version: 0,
            live: true,
        };
        let id = if let Some(id) = self.free_flows.pop() {
            self.flows[id as usize] = f;
            id
        } else {
            self.flows.push(f);
            (self.flows.len() - 1) as u32
        };
        c.flow = Some(id);
        self.nodes[i as usize].out_flows.push(id);
        self.nodes[j as usize].in_flows.push(id);
        self.reshare(i, j);
    }

    /// Closes our side of the link `i`→`j`: drops its queue and flow.
    fn close(&mut self, i: u32, j: u32) {
        let Some(c) = self.nodes[i as usize].conns.get_mut(&j) else {
            return;
        };
        c.up = false;
        c.queue.clear();
        if let Some(f) = c.flow.take() {
            self.end_flow(f);
        }
    }

    fn end_flow(&mut self, f: u32) {
        let (i, j) = {
            let fl = &mut self.flows[f as usize];
            fl.live = false;
            (fl.from, fl.to)
        };
        self.nodes[i as usize].out_flows.retain(|&x| x != f);
        self.nodes[j as usize].in_flows.retain(|&x| x != f);
        self.free_flows.push(f);
        self.reshare(i, j);
    }

    /// A flow from `i` into `j` started or ended: recompute the rates of
    /// `i`'s uplink and of every uplink that feeds `j`.
    fn reshare(&mut self, i: u32, j: u32) {
        let mut ups = std::mem::take(&mut self.scratch);
        ups.clear();
        ups.push(i);
        for &f in &self.nodes[j as usize].in_flows {
            ups.push(self.flows[f as usize].from);
        }
        ups.sort_unstable();
        ups.dedup();
        for &u in &ups {
            self.recompute_uplink(u);
        }
        self.scratch = ups;
    }

    /// Water-fills node `u`'s upload capacity over its flows, each capped
    /// by an equal share of its receiver's download capacity.
    fn recompute_uplink(&mut self, u: u32) {
        let mut caps = std::mem::take(&mut self.scratch_caps);
        caps.clear();
        for &f in &self.nodes[u as usize].out_flows {
            let to = &self.nodes[self.flows[f as usize].to as usize];
            caps.push((to.spec.down / to.in_flows.len() as f64, f));
        }
        caps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut left = self.nodes[u as usize].spec.up;
        let n = caps.len();
        for (k, &(cap, f)) in caps.iter().enumerate() {
            let rate = cap.min(left.max(0.0) / (n - k) as f64);
            left -= rate;
            self.set_rate(f, rate);
        }
        self.scratch_caps = caps;
    }

    fn set_rate(&mut self, f: u32, rate: f64) {
        let now = self.now;
        let fl = &mut self.flows[f as usize];
        if fl.rate == rate {
            return;
        }
        let elapsed = (now - fl.last) as f64 / 1e6;
        fl.remaining = (fl.remaining - fl.rate * elapsed).max(0.0);
        fl.last = now;
        fl.rate = rate;
        fl.version = fl.version.wrapping_add(1);
        let (version, at) = (fl.version, now + Self::eta(fl.remaining, rate));
        self.push(at, Ev::FlowDone { flow: f, version });
    }

    fn eta(remaining: f64, rate: f64) -> u64 {
        if rate <= 0.0 {
            return u64::MAX / 4;
        }
        (remaining * 1e6 / rate).ceil() as u64
    }

    fn flow_done(&mut self, f: u32, version: u32) {
        let fl = &self.flows[f as usize];
        if !fl.live || fl.version != version {
            self.stale += 1;
            return;
        }
        let (i, j, block) = (fl.from, fl.to, fl.block);
        let now = Time::from_micros(self.now);
        self.nodes[i as usize]
            .swarm
            .handle_bytes_sent(now, key(j), u64::from(block.len));
        let at = self.now + self.lat(i, j);
        self.push(
            at,
            Ev::BlockIn {
                from: i,
                to: j,
                block,
            },
        );
        let next = self.nodes[i as usize]
            .conns
            .get_mut(&j)
            .and_then(|c| c.queue.pop_front());
        if let Some(b) = next {
            let fl = &mut self.flows[f as usize];
            fl.block = b;
            fl.remaining = f64::from(b.len);
            fl.last = self.now;
            fl.version = fl.version.wrapping_add(1);
            let (version, at) = (fl.version, self.now + Self::eta(fl.remaining, fl.rate));
            self.push(at, Ev::FlowDone { flow: f, version });
        } else {
            if let Some(c) = self.nodes[i as usize].conns.get_mut(&j) {
                c.flow = None;
            }
            self.end_flow(f);
        }
        self.drain(i);
    }
}

/// Builds and runs a scenario; returns the outcome and the wall time.
pub fn run_scenario(s: &Scenario) -> anyhow::Result<(Outcome, std::time::Duration)> {
    run_scenario_with(s, false)
}

/// [`run_scenario`], optionally printing progress to stderr.
pub fn run_scenario_with(
    s: &Scenario,
    progress: bool,
) -> anyhow::Result<(Outcome, std::time::Duration)> {
    let setup = Setup::from_scenario(s)?;
    let start = Instant::now();
    let out = Sim::new(&setup).with_progress(progress).run();
    Ok((out, start.elapsed()))
}
