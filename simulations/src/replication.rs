//! Tracker replicas running proto's peer-table CRDT
//! ([`shoal_proto::tracker::table::PeerTable`]) over the simulated network.
//!
//! The announces come from one of two places. With `discovery = "tracker"`
//! the swarm run's nodes make them as they go (`crate::discovery` calls
//! [`Replicas::apply`], and fails over as the daemon's announcer does). Otherwise [`run`] replays the swarm run's node lives
//! (join, completion, graceful leave or crash) as announces: `started` at
//! join, `completed` at completion, `stopped` at a graceful leave and a
//! plain announce every `announce_interval` while alive, until the swarm
//! run ended, each to the first live replica of the node's own region,
//! else to the first live one it can reach. The replica applies it
//! ([`PeerTable::apply_announce`]) and pushes the returned delta to every
//! other replica (one latency away; lost across a cut or to a dead
//! replica). Every `anti_entropy` each live replica starts a round with the
//! next replica in ring order: digest → differing buckets → the entries of
//! those buckets both ways ([`diff_buckets`], [`PeerTable::entries_in_buckets`]),
//! which repairs whatever a cut or a death lost.
//!
//! The report is the first time, after the last write and the last heal,
//! at which every live replica has the same digest — the time to converge.
//!
//! Invariants: events pop in (time, push order); replicas and hash seeds
//! are fixed by the scenario; no table is expired during a run (runs are
//! far shorter than the entry ttl), so digests compare what was written.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use shoal_proto::tracker::client::Tiers;
use shoal_proto::tracker::table::{diff_buckets, Delta, Digest, PeerTable, TableConfig};
use shoal_proto::tracker::{AnnounceRequest, Clock, Event};
use shoal_proto::InfoHash;

use crate::faults::Cut;
use crate::outcome::Outcome;
use crate::queue::Queue;
use crate::scenario::TrackerSpec;

/// How often agreement is checked, µs.
const CHECK_US: u64 = 10_000;
/// The torrent's name at the trackers.
pub(crate) const INFO_HASH: InfoHash = InfoHash([0x5e; 20]);

/// What the replicated tables did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// Announces applied.
    pub announces: u64,
    /// Of those, how many each replica applied.
    pub applied_by: Vec<u64>,
    /// Announce attempts that reached no replica (dead or cut off) when
    /// the swarm run's nodes announce to the replicas themselves.
    pub failed_attempts: u64,
    /// Deltas and anti-entropy messages sent between replicas.
    pub messages: u64,
    /// Messages lost to a cut or a dead replica.
    pub lost: u64,
    /// Since when every live replica holds the same table, µs; `None` if
    /// they never agreed after the last write and heal.
    pub converged_us: Option<u64>,
    /// The last write or heal, µs: convergence is measured from here.
    pub settle_from_us: u64,
    /// For each partition, how long after its heal the live replicas
    /// first held the same table, µs (`None`: not before the horizon).
    pub after_heal_us: Vec<Option<u64>>,
    /// Live replicas at the end.
    pub live: usize,
}

impl Replication {
    /// Seconds from the last write or heal to convergence.
    pub fn convergence_secs(&self) -> Option<f64> {
        self.converged_us
            .map(|t| t.saturating_sub(self.settle_from_us) as f64 / 1e6)
    }
}

#[derive(Debug)]
enum Ev {
    /// Node `node` of `region` announces `event` with `left` bytes to go
    /// (to the first replica it reaches).
    Announce {
        node: u32,
        region: usize,
        event: Event,
        left: u64,
    },
    Delta {
        to: usize,
        delta: Delta,
    },
    AeStart {
        from: usize,
    },
    /// `to` got `from`'s digest.
    AeDigest {
        from: usize,
        to: usize,
        digest: Digest,
    },
    /// `to` gets `from`'s entries for `buckets`, and answers with its own
    /// if `reply`.
    AeEntries {
        from: usize,
        to: usize,
        buckets: Vec<u8>,
        delta: Delta,
        reply: bool,
    },
    Die {
        replica: usize,
    },
    /// Do the live replicas agree? `heal`: measured for that partition's
    /// heal, else for the final settling.
    Check {
        heal: Option<usize>,
    },
}

#[derive(Debug)]
struct Replica {
    region: usize,
    table: PeerTable,
    clock: Clock,
    alive: bool,
}

/// Runs scenario `s`'s tracker replicas, if it has a `[tracker]`
/// section: the replicas the swarm run itself announced to when its nodes
/// found each other through them (`discovery = "tracker"`, see
/// [`crate::discovery`]), else a run for the lives in `out`, the run of
/// `setup` (the setup it was made from, so the graph is not built twice).
pub fn run_for(
    s: &crate::scenario::Scenario,
    setup: &crate::setup::Setup,
    out: &Outcome,
) -> Option<Replication> {
    let spec = s.tracker.as_ref()?;
    if let Some(r) = &out.replication {
        return Some(r.clone());
    }
    let regions: Vec<usize> = setup.nodes.iter().map(|n| n.region).collect();
    Some(run(
        spec,
        out,
        &regions,
        &setup.latency_us,
        &setup.plan.cuts,
        s.seed,
    ))
}

/// Runs the replicas for the lives in `out`: every node announces
/// `started` at join, `completed` at completion, `stopped` at a graceful
/// leave and a plain announce every `announce_interval` while alive,
/// until the swarm run ended.
pub fn run(
    spec: &TrackerSpec,
    out: &Outcome,
    regions_of_nodes: &[usize],
    latency_us: &[Vec<u64>],
    cuts: &[Cut],
    seed: u64,
) -> Replication {
    let mut reps = Replicas::new(spec, latency_us, cuts, seed);
    let interval_us = reps.interval_us;
    let end = out.end_us;
    let mut settle = 0u64;
    let total = out.file_bytes;
    for n in &out.nodes {
        let region = regions_of_nodes[n.node as usize];
        let left = |t: u64| {
            if n.completed_us.is_some_and(|c| c <= t) {
                0
            } else {
                total
            }
        };
        let announce = |reps: &mut Replicas, t: u64, event: Event| {
            let ev = Ev::Announce {
                node: n.node,
                region,
                event,
                left: left(t),
            };
            reps.q.push(t, ev);
        };
        let mut t = n.join_us;
        announce(&mut reps, t, Event::Started);
        let until = n.left_us.unwrap_or(end).min(end);
        while t + interval_us < until {
            t += interval_us;
            announce(&mut reps, t, Event::None);
        }
        if let Some(c) = n.completed_us {
            announce(&mut reps, c, Event::Completed);
            settle = settle.max(c);
        }
        if let (Some(l), false) = (n.left_us, n.crashed) {
            announce(&mut reps, l, Event::Stopped);
            settle = settle.max(l);
        }
        settle = settle.max(t);
    }
    reps.start();
    reps.finish(settle)
}

/// The replicas, their messages to each other and their deaths, on their
/// own queue: fed either a whole run's announces up front ([`run`]) or
/// each announce as the swarm run makes it ([`Replicas::apply`], with
/// [`Replicas::run_until`] first so that deaths, deltas and anti-entropy
/// before it have happened).
#[derive(Debug)]
pub(crate) struct Replicas {
    reps: Vec<Replica>,
    q: Queue<Ev>,
    r: Replication,
    latency_us: Vec<Vec<u64>>,
    cuts: Vec<Cut>,
    /// The announce interval the replicas tell nodes, µs.
    pub(crate) interval_us: u64,
    ae_us: u64,
    /// `(when, replica)`: deaths [`Replicas::start`] schedules.
    dies: Vec<(u64, usize)>,
    /// The last announce applied, µs.
    last_write: u64,
    /// Converged for good: the run stopped.
    over: bool,
    /// The heals' checks are queued.
    heals_checked: bool,
}

impl Replicas {
    /// The replicas `spec` places, every one alive with an empty table.
    pub(crate) fn new(
        spec: &TrackerSpec,
        latency_us: &[Vec<u64>],
        cuts: &[Cut],
        seed: u64,
    ) -> Replicas {
        let interval_us = (spec.announce_interval_secs * 1e6) as u64;
        let ae_us = (spec.anti_entropy_secs * 1e6) as u64;
        let mut cfg = TableConfig::for_interval(interval_us / 1000);
        cfg.hash_seed = seed;
        let reps = spec
            .replicas
            .iter()
            .enumerate()
            .map(|(k, &region)| Replica {
                region,
                table: PeerTable::new(cfg.clone()),
                clock: Clock::new(k as u64 + 1),
                alive: true,
            })
            .collect();
        Replicas {
            reps,
            q: Queue::default(),
            dies: spec
                .die
                .iter()
                .map(|d| ((d.at_secs * 1e6) as u64, d.replica))
                .collect(),
            r: Replication {
                announces: 0,
                applied_by: vec![0; spec.replicas.len()],
                failed_attempts: 0,
                messages: 0,
                lost: 0,
                converged_us: None,
                settle_from_us: 0,
                after_heal_us: vec![None; cuts.len()],
                live: 0,
            },
            latency_us: latency_us.to_vec(),
            cuts: cuts.to_vec(),
            interval_us,
            ae_us,
            last_write: 0,
            over: false,
            heals_checked: false,
        }
    }

    /// Schedules the deaths and starts every replica's anti-entropy
    /// rounds (after the announces [`run`] queues, which go first among
    /// events at the same moment).
    pub(crate) fn start(&mut self) {
        for (at, replica) in std::mem::take(&mut self.dies) {
            self.q.push(at, Ev::Die { replica });
        }
        let n = self.reps.len();
        for from in 0..n {
            // Staggered so replicas do not all start rounds at once.
            self.q.push(
                self.ae_us * (from as u64 + 1) / n as u64,
                Ev::AeStart { from },
            );
        }
    }

    /// Checks agreement from each heal on. A caller that feeds announces
    /// as they happen calls this at the start: the queue cannot take
    /// events in its past.
    pub(crate) fn check_heals(&mut self) {
        self.heals_checked = true;
        for (k, c) in self.cuts.iter().enumerate() {
            self.q.push(c.heal_us, Ev::Check { heal: Some(k) });
        }
    }

    /// Runs to the end: checks agreement from `settle` (the last write or
    /// heal known to the caller) and after each heal, until the replicas
    /// converge or a hundred anti-entropy periods pass.
    pub(crate) fn finish(mut self, settle: u64) -> Replication {
        let settle = self
            .cuts
            .iter()
            .map(|c| c.heal_us)
            .fold(settle.max(self.last_write), u64::max);
        self.r.settle_from_us = settle;
        self.q.push(settle, Ev::Check { heal: None });
        if !self.heals_checked {
            self.check_heals();
        }
        self.run_until(settle + 100 * self.ae_us.max(1) + 1);
        self.r.live = self.reps.iter().filter(|x| x.alive).count();
        self.r
    }

    /// Whether a message between regions `a` and `b` is cut at `now`.
    fn cut_at(&self, now: u64, a: usize, b: usize) -> bool {
        self.cuts
            .iter()
            .any(|c| now >= c.at_us && now < c.heal_us && c.side[a] != c.side[b])
    }

    /// The announce list of a node of `region`, as BEP 12 tiers: its own
    /// region's replicas, then the others (each by index). The daemon's
    /// announcer fails over along it and moves the replica that answers
    /// to the front of its tier ([`Tiers::answered`]).
    pub(crate) fn tiers(&self, region: usize) -> Tiers {
        let (own, other): (Vec<usize>, Vec<usize>) =
            (0..self.reps.len()).partition(|&k| self.reps[k].region == region);
        let urls = |ks: Vec<usize>| ks.into_iter().map(replica_url).collect();
        Tiers::new(vec![urls(own), urls(other)])
    }

    /// Replica `k`'s region.
    pub(crate) fn region(&self, k: usize) -> usize {
        self.reps[k].region
    }

    /// Whether replica `k` answers a node of `region` at `now`: `Ok` if
    /// it does, else whether the attempt is refused at once (a dead
    /// replica's host resets the connection) rather than timing out
    /// (a cut drops it).
    pub(crate) fn reachable(&self, now: u64, region: usize, k: usize) -> Result<(), bool> {
        if self.cut_at(now, region, self.reps[k].region) {
            Err(false)
        } else if !self.reps[k].alive {
            Err(true)
        } else {
            Ok(())
        }
    }

    /// Counts an announce attempt that failed.
    pub(crate) fn attempt_failed(&mut self) {
        self.r.failed_attempts += 1;
    }

    /// Replica `k` applies node `addr`'s announce `req` at `now` and
    /// sends the delta to every other replica; false if it refused it.
    pub(crate) fn apply(
        &mut self,
        now: u64,
        k: usize,
        req: &AnnounceRequest,
        addr: SocketAddr,
    ) -> bool {
        let rep = &mut self.reps[k];
        let Ok(delta) = rep
            .table
            .apply_announce(now / 1000, &mut rep.clock, req, addr)
        else {
            return false;
        };
        self.r.announces += 1;
        self.r.applied_by[k] += 1;
        self.last_write = now;
        for to in 0..self.reps.len() {
            if to != k {
                let ev = Ev::Delta {
                    to,
                    delta: delta.clone(),
                };
                self.send(now, k, to, ev);
            }
        }
        true
    }

    /// Replica `k`'s table.
    pub(crate) fn table(&self, k: usize) -> &PeerTable {
        &self.reps[k].table
    }

    fn send(&mut self, now: u64, from: usize, to: usize, ev: Ev) {
        self.r.messages += 1;
        let (ra, rb) = (self.reps[from].region, self.reps[to].region);
        if !self.reps[to].alive || self.cut_at(now, ra, rb) {
            self.r.lost += 1;
            return;
        }
        self.q.push(now + self.latency_us[ra][rb], ev);
    }

    /// Handles every event of the replicas before `end`.
    pub(crate) fn run_until(&mut self, end: u64) {
        while !self.over {
            let Some((now, ev)) = self.q.pop_before(end) else {
                return;
            };
            self.step(now, ev);
        }
    }

    fn step(&mut self, now: u64, ev: Ev) {
        let now_ms = now / 1000;
        match ev {
            Ev::Announce {
                node,
                region,
                event,
                left,
            } => {
                let target = (0..self.reps.len())
                    .filter(|&k| self.reachable(now, region, k).is_ok())
                    .min_by_key(|&k| (self.reps[k].region != region, k));
                let Some(k) = target else { return };
                let req = announce_request(INFO_HASH, node, event, left);
                let addr =
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 | node), 6881));
                self.apply(now, k, &req, addr);
            }
            Ev::Delta { to, delta } => merge(&mut self.reps[to], &delta, now_ms),
            Ev::AeStart { from } => {
                if !self.reps[from].alive {
                    return;
                }
                self.q.push(now + self.ae_us, Ev::AeStart { from });
                let n = self.reps.len();
                if n < 2 {
                    return;
                }
                // The next replica in ring order after `from`, shifting by
                // the round so every pair meets.
                let round = (now / self.ae_us.max(1)) as usize;
                let to = (from + 1 + round % (n - 1)) % n;
                let digest = self.reps[from].table.digest();
                self.send(now, from, to, Ev::AeDigest { from, to, digest });
            }
            Ev::AeDigest { from, to, digest } => {
                let buckets = diff_buckets(&self.reps[to].table.digest(), &digest);
                if buckets.is_empty() {
                    return;
                }
                let delta = self.reps[to].table.entries_in_buckets(&buckets);
                let ev = Ev::AeEntries {
                    from: to,
                    to: from,
                    buckets,
                    delta,
                    reply: true,
                };
                self.send(now, to, from, ev);
            }
            Ev::AeEntries {
                from,
                to,
                buckets,
                delta,
                reply,
            } => {
                merge(&mut self.reps[to], &delta, now_ms);
                if reply {
                    let delta = self.reps[to].table.entries_in_buckets(&buckets);
                    let ev = Ev::AeEntries {
                        from: to,
                        to: from,
                        buckets,
                        delta,
                        reply: false,
                    };
                    self.send(now, to, from, ev);
                }
            }
            Ev::Die { replica } => self.reps[replica].alive = false,
            Ev::Check { heal } => {
                let mut live = self
                    .reps
                    .iter()
                    .filter(|x| x.alive)
                    .map(|x| x.table.digest());
                let first = live.next();
                if !first.is_some_and(|d| live.all(|e| e == d)) {
                    self.q.push(now + CHECK_US, Ev::Check { heal });
                    return;
                }
                match heal {
                    Some(k) => self.r.after_heal_us[k] = Some(now - self.cuts[k].heal_us),
                    None => {
                        self.r.converged_us = Some(now);
                        self.over = true;
                    }
                }
            }
        }
    }
}

/// Replica `k`'s announce URL (a label: nothing is sent).
pub(crate) fn replica_url(k: usize) -> String {
    format!("http://replica-{k}.shoal.test/announce")
}

/// The replica an announce URL of [`replica_url`] names.
pub(crate) fn replica_of(url: &str) -> Option<usize> {
    url.strip_prefix("http://replica-")?
        .strip_suffix(".shoal.test/announce")?
        .parse()
        .ok()
}

fn merge(rep: &mut Replica, delta: &Delta, now_ms: u64) {
    if !rep.alive {
        return;
    }
    if let Some(s) = delta.max_stamp() {
        // A stamp too far ahead is refused by the merge as well.
        let _ = rep.clock.observe(s, now_ms);
    }
    rep.table.merge_delta(delta, now_ms);
}

/// Node `node`'s announce of `event` with `left` bytes to go, as the
/// simulated nodes send it (peer id from the node index, no numwant).
pub(crate) fn announce_request(
    info_hash: InfoHash,
    node: u32,
    event: Event,
    left: u64,
) -> AnnounceRequest {
    let mut peer_id = [b'-'; 20];
    peer_id[..4].copy_from_slice(&node.to_be_bytes());
    AnnounceRequest {
        info_hash,
        peer_id,
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        compact: true,
        no_peer_id: false,
        numwant: None,
        ip: None,
        key: None,
    }
}
