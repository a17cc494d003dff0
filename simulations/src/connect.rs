//! Connections between node pairs: each pair's link is made once and
//! reused on every reconnect (so the swarm's per-key scores and bans
//! survive), and a dial or start-up connect brings both halves up.

use std::time::Duration;

use shoal_proto::swarm::{PeerKey, SwarmError, Time};

use crate::net::{ConnState, Half, Life, Sim};

/// Why a connection did not come up.
#[derive(Debug)]
pub(crate) enum NotUp {
    /// An end is gone or cut off, or a half of an old connection is
    /// still up.
    Unreachable,
    /// The dialer's own swarm refused the peer (banned, or connected
    /// under this key already).
    Dialer(SwarmError),
    /// The far end's swarm refused it.
    Far,
}

impl Sim {
    /// The link between `a` and `b`, made on first use; `a` owns half
    /// `2l`.
    pub(crate) fn link(&mut self, a: u32, b: u32) -> u32 {
        let pair = (a.min(b), a.max(b));
        if let Some(&l) = self.link_of.get(&pair) {
            return l;
        }
        let l = (self.world.halves.len() / 2) as u32;
        let cap = crate::flows::path_cap(&self.world, a, b);
        let (lat, loss) = (self.world.lat(a, b), self.world.path_loss(a, b));
        for (x, y) in [(a, b), (b, a)] {
            let c = self.world.halves.len() as u32;
            self.node_mut(x).halves.push(c);
            self.world_mut().halves.push(Half {
                node: x,
                peer: y,
                cap,
            });
            let books = self.world.books;
            for p in &mut self.parts {
                p.conns.push(ConnState {
                    loss,
                    lat: u32::try_from(lat).unwrap_or(u32::MAX),
                    node: x,
                    peer: y,
                    ..ConnState::default()
                });
                if books {
                    p.pex.push(None);
                }
            }
        }
        self.link_of.insert(pair, l);
        l
    }

    /// Both ends of `link` learn of the connection `dialer` made (the
    /// handshake is done), unless either is gone, cut off, or refuses the
    /// other.
    pub(crate) fn connect_from(&mut self, link: u32, dialer: u32) -> Result<(), NotUp> {
        let (mut c0, mut c1) = (2 * link, 2 * link + 1);
        if self.world.halves[c0 as usize].node != dialer {
            (c0, c1) = (c1, c0);
        }
        let (a, b) = (
            self.world.halves[c0 as usize].node,
            self.world.halves[c1 as usize].node,
        );
        let alive = |s: &Sim, i: u32| s.world.life[i as usize] == Life::Alive;
        // Both halves must be down: a half still up is a connection whose
        // end has not yet learnt that the other end closed it.
        let busy = self.conn(c0).up || self.conn(c1).up;
        if busy || !alive(self, a) || !alive(self, b) || self.world.cut(self.now, a, b) {
            return Err(NotUp::Unreachable);
        }
        let now = Time::from_micros(self.now);
        let ra = self
            .node_mut(a)
            .swarm
            .handle_peer_connected(now, PeerKey(u64::from(c0)), true);
        let rb = self
            .node_mut(b)
            .swarm
            .handle_peer_connected(now, PeerKey(u64::from(c1)), false);
        let up = match (ra, rb) {
            (Err(e), _) => Err(NotUp::Dialer(e)),
            (Ok(()), Err(_)) => Err(NotUp::Far),
            (Ok(()), Ok(())) => Ok(()),
        };
        if up.is_ok() {
            // What QUIC's estimate would say once the handshake is done:
            // the path's round trip (queueing aside, which the swarm
            // ignores by keeping the smallest it is told).
            let rtt = Duration::from_micros(2 * self.world.lat(a, b));
            for (c, n) in [(c0, a), (c1, b)] {
                self.at(n).0.conns[c as usize].up = true;
                let n = self.node_mut(n);
                n.live += 1;
                n.peak_live = n.peak_live.max(n.live);
                let _ = n.swarm.handle_path_rtt(now, PeerKey(u64::from(c)), rtt);
            }
            if self.world.books {
                self.discovery_connected(link);
            }
        } else {
            self.node_mut(a)
                .swarm
                .handle_peer_disconnected(now, PeerKey(u64::from(c0)));
            self.node_mut(b)
                .swarm
                .handle_peer_disconnected(now, PeerKey(u64::from(c1)));
        }
        for n in [a, b] {
            let (part, world) = self.at(n);
            part.drain(n, world);
        }
        up
    }
}
