//! The bandwidth model: served blocks as fluid flows sharing access links.
//!
//! Each connection half sends its served blocks one after the other; the
//! block at the head is the half's one active flow. A node's uplink is
//! water-filled (max-min fair) over its active flows, each flow capped by
//! an equal share of its receiver's downlink and by its path's loss
//! ceiling. Rates are recomputed only when a flow starts or ends, for the
//! sender's uplink and every uplink feeding the receiver whose flow the
//! receiver's new share caps (or capped), and each changed flow's
//! completion is rescheduled (the old event goes stale).
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
//! - A live flow is in its sender's `out_flows`, its receiver's `in_flows`
//!   and its half's `flow`, and nowhere else; a freed flow in none.
//! - `Sim::in_count[j].1 == nodes[j].in_flows.len()`: water-filling reads
//!   the packed count (and the flow's own copy of its ends and ceiling)
//!   instead of the receiver's `Node` and the connection, which at
//!   thousands of nodes are cache misses.
//! - `remaining` is exact as of `last`; the pending completion event for
//!   a flow carries its current `version`, every other one is stale.

use shoal_proto::swarm::{BlockRef, PeerKey, Time};

use crate::net::{Ev, Life, Sim};

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
    to: u32,
    cap: f64,
    block: BlockRef,
    corrupt: bool,
    /// Bytes of `block` still to send as of `last`.
    remaining: f64,
    /// Bytes per second.
    rate: f64,
    last: u64,
    version: u32,
    live: bool,
}

impl Sim {
    /// The throughput ceiling of a path with loss (Mathis et al.:
    /// `1.22 · MSS / (RTT · √p)`), unbounded without loss.
    pub(crate) fn path_cap(&self, a: u32, b: u32) -> f64 {
        let p = self.path_loss(a, b);
        if p <= 0.0 {
            return f64::INFINITY;
        }
        let rtt = (2 * self.lat(a, b)).max(1) as f64 / 1e6;
        1.22 * MSS / (rtt * p.sqrt())
    }

    /// The sender of half `c` serves `block` to the other end: queue it,
    /// or start a flow. Dropped if either half is down (the data would
    /// go nowhere).
    pub(crate) fn serve(&mut self, c: u32, block: BlockRef) {
        let (node, peer) = (self.conns[c as usize].node, self.conns[c as usize].peer);
        if !self.conns[c as usize].up
            || !self.conns[(c ^ 1) as usize].up
            || self.nodes[peer as usize].life != Life::Alive
            || self.cut(node, peer)
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
            cap: self.conns[c as usize].cap,
            block,
            corrupt: self.nodes[node as usize].spec.corrupt,
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
        self.conns[c as usize].flow = Some(id);
        self.nodes[node as usize].out_flows.push(id);
        self.nodes[peer as usize].in_flows.push(id);
        let old = self.share(peer);
        self.in_count[peer as usize].1 += 1;
        self.reshare(node, peer, old);
    }

    /// Frees flow `f` (its half's `flow` is already cleared) and reshares.
    pub(crate) fn end_flow(&mut self, f: u32) {
        let (i, j) = {
            let fl = &mut self.flows[f as usize];
            fl.live = false;
            (fl.from, fl.to)
        };
        self.nodes[i as usize].out_flows.retain(|&x| x != f);
        self.nodes[j as usize].in_flows.retain(|&x| x != f);
        let old = self.share(j);
        self.in_count[j as usize].1 -= 1;
        self.free_flows.push(f);
        self.reshare(i, j, old);
    }

    /// Node `j`'s downlink divided among its live inflows (unbounded
    /// without any).
    fn share(&self, j: u32) -> f64 {
        let (down, n) = self.in_count[j as usize];
        down / f64::from(n)
    }

    /// A flow from `i` into `j` started or ended, and `j`'s share per
    /// inflow was `old`: recompute the rates of `i`'s uplink and of every
    /// other uplink whose flow into `j` that share capped or now caps.
    fn reshare(&mut self, i: u32, j: u32, old: f64) {
        let new = self.share(j);
        let mut ups = std::mem::take(&mut self.scratch);
        ups.clear();
        ups.push(i);
        for &f in &self.nodes[j as usize].in_flows {
            let fl = &self.flows[f as usize];
            if fl.from != i && (fl.rate >= old.min(fl.cap) || fl.rate > new.min(fl.cap)) {
                ups.push(fl.from);
            }
        }
        // A pair shares one connection, so each sender is listed once.
        for &u in &ups {
            self.recompute_uplink(u);
        }
        self.scratch = ups;
    }

    /// Water-fills node `u`'s upload capacity over its flows, each capped
    /// by an equal share of its receiver's download capacity and by its
    /// path's ceiling.
    fn recompute_uplink(&mut self, u: u32) {
        let mut caps = std::mem::take(&mut self.scratch_caps);
        self.uplink_caps(u, &mut caps);
        water_fill(self.nodes[u as usize].spec.up, &mut caps);
        for &(rate, f) in &caps {
            self.set_rate(f, rate);
        }
        self.scratch_caps = caps;
    }

    /// `(cap, flow)` for each of `u`'s flows.
    fn uplink_caps(&self, u: u32, caps: &mut Vec<(f64, u32)>) {
        caps.clear();
        for &f in &self.nodes[u as usize].out_flows {
            let fl = &self.flows[f as usize];
            caps.push((self.share(fl.to).min(fl.cap), f));
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
    pub(crate) fn flow_done(&mut self, f: u32, version: u32) -> bool {
        let fl = &self.flows[f as usize];
        if !fl.live || fl.version != version {
            return false;
        }
        let (c, block, corrupt) = (fl.conn, fl.block, fl.corrupt);
        let i = self.conns[c as usize].node;
        let now = Time::from_micros(self.now);
        self.nodes[i as usize].swarm.handle_bytes_sent(
            now,
            PeerKey(u64::from(c)),
            u64::from(block.len),
        );
        let at = self.now + self.conns[c as usize].lat;
        self.push(
            at,
            Ev::BlockIn {
                conn: c ^ 1,
                to: self.conns[c as usize].peer,
                block,
                corrupt,
            },
        );
        if let Some(b) = self.conns[c as usize].queue.pop_front() {
            let fl = &mut self.flows[f as usize];
            fl.block = b;
            fl.remaining = f64::from(b.len);
            fl.last = self.now;
            self.reschedule(f);
        } else {
            self.conns[c as usize].flow = None;
            self.end_flow(f);
        }
        self.drain(i);
        true
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
        fn misallocated(&self) -> usize {
            let mut caps = Vec::new();
            let mut bad = 0;
            for u in 0..self.nodes.len() as u32 {
                self.uplink_caps(u, &mut caps);
                water_fill(self.nodes[u as usize].spec.up, &mut caps);
                bad += caps
                    .iter()
                    .filter(|&&(rate, f)| self.flows[f as usize].rate != rate)
                    .count();
            }
            bad
        }
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

    /// `reshare` recomputes only the uplinks a receiver's new share can
    /// change; after every event of a run where downlinks bind (10 Gbit/s
    /// senders into 100 Mbit/s receivers) every uplink must still be
    /// exactly what a full recomputation gives.
    #[test]
    fn skipped_uplinks_stay_water_filled() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/heterogeneous.toml"
        ))
        .unwrap()
        .replace("nodes = 90", "nodes = 30")
        .replace("file_mib = 512", "file_mib = 24");
        let setup = Setup::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
        let mut sim = Sim::new(&setup);
        let (mut events, mut capped) = (0, 0);
        while sim.advance() {
            events += 1;
            assert_eq!(sim.misallocated(), 0, "after event {events}");
            capped += sim
                .flows
                .iter()
                .filter(|f| f.live && f.rate == sim.share(f.to))
                .count();
        }
        assert_eq!(sim.waiting, 0, "the run finished");
        assert!(events > 10_000, "{events} events");
        assert!(capped > 0, "some flow was held to its receiver's share");
    }
}
