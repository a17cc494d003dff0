//! Peer exchange decisions (`PROTOCOL.md` section 7): when a connection
//! sends its next `Peers`, which received `Peers` are admitted, what a
//! `Peers` message carries and what a received one means.
//!
//! A node that dialled us is known by its connection's remote address,
//! which is not where it listens. So every `Peers` message opens with an
//! entry for its sender: the sender's own node id and listen addresses.
//! An unspecified IP there (a node bound to `0.0.0.0`) means "the IP you
//! see me at", and the receiver substitutes the connection's remote IP.
//! Old receivers read that entry as a peer they are already connected to
//! and skip it, so no wire change was needed.
//!
//! Invariants this module keeps:
//! - A sender sends its first `Peers` at once, its second `refresh` later
//!   (by then the peers that connected at about the same time have said
//!   where they listen), then one every `interval`; a receiver's
//!   [`PexGate`] admits exactly that much (two at once, then one per
//!   `interval`) and ignores the rest.
//! - A built list has at most [`MAX_PEX_PEERS`] entries, each with 1 to
//!   [`MAX_PEER_ADDRS`] addresses, so it always passes `Message::validate`.
//! - Admitted entries never name the receiver, never carry port 0 or an
//!   unspecified IP (except as substituted above), and are at most
//!   [`MAX_PEX_PEERS`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::rng::Rng;
use crate::swarm::Time;
use crate::wire::{NodeId, PeerAddr, MAX_PEER_ADDRS, MAX_PEX_PEERS, PEX_INTERVAL};

/// Entries about other nodes in one `Peers` message: the first entry is
/// the sender's own.
pub const MAX_PEX_OTHERS: usize = MAX_PEX_PEERS - 1;

/// When `Peers` messages go out and how many are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PexConfig {
    /// Wait between the first and the second message.
    pub refresh: Duration,
    /// Wait between later messages; the receiver's refill period.
    pub interval: Duration,
}

impl Default for PexConfig {
    fn default() -> Self {
        PexConfig {
            refresh: Duration::from_secs(5),
            interval: PEX_INTERVAL,
        }
    }
}

/// The sending side of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PexSchedule {
    next: Time,
    sent: u32,
}

impl PexSchedule {
    /// A connection that opened at `now`: its first message is due at
    /// once.
    pub fn new(now: Time) -> PexSchedule {
        PexSchedule { next: now, sent: 0 }
    }

    /// When the next message is due.
    pub fn next(&self) -> Time {
        self.next
    }

    /// Whether a message is due at `now`.
    pub fn due(&self, now: Time) -> bool {
        now >= self.next
    }

    /// A message went out at `now`.
    pub fn sent(&mut self, now: Time, cfg: &PexConfig) {
        self.sent = self.sent.saturating_add(1);
        self.next = now
            + if self.sent == 1 {
                cfg.refresh
            } else {
                cfg.interval
            };
    }
}

/// The receiving side of one connection: a token bucket holding two
/// tokens, refilled one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PexGate {
    tokens: u32,
    refill_at: Time,
}

impl PexGate {
    const BURST: u32 = 2;

    /// A connection that opened at `now`.
    pub fn new(now: Time, cfg: &PexConfig) -> PexGate {
        PexGate {
            tokens: Self::BURST,
            refill_at: now + cfg.interval,
        }
    }

    /// Whether a `Peers` arriving at `now` is admitted (and uses a token).
    pub fn admit(&mut self, now: Time, cfg: &PexConfig) -> bool {
        while now >= self.refill_at && self.tokens < Self::BURST {
            self.tokens += 1;
            self.refill_at = self.refill_at + cfg.interval.max(Duration::from_millis(1));
        }
        if self.tokens == Self::BURST {
            // A full bucket does not refill: its clock starts with the
            // token taken now.
            self.refill_at = now + cfg.interval;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Builds the `Peers` message body: our own entry (if we know where we
/// listen) and then up to [`MAX_PEX_OTHERS`] of `others`, a random
/// sample when there are more. Entries without an address are dropped and
/// address lists are cut to [`MAX_PEER_ADDRS`].
pub fn build_peers(own: Option<PeerAddr>, others: Vec<PeerAddr>, rng: &mut Rng) -> Vec<PeerAddr> {
    let trim = |mut p: PeerAddr| {
        p.addrs.truncate(MAX_PEER_ADDRS);
        (!p.addrs.is_empty()).then_some(p)
    };
    let mut rest: Vec<PeerAddr> = others.into_iter().filter_map(trim).collect();
    let own = own.and_then(trim);
    if let Some(o) = &own {
        rest.retain(|p| p.node_id != o.node_id);
    }
    // A partial Fisher-Yates: the first MAX_PEX_OTHERS become a uniform
    // sample.
    let take = rest.len().min(MAX_PEX_OTHERS);
    for i in 0..take {
        let j = i + rng.below((rest.len() - i) as u64) as usize;
        rest.swap(i, j);
    }
    rest.truncate(take);
    own.into_iter().chain(rest).collect()
}

/// What a received `Peers` means for its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PexList {
    /// Where the sender listens, if it said so.
    pub sender_addrs: Vec<SocketAddr>,
    /// Other nodes to consider dialing.
    pub others: Vec<PeerAddr>,
}

/// Reads a `Peers` message that `sender` (connected from `remote`) sent to
/// `local`: the sender's own entry gives its listen addresses, with an
/// unspecified IP replaced by `remote`'s; the receiver's own entry and
/// unusable addresses are dropped.
pub fn admitted_entries(
    local: &NodeId,
    sender: &NodeId,
    remote: IpAddr,
    entries: Vec<PeerAddr>,
) -> PexList {
    let usable = |a: &SocketAddr| a.port() != 0 && !a.ip().is_unspecified();
    let mut out = PexList::default();
    for p in entries.into_iter().take(MAX_PEX_PEERS) {
        if p.node_id == *local {
            continue;
        }
        if p.node_id == *sender {
            out.sender_addrs = p
                .addrs
                .iter()
                .map(|a| {
                    if a.ip().is_unspecified() {
                        SocketAddr::new(remote, a.port())
                    } else {
                        *a
                    }
                })
                .filter(usable)
                .take(MAX_PEER_ADDRS)
                .collect();
            continue;
        }
        let addrs: Vec<SocketAddr> = p
            .addrs
            .into_iter()
            .filter(usable)
            .take(MAX_PEER_ADDRS)
            .collect();
        if !addrs.is_empty() {
            out.others.push(PeerAddr {
                node_id: p.node_id,
                addrs,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn peer(n: u8, port: u16) -> PeerAddr {
        PeerAddr {
            node_id: [n; 32],
            addrs: vec![SocketAddr::from(([10, 0, 0, n], port))],
        }
    }

    #[test]
    fn schedule_sends_at_once_then_refresh_then_interval() {
        let cfg = PexConfig::default();
        let mut s = PexSchedule::new(t(1000));
        assert!(s.due(t(1000)));
        s.sent(t(1000), &cfg);
        assert!(!s.due(t(5999)));
        assert!(s.due(t(6000)));
        s.sent(t(6000), &cfg);
        assert_eq!(s.next(), t(66_000));
    }

    #[test]
    fn gate_admits_what_the_schedule_sends_and_no_more() {
        let cfg = PexConfig::default();
        let mut g = PexGate::new(t(0), &cfg);
        let mut s = PexSchedule::new(t(0));
        // An honest sender, for ten minutes: every message admitted.
        let mut now = t(0);
        for _ in 0..12 {
            assert!(g.admit(now, &cfg), "at {now:?}");
            s.sent(now, &cfg);
            now = s.next();
        }
        // A flood: nothing more until the next refill.
        let mut g = PexGate::new(t(0), &cfg);
        let admitted = (0..100).filter(|_| g.admit(t(0), &cfg)).count();
        assert_eq!(admitted, 2);
        assert!(!g.admit(t(59_999), &cfg));
        assert!(g.admit(t(60_000), &cfg));
        assert!(!g.admit(t(60_001), &cfg));
    }

    #[test]
    fn built_lists_are_bounded_valid_and_lead_with_ourselves() {
        let mut rng = Rng::new(9);
        let me = peer(200, 7882);
        let others: Vec<PeerAddr> = (0..120).map(|i| peer(i, 1000 + u16::from(i))).collect();
        let l = build_peers(Some(me.clone()), others, &mut rng);
        assert_eq!(l.len(), MAX_PEX_PEERS);
        assert_eq!(l[0], me);
        assert_eq!(Message::Peers(l.clone()).validate(None), Ok(()));
        let distinct: std::collections::BTreeSet<_> = l.iter().map(|p| p.node_id).collect();
        assert_eq!(distinct.len(), l.len());
        // No own address, entries without addresses dropped.
        let mut empty = peer(1, 1);
        empty.addrs.clear();
        let l = build_peers(None, vec![empty, peer(2, 2)], &mut rng);
        assert_eq!(l, vec![peer(2, 2)]);
    }

    #[test]
    fn received_lists_name_the_sender_and_drop_the_unusable() {
        let local = [1; 32];
        let sender = [2; 32];
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let entries = vec![
            PeerAddr {
                node_id: sender,
                addrs: vec!["0.0.0.0:7882".parse().unwrap()],
            },
            PeerAddr {
                node_id: local,
                addrs: vec!["10.0.0.1:1".parse().unwrap()],
            },
            PeerAddr {
                node_id: [3; 32],
                addrs: vec!["0.0.0.0:5".parse().unwrap(), "10.0.0.3:0".parse().unwrap()],
            },
            peer(4, 44),
        ];
        let got = admitted_entries(&local, &sender, remote, entries);
        assert_eq!(got.sender_addrs, vec!["192.0.2.7:7882".parse().unwrap()]);
        assert_eq!(got.others, vec![peer(4, 44)]);
    }
}
