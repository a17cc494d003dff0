//! The bandwidth model: served blocks as fluid flows sharing access links.
//!
//! Each connection half sends its served blocks one after the other; the
//! block at the head is the half's one active flow. A node's uplink is
//! water-filled (max-min fair) over its active flows, each flow capped by
//! its receiver's *share* and by its path's loss ceiling. A sender's
//! uplink is recomputed when one of its flows starts or ends.
//!
//! A receiver's share is its downlink water-filled over the flows into
//! it as of the last window's end: a flow that something else holds
//! below the share (its sender's uplink, its path, a link between
//! regions) keeps its rate, and the others split the rest. So a 100
//! Mbit/s node fed by two fast peers and one slow one fills its downlink,
//! where an equal split left the slow peer's unused third idle (at 5,000
//! nodes in `heterogeneous`, one such node took 93% of its downlink for
//! 28 s: `benches/RESULTS.md`, "Stop 18"). It is recomputed at a window's
//! end (at most one latency later, as a congestion signal would) for a
//! receiver whose flow count changed, or one of whose flows' rate crossed
//! its share or, while the share holds some flow, moved under it
//! (`InLink::binding`); then `Sim::settle` recomputes every uplink
//! feeding it whose flow the new share caps (or the old one capped). Each
//! changed flow's completion is rescheduled (the old event goes stale).
//! With `inter_region_mbps` a flow between regions is also capped by an
//! equal share of the link it crosses, propagated the same way but
//! counted once per round trip across the link.
//!
//! Water-filling gives every flow its cap below the fair level and every
//! other flow the *same* level value, so an uplink's rates are a function
//! of the set of caps alone. That is what makes skipping exact: a flow
//! below its old cap and not above its new one sits at the level both
//! times, so its sender's allocation cannot change (at thousands of nodes
//! the skipped recomputations were a tenth of the run, each a few cache
//! misses on other nodes' flows).
//!
//! Invariants:
//! - A live flow is in its sender's `out_flows` and its half's `flow`; at
//!   every window's end, also its half is in the receiver's `in_flows`.
//!   A freed flow is in none.
//! - At every window's end `World::inlinks[j].count == in_flows.len()` of
//!   node `j` (a link's count: see `regions.rs`). Water-filling reads the
//!   packed shares (and the flow's own copy of
//!   its ends and ceiling) instead of the receiver's `Node` and the
//!   connection, which at thousands of nodes are cache misses.
//! - `remaining` is exact as of `last`; the pending completion event for
//!   a flow carries its current `version`, every other one is stale.

use std::sync::Arc;

use shoal_proto::swarm::{BlockRef, PeerKey, Time};

use crate::net::{Ev, Sim, World};
use crate::part::{Delta, Part};

/// The transport's segment size, for the loss ceiling.
const MSS: f64 = 1200.0;

/// One block in flight on a connection half.
#[derive(Debug)]
pub(crate) struct Flow {
    /// The sender's half.
    conn: u32,
    /// Sender and receiver nodes, and the path's ceiling (copies of the
    /// half's, so that resharing reads flows only, not connections).
    from: u32,
    pub(crate) to: u32,
    cap: f64,
    block: BlockRef,
    corrupt: bool,
    /// Bytes of `block` still to send as of `last`.
    remaining: f64,
    /// Bytes per second.
    pub(crate) rate: f64,
    last: u64,
    version: u32,
    pub(crate) live: bool,
}

/// The throughput ceiling of a path with loss (Mathis et al.:
/// `1.22 · MSS / (RTT · √p)`), unbounded without loss.
pub(crate) fn path_cap(world: &World, a: u32, b: u32) -> f64 {
    let p = world.path_loss(a, b);
    if p <= 0.0 {
        return f64::INFINITY;
    }
    let rtt = (2 * world.lat(a, b)).max(1) as f64 / 1e6;
    1.22 * MSS / (rtt * p.sqrt())
}

/// A node's downlink as its senders see it during a window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InLink {
    /// Download capacity, bytes/s.
    down: f64,
    /// What any one flow into it may take (unbounded without flows).
    share: f64,
    /// Flows into it as of the last window's end.
    pub(crate) count: u32,
    /// Whether the share held some flow at the last window's end: then a
    /// flow under it that speeds up or slows down changes what the
    /// others may take.
    binding: bool,
}

impl InLink {
    pub(crate) fn new(down: f64) -> InLink {
        InLink {
            down,
            share: f64::INFINITY,
            count: 0,
            binding: false,
        }
    }
}

/// What one flow into node `j` may take as of the last window's end.
pub(crate) fn share(world: &World, j: u32) -> f64 {
    world.inlinks[j as usize].share
}

/// The level at which `down` water-fills flows wanting `wants` (sorted
/// here), and whether any flow is held to it; with every want granted,
/// the most one flow could take while the others keep theirs.
fn downlink_level(down: f64, wants: &mut [f64]) -> (f64, bool) {
    wants.sort_by(f64::total_cmp);
    let (mut left, n) = (down, wants.len());
    for (k, &w) in wants.iter().enumerate() {
        let fair = left.max(0.0) / (n - k) as f64;
        if w >= fair {
            return (fair, true);
        }
        left -= w;
    }
    let most = wants.last().copied().unwrap_or(0.0);
    (left.max(0.0) + most, false)
}

impl Part {
    /// Our half `c` serves `block` to the other end: queue it, or start a
    /// flow. Dropped if our half is down, the other end is gone or the
    /// path is cut (the data would go nowhere); a half the other end has
    /// closed, without our knowing yet, still gets it, and drops it.
    pub(crate) fn serve(&mut self, world: &World, c: u32, block: BlockRef) {
        let (node, peer) = (self.conns[c as usize].node, self.conns[c as usize].peer);
        if !self.conns[c as usize].up
            || world.life[peer as usize] != crate::net::Life::Alive
            || world.cut(self.now, node, peer)
        {
            return;
        }
        let conn = &mut self.conns[c as usize];
        if conn.flow.is_some() {
            conn.queue.push_back(block);
            return;
        }
        let f = Flow {
            conn: c,
            from: node,
            to: peer,
            cap: world.halves[c as usize].cap,
            block,
            corrupt: self.node(node).spec.corrupt,
            remaining: f64::from(block.len),
            rate: 0.0,
            last: self.now,
            version: 0,
            live: true,
        };
        let id = if let Some(id) = self.free_flows.pop() {
            // Completion events of the slot's last flow may still be
            // queued (stale ones from before a rate change, or the one
            // pending when it was closed): go on from its version, so
            // that none of them can pass for this flow's.
            let version = self.flows[id as usize].version.wrapping_add(1);
            self.flows[id as usize] = Flow { version, ..f };
            id
        } else {
            self.flows.push(f);
            (self.flows.len() - 1) as u32
        };
        self.conns[c as usize].flow = Some(id);
        self.node(node).out_flows.push(id);
        self.deltas.push(Delta {
            to: peer,
            half: c,
            start: true,
        });
        self.recompute_uplink(world, node);
    }

    /// Frees flow `f` (its half's `flow` is already cleared) and
    /// recomputes its sender's uplink.
    pub(crate) fn end_flow(&mut self, world: &World, f: u32) {
        let (i, j, c) = {
            let fl = &mut self.flows[f as usize];
            fl.live = false;
            (fl.from, fl.to, fl.conn)
        };
        self.node(i).out_flows.retain(|&x| x != f);
        self.deltas.push(Delta {
            to: j,
            half: c,
            start: false,
        });
        self.free_flows.push(f);
        self.recompute_uplink(world, i);
    }

    /// Water-fills node `u`'s upload capacity over its flows, each capped
    /// by its receiver's share and by its path's ceiling, and notes the
    /// receivers whose share a changed rate may move.
    pub(crate) fn recompute_uplink(&mut self, world: &World, u: u32) {
        let mut caps = std::mem::take(&mut self.scratch_caps);
        self.uplink_caps(world, u, &mut caps);
        let up = world.specs[u as usize].up;
        water_fill(up, &mut caps);
        for &(rate, f) in &caps {
            let fl = &self.flows[f as usize];
            if fl.rate != rate {
                let l = &world.inlinks[fl.to as usize];
                // Only these can move what the receiver's other flows
                // may take (see the module comment).
                if (fl.rate >= l.share) != (rate >= l.share) || (l.binding && rate < l.share) {
                    self.reshare.push(fl.to);
                }
            }
            self.set_rate(f, rate);
        }
        self.scratch_caps = caps;
    }

    /// `(cap, flow)` for each of `u`'s flows.
    fn uplink_caps(&mut self, world: &World, u: u32, caps: &mut Vec<(f64, u32)>) {
        caps.clear();
        let i = (u - self.base) as usize;
        for &f in &self.nodes[i].out_flows {
            let fl = &self.flows[f as usize];
            let mut cap = share(world, fl.to).min(fl.cap);
            if let Some(l) = world.regions.link(fl.from, fl.to) {
                cap = cap.min(world.regions.share(l));
            }
            caps.push((cap, f));
        }
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
        self.reschedule(f);
    }

    /// Invalidates flow `f`'s pending completion event and, if it moves at
    /// all, schedules the one its remaining bytes and rate now give.
    fn reschedule(&mut self, f: u32) {
        let fl = &mut self.flows[f as usize];
        fl.version = fl.version.wrapping_add(1);
        if fl.rate > 0.0 {
            let (version, at) = (fl.version, self.now + eta(fl.remaining, fl.rate));
            let (from, conn) = (fl.from, fl.conn);
            self.push(
                at,
                Ev::FlowDone {
                    flow: f,
                    version,
                    from,
                    conn,
                },
            );
        }
    }

    /// A flow's completion event fired; false if it was stale. The block
    /// has left: the sender learns it now, the receiver one latency later,
    /// and the half's next queued block (if any) takes over the flow.
    pub(crate) fn flow_done(&mut self, world: &World, f: u32, version: u32) -> bool {
        let fl = &self.flows[f as usize];
        if !fl.live || fl.version != version {
            return false;
        }
        // Only the block's own completion gets here: its bytes at its rate
        // fill the time since `last` (`eta` rounds up to the µs).
        debug_assert!(
            fl.remaining - fl.rate * (self.now - fl.last) as f64 / 1e6 < 1.0,
            "flow {f} done at {} with {} of {} bytes unsent",
            self.now,
            fl.remaining - fl.rate * (self.now - fl.last) as f64 / 1e6,
            fl.block.len
        );
        let (c, block, corrupt) = (fl.conn, fl.block, fl.corrupt);
        let h = &self.conns[c as usize];
        let (i, peer, lat) = (h.node, h.peer, u64::from(h.lat));
        let now = Time::from_micros(self.now);
        self.node(i)
            .swarm
            .handle_bytes_sent(now, PeerKey(u64::from(c)), u64::from(block.len));
        if world.regions.crosses(i, peer) {
            self.crossed += u64::from(block.len);
        }
        let ev = Ev::BlockIn {
            conn: c ^ 1,
            to: peer,
            block,
            corrupt,
        };
        self.route(world, self.now + lat, peer, ev);
        if let Some(b) = self.conns[c as usize].queue.pop_front() {
            let now = self.now;
            let fl = &mut self.flows[f as usize];
            fl.block = b;
            fl.remaining = f64::from(b.len);
            fl.last = now;
            self.reschedule(f);
        } else {
            self.conns[c as usize].flow = None;
            self.end_flow(world, f);
        }
        self.drain(i, world);
        true
    }
}

impl Sim {
    /// At a window's end: applies the flows that started and ended in it
    /// to their receivers' counts, and recomputes every uplink with a flow
    /// into a receiver whose share changed, if that share capped the flow
    /// before or caps it now (the others cannot change: water-filling
    /// gives every uncapped flow the same level value, so an uplink's
    /// rates depend only on its set of caps).
    pub(crate) fn settle(&mut self) {
        self.settles += 1;
        let mark = self.settles;
        let mut dirty: Vec<u32> = Vec::new();
        for p in 0..self.parts.len() {
            let deltas = std::mem::take(&mut self.parts[p].deltas);
            for d in &deltas {
                let j = d.to;
                self.mark_dirty(j, mark, &mut dirty);
                let count = apply(&mut self.node_mut(j).in_flows, d);
                let n = &mut self.world_mut().inlinks[j as usize].count;
                *n = n.wrapping_add_signed(count);
                let from = self.world.halves[d.half as usize].node;
                if let Some(l) = self.world.regions.link(from, j) {
                    self.link_tallies.note(l, d);
                }
            }
            // Give the buffers back: they keep their capacity.
            let mut deltas = deltas;
            deltas.clear();
            self.parts[p].deltas = deltas;
            let mut reshare = std::mem::take(&mut self.parts[p].reshare);
            for &j in &reshare {
                self.mark_dirty(j, mark, &mut dirty);
            }
            reshare.clear();
            self.parts[p].reshare = reshare;
        }
        let mut wants = Vec::new();
        for &j in &dirty {
            let (level, binding) = self.downlink_share(j, &mut wants);
            let l = &mut self.world_mut().inlinks[j as usize];
            l.share = level;
            l.binding = binding;
        }
        // Links learn their counts once per round trip (`regions.rs`).
        let world = Arc::get_mut(&mut self.world).expect("a part still holds the world");
        let dirty_links = self.link_tallies.update(self.now, mark, &mut world.regions);
        let mut ups: Vec<u32> = Vec::new();
        for &j in &dirty {
            if share(&self.world, j) == self.old_share[j as usize] {
                continue;
            }
            for &c in &self.node(j).in_flows {
                self.check_flow(c, mark, &mut ups);
            }
        }
        for &l in &dirty_links {
            let regions = &self.world.regions;
            if regions.share(l) == self.link_tallies.old_share(l, mark, regions) {
                continue;
            }
            for &c in self.link_tallies.flows(l) {
                self.check_flow(c, mark, &mut ups);
            }
        }
        ups.sort_unstable();
        ups.dedup();
        for u in ups {
            let (part, world) = self.at(u);
            part.recompute_uplink(world, u);
        }
    }

    /// Notes receiver `j`'s share before this settle, once per settle.
    fn mark_dirty(&mut self, j: u32, mark: u64, dirty: &mut Vec<u32>) {
        if self.dirty_mark[j as usize] != mark {
            self.dirty_mark[j as usize] = mark;
            self.old_share[j as usize] = share(&self.world, j);
            dirty.push(j);
        }
    }

    /// Receiver `j`'s new share and whether it holds a flow: its downlink
    /// water-filled over its flows, each wanting its rate if that is under
    /// the old share (something else holds it there), or anything if not.
    fn downlink_share(&self, j: u32, wants: &mut Vec<f64>) -> (f64, bool) {
        let old = self.old_share[j as usize];
        wants.clear();
        for &c in &self.node(j).in_flows {
            let h = &self.world.halves[c as usize];
            let part = &self.parts[self.world.part_of(h.node)];
            let rate = part.conns[c as usize]
                .flow
                .map_or(0.0, |f| part.flows[f as usize].rate);
            wants.push(if rate < old { rate } else { f64::INFINITY });
        }
        if wants.is_empty() {
            return (f64::INFINITY, false);
        }
        downlink_level(self.world.inlinks[j as usize].down, wants)
    }

    /// Queues the sender of half `c`'s flow in `ups` if this settle's new
    /// receiver or link share can change its rate: it was held to the old
    /// ceiling, or is above the new one.
    fn check_flow(&self, c: u32, mark: u64, ups: &mut Vec<u32>) {
        let h = &self.world.halves[c as usize];
        let part = &self.parts[self.world.part_of(h.node)];
        let Some(f) = part.conns[c as usize].flow else {
            return;
        };
        let fl = &part.flows[f as usize];
        let j = fl.to as usize;
        let new_r = share(&self.world, fl.to);
        let old_r = if self.dirty_mark[j] == mark {
            self.old_share[j]
        } else {
            new_r
        };
        let (mut old, mut new) = (old_r.min(fl.cap), new_r.min(fl.cap));
        let regions = &self.world.regions;
        if let Some(l) = regions.link(fl.from, fl.to) {
            let new_l = regions.share(l);
            let old_l = self.link_tallies.old_share(l, mark, regions);
            old = old.min(old_l);
            new = new.min(new_l);
        }
        if fl.rate >= old || fl.rate > new {
            ups.push(h.node);
        }
    }
}

/// Applies a flow start or end to a list of sender halves; the change in
/// its length.
pub(crate) fn apply(list: &mut Vec<u32>, d: &Delta) -> i32 {
    if d.start {
        list.push(d.half);
        1
    } else if let Some(pos) = list.iter().position(|&h| h == d.half) {
        list.swap_remove(pos);
        -1
    } else {
        0
    }
}

/// Max-min fair shares of `up` over flows with ceilings: sorts `caps`
/// (`(cap, flow)`) and replaces each cap with the flow's rate. Caps below
/// the fair level are granted; from the first that is not, every flow
/// gets that one level value, so the rates depend on the set of caps
/// alone, not on the order of equal caps or on rounding along the way.
fn water_fill(up: f64, caps: &mut [(f64, u32)]) {
    caps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut left, n) = (up, caps.len());
    let mut level: Option<f64> = None;
    for (k, c) in caps.iter_mut().enumerate() {
        let l = match level {
            Some(l) => l,
            None => left.max(0.0) / (n - k) as f64,
        };
        if level.is_none() && c.0 < l {
            left -= c.0;
        } else {
            level = Some(l);
            c.0 = l;
        }
    }
}

/// µs to send `remaining` bytes at `rate` (> 0) bytes/s.
fn eta(remaining: f64, rate: f64) -> u64 {
    (remaining * 1e6 / rate).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use crate::setup::Setup;

    impl Sim {
        /// Flows whose rate differs from water-filling their sender's
        /// uplink from scratch.
        fn misallocated(&mut self) -> usize {
            let mut caps = Vec::new();
            let mut bad = 0;
            for u in 0..self.world.specs.len() as u32 {
                let (part, world) = self.at(u);
                part.uplink_caps(world, u, &mut caps);
                water_fill(world.specs[u as usize].up, &mut caps);
                bad += caps
                    .iter()
                    .filter(|&&(rate, f)| part.flows[f as usize].rate != rate)
                    .count();
            }
            bad
        }
    }

    #[test]
    fn a_downlink_gives_what_held_flows_leave_to_the_others() {
        let inf = f64::INFINITY;
        // One flow held at 3.5 by its sender: the other two split 9.
        assert_eq!(downlink_level(12.5, &mut [inf, 3.5, inf]), (4.5, true));
        // Two new flows that both want more than half: an equal split.
        assert_eq!(downlink_level(12.5, &mut [60.0, 50.0]), (6.25, true));
        // A flow held above the level others reach is held to it too.
        assert_eq!(downlink_level(12.0, &mut [1.0, 9.0, inf]), (5.5, true));
        // Nothing held: the most one flow could take, the others keeping
        // theirs.
        assert_eq!(downlink_level(12.5, &mut [2.0, 1.0]), (11.5, false));
    }

    #[test]
    fn water_fill_grants_small_caps_and_levels_the_rest() {
        let mut caps = [(50.0, 0), (f64::INFINITY, 1), (10.0, 2), (400.0, 3)];
        water_fill(300.0, &mut caps);
        // 10 and 50 fit under the fair level; the other two split 240.
        assert_eq!(caps, [(10.0, 2), (50.0, 0), (120.0, 3), (120.0, 1)]);
        let mut none: [(f64, u32); 0] = [];
        water_fill(300.0, &mut none);
    }

    /// Runs shipped scenario `file`, edited by `edit`, to the end,
    /// checking after every window that every uplink is exactly what a
    /// full recomputation gives; returns the windows and how many times a
    /// live flow sat exactly at `held(sim, flow)`.
    fn run_water_filled(
        file: &str,
        edit: impl Fn(String) -> String,
        held: impl Fn(&Sim, &Flow) -> bool,
    ) -> (u64, usize) {
        let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = edit(std::fs::read_to_string(path).unwrap());
        let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
        let mut sim = Sim::new(&setup);
        let (mut windows, mut capped) = (0, 0);
        while sim.advance() {
            windows += 1;
            assert_eq!(sim.misallocated(), 0, "after window {windows}");
            for p in &sim.parts {
                capped += p.flows.iter().filter(|f| f.live && held(&sim, f)).count();
            }
        }
        assert_eq!(sim.waiting, 0, "the run finished");
        (windows, capped)
    }

    /// `settle` recomputes only the uplinks a receiver's new share can
    /// change; after every window of a run where downlinks bind (10 Gbit/s
    /// senders into 100 Mbit/s receivers) every uplink must still be
    /// exactly what a full recomputation gives.
    #[test]
    fn skipped_uplinks_stay_water_filled() {
        let (windows, capped) = run_water_filled(
            "heterogeneous.toml",
            |t| {
                t.replace("nodes = 90", "nodes = 30")
                    .replace("file_mib = 512", "file_mib = 24")
            },
            |sim, f| f.rate == share(&sim.world, f.to),
        );
        assert!(windows > 1_000, "{windows} windows");
        assert!(capped > 0, "some flow was held to its receiver's share");
    }

    /// The same with an inter-region link that binds: `settle` also
    /// recomputes the uplinks a link's new share can change, and only
    /// those may be skipped.
    #[test]
    fn uplinks_behind_a_shared_link_stay_water_filled() {
        let (_, capped) = run_water_filled(
            "two-regions.toml",
            |t| {
                t.replace("nodes = 200", "nodes = 40")
                    .replace("file_mib = 1024", "file_mib = 16")
                    .replace("inter_region_loss = 0.001", "inter_region_mbps = 400")
            },
            |sim, f| {
                let regions = &sim.world.regions;
                regions
                    .link(f.from, f.to)
                    .is_some_and(|l| f.rate == regions.share(l))
            },
        );
        assert!(capped > 0, "no flow was held to the link's share");
    }
}
