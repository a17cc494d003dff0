//! Regions and the links between them (`inter_region_mbps`).
//!
//! [`Regions`] lives in the `World`: both parts read it during a window
//! (which region a node is in, which link a flow crosses, that link's
//! share). [`LinkTallies`] is the simulator's own bookkeeping between
//! windows: the flows crossing each link and when the link next learns
//! their count.
//!
//! A link's share is its capacity over the flows crossing it as counted
//! at its last update. Its senders learn a new count once per round trip
//! across the link (congestion control takes about that long to react),
//! or at once when the link was idle. Recounting every window, as for a
//! downlink, rescheduled every crossing flow in nearly every window at
//! thousands of nodes (`benches/RESULTS.md`, "Stop 14").
//!
//! Invariant: at every window's end a link's counted flows are its
//! [`LinkTallies`] list's length as of the link's last update, at most
//! one round trip across it ago; a link whose count differs is pending.

use crate::flows::apply;
use crate::part::Delta;
use crate::setup::Setup;

/// Which region each node is in, and the links between regions.
#[derive(Debug)]
pub(crate) struct Regions {
    /// Each node's region (compact: flows look it up when links bind).
    of_node: Vec<u16>,
    /// Regions in the scenario.
    count: usize,
    /// Per ordered pair of regions (`a * count + b`), with
    /// `inter_region_mbps`: the link's capacity, bytes/s, and its flows as
    /// of its last update; else empty.
    links: Vec<(f64, u32)>,
    /// Per ordered pair of regions, a round trip between them, µs.
    rtt_us: Vec<u64>,
}

impl Regions {
    pub(crate) fn new(setup: &Setup) -> Regions {
        let count = setup.latency_us.len();
        Regions {
            of_node: setup.nodes.iter().map(|s| s.region as u16).collect(),
            count,
            links: setup
                .inter_region_bytes
                .map_or(Vec::new(), |cap| vec![(cap, 0); count * count]),
            rtt_us: setup.latency_us.iter().flatten().map(|l| 2 * l).collect(),
        }
    }

    /// More than one region.
    pub(crate) fn several(&self) -> bool {
        self.count > 1
    }

    /// Whether nodes `a` and `b` are in different regions.
    pub(crate) fn crosses(&self, a: u32, b: u32) -> bool {
        self.several() && self.of_node[a as usize] != self.of_node[b as usize]
    }

    /// The link a flow from node `a` to node `b` crosses, if links have a
    /// capacity and the two are in different regions.
    pub(crate) fn link(&self, a: u32, b: u32) -> Option<usize> {
        if self.links.is_empty() {
            return None;
        }
        let (ra, rb) = (self.of_node[a as usize], self.of_node[b as usize]);
        (ra != rb).then(|| usize::from(ra) * self.count + usize::from(rb))
    }

    /// Link `l`'s capacity divided among its flows as of its last update
    /// (unbounded without any).
    pub(crate) fn share(&self, l: usize) -> f64 {
        let (cap, n) = self.links[l];
        cap / f64::from(n)
    }
}

/// One link's flows and updates.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// The sender halves of the flows crossing it, as of the last
    /// window's end.
    flows: Vec<u32>,
    /// Its count differs from the one its senders know.
    pending: bool,
    /// The earliest time of its next update, µs.
    next: u64,
    /// The settle that last updated it, and its share before.
    mark: u64,
    old: f64,
}

/// The simulator's tally of every link's flows.
#[derive(Debug)]
pub(crate) struct LinkTallies {
    per_link: Vec<Tally>,
    /// The links whose `pending` is set.
    pending: Vec<usize>,
}

impl LinkTallies {
    pub(crate) fn new(regions: &Regions) -> LinkTallies {
        LinkTallies {
            per_link: vec![Tally::default(); regions.links.len()],
            pending: Vec::new(),
        }
    }

    /// A flow on link `l` started or ended.
    pub(crate) fn note(&mut self, l: usize, d: &Delta) {
        let t = &mut self.per_link[l];
        apply(&mut t.flows, d);
        if !t.pending {
            t.pending = true;
            self.pending.push(l);
        }
    }

    /// At settle `mark` (time `now`): brings every due link's count up to
    /// date in `regions`; returns the links whose count changed.
    pub(crate) fn update(&mut self, now: u64, mark: u64, regions: &mut Regions) -> Vec<usize> {
        let mut changed = Vec::new();
        let per_link = &mut self.per_link;
        self.pending.retain(|&l| {
            let t = &mut per_link[l];
            let n = t.flows.len() as u32;
            let counted = regions.links[l].1;
            if n != counted && counted != 0 && now < t.next {
                return true;
            }
            t.pending = false;
            if n != counted {
                t.mark = mark;
                t.old = regions.share(l);
                regions.links[l].1 = n;
                t.next = now + regions.rtt_us[l];
                changed.push(l);
            }
            false
        });
        changed
    }

    /// Link `l`'s share before settle `mark` changed it (its share now if
    /// that settle did not).
    pub(crate) fn old_share(&self, l: usize, mark: u64, regions: &Regions) -> f64 {
        let t = &self.per_link[l];
        if t.mark == mark {
            t.old
        } else {
            regions.share(l)
        }
    }

    /// The sender halves of link `l`'s flows.
    pub(crate) fn flows(&self, l: usize) -> &[u32] {
        &self.per_link[l].flows
    }
}
