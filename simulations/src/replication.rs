//! Tracker replicas running proto's peer-table CRDT
//! ([`shoal_proto::tracker::table::PeerTable`]) over the simulated network.
//!
//! The swarm run's node lives (join, completion, graceful leave or crash)
//! become announces: `started` at join, `completed` at completion,
//! `stopped` at a graceful leave and a plain announce every
//! `announce_interval` while alive, until the swarm run ended. A node
//! announces to the first live replica of its own region, else to the
//! first live one it can reach. The replica applies it
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

use shoal_proto::tracker::table::{diff_buckets, Delta, Digest, PeerTable, TableConfig};
use shoal_proto::tracker::{AnnounceRequest, Clock, Event};
use shoal_proto::InfoHash;

use crate::faults::Cut;
use crate::outcome::Outcome;
use crate::queue::Queue;
use crate::scenario::TrackerSpec;

/// How often agreement is checked, µs.
const CHECK_US: u64 = 10_000;

/// What the replicated tables did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    /// Announces applied.
    pub announces: u64,
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
    Announce {
        node: u32,
        event: Event,
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

struct Replica {
    region: usize,
    table: PeerTable,
    clock: Clock,
    alive: bool,
}

/// Runs scenario `s`'s tracker replicas, if it has a `[tracker]`
/// section, for the lives in `out`, the run of `setup` (the setup it was
/// made from, so the graph is not built twice).
pub fn run_for(
    s: &crate::scenario::Scenario,
    setup: &crate::setup::Setup,
    out: &Outcome,
) -> Option<Replication> {
    let spec = s.tracker.as_ref()?;
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

/// Runs the replicas for the lives in `out`.
pub fn run(
    spec: &TrackerSpec,
    out: &Outcome,
    regions_of_nodes: &[usize],
    latency_us: &[Vec<u64>],
    cuts: &[Cut],
    seed: u64,
) -> Replication {
    let interval_us = (spec.announce_interval_secs * 1e6) as u64;
    let ae_us = (spec.anti_entropy_secs * 1e6) as u64;
    let mut cfg = TableConfig::for_interval(interval_us / 1000);
    cfg.hash_seed = seed;
    let mut reps: Vec<Replica> = spec
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
    let mut q: Queue<Ev> = Queue::default();
    let end = out.end_us;
    let mut settle = 0u64;
    for n in &out.nodes {
        let mut t = n.join_us;
        q.push(
            t,
            Ev::Announce {
                node: n.node,
                event: Event::Started,
            },
        );
        let until = n.left_us.unwrap_or(end).min(end);
        while t + interval_us < until {
            t += interval_us;
            q.push(
                t,
                Ev::Announce {
                    node: n.node,
                    event: Event::None,
                },
            );
        }
        if let Some(c) = n.completed_us {
            q.push(
                c,
                Ev::Announce {
                    node: n.node,
                    event: Event::Completed,
                },
            );
            settle = settle.max(c);
        }
        if let (Some(l), false) = (n.left_us, n.crashed) {
            q.push(
                l,
                Ev::Announce {
                    node: n.node,
                    event: Event::Stopped,
                },
            );
            settle = settle.max(l);
        }
        settle = settle.max(t);
    }
    for d in &spec.die {
        q.push((d.at_secs * 1e6) as u64, Ev::Die { replica: d.replica });
    }
    for c in cuts {
        settle = settle.max(c.heal_us);
    }
    for from in 0..reps.len() {
        // Staggered so replicas do not all start rounds at once.
        q.push(
            ae_us * (from as u64 + 1) / reps.len() as u64,
            Ev::AeStart { from },
        );
    }
    let horizon = settle + 100 * ae_us.max(1);
    let mut r = Replication {
        announces: 0,
        messages: 0,
        lost: 0,
        converged_us: None,
        settle_from_us: settle,
        after_heal_us: vec![None; cuts.len()],
        live: 0,
    };
    q.push(settle, Ev::Check { heal: None });
    for (k, c) in cuts.iter().enumerate() {
        q.push(c.heal_us, Ev::Check { heal: Some(k) });
    }
    let info_hash = InfoHash([0x5e; 20]);
    let mut completed_at = vec![None; regions_of_nodes.len()];
    for n in &out.nodes {
        completed_at[n.node as usize] = n.completed_us;
    }
    let total = out.file_bytes;
    let cut_at = |now: u64, a: usize, b: usize| {
        cuts.iter()
            .any(|c| now >= c.at_us && now < c.heal_us && c.side[a] != c.side[b])
    };
    while let Some((now, ev)) = q.pop() {
        if now > horizon {
            break;
        }
        let now_ms = now / 1000;
        let send = |q: &mut Queue<Ev>,
                    r: &mut Replication,
                    reps: &[Replica],
                    from: usize,
                    to: usize,
                    ev: Ev| {
            r.messages += 1;
            let (ra, rb): (usize, usize) = (reps[from].region, reps[to].region);
            if !reps[to].alive || cut_at(now, ra, rb) {
                r.lost += 1;
                return;
            }
            q.push(now + latency_us[ra][rb], ev);
        };
        match ev {
            Ev::Announce { node, event } => {
                let region = regions_of_nodes[node as usize];
                let target = (0..reps.len())
                    .filter(|&k| reps[k].alive && !cut_at(now, region, reps[k].region))
                    .min_by_key(|&k| (reps[k].region != region, k));
                let Some(k) = target else { continue };
                let done = completed_at[node as usize].is_some_and(|c| c <= now);
                let req = announce_request(info_hash, node, event, if done { 0 } else { total });
                let addr =
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 | node), 6881));
                let rep = &mut reps[k];
                let Ok(delta) = rep.table.apply_announce(now_ms, &mut rep.clock, &req, addr) else {
                    continue;
                };
                r.announces += 1;
                for to in 0..reps.len() {
                    if to != k {
                        send(
                            &mut q,
                            &mut r,
                            &reps,
                            k,
                            to,
                            Ev::Delta {
                                to,
                                delta: delta.clone(),
                            },
                        );
                    }
                }
            }
            Ev::Delta { to, delta } => merge(&mut reps[to], &delta, now_ms),
            Ev::AeStart { from } => {
                if !reps[from].alive {
                    continue;
                }
                q.push(now + ae_us, Ev::AeStart { from });
                let n = reps.len();
                if n < 2 {
                    continue;
                }
                // The next replica in ring order after `from`, shifting by
                // the round so every pair meets.
                let round = (now / ae_us.max(1)) as usize;
                let to = (from + 1 + round % (n - 1)) % n;
                let digest = reps[from].table.digest();
                send(
                    &mut q,
                    &mut r,
                    &reps,
                    from,
                    to,
                    Ev::AeDigest { from, to, digest },
                );
            }
            Ev::AeDigest { from, to, digest } => {
                let buckets = diff_buckets(&reps[to].table.digest(), &digest);
                if buckets.is_empty() {
                    continue;
                }
                let delta = reps[to].table.entries_in_buckets(&buckets);
                let ev = Ev::AeEntries {
                    from: to,
                    to: from,
                    buckets,
                    delta,
                    reply: true,
                };
                send(&mut q, &mut r, &reps, to, from, ev);
            }
            Ev::AeEntries {
                from,
                to,
                buckets,
                delta,
                reply,
            } => {
                merge(&mut reps[to], &delta, now_ms);
                if reply {
                    let delta = reps[to].table.entries_in_buckets(&buckets);
                    let ev = Ev::AeEntries {
                        from: to,
                        to: from,
                        buckets,
                        delta,
                        reply: false,
                    };
                    send(&mut q, &mut r, &reps, to, from, ev);
                }
            }
            Ev::Die { replica } => reps[replica].alive = false,
            Ev::Check { heal } => {
                let mut live = reps.iter().filter(|x| x.alive).map(|x| x.table.digest());
                let first = live.next();
                if !first.is_some_and(|d| live.all(|e| e == d)) {
                    q.push(now + CHECK_US, Ev::Check { heal });
                    continue;
                }
                match heal {
                    Some(k) => r.after_heal_us[k] = Some(now - cuts[k].heal_us),
                    None => {
                        r.converged_us = Some(now);
                        break;
                    }
                }
            }
        }
    }
    r.live = reps.iter().filter(|x| x.alive).count();
    r
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
