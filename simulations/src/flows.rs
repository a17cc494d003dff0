//! The bandwidth model: served blocks as fluid flows sharing access links.
//!
//! Each connection half sends its served blocks one after the other; the
//! block at the head is the half's one active flow. A node's uplink is
//! water-filled (max-min fair) over its active flows, each flow capped by
//! its receiver's *cap* for it and by its path's loss ceiling. A sender's
//! uplink is recomputed when one of its flows starts or ends.
//!
//! A receiver gives each flow into it a *cap*, from its downlink
//! water-filled over those flows as of the last window's end: a flow that
//! something else holds under its cap (its sender's uplink, its path, a
//! link between regions) keeps its rate plus some room (`HEADROOM`), and
//! the others split the rest. So a 100 Mbit/s node fed by two fast peers
//! and one slow one fills its downlink, where an equal split left the
//! slow peer's unused third idle (at 5,000 nodes in `heterogeneous`, one
//! such node took 93% of its downlink for 28 s: `benches/RESULTS.md`,
//! "Stop 18"). The caps add up to the downlink, with what the water-fill
//! leaves over split between the flows and the newcomers of the next
//! window (`InLink::entry`, shared by `Part::take_entry`), so flows that
//! speed up or start together within a window cannot over-fill it. (Stop 18's one shared level per receiver let
//! every flow under it rise to it at once; nodes of a symmetric swarm
//! then finished faster than their downlinks allow: "Stop 19".) The caps
//! are recomputed at a window's end (at most one latency later, as a
//! congestion signal would) for a receiver whose flow count changed, or
//! one of whose flows' rate crossed its cap or, while some flow is held
//! at its cap, moved under it (`InLink::held`); then `Sim::settle`
//! recomputes every uplink feeding it whose flow the new cap holds (or
//! the old one held). Each changed flow's completion is rescheduled (the
//! old event goes stale).
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
//!   flow's own receiver cap and its copy of its ends and ceiling instead
//!   of the receiver's `Node` and the connection, which at thousands of
//!   nodes are cache misses.
//! - At every window's end the caps of the flows into a node add up to at
//!   most its downlink less `InLink::entry`, and the flows started into
//!   it before the next window's end take at most `entry` between them.
//! - `remaining` is exact as of `last`; the pending completion event for
//!   a flow carries its current `version`, every other one is stale.

use std::sync::Arc;

use shoal_proto::swarm::{BlockRef, PeerKey, Time};

use crate::net::{Ev, Sim, World};
use crate::part::{Delta, Part};

/// Room a receiver leaves above the rate of a flow that something else
/// holds. Such a flow's rate moves a little whenever its sender's other
/// flows start or end; a cap at exactly its rate would count each rise as
/// the receiver holding it, and hand it, for the next window, a fair part
/// of the downlink that it cannot use.
const HEADROOM: f64 = 0.1;

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
    /// What the receiver lets this flow take (see `InLink`).
    rcap: f64,
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
    /// What the flows that start before the next window's end may take
    /// between them: an equal part of what the flows into it left at the
    /// last one (the whole downlink without flows).
    entry: f64,
    /// Flows into it as of the last window's end.
    pub(crate) count: u32,
    /// Whether some flow was held at its receiver's cap at the last
    /// window's end: then a flow under its cap that speeds up or slows
    /// down changes what the others may take.
    held: bool,
}

impl InLink {
    pub(crate) fn new(down: f64) -> InLink {
        InLink {
            down,
            entry: down,
            count: 0,
            held: false,
        }
    }
}

/// Receiver caps for flows into a downlink of `down` bytes/s, given
/// `wants` (a flow's rate if something else holds it under its cap, else
/// infinite), written over `wants`; with the cap of a flow that starts
/// before the next settle, and whether some flow is held at its cap.
///
/// Water-filling `down` over the wants gives each flow its allocation;
/// what that leaves (nothing if some flow is held) is split equally
/// between the flows and the newcomers (the first value returned). The
/// caps and that part therefore add up to the downlink, so flows that all
/// speed up at once within a window cannot over-fill it; one that is held
/// elsewhere still leaves its unused part to the others.
/// `sorted` is scratch (settle calls this for every receiver that moved,
/// between windows, on one thread).
fn downlink_caps(down: f64, wants: &mut [f64], sorted: &mut Vec<f64>) -> (f64, bool) {
    for w in wants.iter_mut() {
        *w *= 1.0 + HEADROOM;
    }
    sorted.clear();
    sorted.extend_from_slice(wants);
    sorted.sort_by(f64::total_cmp);
    let (mut left, n) = (down, sorted.len());
    let mut level = f64::INFINITY;
    for (k, &w) in sorted.iter().enumerate() {
        let fair = left.max(0.0) / (n - k) as f64;
        if w >= fair {
            level = fair;
            left = 0.0;
            break;
        }
        left -= w;
    }
    let spare = left.max(0.0) / (n + 1) as f64;
    for w in wants.iter_mut() {
        *w = w.min(level) + spare;
    }
    (spare, level.is_finite())
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
            rcap: self.take_entry(world, peer),
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

    /// The cap of a flow we start into node `j` before the window ends:
    /// what is left of our half of its newcomer's part (`InLink::entry`).
    /// Each of the two parts hands out at most half, in its own order, so
    /// flows started into `j` from both sides together stay within the
    /// downlink, and the result does not depend on the thread count.
    fn take_entry(&mut self, world: &World, j: u32) -> f64 {
        if self.entry_taken.is_empty() {
            self.entry_taken = vec![0.0; world.inlinks.len()];
        }
        let taken = &mut self.entry_taken[j as usize];
        let give = (world.inlinks[j as usize].entry / 2.0 - *taken).max(0.0);
        *taken += give;
        self.entered.push(j);
        give
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
    /// by its receiver's cap and by its path's ceiling, and notes the
    /// receivers whose caps a changed rate may move.
    pub(crate) fn recompute_uplink(&mut self, world: &World, u: u32) {
        let mut caps = std::mem::take(&mut self.scratch_caps);
        self.uplink_caps(world, u, &mut caps);
        let up = world.specs[u as usize].up;
        water_fill(up, &mut caps);
        for &(rate, f) in &caps {
            let fl = &self.flows[f as usize];
            if fl.rate != rate {
                let held = world.inlinks[fl.to as usize].held;
                // Only these can move what the receiver's other flows
                // may take (see the module comment).
                if (fl.rate >= fl.rcap) != (rate >= fl.rcap) || (held && rate < fl.rcap) {
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
            let mut cap = fl.rcap.min(fl.cap);
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
    /// to their receivers' counts, sets new receiver caps where they may
    /// have moved, and recomputes every uplink with a flow whose cap
    /// changed, if that cap held the flow before or holds it now (the
    /// others cannot change: water-filling gives every uncapped flow the
    /// same level value, so an uplink's rates depend only on its set of
    /// caps).
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
            let part = &mut self.parts[p];
            for j in part.entered.drain(..) {
                part.entry_taken[j as usize] = 0.0;
            }
        }
        // Links learn their counts once per round trip (`regions.rs`).
        let world = Arc::get_mut(&mut self.world).expect("a part still holds the world");
        let dirty_links = self.link_tallies.update(self.now, mark, &mut world.regions);
        let mut ups: Vec<u32> = Vec::new();
        let (mut flows, mut wants, mut sorted) = (Vec::new(), Vec::new(), Vec::new());
        for &j in &dirty {
            self.downlink_flows(j, &mut flows, &mut wants);
            let l = self.world.inlinks[j as usize];
            let (entry, held) = downlink_caps(l.down, &mut wants, &mut sorted);
            let l = &mut self.world_mut().inlinks[j as usize];
            (l.entry, l.held) = (entry, held);
            for (&(p, f), &rcap) in flows.iter().zip(&wants) {
                let old = self.parts[p].flows[f as usize].rcap;
                // An unchanged cap leaves only a link's share to move the
                // flow, and the loop over changed links sees to that.
                if old != rcap {
                    self.check_flow(p, f, old, rcap, mark, &mut ups);
                    self.parts[p].flows[f as usize].rcap = rcap;
                }
            }
        }
        for &l in &dirty_links {
            let regions = &self.world.regions;
            if regions.share(l) == self.link_tallies.old_share(l, mark, regions) {
                continue;
            }
            for &c in self.link_tallies.flows(l) {
                let h = &self.world.halves[c as usize];
                let p = self.world.part_of(h.node);
                if let Some(f) = self.parts[p].conns[c as usize].flow {
                    let rcap = self.parts[p].flows[f as usize].rcap;
                    self.check_flow(p, f, rcap, rcap, mark, &mut ups);
                }
            }
        }
        ups.sort_unstable();
        ups.dedup();
        for u in ups {
            let (part, world) = self.at(u);
            part.recompute_uplink(world, u);
        }
    }

    /// Notes receiver `j` for this settle, once.
    fn mark_dirty(&mut self, j: u32, mark: u64, dirty: &mut Vec<u32>) {
        if self.dirty_mark[j as usize] != mark {
            self.dirty_mark[j as usize] = mark;
            dirty.push(j);
        }
    }

    /// The flows into receiver `j` (`(part, flow)`) and what each wants:
    /// its rate if something else holds it under its receiver cap, or
    /// anything if not.
    fn downlink_flows(&self, j: u32, flows: &mut Vec<(usize, u32)>, wants: &mut Vec<f64>) {
        flows.clear();
        wants.clear();
        for &c in &self.node(j).in_flows {
            let h = &self.world.halves[c as usize];
            let p = self.world.part_of(h.node);
            if let Some(f) = self.parts[p].conns[c as usize].flow {
                let fl = &self.parts[p].flows[f as usize];
                flows.push((p, f));
                wants.push(if fl.rate < fl.rcap {
                    fl.rate
                } else {
                    f64::INFINITY
                });
            }
        }
    }

    /// Queues the sender of flow `f` (in part `p`) in `ups` if this
    /// settle's new receiver cap (`old_r` → `new_r`) or link share can
    /// change its rate: it was held to the old ceiling, or is above the
    /// new one.
    fn check_flow(&self, p: usize, f: u32, old_r: f64, new_r: f64, mark: u64, ups: &mut Vec<u32>) {
        let fl = &self.parts[p].flows[f as usize];
        let (mut old, mut new) = (old_r.min(fl.cap), new_r.min(fl.cap));
        let regions = &self.world.regions;
        if let Some(l) = regions.link(fl.from, fl.to) {
            let new_l = regions.share(l);
            let old_l = self.link_tallies.old_share(l, mark, regions);
            old = old.min(old_l);
            new = new.min(new_l);
        }
        if old != new && (fl.rate >= old || fl.rate > new) {
            ups.push(fl.from);
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

        /// Receivers whose flows' caps and newcomers' part add up to more
        /// than their downlink.
        fn overfilled(&self) -> usize {
            (0..self.world.specs.len() as u32)
                .filter(|&j| {
                    let caps: f64 = self
                        .node(j)
                        .in_flows
                        .iter()
                        .filter_map(|&c| {
                            let p =
                                &self.parts[self.world.part_of(self.world.halves[c as usize].node)];
                            p.conns[c as usize].flow.map(|f| p.flows[f as usize].rcap)
                        })
                        .sum();
                    let l = &self.world.inlinks[j as usize];
                    caps + l.entry > l.down * (1.0 + 1e-9)
                })
                .count()
        }
    }

    #[test]
    fn a_downlink_gives_what_held_flows_leave_to_the_others() {
        let inf = f64::INFINITY;
        let caps = |down: f64, wants: &[f64]| {
            let mut w = wants.to_vec();
            let (entry, held) = downlink_caps(down, &mut w, &mut Vec::new());
            // Never more than the downlink, even if every flow rose to
            // its cap at once.
            assert!(w.iter().sum::<f64>() <= down * (1.0 + 1e-12), "{w:?}");
            (w, entry, held)
        };
        let close = |got: (Vec<f64>, f64, bool), want: (&[f64], f64, bool)| {
            let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
            assert!(
                got.0.len() == want.0.len()
                    && got.0.iter().zip(want.0).all(|(&a, &b)| near(a, b))
                    && near(got.1, want.1)
                    && got.2 == want.2,
                "{got:?} against {want:?}"
            );
        };
        // One flow held at 3 by its sender keeps 3.3: the other two split
        // the rest.
        close(caps(12.5, &[inf, 3.0, inf]), (&[4.6, 3.3, 4.6], 0.0, true));
        // Two flows that both want more than half: an equal split.
        close(caps(12.5, &[60.0, 50.0]), (&[6.25, 6.25], 0.0, true));
        // Nothing held here: each keeps its rate (and room above it) and
        // a part of what is left, which a newcomer also gets.
        close(caps(12.0, &[2.0, 1.0]), (&[5.1, 4.0], 2.9, false));
    }

    /// Flows that start into a node within one window take at most its
    /// newcomers' part between them, half from each part of the nodes,
    /// and the next window's end gives it back.
    #[test]
    fn newcomers_share_one_part_of_a_downlink() {
        let path = format!("{}/scenarios/flash-crowd.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("nodes = 100", "nodes = 10");
        let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
        let mut sim = Sim::new(&setup);
        sim.world_mut().inlinks[5].entry = 8.0;
        let world = Arc::clone(&sim.world);
        let (a, b) = sim.parts.split_at_mut(1);
        assert_eq!(a[0].take_entry(&world, 5), 4.0);
        assert_eq!(a[0].take_entry(&world, 5), 0.0);
        assert_eq!(b[0].take_entry(&world, 5), 4.0);
        assert_eq!(b[0].take_entry(&world, 6), world.inlinks[6].down / 2.0);
        drop(world);
        sim.settle();
        let world = Arc::clone(&sim.world);
        assert_eq!(sim.parts[0].take_entry(&world, 5), 4.0);
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
    /// full recomputation gives and that no receiver's caps (and its
    /// newcomers' part) add up to more than its downlink; returns the windows and how many times a
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
            assert_eq!(sim.overfilled(), 0, "after window {windows}");
            for p in &sim.parts {
                capped += p.flows.iter().filter(|f| f.live && held(&sim, f)).count();
            }
        }
        assert_eq!(sim.waiting, 0, "the run finished");
        (windows, capped)
    }

    /// `settle` recomputes only the uplinks a receiver's new caps can
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
            |_, f| f.rate == f.rcap,
        );
        assert!(windows > 1_000, "{windows} windows");
        assert!(capped > 0, "some flow was held at its receiver's cap");
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
