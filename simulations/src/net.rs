//! The discrete-event network that drives real [`Swarm`]s: the window
//! loop, the shared world and the events that touch many nodes. What
//! happens at one node is in `part.rs`, bandwidth sharing in `flows.rs`,
//! churn, partitions and redials in `faults.rs`.
//!
//! # Model
//! - **Events** pop in (time in µs, push order) order; nothing reads a
//!   clock or iterates a hash map, so a run is a pure function of the
//!   scenario and its seed.
//! - **Two parts, conservative windows.** The nodes are split in two
//!   [`Part`]s, each with its own queue. Time advances in windows no
//!   longer than the smallest one-way latency `W`: an event at one node
//!   can reach another only a latency later, so inside a window each part
//!   runs its own events without looking at the other, and the two can
//!   run on two threads. What one part sends the other waits in an outbox
//!   until the window ends, and is then queued in a fixed order, so the
//!   result does not depend on whether the parts ran in parallel.
//! - **Between windows** (`sync`): outboxes are delivered, downlink shares
//!   are brought up to date (`Sim::settle`), counters are summed, and the
//!   events that touch many nodes at once run: connections coming up,
//!   leaves and crashes, redials and partitions (`Gev`). A window ends
//!   early at the next such event.
//! - **Connections** are directed halves: link `l` has half `2l` (owned by
//!   its dialer) and `2l + 1`; a half's index is the [`PeerKey`] its
//!   owner's swarm uses for the other end, and `c ^ 1` is the other end's
//!   half. A pair of nodes always reuses its link, so bans and scores
//!   (kept per key for a swarm's life) survive reconnects. What a half
//!   never changes ([`Half`]) is in the world; what it does, with a copy
//!   of what sending reads ([`ConnState`]), belongs to its owner's part.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use shoal_proto::discovery::Target;
use shoal_proto::swarm::{BlockRef, Message, Swarm};
use shoal_proto::tracker::Event;
use shoal_proto::wire::PeerAddr;

use crate::discovery::{NodeBook, Tracker, Trackers};
use crate::faults::Plan;
use crate::flows::InLink;
use crate::outcome::{NodeResult, Outcome};
use crate::part::Part;
use crate::queue::Queue;
use crate::regions::{LinkTallies, Regions};
use crate::replication::Replicas;
use crate::rng::SplitMix;
use crate::scenario::NodeSpec;
pub use crate::setup::Setup;
use crate::worker::Worker;

/// An event at one node (its part runs it).
#[derive(Debug)]
pub(crate) enum Ev {
    /// `conn` is the receiver's half, `to` its node (carried so that the
    /// node's memory can be fetched alongside the connection's).
    Msg {
        conn: u32,
        to: u32,
        msg: Message,
    },
    /// One `Have` to each (receiver half, its node) in `conns`, all in
    /// one part.
    Haves {
        piece: u32,
        conns: Vec<(u32, u32)>,
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
    /// Node `node`'s discovery tick (`discovery = "tracker"`).
    BookTick {
        node: u32,
    },
    /// A `Peers` message on the receiver's half `conn`.
    Pex {
        conn: u32,
        to: u32,
        list: Vec<PeerAddr>,
    },
}

/// An event that touches more than one node: run between windows.
#[derive(Debug)]
pub(crate) enum Gev {
    Connect {
        link: u32,
    },
    /// An announce reaches the tracker (`seq` numbers regular ones), or
    /// the replica that is its `attempt`'s in the node's order.
    Announce {
        node: u32,
        event: Event,
        seq: u32,
        attempt: u32,
    },
    /// The tracker's answer reaches the node.
    Answer {
        node: u32,
        peers: Vec<u32>,
    },
    /// A dial (its handshake done) reaches `to`.
    Dial {
        from: u32,
        to: u32,
        target: Target,
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

/// What never changes about a connection half (latency and loss are in
/// its owner's [`ConnState`]).
#[derive(Debug)]
pub(crate) struct Half {
    pub(crate) node: u32,
    pub(crate) peer: u32,
    /// The transport's throughput ceiling on this path (loss), bytes/s.
    pub(crate) cap: f64,
}

/// A connection half as its owner's part uses it: what changes, and a
/// copy of what sending reads from [`Half`], so that a send touches one
/// cache line (64 bytes) rather than two. Only the owner's part's copy is
/// meaningful.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Served blocks waiting behind the active flow.
    pub(crate) queue: VecDeque<BlockRef>,
    pub(crate) flow: Option<u32>,
    pub(crate) loss: f64,
    /// One-way latency, µs (as [`Half::lat`]).
    pub(crate) lat: u32,
    pub(crate) node: u32,
    pub(crate) peer: u32,
    pub(crate) up: bool,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Alive,
    Left,
    Crashed,
}

/// `repr(C)`, what every event reads first (the timer, then the swarm
/// whose hot fields lead its own layout): events land on random nodes, so
/// each distinct cache line read here is a miss. Whether the node is alive
/// is `World::life`, a few KiB that stay in cache.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Node {
    pub(crate) timer: Option<u64>,
    pub(crate) swarm: Swarm,
    pub(crate) out_flows: Vec<u32>,
    /// The sender halves of the flows into this node, as of the last
    /// window's end.
    pub(crate) in_flows: Vec<u32>,
    pub(crate) spec: NodeSpec,
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
    /// Most connections up at once.
    pub(crate) peak_live: u32,
    /// Its peer book, when discovery runs the daemon's way.
    pub(crate) book: Option<Box<NodeBook>>,
}

/// What both parts read and neither changes during a window.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) specs: Vec<NodeSpec>,
    pub(crate) life: Vec<Life>,
    /// Per node: its downlink as senders see it during a window.
    pub(crate) inlinks: Vec<InLink>,
    pub(crate) halves: Vec<Half>,
    latency_us: Vec<Vec<u64>>,
    inter_region_loss: f64,
    /// Each node's region, and the links between regions.
    pub(crate) regions: Regions,
    /// Faults: partitions, detection and redial delays.
    pub(crate) plan: Plan,
    /// Nodes below this index are part 0's.
    pub(crate) split: u32,
    degree: usize,
    seed_degree: usize,
    /// Nodes find each other through books, a tracker and PEX.
    pub(crate) books: bool,
}

impl World {
    pub(crate) fn part_of(&self, i: u32) -> usize {
        usize::from(i >= self.split)
    }

    /// The neighbours node `i` keeps (it redials below this).
    pub(crate) fn target_degree(&self, i: u32) -> usize {
        if self.specs[i as usize].seed {
            self.seed_degree
        } else {
            self.degree
        }
    }

    /// One-way latency from `a` to `b`, µs.
    pub(crate) fn lat(&self, a: u32, b: u32) -> u64 {
        let (na, nb) = (&self.specs[a as usize], &self.specs[b as usize]);
        self.latency_us[na.region][nb.region] + na.access_us + nb.access_us
    }

    /// One-way latency from node `a` to a host (a tracker replica) in
    /// `region`, µs.
    pub(crate) fn lat_to_region(&self, a: u32, region: usize) -> u64 {
        let na = &self.specs[a as usize];
        self.latency_us[na.region][region] + na.access_us
    }

    /// The loss rate of the path between `a` and `b`.
    pub(crate) fn path_loss(&self, a: u32, b: u32) -> f64 {
        let (na, nb) = (&self.specs[a as usize], &self.specs[b as usize]);
        let core = if na.region == nb.region {
            0.0
        } else {
            self.inter_region_loss
        };
        1.0 - (1.0 - na.loss) * (1.0 - nb.loss) * (1.0 - core)
    }

    /// Whether a cut in force at `now` separates `a` and `b`.
    pub(crate) fn cut(&self, now: u64, a: u32, b: u32) -> bool {
        if self.plan.cuts.is_empty() {
            return false;
        }
        let (ra, rb) = (self.specs[a as usize].region, self.specs[b as usize].region);
        self.plan
            .cuts
            .iter()
            .any(|c| now >= c.at_us && now < c.heal_us && c.side[ra] != c.side[rb])
    }

    /// The window: the smallest one-way latency any two nodes can have
    /// (at least 1 µs), so that nothing sent inside a window arrives in
    /// it.
    fn window_us(&self) -> u64 {
        let regions = self.latency_us.len();
        let mut access = vec![u64::MAX; regions];
        for s in &self.specs {
            access[s.region] = access[s.region].min(s.access_us);
        }
        let mut w = u64::MAX;
        for a in 0..regions {
            for b in 0..regions {
                if access[a] != u64::MAX && access[b] != u64::MAX {
                    w = w.min(self.latency_us[a][b] + access[a] + access[b]);
                }
            }
        }
        w.clamp(1, u64::MAX / 4)
    }
}

/// After a window with fewer events than this, the next runs both parts
/// on one thread: a thread's start (tens of µs) costs more than they
/// save.
const PARALLEL_EVENTS: u64 = 256;

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    pub(crate) now: u64,
    pub(crate) world: Arc<World>,
    pub(crate) parts: Vec<Part>,
    worker: Option<Worker>,
    global: Queue<Gev>,
    pub(crate) link_of: BTreeMap<(u32, u32), u32>,
    pub(crate) rng: SplitMix,
    pieces: u32,
    /// Pieces some honest leecher holds, and how many.
    covered: Vec<bool>,
    covered_count: u32,
    /// Staying honest leechers not yet complete.
    pub(crate) waiting: usize,
    limit_us: u64,
    pub(crate) file_bytes: u64,
    t_min: f64,
    pub(crate) bans: Vec<(u32, u32)>,
    pub(crate) seeds_left: Option<u64>,
    window_us: u64,
    threads: usize,
    parallel_from: u64,
    last_window_events: u64,
    /// Scratch for `settle`: per node, the window it was last marked in.
    pub(crate) dirty_mark: Vec<u64>,
    /// The flows crossing each inter-region link, and its updates.
    pub(crate) link_tallies: LinkTallies,
    pub(crate) settles: u64,
    /// Windows run so far (for `--progress`).
    windows: u64,
    progress: bool,
    /// The tracker or the replicas (`discovery = "tracker"`).
    pub(crate) tracker: Option<Trackers>,
    /// Dials that reached their end, and how many of those were refused
    /// (busy, duplicate, banned) or failed.
    pub(crate) dials: (u64, u64),
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
        let mut nodes: Vec<Node> = setup
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
                peak_live: 0,
                book: setup
                    .books
                    .then(|| Box::new(NodeBook::new(i as u32, setup.seed, s.seed))),
            })
            .collect();
        let waiting = setup
            .nodes
            .iter()
            .filter(|s| !s.seed && !s.corrupt && s.leave.is_none())
            .count();
        let split = (nodes.len() / 2) as u32;
        let world = World {
            specs: setup.nodes.clone(),
            life: vec![Life::Alive; nodes.len()],
            inlinks: setup.nodes.iter().map(|s| InLink::new(s.down)).collect(),
            halves: Vec::new(),
            latency_us: setup.latency_us.clone(),
            inter_region_loss: setup.inter_region_loss,
            regions: Regions::new(setup),
            plan: setup.plan.clone(),
            split,
            degree: setup.degree,
            seed_degree: setup.seed_degree,
            books: setup.books,
        };
        let link_tallies = LinkTallies::new(&world.regions);
        let second = nodes.split_off(split as usize);
        let parts = vec![
            Part::new(0, 0, nodes, n as u32, setup.seed),
            Part::new(1, split, second, n as u32, setup.seed),
        ];
        let mut sim = Sim {
            now: 0,
            window_us: world.window_us(),
            world: Arc::new(world),
            parts,
            worker: None,
            global: Queue::default(),
            link_of: BTreeMap::new(),
            rng: SplitMix::new(setup.seed ^ 0x6e65_7477_6f72_6b00),
            pieces: n as u32,
            covered: vec![false; n],
            covered_count: 0,
            waiting,
            limit_us: setup.limit_us,
            file_bytes: setup.geometry.total_length(),
            t_min: setup.t_min(),
            bans: Vec::new(),
            seeds_left: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            parallel_from: PARALLEL_EVENTS,
            last_window_events: 0,
            dirty_mark: vec![0; setup.nodes.len()],
            link_tallies,
            settles: 0,
            windows: 0,
            progress: false,
            tracker: setup.books.then(|| match &setup.tracker {
                Some(spec) => {
                    let mut r =
                        Replicas::new(spec, &setup.latency_us, &setup.plan.cuts, setup.seed);
                    r.start();
                    r.check_heals();
                    Trackers::Replicated(Box::new(r))
                }
                None => Trackers::One(Tracker::new(setup.seed)),
            }),
            dials: (0, 0),
        };
        for &(a, b) in &setup.links {
            let link = sim.link(a, b);
            let join = setup.nodes[a as usize]
                .join_us
                .max(setup.nodes[b as usize].join_us);
            let at = join + sim.world.lat(a, b);
            sim.push_global(at, Gev::Connect { link });
        }
        if setup.books {
            sim.start_discovery();
        }
        sim.schedule_faults();
        sim
    }

    /// Prints a progress line to stderr every 2^22 events.
    pub fn with_progress(mut self, on: bool) -> Sim {
        self.progress = on;
        self
    }

    /// Runs the two parts on at most `n` threads (1 or 2). The result is
    /// the same whatever `n` is.
    pub fn with_threads(mut self, n: usize) -> Sim {
        self.threads = n.clamp(1, 2);
        self
    }

    /// Runs a window on two threads when the one before had at least
    /// `events` events (0: always). Like the thread count, it changes
    /// only the speed, never the result.
    pub fn with_parallel_from(mut self, events: u64) -> Sim {
        self.parallel_from = events;
        self
    }

    /// Runs until every staying leecher completes, the queues empty or
    /// the time limit passes.
    pub fn run(mut self) -> Outcome {
        let start = Instant::now();
        let mut reported = 0;
        while self.advance() {
            let events = self.events();
            if self.progress && events >> 22 > reported {
                reported = events >> 22;
                // Best effort: a closed stderr must not end the run.
                let _ = writeln!(
                    std::io::stderr(),
                    "  {:.3} s simulated, {} waiting, {} events in {} windows, {:.1} s wall",
                    self.now as f64 / 1e6,
                    self.waiting,
                    events,
                    self.windows,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        self.outcome()
    }

    fn events(&self) -> u64 {
        self.parts.iter().map(|p| p.events).sum()
    }

    /// Runs one window and what follows it; false once the run is over.
    pub(crate) fn advance(&mut self) -> bool {
        let next_global = self.global.peek_at();
        let next_part = self.parts.iter().filter_map(Part::next_at).min();
        let Some(start) = next_part.into_iter().chain(next_global).min() else {
            return false;
        };
        if start > self.limit_us {
            return false;
        }
        let end = (start + self.window_us).min(next_global.unwrap_or(u64::MAX));
        if end > start {
            self.run_parts(end);
        }
        self.windows += 1;
        self.sync(end);
        while self.global.peek_at() == Some(end) {
            let (_, ev) = self.global.pop().expect("peeked");
            self.global_event(ev);
            self.sync(end);
        }
        self.waiting != 0
    }

    /// Both parts run their events before `end`, on two threads when the
    /// last window was busy enough to pay for one.
    fn run_parts(&mut self, end: u64) {
        let before = self.events();
        if self.threads > 1 && self.last_window_events >= self.parallel_from {
            let worker = self.worker.get_or_insert_with(Worker::start);
            let second = self.parts.pop().expect("two parts");
            worker.run(second, Arc::clone(&self.world), end);
            self.parts[0].run_until(end, &self.world);
            self.parts.push(worker.finish());
        } else {
            for p in &mut self.parts {
                p.run_until(end, &self.world);
            }
        }
        self.last_window_events = self.events() - before;
    }

    /// The world, to change between windows (no part holds it then).
    pub(crate) fn world_mut(&mut self) -> &mut World {
        Arc::get_mut(&mut self.world).expect("a part still holds the world")
    }

    /// Between windows: deliver what each part sent the other, bring
    /// downlink shares up to date, and collect the parts' counters and
    /// requests.
    fn sync(&mut self, now: u64) {
        self.now = now;
        for p in &mut self.parts {
            p.now = p.now.max(now);
        }
        let (a, b) = self.parts.split_at_mut(1);
        for (at, ev) in a[0].out.drain(..) {
            b[0].push(at, ev);
        }
        for (at, ev) in b[0].out.drain(..) {
            a[0].push(at, ev);
        }
        self.settle();
        let mut redials = Vec::new();
        for p in &mut self.parts {
            self.waiting -= std::mem::take(&mut p.done);
            self.bans.append(&mut p.bans);
            for piece in p.newly_held.drain(..) {
                if !self.covered[piece as usize] {
                    self.covered[piece as usize] = true;
                    self.covered_count += 1;
                }
            }
            redials.append(&mut p.redials);
        }
        for (at, node) in redials {
            self.push_global(at.max(now), Gev::Redial { node });
        }
        let mut dials = Vec::new();
        for p in &mut self.parts {
            dials.append(&mut p.dials);
        }
        for (at, from, to, target) in dials {
            // TLS and the handshake: one round trip.
            let at = at.max(now) + 2 * self.world.lat(from, to);
            self.push_global(at, Gev::Dial { from, to, target });
        }
        let mut completed = Vec::new();
        for p in &mut self.parts {
            completed.append(&mut p.announces);
        }
        for (at, node) in completed {
            self.announce_event(at.max(now), node, Event::Completed);
        }
        if self.covered_count == self.pieces {
            self.one_copy_exists();
        }
    }

    fn global_event(&mut self, ev: Gev) {
        match ev {
            Gev::Connect { link } => {
                let dialer = self.world.halves[2 * link as usize].node;
                // A start-up connect that does not come up is not retried.
                let _ = self.connect_from(link, dialer);
            }
            Gev::Announce {
                node,
                event,
                seq,
                attempt,
            } => self.announce(node, event, seq, attempt),
            Gev::Answer { node, peers } => self.answer(node, &peers),
            Gev::Dial { from, to, target } => self.dial(from, to, target),
            Gev::Leave { node, crash } => self.leave(node, crash),
            Gev::Redial { node } => self.redial(node),
            Gev::Partition { index, heal } => self.partition(index, heal),
        }
    }

    fn outcome(self) -> Outcome {
        let nodes: Vec<&Node> = self.parts.iter().flat_map(|p| p.nodes.iter()).collect();
        let seed_uploaded = nodes
            .iter()
            .filter(|n| n.spec.seed)
            .map(|n| n.swarm.stats().uploaded)
            .sum();
        let pieces = self.pieces;
        let results = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.spec.seed)
            .map(|(i, n)| NodeResult {
                crashed: self.world.life[i] == Life::Crashed,
                node: i as u32,
                region: n.spec.region,
                up: n.spec.up,
                down: n.spec.down,
                join_us: n.spec.join_us,
                completed_us: n.completed_at,
                left_us: n.left_at,
                leaves: n.spec.leave.is_some(),
                corrupt: n.spec.corrupt,
                clean: n.clean == pieces,
                peak_conns: n.peak_live,
            })
            .collect();
        Outcome {
            nodes: results,
            seed_uploaded,
            file_bytes: self.file_bytes,
            t_min: self.t_min,
            events: self.events(),
            dials: self.dials,
            seed_peak_conns: nodes
                .iter()
                .filter(|n| n.spec.seed)
                .map(|n| n.peak_live)
                .max()
                .unwrap_or(0),
            stale_events: self.parts.iter().map(|p| p.stale).sum(),
            cross_region_bytes: (self.world.regions.several())
                .then(|| self.parts.iter().map(|p| p.crossed).sum()),
            end_us: self.parts.iter().map(|p| p.last_at).max().unwrap_or(0),
            failed_pieces: self.parts.iter().map(|p| p.failed).sum(),
            bans: self.bans,
            seeds_left_us: self.seeds_left,
            replication: match self.tracker {
                Some(Trackers::Replicated(r)) => Some(r.finish(0)),
                _ => None,
            },
        }
    }

    pub(crate) fn push_global(&mut self, at: u64, ev: Gev) {
        self.global.push(at, ev);
    }

    /// The part that owns node `i`, with the world.
    pub(crate) fn at(&mut self, i: u32) -> (&mut Part, &World) {
        let p = self.world.part_of(i);
        (&mut self.parts[p], &self.world)
    }

    pub(crate) fn node(&self, i: u32) -> &Node {
        let p = &self.parts[self.world.part_of(i)];
        &p.nodes[(i - p.base) as usize]
    }

    pub(crate) fn node_mut(&mut self, i: u32) -> &mut Node {
        self.at(i).0.node(i)
    }

    /// Half `c`'s changing state, from its owner's part.
    pub(crate) fn conn(&self, c: u32) -> &ConnState {
        let owner = self.world.halves[c as usize].node;
        &self.parts[self.world.part_of(owner)].conns[c as usize]
    }
}
