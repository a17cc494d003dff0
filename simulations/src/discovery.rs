//! Peer discovery the daemon's way (`discovery = "tracker"`): every node
//! runs proto's [`PeerBook`] and PEX rules, fed by a tracker's answers and
//! by the `Peers` messages of its connections, instead of the fixed random
//! graph of `discovery = "graph"`.
//!
//! What the simulator adds around proto's decisions is what the daemon's
//! actor (`src/swarm/actor/conns.rs`) and announcer (`src/announce.rs`)
//! add around them:
//! - **Identity.** Node `i` is node id [`node_id`]`(i)`, listening at
//!   [`addr`]`(i)` (198.18.0.0/15, a label only: nothing is sent).
//! - **Announces.** A node announces `started` when it joins, `completed`
//!   as it completes, `stopped` when it leaves gracefully (a crash says
//!   nothing), and otherwise every 30 s while incomplete and every 300 s
//!   once complete (the announcer's `leech_interval` and the tracker's
//!   default interval). The tracker is one proto [`PeerTable`] (the
//!   daemon's) one path away from node 0, the first seeder, that never
//!   fails. It answers with its own selection rules: up to 50 (`numwant`)
//!   random live peers, no seeders to a seeder.
//! - **Replicas.** With a `[tracker]` section the nodes announce to its
//!   replicas instead ([`Replicas`], fed each announce as it arrives):
//!   own region's first, then the others, failing over as the announcer
//!   does (a dead replica refuses after a round trip, a cut one times out
//!   after [`ANNOUNCE_TIMEOUT_US`]; after the last, a wait of
//!   [`ANNOUNCE_RETRY_US`]). The regular interval is the section's (at
//!   most 30 s while incomplete).
//! - **The tick.** Every 500 ms (the actor's `DISCOVERY_TICK`) a node
//!   expires its book, sends the `Peers` messages its connections'
//!   [`PexSchedule`]s say are due, and starts the dials the book returns.
//!   It also sends a connection's first `Peers` as soon as it opens, and
//!   dials at once after an answer, an admitted `Peers` or a lost
//!   connection, as the actor does.
//! - **Dials.** A dial takes one round trip (TLS and the handshake, as a
//!   graph connect does) and then reaches a live, joined, uncut node or
//!   fails. A node already connected, banned, at its book's
//!   `max_connections`, or refusing in its swarm refuses it as the actor
//!   would.
//!
//! Dials and announces run between windows (they touch two nodes, or the
//! tracker's list); the tick and `Peers` run inside a node's part.

use std::net::{IpAddr, SocketAddr};

use shoal_proto::discovery::{
    admitted_entries, build_peers, BookConfig, Ending, PeerBook, PexConfig, PexGate, PexSchedule,
    Refusal, Target,
};
use shoal_proto::rng::Rng;
use shoal_proto::swarm::Time;
use shoal_proto::tracker::client::Tiers;
use shoal_proto::tracker::table::{PeerTable, TableConfig};
use shoal_proto::tracker::{AnnounceRequest, Clock, Event, PeerInfo};
use shoal_proto::wire::{NodeId, PeerAddr};

use crate::connect::NotUp;
use crate::net::{Ev, Gev, Life, Sim, World};
use crate::part::Part;
use crate::replication::{announce_request, replica_of, Replicas, INFO_HASH};

/// The daemon's discovery tick (`src/swarm/actor.rs`), µs.
pub(crate) const TICK_US: u64 = 500_000;
/// Peers a tracker answer lists (the announcer's `numwant`).
const NUMWANT: usize = 50;
/// Announce interval while incomplete (the announcer's `leech_interval`).
const LEECH_ANNOUNCE_US: u64 = 30_000_000;
/// The announcer's bound on one exchange with a tracker (its `timeout`):
/// how long an announce into a cut takes to fail, µs.
const ANNOUNCE_TIMEOUT_US: u64 = 10_000_000;
/// The announcer's wait after every tracker failed (its `retry`), µs.
const ANNOUNCE_RETRY_US: u64 = 15_000_000;
/// Announce interval once complete (the tracker's default interval).
const SEED_ANNOUNCE_US: u64 = 300_000_000;
/// The node the tracker sits beside.
const TRACKER_NEAR: u32 = 0;
/// Nodes 198.18.0.0/15 can name.
pub(crate) const MAX_NODES: usize = 1 << 17;

/// Node `i`'s id.
pub(crate) fn node_id(i: u32) -> NodeId {
    let mut id = [0x5e; 32];
    id[..4].copy_from_slice(&i.to_be_bytes());
    id
}

/// Where node `i` listens.
pub(crate) fn addr(i: u32) -> SocketAddr {
    let [_, hi, mid, lo] = i.to_be_bytes();
    SocketAddr::from(([198, 18 + hi, mid, lo], 4443))
}

/// The node listening at `a`, if any.
pub(crate) fn index_of(a: SocketAddr) -> Option<u32> {
    let IpAddr::V4(v) = a.ip() else { return None };
    let [first, second, mid, lo] = v.octets();
    if first != 198 || !(18..=19).contains(&second) || a.port() != 4443 {
        return None;
    }
    Some(u32::from_be_bytes([0, second - 18, mid, lo]))
}

/// One node's discovery state.
#[derive(Debug)]
pub(crate) struct NodeBook {
    pub(crate) book: PeerBook,
    rng: Rng,
    /// The regular announce scheduled last; an earlier one is stale (an
    /// event announce came between).
    announce_seq: u32,
    /// Its announce list, when it announces to replicas (set at its first
    /// announce).
    trackers: Option<Tiers>,
}

/// Place `attempt` of announce list `t`: its `(tier, index)`, the
/// replica there, and how many places the list has.
fn attempt_at(t: &Tiers, attempt: u32) -> ((usize, usize), usize, usize) {
    let attempts = t.attempts();
    let (tier, index, url) = &attempts[attempt as usize % attempts.len()];
    let k = replica_of(url).expect("replica URLs name replicas");
    ((*tier, *index), k, attempts.len())
}

impl NodeBook {
    pub(crate) fn new(i: u32, seed: u64, complete: bool) -> NodeBook {
        let mut book = PeerBook::new(BookConfig::default(), node_id(i));
        book.set_complete(complete);
        NodeBook {
            book,
            rng: Rng::new(seed ^ 0xb00c_0000_0000_0000 ^ u64::from(i).wrapping_mul(0x9e37_79b9)),
            announce_seq: 0,
            trackers: None,
        }
    }
}

/// The tracker: one proto peer table.
#[derive(Debug)]
pub(crate) struct Tracker {
    table: PeerTable,
    clock: Clock,
    answer: Vec<PeerInfo>,
}

impl Tracker {
    pub(crate) fn new(seed: u64) -> Tracker {
        let mut cfg = TableConfig::for_interval(SEED_ANNOUNCE_US / 1000);
        cfg.hash_seed = seed;
        Tracker {
            table: PeerTable::new(cfg),
            clock: Clock::new(1),
            answer: Vec::new(),
        }
    }

    /// Node `i`'s announce at `now_us`: the nodes the answer lists (none
    /// for `stopped`).
    fn announce(&mut self, now_us: u64, i: u32, event: Event, left: u64, seed: u64) -> Vec<u32> {
        let req = request(i, event, left);
        if self
            .table
            .apply_announce(now_us / 1000, &mut self.clock, &req, addr(i))
            .is_err()
            || event == Event::Stopped
        {
            return Vec::new();
        }
        select(&self.table, now_us, &req, seed, &mut self.answer)
    }
}

/// Where nodes announce: one table that never fails, or, with a
/// `[tracker]` section, the scenario's replicas.
#[derive(Debug)]
pub(crate) enum Trackers {
    One(Tracker),
    Replicated(Box<Replicas>),
}

/// Node `i`'s announce of `event` with `left` bytes to go.
fn request(i: u32, event: Event, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        port: addr(i).port(),
        numwant: Some(NUMWANT as u32),
        ..announce_request(INFO_HASH, i, event, left)
    }
}

/// The nodes `table` lists in its answer to `req`, by its own rules (up
/// to `numwant` random live peers, no seeders to a seeder).
fn select(
    table: &PeerTable,
    now_us: u64,
    req: &AnnounceRequest,
    seed: u64,
    answer: &mut Vec<PeerInfo>,
) -> Vec<u32> {
    answer.clear();
    table.select_peers_into(
        now_us / 1000,
        &INFO_HASH,
        &req.peer_id,
        NUMWANT,
        req.is_seeder(),
        seed,
        answer,
    );
    answer.iter().filter_map(|p| index_of(p.addr)).collect()
}

impl Part {
    /// Node `i`'s discovery tick: forget, send due `Peers`, dial.
    pub(crate) fn book_tick(&mut self, world: &World, i: u32) {
        if world.life[i as usize] != Life::Alive {
            return;
        }
        let now = Time::from_micros(self.now);
        let Some(b) = self.node(i).book.as_mut() else {
            return;
        };
        b.book.expire(now);
        self.send_pex(world, i);
        self.dial_due(i);
        let at = self.now + TICK_US;
        self.push(at, Ev::BookTick { node: i });
    }

    /// Sends `Peers` on each of `i`'s connections whose schedule is due.
    pub(crate) fn send_pex(&mut self, world: &World, i: u32) {
        let now = Time::from_micros(self.now);
        let cfg = PexConfig::default();
        let own = PeerAddr {
            node_id: node_id(i),
            addrs: vec![addr(i)],
        };
        for k in 0..self.node(i).halves.len() {
            let c = self.node(i).halves[k];
            let due =
                self.conns[c as usize].up && self.pex[c as usize].is_some_and(|(s, _)| s.due(now));
            if !due {
                continue;
            }
            let peer = self.conns[c as usize].peer;
            let Some(b) = self.node(i).book.as_mut() else {
                return;
            };
            let list = build_peers(
                Some(own.clone()),
                b.book.connected_peers(&node_id(peer)),
                &mut b.rng,
            );
            if let Some((s, _)) = &mut self.pex[c as usize] {
                s.sent(now, &cfg);
            }
            if self.sendable(world, c) {
                let at = self.now + self.msg_delay(c);
                let ev = Ev::Pex {
                    conn: c ^ 1,
                    to: peer,
                    list,
                };
                self.route(world, at, peer, ev);
            }
        }
    }

    /// A `Peers` reaches node `to` on its half `c`.
    pub(crate) fn on_pex(&mut self, c: u32, to: u32, list: Vec<PeerAddr>) {
        let now = Time::from_micros(self.now);
        let cfg = PexConfig::default();
        if !self.conns[c as usize].up {
            return;
        }
        let admitted = match &mut self.pex[c as usize] {
            Some((_, gate)) => gate.admit(now, &cfg),
            None => false,
        };
        if !admitted {
            return;
        }
        let sender = self.conns[c as usize].peer;
        let got = admitted_entries(&node_id(to), &node_id(sender), addr(sender).ip(), list);
        let Some(b) = self.node(to).book.as_mut() else {
            return;
        };
        if !got.sender_addrs.is_empty() {
            b.book.add_node(now, node_id(sender), &got.sender_addrs);
        }
        b.book.add_pex(now, &got.others);
        self.dial_due(to);
    }

    /// Asks `i`'s book for dials; they start between windows.
    pub(crate) fn dial_due(&mut self, i: u32) {
        let (now_us, now) = (self.now, Time::from_micros(self.now));
        let Some(b) = self.nodes[(i - self.base) as usize].book.as_mut() else {
            return;
        };
        for d in b.book.poll_dials(now, &mut b.rng) {
            match index_of(d.addr) {
                Some(j) => self.dials.push((now_us, i, j, d.target)),
                None => b.book.dial_failed(now, d.target, &mut b.rng),
            }
        }
    }

    /// Node `i`'s connection on half `c` ended: its book hears how.
    pub(crate) fn book_lost(&mut self, i: u32, c: u32, how: Ending) {
        let now = Time::from_micros(self.now);
        let peer = self.conns[c as usize].peer;
        if let Some(p) = self.pex.get_mut(c as usize) {
            *p = None;
        }
        let Some(b) = self.node(i).book.as_mut() else {
            return;
        };
        b.book.disconnected(now, node_id(peer), how, &mut b.rng);
        self.dial_due(i);
    }

    /// Node `i` banned node `j`.
    pub(crate) fn book_ban(&mut self, i: u32, j: u32) {
        let now = Time::from_micros(self.now);
        if let Some(b) = self.node(i).book.as_mut() {
            b.book.ban(now, node_id(j));
        }
    }
}

impl Sim {
    /// Schedules every node's first announce and tick.
    pub(crate) fn start_discovery(&mut self) {
        // Nodes that join at the same moment reach the tracker in a random
        // order, not by index: classes are laid out by index, and the
        // first announcers are the ones the seed's connections fill with.
        let mut order: Vec<u32> = (0..self.world.specs.len() as u32).collect();
        for k in (1..order.len()).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            order.swap(k, j);
        }
        for i in order {
            let join = self.world.specs[i as usize].join_us;
            self.send_announce(join, i, Event::Started, 0, 0);
            // Ticks spread over the period, as timers started at
            // different moments would be.
            let tick = join + self.rng.below(TICK_US);
            let (part, _) = self.at(i);
            part.push(tick, Ev::BookTick { node: i });
        }
    }

    /// Node `i` sends attempt `attempt` of its announce (regular ones
    /// numbered `seq`) at `at`; it reaches the tracker, or the replica at
    /// that place in the node's announce list, a path later.
    fn send_announce(&mut self, at: u64, i: u32, event: Event, seq: u32, attempt: u32) {
        let region = self.world.specs[i as usize].region;
        let p = self.world.part_of(i);
        let arrive = match &self.tracker {
            None => return,
            Some(Trackers::One(_)) => at + self.world.lat(i, TRACKER_NEAR),
            Some(Trackers::Replicated(r)) => {
                let Some(b) = self.parts[p].node(i).book.as_mut() else {
                    return;
                };
                let tiers = b.trackers.get_or_insert_with(|| r.tiers(region));
                at + self
                    .world
                    .lat_to_region(i, r.region(attempt_at(tiers, attempt).1))
            }
        };
        self.push_global(
            arrive,
            Gev::Announce {
                node: i,
                event,
                seq,
                attempt,
            },
        );
    }

    /// Node `i` announces `event` at `at`.
    pub(crate) fn announce_event(&mut self, at: u64, i: u32, event: Event) {
        self.send_announce(at, i, event, 0, 0);
    }

    /// Attempt `attempt` of node `i`'s announce (regular ones numbered
    /// `seq`) reaches the tracker or a replica.
    pub(crate) fn announce(&mut self, i: u32, event: Event, seq: u32, attempt: u32) {
        let live = self.world.life[i as usize] == Life::Alive;
        let Some(b) = self.node(i).book.as_ref() else {
            return;
        };
        if (event == Event::None && seq != b.announce_seq) || (!live && event != Event::Stopped) {
            return;
        }
        let left = if self.node(i).swarm.is_complete() {
            0
        } else {
            self.file_bytes
        };
        let seed = self.rng.below(u64::MAX);
        let now = self.now;
        let region = self.world.specs[i as usize].region;
        let (peers, back) = match self.tracker.as_mut() {
            None => return,
            Some(Trackers::One(t)) => (
                t.announce(now, i, event, left, seed),
                self.world.lat(i, TRACKER_NEAR),
            ),
            Some(Trackers::Replicated(r)) => {
                // Whatever the replicas did up to this moment (deaths,
                // deltas, anti-entropy) has happened.
                r.run_until(now + 1);
                let p = self.world.part_of(i);
                let Some(tiers) = self.parts[p]
                    .node(i)
                    .book
                    .as_mut()
                    .and_then(|b| b.trackers.as_mut())
                else {
                    return;
                };
                let ((tier, index), k, places) = attempt_at(tiers, attempt);
                let lat = self.world.lat_to_region(i, r.region(k));
                if let Err(refused) = r.reachable(now, region, k) {
                    // The announcer's failover: a dead replica's host
                    // refuses at once, a cut one times out; then the next
                    // replica, and after the last the retry wait.
                    r.attempt_failed();
                    let failed = if refused {
                        now + lat
                    } else {
                        now.saturating_sub(lat) + ANNOUNCE_TIMEOUT_US
                    };
                    if (attempt as usize) + 1 < places {
                        self.send_announce(failed, i, event, seq, attempt + 1);
                    } else if event != Event::Stopped {
                        self.send_announce(failed + ANNOUNCE_RETRY_US, i, event, seq, 0);
                    }
                    return;
                }
                tiers.answered(tier, index);
                let req = request(i, event, left);
                if !r.apply(now, k, &req, addr(i)) || event == Event::Stopped {
                    return;
                }
                let mut answer = Vec::new();
                (select(r.table(k), now, &req, seed, &mut answer), lat)
            }
        };
        if event == Event::Stopped {
            return;
        }
        self.push_global(now + back, Gev::Answer { node: i, peers });
    }

    /// The tracker's answer reaches node `i`: candidates for its book; the
    /// next regular announce is scheduled.
    pub(crate) fn answer(&mut self, i: u32, peers: &[u32]) {
        if self.world.life[i as usize] != Life::Alive {
            return;
        }
        let now = Time::from_micros(self.now);
        let addrs: Vec<SocketAddr> = peers.iter().map(|&j| addr(j)).collect();
        let complete = self.node(i).swarm.is_complete();
        let Some(b) = self.node_mut(i).book.as_mut() else {
            return;
        };
        b.book.add_addrs(now, &addrs);
        b.announce_seq += 1;
        let seq = b.announce_seq;
        self.at(i).0.dial_due(i);
        // The interval the tracker gives, and at most the announcer's
        // leech interval while incomplete.
        let every = match &self.tracker {
            Some(Trackers::Replicated(r)) if complete => r.interval_us,
            Some(Trackers::Replicated(r)) => r.interval_us.min(LEECH_ANNOUNCE_US),
            _ if complete => SEED_ANNOUNCE_US,
            _ => LEECH_ANNOUNCE_US,
        };
        self.send_announce(self.now + every, i, Event::None, seq, 0);
    }

    /// Node `i`'s dial of node `j` (book entry `target`) arrives.
    pub(crate) fn dial(&mut self, i: u32, j: u32, target: Target) {
        if self.world.life[i as usize] != Life::Alive {
            return;
        }
        let now = Time::from_micros(self.now);
        self.dials.0 += 1;
        let reachable = (j as usize) < self.world.specs.len()
            && j != i
            && self.world.life[j as usize] == Life::Alive
            && self.world.specs[j as usize].join_us <= self.now
            && !self.world.cut(self.now, i, j);
        let (id, at) = (node_id(j), addr(j));
        let banned = self.node(i).banned.contains(&j)
            || self
                .node(i)
                .book
                .as_ref()
                .is_some_and(|b| b.book.is_banned(&id));
        let refusal = if !reachable {
            None
        } else if let Some(why) = Refusal::of_identified(banned, self.connected(i, j)) {
            Some(why)
        } else if !self
            .node(j)
            .book
            .as_ref()
            .is_none_or(|b| b.book.accepts_inbound(0))
        {
            // Busy: the handshake fails, and the book backs off.
            None
        } else {
            let named = self
                .node_mut(i)
                .book
                .as_mut()
                .map(|b| b.book.dial_identified(now, target, id, at));
            let link = self.link(i, j);
            let not_up = match self.connect_from(link, i) {
                Ok(()) => return,
                Err(e) => e,
            };
            self.dials.1 += 1;
            if let (Some(named), Some(b)) = (named, self.node_mut(i).book.as_mut()) {
                match not_up {
                    // Our own swarm refused the node, as the actor's
                    // `register` would.
                    NotUp::Dialer(e) => {
                        b.book
                            .dial_refused(now, named, id, at, Refusal::of_swarm(&e))
                    }
                    // The far end refused it in its swarm (a ban), or a
                    // half of an old connection is still up.
                    NotUp::Far | NotUp::Unreachable => b.book.dial_failed(now, named, &mut b.rng),
                }
            }
            return;
        };
        self.dials.1 += 1;
        let Some(b) = self.node_mut(i).book.as_mut() else {
            return;
        };
        match refusal {
            None => b.book.dial_failed(now, target, &mut b.rng),
            Some(why) => b.book.dial_refused(now, target, id, at, why),
        }
    }

    /// Both ends of a new connection on `link` tell their books and send
    /// their first `Peers`.
    pub(crate) fn discovery_connected(&mut self, link: u32) {
        let now_us = self.now;
        let now = Time::from_micros(now_us);
        let cfg = PexConfig::default();
        for c in [2 * link, 2 * link + 1] {
            let (n, peer) = {
                let h = &self.world.halves[c as usize];
                (h.node, h.peer)
            };
            let (part, world) = self.at(n);
            part.pex[c as usize] = Some((PexSchedule::new(now), PexGate::new(now, &cfg)));
            if let Some(b) = part.node(n).book.as_mut() {
                b.book.connected_to(now, node_id(peer));
            }
            part.send_pex(world, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_node_and_nothing_else() {
        for i in [0, 1, 255, 256, 65_535, 65_536, (MAX_NODES - 1) as u32] {
            assert_eq!(index_of(addr(i)), Some(i));
            assert_ne!(node_id(i), node_id(i + 1));
        }
        let other = SocketAddr::from(([198, 20, 0, 1], 4443));
        assert_eq!(index_of(other), None);
        let port = SocketAddr::from(([198, 18, 0, 1], 80));
        assert_eq!(index_of(port), None);
    }

    #[test]
    fn the_tracker_answers_by_its_own_rules() {
        let mut t = Tracker::new(1);
        let f = 1 << 30;
        assert!(t.announce(0, 0, Event::Started, 0, 1).is_empty());
        for i in 1..100 {
            let got = t.announce(1000, i, Event::Started, f, u64::from(i));
            assert!(got.len() <= NUMWANT && !got.contains(&i));
        }
        let got = t.announce(2000, 100, Event::Started, f, 7);
        assert_eq!(got.len(), NUMWANT);
        // A seeder hears of leechers only; a goodbye takes a node off.
        let got = t.announce(3000, 0, Event::None, 0, 8);
        assert_eq!(got.len(), NUMWANT);
        assert!(!got.contains(&0));
        for i in 1..100 {
            assert!(t.announce(4000, i, Event::Stopped, f, 9).is_empty());
        }
        assert_eq!(t.announce(5000, 0, Event::None, 0, 10), vec![100]);
        assert_eq!(t.announce(5000, 100, Event::None, f, 11), vec![0]);
    }
}
