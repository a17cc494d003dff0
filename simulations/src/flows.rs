//! The bandwidth model: served blocks as fluid flows sharing access links.
//!
//! Each connection half sends its served blocks one after the other; the
//! block at the head is the half's one active flow. A node's uplink is
//! water-filled (max-min fair) over its active flows, each flow capped by
//! an equal share of its receiver's downlink and by its path's loss
//! ceiling. Rates are recomputed only when a flow starts or ends, for the
//! sender's uplink and every uplink feeding the receiver, and each changed
//! flow's completion is rescheduled (the old event goes stale).
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
        self.in_count[peer as usize].1 += 1;
        self.reshare(node, peer);
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
        self.in_count[j as usize].1 -= 1;
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
    /// by an equal share of its receiver's download capacity and by its
    /// path's ceiling.
    fn recompute_uplink(&mut self, u: u32) {
        let mut caps = std::mem::take(&mut self.scratch_caps);
        caps.clear();
        for &f in &self.nodes[u as usize].out_flows {
            let fl = &self.flows[f as usize];
            let (down, n) = self.in_count[fl.to as usize];
            let share = down / f64::from(n);
            caps.push((share.min(fl.cap), f));
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

/// µs to send `remaining` bytes at `rate` (> 0) bytes/s.
fn eta(remaining: f64, rate: f64) -> u64 {
    (remaining * 1e6 / rate).ceil() as u64
}
